// The shared main() of bulwark's benchmark programs: runs the registered benchmarks, then prints
// each one's ratio to the baselines measured in the same run (the bare call, and whatever users
// would otherwise write), per thread count.
#ifndef BULWARK_BENCHMARKS_BENCH_MAIN_HPP
#define BULWARK_BENCHMARKS_BENCH_MAIN_HPP

#include <cstdio>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <benchmark/benchmark.h>

namespace bulwark_bench {

class RatioReporter : public benchmark::ConsoleReporter {
public:
    explicit RatioReporter(std::vector<std::string> baselines) : baselines_(std::move(baselines)) {}

    void ReportRuns(const std::vector<Run>& runs) override {
        ConsoleReporter::ReportRuns(runs);
        for (const Run& run : runs) {
            if (run.error_occurred) {
                continue;
            }
            // With repetitions, compare medians; otherwise the single measurement.
            const bool aggregate = run.run_type == Run::RT_Aggregate;
            if (aggregate && run.aggregate_name != "median") {
                continue;
            }
            Result& r = results_[{run.run_name.function_name, run.threads}];
            if (aggregate || !r.from_aggregate) {
                r.ns = run.GetAdjustedRealTime() * unit_to_ns(run.time_unit);
                r.from_aggregate = aggregate;
            }
        }
    }

    void Finalize() override {
        ConsoleReporter::Finalize();
        for (const std::string& baseline : baselines_) {
            std::printf("\nratio to %s (same run, real time per iteration):\n", baseline.c_str());
            for (const auto& [key, result] : results_) {
                if (key.first == baseline) {
                    continue;
                }
                auto base = results_.find({baseline, key.second});
                if (base == results_.end() || base->second.ns <= 0) {
                    continue;
                }
                std::printf("  %-44s threads:%-2lld %9.2f ns / %8.2f ns = %6.2fx\n",
                            key.first.c_str(), static_cast<long long>(key.second), result.ns,
                            base->second.ns, result.ns / base->second.ns);
            }
        }
        std::fflush(stdout);
    }

private:
    struct Result {
        double ns = 0;
        bool from_aggregate = false;
    };

    static double unit_to_ns(benchmark::TimeUnit unit) {
        switch (unit) {
            case benchmark::kSecond:
                return 1e9;
            case benchmark::kMillisecond:
                return 1e6;
            case benchmark::kMicrosecond:
                return 1e3;
            case benchmark::kNanosecond:
                break;
        }
        return 1.0;
    }

    std::vector<std::string> baselines_;
    std::map<std::pair<std::string, long long>, Result> results_;
};

// With a reporter of the program's own (a RatioReporter that also prints a summary, say).
inline int run_main(int argc, char** argv, RatioReporter& reporter) {
    // glibc skips the lock prefix of atomics and mutexes until a process has had a second
    // thread; start one so that single-thread figures are what real services see.
    std::thread([] {}).join();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
        return 1;
    }
    benchmark::RunSpecifiedBenchmarks(&reporter);
    benchmark::Shutdown();
    return 0;
}

inline int run_main(int argc, char** argv, std::vector<std::string> baselines) {
    RatioReporter reporter(std::move(baselines));
    return run_main(argc, argv, reporter);
}

}  // namespace bulwark_bench

#endif  // BULWARK_BENCHMARKS_BENCH_MAIN_HPP

// The outage lab's speed: simulated calls per second of real time, through the bare simulated
// call and through pipeline(retry, breaker, timeout), and the headline run: 1 h of
// virtual traffic at 1000 calls/s (3.6 M calls) through the pipeline, target under 10 s (-O2).
// BULWARK_BENCH_LAB_SECONDS (default 3600) sets the headline run's virtual seconds (the smoke
// test uses 10).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>

#include <bulwark/outage_lab.hpp>
#include <bulwark/pipeline.hpp>
#include <bulwark/retry.hpp>
#include <bulwark/timeout.hpp>

#include "bench_main.hpp"

namespace {

using namespace std::chrono_literals;

// In every ten minutes a provider is healthy for five, down for one, slow for one (most calls
// run into the timeout) and healthy again: the pipeline does real work (retries, breaker
// transitions, timeouts), not only first-try successes.
bulwark::OutageScenario scenario(std::chrono::seconds length) {
    bulwark::OutageScenario s;
    s.name = "benchmark";
    s.seed = 42;
    bulwark::SimDependency dep;
    dep.name = "provider";
    dep.phases.clear();
    for (std::chrono::seconds t{0}; t < length; t += 600s) {
        dep.phases.push_back({"healthy", t, bulwark::SimLatency::log_normal(20ms, 0.5), 0.01});
        if (t + 300s < length) {
            dep.phases.push_back({"down", t + 300s, bulwark::SimLatency::fixed_at(5ms), 1.0});
            dep.phases.push_back(
                {"slow", t + 360s, bulwark::SimLatency::log_normal(400ms, 0.8), 0.05});
            dep.phases.push_back(
                {"recovered", t + 420s, bulwark::SimLatency::log_normal(20ms, 0.5), 0.01});
        }
    }
    s.dependencies = {dep};
    s.load.rate_per_second = 1000;
    s.load.duration = length;
    s.load.concurrency = 64;
    return s;
}

std::uint64_t run_bare(std::chrono::seconds length) {
    bulwark::OutageLab lab(scenario(length));
    auto t = lab.run("bare", [](bulwark::SimCall& call) {
        try {
            return bulwark::Outcome<bulwark::SimResponse>::from_value(call.dependency(0));
        } catch (...) {
            return bulwark::Outcome<bulwark::SimResponse>::from_error(std::current_exception());
        }
    });
    return t.summary.calls;
}

std::uint64_t run_pipeline(std::chrono::seconds length) {
    bulwark::OutageLab lab(scenario(length));
    bulwark::CircuitBreakerOptions bo;
    bo.break_duration = 5s;
    bulwark::CircuitBreaker breaker("provider", bo, lab.clock());
    bulwark::RetryOptions ro;
    ro.max_retries = 2;
    bulwark::RetryPolicy retry(ro, lab.seed(1), lab.clock());
    bulwark::Timeout timeout(250ms, lab.clock());
    auto p = bulwark::pipeline(retry, breaker, timeout);
    lab.watch(breaker);
    auto t = lab.run("retry, breaker, timeout", [&](bulwark::SimCall& call) {
        return p.try_execute([&](bulwark::Context& c) { return call.dependency(0, c); },
                             call.context());
    });
    return t.summary.calls;
}

// One iteration: a lab run of one virtual minute at 1000 calls/s (60 000 calls); the ratio below
// is per run, so per call.
void BM_lab_bare_call(benchmark::State& state) {
    std::uint64_t calls = 0;
    for (auto _ : state) {
        calls += run_bare(60s);
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(calls));
}

void BM_lab_retry_breaker_timeout(benchmark::State& state) {
    std::uint64_t calls = 0;
    for (auto _ : state) {
        calls += run_pipeline(60s);
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(calls));
}

}  // namespace

BENCHMARK(BM_lab_bare_call)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_lab_retry_breaker_timeout)->Unit(benchmark::kMillisecond)->UseRealTime();

int main(int argc, char** argv) {
    const int rc = bulwark_bench::run_main(argc, argv, {"BM_lab_bare_call"});
    if (rc != 0) {
        return rc;
    }
    long seconds = 3600;
    if (const char* env = std::getenv("BULWARK_BENCH_LAB_SECONDS")) {
        seconds = std::strtol(env, nullptr, 10);
        if (seconds <= 0) {
            std::fprintf(stderr, "BULWARK_BENCH_LAB_SECONDS=%s is not a positive count\n", env);
            return 1;
        }
    }
    const std::clock_t cpu_started = std::clock();
    const auto started = std::chrono::steady_clock::now();
    const std::uint64_t calls = run_pipeline(std::chrono::seconds(seconds));
    const double took =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    const double cpu = static_cast<double>(std::clock() - cpu_started) / CLOCKS_PER_SEC;
    std::printf(
        "\nheadline: %llu simulated calls (%ld s of virtual time at 1000/s) through "
        "pipeline(retry, breaker, timeout) in %.2f s of real time (%.2f s of CPU time): "
        "%.0f calls/s (target: 3.6 M in under 10 s)\n",
        static_cast<unsigned long long>(calls), seconds, took, cpu,
        static_cast<double>(calls) / took);
    return 0;
}

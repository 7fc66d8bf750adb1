// Computing a delay, for every backoff kind, at realistic attempt numbers (the default policy
// retries 3 times; few go past 10). Target: under 20 ns each.
#include <cstdint>

#include <bulwark/backoff.hpp>

#include "bench_main.hpp"

namespace {

using namespace std::chrono_literals;

BULWARK_NOINLINE int plus_one(int x) {
    return x + 1;
}

void BM_bare_call(benchmark::State& state) {
    int x = 0;
    for (auto _ : state) {
        x = plus_one(x);
        benchmark::DoNotOptimize(x);
    }
}

// The wait before retry `attempt` as a retry loop computes it: delay(n, previous), with
// `previous` the (n-1)-th delay of the same stream. n and the backoff are hidden from the
// optimiser, so nothing is folded at compile time.
void run(benchmark::State& state, bulwark::Backoff backoff, std::uint32_t attempt) {
    const bulwark::Duration previous =
        attempt > 1 ? backoff.delay(attempt - 1) : bulwark::Duration::zero();
    for (auto _ : state) {
        std::uint32_t n = attempt;
        benchmark::DoNotOptimize(n);
        benchmark::DoNotOptimize(backoff);
        bulwark::Duration d = backoff.delay(n, previous);
        benchmark::DoNotOptimize(d);
    }
}

void BM_delay_fixed(benchmark::State& s, std::uint32_t attempt) {
    run(s, bulwark::Backoff::fixed(1s), attempt);
}
void BM_delay_linear(benchmark::State& s, std::uint32_t attempt) {
    run(s, bulwark::Backoff::linear(1s).max_delay(30s), attempt);
}
void BM_delay_exponential(benchmark::State& s, std::uint32_t attempt) {
    run(s, bulwark::Backoff::exponential(100ms).max_delay(30s), attempt);
}
void BM_delay_exponential_full_jitter(benchmark::State& s, std::uint32_t attempt) {
    run(s, bulwark::Backoff::exponential(100ms).max_delay(30s).jitter(bulwark::Jitter::full),
        attempt);
}
void BM_delay_exponential_equal_jitter(benchmark::State& s, std::uint32_t attempt) {
    run(s, bulwark::Backoff::exponential(100ms).max_delay(30s).jitter(bulwark::Jitter::equal),
        attempt);
}
void BM_delay_fibonacci(benchmark::State& s, std::uint32_t attempt) {
    run(s, bulwark::Backoff::fibonacci(100ms).max_delay(30s), attempt);
}
void BM_delay_decorrelated_jitter(benchmark::State& s, std::uint32_t attempt) {
    run(s, bulwark::Backoff::decorrelated_jitter(100ms, 30s), attempt);
}

// Decorrelated jitter's pure delay(n) replays the chain: O(n), against O(1) for delay(n, previous)
// above. Shown so that nobody calls it in a loop by mistake.
void BM_delay_decorrelated_jitter_replay(benchmark::State& state, std::uint32_t attempt) {
    auto backoff = bulwark::Backoff::decorrelated_jitter(100ms, 30s);
    for (auto _ : state) {
        std::uint32_t n = attempt;
        benchmark::DoNotOptimize(n);
        benchmark::DoNotOptimize(backoff);
        bulwark::Duration d = backoff.delay(n);
        benchmark::DoNotOptimize(d);
    }
}

// What a RetryPolicy adds per backing-off execution: derive the execution's stream, then its
// first delay.
void BM_stream_then_delay(benchmark::State& state) {
    auto backoff =
        bulwark::Backoff::exponential(100ms).max_delay(30s).jitter(bulwark::Jitter::full);
    std::uint64_t k = 0;
    for (auto _ : state) {
        benchmark::DoNotOptimize(backoff);
        bulwark::Duration d = backoff.stream(k++).delay(1, bulwark::Duration::zero());
        benchmark::DoNotOptimize(d);
    }
}

}  // namespace

BENCHMARK(BM_bare_call);
BENCHMARK_CAPTURE(BM_delay_fixed, attempt_3, 3);
BENCHMARK_CAPTURE(BM_delay_fixed, attempt_10, 10);
BENCHMARK_CAPTURE(BM_delay_linear, attempt_3, 3);
BENCHMARK_CAPTURE(BM_delay_linear, attempt_10, 10);
BENCHMARK_CAPTURE(BM_delay_exponential, attempt_3, 3);
BENCHMARK_CAPTURE(BM_delay_exponential, attempt_10, 10);
BENCHMARK_CAPTURE(BM_delay_exponential_full_jitter, attempt_3, 3);
BENCHMARK_CAPTURE(BM_delay_exponential_full_jitter, attempt_10, 10);
BENCHMARK_CAPTURE(BM_delay_exponential_equal_jitter, attempt_3, 3);
BENCHMARK_CAPTURE(BM_delay_exponential_equal_jitter, attempt_10, 10);
BENCHMARK_CAPTURE(BM_delay_fibonacci, attempt_3, 3);
BENCHMARK_CAPTURE(BM_delay_fibonacci, attempt_10, 10);
BENCHMARK_CAPTURE(BM_delay_decorrelated_jitter, attempt_3, 3);
BENCHMARK_CAPTURE(BM_delay_decorrelated_jitter, attempt_10, 10);
BENCHMARK_CAPTURE(BM_delay_decorrelated_jitter_replay, attempt_3, 3);
BENCHMARK_CAPTURE(BM_delay_decorrelated_jitter_replay, attempt_10, 10);
BENCHMARK_CAPTURE(BM_delay_decorrelated_jitter_replay, attempt_100, 100);
BENCHMARK(BM_stream_then_delay);

int main(int argc, char** argv) {
    return bulwark_bench::run_main(argc, argv, {"BM_bare_call"});
}

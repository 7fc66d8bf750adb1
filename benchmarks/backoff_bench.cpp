// Computing a delay, for every backoff kind. Target: under 20 ns each.
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

void run(benchmark::State& state, const bulwark::Backoff& backoff) {
    std::uint32_t n = 0;
    bulwark::Duration previous = backoff.delay(1);
    for (auto _ : state) {
        n = n % 20 + 1;
        previous = backoff.delay(n, previous);
        benchmark::DoNotOptimize(previous);
    }
}

void BM_delay_fixed(benchmark::State& s) {
    run(s, bulwark::Backoff::fixed(1s));
}
void BM_delay_linear(benchmark::State& s) {
    run(s, bulwark::Backoff::linear(1s));
}
void BM_delay_exponential(benchmark::State& s) {
    run(s, bulwark::Backoff::exponential(100ms).max_delay(30s));
}
void BM_delay_exponential_full_jitter(benchmark::State& s) {
    run(s, bulwark::Backoff::exponential(100ms).max_delay(30s).jitter(bulwark::Jitter::full));
}
void BM_delay_fibonacci(benchmark::State& s) {
    run(s, bulwark::Backoff::fibonacci(1s));
}
void BM_delay_decorrelated_jitter(benchmark::State& s) {
    run(s, bulwark::Backoff::decorrelated_jitter(100ms, 30s));
}

}  // namespace

BENCHMARK(BM_bare_call);
BENCHMARK(BM_delay_fixed);
BENCHMARK(BM_delay_linear);
BENCHMARK(BM_delay_exponential);
BENCHMARK(BM_delay_exponential_full_jitter);
BENCHMARK(BM_delay_fibonacci);
BENCHMARK(BM_delay_decorrelated_jitter);

int main(int argc, char** argv) {
    return bulwark_bench::run_main(argc, argv, {"BM_bare_call"});
}

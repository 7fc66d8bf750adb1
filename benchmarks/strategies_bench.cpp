// The success paths of Timeout, Fallback, Bulkhead, RateLimiter and Hedging against the bare call.
// Targets: Bulkhead acquire+release and RateLimiter acquire under 25 ns uncontended; Fallback's
// success path within 1.2x of the bare call. Timeout reads the coarse clock twice per call: on the
// default SteadyClock that is two CLOCK_MONOTONIC_COARSE reads, on a TickingClock two loads.
// Hedging's primary-wins path allocates its shared call state and takes two mutexes: it is
// measured to show that cost, for calls that take milliseconds, not to meet a ratio.
#include <bulwark/bulkhead.hpp>
#include <bulwark/fallback.hpp>
#include <bulwark/hedging.hpp>
#include <bulwark/rate_limiter.hpp>
#include <bulwark/ticking_clock.hpp>
#include <bulwark/timeout.hpp>

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

void BM_fallback_success(benchmark::State& state) {
    static bulwark::Fallback<int> fallback(0);
    int x = 0;
    for (auto _ : state) {
        x = fallback.execute([&x] { return plus_one(x); });
        benchmark::DoNotOptimize(x);
    }
}

void BM_timeout_success(benchmark::State& state) {
    static bulwark::Timeout timeout(1s);
    int x = 0;
    for (auto _ : state) {
        x = timeout.execute([&x] { return plus_one(x); });
        benchmark::DoNotOptimize(x);
    }
}

// One for the whole program: its thread wakes every millisecond while the program runs.
bulwark::TickingClock& ticking_clock() {
    static bulwark::TickingClock clock;
    return clock;
}

// The same on a TickingClock: its coarse time is one atomic load.
void BM_timeout_success_ticking_clock(benchmark::State& state) {
    static bulwark::Timeout timeout(1s, ticking_clock());
    int x = 0;
    for (auto _ : state) {
        x = timeout.execute([&x] { return plus_one(x); });
        benchmark::DoNotOptimize(x);
    }
}

void BM_bulkhead_acquire_release(benchmark::State& state) {
    static bulwark::Bulkhead bulkhead(64);
    for (auto _ : state) {
        auto permit = bulkhead.try_acquire();
        benchmark::DoNotOptimize(permit);
    }
}

void BM_bulkhead_execute(benchmark::State& state) {
    static bulwark::Bulkhead bulkhead(64);
    int x = 0;
    for (auto _ : state) {
        x = bulkhead.execute([&x] { return plus_one(x); });
        benchmark::DoNotOptimize(x);
    }
}

void BM_rate_limiter_acquire(benchmark::State& state) {
    static bulwark::RateLimiter limiter(bulwark::TokenBucket{1e9, 1000000});
    for (auto _ : state) {
        auto d = limiter.try_acquire();
        benchmark::DoNotOptimize(d);
    }
}

void BM_rate_limiter_acquire_ticking_clock(benchmark::State& state) {
    static bulwark::RateLimiter limiter(bulwark::TokenBucket{1e9, 1000000}, ticking_clock());
    for (auto _ : state) {
        auto d = limiter.try_acquire();
        benchmark::DoNotOptimize(d);
    }
}

// The primary answers long before the delay: no hedge starts.
void BM_hedging_primary_wins(benchmark::State& state) {
    static bulwark::Hedging hedge(1s, 1);
    int x = 0;
    for (auto _ : state) {
        x = hedge.execute([&x] { return plus_one(x); });
        benchmark::DoNotOptimize(x);
    }
}

}  // namespace

BENCHMARK(BM_bare_call)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_fallback_success)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_timeout_success)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_timeout_success_ticking_clock)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_bulkhead_acquire_release)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_bulkhead_execute)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_rate_limiter_acquire)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_rate_limiter_acquire_ticking_clock)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_hedging_primary_wins)->Threads(1)->Threads(2)->UseRealTime();

int main(int argc, char** argv) {
    return bulwark_bench::run_main(argc, argv, {"BM_bare_call"});
}

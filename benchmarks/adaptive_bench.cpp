// The success paths of AdaptiveLimiter and Throttler beside the bare call and the static Bulkhead.
// The limiter reads the precise clock twice per call (its RTT sample: about 26 ns each on a VM's
// SteadyClock) and does four read-modify-writes (admit, release, two window accumulators); a
// window closes under a mutex every window_samples calls. The throttler's decision reads the
// coarse clock, sums its window's buckets and counts the request; an accept counts once more.
#include <bulwark/adaptive_limiter.hpp>
#include <bulwark/bulkhead.hpp>
#include <bulwark/throttler.hpp>
#include <bulwark/ticking_clock.hpp>

#include "bench_main.hpp"

namespace {

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

bulwark::AdaptiveLimiterOptions limiter_options() {
    bulwark::AdaptiveLimiterOptions o;
    o.initial_limit = 64;
    o.min_limit = 64;  // the limit cannot fall below the threads: every call is admitted
    return o;
}

void BM_adaptive_limiter_acquire_release(benchmark::State& state) {
    static bulwark::AdaptiveLimiter limiter(limiter_options());
    for (auto _ : state) {
        auto permit = limiter.try_acquire();
        benchmark::DoNotOptimize(permit);
    }
}

void BM_adaptive_limiter_execute(benchmark::State& state) {
    static bulwark::AdaptiveLimiter limiter(limiter_options());
    int x = 0;
    for (auto _ : state) {
        x = limiter.execute([&x] { return plus_one(x); });
        benchmark::DoNotOptimize(x);
    }
}

bulwark::TickingClock& ticking_clock() {
    static bulwark::TickingClock clock;
    return clock;
}

// The decision and the accept of a call the backend accepted (the rejection probability is 0).
void BM_throttler_decision(benchmark::State& state) {
    static bulwark::Throttler throttler(bulwark::ThrottlerOptions{});
    for (auto _ : state) {
        auto ticket = throttler.try_acquire();
        ticket.accepted();
        benchmark::DoNotOptimize(ticket);
    }
}

// The same on a TickingClock: its coarse time is one atomic load.
void BM_throttler_decision_ticking_clock(benchmark::State& state) {
    static bulwark::Throttler throttler(bulwark::ThrottlerOptions{}, ticking_clock());
    for (auto _ : state) {
        auto ticket = throttler.try_acquire();
        ticket.accepted();
        benchmark::DoNotOptimize(ticket);
    }
}

void BM_throttler_execute(benchmark::State& state) {
    static bulwark::Throttler throttler(bulwark::ThrottlerOptions{});
    int x = 0;
    for (auto _ : state) {
        x = throttler.execute([&x] { return plus_one(x); });
        benchmark::DoNotOptimize(x);
    }
}

}  // namespace

BENCHMARK(BM_bare_call)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_bulkhead_acquire_release)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_bulkhead_execute)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_adaptive_limiter_acquire_release)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_adaptive_limiter_execute)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_throttler_decision)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_throttler_decision_ticking_clock)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_throttler_execute)->Threads(1)->Threads(2)->UseRealTime();

int main(int argc, char** argv) {
    return bulwark_bench::run_main(argc, argv, {"BM_bare_call", "BM_bulkhead_acquire_release"});
}

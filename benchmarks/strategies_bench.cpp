// The success paths of Timeout, Fallback, Bulkhead, RateLimiter and Hedging against the bare call.
// Targets: Bulkhead acquire+release and RateLimiter acquire under 25 ns uncontended; Fallback's
// success path within 1.2x of the bare call. Timeout reads the coarse clock twice per call: on the
// default SteadyClock that is two CLOCK_MONOTONIC_COARSE reads, on a TickingClock two loads.
// Hedging's primary-wins path allocates its shared call state and takes two mutexes: it is
// measured to show that cost, for calls that take milliseconds, not to meet a ratio.
// Shadow mode reads its switch only where a call would be refused: the success paths cost the
// same with it on; the *_shadow_refused cases measure a refusal that is counted and let through.
#include <bulwark/bulkhead.hpp>
#include <bulwark/degradation.hpp>
#include <bulwark/fallback.hpp>
#include <bulwark/hedging.hpp>
#include <bulwark/load_shedder.hpp>
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

void BM_bulkhead_execute_shadow_on(benchmark::State& state) {
    static bulwark::Bulkhead bulkhead(bulwark::BulkheadOptions{64, 0, 1s, true});
    int x = 0;
    for (auto _ : state) {
        x = bulkhead.execute([&x] { return plus_one(x); });
        benchmark::DoNotOptimize(x);
    }
}

// A bulkhead whose only slot is held for the whole run: every call is refused, and let through.
void BM_bulkhead_execute_shadow_refused(benchmark::State& state) {
    static bulwark::Bulkhead bulkhead(bulwark::BulkheadOptions{1, 0, 1s, true});
    static const bulwark::Bulkhead::Permit held = bulkhead.try_acquire();
    int x = 0;
    for (auto _ : state) {
        x = bulkhead.execute([&x] { return plus_one(x); });
        benchmark::DoNotOptimize(x);
    }
    benchmark::DoNotOptimize(static_cast<bool>(held));
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

void BM_rate_limiter_acquire_shadow_on(benchmark::State& state) {
    static bulwark::RateLimiter limiter(bulwark::RateLimiterOptions{
        bulwark::TokenBucket{1e9, 1000000}, bulwark::Duration::zero(), true});
    for (auto _ : state) {
        auto d = limiter.try_acquire();
        benchmark::DoNotOptimize(d);
    }
}

// One permit a year: every request is refused, and let through.
void BM_rate_limiter_acquire_shadow_refused(benchmark::State& state) {
    static bulwark::RateLimiter limiter(bulwark::RateLimiterOptions{
        bulwark::TokenBucket{1.0 / (365.0 * 24 * 3600), 1}, bulwark::Duration::zero(), true});
    for (auto _ : state) {
        auto d = limiter.try_acquire();
        benchmark::DoNotOptimize(d);
    }
}

bulwark::Degradation& degradation() {
    static bulwark::Degradation d;
    return d;
}

void BM_load_shedder_pass(benchmark::State& state) {
    static bulwark::LoadShedder shedder(degradation(), bulwark::DegradationLevel::severe);
    int x = 0;
    for (auto _ : state) {
        x = shedder.execute([&x] { return plus_one(x); });
        benchmark::DoNotOptimize(x);
    }
}

void BM_load_shedder_pass_shadow_on(benchmark::State& state) {
    static bulwark::LoadShedder shedder(degradation(), [] {
        bulwark::LoadShedderOptions o;
        o.shadow = true;
        return o;
    }());
    int x = 0;
    for (auto _ : state) {
        x = shedder.execute([&x] { return plus_one(x); });
        benchmark::DoNotOptimize(x);
    }
}

// Every call would be shed (its predicate says so), and is let through.
void BM_load_shedder_shadow_shed(benchmark::State& state) {
    static bulwark::LoadShedder shedder(degradation(), [] {
        bulwark::LoadShedderOptions o;
        o.shed_if = [](const bulwark::Context&) {
            return true;
        };
        o.shadow = true;
        return o;
    }());
    int x = 0;
    for (auto _ : state) {
        x = shedder.execute([&x] { return plus_one(x); });
        benchmark::DoNotOptimize(x);
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
BENCHMARK(BM_bulkhead_execute_shadow_on)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_bulkhead_execute_shadow_refused)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_rate_limiter_acquire)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_rate_limiter_acquire_ticking_clock)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_rate_limiter_acquire_shadow_on)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_rate_limiter_acquire_shadow_refused)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_load_shedder_pass)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_load_shedder_pass_shadow_on)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_load_shedder_shadow_shed)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_hedging_primary_wins)->Threads(1)->Threads(2)->UseRealTime();

int main(int argc, char** argv) {
    return bulwark_bench::run_main(argc, argv, {"BM_bare_call"});
}

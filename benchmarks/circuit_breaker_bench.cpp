// The circuit breaker's hot paths against the bare call and against the mutex breaker users
// would otherwise write. Targets: closed-state execute within 2x of the bare call with 1 and 2
// threads; open-state rejection under 20 ns; both well ahead of the mutex breaker. Shadow mode
// reads its switch only on the reject path: the closed path costs the same with it on, and an
// open shadow breaker costs a rejection's bookkeeping plus the call.
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <stdexcept>

#include <bulwark/circuit_breaker.hpp>

#include "bench_main.hpp"

namespace {

using namespace std::chrono_literals;

BULWARK_NOINLINE int plus_one(int x) {
    return x + 1;
}

// What a user writes in twenty lines: a mutex around admit and record, a consecutive-failure
// count, and a clock read to leave the open state.
class NaiveBreaker {
public:
    bool allow() {
        std::lock_guard<std::mutex> lock(mutex_);
        if (open_ && std::chrono::steady_clock::now() - opened_at_ < std::chrono::seconds(60)) {
            return false;
        }
        return true;
    }
    void record(bool ok) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (ok) {
            failures_ = 0;
            open_ = false;
        } else if (++failures_ >= 5) {
            open_ = true;
            opened_at_ = std::chrono::steady_clock::now();
        }
    }

private:
    std::mutex mutex_;
    bool open_ = false;
    int failures_ = 0;
    std::chrono::steady_clock::time_point opened_at_{};
};

bulwark::CircuitBreakerOptions count_window_options() {
    bulwark::CircuitBreakerOptions o;
    o.window = bulwark::CountWindow{100};
    return o;
}

void BM_bare_call(benchmark::State& state) {
    int x = 0;
    for (auto _ : state) {
        x = plus_one(x);
        benchmark::DoNotOptimize(x);
    }
}

void BM_breaker_closed_execute(benchmark::State& state) {
    static bulwark::CircuitBreaker breaker("bench-closed", count_window_options());
    int x = 0;
    for (auto _ : state) {
        x = breaker.execute([&x] { return plus_one(x); });
        benchmark::DoNotOptimize(x);
    }
}

void BM_breaker_closed_two_step(benchmark::State& state) {
    static bulwark::CircuitBreaker breaker("bench-two-step", count_window_options());
    int x = 0;
    for (auto _ : state) {
        auto permit = breaker.try_acquire();
        if (permit) {
            x = plus_one(x);
            permit.record_success();
        }
        benchmark::DoNotOptimize(x);
    }
}

void BM_breaker_closed_time_window(benchmark::State& state) {
    static bulwark::CircuitBreaker breaker("bench-time-window", [] {
        bulwark::CircuitBreakerOptions o;
        o.window = bulwark::TimeWindow{60s, 1s};
        return o;
    }());
    int x = 0;
    for (auto _ : state) {
        x = breaker.execute([&x] { return plus_one(x); });
        benchmark::DoNotOptimize(x);
    }
}

// The closed path with shadow mode on: the switch is never read there.
void BM_breaker_closed_execute_shadow_on(benchmark::State& state) {
    static bulwark::CircuitBreaker breaker("bench-closed-shadow", [] {
        bulwark::CircuitBreakerOptions o = count_window_options();
        o.shadow = true;
        return o;
    }());
    int x = 0;
    for (auto _ : state) {
        x = breaker.execute([&x] { return plus_one(x); });
        benchmark::DoNotOptimize(x);
    }
}

// Opened by failures, with a break far longer than any run (repetitions and long
// --benchmark_min_time included), so every iteration measures the open state's rejection, not
// half-open probes after the break ends.
bulwark::CircuitBreaker& open_breaker() {
    static bulwark::CircuitBreaker breaker("bench-open", [] {
        bulwark::CircuitBreakerOptions o = count_window_options();
        o.break_duration = std::chrono::hours(24 * 365);
        return o;
    }());
    static const bool opened = [] {
        for (int i = 0; i < 5; ++i) {
            (void)breaker.try_execute([]() -> int { throw std::runtime_error("down"); });
        }
        return breaker.state() == bulwark::CircuitState::open;
    }();
    if (!opened) {
        std::abort();
    }
    return breaker;
}

// trip(): forced open until reset(), whatever the clock says.
bulwark::CircuitBreaker& forced_open_breaker() {
    static bulwark::CircuitBreaker breaker("bench-forced-open", count_window_options());
    static const bool tripped = [] {
        breaker.trip();
        return breaker.state() == bulwark::CircuitState::forced_open;
    }();
    if (!tripped) {
        std::abort();
    }
    return breaker;
}

void BM_breaker_open_try_acquire(benchmark::State& state) {
    bulwark::CircuitBreaker& breaker = open_breaker();
    for (auto _ : state) {
        auto permit = breaker.try_acquire();
        benchmark::DoNotOptimize(permit.admitted());
    }
    if (breaker.state() != bulwark::CircuitState::open) {
        state.SkipWithError("the breaker left the open state");
    }
}

void BM_breaker_open_try_execute(benchmark::State& state) {
    bulwark::CircuitBreaker& breaker = open_breaker();
    int x = 0;
    for (auto _ : state) {
        auto outcome = breaker.try_execute([&x] { return plus_one(x); });
        benchmark::DoNotOptimize(outcome.has_value());
    }
    if (breaker.state() != bulwark::CircuitState::open) {
        state.SkipWithError("the breaker left the open state");
    }
}

void BM_breaker_forced_open_try_execute(benchmark::State& state) {
    bulwark::CircuitBreaker& breaker = forced_open_breaker();
    int x = 0;
    for (auto _ : state) {
        auto outcome = breaker.try_execute([&x] { return plus_one(x); });
        benchmark::DoNotOptimize(outcome.has_value());
    }
}

// Open, in shadow mode: every call is counted as a rejection and let through.
void BM_breaker_open_shadow_execute(benchmark::State& state) {
    static bulwark::CircuitBreaker breaker("bench-open-shadow", [] {
        bulwark::CircuitBreakerOptions o = count_window_options();
        o.break_duration = std::chrono::hours(24 * 365);
        o.shadow = true;
        return o;
    }());
    static const bool opened = [] {
        for (int i = 0; i < 5; ++i) {
            (void)breaker.try_execute([]() -> int { throw std::runtime_error("down"); });
        }
        return breaker.state() == bulwark::CircuitState::open;
    }();
    if (!opened) {
        std::abort();
    }
    int x = 0;
    for (auto _ : state) {
        x = breaker.execute([&x] { return plus_one(x); });
        benchmark::DoNotOptimize(x);
    }
    if (breaker.state() != bulwark::CircuitState::open) {
        state.SkipWithError("the breaker left the open state");
    }
}

void BM_naive_mutex_breaker(benchmark::State& state) {
    static NaiveBreaker breaker;
    int x = 0;
    for (auto _ : state) {
        if (breaker.allow()) {
            x = plus_one(x);
            breaker.record(true);
        }
        benchmark::DoNotOptimize(x);
    }
}

void BM_naive_mutex_breaker_open(benchmark::State& state) {
    static NaiveBreaker breaker;
    static const bool opened = [] {
        for (int i = 0; i < 5; ++i) {
            breaker.record(false);
        }
        return true;
    }();
    benchmark::DoNotOptimize(opened);
    for (auto _ : state) {
        benchmark::DoNotOptimize(breaker.allow());
    }
}

}  // namespace

BENCHMARK(BM_bare_call)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_breaker_closed_execute)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_breaker_closed_execute_shadow_on)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_breaker_closed_two_step)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_breaker_closed_time_window)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_breaker_open_try_acquire)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_breaker_open_try_execute)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_breaker_forced_open_try_execute)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_breaker_open_shadow_execute)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_naive_mutex_breaker)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_naive_mutex_breaker_open)->Threads(1)->Threads(2)->UseRealTime();

int main(int argc, char** argv) {
    return bulwark_bench::run_main(argc, argv, {"BM_bare_call", "BM_naive_mutex_breaker"});
}

// Every duration option at its extremes: Duration::max() means "never" (a deadline that is not
// reached), not an overflow into the past. Each defect case failed before time.hpp's saturating
// add was used for every deadline; the sweep at the end builds every component with each
// duration option at max, max - 1 ns, zero and 1 ns and checks it works or is refused with its
// field named. The ASan+UBSan configuration runs this file too, so an overflow is an error there.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <bulwark/bulkhead.hpp>
#include <bulwark/cache.hpp>
#include <bulwark/circuit_breaker.hpp>
#include <bulwark/clock.hpp>
#include <bulwark/degradation.hpp>
#include <bulwark/fallback_chain.hpp>
#include <bulwark/health.hpp>
#include <bulwark/hedging.hpp>
#include <bulwark/load_shedder.hpp>
#include <bulwark/rate_limiter.hpp>
#include <bulwark/retry.hpp>
#include <bulwark/time.hpp>
#include <bulwark/timeout.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using bulwark::Duration;
using bulwark::ManualClock;
using bulwark::TimePoint;

namespace {

constexpr Duration forever = Duration::max();

struct Down : std::runtime_error {
    Down() : std::runtime_error("down") {}
};

}  // namespace

TEST_CASE("saturating_add stops at the ends of the timeline", "[time]") {
    using bulwark::detail::saturating_add;
    const TimePoint t{1h};
    CHECK(saturating_add(t, forever) == TimePoint::max());
    CHECK(saturating_add(t, forever - 1ns) == TimePoint::max());
    CHECK(saturating_add(t, 1ns) == TimePoint{1h + 1ns});
    CHECK(saturating_add(t, Duration::zero()) == t);
    CHECK(saturating_add(t, -2h) == TimePoint{-1h});
    CHECK(saturating_add(TimePoint{-1h}, Duration::min()) == TimePoint::min());
    CHECK(saturating_add(TimePoint::max(), 1ns) == TimePoint::max());
    CHECK(saturating_add(Duration::max() - 1ns, 5ns) == Duration::max());
    static_assert(saturating_add(Duration{1}, Duration{2}) == Duration{3});
}

TEST_CASE("a ManualClock advanced for ever stops at TimePoint::max()", "[time]") {
    ManualClock clock;
    clock.advance(1h);
    clock.advance(forever);
    CHECK(clock.now() == TimePoint::max());
    clock.sleep_for(forever);
    CHECK(clock.now() == TimePoint::max());
    clock.sleep_for(1ns);
    CHECK(clock.total_slept() == forever);
    CHECK(clock.wall_now() == bulwark::WallTime::max());
}

TEST_CASE("a breaker with break_duration max stays open", "[time][circuit_breaker]") {
    ManualClock clock;
    bulwark::CircuitBreakerOptions o;
    o.failure_threshold = 1;
    o.break_duration = forever;
    bulwark::CircuitBreaker breaker("dep", o, clock);
    CHECK_THROWS_AS(breaker.execute([]() -> int { throw Down(); }), Down);
    REQUIRE(breaker.state() == bulwark::CircuitState::open);
    clock.advance(24h * 365);
    CHECK_THROWS_AS(breaker.execute([] { return 1; }), bulwark::CircuitOpenError);
    CHECK(breaker.state() == bulwark::CircuitState::open);
}

TEST_CASE("a bulkhead queue_timeout of max waits for a slot instead of rejecting at once",
          "[time][bulkhead]") {
    ManualClock clock;
    bulwark::Bulkhead bulkhead(1, 1, forever, clock);
    auto held = bulkhead.try_acquire();
    REQUIRE(held);
    std::atomic<int> result{-1};
    std::thread waiter([&] { result = bulkhead.execute([] { return 7; }); });
    // The waiter is queued (not rejected): wait until it is, then free the slot.
    while (bulkhead.stats().queued == 0 && result.load() == -1) {
        std::this_thread::yield();
    }
    CHECK(result.load() == -1);
    held = {};
    waiter.join();
    CHECK(result.load() == 7);
}

TEST_CASE("a health check with interval max runs once, not on every pass", "[time][health]") {
    ManualClock clock;
    bulwark::HealthMonitor monitor(clock);
    std::atomic<int> runs{0};
    monitor.add_check({"once", [&] { return ++runs > 0; }, forever, Duration::zero()});
    CHECK(monitor.run_due() == 1);
    clock.advance(24h);
    CHECK(monitor.run_due() == 0);
    CHECK(monitor.run_due() == 0);
    CHECK(runs.load() == 1);
}

TEST_CASE("a health check with timeout max is not reported as timed out", "[time][health]") {
    ManualClock clock;
    bulwark::HealthMonitor monitor(clock);
    monitor.add_check({"slow",
                       [&] {
                           clock.advance(50ms);
                           return true;
                       },
                       1s, forever});
    const bulwark::HealthCheckResult r = monitor.run_now("slow");
    CHECK(r.status == bulwark::HealthStatus::healthy);
    CHECK_FALSE(r.timed_out);
    CHECK(r.response_time == 50ms);
}

TEST_CASE("a retry whose backoff is max gives up within max_elapsed instead of sleeping",
          "[time][retry]") {
    ManualClock clock;
    bulwark::RetryOptions o;
    o.max_retries = 3;
    o.backoff = bulwark::Backoff::fixed(forever);
    o.max_elapsed = 1h;
    bulwark::RetryPolicy retry(o, 1, clock);
    CHECK_THROWS_AS(retry.execute([]() -> int { throw Down(); }), Down);
    CHECK(clock.sleeps().empty());
}

TEST_CASE("a retry_after hint of max ends the retries under a deadline", "[time][retry]") {
    ManualClock clock;
    bulwark::RetryOptions o;
    o.max_retries = 3;
    o.backoff = bulwark::Backoff::fixed(1ms);
    bulwark::RetryPolicy retry(o, 1, clock);
    bulwark::Context ctx;
    ctx.set_deadline(clock.now() + 1s, &clock);
    CHECK_THROWS_AS(
        retry.execute([]() -> int { throw bulwark::RejectedError("come back never", forever); },
                      ctx),
        bulwark::RejectedError);
    CHECK(clock.sleeps().empty());
}

TEST_CASE("a sliding window of max length keeps refusing with a long retry_after",
          "[time][rate_limiter]") {
    ManualClock clock;
    bulwark::RateLimiter limiter(bulwark::SlidingWindow{1, forever}, clock);
    CHECK(limiter.try_acquire().admitted);
    clock.advance(24h);
    const bulwark::RateDecision d = limiter.try_acquire();
    CHECK_FALSE(d.admitted);
    CHECK(d.retry_after > 24h * 365);
}

TEST_CASE("a token bucket that would take more than 10 years to refill is refused",
          "[time][rate_limiter]") {
    const auto refused = [](double rate, std::uint32_t burst) {
        try {
            bulwark::RateLimiter limiter(bulwark::TokenBucket{rate, burst});
        } catch (const std::invalid_argument& e) {
            return std::string(e.what()).find("TokenBucket.burst / TokenBucket.rate") !=
                   std::string::npos;
        }
        return false;
    };
    CHECK(refused(1e-9, 10));          // admitted everything
    CHECK(refused(0.01, 4000000000));  // admitted nothing
    CHECK(refused(1e-11, 1));
    CHECK_FALSE(refused(1e-7, 1));  // 116 days
    ManualClock clock;
    bulwark::RateLimiter slow(bulwark::TokenBucket{1e-7, 1}, clock);
    CHECK(slow.try_acquire().admitted);
    const bulwark::RateDecision d = slow.try_acquire();
    CHECK_FALSE(d.admitted);
    CHECK(d.retry_after > 24h * 100);
    // Waiting "for ever" for a permit that is 116 days away reserves it and sleeps that long.
    bulwark::RateLimiter patient(bulwark::TokenBucket{1e-7, 1}, clock);
    CHECK(patient.try_acquire().admitted);
    const bulwark::RateDecision w = patient.acquire(1, forever);
    CHECK(w.admitted);
    CHECK(w.waited > 24h * 100);
}

namespace {

// Builds a component from one duration value and uses it once; returns normally when that
// works, or lets std::invalid_argument out.
struct DurationOption {
    std::string field;
    std::function<void(Duration)> build_and_use;
};

std::vector<DurationOption> duration_options() {
    std::vector<DurationOption> all;
    const auto ok = [] {
        return 1;
    };
    const auto breaker = [ok](const std::function<void(bulwark::CircuitBreakerOptions&)>& set) {
        ManualClock clock;
        bulwark::CircuitBreakerOptions o;
        set(o);
        bulwark::CircuitBreaker b("x", o, clock);
        CHECK(b.execute(ok) == 1);
        CHECK_THROWS_AS(b.execute([]() -> int { throw Down(); }), Down);
        clock.advance(1s);
        CHECK(b.try_execute(ok).has_value() == (b.state() != bulwark::CircuitState::open));
    };
    all.push_back({"CircuitBreakerOptions.break_duration", [breaker](Duration d) {
                       breaker([d](auto& o) {
                           o.failure_threshold = 1;
                           o.break_duration = d;
                       });
                   }});
    all.push_back({"CircuitBreakerOptions.slow_call_duration", [breaker](Duration d) {
                       breaker([d](auto& o) {
                           o.slow_call_ratio = 0.5;
                           o.slow_call_duration = d;
                       });
                   }});
    all.push_back({"CircuitBreakerOptions.call_timeout", [breaker](Duration d) {
                       breaker([d](auto& o) { o.call_timeout = d; });
                   }});
    all.push_back({"CircuitBreakerOptions.half_open_max_wait", [breaker](Duration d) {
                       breaker([d](auto& o) { o.half_open_max_wait = d; });
                   }});
    all.push_back({"CircuitBreakerOptions.window (TimeWindow", [breaker](Duration d) {
                       breaker([d](auto& o) { o.window = bulwark::TimeWindow{d, d}; });
                   }});
    all.push_back({"Backoff.exponential", [](Duration d) {
                       ManualClock clock;
                       bulwark::RetryOptions o;
                       o.max_retries = 2;
                       o.backoff = bulwark::Backoff::exponential(d).max_delay(d);
                       bulwark::RetryPolicy retry(o, 1, clock);
                       CHECK_THROWS_AS(retry.execute([]() -> int { throw Down(); }), Down);
                   }});
    all.push_back({"RetryOptions.max_elapsed", [](Duration d) {
                       ManualClock clock;
                       bulwark::RetryOptions o;
                       o.max_retries = 2;
                       o.backoff = bulwark::Backoff::fixed(1h);
                       o.max_elapsed = d;
                       bulwark::RetryPolicy retry(o, 1, clock);
                       CHECK_THROWS_AS(retry.execute([]() -> int { throw Down(); }), Down);
                       // max_elapsed 0 is "no limit"; otherwise a 1 h wait fits only in more.
                       CHECK(clock.sleeps().size() == (d == Duration::zero() || d > 2h ? 2U
                                                       : d > 1h                        ? 1U
                                                                                       : 0U));
                   }});
    all.push_back({"Backoff.fixed", [](Duration d) {
                       ManualClock clock;
                       bulwark::RetryOptions o;
                       o.max_retries = 2;
                       o.backoff = bulwark::Backoff::fixed(d);
                       bulwark::RetryPolicy retry(o, 1, clock);
                       CHECK_THROWS_AS(retry.execute([]() -> int { throw Down(); }), Down);
                   }});
    all.push_back({"Timeout", [ok](Duration d) {
                       ManualClock clock;
                       bulwark::Timeout timeout(d, clock);
                       CHECK(timeout.try_execute(ok).has_value() == (d > Duration::zero()));
                   }});
    all.push_back({"BulkheadOptions.queue_timeout", [ok](Duration d) {
                       ManualClock clock;
                       bulwark::Bulkhead bulkhead(1, 1, d, clock);
                       CHECK(bulkhead.execute(ok) == 1);
                   }});
    all.push_back({"SlidingWindow.window", [](Duration d) {
                       ManualClock clock;
                       bulwark::RateLimiter limiter(bulwark::SlidingWindow{1, d}, clock);
                       CHECK(limiter.try_acquire().admitted);
                       const bulwark::RateDecision r = limiter.try_acquire();
                       CHECK(r.retry_after >= Duration::zero());
                   }});
    all.push_back({"RateLimiterOptions.max_wait", [](Duration d) {
                       ManualClock clock;
                       bulwark::RateLimiterOptions o;
                       o.limit = bulwark::TokenBucket{1.0, 1};
                       o.max_wait = d;
                       bulwark::RateLimiter limiter(o, clock);
                       CHECK(limiter.execute([] { return 1; }) == 1);
                       CHECK(limiter.try_execute([] { return 1; }).has_value() == (d >= 1s));
                   }});
    all.push_back({"CacheFallback.ttl", [](Duration d) {
                       ManualClock clock;
                       bulwark::CacheFallback<int, int> cache(d, 10, clock);
                       CHECK(cache.execute(1, [] { return 2; }) == 2);
                       clock.advance(1h);
                       CHECK(cache.peek(1).has_value() == (d > 1h));
                   }});
    all.push_back({"HedgingOptions.delay", [ok](Duration d) {
                       ManualClock clock;
                       bulwark::Hedging hedging(d, 1, clock);
                       CHECK(hedging.execute(ok) == 1);
                   }});
    all.push_back({"Degradation.hold", [](Duration d) {
                       ManualClock clock;
                       bulwark::Degradation degradation(clock, d);
                       degradation.observe(bulwark::DegradationLevel::severe, "load");
                       degradation.observe(bulwark::DegradationLevel::normal, "calm");
                       clock.advance(1h);
                       degradation.observe(bulwark::DegradationLevel::normal, "calm");
                       CHECK((degradation.level() == bulwark::DegradationLevel::normal) ==
                             (d <= 1h));
                   }});
    all.push_back({"HealthCheck.interval", [](Duration d) {
                       ManualClock clock;
                       bulwark::HealthMonitor monitor(clock);
                       monitor.add_check({"c", [] { return true; }, d, Duration::zero()});
                       CHECK(monitor.run_due() == 1);
                       clock.advance(1h);
                       CHECK(monitor.run_due() == (d <= 1h ? 1U : 0U));
                   }});
    all.push_back({"HealthCheck.timeout", [](Duration d) {
                       ManualClock clock;
                       bulwark::HealthMonitor monitor(clock);
                       monitor.add_check({"c", [] { return true; }, 1s, d});
                       CHECK(monitor.run_now("c").status == bulwark::HealthStatus::healthy);
                   }});
    all.push_back({"RetryBudgetOptions.window", [](Duration d) {
                       ManualClock clock;
                       bulwark::RetryBudgetOptions o;
                       o.window = d;
                       bulwark::TpsRetryBudget budget(o, clock);
                       budget.record_call();
                       CHECK(budget.try_withdraw());
                   }});
    return all;
}

}  // namespace

TEST_CASE("every duration option at max, max - 1 ns, 0 and 1 ns works or is refused by name",
          "[time]") {
    const Duration values[] = {forever, forever - 1ns, Duration::zero(), 1ns};
    for (const DurationOption& option : duration_options()) {
        for (const Duration d : values) {
            INFO(option.field << " = " << d.count() << " ns");
            try {
                option.build_and_use(d);
            } catch (const std::invalid_argument& e) {
                CHECK_THAT(e.what(), Catch::Matchers::Contains(option.field));
            }
        }
    }
}

TEST_CASE("an enumerator outside its type is refused with the field named", "[options]") {
    const auto refuses = [](const std::function<void()>& build, const std::string& field) {
        try {
            build();
        } catch (const std::invalid_argument& e) {
            INFO(e.what());
            return std::string(e.what()).find(field) == 0;
        }
        return false;
    };
    const auto level = static_cast<bulwark::DegradationLevel>(9);
    ManualClock clock;
    bulwark::Degradation degradation(clock);
    CHECK(refuses(
        [&] {
            bulwark::LoadShedderOptions o;
            o.shed_at = level;
            bulwark::LoadShedder shedder(degradation, o);
        },
        "LoadShedderOptions.shed_at must be a DegradationLevel, got 9"));
    CHECK(refuses([&] { degradation.set_level(level, "x"); },
                  "Degradation::set_level(level) must be a DegradationLevel, got 9"));
    CHECK(refuses([&] { degradation.observe(level, "x"); },
                  "Degradation::observe(computed) must be a DegradationLevel, got 9"));
    CHECK(degradation.level() == bulwark::DegradationLevel::normal);
    const auto selection = static_cast<bulwark::Selection>(42);
    CHECK(refuses([&] { bulwark::FallbackChain<int()> chain(selection); },
                  "FallbackChain(selection) must be a Selection, got 42"));
    bulwark::FallbackChain<int()> chain;
    chain.add("a", [] { return 1; }).add("b", [] { return 2; });
    bulwark::FallbackRules rules;
    rules.set("a", {{"b"}, selection, 0});
    CHECK(refuses([&] { chain.rules(rules); }, "FallbackRule.selection must be a Selection"));
    CHECK(chain.execute().value() == 1);
}

TEST_CASE("numeric options at their extremes work or are refused by name", "[options]") {
    const auto ok = [] {
        return 1;
    };
    ManualClock clock;
    const auto breaker_refuses =
        [&](const std::function<void(bulwark::CircuitBreakerOptions&)>& set,
            const std::string& field) {
            bulwark::CircuitBreakerOptions o;
            set(o);
            try {
                bulwark::CircuitBreaker b("x", o, clock);
                CHECK(b.execute(ok) == 1);
            } catch (const std::invalid_argument& e) {
                CHECK_THAT(e.what(), Catch::Matchers::Contains(field));
                return true;
            }
            return false;
        };
    // A slot per half-open probe and a position per failure in a count window: bounded.
    CHECK(breaker_refuses([](auto& o) { o.half_open_calls = UINT32_MAX; },
                          "CircuitBreakerOptions.half_open_calls"));
    CHECK_FALSE(breaker_refuses([](auto& o) { o.half_open_calls = 10000; }, ""));
    CHECK(breaker_refuses([](auto& o) { o.window = bulwark::CountWindow{UINT32_MAX}; },
                          "CountWindow.size"));
    CHECK_FALSE(breaker_refuses([](auto& o) { o.window = bulwark::CountWindow{1000000}; }, ""));
    CHECK_FALSE(breaker_refuses(
        [](auto& o) {
            o.failure_threshold = UINT32_MAX;
            o.minimum_calls = 100;
        },
        ""));
    // Counts that allocate nothing up front take their whole range.
    bulwark::Bulkhead wide(UINT32_MAX, UINT32_MAX, 1s, clock);
    CHECK(wide.execute(ok) == 1);
    bulwark::RetryOptions r;
    r.max_retries = INT32_MAX;
    bulwark::RetryPolicy retry(r, 1, clock);
    CHECK(retry.execute(ok) == 1);
    bulwark::RateLimiter window(bulwark::SlidingWindow{1000000, 1s}, clock);
    CHECK(window.try_acquire(1000000).admitted);
    CHECK_FALSE(window.try_acquire().admitted);
    bulwark::RateLimiter bucket(bulwark::TokenBucket{1e9, UINT32_MAX}, clock);
    CHECK(bucket.try_acquire(UINT32_MAX).admitted);
    bulwark::CacheFallback<int, int> cache(1h, SIZE_MAX, clock);
    CHECK(cache.execute(1, ok) == 1);
    bulwark::Hedging hedging(1s, 16, clock);
    CHECK(hedging.execute(ok) == 1);
}

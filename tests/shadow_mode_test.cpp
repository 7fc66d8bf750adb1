// Shadow mode of the rejecting policies: the same input through an enforcing instance, a shadow
// one and one switched at run time gives the same decisions, events and statistics, while the
// shadow instance lets every call through.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <stdexcept>
#include <thread>
#include <tuple>
#include <vector>

#include <bulwark/bulkhead.hpp>
#include <bulwark/circuit_breaker.hpp>
#include <bulwark/degradation.hpp>
#include <bulwark/load_shedder.hpp>
#include <bulwark/pipeline.hpp>
#include <bulwark/rate_limiter.hpp>
#include <bulwark/testing.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using bulwark::Duration;

namespace {

struct Down : std::runtime_error {
    Down() : std::runtime_error("dependency down") {}
};

// A seeded generator, so every instance gets the same script.
class Script {
public:
    explicit Script(std::uint64_t seed) : state_(seed) {}
    std::uint32_t next(std::uint32_t bound) {
        state_ = state_ * 6364136223846793005ULL + 1442695040888963407ULL;
        return static_cast<std::uint32_t>((state_ >> 33U) % bound);
    }

private:
    std::uint64_t state_;
};

// How an instance is run: enforcing throughout, shadow throughout, or switched on for the
// middle third of the steps and off again.
enum class Mode { enforcing, shadow, switched };

bool shadow_at(Mode mode, int step, int steps) {
    switch (mode) {
        case Mode::enforcing:
            return false;
        case Mode::shadow:
            return true;
        case Mode::switched:
            return step >= steps / 3 && step < 2 * steps / 3;
    }
    return false;
}

template <class Spin>
void spin_until(Spin done) {
    while (!done()) {
        std::this_thread::yield();
    }
}

// Circuit breaker.

struct BreakerTrace {
    std::vector<bool> rejected;  // per step: the breaker refused the call (let through or not)
    std::vector<bool> ran;       // per step: the call reached the dependency
    std::vector<std::tuple<bulwark::CircuitState, bulwark::CircuitState, bulwark::TimePoint,
                           bulwark::TransitionReason, std::uint64_t>>
        changes;
    std::vector<bool> change_shadow;
    bulwark::CircuitBreakerStats stats;
};

auto comparable(const bulwark::CircuitBreakerStats& s) {
    return std::make_tuple(s.state, s.calls, s.successes, s.failures, s.ignored, s.inner_rejections,
                           s.slow, s.timeouts, s.rejected, s.opened, s.expired_probes,
                           s.window_calls, s.window_failures, s.window_slow, s.failure_rate,
                           s.slow_call_rate, s.consecutive_failures, s.time_in_state,
                           s.retry_after);
}

bulwark::CircuitBreakerOptions breaker_options() {
    bulwark::CircuitBreakerOptions o;
    o.failure_threshold = 4;
    o.failure_ratio = 0.5;
    o.minimum_calls = 6;
    o.window = bulwark::CountWindow{12};
    o.break_duration = 3s;
    o.break_duration_backoff = bulwark::Backoff::exponential(3s, 2.0).max_delay(20s);
    o.half_open_calls = 2;
    o.half_open_max_wait = 5s;
    return o;
}

// Drives the breaker through execute-style calls and two-step permits held across steps (so
// probes overlap), with failures in bursts.
BreakerTrace run_breaker(Mode mode, int steps) {
    bulwark::ManualClock clock;
    bulwark::CircuitBreakerOptions options = breaker_options();
    options.shadow = mode == Mode::shadow;
    bulwark::CircuitBreaker breaker("cb", options, clock);
    BreakerTrace trace;
    breaker.on_state_change([&](const bulwark::StateChange& c) {
        trace.changes.emplace_back(c.from, c.to, c.at, c.reason, c.generation);
        trace.change_shadow.push_back(c.shadow);
    });
    Script script(7);
    std::deque<std::pair<bulwark::CircuitBreaker::Permit, bool>> held;  // permit, will fail
    for (int step = 0; step < steps; ++step) {
        breaker.set_shadow(shadow_at(mode, step, steps));
        clock.advance(Duration(std::chrono::milliseconds(script.next(900))));
        // Failures come in bursts: 70% during a bad phase, 10% otherwise.
        const bool bad_phase = (step / 40) % 2 == 1;
        const bool fail = script.next(100) < (bad_phase ? 70U : 10U);
        const std::uint64_t rejected_before = breaker.stats().rejected;
        bool ran = false;
        if (script.next(4) == 0) {
            auto permit = breaker.try_acquire();
            ran = static_cast<bool>(permit);
            // A shadowed permit is dropped at once: it has nothing to record.
            if (permit && !permit.shadowed()) {
                held.emplace_back(std::move(permit), fail);
            }
        } else {
            auto result = breaker.try_execute([&]() -> int {
                ran = true;
                if (fail) {
                    throw Down();
                }
                return 1;
            });
            CHECK((result.has_value() || !ran || fail));
        }
        // Report held permits in a scripted order; some are left pending until they expire.
        while (!held.empty() && script.next(3) != 0) {
            auto& front = held.front();
            if (front.second) {
                front.first.record_failure();
            } else {
                front.first.record_success();
            }
            held.pop_front();
        }
        trace.rejected.push_back(breaker.stats().rejected != rejected_before);
        trace.ran.push_back(ran);
    }
    held.clear();  // pending permits count as failures, in every mode alike
    trace.stats = breaker.stats();
    return trace;
}

TEST_CASE("a shadow breaker lets every call through and decides as an enforcing one",
          "[shadow][circuit_breaker]") {
    const int steps = 400;
    const BreakerTrace enforcing = run_breaker(Mode::enforcing, steps);
    const BreakerTrace shadow = run_breaker(Mode::shadow, steps);
    const auto rejections = static_cast<std::uint64_t>(
        std::count(enforcing.rejected.begin(), enforcing.rejected.end(), true));
    REQUIRE(rejections > 20);             // the script does open the breaker
    REQUIRE(enforcing.stats.opened > 2);  // and re-open it from half-open
    CHECK(enforcing.stats.shadow_rejections == 0);
    CHECK(shadow.rejected == enforcing.rejected);
    CHECK(shadow.changes == enforcing.changes);
    CHECK(comparable(shadow.stats) == comparable(enforcing.stats));
    CHECK(shadow.stats.shadow_rejections == rejections);
    CHECK(std::count(shadow.ran.begin(), shadow.ran.end(), false) == 0);
    for (std::size_t i = 0; i < enforcing.ran.size(); ++i) {
        CHECK(enforcing.ran[i] == !enforcing.rejected[i]);
    }
    CHECK(std::count(shadow.change_shadow.begin(), shadow.change_shadow.end(), false) == 0);
    CHECK(std::count(enforcing.change_shadow.begin(), enforcing.change_shadow.end(), true) == 0);
}

TEST_CASE("a breaker switched into shadow mode and back decides as an enforcing one",
          "[shadow][circuit_breaker]") {
    const int steps = 400;
    const BreakerTrace enforcing = run_breaker(Mode::enforcing, steps);
    const BreakerTrace switched = run_breaker(Mode::switched, steps);
    CHECK(switched.rejected == enforcing.rejected);
    CHECK(switched.changes == enforcing.changes);
    CHECK(comparable(switched.stats) == comparable(enforcing.stats));
    std::uint64_t let_through = 0;
    std::uint64_t refused_in_shadow = 0;
    std::uint64_t refused_enforcing = 0;
    for (int i = 0; i < steps; ++i) {
        const auto at = static_cast<std::size_t>(i);
        if (!switched.rejected[at]) {
            CHECK(switched.ran[at]);
        } else if (shadow_at(Mode::switched, i, steps)) {
            ++refused_in_shadow;
            let_through += switched.ran[at] ? 1U : 0U;
        } else {
            ++refused_enforcing;
            CHECK_FALSE(switched.ran[at]);
        }
    }
    REQUIRE(refused_in_shadow > 0);
    REQUIRE(refused_enforcing > 0);
    CHECK(let_through == refused_in_shadow);
    CHECK(switched.stats.shadow_rejections == refused_in_shadow);
}

TEST_CASE("a shadowed breaker permit holds no probe slot and records nothing",
          "[shadow][circuit_breaker]") {
    bulwark::ManualClock clock;
    bulwark::CircuitBreakerOptions o;
    o.failure_threshold = 1;
    o.failure_ratio = 0.0;
    o.break_duration = 1s;
    o.shadow = true;
    bulwark::CircuitBreaker breaker("cb", o, clock);
    CHECK(breaker.shadow());
    breaker.try_acquire().record_failure();
    REQUIRE(breaker.state() == bulwark::CircuitState::open);
    auto open = breaker.try_acquire();
    REQUIRE(open);
    CHECK(open.shadowed());
    CHECK_FALSE(open.pending());
    CHECK(open.retry_after() == 1s);
    CHECK(open.rejection() != nullptr);
    open.record_failure();  // does nothing: a rejection has no result
    clock.advance(1s);
    auto probe = breaker.try_acquire();
    REQUIRE(probe);
    CHECK_FALSE(probe.shadowed());
    auto extra = breaker.try_acquire();  // the only probe slot is taken
    REQUIRE(extra);
    CHECK(extra.shadowed());
    extra.record_success();  // must not close the breaker
    CHECK(breaker.state() == bulwark::CircuitState::half_open);
    probe.record_success();
    CHECK(breaker.state() == bulwark::CircuitState::closed);
    const auto s = breaker.stats();
    CHECK(s.calls == 2);
    CHECK(s.rejected == 2);
    CHECK(s.shadow_rejections == 2);
    breaker.set_shadow(false);
    CHECK_FALSE(breaker.shadow());
    breaker.trip();
    CHECK_FALSE(breaker.try_acquire());
    CHECK_THROWS_AS(breaker.execute([] { return 1; }), bulwark::CircuitOpenError);
    breaker.set_shadow(true);
    CHECK(breaker.execute([] { return 2; }) == 2);
    CHECK(breaker.stats().shadow_rejections == 3);
}

// Bulkhead.

struct BulkheadTrace {
    std::vector<int> decisions;  // per step: 1 admitted, 0 refused, -1 a release
    std::vector<bool> ran;
    std::vector<std::tuple<bulwark::BulkheadRejection, std::uint32_t, std::uint32_t>> events;
    std::vector<bool> event_shadow;
    bulwark::BulkheadStats stats;
};

auto comparable(const bulwark::BulkheadStats& s) {
    return std::make_tuple(s.max_concurrent, s.max_queue, s.in_flight, s.queued, s.admitted,
                           s.rejected, s.queue_timeouts);
}

// Overlapping permits: acquisitions and releases in a scripted order.
BulkheadTrace run_bulkhead(Mode mode, int steps) {
    bulwark::ManualClock clock;
    bulwark::BulkheadOptions options{3, 0, 1s, mode == Mode::shadow};
    bulwark::Bulkhead bulkhead("pool", options, clock);
    BulkheadTrace trace;
    bulkhead.on_rejected([&](const bulwark::BulkheadEvent& e) {
        trace.events.emplace_back(e.reason, e.in_flight, e.queued);
        trace.event_shadow.push_back(e.shadow);
    });
    Script script(11);
    std::vector<bulwark::Bulkhead::Permit> held;      // calls holding a slot
    std::vector<bulwark::Bulkhead::Permit> shadowed;  // calls let through without one
    for (int step = 0; step < steps; ++step) {
        bulkhead.set_shadow(shadow_at(mode, step, steps));
        // More acquisitions than releases while the script is in a busy phase.
        const bool busy = (step / 30) % 2 == 0;
        if (script.next(10) < (busy ? 7U : 3U)) {
            auto permit = bulkhead.try_acquire();
            trace.ran.push_back(static_cast<bool>(permit));
            trace.decisions.push_back(permit && !permit.shadowed() ? 1 : 0);
            if (permit.shadowed()) {
                shadowed.push_back(std::move(permit));
            } else if (permit) {
                held.push_back(std::move(permit));
            }
        } else {
            if (!held.empty()) {
                const std::size_t at = script.next(static_cast<std::uint32_t>(held.size()));
                held.erase(held.begin() + static_cast<std::ptrdiff_t>(at));
            }
            if (!shadowed.empty()) {
                shadowed.pop_back();  // releases nothing
            }
            trace.decisions.push_back(-1);
            trace.ran.push_back(true);
        }
        CHECK(bulkhead.stats().in_flight == held.size());
    }
    trace.stats = bulkhead.stats();
    return trace;
}

TEST_CASE("a shadow bulkhead lets every call through and decides as an enforcing one",
          "[shadow][bulkhead]") {
    const int steps = 300;
    const BulkheadTrace enforcing = run_bulkhead(Mode::enforcing, steps);
    const BulkheadTrace shadow = run_bulkhead(Mode::shadow, steps);
    const BulkheadTrace switched = run_bulkhead(Mode::switched, steps);
    REQUIRE(enforcing.stats.rejected > 20);
    CHECK(enforcing.stats.shadow_rejections == 0);
    CHECK(std::count(shadow.ran.begin(), shadow.ran.end(), false) == 0);
    for (const BulkheadTrace* t : {&shadow, &switched}) {
        CHECK(t->decisions == enforcing.decisions);
        CHECK(t->events == enforcing.events);
        CHECK(comparable(t->stats) == comparable(enforcing.stats));
    }
    CHECK(shadow.stats.shadow_rejections == enforcing.stats.rejected);
    CHECK(std::count(shadow.event_shadow.begin(), shadow.event_shadow.end(), false) == 0);
    // Switched: refusals in the middle third were let through, the others were not.
    std::uint64_t in_shadow = 0;
    std::size_t event = 0;
    for (int i = 0; i < steps; ++i) {
        const auto at = static_cast<std::size_t>(i);
        if (switched.decisions[at] != 0) {
            continue;
        }
        const bool on = shadow_at(Mode::switched, i, steps);
        CHECK(switched.ran[at] == on);
        CHECK(switched.event_shadow[event++] == on);
        in_shadow += on ? 1U : 0U;
    }
    REQUIRE(in_shadow > 0);
    REQUIRE(in_shadow < switched.stats.rejected);
    CHECK(switched.stats.shadow_rejections == in_shadow);
}

// The queue: a call waits as it would, and its timeout is let through in shadow mode.
std::tuple<bool, bool, bulwark::BulkheadStats, std::vector<bulwark::BulkheadRejection>>
run_queued_bulkhead(bool shadow) {
    bulwark::ManualClock clock;
    bulwark::Bulkhead bulkhead("pool", bulwark::BulkheadOptions{1, 1, 5s, shadow}, clock);
    std::vector<bulwark::BulkheadRejection> reasons;
    std::vector<bool> flags;
    bulkhead.on_rejected([&](const bulwark::BulkheadEvent& e) {
        reasons.push_back(e.reason);
        flags.push_back(e.shadow);
    });
    auto held = bulkhead.try_acquire();
    bool waiter_ran = false;
    bool waiter_shadowed = false;
    std::thread waiter([&] {
        auto p = bulkhead.acquire();
        waiter_ran = static_cast<bool>(p);
        waiter_shadowed =
            p.shadowed() && p.rejection() == bulwark::BulkheadRejection::queue_timeout;
    });
    spin_until([&] { return bulkhead.stats().queued == 1; });
    auto overflow = bulkhead.acquire();  // the queue is full: refused at once
    const bool overflow_ran = static_cast<bool>(overflow);
    clock.advance(5s);
    waiter.join();
    CHECK(waiter_ran == shadow);
    CHECK(waiter_shadowed == shadow);
    CHECK(std::count(flags.begin(), flags.end(), !shadow) == 0);
    return {waiter_ran, overflow_ran, bulkhead.stats(), reasons};
}

TEST_CASE("a shadow bulkhead still queues, and lets a queue timeout through",
          "[shadow][bulkhead]") {
    const auto enforcing = run_queued_bulkhead(false);
    const auto shadow = run_queued_bulkhead(true);
    CHECK_FALSE(std::get<1>(enforcing));
    CHECK(std::get<1>(shadow));
    CHECK(comparable(std::get<2>(shadow)) == comparable(std::get<2>(enforcing)));
    CHECK(std::get<2>(enforcing).queue_timeouts == 1);
    CHECK(std::get<2>(shadow).shadow_rejections == 2);
    CHECK(std::get<3>(shadow) == std::get<3>(enforcing));
    CHECK(std::get<3>(shadow) ==
          std::vector<bulwark::BulkheadRejection>{bulwark::BulkheadRejection::full,
                                                  bulwark::BulkheadRejection::queue_timeout});
}

TEST_CASE("a shadow bulkhead still refuses a queued call whose caller cancelled it",
          "[shadow][bulkhead]") {
    bulwark::ManualClock clock;
    bulwark::Bulkhead bulkhead("pool", bulwark::BulkheadOptions{1, 1, 5s, true}, clock);
    std::vector<bool> flags;
    bulkhead.on_rejected([&](const bulwark::BulkheadEvent& e) { flags.push_back(e.shadow); });
    auto held = bulkhead.try_acquire();
    bulwark::Context ctx;
    bool admitted = true;
    bulwark::BulkheadRejection reason = bulwark::BulkheadRejection::full;
    std::thread waiter([&] {
        auto p = bulkhead.acquire(&ctx);
        admitted = static_cast<bool>(p);
        reason = p.rejection();
    });
    spin_until([&] { return bulkhead.stats().queued == 1; });
    ctx.cancel();
    waiter.join();
    CHECK_FALSE(admitted);
    CHECK(reason == bulwark::BulkheadRejection::cancelled);
    CHECK(flags == std::vector<bool>{false});
    const auto s = bulkhead.stats();
    CHECK(s.rejected == 1);
    CHECK(s.shadow_rejections == 0);
}

// Rate limiter.

struct LimiterTrace {
    std::vector<std::tuple<bool, Duration, Duration>> decisions;  // as the limit decided
    std::vector<bool> ran;
    std::vector<std::tuple<bool, Duration, Duration>> events;
    std::vector<bool> event_shadow;
    bulwark::RateLimiterStats stats;
};

LimiterTrace run_limiter(Mode mode, int steps, bulwark::RateLimiterOptions options) {
    bulwark::ManualClock clock;
    options.shadow = mode == Mode::shadow;
    bulwark::RateLimiter limiter("api", options, clock);
    LimiterTrace trace;
    limiter.on_rejected([&](const bulwark::RateDecision& d) {
        trace.events.emplace_back(d.admitted, d.retry_after, d.waited);
        trace.event_shadow.push_back(d.shadow);
    });
    Script script(23);
    for (int step = 0; step < steps; ++step) {
        limiter.set_shadow(shadow_at(mode, step, steps));
        const bool burst = (step / 25) % 2 == 0;
        clock.advance(Duration(std::chrono::milliseconds(script.next(burst ? 20 : 300))));
        const bulwark::RateLimiterStats before = limiter.stats();
        bulwark::RateDecision d;
        switch (script.next(3)) {
            case 0:
                d = limiter.try_acquire(1 + script.next(2));
                break;
            case 1:
                d = limiter.acquire(1, std::chrono::milliseconds(script.next(150)));
                break;
            default: {
                bool called = false;
                auto r = limiter.try_execute([&] {
                    called = true;
                    return 1;
                });
                // Through execute only the outcome is seen: the counters tell the rest.
                d.admitted = called;
                d.shadow = limiter.stats().shadow_rejections != before.shadow_rejections;
                CHECK(r.has_value() == called);
                break;
            }
        }
        const bool refused = limiter.stats().rejected != before.rejected;
        CHECK(refused == (!d.admitted || d.shadow));
        trace.ran.push_back(d.admitted);
        trace.decisions.emplace_back(!refused, d.retry_after, d.waited);
    }
    trace.stats = limiter.stats();
    return trace;
}

auto comparable(const bulwark::RateLimiterStats& s) {
    return std::make_tuple(s.admitted, s.rejected, s.waited);
}

void check_limiter(const bulwark::RateLimiterOptions& options) {
    const int steps = 400;
    const LimiterTrace enforcing = run_limiter(Mode::enforcing, steps, options);
    const LimiterTrace shadow = run_limiter(Mode::shadow, steps, options);
    const LimiterTrace switched = run_limiter(Mode::switched, steps, options);
    REQUIRE(enforcing.stats.rejected > 20);
    REQUIRE(enforcing.stats.waited > 0);
    CHECK(enforcing.stats.shadow_rejections == 0);
    CHECK(std::count(shadow.ran.begin(), shadow.ran.end(), false) == 0);
    for (const LimiterTrace* t : {&shadow, &switched}) {
        CHECK(t->decisions == enforcing.decisions);
        CHECK(t->events == enforcing.events);
        CHECK(comparable(t->stats) == comparable(enforcing.stats));
    }
    CHECK(shadow.stats.shadow_rejections == enforcing.stats.rejected);
    CHECK(std::count(shadow.event_shadow.begin(), shadow.event_shadow.end(), false) == 0);
    const auto in_shadow = static_cast<std::uint64_t>(
        std::count(switched.event_shadow.begin(), switched.event_shadow.end(), true));
    REQUIRE(in_shadow > 0);
    REQUIRE(in_shadow < switched.stats.rejected);
    CHECK(switched.stats.shadow_rejections == in_shadow);
    CHECK(static_cast<std::uint64_t>(std::count(switched.ran.begin(), switched.ran.end(), false)) ==
          switched.stats.rejected - in_shadow);
}

TEST_CASE("a shadow token bucket lets every request through and decides as an enforcing one",
          "[shadow][rate_limiter]") {
    check_limiter(bulwark::RateLimiterOptions{bulwark::TokenBucket{20.0, 3}, 100ms, false});
}

TEST_CASE("a shadow sliding window lets every request through and decides as an enforcing one",
          "[shadow][rate_limiter]") {
    check_limiter(bulwark::RateLimiterOptions{bulwark::SlidingWindow{4, 250ms}, 100ms, false});
}

TEST_CASE("a shadow limiter's decision says admitted, with the refusal's retry_after",
          "[shadow][rate_limiter]") {
    bulwark::ManualClock clock;
    bulwark::RateLimiter limiter(bulwark::TokenBucket{1.0, 1}, clock);
    REQUIRE(limiter.try_acquire());
    CHECK_FALSE(limiter.try_acquire());
    limiter.set_shadow(true);
    CHECK(limiter.shadow());
    const bulwark::RateDecision d = limiter.try_acquire();
    CHECK(d.admitted);
    CHECK(d.shadow);
    CHECK(d.retry_after == 1s);
    clock.advance(1s);
    const bulwark::RateDecision granted = limiter.try_acquire();  // the shadow pass took nothing
    CHECK(granted.admitted);
    CHECK_FALSE(granted.shadow);
    const auto s = limiter.stats();
    CHECK(s.admitted == 2);
    CHECK(s.rejected == 2);
    CHECK(s.shadow_rejections == 1);
}

// Load shedder.

struct ShedderTrace {
    std::vector<bool> shed;
    std::vector<bool> ran;
    std::vector<std::tuple<bulwark::DegradationLevel, bulwark::Priority, bool>> events;
    std::vector<bool> event_shadow;
    bulwark::LoadShedderStats stats;
};

ShedderTrace run_shedder(Mode mode, int steps) {
    bulwark::ManualClock clock;
    bulwark::Degradation degradation(clock);
    int queue_length = 0;
    bulwark::LoadShedderOptions options;
    options.shed_at = bulwark::DegradationLevel::severe;
    options.shed_if = [&](const bulwark::Context&) {
        return queue_length > 8;
    };
    options.shadow = mode == Mode::shadow;
    bulwark::LoadShedder shedder("front", degradation, options);
    ShedderTrace trace;
    shedder.on_shed([&](const bulwark::ShedEvent& e) {
        trace.events.emplace_back(e.level, e.priority, e.by_predicate);
        trace.event_shadow.push_back(e.shadow);
    });
    Script script(5);
    for (int step = 0; step < steps; ++step) {
        shedder.set_shadow(shadow_at(mode, step, steps));
        if (step % 20 == 0) {
            degradation.set_level(static_cast<bulwark::DegradationLevel>(script.next(5)), "script");
        }
        queue_length = static_cast<int>(script.next(10));
        bulwark::Context ctx;
        ctx.set_priority(static_cast<bulwark::Priority>(script.next(4)));
        const std::uint64_t shed_before = shedder.stats().shed;
        bool ran = false;
        auto r = shedder.try_execute(
            [&] {
                ran = true;
                return 1;
            },
            ctx);
        CHECK(r.has_value() == ran);
        trace.ran.push_back(ran);
        trace.shed.push_back(shedder.stats().shed != shed_before);
    }
    trace.stats = shedder.stats();
    return trace;
}

TEST_CASE("a shadow load shedder lets every call through and decides as an enforcing one",
          "[shadow][load_shedder]") {
    const int steps = 300;
    const ShedderTrace enforcing = run_shedder(Mode::enforcing, steps);
    const ShedderTrace shadow = run_shedder(Mode::shadow, steps);
    const ShedderTrace switched = run_shedder(Mode::switched, steps);
    REQUIRE(enforcing.stats.shed > 20);
    CHECK(enforcing.stats.shadow_rejections == 0);
    CHECK(enforcing.ran.size() == enforcing.shed.size());
    for (std::size_t i = 0; i < enforcing.ran.size(); ++i) {
        CHECK(enforcing.ran[i] == !enforcing.shed[i]);
    }
    CHECK(std::count(shadow.ran.begin(), shadow.ran.end(), false) == 0);
    for (const ShedderTrace* t : {&shadow, &switched}) {
        CHECK(t->shed == enforcing.shed);
        CHECK(t->events == enforcing.events);
        CHECK(t->stats.passed == enforcing.stats.passed);
        CHECK(t->stats.shed == enforcing.stats.shed);
    }
    CHECK(shadow.stats.shadow_rejections == enforcing.stats.shed);
    CHECK(std::count(shadow.event_shadow.begin(), shadow.event_shadow.end(), false) == 0);
    std::uint64_t in_shadow = 0;
    for (int i = 0; i < steps; ++i) {
        const auto at = static_cast<std::size_t>(i);
        if (switched.shed[at]) {
            const bool on = shadow_at(Mode::switched, i, steps);
            CHECK(switched.ran[at] == on);
            in_shadow += on ? 1U : 0U;
        }
    }
    REQUIRE(in_shadow > 0);
    REQUIRE(in_shadow < switched.stats.shed);
    CHECK(switched.stats.shadow_rejections == in_shadow);
}

// Composition: in a pipeline, a shadow policy passes every call on, so each policy sees the
// whole input and decides as an enforcing instance of it given that input alone.
TEST_CASE("shadow policies in a pipeline decide as each enforcing policy alone",
          "[shadow][pipeline]") {
    bulwark::ManualClock clock;
    bulwark::Degradation degradation(clock);
    bulwark::LoadShedderOptions shed_options;
    shed_options.shed_at = bulwark::DegradationLevel::moderate;
    bulwark::RateLimiterOptions limit{bulwark::TokenBucket{10.0, 2}, Duration::zero(), false};
    bulwark::CircuitBreakerOptions breaker_opts = breaker_options();

    bulwark::LoadShedder shedder_alone(degradation, shed_options);
    bulwark::RateLimiter limiter_alone(limit, clock);
    bulwark::Bulkhead bulkhead_alone(bulwark::BulkheadOptions{1, 0, 1s, false}, clock);
    bulwark::CircuitBreaker breaker_alone("alone", breaker_opts, clock);

    shed_options.shadow = true;
    limit.shadow = true;
    breaker_opts.shadow = true;
    bulwark::LoadShedder shedder(degradation, shed_options);
    bulwark::RateLimiter limiter(limit, clock);
    bulwark::Bulkhead bulkhead(bulwark::BulkheadOptions{1, 0, 1s, true}, clock);
    bulwark::CircuitBreaker breaker("shadow", breaker_opts, clock);
    auto chain = bulwark::pipeline(shedder, limiter, bulkhead, breaker);

    Script script(3);
    int ran = 0;
    for (int step = 0; step < 300; ++step) {
        clock.advance(Duration(std::chrono::milliseconds(script.next(200))));
        if (step % 25 == 0) {
            degradation.set_level(static_cast<bulwark::DegradationLevel>(script.next(3)), "s");
        }
        const bool fail = script.next(100) < ((step / 50) % 2 == 1 ? 80U : 5U);
        // The bulkhead's single slot is taken by a long call every few steps, from outside.
        const bool occupied = script.next(4) == 0;
        auto hog_alone = occupied ? bulkhead_alone.try_acquire() : bulwark::Bulkhead::Permit();
        auto hog = occupied ? bulkhead.try_acquire() : bulwark::Bulkhead::Permit();
        auto call = [&]() -> int {
            if (fail) {
                throw Down();
            }
            return 1;
        };
        // Each policy alone sees every call: the enforcing references are fed one by one.
        (void)shedder_alone.try_execute(call);
        (void)limiter_alone.try_execute(call);
        (void)bulkhead_alone.try_execute(call);
        (void)breaker_alone.try_execute(call);
        auto r = chain.try_execute([&]() -> int {
            ++ran;
            return call();
        });
        CHECK(r.has_value() == !fail);
    }
    CHECK(ran == 300);
    const auto shed_stats = shedder.stats();
    CHECK(shed_stats.shed == shedder_alone.stats().shed);
    CHECK(shed_stats.passed == shedder_alone.stats().passed);
    CHECK(shed_stats.shadow_rejections == shed_stats.shed);
    CHECK(shed_stats.shed > 0);
    CHECK(comparable(limiter.stats()) == comparable(limiter_alone.stats()));
    CHECK(limiter.stats().shadow_rejections == limiter_alone.stats().rejected);
    CHECK(limiter.stats().rejected > 0);
    CHECK(comparable(bulkhead.stats()) == comparable(bulkhead_alone.stats()));
    CHECK(bulkhead.stats().shadow_rejections == bulkhead_alone.stats().rejected);
    CHECK(bulkhead.stats().rejected > 0);
    CHECK(comparable(breaker.stats()) == comparable(breaker_alone.stats()));
    CHECK(breaker.stats().shadow_rejections == breaker_alone.stats().rejected);
    CHECK(breaker.stats().rejected > 0);
}

// Threads call every policy while another toggles shadow mode: the counters stay consistent
// with what the callers saw, and the bulkhead never has more than max_concurrent calls holding
// slots.
TEST_CASE("toggling shadow mode while threads call keeps every count consistent",
          "[shadow][threads]") {
    bulwark::ManualClock clock;
    bulwark::Degradation degradation(clock);
    degradation.set_level(bulwark::DegradationLevel::critical, "overload");
    bulwark::LoadShedder shedder(degradation, bulwark::DegradationLevel::severe);
    bulwark::RateLimiter limiter(bulwark::TokenBucket{1000.0, 50}, clock);
    bulwark::Bulkhead bulkhead(bulwark::BulkheadOptions{2, 0, 1s, false}, clock);
    bulwark::CircuitBreakerOptions o;
    o.failure_threshold = 3;
    o.failure_ratio = 0.0;
    o.break_duration = 1ms;
    bulwark::CircuitBreaker breaker("cb", o, clock);

    constexpr int threads = 4;
    constexpr int calls = 2000;
    struct Seen {
        std::uint64_t breaker_ran = 0, breaker_refused = 0;
        std::uint64_t slot = 0, slot_shadowed = 0, slot_refused = 0;
        std::uint64_t granted = 0, granted_shadow = 0, limited = 0;
        std::uint64_t shed_ran = 0, shed_refused = 0;
    };
    std::vector<Seen> seen(threads);
    std::atomic<int> inside{0};
    std::atomic<int> most_inside{0};
    std::atomic<int> done{0};
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
            Seen& s = seen[static_cast<std::size_t>(t)];
            for (int i = 0; i < calls; ++i) {
                bool ran = false;
                auto r = breaker.try_execute([&]() -> int {
                    ran = true;
                    if (i % 3 == 0) {
                        throw Down();
                    }
                    return 1;
                });
                (ran ? s.breaker_ran : s.breaker_refused) += 1;
                (void)r;
                if (auto p = bulkhead.try_acquire()) {
                    if (p.shadowed()) {
                        ++s.slot_shadowed;
                    } else {
                        ++s.slot;
                        const int now = inside.fetch_add(1) + 1;
                        int most = most_inside.load();
                        while (now > most && !most_inside.compare_exchange_weak(most, now)) {
                        }
                        inside.fetch_sub(1);
                    }
                } else {
                    ++s.slot_refused;
                }
                const bulwark::RateDecision d = limiter.try_acquire();
                (d.shadow ? s.granted_shadow : d.admitted ? s.granted : s.limited) += 1;
                bool shed_ran = false;
                (void)shedder.try_execute([&] {
                    shed_ran = true;
                    return 1;
                });
                (shed_ran ? s.shed_ran : s.shed_refused) += 1;
            }
            done.fetch_add(1);
        });
    }
    bool on = false;
    while (done.load() < threads) {
        on = !on;
        breaker.set_shadow(on);
        bulkhead.set_shadow(on);
        limiter.set_shadow(on);
        shedder.set_shadow(on);
        clock.advance(1ms);
        std::this_thread::yield();
    }
    for (auto& w : workers) {
        w.join();
    }
    Seen total;
    for (const Seen& s : seen) {
        total.breaker_ran += s.breaker_ran;
        total.breaker_refused += s.breaker_refused;
        total.slot += s.slot;
        total.slot_shadowed += s.slot_shadowed;
        total.slot_refused += s.slot_refused;
        total.granted += s.granted;
        total.granted_shadow += s.granted_shadow;
        total.limited += s.limited;
        total.shed_ran += s.shed_ran;
        total.shed_refused += s.shed_refused;
    }
    const auto n = static_cast<std::uint64_t>(threads * calls);
    const auto cb = breaker.stats();
    CHECK(total.breaker_ran + total.breaker_refused == n);
    CHECK(cb.calls + cb.shadow_rejections == total.breaker_ran);  // shadow passes record nothing
    CHECK(cb.rejected == total.breaker_refused + cb.shadow_rejections);
    const auto bh = bulkhead.stats();
    CHECK(most_inside.load() <= 2);
    CHECK(bh.in_flight == 0);
    CHECK(bh.admitted == total.slot);
    CHECK(bh.shadow_rejections == total.slot_shadowed);
    CHECK(bh.rejected == total.slot_shadowed + total.slot_refused);
    const auto rl = limiter.stats();
    CHECK(rl.admitted == total.granted);
    CHECK(rl.shadow_rejections == total.granted_shadow);
    CHECK(rl.rejected == total.granted_shadow + total.limited);
    const auto ls = shedder.stats();
    CHECK(ls.passed == 0);
    CHECK(ls.shed == n);
    CHECK(ls.shadow_rejections == total.shed_ran);
}

}  // namespace

#include <algorithm>
#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <bulwark/bulkhead.hpp>
#include <bulwark/circuit_breaker.hpp>
#include <bulwark/pipeline.hpp>
#include <bulwark/testing.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using bulwark::CircuitBreaker;
using bulwark::CircuitBreakerOptions;
using bulwark::CircuitState;
using bulwark::Duration;

namespace {

struct Down : std::runtime_error {
    Down() : std::runtime_error("dependency down") {}
};

// Options with only the rule under test switched on.
CircuitBreakerOptions only_consecutive(std::uint32_t threshold) {
    CircuitBreakerOptions o;
    o.failure_threshold = threshold;
    o.failure_ratio = 0.0;
    o.break_duration = 10s;
    return o;
}

CircuitBreakerOptions only_ratio(double ratio, std::uint32_t minimum, std::uint32_t window) {
    CircuitBreakerOptions o;
    o.failure_threshold = 0;
    o.failure_ratio = ratio;
    o.minimum_calls = minimum;
    o.window = bulwark::CountWindow{window};
    o.break_duration = 10s;
    return o;
}

bool fail(CircuitBreaker& b) {
    return b.try_execute([]() -> int { throw Down(); }).has_value();
}

bool succeed(CircuitBreaker& b) {
    return b.try_execute([] { return 1; }).has_value();
}

template <class E>
bool holds(const std::exception_ptr& error) {
    return bulwark::detail::holds_exception<E>(error);
}

}  // namespace

TEST_CASE("a new breaker is closed and passes calls through", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreaker b("dep", {}, clock);
    CHECK(b.state() == CircuitState::closed);
    CHECK(b.name() == "dep");
    CHECK(b.execute([] { return 42; }) == 42);
    b.execute([] {});
    auto s = b.stats();
    CHECK(s.calls == 2);
    CHECK(s.successes == 2);
    CHECK(s.failures == 0);
}

TEST_CASE("failure_threshold consecutive failures open the breaker", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreaker b("dep", only_consecutive(3), clock);
    fail(b);
    fail(b);
    CHECK(b.state() == CircuitState::closed);
    fail(b);
    CHECK(b.state() == CircuitState::open);
    CHECK(b.stats().opened == 1);
}

TEST_CASE("a success resets the consecutive-failure streak", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreaker b("dep", only_consecutive(3), clock);
    fail(b);
    fail(b);
    succeed(b);
    CHECK(b.stats().consecutive_failures == 0);
    fail(b);
    fail(b);
    CHECK(b.state() == CircuitState::closed);
    fail(b);
    CHECK(b.state() == CircuitState::open);
}

TEST_CASE("failure_threshold 0 switches the consecutive rule off", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    // Only the rate rule, which decides once the window holds 100 calls.
    CircuitBreaker b("dep", only_ratio(0.5, 100, 100), clock);
    for (int i = 0; i < 99; ++i) {
        fail(b);
    }
    CHECK(b.state() == CircuitState::closed);
    CHECK(b.stats().failures == 99);
    fail(b);
    CHECK(b.state() == CircuitState::open);
}

TEST_CASE("a breaker with every trip rule off is refused, naming the fields", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreakerOptions o;
    o.failure_threshold = 0;
    o.failure_ratio = 0.0;
    o.slow_call_ratio = 0.0;
    CHECK_THROWS_WITH(
        CircuitBreaker("x", o, clock),
        "CircuitBreakerOptions.failure_threshold, failure_ratio and slow_call_ratio must not all "
        "be 0: with every trip rule off the breaker can never open (for one that never opens, "
        "call disable() or use bulwark::Noop), got 0, 0 and 0");
    o.slow_call_ratio = 0.5;  // one rule on is enough
    CHECK_NOTHROW(CircuitBreaker("x", o, clock));
}

TEST_CASE("the failure rate opens it only once the window holds minimum_calls",
          "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreaker b("dep", only_ratio(0.5, 10, 100), clock);
    for (int i = 0; i < 9; ++i) {
        fail(b);  // 9 of 9 failed, but below minimum_calls
    }
    CHECK(b.state() == CircuitState::closed);
    CHECK(b.stats().failure_rate == Approx(1.0));
    fail(b);  // 10 calls, 100% failures
    CHECK(b.state() == CircuitState::open);
    CHECK(b.stats().window_calls == 10);
}

TEST_CASE("the failure rate opens it at exactly failure_ratio", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreaker b("dep", only_ratio(0.5, 10, 10), clock);
    for (int i = 0; i < 5; ++i) {
        succeed(b);
    }
    for (int i = 0; i < 4; ++i) {
        fail(b);
    }
    CHECK(b.state() == CircuitState::closed);  // 4/9, below minimum anyway
    fail(b);                                   // 5/10 = 0.5
    CHECK(b.state() == CircuitState::open);
    CHECK(b.stats().opened == 1);
}

TEST_CASE("a count window forgets calls older than its last N", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreaker b("dep", only_ratio(0.5, 4, 4), clock);
    fail(b);
    fail(b);
    fail(b);
    succeed(b);  // window: F F F S -> 3/4: opened already at the third failure?
    // minimum_calls is 4, so the rule waited; the success does not raise the rate.
    CHECK(b.state() == CircuitState::closed);
    succeed(b);
    succeed(b);
    succeed(b);  // window: S S S S
    auto s = b.stats();
    CHECK(s.window_calls == 4);
    CHECK(s.window_failures == 0);
    fail(b);  // window: S S S F -> 1/4
    CHECK(b.state() == CircuitState::closed);
    fail(b);  // S S F F -> 2/4 = 0.5
    CHECK(b.state() == CircuitState::open);
}

TEST_CASE("a time window lets calls expire with time", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreakerOptions o;
    o.failure_threshold = 0;
    o.failure_ratio = 0.5;
    o.minimum_calls = 4;
    o.window = bulwark::TimeWindow{10s, 1s};
    CircuitBreaker b("dep", o, clock);
    fail(b);
    fail(b);
    fail(b);
    CHECK(b.stats().window_calls == 3);
    clock.advance(11s);  // those three left the window
    CHECK(b.stats().window_calls == 0);
    succeed(b);
    succeed(b);
    succeed(b);
    fail(b);  // 1 of 4 in the window: closed
    CHECK(b.state() == CircuitState::closed);
    clock.advance(5s);
    fail(b);  // 2 of 5
    CHECK(b.state() == CircuitState::closed);
    clock.advance(6s);  // the first four (at t=11) left; only the failure at t=16 remains
    auto s = b.stats();
    CHECK(s.window_calls == 1);
    CHECK(s.window_failures == 1);
    fail(b);
    fail(b);
    fail(b);  // 4 failures of 4 in the window
    CHECK(b.state() == CircuitState::open);
}

TEST_CASE("a time window counts successes across bucket boundaries", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreakerOptions o;
    o.failure_threshold = 0;
    o.minimum_calls = 1;
    o.window = bulwark::TimeWindow{3s, 1s};
    CircuitBreaker b("dep", o, clock);
    for (int second = 0; second < 5; ++second) {
        for (int i = 0; i < 10; ++i) {
            succeed(b);
        }
        clock.advance(1s);
    }
    // The window is the buckets of seconds 3, 4 and the current, still empty, fifth second.
    auto s = b.stats();
    CHECK(s.window_calls == 20);
    CHECK(s.calls == 50);
}

TEST_CASE("an open breaker rejects with CircuitOpenError and its retry_after",
          "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreaker b("sms", only_consecutive(1), clock);
    fail(b);
    REQUIRE(b.state() == CircuitState::open);
    clock.advance(4s);
    int ran = 0;
    auto o = b.try_execute([&] { return ++ran; });
    REQUIRE(o.has_error());
    CHECK(ran == 0);
    try {
        o.rethrow_if_error();
    } catch (const bulwark::CircuitOpenError& e) {
        CHECK(std::string(e.what()) == "circuit breaker 'sms' is open");
        CHECK(e.retry_after() == Duration(6s));
        REQUIRE(e.retry_at().has_value());
        CHECK(*e.retry_at() - clock.now() == Duration(6s));
    }
    CHECK_THROWS_AS(b.execute([] { return 1; }), bulwark::CircuitOpenError);
    CHECK_THROWS_AS(b.execute([] { return 1; }), bulwark::RejectedError);
    auto permit = b.try_acquire();
    CHECK_FALSE(permit);
    CHECK(permit.retry_after() == Duration(6s));
    CHECK(holds<bulwark::CircuitOpenError>(permit.rejection()));
    auto s = b.stats();
    CHECK(s.rejected == 4);
    CHECK(s.retry_after == Duration(6s));
}

TEST_CASE("every rejection names its breaker as its source, cached ones too", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreakerOptions o = only_consecutive(1);
    o.break_duration = 10s;
    CircuitBreaker b("sms", o, clock);
    auto source = [&] {
        return bulwark_test::rejection_source(b.try_execute([] { return 1; }).error());
    };
    fail(b);
    CHECK(source() == "sms");  // open: built
    CHECK(source() == "sms");  // and reused
    clock.advance(10s);
    auto probe = b.try_acquire();  // half-open, its one probe in flight
    CHECK(source() == "sms");
    CHECK(bulwark_test::rejection_source(b.try_acquire().rejection()) == "sms");
    probe.record_success();
    b.trip();
    CHECK(source() == "sms");  // forced open
}

TEST_CASE("rejected calls are not failures, so steady traffic cannot keep it open",
          "[circuit_breaker][regression]") {
    bulwark::ManualClock clock;
    CircuitBreaker b("dep", only_consecutive(1), clock);
    fail(b);
    for (int i = 0; i < 1000; ++i) {
        succeed(b);  // rejected while open
        clock.advance(1ms);
    }
    CHECK(b.stats().failures == 1);
    clock.advance(9s);
    CHECK(succeed(b));  // the probe
    CHECK(b.state() == CircuitState::closed);
}

TEST_CASE("after break_duration it admits half_open_calls probes", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreakerOptions o = only_consecutive(1);
    o.half_open_calls = 3;
    CircuitBreaker b("dep", o, clock);
    fail(b);
    clock.advance(9999ms);
    CHECK(b.state() == CircuitState::open);
    clock.advance(1ms);
    CHECK(b.state() == CircuitState::half_open);
    auto p1 = b.try_acquire();
    auto p2 = b.try_acquire();
    auto p3 = b.try_acquire();
    auto p4 = b.try_acquire();
    CHECK(p1);
    CHECK(p2);
    CHECK(p3);
    CHECK_FALSE(p4);  // never one more
    CHECK(p1.state() == CircuitState::half_open);
    CHECK(holds<bulwark::CircuitOpenError>(p4.rejection()));
    p1.record_success();
    p2.record_success();
    CHECK(b.state() == CircuitState::half_open);
    CHECK_FALSE(b.try_acquire());  // the slots of finished probes are not handed out again
    p3.record_success();
    CHECK(b.state() == CircuitState::closed);
    CHECK(succeed(b));
}

TEST_CASE("a failed probe re-opens the breaker for a new break", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreakerOptions o = only_consecutive(1);
    o.half_open_calls = 2;
    CircuitBreaker b("dep", o, clock);
    fail(b);
    clock.advance(10s);
    auto p1 = b.try_acquire();
    auto p2 = b.try_acquire();
    p1.record_success();
    p2.record_failure();
    CHECK(b.state() == CircuitState::open);
    auto permit = b.try_acquire();
    CHECK(permit.retry_after() == Duration(10s));
    CHECK(b.stats().opened == 2);
}

TEST_CASE("a probe permit destroyed unrecorded counts as a failure", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreaker b("dep", only_consecutive(1), clock);
    fail(b);
    clock.advance(10s);
    {
        auto probe = b.try_acquire();
        REQUIRE(probe);
        CHECK(probe.pending());
    }  // abandoned
    CHECK(b.state() == CircuitState::open);
    CHECK(b.stats().failures == 2);
}

TEST_CASE("a moved permit is recorded once, by its new owner", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreaker b("dep", only_consecutive(1), clock);
    auto a = b.try_acquire();
    CircuitBreaker::Permit moved = std::move(a);
    CHECK_FALSE(a.pending());  // NOLINT(bugprone-use-after-move): checking the moved-from state
    CHECK(moved.pending());
    moved.record_success();
    CHECK(b.stats().calls == 1);
    CHECK(b.state() == CircuitState::closed);
}

TEST_CASE("recording a permit twice or recording a rejection is a logic error",
          "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreaker b("dep", only_consecutive(1), clock);
    auto permit = b.try_acquire();
    permit.record_success();
    CHECK_THROWS_AS(permit.record_failure(), std::logic_error);
    b.trip();
    auto rejected = b.try_acquire();
    CHECK_THROWS_WITH(rejected.record_success(),
                      BULWARK_CATCH_MESSAGE_CONTAINS("the call was rejected"));
}

TEST_CASE("a probe that never reports expires after half_open_max_wait", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreakerOptions o = only_consecutive(1);
    o.half_open_max_wait = 30s;
    CircuitBreaker b("dep", o, clock);
    fail(b);
    clock.advance(10s);
    auto hung = b.try_acquire();
    REQUIRE(hung);
    clock.advance(29s);
    CHECK_FALSE(b.try_acquire());  // the probe is still in flight
    CHECK(b.state() == CircuitState::half_open);
    clock.advance(1s);
    CHECK_FALSE(b.try_acquire());  // expired: counts as a failure, the breaker re-opens
    CHECK(b.state() == CircuitState::open);
    CHECK(b.stats().expired_probes == 1);
    hung.record_success();  // late: a new generation, ignored
    CHECK(b.state() == CircuitState::open);
    clock.advance(10s);
    CHECK(succeed(b));
    CHECK(b.state() == CircuitState::closed);
}

TEST_CASE("a late success from before the break cannot close the breaker", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreaker b("dep", only_consecutive(1), clock);
    auto slow_call = b.try_acquire();  // admitted while closed
    fail(b);                           // opens
    REQUIRE(b.state() == CircuitState::open);
    slow_call.record_success();
    CHECK(b.state() == CircuitState::open);
    clock.advance(10s);
    auto probe = b.try_acquire();
    auto late = b.try_acquire();
    CHECK_FALSE(late);
    probe.record_success();
    CHECK(b.state() == CircuitState::closed);
}

TEST_CASE("a late failure from before a reset does not count", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreaker b("dep", only_consecutive(1), clock);
    auto before = b.try_acquire();
    b.reset();
    before.record_failure();
    CHECK(b.state() == CircuitState::closed);
    CHECK(b.stats().consecutive_failures == 0);
    CHECK(b.stats().failures == 1);  // still counted in the totals
}

TEST_CASE("exceptions outside handle<E>() pass through and count as successes",
          "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreakerOptions o = only_consecutive(2);
    o.handle<std::system_error>();
    CircuitBreaker b("dep", o, clock);
    for (int i = 0; i < 5; ++i) {
        CHECK_THROWS_AS(b.execute([]() -> int { throw std::invalid_argument("caller's bug"); }),
                        std::invalid_argument);
    }
    CHECK(b.state() == CircuitState::closed);
    auto s = b.stats();
    CHECK(s.ignored == 5);
    CHECK(s.failures == 0);
    CHECK(s.calls == 5);
    auto refused = [] {
        throw std::system_error(std::make_error_code(std::errc::connection_refused));
    };
    CHECK_THROWS_AS(b.execute(refused), std::system_error);
    CHECK_THROWS_AS(b.execute(refused), std::system_error);
    CHECK(b.state() == CircuitState::open);
}

TEST_CASE("a half-open probe that throws an unhandled exception does not leave it stuck",
          "[circuit_breaker][regression]") {
    bulwark::ManualClock clock;
    CircuitBreakerOptions o = only_consecutive(1);
    o.handle<Down>();
    CircuitBreaker b("dep", o, clock);
    fail(b);
    clock.advance(10s);
    CHECK_THROWS_AS(b.execute([]() -> int { throw std::logic_error("not the dependency"); }),
                    std::logic_error);
    CHECK(b.state() == CircuitState::closed);  // the probe counted as a success

    fail(b);
    clock.advance(10s);
    CHECK_THROWS_AS(b.execute([]() -> int { throw Down(); }), Down);  // a handled probe failure
    CHECK(b.state() == CircuitState::open);
    clock.advance(10s);
    CHECK(succeed(b));
    CHECK(b.state() == CircuitState::closed);
}

TEST_CASE("handle_result counts values as failures but still returns them", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreakerOptions o = only_consecutive(2);
    o.handle_result([](const int& status) { return status >= 500; });
    CircuitBreaker b("http", o, clock);
    CHECK(b.execute([] { return 503; }) == 503);
    CHECK(b.execute([] { return 200; }) == 200);
    CHECK(b.execute([] { return 500; }) == 500);
    CHECK(b.state() == CircuitState::closed);
    CHECK(b.execute([] { return 502; }) == 502);
    CHECK(b.state() == CircuitState::open);
    CHECK(b.stats().failures == 3);
}

TEST_CASE("slow calls open it once slow_call_ratio is reached", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreakerOptions o;
    o.failure_threshold = 0;
    o.failure_ratio = 0.0;
    o.slow_call_ratio = 0.5;
    o.slow_call_duration = 2s;
    o.minimum_calls = 4;
    o.window = bulwark::CountWindow{4};
    CircuitBreaker b("dep", o, clock);
    auto call_taking = [&](Duration d) {
        return b.execute([&] {
            clock.advance(d);
            return 1;
        });
    };
    call_taking(100ms);
    call_taking(3s);
    call_taking(100ms);
    CHECK(b.state() == CircuitState::closed);
    CHECK(b.stats().slow == 1);
    call_taking(2s);  // 2 slow of 4
    CHECK(b.state() == CircuitState::open);
    CHECK(b.stats().failures == 0);
}

TEST_CASE("a call slower than call_timeout counts as a failure but returns its value",
          "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreakerOptions o = only_consecutive(2);
    o.call_timeout = 1s;
    CircuitBreaker b("dep", o, clock);
    auto slow = [&] {
        clock.advance(1500ms);
        return 7;
    };
    CHECK(b.execute(slow) == 7);
    CHECK(b.execute([] { return 1; }) == 1);  // resets the streak
    CHECK(b.execute(slow) == 7);
    CHECK(b.execute(slow) == 7);
    CHECK(b.state() == CircuitState::open);
    auto s = b.stats();
    CHECK(s.timeouts == 3);
    CHECK(s.failures == 3);
}

TEST_CASE("the two-step form measures elapsed time for record(outcome)", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreakerOptions o = only_consecutive(1);
    o.call_timeout = 1s;
    CircuitBreaker b("dep", o, clock);
    auto permit = b.try_acquire();
    clock.advance(2s);
    permit.record(bulwark::Outcome<int>::from_value(1));
    CHECK(b.state() == CircuitState::open);

    b.reset();
    auto quick = b.try_acquire();
    quick.record(bulwark::Outcome<int>::from_value(1), 10ms);
    CHECK(b.state() == CircuitState::closed);
    auto with_error = b.try_acquire();
    with_error.record(bulwark::Outcome<void>::from_error(std::make_exception_ptr(Down())), 1ms);
    CHECK(b.state() == CircuitState::open);
}

TEST_CASE("trip forces it open until reset", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreaker b("dep", {}, clock);
    b.trip();
    CHECK(b.state() == CircuitState::forced_open);
    clock.advance(1h);
    CHECK(b.state() == CircuitState::forced_open);
    auto o = b.try_execute([] { return 1; });
    REQUIRE(o.has_error());
    CHECK_THROWS_WITH(o.rethrow_if_error(), "circuit breaker 'dep' is forced open");
    b.reset();
    CHECK(b.state() == CircuitState::closed);
    CHECK(succeed(b));
}

TEST_CASE("a disabled breaker admits everything, counts, and never opens", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreaker b("dep", only_consecutive(1), clock);
    b.disable();
    for (int i = 0; i < 10; ++i) {
        fail(b);
    }
    CHECK(b.state() == CircuitState::disabled);
    auto s = b.stats();
    CHECK(s.failures == 10);
    CHECK(s.window_failures == 10);
    b.reset();
    CHECK(b.stats().window_calls == 0);
    fail(b);
    CHECK(b.state() == CircuitState::open);
}

TEST_CASE("reset empties the window and the streak", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreaker b("dep", only_ratio(0.5, 4, 10), clock);
    fail(b);
    fail(b);
    fail(b);
    b.reset();
    auto s = b.stats();
    CHECK(s.window_calls == 0);
    CHECK(s.failures == 3);
    succeed(b);
    fail(b);
    fail(b);
    CHECK(b.state() == CircuitState::closed);  // 2 of 3 since the reset, below minimum_calls
}

TEST_CASE("listeners see every transition with its reason and time", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreaker b("dep", only_consecutive(1), clock);
    std::vector<bulwark::StateChange> changes;
    b.on_state_change([&](const bulwark::StateChange& c) {
        changes.push_back(c);
        (void)b.stats();  // listeners run outside the lock: calling back is safe
    });
    fail(b);
    const auto opened_at = clock.now();
    clock.advance(10s);
    succeed(b);
    b.trip();
    b.disable();
    b.reset();
    REQUIRE(changes.size() == 6);
    CHECK(changes[0].breaker == "dep");
    CHECK(changes[0].from == CircuitState::closed);
    CHECK(changes[0].to == CircuitState::open);
    CHECK(changes[0].reason == bulwark::TransitionReason::consecutive_failures);
    CHECK(changes[0].at == opened_at);
    CHECK(changes[1].to == CircuitState::half_open);
    CHECK(changes[1].reason == bulwark::TransitionReason::break_elapsed);
    CHECK(changes[1].at == opened_at + Duration(10s));
    CHECK(changes[2].to == CircuitState::closed);
    CHECK(changes[2].reason == bulwark::TransitionReason::probes_succeeded);
    CHECK(changes[3].to == CircuitState::forced_open);
    CHECK(changes[4].to == CircuitState::disabled);
    CHECK(changes[5].to == CircuitState::closed);
    CHECK(changes[5].reason == bulwark::TransitionReason::manual);
    for (std::size_t i = 0; i < changes.size(); ++i) {
        CHECK(changes[i].generation == i + 1);
    }
}

TEST_CASE("a removed state-change listener hears no more transitions", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreaker b("dep", only_consecutive(1), clock);
    int heard = 0;
    const bulwark::ListenerId id = b.on_state_change([&](const bulwark::StateChange&) { ++heard; });
    b.trip();
    CHECK(b.remove_listener(id));
    CHECK_FALSE(b.remove_listener(id));
    b.reset();
    CHECK(heard == 1);
}

TEST_CASE("stats report time in state", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreaker b("dep", only_consecutive(1), clock);
    clock.advance(5s);
    CHECK(b.stats().time_in_state == Duration(5s));
    fail(b);
    clock.advance(2s);
    auto s = b.stats();
    CHECK(s.state == CircuitState::open);
    CHECK(s.time_in_state == Duration(2s));
    CHECK(s.retry_after == Duration(8s));
}

TEST_CASE("invalid options throw std::invalid_argument naming the field", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    auto rejects = [&](CircuitBreakerOptions o, const std::string& message) {
        CHECK_THROWS_WITH(CircuitBreaker("x", o, clock), message);
    };
    CircuitBreakerOptions o;
    o.failure_ratio = 1.5;
    rejects(o, "CircuitBreakerOptions.failure_ratio must be in [0, 1], got 1.5");
    o = {};
    o.slow_call_ratio = -0.1;
    rejects(o, "CircuitBreakerOptions.slow_call_ratio must be in [0, 1], got -0.1");
    o = {};
    o.window = bulwark::CountWindow{0};
    rejects(o, "CircuitBreakerOptions.window (CountWindow.size) must be in [1, 1000000], got 0");
    o = {};
    o.minimum_calls = 0;
    rejects(o, "CircuitBreakerOptions.minimum_calls must be >= 1, got 0");
    o = {};
    o.minimum_calls = 200;
    rejects(o,
            "CircuitBreakerOptions.minimum_calls must be <= the count window's size (100), got "
            "200");
    o = {};
    o.half_open_calls = 0;
    rejects(o, "CircuitBreakerOptions.half_open_calls must be in [1, 10000], got 0");
    o = {};
    o.break_duration = -5s;
    rejects(o, "CircuitBreakerOptions.break_duration must be > 0, got -5s");
    o = {};
    o.call_timeout = -1ms;
    rejects(o, "CircuitBreakerOptions.call_timeout must be >= 0, got -1ms");
    o = {};
    o.half_open_max_wait = -1s;
    rejects(o, "CircuitBreakerOptions.half_open_max_wait must be >= 0, got -1s");
    o = {};
    o.slow_call_duration = 0s;
    rejects(o, "CircuitBreakerOptions.slow_call_duration must be > 0, got 0s");
    o = {};
    o.window = bulwark::TimeWindow{0s, 1s};
    rejects(o, "CircuitBreakerOptions.window (TimeWindow.length) must be > 0, got 0s");
    o = {};
    o.window = bulwark::TimeWindow{10s, 20s};
    rejects(o,
            "CircuitBreakerOptions.window (TimeWindow.bucket) must be <= TimeWindow.length (10s), "
            "got 20s");
    o = {};
    o.window = bulwark::TimeWindow{1h, 1ms};
    CHECK_THROWS_AS(CircuitBreaker("x", o, clock), std::invalid_argument);
}

TEST_CASE("a breaker composes in a pipeline with a fault injector", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreaker b("dep", only_consecutive(3), clock);
    bulwark::FaultInjector chaos(clock);
    chaos.fail_next(3);
    auto p = bulwark::pipeline(b, chaos);
    for (int i = 0; i < 3; ++i) {
        CHECK_THROWS_AS(p.execute([] { return 1; }), bulwark::InjectedFault);
    }
    CHECK_THROWS_AS(p.execute([] { return 1; }), bulwark::CircuitOpenError);
    CHECK(chaos.calls() == 3);  // the open breaker kept the fourth call away
    clock.advance(10s);
    CHECK(p.execute([] { return 1; }) == 1);
    CHECK(b.state() == CircuitState::closed);
}

TEST_CASE("stress: probes in flight, counts and transitions hold under 4 threads",
          "[circuit_breaker][.stress]") {
    // 4 threads x 300k calls against one breaker while the dependency flips between failing and
    // healthy. Invariants: never more than half_open_calls probes in flight at once, leftovers
    // of earlier half-open periods included (each probe holds its permit for a while, so that
    // probes overlap and outlive the period that admitted them); every call's result is counted
    // exactly once, checked against the test's own counts; every transition reaches the
    // listener (generations 1..G, none missing).
    bulwark::ManualClock clock;
    CircuitBreakerOptions o;
    o.failure_threshold = 20;
    o.failure_ratio = 0.5;
    o.minimum_calls = 50;
    o.window = bulwark::CountWindow{200};
    o.half_open_calls = 3;
    o.break_duration = 1ms;
    o.handle<Down>();
    CircuitBreaker b("stress", o, clock);

    std::mutex generations_mutex;
    std::vector<std::uint64_t> generations;
    b.on_state_change([&](const bulwark::StateChange& c) {
        std::lock_guard<std::mutex> lock(generations_mutex);
        generations.push_back(c.generation);
    });

    std::atomic<bool> failing{false};
    std::atomic<int> probes_in_flight{0};
    std::atomic<int> max_probes_in_flight{0};
    std::atomic<std::uint64_t> probes{0};
    std::atomic<std::uint64_t> ok{0}, failed{0}, ignored{0}, inner{0}, rejected{0};
    constexpr int threads_count = 4;
    constexpr int calls_per_thread = 300000;
    constexpr int probe_length = 40;  // a probe reports after this many more calls of its thread

    // Records one call's result; which kind depends on the call's number and the phase.
    auto finish = [&](CircuitBreaker::Permit& permit, int i) {
        const int kind = i % 10 == 0 ? 2 : (i % 10 == 5 ? 3 : (failing.load() ? 1 : 0));
        if (kind == 0) {
            permit.record(bulwark::Outcome<int>::from_value(1), 1us);
            ok.fetch_add(1, std::memory_order_relaxed);
        } else if (kind == 1) {
            permit.record(bulwark::Outcome<int>::from_error(std::make_exception_ptr(Down())), 1us);
            failed.fetch_add(1, std::memory_order_relaxed);
        } else if (kind == 2) {
            permit.record(bulwark::Outcome<int>::from_error(
                              std::make_exception_ptr(std::logic_error("ignored"))),
                          1us);
            ignored.fetch_add(1, std::memory_order_relaxed);
        } else {
            permit.record(bulwark::Outcome<int>::from_error(std::make_exception_ptr(
                              bulwark::BulkheadFullError("inner bulkhead full"))),
                          1us);
            inner.fetch_add(1, std::memory_order_relaxed);
        }
    };
    struct Held {
        CircuitBreaker::Permit permit;
        int due;
    };

    std::vector<std::thread> threads;
    for (int t = 0; t < threads_count; ++t) {
        threads.emplace_back([&, t] {
            // Probes this thread is running: each reports probe_length calls later, so probes
            // overlap and some outlive the half-open period that admitted them.
            std::deque<Held> held;
            auto finish_probe = [&](Held& h, int i) {
                probes_in_flight.fetch_sub(1);  // before the result frees its slot
                finish(h.permit, i);
            };
            for (int i = 0; i < calls_per_thread; ++i) {
                if (t == 0 && i % 5000 == 0) {
                    failing.store(!failing.load());
                }
                if (i % 64 == 0) {
                    clock.advance(1ms);
                }
                while (!held.empty() && held.front().due <= i) {
                    finish_probe(held.front(), i);
                    held.pop_front();
                }
                auto permit = b.try_acquire();
                if (!permit) {
                    rejected.fetch_add(1, std::memory_order_relaxed);
                    continue;
                }
                if (permit.state() != CircuitState::half_open) {
                    finish(permit, i);
                    continue;
                }
                // Counted from after the admission to before the result: never more than the
                // breaker's own count of probes in flight.
                const int now_in_flight = probes_in_flight.fetch_add(1) + 1;
                int seen = max_probes_in_flight.load();
                while (now_in_flight > seen &&
                       !max_probes_in_flight.compare_exchange_weak(seen, now_in_flight)) {
                }
                probes.fetch_add(1, std::memory_order_relaxed);
                held.push_back(Held{std::move(permit), i + probe_length});
            }
            for (Held& h : held) {
                finish_probe(h, calls_per_thread);
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }

    REQUIRE(probes.load() > 100);             // half-open periods really happened
    CHECK(max_probes_in_flight.load() <= 3);  // never one more probe than half_open_calls
    auto s = b.stats();
    const std::uint64_t recorded = ok.load() + failed.load() + ignored.load() + inner.load();
    CHECK(s.calls == recorded);
    CHECK(s.successes == ok.load());
    CHECK(s.failures == failed.load());
    CHECK(s.ignored == ignored.load());
    CHECK(s.inner_rejections == inner.load());
    CHECK(s.rejected == rejected.load());
    CHECK(recorded + rejected.load() == std::uint64_t{threads_count} * calls_per_thread);
    CHECK(s.opened > 10);  // it really did flip many times

    std::sort(generations.begin(), generations.end());
    REQUIRE_FALSE(generations.empty());
    for (std::size_t i = 0; i < generations.size(); ++i) {
        REQUIRE(generations[i] == i + 1);
    }
}

TEST_CASE("break_duration_backoff lengthens repeated openings until it closes",
          "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreakerOptions o = only_consecutive(1);
    o.break_duration_backoff = bulwark::Backoff::exponential(60s, 2.0).max_delay(10min);
    CircuitBreaker b("dep", o, clock);
    auto break_length = [&] {
        return b.try_acquire().retry_after();
    };
    fail(b);
    CHECK(break_length() == Duration(60s));
    std::vector<Duration> breaks;
    for (int i = 0; i < 5; ++i) {
        clock.advance(break_length());
        fail(b);  // the probe fails: opened again, longer
        breaks.push_back(break_length());
    }
    CHECK(breaks == std::vector<Duration>{120s, 240s, 480s, 600s, 600s});
    clock.advance(600s);
    CHECK(succeed(b));  // closes: the count starts again
    fail(b);
    CHECK(break_length() == Duration(60s));
}

TEST_CASE("an expired probe re-opens with the remaining break as retry_after",
          "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreakerOptions o = only_consecutive(1);
    o.half_open_max_wait = 5s;
    CircuitBreaker b("dep", o, clock);
    fail(b);
    clock.advance(10s);
    auto hung = b.try_acquire();
    clock.advance(5s);
    auto refused = b.try_acquire();
    CHECK_FALSE(refused);
    CHECK(refused.retry_after() == Duration(10s));
}

// --- stale results -----------------------------------------------------------------------

TEST_CASE("stale successes from before a reset do not enter the count window",
          "[circuit_breaker][regression]") {
    bulwark::ManualClock clock;
    CircuitBreaker b("dep", only_ratio(0.5, 4, 4), clock);
    auto p1 = b.try_acquire();
    auto p2 = b.try_acquire();
    auto p3 = b.try_acquire();
    b.reset();
    p1.record_success();
    p2.record_success();
    p3.record_success();
    fail(b);
    fail(b);  // 2 real calls since the reset: below minimum_calls
    CHECK(b.state() == CircuitState::closed);
    auto s = b.stats();
    CHECK(s.window_calls == 2);
    CHECK(s.window_failures == 2);
    CHECK(s.successes == 3);  // stale results stay in the lifetime totals
    CHECK(s.calls == 5);
}

TEST_CASE("stale ignored exceptions do not enter the count window", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreakerOptions o = only_ratio(0.5, 4, 4);
    o.handle<Down>();
    CircuitBreaker b("dep", o, clock);
    auto p1 = b.try_acquire();
    auto p2 = b.try_acquire();
    b.reset();
    const auto not_ours =
        bulwark::Outcome<int>::from_error(std::make_exception_ptr(std::logic_error("bug")));
    p1.record(not_ours, 1ms);
    p2.record(not_ours, 1ms);
    fail(b);
    fail(b);
    CHECK(b.state() == CircuitState::closed);
    CHECK(b.stats().window_calls == 2);
    CHECK(b.stats().ignored == 2);
}

TEST_CASE("a stale success from an earlier half-open period does not close the breaker",
          "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreakerOptions o = only_consecutive(1);
    o.half_open_calls = 2;
    CircuitBreaker b("dep", o, clock);
    fail(b);
    clock.advance(10s);
    auto old_probe = b.try_acquire();
    auto failing_probe = b.try_acquire();
    failing_probe.record_failure();  // re-opened
    clock.advance(10s);
    auto probe = b.try_acquire();
    REQUIRE(probe);
    old_probe.record_success();  // stale
    probe.record_success();
    CHECK(b.state() == CircuitState::half_open);  // one of the two probes of this period
    auto second = b.try_acquire();
    REQUIRE(second);
    second.record_success();
    CHECK(b.state() == CircuitState::closed);
}

// --- rejections by inner policies ----------------------------------------------------------

TEST_CASE("a full bulkhead inside the breaker never opens it", "[circuit_breaker][regression]") {
    bulwark::ManualClock clock;
    CircuitBreakerOptions o = only_ratio(0.5, 4, 10);
    o.failure_threshold = 3;
    CircuitBreaker b("dep", o, clock);
    bulwark::Bulkhead bulkhead(1);
    auto p = bulwark::pipeline(b, bulkhead);
    auto held = bulkhead.try_acquire();  // the only slot
    REQUIRE(held);
    for (int i = 0; i < 50; ++i) {
        CHECK_THROWS_AS(p.execute([] { return 1; }), bulwark::BulkheadFullError);
    }
    CHECK(b.state() == CircuitState::closed);
    auto s = b.stats();
    CHECK(s.failures == 0);
    CHECK(s.inner_rejections == 50);
    CHECK(s.calls == 50);
    CHECK(s.window_calls == 0);  // neither successes nor failures for the rules
}

TEST_CASE("inner rejections of every kind are neither successes nor failures",
          "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreaker b("dep", only_consecutive(2), clock);
    CircuitBreaker inner("inner", {}, clock);
    inner.trip();
    fail(b);  // a streak of one
    CHECK_THROWS_AS(b.execute([]() -> int { throw bulwark::RateLimitedError("limited"); }),
                    bulwark::RateLimitedError);
    CHECK_THROWS_AS(b.execute([]() -> int { throw bulwark::LoadShedError("shed"); }),
                    bulwark::LoadShedError);
    CHECK_THROWS_AS(b.execute([]() -> int { throw bulwark::BulkheadFullError("full"); }),
                    bulwark::BulkheadFullError);
    CHECK_THROWS_AS(b.execute([&] { return inner.execute([] { return 1; }); }),
                    bulwark::CircuitOpenError);
    CHECK(b.state() == CircuitState::closed);
    CHECK(b.stats().consecutive_failures == 1);  // a rejection does not end the streak
    CHECK(b.stats().inner_rejections == 4);
    fail(b);
    CHECK(b.state() == CircuitState::open);
}

TEST_CASE("a timeout inside the breaker counts as a failure", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreaker b("dep", only_consecutive(2), clock);
    auto late = []() -> int {
        throw bulwark::TimeoutError("deadline exceeded");
    };
    CHECK_THROWS_AS(b.execute(late), bulwark::TimeoutError);
    CHECK_THROWS_AS(b.execute(late), bulwark::TimeoutError);
    CHECK(b.state() == CircuitState::open);
    CHECK(b.stats().failures == 2);
    CHECK(b.stats().inner_rejections == 0);
}

TEST_CASE("handle<E>() with a rejection type counts those rejections as failures",
          "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreakerOptions o = only_consecutive(2);
    o.handle<Down>();
    o.handle<bulwark::BulkheadFullError>();
    CircuitBreaker b("dep", o, clock);
    CHECK_THROWS_AS(b.execute([]() -> int { throw bulwark::RateLimitedError("limited"); }),
                    bulwark::RateLimitedError);  // not named: still ignored
    CHECK(b.stats().inner_rejections == 1);
    CHECK_THROWS_AS(b.execute([]() -> int { throw bulwark::BulkheadFullError("full"); }),
                    bulwark::BulkheadFullError);
    CHECK_THROWS_AS(b.execute([]() -> int { throw bulwark::BulkheadFullError("full"); }),
                    bulwark::BulkheadFullError);
    CHECK(b.state() == CircuitState::open);
    CHECK(b.stats().failures == 2);
}

TEST_CASE("a rejection type listed in counted_rejections counts as a failure",
          "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreakerOptions o = only_consecutive(2);
    o.handle<bulwark::BulkheadFullError>();
    CHECK(o.counted_rejections == std::vector<bulwark::ExceptionType>{
                                      bulwark::ExceptionType::of<bulwark::BulkheadFullError>()});
    o = only_consecutive(2);  // every exception a failure, rate limits listed by hand
    o.counted_rejections.push_back(bulwark::ExceptionType::of<bulwark::RateLimitedError>());
    CircuitBreaker b("dep", o, clock);
    CHECK_THROWS_AS(b.execute([]() -> int { throw bulwark::BulkheadFullError("full"); }),
                    bulwark::BulkheadFullError);  // not listed: still an inner rejection
    CHECK(b.stats().inner_rejections == 1);
    for (int i = 0; i < 2; ++i) {
        CHECK_THROWS_AS(b.execute([]() -> int { throw bulwark::RateLimitedError("limited"); }),
                        bulwark::RateLimitedError);
    }
    CHECK(b.state() == CircuitState::open);
    CHECK(b.stats().failures == 2);
}

TEST_CASE("handle<std::runtime_error>() does not count inner rejections", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreakerOptions o = only_consecutive(1);
    o.handle<std::runtime_error>();  // RejectedError derives from it, but names no rejection
    CircuitBreaker b("dep", o, clock);
    CHECK_THROWS_AS(b.execute([]() -> int { throw bulwark::BulkheadFullError("full"); }),
                    bulwark::BulkheadFullError);
    CHECK(b.state() == CircuitState::closed);
    fail(b);
    CHECK(b.state() == CircuitState::open);
}

TEST_CASE("an exhausted retry budget counts as the failure it carries", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreaker b("dep", only_consecutive(1), clock);
    auto budget_over_full_bulkhead = []() -> int {
        throw bulwark::RetryBudgetExhaustedError(
            "retry budget exhausted", std::make_exception_ptr(bulwark::BulkheadFullError("full")));
    };
    CHECK_THROWS_AS(b.execute(budget_over_full_bulkhead), bulwark::RetryBudgetExhaustedError);
    CHECK(b.state() == CircuitState::closed);  // what it carries is a rejection
    auto budget_over_failure = []() -> int {
        throw bulwark::RetryBudgetExhaustedError("retry budget exhausted",
                                                 std::make_exception_ptr(Down()));
    };
    CHECK_THROWS_AS(b.execute(budget_over_failure), bulwark::RetryBudgetExhaustedError);
    CHECK(b.state() == CircuitState::open);  // what it carries is the dependency's failure
}

TEST_CASE("a probe rejected by an inner policy decides nothing and frees its turn",
          "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreaker b("dep", only_consecutive(1), clock);
    fail(b);
    clock.advance(10s);
    CHECK_THROWS_AS(b.execute([]() -> int { throw bulwark::BulkheadFullError("full"); }),
                    bulwark::BulkheadFullError);
    CHECK(b.state() == CircuitState::half_open);
    CHECK(succeed(b));  // the next call is the probe
    CHECK(b.state() == CircuitState::closed);
}

// --- half-open probes in flight ------------------------------------------------------------

TEST_CASE("half-open admits no new probe while probes of an earlier period are in flight",
          "[circuit_breaker][regression]") {
    bulwark::ManualClock clock;
    CircuitBreakerOptions o = only_consecutive(1);
    o.half_open_calls = 3;
    CircuitBreaker b("dep", o, clock);
    fail(b);
    clock.advance(10s);
    auto p1 = b.try_acquire();
    auto p2 = b.try_acquire();
    std::optional<CircuitBreaker::Permit> p3 = b.try_acquire();
    REQUIRE((p1 && p2 && *p3));
    p1.record_failure();  // re-opens; p2 and p3 are still running
    clock.advance(10s);
    auto q1 = b.try_acquire();
    CHECK(q1);
    CHECK_FALSE(b.try_acquire());  // 3 in flight: q1, p2, p3
    p2.record_success();           // stale, but its slot is free again
    auto q2 = b.try_acquire();
    CHECK(q2);
    CHECK_FALSE(b.try_acquire());
    p3.reset();  // destroyed unrecorded: a stale failure, and a free slot
    auto q3 = b.try_acquire();
    CHECK(q3);
    CHECK_FALSE(b.try_acquire());  // never more than three probes of one period either
    CHECK(b.state() == CircuitState::half_open);
    q1.record_success();
    q2.record_success();
    q3.record_success();
    CHECK(b.state() == CircuitState::closed);
}

TEST_CASE("half_open_max_wait frees the slots of leftover probes", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreakerOptions o = only_consecutive(1);
    o.half_open_calls = 2;
    o.half_open_max_wait = 30s;
    CircuitBreaker b("dep", o, clock);
    fail(b);
    clock.advance(10s);
    auto hung = b.try_acquire();
    auto failing = b.try_acquire();
    failing.record_failure();  // re-opens; `hung` never reports
    clock.advance(10s);
    auto q1 = b.try_acquire();
    CHECK(q1);
    CHECK_FALSE(b.try_acquire());  // `hung` holds the other slot
    q1.record_success();
    clock.advance(20s);  // `hung` is 30 s old: expired, but it belongs to an earlier period
    auto q2 = b.try_acquire();
    CHECK(q2);
    CHECK(b.state() == CircuitState::half_open);
    CHECK(b.stats().expired_probes == 1);
    q2.record_success();
    CHECK(b.state() == CircuitState::closed);
    hung.record_failure();  // late and stale: changes nothing
    CHECK(b.state() == CircuitState::closed);
}

// --- retry_after of reused rejections --------------------------------------------------------

TEST_CASE("a rejection's retry_after is the time left when it was produced",
          "[circuit_breaker][regression]") {
    bulwark::ManualClock clock;
    CircuitBreaker b("dep", only_consecutive(1), clock);
    fail(b);
    auto retry_after = [&] {
        try {
            b.try_execute([] { return 1; }).rethrow_if_error();
        } catch (const bulwark::CircuitOpenError& e) {
            return e.retry_after();
        }
        return Duration(-1);
    };
    CHECK(retry_after() == Duration(10s));
    clock.advance(9s);
    CHECK(retry_after() == Duration(1s));
    CHECK(retry_after() == Duration(1s));
    auto permit = b.try_acquire();
    CHECK(permit.retry_after() == Duration(1s));
    try {
        std::rethrow_exception(permit.rejection());
    } catch (const bulwark::CircuitOpenError& e) {
        CHECK(e.retry_after() == Duration(1s));
    }
}

// --- time windows --------------------------------------------------------------------------

namespace {

CircuitBreakerOptions time_window_ratio() {
    CircuitBreakerOptions o;
    o.failure_threshold = 0;
    o.failure_ratio = 0.5;
    o.minimum_calls = 4;
    o.window = bulwark::TimeWindow{10s, 1s};
    o.break_duration = 10s;
    return o;
}

}  // namespace

TEST_CASE("reset empties a time window, its per-thread counts included", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreaker b("dep", time_window_ratio(), clock);
    for (int i = 0; i < 10; ++i) {
        succeed(b);
    }
    fail(b);
    b.reset();
    CHECK(b.stats().window_calls == 0);
    fail(b);
    fail(b);
    fail(b);
    auto s = b.stats();
    CHECK(s.window_calls == 3);  // not the 11 calls before the reset
    CHECK(s.window_failures == 3);
    CHECK(b.state() == CircuitState::closed);  // below minimum_calls
    fail(b);
    CHECK(b.state() == CircuitState::open);  // 4 of 4 since the reset
}

TEST_CASE("a disabled breaker with a time window counts but never opens", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreaker b("dep", time_window_ratio(), clock);
    b.disable();
    for (int i = 0; i < 10; ++i) {
        fail(b);
        succeed(b);
    }
    CHECK(b.state() == CircuitState::disabled);
    auto s = b.stats();
    CHECK(s.window_calls == 20);
    CHECK(s.window_failures == 10);
    b.reset();
    CHECK(b.stats().window_calls == 0);
    for (int i = 0; i < 4; ++i) {
        fail(b);
    }
    CHECK(b.state() == CircuitState::open);
}

TEST_CASE("slow calls open a breaker with a time window", "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreakerOptions o = time_window_ratio();
    o.failure_ratio = 0.0;
    o.slow_call_ratio = 0.5;
    o.slow_call_duration = 2s;
    CircuitBreaker b("dep", o, clock);
    auto call_taking = [&](Duration d) {
        return b.execute([&] {
            clock.advance(d);
            return 1;
        });
    };
    call_taking(3s);     // slow, at t=3
    clock.advance(10s);  // ...and out of the window
    CHECK(b.stats().window_slow == 0);
    call_taking(100ms);
    call_taking(2s);
    call_taking(100ms);
    CHECK(b.state() == CircuitState::closed);  // 1 slow of 3, below minimum_calls
    auto s = b.stats();
    CHECK(s.window_calls == 3);
    CHECK(s.window_slow == 1);
    CHECK(s.slow == 2);
    call_taking(5s);  // 2 slow of 4
    CHECK(b.state() == CircuitState::open);
    CHECK(b.stats().failures == 0);
}

TEST_CASE("a time window with too many buckets is rejected with a message naming it",
          "[circuit_breaker]") {
    bulwark::ManualClock clock;
    CircuitBreakerOptions o;
    o.window = bulwark::TimeWindow{1h, 1ms};
    CHECK_THROWS_WITH(CircuitBreaker("x", o, clock),
                      "CircuitBreakerOptions.window (TimeWindow) must have at most 10000 buckets "
                      "(length / bucket), got 3600000");
    o.window = bulwark::TimeWindow{10s, 1ms};  // exactly 10000: accepted
    CHECK_NOTHROW(CircuitBreaker("x", o, clock));
}

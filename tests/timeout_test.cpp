#include <stdexcept>
#include <string>
#include <vector>

#include <bulwark/circuit_breaker.hpp>
#include <bulwark/fallback.hpp>
#include <bulwark/pipeline.hpp>
#include <bulwark/retry.hpp>
#include <bulwark/ticking_clock.hpp>
#include <bulwark/timeout.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using bulwark::Duration;

TEST_CASE("a call that finishes in time passes through", "[timeout]") {
    bulwark::ManualClock clock;
    bulwark::Timeout timeout(2s, clock);
    CHECK(timeout.execute([&] {
        clock.advance(1999ms);
        return 5;
    }) == 5);
    CHECK(timeout.stats().timeouts == 0);
}

TEST_CASE("a result after the deadline fails with TimeoutError", "[timeout]") {
    bulwark::ManualClock clock;
    bulwark::Timeout timeout(2s, clock);
    bulwark::Context ctx("lookup");
    auto o = timeout.try_execute(
        [&] {
            clock.advance(2001ms);
            return 5;
        },
        ctx);
    REQUIRE(o.has_error());
    CHECK_THROWS_AS(o.rethrow_if_error(), bulwark::TimeoutError);
    CHECK_THROWS_WITH(o.rethrow_if_error(), "operation 'lookup' timed out after 2s");
    CHECK(timeout.stats().timeouts == 1);
}

TEST_CASE("a named timeout's TimeoutErrors carry its name as their source", "[timeout]") {
    bulwark::ManualClock clock;
    bulwark::Timeout db("db", 2s, clock);
    CHECK(db.name() == "db");
    CHECK(bulwark::Timeout(db).name() == "db");
    bulwark::Context ctx("lookup");
    auto late = db.try_execute(
        [&] {
            clock.advance(3s);
            return 5;
        },
        ctx);
    REQUIRE(late.has_error());
    CHECK(bulwark_test::rejection_source(late.error()) == "db");
    CHECK_THROWS_WITH(late.rethrow_if_error(),
                      "timeout 'db': operation 'lookup' timed out after 2s");
}

TEST_CASE("the call sees the deadline and cancelled() turns true when it passes", "[timeout]") {
    bulwark::ManualClock clock;
    bulwark::Timeout timeout(2s, clock);
    const auto start = clock.now();
    timeout.execute([&](bulwark::Context& ctx) {
        REQUIRE(ctx.deadline().has_value());
        CHECK(*ctx.deadline() == start + Duration(2s));
        CHECK_FALSE(ctx.cancelled());
        clock.advance(2s);
        CHECK(ctx.cancelled());
        CHECK(ctx.deadline_passed());
    });
}

TEST_CASE("the tighter of an outer deadline and its own wins, and the outer one is restored",
          "[timeout]") {
    bulwark::ManualClock clock;
    bulwark::Timeout inner(5s, clock);
    bulwark::Context ctx;
    const auto outer_deadline = clock.now() + 1s;
    ctx.set_deadline(outer_deadline);
    inner.execute([&](bulwark::Context& c) { CHECK(*c.deadline() == outer_deadline); }, ctx);
    CHECK(*ctx.deadline() == outer_deadline);

    bulwark::Context loose;
    loose.set_deadline(clock.now() + 1h);
    inner.execute([&](bulwark::Context& c) { CHECK(*c.deadline() == clock.now() + 5s); }, loose);
    CHECK(*loose.deadline() == clock.now() + 1h);
}

TEST_CASE("a result after a tighter deadline the caller set fails with TimeoutError", "[timeout]") {
    bulwark::ManualClock clock;
    bulwark::Timeout timeout(10s, clock);
    bulwark::Context ctx("lookup");
    ctx.set_deadline(clock.now() + 1s);  // no clock: nobody else checks it
    auto in_time = timeout.try_execute(
        [&] {
            clock.advance(999ms);
            return 1;
        },
        ctx);
    CHECK(in_time.value() == 1);
    ctx.set_deadline(clock.now() + 1s);
    auto late = timeout.try_execute(
        [&] {
            clock.advance(1001ms);
            return 2;
        },
        ctx);
    REQUIRE(late.has_error());
    CHECK_THROWS_WITH(late.rethrow_if_error(),
                      "operation 'lookup' missed the caller's deadline after 1001ms (its own "
                      "timeout is 10s)");
    CHECK(timeout.stats().timeouts == 1);
    CHECK(*ctx.deadline() == clock.now() - 1ms);  // the caller's deadline is restored
}

TEST_CASE(
    "an outer Timeout's deadline is left to it: the inner one passes a result that was "
    "in time for itself",
    "[timeout]") {
    bulwark::ManualClock clock;
    bulwark::Timeout outer(1s, clock);
    bulwark::Timeout inner(2s, clock);
    bulwark::Outcome<int> inner_result = bulwark::Outcome<int>::from_value(0);
    auto o = outer.try_execute([&](bulwark::Context& ctx) {
        inner_result = inner.try_execute(
            [&] {
                clock.advance(1500ms);  // past the outer 1 s, within the inner 2 s
                return 7;
            },
            ctx);
        return inner_result.value();
    });
    CHECK(inner_result.value() == 7);
    CHECK(inner.stats().timeouts == 0);
    REQUIRE(o.has_error());
    CHECK_THROWS_AS(o.rethrow_if_error(), bulwark::TimeoutError);
    CHECK(outer.stats().timeouts == 1);
}

TEST_CASE("outside a retry a timeout bounds all attempts, inside it bounds each",
          "[timeout][pipeline]") {
    bulwark::ManualClock clock;
    auto slow_then_fail = [&]() -> int {
        clock.advance(1s);
        throw std::runtime_error("flaky");
    };
    auto outside = bulwark::pipeline(bulwark::Timeout(2500ms, clock), bulwark_test::Repeat(3));
    auto o = outside.try_execute(slow_then_fail);  // 3 attempts take 3s > 2.5s
    CHECK_THROWS_AS(o.rethrow_if_error(), bulwark::TimeoutError);

    auto inside = bulwark::pipeline(bulwark_test::Repeat(3), bulwark::Timeout(2500ms, clock));
    auto i = inside.try_execute(slow_then_fail);  // each attempt 1s < 2.5s
    CHECK_THROWS_AS(i.rethrow_if_error(), std::runtime_error);
}

TEST_CASE("late results go to on_late_result listeners", "[timeout]") {
    bulwark::ManualClock clock;
    bulwark::Timeout timeout(1s, clock);
    std::vector<bulwark::LateResult> late;
    timeout.on_late_result([&](const bulwark::LateResult& r) { late.push_back(r); });
    (void)timeout.try_execute([&] {
        clock.advance(3s);
        return 1;
    });
    (void)timeout.try_execute([&]() -> int {
        clock.advance(2s);
        throw std::runtime_error("late and failed");
    });
    REQUIRE(late.size() == 2);
    CHECK(late[0].succeeded);
    CHECK(late[0].elapsed == Duration(3s));
    CHECK(late[0].timeout == Duration(1s));
    CHECK_FALSE(late[1].succeeded);
    CHECK(late[1].error != nullptr);
    CHECK_FALSE(late[1].caller_deadline);

    bulwark::Context hurried;
    hurried.set_deadline(clock.now() + 500ms);
    (void)timeout.try_execute(
        [&] {
            clock.advance(700ms);  // past the caller's 500 ms, within the Timeout's 1 s
            return 1;
        },
        hurried);
    REQUIRE(late.size() == 3);
    CHECK(late[2].caller_deadline);
    CHECK(late[2].timeout == Duration(1s));
}

TEST_CASE("a removed on_late_result listener hears no more late results", "[timeout]") {
    bulwark::ManualClock clock;
    bulwark::Timeout timeout(1s, clock);
    int heard = 0;
    const bulwark::ListenerId id =
        timeout.on_late_result([&](const bulwark::LateResult&) { ++heard; });
    auto late = [&] {
        clock.advance(2s);
        return 1;
    };
    (void)timeout.try_execute(late);
    CHECK(timeout.remove_listener(id));
    CHECK_FALSE(timeout.remove_listener(id));
    (void)timeout.try_execute(late);
    CHECK(heard == 1);
}

TEST_CASE(
    "a caller's deadline is taken over by the outermost Timeout: an inner one leaves it "
    "alone, so a breaker between them sees the attempt succeed",
    "[timeout]") {
    bulwark::ManualClock clock;
    bulwark::Timeout outer(10s, clock);
    bulwark::RetryOptions no_retry;
    no_retry.max_retries = 0;
    bulwark::RetryPolicy retry(no_retry, clock);
    bulwark::CircuitBreaker breaker("dependency", bulwark::CircuitBreakerOptions{}, clock);
    bulwark::Timeout attempt(2s, clock);
    bulwark::Context ctx;
    const auto caller_deadline = clock.now() + 1s;
    ctx.set_deadline(caller_deadline);  // the caller's total, without a clock
    bool cancelled_at_deadline = false;
    auto o = bulwark::pipeline(outer, retry, breaker, attempt)
                 .try_execute(
                     [&](bulwark::Context& c) {
                         clock.advance(1500ms);  // within the attempt's 2 s, past the total
                         cancelled_at_deadline = c.cancelled();
                         return 7;
                     },
                     ctx);
    REQUIRE(o.has_error());
    CHECK_THROWS_WITH(o.rethrow_if_error(),
                      BULWARK_CATCH_MESSAGE_CONTAINS("missed the caller's deadline"));
    CHECK(cancelled_at_deadline);  // the taken-over deadline carries a clock
    CHECK(outer.stats().timeouts == 1);
    CHECK(attempt.stats().timeouts == 0);
    const auto b = breaker.stats();
    CHECK(b.successes == 1);
    CHECK(b.failures == 0);
    CHECK(*ctx.deadline() == caller_deadline);  // the caller's own deadline, restored
    CHECK(ctx.deadline_clock() == nullptr);
}

TEST_CASE("a Timeout works for result types that cannot be assigned", "[timeout]") {
    struct Reply {
        const int code;
    };
    bulwark::ManualClock clock;
    bulwark::Timeout timeout(1s, clock);
    auto in_time = timeout.try_execute([] { return Reply{200}; });
    CHECK(in_time.value().code == 200);
    auto late = timeout.try_execute([&] {
        clock.advance(2s);
        return Reply{200};
    });
    CHECK_THROWS_AS(late.rethrow_if_error(), bulwark::TimeoutError);
}

TEST_CASE("a Timeout refuses a non-positive duration", "[timeout]") {
    CHECK_THROWS_WITH(bulwark::Timeout(0s), "Timeout.timeout must be > 0, got 0s");
    CHECK_THROWS_AS(bulwark::Timeout(-1ms), std::invalid_argument);
}

TEST_CASE("on a TickingClock a Timeout judges lateness by the last tick", "[timeout]") {
    bulwark::ManualClock source;
    bulwark::TickingClock clock(bulwark::TickingClock::manual_ticks, source);
    bulwark::Timeout timeout(1s, clock);

    // The coarse time has not moved: the result cannot be told from an on-time one.
    CHECK(timeout.execute([&] {
        source.advance(2s);
        return 1;
    }) == 1);

    bulwark::Context ctx;
    auto o = timeout.try_execute(
        [&](bulwark::Context& c) {
            source.advance(2s);
            clock.tick();
            CHECK(c.cancelled());  // the deadline, read on the same coarse time
            return 1;
        },
        ctx);
    REQUIRE(o.has_error());
    CHECK_THROWS_AS(o.rethrow_if_error(), bulwark::TimeoutError);
    CHECK(timeout.stats().timeouts == 1);
}

TEST_CASE("a timeout too long to represent never fires", "[timeout]") {
    bulwark::ManualClock clock;
    bulwark::Timeout timeout(Duration::max(), clock);
    bulwark::Context ctx;
    CHECK(timeout.execute(
              [&](bulwark::Context& c) {
                  CHECK_FALSE(c.has_deadline());  // saturated to "none", not wrapped around
                  clock.advance(24h * 365 * 100);
                  return 3;
              },
              ctx) == 3);
    CHECK(timeout.stats().timeouts == 0);
}

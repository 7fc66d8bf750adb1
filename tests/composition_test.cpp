// The composition-order guide of docs/strategies.md, end to end: the seven policies in the order
// it recommends, on one ManualClock, against a dependency that is healthy, flaky, slow, dead and
// locally saturated in turn.
#include <stdexcept>
#include <string>

#include <bulwark/bulkhead.hpp>
#include <bulwark/circuit_breaker.hpp>
#include <bulwark/fallback.hpp>
#include <bulwark/pipeline.hpp>
#include <bulwark/rate_limiter.hpp>
#include <bulwark/retry.hpp>
#include <bulwark/timeout.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using bulwark::Duration;

namespace {

struct Recommended {
    bulwark::ManualClock clock;
    bulwark::Fallback<std::string> fallback{[this](const std::exception_ptr&) {
        ++fallbacks;
        return std::string("fallback");
    }};
    bulwark::Timeout timeout{10s, clock};
    bulwark::RetryPolicy retry{[] {
                                   bulwark::RetryOptions o;
                                   o.max_retries = 4;
                                   o.backoff = bulwark::Backoff::fixed(1s);
                                   return o;
                               }(),
                               clock};
    bulwark::CircuitBreaker breaker{"dependency",
                                    [] {
                                        bulwark::CircuitBreakerOptions o;
                                        o.failure_threshold = 3;
                                        o.failure_ratio = 0;  // the consecutive rule only
                                        o.break_duration = 5s;
                                        return o;
                                    }(),
                                    clock};
    bulwark::Bulkhead bulkhead{2, 0, 1s, clock};
    bulwark::RateLimiter limiter{bulwark::TokenBucket{100, 10}, clock};
    bulwark::Timeout attempt_timeout{2s, clock};
    int fallbacks = 0;
    int dependency_calls = 0;

    template <class F>
    std::string call(F dependency) {
        bulwark::Context ctx;
        return call(dependency, ctx);
    }

    template <class F>
    std::string call(F dependency, bulwark::Context& ctx) {
        auto p = bulwark::pipeline(fallback, timeout, retry, breaker, bulkhead, limiter,
                                   attempt_timeout);
        return p.execute(
            [&] {
                ++dependency_calls;
                return dependency();
            },
            ctx);
    }
};

}  // namespace

TEST_CASE("the recommended pipeline passes a healthy call straight through", "[composition]") {
    Recommended r;
    const auto t0 = r.clock.now();
    CHECK(r.call([] { return std::string("ok"); }) == "ok");
    CHECK(r.dependency_calls == 1);
    CHECK(r.clock.now() == t0);
    CHECK(r.retry.stats().retries == 0);
    CHECK(r.breaker.stats().successes == 1);
    CHECK(r.fallbacks == 0);
}

TEST_CASE("the recommended pipeline retries a transient failure past the breaker",
          "[composition]") {
    Recommended r;
    const auto t0 = r.clock.now();
    int failures = 1;
    CHECK(r.call([&] {
        if (failures-- > 0) {
            throw std::runtime_error("503");
        }
        return std::string("ok");
    }) == "ok");
    CHECK(r.dependency_calls == 2);
    CHECK(r.clock.now() - t0 == Duration(1s));  // one backoff wait
    CHECK(r.retry.stats().retries == 1);
    const auto b = r.breaker.stats();
    CHECK(b.failures == 1);  // every attempt is a result for the breaker
    CHECK(b.successes == 1);
    CHECK(b.state == bulwark::CircuitState::closed);
    CHECK(r.fallbacks == 0);
}

TEST_CASE("the recommended pipeline bounds a slow attempt and retries it", "[composition]") {
    Recommended r;
    const auto t0 = r.clock.now();
    int slow = 1;
    CHECK(r.call([&] {
        if (slow-- > 0) {
            r.clock.advance(3s);  // past the 2 s attempt timeout
            return std::string("too late");
        }
        return std::string("ok");
    }) == "ok");
    CHECK(r.dependency_calls == 2);
    CHECK(r.attempt_timeout.stats().timeouts == 1);
    CHECK(r.timeout.stats().timeouts == 0);
    CHECK(r.breaker.stats().failures == 1);  // a timeout is the dependency's failure
    CHECK(r.clock.now() - t0 == Duration(4s));
    CHECK(r.fallbacks == 0);
}

TEST_CASE(
    "against a dead dependency the breaker opens, the retry waits for it within the "
    "total timeout, and the fallback answers",
    "[composition]") {
    Recommended r;
    const auto t0 = r.clock.now();
    CHECK(r.call([]() -> std::string { throw std::runtime_error("down"); }) == "fallback");
    // Three failures 1 s apart open the breaker for 5 s; the retry honours its retry_at, so the
    // fourth attempt is a half-open probe at 7 s, which fails and re-opens it. Waiting another
    // 5 s would pass the 10 s total: the retry gives up there and the fallback answers.
    CHECK(r.dependency_calls == 4);
    CHECK(r.clock.now() - t0 == Duration(7s));
    CHECK(r.clock.now() - t0 <= Duration(10s));
    const auto b = r.breaker.stats();
    CHECK(b.state == bulwark::CircuitState::open);
    CHECK(b.opened == 2);
    CHECK(b.failures == 4);
    CHECK(b.rejected == 1);  // the attempt that found it open cost the dependency nothing
    CHECK(r.fallbacks == 1);

    // A caller whose deadline ends before the break does fails fast into the fallback, without
    // touching the dependency or waiting.
    bulwark::Context hurried;
    hurried.set_deadline(r.clock.now() + 2s);
    const auto t1 = r.clock.now();
    CHECK(r.call([] { return std::string("ok"); }, hurried) == "fallback");
    CHECK(r.dependency_calls == 4);
    CHECK(r.clock.now() == t1);
    CHECK(r.fallbacks == 2);

    // One with time to wait is served by the probe once the break is over.
    CHECK(r.call([] { return std::string("ok"); }) == "ok");
    CHECK(r.clock.now() - t1 == Duration(5s));
    CHECK(r.breaker.stats().state == bulwark::CircuitState::closed);
}

TEST_CASE("a saturated bulkhead inside the breaker never opens it", "[composition]") {
    Recommended r;
    auto first = r.bulkhead.try_acquire();
    auto second = r.bulkhead.try_acquire();
    REQUIRE(first);
    REQUIRE(second);
    CHECK(r.call([] { return std::string("ok"); }) == "fallback");
    CHECK(r.dependency_calls == 0);
    const auto b = r.breaker.stats();
    CHECK(b.failures == 0);
    CHECK(b.inner_rejections == 5);  // the first attempt and four retries, all refused locally
    CHECK(b.state == bulwark::CircuitState::closed);
    CHECK(r.bulkhead.stats().rejected == 5);
    CHECK(r.fallbacks == 1);
}

#include <algorithm>
#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <bulwark/circuit_breaker.hpp>
#include <bulwark/detail/random.hpp>
#include <bulwark/pipeline.hpp>
#include <bulwark/retry.hpp>
#include <bulwark/testing.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using bulwark::Backoff;
using bulwark::Duration;
using bulwark::ManualClock;
using bulwark::RetryOptions;
using bulwark::RetryPolicy;

namespace {
struct Transient : std::runtime_error {
    Transient() : std::runtime_error("transient") {}
};

RetryOptions exponential(int retries) {
    RetryOptions o;
    o.max_retries = retries;
    o.backoff = bulwark::Backoff::exponential(1s);
    return o;
}

// A dependency that fails `failures` times, then succeeds.
struct Flaky {
    int failures;
    int calls = 0;
    int operator()() {
        if (++calls <= failures) {
            throw Transient();
        }
        return calls;
    }
};

RetryOptions jittered(int retries, Backoff backoff) {
    RetryOptions o;
    o.max_retries = retries;
    o.backoff = backoff;
    return o;
}

Backoff full_jitter() {
    return Backoff::exponential(1s).max_delay(1min).jitter(bulwark::Jitter::full);
}

// The waits of one call through `retry` that fails every attempt.
std::vector<Duration> waits_of_failing_call(RetryPolicy& retry, ManualClock& clock) {
    clock.clear_sleeps();
    Flaky dead{1000};
    CHECK_THROWS_AS(retry.execute(std::ref(dead)), Transient);
    return clock.sleeps();
}

// The first `count` delays of a backoff, computed by the pure delay(n).
std::vector<Duration> first_delays(const Backoff& b, std::uint32_t count) {
    std::vector<Duration> out;
    for (std::uint32_t n = 1; n <= count; ++n) {
        out.push_back(b.delay(n));
    }
    return out;
}

// A clock on which a wait is interrupted: sleep_for advances a ManualClock by the request plus
// `overshoot`, then cancels `ctx` if one is set (a cancel that arrives during the wait).
class InterruptingClock final : public bulwark::Clock {
public:
    bulwark::TimePoint now() const noexcept override { return time.now(); }
    void sleep_for(Duration d) override {
        time.sleep_for(d);
        time.advance(overshoot);
        if (ctx != nullptr) {
            ctx->cancel();
        }
    }

    ManualClock time;
    bulwark::Context* ctx = nullptr;
    Duration overshoot{0};
};
}  // namespace

TEST_CASE("a failing call is retried with the backoff's exact waits", "[retry]") {
    bulwark::ManualClock clock;
    RetryPolicy retry(exponential(3), clock);
    Flaky flaky{3};
    CHECK(retry.execute(std::ref(flaky)) == 4);
    CHECK(clock.sleeps() == std::vector<Duration>{1s, 2s, 4s});
    auto s = retry.stats();
    CHECK(s.calls == 1);
    CHECK(s.retries == 3);
    CHECK(s.successes_after_retry == 1);
}

TEST_CASE("without count_calls only calls whose first attempt failed are counted", "[retry]") {
    bulwark::ManualClock clock;
    RetryOptions o = exponential(3);
    o.retry_on<Transient>();
    o.count_calls = false;
    RetryPolicy retry(o, clock);
    for (int i = 0; i < 5; ++i) {
        CHECK(retry.execute([] { return 1; }) == 1);
    }
    CHECK(retry.stats().calls == 0);
    Flaky flaky{1};
    CHECK(retry.execute(std::ref(flaky)) == 2);
    CHECK_THROWS_AS(retry.execute([]() -> int { throw std::logic_error("not retried"); }),
                    std::logic_error);
    auto schedule = retry.schedule();
    CHECK(schedule.next_delay(bulwark::Outcome<int>::from_value(1)) == std::nullopt);
    auto failing = retry.schedule();
    CHECK(failing.next_delay(
              bulwark::Outcome<int>::from_error(std::make_exception_ptr(Transient()))) == 1s);
    const auto s = retry.stats();
    CHECK(s.calls == 3);  // the flaky call, the unretryable one, the failing schedule
    CHECK(s.retries == 2);
    CHECK(s.successes_after_retry == 1);
    CHECK(s.not_retryable == 1);

    RetryPolicy counting(exponential(3), clock);
    for (int i = 0; i < 5; ++i) {
        CHECK(counting.execute([] { return 1; }) == 1);
    }
    auto counted = counting.schedule();
    CHECK(counted.next_delay(bulwark::Outcome<int>::from_value(1)) == std::nullopt);
    CHECK(counting.stats().calls == 6);
}

TEST_CASE("after max_retries the last error is returned", "[retry]") {
    bulwark::ManualClock clock;
    RetryPolicy retry(exponential(2), clock);
    Flaky flaky{10};
    CHECK_THROWS_AS(retry.execute(std::ref(flaky)), Transient);
    CHECK(flaky.calls == 3);
    CHECK(clock.sleeps() == std::vector<Duration>{1s, 2s});
    CHECK(retry.stats().exhausted == 1);
}

TEST_CASE("a first-try success does not wait or retry", "[retry]") {
    bulwark::ManualClock clock;
    RetryPolicy retry(exponential(3), clock);
    CHECK(retry.execute([] { return 1; }) == 1);
    CHECK(clock.sleeps().empty());
    CHECK(retry.stats().retries == 0);
}

TEST_CASE("only retryable exceptions are retried", "[retry]") {
    bulwark::ManualClock clock;
    RetryOptions o = exponential(3);
    o.retry_on<std::system_error>();
    RetryPolicy retry(o, clock);
    int calls = 0;
    CHECK_THROWS_AS(retry.execute([&]() -> int {
        ++calls;
        throw std::invalid_argument("bad request");
    }),
                    std::invalid_argument);
    CHECK(calls == 1);
    CHECK(retry.stats().not_retryable == 1);
    calls = 0;
    CHECK_THROWS_AS(retry.execute([&]() -> int {
        ++calls;
        throw std::system_error(std::make_error_code(std::errc::connection_reset));
    }),
                    std::system_error);
    CHECK(calls == 4);
}

TEST_CASE("retry_if decides with a predicate on the exception", "[retry]") {
    bulwark::ManualClock clock;
    RetryOptions o = exponential(5);
    o.retry_if([](const std::exception_ptr& e) {
        try {
            std::rethrow_exception(e);
        } catch (const std::runtime_error& r) {
            return std::string(r.what()) == "transient";
        } catch (...) {
            return false;
        }
    });
    RetryPolicy retry(o, clock);
    Flaky flaky{2};
    CHECK(retry.execute(std::ref(flaky)) == 3);
}

TEST_CASE("retry_if_result retries bad values and returns the last one", "[retry]") {
    bulwark::ManualClock clock;
    RetryOptions o = exponential(2);
    o.retry_if_result([](const int& status) { return status >= 500; });
    RetryPolicy retry(o, clock);
    std::vector<int> statuses{503, 502, 200};
    std::size_t i = 0;
    CHECK(retry.execute([&] { return statuses[i++]; }) == 200);
    std::size_t j = 0;
    CHECK(retry.execute([&] { return 500 + static_cast<int>(j++); }) == 502);  // exhausted
    CHECK(retry.stats().exhausted == 1);
}

TEST_CASE("no wait is started that would pass max_elapsed", "[retry]") {
    bulwark::ManualClock clock;
    RetryOptions o = exponential(10);
    o.max_elapsed = 10s;
    RetryPolicy retry(o, clock);
    Flaky flaky{100};
    CHECK_THROWS_AS(retry.execute(std::ref(flaky)), Transient);
    // Waits 1 + 2 + 4 = 7 s; the next (8 s) would end at 15 s > 10 s.
    CHECK(clock.sleeps() == std::vector<Duration>{1s, 2s, 4s});
}

TEST_CASE("retries stop at the context's deadline and when it is cancelled", "[retry]") {
    bulwark::ManualClock clock;
    RetryPolicy retry(exponential(10), clock);
    bulwark::Context ctx;
    ctx.set_deadline(clock.now() + 5s);
    Flaky flaky{100};
    CHECK_THROWS_AS(retry.execute(std::ref(flaky), ctx), Transient);
    CHECK(clock.sleeps() == std::vector<Duration>{1s, 2s});  // 3 s used; 4 s more passes 5 s

    bulwark::Context cancellable;
    int calls = 0;
    CHECK_THROWS_AS(retry.execute(
                        [&](bulwark::Context& c) -> int {
                            if (++calls == 2) {
                                c.cancel();
                            }
                            throw Transient();
                        },
                        cancellable),
                    Transient);
    CHECK(calls == 2);
}

TEST_CASE("the context carries the attempt number", "[retry]") {
    bulwark::ManualClock clock;
    RetryPolicy retry(exponential(3), clock);
    std::vector<std::uint32_t> attempts;
    retry.execute([&](bulwark::Context& ctx) {
        attempts.push_back(ctx.attempt());
        if (ctx.attempt() < 2) {
            throw Transient();
        }
    });
    CHECK(attempts == std::vector<std::uint32_t>{0, 1, 2});
}

TEST_CASE("on_retry listeners see attempt, delay and error", "[retry]") {
    bulwark::ManualClock clock;
    RetryOptions o = exponential(3);
    std::vector<bulwark::RetryEvent> from_options;
    o.on_retry([&](const bulwark::RetryEvent& e) { from_options.push_back(e); });
    RetryPolicy retry(o, clock);
    std::vector<std::uint32_t> attempts;
    retry.on_retry([&](const bulwark::RetryEvent& e) { attempts.push_back(e.attempt); });
    Flaky flaky{2};
    retry.execute(std::ref(flaky));
    REQUIRE(from_options.size() == 2);
    CHECK(from_options[0].attempt == 1);
    CHECK(from_options[0].delay == Duration(1s));
    CHECK(from_options[1].delay == Duration(2s));
    CHECK(from_options[0].error != nullptr);
    CHECK(attempts == std::vector<std::uint32_t>{1, 2});
}

TEST_CASE("a removed on_retry listener hears no more retries", "[retry]") {
    bulwark::ManualClock clock;
    RetryPolicy retry(exponential(1), clock);
    int heard = 0;
    const bulwark::ListenerId id = retry.on_retry([&](const bulwark::RetryEvent&) { ++heard; });
    Flaky once{1};
    retry.execute(std::ref(once));
    CHECK(retry.remove_listener(id));
    CHECK_FALSE(retry.remove_listener(id));
    Flaky again{1};
    retry.execute(std::ref(again));
    CHECK(heard == 1);
}

TEST_CASE("pipeline(retry, breaker): an open breaker's retry_at is honoured", "[retry][pipeline]") {
    bulwark::ManualClock clock;
    bulwark::CircuitBreakerOptions b;
    b.failure_threshold = 2;
    b.failure_ratio = 0;
    b.break_duration = 30s;
    bulwark::CircuitBreaker breaker("dep", b, clock);
    RetryOptions o;
    o.max_retries = 5;
    o.backoff = bulwark::Backoff::fixed(1s);
    RetryPolicy retry(o, clock);
    bulwark::FaultInjector chaos(clock);
    chaos.fail_next(2);
    auto p = bulwark::pipeline(retry, breaker, chaos);
    CHECK(p.execute([] { return 7; }) == 7);
    // Two failures open the breaker at t = 1 s for 30 s; after the 1 s backoff the third attempt
    // is rejected, and the retry waits for the rest of the break (29 s) instead of its 1 s
    // backoff; then the probe succeeds.
    CHECK(clock.sleeps() == std::vector<Duration>{1s, 1s, 29s});
    CHECK(chaos.calls() == 3);
    CHECK(breaker.state() == bulwark::CircuitState::closed);
}

TEST_CASE("pipeline(breaker, retry): the breaker sees one call per retried operation",
          "[retry][pipeline]") {
    bulwark::ManualClock clock;
    bulwark::CircuitBreakerOptions b;
    b.failure_threshold = 2;
    b.failure_ratio = 0;
    bulwark::CircuitBreaker breaker("dep", b, clock);
    RetryPolicy retry(exponential(3), clock);
    bulwark::FaultInjector chaos(clock);
    chaos.fail_next(3);
    auto p = bulwark::pipeline(breaker, retry, chaos);
    CHECK(p.execute([] { return 1; }) == 1);  // three failures hidden inside one operation
    CHECK(breaker.stats().calls == 1);
    CHECK(breaker.stats().failures == 0);
    chaos.fail_always();
    CHECK_THROWS(p.execute([] { return 1; }));
    CHECK(breaker.stats().failures == 1);  // one failed operation, four failed attempts
}

TEST_CASE("wrap(f, retry) retries a plain function", "[retry][wrap]") {
    bulwark::ManualClock clock;
    RetryPolicy retry(exponential(3), clock);
    int calls = 0;
    auto flaky_add = [&](int a, int b) {
        if (++calls < 3) {
            throw Transient();
        }
        return a + b;
    };
    auto resilient_add = bulwark::wrap(flaky_add, retry);
    CHECK(resilient_add(2, 3) == 5);
    CHECK(calls == 3);
}

TEST_CASE("a 10% budget caps retries against a dead dependency", "[retry][budget]") {
    bulwark::ManualClock clock;
    auto budget = bulwark::RetryBudget::shared(0.1, 10, clock);
    RetryOptions o;
    o.max_retries = 3;
    o.backoff = bulwark::Backoff::fixed(0s);
    o.budget = budget;
    RetryPolicy a(o, clock);
    RetryPolicy b(o, clock);  // two policies share the budget
    int attempts = 0;
    int budget_errors = 0;
    for (int i = 0; i < 1000; ++i) {
        RetryPolicy& policy = i % 2 == 0 ? a : b;
        auto outcome = policy.try_execute([&]() -> int {
            ++attempts;
            throw Transient();
        });
        try {
            outcome.rethrow_if_error();
        } catch (const bulwark::RetryBudgetExhaustedError& e) {
            ++budget_errors;
            CHECK(e.last_error() != nullptr);
        } catch (const Transient&) {
        }
    }
    const int retries = attempts - 1000;
    CHECK(retries <= 1000 * 0.1 + 10);
    CHECK(retries >= 90);  // and the budget is really used
    CHECK(budget_errors > 800);
    CHECK(budget->withdrawn() == static_cast<std::uint64_t>(retries));
    CHECK(a.stats().budget_exhausted + b.stats().budget_exhausted ==
          static_cast<std::uint64_t>(budget_errors));
}

TEST_CASE("a named retry's budget refusals carry its name as their source", "[retry][budget]") {
    bulwark::ManualClock clock;
    RetryOptions o;
    o.backoff = bulwark::Backoff::fixed(0s);
    o.budget = bulwark::RetryBudget::shared(0.0, 0, clock);  // refuses every retry
    RetryPolicy sms("sms", o, clock);
    CHECK(sms.name() == "sms");
    auto refused = sms.try_execute([]() -> int { throw Transient(); });
    REQUIRE(refused.has_error());
    CHECK(bulwark_test::rejection_source(refused.error()) == "sms");
    CHECK_THROWS_WITH(refused.rethrow_if_error(), "retry 'sms': retry budget exhausted");
}

TEST_CASE("the budget's floor allows min_per_second retries each second", "[retry][budget]") {
    bulwark::ManualClock clock;
    bulwark::TpsRetryBudget budget(0.0, 2, clock);
    int allowed = 0;
    for (int second = 0; second < 5; ++second) {
        for (int i = 0; i < 10; ++i) {
            budget.record_call();
            allowed += budget.try_withdraw() ? 1 : 0;
        }
        clock.advance(1s);
    }
    CHECK(allowed == 10);
}

TEST_CASE("RetryBudget takes its options as a struct with documented defaults", "[retry][budget]") {
    bulwark::ManualClock clock;
    const bulwark::TpsRetryBudget defaults(bulwark::RetryBudgetOptions{}, clock);
    CHECK(defaults.options().ratio == 0.1);
    CHECK(defaults.options().min_per_second == 10);
    CHECK(defaults.options().window == Duration(10s));

    bulwark::RetryBudgetOptions o;
    o.ratio = 0.0;
    o.min_per_second = 2;
    auto budget = bulwark::RetryBudget::shared(o, clock);
    int allowed = 0;
    for (int i = 0; i < 10; ++i) {
        budget->record_call();
        allowed += budget->try_withdraw() ? 1 : 0;
    }
    CHECK(allowed == 2);
    // The positional forms are the same options.
    CHECK(bulwark::RetryBudget::shared(0.25, 3, clock)->options().ratio == 0.25);
    CHECK(bulwark::TpsRetryBudget(0.25, 3, clock, 30s).options().window == Duration(30s));
}

TEST_CASE("invalid RetryBudget options are refused naming the field", "[retry][budget]") {
    bulwark::ManualClock clock;
    bulwark::RetryBudgetOptions o;
    o.ratio = 1.5;
    CHECK_THROWS_WITH(bulwark::TpsRetryBudget(o, clock),
                      "RetryBudgetOptions.ratio must be in [0, 1], got 1.5");
    o = {};
    o.window = 500ms;
    CHECK_THROWS_WITH(bulwark::RetryBudget::shared(o, clock),
                      "RetryBudgetOptions.window must be in [1s, 1h], got 500ms");
    CHECK_THROWS_WITH(o.validate(), "RetryBudgetOptions.window must be in [1s, 1h], got 500ms");
    // A year of per-second counters was 725 MB and a 60 ms scan per retry.
    o.window = std::chrono::hours(24 * 365);
    CHECK_THROWS_AS(o.validate(), std::invalid_argument);
    o.window = std::chrono::hours(1);
    CHECK_NOTHROW(o.validate());
}

TEST_CASE("schedule() gives the async form the same decisions", "[retry][schedule]") {
    bulwark::ManualClock clock;
    RetryPolicy retry(exponential(3), clock);
    auto failed = bulwark::Outcome<int>::from_error(std::make_exception_ptr(Transient()));
    auto schedule = retry.schedule();
    std::vector<Duration> waits;
    while (auto wait = schedule.next_delay(failed)) {
        waits.push_back(*wait);
    }
    CHECK(waits == std::vector<Duration>{1s, 2s, 4s});
    CHECK(schedule.retries() == 3);
    CHECK_FALSE(schedule.next_delay(failed).has_value());
    CHECK(clock.sleeps().empty());  // the caller does the waiting

    auto ok = retry.schedule();
    CHECK(ok.next_delay(failed) == Duration(1s));
    CHECK_FALSE(ok.next_delay(bulwark::Outcome<int>::from_value(1)).has_value());
    auto s = retry.stats();
    CHECK(s.exhausted == 1);
    CHECK(s.successes_after_retry == 1);
}

TEST_CASE("AdaptiveBackoff halves on success and doubles on failure within bounds",
          "[retry][adaptive]") {
    bulwark::AdaptiveBackoff adaptive(1s, 250ms, 4s);
    adaptive.record_failure();
    CHECK(adaptive.current_delay() == Duration(2s));
    adaptive.record_failure();
    adaptive.record_failure();
    CHECK(adaptive.current_delay() == Duration(4s));  // ceiling
    for (int i = 0; i < 10; ++i) {
        adaptive.record_success();
    }
    CHECK(adaptive.current_delay() == Duration(250ms));  // floor
    CHECK_THROWS_WITH(bulwark::AdaptiveBackoff(1s, 2s, 4s),
                      "AdaptiveBackoffOptions.initial must be in [floor, ceiling], got 1s");
    CHECK_THROWS_AS(bulwark::AdaptiveBackoff(1s, 1ms, 1min, 0.5), std::invalid_argument);
}

TEST_CASE("AdaptiveBackoff takes its options as a struct with documented defaults",
          "[retry][adaptive]") {
    const bulwark::AdaptiveBackoff defaults;
    CHECK(defaults.current_delay() == Duration(100ms));
    CHECK(defaults.options().floor == Duration(1ms));
    CHECK(defaults.options().ceiling == Duration(1min));
    CHECK(defaults.options().grow == 2.0);
    CHECK(defaults.options().shrink == 0.5);

    bulwark::AdaptiveBackoffOptions o;
    o.initial = 1s;
    o.ceiling = 3s;
    o.grow = 4.0;
    bulwark::AdaptiveBackoff adaptive(o);
    adaptive.record_failure();
    CHECK(adaptive.current_delay() == Duration(3s));  // 4 s, capped by the ceiling
    // The positional form is the same options.
    const bulwark::AdaptiveBackoff positional(1s, 1ms, 3s, 4.0);
    CHECK(positional.options().ceiling == Duration(3s));
    CHECK(positional.options().grow == 4.0);
}

TEST_CASE("invalid AdaptiveBackoff options are refused naming the field", "[retry][adaptive]") {
    auto rejects = [](bulwark::AdaptiveBackoffOptions o, const std::string& message) {
        CHECK_THROWS_WITH(o.validate(), message);
        CHECK_THROWS_WITH(bulwark::AdaptiveBackoff(o), message);
    };
    bulwark::AdaptiveBackoffOptions o;
    o.floor = 0s;
    rejects(o, "AdaptiveBackoffOptions.floor must be > 0, got 0s");
    o = {};
    o.ceiling = 500us;
    rejects(o, "AdaptiveBackoffOptions.ceiling must be >= floor (1ms), got 500us");
    o = {};
    o.initial = 2min;
    rejects(o, "AdaptiveBackoffOptions.initial must be in [floor, ceiling], got 2min");
    o = {};
    o.grow = 0.5;
    rejects(o, "AdaptiveBackoffOptions.grow must be >= 1, got 0.5");
    o = {};
    o.shrink = 0.0;
    rejects(o, "AdaptiveBackoffOptions.shrink must be in (0, 1], got 0");
}

TEST_CASE("an AdaptiveBackoff as the retry backoff grows with each failed attempt",
          "[retry][adaptive]") {
    ManualClock clock;
    auto adaptive = std::make_shared<bulwark::AdaptiveBackoff>(1s, 100ms, 1min);
    RetryOptions o;
    o.max_retries = 3;
    o.backoff = adaptive;
    RetryPolicy retry(o, clock);
    Flaky flaky{3};
    CHECK(retry.execute(std::ref(flaky)) == 4);
    // Each failed attempt doubles it: the waits within the call grow.
    CHECK(clock.sleeps() == std::vector<Duration>{1s, 2s, 4s});
    CHECK(adaptive->current_delay() == Duration(4s));  // 3 failures to 8 s, 1 success to 4 s

    // The next call starts from what the last one learned; 4 failures reach the ceiling.
    clock.clear_sleeps();
    Flaky dead{100};
    CHECK_THROWS_AS(retry.execute(std::ref(dead)), Transient);
    CHECK(clock.sleeps() == std::vector<Duration>{4s, 8s, 16s});
    CHECK(adaptive->current_delay() == Duration(1min));
    retry.execute([] { return 1; });
    CHECK(adaptive->current_delay() == Duration(30s));

    // The async form records the same way.
    auto failed = bulwark::Outcome<int>::from_error(std::make_exception_ptr(Transient()));
    auto schedule = retry.schedule();
    CHECK(schedule.next_delay(failed) == Duration(30s));
    CHECK(schedule.next_delay(failed) == Duration(1min));
    CHECK_FALSE(schedule.next_delay(bulwark::Outcome<int>::from_value(1)).has_value());
    CHECK(adaptive->current_delay() == Duration(30s));
}

TEST_CASE("a non-retryable failure does not grow an AdaptiveBackoff", "[retry][adaptive]") {
    ManualClock clock;
    auto adaptive = std::make_shared<bulwark::AdaptiveBackoff>(1s, 100ms, 1min);
    RetryOptions o;
    o.backoff = adaptive;
    o.retry_on<Transient>();
    RetryPolicy retry(o, clock);
    CHECK_THROWS_AS(retry.execute([]() -> int { throw std::logic_error("bad request"); }),
                    std::logic_error);
    CHECK(adaptive->current_delay() == Duration(1s));
}

TEST_CASE("a negative max_retries is refused, not run as 4294967295 retries", "[retry]") {
    RetryOptions o;
    o.max_retries = -1;
    CHECK_THROWS_WITH(RetryPolicy(o), "RetryOptions.max_retries must be >= 0, got -1");
    CHECK_THROWS_WITH(o.validate(), "RetryOptions.max_retries must be >= 0, got -1");
    o.max_retries = 0;
    CHECK_NOTHROW(o.validate());
}

TEST_CASE("invalid retry options are refused", "[retry]") {
    RetryOptions o;
    o.max_elapsed = -1s;
    CHECK_THROWS_WITH(RetryPolicy(o), "RetryOptions.max_elapsed must be >= 0, got -1s");
    RetryOptions null_adaptive;
    null_adaptive.backoff = std::shared_ptr<bulwark::AdaptiveBackoff>();
    CHECK_THROWS_AS(RetryPolicy(null_adaptive), std::invalid_argument);
    CHECK_THROWS_WITH(bulwark::TpsRetryBudget(1.5, 1),
                      "RetryBudgetOptions.ratio must be in [0, 1], got 1.5");
    CHECK_THROWS_WITH(o.on_retry(nullptr), "RetryOptions.on_retry: the listener is empty");
}

TEST_CASE("stress: one retry policy and budget shared by 4 threads keep consistent counts",
          "[retry][.stress]") {
    bulwark::ManualClock clock;
    RetryOptions o;
    o.max_retries = 2;
    o.backoff = bulwark::Backoff::fixed(0s);
    o.budget = bulwark::RetryBudget::shared(0.5, 100, clock);
    o.retry_on<Transient>();
    RetryPolicy retry(o, clock);
    std::atomic<std::uint64_t> ok{0};
    std::atomic<std::uint64_t> failed{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            bulwark::detail::SplitMix64 rng(static_cast<std::uint64_t>(t) + 1);
            for (int i = 0; i < 100000; ++i) {
                if (t == 0 && i % 1000 == 0) {
                    clock.advance(1s);
                }
                const std::uint64_t roll = rng.next() % 10;
                auto outcome = retry.try_execute([&]() -> int {
                    if (roll < 3) {
                        throw Transient();
                    }
                    if (roll == 3) {
                        throw std::logic_error("not retryable");
                    }
                    return 1;
                });
                (outcome ? ok : failed).fetch_add(1, std::memory_order_relaxed);
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    auto s = retry.stats();
    CHECK(s.calls == 400000);
    CHECK(ok.load() + failed.load() == 400000);
    CHECK(s.not_retryable + s.exhausted == failed.load());
    CHECK(s.retries == o.budget->withdrawn());
    CHECK(s.retries > 0);
}

TEST_CASE("two executions of one policy draw different jitter, reproducibly for a seed",
          "[retry][jitter]") {
    ManualClock clock;
    RetryPolicy retry(jittered(4, full_jitter()), 42, clock);
    CHECK(retry.seed() == 42);
    const auto first = waits_of_failing_call(retry, clock);
    const auto second = waits_of_failing_call(retry, clock);
    REQUIRE(first.size() == 4);
    REQUIRE(second.size() == 4);
    CHECK(first != second);  // not in lockstep
    const auto plain = first_delays(Backoff::exponential(1s).max_delay(1min), 4);
    for (std::size_t i = 0; i < 4; ++i) {
        CHECK(first[i] <= plain[i]);
        CHECK(second[i] <= plain[i]);
    }
    // Execution k waits the k-th stream of the backoff seeded with the policy's seed.
    const Backoff seeded = Backoff(full_jitter()).seed(42);
    CHECK(first == first_delays(seeded.stream(0), 4));
    CHECK(second == first_delays(seeded.stream(1), 4));

    // The same seed and the same order of calls reproduce them; another seed does not.
    ManualClock clock2;
    RetryPolicy again(jittered(4, full_jitter()), 42, clock2);
    CHECK(waits_of_failing_call(again, clock2) == first);
    CHECK(waits_of_failing_call(again, clock2) == second);
    RetryPolicy other(jittered(4, full_jitter()), 43, clock2);
    CHECK(waits_of_failing_call(other, clock2) != first);
}

TEST_CASE("policies built from the same options without a seed do not share jitter",
          "[retry][jitter]") {
    ManualClock clock;
    const RetryOptions o = jittered(4, Backoff(full_jitter()).seed(7));
    RetryPolicy a(o, clock);
    RetryPolicy b(o, clock);
    CHECK(a.seed() != b.seed());
    CHECK(waits_of_failing_call(a, clock) != waits_of_failing_call(b, clock));
}

TEST_CASE("decorrelated jitter draws a chain per execution, each in O(1) steps",
          "[retry][jitter]") {
    ManualClock clock;
    const Backoff decorrelated = Backoff::decorrelated_jitter(100ms, 30s);
    RetryPolicy retry(jittered(6, decorrelated), 5, clock);
    const auto first = waits_of_failing_call(retry, clock);
    const auto second = waits_of_failing_call(retry, clock);
    CHECK(first != second);
    CHECK(first == first_delays(Backoff(decorrelated).seed(5).stream(0), 6));
    CHECK(second == first_delays(Backoff(decorrelated).seed(5).stream(1), 6));
}

TEST_CASE("each schedule draws its own jitter stream", "[retry][jitter][schedule]") {
    ManualClock clock;
    RetryPolicy retry(jittered(4, full_jitter()), 9, clock);
    auto failed = bulwark::Outcome<int>::from_error(std::make_exception_ptr(Transient()));
    auto waits = [&] {
        auto schedule = retry.schedule();
        std::vector<Duration> out;
        while (auto wait = schedule.next_delay(failed)) {
            out.push_back(*wait);
        }
        return out;
    };
    const auto first = waits();
    const auto second = waits();
    CHECK(first != second);
    CHECK(first == first_delays(Backoff(full_jitter()).seed(9).stream(0), 4));
}

TEST_CASE("concurrent calls through one policy do not retry in lockstep", "[retry][jitter]") {
    ManualClock clock;
    RetryPolicy retry(jittered(1, full_jitter()), 11, clock);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&] {
            int calls = 0;
            (void)retry.try_execute([&]() -> int {
                if (++calls == 1) {
                    throw Transient();
                }
                return 1;
            });
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    auto sleeps = clock.sleeps();
    REQUIRE(sleeps.size() == 4);
    std::sort(sleeps.begin(), sleeps.end());
    CHECK(std::adjacent_find(sleeps.begin(), sleeps.end()) == sleeps.end());  // all distinct
    // Whatever the interleaving, the 4 executions used streams 0..3.
    const Backoff seeded = Backoff(full_jitter()).seed(11);
    std::vector<Duration> expected;
    for (std::uint64_t k = 0; k < 4; ++k) {
        expected.push_back(seeded.stream(k).delay(1));
    }
    std::sort(expected.begin(), expected.end());
    CHECK(sleeps == expected);
}

TEST_CASE("a cancel during a backoff wait stops before the next attempt", "[retry][cancel]") {
    InterruptingClock clock;
    RetryPolicy retry(exponential(5), clock);
    bulwark::Context ctx;
    clock.ctx = &ctx;
    int calls = 0;
    CHECK_THROWS_AS(retry.execute(
                        [&]() -> int {
                            ++calls;
                            throw Transient();
                        },
                        ctx),
                    Transient);  // the last error, as for a cancel seen before the wait
    CHECK(calls == 1);
    CHECK(clock.time.sleeps() == std::vector<Duration>{1s});
    const auto s = retry.stats();
    CHECK(s.retries == 0);  // announced, never made
    CHECK(s.exhausted == 1);

    // The same through try_execute, cancelled by an on_retry listener.
    ManualClock manual;
    RetryOptions o = exponential(5);
    bulwark::Context listened;
    o.on_retry([&](const bulwark::RetryEvent&) { listened.cancel(); });
    RetryPolicy cancelling(o, manual);
    calls = 0;
    auto outcome = cancelling.try_execute(
        [&]() -> int {
            ++calls;
            throw Transient();
        },
        listened);
    CHECK(calls == 1);
    CHECK_THROWS_AS(outcome.rethrow_if_error(), Transient);
}

TEST_CASE("a deadline passed during a backoff wait stops before the next attempt",
          "[retry][cancel]") {
    InterruptingClock clock;
    clock.overshoot = 10s;  // the wait ends long after it was asked to
    RetryOptions o;
    o.max_retries = 5;
    o.backoff = Backoff::fixed(1s);
    RetryPolicy retry(o, clock);
    bulwark::Context ctx;
    ctx.set_deadline(clock.now() + 5s);  // no deadline clock: cancelled() alone misses it
    int calls = 0;
    CHECK_THROWS_AS(retry.execute(
                        [&]() -> int {
                            ++calls;
                            throw Transient();
                        },
                        ctx),
                    Transient);
    CHECK(calls == 1);
    CHECK(clock.time.sleeps() == std::vector<Duration>{1s});
}

TEST_CASE("a retry_after hint longer than the backoff is waited, a shorter one is not",
          "[retry][hint]") {
    ManualClock clock;
    RetryOptions o;
    o.max_retries = 1;
    o.backoff = Backoff::fixed(1s);
    RetryPolicy retry(o, clock);
    auto rejected_once = [](Duration hint) {
        return [hint, calls = 0]() mutable -> int {
            if (++calls == 1) {
                throw bulwark::RateLimitedError("rate limited", hint);
            }
            return calls;
        };
    };
    CHECK(retry.execute(rejected_once(5s)) == 2);
    CHECK(clock.sleeps() == std::vector<Duration>{5s});  // the hint
    clock.clear_sleeps();
    CHECK(retry.execute(rejected_once(500ms)) == 2);
    CHECK(clock.sleeps() == std::vector<Duration>{1s});  // the backoff
    clock.clear_sleeps();
    // Any RejectedError's hint counts; it is also what listeners are told.
    Duration announced{0};
    retry.on_retry([&](const bulwark::RetryEvent& e) { announced = e.delay; });
    CHECK(retry.execute([calls = 0]() mutable -> int {
        if (++calls == 1) {
            throw bulwark::RejectedError("busy", 3s);
        }
        return calls;
    }) == 2);
    CHECK(clock.sleeps() == std::vector<Duration>{3s});
    CHECK(announced == Duration(3s));
}

TEST_CASE("a hint longer than max_elapsed gives up instead of waiting", "[retry][hint]") {
    ManualClock clock;
    RetryOptions o;
    o.backoff = Backoff::fixed(1s);
    o.max_elapsed = 10s;
    RetryPolicy retry(o, clock);
    CHECK_THROWS_AS(retry.execute([]() -> int { throw bulwark::RateLimitedError("slow", 1min); }),
                    bulwark::RateLimitedError);
    CHECK(clock.sleeps().empty());
}

TEST_CASE("a refused budget returns a retried value as is and wraps a retried exception",
          "[retry][budget]") {
    ManualClock clock;
    RetryOptions o = exponential(3);
    o.budget = std::make_shared<bulwark::TpsRetryBudget>(0.0, 0, clock);  // refuses every retry
    o.retry_if_result([](const int& status) { return status >= 500; });
    RetryPolicy retry(o, clock);
    CHECK(retry.execute([] { return 503; }) == 503);
    CHECK(retry.stats().budget_exhausted == 1);
    try {
        retry.execute([]() -> int { throw Transient(); });
        FAIL("expected RetryBudgetExhaustedError");
    } catch (const bulwark::RetryBudgetExhaustedError& e) {
        REQUIRE(e.last_error() != nullptr);
        CHECK_THROWS_AS(std::rethrow_exception(e.last_error()), Transient);
    }
    CHECK(retry.stats().budget_exhausted == 2);
    CHECK(clock.sleeps().empty());
}

TEST_CASE("stress: an AdaptiveBackoff shared by threads stays within [floor, ceiling]",
          "[.stress][retry]") {
    const Duration floor = 10ms;
    const Duration ceiling = 10s;
    auto adaptive = std::make_shared<bulwark::AdaptiveBackoff>(1s, floor, ceiling, 3.0, 0.25);
    ManualClock clock;
    RetryOptions o;
    o.max_retries = 2;
    o.backoff = adaptive;
    RetryPolicy retry(o, clock);
    std::atomic<int> out_of_bounds{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            bulwark::detail::SplitMix64 rng(static_cast<std::uint64_t>(t) + 100);
            for (int i = 0; i < 50000; ++i) {
                const std::uint64_t roll = rng.next() % 4;
                if (roll == 0) {
                    adaptive->record_failure();
                } else if (roll == 1) {
                    adaptive->record_success();
                } else {
                    (void)retry.try_execute([&]() -> int {
                        if (rng.next() % 2 == 0) {
                            throw Transient();
                        }
                        return 1;
                    });
                }
                const Duration d = adaptive->current_delay();
                if (d < floor || d > ceiling) {
                    out_of_bounds.fetch_add(1, std::memory_order_relaxed);
                }
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    CHECK(out_of_bounds.load() == 0);
    for (Duration slept : clock.sleeps()) {
        REQUIRE(slept >= floor);
        REQUIRE(slept <= ceiling);
    }
    CHECK(retry.stats().calls > 0);
}

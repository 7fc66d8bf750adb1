// The user-facing contract: the usage README.md and docs/ show, run and checked here so that it
// cannot rot (the docs_snippets test only compiles the documents' blocks). One test case per
// concept; each grows as its components are built.
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <bulwark/bulwark.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;

namespace {
struct Receipt {
    std::string id;
};
Receipt send_sms(const std::string& phone, const std::string& text) {
    return Receipt{phone + ":" + text};
}
int call() {
    return 7;
}
int call_with_deadline(std::optional<bulwark::TimePoint> deadline) {
    return deadline ? 1 : 0;
}
}  // namespace

TEST_CASE("clocks, Outcome, Context, pipeline and wrap work as documented over Noop", "[api]") {
    bulwark::SteadyClock clock;
    bulwark::ManualClock test_clock;
    const auto t0 = test_clock.now();
    test_clock.advance(5s);
    test_clock.sleep_for(1s);
    CHECK(test_clock.now() - t0 == bulwark::Duration(6s));
    const auto earlier = clock.now();
    CHECK(earlier <= bulwark::SteadyClock().now());

    bulwark::Outcome<int> o = bulwark::Outcome<int>::from_value(42);
    auto bad = bulwark::Outcome<int>::from_error(std::make_exception_ptr(std::runtime_error("x")));
    CHECK(o.has_value());
    CHECK(o.value() == 42);
    CHECK(o.error() == nullptr);
    CHECK(bad.value_or(0) == 0);
    CHECK_THROWS_WITH(bad.rethrow_if_error(), "x");

    bulwark::Noop policy;
    int v = policy.execute([] { return call(); });
    bulwark::Outcome<int> r = policy.try_execute([] { return call(); });
    CHECK(v == 7);
    CHECK(r.value() == 7);
    CHECK(policy.execute(
              [](bulwark::Context& ctx) { return call_with_deadline(ctx.deadline()); }) == 0);
    policy.execute([](bulwark::Context& ctx) {
        CHECK(ctx.attempt() == 0);
        CHECK(ctx.operation().empty());
        CHECK_FALSE(ctx.cancelled());
        ctx.cancel();
        CHECK(ctx.cancelled());
    });

    auto pipeline = bulwark::pipeline(bulwark::Noop{}, policy);
    auto receipt = pipeline.execute([&] { return send_sms("+1", "hi"); });
    CHECK(receipt.id == "+1:hi");

    auto resilient_send = bulwark::wrap(send_sms, policy, bulwark::Noop{});
    std::string phone = "+44";
    Receipt r2 = resilient_send(phone, "hello");
    CHECK(r2.id == "+44:hello");
}

TEST_CASE("a pipeline and a wrap of fallback, breaker, retry and timeout on a ManualClock",
          "[api]") {
    bulwark::ManualClock test_clock;
    bulwark::CircuitBreaker tested_breaker("name", bulwark::CircuitBreakerOptions{}, test_clock);
    bulwark::RetryOptions retry_options;
    retry_options.max_retries = 2;
    retry_options.backoff = bulwark::Backoff::fixed(1s);
    bulwark::RetryPolicy tested_retry(retry_options, test_clock);  // its waits advance test_clock
    bulwark::Timeout timeout(2s, test_clock);
    bulwark::Fallback<Receipt> fallback(
        [](const std::exception_ptr&) { return Receipt{"queued"}; });

    int failures_left = 1;
    auto sms_send = [&](const std::string& phone, const std::string& text) {
        if (failures_left-- > 0) {
            throw std::runtime_error("503");
        }
        return send_sms(phone, text);
    };
    auto pipeline = bulwark::pipeline(fallback, tested_breaker, tested_retry, timeout);
    const auto t0 = test_clock.now();
    auto receipt = pipeline.execute([&] { return sms_send("+1", "hi"); });
    CHECK(receipt.id == "+1:hi");
    CHECK(test_clock.now() - t0 == bulwark::Duration(1s));  // one retry waited 1 s
    CHECK(pipeline
              .execute([](bulwark::Context& ctx) {
                  return ctx.deadline() ? Receipt{"deadline set"} : Receipt{"none"};
              })
              .id == "deadline set");

    failures_left = 3;  // more failures than retries: the fallback answers
    CHECK(pipeline.execute([&] { return sms_send("+1", "x"); }).id == "queued");

    failures_left = 0;
    auto resilient_send = bulwark::wrap(sms_send, tested_breaker, tested_retry);
    Receipt r2 = resilient_send("+44", "hello");
    CHECK(r2.id == "+44:hello");
}

TEST_CASE("a CircuitBreaker with every option: execute, permits, listeners, stats, registry",
          "[api]") {
    bulwark::ManualClock test_clock;
    bulwark::CircuitBreakerOptions o;
    o.failure_threshold = 5;
    o.failure_ratio = 0.5;
    o.minimum_calls = 10;
    o.window = bulwark::CountWindow{100};
    o.window = bulwark::TimeWindow{10s};
    o.window = bulwark::CountWindow{100};
    o.slow_call_duration = 2s;
    o.slow_call_ratio = 0.8;
    o.break_duration = 60s;
    o.half_open_calls = 3;
    o.half_open_max_wait = 30s;
    o.break_duration_backoff = bulwark::Backoff::exponential(60s, 2.0).max_delay(10min);
    o.handle<std::system_error>();

    bulwark::CircuitBreaker breaker("sms-provider", o);
    bulwark::CircuitBreaker tested("sms-provider", o, test_clock);
    auto f = [] {
        return call();
    };
    CHECK(breaker.execute(f) == 7);
    CHECK(breaker.try_execute(f).value() == 7);

    bulwark::CircuitBreaker::Permit permit = tested.try_acquire();
    REQUIRE(permit);
    permit.record_success();
    CHECK(tested.state() == bulwark::CircuitState::closed);

    std::vector<bulwark::CircuitState> seen;
    tested.on_state_change([&](const bulwark::StateChange& c) {
        seen.push_back(c.to);
        CHECK(c.from != c.to);
        CHECK(c.at == test_clock.now());
    });
    tested.trip();
    tested.reset();
    tested.disable();
    CHECK(seen == std::vector<bulwark::CircuitState>{bulwark::CircuitState::forced_open,
                                                     bulwark::CircuitState::closed,
                                                     bulwark::CircuitState::disabled});
    bulwark::CircuitBreakerStats s = tested.stats();
    CHECK(s.calls == 1);
    CHECK(s.successes == 1);
    CHECK(s.failures == 0);
    CHECK(s.slow == 0);
    CHECK(s.rejected == 0);
    CHECK(s.failure_rate == 0.0);
    CHECK(s.state == bulwark::CircuitState::disabled);
    CHECK(s.time_in_state == bulwark::Duration::zero());

    bulwark::CircuitBreakerRegistry registry;
    auto& cb = registry.get("email", o);
    CHECK(&cb == &registry.get("email"));
}

namespace {
struct Quote {
    double price;
};
struct Quotes {
    Quote fetch(const std::string&) { return Quote{1.5}; }
};
Receipt queued_receipt() {
    return Receipt{"queued"};
}
}  // namespace

namespace {
struct Response {
    int status;
};
}  // namespace

TEST_CASE("the backoff family, RetryOptions, a retry listener and the async schedule", "[api]") {
    bulwark::Backoff::fixed(1s);
    CHECK(bulwark::Backoff::linear(1s).delay(3) == bulwark::Duration(3s));
    CHECK(bulwark::Backoff::exponential(500ms, 3.0).delay(3) == bulwark::Duration(4500ms));
    CHECK(bulwark::Backoff::fibonacci(1s).delay(5) == bulwark::Duration(5s));
    bulwark::Backoff::decorrelated_jitter(100ms, 30s);
    auto b = bulwark::Backoff::exponential(100ms).max_delay(30s).jitter(bulwark::Jitter::full);
    CHECK(b.delay(1) <= bulwark::Duration(100ms));
    b.seed(42);
    CHECK(b.delay(5) == b.delay(5));
    CHECK(bulwark::Backoff::exponential(1s).delay(3) == bulwark::Duration(4s));

    bulwark::AdaptiveBackoff adaptive(1s);
    adaptive.record_failure();
    CHECK(adaptive.current_delay() == bulwark::Duration(2s));

    bulwark::RetryOptions r;
    r.max_retries = 3;
    r.backoff = b;
    r.max_elapsed = 10s;
    r.retry_on<std::system_error>();
    r.retry_if_result([](const Response& x) { return x.status >= 500; });
    r.budget = bulwark::RetryBudget::shared(0.1, 10);
    int retries_seen = 0;
    r.on_retry([&](const bulwark::RetryEvent& e) {
        ++retries_seen;
        CHECK(e.attempt >= 1);
        CHECK(e.delay >= bulwark::Duration::zero());
        (void)e.error;
    });
    bulwark::ManualClock test_clock;
    bulwark::RetryPolicy retry(r, test_clock);
    int calls = 0;
    auto f = [&] {
        return Response{++calls < 3 ? 503 : 200};
    };
    CHECK(retry.execute(f).status == 200);
    CHECK(retries_seen == 2);

    auto outcome = bulwark::Outcome<Response>::from_value(Response{503});
    auto schedule = retry.schedule();
    int waits = 0;
    while (auto wait = schedule.next_delay(outcome)) {
        ++waits;
        (void)*wait;
    }
    CHECK(waits == 3);
}

TEST_CASE("Timeout, Bulkhead, RateLimiter, Fallback, CacheFallback and Hedging as documented",
          "[api]") {
    bulwark::Timeout timeout(2s);
    bulwark::Bulkhead bulkhead(/*max_concurrent*/ 8, /*max_queue*/ 16);
    bulwark::RateLimiter limiter(bulwark::TokenBucket{/*rate per s*/ 100, /*burst*/ 20});
    bulwark::Fallback<Receipt> use_default(
        [](const std::exception_ptr&) { return queued_receipt(); });
    bulwark::CacheFallback<std::string, Quote> last_good(/*ttl*/ 5min);
    Quotes quotes;
    std::string symbol = "ACME";
    Quote q = last_good.execute(symbol, [&] { return quotes.fetch(symbol); });
    CHECK(q.price == 1.5);

    auto all = bulwark::pipeline(use_default, timeout, bulkhead, limiter);
    CHECK(all.execute([] { return send_sms("+1", "x"); }).id == "+1:x");
    CHECK(all.execute([]() -> Receipt { throw std::runtime_error("down"); }).id == "queued");

    bulwark::Hedging hedge(/*delay*/ 50ms, /*max_extra*/ 1);  // optional, needs an executor
    CHECK(hedge.execute([] { return send_sms("+1", "h"); }).id == "+1:h");
}

#if __cplusplus >= 202002L
TEST_CASE("options read well with C++20 designated initializers", "[api]") {
    bulwark::CircuitBreaker breaker("designated", bulwark::CircuitBreakerOptions{
                                                      .failure_threshold = 2,
                                                      .failure_ratio = 0.25,
                                                      .break_duration = 5s,
                                                  });
    CHECK(breaker.options().failure_ratio == 0.25);
    bulwark::Bulkhead bulkhead(bulwark::BulkheadOptions{.max_concurrent = 2, .max_queue = 1});
    CHECK(bulkhead.options().max_queue == 1);
    bulwark::RateLimiter limiter(bulwark::RateLimiterOptions{.max_wait = 10ms});
    CHECK(limiter.options().max_wait == bulwark::Duration(10ms));
}
#endif

TEST_CASE("a LoadShedder passes a call at the normal degradation level", "[api]") {
    bulwark::Degradation degradation;
    bulwark::LoadShedder shedder(degradation, bulwark::DegradationLevel::severe);
    CHECK(shedder.execute([] { return 1; }) == 1);
}

TEST_CASE("Degradation: a manual level closes a feature gate and tells listeners", "[api]") {
    bulwark::Degradation degradation;  // DegradationLevel::normal|minor|moderate|severe|critical
    std::vector<std::string> changes;
    degradation.on_change(
        [&](bulwark::DegradationLevel from, bulwark::DegradationLevel to, const std::string& why) {
            changes.push_back(std::string(bulwark::to_string(from)) + "->" +
                              bulwark::to_string(to) + " " + why);
        });
    degradation.set_level(bulwark::DegradationLevel::moderate, "maintenance");
    CHECK_FALSE(degradation.enabled("recommendations", bulwark::DegradationLevel::minor));
    CHECK(changes == std::vector<std::string>{"normal->moderate maintenance"});
}

namespace health_usage {
struct Database {
    bool ping() const { return true; }
} db;
// Listeners may run on the scheduler and check threads at once.
std::mutex alerts_mutex;
std::vector<std::string> alerts;
void alert(const bulwark::HealthCheckResult& r) {
    std::lock_guard<std::mutex> lock(alerts_mutex);
    alerts.push_back(r.name + " " + bulwark::to_string(r.status));
}
}  // namespace health_usage

TEST_CASE("HealthMonitor, ResourceManager and Degradation::follow work together", "[api]") {
    using health_usage::alert;
    using health_usage::db;
    bulwark::CircuitBreaker breaker("sms-provider", bulwark::CircuitBreakerOptions{});

    bulwark::HealthMonitor monitor;  // optional clock
    monitor.add_check({"database", [] { return db.ping(); }, /*interval*/ 60s, /*timeout*/ 10s,
                       /*critical*/ true});
    monitor.add_breaker(breaker);  // a breaker's state as a check
    monitor.on_change([](const bulwark::HealthCheckResult& r) { alert(r); });
    monitor.start();
    monitor.stop();  // one background thread; or monitor.run_due()
    CHECK(monitor.run_now("database").status == bulwark::HealthStatus::healthy);
    monitor.run_now("sms-provider");
    CHECK(monitor.status() ==
          bulwark::HealthStatus::healthy);  // healthy | degraded | unhealthy | unknown
    CHECK(monitor.status("database") == bulwark::HealthStatus::healthy);
    std::string json = monitor.report().to_json();  // liveness/readiness material for /health
    CHECK(json.find("\"name\":\"database\"") != std::string::npos);
    {
        std::lock_guard<std::mutex> lock(health_usage::alerts_mutex);
        CHECK(health_usage::alerts.size() == 2);
    }  // unknown -> healthy, once per check

    bulwark::ResourceManager rm;
    rm.add_gauge("memory", [] { return bulwark::system::memory_used_percent(); },
                 {/*warning*/ 80, /*critical*/ 95});
    rm.add_quota("llm_tokens", /*limit*/ 100000, /*window*/ 1min, {70, 90});
    rm.record_usage("llm_tokens", 1000);
    auto [status, percent] =
        rm.check("llm_tokens");  // ResourceStatus::healthy|warning|critical|exhausted
    CHECK(status == bulwark::ResourceStatus::healthy);
    CHECK(percent == Approx(1.0));
    CHECK(rm.can_use("memory") == (rm.status("memory") < bulwark::ResourceStatus::critical));
    rm.set_alternatives("gpt-4", {"claude", "small-model"});
    CHECK(rm.alternative("gpt-4") == "claude");
    CHECK(rm.report().resources.size() == 2);

    bulwark::Degradation degradation;
    degradation.follow(monitor, rm);  // derive the level, with hysteresis
    degradation.refresh();
    CHECK(degradation.level() <= bulwark::DegradationLevel::minor);  // memory may be high here
}

#if __cplusplus >= 202002L
TEST_CASE("retry and shedder options read well with designated initializers", "[api]") {
    bulwark::RetryPolicy retry(bulwark::RetryOptions{.max_retries = 1, .max_elapsed = 5s});
    CHECK(retry.options().max_retries == 1);
    bulwark::Degradation degradation;
    bulwark::LoadShedder shedder(
        degradation, bulwark::LoadShedderOptions{.shed_at = bulwark::DegradationLevel::minor});
    CHECK(shedder.execute([] { return 1; }) == 1);
}
#endif

TEST_CASE("DeliveryEngine as the API shows it: channels, submit, receipts, audit, stats, redrive",
          "[api]") {
    struct Notification {
        std::string to;
        std::string text;
    };
    bulwark::InMemoryDeadLetterStore store;
    bulwark::FallbackRules rules;
    rules.set("telegram", {{"email", "sms"}, bulwark::Selection::priority, 2});
    bulwark::DeliveryEngine<Notification> engine(rules, store);
    engine.codec(
        [](const Notification& n) { return n.to + '\n' + n.text; },
        [](std::string_view b) {
            const auto nl = b.find('\n');
            return Notification{std::string(b.substr(0, nl)), std::string(b.substr(nl + 1))};
        });
    auto email_adapter = [](const Notification& n) {
        return bulwark::Receipt{"ses", "email-" + n.to, 0.001, false};
    };
    auto sms_adapter = [](const Notification& n) {
        return bulwark::Receipt{"twilio", "sms-" + n.to, 0.0075, false};
    };
    auto telegram_adapter = [](const Notification&) -> bulwark::Receipt {
        throw bulwark::DeliveryError(bulwark::DeliveryErrorKind::permanent, "chat not found");
    };
    engine.add_channel("email", email_adapter);
    engine.add_channel("sms", sms_adapter);
    engine.add_channel("telegram", telegram_adapter);

    const Notification notification{"ann", "hello"};
    auto id = engine.submit(notification, {"telegram"});
    const auto when = bulwark::default_clock().wall_now();
    auto scheduled = engine.submit_at(notification, when, {"email"});
    REQUIRE(engine.drain(10s));
    // The primary failed permanently: no fallback without the rule's consent, dead-lettered.
    CHECK(engine.status(id) == bulwark::MessageStatus::dead_lettered);
    CHECK(engine.status(scheduled) == bulwark::MessageStatus::sent);
    CHECK(engine.confirm("email-ann", bulwark::MessageStatus::delivered));
    CHECK(engine.status(scheduled) == bulwark::MessageStatus::delivered);
    REQUIRE(engine.attempts(id).size() == 1);
    CHECK(engine.attempts(id)[0].error == "chat not found");
    const bulwark::DeliveryStats stats = engine.stats();
    CHECK(stats.channels.size() == 3);
    CHECK(stats.overall.attempts == 2);

    CHECK(engine.reprocess_dead_letter(id, {"email"}));
    CHECK(engine.drain(10s));
    CHECK(engine.status(id) == bulwark::MessageStatus::sent);
    CHECK(engine.stop().empty());
}

#include <atomic>
#include <cmath>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <bulwark/circuit_breaker.hpp>
#include <bulwark/classify.hpp>
#include <bulwark/fallback_chain.hpp>
#include <bulwark/rate_limiter.hpp>
#include <bulwark/retry.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using bulwark::Attempt;
using bulwark::ChainOptions;
using bulwark::ChainResult;
using bulwark::ChannelOptions;
using bulwark::CircuitBreaker;
using bulwark::CircuitBreakerOptions;
using bulwark::CircuitState;
using bulwark::Duration;
using bulwark::FallbackReason;
using bulwark::FallbackRules;
using bulwark::ManualClock;
using bulwark::Selection;

namespace {

struct Message {
    std::string text;
};

struct Receipt {
    std::string via;
    std::string text;
};

struct Down : std::runtime_error {
    explicit Down(const std::string& channel) : std::runtime_error(channel + " down") {}
};

using Chain = bulwark::FallbackChain<Receipt(const Message&)>;

// A channel whose health a test switches, that counts its calls and can take time on a clock.
struct Channel {
    std::string name;
    bool healthy = true;
    int calls = 0;
    ManualClock* clock = nullptr;
    Duration takes{0};

    Receipt operator()(const Message& m) {
        ++calls;
        if (clock != nullptr) {
            clock->advance(takes);
        }
        if (!healthy) {
            throw Down(name);
        }
        return Receipt{name, m.text};
    }
};

// Adds `ch` to the chain by reference, so the test keeps control of it.
void add(Chain& chain, Channel& ch, ChannelOptions options = {}) {
    chain.add(
        ch.name, [&ch](const Message& m) { return ch(m); }, options);
}

std::vector<std::string> channels_of(const ChainResult<Receipt>& res) {
    std::vector<std::string> names;
    for (const Attempt& a : res.attempts()) {
        names.emplace_back(a.channel);
    }
    return names;
}

std::vector<FallbackReason> reasons_of(const ChainResult<Receipt>& res) {
    std::vector<FallbackReason> reasons;
    for (const Attempt& a : res.attempts()) {
        reasons.push_back(a.reason);
    }
    return reasons;
}

template <class E>
bool holds(const std::exception_ptr& error) {
    return bulwark::detail::holds_exception<E>(error);
}

CircuitBreakerOptions opens_after(std::uint32_t failures) {
    CircuitBreakerOptions o;
    o.failure_threshold = failures;
    o.failure_ratio = 0.0;
    o.break_duration = 10s;
    return o;
}

bulwark::RetryOptions fixed_retries(int retries) {
    bulwark::RetryOptions o;
    o.max_retries = retries;
    o.backoff = bulwark::Backoff::exponential(1s);
    return o;
}

const Message msg{"hello"};

}  // namespace

TEST_CASE("FallbackChain as documented: options, attempts, stats and per-primary rules",
          "[fallback_chain]") {
    ManualClock clock;
    CircuitBreaker email_breaker("email", opens_after(5), clock);
    bulwark::RetryPolicy email_retry(fixed_retries(2), 42, clock);
    Channel telegram{"telegram", false};
    Channel email{"email", true};
    Channel sms{"sms", true};
    auto send_telegram = [&](const Message& m) {
        return telegram(m);
    };
    auto send_email = [&](const Message& m) {
        return email(m);
    };
    auto send_sms = [&](const Message& m) {
        return sms(m);
    };

    bulwark::FallbackChain<Receipt(const Message&)> chain(bulwark::Selection::priority,
                                                          bulwark::ChainOptions{}, clock);
    chain.add("telegram", send_telegram);
    bulwark::ChannelOptions email_opts;
    CHECK(email_opts.weight == 1.0);
    CHECK(email_opts.cost == 0.0);
    CHECK(email_opts.breaker == nullptr);
    CHECK(email_opts.retry == nullptr);
    email_opts.breaker = &email_breaker;
    email_opts.retry = &email_retry;
    email_opts.cost = 0.001;
    chain.add("email", send_email, email_opts);
    chain.add("sms", send_sms);
    chain.max_attempts(3);

    bulwark::ChainResult<Receipt> res = chain.execute(msg);
    REQUIRE(res.ok());
    CHECK(res.value().via == "email");
    CHECK(res.channel() == "email");
    REQUIRE(res.attempts().size() == 2);
    const Attempt& first = res.attempts()[0];
    CHECK(first.number == 1);
    CHECK(first.channel == "telegram");
    CHECK(first.started == clock.now());
    CHECK(first.elapsed == Duration::zero());
    CHECK_FALSE(first.ok);
    CHECK(holds<Down>(first.error));
    CHECK(first.reason == FallbackReason::primary_failed);
    const Attempt& second = res.attempts()[1];
    CHECK(second.number == 2);
    CHECK(second.ok);
    CHECK_FALSE(second.error);
    CHECK(second.reason == FallbackReason::none);
    for (const bulwark::Attempt& a : res.attempts()) {
        CHECK(a.number >= 1);
    }

    const bulwark::ChannelStats s = chain.stats("email");
    CHECK(s.calls == 1);
    CHECK(s.successes == 1);
    CHECK(s.success_rate == 1.0);
    CHECK(s.mean_latency == Duration::zero());
    CHECK(s.fallbacks == 1);
    CHECK(chain.stats("sms").calls == 0);
    CHECK(chain.stats("telegram").failures == 1);

    bulwark::FallbackRules rules;
    rules.set("telegram", {{"email", "sms"}, bulwark::Selection::priority, /*max_attempts*/ 2});
    rules.set_global({"email", "sms", "telegram"});
    chain.rules(rules);
    email.healthy = false;
    auto by_rule = chain.execute_for("telegram", msg);
    CHECK_FALSE(by_rule.ok());
    CHECK(channels_of(by_rule) == std::vector<std::string>{"telegram", "email"});
}

TEST_CASE("priority tries channels in the order they were added", "[fallback_chain]") {
    ManualClock clock;
    Channel a{"a", false}, b{"b", false}, c{"c", true};
    Chain chain(Selection::priority, {}, clock);
    add(chain, a);
    add(chain, b);
    add(chain, c);
    for (int i = 0; i < 3; ++i) {
        auto res = chain.execute(msg);
        CHECK(res.channel() == "c");
        CHECK(channels_of(res) == std::vector<std::string>{"a", "b", "c"});
        CHECK(reasons_of(res) == std::vector<FallbackReason>{FallbackReason::primary_failed,
                                                             FallbackReason::primary_failed,
                                                             FallbackReason::none});
        CHECK(res.calls() == 3);
    }
    a.healthy = true;
    auto res = chain.execute(msg);
    CHECK(res.channel() == "a");
    CHECK(res.attempts().size() == 1);
}

TEST_CASE("round_robin starts each call at the next channel", "[fallback_chain]") {
    ManualClock clock;
    Channel a{"a"}, b{"b"}, c{"c"};
    Chain chain(Selection::round_robin, {}, clock);
    add(chain, a);
    add(chain, b);
    add(chain, c);
    std::vector<std::string> firsts;
    for (int i = 0; i < 4; ++i) {
        firsts.emplace_back(chain.execute(msg).channel());
    }
    CHECK(firsts == std::vector<std::string>{"a", "b", "c", "a"});

    b.healthy = false;
    auto res = chain.execute(msg);  // turn 4: starts at b, wraps around
    CHECK(channels_of(res) == std::vector<std::string>{"b", "c"});
    CHECK(res.channel() == "c");
}

TEST_CASE("health_based puts open breakers last and prefers recent success", "[fallback_chain]") {
    ManualClock clock;
    CircuitBreaker a_breaker("a", opens_after(1), clock);
    Channel a{"a", false}, b{"b", false}, c{"c", true};
    Chain chain(Selection::health_based, {}, clock);
    ChannelOptions ao;
    ao.breaker = &a_breaker;
    add(chain, a, ao);
    add(chain, b);
    add(chain, c);

    // a fails (its breaker opens), b fails, c delivers.
    auto first = chain.execute(msg);
    CHECK(channels_of(first) == std::vector<std::string>{"a", "b", "c"});
    REQUIRE(a_breaker.state() == CircuitState::open);

    // Now c (100% recent) first, then b (0%), and a (open) last, skipped without a call.
    c.healthy = false;
    auto second = chain.execute(msg);
    CHECK(channels_of(second) == std::vector<std::string>{"c", "b", "a"});
    CHECK(second.attempts()[2].reason == FallbackReason::unavailable);
    CHECK(a.calls == 1);

    // After the break, a is half-open: ahead of open, behind closed ones.
    clock.advance(10s);
    auto third = chain.execute(msg);
    CHECK(channels_of(third).back() == "a");
    CHECK(a.calls == 2);  // called this time: it was the probe
}

TEST_CASE("load_balanced follows the weights and is reproducible with a seed", "[fallback_chain]") {
    ManualClock clock;
    auto build = [&](Chain& chain, std::vector<Channel>& chs) {
        ChannelOptions heavy;
        heavy.weight = 3.0;
        ChannelOptions zero;
        zero.weight = 0.0;
        add(chain, chs[0], heavy);
        add(chain, chs[1]);
        add(chain, chs[2], zero);
    };
    std::vector<Channel> chs1{{"heavy"}, {"light"}, {"never-first"}};
    std::vector<Channel> chs2{{"heavy"}, {"light"}, {"never-first"}};
    Chain one(Selection::load_balanced, {}, 7, clock);
    Chain two(Selection::load_balanced, {}, 7, clock);
    build(one, chs1);
    build(two, chs2);
    CHECK(one.seed() == 7);

    int heavy_first = 0;
    for (int i = 0; i < 4000; ++i) {
        auto r1 = one.execute(msg);
        auto r2 = two.execute(msg);
        REQUIRE(r1.channel() == r2.channel());  // same seed, same order of calls: same choices
        CHECK(r1.channel() != "never-first");
        heavy_first += r1.channel() == "heavy" ? 1 : 0;
    }
    // Weight 3 against 1: about 75%.
    CHECK(heavy_first > 2800);
    CHECK(heavy_first < 3200);

    // A weight-0 channel is still a fallback, tried last.
    chs1[0].healthy = false;
    chs1[1].healthy = false;
    auto res = one.execute(msg);
    CHECK(res.channel() == "never-first");
    CHECK(res.attempts().size() == 3);
}

TEST_CASE("least_cost tries the cheapest channel first, ties in priority order",
          "[fallback_chain]") {
    ManualClock clock;
    Channel a{"a", false}, b{"b", false}, c{"c", false}, d{"d", false};
    Chain chain(Selection::least_cost, {}, clock);
    ChannelOptions o;
    o.cost = 0.05;
    add(chain, a, o);
    o.cost = 0.01;
    add(chain, b, o);
    o.cost = 0.05;
    add(chain, c, o);
    o.cost = 0.0;
    add(chain, d, o);
    auto res = chain.execute(msg);
    CHECK(channels_of(res) == std::vector<std::string>{"d", "b", "a", "c"});
}

TEST_CASE("an open breaker skips its channel as unavailable without calling it",
          "[fallback_chain]") {
    ManualClock clock;
    CircuitBreaker breaker("a", opens_after(1), clock);
    Channel a{"a", false}, b{"b"};
    Chain chain(Selection::priority, {}, clock);
    ChannelOptions o;
    o.breaker = &breaker;
    add(chain, a, o);
    add(chain, b);

    CHECK(chain.execute(msg).channel() == "b");  // a fails and opens its breaker
    REQUIRE(breaker.state() == CircuitState::open);
    auto res = chain.execute(msg);
    CHECK(a.calls == 1);
    CHECK(res.channel() == "b");
    REQUIRE(res.attempts().size() == 2);
    CHECK(res.attempts()[0].reason == FallbackReason::unavailable);
    CHECK(holds<bulwark::CircuitOpenError>(res.attempts()[0].error));
    CHECK_FALSE(res.attempts()[0].called());
    CHECK(res.calls() == 1);
    CHECK(chain.stats("a").skipped == 1);
    CHECK(chain.stats("a").calls == 1);

    b.healthy = false;
    auto none = chain.execute(msg);
    CHECK_FALSE(none.ok());
    CHECK(holds<Down>(none.error()));  // the last error: b's
}

TEST_CASE("a half-open breaker's probe slot is respected and the probe's result recorded",
          "[fallback_chain]") {
    ManualClock clock;
    CircuitBreaker breaker("a", opens_after(1), clock);  // half_open_calls = 1
    Channel a{"a", false}, b{"b"};
    Chain chain(Selection::priority, {}, clock);
    ChannelOptions o;
    o.breaker = &breaker;
    add(chain, a, o);
    add(chain, b);
    (void)chain.execute(msg);
    clock.advance(10s);
    REQUIRE(breaker.state() == CircuitState::half_open);

    {
        auto probe = breaker.try_acquire();  // someone else holds the only probe slot
        REQUIRE(probe);
        auto res = chain.execute(msg);
        CHECK(res.attempts()[0].reason == FallbackReason::unavailable);
        CHECK(a.calls == 1);
        probe.record_failure();  // re-opens for a new break
    }
    clock.advance(10s);
    a.healthy = true;
    auto res = chain.execute(msg);  // the chain's call is the probe
    CHECK(res.channel() == "a");
    CHECK(a.calls == 2);
    CHECK(breaker.state() == CircuitState::closed);
}

TEST_CASE("a channel's retry wraps its call, waiting on the clock", "[fallback_chain]") {
    ManualClock clock;
    bulwark::RetryPolicy retry(fixed_retries(3), 1, clock);
    int calls = 0;
    Chain chain(Selection::priority, {}, clock);
    ChannelOptions o;
    o.retry = &retry;
    chain.add(
        "flaky",
        [&](const Message& m) {
            if (++calls < 3) {
                throw Down("flaky");
            }
            return Receipt{"flaky", m.text};
        },
        o);
    Channel backup{"backup"};
    add(chain, backup);

    auto res = chain.execute(msg);
    CHECK(res.channel() == "flaky");
    CHECK(calls == 3);
    CHECK(clock.sleeps() == std::vector<Duration>{1s, 2s});
    REQUIRE(res.attempts().size() == 1);
    CHECK(res.attempts()[0].elapsed == 3s);
    CHECK(chain.stats("flaky").calls == 1);  // one chain-level call, retries inside
    CHECK(chain.stats("flaky").mean_latency == 3s);

    // Retries exhausted: the chain falls back with the last error.
    clock.clear_sleeps();
    calls = -10;
    auto fell = chain.execute(msg);
    CHECK(calls == -6);  // 1 + 3 retries
    CHECK(clock.sleeps() == std::vector<Duration>{1s, 2s, 4s});
    CHECK(fell.channel() == "backup");
    CHECK(fell.attempts()[0].reason == FallbackReason::primary_failed);
}

TEST_CASE("a rate limiter that refuses skips the channel as rate_limited", "[fallback_chain]") {
    ManualClock clock;
    bulwark::RateLimiter limiter(bulwark::TokenBucket{1.0, 1}, clock);
    CircuitBreaker breaker("a", opens_after(1), clock);
    Channel a{"a"}, b{"b"};
    Chain chain(Selection::priority, {}, clock);
    ChannelOptions o;
    o.limiter = &limiter;
    o.breaker = &breaker;
    add(chain, a, o);
    add(chain, b);

    CHECK(chain.execute(msg).channel() == "a");
    auto res = chain.execute(msg);
    CHECK(res.channel() == "b");
    CHECK(a.calls == 1);
    CHECK(res.attempts()[0].reason == FallbackReason::rate_limited);
    CHECK(holds<bulwark::RateLimitedError>(res.attempts()[0].error));
    CHECK(breaker.state() == CircuitState::closed);  // a rate limit is not a failure of `a`
    clock.advance(1s);
    CHECK(chain.execute(msg).channel() == "a");
}

TEST_CASE("a channel's limiter refusal carries the limiter's name as its source",
          "[fallback_chain]") {
    ManualClock clock;
    bulwark::RateLimiter limiter("a-limit", bulwark::TokenBucket{1.0, 1}, clock);
    Channel a{"a"}, b{"b"};
    Chain chain(Selection::priority, {}, clock);
    ChannelOptions o;
    o.limiter = &limiter;
    add(chain, a, o);
    add(chain, b);
    CHECK(chain.execute(msg).channel() == "a");
    auto res = chain.execute(msg);
    REQUIRE(res.attempts()[0].reason == FallbackReason::rate_limited);
    CHECK(bulwark_test::rejection_source(res.attempts()[0].error) == "a-limit");
}

TEST_CASE("channels above max_cost are skipped and do not count toward max_attempts",
          "[fallback_chain]") {
    ManualClock clock;
    ChainOptions co;
    co.max_cost = 0.01;
    Channel dear{"dear"}, cheap1{"cheap1", false}, cheap2{"cheap2"};
    Chain chain(Selection::priority, co, clock);
    ChannelOptions expensive;
    expensive.cost = 0.5;
    add(chain, dear, expensive);
    add(chain, cheap1);
    add(chain, cheap2);
    chain.max_attempts(2);

    auto res = chain.execute(msg);
    CHECK(res.channel() == "cheap2");
    CHECK(dear.calls == 0);
    CHECK(reasons_of(res) == std::vector<FallbackReason>{FallbackReason::cost_threshold,
                                                         FallbackReason::primary_failed,
                                                         FallbackReason::none});
    CHECK_FALSE(res.attempts()[0].error);

    chain.max_cost(1.0);
    CHECK(chain.execute(msg).channel() == "dear");
}

TEST_CASE("channels below min_success_rate are skipped until a probe shows recovery",
          "[fallback_chain]") {
    ManualClock clock;
    Channel flaky{"flaky", false}, steady{"steady"};
    Chain chain(Selection::priority, {}, clock);
    chain.min_success_rate(0.5, 4);
    add(chain, flaky);
    add(chain, steady);

    for (int i = 0; i < 4; ++i) {  // too few samples yet: flaky is called
        CHECK(chain.execute(msg).channel() == "steady");
    }
    CHECK(flaky.calls == 4);
    auto res = chain.execute(msg);
    CHECK(flaky.calls == 4);
    CHECK(res.attempts()[0].reason == FallbackReason::quality_threshold);
    CHECK(res.calls() == 1);
    CHECK(chain.stats("flaky").recent_success_rate == 0.0);

    // One probe per quality_probe_interval (30 s).
    flaky.healthy = true;
    clock.advance(29s);
    CHECK(chain.execute(msg).channel() == "steady");
    clock.advance(1s);
    CHECK(chain.execute(msg).channel() == "flaky");  // the probe: 1 of the last 4 succeeded
    CHECK(chain.execute(msg).attempts()[0].reason == FallbackReason::quality_threshold);
    clock.advance(30s);
    CHECK(chain.execute(msg).channel() == "flaky");  // the next probe: 2 of 4, at the floor
    CHECK(chain.execute(msg).channel() == "flaky");  // no longer skipped
}

TEST_CASE("max_attempts caps the channels called", "[fallback_chain]") {
    ManualClock clock;
    Channel a{"a", false}, b{"b", false}, c{"c"};
    Chain chain(Selection::priority, {}, clock);
    add(chain, a);
    add(chain, b);
    add(chain, c);
    CHECK(chain.max_attempts() == 3);  // default: every channel
    chain.max_attempts(2);
    auto res = chain.execute(msg);
    CHECK_FALSE(res.ok());
    CHECK(channels_of(res) == std::vector<std::string>{"a", "b"});
    CHECK(c.calls == 0);
    CHECK_THROWS_WITH(res.value(), "b down");
    chain.max_attempts(0);  // 0 = every channel, as in ChainOptions::max_attempts
    CHECK(chain.max_attempts() == 3);
    CHECK(chain.execute(msg).ok());
    CHECK(c.calls == 1);
}

TEST_CASE("rules pick the fallbacks of a primary, else the global order", "[fallback_chain]") {
    ManualClock clock;
    Channel telegram{"telegram", false}, email{"email", false}, sms{"sms", false},
        push{"push", false};
    Chain chain(Selection::priority, {}, clock);
    add(chain, telegram);
    add(chain, email);
    ChannelOptions cheap;
    cheap.cost = 0.0;
    ChannelOptions dear;
    dear.cost = 1.0;
    add(chain, sms, dear);
    add(chain, push, cheap);

    FallbackRules rules;
    rules.set("telegram", {{"email", "sms"}, Selection::priority, 2});
    rules.set("email", {{"sms", "push"}, Selection::least_cost, 0});
    rules.set_global({"sms", "telegram"});
    chain.rules(rules);

    CHECK(channels_of(chain.execute_for("telegram", msg)) ==
          std::vector<std::string>{"telegram", "email"});
    CHECK(channels_of(chain.execute_for("email", msg)) ==
          std::vector<std::string>{"email", "push", "sms"});
    // No rule for push: the global order (without push), then the rest in priority order.
    CHECK(channels_of(chain.execute_for("push", msg)) ==
          std::vector<std::string>{"push", "sms", "telegram", "email"});
    // Without rules for it, execute() ignores them.
    CHECK(channels_of(chain.execute(msg)) ==
          std::vector<std::string>{"telegram", "email", "sms", "push"});

    CHECK_THROWS_AS(chain.execute_for("fax", msg), std::invalid_argument);

    FallbackRules unknown;
    unknown.set("telegram", {{"email", "fax"}, Selection::priority, 0});
    CHECK_THROWS_WITH(chain.rules(unknown),
                      BULWARK_CATCH_MESSAGE_CONTAINS("FallbackRules.set: fallbacks") &&
                          BULWARK_CATCH_MESSAGE_CONTAINS("\"fax\"") &&
                          BULWARK_CATCH_MESSAGE_CONTAINS("\"telegram\""));
    FallbackRules unknown_primary;
    unknown_primary.set("fax", {{"email"}, Selection::priority, 0});
    CHECK_THROWS_WITH(chain.rules(unknown_primary), BULWARK_CATCH_MESSAGE_CONTAINS("primary") &&
                                                        BULWARK_CATCH_MESSAGE_CONTAINS("\"fax\""));
    FallbackRules unknown_global;
    unknown_global.set_global({"email", "pigeon"});
    CHECK_THROWS_WITH(chain.rules(unknown_global),
                      BULWARK_CATCH_MESSAGE_CONTAINS("set_global") &&
                          BULWARK_CATCH_MESSAGE_CONTAINS("\"pigeon\""));
    FallbackRules self;
    self.set("sms", {{"sms"}, Selection::priority, 0});
    CHECK_THROWS_AS(chain.rules(self), std::invalid_argument);
    // A rejected rule set leaves the previous one in place.
    CHECK(channels_of(chain.execute_for("telegram", msg)).size() == 2);
}

TEST_CASE("cancellation and the deadline stop the chain before the next channel",
          "[fallback_chain]") {
    ManualClock clock;
    Channel b{"b"};
    bulwark::Context ctx;
    Chain chain(Selection::priority, {}, clock);
    chain.add("a", [&](const Message&) -> Receipt {
        ctx.cancel();
        throw Down("a");
    });
    add(chain, b);
    auto res = chain.execute(ctx, msg);
    CHECK(res.stopped());
    CHECK_FALSE(res.ok());
    CHECK(b.calls == 0);
    CHECK(channels_of(res) == std::vector<std::string>{"a"});
    CHECK(holds<Down>(res.error()));

    // Cancelled before the first channel: nothing to report but the stop.
    auto none = chain.execute(ctx, msg);
    CHECK(none.attempts().empty());
    CHECK(holds<bulwark::NoChannelError>(none.error()));
    CHECK_THROWS_WITH(none.value(), BULWARK_CATCH_MESSAGE_CONTAINS("deadline"));

    Chain slow(Selection::priority, {}, clock);
    Channel s1{"s1", false, 0, &clock, 2s}, s2{"s2"};
    add(slow, s1);
    add(slow, s2);
    bulwark::Context timed;
    timed.set_deadline(clock.now() + 1s);
    auto late = slow.execute(timed, msg);
    CHECK(late.stopped());
    CHECK(s2.calls == 0);
    bulwark::Context roomy;
    roomy.set_deadline(clock.now() + 3s);
    CHECK(slow.execute(roomy, msg).channel() == "s2");
}

TEST_CASE("stats count calls, skips, fallbacks and latency per channel", "[fallback_chain]") {
    ManualClock clock;
    Channel a{"a", false, 0, &clock, 10ms}, b{"b", true, 0, &clock, 30ms};
    Chain chain(Selection::priority, {}, clock);
    add(chain, a);
    add(chain, b);
    (void)chain.execute(msg);
    (void)chain.execute(msg);
    a.healthy = true;
    (void)chain.execute(msg);

    auto sa = chain.stats("a");
    CHECK(sa.calls == 3);
    CHECK(sa.successes == 1);
    CHECK(sa.failures == 2);
    CHECK(sa.fallbacks == 0);
    CHECK(sa.success_rate == Approx(1.0 / 3.0));
    CHECK(sa.mean_latency == 10ms);
    auto sb = chain.stats("b");
    CHECK(sb.calls == 2);
    CHECK(sb.fallbacks == 2);
    CHECK(sb.mean_latency == 30ms);
    auto all = chain.stats();
    REQUIRE(all.size() == 2);
    CHECK(all[1].name == "b");
    CHECK_THROWS_WITH(chain.stats("c"), BULWARK_CATCH_MESSAGE_CONTAINS("\"c\""));
}

TEST_CASE("listeners hear every attempt and every move to a fallback", "[fallback_chain]") {
    ManualClock clock;
    CircuitBreaker breaker("b", opens_after(1), clock);
    breaker.trip();
    Channel a{"a", false}, b{"b"}, c{"c"};
    Chain chain(Selection::priority, {}, clock);
    add(chain, a);
    ChannelOptions o;
    o.breaker = &breaker;
    add(chain, b, o);
    add(chain, c);
    std::vector<std::string> log;
    chain.on_attempt([&](const Attempt& at) {
        log.push_back("attempt " + std::string(at.channel) + " " + bulwark::to_string(at.reason));
    });
    chain.on_fallback([&](const bulwark::ChannelFallbackEvent& e) {
        log.push_back("fallback " + std::string(e.from) + "->" + std::string(e.to) + " " +
                      bulwark::to_string(e.reason));
    });
    CHECK(chain.execute(msg).channel() == "c");
    CHECK(log == std::vector<std::string>{"attempt a primary_failed",
                                          "fallback a->b primary_failed", "attempt b unavailable",
                                          "fallback b->c unavailable", "attempt c none"});
}

TEST_CASE("removed attempt and fallback listeners hear no more", "[fallback_chain]") {
    ManualClock clock;
    Channel a{"a", false}, b{"b"};
    Chain chain(Selection::priority, {}, clock);
    add(chain, a);
    add(chain, b);
    int heard = 0;
    const bulwark::ListenerId attempt = chain.on_attempt([&](const Attempt&) { ++heard; });
    const bulwark::ListenerId fallback =
        chain.on_fallback([&](const bulwark::ChannelFallbackEvent&) { ++heard; });
    CHECK(chain.execute(msg).channel() == "b");
    CHECK(heard == 3);  // two attempts, one fallback
    CHECK(chain.remove_listener(attempt));
    CHECK(chain.remove_listener(fallback));
    CHECK_FALSE(chain.remove_listener(attempt));
    CHECK(chain.execute(msg).channel() == "b");
    CHECK(heard == 3);
}

TEST_CASE("invalid configuration throws naming the field and the value", "[fallback_chain]") {
    Chain chain;
    Channel a{"a"};
    add(chain, a);
    auto ok = [](const Message& m) {
        return Receipt{"x", m.text};
    };
    CHECK_THROWS_WITH(chain.add("", ok), "FallbackChain.add: name must not be empty, got \"\"");
    CHECK_THROWS_WITH(chain.add("a", ok),
                      "FallbackChain.add: name must be unique, got \"a\" (already added)");
    Receipt (*null_fn)(const Message&) = nullptr;
    CHECK_THROWS_WITH(chain.add("n", null_fn), BULWARK_CATCH_MESSAGE_CONTAINS("callable"));
    CHECK_THROWS_WITH(chain.add("n", std::function<Receipt(const Message&)>{}),
                      BULWARK_CATCH_MESSAGE_CONTAINS("must not be null"));
    ChannelOptions o;
    o.weight = -1;
    CHECK_THROWS_WITH(chain.add("w", ok, o),
                      "ChannelOptions.weight must be finite and >= 0, got -1");
    o.weight = std::nan("");
    CHECK_THROWS_WITH(chain.add("w", ok, o),
                      BULWARK_CATCH_MESSAGE_CONTAINS("ChannelOptions.weight"));
    o.weight = 1;
    o.cost = -0.5;
    CHECK_THROWS_WITH(chain.add("c", ok, o),
                      "ChannelOptions.cost must be finite and >= 0, got -0.5");
    CHECK(chain.size() == 1);  // nothing was added
    o.cost = 0;
    o.weight = std::numeric_limits<double>::infinity();
    CHECK_THROWS_WITH(o.validate(), BULWARK_CATCH_MESSAGE_CONTAINS("ChannelOptions.weight"));
    CHECK_THROWS_WITH(chain.max_cost(-1), "ChainOptions.max_cost must be >= 0, got -1");
    CHECK_THROWS_WITH(chain.min_success_rate(1.5),
                      "ChainOptions.min_success_rate must be in [0, 1], got 1.5");
    CHECK_THROWS_WITH(chain.min_success_rate(0.5, 0),
                      "ChainOptions.min_samples must be in [1, 32], got 0");
    ChainOptions co;
    co.min_samples = 33;
    CHECK_THROWS_WITH(Chain(Selection::priority, co),
                      "ChainOptions.min_samples must be in [1, 32], got 33");
    co.min_samples = 10;
    co.quality_probe_interval = -1s;
    CHECK_THROWS_WITH(Chain(Selection::priority, co),
                      BULWARK_CATCH_MESSAGE_CONTAINS("ChainOptions.quality_probe_interval"));
}

TEST_CASE("value() of a result nobody delivered throws the last error", "[fallback_chain]") {
    ManualClock clock;
    Chain chain(Selection::priority, {}, clock);
    chain.add("bad-arg", [](const Message&) -> Receipt { throw std::invalid_argument("bad"); });
    chain.add("down", [](const Message&) -> Receipt { throw Down("down"); });
    auto res = chain.execute(msg);
    CHECK_FALSE(res);
    CHECK(res.channel().empty());
    CHECK(res.attempts()[0].reason == FallbackReason::primary_failed);  // just a failure
    CHECK_THROWS_AS(res.value(), Down);
    CHECK_THROWS_AS(std::move(res).value(), Down);

    Chain empty(Selection::priority, {}, clock);
    auto nothing = empty.execute(msg);
    CHECK_THROWS_AS(nothing.value(), bulwark::NoChannelError);
    CHECK_THROWS_WITH(nothing.value(), BULWARK_CATCH_MESSAGE_CONTAINS("no enabled channel"));
}

TEST_CASE("disabled channels are left out", "[fallback_chain]") {
    ManualClock clock;
    Channel a{"a"}, b{"b"};
    Chain chain(Selection::priority, {}, clock);
    ChannelOptions off;
    off.enabled = false;
    add(chain, a, off);
    add(chain, b);
    CHECK(channels_of(chain.execute(msg)) == std::vector<std::string>{"b"});
    chain.set_enabled("a", true);
    CHECK(chain.execute(msg).channel() == "a");
    chain.set_enabled("b", false);
    CHECK(channels_of(chain.execute_for("b", msg)) == std::vector<std::string>{"a"});
    CHECK_THROWS_AS(chain.set_enabled("z", true), std::invalid_argument);
}

TEST_CASE("more than eight attempts spill to the heap intact", "[fallback_chain]") {
    ManualClock clock;
    std::vector<Channel> chs;
    for (int i = 0; i < 12; ++i) {
        chs.push_back(Channel{"ch" + std::to_string(i), i == 11});
    }
    Chain chain(Selection::priority, {}, clock);
    for (Channel& ch : chs) {
        add(chain, ch);
    }
    auto res = chain.execute(msg);
    REQUIRE(res.attempts().size() == 12);
    for (std::size_t i = 0; i < 12; ++i) {
        CHECK(res.attempts()[i].number == i + 1);
        CHECK(res.attempts()[i].channel == "ch" + std::to_string(i));
    }
    auto moved = std::move(res);
    CHECK(moved.channel() == "ch11");
    CHECK(moved.attempts()[11].ok);
    CHECK(moved.attempts()[3].channel == "ch3");
    // The moved-from result is empty, not a view of a heap block it no longer owns.
    CHECK(res.attempts().empty());  // NOLINT(bugprone-use-after-move): checked on purpose
    ChainResult<Receipt> assigned;
    CHECK_FALSE(assigned.ok());
    CHECK_THROWS_AS(assigned.value(), std::invalid_argument);
    assigned = std::move(moved);
    CHECK(assigned.ok());
    REQUIRE(assigned.attempts().size() == 12);
    CHECK(assigned.attempts()[10].channel == "ch10");
    CHECK(moved.attempts().empty());  // NOLINT(bugprone-use-after-move)
    const ChainResult<Receipt> copy = assigned;
    CHECK(copy.attempts().size() == 12);
    CHECK(copy.attempts()[11].channel == "ch11");
}

TEST_CASE("round robin rotates fairly for execute and for each primary of execute_for",
          "[fallback_chain]") {
    ManualClock clock;
    Channel a{"a"}, b{"b"}, c{"c"}, d{"d"};
    Chain chain(Selection::round_robin, {}, clock);
    add(chain, a);
    add(chain, b);
    add(chain, c);
    add(chain, d);
    std::vector<std::string> firsts;
    std::vector<std::string> seconds;
    for (int i = 0; i < 8; ++i) {
        firsts.emplace_back(chain.execute(msg).channel());
        auto res = chain.execute_for("a", msg);  // a delivers; its tail rotates on its own
        CHECK(res.channel() == "a");
    }
    CHECK(firsts == std::vector<std::string>{"a", "b", "c", "d", "a", "b", "c", "d"});
    a.healthy = false;
    for (int i = 0; i < 3; ++i) {
        auto res = chain.execute_for("a", msg);
        REQUIRE(res.attempts().size() == 2);
        seconds.emplace_back(res.attempts()[1].channel);
    }
    // Eight earlier calls turned a's rotation over b, c, d twice and then some: still fair.
    CHECK(seconds == std::vector<std::string>{"d", "b", "c"});
}

TEST_CASE("a quality probe refused by the breaker is not used up", "[fallback_chain]") {
    ManualClock clock;
    Channel flaky{"flaky", false}, steady{"steady"};
    CircuitBreaker breaker("flaky", opens_after(100), clock);
    Chain chain(Selection::priority, {}, clock);
    chain.min_success_rate(0.5, 2);
    ChannelOptions guarded;
    guarded.breaker = &breaker;
    add(chain, flaky, guarded);
    add(chain, steady);
    (void)chain.execute(msg);
    (void)chain.execute(msg);
    CHECK(chain.execute(msg).attempts()[0].reason == FallbackReason::quality_threshold);
    clock.advance(30s);  // a probe is due, but the breaker is forced open
    breaker.trip();
    CHECK(chain.execute(msg).attempts()[0].reason == FallbackReason::unavailable);
    breaker.reset();
    flaky.healthy = true;
    const int before = flaky.calls;
    CHECK(chain.execute(msg).channel() == "flaky");  // the probe is still due: no new 30 s wait
    CHECK(flaky.calls == before + 1);
}

TEST_CASE("a by-value argument is copied once per channel called", "[fallback_chain]") {
    struct Counted {
        int* copies;
        explicit Counted(int* c) : copies(c) {}
        Counted(const Counted& other) : copies(other.copies) { ++*copies; }
        Counted(Counted&& other) noexcept = default;  // std::function moves it on to the lambda
        Counted& operator=(const Counted&) = default;
        Counted& operator=(Counted&&) noexcept = default;
        ~Counted() = default;
    };
    int copies = 0;
    bulwark::FallbackChain<int(Counted)> chain;
    chain.add("first", [](Counted) -> int { throw Down("first"); });
    chain.add("second", [](Counted) { return 2; });
    const Counted arg(&copies);
    copies = 0;
    CHECK(chain.execute(arg).value() == 2);
    CHECK(copies == 3);  // into execute, then once for each of the two channels
}

TEST_CASE("void and move-only results, by-value arguments", "[fallback_chain]") {
    int sent = 0;
    bulwark::FallbackChain<void(int)> notify;
    notify.add("first", [](int) { throw Down("first"); });
    notify.add("second", [&](int n) { sent += n; });
    auto r = notify.execute(5);
    CHECK(r.ok());
    r.value();
    CHECK(sent == 5);
    CHECK(r.channel() == "second");

    bulwark::FallbackChain<bulwark_test::MoveOnly(std::string)> make;
    make.add("only",
             [](std::string s) { return bulwark_test::MoveOnly(static_cast<int>(s.size())); });
    auto m = make.execute("abc");
    CHECK(std::move(m).value().value == 3);
}

TEST_CASE("concurrent calls keep the counts consistent", "[.stress][fallback_chain]") {
    constexpr int threads = 4;
    constexpr int calls_per_thread = 20000;
    const Selection selection =
        GENERATE(Selection::round_robin, Selection::load_balanced, Selection::health_based);
    ManualClock clock;
    CircuitBreaker breaker("ch0", opens_after(3), clock);
    std::atomic<bool> healthy[3] = {{true}, {true}, {true}};
    Chain chain(selection, {}, 99, clock);
    for (int i = 0; i < 3; ++i) {
        ChannelOptions o;
        o.breaker = i == 0 ? &breaker : nullptr;
        o.weight = 1.0 + i;
        chain.add(
            "ch" + std::to_string(i),
            [&healthy, i](const Message& m) {
                if (!healthy[i].load(std::memory_order_relaxed)) {
                    throw Down("ch");
                }
                return Receipt{"ch", m.text};
            },
            o);
    }
    std::atomic<std::uint64_t> attempts_heard{0};
    chain.on_attempt([&](const Attempt&) { attempts_heard.fetch_add(1); });
    std::atomic<std::uint64_t> delivered{0};
    std::atomic<std::uint64_t> failed{0};
    std::atomic<std::uint64_t> attempts_seen{0};
    std::atomic<std::uint64_t> wrong{0};  // Catch's assertions are not thread-safe
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            for (int i = 0; i < calls_per_thread; ++i) {
                if (i % 97 == 0) {
                    auto& flag = healthy[(t + i) % 3];
                    flag.store(!flag.load(std::memory_order_relaxed), std::memory_order_relaxed);
                    if (t == 0) {
                        clock.advance(10s);  // lets ch0's breaker probe again
                    }
                }
                auto res = chain.execute(msg);
                attempts_seen.fetch_add(res.attempts().size());
                if (res.ok()) {
                    delivered.fetch_add(1);
                    if (res.value().via != "ch" || res.channel().empty() ||
                        !res.attempts()[res.attempts().size() - 1].ok) {
                        wrong.fetch_add(1);
                    }
                } else {
                    failed.fetch_add(1);
                    if (!res.error() || res.attempts().size() != 3) {
                        wrong.fetch_add(1);
                    }
                }
            }
        });
    }
    for (auto& th : pool) {
        th.join();
    }
    std::uint64_t successes = 0;
    std::uint64_t calls_and_skips = 0;
    for (const auto& s : chain.stats()) {
        CHECK(s.calls == s.successes + s.failures);
        successes += s.successes;
        calls_and_skips += s.calls + s.skipped;
    }
    CHECK(wrong.load() == 0);
    CHECK(delivered.load() + failed.load() ==
          static_cast<std::uint64_t>(threads) * calls_per_thread);
    CHECK(successes == delivered.load());
    CHECK(calls_and_skips == attempts_seen.load());
    CHECK(attempts_heard.load() == attempts_seen.load());
}

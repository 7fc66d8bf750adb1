#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <bulwark/detail/random.hpp>
#include <bulwark/retry.hpp>
#include <bulwark/retry_budget.hpp>
#include <bulwark/testing.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using bulwark::ManualClock;
using bulwark::QuotaRetryBudget;
using bulwark::QuotaRetryBudgetOptions;
using bulwark::RetryBudget;
using bulwark::RetryBudgetStats;
using bulwark::RetryCause;
using bulwark::RetryGrant;
using bulwark::TokenBucketRetryBudget;
using bulwark::TokenBucketRetryBudgetOptions;
using bulwark::TpsRetryBudget;

namespace {

// The scripted dependency: whether attempt `k` of call `i` (of `n`) fails, and if so whether it
// timed out. Five phases: healthy, outage, half failing, perfect, flaky with many timeouts.
struct Script {
    std::uint64_t n;
    enum class Result : std::uint8_t { ok, failure, timeout };

    Result at(std::uint64_t i, std::uint32_t k) const {
        const std::uint64_t h = bulwark::detail::SplitMix64::at(i * 8 + k, 12345);
        const std::uint64_t per_mille = h % 1000;
        const std::uint64_t phase = i * 5 / n;
        const std::uint64_t fail_per_mille[] = {20, 1000, 500, 0, 200};
        if (per_mille >= fail_per_mille[phase]) {
            return Result::ok;
        }
        return (h >> 32) % 10 < (phase == 4 ? 5U : 3U) ? Result::timeout : Result::failure;
    }
};

RetryCause cause_of(Script::Result r) {
    return r == Script::Result::timeout ? RetryCause::timeout : RetryCause::failure;
}

// Drives a budget through the protocol a RetryPolicy follows (max_retries retries per call) and
// hands every event to `observe`, so that a test can keep its own books.
struct Event {
    enum class Kind : std::uint8_t { call, success, grant, refusal } kind;
    std::uint64_t call = 0;
    RetryGrant grant{};  // for success: the grant of the retry that succeeded
    RetryCause cause = RetryCause::failure;
};

template <class Observe, class Tick>
void drive(RetryBudget& budget, const Script& script, std::uint32_t max_retries, Observe observe,
           Tick tick) {
    for (std::uint64_t i = 0; i < script.n; ++i) {
        tick(i);
        budget.record_call();
        observe(Event{Event::Kind::call, i, {}, RetryCause::failure});
        RetryGrant last{};
        bool shadowed = false;
        for (std::uint32_t k = 0;; ++k) {
            const Script::Result r = script.at(i, k);
            if (r == Script::Result::ok) {
                if (!shadowed) {
                    budget.record_success(last);
                    observe(Event{Event::Kind::success, i, last, RetryCause::failure});
                }
                break;
            }
            if (k == max_retries) {
                break;
            }
            if (shadowed) {
                continue;
            }
            const RetryGrant g = budget.acquire(cause_of(r));
            if (!g) {
                observe(Event{Event::Kind::refusal, i, g, cause_of(r)});
                break;
            }
            if (g.shadow) {
                shadowed = true;
                observe(Event{Event::Kind::refusal, i, g, cause_of(r)});
                continue;
            }
            observe(Event{Event::Kind::grant, i, g, cause_of(r)});
            last = g;
        }
    }
}

void no_tick(std::uint64_t) {}

bool same_decisions(const RetryBudgetStats& a, const RetryBudgetStats& b) {
    return a.calls == b.calls && a.successes == b.successes && a.granted == b.granted &&
           a.refused == b.refused && a.available == b.available;
}

// A RetryPolicy over the script: attempt k of the i-th call fails as scripted (TimeoutError for
// a timeout), and the clock moves 1 ms per call.
struct PolicyRun {
    std::uint64_t retries = 0;
    std::uint64_t shadow_events = 0;
};

PolicyRun run_policy(const std::shared_ptr<RetryBudget>& budget, const Script& script,
                     ManualClock& clock) {
    bulwark::RetryOptions o;
    o.max_retries = 3;
    o.backoff = bulwark::Backoff::fixed(0s);
    o.budget = budget;
    PolicyRun run;
    o.on_retry([&run](const bulwark::RetryEvent& e) { run.shadow_events += e.shadow ? 1 : 0; });
    bulwark::RetryPolicy retry(o, clock);
    for (std::uint64_t i = 0; i < script.n; ++i) {
        clock.advance(1ms);
        (void)retry.try_execute([&](bulwark::Context& ctx) -> int {
            switch (script.at(i, ctx.attempt())) {
                case Script::Result::ok:
                    return 1;
                case Script::Result::timeout:
                    throw bulwark::TimeoutError("timed out");
                case Script::Result::failure:
                    break;
            }
            throw std::runtime_error("failed");
        });
    }
    run.retries = retry.stats().retries;
    return run;
}

}  // namespace

TEST_CASE("RetryBudget::shared still builds the TPS budget of the API", "[retry_budget]") {
    ManualClock clock;
    std::shared_ptr<RetryBudget> budget = RetryBudget::shared(0.1, 10, clock);
    bulwark::RetryOptions r;
    r.budget = bulwark::RetryBudget::shared(0.1, 10);
    REQUIRE(dynamic_cast<TpsRetryBudget*>(budget.get()) != nullptr);
    CHECK(dynamic_cast<TpsRetryBudget&>(*budget).ratio() == 0.1);
    CHECK_FALSE(budget->shadow());
}

TEST_CASE(
    "token bucket: granted retries never exceed max_tokens/2 + token_ratio x successes, "
    "over a million scripted calls",
    "[retry_budget][token_bucket]") {
    TokenBucketRetryBudgetOptions o;
    o.max_tokens = 100;
    o.token_ratio = 0.25;
    TokenBucketRetryBudget budget(o);
    const Script script{1000000};
    // The test's own model of gRPC retry throttling, in thousandths of a token.
    const std::int64_t max_milli = 100000;
    const std::int64_t ratio_milli = 250;
    std::int64_t model = max_milli;
    std::uint64_t granted = 0;
    std::uint64_t successes = 0;
    std::uint64_t over_bound = 0;
    std::uint64_t disagreements = 0;
    drive(
        budget, script, 3,
        [&](const Event& e) {
            switch (e.kind) {
                case Event::Kind::call:
                    break;
                case Event::Kind::success:
                    ++successes;
                    model = std::min(max_milli, model + ratio_milli);
                    break;
                case Event::Kind::grant:
                case Event::Kind::refusal: {
                    model = std::max<std::int64_t>(0, model - 1000);
                    const bool model_allows = model > max_milli / 2;
                    disagreements += model_allows != (e.kind == Event::Kind::grant) ? 1 : 0;
                    if (e.kind == Event::Kind::grant) {
                        ++granted;
                        const std::int64_t bound =
                            max_milli - max_milli / 2 +
                            ratio_milli * static_cast<std::int64_t>(successes);
                        over_bound += static_cast<std::int64_t>(granted) * 1000 > bound ? 1 : 0;
                    }
                    break;
                }
            }
        },
        no_tick);
    CHECK(over_bound == 0);
    CHECK(disagreements == 0);
    const RetryBudgetStats s = budget.stats();
    CHECK(s.granted == granted);
    CHECK(s.successes == successes);
    CHECK(s.calls == 1000000);
    CHECK(s.refused > 100000);  // the outage really was throttled
    CHECK(s.granted > 10000);   // and retries were really allowed elsewhere
    CHECK(s.available == static_cast<double>(model) / 1000.0);
}

TEST_CASE(
    "quota: the cost of granted retries never exceeds the initial capacity plus what "
    "successes gave back, over a million scripted calls",
    "[retry_budget][quota]") {
    QuotaRetryBudget budget;  // AWS standard mode: 500, 5, 10 for a timeout, 1 back
    const Script script{1000000};
    std::int64_t spent = 0;
    std::int64_t given_back = 0;
    std::int64_t model = 500;  // the test's own model of the quota
    std::uint64_t over_bound = 0;
    std::uint64_t disagreements = 0;
    std::uint64_t timeouts_granted = 0;
    drive(
        budget, script, 3,
        [&](const Event& e) {
            const std::int64_t cost = e.cause == RetryCause::timeout ? 10 : 5;
            switch (e.kind) {
                case Event::Kind::call:
                    break;
                case Event::Kind::success: {
                    const std::int64_t back = e.grant.allowed ? e.grant.cost : 1;
                    given_back += back;
                    model = std::min<std::int64_t>(500, model + back);
                    break;
                }
                case Event::Kind::grant:
                    disagreements += model >= cost ? 0 : 1;
                    disagreements += e.grant.cost == static_cast<std::uint32_t>(cost) ? 0 : 1;
                    model -= cost;
                    spent += cost;
                    timeouts_granted += e.cause == RetryCause::timeout ? 1 : 0;
                    over_bound += spent > 500 + given_back ? 1 : 0;
                    break;
                case Event::Kind::refusal:
                    disagreements += model < cost ? 0 : 1;
                    break;
            }
        },
        no_tick);
    CHECK(over_bound == 0);
    CHECK(disagreements == 0);
    CHECK(timeouts_granted > 1000);
    const RetryBudgetStats s = budget.stats();
    CHECK(s.refused > 100000);
    CHECK(s.granted > 10000);
    CHECK(budget.capacity() == static_cast<std::uint32_t>(model));
}

TEST_CASE(
    "TPS: each second's retries stay within ratio x the window's calls or "
    "min_per_second, over a million scripted calls",
    "[retry_budget][tps]") {
    ManualClock clock;
    bulwark::RetryBudgetOptions o;
    o.ratio = 0.1;
    o.min_per_second = 5;
    o.window = 10s;
    TpsRetryBudget budget(o, clock);
    const Script script{1000000};
    // One call per millisecond: 1000 s. Per-second books of the test's own.
    std::vector<std::uint64_t> calls(1001, 0);
    std::vector<std::uint64_t> retries(1001, 0);
    const auto start =
        std::chrono::duration_cast<std::chrono::seconds>(clock.now().time_since_epoch()).count();
    auto second_now = [&] {
        return static_cast<std::size_t>(
            std::chrono::duration_cast<std::chrono::seconds>(clock.now().time_since_epoch())
                .count() -
            start);
    };
    drive(
        budget, script, 3,
        [&](const Event& e) {
            if (e.kind == Event::Kind::call) {
                ++calls[second_now()];
            } else if (e.kind == Event::Kind::grant) {
                ++retries[second_now()];
            }
        },
        [&](std::uint64_t i) {
            if (i > 0) {
                clock.advance(1ms);
            }
        });
    std::uint64_t over_bound = 0;
    std::uint64_t total = 0;
    std::uint64_t ratio_seconds = 0;
    for (std::size_t s = 0; s < calls.size(); ++s) {
        std::uint64_t window_calls = 0;
        std::uint64_t earlier_retries = 0;
        for (std::size_t k = s >= 9 ? s - 9 : 0; k <= s; ++k) {
            window_calls += calls[k];
            earlier_retries += k < s ? retries[k] : 0;
        }
        // Integer arithmetic: ratio 0.1 of the window's calls, rounded down.
        const std::uint64_t ratio_allowance = window_calls / 10;
        const std::uint64_t by_ratio =
            ratio_allowance > earlier_retries ? ratio_allowance - earlier_retries : 0;
        const std::uint64_t allowed = std::max<std::uint64_t>(5, by_ratio);
        over_bound += retries[s] > allowed ? 1U : 0U;
        ratio_seconds += retries[s] > 5 ? 1U : 0U;
        total += retries[s];
    }
    CHECK(over_bound == 0);
    CHECK(ratio_seconds > 100);  // the ratio, not only the floor, granted retries
    CHECK(budget.stats().granted == total);
    CHECK(budget.stats().refused > 100000);
}

TEST_CASE("a RetryPolicy drives each budget kind exactly as the protocol says",
          "[retry_budget][retry]") {
    const Script script{60000};
    auto check_kind = [&](auto make) {
        // The same script through a RetryPolicy and through the protocol driver.
        ManualClock policy_clock;
        std::shared_ptr<RetryBudget> through_policy = make(policy_clock);
        const PolicyRun run = run_policy(through_policy, script, policy_clock);
        ManualClock direct_clock;
        std::shared_ptr<RetryBudget> direct = make(direct_clock);
        drive(
            *direct, script, 3, [](const Event&) {},
            [&](std::uint64_t) { direct_clock.advance(1ms); });
        const RetryBudgetStats a = through_policy->stats();
        const RetryBudgetStats b = direct->stats();
        CHECK(same_decisions(a, b));
        CHECK(a.granted == run.retries);
        CHECK(a.refused > 0);
        CHECK(run.shadow_events == 0);
    };
    SECTION("token bucket") {
        check_kind([](ManualClock&) {
            return std::make_shared<TokenBucketRetryBudget>(TokenBucketRetryBudgetOptions{20, 0.5});
        });
    }
    SECTION("quota, whose timeouts cost more") {
        check_kind([](ManualClock&) { return std::make_shared<QuotaRetryBudget>(); });
    }
    SECTION("TPS") {
        check_kind([](ManualClock& clock) { return RetryBudget::shared(0.1, 2, clock); });
    }
}

TEST_CASE("shadow mode decides and counts as enforcing does, and lets the refusals through",
          "[retry_budget][shadow]") {
    const Script script{200000};
    auto compare = [&](auto make) {
        ManualClock enforcing_clock;
        ManualClock shadow_clock;
        std::shared_ptr<RetryBudget> enforcing = make(enforcing_clock, false);
        std::shared_ptr<RetryBudget> shadow = make(shadow_clock, true);
        REQUIRE(shadow->shadow());
        REQUIRE_FALSE(enforcing->shadow());
        std::vector<std::uint8_t> enforcing_decisions;
        std::vector<std::uint8_t> shadow_decisions;
        std::uint64_t shadow_let_through = 0;
        drive(
            *enforcing, script, 3,
            [&](const Event& e) {
                if (e.kind == Event::Kind::grant || e.kind == Event::Kind::refusal) {
                    enforcing_decisions.push_back(e.kind == Event::Kind::grant ? 1 : 0);
                }
            },
            [&](std::uint64_t) { enforcing_clock.advance(1ms); });
        drive(
            *shadow, script, 3,
            [&](const Event& e) {
                if (e.kind == Event::Kind::grant || e.kind == Event::Kind::refusal) {
                    shadow_decisions.push_back(e.kind == Event::Kind::grant ? 1 : 0);
                    shadow_let_through += e.grant.shadow ? 1 : 0;
                }
            },
            [&](std::uint64_t) { shadow_clock.advance(1ms); });
        CHECK(enforcing_decisions == shadow_decisions);
        const RetryBudgetStats a = enforcing->stats();
        const RetryBudgetStats b = shadow->stats();
        CHECK(same_decisions(a, b));
        CHECK(a.shadow_rejections == 0);
        CHECK(b.shadow_rejections == a.refused);
        CHECK(shadow_let_through == a.refused);
        CHECK(a.refused > 0);

        // Through a RetryPolicy: the shadow policy retries where the enforcing one stopped, and
        // its budget's books are still the enforcing one's.
        ManualClock c1;
        ManualClock c2;
        std::shared_ptr<RetryBudget> e2 = make(c1, false);
        std::shared_ptr<RetryBudget> s2 = make(c2, true);
        const Script shorter{30000};  // exceptions make policy runs slower
        const PolicyRun enforcing_run = run_policy(e2, shorter, c1);
        const PolicyRun shadow_run = run_policy(s2, shorter, c2);
        CHECK(same_decisions(e2->stats(), s2->stats()));
        CHECK(shadow_run.retries > enforcing_run.retries);
        CHECK(shadow_run.shadow_events >= s2->stats().shadow_rejections);
        CHECK(s2->stats().shadow_rejections == e2->stats().refused);
    };
    SECTION("token bucket") {
        compare([](ManualClock&, bool shadow) {
            TokenBucketRetryBudgetOptions o{10, 0.1};
            o.shadow = shadow;
            return std::make_shared<TokenBucketRetryBudget>(o);
        });
    }
    SECTION("quota") {
        compare([](ManualClock&, bool shadow) {
            QuotaRetryBudgetOptions o;
            o.shadow = shadow;
            return std::make_shared<QuotaRetryBudget>(o);
        });
    }
    SECTION("TPS") {
        compare([](ManualClock& clock, bool shadow) {
            bulwark::RetryBudgetOptions o{0.1, 2};
            o.shadow = shadow;
            return RetryBudget::shared(o, clock);
        });
    }
}

TEST_CASE("set_shadow switches a budget between enforcing and shadow at run time",
          "[retry_budget][shadow]") {
    QuotaRetryBudgetOptions o;
    o.max_capacity = 10;
    o.initial_capacity = 5;
    QuotaRetryBudget budget(o);
    CHECK(budget.acquire(RetryCause::failure).cost == 5);
    CHECK_FALSE(budget.acquire(RetryCause::failure));
    budget.set_shadow(true);
    CHECK(budget.shadow());
    const RetryGrant let_through = budget.acquire(RetryCause::failure);
    CHECK(let_through.allowed);
    CHECK(let_through.shadow);
    CHECK(let_through.cost == 0);
    CHECK(budget.capacity() == 0);  // took nothing
    budget.set_shadow(false);
    CHECK_FALSE(budget.acquire(RetryCause::failure));
    const RetryBudgetStats s = budget.stats();
    CHECK(s.granted == 1);
    CHECK(s.refused == 3);
    CHECK(s.shadow_rejections == 1);
}

TEST_CASE("token bucket at low rates: the rate does not matter, only the outcomes",
          "[retry_budget][token_bucket][low_rate]") {
    TokenBucketRetryBudget budget;  // 10 tokens, 0.1 back per success
    // One call a minute for a day, one in ten failing: every failure may retry (the time between
    // calls plays no part).
    std::uint64_t refused = 0;
    for (int minute = 0; minute < 1440; ++minute) {
        budget.record_call();
        if (minute % 10 == 0) {
            const RetryGrant g = budget.acquire(RetryCause::failure);
            refused += g ? 0U : 1U;
            budget.record_success(g);
        } else {
            budget.record_success(RetryGrant{});
        }
    }
    CHECK(refused == 0);
    // An outage empties it: the 5th failure in a row leaves 5 tokens, not more than half.
    int granted_in_outage = 0;
    for (int i = 0; i < 100; ++i) {
        granted_in_outage += budget.acquire(RetryCause::failure) ? 1 : 0;
    }
    CHECK(granted_in_outage == 4);
    CHECK(budget.tokens() == 0.0);
    // Retries resume after (10 / 2 + 1) / 0.1 = 60 successes, however long they take.
    int successes = 0;
    while (budget.tokens() <= 6.0) {
        budget.record_success(RetryGrant{});
        ++successes;
    }
    CHECK(successes == 61);  // 6.1 tokens: a retry leaves 5.1 > 5
    CHECK(budget.acquire(RetryCause::failure));
}

TEST_CASE("quota at low rates: a full quota allows retries however rare the calls",
          "[retry_budget][quota][low_rate]") {
    QuotaRetryBudget budget;
    // Every call fails once, one call an hour: each retry is paid back by its success.
    for (int hour = 0; hour < 1000; ++hour) {
        budget.record_call();
        const RetryGrant g = budget.acquire(RetryCause::timeout);
        REQUIRE(g);
        budget.record_success(g);
    }
    CHECK(budget.capacity() == 500);
    // A dead dependency: 500 / 5 = 100 retries (50 if all were timeouts), then none.
    int granted = 0;
    while (budget.acquire(RetryCause::failure)) {
        ++granted;
    }
    CHECK(granted == 100);
    // Five first-try successes buy one retry.
    for (int i = 0; i < 4; ++i) {
        budget.record_success(RetryGrant{});
    }
    CHECK_FALSE(budget.acquire(RetryCause::failure));
    budget.record_success(RetryGrant{});
    CHECK(budget.acquire(RetryCause::failure));
    CHECK_FALSE(budget.acquire(RetryCause::failure));
}

namespace {
// A clock whose next reading, once armed, returns the time it read and then holds the reading
// thread until released: a thread preempted between reading the clock and taking a lock.
class PausingClock final : public bulwark::Clock {
public:
    bulwark::TimePoint now() const noexcept override {
        const bulwark::TimePoint t{bulwark::Duration{ns_.load()}};
        if (armed_.exchange(false)) {
            paused_.store(true);
            while (!go_.load()) {
                std::this_thread::yield();
            }
        }
        return t;
    }
    void sleep_for(bulwark::Duration d) override { ns_.fetch_add(d.count()); }
    void set(bulwark::Duration since_zero) { ns_.store(since_zero.count()); }
    void arm() { armed_.store(true); }
    bool paused() const { return paused_.load(); }
    void release() { go_.store(true); }

private:
    std::atomic<std::int64_t> ns_{0};
    mutable std::atomic<bool> armed_{false};
    mutable std::atomic<bool> paused_{false};
    std::atomic<bool> go_{false};
};
}  // namespace

TEST_CASE("TPS: a retry whose clock reading went stale before the lock cannot reopen a second",
          "[retry_budget][tps]") {
    // window 1 s: one bucket. Thread A reads 9.9 s and is preempted; meanwhile second 10 spends
    // its min_per_second. A's late request must not reset the bucket back to second 9 (which
    // would hand second 10 a fresh min_per_second once its own requests come back).
    PausingClock clock;
    TpsRetryBudget budget(bulwark::RetryBudgetOptions{0.0, 2, 1s}, clock);
    clock.set(9900ms);
    clock.arm();
    bool late_granted = true;
    std::thread late([&] { late_granted = budget.try_withdraw(); });
    while (!clock.paused()) {
        std::this_thread::yield();
    }
    clock.set(10200ms);
    int granted_in_10 = 0;
    granted_in_10 += budget.try_withdraw() ? 1 : 0;
    granted_in_10 += budget.try_withdraw() ? 1 : 0;
    clock.release();
    late.join();
    granted_in_10 += late_granted ? 1 : 0;  // it asked during second 10
    granted_in_10 += budget.try_withdraw() ? 1 : 0;
    granted_in_10 += budget.try_withdraw() ? 1 : 0;
    CHECK(granted_in_10 == 2);  // min_per_second, whatever the interleaving
    CHECK(budget.stats().granted == 2);
}

TEST_CASE("TPS at low rates: min_per_second keeps retries possible, and without it none are",
          "[retry_budget][tps][low_rate]") {
    ManualClock clock;
    TpsRetryBudget floor(0.1, 1, clock);
    TpsRetryBudget no_floor(0.1, 0, clock);
    int with_floor = 0;
    int without = 0;
    // One call a minute, every one failing: the ratio alone allows 0.1 retry per window.
    for (int minute = 0; minute < 600; ++minute) {
        clock.advance(60s);
        floor.record_call();
        no_floor.record_call();
        with_floor += floor.try_withdraw() ? 1 : 0;
        without += no_floor.try_withdraw() ? 1 : 0;
    }
    CHECK(with_floor == 600);
    CHECK(without == 0);  // failsafe-go #106: a ratio alone forbids every retry here
}

TEST_CASE("invalid options of the new budget kinds are refused naming the field",
          "[retry_budget]") {
    TokenBucketRetryBudgetOptions t;
    t.max_tokens = 0;
    CHECK_THROWS_WITH(TokenBucketRetryBudget(t),
                      "TokenBucketRetryBudgetOptions.max_tokens must be in [1, 1000000], got 0");
    t = {};
    t.token_ratio = 0.0001;
    CHECK_THROWS_WITH(t.validate(),
                      "TokenBucketRetryBudgetOptions.token_ratio must be in "
                      "[0.001, max_tokens], got 0.0001");
    t.token_ratio = 11;
    CHECK_THROWS_WITH(t.validate(),
                      "TokenBucketRetryBudgetOptions.token_ratio must be in "
                      "[0.001, max_tokens], got 11");
    QuotaRetryBudgetOptions q;
    q.initial_capacity = 501;
    CHECK_THROWS_WITH(QuotaRetryBudget(q),
                      "QuotaRetryBudgetOptions.initial_capacity must be in "
                      "[0, max_capacity], got 501 (max_capacity 500)");
    q = {};
    q.retry_cost = 0;
    CHECK_THROWS_WITH(q.validate(),
                      "QuotaRetryBudgetOptions.retry_cost must be in [1, "
                      "max_capacity], got 0 (max_capacity 500)");
    q = {};
    q.max_capacity = 0;
    CHECK_THROWS_WITH(q.validate(),
                      "QuotaRetryBudgetOptions.max_capacity must be in [1, 1000000000], got 0");
    // The defaults are valid, and are AWS's standard mode.
    const QuotaRetryBudgetOptions aws;
    CHECK(aws.max_capacity == 500);
    CHECK(aws.retry_cost == 5);
    CHECK(aws.timeout_cost == 10);
    CHECK(aws.no_retry_increment == 1);
    CHECK_NOTHROW(aws.validate());
    CHECK_NOTHROW(TokenBucketRetryBudgetOptions{}.validate());
}

TEST_CASE("a user-defined budget plugs into RetryPolicy through the interface",
          "[retry_budget][retry]") {
    // Allows exactly one retry ever, and records what the policy told it.
    struct OneRetry final : RetryBudget {
        std::uint64_t calls = 0, successes = 0, timeouts = 0;
        bool used = false;
        void record_call() noexcept override { ++calls; }
        void record_success(const RetryGrant&) noexcept override { ++successes; }
        RetryGrant acquire(RetryCause cause) override {
            timeouts += cause == RetryCause::timeout ? 1 : 0;
            const bool ok = !used;
            used = true;
            return RetryGrant{ok, ok ? 1U : 0U, false};
        }
        RetryBudgetStats stats() const override { return {}; }
        void set_shadow(bool) noexcept override {}
        bool shadow() const noexcept override { return false; }
    };
    ManualClock clock;
    auto budget = std::make_shared<OneRetry>();
    bulwark::RetryOptions o;
    o.backoff = bulwark::Backoff::fixed(0s);
    o.budget = budget;
    bulwark::RetryPolicy retry(o, clock);
    int attempts = 0;
    CHECK(retry.execute([&]() -> int {
        if (attempts++ == 0) {
            throw bulwark::TimeoutError("slow");
        }
        return 5;
    }) == 5);
    CHECK_THROWS_AS(retry.execute([]() -> int { throw std::runtime_error("down"); }),
                    bulwark::RetryBudgetExhaustedError);
    CHECK(retry.execute([] { return 1; }) == 1);
    CHECK(budget->calls == 3);
    CHECK(budget->successes == 2);
    CHECK(budget->timeouts == 1);
}

TEST_CASE("stress: budgets of every kind shared by 4 threads keep their bounds",
          "[retry_budget][.stress]") {
    ManualClock clock;
    auto token = std::make_shared<TokenBucketRetryBudget>(TokenBucketRetryBudgetOptions{50, 0.2});
    auto quota = std::make_shared<QuotaRetryBudget>();
    auto tps = RetryBudget::shared(0.2, 5, clock);
    const std::shared_ptr<RetryBudget> budgets[] = {token, quota, tps};
    std::vector<std::unique_ptr<bulwark::RetryPolicy>> owned;
    for (const auto& b : budgets) {
        bulwark::RetryOptions o;
        o.max_retries = 2;
        o.backoff = bulwark::Backoff::fixed(0s);
        o.budget = b;
        owned.push_back(std::make_unique<bulwark::RetryPolicy>(o, clock));
    }
    struct Books {
        std::int64_t quota_spent = 0;
        std::int64_t quota_back = 0;
        std::uint64_t token_successes = 0;
    };
    std::vector<Books> books(4);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            bulwark::detail::SplitMix64 rng(static_cast<std::uint64_t>(t) + 99);
            for (int i = 0; i < 20000; ++i) {
                if (t == 0 && i % 100 == 0) {
                    clock.advance(1s);
                }
                const bool outage = (i / 2000) % 2 == 1;
                // The quota driven directly, so that this thread can keep the books of what it
                // spent and what its successes gave back.
                quota->record_call();
                RetryGrant last{};
                for (int k = 0; k < 3; ++k) {
                    const std::uint64_t roll = rng.next() % 10;
                    if (!outage && roll < 7) {
                        quota->record_success(last);
                        books[static_cast<std::size_t>(t)].quota_back +=
                            last.allowed ? last.cost : 1;
                        break;
                    }
                    const RetryGrant g =
                        quota->acquire(roll % 2 == 0 ? RetryCause::timeout : RetryCause::failure);
                    if (!g) {
                        break;
                    }
                    books[static_cast<std::size_t>(t)].quota_spent += g.cost;
                    last = g;
                }
                for (std::size_t p = 0; p < owned.size(); p += 2) {  // token bucket and TPS
                    const std::uint64_t roll = rng.next() % 10;
                    (void)owned[p]->try_execute([&]() -> int {
                        if (outage || roll < 3) {
                            throw std::runtime_error("down");
                        }
                        return 1;
                    });
                }
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    std::int64_t spent = 0;
    std::int64_t back = 0;
    for (const Books& b : books) {
        spent += b.quota_spent;
        back += b.quota_back;
    }
    CHECK(spent <= 500 + back);
    CHECK(quota->capacity() <= 500);
    const RetryBudgetStats ts = token->stats();
    CHECK(ts.granted * 1000 <= 50000 - 25000 + 200 * ts.successes);
    CHECK(ts.available >= 0.0);
    CHECK(ts.available <= 50.0);
    CHECK(owned[0]->stats().retries == ts.granted);
    CHECK(owned[2]->stats().retries == tps->stats().granted);
    CHECK(ts.calls == 80000);
    CHECK(tps->stats().calls == 80000);
    CHECK(ts.granted > 0);
    CHECK(ts.refused > 0);
}

// DeliveryEngine: routing with fallback, breakers, permanent errors, retry_after, scheduled
// sends, redrives, rule changes under traffic, stop() in both modes, statuses, the audit
// trail, statistics and metrics, all on a ManualClock.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <bulwark/circuit_breaker.hpp>
#include <bulwark/delivery.hpp>
#include <bulwark/error_classifier.hpp>
#include <bulwark/in_memory_dead_letter_store.hpp>
#include <bulwark/metrics.hpp>
#include <bulwark/rate_limiter.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using bulwark::DeadLetterQuery;
using bulwark::DeadLetterReason;
using bulwark::DeliveryEngine;
using bulwark::DeliveryEngineOptions;
using bulwark::DeliveryError;
using bulwark::DeliveryErrorKind;
using bulwark::FallbackReason;
using bulwark::FallbackRules;
using bulwark::ManualClock;
using bulwark::MessageStatus;
using bulwark::Receipt;
using bulwark::StopMode;

namespace {

// Options for a deterministic engine: no workers, fixed 10 s between passes.
DeliveryEngineOptions manual(std::uint32_t passes = 3) {
    DeliveryEngineOptions o;
    o.workers = 0;
    o.max_passes = passes;
    o.backoff = bulwark::Backoff::fixed(10s);
    return o;
}

// An adapter that fails while `down` is set and counts its calls; thread-safe.
struct Provider {
    explicit Provider(std::string n) : name(std::move(n)) {}
    std::string name;
    std::atomic<bool> down{false};
    std::atomic<int> calls{0};
    DeliveryErrorKind kind = DeliveryErrorKind::transient;
    bulwark::Duration retry_after{0};

    Receipt send(const std::string& m) {
        const int n = ++calls;
        if (down) {
            throw DeliveryError(kind, name + " unavailable", "E" + std::to_string(n), retry_after);
        }
        return Receipt{name + "-provider", name + ":" + m + ":" + std::to_string(n), 0.01, false};
    }
};

std::vector<std::string> channels_of(const std::vector<bulwark::DeliveryAttempt>& attempts) {
    std::vector<std::string> out;
    for (const auto& a : attempts) {
        out.push_back(a.channel);
    }
    return out;
}

}  // namespace

TEST_CASE("DeliveryEngine: a primary outage falls back to the rule's next channel", "[delivery]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq;
    FallbackRules rules;
    rules.set("telegram", {{"email", "sms"}, bulwark::Selection::priority, 0});
    DeliveryEngine<std::string> engine(rules, dlq, manual(), clock);
    Provider telegram("telegram");
    Provider email("email");
    Provider sms("sms");
    engine.add_channel("telegram", telegram);
    engine.add_channel("email", email);
    engine.add_channel("sms", sms);
    telegram.down = true;

    const std::string id = engine.submit("hi", {"telegram"});
    CHECK(engine.status(id) == MessageStatus::queued);
    CHECK(engine.run_due() == 1);
    CHECK(engine.status(id) == MessageStatus::sent);
    const auto attempts = engine.attempts(id);
    REQUIRE(attempts.size() == 2);
    CHECK(attempts[0].channel == "telegram");
    CHECK_FALSE(attempts[0].ok);
    CHECK(attempts[0].kind == DeliveryErrorKind::transient);
    CHECK(attempts[0].code == "E1");
    CHECK(attempts[0].error == "telegram unavailable");
    CHECK(attempts[0].fallback_reason == FallbackReason::none);
    CHECK(attempts[1].channel == "email");
    CHECK(attempts[1].ok);
    CHECK(attempts[1].provider == "email-provider");
    CHECK(attempts[1].external_id == "email:hi:1");
    CHECK(attempts[1].fallback_reason == FallbackReason::primary_failed);
    CHECK(attempts[1].cost == 0.01);
    CHECK(attempts[0].number == 1);
    CHECK(attempts[1].number == 2);
    CHECK(sms.calls == 0);
    const auto info = engine.info(id);
    REQUIRE(info);
    CHECK(info->channel == "email");
    CHECK(info->external_id == "email:hi:1");

    const auto s = engine.stats();
    REQUIRE(s.channels.size() == 3);
    CHECK(s.channels[0].attempts == 1);
    CHECK(s.channels[0].successes == 0);
    CHECK(s.channels[1].attempts == 1);
    CHECK(s.channels[1].fallbacks == 1);
    CHECK(s.channels[1].successful_fallbacks == 1);
    CHECK(s.overall.attempts == 2);
    CHECK(s.overall.success_rate == 0.5);
    CHECK(s.overall.cost == Approx(0.01));
    CHECK(dlq.stats().pending == 0);
}

TEST_CASE("DeliveryEngine: a delivery receipt moves a sent message on; listeners see each move",
          "[delivery]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq;
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, manual(), clock);
    Provider email("email");
    engine.add_channel("email", email);
    std::vector<std::pair<MessageStatus, MessageStatus>> moves;
    std::mutex m;
    engine.on_status([&](const bulwark::StatusChange& c) {
        std::lock_guard<std::mutex> lock(m);
        moves.emplace_back(c.from, c.to);
    });
    const std::string id = engine.submit("x", {"email"});
    engine.run_due();
    CHECK_FALSE(engine.confirm("nobody", MessageStatus::delivered));
    CHECK_THROWS_AS(engine.confirm("email:x:1", MessageStatus::sending), std::invalid_argument);
    CHECK(engine.confirm("email:x:1", MessageStatus::delivered));
    CHECK(engine.status(id) == MessageStatus::delivered);
    CHECK(engine.confirm("email:x:1", MessageStatus::bounced));  // a late bounce
    CHECK(engine.status(id) == MessageStatus::bounced);
    CHECK_FALSE(engine.confirm("email:x:1", MessageStatus::delivered));
    const auto info = engine.info(id);
    REQUIRE(info);
    for (MessageStatus s : {MessageStatus::queued, MessageStatus::sending, MessageStatus::sent,
                            MessageStatus::delivered, MessageStatus::bounced}) {
        CHECK(info->since[static_cast<std::size_t>(s)] != bulwark::WallTime{});
    }
    std::lock_guard<std::mutex> lock(m);
    const std::vector<std::pair<MessageStatus, MessageStatus>> expected{
        {MessageStatus::queued, MessageStatus::queued},
        {MessageStatus::queued, MessageStatus::sending},
        {MessageStatus::sending, MessageStatus::sent},
        {MessageStatus::sent, MessageStatus::delivered},
        {MessageStatus::delivered, MessageStatus::bounced}};
    CHECK(moves == expected);
}

TEST_CASE("DeliveryEngine: a failed pass is retried after the backoff, then dead-lettered",
          "[delivery]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq;
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, manual(3), clock);
    Provider sms("sms");
    sms.down = true;
    engine.add_channel("sms", sms);
    const std::string id = engine.submit("code 1234", {"sms"});
    CHECK(engine.run_due() == 1);
    CHECK(engine.status(id) == MessageStatus::queued);
    CHECK(engine.run_due() == 0);  // not due yet
    clock.advance(9s);
    CHECK(engine.run_due() == 0);
    clock.advance(1s);
    CHECK(engine.run_due() == 1);
    CHECK(sms.calls == 2);
    clock.advance(10s);
    CHECK(engine.run_due() == 1);
    CHECK(sms.calls == 3);
    CHECK(engine.status(id) == MessageStatus::dead_lettered);
    CHECK(engine.queue().size() == 0);

    const auto letters = dlq.list(DeadLetterQuery{});
    REQUIRE(letters.size() == 1);
    const bulwark::DeadLetter& d = letters[0];
    CHECK(d.id == id);
    CHECK(d.type == "sms");
    CHECK(d.payload == "code 1234");
    CHECK(d.reason == DeadLetterReason::retries_exhausted);
    CHECK(d.error == "sms unavailable (code E3)");
    REQUIRE(d.attempts.size() == 3);
    CHECK(d.attempts[0].channel == "sms");
    CHECK(d.attempts[2].error == "sms unavailable");
    CHECK(engine.info(id)->dead_letter_id == id);
    CHECK(engine.info(id)->passes == 3);
    CHECK(engine.counters().retries == 2);
}

TEST_CASE("DeliveryEngine: a permanent error is dead-lettered at once, without retry or fallback",
          "[delivery]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq;
    FallbackRules rules;
    rules.set("email", {{"sms"}, bulwark::Selection::priority, 0});
    DeliveryEngine<std::string> engine(rules, dlq, manual(5), clock);
    Provider email("email");
    Provider sms("sms");
    email.down = true;
    email.kind = DeliveryErrorKind::permanent;
    engine.add_channel("email", email);
    engine.add_channel("sms", sms);
    const std::string id = engine.submit("x", {"email"});
    engine.run_due();
    CHECK(email.calls == 1);
    CHECK(sms.calls == 0);
    CHECK(engine.status(id) == MessageStatus::dead_lettered);
    REQUIRE(dlq.get(id));
    CHECK(dlq.get(id)->reason == DeadLetterReason::not_retryable);

    SECTION("a bounce is dead-lettered as rejected") {
        email.kind = DeliveryErrorKind::bounced;
        const std::string bounced = engine.submit("y", {"email"});
        engine.run_due();
        REQUIRE(dlq.get(bounced));
        CHECK(dlq.get(bounced)->reason == DeadLetterReason::rejected);
        CHECK(sms.calls == 0);
    }
    SECTION("a rule that says so falls back on a permanent error") {
        rules.set("email", {{"sms"}, bulwark::Selection::priority, 0, true});
        engine.set_rules(rules);
        const std::string other = engine.submit("z", {"email"});
        engine.run_due();
        CHECK(sms.calls == 1);
        CHECK(engine.status(other) == MessageStatus::sent);
    }
    SECTION("a channel's classifier decides what is permanent") {
        bulwark::DeliveryClassifier c;
        c.on<std::out_of_range>(DeliveryErrorKind::permanent);
        engine.add_channel(
            "push",
            [](const std::string&) -> Receipt { throw std::out_of_range("no device token"); }, {},
            c);
        const std::string pushed = engine.submit("p", {"push"});
        engine.run_due();
        CHECK(engine.status(pushed) == MessageStatus::dead_lettered);
        CHECK(engine.attempts(pushed).at(0).kind == DeliveryErrorKind::permanent);
    }
}

TEST_CASE("DeliveryEngine: a rate-limited channel's retry_after delays the next pass",
          "[delivery]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq;
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, manual(5), clock);
    Provider sms("sms");
    sms.down = true;
    sms.kind = DeliveryErrorKind::rate_limited;
    sms.retry_after = 45s;
    engine.add_channel("sms", sms);
    const std::string id = engine.submit("x", {"sms"});
    engine.run_due();
    CHECK(engine.attempts(id).at(0).kind == DeliveryErrorKind::rate_limited);
    clock.advance(44s);  // past the 10 s backoff, not the 45 s asked for
    CHECK(engine.run_due() == 0);
    sms.down = false;
    clock.advance(1s);
    CHECK(engine.run_due() == 1);
    CHECK(engine.status(id) == MessageStatus::sent);
}

TEST_CASE("DeliveryEngine: a breaker opens on an outage, the engine falls back, then recovers",
          "[delivery]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq;
    bulwark::CircuitBreakerOptions bo;
    bo.failure_threshold = 2;
    bo.break_duration = 30s;
    bo.half_open_calls = 1;
    bulwark::CircuitBreaker breaker("email", bo, clock);
    FallbackRules rules;
    rules.set("email", {{"sms"}, bulwark::Selection::priority, 0});
    DeliveryEngine<std::string> engine(rules, dlq, manual(), clock);
    Provider email("email");
    Provider sms("sms");
    bulwark::ChannelOptions eo;
    eo.breaker = &breaker;
    engine.add_channel("email", email, eo);
    engine.add_channel("sms", sms);

    email.down = true;
    for (int i = 0; i < 2; ++i) {
        engine.submit("m" + std::to_string(i), {"email"});
        engine.run_due();
        clock.advance(1s);
    }
    CHECK(breaker.state() == bulwark::CircuitState::open);
    CHECK(email.calls == 2);
    const std::string skipped = engine.submit("while-open", {"email"});
    engine.run_due();
    CHECK(email.calls == 2);  // not called: the breaker is open
    const auto a = engine.attempts(skipped);
    REQUIRE(a.size() == 2);
    CHECK(a[0].skipped == FallbackReason::unavailable);
    CHECK(a[1].channel == "sms");
    CHECK(a[1].fallback_reason == FallbackReason::unavailable);
    CHECK(engine.status(skipped) == MessageStatus::sent);

    email.down = false;
    clock.advance(30s);
    const std::string probe = engine.submit("after", {"email"});
    engine.run_due();
    CHECK(engine.attempts(probe).at(0).channel == "email");
    CHECK(engine.attempts(probe).at(0).ok);
    CHECK(breaker.state() == bulwark::CircuitState::closed);
    const auto s = engine.stats();
    CHECK(s.channels[0].recoveries == 1);
    // From the first failure (t = 0) to the success (t = 32 s).
    CHECK(s.channels[0].mean_recovery == 32s);
}

TEST_CASE("DeliveryEngine: every channel unavailable requeues with the breaker's wait",
          "[delivery]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq;
    bulwark::CircuitBreakerOptions bo;
    bo.break_duration = 60s;
    bulwark::CircuitBreaker breaker("sms", bo, clock);
    breaker.trip();
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, manual(), clock);
    Provider sms("sms");
    bulwark::ChannelOptions so;
    so.breaker = &breaker;
    engine.add_channel("sms", sms, so);
    const std::string id = engine.submit("x", {"sms"});
    engine.run_due();
    CHECK(engine.status(id) == MessageStatus::queued);
    CHECK(sms.calls == 0);
    const auto next = engine.queue().next_ready();
    REQUIRE(next);
    CHECK(*next - clock.wall_now() >= 10s);
}

TEST_CASE("DeliveryEngine: a scheduled send waits for its time", "[delivery]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq;
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, manual(), clock);
    Provider email("email");
    engine.add_channel("email", email);
    const std::string at_wall = engine.submit_at("later", clock.wall_now() + 1h, {"email"});
    const std::string at_steady = engine.submit_at("sooner", clock.now() + 30min, {"email"});
    CHECK(engine.run_due() == 0);
    clock.advance(30min);
    CHECK(engine.run_due() == 1);
    CHECK(engine.status(at_steady) == MessageStatus::sent);
    CHECK(engine.status(at_wall) == MessageStatus::queued);
    clock.advance(30min);
    CHECK(engine.run_due() == 1);
    CHECK(engine.status(at_wall) == MessageStatus::sent);
}

TEST_CASE("DeliveryEngine: a dead letter is redriven with its history, over forced channels",
          "[delivery]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq;
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, manual(1), clock);
    Provider sms("sms");
    Provider email("email");
    sms.down = true;
    engine.add_channel("sms", sms);
    engine.add_channel("email", email);
    const std::string id = engine.submit("otp", {"sms"});
    engine.run_due();
    REQUIRE(engine.status(id) == MessageStatus::dead_lettered);

    CHECK_THROWS_AS(engine.reprocess_dead_letter(id, {"fax"}), std::invalid_argument);
    CHECK(engine.reprocess_dead_letter(id, {"email"}));
    CHECK_FALSE(engine.reprocess_dead_letter(id, {"email"}));  // no longer pending
    CHECK(dlq.get(id)->status == bulwark::DeadLetterStatus::reprocessed);
    CHECK(engine.status(id) == MessageStatus::queued);
    engine.run_due();
    CHECK(engine.status(id) == MessageStatus::sent);
    CHECK(email.calls == 1);
    const auto a = engine.attempts(id);
    REQUIRE(a.size() == 2);
    CHECK(a[0].channel == "sms");
    CHECK(a[1].channel == "email");
    CHECK(a[1].pass == 1);  // a fresh count of passes
    CHECK(engine.info(id)->channels == std::vector<std::string>{"email"});

    SECTION("dead-lettered again, it is a second letter that names its origin") {
        email.down = true;
        CHECK(engine.reprocess_dead_letter(id) == false);  // already reprocessed
        const std::string other = engine.submit("otp2", {"sms"});
        engine.run_due();
        REQUIRE(engine.reprocess_dead_letter(other, {"email"}));
        CHECK(engine.run_due() == 0);  // 100 ms after the first redrive (10 per second)
        clock.advance(100ms);
        CHECK(engine.run_due() == 1);
        REQUIRE(engine.status(other) == MessageStatus::dead_lettered);
        const auto again = dlq.get(other + "~1");
        REQUIRE(again);
        CHECK(std::find(again->tags.begin(), again->tags.end(), "origin:" + other) !=
              again->tags.end());
        REQUIRE(again->attempts.size() >= 2);
        CHECK(again->attempts.front().channel == "sms");
        CHECK(again->attempts.back().channel == "email");
    }
}

TEST_CASE("DeliveryEngine: a bulk redrive is released at the redrive rate", "[delivery]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq;
    DeliveryEngineOptions o = manual(1);
    o.redrive_rate = 2.0;  // one every 500 ms
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, o, clock);
    Provider sms("sms");
    sms.down = true;
    engine.add_channel("sms", sms);
    for (int i = 0; i < 10; ++i) {
        engine.submit("m" + std::to_string(i), {"sms"});
    }
    engine.run_due();
    REQUIRE(dlq.stats().pending == 10);
    sms.down = false;
    const int before = sms.calls;
    const auto r = engine.reprocess_dead_letters(DeadLetterQuery{}.type("sms"));
    CHECK(r.resent == 10);
    CHECK(engine.run_due() == 1);  // only the first is due now
    for (int i = 1; i < 10; ++i) {
        clock.advance(499ms);
        CHECK(engine.run_due() == 0);
        clock.advance(1ms);
        CHECK(engine.run_due() == 1);
    }
    CHECK(sms.calls - before == 10);
    CHECK(engine.counters().redriven == 10);
    // A second bulk redrive queues behind the first one's schedule, not at once.
    CHECK(engine.stats().by_status[static_cast<std::size_t>(MessageStatus::sent)] == 10);
}

TEST_CASE("DeliveryEngine: an explicit list of channels is tried in order, and only those",
          "[delivery]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq;
    FallbackRules rules;
    rules.set("a", {{"c"}, bulwark::Selection::priority, 0});
    DeliveryEngine<std::string> engine(rules, dlq, manual(1), clock);
    Provider a("a");
    Provider b("b");
    Provider c("c");
    a.down = true;
    b.down = true;
    engine.add_channel("a", a);
    engine.add_channel("b", b);
    engine.add_channel("c", c);
    const std::string id = engine.submit("x", {"b", "a"});
    engine.run_due();
    CHECK(channels_of(engine.attempts(id)) == std::vector<std::string>{"b", "a"});
    CHECK(engine.status(id) == MessageStatus::dead_lettered);
    CHECK(c.calls == 0);
    CHECK_THROWS_AS(engine.submit("x", {"a", "a"}), std::invalid_argument);
    CHECK_THROWS_AS(engine.submit("x", {"nope"}), std::invalid_argument);
}

TEST_CASE("DeliveryEngine: stop(persist) hands back what its own queue holds", "[delivery]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq;
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, manual(), clock);
    Provider email("email");
    engine.add_channel("email", email);
    engine.submit("now", {"email"});
    const std::string later = engine.submit_at("later", clock.wall_now() + 1h, {"email"});
    engine.run_due();
    auto left = engine.stop(StopMode::persist);
    REQUIRE(left.size() == 1);
    CHECK(left[0].id == later);
    CHECK(left[0].message == "later");
    CHECK(left[0].channels == std::vector<std::string>{"email"});
    CHECK(engine.stop().empty());
    CHECK_THROWS_AS(engine.submit("x", {"email"}), bulwark::QueueStoppedError);
}

TEST_CASE("DeliveryEngine: stop(drain) delivers what falls due within the timeout", "[delivery]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq;
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, manual(), clock);
    Provider email("email");
    engine.add_channel("email", email);
    engine.submit_at("soon", clock.wall_now() + 5s, {"email"});
    const std::string late = engine.submit_at("late", clock.wall_now() + 1h, {"email"});
    auto left = engine.stop(StopMode::drain, 1min);
    CHECK(email.calls == 1);
    REQUIRE(left.size() == 1);
    CHECK(left[0].id == late);
}

TEST_CASE("DeliveryEngine: with a queue store of the user's, stop leaves messages in it",
          "[delivery]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq;
    bulwark::InMemoryQueueStore queue;
    {
        DeliveryEngine<std::string> engine(FallbackRules{}, dlq, queue, manual(), clock);
        Provider email("email");
        engine.add_channel("email", email);
        engine.submit_at("later", clock.wall_now() + 1h, {"email"});
        CHECK(engine.stop().empty());
    }
    CHECK(queue.size() == 1);
    // A new engine on the same store picks it up.
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, queue, manual(), clock);
    Provider email("email");
    engine.add_channel("email", email);
    clock.advance(1h);
    CHECK(engine.run_due() == 1);
    CHECK(email.calls == 1);
    CHECK(queue.size() == 0);
}

TEST_CASE("DeliveryEngine: a message leased by a dead worker is sent after its lease runs out",
          "[delivery]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq;
    bulwark::InMemoryQueueStore queue;
    DeliveryEngineOptions o = manual();
    o.lease = 2min;
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, queue, o, clock);
    Provider email("email");
    engine.add_channel("email", email);
    const std::string id = engine.submit("x", {"email"});
    // Another process takes it and dies.
    REQUIRE(queue.claim(clock.wall_now(), 10, 2min).size() == 1);
    CHECK(engine.run_due() == 0);
    clock.advance(2min);
    CHECK(engine.run_due() == 1);
    CHECK(engine.status(id) == MessageStatus::sent);
}

TEST_CASE("DeliveryEngine: run_due leases each batch from the time it claims it", "[delivery]") {
    // A pass slower than the lease: batches claimed later must get a whole lease of their own,
    // not one counted from the start of the pass (already run out, so they were skipped).
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq;
    bulwark::InMemoryQueueStore queue;
    DeliveryEngineOptions o = manual();
    o.lease = 1min;
    o.batch_size = 1;
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, queue, o, clock);
    int sends = 0;
    engine.add_channel("email", [&](const std::string&) {
        ++sends;
        clock.advance(90s);  // each send outlasts the lease
        Receipt r;
        r.delivered = true;
        return r;
    });
    const std::string a = engine.submit("a", {"email"});
    const std::string b = engine.submit("b", {"email"});
    const std::string c = engine.submit("c", {"email"});
    CHECK(engine.run_due() == 3);
    CHECK(sends == 3);
    CHECK(engine.status(a) == MessageStatus::delivered);
    CHECK(engine.status(b) == MessageStatus::delivered);
    CHECK(engine.status(c) == MessageStatus::delivered);
    CHECK(queue.size() == 0);
}

TEST_CASE("DeliveryEngine: the ledger does not resend a message leased again after it was sent",
          "[delivery]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq;
    // A store whose complete() fails once: the sent message stays queued.
    struct ForgetfulStore : bulwark::QueueStore {
        bulwark::InMemoryQueueStore inner;
        bool fail = true;
        void push(const bulwark::QueuedMessage& m) override { inner.push(m); }
        std::vector<bulwark::QueuedMessage> claim(bulwark::WallTime now, std::size_t max,
                                                  bulwark::Duration lease) override {
            return inner.claim(now, max, lease);
        }
        bool complete(std::string_view id, std::uint64_t lease) override {
            if (fail) {
                fail = false;
                throw std::runtime_error("disk full");
            }
            return inner.complete(id, lease);
        }
        bool release(const bulwark::QueuedMessage& m) override { return inner.release(m); }
        bool extend(std::string_view id, std::uint64_t lease, bulwark::WallTime until) override {
            return inner.extend(id, lease, until);
        }
        bool remove(std::string_view id) override { return inner.remove(id); }
        std::optional<bulwark::QueuedMessage> get(std::string_view id) const override {
            return inner.get(id);
        }
        std::size_t size() const override { return inner.size(); }
        std::optional<bulwark::WallTime> next_ready() const override { return inner.next_ready(); }
        std::vector<bulwark::QueuedMessage> list(std::size_t limit) const override {
            return inner.list(limit);
        }
        bulwark::QueueStoreStats stats() const override { return inner.stats(); }
    } queue;
    DeliveryEngineOptions o = manual();
    o.lease = 1min;
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, queue, o, clock);
    Provider email("email");
    engine.add_channel("email", email);
    const std::string id = engine.submit("x", {"email"});
    engine.run_due();
    CHECK(email.calls == 1);
    CHECK(queue.size() == 1);
    clock.advance(1min);
    engine.run_due();
    CHECK(email.calls == 1);
    CHECK(queue.size() == 0);
    CHECK(engine.counters().duplicates_suppressed == 1);
    CHECK(engine.status(id) == MessageStatus::sent);
}

TEST_CASE("DeliveryEngine: a message type of the user's goes through its codec", "[delivery]") {
    struct Note {
        std::string to;
        std::string text;
    };
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq;
    DeliveryEngine<Note> engine(FallbackRules{}, dlq, manual(1), clock);
    std::vector<std::string> seen;
    engine.add_channel("email", [&](const Note& n, bulwark::Context&) {
        seen.push_back(n.to + "|" + n.text);
        return Receipt{};
    });
    CHECK_THROWS_AS(engine.submit(Note{"a", "b"}, {"email"}), std::invalid_argument);
    engine.codec([](const Note& n) { return n.to + '\n' + n.text; },
                 [](std::string_view b) {
                     const auto nl = b.find('\n');
                     return Note{std::string(b.substr(0, nl)), std::string(b.substr(nl + 1))};
                 });
    engine.submit(Note{"ann@example.com", "hello"}, {"email"});
    engine.run_due();
    CHECK(seen == std::vector<std::string>{"ann@example.com|hello"});
    CHECK_THROWS_AS(engine.codec([](const Note&) { return std::string(); },
                                 [](std::string_view) { return Note{}; }),
                    std::logic_error);
}

TEST_CASE("DeliveryEngine: undecodable queued bytes are dead-lettered raw", "[delivery]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq;
    bulwark::InMemoryQueueStore queue;
    queue.push({"junk", std::string("\x07garbage", 8), clock.wall_now()});
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, queue, manual(), clock);
    engine.add_channel("email", [](const std::string&) { return Receipt{}; });
    engine.run_due();
    CHECK(queue.size() == 0);
    const auto d = dlq.get("junk");
    REQUIRE(d);
    CHECK(d->payload == std::string("\x07garbage", 8));
    CHECK(engine.status("junk") == MessageStatus::dead_lettered);
    CHECK(engine.counters().undecodable == 1);
    CHECK_FALSE(engine.reprocess_dead_letter("junk"));
}

TEST_CASE("DeliveryEngine: statistics by time range, JSON and Prometheus", "[delivery]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq;
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, manual(), clock);
    // Response times on the manual clock: the adapter advances it.
    int n = 0;
    engine.add_channel("email", [&](const std::string&) {
        clock.advance(std::chrono::milliseconds(++n <= 19 ? 20 : 3000));
        return Receipt{"smtp", "e" + std::to_string(n), 0.5, false};
    });
    const bulwark::WallTime start = clock.wall_now();
    for (int i = 0; i < 20; ++i) {
        engine.submit("m", {"email"});
    }
    engine.run_due();
    clock.advance(5min);
    const auto s = engine.stats(start, start + 1min);
    REQUIRE(s.channels.size() == 1);
    const auto& e = s.channels[0];
    CHECK(e.attempts == 20);
    CHECK(e.successes == 20);
    CHECK(e.cost == Approx(10.0));
    CHECK(e.mean_response == std::chrono::milliseconds((19 * 20 + 3000) / 20));
    // 19 calls in (10 ms, 25 ms], one in (2.5 s, 5 s]: the 95th percentile is the 19th.
    CHECK(e.p95_response > 10ms);
    CHECK(e.p95_response <= 25ms);
    CHECK(engine.stats(start + 2min, start + 3min).channels[0].attempts == 0);

    const std::string json = s.to_json();
    CHECK(json.find("\"channel\":\"email\"") != std::string::npos);
    CHECK(json.find("\"attempts\":20") != std::string::npos);
    CHECK(json.find("\"sent\":20") != std::string::npos);

    const std::string prom = bulwark::to_prometheus(engine);
    CHECK(prom.find("# TYPE bulwark_delivery_response_seconds histogram") != std::string::npos);
    CHECK(prom.find("bulwark_delivery_response_seconds_bucket{engine=\"delivery\",channel="
                    "\"email\",le=\"0.025\"} 19") != std::string::npos);
    CHECK(prom.find("bulwark_delivery_response_seconds_bucket{engine=\"delivery\",channel="
                    "\"email\",le=\"+Inf\"} 20") != std::string::npos);
    CHECK(prom.find("bulwark_delivery_response_seconds_count{engine=\"delivery\",channel="
                    "\"email\"} 20") != std::string::npos);
    CHECK(prom.find("bulwark_delivery_cost_total{engine=\"delivery\",channel=\"email\"} 10") !=
          std::string::npos);
    CHECK(prom.find("bulwark_delivery_status_total{engine=\"delivery\",status=\"sent\"} 20") !=
          std::string::npos);
    CHECK(prom.find("bulwark_delivery_queue_depth{engine=\"delivery\"} 0") != std::string::npos);
}

TEST_CASE("DeliveryEngine: finished messages are forgotten beyond max_tracked and track_for",
          "[delivery]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq;
    DeliveryEngineOptions o = manual();
    o.max_tracked = 3;
    o.track_for = 1h;
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, o, clock);
    engine.add_channel("email", [](const std::string& m) { return Receipt{"", m, 0, false}; });
    std::vector<std::string> ids;
    for (int i = 0; i < 5; ++i) {
        ids.push_back(engine.submit("m" + std::to_string(i), {"email"}));
        engine.run_due();
    }
    CHECK_FALSE(engine.status(ids[0]));
    CHECK_FALSE(engine.status(ids[1]));
    CHECK(engine.status(ids[2]) == MessageStatus::sent);
    CHECK_FALSE(engine.confirm("m0", MessageStatus::delivered));  // forgotten with its record
    clock.advance(2h);
    const std::string fresh = engine.submit("late", {"email"});
    engine.run_due();
    CHECK_FALSE(engine.status(ids[4]));
    CHECK(engine.status(fresh) == MessageStatus::sent);
}

TEST_CASE("DeliveryEngine: invalid options and channels are refused by name", "[delivery]") {
    bulwark::InMemoryDeadLetterStore dlq;
    auto refused = [&](void (*set)(DeliveryEngineOptions&), const std::string& field) {
        DeliveryEngineOptions o;
        set(o);
        try {
            DeliveryEngine<std::string> engine(FallbackRules{}, dlq, o);
            FAIL("accepted " << field);
        } catch (const std::invalid_argument& e) {
            CHECK(std::string(e.what()).find(field) != std::string::npos);
        }
    };
    refused([](DeliveryEngineOptions& o) { o.name.clear(); }, "DeliveryEngineOptions.name");
    refused([](DeliveryEngineOptions& o) { o.workers = 1000; }, "DeliveryEngineOptions.workers");
    refused([](DeliveryEngineOptions& o) { o.batch_size = 0; }, "DeliveryEngineOptions.batch_size");
    refused([](DeliveryEngineOptions& o) { o.lease = 0s; }, "DeliveryEngineOptions.lease");
    refused([](DeliveryEngineOptions& o) { o.max_passes = 0; }, "DeliveryEngineOptions.max_passes");
    refused([](DeliveryEngineOptions& o) { o.max_elapsed = -1s; },
            "DeliveryEngineOptions.max_elapsed");
    refused([](DeliveryEngineOptions& o) { o.redrive_rate = 0; },
            "DeliveryEngineOptions.redrive_rate");
    refused([](DeliveryEngineOptions& o) { o.stats_window = 1s; },
            "DeliveryEngineOptions.stats_window");
    refused([](DeliveryEngineOptions& o) { o.max_tracked = 0; },
            "DeliveryEngineOptions.max_tracked");

    ManualClock clock;
    FallbackRules rules;
    rules.set("email", {{"pigeon"}, bulwark::Selection::priority, 0});
    DeliveryEngine<std::string> engine(rules, dlq, manual(), clock);
    engine.add_channel("email", [](const std::string&) { return Receipt{}; });
    CHECK_THROWS_AS(engine.add_channel("email", [](const std::string&) { return Receipt{}; }),
                    std::invalid_argument);
    // The rule names a channel never added: refused when the engine starts.
    CHECK_THROWS_WITH(engine.submit("x", {"email"}), Catch::Contains("pigeon"));
    engine.add_channel("pigeon", [](const std::string&) { return Receipt{}; });
    CHECK_NOTHROW(engine.submit("x", {"email"}));
    FallbackRules bad;
    bad.set("email", {{"owl"}, bulwark::Selection::priority, 0});
    CHECK_THROWS_AS(engine.set_rules(bad), std::invalid_argument);
    CHECK(engine.rules().find("email")->fallbacks == std::vector<std::string>{"pigeon"});
}

TEST_CASE("DeliveryEngine: a channel's rate limiter is one send cap for every worker",
          "[delivery][threads]") {
    bulwark::InMemoryDeadLetterStore dlq;
    ManualClock clock;
    // 10 sends in all until the clock moves, whatever the number of workers.
    bulwark::RateLimiter limiter(bulwark::TokenBucket{1, 10}, clock);
    DeliveryEngineOptions o;
    o.workers = 4;
    o.batch_size = 5;
    o.backoff = bulwark::Backoff::fixed(1h);
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, o, clock);
    std::atomic<int> sent{0};
    bulwark::ChannelOptions co;
    co.limiter = &limiter;
    engine.add_channel(
        "sms",
        [&](const std::string&) {
            ++sent;
            return Receipt{};
        },
        co);
    // Every message ends its one pass (the retries wait an hour of manual time) as sent or
    // queued again: wait for 100 such moves.
    std::mutex m;
    std::condition_variable passes_done;
    int passes = 0;
    engine.on_status([&](const bulwark::StatusChange& c) {
        if (c.from == MessageStatus::sending) {
            std::lock_guard<std::mutex> lock(m);
            ++passes;
            passes_done.notify_all();
        }
    });
    std::vector<std::string> batch(100, "m");
    engine.submit_batch(batch, clock.wall_now(), {"sms"});
    {
        std::unique_lock<std::mutex> lock(m);
        passes_done.wait_for(lock, 60s, [&] { return passes == 100; });
        CHECK(passes == 100);
    }
    engine.stop();
    CHECK(sent == 10);
    CHECK(engine.counters().retries == 90);
}

TEST_CASE("DeliveryEngine: rules replaced and removed while workers send", "[delivery][threads]") {
    bulwark::InMemoryDeadLetterStore dlq;
    DeliveryEngineOptions o;
    o.workers = 2;
    o.batch_size = 8;
    FallbackRules rules;
    rules.set("a", {{"b"}, bulwark::Selection::priority, 0});
    DeliveryEngine<std::string> engine(rules, dlq, o);
    std::atomic<int> calls{0};
    engine.add_channel("a", [&](const std::string&) -> Receipt {
        ++calls;
        throw DeliveryError(DeliveryErrorKind::transient, "down");
    });
    engine.add_channel("b", [&](const std::string&) {
        ++calls;
        return Receipt{};
    });
    engine.add_channel("c", [&](const std::string&) {
        ++calls;
        return Receipt{};
    });
    std::atomic<bool> done{false};
    std::thread changer([&] {
        for (int i = 0; !done; ++i) {
            FallbackRules r;
            r.set("a", {{i % 2 == 0 ? "c" : "b"}, bulwark::Selection::priority, 0});
            r.set_global({"c"});  // what "a" falls back on while it has no rule
            engine.set_rules(r);
            engine.remove_rule("a");
            engine.set_rules(r);
        }
    });
    std::vector<std::string> ids;
    for (int i = 0; i < 2000; ++i) {
        ids.push_back(engine.submit("m", {"a"}));
    }
    const bool drained = engine.drain(60s);
    done = true;
    changer.join();
    CHECK(drained);
    std::size_t sent = 0;
    for (const auto& id : ids) {
        sent += engine.status(id) == MessageStatus::sent ? 1U : 0U;
    }
    // Every pass had a fallback (b or c by the rule, or c by the global order): all sent.
    CHECK(sent == ids.size());
    CHECK(dlq.stats().pending == 0);
}

TEST_CASE("DeliveryEngine: records keep their own route and the newest max_attempts_kept attempts",
          "[delivery]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq;
    DeliveryEngineOptions o = manual(10);
    o.max_attempts_kept = 3;
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, o, clock);
    Provider email("email");
    Provider sms("sms");
    engine.add_channel("email", email);
    engine.add_channel("sms", sms);
    // Routes alternate, so that a record cannot take the route of the submit before it.
    const std::string a = engine.submit("a", {"email"});
    const std::string b = engine.submit("b", {"sms", "email"});
    const std::string c = engine.submit("c", {"email"});
    const std::string d = engine.submit("d");
    CHECK(engine.info(a)->channels == std::vector<std::string>{"email"});
    CHECK(engine.info(b)->channels == std::vector<std::string>{"sms", "email"});
    CHECK(engine.info(c)->channels == std::vector<std::string>{"email"});
    CHECK(engine.info(d)->channels.empty());
    const auto batch = engine.submit_batch({"e", "f"}, clock.wall_now(), {"sms"});
    REQUIRE(batch.size() == 2);
    CHECK(engine.info(batch[1])->channels == std::vector<std::string>{"sms"});

    // Two attempts per pass (sms, then email), five passes: the newest three are kept, numbered
    // on from the ones dropped.
    sms.down = true;
    email.down = true;
    for (int pass = 0; pass < 5; ++pass) {
        engine.run_due();
        clock.advance(10s);
    }
    const auto kept = engine.attempts(b);
    REQUIRE(kept.size() == 3);
    CHECK(kept[0].number == 8);
    CHECK(kept[1].number == 9);
    CHECK(kept[2].number == 10);
    CHECK(kept[2].channel == "email");
    CHECK(kept[2].pass == 5);
    email.down = false;
    engine.run_due();
    CHECK(engine.status(b) == MessageStatus::sent);
    const auto last = engine.attempts(b);
    REQUIRE(last.size() == 3);
    CHECK(last[2].number == 12);
    CHECK(last[2].ok);
}

TEST_CASE("InMemoryQueueStore: ids, leases and order survive claim, release, extend and remove",
          "[delivery][queue_store]") {
    bulwark::InMemoryQueueStore store;
    const bulwark::WallTime t0{std::chrono::seconds(1000)};
    store.push({"msg-0123456789abcdef", "p1", t0, t0});
    store.push({"m2", "p2", t0 + 1s, t0});
    CHECK_THROWS_AS(store.push({"m2", "again", t0, t0}), std::invalid_argument);
    CHECK(store.get("msg-0123456789abcdef")->payload == "p1");
    CHECK(store.get("msg-0123456789abcdef")->id == "msg-0123456789abcdef");
    CHECK_FALSE(store.get("nobody"));

    auto first = store.claim(t0, 10, 30s);
    REQUIRE(first.size() == 1);  // m2 is not due yet
    CHECK(first[0].id == "msg-0123456789abcdef");
    CHECK(first[0].claims == 1);
    CHECK(first[0].lease_until == t0 + 30s);
    CHECK(store.stats().leased == 1);
    CHECK_FALSE(store.complete(first[0].id, first[0].lease + 1));
    CHECK(store.extend(first[0].id, first[0].lease, t0 + 60s));
    CHECK(store.next_ready() == t0 + 1s);

    auto second = store.claim(t0 + 1s, 10, 30s);
    REQUIRE(second.size() == 1);
    CHECK(second[0].id == "m2");
    bulwark::QueuedMessage back = second[0];
    back.payload = "p2'";
    back.due = t0 + 5s;
    back.attempts = 1;
    CHECK(store.release(back));
    CHECK_FALSE(store.release(back));  // the lease ended
    CHECK(store.stats().leased == 1);
    const auto listed = store.list(10);
    REQUIRE(listed.size() == 2);
    CHECK(listed[0].id == "m2");  // due at t0 + 5 s, before the extended lease's end
    CHECK(listed[0].payload == "p2'");
    CHECK(listed[0].attempts == 1);
    CHECK(listed[0].lease == 0);
    CHECK(listed[1].id == "msg-0123456789abcdef");

    // The extended lease runs out: claimed again under a new token; the old one is stale.
    auto again = store.claim(t0 + 60s, 1, 30s);
    REQUIRE(again.size() == 1);
    CHECK(again[0].id == "m2");
    again = store.claim(t0 + 60s, 1, 30s);
    REQUIRE(again.size() == 1);
    CHECK(again[0].id == "msg-0123456789abcdef");
    CHECK(again[0].claims == 2);
    CHECK_FALSE(store.complete(first[0].id, first[0].lease));
    CHECK(store.complete(again[0].id, again[0].lease));
    CHECK(store.remove("m2"));
    CHECK_FALSE(store.remove("m2"));
    CHECK(store.size() == 0);
    CHECK(store.stats().leased == 0);
    CHECK_FALSE(store.next_ready());
}

TEST_CASE("DeliveryEngine: message ids are 'msg-' and 11 base-62 digits, distinct", "[delivery]") {
    // 15 characters: a std::string holds them without allocating, in every copy the engine,
    // its queue store and its records make.
    CHECK(bulwark::detail::format_short_id("msg-", 0) == "msg-00000000000");
    CHECK(bulwark::detail::format_short_id("msg-", 61) == "msg-0000000000z");
    CHECK(bulwark::detail::format_short_id("msg-", ~std::uint64_t{0}) == "msg-LygHa16AHYF");

    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq;
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, manual(), clock);
    Provider email("email");
    engine.add_channel("email", email);
    std::vector<std::string> ids;
    for (int i = 0; i < 2000; ++i) {
        ids.push_back(engine.submit("m", {"email"}));
    }
    for (const std::string& id : ids) {
        REQUIRE(id.size() == 15);
        CHECK(id.compare(0, 4, "msg-") == 0);
        CHECK(std::all_of(id.begin() + 4, id.end(), [](char c) {
            return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
        }));
    }
    std::sort(ids.begin(), ids.end());
    CHECK(std::adjacent_find(ids.begin(), ids.end()) == ids.end());
}

TEST_CASE("DeliveryEngine: a forgotten record's reuse carries nothing into the next message",
          "[delivery]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq;
    DeliveryEngineOptions o = manual(1);
    o.max_tracked = 2;  // every finish beyond the second forgets a record, whose node is reused
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, o, clock);
    Provider email("email");
    email.kind = DeliveryErrorKind::permanent;
    engine.add_channel("email", email);
    for (int i = 0; i < 40; ++i) {
        const bool fail = i % 3 == 0;
        email.down = fail;
        const std::string id = engine.submit("m" + std::to_string(i), {"email"});
        const auto queued = engine.info(id);
        REQUIRE(queued);
        CHECK(queued->status == MessageStatus::queued);
        CHECK(queued->passes == 0);
        CHECK(queued->external_id.empty());
        CHECK(queued->dead_letter_id.empty());
        CHECK(queued->error.empty());
        CHECK(queued->channel.empty());
        CHECK(queued->since[static_cast<std::size_t>(MessageStatus::sent)] == bulwark::WallTime{});
        CHECK(engine.attempts(id).empty());
        engine.run_due();
        const auto done = engine.info(id);
        REQUIRE(done);
        const auto attempts = engine.attempts(id);
        REQUIRE(attempts.size() == 1);
        CHECK(attempts[0].number == 1);
        if (fail) {
            CHECK(done->status == MessageStatus::dead_lettered);
            CHECK_FALSE(done->dead_letter_id.empty());
            CHECK(done->external_id.empty());
        } else {
            CHECK(done->status == MessageStatus::sent);
            CHECK(done->dead_letter_id.empty());
            CHECK(done->error.empty());
            CHECK(done->external_id == attempts[0].external_id);
            CHECK(engine.confirm(done->external_id, MessageStatus::delivered));
        }
    }
}

TEST_CASE("DeliveryEngine: error texts pass through the redactor before they are recorded",
          "[delivery]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq;
    DeliveryEngineOptions o = manual(1);
    o.redact = bulwark::redact_defaults();
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, o, clock);
    engine.add_channel("email", [](const std::string&) -> Receipt {
        throw DeliveryError(DeliveryErrorKind::permanent, "mailbox jane@example.com is full");
    });
    const std::string id = engine.submit("card 4111111111111111", {"email"});
    engine.run_due();
    REQUIRE(engine.status(id) == MessageStatus::dead_lettered);
    const auto masked = [](const std::string& text) {
        INFO(text);
        CHECK(text.find("jane@example.com") == std::string::npos);
        CHECK(text.find("mailbox") != std::string::npos);
    };
    masked(engine.attempts(id).at(0).error);
    masked(dlq.get(id)->error);
    masked(dlq.get(id)->attempts.at(0).error);
    // The payload is what a redrive resends: kept as it was.
    CHECK(dlq.get(id)->payload.find("4111111111111111") != std::string::npos);

    SECTION("a redactor that throws withholds the text") {
        DeliveryEngineOptions t = manual(1);
        t.redact = [](std::string_view) -> std::string {
            throw std::runtime_error("no");
        };
        DeliveryEngine<std::string> strict(FallbackRules{}, dlq, t, clock);
        strict.add_channel("email", [](const std::string&) -> Receipt {
            throw DeliveryError(DeliveryErrorKind::permanent, "secret@example.com");
        });
        const std::string other = strict.submit("y", {"email"});
        strict.run_due();
        const std::string error = strict.attempts(other).at(0).error;
        CHECK(error.find("secret") == std::string::npos);
        CHECK(error.find("withheld") != std::string::npos);
    }
}

TEST_CASE("DeliveryEngine: a dead letter is redriven with an edited payload under its message id",
          "[delivery]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq;
    DeliveryEngine<int> engine(FallbackRules{}, dlq, manual(1), clock);
    engine.codec([](const int& n) { return std::to_string(n); },
                 [](std::string_view s) { return std::stoi(std::string(s)); });
    std::vector<int> sent;
    bool down = true;
    engine.add_channel("sms", [&](const int& n) -> Receipt {
        if (down) {
            throw DeliveryError(DeliveryErrorKind::transient, "down");
        }
        sent.push_back(n);
        return Receipt{"p", "r", 0.0, false};
    });
    const std::string id = engine.submit(7, {"sms"});
    engine.run_due();
    REQUIRE(engine.status(id) == MessageStatus::dead_lettered);
    down = false;
    CHECK_THROWS_WITH(engine.reprocess_dead_letter_with(id, "not a number"),
                      Catch::Contains("reprocess_dead_letter_with: payload"));
    CHECK_THROWS_AS(engine.reprocess_dead_letter_with(id, "8", {"fax"}), std::invalid_argument);
    CHECK(dlq.get(id)->status == bulwark::DeadLetterStatus::pending);  // refused: nothing changed
    CHECK(engine.reprocess_dead_letter_with(id, "8"));
    CHECK_FALSE(engine.reprocess_dead_letter_with(id, "9"));  // no longer pending
    engine.drain(1min);
    CHECK(engine.status(id) == MessageStatus::sent);
    CHECK(sent == std::vector<int>{8});
    CHECK(dlq.get(id)->payload == "7");
}

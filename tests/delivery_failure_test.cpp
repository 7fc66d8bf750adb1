// DeliveryEngine when the stores or the caller misbehave: a queue store that throws, a
// dead-letter store that refuses, redrives after stop() or by another engine, undecodable
// redrives, retention of redriven messages, stop() from a worker. Nothing may be lost or stuck.
#include <atomic>
#include <chrono>
#include <future>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <bulwark/delivery.hpp>
#include <bulwark/in_memory_dead_letter_store.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using bulwark::DeadLetterQuery;
using bulwark::DeadLetterReason;
using bulwark::DeadLetterStatus;
using bulwark::DeliveryEngine;
using bulwark::DeliveryEngineOptions;
using bulwark::DeliveryError;
using bulwark::DeliveryErrorKind;
using bulwark::FallbackRules;
using bulwark::ManualClock;
using bulwark::MessageStatus;
using bulwark::QueuedMessage;
using bulwark::Receipt;

namespace {

DeliveryEngineOptions manual(std::uint32_t passes = 3) {
    DeliveryEngineOptions o;
    o.workers = 0;
    o.max_passes = passes;
    o.backoff = bulwark::Backoff::fixed(10s);
    return o;
}

// An InMemoryQueueStore whose release() and complete() throw when told to.
struct FlakyStore : bulwark::QueueStore {
    bulwark::InMemoryQueueStore inner;
    int fail_release = 0;
    int fail_complete = 0;
    void push(const QueuedMessage& m) override { inner.push(m); }
    void push_all(const std::vector<QueuedMessage>& m) override { inner.push_all(m); }
    std::vector<QueuedMessage> claim(bulwark::WallTime now, std::size_t max,
                                     bulwark::Duration lease) override {
        return inner.claim(now, max, lease);
    }
    bool complete(std::string_view id, std::uint64_t lease) override {
        if (fail_complete > 0) {
            --fail_complete;
            throw std::runtime_error("disk full (complete)");
        }
        return inner.complete(id, lease);
    }
    bool release(const QueuedMessage& m) override {
        if (fail_release > 0) {
            --fail_release;
            throw std::runtime_error("disk full (release)");
        }
        return inner.release(m);
    }
    bool extend(std::string_view id, std::uint64_t lease, bulwark::WallTime until) override {
        return inner.extend(id, lease, until);
    }
    bool remove(std::string_view id) override { return inner.remove(id); }
    std::optional<QueuedMessage> get(std::string_view id) const override { return inner.get(id); }
    std::size_t size() const override { return inner.size(); }
    std::optional<bulwark::WallTime> next_ready() const override { return inner.next_ready(); }
    std::vector<QueuedMessage> list(std::size_t limit) const override { return inner.list(limit); }
    bulwark::QueueStoreStats stats() const override { return inner.stats(); }
};

Receipt refuse(const std::string&) {
    throw DeliveryError(DeliveryErrorKind::permanent, "bad address");
}

}  // namespace

TEST_CASE("DeliveryEngine: a release() that throws leaves the message to come back after its lease",
          "[delivery][failure]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq(1000, clock);
    FlakyStore store;
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, store, manual(5), clock);
    int calls = 0;
    bool down = true;
    engine.add_channel("email", [&](const std::string&) {
        ++calls;
        if (down) {
            throw DeliveryError(DeliveryErrorKind::transient, "down");
        }
        return Receipt{"p", "x", 0, false};
    });
    const std::string id = engine.submit("hello", {"email"});
    store.fail_release = 1;
    engine.run_due();
    CHECK(engine.status(id) == MessageStatus::queued);  // not "sending" for ever
    down = false;
    clock.advance(engine.options().lease);
    engine.run_due();
    CHECK(calls == 2);
    CHECK(engine.status(id) == MessageStatus::sent);
    CHECK(store.size() == 0);
    CHECK(engine.drain(1s));
}

TEST_CASE("DeliveryEngine: a complete() that throws after the dead-letter add buries it once",
          "[delivery][failure]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq(1000, clock);
    FlakyStore store;
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, store, manual(1), clock);
    int calls = 0;
    engine.add_channel("email", [&](const std::string& m) {
        ++calls;
        return refuse(m);
    });
    const std::string id = engine.submit("hello", {"email"});
    store.fail_complete = 1;
    engine.run_due();
    CHECK(engine.status(id) == MessageStatus::dead_lettered);
    CHECK(store.size() == 1);  // still leased
    clock.advance(engine.options().lease);
    engine.run_due();  // the ledger completes the copy without another call
    CHECK(calls == 1);
    CHECK(store.size() == 0);
    CHECK(dlq.size() == 1);
    CHECK(engine.counters().duplicates_suppressed == 1);
}

TEST_CASE("DeliveryEngine: after stop(), a redrive is refused and the letter stays pending",
          "[delivery][failure]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq(1000, clock);
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, manual(1), clock);
    engine.add_channel("email", refuse);
    const std::string id = engine.submit("hello", {"email"});
    engine.run_due();
    CHECK(engine.stop().empty());
    CHECK_THROWS_AS(engine.reprocess_dead_letter(id), bulwark::QueueStoppedError);
    CHECK_THROWS_AS(engine.run_due(), bulwark::QueueStoppedError);
    CHECK_THROWS_AS(engine.drain(1s), bulwark::QueueStoppedError);
    CHECK(dlq.get(id)->status == DeadLetterStatus::pending);
}

TEST_CASE("DeliveryEngine: an undecodable redriven message gets a letter of its own",
          "[delivery][failure]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq(1000, clock);
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, manual(1), clock);
    bool poison = false;
    engine.codec([](const std::string& s) { return s; },
                 [&](std::string_view b) {
                     if (poison) {
                         throw std::runtime_error("decoder v2 cannot read this");
                     }
                     return std::string(b);
                 });
    engine.add_channel("email", refuse);
    const std::string id = engine.submit("hello", {"email"});
    engine.run_due();
    REQUIRE(engine.reprocess_dead_letter(id));
    poison = true;
    engine.run_due();
    CHECK(engine.queue().size() == 0);
    const auto pending = dlq.list(DeadLetterQuery{}.status(DeadLetterStatus::pending));
    REQUIRE(pending.size() == 1);
    CHECK(pending[0].id == id + "~2");
    CHECK(pending[0].error.find("decoder v2") != std::string::npos);
    CHECK(dlq.get(id)->status == DeadLetterStatus::reprocessed);
}

TEST_CASE("DeliveryEngine: a message the dead-letter store cannot hold is refused at submit",
          "[delivery][failure]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStoreOptions o;
    o.max_payload_bytes = 16;
    bulwark::InMemoryDeadLetterStore dlq(o, clock);
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, manual(1), clock);
    engine.add_channel("email", refuse);
    CHECK_THROWS_WITH(engine.submit(std::string(100, 'x'), {"email"}),
                      Catch::Contains("max_payload_bytes (16)"));
    CHECK(engine.queue().size() == 0);
}

TEST_CASE("DeliveryEngine: while the dead-letter store refuses, only the add is retried",
          "[delivery][failure]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq(1, clock);  // full with one pending letter
    bulwark::DeadLetter blocker;
    blocker.id = "blocker";
    blocker.payload = "b";
    dlq.add(blocker);
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, manual(1), clock);
    int calls = 0;
    engine.add_channel("email", [&](const std::string& m) {
        ++calls;
        return refuse(m);
    });
    const std::string id = engine.submit("hello", {"email"});
    for (int i = 0; i < 6; ++i) {
        engine.run_due();
        clock.advance(1min);
    }
    CHECK(calls == 1);
    CHECK(engine.status(id) == MessageStatus::queued);
    CHECK(engine.counters().dead_letter_failures >= 3);
    CHECK(dlq.dismiss(DeadLetterQuery{}.id("blocker"), "in the way") == 1);  // evictable now
    clock.advance(5min);
    engine.run_due();
    CHECK(calls == 1);
    CHECK(engine.status(id) == MessageStatus::dead_lettered);
    REQUIRE(dlq.get(id));
    CHECK(dlq.get(id)->reason == DeadLetterReason::not_retryable);
    CHECK(dlq.get(id)->error == "bad address");
}

TEST_CASE(
    "DeliveryEngine: a fallback's permanent failure does not bury a message whose primary "
    "may recover",
    "[delivery][failure]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq(1000, clock);
    FallbackRules rules;
    rules.set("email", {{"sms"}, bulwark::Selection::priority, 0});
    DeliveryEngine<std::string> engine(rules, dlq, manual(5), clock);
    engine.add_channel("email", [](const std::string&) -> Receipt {
        throw DeliveryError(DeliveryErrorKind::transient, "503");
    });
    engine.add_channel("sms", [](const std::string&) -> Receipt {
        throw DeliveryError(DeliveryErrorKind::permanent, "no phone number");
    });
    const std::string id = engine.submit("hello", {"email"});
    engine.run_due();
    CHECK(engine.status(id) == MessageStatus::queued);
    CHECK(dlq.size() == 0);
}

TEST_CASE("DeliveryEngine: a redrive touches only the engine's own letters",
          "[delivery][failure]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq(1000, clock);
    bulwark::DeadLetter other;
    other.id = "order-42";
    other.type = "orders";
    other.payload = "x";
    dlq.add(other);
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, manual(1), clock);
    engine.add_channel("email", [](const std::string&) { return Receipt{}; });
    const auto r = engine.reprocess_dead_letters(DeadLetterQuery{});
    CHECK(r.matched == 0);
    CHECK(dlq.get("order-42")->redrives == 0);
    CHECK(dlq.get("order-42")->attempts.empty());
}

TEST_CASE("DeliveryEngine: a redriven message is tracked from its latest finish",
          "[delivery][failure]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq(1000, clock);
    DeliveryEngineOptions o = manual(1);
    o.track_for = 1h;
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, o, clock);
    bool down = true;
    engine.add_channel("email", [&](const std::string& m) {
        if (down) {
            throw DeliveryError(DeliveryErrorKind::permanent, "x");
        }
        return Receipt{"p", "ext-" + m, 0, false};
    });
    const std::string id = engine.submit("a", {"email"});
    engine.run_due();  // dead-lettered at t0
    clock.advance(50min);
    down = false;
    REQUIRE(engine.reprocess_dead_letter(id));
    engine.run_due();  // sent at t0 + 50 min
    REQUIRE(engine.status(id) == MessageStatus::sent);
    CHECK(engine.attempts(id).back().number == 1);  // numbered afresh after the redrive
    clock.advance(11min);
    engine.submit("b", {"email"});
    engine.run_due();  // a finish at t0 + 61 min: the t0 entry is stale
    CHECK(engine.status(id) == MessageStatus::sent);
    CHECK(engine.confirm("ext-a", MessageStatus::delivered));
}

TEST_CASE("DeliveryEngine: a redrive whose push fails leaves the record as it was",
          "[delivery][failure]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq(1000, clock);
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, manual(1), clock);
    engine.add_channel("email", refuse);
    const std::string id = engine.submit("a", {"email"});
    engine.run_due();
    const auto before = engine.counters().entered;
    QueuedMessage dup;  // the same id queued again: the redrive's push throws
    dup.id = id;
    dup.payload = "junk";
    dup.due = clock.wall_now() + 1h;
    engine.queue().push(dup);
    CHECK_FALSE(engine.reprocess_dead_letter(id));
    CHECK(engine.counters().entered == before);
    CHECK(engine.status(id) == MessageStatus::dead_lettered);
    CHECK(engine.info(id)->channels == std::vector<std::string>{"email"});
}

TEST_CASE("DeliveryEngine: a message redriven by another engine on the same stores is sent",
          "[delivery][failure]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq(1000, clock);
    bulwark::InMemoryQueueStore queue;
    DeliveryEngine<std::string> a(FallbackRules{}, dlq, queue, manual(1), clock);
    DeliveryEngine<std::string> b(FallbackRules{}, dlq, queue, manual(1), clock);
    bool down = true;
    int sent = 0;
    auto adapter = [&](const std::string&) {
        if (down) {
            throw DeliveryError(DeliveryErrorKind::permanent, "x");
        }
        ++sent;
        return Receipt{};
    };
    a.add_channel("email", adapter);
    b.add_channel("email", adapter);
    const std::string id = a.submit("m", {"email"});
    a.run_due();
    REQUIRE(a.status(id) == MessageStatus::dead_lettered);
    down = false;
    REQUIRE(b.reprocess_dead_letter(id));
    a.run_due();  // a knows the message as dead-lettered; the redriven copy is newer
    CHECK(sent == 1);
    CHECK(a.status(id) == MessageStatus::sent);
    CHECK(queue.size() == 0);
}

TEST_CASE("DeliveryEngine: stop() from a listener on a worker is refused, not a crash",
          "[delivery][failure][threads]") {
    bulwark::InMemoryDeadLetterStore dlq;
    DeliveryEngineOptions o;
    o.workers = 1;
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, o);
    engine.add_channel("email", [](const std::string&) { return Receipt{}; });
    std::promise<bool> refused;
    engine.on_status([&](const bulwark::StatusChange& c) {
        if (c.to == MessageStatus::sent) {
            try {
                engine.stop();
                refused.set_value(false);
            } catch (const std::logic_error&) {
                refused.set_value(true);
            }
        }
    });
    engine.submit("m", {"email"});
    auto answer = refused.get_future();
    REQUIRE(answer.wait_for(30s) == std::future_status::ready);
    CHECK(answer.get());
    CHECK(engine.stop().empty());
}

TEST_CASE("DeliveryEngine: channel names are checked", "[delivery][failure]") {
    bulwark::InMemoryDeadLetterStore dlq;
    DeliveryEngine<std::string> engine(FallbackRules{}, dlq, manual());
    CHECK_THROWS_WITH(engine.add_channel("", refuse), Catch::Contains("add_channel: name"));
    CHECK_THROWS_WITH(engine.add_channel("a,b", refuse), Catch::Contains("without ','"));
    DeliveryEngineOptions o;
    o.redrive_rate = 1e-9;
    CHECK_THROWS_WITH((DeliveryEngine<std::string>(FallbackRules{}, dlq, o)),
                      Catch::Contains("DeliveryEngineOptions.redrive_rate"));
}

// RetryQueue: delivery, the retry schedule on a ManualClock, dead-lettering with the history,
// bounds, stop() in both modes, workers; durable mode on a QueueStore (leases, a restart, corrupt
// payloads) and the encoding of its state.
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <bulwark/detail/retry_queue_state.hpp>
#include <bulwark/in_memory_dead_letter_store.hpp>
#include <bulwark/in_memory_queue_store.hpp>
#include <bulwark/retry_queue.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using bulwark::DeadLetterReason;
using bulwark::ManualClock;
using bulwark::RetryOptions;
using bulwark::RetryQueue;
using bulwark::RetryQueueOptions;
using bulwark::StopMode;

namespace {

struct TransientError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Retries on a fixed schedule without jitter: 1 s, 1 s, … up to `retries` times.
RetryOptions fixed_retries(int retries, bulwark::Duration every = 1s) {
    RetryOptions o;
    o.max_retries = retries;
    o.backoff = bulwark::Backoff::fixed(every);
    return o;
}

RetryQueueOptions named(std::string name) {
    RetryQueueOptions o;
    o.name = std::move(name);
    o.type = "sms";
    return o;
}

// A handler that fails the first `failures` calls for each message, counting every call.
struct Flaky {
    std::map<std::string, int> calls;
    int failures = 0;

    void operator()(const std::string& m) {
        if (++calls[m] <= failures) {
            throw TransientError("provider down (" + m + ")");
        }
    }
};

}  // namespace

TEST_CASE("RetryQueue: a message handled on its first attempt leaves the queue", "[retry_queue]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(100, clock);
    std::vector<std::string> sent;
    RetryQueue<std::string> queue([&](const std::string& m) { sent.push_back(m); }, store,
                                  fixed_retries(3), named("q"), clock);
    const std::string id = queue.enqueue("hello");
    CHECK_FALSE(id.empty());
    CHECK(queue.size() == 1);
    CHECK(queue.run_due() == 1);
    CHECK(sent == std::vector<std::string>{"hello"});
    CHECK(queue.size() == 0);
    const bulwark::RetryQueueStats s = queue.stats();
    CHECK(s.enqueued == 1);
    CHECK(s.attempts == 1);
    CHECK(s.delivered == 1);
    CHECK(store.size() == 0);
}

TEST_CASE("RetryQueue: a failed message is retried on the backoff's schedule", "[retry_queue]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(100, clock);
    Flaky flaky;
    flaky.failures = 2;
    RetryQueue<std::string> queue(std::ref(flaky), store, fixed_retries(3, 5s), named("q"), clock);
    queue.enqueue("m");
    CHECK(queue.run_due() == 1);  // fails
    CHECK(queue.next_due() == clock.now() + 5s);
    clock.advance(4s);
    CHECK(queue.run_due() == 0);  // not due yet
    clock.advance(1s);
    CHECK(queue.run_due() == 1);  // fails again
    clock.advance(5s);
    CHECK(queue.run_due() == 1);  // delivered
    CHECK(flaky.calls["m"] == 3);
    CHECK(queue.size() == 0);
    CHECK(queue.stats().retries == 2);
    CHECK(store.size() == 0);
}

TEST_CASE("RetryQueue: exhausted retries dead-letter the message with its whole history",
          "[retry_queue]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(100, clock);
    Flaky flaky;
    flaky.failures = 100;
    RetryQueue<std::string> queue(std::ref(flaky), store, fixed_retries(2), named("sms-queue"),
                                  clock);
    const std::string id = queue.enqueue("payload bytes");
    for (int i = 0; i < 3; ++i) {
        CHECK(queue.run_due() == 1);
        clock.advance(1s);
    }
    CHECK(flaky.calls["payload bytes"] == 3);  // the first attempt and 2 retries
    CHECK(queue.size() == 0);
    const auto d = store.get(id);
    REQUIRE(d);
    CHECK(d->payload == "payload bytes");
    CHECK(d->type == "sms");
    CHECK(d->reason == DeadLetterReason::retries_exhausted);
    CHECK(d->error == "provider down (payload bytes)");
    REQUIRE(d->attempts.size() == 3);
    for (const bulwark::DeadLetterAttempt& a : d->attempts) {
        CHECK(a.channel == "sms-queue");
        CHECK(a.error == "provider down (payload bytes)");
    }
    CHECK(d->attempts[1].at - d->attempts[0].at == 1s);
    CHECK(queue.stats().dead_lettered == 1);
}

TEST_CASE("RetryQueue: an error the classifier does not retry is dead-lettered at once",
          "[retry_queue]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(100, clock);
    RetryOptions retry = fixed_retries(5);
    retry.retry_on<TransientError>();
    int calls = 0;
    RetryQueue<std::string> queue(
        [&](const std::string&) {
            ++calls;
            throw std::invalid_argument("no such phone number");
        },
        store, retry, named("q"), clock);
    const std::string id = queue.enqueue("m");
    CHECK(queue.run_due() == 1);
    CHECK(calls == 1);
    const auto d = store.get(id);
    REQUIRE(d);
    CHECK(d->reason == DeadLetterReason::not_retryable);
    CHECK(d->error == "no such phone number");
}

TEST_CASE("RetryQueue: a rejection's retry_after is honoured when later than the backoff",
          "[retry_queue]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(100, clock);
    int calls = 0;
    RetryQueue<std::string> queue(
        [&](const std::string&) {
            if (++calls == 1) {
                throw bulwark::RateLimitedError("provider rate limit", 30s);
            }
        },
        store, fixed_retries(3, 1s), named("q"), clock);
    queue.enqueue("m");
    queue.run_due();
    CHECK(queue.next_due() == clock.now() + 30s);
    clock.advance(29s);
    CHECK(queue.run_due() == 0);
    clock.advance(1s);
    CHECK(queue.run_due() == 1);
    CHECK(queue.stats().delivered == 1);
}

TEST_CASE("RetryQueue: an adapter's delivery errors decide retry, wait and reason",
          "[retry_queue]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(100, clock);
    std::map<std::string, int> calls;
    RetryQueueOptions o = named("q");
    o.classifier.on<std::domain_error>(bulwark::DeliveryErrorKind::permanent);
    RetryQueue<std::string> queue(
        [&](const std::string& m) {
            const int n = ++calls[m];
            if (m == "permanent") {
                throw bulwark::DeliveryError(bulwark::DeliveryErrorKind::permanent,
                                             "invalid number", "21211");
            }
            if (m == "bounced") {
                throw bulwark::DeliveryError(bulwark::DeliveryErrorKind::bounced, "mailbox full");
            }
            if (m == "custom") {
                throw std::domain_error("adapter says no");
            }
            if (m == "slow" && n == 1) {
                throw bulwark::DeliveryError(bulwark::DeliveryErrorKind::rate_limited, "429", "",
                                             1min);
            }
        },
        store, fixed_retries(3, 1s), o, clock);
    const std::string permanent = queue.enqueue("permanent");
    const std::string bounced = queue.enqueue("bounced");
    const std::string custom = queue.enqueue("custom");
    queue.enqueue("slow");
    CHECK(queue.run_due() == 4);
    REQUIRE(store.get(permanent));
    CHECK(store.get(permanent)->reason == DeadLetterReason::not_retryable);
    CHECK(store.get(permanent)->error == "invalid number (code 21211)");
    CHECK(store.get(bounced)->reason == DeadLetterReason::rejected);
    CHECK(store.get(custom)->reason == DeadLetterReason::not_retryable);
    CHECK(calls["permanent"] == 1);
    CHECK(queue.next_due() == clock.now() + 1min);  // the provider's wait, not the 1 s backoff
    clock.advance(1min);
    CHECK(queue.run_due() == 1);
    CHECK(queue.size() == 0);
}

TEST_CASE("RetryQueue: max_elapsed ends the retries", "[retry_queue]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(100, clock);
    RetryOptions retry = fixed_retries(100, 10s);
    retry.max_elapsed = 25s;
    RetryQueue<std::string> queue([](const std::string&) { throw TransientError("down"); }, store,
                                  retry, named("q"), clock);
    const std::string id = queue.enqueue("m");
    for (int i = 0; i < 3; ++i) {  // at 0 s, 10 s and 20 s; the next would pass 25 s
        CHECK(queue.run_due() == 1);
        clock.advance(10s);
    }
    CHECK(queue.size() == 0);
    REQUIRE(store.get(id));
    CHECK(store.get(id)->attempts.size() == 3);
}

TEST_CASE("RetryQueue: enqueue_at waits for its time", "[retry_queue]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(100, clock);
    std::vector<std::string> sent;
    RetryQueue<std::string> queue([&](const std::string& m) { sent.push_back(m); }, store,
                                  fixed_retries(1), named("q"), clock);
    queue.enqueue_at("later", clock.now() + 1h);
    queue.enqueue("now");
    CHECK(queue.run_due() == 1);
    CHECK(sent == std::vector<std::string>{"now"});
    clock.advance(1h);
    CHECK(queue.run_due() == 1);
    CHECK(sent == std::vector<std::string>{"now", "later"});
}

TEST_CASE("RetryQueue: a full queue refuses enqueue and drops nothing", "[retry_queue]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(100, clock);
    RetryQueueOptions o = named("small");
    o.max_size = 2;
    RetryQueue<std::string> queue([](const std::string&) {}, store, fixed_retries(1), o, clock);
    queue.enqueue("a");
    queue.enqueue("b");
    try {
        queue.enqueue("c");
        FAIL("a full queue accepted a message");
    } catch (const bulwark::QueueFullError& e) {
        CHECK(e.source() == "small");
        CHECK_THAT(e.what(), BULWARK_CATCH_MESSAGE_CONTAINS("max_size 2"));
    }
    CHECK(queue.size() == 2);
    CHECK(queue.stats().rejected_full == 1);
    CHECK(queue.run_due() == 2);
    CHECK_NOTHROW(queue.enqueue("c"));
}

TEST_CASE("RetryQueue: a dead-letter store that refuses keeps the message here until it accepts",
          "[retry_queue]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(1, clock);
    bulwark::DeadLetter blocker;
    blocker.id = "blocker";
    blocker.type = "sms";
    store.add(blocker);  // pending: the store is full and cannot evict
    RetryQueue<std::string> queue([](const std::string&) { throw TransientError("down"); }, store,
                                  fixed_retries(0), named("q"), clock);
    const std::string id = queue.enqueue("m");
    CHECK(queue.run_due() == 1);  // exhausted at once; the store refuses
    CHECK(queue.size() == 1);
    CHECK(queue.stats().dead_letter_failures == 1);
    store.dismiss(bulwark::DeadLetterQuery{}.id("blocker"));  // now evictable
    clock.advance(1s);
    CHECK(queue.run_due() == 1);  // the add again, not the handler
    CHECK(queue.size() == 0);
    REQUIRE(store.get(id));
    CHECK(store.get(id)->attempts.size() == 1);
    CHECK(queue.stats().attempts == 1);
}

TEST_CASE("RetryQueue: stop(persist) hands back every message not yet delivered, in order",
          "[retry_queue]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(100, clock);
    RetryQueue<std::string> queue([](const std::string&) {}, store, fixed_retries(1), named("q"),
                                  clock);
    queue.enqueue_at("second", clock.now() + 2s);
    queue.enqueue_at("first", clock.now() + 1s);
    queue.enqueue_at("third", clock.now() + 3s);
    const std::vector<std::string> left = queue.stop(StopMode::persist);
    CHECK(left == std::vector<std::string>{"first", "second", "third"});
    CHECK(queue.size() == 0);
    CHECK(queue.stats().returned == 3);
    CHECK_THROWS_AS(queue.enqueue("late"), bulwark::QueueStoppedError);
    CHECK(queue.stop().empty());
}

TEST_CASE("RetryQueue: stop(drain) delivers what is due and hands back the rest", "[retry_queue]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(100, clock);
    std::vector<std::string> sent;
    RetryQueue<std::string> queue([&](const std::string& m) { sent.push_back(m); }, store,
                                  fixed_retries(1), named("q"), clock);
    queue.enqueue("due");
    queue.enqueue_at("tomorrow", clock.now() + 24h);
    // The ManualClock does not move: a zero timeout ends the drain once nothing more is due.
    const std::vector<std::string> left = queue.stop(StopMode::drain, 0s);
    CHECK(sent == std::vector<std::string>{"due"});
    CHECK(left == std::vector<std::string>{"tomorrow"});
}

TEST_CASE("RetryQueue: workers deliver every message exactly once", "[retry_queue][stress]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(10000, clock);
    constexpr int producers = 4;
    constexpr int per_producer = 500;
    std::mutex m;
    std::map<std::string, int> delivered;
    std::atomic<int> calls{0};
    RetryQueueOptions o = named("q");
    o.workers = 4;
    RetryQueue<std::string> queue(
        [&](const std::string& msg) {
            // Every third first attempt fails; its retry is due at once (zero backoff).
            if (++calls % 3 == 0) {
                std::lock_guard<std::mutex> lock(m);
                if (delivered.count(msg + "#failed") == 0) {
                    delivered[msg + "#failed"] = 1;
                    throw TransientError("flaky");
                }
            }
            std::lock_guard<std::mutex> lock(m);
            ++delivered[msg];
        },
        store, fixed_retries(5, 0s), o, clock);
    std::vector<std::thread> threads;
    for (int p = 0; p < producers; ++p) {
        threads.emplace_back([&, p] {
            for (int i = 0; i < per_producer; ++i) {
                queue.enqueue("p" + std::to_string(p) + "-" + std::to_string(i));
            }
        });
    }
    for (std::thread& t : threads) {
        t.join();
    }
    // Everything is due now (the clock stands still): the drain ends once all is delivered.
    CHECK(queue.stop(StopMode::drain, 1h).empty());
    int messages = 0;
    for (const auto& entry : delivered) {
        if (entry.first.find('#') == std::string::npos) {
            ++messages;
            CHECK(entry.second == 1);
        }
    }
    CHECK(messages == producers * per_producer);
    CHECK(queue.stats().delivered == std::uint64_t{producers} * per_producer);
    CHECK(store.size() == 0);
}

TEST_CASE("RetryQueue: run_due handles what was due when called, a zero-backoff retry later",
          "[retry_queue]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(100, clock);
    int calls = 0;
    RetryQueue<std::string> queue(
        [&](const std::string&) {
            ++calls;
            throw TransientError("down");
        },
        store, fixed_retries(5, 0s), named("q"), clock);
    queue.enqueue("m");
    CHECK(queue.run_due() == 1);
    CHECK(queue.run_due() == 1);
    CHECK(calls == 2);
}

TEST_CASE("RetryQueue: a zero-backoff retry cannot crowd out another message due at the call",
          "[retry_queue]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(100, clock);
    std::vector<std::string> calls;
    RetryQueue<std::string> queue(
        [&](const std::string& m) {
            calls.push_back(m);
            if (m == "A") {
                throw TransientError("down");
            }
        },
        store, fixed_retries(1000, 0s), named("q"), clock);
    queue.enqueue("A");
    queue.enqueue("B");
    CHECK(queue.run_due() == 2);
    CHECK(calls == std::vector<std::string>{"A", "B"});
}

TEST_CASE("RetryQueue: a classifier may read the queue (it runs without the queue's lock)",
          "[retry_queue]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(100, clock);
    RetryQueue<std::string>* self = nullptr;
    std::size_t seen = 0;
    RetryOptions retry = fixed_retries(1);
    retry.retry_if([&](const std::exception_ptr&) {
        seen = self->size();  // would deadlock under the lock
        return true;
    });
    RetryQueue<std::string> queue([](const std::string&) { throw TransientError("down"); }, store,
                                  retry, named("q"), clock);
    self = &queue;
    queue.enqueue("m");
    CHECK(queue.run_due() == 1);
    CHECK(seen == 1);
}

TEST_CASE("RetryQueue: max_elapsed counts from the first attempt, not the scheduled time",
          "[retry_queue]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(100, clock);
    RetryOptions retry = fixed_retries(5, 1s);
    retry.max_elapsed = 10s;
    RetryQueue<std::string> queue([](const std::string&) { throw TransientError("down"); }, store,
                                  retry, named("q"), clock);
    queue.enqueue("m");
    clock.advance(1min);  // a backlog: the first attempt comes a minute late
    CHECK(queue.run_due() == 1);
    CHECK(queue.size() == 1);  // retried, not dead-lettered for the minute it waited
}

TEST_CASE("RetryQueue: a classification that throws dead-letters the message, never loops",
          "[retry_queue]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(100, clock);
    RetryQueueOptions o = named("q");
    o.classifier.on_if(
        [](const std::exception_ptr&) -> bool { throw std::runtime_error("predicate bug"); },
        bulwark::DeliveryErrorKind::permanent);
    int calls = 0;
    RetryQueue<std::string> queue(
        [&](const std::string&) {
            ++calls;
            throw TransientError("down");
        },
        store, fixed_retries(5), o, clock);
    const std::string id = queue.enqueue("m");
    CHECK(queue.run_due() == 1);
    CHECK(calls == 1);
    REQUIRE(store.get(id));
    CHECK(store.get(id)->reason == DeadLetterReason::not_retryable);
    CHECK_THAT(store.get(id)->error, BULWARK_CATCH_MESSAGE_CONTAINS("classification threw"));
}

TEST_CASE("RetryQueue: the history fits the store; a letter the store can never take is kept",
          "[retry_queue]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(100, clock);
    const std::string long_error(1000, 'e');
    RetryQueue<std::string> queue([&](const std::string&) { throw TransientError(long_error); },
                                  store, fixed_retries(70, 0s), named("q"), clock);
    const std::string id = queue.enqueue("m");
    for (int i = 0; i < 71; ++i) {
        queue.run_due();
    }
    REQUIRE(store.get(id));  // 71 attempts of 1000-byte errors, fitted to the store's limits
    CHECK(store.get(id)->attempts.size() <= store.limits().max_attempts);
    // A payload over the store's limit: refused for good, held until stop() hands it back.
    bulwark::InMemoryDeadLetterStoreOptions small;
    small.max_payload_bytes = 8;
    bulwark::InMemoryDeadLetterStore tiny(small, clock);
    RetryQueue<std::string> big([](const std::string&) { throw TransientError("down"); }, tiny,
                                fixed_retries(0), named("q"), clock);
    big.enqueue(std::string(100, 'p'));
    CHECK(big.run_due() == 1);
    CHECK(big.stats().parked == 1);
    CHECK(big.next_due() == std::nullopt);
    CHECK(big.stop(StopMode::drain, 1h) == std::vector<std::string>{std::string(100, 'p')});
}

TEST_CASE("RetryQueue: stop() with workers always returns", "[retry_queue][stress]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(100, clock);
    RetryQueueOptions o = named("q");
    o.workers = 1;
    for (int trial = 0; trial < 200; ++trial) {
        RetryQueue<std::string> queue([](const std::string&) {}, store, fixed_retries(1), o, clock);
        for (int i = 0; i < 4; ++i) {
            queue.enqueue("m" + std::to_string(i));
        }
        const std::vector<std::string> left =
            queue.stop(trial % 2 == 0 ? StopMode::persist : StopMode::drain, 0s);
        CHECK(left.size() + queue.stats().delivered == 4);
    }
}

TEST_CASE("RetryQueue: options and arguments are checked by name", "[retry_queue]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(10, clock);
    const auto handler = [](const std::string&) {
    };
    RetryQueueOptions o;
    o.max_size = 0;
    CHECK_THROWS_WITH(RetryQueue<std::string>(handler, store, {}, o, clock),
                      BULWARK_CATCH_MESSAGE_CONTAINS("RetryQueueOptions.max_size"));
    o = RetryQueueOptions{};
    o.workers = 1000;
    CHECK_THROWS_WITH(RetryQueue<std::string>(handler, store, {}, o, clock),
                      BULWARK_CATCH_MESSAGE_CONTAINS("RetryQueueOptions.workers"));
    o = RetryQueueOptions{};
    o.type.clear();
    CHECK_THROWS_WITH(RetryQueue<std::string>(handler, store, {}, o, clock),
                      BULWARK_CATCH_MESSAGE_CONTAINS("RetryQueueOptions.type"));
    CHECK_THROWS_WITH(RetryQueue<std::string>({}, store, {}, RetryQueueOptions{}, clock),
                      BULWARK_CATCH_MESSAGE_CONTAINS("empty handler"));
    RetryOptions budgeted;
    budgeted.budget = bulwark::RetryBudget::shared(0.1, 10);
    CHECK_THROWS_WITH(RetryQueue<std::string>(handler, store, budgeted, RetryQueueOptions{}, clock),
                      BULWARK_CATCH_MESSAGE_CONTAINS("RetryOptions.budget"));
    struct Order {
        int number = 0;
    };
    CHECK_THROWS_WITH(RetryQueue<Order>([](const Order&) {}, store, {}, RetryQueueOptions{}, clock),
                      BULWARK_CATCH_MESSAGE_CONTAINS("needs an encoder"));
    RetryQueue<Order> orders([](const Order&) { throw TransientError("down"); }, store,
                             fixed_retries(0), RetryQueueOptions{}, clock,
                             [](const Order& order) { return std::to_string(order.number); });
    const std::string id = orders.enqueue(Order{42});
    orders.run_due();
    REQUIRE(store.get(id));
    CHECK(store.get(id)->payload == "42");
}

namespace {

// The retry state a durable queue keeps in the store for message `id`.
struct Stored {
    bulwark::QueuedMessage message;
    bulwark::detail::RetryQueueState state;
    std::string bytes;
};

Stored stored(const bulwark::QueueStore& store, const std::string& id) {
    Stored s;
    const auto m = store.get(id);
    REQUIRE(m);
    s.message = *m;
    REQUIRE(bulwark::detail::decode_retry_queue_state(m->payload, s.state, s.bytes) == nullptr);
    return s;
}

// A QueueStore that forwards to an InMemoryQueueStore and fails complete() on demand: a process
// that dies between its dead-letter add and its complete().
class FailingQueueStore final : public bulwark::QueueStore {
public:
    void push(const bulwark::QueuedMessage& m) override { inner.push(m); }
    std::vector<bulwark::QueuedMessage> claim(bulwark::WallTime now, std::size_t max,
                                              bulwark::Duration lease_for) override {
        return inner.claim(now, max, lease_for);
    }
    bool complete(std::string_view id, std::uint64_t lease) override {
        if (fail_completes > 0) {
            --fail_completes;
            throw std::runtime_error("disk gone");
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

    bulwark::InMemoryQueueStore inner;
    int fail_completes = 0;  // the next n complete() calls throw (single-threaded tests only)
};

}  // namespace

TEST_CASE("RetryQueue durable: enqueue reaches the store, a delivery completes it",
          "[retry_queue][durable]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dead(100, clock);
    bulwark::InMemoryQueueStore store;
    std::vector<std::string> sent;
    RetryQueue<std::string> queue([&](const std::string& m) { sent.push_back(m); }, dead, store,
                                  fixed_retries(3), named("q"), clock);
    const std::string now_id = queue.enqueue("now");
    const std::string later_id = queue.enqueue_at("later", clock.now() + 1h);
    CHECK(store.size() == 2);
    CHECK(queue.size() == 2);
    const Stored now = stored(store, now_id);
    CHECK(now.bytes == "now");
    CHECK(now.state.attempts == 0);
    CHECK(now.message.due == clock.wall_now());
    CHECK(now.message.enqueued == clock.wall_now());
    CHECK(stored(store, later_id).message.due == clock.wall_now() + 1h);
    CHECK(queue.next_due() == clock.now());
    CHECK(queue.run_due() == 1);
    CHECK(sent == std::vector<std::string>{"now"});
    CHECK_FALSE(store.get(now_id));  // completed: gone from the store
    CHECK(store.size() == 1);
    CHECK(queue.next_due() == clock.now() + 1h);
    clock.advance(1h);
    CHECK(queue.run_due() == 1);
    CHECK(store.size() == 0);
    const bulwark::RetryQueueStats s = queue.stats();
    CHECK(s.enqueued == 2);
    CHECK(s.delivered == 2);
    CHECK(s.queued == 0);
    CHECK(s.in_flight == 0);
    CHECK(queue.next_due() == std::nullopt);
}

TEST_CASE("RetryQueue durable: a failure releases the message with its new due time and state",
          "[retry_queue][durable]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dead(100, clock);
    bulwark::InMemoryQueueStore store;
    Flaky flaky;
    flaky.failures = 2;
    RetryQueue<std::string> queue(std::ref(flaky), dead, store, fixed_retries(3, 5s),
                                  named("sms-queue"), clock);
    const std::string id = queue.enqueue("m");
    CHECK(queue.run_due() == 1);  // fails
    const Stored after = stored(store, id);
    CHECK(after.message.lease == 0);  // released, not left leased
    CHECK(after.message.due == clock.wall_now() + 5s);
    CHECK(after.message.attempts == 1);
    CHECK(after.state.attempts == 1);
    CHECK(after.state.first_try == clock.wall_now());
    CHECK(after.state.previous == 5s);
    CHECK_FALSE(after.state.dead);
    CHECK(after.state.error == "provider down (m)");
    REQUIRE(after.state.history.size() == 1);
    CHECK(after.state.history[0].channel == "sms-queue");
    CHECK(after.state.history[0].at == clock.wall_now());
    CHECK(after.bytes == "m");
    CHECK(queue.next_due() == clock.now() + 5s);
    clock.advance(4s);
    CHECK(queue.run_due() == 0);  // not due yet
    clock.advance(1s);
    CHECK(queue.run_due() == 1);  // fails again
    CHECK(stored(store, id).state.history.size() == 2);
    clock.advance(5s);
    CHECK(queue.run_due() == 1);  // delivered
    CHECK(flaky.calls["m"] == 3);
    CHECK(store.size() == 0);
    CHECK(queue.stats().retries == 2);
    CHECK(dead.size() == 0);
}

TEST_CASE(
    "RetryQueue durable: exhausted retries dead-letter the message with its history and "
    "remove it from the store",
    "[retry_queue][durable]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dead(100, clock);
    bulwark::InMemoryQueueStore store;
    Flaky flaky;
    flaky.failures = 100;
    RetryQueue<std::string> queue(std::ref(flaky), dead, store, fixed_retries(2),
                                  named("sms-queue"), clock);
    const std::string id = queue.enqueue("payload bytes");
    for (int i = 0; i < 3; ++i) {
        CHECK(queue.run_due() == 1);
        clock.advance(1s);
    }
    CHECK(flaky.calls["payload bytes"] == 3);
    CHECK(store.size() == 0);
    const auto d = dead.get(id);
    REQUIRE(d);
    CHECK(d->payload == "payload bytes");
    CHECK(d->type == "sms");
    CHECK(d->reason == DeadLetterReason::retries_exhausted);
    REQUIRE(d->attempts.size() == 3);
    CHECK(d->attempts[1].at - d->attempts[0].at == 1s);
    CHECK(d->attempts[2].channel == "sms-queue");
    CHECK(queue.stats().dead_lettered == 1);
}

TEST_CASE(
    "RetryQueue durable: a dead-letter store that refuses leaves the message in the queue "
    "store, bound for it",
    "[retry_queue][durable]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dead(1, clock);
    bulwark::DeadLetter blocker;
    blocker.id = "blocker";
    blocker.type = "sms";
    dead.add(blocker);  // pending: the store is full and cannot evict
    bulwark::InMemoryQueueStore store;
    int calls = 0;
    RetryQueue<std::string> queue(
        [&](const std::string&) {
            ++calls;
            throw TransientError("down");
        },
        dead, store, fixed_retries(0), named("q"), clock);
    const std::string id = queue.enqueue("m");
    CHECK(queue.run_due() == 1);  // exhausted at once; the dead-letter store refuses
    const Stored s = stored(store, id);
    CHECK(s.state.dead);
    CHECK(s.message.due == clock.wall_now() + 1s);
    CHECK(queue.stats().dead_letter_failures == 1);
    dead.dismiss(bulwark::DeadLetterQuery{}.id("blocker"));  // now evictable
    clock.advance(1s);
    CHECK(queue.run_due() == 1);  // the add again, not the handler
    CHECK(calls == 1);
    CHECK(store.size() == 0);
    REQUIRE(dead.get(id));
    CHECK(dead.get(id)->attempts.size() == 1);
}

TEST_CASE(
    "RetryQueue durable: a second queue on the same store picks up what the first left, "
    "a dead worker's message once its lease runs out",
    "[retry_queue][durable]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dead(100, clock);
    bulwark::InMemoryQueueStore store;
    RetryQueueOptions o = named("q");
    o.lease = 30s;
    std::string leased_id;
    std::string pending_id;
    std::string retrying_id;
    {
        RetryQueue<std::string> first(
            [](const std::string& m) {
                if (m == "retrying") {
                    throw TransientError("down");
                }
            },
            dead, store, fixed_retries(1, 10s), o, clock);
        leased_id = first.enqueue("leased");
        // A worker of the first process claims it and dies: the claim is never ended.
        const auto claimed = store.claim(clock.wall_now(), 1, 30s);
        REQUIRE(claimed.size() == 1);
        CHECK(claimed[0].id == leased_id);
        retrying_id = first.enqueue("retrying");
        CHECK(first.run_due() == 1);  // fails: due again in 10 s, one attempt in its history
        pending_id = first.enqueue_at("pending", clock.now() + 5s);
        CHECK(first.stop(StopMode::persist).empty());  // left in the store, not handed back
    }
    CHECK(store.size() == 3);
    std::vector<std::string> sent;
    RetryQueue<std::string> second(
        [&](const std::string& m) {
            sent.push_back(m);
            if (m == "retrying") {
                throw TransientError("still down");
            }
        },
        dead, store, fixed_retries(1, 10s), o, clock);
    CHECK(second.size() == 3);
    CHECK(second.next_due() == clock.now() + 5s);
    clock.advance(5s);
    CHECK(second.run_due() == 1);
    CHECK(sent == std::vector<std::string>{"pending"});
    clock.advance(5s);  // 10 s: the retry is due; the lease (30 s) has not run out
    CHECK(second.run_due() == 1);
    CHECK(sent == std::vector<std::string>{"pending", "retrying"});
    // Its second attempt was its last (max_retries 1): the history spans both processes.
    const auto d = dead.get(retrying_id);
    REQUIRE(d);
    REQUIRE(d->attempts.size() == 2);
    CHECK(d->attempts[0].error == "down");
    CHECK(d->attempts[1].error == "still down");
    CHECK(d->attempts[1].at - d->attempts[0].at == 10s);
    CHECK(second.run_due() == 0);  // the dead worker's message is still leased
    CHECK(second.next_due() == clock.now() + 20s);
    clock.advance(20s);
    CHECK(second.run_due() == 1);
    CHECK(sent == std::vector<std::string>{"pending", "retrying", "leased"});
    CHECK(store.size() == 0);
}

TEST_CASE("RetryQueue durable: stop() leaves what is left in the store", "[retry_queue][durable]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dead(100, clock);
    bulwark::InMemoryQueueStore store;
    std::vector<std::string> sent;
    SECTION("persist") {
        RetryQueue<std::string> queue([&](const std::string& m) { sent.push_back(m); }, dead, store,
                                      fixed_retries(1), named("q"), clock);
        queue.enqueue("a");
        queue.enqueue_at("b", clock.now() + 1s);
        CHECK(queue.stop(StopMode::persist).empty());
        CHECK(sent.empty());
        CHECK(store.size() == 2);
        CHECK(store.stats().leased == 0);
        CHECK(queue.stats().returned == 0);
        CHECK(queue.stats().queued == 2);
        CHECK_THROWS_AS(queue.enqueue("late"), bulwark::QueueStoppedError);
        CHECK(queue.run_due() == 0);  // stopped: claims nothing
        CHECK(store.size() == 2);
    }
    SECTION("drain") {
        RetryQueue<std::string> queue([&](const std::string& m) { sent.push_back(m); }, dead, store,
                                      fixed_retries(1), named("q"), clock);
        queue.enqueue("due");
        const std::string later = queue.enqueue_at("tomorrow", clock.now() + 24h);
        CHECK(queue.stop(StopMode::drain, 0s).empty());
        CHECK(sent == std::vector<std::string>{"due"});
        CHECK(store.size() == 1);
        CHECK(store.get(later));
    }
}

TEST_CASE(
    "RetryQueue durable: a turn that outlasts its lease completes nothing it no longer "
    "holds; the message is delivered again, not lost",
    "[retry_queue][durable]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dead(100, clock);
    bulwark::InMemoryQueueStore store;
    RetryQueueOptions o = named("q");
    o.lease = 10s;
    int calls = 0;
    std::optional<bulwark::QueuedMessage> taken;
    RetryQueue<std::string> queue(
        [&](const std::string&) {
            if (++calls == 1) {
                clock.advance(20s);  // a slow attempt: the lease runs out meanwhile
                const auto c = store.claim(clock.wall_now(), 1, 1min);  // another claimer
                REQUIRE(c.size() == 1);
                taken = c[0];
            }
        },
        dead, store, fixed_retries(1), o, clock);
    const std::string id = queue.enqueue("m");
    CHECK(queue.run_due() == 1);
    CHECK(queue.stats().lost_leases == 1);
    CHECK(queue.stats().delivered == 1);  // the handler did not throw
    REQUIRE(taken);
    CHECK(store.get(id));  // still held, by the other claimer's lease
    CHECK(store.complete(id, taken->lease));
}

TEST_CASE(
    "RetryQueue durable: a crash between the dead-letter add and complete() yields at "
    "worst a repeated add, never a loss",
    "[retry_queue][durable]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dead(100, clock);
    FailingQueueStore store;
    RetryQueueOptions o = named("q");
    o.lease = 30s;
    int calls = 0;
    RetryQueue<std::string> queue(
        [&](const std::string&) {
            ++calls;
            throw bulwark::DeliveryError(bulwark::DeliveryErrorKind::permanent, "no such number");
        },
        dead, store, fixed_retries(3), o, clock);
    const std::string id = queue.enqueue("m");
    store.fail_completes = 1;
    CHECK(queue.run_due() == 1);
    CHECK(dead.size() == 1);   // the add came first
    CHECK(store.size() == 1);  // and the message is still held, leased
    CHECK(queue.stats().store_failures == 1);
    CHECK(queue.run_due() == 0);
    clock.advance(30s);
    CHECK(queue.run_due() == 1);  // handled again after the lease
    CHECK(calls == 2);
    CHECK(dead.size() == 1);  // the same id: the repeated add is a no-op
    CHECK(store.size() == 0);
}

TEST_CASE("RetryQueue durable: a corrupt payload is dead-lettered as such, nothing crashes",
          "[retry_queue][durable]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dead(100, clock);
    bulwark::InMemoryQueueStore store;
    std::vector<std::string> sent;
    RetryQueue<std::string> queue([&](const std::string& m) { sent.push_back(m); }, dead, store,
                                  fixed_retries(1), named("q"), clock);
    const std::string good = queue.enqueue("good");
    std::string truncated = store.get(good)->payload;
    truncated.pop_back();
    store.push({"garbage", "not a payload at all", clock.wall_now()});
    store.push({"truncated", truncated, clock.wall_now()});
    CHECK(queue.run_due() == 3);
    CHECK(sent == std::vector<std::string>{"good"});
    CHECK(store.size() == 0);
    CHECK(queue.stats().corrupt == 2);
    for (const char* id : {"garbage", "truncated"}) {
        const auto d = dead.get(id);
        REQUIRE(d);
        CHECK(d->reason == DeadLetterReason::not_retryable);
        CHECK_THAT(d->error, BULWARK_CATCH_MESSAGE_CONTAINS("corrupt queue payload"));
    }
    CHECK(dead.get("garbage")->payload == "not a payload at all");
    CHECK(dead.get("truncated")->payload == truncated);
}

TEST_CASE("RetryQueue durable: a message the decoder cannot read is dead-lettered with its bytes",
          "[retry_queue][durable]") {
    struct Order {
        int number = 0;
    };
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dead(100, clock);
    bulwark::InMemoryQueueStore store;
    std::vector<int> handled;
    RetryQueue<Order> orders([&](const Order& order) { handled.push_back(order.number); }, dead,
                             store, fixed_retries(1), named("q"), clock,
                             [](const Order& o) { return std::to_string(o.number); },
                             [](const std::string& bytes) { return Order{std::stoi(bytes)}; });
    orders.enqueue(Order{42});
    bulwark::detail::RetryQueueState state;
    store.push(
        {"bad", bulwark::detail::encode_retry_queue_state(state, "forty-two"), clock.wall_now()});
    CHECK(orders.run_due() == 2);
    CHECK(handled == std::vector<int>{42});
    REQUIRE(dead.get("bad"));
    CHECK(dead.get("bad")->payload == "forty-two");
    CHECK_THAT(dead.get("bad")->error, BULWARK_CATCH_MESSAGE_CONTAINS("decoder threw"));
    CHECK(orders.stats().corrupt == 1);
    CHECK(store.size() == 0);
}

TEST_CASE("RetryQueue durable: the state's encoding round-trips and refuses what it cannot read",
          "[retry_queue][durable]") {
    bulwark::detail::RetryQueueState state;
    state.attempts = 3;
    state.first_try = bulwark::WallTime{std::chrono::seconds(1767225600)};
    state.previous = 1500ms;
    state.store_wait = 2s;
    state.stream = 0xDEADBEEFCAFEF00DULL;
    state.dead = true;
    state.reason = DeadLetterReason::rejected;
    state.error = "mailbox full";
    state.history.push_back({state.first_try, "sms", "503"});
    state.history.push_back({state.first_try + 1s, "sms", std::string("with\0nul", 8)});
    const std::string message("bytes\0and more", 14);
    const std::string payload = bulwark::detail::encode_retry_queue_state(state, message);
    bulwark::detail::RetryQueueState back;
    std::string bytes;
    REQUIRE(bulwark::detail::decode_retry_queue_state(payload, back, bytes) == nullptr);
    CHECK(bytes == message);
    CHECK(back.attempts == 3);
    CHECK(back.first_try == state.first_try);
    CHECK(back.previous == 1500ms);
    CHECK(back.store_wait == 2s);
    CHECK(back.stream == state.stream);
    CHECK(back.dead);
    CHECK_FALSE(back.parked);
    CHECK(back.reason == DeadLetterReason::rejected);
    CHECK(back.error == "mailbox full");
    REQUIRE(back.history.size() == 2);
    CHECK(back.history[1].at == state.first_try + 1s);
    CHECK(back.history[1].error == std::string("with\0nul", 8));
    // Every strict prefix, and anything after the end, is refused.
    for (std::size_t n = 0; n < payload.size(); ++n) {
        CHECK(bulwark::detail::decode_retry_queue_state(payload.substr(0, n), back, bytes) !=
              nullptr);
    }
    CHECK(bulwark::detail::decode_retry_queue_state(payload + "x", back, bytes) != nullptr);
    std::string other_version = payload;
    other_version[3] = '\x02';
    CHECK_THAT(bulwark::detail::decode_retry_queue_state(other_version, back, bytes),
               BULWARK_CATCH_MESSAGE_CONTAINS("unknown"));
    std::string bad_reason = payload;
    bad_reason[4 + 4 + 8 * 4 + 1] = '\x7f';  // the reason byte
    CHECK(bulwark::detail::decode_retry_queue_state(bad_reason, back, bytes) != nullptr);
    // A history count far beyond the bytes is refused before anything is reserved for it.
    std::string huge_count = payload;
    const std::size_t count_at = 4 + 4 + 8 * 4 + 2 + 4 + state.error.size();
    for (std::size_t i = 0; i < 4; ++i) {
        huge_count[count_at + i] = '\xff';
    }
    CHECK(bulwark::detail::decode_retry_queue_state(huge_count, back, bytes) != nullptr);
}

TEST_CASE("RetryQueue durable: options and arguments are checked by name",
          "[retry_queue][durable]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dead(10, clock);
    bulwark::InMemoryQueueStore store;
    const auto handler = [](const std::string&) {
    };
    RetryQueueOptions o;
    o.lease = 0s;
    CHECK_THROWS_WITH(RetryQueue<std::string>(handler, dead, store, {}, o, clock),
                      BULWARK_CATCH_MESSAGE_CONTAINS("RetryQueueOptions.lease"));
    o.lease = 25h;
    CHECK_THROWS_WITH(RetryQueue<std::string>(handler, dead, store, {}, o, clock),
                      BULWARK_CATCH_MESSAGE_CONTAINS("RetryQueueOptions.lease"));
    struct Order {
        int number = 0;
    };
    CHECK_THROWS_WITH(
        RetryQueue<Order>([](const Order&) {}, dead, store, {}, RetryQueueOptions{}, clock,
                          [](const Order& order) { return std::to_string(order.number); }),
        BULWARK_CATCH_MESSAGE_CONTAINS("needs a decoder"));
    // The short form: a QueueStore after the dead-letter store.
    RetryQueue<std::string> simple(handler, dead, store, fixed_retries(1), /*workers*/ 0);
    simple.enqueue("m");
    CHECK(store.size() == 1);
    o = named("small");
    o.max_size = 1;
    RetryQueue<std::string> small(handler, dead, store, {}, o, clock);
    CHECK_THROWS_AS(small.enqueue("m"), bulwark::QueueFullError);  // the store holds one already
    CHECK(small.stats().rejected_full == 1);
}

TEST_CASE("RetryQueue durable: workers deliver every message exactly once",
          "[retry_queue][durable][stress]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dead(10000, clock);
    bulwark::InMemoryQueueStore store;
    constexpr int producers = 4;
    constexpr int per_producer = 250;
    constexpr int total = producers * per_producer;
    // Counted in atomics: no assertion runs off the main thread.
    std::array<std::atomic<int>, total> delivered{};
    std::array<std::atomic<int>, total> failed{};
    std::atomic<int> calls{0};
    RetryQueueOptions o = named("q");
    o.workers = 4;
    RetryQueue<std::string> queue(
        [&](const std::string& msg) {
            const auto n = static_cast<std::size_t>(std::stoi(msg));
            // Every third first attempt fails; its retry is due at once (zero backoff).
            if (++calls % 3 == 0 && failed[n].exchange(1) == 0) {
                throw TransientError("flaky");
            }
            ++delivered[n];
        },
        dead, store, fixed_retries(5, 0s), o, clock);
    std::vector<std::thread> threads;
    for (int p = 0; p < producers; ++p) {
        threads.emplace_back([&, p] {
            for (int i = 0; i < per_producer; ++i) {
                queue.enqueue(std::to_string(p * per_producer + i));
            }
        });
    }
    for (std::thread& t : threads) {
        t.join();
    }
    // The clock stands still, so no lease runs out: exactly once.
    CHECK(queue.stop(StopMode::drain, 1h).empty());
    int once = 0;
    for (const std::atomic<int>& d : delivered) {
        once += d.load() == 1 ? 1 : 0;
    }
    CHECK(once == total);
    CHECK(store.size() == 0);
    CHECK(queue.stats().delivered == std::uint64_t{total});
    CHECK(queue.stats().lost_leases == 0);
    CHECK(dead.size() == 0);
}

// RetryQueue: delivery, the retry schedule on a ManualClock, dead-lettering with the history,
// bounds, stop() in both modes, workers.
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

#include <bulwark/in_memory_dead_letter_store.hpp>
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

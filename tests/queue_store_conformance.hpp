// The QueueStore conformance suite: every rule of the interface (include/bulwark/queue_store.hpp),
// written once and run against any store. A store's test file defines a factory that makes a
// fresh, empty store and expands the macro once:
//   std::unique_ptr<bulwark::QueueStore> make_store() {
//       return std::make_unique<bulwark::InMemoryQueueStore>();
//   }
//   BULWARK_QUEUE_STORE_CONFORMANCE("InMemoryQueueStore", make_store)
// Each rule becomes its own test case, named "<store>: <rule>" and tagged [queue_store]
// [conformance]. The store must hold at least 1000 messages of at least 4 KiB each. Times are
// explicit WallTime values: nothing here sleeps or reads a clock.
#ifndef BULWARK_TESTS_QUEUE_STORE_CONFORMANCE_HPP
#define BULWARK_TESTS_QUEUE_STORE_CONFORMANCE_HPP

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <bulwark/queue_store.hpp>

#include "catch.hpp"

namespace bulwark_test {
namespace queue_store_conformance {

using namespace std::chrono_literals;
using bulwark::Duration;
using bulwark::QueuedMessage;
using bulwark::QueueStore;
using bulwark::WallTime;

using Factory = std::function<std::unique_ptr<QueueStore>()>;

inline std::unique_ptr<QueueStore> fresh(const Factory& make) {
    std::unique_ptr<QueueStore> store = make();
    REQUIRE(store != nullptr);
    REQUIRE(store->size() == 0);
    return store;
}

// A wall time `s` seconds after an arbitrary origin (2023-11-14).
inline WallTime at(std::int64_t s) {
    return WallTime{std::chrono::seconds(1700000000 + s)};
}

inline QueuedMessage message(std::string id, WallTime due, std::string payload = "payload") {
    QueuedMessage m;
    m.id = std::move(id);
    m.payload = std::move(payload);
    m.due = due;
    m.enqueued = at(-100);
    return m;
}

inline std::vector<std::string> ids_of(const std::vector<QueuedMessage>& messages) {
    std::vector<std::string> ids;
    for (const QueuedMessage& m : messages) {
        ids.push_back(m.id);
    }
    return ids;
}

inline QueuedMessage held(const QueueStore& store, const std::string& id) {
    const std::optional<QueuedMessage> m = store.get(id);
    REQUIRE(m.has_value());
    return *m;
}

// Every field, so that two messages compare equal only when the store kept everything.
inline void check_same(const QueuedMessage& a, const QueuedMessage& b) {
    CHECK(a.id == b.id);
    CHECK(a.payload == b.payload);
    CHECK(a.due == b.due);
    CHECK(a.enqueued == b.enqueued);
    CHECK(a.attempts == b.attempts);
    CHECK(a.claims == b.claims);
    CHECK(a.lease == b.lease);
    CHECK(a.lease_until == b.lease_until);
}

inline void push_stores_the_message_without_claims_or_lease(const Factory& make) {
    auto store = fresh(make);
    QueuedMessage m = message("m-1", at(5), "bytes");
    m.attempts = 3;
    m.claims = 7;  // ignored: a pushed message starts unclaimed and unleased
    m.lease = 9;
    m.lease_until = at(50);
    store->push(m);
    CHECK(store->size() == 1);
    const QueuedMessage got = held(*store, "m-1");
    CHECK(got.id == "m-1");
    CHECK(got.payload == "bytes");
    CHECK(got.due == at(5));
    CHECK(got.enqueued == at(-100));
    CHECK(got.attempts == 3);
    CHECK(got.claims == 0);
    CHECK(got.lease == 0);
    CHECK(got.lease_until == WallTime{});
    CHECK_FALSE(store->get("m-2").has_value());
    CHECK_FALSE(store->get("").has_value());
}

inline void empty_and_duplicate_ids_are_refused(const Factory& make) {
    auto store = fresh(make);
    CHECK_THROWS_AS(store->push(message("", at(0))), std::invalid_argument);
    CHECK(store->size() == 0);
    store->push(message("order-17", at(0), "first"));
    try {
        store->push(message("order-17", at(9), "second"));
        FAIL("a duplicate id was accepted");
    } catch (const std::invalid_argument& e) {
        CHECK(std::string(e.what()).find("order-17") != std::string::npos);
    }
    CHECK(store->size() == 1);
    CHECK(held(*store, "order-17").payload == "first");
    CHECK(held(*store, "order-17").due == at(0));
    // Still refused while leased, and after a release.
    const auto batch = store->claim(at(0), 1, 30s);
    REQUIRE(batch.size() == 1);
    CHECK_THROWS_AS(store->push(message("order-17", at(0))), std::invalid_argument);
    REQUIRE(store->release(batch[0]));
    CHECK_THROWS_AS(store->push(message("order-17", at(0))), std::invalid_argument);
    CHECK(store->size() == 1);
}

inline void claim_takes_ready_messages_in_due_order(const Factory& make) {
    auto store = fresh(make);
    store->push(message("c", at(3)));
    store->push(message("a", at(1)));
    store->push(message("d", at(10)));
    store->push(message("b", at(2)));
    CHECK(store->claim(at(0), 10, 30s).empty());  // nothing due yet
    CHECK(ids_of(store->claim(at(5), 10, 30s)) == std::vector<std::string>{"a", "b", "c"});
    CHECK(ids_of(store->claim(at(9), 10, 30s)).empty());
    CHECK(ids_of(store->claim(at(10), 10, 30s)) == std::vector<std::string>{"d"});  // due == now
}

inline void ties_go_in_push_order(const Factory& make) {
    auto store = fresh(make);
    for (const char* id : {"x", "y", "z", "w"}) {
        store->push(message(id, at(1)));
    }
    const auto first = store->claim(at(1), 10, 30s);
    CHECK(ids_of(first) == std::vector<std::string>{"x", "y", "z", "w"});
    REQUIRE(first.size() == 4);
    // Released in reverse order, all due at the same time: still push order.
    for (auto it = first.rbegin(); it != first.rend(); ++it) {
        QueuedMessage m = *it;
        m.due = at(5);
        REQUIRE(store->release(m));
    }
    CHECK(ids_of(store->list()) == std::vector<std::string>{"x", "y", "z", "w"});
    CHECK(ids_of(store->claim(at(5), 10, 30s)) == std::vector<std::string>{"x", "y", "z", "w"});
}

inline void a_lease_that_runs_out_makes_the_message_ready_at_its_end(const Factory& make) {
    auto store = fresh(make);
    store->push(message("a", at(0)));
    const auto first = store->claim(at(0), 10, 30s);
    REQUIRE(first.size() == 1);
    CHECK(store->claim(at(29), 10, 30s).empty());
    store->push(message("b", at(20)));  // due before a's lease ends
    store->push(message("c", at(35)));  // due after it
    // At 40: b (ready at 20), then a (ready at 30), then c (ready at 35).
    const auto second = store->claim(at(40), 10, 30s);
    CHECK(ids_of(second) == std::vector<std::string>{"b", "a", "c"});
    REQUIRE(second.size() == 3);
    CHECK(second[1].claims == 2);
    CHECK(second[1].lease != first[0].lease);
    CHECK(second[1].lease_until == at(70));
    // The first worker's lease is stale now.
    CHECK_FALSE(store->complete("a", first[0].lease));
    CHECK(store->get("a").has_value());
}

inline void claim_returns_at_most_max(const Factory& make) {
    auto store = fresh(make);
    for (int i = 0; i < 5; ++i) {
        store->push(message("m" + std::to_string(i), at(i)));
    }
    CHECK(store->claim(at(10), 0, 30s).empty());
    CHECK(ids_of(store->claim(at(10), 2, 30s)) == std::vector<std::string>{"m0", "m1"});
    CHECK(ids_of(store->claim(at(10), 1, 30s)) == std::vector<std::string>{"m2"});
    CHECK(ids_of(store->claim(at(10), 10, 30s)) == std::vector<std::string>{"m3", "m4"});
    CHECK(store->claim(at(10), 10, 30s).empty());
    CHECK(store->stats().leased == 5);
}

inline void claim_leases_the_message(const Factory& make) {
    auto store = fresh(make);
    QueuedMessage m = message("a", at(0), "body");
    m.attempts = 2;
    store->push(m);
    const auto batch = store->claim(at(7), 1, 45s);
    REQUIRE(batch.size() == 1);
    const QueuedMessage& c = batch[0];
    CHECK(c.id == "a");
    CHECK(c.payload == "body");
    CHECK(c.attempts == 2);  // the owner's count: claim leaves it
    CHECK(c.claims == 1);
    CHECK(c.lease != 0);
    CHECK(c.lease_until == at(52));
    check_same(held(*store, "a"), c);
    CHECK(store->stats().leased == 1);
    CHECK_THROWS_AS(store->claim(at(7), 1, Duration::zero()), std::invalid_argument);
    CHECK_THROWS_AS(store->claim(at(7), 1, -1s), std::invalid_argument);
}

inline void lease_tokens_are_unique_and_never_reused(const Factory& make) {
    auto store = fresh(make);
    std::set<std::uint64_t> tokens;
    std::size_t handed = 0;
    for (int i = 0; i < 20; ++i) {
        store->push(message("m" + std::to_string(i), at(0)));
    }
    // Claims that run out, are released, completed, and ids pushed again.
    for (int round = 0; round < 10; ++round) {
        const auto batch = store->claim(at(100 * round), 100, 10s);
        CHECK(batch.size() == 20);
        for (const QueuedMessage& m : batch) {
            CHECK(m.lease != 0);
            tokens.insert(m.lease);
            ++handed;
        }
        if (round % 3 == 1) {
            for (QueuedMessage m : batch) {
                m.due = at(100 * round);
                REQUIRE(store->release(m));
            }
        } else if (round % 3 == 2) {
            for (const QueuedMessage& m : batch) {
                REQUIRE(store->complete(m.id, m.lease));
                store->push(message(m.id, at(0)));
            }
        }
    }
    CHECK(handed == 200);
    CHECK(tokens.size() == handed);
}

inline void claims_counts_every_claim(const Factory& make) {
    auto store = fresh(make);
    store->push(message("a", at(0)));
    for (std::uint32_t n = 1; n <= 4; ++n) {
        const auto batch = store->claim(at(100 * n), 1, 10s);
        REQUIRE(batch.size() == 1);
        CHECK(batch[0].claims == n);
        if (n % 2 == 0) {
            QueuedMessage m = batch[0];
            m.due = at(100 * n);
            REQUIRE(store->release(m));  // a release keeps the count
        }
        CHECK(held(*store, "a").claims == n);
    }
}

inline void complete_removes_the_message_under_its_current_lease(const Factory& make) {
    auto store = fresh(make);
    store->push(message("a", at(0)));
    store->push(message("b", at(0)));
    const auto batch = store->claim(at(0), 10, 30s);
    REQUIRE(batch.size() == 2);
    CHECK(store->complete("a", batch[0].lease));
    CHECK_FALSE(store->get("a").has_value());
    CHECK(store->size() == 1);
    CHECK(store->stats().leased == 1);
    CHECK_FALSE(store->complete("a", batch[0].lease));  // gone
    CHECK_FALSE(store->complete("b", batch[0].lease));  // another message's token
    CHECK(store->get("b").has_value());
    // A lease that ran out but was not taken again is still the current one.
    CHECK(store->complete("b", batch[1].lease));
    CHECK(store->size() == 0);
}

inline void a_stale_lease_changes_nothing(const Factory& make) {
    auto store = fresh(make);
    store->push(message("a", at(0), "original"));
    const auto first = store->claim(at(0), 1, 10s);
    REQUIRE(first.size() == 1);
    const auto second = store->claim(at(10), 1, 10s);  // the first lease ran out
    REQUIRE(second.size() == 1);
    const QueuedMessage before = held(*store, "a");
    CHECK(before.lease == second[0].lease);

    const std::uint64_t stale = first[0].lease;
    CHECK_FALSE(store->complete("a", stale));
    QueuedMessage changed = first[0];
    changed.payload = "changed";
    changed.due = at(500);
    changed.attempts = 9;
    CHECK_FALSE(store->release(changed));
    CHECK_FALSE(store->extend("a", stale, at(900)));
    for (const std::uint64_t token : {std::uint64_t{0}, second[0].lease + 1000}) {
        CHECK_FALSE(store->complete("a", token));
        changed.lease = token;
        CHECK_FALSE(store->release(changed));
        CHECK_FALSE(store->extend("a", token, at(900)));
    }
    CHECK_FALSE(store->complete("nope", second[0].lease));
    changed.id = "nope";
    changed.lease = second[0].lease;
    CHECK_FALSE(store->release(changed));
    CHECK_FALSE(store->extend("nope", second[0].lease, at(900)));
    check_same(held(*store, "a"), before);
    CHECK(store->stats().leased == 1);
    CHECK(store->size() == 1);

    // Once released, the lease that ended is stale too.
    QueuedMessage back = second[0];
    back.due = at(30);
    REQUIRE(store->release(back));
    const QueuedMessage released = held(*store, "a");
    CHECK_FALSE(store->complete("a", second[0].lease));
    CHECK_FALSE(store->release(back));
    CHECK_FALSE(store->extend("a", second[0].lease, at(900)));
    check_same(held(*store, "a"), released);
}

inline void release_stores_the_new_state_and_ends_the_lease(const Factory& make) {
    auto store = fresh(make);
    store->push(message("a", at(0), "v1"));
    const auto batch = store->claim(at(0), 1, 30s);
    REQUIRE(batch.size() == 1);
    QueuedMessage m = batch[0];
    m.payload = "v2";
    m.due = at(60);
    m.attempts = 4;
    m.enqueued = at(999);  // not the store's to change
    m.claims = 77;
    m.lease_until = at(999);
    REQUIRE(store->release(m));
    const QueuedMessage got = held(*store, "a");
    CHECK(got.payload == "v2");
    CHECK(got.due == at(60));
    CHECK(got.attempts == 4);
    CHECK(got.enqueued == at(-100));
    CHECK(got.claims == 1);
    CHECK(got.lease == 0);
    CHECK(got.lease_until == WallTime{});
    CHECK(store->stats().leased == 0);
    CHECK(store->next_ready() == at(60));
    CHECK(store->claim(at(59), 1, 30s).empty());
    const auto again = store->claim(at(60), 1, 30s);
    REQUIRE(again.size() == 1);
    CHECK(again[0].payload == "v2");
    CHECK(again[0].claims == 2);
}

inline void extend_moves_the_end_of_the_lease(const Factory& make) {
    auto store = fresh(make);
    store->push(message("a", at(0)));
    const auto batch = store->claim(at(0), 1, 30s);
    REQUIRE(batch.size() == 1);
    REQUIRE(store->extend("a", batch[0].lease, at(100)));
    const QueuedMessage got = held(*store, "a");
    CHECK(got.lease_until == at(100));
    CHECK(got.lease == batch[0].lease);  // the same lease, longer
    CHECK(got.claims == 1);
    CHECK(store->next_ready() == at(100));
    CHECK(store->claim(at(60), 1, 30s).empty());  // past the original end
    CHECK(store->complete("a", batch[0].lease));  // still current
    store->push(message("b", at(0)));
    const auto b = store->claim(at(0), 1, 30s);
    REQUIRE(b.size() == 1);
    REQUIRE(store->extend("b", b[0].lease, at(10)));  // shortened
    CHECK(ids_of(store->claim(at(10), 1, 30s)) == std::vector<std::string>{"b"});
}

inline void remove_takes_a_message_out_whatever_its_lease(const Factory& make) {
    auto store = fresh(make);
    store->push(message("a", at(0)));
    store->push(message("b", at(0)));
    const auto batch = store->claim(at(0), 1, 30s);
    REQUIRE(batch.size() == 1);
    CHECK(store->remove("a"));  // leased
    CHECK(store->remove("b"));  // not leased
    CHECK_FALSE(store->remove("a"));
    CHECK_FALSE(store->remove("never"));
    CHECK(store->size() == 0);
    CHECK(store->stats().leased == 0);
    CHECK_FALSE(store->complete("a", batch[0].lease));
    CHECK(store->claim(at(1000), 10, 30s).empty());
    store->push(message("a", at(0)));  // the id is free again
    CHECK(store->size() == 1);
}

inline void next_ready_is_the_earliest_due_or_lease_end(const Factory& make) {
    auto store = fresh(make);
    CHECK_FALSE(store->next_ready().has_value());
    store->push(message("a", at(50)));
    CHECK(store->next_ready() == at(50));
    store->push(message("b", at(30)));
    CHECK(store->next_ready() == at(30));
    const auto batch = store->claim(at(30), 1, 100s);  // b leased until 130
    REQUIRE(batch.size() == 1);
    CHECK(store->next_ready() == at(50));
    REQUIRE(store->remove("a"));
    CHECK(store->next_ready() == at(130));
    REQUIRE(store->complete("b", batch[0].lease));
    CHECK_FALSE(store->next_ready().has_value());
}

inline void list_is_in_claim_order(const Factory& make) {
    auto store = fresh(make);
    store->push(message("late", at(90)));
    store->push(message("leased", at(0)));
    store->push(message("early", at(10)));
    store->push(message("tie", at(10)));
    const auto batch = store->claim(at(0), 1, 50s);  // "leased" until 50
    REQUIRE(batch.size() == 1);
    CHECK(ids_of(store->list()) == std::vector<std::string>{"early", "tie", "leased", "late"});
    CHECK(ids_of(store->list(2)) == std::vector<std::string>{"early", "tie"});
    CHECK(store->list(0).empty());
    const auto all = store->list();
    REQUIRE(all.size() == 4);
    check_same(all[2], held(*store, "leased"));
    CHECK(ids_of(store->claim(at(100), 10, 30s)) == ids_of(all));
}

inline void stats_count_messages_and_leases(const Factory& make) {
    auto store = fresh(make);
    CHECK(store->stats().size == 0);
    CHECK(store->stats().leased == 0);
    for (int i = 0; i < 6; ++i) {
        store->push(message("m" + std::to_string(i), at(0)));
    }
    auto batch = store->claim(at(0), 4, 10s);
    REQUIRE(batch.size() == 4);
    CHECK(store->stats().size == 6);
    CHECK(store->stats().leased == 4);
    REQUIRE(store->complete(batch[0].id, batch[0].lease));
    REQUIRE(store->release(batch[1]));
    CHECK(store->stats().size == 5);
    CHECK(store->stats().leased == 2);
    // A lease that ran out still counts until it is ended or taken again.
    const auto retaken = store->claim(at(20), 10, 10s);
    CHECK(retaken.size() == 5);
    CHECK(store->stats().leased == 5);
    CHECK(store->size() == store->stats().size);
}

inline void push_all_stores_every_message(const Factory& make) {
    auto store = fresh(make);
    store->push_all({});
    CHECK(store->size() == 0);
    std::vector<QueuedMessage> batch;
    for (const char* id : {"p", "q", "r"}) {
        batch.push_back(message(id, at(1), std::string("body-") + id));
    }
    batch[1].attempts = 5;
    store->push_all(batch);
    CHECK(store->size() == 3);
    CHECK(held(*store, "q").attempts == 5);
    CHECK(held(*store, "r").payload == "body-r");
    CHECK(ids_of(store->claim(at(1), 10, 30s)) == std::vector<std::string>{"p", "q", "r"});
}

inline void push_all_stops_at_a_bad_id(const Factory& make) {
    auto store = fresh(make);
    store->push(message("held", at(0)));
    const std::vector<QueuedMessage> batch = {message("n1", at(0)), message("held", at(0)),
                                              message("n2", at(0))};
    CHECK_THROWS_AS(store->push_all(batch), std::invalid_argument);
    // The messages before the bad one may be stored (all-or-nothing stores store none); the one
    // after it never is, and the held one is untouched.
    CHECK_FALSE(store->get("n2").has_value());
    CHECK(store->size() == (store->get("n1").has_value() ? 2U : 1U));
    CHECK(held(*store, "held").due == at(0));
    const std::vector<QueuedMessage> twice = {message("d1", at(0)), message("d1", at(0))};
    CHECK_THROWS_AS(store->push_all(twice), std::invalid_argument);
    CHECK(store->size() <= 3);
    const std::vector<QueuedMessage> empty_id = {message("", at(0))};
    CHECK_THROWS_AS(store->push_all(empty_id), std::invalid_argument);
}

inline std::string binary_bytes() {
    std::string bytes;
    for (int i = 0; i < 256; ++i) {
        bytes.push_back(static_cast<char>(i));
    }
    bytes += std::string("\0\xff\0\xff", 4);
    return bytes;
}

inline void binary_and_empty_payloads_round_trip(const Factory& make) {
    auto store = fresh(make);
    const std::string bytes = binary_bytes();
    REQUIRE(bytes.size() == 260);
    store->push(message("bin", at(0), bytes));
    store->push(message("empty", at(0), ""));
    store->push_all({message("bin2", at(0), std::string("\0", 1)), message("ff", at(0), "\xff")});
    CHECK(held(*store, "bin").payload == bytes);
    CHECK(held(*store, "empty").payload.empty());
    CHECK(held(*store, "bin2").payload == std::string("\0", 1));
    CHECK(held(*store, "ff").payload == "\xff");
    const auto batch = store->claim(at(0), 10, 30s);
    REQUIRE(batch.size() == 4);
    CHECK(batch[0].payload == bytes);
    QueuedMessage m = batch[1];
    m.payload = std::string("\xff\0\xfe", 3);
    REQUIRE(store->release(m));
    CHECK(held(*store, "empty").payload == std::string("\xff\0\xfe", 3));
    QueuedMessage e = batch[0];
    e.payload.clear();
    REQUIRE(store->release(e));
    CHECK(held(*store, "bin").payload.empty());
}

// Several workers claim, release and complete at once, at one fixed time with a lease far longer
// than the test: each message must be in one worker's hands at a time and be completed exactly
// once. Failures are counted in atomics (Catch2 assertions are not thread-safe) and checked on
// the main thread.
inline void concurrent_workers_complete_every_message_once(const Factory& make) {
    auto store = fresh(make);
    constexpr int messages = 300;
    constexpr int workers = 4;
    for (int i = 0; i < messages; ++i) {
        store->push(message(std::to_string(i), at(0)));
    }
    std::vector<std::atomic<int>> in_hand(messages);
    std::vector<std::atomic<int>> completed(messages);
    std::vector<std::atomic<int>> releases(messages);
    std::atomic<int> done{0};
    std::atomic<int> double_hand{0};
    std::atomic<int> refused{0};
    std::atomic<int> errors{0};
    std::vector<std::vector<std::uint64_t>> tokens(workers);
    std::vector<std::thread> threads;
    for (int w = 0; w < workers; ++w) {
        threads.emplace_back([&, w] {
            std::mt19937 rng(static_cast<unsigned>(w) + 1U);
            try {
                for (long spins = 0; done.load() < messages && spins < 2000000; ++spins) {
                    const auto batch = store->claim(at(0), 1 + rng() % 3, 24h);
                    if (batch.empty()) {
                        std::this_thread::yield();
                        continue;
                    }
                    for (const QueuedMessage& m : batch) {
                        tokens[static_cast<std::size_t>(w)].push_back(m.lease);
                        const auto i = static_cast<std::size_t>(std::stoi(m.id));
                        if (in_hand[i].exchange(1) != 0) {
                            ++double_hand;
                        }
                        const bool again = releases[i].load() < 2 && rng() % 2 == 0;
                        in_hand[i].store(0);  // before the call: then another may claim it
                        if (again) {
                            ++releases[i];
                            QueuedMessage r = m;
                            r.attempts += 1;
                            if (!store->release(r)) {
                                ++refused;
                            }
                        } else if (store->complete(m.id, m.lease)) {
                            ++completed[i];
                            ++done;
                        } else {
                            ++refused;
                        }
                    }
                }
            } catch (...) {
                ++errors;
            }
        });
    }
    for (std::thread& t : threads) {
        t.join();
    }
    CHECK(errors.load() == 0);
    CHECK(double_hand.load() == 0);
    CHECK(refused.load() == 0);
    CHECK(done.load() == messages);
    int wrong = 0;
    for (const std::atomic<int>& c : completed) {
        wrong += c.load() != 1 ? 1 : 0;
    }
    CHECK(wrong == 0);
    CHECK(store->size() == 0);
    CHECK(store->stats().leased == 0);
    std::set<std::uint64_t> unique;
    std::size_t total = 0;
    for (const auto& list : tokens) {
        unique.insert(list.begin(), list.end());
        total += list.size();
    }
    CHECK(unique.size() == total);
    CHECK(unique.count(0) == 0);
}

}  // namespace queue_store_conformance
}  // namespace bulwark_test

#define BULWARK_QSC_CASE(store_name, factory, title, check)          \
    TEST_CASE(store_name ": " title, "[queue_store][conformance]") { \
        ::bulwark_test::queue_store_conformance::check(factory);     \
    }

// Expands to one test case per rule for the store `factory` makes (a callable
// `std::unique_ptr<bulwark::QueueStore>()`); `store_name` is a string literal.
#define BULWARK_QUEUE_STORE_CONFORMANCE(store_name, factory)                                      \
    BULWARK_QSC_CASE(store_name, factory, "push stores the message without claims or lease",      \
                     push_stores_the_message_without_claims_or_lease)                             \
    BULWARK_QSC_CASE(store_name, factory, "empty and duplicate ids are refused",                  \
                     empty_and_duplicate_ids_are_refused)                                         \
    BULWARK_QSC_CASE(store_name, factory, "claim takes ready messages in due order",              \
                     claim_takes_ready_messages_in_due_order)                                     \
    BULWARK_QSC_CASE(store_name, factory, "ties go in push order", ties_go_in_push_order)         \
    BULWARK_QSC_CASE(store_name, factory,                                                         \
                     "a lease that runs out makes the message ready at its end",                  \
                     a_lease_that_runs_out_makes_the_message_ready_at_its_end)                    \
    BULWARK_QSC_CASE(store_name, factory, "claim returns at most max", claim_returns_at_most_max) \
    BULWARK_QSC_CASE(store_name, factory, "claim leases the message", claim_leases_the_message)   \
    BULWARK_QSC_CASE(store_name, factory, "lease tokens are unique and never reused",             \
                     lease_tokens_are_unique_and_never_reused)                                    \
    BULWARK_QSC_CASE(store_name, factory, "claims counts every claim", claims_counts_every_claim) \
    BULWARK_QSC_CASE(store_name, factory, "complete removes the message under its current lease", \
                     complete_removes_the_message_under_its_current_lease)                        \
    BULWARK_QSC_CASE(store_name, factory, "a stale lease changes nothing",                        \
                     a_stale_lease_changes_nothing)                                               \
    BULWARK_QSC_CASE(store_name, factory, "release stores the new state and ends the lease",      \
                     release_stores_the_new_state_and_ends_the_lease)                             \
    BULWARK_QSC_CASE(store_name, factory, "extend moves the end of the lease",                    \
                     extend_moves_the_end_of_the_lease)                                           \
    BULWARK_QSC_CASE(store_name, factory, "remove takes a message out whatever its lease",        \
                     remove_takes_a_message_out_whatever_its_lease)                               \
    BULWARK_QSC_CASE(store_name, factory, "next_ready is the earliest due time or lease end",     \
                     next_ready_is_the_earliest_due_or_lease_end)                                 \
    BULWARK_QSC_CASE(store_name, factory, "list is in claim order", list_is_in_claim_order)       \
    BULWARK_QSC_CASE(store_name, factory, "stats count messages and leases",                      \
                     stats_count_messages_and_leases)                                             \
    BULWARK_QSC_CASE(store_name, factory, "push_all stores every message",                        \
                     push_all_stores_every_message)                                               \
    BULWARK_QSC_CASE(store_name, factory, "push_all stops at a bad id",                           \
                     push_all_stops_at_a_bad_id)                                                  \
    BULWARK_QSC_CASE(store_name, factory, "binary and empty payloads round-trip",                 \
                     binary_and_empty_payloads_round_trip)                                        \
    BULWARK_QSC_CASE(store_name, factory, "concurrent workers complete every message once",       \
                     concurrent_workers_complete_every_message_once)

#endif  // BULWARK_TESTS_QUEUE_STORE_CONFORMANCE_HPP

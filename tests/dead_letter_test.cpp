#include <atomic>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <bulwark/dead_letter.hpp>

#include "catch.hpp"
#include "dead_letter_conformance.hpp"

using namespace std::chrono_literals;
using bulwark::DeadLetter;
using bulwark::DeadLetterQuery;
using bulwark::DeadLetterStatus;
using bulwark::InMemoryDeadLetterStore;
using bulwark::InMemoryDeadLetterStoreOptions;

namespace dead_letter_test {

std::unique_ptr<bulwark::DeadLetterStore> make_memory_store(bulwark::ManualClock& clock) {
    return std::make_unique<InMemoryDeadLetterStore>(100000, clock);
}

DeadLetter letter(std::string id, std::string type = "sms") {
    DeadLetter d;
    d.id = std::move(id);
    d.type = std::move(type);
    d.payload = "payload";
    return d;
}

}  // namespace dead_letter_test

BULWARK_DEAD_LETTER_CONFORMANCE("InMemoryDeadLetterStore", dead_letter_test::make_memory_store)

TEST_CASE("a store adds, lists, categorizes, reprocesses, dismisses and purges as documented",
          "[dead_letter]") {
    bulwark::ManualClock clock;
    bulwark::InMemoryDeadLetterStore mem(/*max_entries*/ 100000, clock);
    bulwark::DeadLetterStore& store = mem;
    bulwark::DeadLetter d;
    d.type = "sms";
    d.payload = std::string("+15550100\0hello", 15);
    std::string id = store.add(d);
    REQUIRE(store.get(id).has_value());
    CHECK(store
              .list(bulwark::DeadLetterQuery{}
                        .type("sms")
                        .status(bulwark::DeadLetterStatus::pending)
                        .limit(100))
              .size() == 1);
    const auto query = bulwark::DeadLetterQuery{}.type("sms");
    CHECK(store.categorize(query, "provider-outage", {"sms"}) == 1);
    std::vector<std::string> resent;
    const auto result = store.reprocess(query, [&](const bulwark::DeadLetter& x) {
        resent.push_back(x.payload);
        return true;
    });
    CHECK(result.resent == 1);
    CHECK(resent == std::vector<std::string>{d.payload});
    CHECK(store.dismiss(query, "duplicate") == 0);  // already reprocessed
    clock.advance(24h);
    CHECK(store.purge(clock.wall_now() - 1h) == 1);
    CHECK(store.stats().purged == 1);
}

TEST_CASE("a default InMemoryDeadLetterStore holds 100000 records of up to 1 MiB",
          "[dead_letter]") {
    InMemoryDeadLetterStore store;
    CHECK(store.options().max_entries == 100000);
    CHECK(store.options().max_payload_bytes == 1048576);
    CHECK(store.options().max_attempts == 64);
    const bulwark::DeadLetterLimits limits = store.limits();
    CHECK(limits.max_entries == 100000);
    CHECK(limits.max_payload_bytes == 1048576);
    CHECK(limits.max_attempts == 64);
}

TEST_CASE("invalid InMemoryDeadLetterStore options throw naming the field", "[dead_letter]") {
    bulwark::ManualClock clock;
    CHECK_THROWS_WITH(InMemoryDeadLetterStore(0, clock),
                      "InMemoryDeadLetterStoreOptions.max_entries must be >= 1, got 0");
    InMemoryDeadLetterStoreOptions o;
    o.max_payload_bytes = 0;
    CHECK_THROWS_WITH(InMemoryDeadLetterStore(o, clock),
                      "InMemoryDeadLetterStoreOptions.max_payload_bytes must be >= 1, got 0");
    o = InMemoryDeadLetterStoreOptions{};
    o.max_attempts = 0;
    CHECK_THROWS_AS(InMemoryDeadLetterStore(o, clock), std::invalid_argument);
    CHECK_THROWS_WITH(InMemoryDeadLetterStore(o, clock),
                      "InMemoryDeadLetterStoreOptions.max_attempts must be >= 1, got 0");
    o = InMemoryDeadLetterStoreOptions{};
    o.max_entries = 1;
    o.max_payload_bytes = 1;
    o.max_attempts = 1;
    CHECK_NOTHROW(InMemoryDeadLetterStore(o, clock));
}

TEST_CASE("the payload limit is the configured one", "[dead_letter]") {
    bulwark::ManualClock clock;
    InMemoryDeadLetterStoreOptions o;
    o.max_payload_bytes = 10;
    InMemoryDeadLetterStore store(o, clock);
    DeadLetter d = dead_letter_test::letter("m1");
    d.payload.assign(11, 'x');
    CHECK_THROWS_WITH(store.add(d),
                      "dead letter payload of 11 bytes exceeds max_payload_bytes (10)");
    d.payload.assign(10, '\0');
    CHECK(store.add(d) == "m1");
}

TEST_CASE("a full store evicts the oldest added resolved record first", "[dead_letter]") {
    bulwark::ManualClock clock;
    InMemoryDeadLetterStore store(4, clock);
    for (const char* id : {"p1", "r1", "d1", "r2"}) {
        store.add(dead_letter_test::letter(id));
    }
    // Resolved in a different order from the one they were added in.
    store.reprocess(DeadLetterQuery{}.id("r2"), [](const DeadLetter&) { return true; });
    store.dismiss(DeadLetterQuery{}.id("d1"), "dup");
    store.reprocess(DeadLetterQuery{}.id("r1"), [](const DeadLetter&) { return true; });

    store.add(dead_letter_test::letter("n1"));
    CHECK_FALSE(store.get("r1").has_value());
    CHECK(store.get("d1").has_value());
    store.add(dead_letter_test::letter("n2"));
    CHECK_FALSE(store.get("d1").has_value());
    CHECK(store.get("r2").has_value());
    store.add(dead_letter_test::letter("n3"));
    CHECK_FALSE(store.get("r2").has_value());
    CHECK(store.size() == 4);
    CHECK(store.stats().evicted == 3);
    CHECK(store.stats().pending == 4);
}

TEST_CASE("a store full of pending records refuses an add and keeps every one", "[dead_letter]") {
    bulwark::ManualClock clock;
    InMemoryDeadLetterStore store(3, clock);
    for (const char* id : {"p1", "p2", "p3"}) {
        store.add(dead_letter_test::letter(id));
    }
    try {
        store.add(dead_letter_test::letter("p4"));
        FAIL("a full store accepted a record");
    } catch (const bulwark::DeadLetterStoreFullError& e) {
        CHECK(e.max_entries() == 3);
        CHECK_THAT(e.what(), BULWARK_CATCH_MESSAGE_CONTAINS("max_entries (3)"));
        const bulwark::RejectedError& rejection = e;  // a refusal, not a failure of the store
        CHECK(rejection.source().empty());
    }
    CHECK_THROWS_AS(store.add(DeadLetter{}), bulwark::DeadLetterStoreFullError);
    CHECK_FALSE(store.get("p4").has_value());
    CHECK(store.size() == 3);
    for (const char* id : {"p1", "p2", "p3"}) {
        REQUIRE(store.get(id).has_value());
        CHECK(store.get(id)->status == DeadLetterStatus::pending);
    }
    bulwark::DeadLetterStats s = store.stats();
    CHECK(s.rejected_full == 2);
    CHECK(s.evicted == 0);
    CHECK(s.added == 3);
    // A retried add of a stored id is still fine: nothing new to hold.
    CHECK(store.add(dead_letter_test::letter("p2")) == "p2");
    CHECK(store.stats().duplicate_adds == 1);
    // Resolving one makes room again.
    CHECK(store.dismiss(DeadLetterQuery{}.id("p2"), "stale") == 1);
    CHECK(store.add(dead_letter_test::letter("p4")) == "p4");
    CHECK_FALSE(store.get("p2").has_value());
    CHECK(store.stats().evicted == 1);
}

TEST_CASE("to_string names every status and reason", "[dead_letter]") {
    using bulwark::DeadLetterReason;
    CHECK(std::string(bulwark::to_string(DeadLetterStatus::pending)) == "pending");
    CHECK(std::string(bulwark::to_string(DeadLetterStatus::reprocessed)) == "reprocessed");
    CHECK(std::string(bulwark::to_string(DeadLetterStatus::dismissed)) == "dismissed");
    CHECK(std::string(bulwark::to_string(DeadLetterReason::retries_exhausted)) ==
          "retries_exhausted");
    CHECK(std::string(bulwark::to_string(DeadLetterReason::not_retryable)) == "not_retryable");
    CHECK(std::string(bulwark::to_string(DeadLetterReason::rejected)) == "rejected");
    CHECK(std::string(bulwark::to_string(DeadLetterReason::expired)) == "expired");
    CHECK(std::string(bulwark::to_string(DeadLetterReason::delivery_limit)) == "delivery_limit");
    CHECK(std::string(bulwark::to_string(DeadLetterReason::manual)) == "manual");
    CHECK(std::string(bulwark::to_string(static_cast<DeadLetterReason>(99))) == "unknown");
}

TEST_CASE("a query matches a record only when every filter holds", "[dead_letter]") {
    DeadLetter d = dead_letter_test::letter("m1");
    d.tags = {"a", "b"};
    d.created = bulwark::WallTime{10s};
    CHECK(DeadLetterQuery{}.matches(d));
    CHECK(DeadLetterQuery{}.id("m1").type("sms").tag("b").tag("a").matches(d));
    CHECK_FALSE(DeadLetterQuery{}.tag("a").tag("c").matches(d));
    CHECK_FALSE(DeadLetterQuery{}.type("sms").status(DeadLetterStatus::dismissed).matches(d));
    CHECK(DeadLetterQuery{}.created_after(bulwark::WallTime{9s}).matches(d));
    CHECK_FALSE(DeadLetterQuery{}.created_after(bulwark::WallTime{10s}).matches(d));
    CHECK_FALSE(DeadLetterQuery{}.created_before(bulwark::WallTime{10s}).matches(d));
    CHECK(DeadLetterQuery{}.limit(0).matches(d));  // the limit is the store's business
    CHECK(DeadLetterQuery{}.limit(7).max_results() == 7);
    CHECK(DeadLetterQuery{}.max_results() == DeadLetterQuery::no_limit);
}

TEST_CASE("stress: adds, dismisses, redrives and reads keep every record accounted for",
          "[dead_letter][.stress]") {
    bulwark::ManualClock clock;
    constexpr std::size_t max_entries = 300;
    constexpr int adds = 10000;
    InMemoryDeadLetterStore store(max_entries, clock);

    std::atomic<bool> done{false};
    std::atomic<std::uint64_t> resent{0};
    std::atomic<std::uint64_t> failed{0};
    std::atomic<std::uint64_t> violations{0};
    std::set<std::string> acked;      // adder only
    std::uint64_t returned_adds = 0;  // adder only
    std::uint64_t refused = 0;        // adder only
    std::set<std::string> dismissed;  // dismisser only
    std::mutex resolved_mutex;
    std::set<std::string> resolved_by_redrive;  // guarded by resolved_mutex

    const auto handler = [&](const DeadLetter& d) {
        const bool ok = (d.id.back() % 2) == 0;
        if (ok) {
            std::lock_guard<std::mutex> lock(resolved_mutex);
            resolved_by_redrive.insert(d.id);
        }
        return ok;
    };
    const auto tally = [&](const bulwark::ReprocessResult& r) {
        resent += r.resent;
        failed += r.failed;
        if (r.matched != r.resent + r.failed + r.skipped_limit + r.skipped_changed) {
            ++violations;
        }
    };

    // Catch2's assertions are not thread-safe: the threads count violations instead.
    std::thread adder([&] {
        for (int i = 0; i < adds; ++i) {
            const std::string id = "m-" + std::to_string(i);
            const std::string type = "t" + std::to_string(i % 3);
            for (const std::string& attempt :
                 {id, i % 7 == 0 && i > 0 ? "m-" + std::to_string(i - 1) : std::string()}) {
                if (attempt.empty()) {
                    continue;
                }
                // Full of pending records: wait for the other threads to resolve some.
                for (;;) {
                    try {
                        if (store.add(dead_letter_test::letter(attempt, type)) != attempt) {
                            ++violations;
                        }
                        acked.insert(attempt);
                        ++returned_adds;
                        break;
                    } catch (const bulwark::DeadLetterStoreFullError&) {
                        ++refused;
                        std::this_thread::yield();
                    }
                }
            }
        }
        done = true;
    });
    std::thread dismisser([&] {
        while (!done) {
            for (const DeadLetter& d :
                 store.list(DeadLetterQuery{}.status(DeadLetterStatus::pending).limit(5))) {
                if (store.dismiss(DeadLetterQuery{}.id(d.id), "stress") == 1) {
                    dismissed.insert(d.id);
                }
            }
            store.categorize(DeadLetterQuery{}.type("t1").limit(10), "c1", {"x"});
        }
    });
    std::thread redriver([&] {
        bulwark::ReprocessOptions options;
        options.max_redrives = 3;
        while (!done) {
            const auto r = store.reprocess(DeadLetterQuery{}.limit(20), handler, options);
            tally(r);
        }
    });
    std::thread reader([&] {
        while (!done) {
            const bulwark::DeadLetterStats s = store.stats();
            std::size_t by_type = 0;
            std::size_t by_category = 0;
            for (const auto& kv : s.by_type) {
                by_type += kv.second;
            }
            for (const auto& kv : s.by_category) {
                by_category += kv.second;
            }
            if (s.total != s.pending + s.reprocessed + s.dismissed || s.total > max_entries ||
                by_type != s.total || by_category != s.total) {
                ++violations;
            }
            const std::vector<DeadLetter> all = store.list();
            std::set<std::string> unique;
            for (const DeadLetter& d : all) {
                unique.insert(d.id);
            }
            if (unique.size() != all.size()) {
                ++violations;
            }
            // Competes with the redriver: either runs or is told one is running.
            const auto r = store.reprocess(DeadLetterQuery{}.type("t2").limit(3), handler);
            tally(r);
        }
    });
    adder.join();
    dismisser.join();
    redriver.join();
    reader.join();

    CHECK(violations == 0);
    const bulwark::DeadLetterStats s = store.stats();
    CHECK(returned_adds == s.added + s.duplicate_adds);
    CHECK(refused == s.rejected_full);
    CHECK(s.added == s.total + s.evicted);
    CHECK(s.resent == resent.load());
    CHECK(s.redrive_failures == failed.load());
    CHECK(s.total <= max_entries);
    std::set<std::string> present;
    for (const DeadLetter& d : store.list()) {
        CHECK(present.insert(d.id).second);  // exactly once
        CHECK(acked.count(d.id) == 1);       // nothing unexpected
    }
    // Every acknowledged record still stored, or evicted after it was resolved: a pending
    // record is never dropped.
    std::size_t missing = 0;
    for (const std::string& id : acked) {
        if (present.count(id) == 0) {
            ++missing;
            const bool was_resolved =
                dismissed.count(id) == 1 || resolved_by_redrive.count(id) == 1;
            CHECK(was_resolved);
        }
    }
    CHECK(missing > 0);  // every add got in, so eviction did run
    bulwark_test::dead_letter_conformance::check_stats_match_records(store);
}

// The setters of a temporary return a value, so a reference bound to the result cannot dangle.
static_assert(!std::is_reference<decltype(DeadLetterQuery{}.type("x"))>::value,
              "an rvalue query setter must return by value");
static_assert(
    std::is_same<decltype(std::declval<DeadLetterQuery&>().type("x")), DeadLetterQuery&>::value,
    "an lvalue query setter chains by reference");

TEST_CASE("the index refuses a duplicate id and an out-of-range status or reason",
          "[dead_letter]") {
    bulwark::detail::DeadLetterIndex index;
    DeadLetter d = dead_letter_test::letter("a");
    index.insert(d);
    CHECK_THROWS_AS(index.insert(d), std::invalid_argument);
    DeadLetter no_id = dead_letter_test::letter("");
    CHECK_THROWS_AS(index.insert(no_id), std::invalid_argument);
    DeadLetter bad_status = dead_letter_test::letter("b");
    bad_status.status = static_cast<DeadLetterStatus>(9);
    CHECK_THROWS_AS(index.insert(bad_status), std::invalid_argument);
    DeadLetter bad_reason = dead_letter_test::letter("c");
    bad_reason.reason = static_cast<bulwark::DeadLetterReason>(9);
    CHECK_THROWS_AS(index.insert(bad_reason), std::invalid_argument);
    CHECK(index.size() == 1);
    CHECK(index.contains("a"));
    bulwark::DeadLetterStats s;
    index.fill(s);
    CHECK(s.total == 1);
    CHECK(s.by_type.size() == 1);  // the refused inserts left no zero counts behind
    CHECK(s.by_type_and_reason.size() == 1);
}

TEST_CASE("an add refused for its size evicts nothing from a full store", "[dead_letter]") {
    bulwark::ManualClock clock;
    InMemoryDeadLetterStore store(2, clock);
    store.add(dead_letter_test::letter("a"));
    store.add(dead_letter_test::letter("b"));
    REQUIRE(store.dismiss(DeadLetterQuery{}.id("a"), "resolved") == 1);
    DeadLetter big = dead_letter_test::letter("c");
    big.payload.assign(store.options().max_payload_bytes + 1, 'x');
    CHECK_THROWS_AS(store.add(big), bulwark::DeadLetterTooLargeError);
    CHECK(store.get("a").has_value());  // still there: the refused add removed nothing
    CHECK(store.stats().evicted == 0);
    store.add(dead_letter_test::letter("c"));  // now "a" makes room
    CHECK_FALSE(store.get("a").has_value());
    CHECK(store.stats().evicted == 1);
    CHECK(store.size() == 2);
}

// QueueStore and InMemoryQueueStore: the conformance suite, and the in-memory store's bound and
// all-or-nothing push_all.
#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <bulwark/in_memory_queue_store.hpp>
#include <bulwark/queue_store.hpp>

#include "catch.hpp"
#include "queue_store_conformance.hpp"

namespace queue_store_test {

using bulwark::InMemoryQueueStore;
using bulwark::QueuedMessage;
using bulwark::QueueFullError;
using bulwark_test::queue_store_conformance::at;
using bulwark_test::queue_store_conformance::message;

std::unique_ptr<bulwark::QueueStore> make_memory_store() {
    return std::make_unique<InMemoryQueueStore>();
}

}  // namespace queue_store_test

BULWARK_QUEUE_STORE_CONFORMANCE("InMemoryQueueStore", queue_store_test::make_memory_store)

namespace queue_store_test {

TEST_CASE("InMemoryQueueStore refuses a max_size of 0 naming the field", "[queue_store]") {
    try {
        InMemoryQueueStore store(0);
        FAIL("max_size 0 was accepted");
    } catch (const std::invalid_argument& e) {
        CHECK(std::string(e.what()).find("max_size") != std::string::npos);
    }
}

TEST_CASE("InMemoryQueueStore refuses a push beyond max_size with QueueFullError",
          "[queue_store]") {
    InMemoryQueueStore store(3);
    for (int i = 0; i < 3; ++i) {
        store.push(message("m" + std::to_string(i), at(0)));
    }
    CHECK_THROWS_AS(store.push(message("m3", at(0))), QueueFullError);
    CHECK(store.size() == 3);
    // Leased messages count: a claim frees no room, a complete does.
    const auto batch = store.claim(at(0), 1, std::chrono::seconds(30));
    REQUIRE(batch.size() == 1);
    CHECK_THROWS_AS(store.push(message("m3", at(0))), QueueFullError);
    REQUIRE(store.complete(batch[0].id, batch[0].lease));
    store.push(message("m3", at(0)));
    CHECK(store.size() == 3);
}

TEST_CASE("InMemoryQueueStore push_all stores all of a batch or none", "[queue_store]") {
    InMemoryQueueStore store(4);
    store.push(message("held", at(0)));
    SECTION("a batch that does not fit") {
        const std::vector<QueuedMessage> batch = {message("a", at(0)), message("b", at(0)),
                                                  message("c", at(0)), message("d", at(0))};
        CHECK_THROWS_AS(store.push_all(batch), QueueFullError);
        CHECK(store.size() == 1);
        store.push_all({batch[0], batch[1], batch[2]});  // exactly fits
        CHECK(store.size() == 4);
    }
    SECTION("a batch with a held id after good ones") {
        const std::vector<QueuedMessage> batch = {message("a", at(0)), message("held", at(0))};
        CHECK_THROWS_AS(store.push_all(batch), std::invalid_argument);
        CHECK(store.size() == 1);
        CHECK_FALSE(store.get("a").has_value());
    }
    SECTION("a batch that names an id twice") {
        const std::vector<QueuedMessage> batch = {message("a", at(0)), message("b", at(0)),
                                                  message("a", at(0))};
        CHECK_THROWS_AS(store.push_all(batch), std::invalid_argument);
        CHECK(store.size() == 1);
        CHECK(store.list(10).size() == 1);
    }
}

}  // namespace queue_store_test

namespace queue_store_test {

TEST_CASE("InMemoryQueueStore takes an rvalue message as push() takes a copy", "[queue_store]") {
    InMemoryQueueStore store(2);
    QueuedMessage empty = message("", at(0));
    CHECK_THROWS_AS(store.push(std::move(empty)), std::invalid_argument);
    QueuedMessage leased = message("a", at(0));
    leased.lease = 7;  // what a caller sets is not stored: a push is never leased
    leased.claims = 3;
    store.push(std::move(leased));
    CHECK(store.get("a")->lease == 0);
    CHECK(store.get("a")->claims == 0);
    CHECK(store.get("a")->payload == message("a", at(0)).payload);
    CHECK_THROWS_AS(store.push(message("a", at(0))), std::invalid_argument);
    store.push(message("b", at(0)));
    // Full and named twice: the held id is named first, as push(const&) does.
    CHECK_THROWS_AS(store.push(message("a", at(0))), std::invalid_argument);
    CHECK_THROWS_AS(store.push(message("c", at(0))), QueueFullError);
    CHECK(store.size() == 2);
}

}  // namespace queue_store_test

namespace queue_store_test {

TEST_CASE("InMemoryQueueStore reuses completed messages' nodes without mixing their contents",
          "[queue_store]") {
    InMemoryQueueStore store(8);
    // Payloads grow and shrink so that a reused buffer is too small, then larger than needed.
    const std::vector<std::size_t> sizes{10, 300, 5, 0, 4000, 64, 1, 300};
    for (std::size_t round = 0; round < 3; ++round) {
        for (std::size_t i = 0; i < sizes.size(); ++i) {
            QueuedMessage m = message("r" + std::to_string(round) + "-" + std::to_string(i), at(0));
            m.payload = std::string(sizes[i], static_cast<char>('a' + i));
            m.lease = 99;  // never stored by a push
            if (i % 2 == 0) {
                store.push(m);
            } else {
                store.push(std::move(m));
            }
        }
        // A held id is refused with spares at hand, and changes nothing.
        CHECK_THROWS_AS(store.push(message("r" + std::to_string(round) + "-0", at(0))),
                        std::invalid_argument);
        const auto batch = store.claim(at(0), 100, std::chrono::seconds(30));
        REQUIRE(batch.size() == sizes.size());
        for (std::size_t i = 0; i < sizes.size(); ++i) {
            CHECK(batch[i].id == "r" + std::to_string(round) + "-" + std::to_string(i));
            CHECK(batch[i].payload == std::string(sizes[i], static_cast<char>('a' + i)));
            CHECK(batch[i].claims == 1);
            CHECK(batch[i].lease != 99);
        }
        for (const QueuedMessage& m : batch) {
            REQUIRE(store.complete(m.id, m.lease));
        }
        CHECK(store.size() == 0);
    }
}

}  // namespace queue_store_test

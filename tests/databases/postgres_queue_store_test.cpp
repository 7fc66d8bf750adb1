// Tests for PostgresQueueStore on a real server: the QueueStore conformance suite and what only
// a shared database adds (instances sharing one queue, migration, limits, options).
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <bulwark/postgres_queue_store.hpp>

#include "../queue_store_conformance.hpp"
#include "catch.hpp"
#include "postgres_support.hpp"

namespace {

std::unique_ptr<bulwark::QueueStore> make_pg_queue() {
    bulwark::PostgresQueueStoreOptions o;
    o.database = bulwark_test::pg::options(bulwark_test::pg::fresh_schema("q"));
    return std::make_unique<bulwark::PostgresQueueStore>(o);
}

bulwark::QueuedMessage msg(std::string id, std::int64_t s, std::string payload = "p") {
    bulwark::QueuedMessage m;
    m.id = std::move(id);
    m.payload = std::move(payload);
    m.due = bulwark::WallTime{std::chrono::seconds(1700000000 + s)};
    m.enqueued = m.due;
    return m;
}

// Every statement sent with its text (prepare_statements = false), as behind a pooler that
// keeps no prepared statements.
std::unique_ptr<bulwark::QueueStore> make_unprepared_pg_queue() {
    bulwark::PostgresQueueStoreOptions o;
    o.database = bulwark_test::pg::options(bulwark_test::pg::fresh_schema("q_unprepared"));
    o.database.prepare_statements = false;
    return std::make_unique<bulwark::PostgresQueueStore>(o);
}

}  // namespace

BULWARK_QUEUE_STORE_CONFORMANCE("PostgresQueueStore", make_pg_queue)
BULWARK_QUEUE_STORE_CONFORMANCE("PostgresQueueStore, unprepared", make_unprepared_pg_queue)

TEST_CASE("PostgresQueueStore: two instances on one schema share the queue", "[postgres]") {
    using namespace std::chrono_literals;
    bulwark::PostgresQueueStoreOptions o;
    o.database = bulwark_test::pg::options(bulwark_test::pg::fresh_schema("q_shared"));
    bulwark::PostgresQueueStore a(o);
    bulwark::PostgresQueueStore b(o);  // migrates nothing: the schema is current
    for (int i = 0; i < 10; ++i) {
        a.push(msg("m" + std::to_string(i), 0));
    }
    CHECK(b.size() == 10);
    CHECK_THROWS_AS(b.push(msg("m3", 0)), std::invalid_argument);
    const auto first = a.claim(msg("x", 5).due, 4, 30s);
    const auto second = b.claim(msg("x", 5).due, 100, 30s);
    CHECK(first.size() == 4);
    CHECK(second.size() == 6);
    std::set<std::string> seen;
    for (const auto& m : first) {
        seen.insert(m.id);
        CHECK(b.complete(m.id, m.lease));  // any instance may complete under the token
    }
    for (const auto& m : second) {
        seen.insert(m.id);
        CHECK(a.complete(m.id, m.lease));
    }
    CHECK(seen.size() == 10);
    CHECK(a.size() == 0);
}

TEST_CASE("PostgresQueueStore: limits, options and wait_for_work", "[postgres]") {
    using namespace std::chrono_literals;
    bulwark::PostgresQueueStoreOptions o;
    o.database = bulwark_test::pg::options(bulwark_test::pg::fresh_schema("q_limits"));
    o.max_payload_bytes = 8;
    o.max_id_bytes = 4;
    o.max_size = 2;
    bulwark::PostgresQueueStore store(o);
    try {
        store.push(msg("a", 0, "123456789"));
        FAIL("an oversize payload was accepted");
    } catch (const bulwark::QueueMessageTooLargeError& e) {
        CHECK(std::string(e.limit_name()) == "max_payload_bytes");
        CHECK(e.size() == 9);
    }
    CHECK_THROWS_AS(store.push(msg("abcde", 0)), bulwark::QueueMessageTooLargeError);
    store.push(msg("a", 0));
    store.push(msg("b", 0));
    CHECK_THROWS_AS(store.push(msg("c", 0)), bulwark::QueueFullError);
    CHECK(store.size() == 2);
    // A push in another instance wakes a waiter; a wait with nothing pushed times out.
    bulwark::PostgresQueueStore other(o);
    CHECK_FALSE(store.wait_for_work(1ms));  // LISTENs from now on
    REQUIRE(other.remove("b"));
    other.push(msg("b", 0));
    CHECK(store.wait_for_work(10s));

    bulwark::PostgresQueueStoreOptions bad = o;
    bad.database.schema = "Robert'); DROP TABLE x;--";
    CHECK_THROWS_AS(bulwark::PostgresQueueStore(bad), std::invalid_argument);
    bad = o;
    bad.database.pool_size = 0;
    CHECK_THROWS_AS(bulwark::PostgresQueueStore(bad), std::invalid_argument);
    bad = o;
    bad.max_payload_bytes = 0;
    CHECK_THROWS_AS(bulwark::PostgresQueueStore(bad), std::invalid_argument);
}

TEST_CASE("PostgresQueueStore: a server that cannot be reached is a transient error",
          "[postgres]") {
    bulwark::PostgresQueueStoreOptions o;
    o.database.conninfo = "host=127.0.0.1 port=1 connect_timeout=2";
    o.database.schema = "unreachable";
    o.database.max_retries = 1;
    o.database.retry_base_delay = std::chrono::milliseconds(1);
    o.database.retry_max_delay = std::chrono::milliseconds(1);
    CHECK_THROWS_AS(bulwark::PostgresQueueStore(o), bulwark::PostgresTransientError);
}

TEST_CASE("PostgresQueueStore: prepared statements are prepared again on a new connection",
          "[postgres]") {
    using namespace std::chrono_literals;
    bulwark::PostgresQueueStoreOptions o;
    const std::string schema = bulwark_test::pg::fresh_schema("q_prepared");
    o.database = bulwark_test::pg::options(schema);
    o.database.retry_base_delay = std::chrono::milliseconds(1);
    o.database.retry_max_delay = std::chrono::milliseconds(1);
    bulwark::PostgresQueueStore store(o);
    for (int i = 0; i < 3; ++i) {
        store.push(msg("m" + std::to_string(i), i));
    }
    const auto first = store.claim(msg("x", 10).due, 1, 30s);  // prepares claim
    REQUIRE(first.size() == 1);
    CHECK(store.complete(first[0].id, first[0].lease));  // prepares complete

    // The server drops the store's connections (an administrator, a failover): the next
    // statements run on new connections, which have not got them prepared.
    bulwark::detail::pg::Conn admin(PQconnectdb(bulwark_test::pg::conninfo().c_str()));
    REQUIRE(PQstatus(admin.get()) == CONNECTION_OK);
    bulwark::detail::pg::Params p;
    p.text("%\"" + schema + "\".%");
    bulwark::detail::pg::Result killed = bulwark::detail::pg::exec(
        admin.get(),
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))::int8 FROM pg_stat_activity"
        " WHERE pid <> pg_backend_pid() AND query LIKE $1::text",
        p);
    CHECK(bulwark::detail::pg::i64(killed.get(), 0, 0) >= 1);

    const auto second = store.claim(msg("x", 10).due, 5, 30s);
    REQUIRE(second.size() == 2);
    CHECK(second[0].id == "m1");
    CHECK(second[1].id == "m2");
    for (const auto& m : second) {
        CHECK(store.complete(m.id, m.lease));
    }
    CHECK(store.size() == 0);
    CHECK(store.breaker().stats().failures >= 1);  // the lost connection was seen and retried
}

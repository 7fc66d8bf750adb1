// Tests for PostgresDeadLetterStore on a real server: the DeadLetterStore conformance suite and
// what a shared database adds (instances sharing records, limits, options).
#include <memory>
#include <stdexcept>
#include <string>

#include <bulwark/postgres_dead_letter_store.hpp>

#include "../dead_letter_conformance.hpp"
#include "catch.hpp"
#include "postgres_support.hpp"

namespace {

bulwark::PostgresDeadLetterStoreOptions dl_options(const char* prefix) {
    bulwark::PostgresDeadLetterStoreOptions o;
    o.database = bulwark_test::pg::options(bulwark_test::pg::fresh_schema(prefix));
    return o;
}

std::unique_ptr<bulwark::DeadLetterStore> make_pg_dead_letters(bulwark::ManualClock& clock) {
    return std::make_unique<bulwark::PostgresDeadLetterStore>(dl_options("dl"), clock);
}

bulwark::DeadLetter letter(std::string type, std::string id = {}) {
    bulwark::DeadLetter d;
    d.id = std::move(id);
    d.type = std::move(type);
    d.payload = std::string("bytes\0\xff", 7);
    d.error = "provider 503";
    return d;
}

}  // namespace

BULWARK_DEAD_LETTER_CONFORMANCE("PostgresDeadLetterStore", make_pg_dead_letters)

TEST_CASE("PostgresDeadLetterStore: instances on one schema share records and counts",
          "[postgres]") {
    bulwark::ManualClock clock;
    const auto o = dl_options("dl_shared");
    bulwark::PostgresDeadLetterStore a(o, clock);
    bulwark::PostgresDeadLetterStore b(o, clock);
    const std::string id = a.add(letter("sms"));
    CHECK(b.add(letter("sms", id)) == id);  // idempotent across instances
    b.add(letter("email", "e-1"));
    CHECK(a.size() == 2);
    REQUIRE(b.get(id).has_value());
    CHECK(b.get(id)->payload == std::string("bytes\0\xff", 7));
    CHECK(b.dismiss(bulwark::DeadLetterQuery{}.type("sms"), "seen") == 1);
    CHECK(a.get(id)->status == bulwark::DeadLetterStatus::dismissed);
    CHECK(a.stats().added == 2);           // the schema's count
    CHECK(b.stats().duplicate_adds == 1);  // this object's
    CHECK(a.stats().duplicate_adds == 0);
    CHECK(a.purge(clock.wall_now() + std::chrono::seconds(1)) == 2);
    CHECK(b.size() == 0);
    CHECK(b.stats().purged == 2);
}

TEST_CASE("PostgresDeadLetterStore: a full store evicts resolved records, then refuses",
          "[postgres]") {
    bulwark::ManualClock clock;
    auto o = dl_options("dl_full");
    o.max_entries = 3;
    bulwark::PostgresDeadLetterStore store(o, clock);
    store.add(letter("t", "a"));
    store.add(letter("t", "b"));
    store.add(letter("t", "c"));
    CHECK_THROWS_AS(store.add(letter("t", "d")), bulwark::DeadLetterStoreFullError);
    CHECK(store.stats().rejected_full == 1);
    CHECK(store.dismiss(bulwark::DeadLetterQuery{}.id("b")) == 1);
    store.add(letter("t", "d"));  // evicts b
    CHECK_FALSE(store.get("b").has_value());
    CHECK(store.size() == 3);
    CHECK(store.stats().evicted == 1);

    auto bad = dl_options("dl_bad");
    bad.max_entries = 0;
    CHECK_THROWS_AS(bulwark::PostgresDeadLetterStore(bad, clock), std::invalid_argument);
}

// Tests for PostgresDeadLetterStore on a real server: the DeadLetterStore conformance suite and
// what a shared database adds (instances sharing records, limits, options).
#include <atomic>
#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

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

// The next `commits` COMMITs lose their connection after the server committed them (the
// detail::pg::test_fault_after_send seam): an ambiguous commit, for real.
std::atomic<int> commits_to_fail{0};

bool fail_commit(const char* sql) {
    if (std::string_view(sql) != "COMMIT") {
        return false;
    }
    int left = commits_to_fail.load();
    while (left > 0 && !commits_to_fail.compare_exchange_weak(left, left - 1)) {
    }
    return left > 0;
}

class AmbiguousCommits {
public:
    explicit AmbiguousCommits(int commits) {
        commits_to_fail.store(commits);
        bulwark::detail::pg::test_fault_after_send.store(&fail_commit);
    }
    AmbiguousCommits(const AmbiguousCommits&) = delete;
    AmbiguousCommits& operator=(const AmbiguousCommits&) = delete;
    ~AmbiguousCommits() {
        bulwark::detail::pg::test_fault_after_send.store(nullptr);
        commits_to_fail.store(0);
    }
    // Faults armed but not spent (0: each one hit a COMMIT).
    int left() const { return commits_to_fail.load(); }
};

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

TEST_CASE("PostgresDeadLetterStore: bulk changes happen once across an ambiguous commit",
          "[postgres]") {
    constexpr std::size_t n = 4;
    bulwark::ManualClock clock;
    bulwark::PostgresDeadLetterStore store(dl_options("dl_once"), clock);
    for (std::size_t i = 0; i < 3 * n; ++i) {
        bulwark::DeadLetter d = letter("sms", "r" + std::to_string(i));
        d.tags = {"hot"};
        store.add(std::move(d));
    }
    const auto pending = bulwark::DeadLetterQuery{}.status(bulwark::DeadLetterStatus::pending);

    SECTION("dismiss") {
        AmbiguousCommits fault(1);
        CHECK(store.dismiss(bulwark::DeadLetterQuery{}.type("sms").limit(n), "gone") == n);
        CHECK(fault.left() == 0);
        CHECK(store.stats().dismissed == n);
        CHECK(store.list(bulwark::DeadLetterQuery{pending}.limit(100)).size() == 2 * n);
        CHECK(store.get("r" + std::to_string(n - 1))->status ==
              bulwark::DeadLetterStatus::dismissed);
        CHECK(store.get("r" + std::to_string(n))->status == bulwark::DeadLetterStatus::pending);
    }
    SECTION("categorize, filtered on category and tag") {
        AmbiguousCommits fault(1);
        CHECK(store.categorize(bulwark::DeadLetterQuery{}.category("").tag("hot").limit(n),
                               "triaged", {"seen"}) == n);
        CHECK(fault.left() == 0);
        CHECK(store.stats().by_category["triaged"] == n);
        CHECK(store.list(bulwark::DeadLetterQuery{}.tag("seen").limit(100)).size() == n);
    }
    SECTION("categorize, filtered on a tag") {
        AmbiguousCommits fault(1);
        CHECK(store.categorize(bulwark::DeadLetterQuery{}.tag("hot").limit(n), "triaged",
                               {"seen"}) == n);
        CHECK(fault.left() == 0);
        CHECK(store.stats().by_category["triaged"] == n);
        const auto seen = store.list(bulwark::DeadLetterQuery{}.tag("seen").limit(100));
        REQUIRE(seen.size() == n);
        CHECK(seen.front().tags == std::vector<std::string>{"hot", "seen"});
    }
    SECTION("purge") {
        AmbiguousCommits fault(1);
        CHECK(store.purge(clock.wall_now() + std::chrono::seconds(1)) == 3 * n);
        CHECK(fault.left() == 0);
        CHECK(store.size() == 0);
        CHECK(store.stats().purged == 3 * n);
    }
    SECTION("every bulk change, each losing its commit") {
        AmbiguousCommits fault(3);
        CHECK(store.dismiss(bulwark::DeadLetterQuery{}.limit(n), "gone") == n);
        CHECK(store.categorize(bulwark::DeadLetterQuery{}.category("").limit(n), "x", {}) == n);
        CHECK(store.purge(clock.wall_now() + std::chrono::seconds(1)) == 3 * n);
        CHECK(fault.left() == 0);
        CHECK(store.size() == 0);
    }
}

TEST_CASE("PostgresDeadLetterStore: a version 1 schema gains the operations table", "[postgres]") {
    bulwark::ManualClock clock;
    const auto o = dl_options("dl_v1");
    {
        bulwark::PostgresDeadLetterStore store(o, clock);
        for (int i = 0; i < 6; ++i) {
            store.add(letter("sms", "v" + std::to_string(i)));
        }
    }
    // Back to what version 1 of the store left.
    bulwark::detail::pg::Conn conn = bulwark::detail::pg::connect(o.database);
    const std::string schema = "\"" + o.database.schema + "\"";
    bulwark::detail::pg::exec(conn.get(), "DROP TABLE " + schema + ".dead_letter_ops");
    bulwark::detail::pg::exec(conn.get(), "UPDATE " + schema +
                                              ".schema_version SET version = 1 WHERE component ="
                                              " 'dead_letters'");
    bulwark::PostgresDeadLetterStore store(o, clock);
    AmbiguousCommits fault(1);
    CHECK(store.dismiss(bulwark::DeadLetterQuery{}.limit(2), "gone") == 2);
    CHECK(fault.left() == 0);
    CHECK(store.stats().dismissed == 2);
    CHECK(store.size() == 6);
}

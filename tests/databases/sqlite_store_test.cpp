// Tests of the SQLite stores: the conformance suites on real files, then what only a database
// file has (reopening, the schema table, newer and damaged files, two connections at once).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <set>
#include <sqlite3.h>
#include <sstream>
#include <stdexcept>
#include <stdlib.h>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <bulwark/clock.hpp>
#include <bulwark/sqlite_dead_letter_store.hpp>
#include <bulwark/sqlite_queue_store.hpp>

#include "catch.hpp"
#include "dead_letter_conformance.hpp"
#include "queue_store_conformance.hpp"

namespace sqlite_store_test {

using namespace std::chrono_literals;
using bulwark::DeadLetter;
using bulwark::DeadLetterQuery;
using bulwark::DeadLetterStatus;
using bulwark::ManualClock;
using bulwark::QueuedMessage;
using bulwark::SqliteDeadLetterStore;
using bulwark::SqliteDeadLetterStoreOptions;
using bulwark::SqliteError;
using bulwark::SqliteQueueStore;
using bulwark::SqliteQueueStoreOptions;
using bulwark::SqliteSynchronous;
using bulwark::WallTime;
using bulwark_test::queue_store_conformance::at;
using bulwark_test::queue_store_conformance::message;

class TempDir {
public:
    TempDir() {
        char pattern[] = "/tmp/bulwark-sqlite-XXXXXX";
        const char* made = ::mkdtemp(pattern);
        REQUIRE(made != nullptr);
        path_ = made;
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }

    std::string file(const char* name = "store.db") const { return path_ + "/" + name; }

private:
    std::string path_;
};

struct TempDirHolder {
    TempDir temp;
};

// Stores that own (and remove) their directory: the conformance factories' products.
class OwnedDeadLetterStore : private TempDirHolder, public SqliteDeadLetterStore {
public:
    explicit OwnedDeadLetterStore(ManualClock& clock)
        : SqliteDeadLetterStore(temp.file(), SqliteDeadLetterStoreOptions{}, clock) {}
};

class OwnedQueueStore : private TempDirHolder, public SqliteQueueStore {
public:
    OwnedQueueStore() : SqliteQueueStore(temp.file()) {}
};

std::unique_ptr<bulwark::DeadLetterStore> make_dead_letter_store(ManualClock& clock) {
    return std::make_unique<OwnedDeadLetterStore>(clock);
}

std::unique_ptr<bulwark::QueueStore> make_queue_store() {
    return std::make_unique<OwnedQueueStore>();
}

// One SQL statement's rows through a connection of the test's own, as "col|col" lines.
std::vector<std::string> query(const std::string& path, const std::string& sql) {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK);
    std::vector<std::string> rows;
    sqlite3_stmt* st = nullptr;
    const int prepared = sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr);
    int rc = prepared;
    while (prepared == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        std::string row;
        for (int c = 0; c < sqlite3_column_count(st); ++c) {
            const unsigned char* text = sqlite3_column_text(st, c);
            row += (c == 0 ? "" : "|") +
                   std::string(text != nullptr ? reinterpret_cast<const char*>(text) : "NULL");
        }
        rows.push_back(row);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    REQUIRE((rc == SQLITE_DONE || rc == SQLITE_OK));
    return rows;
}

void write_file(const std::string& path, const std::string& bytes, std::streamoff offset = -1) {
    std::fstream out(path, std::ios::binary | std::ios::in | std::ios::out |
                               (offset < 0 ? std::ios::trunc : std::ios::openmode{}));
    if (!out) {
        out.open(path, std::ios::binary | std::ios::out | std::ios::trunc);
    }
    if (offset > 0) {
        out.seekp(offset);
    }
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    REQUIRE(out.good());
}

// Every field of every record, and the durable counters: equal iff two stores hold the same.
std::string dump(const bulwark::DeadLetterStore& store) {
    std::ostringstream out;
    const auto t = [](WallTime w) {
        return w.time_since_epoch().count();
    };
    for (const DeadLetter& d : store.list()) {
        out << d.id << '|' << d.type << '|' << d.payload.size() << ':' << d.payload << '|'
            << d.error << '|' << static_cast<int>(d.reason) << '|' << d.category << '|';
        for (const std::string& tag : d.tags) {
            out << tag << ',';
        }
        for (const bulwark::DeadLetterAttempt& a : d.attempts) {
            out << t(a.at) << '/' << a.channel << '/' << a.error << ';';
        }
        out << '|' << t(d.created) << '|' << t(d.last_attempt) << '|' << static_cast<int>(d.status)
            << '|' << d.redrives << '|' << d.note << '\n';
    }
    const bulwark::DeadLetterStats s = store.stats();
    out << s.total << ' ' << s.pending << ' ' << s.added << ' ' << s.evicted << ' ' << s.purged
        << ' ' << s.resent << ' ' << s.redrive_failures << '\n';
    return out.str();
}

std::string dump(const bulwark::QueueStore& store) {
    std::ostringstream out;
    const auto t = [](WallTime w) {
        return w.time_since_epoch().count();
    };
    for (const QueuedMessage& m : store.list()) {
        out << m.id << '|' << m.payload.size() << ':' << m.payload << '|' << t(m.due) << '|'
            << t(m.enqueued) << '|' << m.attempts << '|' << m.claims << '|' << m.lease << '|'
            << t(m.lease_until) << '\n';
    }
    out << store.stats().size << ' ' << store.stats().leased << '\n';
    return out.str();
}

DeadLetter letter(std::string type, std::string id) {
    return bulwark_test::dead_letter_conformance::letter(std::move(type), std::move(id));
}

// Some of everything: categorized, tagged, dismissed, redriven (both ways) and purged.
void fill(SqliteDeadLetterStore& store, ManualClock& clock) {
    DeadLetter old = letter("sms", "old");
    old.created = clock.wall_now() - 48h;
    store.add(old);
    DeadLetter a = letter("sms", "a");
    a.payload = std::string("\0\xff\0", 3);
    a.tags = {"vip", "eu"};
    a.attempts = {{clock.wall_now() - 1min, "sms-a", "503"}};
    store.add(a);
    store.add(letter("email", "b"));
    store.add(letter("push", "c"));
    store.add(letter("sms", ""));
    clock.advance(1s);
    REQUIRE(store.categorize(DeadLetterQuery{}.type("sms"), "outage", {"eu", "retry"}) == 3);
    REQUIRE(store.dismiss(DeadLetterQuery{}.id("b"), "bounced") == 1);
    store.reprocess(DeadLetterQuery{}.id("a"), [](const DeadLetter&) { return true; });
    store.reprocess(DeadLetterQuery{}.id("c"), [](const DeadLetter&) { return false; });
    REQUIRE(store.purge(clock.wall_now() - 24h) == 1);
}

}  // namespace sqlite_store_test

using namespace sqlite_store_test;

BULWARK_DEAD_LETTER_CONFORMANCE("SqliteDeadLetterStore", sqlite_store_test::make_dead_letter_store)
BULWARK_QUEUE_STORE_CONFORMANCE("SqliteQueueStore", sqlite_store_test::make_queue_store)

TEST_CASE("SqliteDeadLetterStore: a reopened store holds every record, tag and counter",
          "[sqlite][dead_letter]") {
    TempDir dir;
    ManualClock clock;
    std::string before;
    {
        SqliteDeadLetterStore store(dir.file(), {}, clock);
        fill(store, clock);
        before = dump(store);
    }
    SqliteDeadLetterStore reopened(dir.file(), {}, clock);
    CHECK(dump(reopened) == before);
    CHECK(reopened.get("a")->tags == std::vector<std::string>{"vip", "eu", "retry"});
    CHECK(reopened.get("a")->payload == std::string("\0\xff\0", 3));
    CHECK(reopened.stats().purged == 1);
    CHECK(reopened.stats().resent == 1);
    // Added after the reopen: last in add order, after every earlier record.
    reopened.add(letter("sms", "z"));
    CHECK(reopened.list().back().id == "z");
}

TEST_CASE("SqliteQueueStore: a reopened store holds every message and never reuses a token",
          "[sqlite][queue_store]") {
    TempDir dir;
    std::string before;
    std::uint64_t max_token = 0;
    {
        SqliteQueueStore store(dir.file());
        store.push(message("a", at(0), "alpha"));
        store.push(message("b", at(0), std::string("b\0\xff", 3)));
        store.push_all({message("c", at(5)), message("d", at(7), "")});
        const auto batch = store.claim(at(10), 3, 60s);
        REQUIRE(batch.size() == 3);
        for (const QueuedMessage& m : batch) {
            max_token = std::max(max_token, m.lease);
        }
        QueuedMessage b = batch[1];
        b.payload = "beta-2";
        b.due = at(300);
        b.attempts = 2;
        REQUIRE(store.release(b));
        REQUIRE(store.complete("c", batch[2].lease));
        before = dump(store);
    }
    SqliteQueueStore reopened(dir.file());
    CHECK(dump(reopened) == before);
    const auto again = reopened.claim(at(1000), 10, 60s);
    REQUIRE(again.size() == 3);
    for (const QueuedMessage& m : again) {
        CHECK(m.lease > max_token);
    }
}

TEST_CASE("SQLite stores: the schema table records each component's version, in WAL mode",
          "[sqlite]") {
    TempDir dir;
    ManualClock clock;
    {
        // Both stores may share one file: their tables do not overlap.
        SqliteDeadLetterStore dlq(dir.file(), {}, clock);
        SqliteQueueStore queue(dir.file());
        dlq.add(letter("sms", "x"));
        queue.push(message("m", at(0)));
    }
    CHECK(query(dir.file(),
                "SELECT component, version, bulwark_version FROM bulwark_schema_migrations "
                "ORDER BY component") ==
          std::vector<std::string>{"dead_letters|1|" BULWARK_VERSION_STRING,
                                   "queue|1|" BULWARK_VERSION_STRING});
    CHECK(query(dir.file(), "PRAGMA journal_mode") == std::vector<std::string>{"wal"});
    // Opening again migrates nothing twice.
    {
        SqliteDeadLetterStore dlq(dir.file(), {}, clock);
        CHECK(dlq.size() == 1);
    }
    CHECK(query(dir.file(), "SELECT COUNT(*) FROM bulwark_schema_migrations") ==
          std::vector<std::string>{"2"});
}

TEST_CASE("SQLite stores: a file with a newer schema version is refused, naming it", "[sqlite]") {
    TempDir dir;
    ManualClock clock;
    {
        SqliteDeadLetterStore dlq(dir.file(), {}, clock);
        SqliteQueueStore queue(dir.file());
        dlq.add(letter("sms", "kept"));
    }
    query(dir.file(),
          "INSERT INTO bulwark_schema_migrations VALUES ('dead_letters', 2, '9.0.0'), ('queue', "
          "7, '9.0.0')");
    try {
        SqliteDeadLetterStore dlq(dir.file(), {}, clock);
        FAIL("a newer schema was opened");
    } catch (const SqliteError& e) {
        const std::string what = e.what();
        CHECK(what.find("schema version 2") != std::string::npos);
        CHECK(what.find("dead_letters") != std::string::npos);
        CHECK(what.find("newer") != std::string::npos);
        CHECK(e.code() == SQLITE_ERROR);
    }
    CHECK_THROWS_AS(SqliteQueueStore(dir.file()), SqliteError);
    // The refusal changed nothing.
    CHECK(query(dir.file(), "SELECT id FROM bulwark_dead_letters") ==
          std::vector<std::string>{"kept"});
}

TEST_CASE("SQLite stores: a file that is not a database is refused with SqliteError", "[sqlite]") {
    TempDir dir;
    ManualClock clock;
    std::string garbage;
    std::mt19937 rng(7);
    for (int i = 0; i < 8192; ++i) {
        garbage.push_back(static_cast<char>(rng() & 0xffU));
    }
    write_file(dir.file(), garbage);
    try {
        SqliteQueueStore queue(dir.file());
        FAIL("a garbage file was opened");
    } catch (const SqliteError& e) {
        CHECK(e.code() == SQLITE_NOTADB);
        CHECK(std::string(e.what()).find("not a bulwark SQLite store") != std::string::npos);
    }
    CHECK_THROWS_AS(SqliteDeadLetterStore(dir.file(), {}, clock), SqliteError);
    // A text file, too.
    write_file(dir.file("notes.txt"), "these are not the records you are looking for\n");
    CHECK_THROWS_AS(SqliteQueueStore(dir.file("notes.txt")), SqliteError);
}

TEST_CASE("SQLite stores: a damaged database throws SqliteError, never crashes", "[sqlite]") {
    TempDir dir;
    ManualClock clock;
    {
        SqliteDeadLetterStore dlq(dir.file(), {}, clock);
        SqliteQueueStore queue(dir.file());
        for (int i = 0; i < 300; ++i) {
            dlq.add(letter("sms", "d" + std::to_string(i)));
            queue.push(message("m" + std::to_string(i), at(i), std::string(100, 'x')));
        }
    }  // closed: the log is checkpointed into the file
    // Every page after the first (which holds the header and the schema) overwritten.
    const auto size = static_cast<std::size_t>(std::filesystem::file_size(dir.file()));
    REQUIRE(size > 8192);
    write_file(dir.file(), std::string(size - 4096, '\xa5'), 4096);
    int refused = 0;
    const auto attempt = [&](auto&& op) {
        try {
            op();
        } catch (const SqliteError& e) {
            CHECK((e.code() & 0xff) != SQLITE_OK);
            ++refused;
        }
    };
    attempt([&] {
        SqliteDeadLetterStore dlq(dir.file(), {}, clock);
        dlq.list();
        dlq.stats();
    });
    attempt([&] {
        SqliteQueueStore queue(dir.file());
        queue.list();
        queue.claim(at(1000), 10, 30s);
    });
    CHECK(refused == 2);
}

TEST_CASE("SqliteDeadLetterStore: two store objects on one file see each other's writes",
          "[sqlite][dead_letter]") {
    TempDir dir;
    ManualClock clock;
    SqliteDeadLetterStoreOptions o;
    o.max_entries = 3;
    SqliteDeadLetterStore a(dir.file(), o, clock);
    SqliteDeadLetterStore b(dir.file(), o, clock);
    a.add(letter("sms", "m1"));
    REQUIRE(b.get("m1").has_value());
    CHECK(b.add(letter("sms", "m1")) == "m1");  // a duplicate, whichever object added it
    CHECK(b.size() == 1);
    CHECK(b.dismiss(DeadLetterQuery{}.id("m1"), "seen by b") == 1);
    CHECK(a.get("m1")->status == DeadLetterStatus::dismissed);
    CHECK(a.get("m1")->note == "seen by b");
    b.add(letter("sms", "m2"));
    a.add(letter("sms", "m3"));
    // Full across both: the dismissed record is evicted for the next one, then nothing can be.
    b.add(letter("sms", "m4"));
    CHECK_FALSE(a.get("m1").has_value());
    CHECK(a.stats().evicted == 1);
    CHECK_THROWS_AS(a.add(letter("sms", "m5")), bulwark::DeadLetterStoreFullError);
    CHECK(a.stats().rejected_full == 1);
    CHECK(b.stats().added == 4);
    CHECK(bulwark_test::dead_letter_conformance::ids_of(a.list()) ==
          std::vector<std::string>{"m2", "m3", "m4"});
}

TEST_CASE("SqliteQueueStore: two store objects on one file lease each message once",
          "[sqlite][queue_store]") {
    TempDir dir;
    SqliteQueueStoreOptions o;
    o.synchronous = SqliteSynchronous::normal;  // many commits; what is tested is the locking
    o.busy_timeout = std::chrono::minutes(1);
    SqliteQueueStore first(dir.file(), o);
    SqliteQueueStore second(dir.file(), o);
    constexpr int messages = 200;
    for (int i = 0; i < messages; ++i) {
        (i % 2 == 0 ? first : second).push(message(std::to_string(i), at(0)));
    }
    CHECK(first.size() == messages);
    std::vector<std::atomic<int>> in_hand(messages);
    std::vector<std::atomic<int>> completed(messages);
    std::atomic<int> done{0};
    std::atomic<int> double_hand{0};
    std::atomic<int> refused{0};
    std::atomic<int> errors{0};
    std::vector<std::vector<std::uint64_t>> tokens(4);
    std::vector<std::thread> threads;
    for (int w = 0; w < 4; ++w) {
        // Two threads per object: the object's mutex and SQLite's lock both at work.
        SqliteQueueStore& store = w % 2 == 0 ? first : second;
        threads.emplace_back([&, w] {
            std::mt19937 rng(static_cast<unsigned>(w) + 11U);
            try {
                for (long spins = 0; done.load() < messages && spins < 1000000; ++spins) {
                    const auto batch = store.claim(at(0), 1 + rng() % 3, 24h);
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
                        in_hand[i].store(0);
                        if (store.complete(m.id, m.lease)) {
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
    CHECK(first.size() == 0);
    CHECK(second.stats().leased == 0);
    std::set<std::uint64_t> unique;
    std::size_t total = 0;
    for (const auto& list : tokens) {
        unique.insert(list.begin(), list.end());
        total += list.size();
    }
    CHECK(total == static_cast<std::size_t>(messages));
    CHECK(unique.size() == total);
}

TEST_CASE("SqliteQueueStore: a lease taken through one object is stale through the other",
          "[sqlite][queue_store]") {
    TempDir dir;
    SqliteQueueStore a(dir.file());
    SqliteQueueStore b(dir.file());
    a.push(message("m", at(0)));
    const auto first = a.claim(at(0), 1, 10s);
    REQUIRE(first.size() == 1);
    CHECK(b.claim(at(5), 1, 10s).empty());  // leased through a
    const auto second = b.claim(at(10), 1, 10s);
    REQUIRE(second.size() == 1);
    CHECK(second[0].claims == 2);
    CHECK(second[0].lease != first[0].lease);
    CHECK_FALSE(a.complete("m", first[0].lease));
    CHECK_FALSE(a.extend("m", first[0].lease, at(100)));
    CHECK(a.extend("m", second[0].lease, at(100)));
    CHECK(b.get("m")->lease_until == at(100));
    CHECK(a.complete("m", second[0].lease));
    CHECK(b.size() == 0);
}

TEST_CASE("SqliteQueueStore: full and oversize pushes are refused, storing nothing",
          "[sqlite][queue_store]") {
    TempDir dir;
    SqliteQueueStoreOptions o;
    o.max_size = 2;
    o.max_payload_bytes = 8;
    o.max_id_bytes = 4;
    SqliteQueueStore store(dir.file(), o);
    store.push(message("a", at(0), "12345678"));
    CHECK_THROWS_AS(store.push_all({message("b", at(0)), message("c", at(0))}),
                    bulwark::QueueFullError);
    CHECK(store.size() == 1);
    store.push(message("b", at(0), ""));
    CHECK_THROWS_AS(store.push(message("c", at(0))), bulwark::QueueFullError);
    REQUIRE(store.remove("b"));
    try {
        store.push(message("long-id", at(0)));
        FAIL("a long id was accepted");
    } catch (const bulwark::QueueMessageTooLargeError& e) {
        CHECK(std::string(e.limit_name()) == "max_id_bytes");
        CHECK(e.size() == 7);
    }
    try {
        store.push(message("c", at(0), "123456789"));
        FAIL("a large payload was accepted");
    } catch (const bulwark::QueueMessageTooLargeError& e) {
        CHECK(std::string(e.limit_name()) == "max_payload_bytes");
        CHECK(e.limit() == 8);
    }
    const auto batch = store.claim(at(0), 1, 10s);
    REQUIRE(batch.size() == 1);
    QueuedMessage big = batch[0];
    big.payload = std::string(9, 'x');
    CHECK_THROWS_AS(store.release(big), bulwark::QueueMessageTooLargeError);
    CHECK(store.get("a")->lease == batch[0].lease);  // the lease stays
    CHECK(store.size() == 1);
}

TEST_CASE("SQLite stores: options are validated, naming the field and the value", "[sqlite]") {
    const auto message_of = [](auto&& make) {
        try {
            make();
        } catch (const std::invalid_argument& e) {
            return std::string(e.what());
        }
        return std::string("no exception");
    };
    SqliteQueueStoreOptions q;
    q.synchronous = static_cast<SqliteSynchronous>(3);
    CHECK(message_of([&] { q.validate(); }) ==
          "SqliteQueueStoreOptions.synchronous must be a SqliteSynchronous, got 3");
    q = {};
    q.busy_timeout = -1ms;
    CHECK(message_of([&] { q.validate(); }).find("SqliteQueueStoreOptions.busy_timeout") == 0);
    CHECK(message_of([&] { q.validate(); }).find("-1") != std::string::npos);
    q = {};
    q.max_id_bytes = 65537;
    CHECK(message_of([&] { q.validate(); }).find("65537") != std::string::npos);
    for (const SqliteSynchronous s :
         {SqliteSynchronous::full, SqliteSynchronous::normal, SqliteSynchronous::off}) {
        q = {};
        q.synchronous = s;
        CHECK_NOTHROW(q.validate());
    }

    SqliteDeadLetterStoreOptions d;
    d.synchronous = static_cast<SqliteSynchronous>(9);
    CHECK(message_of([&] { d.validate(); }) ==
          "SqliteDeadLetterStoreOptions.synchronous must be a SqliteSynchronous, got 9");
    d = {};
    d.max_entries = 0;
    CHECK(message_of([&] { d.validate(); }) ==
          "SqliteDeadLetterStoreOptions.max_entries must be >= 1, got 0");
    d = {};
    d.max_payload_bytes = (std::size_t{64} << 20U) + 1;
    CHECK(message_of([&] { d.validate(); }).find("max_payload_bytes") != std::string::npos);
    // The constructors validate before they touch the file.
    TempDir dir;
    ManualClock clock;
    d = {};
    d.busy_timeout = -5ms;
    CHECK_THROWS_AS(SqliteDeadLetterStore(dir.file(), d, clock), std::invalid_argument);
    q = {};
    q.max_size = 0;
    CHECK_THROWS_AS(SqliteQueueStore(dir.file(), q), std::invalid_argument);
    CHECK_FALSE(std::filesystem::exists(dir.file()));
}

TEST_CASE("SQLite stores: every synchronous setting stores and reads back", "[sqlite]") {
    for (const SqliteSynchronous s :
         {SqliteSynchronous::full, SqliteSynchronous::normal, SqliteSynchronous::off}) {
        TempDir dir;
        ManualClock clock;
        SqliteDeadLetterStoreOptions d;
        d.synchronous = s;
        SqliteQueueStoreOptions q;
        q.synchronous = s;
        {
            SqliteDeadLetterStore dlq(dir.file(), d, clock);
            SqliteQueueStore queue(dir.file(), q);
            CHECK(dlq.options().synchronous == s);
            dlq.add(letter("sms", "x"));
            queue.push(message("m", at(0)));
        }
        SqliteDeadLetterStore dlq(dir.file(), d, clock);
        SqliteQueueStore queue(dir.file(), q);
        CHECK(dlq.get("x").has_value());
        CHECK(queue.get("m").has_value());
    }
}

TEST_CASE("SqliteDeadLetterStore: bulk changes are one transaction: a refused one changes nothing",
          "[sqlite][dead_letter]") {
    TempDir dir;
    ManualClock clock;
    SqliteDeadLetterStoreOptions o;
    o.max_text_bytes = 64;
    SqliteDeadLetterStore store(dir.file(), o, clock);
    DeadLetter small = letter("sms", "s");
    store.add(small);
    DeadLetter large = letter("sms", "l");
    large.tags = {std::string(40, 't')};
    store.add(large);
    // "s" could take the tag; "l" could not: refused for both, before anything was written.
    CHECK_THROWS_AS(store.categorize(DeadLetterQuery{}.type("sms"), "c", {std::string(30, 'u')}),
                    bulwark::DeadLetterTooLargeError);
    CHECK(store.get("s")->category.empty());
    CHECK(store.get("s")->tags.empty());
    CHECK(store.categorize(DeadLetterQuery{}.id("s"), "c", {std::string(30, 'u')}) == 1);
    CHECK(store.get("s")->tags.size() == 1);
}

TEST_CASE("SqliteDeadLetterStore: a damaged record throws SqliteError when read",
          "[sqlite][dead_letter]") {
    TempDir dir;
    ManualClock clock;
    SqliteDeadLetterStore store(dir.file(), {}, clock);
    store.add(letter("sms", "ok"));
    store.add(letter("sms", "bad"));
    // A history cut short in the middle of an attempt, as a foreign write could leave it.
    query(dir.file(), "UPDATE bulwark_dead_letters SET attempts = x'01020304' WHERE id = 'bad'");
    try {
        store.get("bad");
        FAIL("a damaged record was read");
    } catch (const SqliteError& e) {
        CHECK(e.code() == SQLITE_CORRUPT);
        CHECK(std::string(e.what()).find("damaged") != std::string::npos);
    }
    CHECK_THROWS_AS(store.list(), SqliteError);
    CHECK(store.get("ok").has_value());                                    // the others still read
    CHECK(store.dismiss(DeadLetterQuery{}.id("bad"), "unreadable") == 1);  // and change
}

TEST_CASE("SqliteDeadLetterStore: threads adding through two objects store each id once",
          "[sqlite][dead_letter]") {
    TempDir dir;
    ManualClock clock;
    SqliteDeadLetterStoreOptions o;
    o.synchronous = SqliteSynchronous::normal;  // many commits; what is tested is the locking
    o.busy_timeout = std::chrono::minutes(1);
    SqliteDeadLetterStore a(dir.file(), o, clock);
    SqliteDeadLetterStore b(dir.file(), o, clock);
    constexpr int per_thread = 60;
    std::atomic<int> errors{0};
    std::vector<std::thread> threads;
    for (int w = 0; w < 4; ++w) {
        SqliteDeadLetterStore& store = w % 2 == 0 ? a : b;
        threads.emplace_back([&, w] {
            try {
                for (int i = 0; i < per_thread; ++i) {
                    // Threads 0 and 1 add the same ids (a retried add), 2 and 3 their own and
                    // assigned ones.
                    const std::string id =
                        w < 2 ? "shared-" + std::to_string(i)
                              : (i % 2 == 0 ? "own-" + std::to_string(w) + "-" + std::to_string(i)
                                            : std::string());
                    store.add(letter("sms", id));
                    if (i % 10 == 0) {
                        store.dismiss(DeadLetterQuery{}.id(id.empty() ? "none" : id), "x");
                        store.stats();
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
    const std::size_t expected = per_thread + 2 * per_thread;  // shared once; 2 and 3 all theirs
    CHECK(a.size() == expected);
    CHECK(b.list().size() == expected);
    CHECK(a.stats().added == expected);
    CHECK(a.stats().duplicate_adds + b.stats().duplicate_adds == per_thread);
    std::set<std::string> ids;
    for (const DeadLetter& d : a.list()) {
        ids.insert(d.id);
    }
    CHECK(ids.size() == expected);
}

TEST_CASE("SQLite stores: a file that cannot be created is refused, naming its path", "[sqlite]") {
    TempDir dir;
    ManualClock clock;
    const std::string path = dir.file("missing-directory/store.db");
    try {
        SqliteQueueStore queue(path);
        FAIL("a store was opened where no file can be");
    } catch (const SqliteError& e) {
        CHECK(std::string(e.what()).find(path) != std::string::npos);
        CHECK((e.code() & 0xff) == SQLITE_CANTOPEN);
    }
    CHECK_THROWS_AS(SqliteDeadLetterStore(path, {}, clock), SqliteError);
}

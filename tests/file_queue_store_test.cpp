// FileQueueStore: the conformance suite on the real file system, reopen (leases, released state,
// completed messages), lease tokens across reopen and power loss, torn tails and corruption in
// each recovery mode, compaction, injected I/O errors, limits, the directory lock and SIGKILL.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <poll.h>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <stdlib.h>
#include <string>
#include <sys/types.h>
#include <sys/wait.h>
#include <system_error>
#include <thread>
#include <unistd.h>
#include <vector>

#include <bulwark/file_dead_letter_store.hpp>
#include <bulwark/file_queue_store.hpp>

#include "catch.hpp"
#include "fault_fs.hpp"
#include "queue_store_conformance.hpp"

using namespace std::chrono_literals;
using bulwark::FileQueueStore;
using bulwark::FileQueueStoreOptions;
using bulwark::JournalRecovery;
using bulwark::JournalSync;
using bulwark::QueuedMessage;
using bulwark_test::FaultFs;
using bulwark_test::SimulatedCrash;
using bulwark_test::queue_store_conformance::at;
using bulwark_test::queue_store_conformance::message;

namespace file_queue_store_test {

// A fresh directory under /tmp, removed with everything in it.
class TempDir {
public:
    TempDir() {
        char pattern[] = "/tmp/bulwark-fqs-XXXXXX";
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

    std::string store() const { return path_ + "/queue"; }
    std::string journal() const { return store() + "/journal"; }

private:
    std::string path_;
};

struct TempDirHolder {
    TempDir temp;
};

// A store that owns (and removes) its directory: the conformance factory's product.
class OwnedFileStore : private TempDirHolder, public FileQueueStore {
public:
    OwnedFileStore() : FileQueueStore(temp.store()) {}
};

std::unique_ptr<bulwark::QueueStore> make_file_store() {
    return std::make_unique<OwnedFileStore>();
}

const std::string fault_dir = "/fault/queue";
const std::string fault_journal = "/fault/queue/journal";

// Every field of every message, in claim order: two stores hold the same messages iff equal.
std::string dump(const bulwark::QueueStore& store) {
    std::ostringstream out;
    const auto t = [](bulwark::WallTime w) {
        return w.time_since_epoch().count();
    };
    for (const QueuedMessage& m : store.list(1000000)) {
        out << m.id << '|' << m.payload.size() << ':' << m.payload << '|' << t(m.due) << '|'
            << t(m.enqueued) << '|' << m.attempts << '|' << m.claims << '|' << m.lease << '|'
            << t(m.lease_until) << '\n';
    }
    const bulwark::QueueStoreStats s = store.stats();
    out << "size " << s.size << " leased " << s.leased << '\n';
    return out.str();
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_file(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A store with some of everything: pushed, leased, released, extended, completed and removed.
struct Scenario {
    std::uint64_t lease_a = 0;  // "a" is leased until at(130)
    std::uint64_t max_token = 0;
};

Scenario fill(FileQueueStore& store) {
    Scenario s;
    store.push(message("a", at(0), "alpha"));
    store.push(message("b", at(0), std::string("b\0\xff", 3)));
    store.push_all({message("c", at(5)), message("d", at(5)), message("e", at(7), "")});
    const auto batch = store.claim(at(10), 4, 60s);  // a, b, c, d
    REQUIRE(batch.size() == 4);
    for (const QueuedMessage& m : batch) {
        s.max_token = std::max(s.max_token, m.lease);
    }
    s.lease_a = batch[0].lease;
    REQUIRE(store.extend("a", batch[0].lease, at(130)));
    QueuedMessage b = batch[1];
    b.payload = "beta-2";
    b.due = at(300);
    b.attempts = 2;
    REQUIRE(store.release(b));
    REQUIRE(store.complete("c", batch[2].lease));
    REQUIRE(store.remove("e"));
    return s;
}

}  // namespace file_queue_store_test

using namespace file_queue_store_test;

BULWARK_QUEUE_STORE_CONFORMANCE("FileQueueStore", file_queue_store_test::make_file_store)

TEST_CASE("FileQueueStore: a reopened store holds everything acknowledged, leases included",
          "[queue_store][file]") {
    const bool compacting = GENERATE(false, true);
    TempDir dir;
    FileQueueStoreOptions o;
    if (compacting) {
        o.compact_min_bytes = 4096;
    }
    std::string before;
    Scenario s;
    {
        FileQueueStore store(dir.store(), o);
        s = fill(store);
        if (compacting) {
            // Churn until the journal is compacted at least once.
            for (int i = 0; store.journal_stats().compactions == 0 && i < 10000; ++i) {
                store.push(message("churn", at(0), std::string(200, 'x')));
                REQUIRE(store.remove("churn"));
            }
            REQUIRE(store.journal_stats().compactions > 0);
        }
        before = dump(store);
    }
    FileQueueStore store(dir.store(), o);
    CHECK(dump(store) == before);
    CHECK_FALSE(store.get("c").has_value());  // completed
    CHECK_FALSE(store.get("e").has_value());  // removed
    const QueuedMessage b = *store.get("b");
    CHECK(b.payload == "beta-2");
    CHECK(b.due == at(300));
    CHECK(b.attempts == 2);
    CHECK(b.lease == 0);
    CHECK(b.claims == 1);
    const QueuedMessage a = *store.get("a");
    CHECK(a.lease == s.lease_a);
    CHECK(a.lease_until == at(130));
    CHECK(store.stats().leased == 2);  // a and d
    // The leases are wall times: d's ran out at 70, a's runs out at 130.
    CHECK(store.claim(at(69), 10, 30s).empty());
    const auto d = store.claim(at(70), 10, 30s);
    REQUIRE(d.size() == 1);
    CHECK(d[0].id == "d");
    CHECK(d[0].claims == 2);
    CHECK(d[0].lease > s.max_token);
    // A lease from before the reopen is still current.
    CHECK(store.complete("a", s.lease_a));
    CHECK(store.next_ready() == at(100));  // d's new lease
}

TEST_CASE("FileQueueStore: lease tokens stay unique across reopens", "[queue_store][file]") {
    TempDir dir;
    std::set<std::uint64_t> tokens;
    std::uint64_t highest = 0;
    for (int round = 0; round < 4; ++round) {
        FileQueueStore store(dir.store());
        if (round == 0) {
            for (int i = 0; i < 10; ++i) {
                store.push(message("m" + std::to_string(i), at(0)));
            }
        }
        for (int k = 0; k < 3; ++k) {
            const auto batch = store.claim(at(1000 * round + 100 * k), 10, 10s);
            REQUIRE(batch.size() == 10);
            for (const QueuedMessage& m : batch) {
                CHECK(m.lease > highest);  // above everything before the reopen
                tokens.insert(m.lease);
            }
        }
        for (const std::uint64_t t : tokens) {
            highest = std::max(highest, t);
        }
    }
    CHECK(tokens.size() == 120);
}

TEST_CASE("FileQueueStore: after a power loss, acknowledged changes stand and tokens are new",
          "[queue_store][file][crash]") {
    // Each message is pushed, claimed, released with a new payload, claimed and completed; the
    // power fails at the k-th sync. Whatever survives, a push, release or complete that returned
    // is there, and a claim after the reopen gets a token never handed out before.
    const FaultFs::Damage damage =
        GENERATE(FaultFs::Damage::drop_unsynced, FaultFs::Damage::keep_prefix,
                 FaultFs::Damage::garbage_tail, FaultFs::Damage::drop_dir_entries);
    std::mt19937_64 rng(20261204);
    constexpr int n = 6;
    std::size_t crashes = 0;
    for (std::size_t k = 1;; ++k) {
        FaultFs fs;
        int acked[n] = {};  // 1 pushed, 2 released, 3 completed
        std::uint64_t handed = 0;
        bool crashed = false;
        fs.crash_at_sync(k);
        try {
            FileQueueStore store(fault_dir, FileQueueStoreOptions{}, fs);
            for (int step = 1; step <= 3; ++step) {
                for (int i = 0; i < n; ++i) {
                    const std::string id = "m" + std::to_string(i);
                    if (step == 1) {
                        store.push(message(id, at(0), "v1"));
                        acked[i] = 1;
                        continue;
                    }
                    const auto batch = store.claim(at(100 * step), 1, 10s);
                    REQUIRE(batch.size() == 1);
                    REQUIRE(batch[0].id == id);
                    handed = std::max(handed, batch[0].lease);
                    if (step == 2) {
                        QueuedMessage m = batch[0];
                        m.payload = "v2";
                        m.due = at(250 + i);  // after this round's claims, in push order
                        // (outside REQUIRE, which would catch the SimulatedCrash)
                        const bool released = store.release(m);
                        REQUIRE(released);
                        acked[i] = 2;
                    } else {
                        const bool completed = store.complete(id, batch[0].lease);
                        REQUIRE(completed);
                        acked[i] = 3;
                    }
                }
            }
        } catch (const SimulatedCrash&) {
            crashed = true;
        }
        if (!crashed) {
            break;
        }
        ++crashes;
        fs.crash(damage, rng);
        FileQueueStore store(fault_dir, FileQueueStoreOptions{}, fs);
        for (int i = 0; i < n; ++i) {
            const auto m = store.get("m" + std::to_string(i));
            int level = 0;
            if (m.has_value()) {
                level = m->payload == "v2" ? 2 : 1;
            } else if (acked[i] >= 1) {
                level = 3;  // gone after a push that returned: only a complete removes it
            }
            INFO("sync point " << k << ", message " << i << ", acknowledged " << acked[i]);
            CHECK(level >= acked[i]);
            CHECK(level <= acked[i] + 1);
        }
        for (const QueuedMessage& m : store.claim(at(1000000), 100, 10s)) {
            INFO("sync point " << k);
            CHECK(m.lease > handed);
        }
    }
    CHECK(crashes > 10);
}

TEST_CASE("FileQueueStore: a torn tail is dropped, or refused in strict mode",
          "[queue_store][file][corruption]") {
    TempDir dir;
    {
        FileQueueStore store(dir.store());
        store.push(message("kept", at(0)));
        store.push(message("torn", at(0), std::string(100, 'p')));
    }
    const std::string whole = read_file(dir.journal());
    write_file(dir.journal(), whole.substr(0, whole.size() - 30));  // the last frame cut short
    {
        FileQueueStoreOptions strict;
        strict.recovery = JournalRecovery::strict;
        CHECK_THROWS_AS(FileQueueStore(dir.store(), strict), bulwark::JournalCorruptError);
    }
    FileQueueStore store(dir.store());
    CHECK(store.get("kept").has_value());
    CHECK_FALSE(store.get("torn").has_value());
    CHECK(store.journal_stats().dropped_tail_bytes > 0);
    store.push(message("after", at(0)));  // appends after the good end
    CHECK(store.size() == 2);
}

TEST_CASE("FileQueueStore: a damaged frame in each recovery mode",
          "[queue_store][file][corruption]") {
    TempDir dir;
    std::size_t second_start = 0;
    std::size_t second_end = 0;
    {
        FileQueueStore store(dir.store());
        store.push(message("first", at(0)));
        second_start = store.journal_stats().file_bytes;
        store.push(message("second", at(0), "damaged"));
        second_end = store.journal_stats().file_bytes;
        store.push(message("third", at(0)));
    }
    std::string bytes = read_file(dir.journal());
    REQUIRE(second_end > second_start);
    const std::size_t hit = second_end - 3;  // in the second frame's payload
    bytes[hit] = static_cast<char>(static_cast<unsigned char>(bytes[hit]) ^ 0x40U);
    write_file(dir.journal(), bytes);
    for (const JournalRecovery mode :
         {JournalRecovery::strict, JournalRecovery::tolerate_torn_tail}) {
        FileQueueStoreOptions o;
        o.recovery = mode;
        try {
            FileQueueStore store(dir.store(), o);
            FAIL("a damaged journal was opened in mode " << bulwark::to_string(mode));
        } catch (const bulwark::JournalCorruptError& e) {
            CHECK(e.offset() == second_start);
            CHECK(std::string(e.what()).find("bulwark::FileQueueStore") != std::string::npos);
        }
        CHECK(read_file(dir.journal()) == bytes);  // untouched
    }
    SECTION("point_in_time keeps what came before the damage") {
        FileQueueStoreOptions o;
        o.recovery = JournalRecovery::point_in_time;
        FileQueueStore store(dir.store(), o);
        CHECK(store.get("first").has_value());
        CHECK_FALSE(store.get("second").has_value());
        CHECK_FALSE(store.get("third").has_value());
        CHECK_FALSE(store.journal_stats().corrupt_copy.empty());
    }
    SECTION("skip_corrupt keeps every whole record") {
        FileQueueStoreOptions o;
        o.recovery = JournalRecovery::skip_corrupt;
        {
            FileQueueStore store(dir.store(), o);
            CHECK(store.get("first").has_value());
            CHECK_FALSE(store.get("second").has_value());
            CHECK(store.get("third").has_value());
            CHECK(store.journal_stats().corrupt_regions == 1);
            CHECK_FALSE(store.journal_stats().corrupt_copy.empty());
        }
        // Rewritten without the damage: the default mode opens it now.
        FileQueueStore store(dir.store());
        CHECK(store.size() == 2);
    }
}

TEST_CASE("FileQueueStore: damaged or foreign bytes never crash the open",
          "[queue_store][file][corruption]") {
    TempDir dir;
    {
        FileQueueStore store(dir.store());
        fill(store);
    }
    const std::string good = read_file(dir.journal());
    std::mt19937_64 rng(7);
    int opened = 0;
    int refused = 0;
    for (int i = 0; i < 120; ++i) {
        std::string bytes = good;
        const int flips = 1 + static_cast<int>(rng() % 4);
        for (int f = 0; f < flips; ++f) {
            const std::size_t at_byte = rng() % bytes.size();
            bytes[at_byte] = static_cast<char>(rng());
        }
        if (i % 10 == 0) {
            bytes.resize(rng() % bytes.size());
        }
        write_file(dir.journal(), bytes);
        FileQueueStoreOptions o;
        o.recovery = static_cast<JournalRecovery>(i % 4);
        try {
            FileQueueStore store(dir.store(), o);
            CHECK(store.size() <= 5);
            ++opened;
        } catch (const bulwark::JournalError&) {
            ++refused;
        }
        // Salvage keeps copies: remove them so that the next round starts clean.
        std::vector<std::filesystem::path> copies;
        for (const auto& entry : std::filesystem::directory_iterator(dir.store())) {
            if (entry.path().filename().string().rfind("journal.corrupt-", 0) == 0) {
                copies.push_back(entry.path());
            }
        }
        for (const auto& copy : copies) {
            std::filesystem::remove(copy);
        }
    }
    CHECK(opened + refused == 120);
    CHECK(opened > 0);
    CHECK(refused > 0);
    // A dead-letter journal is not a queue journal.
    TempDir other;
    { bulwark::FileDeadLetterStore dlq(other.store()); }
    try {
        FileQueueStore store(other.store());
        FAIL("a dead-letter journal was opened as a queue");
    } catch (const bulwark::JournalCorruptError& e) {
        CHECK(std::string(e.what()).find("not a bulwark queue journal") != std::string::npos);
    }
}

TEST_CASE("FileQueueStore: compaction keeps the live messages and shrinks the journal",
          "[queue_store][file]") {
    TempDir dir;
    FileQueueStoreOptions o;
    o.compact_min_bytes = 4096;
    o.sync = JournalSync::none;  // compaction syncs its own files whatever the mode
    std::string before;
    std::uint64_t highest = 0;
    {
        FileQueueStore store(dir.store(), o);
        store.push(message("keep", at(0), "kept"));
        for (int i = 0; i < 600; ++i) {
            const std::string id = "t" + std::to_string(i);
            store.push(message(id, at(0), std::string(64, 'z')));
            const auto batch = store.claim(at(i), 10, 1h);
            for (const QueuedMessage& m : batch) {
                highest = std::max(highest, m.lease);
                if (m.id != "keep") {
                    REQUIRE(store.complete(m.id, m.lease));
                }
            }
        }
        const bulwark::JournalStats s = store.journal_stats();
        CHECK(s.compactions > 0);
        CHECK(s.file_bytes <= std::max<std::uint64_t>(4096, 2 * s.live_bytes) + 512);
        CHECK(store.size() == 1);
        before = dump(store);
    }
    FileQueueStore store(dir.store(), o);
    CHECK(dump(store) == before);
    store.push(message("new", at(0)));
    const auto batch = store.claim(at(0), 10, 1h);
    REQUIRE(batch.size() == 1);
    CHECK(batch[0].lease > highest);
}

TEST_CASE("FileQueueStore: a failed write changes nothing, a failed sync poisons",
          "[queue_store][file][faults]") {
    bulwark::ManualClock clock;
    SECTION("every call of a push fails in turn") {
        std::size_t failures = 0;
        for (std::size_t n = 1;; ++n) {
            FaultFs fs;
            std::string before;
            bool failed = false;
            {
                FileQueueStore store(fault_dir, FileQueueStoreOptions{}, fs, clock);
                store.push(message("old", at(0)));
                before = dump(store);
                fs.fail_call(n, false);
                try {
                    store.push(message("new", at(0)));
                } catch (const bulwark::JournalIoError& e) {
                    failed = true;
                    ++failures;
                    if (e.poisoned()) {
                        CHECK(store.poisoned());
                        CHECK_THROWS_AS(store.push(message("more", at(0))),
                                        bulwark::JournalPoisonedError);
                        CHECK(store.get("old").has_value());  // reads still work
                    } else {
                        CHECK(dump(store) == before);  // rolled back
                        store.push(message("more", at(0)));
                        CHECK(store.size() == 2);
                    }
                }
            }
            fs.process_crash();
            FileQueueStore reopened(fault_dir, FileQueueStoreOptions{}, fs, clock);
            CHECK(reopened.get("old").has_value());
            if (!failed) {
                CHECK(reopened.get("new").has_value());
                break;
            }
        }
        CHECK(failures > 0);
    }
    SECTION("a failed sync of a complete") {
        FaultFs fs;
        FileQueueStore store(fault_dir, FileQueueStoreOptions{}, fs, clock);
        store.push(message("a", at(0)));
        const auto batch = store.claim(at(0), 1, 30s);
        REQUIRE(batch.size() == 1);
        store.push(message("z", at(50)));
        fs.fail_call(2, false);  // the write passes, the sync fails
        CHECK_THROWS_AS(store.complete("a", batch[0].lease), bulwark::JournalIoError);
        CHECK(store.poisoned());
        CHECK_THROWS_AS(store.push(message("b", at(0))), bulwark::JournalPoisonedError);
        CHECK_THROWS_AS(store.claim(at(100), 1, 30s), bulwark::JournalPoisonedError);
    }
}

TEST_CASE("FileQueueStore: a push of a held id is refused only once the held one is durable",
          "[queue_store][file][faults]") {
    bulwark::ManualClock clock;
    FaultFs fs;
    FileQueueStore store(fault_dir, FileQueueStoreOptions{}, fs, clock);
    fs.fail_call(2, false);  // the push's write passes, its sync fails
    CHECK_THROWS_AS(store.push(message("x", at(0))), bulwark::JournalIoError);
    REQUIRE(store.get("x").has_value());  // applied, but maybe not on disk
    // Not "already queued": the held x may vanish in a power cut.
    CHECK_THROWS_AS(store.push(message("x", at(0))), bulwark::JournalIoError);
    CHECK_THROWS_AS(store.push_all({message("x", at(0))}), bulwark::JournalIoError);
}

TEST_CASE("FileQueueStore: a second store on the directory is refused", "[queue_store][file]") {
    TempDir dir;
    {
        FileQueueStore first(dir.store());
        first.push(message("a", at(0)));
        CHECK_THROWS_AS(FileQueueStore(dir.store()), bulwark::JournalLockedError);
        CHECK(first.size() == 1);
    }
    FileQueueStore again(dir.store());
    CHECK(again.size() == 1);
}

TEST_CASE("FileQueueStore: limits and options are checked, naming the field",
          "[queue_store][file]") {
    TempDir dir;
    FileQueueStoreOptions o;
    o.max_size = 2;
    o.max_payload_bytes = 16;
    o.max_id_bytes = 8;
    FileQueueStore store(dir.store(), o);
    try {
        store.push(message("big", at(0), std::string(17, 'x')));
        FAIL("an oversize payload was accepted");
    } catch (const bulwark::QueueMessageTooLargeError& e) {
        CHECK(std::string(e.limit_name()) == "max_payload_bytes");
        CHECK(e.size() == 17);
        CHECK(e.limit() == 16);
    }
    CHECK_THROWS_AS(store.push(message("123456789", at(0))), bulwark::QueueMessageTooLargeError);
    store.push(message("a", at(0), std::string(16, 'x')));
    const auto batch = store.claim(at(0), 1, 30s);
    REQUIRE(batch.size() == 1);
    QueuedMessage big = batch[0];
    big.payload.assign(17, 'y');
    CHECK_THROWS_AS(store.release(big), bulwark::QueueMessageTooLargeError);
    CHECK(store.get("a")->lease == batch[0].lease);  // the lease stays
    store.push(message("b", at(0)));
    CHECK_THROWS_AS(store.push(message("c", at(0))), bulwark::QueueFullError);
    CHECK_THROWS_AS(store.push_all({message("c", at(0))}), bulwark::QueueFullError);
    CHECK(store.size() == 2);

    const auto refused = [&](FileQueueStoreOptions bad, const std::string& field) {
        try {
            FileQueueStore s(dir.store() + "-bad", bad);
            FAIL("invalid options were accepted: " << field);
        } catch (const std::invalid_argument& e) {
            CHECK(std::string(e.what()).find(field) != std::string::npos);
        }
    };
    FileQueueStoreOptions bad;
    bad.max_size = 0;
    refused(bad, "max_size");
    bad = {};
    bad.max_payload_bytes = (std::size_t{64} << 20U) + 1;
    refused(bad, "67108865");
    bad = {};
    bad.compact_min_bytes = 100;
    refused(bad, "compact_min_bytes");
    bad = {};
    bad.batch_records = 0;
    refused(bad, "batch_records");
    bad = {};
    bad.sync = static_cast<JournalSync>(9);
    refused(bad, "sync");
}

namespace file_queue_store_test {

// The child of the SIGKILL test: `threads` threads each push a message ("p <id>" written to the
// pipe once push() returned), claim one ("l <id> <token>"), and complete it ("c <id>") or
// release it with payload "r" and a far due time ("r <id>").
[[noreturn]] void kill_child(const std::string& directory, int pipe_fd, int threads) {
    FileQueueStore store(directory);
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
        workers.emplace_back([&store, pipe_fd, t] {
            const auto report = [pipe_fd](const std::string& line) {
                if (::write(pipe_fd, line.data(), line.size()) !=
                    static_cast<ssize_t>(line.size())) {
                    ::_exit(3);
                }
            };
            try {
                for (int i = 0;; ++i) {
                    const std::string id = "t" + std::to_string(t) + "-" + std::to_string(i);
                    store.push(message(id, at(0), std::string(64, 'p')));
                    report("p " + id + "\n");
                    const auto batch = store.claim(at(0), 1, 1h);
                    for (QueuedMessage m : batch) {
                        report("l " + m.id + " " + std::to_string(m.lease) + "\n");
                        if (i % 2 == 0) {
                            if (!store.complete(m.id, m.lease)) {
                                ::_exit(4);
                            }
                            report("c " + m.id + "\n");
                        } else {
                            m.payload = "r";
                            m.due = at(1000000);
                            if (!store.release(m)) {
                                ::_exit(4);
                            }
                            report("r " + m.id + "\n");
                        }
                    }
                }
            } catch (...) {
                ::_exit(2);
            }
        });
    }
    for (std::thread& w : workers) {
        w.join();
    }
    ::_exit(0);
}

// Reads what is there within `timeout_ms` into `out`: false on timeout (`eof` set when the
// writer is gone).
bool read_some(int fd, std::string& out, int timeout_ms, bool& eof) {
    pollfd p{fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, timeout_ms);
    if (ready == 0) {
        return false;
    }
    if (ready < 0) {
        return errno == EINTR;
    }
    char buffer[4096];
    const ssize_t got = ::read(fd, buffer, sizeof buffer);
    if (got > 0) {
        out.append(buffer, static_cast<std::size_t>(got));
    } else if (got == 0 || errno != EINTR) {
        eof = true;
    }
    return true;
}

}  // namespace file_queue_store_test

TEST_CASE("FileQueueStore: nothing acknowledged is lost or undone when the process is killed",
          "[queue_store][file][kill]") {
    std::mt19937_64 rng(11);
    for (int round = 0; round < 20; ++round) {
        TempDir dir;
        int fds[2];
        REQUIRE(::pipe(fds) == 0);
        const pid_t child = ::fork();
        REQUIRE(child >= 0);
        if (child == 0) {
            ::close(fds[0]);
            try {
                kill_child(dir.store(), fds[1], 2);
            } catch (...) {
                ::_exit(2);
            }
        }
        ::close(fds[1]);
        // Killed after a random number of acknowledged calls, while others are in flight.
        const std::size_t kill_after = 20 + rng() % 200;
        std::string text;
        bool eof = false;
        bool timed_out = false;
        while (!eof &&
               static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n')) < kill_after) {
            if (!read_some(fds[0], text, 10000, eof)) {
                timed_out = true;
                break;
            }
        }
        ::kill(child, SIGKILL);
        while (!eof && !timed_out) {
            timed_out = !read_some(fds[0], text, 10000, eof);
        }
        ::close(fds[0]);
        int status = 0;
        REQUIRE(::waitpid(child, &status, 0) == child);
        if (timed_out) {
            FAIL("the child wrote nothing for 10 s");
        }
        INFO("round " << round << ", child status " << status);
        REQUIRE(WIFSIGNALED(status));
        REQUIRE(WTERMSIG(status) == SIGKILL);
        std::set<std::string> pushed;
        std::set<std::string> claimed;
        std::set<std::string> completed;
        std::set<std::string> released;
        std::uint64_t highest = 0;
        std::istringstream lines(text);
        for (std::string line; std::getline(lines, line);) {
            REQUIRE(line.size() > 2);
            std::string id = line.substr(2);
            if (line[0] == 'l') {
                const std::size_t space = id.find(' ');
                REQUIRE(space != std::string::npos);
                highest = std::max<std::uint64_t>(highest, std::stoull(id.substr(space + 1)));
                id.resize(space);
            }
            (line[0] == 'p'   ? pushed
             : line[0] == 'l' ? claimed
             : line[0] == 'c' ? completed
                              : released)
                .insert(id);
        }
        FileQueueStore store(dir.store());
        std::size_t lost = 0;
        std::size_t undone = 0;
        for (const std::string& id : pushed) {
            const auto m = store.get(id);
            if (completed.count(id) != 0) {
                undone += m.has_value() ? 1U : 0U;
            } else if (!m.has_value()) {
                // Only a complete in flight (the message was claimed) may have removed it.
                lost += claimed.count(id) != 0 ? 0U : 1U;
            }
        }
        for (const std::string& id : released) {
            const auto m = store.get(id);
            undone += m.has_value() && m->payload == "r" && m->due == at(1000000) ? 0U : 1U;
        }
        CHECK(lost == 0);
        CHECK(undone == 0);
        CHECK_FALSE(completed.empty());
        for (const QueuedMessage& m : store.claim(at(2000000), 100000, 1h)) {
            CHECK(m.lease > highest);
        }
    }
}

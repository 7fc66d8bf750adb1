// FileDeadLetterStore: the conformance suite on the real file system, reopen, simulated power
// loss at every sync point (R2), injected I/O errors at every call (R3, R12), journal corruption
// (R5), security defaults (R13) and a SIGKILL crash test (R1).
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <poll.h>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <system_error>
#include <thread>
#include <unistd.h>
#include <vector>

#include <bulwark/dead_letter.hpp>
#include <bulwark/file_dead_letter_store.hpp>

#include "catch.hpp"
#include "dead_letter_conformance.hpp"
#include "fault_fs.hpp"

using namespace std::chrono_literals;
using bulwark::DeadLetter;
using bulwark::DeadLetterQuery;
using bulwark::DeadLetterStatus;
using bulwark::FileDeadLetterStore;
using bulwark::FileDeadLetterStoreOptions;
using bulwark::JournalRecovery;
using bulwark::JournalSync;
using bulwark::ManualClock;
using bulwark_test::FaultFs;
using bulwark_test::SimulatedCrash;

namespace file_dead_letter_store_test {

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr int scale = 1;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
constexpr int scale = 1;
#else
constexpr int scale = 2;
#endif
#else
constexpr int scale = 2;
#endif

// A fresh directory under /tmp, removed with everything in it.
class TempDir {
public:
    TempDir() {
        char pattern[] = "/tmp/bulwark-dlq-XXXXXX";
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

    const std::string& path() const noexcept { return path_; }
    std::string store() const { return path_ + "/dlq"; }

private:
    std::string path_;
};

// Sets the umask for a scope.
class UmaskGuard {
public:
    explicit UmaskGuard(mode_t mask) noexcept : old_(::umask(mask)) {}
    UmaskGuard(const UmaskGuard&) = delete;
    UmaskGuard& operator=(const UmaskGuard&) = delete;
    ~UmaskGuard() { ::umask(old_); }

private:
    mode_t old_;
};

struct TempDirHolder {
    TempDir temp;
};

// A store that owns (and removes) its directory: the conformance factory's product.
class OwnedFileStore : private TempDirHolder, public FileDeadLetterStore {
public:
    explicit OwnedFileStore(ManualClock& clock)
        : FileDeadLetterStore(temp.store(), FileDeadLetterStoreOptions{},
                              bulwark::default_file_system(), clock) {}
};

std::unique_ptr<bulwark::DeadLetterStore> make_file_store(ManualClock& clock) {
    return std::make_unique<OwnedFileStore>(clock);
}

// Every field of every record, in list order: two stores hold the same records iff equal.
std::string dump(const bulwark::DeadLetterStore& store) {
    std::ostringstream out;
    const auto t = [](bulwark::WallTime w) {
        return w.time_since_epoch().count();
    };
    for (const DeadLetter& d : store.list()) {
        out << d.id << '|' << d.type << '|' << d.payload.size() << ':' << d.payload << '|'
            << d.error << '|' << static_cast<int>(d.reason) << '|' << d.category << '|';
        for (const std::string& tag : d.tags) {
            out << tag << ',';
        }
        out << '|';
        for (const bulwark::DeadLetterAttempt& a : d.attempts) {
            out << t(a.at) << '/' << a.channel << '/' << a.error << ',';
        }
        out << '|' << t(d.created) << '|' << t(d.last_attempt) << '|' << static_cast<int>(d.status)
            << '|' << d.redrives << '|' << d.note << '\n';
    }
    return out.str();
}

bulwark::TimePoint op_time(int i) {
    return bulwark::TimePoint{std::chrono::hours(24)} + std::chrono::seconds(i);
}

DeadLetter workload_letter(int i) {
    static const char* const types[] = {"sms", "email", "push"};
    DeadLetter d;
    d.id = "m" + std::to_string(i);
    d.type = types[i % 3];
    const int size = (i * 97) % 700;
    for (int b = 0; b < size; ++b) {
        d.payload.push_back(static_cast<char>((b * 7 + i) & 0xFF));  // NULs included
    }
    d.error = "provider 503";
    d.reason = static_cast<bulwark::DeadLetterReason>(i % 6);
    if (i % 2 == 1) {
        d.tags = {"odd"};
    }
    if (i % 4 == 2) {
        // A payload may hold anything, journal frames included: a remove of the previous record
        // and the add of a forged one, framed for salt 0 and for another salt (a producer cannot
        // know the journal's). Corruption near them must never turn them into records.
        namespace j = bulwark::detail::journal;
        j::Record remove;
        remove.type = j::RecordType::remove;
        remove.id = "m" + std::to_string(i - 1);
        j::Record forged;
        forged.type = j::RecordType::add;
        forged.letter.id = "forged" + std::to_string(i);
        forged.letter.type = "sms";
        for (const std::uint32_t seed : {0U, j::salt_seed(static_cast<std::uint64_t>(i) * 7919U)}) {
            j::encode_record(remove, d.payload, j::Framing{seed}, 1);
            j::encode_record(forged, d.payload, j::Framing{seed}, 2);
        }
    }
    return d;
}

// Operation i of the deterministic workload that the durability tests drive: adds, dismisses,
// categorizes, reprocess outcomes and purges, with evictions once 12 records are stored. Each
// operation writes at most one journal frame. A full store (every record pending) is a normal
// outcome, the same for every store.
void run_op(bulwark::DeadLetterStore& store, ManualClock& clock, int i) {
    clock.set(op_time(i));
    try {
        switch (i % 8) {
            case 3:
                store.dismiss(DeadLetterQuery{}.id("m" + std::to_string(i - 2)),
                              "note " + std::to_string(i));
                return;
            case 5:
                store.categorize(DeadLetterQuery{}.id("m" + std::to_string(i - 5)),
                                 i % 16 == 5 ? "outage" : "bounced", {"t" + std::to_string(i % 3)});
                return;
            case 7:
                store.reprocess(DeadLetterQuery{}.id("m" + std::to_string(i - 7)),
                                [i](const DeadLetter&) {
                                    if ((i / 8) % 3 == 2) {
                                        throw std::runtime_error("still down");
                                    }
                                    return (i / 8) % 3 == 0;
                                });
                return;
            default:
                if (i % 16 == 14) {
                    store.purge(clock.wall_now() - 20s);
                } else {
                    store.add(workload_letter(i));
                }
                return;
        }
    } catch (const bulwark::DeadLetterStoreFullError&) {
    }
}

constexpr std::size_t workload_max_entries = 12;

FileDeadLetterStoreOptions workload_options() {
    FileDeadLetterStoreOptions o;
    o.max_entries = workload_max_entries;
    o.max_attempts = 4;
    o.compact_min_bytes = 4096;  // compacts several times during the workload
    return o;
}

// The in-memory store after running the given operations: the oracle.
std::string model(const std::vector<int>& ops) {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStoreOptions o;
    o.max_entries = workload_max_entries;
    o.max_attempts = 4;
    bulwark::InMemoryDeadLetterStore store(o, clock);
    for (const int i : ops) {
        run_op(store, clock, i);
    }
    return dump(store);
}

// states[i] = the model after operations 0..i-1.
std::vector<std::string> model_states(int n) {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStoreOptions o;
    o.max_entries = workload_max_entries;
    o.max_attempts = 4;
    bulwark::InMemoryDeadLetterStore store(o, clock);
    std::vector<std::string> states{dump(store)};
    for (int i = 0; i < n; ++i) {
        run_op(store, clock, i);
        states.push_back(dump(store));
    }
    return states;
}

const std::string fault_dir = "/fault/dlq";
const std::string fault_journal = "/fault/dlq/journal";

}  // namespace file_dead_letter_store_test

using namespace file_dead_letter_store_test;

// ---- 1. the conformance suite, on the real file system ----------------------------------------

BULWARK_DEAD_LETTER_CONFORMANCE("FileDeadLetterStore", file_dead_letter_store_test::make_file_store)

// ---- 2. reopen ----------------------------------------------------------------------------------

TEST_CASE("FileDeadLetterStore: everything acknowledged is there after reopen, stats included",
          "[dead_letter][file]") {
    const bool compacting = GENERATE(false, true);
    TempDir dir;
    FileDeadLetterStoreOptions o = workload_options();
    if (!compacting) {
        o.compact_min_bytes = std::uint64_t{1} << 40U;
    }
    const int n = 64;
    std::string before;
    bulwark::DeadLetterStats stats_before;
    {
        ManualClock clock;
        FileDeadLetterStore store(dir.store(), o, bulwark::default_file_system(), clock);
        for (int i = 0; i < n; ++i) {
            run_op(store, clock, i);
        }
        before = dump(store);
        stats_before = store.stats();
        CHECK((store.journal_stats().compactions > 0) == compacting);
    }
    REQUIRE(before == model_states(n).back());
    CHECK(stats_before.evicted > 0);
    CHECK(stats_before.purged > 0);
    CHECK(stats_before.resent > 0);
    CHECK(stats_before.redrive_failures > 0);
    ManualClock clock;
    FileDeadLetterStore reopened(dir.store(), o, bulwark::default_file_system(), clock);
    CHECK(dump(reopened) == before);
    const bulwark::DeadLetterStats s = reopened.stats();
    CHECK(s.total == stats_before.total);
    CHECK(s.pending == stats_before.pending);
    CHECK(s.reprocessed == stats_before.reprocessed);
    CHECK(s.dismissed == stats_before.dismissed);
    CHECK(s.by_reason == stats_before.by_reason);
    CHECK(s.by_type == stats_before.by_type);
    CHECK(s.by_category == stats_before.by_category);
    CHECK(s.added == stats_before.added);
    CHECK(s.evicted == stats_before.evicted);
    CHECK(s.purged == stats_before.purged);
    CHECK(s.resent == stats_before.resent);
    CHECK(s.redrive_failures == stats_before.redrive_failures);
    // Counted since open, not journaled (documented).
    CHECK(s.duplicate_adds == 0);
    CHECK(s.rejected_full == 0);
    CHECK(s.rejected_too_large == 0);
    const bulwark::JournalStats js = reopened.journal_stats();
    CHECK(js.recovered_records > 0);
    CHECK(js.dropped_tail_bytes == 0);
    CHECK_FALSE(js.poisoned);
    // And it keeps working.
    CHECK(reopened.add(workload_letter(1000)) == "m1000");
}

TEST_CASE("FileDeadLetterStore: a store reopened on a compacted journal keeps accepting records",
          "[dead_letter][file]") {
    TempDir dir;
    FileDeadLetterStoreOptions o;
    o.compact_min_bytes = 4096;
    ManualClock clock;
    std::uint64_t live = 0;
    {
        FileDeadLetterStore store(dir.store(), o, bulwark::default_file_system(), clock);
        std::uint64_t compactions = 0;
        for (int i = 0; i < 200; ++i) {
            store.add(workload_letter(i));
            if (i % 10 == 9) {
                store.purge(clock.wall_now() + 1s);  // nothing stays: the journal is garbage
            }
            const bulwark::JournalStats js = store.journal_stats();
            if (js.compactions != compactions) {
                compactions = js.compactions;
                // The live-data estimate that triggers compaction is exactly what it writes.
                CHECK(js.file_bytes == js.live_bytes);
            }
        }
        const bulwark::JournalStats js = store.journal_stats();
        CHECK(js.compactions > 0);
        CHECK(js.file_bytes <= 2 * o.compact_min_bytes);
        live = js.file_bytes;
        CHECK(store.stats().purged == 200);
    }
    FileDeadLetterStore store(dir.store(), o, bulwark::default_file_system(), clock);
    CHECK(store.size() == 0);
    CHECK(store.stats().added == 200);
    CHECK(store.stats().purged == 200);
    CHECK(store.journal_stats().file_bytes == live);
}

// ---- 3. simulated power loss at every sync point (R2) ------------------------------------------

namespace file_dead_letter_store_test {

struct CrashRun {
    int acknowledged = 0;  // operations that returned
    bool crashed = false;
};

CrashRun run_until_crash(FaultFs& fs, const FileDeadLetterStoreOptions& o, std::size_t k, int n) {
    CrashRun run;
    ManualClock clock;
    fs.crash_at_sync(k);
    try {
        FileDeadLetterStore store(fault_dir, o, fs, clock);
        for (int i = 0; i < n; ++i) {
            run_op(store, clock, i);
            run.acknowledged = i + 1;
        }
    } catch (const SimulatedCrash&) {
        run.crashed = true;
    }
    return run;
}

void check_power_loss(const FileDeadLetterStoreOptions& o, int window) {
    const int n = 48;
    const std::vector<std::string> states = model_states(n);
    std::mt19937_64 rng(20261124);
    std::size_t crash_points = 0;
    for (const FaultFs::Damage damage :
         {FaultFs::Damage::drop_unsynced, FaultFs::Damage::keep_prefix,
          FaultFs::Damage::garbage_tail, FaultFs::Damage::drop_dir_entries}) {
        const int repeats =
            damage == FaultFs::Damage::keep_prefix || damage == FaultFs::Damage::garbage_tail ? 5
                                                                                              : 1;
        for (std::size_t k = 1;; ++k) {
            bool crashed = false;
            for (int r = 0; r < repeats; ++r) {
                FaultFs fs;
                const CrashRun run = run_until_crash(fs, o, k, n);
                crashed = run.crashed;
                if (!crashed) {
                    break;
                }
                ++crash_points;
                fs.crash(damage, rng);
                ManualClock clock;
                std::string recovered;
                REQUIRE_NOTHROW([&] {
                    FileDeadLetterStore store(fault_dir, o, fs, clock);
                    recovered = dump(store);
                }());
                // Every acknowledged operation is there, and nothing out of order: the state is
                // the model's after a prefix of the issued operations (for sync=batch, at most
                // `window` acknowledged operations lost).
                bool matched = false;
                // `window` counts operations that wrote a record (changed the state).
                int lowest = run.acknowledged;
                for (int writes = 0; lowest > 0; --lowest) {
                    const auto at = static_cast<std::size_t>(lowest);
                    writes += states[at] != states[at - 1] ? 1 : 0;
                    if (writes > window) {
                        break;
                    }
                }
                const int highest = std::min(n, run.acknowledged + 1);
                for (int j = lowest; j <= highest && !matched; ++j) {
                    matched = recovered == states[static_cast<std::size_t>(j)];
                }
                INFO("sync point " << k << ", damage " << static_cast<int>(damage) << ", repeat "
                                   << r << ", acknowledged " << run.acknowledged);
                CHECK(matched);
            }
            if (!crashed) {
                break;
            }
        }
    }
    CHECK(crash_points > 100);
    // The sweep went through compactions too.
    FaultFs fs;
    ManualClock clock;
    FileDeadLetterStore store(fault_dir, o, fs, clock);
    for (int i = 0; i < n; ++i) {
        run_op(store, clock, i);
    }
    CHECK(store.journal_stats().compactions >= 1);
}

}  // namespace file_dead_letter_store_test

TEST_CASE("FileDeadLetterStore: sync=always loses nothing acknowledged at any power loss",
          "[dead_letter][file][crash]") {
    check_power_loss(workload_options(), 0);
}

TEST_CASE("FileDeadLetterStore: sync=batch loses at most batch_records - 1 acknowledged writes",
          "[dead_letter][file][crash]") {
    FileDeadLetterStoreOptions o = workload_options();
    o.sync = JournalSync::batch;
    o.batch_records = 3;
    o.batch_interval = std::chrono::hours(1);
    check_power_loss(o, 2);
}

TEST_CASE("FileDeadLetterStore: sync=batch syncs once batch_interval has passed",
          "[dead_letter][file]") {
    FaultFs fs;
    ManualClock clock;
    FileDeadLetterStoreOptions o;
    o.sync = JournalSync::batch;
    o.batch_records = 1000;
    o.batch_interval = 50ms;
    FileDeadLetterStore store(fault_dir, o, fs, clock);
    store.add(workload_letter(1));
    CHECK(store.journal_stats().unsynced_records == 1);
    clock.advance(50ms);
    store.add(workload_letter(2));
    CHECK(store.journal_stats().unsynced_records == 0);
    store.add(workload_letter(3));
    store.sync();
    CHECK(store.journal_stats().unsynced_records == 0);
}

TEST_CASE("FileDeadLetterStore: sync=none writes but never syncs", "[dead_letter][file]") {
    FaultFs fs;
    ManualClock clock;
    FileDeadLetterStoreOptions o;
    o.sync = JournalSync::none;
    std::size_t syncs_at_open = 0;
    {
        FileDeadLetterStore store(fault_dir, o, fs, clock);
        syncs_at_open = fs.syncs();
        for (int i = 0; i < 10; ++i) {
            store.add(workload_letter(i));
        }
        CHECK(fs.syncs() == syncs_at_open);
        CHECK(store.journal_stats().unsynced_records == 10);
    }
    // A process crash keeps what was written (the page cache survives).
    FileDeadLetterStore store(fault_dir, o, fs, clock);
    CHECK(store.size() == 10);
}

TEST_CASE(
    "FileDeadLetterStore: concurrent writers and a redrive leave a journal that replays "
    "to the same state",
    "[dead_letter][file]") {
    FaultFs fs;
    ManualClock clock;
    FileDeadLetterStoreOptions o;
    o.compact_min_bytes = 4096;
    std::string before;
    {
        FileDeadLetterStore store(fault_dir, o, fs, clock);
        std::vector<std::thread> threads;
        for (int t = 0; t < 4; ++t) {
            threads.emplace_back([&store, t] {
                for (int i = 0; i < 150; ++i) {
                    DeadLetter d = workload_letter(i);
                    d.id = "w" + std::to_string(t) + "-" + std::to_string(i);
                    store.add(d);
                    if (i % 3 == 0) {
                        store.dismiss(DeadLetterQuery{}.id(d.id), "dup");
                    }
                    if (i % 50 == 49) {
                        store.categorize(DeadLetterQuery{}.tag("odd"), "odd-ones", {"seen"});
                    }
                }
            });
        }
        threads.emplace_back([&store] {
            for (int round = 0; round < 20; ++round) {
                store.reprocess(DeadLetterQuery{}.limit(10),
                                [](const DeadLetter& d) { return d.payload.size() % 2 == 0; });
            }
        });
        for (std::thread& t : threads) {
            t.join();
        }
        CHECK(store.size() == 600);
        // Each record dismissed right after its add is dismissed, or was resent first.
        CHECK(store.stats().dismissed + store.stats().reprocessed >= 4 * 50);
        CHECK(store.stats().dismissed > 0);
        before = dump(store);
    }
    FileDeadLetterStore reopened(fault_dir, o, fs, clock);
    CHECK(dump(reopened) == before);
}

TEST_CASE("FaultFs: a directory never made durable loses its entries at a power loss",
          "[dead_letter][file][crash]") {
    FaultFs fs;
    std::mt19937_64 rng(1);
    fs.make_dir("/fault/d");
    const FaultFs::Handle h = fs.open("/fault/d/f", true, false);
    fs.write_at(h, 0, "x");
    fs.sync(h);
    fs.sync_dir("/fault/d");  // the entry is durable in d, but d itself is not in /fault
    fs.close(h);
    fs.crash(FaultFs::Damage::drop_dir_entries, rng);
    CHECK(fs.kind("/fault/d") == bulwark::FileSystem::Kind::missing);
    CHECK(fs.kind("/fault/d/f") == bulwark::FileSystem::Kind::missing);
}

TEST_CASE(
    "FileDeadLetterStore: a process crash at any sync point, a reopen, an add and a power loss "
    "keep the add",
    "[dead_letter][file][crash]") {
    // The process dies at sync point k (a directory sync after a mkdir, a journal creation or a
    // compaction's rename included): what it wrote stays in the page cache, nothing more is
    // made durable. A new process opens the store and adds a record (synced); then the power
    // fails. The add must survive: open made every name durable before accepting it.
    const int n = 48;
    FileDeadLetterStoreOptions o = workload_options();
    std::mt19937_64 rng(11);
    std::size_t crash_points = 0;
    for (const FaultFs::Damage damage :
         {FaultFs::Damage::drop_dir_entries, FaultFs::Damage::drop_unsynced}) {
        for (std::size_t k = 1;; ++k) {
            FaultFs fs;
            const CrashRun run = run_until_crash(fs, o, k, n);
            if (!run.crashed) {
                break;
            }
            ++crash_points;
            fs.process_crash();
            ManualClock clock;
            std::string before;
            FileDeadLetterStoreOptions roomy = o;
            roomy.max_entries = 1000;  // the workload may have filled the store with pending ones
            REQUIRE_NOTHROW([&] {
                FileDeadLetterStore store(fault_dir, roomy, fs, clock);
                before = dump(store);
                DeadLetter d = workload_letter(1000);
                d.id = "ACKED";
                store.add(d);
            }());
            fs.crash(damage, rng);
            INFO("sync point " << k << ", damage " << static_cast<int>(damage));
            FileDeadLetterStore store(fault_dir, roomy, fs, clock);
            CHECK(store.get("ACKED").has_value());
            CHECK(store.size() >= 1);
        }
    }
    CHECK(crash_points > 50);
}

// ---- salted frames: payloads, torn tails, head damage
// ----------------------------------------------------------

namespace file_dead_letter_store_test {

// The victim, an add whose payload holds encoded frames (a remove of the victim and a forged
// add), and a later record; `attacker` = where the attacker's frame is.
struct EmbeddedJournal {
    std::string bytes;
    std::size_t attacker = 0;
    std::size_t attacker_end = 0;
};

EmbeddedJournal embedded_journal() {
    namespace j = bulwark::detail::journal;
    std::string evil;
    for (const std::uint32_t seed : {0U, j::salt_seed(0), j::salt_seed(123456789)}) {
        j::Record remove;
        remove.type = j::RecordType::remove;
        remove.id = "victim";
        j::encode_record(remove, evil, j::Framing{seed}, 2);
        j::Record forged;
        forged.type = j::RecordType::add;
        forged.letter.id = "forged";
        forged.letter.type = "sms";
        forged.letter.payload = "injected";
        j::encode_record(forged, evil, j::Framing{seed}, 3);
    }
    FaultFs fs;
    ManualClock clock;
    EmbeddedJournal out;
    FileDeadLetterStore store(fault_dir, FileDeadLetterStoreOptions{}, fs, clock);
    DeadLetter victim;
    victim.id = "victim";
    victim.type = "sms";
    victim.payload = "important";
    store.add(victim);
    out.attacker = fs.contents(fault_journal).size();
    DeadLetter attacker;
    attacker.id = "attacker";
    attacker.type = "sms";
    attacker.payload = evil;
    store.add(attacker);
    out.attacker_end = fs.contents(fault_journal).size();
    DeadLetter later;
    later.id = "later";
    later.type = "sms";
    later.payload = "after";
    store.add(later);
    out.bytes = fs.contents(fault_journal);
    return out;
}

}  // namespace file_dead_letter_store_test

TEST_CASE("FileDeadLetterStore: frames inside a payload are never taken for records",
          "[dead_letter][file][corruption]") {
    const EmbeddedJournal e = embedded_journal();
    ManualClock clock;
    // Damage anywhere in the attacker's frame, then salvage: the embedded frames stay data.
    for (std::size_t at = e.attacker; at < e.attacker_end; ++at) {
        std::string bytes = e.bytes;
        bytes[at] = static_cast<char>(static_cast<unsigned char>(bytes[at]) ^ 0x01U);
        FaultFs fs;
        fs.put(fault_journal, bytes);
        FileDeadLetterStoreOptions o;
        o.recovery = JournalRecovery::skip_corrupt;
        FileDeadLetterStore store(fault_dir, o, fs, clock);
        INFO("bit flip at " << at);
        CHECK(store.get("victim").has_value());
        CHECK_FALSE(store.get("forged").has_value());
        CHECK(store.get("later").has_value());
        CHECK(store.journal_stats().corrupt_regions == 1);
    }
    // The attacker's add torn anywhere (a crash mid-write): the default mode drops just that.
    for (std::size_t cut = e.attacker + 1; cut < e.attacker_end; ++cut) {
        FaultFs fs;
        fs.put(fault_journal, e.bytes.substr(0, cut));
        FileDeadLetterStore store(fault_dir, FileDeadLetterStoreOptions{}, fs, clock);
        INFO("cut at " << cut);
        CHECK(store.size() == 1);
        CHECK(store.get("victim").has_value());
        CHECK(store.journal_stats().dropped_tail_bytes == cut - e.attacker);
    }
}

TEST_CASE(
    "FileDeadLetterStore: a large binary payload torn mid-write is dropped as a torn tail, "
    "unscanned",
    "[dead_letter][file][corruption]") {
    FaultFs fs;
    ManualClock clock;
    std::size_t before = 0;
    std::string full;
    {
        FileDeadLetterStore store(fault_dir, FileDeadLetterStoreOptions{}, fs, clock);
        for (int i = 0; i < 10; ++i) {
            store.add(workload_letter(i));
        }
        before = fs.contents(fault_journal).size();
        DeadLetter big;
        big.id = "big";
        big.type = "blob";
        for (int i = 0; i < (1 << 19); ++i) {  // 1 MiB of little-endian u16 ones
            big.payload.push_back('\x01');
            big.payload.push_back('\x00');
        }
        store.add(big);
        full = fs.contents(fault_journal);
    }
    const std::size_t cut = before + (full.size() - before) / 2;
    FaultFs torn;
    torn.put(fault_journal, full.substr(0, cut));
    FileDeadLetterStore store(fault_dir, FileDeadLetterStoreOptions{}, torn, clock);
    CHECK(store.size() == 10);
    CHECK_FALSE(store.get("big").has_value());
    CHECK(store.journal_stats().dropped_tail_bytes == cut - before);
    CHECK(store.journal_stats().corrupt_copy.empty());  // a torn tail is no damage: no copy
}

TEST_CASE(
    "FileDeadLetterStore: damage to the last record's length, header check or type is "
    "damage, not a torn tail",
    "[dead_letter][file][corruption]") {
    // The last record is whole and synced; bit rot hits its head. tolerate_torn_tail fails the
    // open at that record (it is not a torn write); point_in_time and skip_corrupt drop it and
    // keep a copy of the file; strict fails.
    FaultFs fs;
    ManualClock clock;
    std::size_t last = 0;
    {
        FileDeadLetterStore store(fault_dir, FileDeadLetterStoreOptions{}, fs, clock);
        store.add(workload_letter(1));
        last = fs.contents(fault_journal).size();
        store.add(workload_letter(2));
    }
    const std::string good = fs.contents(fault_journal);
    for (std::size_t byte = 0; byte < bulwark::detail::journal::frame_overhead; ++byte) {
        if (byte >= 8 && byte < 12) {
            continue;  // the body CRC: a last frame whose body fails is a torn write (see docs)
        }
        for (unsigned bit = 0; bit < 8; bit += 3) {
            std::string bytes = good;
            bytes[last + byte] =
                static_cast<char>(static_cast<unsigned char>(bytes[last + byte]) ^ (1U << bit));
            INFO("byte " << byte << " bit " << bit);
            for (const JournalRecovery mode :
                 {JournalRecovery::tolerate_torn_tail, JournalRecovery::strict}) {
                FaultFs damaged;
                damaged.put(fault_journal, bytes);
                FileDeadLetterStoreOptions o;
                o.recovery = mode;
                try {
                    FileDeadLetterStore store(fault_dir, o, damaged, clock);
                    FAIL("a damaged synced record was dropped silently");
                } catch (const bulwark::DeadLetterJournalCorruptError& e) {
                    CHECK(e.offset() == last);
                    CHECK(std::string(e.what()).find("skip_corrupt to salvage") ==
                          std::string::npos);
                }
                CHECK(damaged.contents(fault_journal) == bytes);  // untouched
            }
            for (const JournalRecovery mode :
                 {JournalRecovery::point_in_time, JournalRecovery::skip_corrupt}) {
                FaultFs damaged;
                damaged.put(fault_journal, bytes);
                FileDeadLetterStoreOptions o;
                o.recovery = mode;
                FileDeadLetterStore store(fault_dir, o, damaged, clock);
                CHECK(store.size() == 1);
                const bulwark::JournalStats js = store.journal_stats();
                CHECK(js.corrupt_copy == fault_journal + ".corrupt-0");
                CHECK(damaged.contents(js.corrupt_copy) == bytes);
            }
        }
    }
}

TEST_CASE("FileDeadLetterStore: salvage keeps a copy of the journal before changing it",
          "[dead_letter][file][corruption]") {
    TempDir dir;
    ManualClock clock;
    std::size_t first_end = 0;
    {
        FileDeadLetterStore store(dir.store(), FileDeadLetterStoreOptions{},
                                  bulwark::default_file_system(), clock);
        store.add(workload_letter(1));
        first_end = std::filesystem::file_size(dir.store() + "/journal");
        store.add(workload_letter(2));
        store.add(workload_letter(3));
    }
    const std::string journal = dir.store() + "/journal";
    std::string bytes;
    {
        std::ifstream in(journal, std::ios::binary);
        bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    bytes[first_end + 20] ^= 0x40;  // the second record's body: valid records follow
    for (const JournalRecovery mode :
         {JournalRecovery::point_in_time, JournalRecovery::skip_corrupt}) {
        {
            std::ofstream out(journal, std::ios::binary | std::ios::trunc);
            out << bytes;
        }
        FileDeadLetterStoreOptions o;
        o.recovery = mode;
        FileDeadLetterStore store(dir.store(), o, bulwark::default_file_system(), clock);
        CHECK(store.size() == (mode == JournalRecovery::point_in_time ? 1U : 2U));
        const std::string copy = store.journal_stats().corrupt_copy;
        CHECK(copy ==
              journal + (mode == JournalRecovery::point_in_time ? ".corrupt-0" : ".corrupt-1"));
        struct stat st {};
        REQUIRE(::stat(copy.c_str(), &st) == 0);
        CHECK((st.st_mode & 07777) == 0600);
        std::ifstream in(copy, std::ios::binary);
        const std::string kept((std::istreambuf_iterator<char>(in)),
                               std::istreambuf_iterator<char>());
        CHECK(kept == bytes);
    }
}

// ---- 4. injected I/O errors (R3, R12)
// ------------------------------------------------------------

TEST_CASE("FileDeadLetterStore: an I/O error at any call never becomes a false acknowledgement",
          "[dead_letter][file][io]") {
    const bool forever = GENERATE(false, true);
    const int n = 40;
    std::mt19937_64 rng(7);
    std::size_t runs = 0;
    std::size_t poisoned_runs = 0;
    for (std::size_t call = 1;; ++call) {
        FaultFs fs;
        ManualClock clock;
        fs.fail_call(call, forever, EIO);
        std::vector<int> ok;
        int in_doubt = -1;
        bool opened = false;
        {
            std::unique_ptr<FileDeadLetterStore> store;
            try {
                store =
                    std::make_unique<FileDeadLetterStore>(fault_dir, workload_options(), fs, clock);
                opened = true;
            } catch (const bulwark::FileDeadLetterStoreError&) {
            }
            for (int i = 0; opened && i < n; ++i) {
                try {
                    run_op(*store, clock, i);
                    ok.push_back(i);
                } catch (const bulwark::DeadLetterJournalIoError& e) {
                    if (e.poisoned() && in_doubt < 0) {
                        in_doubt = i;  // its record may or may not have reached the disk
                    }
                } catch (const bulwark::DeadLetterStorePoisonedError&) {
                    CHECK(store->poisoned());
                }
            }
            INFO("failing call " << call << (forever ? " onwards" : " once"));
            if (opened && fs.first_fault_synced(fault_journal)) {
                CHECK(store->poisoned());  // a failed sync of the journal always poisons
            }
            if (opened && store->poisoned()) {
                ++poisoned_runs;
                CHECK_THROWS_AS(store->sync(), bulwark::DeadLetterStorePoisonedError);
                CHECK_NOTHROW(store->list());  // reads still work
                CHECK_FALSE(store->journal_stats().poison_reason.empty());
            }
        }
        const bool faulted = fs.faulted();
        fs.crash(FaultFs::Damage::drop_unsynced, rng);  // and a power loss for good measure
        ManualClock clock2;
        std::string recovered;
        REQUIRE_NOTHROW([&] {
            FileDeadLetterStore store(fault_dir, workload_options(), fs, clock2);
            recovered = dump(store);
        }());
        // Nothing reaches the disk once the store is poisoned: calls after the one in doubt that
        // succeeded wrote nothing (an add refused as full: the record in doubt, already applied
        // in memory, filled the store).
        if (in_doubt >= 0) {
            ok.erase(std::remove_if(ok.begin(), ok.end(), [&](int i) { return i > in_doubt; }),
                     ok.end());
        }
        std::vector<int> with_doubt = ok;
        if (in_doubt >= 0) {
            with_doubt.push_back(in_doubt);
        }
        INFO("failing call " << call << (forever ? " onwards" : " once") << ", " << ok.size()
                             << " acknowledged, in doubt " << in_doubt);
        CHECK((recovered == model(ok) || recovered == model(with_doubt)));
        ++runs;
        if (!faulted) {
            break;  // the workload finished before call `call`
        }
    }
    CHECK(runs > 60);
    CHECK(poisoned_runs > 0);
}

TEST_CASE("FileDeadLetterStore: disk full fails the add cleanly and the store stays usable",
          "[dead_letter][file][io]") {
    FaultFs fs;
    ManualClock clock;
    std::mt19937_64 rng(3);
    {
        FileDeadLetterStore store(fault_dir, FileDeadLetterStoreOptions{}, fs, clock);
        store.add(workload_letter(1));
        fs.fail_call(1, false, ENOSPC);  // the next call, the write, fails half-way
        DeadLetter big = workload_letter(2);
        big.payload.assign(4000, 'b');
        try {
            store.add(big);
            FAIL("the add succeeded on a full disk");
        } catch (const bulwark::DeadLetterJournalIoError& e) {
            CHECK(e.code() == std::errc::no_space_on_device);
            CHECK_FALSE(e.poisoned());
        }
        CHECK_FALSE(store.poisoned());
        CHECK_FALSE(store.get("m2").has_value());
        CHECK(store.journal_stats().write_rollbacks == 1);
        // Truncated back to the last whole record: nothing of the failed one is left.
        CHECK(fs.contents(fault_journal).size() == store.journal_stats().file_bytes);
        CHECK(store.add(workload_letter(3)) == "m3");  // space is back
        CHECK(store.add(workload_letter(2)) == "m2");
    }
    fs.crash(FaultFs::Damage::drop_unsynced, rng);
    FileDeadLetterStore store(fault_dir, FileDeadLetterStoreOptions{}, fs, clock);
    CHECK(store.journal_stats().dropped_tail_bytes == 0);  // the half-written record was undone
    std::vector<std::string> ids;
    for (const DeadLetter& d : store.list()) {
        ids.push_back(d.id);
    }
    CHECK(ids == std::vector<std::string>{"m1", "m3", "m2"});
}

TEST_CASE("FileDeadLetterStore: a failed sync poisons the store; reads go on, reopen recovers",
          "[dead_letter][file][io]") {
    FaultFs fs;
    ManualClock clock;
    {
        FileDeadLetterStore store(fault_dir, FileDeadLetterStoreOptions{}, fs, clock);
        store.add(workload_letter(1));
        fs.fail_call(2, false, EIO);  // the write passes, the sync fails
        CHECK_THROWS_AS(store.add(workload_letter(2)), bulwark::DeadLetterJournalIoError);
        CHECK(store.poisoned());
        CHECK(store.journal_stats().poisoned);
        CHECK_THAT(store.journal_stats().poison_reason, BULWARK_CATCH_MESSAGE_CONTAINS("sync"));
        CHECK_THROWS_AS(store.add(workload_letter(3)), bulwark::DeadLetterStorePoisonedError);
        CHECK_THROWS_AS(store.dismiss(DeadLetterQuery{}, "x"),
                        bulwark::DeadLetterStorePoisonedError);
        CHECK_THROWS_AS(store.sync(), bulwark::DeadLetterStorePoisonedError);
        CHECK(store.get("m1").has_value());
        // Written and applied before its sync failed: readable, in doubt until a reopen.
        CHECK(store.get("m2").has_value());
        CHECK(store.add(workload_letter(1)) == "m1");   // a duplicate of a synced add: fine
        CHECK_THROWS_AS(store.add(workload_letter(2)),  // of the one in doubt: not acknowledged
                        bulwark::DeadLetterJournalIoError);
    }
    FileDeadLetterStore store(fault_dir, FileDeadLetterStoreOptions{}, fs, clock);
    CHECK_FALSE(store.poisoned());
    CHECK(store.get("m1").has_value());
    CHECK(store.add(workload_letter(4)) == "m4");
}

TEST_CASE("FileDeadLetterStore: a call that changes nothing reports only a state that is durable",
          "[dead_letter][file][io][group_commit]") {
    FaultFs fs;
    ManualClock clock;
    FileDeadLetterStore store(fault_dir, FileDeadLetterStoreOptions{}, fs, clock);
    store.add(workload_letter(1));
    fs.fail_call(2, false, EIO);  // the categorize's write passes, its sync fails
    CHECK_THROWS_AS(store.categorize(DeadLetterQuery{}.id("m1"), "bounced"),
                    bulwark::DeadLetterJournalIoError);
    // The same categorize again finds the record already so (in memory): it must not report a
    // match that a power loss could undo.
    CHECK_THROWS_AS(store.categorize(DeadLetterQuery{}.id("m1"), "bounced"),
                    bulwark::DeadLetterJournalIoError);
    CHECK(store.get("m1")->category == "bounced");  // readable, in doubt
}

TEST_CASE("FileDeadLetterStore: records another process wrote unsynced are synced at open",
          "[dead_letter][file][group_commit]") {
    FaultFs fs;
    ManualClock clock;
    std::mt19937_64 rng(3);
    FileDeadLetterStoreOptions none;
    none.sync = JournalSync::none;
    {
        FileDeadLetterStore store(fault_dir, none, fs, clock);
        store.add(workload_letter(1));
        fs.process_crash();  // killed: its record is in the page cache only
    }
    {
        FileDeadLetterStore store(fault_dir, FileDeadLetterStoreOptions{}, fs, clock);
        CHECK(store.add(workload_letter(1)) == "m1");  // a duplicate, acknowledged
    }
    fs.crash(FaultFs::Damage::drop_unsynced, rng);
    FileDeadLetterStore reopened(fault_dir, FileDeadLetterStoreOptions{}, fs, clock);
    CHECK(reopened.get("m1").has_value());
}

TEST_CASE("FileDeadLetterStore: a poisoned store resends nothing from reprocess",
          "[dead_letter][file][io]") {
    FaultFs fs;
    ManualClock clock;
    FileDeadLetterStore store(fault_dir, FileDeadLetterStoreOptions{}, fs, clock);
    for (int i = 0; i < 3; ++i) {
        store.add(workload_letter(i));
    }
    fs.fail_call(2, false, EIO);  // the write passes, the sync fails
    CHECK_THROWS_AS(store.add(workload_letter(9)), bulwark::DeadLetterJournalIoError);
    REQUIRE(store.poisoned());
    int calls = 0;
    const auto handler = [&calls](const DeadLetter&) {
        ++calls;
        return true;
    };
    CHECK_THROWS_AS(store.reprocess(DeadLetterQuery{}, handler),
                    bulwark::DeadLetterStorePoisonedError);
    CHECK_THROWS_AS(store.reprocess(DeadLetterQuery{}, handler),
                    bulwark::DeadLetterStorePoisonedError);
    CHECK(calls == 0);
    CHECK(store.get("m0")->redrives == 0);
}

TEST_CASE(
    "FileDeadLetterStore: an I/O error recording an outcome stops reprocess and reports what "
    "it did",
    "[dead_letter][file][io]") {
    const bool sync_fails = GENERATE(false, true);
    FaultFs fs;
    ManualClock clock;
    FileDeadLetterStore store(fault_dir, FileDeadLetterStoreOptions{}, fs, clock);
    for (int i = 0; i < 3; ++i) {
        store.add(workload_letter(i));
    }
    std::vector<std::string> handled;
    try {
        store.reprocess(DeadLetterQuery{}, [&](const DeadLetter& d) {
            handled.push_back(d.id);
            if (handled.size() == 2) {
                // The second outcome's write (or sync) fails.
                fs.fail_call(sync_fails ? 2 : 1, false, EIO);
            }
            return true;
        });
        FAIL("reprocess hid an I/O error");
    } catch (const bulwark::DeadLetterReprocessInterruptedError& e) {
        CHECK(e.partial().resent == 1);
        CHECK(e.partial().failed == 0);
        CHECK(e.unrecorded_id() == handled.back());
        CHECK(e.poisoned() == sync_fails);
    }
    CHECK(handled.size() == 2);  // stopped: the third was not resent
    CHECK(store.poisoned() == sync_fails);
    CHECK(store.get(handled[0])->status == DeadLetterStatus::reprocessed);
    CHECK(store.get(handled[1])->status == DeadLetterStatus::pending);  // at-least-once
}

TEST_CASE(
    "FileDeadLetterStore: the journal's CRC-32C matches the standard's check value and a "
    "bitwise reference",
    "[dead_letter][file]") {
    namespace j = bulwark::detail::journal;
    CHECK(j::crc32c("123456789") == 0xE3069283U);  // the CRC-32C check value (RFC 3720)
    const auto bitwise = [](std::string_view bytes, std::uint32_t crc) {
        crc = ~crc;
        for (const char ch : bytes) {
            crc ^= static_cast<unsigned char>(ch);
            for (int k = 0; k < 8; ++k) {
                crc = (crc & 1U) != 0 ? (crc >> 1U) ^ 0x82F63B78U : crc >> 1U;
            }
        }
        return ~crc;
    };
    std::string bytes(96, '\0');
    for (std::size_t i = 0; i < bytes.size(); ++i) {
        bytes[i] = static_cast<char>(i * 37U + 11U);
    }
    // Every alignment and every tail length of the 8-byte slices.
    for (std::size_t offset = 0; offset < 9; ++offset) {
        for (std::size_t length = 0; length + offset <= bytes.size(); ++length) {
            const std::string_view part = std::string_view(bytes).substr(offset, length);
            CHECK(j::crc32c(part, 0x1234567U) == bitwise(part, 0x1234567U));
        }
    }
}

// ---- group commit ---------------------------------------------------------------------------

// A FaultFs whose journal syncs can be held back: the first sync of the journal after hold()
// waits until `writes` more writes of it have happened (so that other writers queue up behind
// it), and may then fail. Thread-safe.
class GatedFs final : public bulwark::FileSystem {
public:
    explicit GatedFs(FaultFs& fs) : fs_(fs) {}

    void hold(std::size_t writes, bool fail) {
        std::lock_guard<std::mutex> lock(mutex_);
        held_ = true;
        release_at_ = writes_ + writes;
        fail_ = fail;
    }
    std::size_t journal_syncs() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return syncs_;
    }

    Info info(const std::string& path) override { return fs_.info(path); }
    void make_dir(const std::string& path) override { fs_.make_dir(path); }
    Handle open(const std::string& path, bool create, bool truncate) override {
        return fs_.open(path, create, truncate);
    }
    Handle create_new(const std::string& path) override { return fs_.create_new(path); }
    void close(Handle file) noexcept override { fs_.close(file); }
    std::string read_all(Handle file) override { return fs_.read_all(file); }
    void write_at(Handle file, std::uint64_t offset, std::string_view data) override {
        fs_.write_at(file, offset, data);
        std::lock_guard<std::mutex> lock(mutex_);
        ++writes_;
        changed_.notify_all();
    }
    void sync(Handle file) override {
        {
            std::unique_lock<std::mutex> lock(mutex_);
            ++syncs_;
            if (held_) {
                held_ = false;
                changed_.wait(lock, [&] { return writes_ >= release_at_; });
                if (fail_) {
                    throw std::system_error(EIO, std::generic_category(), "injected");
                }
            }
        }
        fs_.sync(file);
    }
    void truncate(Handle file, std::uint64_t size) override { fs_.truncate(file, size); }
    void rename(const std::string& from, const std::string& to) override { fs_.rename(from, to); }
    void sync_dir(const std::string& path) override { fs_.sync_dir(path); }
    void remove(const std::string& path) override { fs_.remove(path); }
    Handle lock(const std::string& path) override { return fs_.lock(path); }

private:
    FaultFs& fs_;
    mutable std::mutex mutex_;
    std::condition_variable changed_;
    std::size_t writes_ = 0;
    std::size_t syncs_ = 0;
    std::size_t release_at_ = 0;
    bool held_ = false;
    bool fail_ = false;
};

TEST_CASE("FileDeadLetterStore: concurrent adds share one sync and each returns once durable",
          "[dead_letter][file][group_commit]") {
    FaultFs fault;
    GatedFs fs(fault);
    ManualClock clock;
    std::mt19937_64 rng(5);
    std::set<std::string> acknowledged;
    {
        FileDeadLetterStore store(fault_dir, FileDeadLetterStoreOptions{}, fs, clock);
        const std::size_t syncs_before = fs.journal_syncs();
        // The first writer's sync waits until the three others have written: they queue behind
        // it, and the next sync, led by one of them, covers all three.
        fs.hold(4, false);
        std::mutex m;
        std::vector<std::thread> writers;
        for (int t = 0; t < 4; ++t) {
            writers.emplace_back([&, t] {
                const std::string id = store.add(workload_letter(t));
                std::lock_guard<std::mutex> lock(m);
                acknowledged.insert(id);
            });
        }
        for (std::thread& w : writers) {
            w.join();
        }
        CHECK(acknowledged.size() == 4);
        // Without group commit: 4, one per writer. With it: 1 when the other three wrote before
        // the first sync began, else 2 (3 when the last writer had written but not yet taken
        // its ticket as the second began).
        const std::size_t syncs = fs.journal_syncs() - syncs_before;
        CHECK(syncs >= 1);
        CHECK(syncs <= 3);
        CHECK(store.journal_stats().unsynced_records == 0);
    }
    fault.crash(FaultFs::Damage::drop_unsynced, rng);  // a power loss right after the returns
    FileDeadLetterStore reopened(fault_dir, FileDeadLetterStoreOptions{}, fault, clock);
    std::set<std::string> recovered;
    for (const DeadLetter& d : reopened.list()) {
        recovered.insert(d.id);
    }
    CHECK(recovered == acknowledged);
}

TEST_CASE("FileDeadLetterStore: a failed group sync fails every writer waiting for it",
          "[dead_letter][file][group_commit]") {
    FaultFs fault;
    GatedFs fs(fault);
    ManualClock clock;
    FileDeadLetterStore store(fault_dir, FileDeadLetterStoreOptions{}, fs, clock);
    const std::string before = store.add(workload_letter(100));
    fs.hold(3, true);
    std::atomic<int> failed{0};
    std::vector<std::thread> writers;
    for (int t = 0; t < 3; ++t) {
        writers.emplace_back([&, t] {
            try {
                store.add(workload_letter(t));
            } catch (const bulwark::DeadLetterJournalIoError& e) {
                failed += e.poisoned() ? 1 : 100;  // (Catch2 asserts on the main thread only)
            } catch (const bulwark::DeadLetterStorePoisonedError&) {
                ++failed;  // came after the failure
            }
        });
    }
    for (std::thread& w : writers) {
        w.join();
    }
    CHECK(failed == 3);  // none acknowledged: no sync after theirs succeeded
    CHECK(store.poisoned());
    CHECK_THAT(store.journal_stats().poison_reason,
               BULWARK_CATCH_MESSAGE_CONTAINS("a journal sync failed"));
    CHECK_THROWS_AS(store.add(workload_letter(9)), bulwark::DeadLetterStorePoisonedError);
    CHECK(store.get(before));  // reads go on
}

TEST_CASE(
    "FileDeadLetterStore: under concurrent writers, readers and compactions every "
    "acknowledged change survives a power loss",
    "[dead_letter][file][group_commit][stress]") {
    FaultFs fs;
    ManualClock clock;
    std::mt19937_64 rng(11);
    constexpr int threads = 8;
    constexpr int per_thread = 150;
    FileDeadLetterStoreOptions o;
    o.compact_min_bytes = 16384;
    // Room for every worker's record and a few of the churner's: its adds then evict its own
    // dismissed records (the only resolved ones), so the journal outgrows the live data and
    // compacts again and again while writers wait for their syncs.
    o.max_entries = threads * per_thread + 8;
    std::vector<std::vector<std::string>> added(threads);
    std::vector<std::vector<std::string>> categorized(threads);
    {
        FileDeadLetterStore store(fault_dir, o, fs, clock);
        std::atomic<int> running{threads};
        std::atomic<int> wrong{0};  // (Catch2 asserts on the main thread only)
        std::thread churner([&] {
            for (int k = 0; running > 0 || k < 200; ++k) {
                DeadLetter d;
                d.id = "churn-" + std::to_string(k);
                d.type = "email";
                d.payload = std::string(16384, 'c');
                store.add(d);
                wrong += store.dismiss(DeadLetterQuery{}.id(d.id)) == 1 ? 0 : 1;
                wrong += store.list(DeadLetterQuery{}.limit(5)).empty() ? 1 : 0;
            }
        });
        std::vector<std::thread> workers;
        for (int t = 0; t < threads; ++t) {
            workers.emplace_back([&, t] {
                std::vector<std::string>& mine = added[static_cast<std::size_t>(t)];
                for (int i = 0; i < per_thread; ++i) {
                    DeadLetter d;
                    d.id = "t" + std::to_string(t) + "-" + std::to_string(i);
                    d.type = "sms";
                    d.payload = std::string(256, 'p');
                    mine.push_back(store.add(d));
                    if (i % 5 == 4) {
                        const std::string& id = mine[static_cast<std::size_t>(i - 2)];
                        wrong += store.categorize(DeadLetterQuery{}.id(id), "bounced") == 1 ? 0 : 1;
                        categorized[static_cast<std::size_t>(t)].push_back(id);
                    }
                }
                --running;
            });
        }
        for (std::thread& w : workers) {
            w.join();
        }
        churner.join();
        CHECK(wrong == 0);
        const bulwark::JournalStats s = store.journal_stats();
        CHECK(s.compactions > 0);
        CHECK(s.unsynced_records == 0);
        CHECK_FALSE(s.poisoned);
    }
    fs.crash(FaultFs::Damage::drop_unsynced, rng);
    FileDeadLetterStore reopened(fault_dir, o, fs, clock);
    for (int t = 0; t < threads; ++t) {
        for (const std::string& id : added[static_cast<std::size_t>(t)]) {
            CHECK(reopened.get(id));
        }
        for (const std::string& id : categorized[static_cast<std::size_t>(t)]) {
            CHECK(reopened.get(id)->category == "bounced");
        }
    }
}

// ---- 5. corruption (R5)
// ----------------------------------------------------------------------------

namespace file_dead_letter_store_test {

struct ValidJournal {
    std::string bytes;
    std::vector<std::size_t> boundaries;  // boundaries[i]: the journal's size after i operations
    std::vector<std::string> states;
};

const ValidJournal& valid_journal() {
    static const ValidJournal journal = [] {
        ValidJournal j;
        const int n = 40;
        FaultFs fs;
        ManualClock clock;
        FileDeadLetterStoreOptions o = workload_options();
        o.compact_min_bytes = std::uint64_t{1} << 40U;
        FileDeadLetterStore store(fault_dir, o, fs, clock);
        j.boundaries.push_back(fs.contents(fault_journal).size());
        for (int i = 0; i < n; ++i) {
            run_op(store, clock, i);
            j.boundaries.push_back(fs.contents(fault_journal).size());
        }
        j.bytes = fs.contents(fault_journal);
        j.states = model_states(n);
        return j;
    }();
    return journal;
}

enum class Outcome { opened, corrupt, version };

struct Opened {
    Outcome outcome = Outcome::opened;
    std::string state;
    std::uint64_t offset = 0;
    bulwark::JournalStats stats;
    std::string reopened_strict;  // skip_corrupt: the state a strict reopen sees
};

Opened open_bytes(const std::string& bytes, JournalRecovery mode) {
    FaultFs fs;
    fs.put(fault_journal, bytes);
    ManualClock clock;
    FileDeadLetterStoreOptions o = workload_options();
    o.compact_min_bytes = std::uint64_t{1} << 40U;
    o.recovery = mode;
    Opened result;
    try {
        FileDeadLetterStore store(fault_dir, o, fs, clock);
        result.state = dump(store);
        result.stats = store.journal_stats();
    } catch (const bulwark::DeadLetterJournalCorruptError& e) {
        result.outcome = Outcome::corrupt;
        result.offset = e.offset();
        return result;
    } catch (const bulwark::DeadLetterJournalVersionError&) {
        result.outcome = Outcome::version;
        return result;
    }
    if (mode == JournalRecovery::skip_corrupt) {
        o.recovery = JournalRecovery::strict;
        FileDeadLetterStore store(fault_dir, o, fs, clock);
        result.reopened_strict = dump(store);
    }
    return result;
}

// Checks every recovery mode on `damaged`: a copy of the valid journal whose first changed byte
// is at `first` and whose damage ends before `end` (a tail damage: `end` = its size).
void check_damage(const std::string& damaged, std::size_t first, std::size_t end, bool tail) {
    const ValidJournal& j = valid_journal();
    if (damaged == j.bytes) {
        return;
    }
    INFO("damage at [" << first << ", " << end << "), size " << damaged.size() << " of "
                       << j.bytes.size() << (tail ? ", tail" : ""));
    const std::size_t header = bulwark::detail::journal::header_size;
    if (first < header) {
        for (const JournalRecovery mode :
             {JournalRecovery::tolerate_torn_tail, JournalRecovery::point_in_time,
              JournalRecovery::skip_corrupt, JournalRecovery::strict}) {
            const Opened got = open_bytes(damaged, mode);
            const bool torn_header = damaged.size() < header && tail;
            if (torn_header && (mode != JournalRecovery::strict || damaged.empty())) {
                CHECK(got.outcome == Outcome::opened);
                CHECK(got.state.empty());
            } else {
                CHECK(got.outcome == Outcome::corrupt);
            }
        }
        return;
    }
    // Where each state's frames end: starts[0] = the header (the empty journal), starts[i + 1] =
    // the journal after i operations (the first frame, the counters record, also gives state 0).
    std::vector<std::size_t> starts{header};
    std::vector<const std::string*> state_at{&j.states[0]};
    for (std::size_t i = 0; i < j.boundaries.size(); ++i) {
        starts.push_back(j.boundaries[i]);
        state_at.push_back(&j.states[i]);
    }
    // The last state whose frames lie wholly before the damage; the damaged frame starts there.
    std::size_t kept = 0;
    while (kept + 1 < starts.size() && starts[kept + 1] <= first) {
        ++kept;
    }
    const std::string& expected = *state_at[kept];
    const std::size_t frame_start = starts[kept];
    bool valid_after = false;  // a whole frame after the damage?
    for (const std::size_t b : starts) {
        valid_after = valid_after || (b >= end && b < j.bytes.size() && !tail);
    }
    const bool clean_cut =
        tail && damaged.size() == frame_start && j.bytes.compare(0, damaged.size(), damaged) == 0;
    // The last frame whole, only its head (length, header check, type) damaged: bit rot in a
    // synced record, never a torn write, so never dropped as a tail.
    bool head_damage = false;
    if (damaged.size() == j.bytes.size() && frame_start < j.bytes.size()) {
        std::size_t frame_end = j.bytes.size();
        for (const std::size_t b : starts) {
            if (b > frame_start) {
                frame_end = std::min(frame_end, b);
            }
        }
        if (frame_end == j.bytes.size()) {
            bool any = false;
            head_damage = true;
            for (std::size_t i = frame_start; i < damaged.size(); ++i) {
                if (damaged[i] != j.bytes[i]) {
                    any = true;
                    const std::size_t k = i - frame_start;
                    head_damage = head_damage && (k < 8 || k == 12);
                }
            }
            head_damage = head_damage && any;
        }
    }

    const Opened pit = open_bytes(damaged, JournalRecovery::point_in_time);
    CHECK(pit.outcome == Outcome::opened);
    CHECK(pit.state == expected);
    // Whatever it dropped, it kept a copy of first.
    CHECK(pit.stats.corrupt_copy.empty() == (damaged.size() == frame_start));

    const Opened torn = open_bytes(damaged, JournalRecovery::tolerate_torn_tail);
    if (valid_after || head_damage) {
        CHECK(torn.outcome == Outcome::corrupt);
        CHECK(torn.offset == frame_start);
    } else {
        CHECK(torn.outcome == Outcome::opened);
        CHECK(torn.state == expected);
        CHECK(torn.stats.dropped_tail_bytes == damaged.size() - frame_start);
    }

    const Opened strict = open_bytes(damaged, JournalRecovery::strict);
    if (clean_cut) {
        CHECK(strict.outcome == Outcome::opened);
        CHECK(strict.state == expected);
    } else {
        CHECK(strict.outcome == Outcome::corrupt);
        CHECK(strict.offset == frame_start);
    }

    const Opened salvage = open_bytes(damaged, JournalRecovery::skip_corrupt);
    CHECK(salvage.outcome == Outcome::opened);
    CHECK(salvage.reopened_strict == salvage.state);  // rewritten without the damage
    CHECK(salvage.stats.corrupt_copy.empty() == (damaged.size() == frame_start));
    if (!valid_after) {
        CHECK(salvage.state == expected);
    }
    if (valid_after || head_damage) {
        CHECK(salvage.stats.corrupt_regions >= 1);
    }
}

}  // namespace file_dead_letter_store_test

TEST_CASE("FileDeadLetterStore: truncation at every record boundary and one byte either side",
          "[dead_letter][file][corruption]") {
    const ValidJournal& j = valid_journal();
    std::set<std::size_t> cuts{0, 1, 8, 15};
    for (const std::size_t b : j.boundaries) {
        cuts.insert(b - 1);
        cuts.insert(b);
        cuts.insert(b + 1);
    }
    for (const std::size_t cut : cuts) {
        if (cut < j.bytes.size()) {
            check_damage(j.bytes.substr(0, cut), cut, cut, true);
        }
    }
}

TEST_CASE("FileDeadLetterStore: seeded mutations of a valid journal never crash or hang open",
          "[dead_letter][file][corruption]") {
    const ValidJournal& j = valid_journal();
    std::mt19937_64 rng(424242);
    const int mutations = 700 * scale;
    for (int m = 0; m < mutations; ++m) {
        std::string bytes = j.bytes;
        const std::size_t size = bytes.size();
        switch (m % 4) {
            case 0: {  // one bit flip
                const std::size_t at = rng() % size;
                bytes[at] =
                    static_cast<char>(static_cast<unsigned char>(bytes[at]) ^ (1U << (rng() % 8)));
                check_damage(bytes, at, at + 1, false);
                break;
            }
            case 1: {  // a run of random bytes
                const std::size_t at = rng() % size;
                const std::size_t length = std::min<std::size_t>(1 + rng() % 64, size - at);
                for (std::size_t i = 0; i < length; ++i) {
                    bytes[at + i] = static_cast<char>(rng() & 0xFFU);
                }
                std::size_t first = at;
                while (first < at + length && bytes[first] == j.bytes[first]) {
                    ++first;
                }
                check_damage(bytes, first, at + length, at + length == size);
                break;
            }
            case 2: {  // a zeroed tail
                const std::size_t at = rng() % size;
                std::fill(bytes.begin() + static_cast<std::ptrdiff_t>(at), bytes.end(), '\0');
                std::size_t first = at;
                while (first < size && bytes[first] == j.bytes[first]) {
                    ++first;
                }
                check_damage(bytes, first, size, true);
                break;
            }
            default: {  // a truncation anywhere
                const std::size_t at = rng() % size;
                check_damage(bytes.substr(0, at), at, at, true);
                break;
            }
        }
    }
}

TEST_CASE("FileDeadLetterStore: a journal from a newer format version is refused by name",
          "[dead_letter][file][corruption]") {
    namespace j = bulwark::detail::journal;
    const std::uint32_t newer = j::format_version + 1;
    std::string bytes = valid_journal().bytes;
    bytes.replace(0, j::header_size, j::encode_header(j::load_u64(bytes, 12), newer));
    for (const JournalRecovery mode :
         {JournalRecovery::tolerate_torn_tail, JournalRecovery::point_in_time,
          JournalRecovery::skip_corrupt, JournalRecovery::strict}) {
        FaultFs fs;
        fs.put(fault_journal, bytes);
        ManualClock clock;
        FileDeadLetterStoreOptions o;
        o.recovery = mode;
        try {
            FileDeadLetterStore store(fault_dir, o, fs, clock);
            FAIL("a newer journal was opened");
        } catch (const bulwark::DeadLetterJournalVersionError& e) {
            CHECK(e.version() == newer);
            CHECK_THAT(e.what(),
                       BULWARK_CATCH_MESSAGE_CONTAINS("version " + std::to_string(newer)));
        }
    }
}

// A new journal (its first frame, number 1, holds the counters) and the frames appended to it:
// add "a" (frames[0], number 2), categorize "a" as "first" (frames[1]), categorize it as "second"
// (frames[2]), purge it (frames[3]), add "b" (frames[4]).
struct FramedJournal {
    std::string bytes;
    std::vector<std::pair<std::size_t, std::size_t>> frames;  // [begin, end)

    std::string frame(std::size_t i) const {
        return bytes.substr(frames[i].first, frames[i].second - frames[i].first);
    }
};

FramedJournal framed_journal() {
    FaultFs fs;
    ManualClock clock;
    FramedJournal out;
    FileDeadLetterStore store(fault_dir, FileDeadLetterStoreOptions{}, fs, clock);
    std::size_t at = fs.contents(fault_journal).size();
    const auto mark = [&] {
        const std::size_t end = fs.contents(fault_journal).size();
        out.frames.emplace_back(at, end);
        at = end;
    };
    DeadLetter a;
    a.id = "a";
    a.type = "sms";
    store.add(a);
    mark();
    store.categorize(DeadLetterQuery().id("a"), "first");
    mark();
    store.categorize(DeadLetterQuery().id("a"), "second");
    mark();
    clock.advance(1s);
    store.purge(clock.wall_now());
    mark();
    DeadLetter b;
    b.id = "b";
    b.type = "sms";
    store.add(b);
    mark();
    out.bytes = fs.contents(fault_journal);
    return out;
}

struct Reopened {
    bool opened = false;
    std::string error;  // what open threw
    std::string state;
    bulwark::JournalStats stats;
    std::string strict_state;  // a strict reopen after it
};

Reopened reopen_in(JournalRecovery mode, const std::string& bytes) {
    FaultFs fs;
    fs.put(fault_journal, bytes);
    ManualClock clock;
    FileDeadLetterStoreOptions o;
    o.recovery = mode;
    Reopened r;
    try {
        FileDeadLetterStore store(fault_dir, o, fs, clock);
        r.opened = true;
        r.state = dump(store);
        r.stats = store.journal_stats();
    } catch (const bulwark::DeadLetterJournalCorruptError& e) {
        r.error = e.what();
        CHECK(fs.contents(fault_journal) == bytes);  // refused: untouched
        return r;
    }
    o.recovery = JournalRecovery::strict;
    FileDeadLetterStore strict(fault_dir, o, fs, clock);
    r.strict_state = dump(strict);
    return r;
}

TEST_CASE("FileDeadLetterStore: a duplicated frame is never replayed, in any recovery mode",
          "[dead_letter][file][corruption]") {
    const FramedJournal j = framed_journal();
    const std::string clean = reopen_in(JournalRecovery::strict, j.bytes).state;
    REQUIRE(clean.rfind("b|", 0) == 0);  // "a" purged, "b" alone
    // The add of "a" written again after the purge (a replayed write): "a" would come back.
    // The first categorize written again at the end: "a"'s category would revert. A frame
    // written twice in a row (a duplicated sector).
    const std::string replayed_add = j.bytes + j.frame(0);
    const std::string stale_categorize = j.bytes.substr(0, j.frames[2].second) + j.frame(1);
    const std::string doubled =
        j.bytes.substr(0, j.frames[1].second) + j.frame(1) + j.bytes.substr(j.frames[1].second);
    for (const std::string* bytes : {&replayed_add, &stale_categorize, &doubled}) {
        const std::size_t at = bytes == &doubled        ? j.frames[1].second
                               : bytes == &replayed_add ? j.bytes.size()
                                                        : j.frames[2].second;
        const std::size_t dup = bytes == &replayed_add ? j.frame(0).size() : j.frame(1).size();
        INFO("duplicate at " << at);
        for (const JournalRecovery mode :
             {JournalRecovery::strict, JournalRecovery::tolerate_torn_tail}) {
            const Reopened r = reopen_in(mode, *bytes);
            CHECK_FALSE(r.opened);
            CHECK_THAT(r.error, BULWARK_CATCH_MESSAGE_CONTAINS("at offset " + std::to_string(at) +
                                                               ": record out of sequence"));
            CHECK_THAT(r.error, BULWARK_CATCH_MESSAGE_CONTAINS("a duplicated or replayed write"));
        }
        // point_in_time keeps exactly what came before the duplicate.
        const Reopened pit = reopen_in(JournalRecovery::point_in_time, *bytes);
        REQUIRE(pit.opened);
        CHECK(pit.stats.duplicate_records == 1);
        CHECK(pit.stats.dropped_tail_bytes == bytes->size() - at);
        CHECK_FALSE(pit.stats.corrupt_copy.empty());
        CHECK(pit.strict_state == pit.state);
        // skip_corrupt drops the duplicate alone and reports it as damage.
        const Reopened skip = reopen_in(JournalRecovery::skip_corrupt, *bytes);
        REQUIRE(skip.opened);
        CHECK(skip.stats.duplicate_records == 1);
        CHECK(skip.stats.corrupt_regions == 1);
        CHECK(skip.stats.skipped_bytes == dup);
        CHECK(skip.strict_state == skip.state);  // rewritten without it
        if (bytes == &stale_categorize) {
            CHECK(skip.state.find("|second|") != std::string::npos);  // not reverted
            CHECK(pit.state == skip.state);
        } else {
            CHECK(skip.state == clean);
        }
        if (bytes == &replayed_add) {
            CHECK(pit.state == clean);  // "a" stays purged
        }
    }
}

TEST_CASE("FileDeadLetterStore: frames out of order or missing are damage, not history",
          "[dead_letter][file][corruption]") {
    const FramedJournal j = framed_journal();
    // The two categorizes swapped: the second comes first (its predecessor missing), then the
    // first (already passed).
    const std::string swapped = j.bytes.substr(0, j.frames[1].first) + j.frame(2) + j.frame(1) +
                                j.bytes.substr(j.frames[2].second);
    const Reopened strict = reopen_in(JournalRecovery::strict, swapped);
    CHECK_FALSE(strict.opened);
    CHECK_THAT(strict.error,
               BULWARK_CATCH_MESSAGE_CONTAINS("at offset " + std::to_string(j.frames[1].first) +
                                              ": record out of sequence: number 4 where 3 was "
                                              "expected (records are missing before it"));
    CHECK_FALSE(reopen_in(JournalRecovery::tolerate_torn_tail, swapped).opened);
    const Reopened pit = reopen_in(JournalRecovery::point_in_time, swapped);
    REQUIRE(pit.opened);
    CHECK(pit.stats.sequence_gaps == 1);
    CHECK(pit.state.find("a|sms|0:||0|||") == 0);  // the add alone, uncategorized
    const Reopened skip = reopen_in(JournalRecovery::skip_corrupt, swapped);
    REQUIRE(skip.opened);
    CHECK(skip.stats.sequence_gaps == 1);
    CHECK(skip.stats.duplicate_records == 1);  // the first categorize, met after the second
    CHECK(skip.stats.corrupt_regions == 2);
    CHECK(skip.state == reopen_in(JournalRecovery::strict, j.bytes).state);
    // A frame cut out whole (a lost block) leaves a gap that only skip_corrupt passes.
    const std::string cut =
        j.bytes.substr(0, j.frames[3].first) + j.bytes.substr(j.frames[3].second);
    CHECK_FALSE(reopen_in(JournalRecovery::tolerate_torn_tail, cut).opened);
    const Reopened skipped = reopen_in(JournalRecovery::skip_corrupt, cut);
    REQUIRE(skipped.opened);
    CHECK(skipped.stats.sequence_gaps == 1);
    CHECK(skipped.state.find("a|") == 0);  // its purge was the frame lost
}

TEST_CASE("FileDeadLetterStore: a frame numbered 0 or at the largest sequence is damage",
          "[dead_letter][file][corruption]") {
    namespace j = bulwark::detail::journal;
    const FramedJournal fj = framed_journal();
    const j::Framing framing{j::salt_seed(j::load_u64(fj.bytes, 12))};
    j::Record add;
    add.type = j::RecordType::add;
    add.letter.id = "c";
    add.letter.type = "sms";
    for (const std::uint64_t sequence : {std::uint64_t{0}, ~std::uint64_t{0}}) {
        // After a gap (frames[4] cut out), where skip_corrupt accepts a higher number: a frame at
        // the largest number would wrap the next expected one to 0 and let replays through.
        std::string bytes = fj.bytes.substr(0, fj.frames[4].first);
        j::encode_record(add, bytes, framing, sequence);
        j::encode_record(add, bytes, framing, 1);
        INFO("sequence " << sequence);
        const Reopened skip = reopen_in(JournalRecovery::skip_corrupt, bytes);
        REQUIRE(skip.opened);
        CHECK(skip.state.find("c|") == std::string::npos);
        CHECK_FALSE(reopen_in(JournalRecovery::strict, bytes).opened);
    }
}

// A journal as bulwark wrote it in format version 2 (frames without a sequence number).
std::string version2_journal(std::uint64_t salt) {
    namespace j = bulwark::detail::journal;
    const j::Framing v2{j::salt_seed(salt), 2};
    std::string out = j::encode_header(salt, 2);
    j::Record add;
    add.type = j::RecordType::add;
    add.letter.id = "old";
    add.letter.type = "email";
    add.letter.payload = "written by 0.x";
    add.letter.created = bulwark::WallTime{} + 5s;
    add.letter.last_attempt = add.letter.created;
    j::encode_record(add, out, v2, 0);
    add.letter.id = "older";
    j::encode_record(add, out, v2, 0);
    j::Record dismiss;
    dismiss.type = j::RecordType::dismiss;
    dismiss.id = "older";
    dismiss.text = "handled";
    j::encode_record(dismiss, out, v2, 0);
    return out;
}

TEST_CASE("FileDeadLetterStore: a version 2 journal opens and is rewritten as version 3",
          "[dead_letter][file][corruption]") {
    namespace j = bulwark::detail::journal;
    const std::string v2 = version2_journal(77);
    REQUIRE(j::load_u32(v2, 8) == 2);
    for (const JournalRecovery mode :
         {JournalRecovery::tolerate_torn_tail, JournalRecovery::point_in_time,
          JournalRecovery::skip_corrupt, JournalRecovery::strict}) {
        FaultFs fs;
        fs.put(fault_journal, v2);
        ManualClock clock;
        FileDeadLetterStoreOptions o;
        o.recovery = mode;
        std::string before;
        {
            FileDeadLetterStore store(fault_dir, o, fs, clock);
            CHECK(store.size() == 2);
            CHECK(store.get("older")->status == DeadLetterStatus::dismissed);
            CHECK(store.get("older")->note == "handled");
            CHECK(store.get("old")->payload == "written by 0.x");
            const bulwark::JournalStats s = store.journal_stats();
            CHECK(s.upgraded_from_version == 2);
            CHECK(s.recovered_records == 3);
            CHECK(s.corrupt_copy.empty());  // nothing was damaged: an upgrade keeps no copy
            CHECK(j::load_u32(fs.contents(fault_journal), 8) == j::format_version);
            CHECK(store.add(workload_letter(1)) == "m1");
            before = dump(store);
        }
        o.recovery = JournalRecovery::strict;
        FileDeadLetterStore reopened(fault_dir, o, fs, clock);
        CHECK(dump(reopened) == before);
        CHECK(reopened.journal_stats().upgraded_from_version == 0);
    }
    // A version 2 journal with a torn last frame: recovered as before, then upgraded.
    FaultFs fs;
    fs.put(fault_journal, v2.substr(0, v2.size() - 3));
    ManualClock clock;
    FileDeadLetterStore store(fault_dir, FileDeadLetterStoreOptions{}, fs, clock);
    CHECK(store.size() == 2);
    CHECK(store.get("older")->status == DeadLetterStatus::pending);
    CHECK(store.journal_stats().dropped_tail_bytes > 0);
    CHECK(store.journal_stats().upgraded_from_version == 2);
}

TEST_CASE("FileDeadLetterStore: a journal from before version 2 is refused by name",
          "[dead_letter][file][corruption]") {
    namespace j = bulwark::detail::journal;
    std::string bytes = version2_journal(5);
    bytes.replace(0, j::header_size, j::encode_header(5, 1));
    FaultFs fs;
    fs.put(fault_journal, bytes);
    ManualClock clock;
    try {
        FileDeadLetterStore store(fault_dir, FileDeadLetterStoreOptions{}, fs, clock);
        FAIL("a version 1 journal was opened");
    } catch (const bulwark::DeadLetterJournalVersionError& e) {
        CHECK(e.version() == 1);
        CHECK_THAT(e.what(), BULWARK_CATCH_MESSAGE_CONTAINS("reads versions 2 to 3"));
    }
}

TEST_CASE("FileDeadLetterStore: hostile bytes after the header open in bounded time",
          "[dead_letter][file][corruption]") {
    namespace j = bulwark::detail::journal;
    std::mt19937_64 rng(99);
    const std::size_t total = std::size_t{256} << 10U;
    const std::uint64_t salt = 0x5EED;
    ManualClock clock;
    FileDeadLetterStoreOptions o;
    o.recovery = JournalRecovery::tolerate_torn_tail;
    // Frames claiming to be as long as what is left, at every 9 bytes: without the salt their
    // header checks fail, so none is even looked at; nothing whole follows: a torn tail.
    std::string unsalted = j::encode_header(salt);
    while (unsalted.size() < total) {
        j::Writer w(unsalted);
        w.u32(static_cast<std::uint32_t>(total - unsalted.size() - 20));
        w.u32(static_cast<std::uint32_t>(rng()));
        w.u8(1);
    }
    // The same with valid header checks (someone who knows the salt) and wrong body CRCs, after
    // a damaged head so that a resynchronising scan meets them: each is checked once, skipped
    // whole.
    const j::Framing framing{j::salt_seed(salt)};
    std::string salted = j::encode_header(salt) + std::string(j::frame_overhead, '\xFF');
    for (std::uint64_t sequence = 1; salted.size() < total; ++sequence) {
        const auto length = static_cast<std::uint32_t>(total - salted.size() - 20);
        j::Writer w(salted);
        w.u32(length);
        w.u32(j::header_check(framing, length, sequence, 1));
        w.u32(static_cast<std::uint32_t>(rng()));
        w.u64(sequence);
        w.u8(1);
    }
    // Random garbage: no frame survives, so it is a torn tail.
    std::string garbage = j::encode_header(salt);
    for (int i = 0; i < 200000; ++i) {
        garbage.push_back(static_cast<char>(rng() & 0xFFU));
    }
    for (const std::string* bytes : {&unsalted, &salted, &garbage}) {
        FaultFs fs;
        fs.put(fault_journal, *bytes);
        FileDeadLetterStore store(fault_dir, o, fs, clock);
        CHECK(store.size() == 0);
        CHECK(store.journal_stats().dropped_tail_bytes == bytes->size() - j::header_size);
    }
}

// ---- security, options, locking (R13)
// -------------------------------------------------------------

TEST_CASE("FileDeadLetterStore: files are 0600 and the directory 0700 whatever the umask",
          "[dead_letter][file][security]") {
    const mode_t mask = GENERATE(mode_t{0}, mode_t{022});
    TempDir dir;
    {
        const UmaskGuard umask_guard(mask);
        ManualClock clock;
        FileDeadLetterStoreOptions o;
        o.compact_min_bytes = 4096;
        FileDeadLetterStore store(dir.store(), o, bulwark::default_file_system(), clock);
        for (int i = 0; i < 100; ++i) {
            store.add(workload_letter(i));
            store.purge(clock.wall_now() + 1s);
        }
        CHECK(store.journal_stats().compactions > 0);  // the rewritten journal too
    }
    struct stat st {};
    REQUIRE(::stat(dir.store().c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0700);
    REQUIRE(::stat((dir.store() + "/journal").c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0600);
    REQUIRE(::stat((dir.store() + "/LOCK").c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0600);
}

TEST_CASE("FileDeadLetterStore: a symlinked directory or journal is refused",
          "[dead_letter][file][security]") {
    TempDir dir;
    ManualClock clock;
    REQUIRE(::mkdir((dir.path() + "/real").c_str(), 0700) == 0);
    REQUIRE(::symlink((dir.path() + "/real").c_str(), dir.store().c_str()) == 0);
    CHECK_THROWS_AS(FileDeadLetterStore(dir.store(), FileDeadLetterStoreOptions{},
                                        bulwark::default_file_system(), clock),
                    bulwark::FileDeadLetterStoreError);
    const std::string other = dir.path() + "/other";
    REQUIRE(::mkdir(other.c_str(), 0700) == 0);
    REQUIRE(::symlink((dir.path() + "/elsewhere").c_str(), (other + "/journal").c_str()) == 0);
    try {
        FileDeadLetterStore store(other, FileDeadLetterStoreOptions{},
                                  bulwark::default_file_system(), clock);
        FAIL("a symlinked journal was opened");
    } catch (const bulwark::FileDeadLetterStoreError& e) {
        CHECK_THAT(e.what(), BULWARK_CATCH_MESSAGE_CONTAINS("symlink"));
    }
}

TEST_CASE("FileDeadLetterStore: a directory or journal others could reach is refused",
          "[dead_letter][file][security]") {
    TempDir dir;
    ManualClock clock;
    const auto open_store = [&] {
        FileDeadLetterStore store(dir.store(), FileDeadLetterStoreOptions{},
                                  bulwark::default_file_system(), clock);
    };
    const auto refused = [&](const std::string& path, const std::string& problem) {
        try {
            open_store();
            FAIL("opened despite: " << problem);
        } catch (const bulwark::FileDeadLetterStoreError& e) {
            CHECK_THAT(e.what(), BULWARK_CATCH_MESSAGE_CONTAINS(path));
            CHECK_THAT(e.what(), BULWARK_CATCH_MESSAGE_CONTAINS(problem));
        }
    };
    open_store();
    const std::string journal = dir.store() + "/journal";
    REQUIRE(::chmod(dir.store().c_str(), 0755) == 0);
    refused(dir.store(), "mode 0755");
    REQUIRE(::chmod(dir.store().c_str(), 0710) == 0);
    refused(dir.store(), "mode 0710");
    REQUIRE(::chmod(dir.store().c_str(), 0700) == 0);
    open_store();
    const std::string link = dir.path() + "/journal-link";
    REQUIRE(::link(journal.c_str(), link.c_str()) == 0);
    refused(journal, "2 hard links");
    REQUIRE(::unlink(link.c_str()) == 0);
    open_store();
    if (::geteuid() == 0) {  // only root can give a file away
        REQUIRE(::chown(journal.c_str(), 4242, 4242) == 0);
        refused(journal, "owned by uid 4242");
        REQUIRE(::chown(journal.c_str(), 0, 0) == 0);
        REQUIRE(::chown(dir.store().c_str(), 4242, 4242) == 0);
        refused(dir.store(), "owned by uid 4242");
        REQUIRE(::chown(dir.store().c_str(), 0, 0) == 0);
        open_store();
    }
}

TEST_CASE("FileDeadLetterStore: a second store on the same directory is refused",
          "[dead_letter][file][security]") {
    TempDir dir;
    ManualClock clock;
    FileDeadLetterStore first(dir.store(), FileDeadLetterStoreOptions{},
                              bulwark::default_file_system(), clock);
    CHECK_THROWS_AS(FileDeadLetterStore(dir.store(), FileDeadLetterStoreOptions{},
                                        bulwark::default_file_system(), clock),
                    bulwark::DeadLetterJournalLockedError);
    first.add(workload_letter(1));
    CHECK(first.size() == 1);
}

namespace {
// The real file system, except that the store's directory looks missing the first time it is
// asked about: as if another process created it between this store's look and its mkdir.
class RacedFileSystem final : public bulwark::FileSystem {
public:
    explicit RacedFileSystem(std::string raced) : raced_(std::move(raced)) {}
    Info info(const std::string& path) override {
        if (path == raced_ && !asked_) {
            asked_ = true;
            return Info{};  // missing
        }
        return real().info(path);
    }
    void make_dir(const std::string& path) override { real().make_dir(path); }
    Handle open(const std::string& path, bool create, bool truncate) override {
        return real().open(path, create, truncate);
    }
    Handle create_new(const std::string& path) override { return real().create_new(path); }
    void close(Handle file) noexcept override { real().close(file); }
    std::string read_all(Handle file) override { return real().read_all(file); }
    void write_at(Handle file, std::uint64_t offset, std::string_view data) override {
        real().write_at(file, offset, data);
    }
    void sync(Handle file) override { real().sync(file); }
    void truncate(Handle file, std::uint64_t size) override { real().truncate(file, size); }
    void rename(const std::string& from, const std::string& to) override {
        real().rename(from, to);
    }
    void sync_dir(const std::string& path) override { real().sync_dir(path); }
    void remove(const std::string& path) override { real().remove(path); }
    Handle lock(const std::string& path) override { return real().lock(path); }

private:
    static bulwark::FileSystem& real() { return bulwark::default_file_system(); }
    std::string raced_;
    bool asked_ = false;
};
}  // namespace

TEST_CASE("FileDeadLetterStore: losing the race to create the directory gives the locked error",
          "[dead_letter][file][security]") {
    TempDir dir;
    ManualClock clock;
    {
        FileDeadLetterStore winner(dir.store(), FileDeadLetterStoreOptions{},
                                   bulwark::default_file_system(), clock);
        RacedFileSystem raced(dir.store());
        CHECK_THROWS_AS(
            FileDeadLetterStore(dir.store(), FileDeadLetterStoreOptions{}, raced, clock),
            bulwark::DeadLetterJournalLockedError);
        winner.add(workload_letter(1));
    }
    // Once the winner is gone, the same path (mkdir finds the directory) opens its journal.
    RacedFileSystem again(dir.store());
    FileDeadLetterStore later(dir.store(), FileDeadLetterStoreOptions{}, again, clock);
    CHECK(later.size() == 1);
}

TEST_CASE("FileDeadLetterStore: errors carry no payload bytes", "[dead_letter][file][security]") {
    const std::string secret = "SECRET-MARKER-4711";
    FaultFs fs;
    ManualClock clock;
    {
        FileDeadLetterStore store(fault_dir, FileDeadLetterStoreOptions{}, fs, clock);
        for (int i = 0; i < 3; ++i) {
            DeadLetter d = workload_letter(i);
            d.payload = secret;
            store.add(d);
        }
    }
    std::string bytes = fs.contents(fault_journal);
    const std::size_t at = bytes.find(secret);
    REQUIRE(at != std::string::npos);
    bytes[at] = 'X';  // damage the first record: valid records follow
    FaultFs fs2;
    fs2.put(fault_journal, bytes);
    try {
        FileDeadLetterStore store(fault_dir, FileDeadLetterStoreOptions{}, fs2, clock);
        FAIL("mid-file damage was accepted");
    } catch (const bulwark::DeadLetterJournalCorruptError& e) {
        CHECK(std::string(e.what()).find("MARKER") == std::string::npos);
        CHECK_THAT(e.what(), BULWARK_CATCH_MESSAGE_CONTAINS(std::to_string(e.offset())));
    }
}

TEST_CASE("FileDeadLetterStoreOptions: each invalid field is named", "[dead_letter][file]") {
    struct Case {
        const char* field;
        std::function<void(FileDeadLetterStoreOptions&)> spoil;
    };
    const std::vector<Case> cases = {
        {"max_entries",
         [](FileDeadLetterStoreOptions& o) {
             o.max_entries = 0;
         }},
        {"max_payload_bytes",
         [](FileDeadLetterStoreOptions& o) {
             o.max_payload_bytes = 0;
         }},
        {"max_payload_bytes",
         [](FileDeadLetterStoreOptions& o) {
             o.max_payload_bytes = std::size_t{1} << 30U;
         }},
        {"max_attempts",
         [](FileDeadLetterStoreOptions& o) {
             o.max_attempts = 0;
         }},
        {"sync",
         [](FileDeadLetterStoreOptions& o) {
             o.sync = static_cast<JournalSync>(9);
         }},
        {"batch_records",
         [](FileDeadLetterStoreOptions& o) {
             o.batch_records = 0;
         }},
        {"batch_interval",
         [](FileDeadLetterStoreOptions& o) {
             o.batch_interval = -1ms;
         }},
        {"recovery",
         [](FileDeadLetterStoreOptions& o) {
             o.recovery = static_cast<JournalRecovery>(9);
         }},
        {"compact_min_bytes",
         [](FileDeadLetterStoreOptions& o) {
             o.compact_min_bytes = 10;
         }},
    };
    FaultFs fs;
    ManualClock clock;
    for (const Case& c : cases) {
        FileDeadLetterStoreOptions o;
        c.spoil(o);
        try {
            FileDeadLetterStore store(fault_dir, o, fs, clock);
            FAIL("accepted an invalid " << c.field);
        } catch (const std::invalid_argument& e) {
            CHECK_THAT(e.what(), BULWARK_CATCH_MESSAGE_CONTAINS(
                                     std::string("FileDeadLetterStoreOptions.") + c.field));
        }
    }
    CHECK(fs.calls() == 0);  // refused before touching the file system
}

// ---- 6. SIGKILL at a random time (R1)
// --------------------------------------------------------------

namespace file_dead_letter_store_test {

// The child: `threads` threads add records and write "a <id>" to the pipe after add() returns;
// every fifth record is then dismissed and "d <id>" written after dismiss() returns.
[[noreturn]] void crash_child(const std::string& directory, int pipe_fd, int threads) {
    bulwark::FileDeadLetterStore store(directory);
    std::vector<std::thread> writers;
    for (int t = 0; t < threads; ++t) {
        writers.emplace_back([&store, pipe_fd, t] {
            const auto report = [pipe_fd](const std::string& line) {
                if (::write(pipe_fd, line.data(), line.size()) !=
                    static_cast<ssize_t>(line.size())) {
                    ::_exit(3);
                }
            };
            try {
                for (int i = 0;; ++i) {
                    DeadLetter d;
                    d.id = "t" + std::to_string(t) + "-" + std::to_string(i);
                    d.type = "sms";
                    d.payload = std::string(100, 'p');
                    store.add(d);
                    report("a " + d.id + "\n");
                    if (i % 5 == 4) {
                        if (store.dismiss(DeadLetterQuery{}.id(d.id), "done") != 1) {
                            ::_exit(4);
                        }
                        report("d " + d.id + "\n");
                    }
                }
            } catch (...) {
                ::_exit(2);
            }
        });
    }
    for (std::thread& w : writers) {
        w.join();
    }
    ::_exit(0);
}

// Reads what is there within `timeout_ms` into `out`: false on timeout, true otherwise (`eof`
// set when the writer is gone).
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

}  // namespace file_dead_letter_store_test

// R1: `rounds` children with `threads` writers each, SIGKILLed at random points; every add and
// dismissal acknowledged before the kill is there on reopen.
static void check_kill_rounds(int rounds, int threads, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    for (int round = 0; round < rounds; ++round) {
        TempDir dir;
        int fds[2];
        REQUIRE(::pipe(fds) == 0);
        const pid_t child = ::fork();
        REQUIRE(child >= 0);
        if (child == 0) {
            ::close(fds[0]);
            try {
                crash_child(dir.store(), fds[1], threads);
            } catch (...) {
                ::_exit(2);
            }
        }
        ::close(fds[1]);
        // Kill after a random number of acknowledged adds (poll waits until the child writes:
        // no sleep, and the kill lands while calls are in flight); a silent child fails the test.
        const std::size_t kill_after = 20 + rng() % 200;
        std::string acked_text;
        bool eof = false;
        bool timed_out = false;
        while (!eof && static_cast<std::size_t>(
                           std::count(acked_text.begin(), acked_text.end(), '\n')) < kill_after) {
            if (!read_some(fds[0], acked_text, 10000, eof)) {
                timed_out = true;
                break;
            }
        }
        ::kill(child, SIGKILL);
        while (!eof && !timed_out) {  // what the child wrote before it died was acknowledged too
            timed_out = !read_some(fds[0], acked_text, 10000, eof);
        }
        ::close(fds[0]);
        int status = 0;
        REQUIRE(::waitpid(child, &status, 0) == child);
        if (timed_out) {
            FAIL("the child wrote nothing for 10 s");
        }
        INFO("child status " << status);
        REQUIRE_FALSE(WIFEXITED(status));  // 2: an exception, 3: the pipe, 4: a dismiss missed
        REQUIRE(WIFSIGNALED(status));
        REQUIRE(WTERMSIG(status) == SIGKILL);
        std::set<std::string> acked;
        std::set<std::string> dismissed;
        std::istringstream lines_in(acked_text);
        for (std::string line; std::getline(lines_in, line);) {
            REQUIRE(line.size() > 2);
            (line[0] == 'a' ? acked : dismissed).insert(line.substr(2));
        }
        REQUIRE(acked.size() + dismissed.size() >= kill_after);
        CHECK_FALSE(dismissed.empty());  // >= 20 lines: one thread got past its fifth add
        FileDeadLetterStore store(dir.store());
        std::size_t lost = 0;
        for (const std::string& id : acked) {
            lost += store.get(id).has_value() ? 0U : 1U;
        }
        std::size_t lost_dismissals = 0;
        for (const std::string& id : dismissed) {
            const std::optional<DeadLetter> d = store.get(id);
            lost_dismissals += d && d->status == DeadLetterStatus::dismissed ? 0U : 1U;
        }
        CHECK(lost_dismissals == 0);
        std::size_t unexpected = 0;
        for (const DeadLetter& d : store.list()) {
            unexpected += d.id.size() > 1 && d.id[0] == 't' ? 0U : 1U;
        }
        INFO("round " << round << ": " << acked.size() << " acknowledged");
        CHECK(lost == 0);
        CHECK(unexpected == 0);
        CHECK(store.size() <=
              acked.size() + static_cast<std::size_t>(threads));  // one in flight each
    }
}

TEST_CASE("FileDeadLetterStore: no acknowledged add is lost when the process is killed",
          "[dead_letter][file][kill]") {
    check_kill_rounds(50, 2, 5);  // R1 at CI scale: ~3 s, ~7 s under TSan
}

// R1 at nightly scale, outside the default run: ctest -L nightly with BULWARK_NIGHTLY_TESTS=ON.
TEST_CASE("FileDeadLetterStore: no acknowledged add is lost when the process is killed, nightly",
          "[.nightly][dead_letter][file][kill]") {
    check_kill_rounds(200, 4, 17);
}

TEST_CASE("FileDeadLetterStore: the journal writer refuses a frame a reader would refuse",
          "[dead_letter][file]") {
    namespace j = bulwark::detail::journal;
    j::Record dismiss;
    dismiss.type = j::RecordType::dismiss;
    dismiss.id = "m";
    dismiss.text = std::string(1000, 'n');
    std::string out = "earlier frames";
    CHECK_THROWS_AS(j::encode_record(dismiss, out, j::Framing{j::salt_seed(7)}, 1, 999),
                    bulwark::DeadLetterTooLargeError);
    CHECK(out == "earlier frames");  // nothing appended
    j::encode_record(dismiss, out, j::Framing{j::salt_seed(7)}, 1, 1100);
    CHECK(out.size() > 1000);
    // The default limit is the reader's.
    CHECK_NOTHROW(j::encode_record(dismiss, out, j::Framing{j::salt_seed(7)}, 2));
    // Every string a store keeps is bounded far below it: a full record (the largest payload,
    // text, note, category and tags each at max_text_bytes, max_attempts redrives of 1 KiB of
    // error and a channel name) still fits in one frame.
    const FileDeadLetterStoreOptions most = [] {
        FileDeadLetterStoreOptions o;
        o.max_payload_bytes = std::size_t{64} << 20U;
        o.max_text_bytes = std::size_t{16} << 20U;
        return o;
    }();
    CHECK_NOTHROW(most.validate());
    CHECK(most.max_payload_bytes + 3 * most.max_text_bytes + 65536 * (1024 + 256) <
          j::max_frame_bytes);
}

// The SQLite stores beside the built-in ones, same operations in the same run, one thread:
// BM_dead_letter_add adds a DeadLetter with a 256-byte payload (acknowledged: committed, or
// journalled and synced); BM_queue_cycle pushes a 256-byte message, claims it and completes it
// (three acknowledged changes). Each store runs at its durable setting and at the faster one
// that trades a power cut's safety for speed: in_memory; file_always / file_none (JournalSync);
// sqlite_full / sqlite_normal (SqliteSynchronous). Ratios are to the in-memory store. Stores live
// in a mkdtemp directory under $TMPDIR or /tmp, removed at exit: run it on the disk you mean to
// measure.
// BM_sqlite_connections_*: the same operations from 1, 2 and 4 threads, each with its own
// connection (its own store object) on one shared file, as the worker processes of one host
// would share it; SQLite serialises the writers, so this shows what the file's one write lock
// costs and what WAL's concurrent readers do not buy a write-only load.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <stdlib.h>
#include <string>
#include <system_error>
#include <vector>

#include <bulwark/file_dead_letter_store.hpp>
#include <bulwark/file_queue_store.hpp>
#include <bulwark/in_memory_dead_letter_store.hpp>
#include <bulwark/in_memory_queue_store.hpp>
#include <bulwark/sqlite_dead_letter_store.hpp>
#include <bulwark/sqlite_queue_store.hpp>

#include "../bench_main.hpp"

namespace {

using namespace std::chrono_literals;

constexpr std::size_t payload_bytes = 256;
// Records a dead-letter store holds at most during a run: purged (untimed) at this many.
constexpr std::int64_t purge_every = 20000;

// The process's scratch directory, removed at exit.
class TempRoot {
public:
    static TempRoot& get() {
        static TempRoot root;
        return root;
    }
    TempRoot(const TempRoot&) = delete;
    TempRoot& operator=(const TempRoot&) = delete;
    ~TempRoot() { remove(); }

    std::string fresh(const std::string& stem) {
        return path_ + "/" + stem + "-" + std::to_string(next_++);
    }

    void remove() {
        if (!path_.empty()) {
            std::error_code ignored;
            std::filesystem::remove_all(path_, ignored);
            path_.clear();
        }
    }

private:
    TempRoot() {
        const char* tmp = std::getenv("TMPDIR");
        std::string pattern = (tmp != nullptr && *tmp != '\0') ? tmp : "/tmp";
        pattern += "/bulwark-sqlite-bench-XXXXXX";
        std::vector<char> buffer(pattern.begin(), pattern.end());
        buffer.push_back('\0');
        if (::mkdtemp(buffer.data()) == nullptr) {
            std::perror("sqlite_bench: mkdtemp");
            std::exit(1);
        }
        path_ = buffer.data();
    }

    std::string path_;
    std::uint64_t next_ = 0;
};

enum class Kind { in_memory, file_always, file_none, sqlite_full, sqlite_normal };

std::unique_ptr<bulwark::DeadLetterStore> dead_letter_store(Kind kind) {
    constexpr std::size_t max_entries = 10 * purge_every;
    switch (kind) {
        case Kind::in_memory:
            return std::make_unique<bulwark::InMemoryDeadLetterStore>(max_entries);
        case Kind::file_always:
        case Kind::file_none: {
            bulwark::FileDeadLetterStoreOptions o;
            o.max_entries = max_entries;
            o.sync = kind == Kind::file_always ? bulwark::JournalSync::always
                                               : bulwark::JournalSync::none;
            return std::make_unique<bulwark::FileDeadLetterStore>(TempRoot::get().fresh("dlq"), o);
        }
        case Kind::sqlite_full:
        case Kind::sqlite_normal: {
            bulwark::SqliteDeadLetterStoreOptions o;
            o.max_entries = max_entries;
            o.synchronous = kind == Kind::sqlite_full ? bulwark::SqliteSynchronous::full
                                                      : bulwark::SqliteSynchronous::normal;
            return std::make_unique<bulwark::SqliteDeadLetterStore>(
                TempRoot::get().fresh("dlq") + ".db", o);
        }
    }
    return nullptr;
}

std::unique_ptr<bulwark::QueueStore> queue_store(Kind kind) {
    switch (kind) {
        case Kind::in_memory:
            return std::make_unique<bulwark::InMemoryQueueStore>();
        case Kind::file_always:
        case Kind::file_none: {
            bulwark::FileQueueStoreOptions o;
            o.sync = kind == Kind::file_always ? bulwark::JournalSync::always
                                               : bulwark::JournalSync::none;
            return std::make_unique<bulwark::FileQueueStore>(TempRoot::get().fresh("queue"), o);
        }
        case Kind::sqlite_full:
        case Kind::sqlite_normal: {
            bulwark::SqliteQueueStoreOptions o;
            o.synchronous = kind == Kind::sqlite_full ? bulwark::SqliteSynchronous::full
                                                      : bulwark::SqliteSynchronous::normal;
            return std::make_unique<bulwark::SqliteQueueStore>(
                TempRoot::get().fresh("queue") + ".db", o);
        }
    }
    return nullptr;
}

void BM_dead_letter_add(benchmark::State& state, Kind kind) {
    const auto store = dead_letter_store(kind);
    bulwark::DeadLetter d;
    d.type = "sms";
    d.payload = std::string(payload_bytes, 'p');
    d.error = "provider 503";
    std::int64_t held = 0;
    for (auto _ : state) {
        benchmark::DoNotOptimize(store->add(d));
        if (++held == purge_every) {
            state.PauseTiming();
            store->purge(bulwark::WallTime::max());
            held = 0;
            state.ResumeTiming();
        }
    }
    state.SetItemsProcessed(state.iterations());
}

void BM_queue_cycle(benchmark::State& state, Kind kind) {
    const auto store = queue_store(kind);
    bulwark::QueuedMessage m;
    m.payload = std::string(payload_bytes, 'q');
    const bulwark::WallTime now{std::chrono::seconds(1700000000)};
    m.due = now;
    m.enqueued = now;
    std::uint64_t n = 0;
    for (auto _ : state) {
        m.id = "m-" + std::to_string(n++);
        store->push(m);
        const auto batch = store->claim(now, 1, 30s);
        if (batch.size() != 1 || !store->complete(batch[0].id, batch[0].lease)) {
            state.SkipWithError("the message was not claimed and completed");
            break;
        }
    }
    state.SetItemsProcessed(state.iterations());
}

// One file per (operation, setting, thread count), shared by the run's threads; stores are
// opened one at a time (the first creates the schema) and each thread keeps its own connection.
std::mutex open_mutex;

std::string shared_path(const char* what, bulwark::SqliteSynchronous sync, int threads) {
    static const std::string root = TempRoot::get().fresh("connections");
    static const bool made = std::filesystem::create_directories(root);
    (void)made;
    return root + "/" + what + (sync == bulwark::SqliteSynchronous::full ? "-full-" : "-normal-") +
           std::to_string(threads) + ".db";
}

void BM_sqlite_connections_dead_letter_add(benchmark::State& state,
                                           bulwark::SqliteSynchronous sync) {
    std::unique_ptr<bulwark::SqliteDeadLetterStore> store;
    {
        const std::lock_guard<std::mutex> lock(open_mutex);
        bulwark::SqliteDeadLetterStoreOptions o;
        o.max_entries = 10 * purge_every;
        o.synchronous = sync;
        store = std::make_unique<bulwark::SqliteDeadLetterStore>(
            shared_path("dlq", sync, state.threads()), o);
    }
    bulwark::DeadLetter d;
    d.type = "sms";
    d.payload = std::string(payload_bytes, 'p');
    d.error = "provider 503";
    std::int64_t held = 0;
    const std::int64_t purge_at = purge_every / state.threads();
    for (auto _ : state) {
        benchmark::DoNotOptimize(store->add(d));
        if (++held == purge_at) {
            state.PauseTiming();
            store->purge(bulwark::WallTime::max());
            held = 0;
            state.ResumeTiming();
        }
    }
    state.SetItemsProcessed(state.iterations());
}

void BM_sqlite_connections_queue_cycle(benchmark::State& state, bulwark::SqliteSynchronous sync) {
    std::unique_ptr<bulwark::SqliteQueueStore> store;
    {
        const std::lock_guard<std::mutex> lock(open_mutex);
        bulwark::SqliteQueueStoreOptions o;
        o.synchronous = sync;
        store = std::make_unique<bulwark::SqliteQueueStore>(
            shared_path("queue", sync, state.threads()), o);
    }
    bulwark::QueuedMessage m;
    m.payload = std::string(payload_bytes, 'q');
    const bulwark::WallTime now{std::chrono::seconds(1700000000)};
    m.due = now;
    m.enqueued = now;
    const std::string prefix = "t" + std::to_string(state.thread_index()) + "-";
    std::uint64_t n = 0;
    std::int64_t completed = 0;
    for (auto _ : state) {
        // Another thread may claim this message and this one another's: every push leaves one
        // more ready message than claims taken, so a claim always finds one.
        m.id = prefix + std::to_string(n++);
        store->push(m);
        for (const auto& claimed : store->claim(now, 1, 30s)) {
            completed += store->complete(claimed.id, claimed.lease) ? 1 : 0;
        }
    }
    state.SetItemsProcessed(completed);
}

}  // namespace

BENCHMARK_CAPTURE(BM_dead_letter_add, in_memory, Kind::in_memory)->UseRealTime();
BENCHMARK_CAPTURE(BM_dead_letter_add, file_always, Kind::file_always)->UseRealTime();
BENCHMARK_CAPTURE(BM_dead_letter_add, file_none, Kind::file_none)->UseRealTime();
BENCHMARK_CAPTURE(BM_dead_letter_add, sqlite_full, Kind::sqlite_full)->UseRealTime();
BENCHMARK_CAPTURE(BM_dead_letter_add, sqlite_normal, Kind::sqlite_normal)->UseRealTime();
BENCHMARK_CAPTURE(BM_queue_cycle, in_memory, Kind::in_memory)->UseRealTime();
BENCHMARK_CAPTURE(BM_queue_cycle, file_always, Kind::file_always)->UseRealTime();
BENCHMARK_CAPTURE(BM_queue_cycle, file_none, Kind::file_none)->UseRealTime();
BENCHMARK_CAPTURE(BM_queue_cycle, sqlite_full, Kind::sqlite_full)->UseRealTime();
BENCHMARK_CAPTURE(BM_queue_cycle, sqlite_normal, Kind::sqlite_normal)->UseRealTime();
BENCHMARK_CAPTURE(BM_sqlite_connections_dead_letter_add, full, bulwark::SqliteSynchronous::full)
    ->Threads(1)
    ->Threads(2)
    ->Threads(4)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_sqlite_connections_dead_letter_add, normal, bulwark::SqliteSynchronous::normal)
    ->Threads(1)
    ->Threads(2)
    ->Threads(4)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_sqlite_connections_queue_cycle, full, bulwark::SqliteSynchronous::full)
    ->Threads(1)
    ->Threads(2)
    ->Threads(4)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_sqlite_connections_queue_cycle, normal, bulwark::SqliteSynchronous::normal)
    ->Threads(1)
    ->Threads(2)
    ->Threads(4)
    ->UseRealTime();

int main(int argc, char** argv) {
    const int status = bulwark_bench::run_main(
        argc, argv, {"BM_dead_letter_add/in_memory", "BM_queue_cycle/in_memory"});
    TempRoot::get().remove();
    return status;
}

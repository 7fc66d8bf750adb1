// FileDeadLetterStore's write path and open, against the disk's own sync rate. The baseline,
// BM_fdatasync_append, is what one writer gets from the disk: 256 bytes pwritten at the end of a
// file and fdatasync-ed, per iteration (a sync's latency; its items/s is the sync rate). BM_add
// adds a DeadLetter with a 256-byte payload to one store shared by 1, 2, 4 and 8 threads with
// sync=always (each add is acknowledged once synced), and at 1 thread with sync=batch and none;
// "batch" is adds per journal sync. BM_reopen times opening a journal of
// BULWARK_BENCH_REOPEN_RECORDS (default 1000000) adds with 64-byte payloads, built once per
// process with sync=none (the journal is in the page cache: a warm open). Goal: >= 50k acked
// adds/s at 8 threads, or the sync rate x batch. Stores live in a mkdtemp directory (0700) under
// $TMPDIR or /tmp, removed at exit: run it on the disk you mean to measure.
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fcntl.h>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <sys/stat.h>
#include <sys/types.h>
#include <system_error>
#include <unistd.h>
#include <utility>
#include <vector>

#include <bulwark/file_dead_letter_store.hpp>

#include "bench_main.hpp"

namespace {

constexpr std::size_t record_bytes = 256;
constexpr std::size_t reopen_payload_bytes = 64;
constexpr std::size_t default_reopen_records = 1000000;

// The process's scratch directory: mkdtemp under $TMPDIR (or /tmp), mode 0700, removed at exit.
class TempRoot {
public:
    static TempRoot& get() {
        static TempRoot root;
        return root;
    }

    TempRoot(const TempRoot&) = delete;
    TempRoot& operator=(const TempRoot&) = delete;
    ~TempRoot() { remove(); }

    bool ok() const { return !path_.empty(); }

    // A new path under the root (not created). Called by one thread at a time.
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
        pattern += "/bulwark-fdls-bench-XXXXXX";
        std::vector<char> buffer(pattern.begin(), pattern.end());
        buffer.push_back('\0');
        if (::mkdtemp(buffer.data()) == nullptr || ::chmod(buffer.data(), 0700) != 0) {
            std::perror("file_dead_letter_store_bench: mkdtemp");
            return;
        }
        path_ = buffer.data();
    }

    std::string path_;
    std::uint64_t next_ = 0;
};

bulwark::DeadLetter make_letter(std::size_t payload_bytes) {
    bulwark::DeadLetter d;  // id empty: the store assigns a unique one per add
    d.type = "bench";
    d.payload = std::string(payload_bytes, 'p');
    d.error = "timeout after 3 attempts";
    return d;
}

// ---- the baseline: the disk's sync rate, one writer -------------------------------------------

void BM_fdatasync_append(benchmark::State& state) {
    TempRoot& root = TempRoot::get();
    if (!root.ok()) {
        state.SkipWithError("no temp directory");
        return;
    }
    const std::string path = root.fresh("fdatasync");
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        state.SkipWithError("open failed");
        return;
    }
    const std::string record(record_bytes, 'r');
    off_t end = 0;
    bool failed = false;
    for (auto _ : state) {
        if (failed) {
            continue;
        }
        if (::pwrite(fd, record.data(), record.size(), end) !=
                static_cast<ssize_t>(record.size()) ||
            ::fdatasync(fd) != 0) {
            state.SkipWithError("pwrite or fdatasync failed");
            failed = true;
            continue;
        }
        end += static_cast<off_t>(record.size());
    }
    ::close(fd);
    ::unlink(path.c_str());
    state.SetItemsProcessed(state.iterations());
}

// ---- add: one store shared by all the benchmark's threads --------------------------------------

// The store of the BM_add run in progress (one benchmark runs at a time). Thread 0 opens it before
// the loop and closes it after; the other threads read it only inside the loop, which the
// library starts and ends with a barrier across the threads (the atomic makes the hand-over
// explicit as well).
struct SharedStore {
    std::atomic<bulwark::FileDeadLetterStore*> store{nullptr};
    std::unique_ptr<bulwark::FileDeadLetterStore> owner;
    std::string directory;
    std::uint64_t syncs_before = 0;
};

SharedStore& shared_store() {
    static SharedStore shared;
    return shared;
}

void open_shared_store(benchmark::State& state, bulwark::JournalSync mode) {
    SharedStore& shared = shared_store();
    TempRoot& root = TempRoot::get();
    if (!root.ok()) {
        state.SkipWithError("no temp directory");
        return;
    }
    bulwark::FileDeadLetterStoreOptions options;
    options.sync = mode;
    options.max_entries = std::size_t{1} << 30U;  // never full: every add stores a record
    shared.directory = root.fresh(std::string("add-") + bulwark::to_string(mode));
    try {
        shared.owner = std::make_unique<bulwark::FileDeadLetterStore>(shared.directory, options);
        shared.syncs_before = shared.owner->journal_stats().syncs;
        shared.store.store(shared.owner.get(), std::memory_order_release);
    } catch (const std::exception& e) {
        state.SkipWithError(e.what());
    }
}

void close_shared_store(benchmark::State& state) {
    SharedStore& shared = shared_store();
    shared.store.store(nullptr, std::memory_order_relaxed);
    if (shared.owner != nullptr && !state.error_occurred()) {
        const std::uint64_t syncs = shared.owner->journal_stats().syncs - shared.syncs_before;
        const double adds = static_cast<double>(state.iterations()) * state.threads();
        // Only this thread sets them: the library sums counters over the threads.
        state.counters["batch"] = syncs == 0 ? 0.0 : adds / static_cast<double>(syncs);
        state.counters["syncs_per_second"] =
            benchmark::Counter(static_cast<double>(syncs), benchmark::Counter::kIsRate);
    }
    shared.owner.reset();
    if (!shared.directory.empty()) {
        std::error_code ignored;
        std::filesystem::remove_all(shared.directory, ignored);
        shared.directory.clear();
    }
}

void BM_add(benchmark::State& state, bulwark::JournalSync mode) {
    if (state.thread_index() == 0) {
        open_shared_store(state, mode);
    }
    const bulwark::DeadLetter letter = make_letter(record_bytes);
    bool failed = false;
    for (auto _ : state) {
        if (failed) {
            continue;  // (a break would skip the barrier that ends the loop in every thread)
        }
        bulwark::FileDeadLetterStore* store = shared_store().store.load(std::memory_order_acquire);
        if (store == nullptr) {
            if (state.thread_index() != 0) {
                state.SkipWithError("the shared store could not be opened");
            }
            failed = true;
            continue;
        }
        try {
            std::string id = store->add(letter);
            benchmark::DoNotOptimize(id);
        } catch (const std::exception& e) {
            state.SkipWithError(e.what());
            failed = true;
        }
    }
    state.SetItemsProcessed(state.iterations());
    if (state.thread_index() == 0) {
        close_shared_store(state);
    }
}

// ---- reopen: a journal of many small records ---------------------------------------------------

std::size_t reopen_records() {
    const char* text = std::getenv("BULWARK_BENCH_REOPEN_RECORDS");
    if (text == nullptr || *text == '\0') {
        return default_reopen_records;
    }
    char* end = nullptr;
    const unsigned long long n = std::strtoull(text, &end, 10);
    if (end == text || *end != '\0' || n == 0) {
        std::fprintf(stderr, "BULWARK_BENCH_REOPEN_RECORDS=%s is not a positive count; using %zu\n",
                     text, default_reopen_records);
        return default_reopen_records;
    }
    return static_cast<std::size_t>(n);
}

bulwark::FileDeadLetterStoreOptions reopen_options(std::size_t records) {
    bulwark::FileDeadLetterStoreOptions options;
    options.sync = bulwark::JournalSync::none;  // building it; open does not sync
    options.max_entries = records;
    return options;
}

struct ReopenJournal {
    std::string directory;  // empty: could not be built (error says why)
    std::string error;
    std::size_t records = 0;
    std::uint64_t bytes = 0;
};

// Built once per process, on first use, by adding `records` letters (not timed).
const ReopenJournal& reopen_journal() {
    static const ReopenJournal journal = [] {
        ReopenJournal j;
        j.records = reopen_records();
        TempRoot& root = TempRoot::get();
        if (!root.ok()) {
            j.error = "no temp directory";
            return j;
        }
        const std::string directory = root.fresh("reopen");
        try {
            bulwark::FileDeadLetterStore store(directory, reopen_options(j.records));
            const bulwark::DeadLetter letter = make_letter(reopen_payload_bytes);
            for (std::size_t i = 0; i < j.records; ++i) {
                store.add(letter);
            }
            store.sync();
            j.bytes = store.journal_stats().file_bytes;
            j.directory = directory;
        } catch (const std::exception& e) {
            j.error = e.what();
        }
        return j;
    }();
    return journal;
}

void BM_reopen(benchmark::State& state) {
    const ReopenJournal& journal = reopen_journal();
    if (journal.directory.empty()) {
        state.SkipWithError(journal.error.c_str());
        return;
    }
    const bulwark::FileDeadLetterStoreOptions options = reopen_options(journal.records);
    for (auto _ : state) {
        try {
            auto store = std::make_unique<bulwark::FileDeadLetterStore>(journal.directory, options);
            state.PauseTiming();  // checking and closing it are not the open
            if (store->size() != journal.records) {
                state.SkipWithError("the reopened store does not hold every record");
            }
            store.reset();
            state.ResumeTiming();
        } catch (const std::exception& e) {
            state.SkipWithError(e.what());
        }
    }
    state.counters["records"] = static_cast<double>(journal.records);
    state.counters["journal_MiB"] = static_cast<double>(journal.bytes) / (1024.0 * 1024.0);
    state.counters["records_per_second"] = benchmark::Counter(
        static_cast<double>(journal.records) * static_cast<double>(state.iterations()),
        benchmark::Counter::kIsRate);
}

// ---- the summary -------------------------------------------------------------------------------

constexpr const char* baseline_name = "BM_fdatasync_append";
constexpr const char* reopen_name = "BM_reopen";

// The ratio reporter (ratios to the fsync baseline, per thread count), then a table of the adds:
// acknowledged adds/s, adds per sync, against the baseline's sync rate and latency.
class SummaryReporter : public bulwark_bench::RatioReporter {
public:
    SummaryReporter() : RatioReporter({baseline_name}) {}

    void ReportRuns(const std::vector<Run>& runs) override {
        std::vector<Run> ratioed;
        std::vector<Run> reopen;
        for (const Run& run : runs) {
            (run.run_name.function_name == reopen_name ? reopen : ratioed).push_back(run);
        }
        if (!ratioed.empty()) {
            RatioReporter::ReportRuns(ratioed);
        }
        if (!reopen.empty()) {  // printed, but no ratio to a sync
            ConsoleReporter::ReportRuns(reopen);
        }
        for (const Run& run : runs) {
            if (run.error_occurred) {
                continue;
            }
            // With repetitions, the medians; otherwise the single measurement.
            const bool aggregate = run.run_type == Run::RT_Aggregate;
            if (aggregate && run.aggregate_name != "median") {
                continue;
            }
            Figures& f = figures_[{run.run_name.function_name, run.threads}];
            if (aggregate || !f.from_aggregate) {
                f.from_aggregate = aggregate;
                f.real_ms = run.GetAdjustedRealTime() * to_ms(run.time_unit);
                f.items_per_second = counter(run, "items_per_second");
                f.batch = counter(run, "batch");
                f.syncs_per_second = counter(run, "syncs_per_second");
                f.records = counter(run, "records");
                f.journal_mib = counter(run, "journal_MiB");
            }
        }
    }

    void Finalize() override {
        RatioReporter::Finalize();
        std::printf(
            "\nFileDeadLetterStore::add, %zu-byte payload, one store shared by the threads"
            " (medians when repeated):\n",
            record_bytes);
        std::printf("  %-8s %7s %16s %10s %14s\n", "sync", "threads", "acked adds/s", "adds/sync",
                    "store syncs/s");
        const Figures* at8 = nullptr;
        for (const auto& [key, f] : figures_) {
            const std::string& name = key.first;
            const std::string prefix = "BM_add/";
            if (name.rfind(prefix, 0) != 0) {
                continue;
            }
            char batch[32] = "no syncs";
            if (f.syncs_per_second > 0) {
                std::snprintf(batch, sizeof batch, "%.2f", f.batch);
            }
            std::printf("  %-8s %7lld %16.0f %10s %14.0f\n", name.substr(prefix.size()).c_str(),
                        static_cast<long long>(key.second), f.items_per_second, batch,
                        f.syncs_per_second);
            if (name == "BM_add/always" && key.second == 8) {
                at8 = &f;
            }
        }
        const auto base = figures_.find({baseline_name, 1});
        double sync_rate = 0;
        if (base != figures_.end()) {
            sync_rate = base->second.items_per_second;
            std::printf(
                "  baseline: write %zu B + fdatasync, one writer: %.0f syncs/s, %.3f ms "
                "per sync\n",
                record_bytes, sync_rate, base->second.real_ms);
        }
        std::printf("  goal: >= 50k acked adds/s at 8 threads or sync rate x batch\n");
        if (at8 != nullptr) {
            std::printf("  now at 8 threads (sync=always): %.0f acked adds/s = %.1f%% of 50k",
                        at8->items_per_second, at8->items_per_second / 500.0);
            if (sync_rate > 0) {
                std::printf("; sync rate x batch = %.0f x %.2f = %.0f adds/s", sync_rate,
                            at8->batch, sync_rate * at8->batch);
            }
            std::printf("\n");
        }
        const auto reopen = figures_.find({reopen_name, 1});
        if (reopen != figures_.end()) {
            std::printf("  reopen: %.0f records (%.1f MiB journal) in %.1f ms\n",
                        reopen->second.records, reopen->second.journal_mib, reopen->second.real_ms);
        }
        std::fflush(stdout);
    }

private:
    struct Figures {
        bool from_aggregate = false;
        double real_ms = 0;
        double items_per_second = 0;
        double batch = 0;
        double syncs_per_second = 0;
        double records = 0;
        double journal_mib = 0;
    };

    static double counter(const Run& run, const char* name) {
        const auto it = run.counters.find(name);
        return it == run.counters.end() ? 0.0 : it->second.value;
    }

    static double to_ms(benchmark::TimeUnit unit) {
        switch (unit) {
            case benchmark::kSecond:
                return 1e3;
            case benchmark::kMillisecond:
                return 1.0;
            case benchmark::kMicrosecond:
                return 1e-3;
            case benchmark::kNanosecond:
                break;
        }
        return 1e-6;
    }

    std::map<std::pair<std::string, long long>, Figures> figures_;
};

}  // namespace

BENCHMARK(BM_fdatasync_append)->UseRealTime();
BENCHMARK_CAPTURE(BM_add, always, bulwark::JournalSync::always)
    ->Threads(1)
    ->Threads(2)
    ->Threads(4)
    ->Threads(8)
    ->Threads(16)  // beyond the goal's 8: how the batch grows with the writers
    ->Threads(32)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_add, batch, bulwark::JournalSync::batch)->Threads(1)->UseRealTime();
BENCHMARK_CAPTURE(BM_add, none, bulwark::JournalSync::none)->Threads(1)->UseRealTime();
BENCHMARK(BM_reopen)->Iterations(3)->Unit(benchmark::kMillisecond)->UseRealTime();

int main(int argc, char** argv) {
    SummaryReporter reporter;
    const int status = bulwark_bench::run_main(argc, argv, reporter);
    TempRoot::get().remove();
    return status;
}

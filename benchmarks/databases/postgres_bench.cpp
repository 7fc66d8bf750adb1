// Throughput of the PostgreSQL stores beside the in-memory and file stores: dead-letter add(),
// and a queue's push -> claim -> complete, with 1, 2 and 4 threads (each PostgreSQL thread on its
// own pooled connection), under the durability setting named in each row. Needs a running
// server: BULWARK_PG_DSN (a libpq connection string); without it, it says so and exits 0.
// BULWARK_BENCH_OPS sets the operations per row (default 4000; the ctest smoke run uses 200).
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include <bulwark/file_dead_letter_store.hpp>
#include <bulwark/file_queue_store.hpp>
#include <bulwark/in_memory_dead_letter_store.hpp>
#include <bulwark/in_memory_queue_store.hpp>
#include <bulwark/postgres_dead_letter_store.hpp>
#include <bulwark/postgres_queue_store.hpp>

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

long ops_per_row() {
    const char* env = std::getenv("BULWARK_BENCH_OPS");
    return env != nullptr ? std::max(1L, std::atol(env)) : 4000;
}

// Runs `op(thread, i)` `total` times split over `threads` threads; returns operations per second.
double run(int threads, long total, const std::function<void(int, long)>& op) {
    std::atomic<long> next{0};
    std::atomic<int> errors{0};
    const auto t0 = Clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            try {
                for (long i = next++; i < total; i = next++) {
                    op(t, i);
                }
            } catch (const std::exception& e) {
                std::fprintf(stderr, "error: %s\n", e.what());
                ++errors;
            }
        });
    }
    for (std::thread& th : pool) {
        th.join();
    }
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    return errors.load() == 0 ? static_cast<double>(total) / s : -1.0;
}

void row(const char* what, const char* store, const char* durability, int threads, double per_s) {
    std::printf("%-22s %-26s %-36s threads:%d %10.0f ops/s\n", what, store, durability, threads,
                per_s);
    std::fflush(stdout);
}

bulwark::DeadLetter letter(long i) {
    bulwark::DeadLetter d;
    d.id = "dl-" + std::to_string(::getpid()) + "-" + std::to_string(i);
    d.type = "sms";
    d.payload = std::string(200, 'x');
    d.error = "provider 503";
    return d;
}

void dead_letter_rows(bulwark::DeadLetterStore& store, const char* name, const char* durability,
                      long ops) {
    for (const int threads : {1, 2, 4}) {
        const std::string prefix = std::to_string(threads) + "-";
        row("dead-letter add", name, durability, threads, run(threads, ops, [&](int, long i) {
                bulwark::DeadLetter d = letter(i);
                d.id = prefix + d.id;
                store.add(std::move(d));
            }));
    }
}

// One operation = push one message, claim it (possibly another thread's), complete it.
void queue_rows(bulwark::QueueStore& store, const char* name, const char* durability, long ops) {
    for (const int threads : {1, 2, 4}) {
        const std::string prefix = std::to_string(threads) + "-" + std::to_string(::getpid()) + "-";
        row("enqueue-claim-complete", name, durability, threads,
            run(threads, ops, [&](int, long i) {
                bulwark::QueuedMessage m;
                m.id = prefix + std::to_string(i);
                m.payload = std::string(200, 'x');
                const auto now = std::chrono::system_clock::now();
                m.due = now;
                store.push(m);
                for (const bulwark::QueuedMessage& c : store.claim(now + 1s, 1, 30s)) {
                    store.complete(c.id, c.lease);
                }
            }));
    }
}

}  // namespace

int main() {
    const char* dsn = std::getenv("BULWARK_PG_DSN");
    if (dsn == nullptr || *dsn == '\0') {
        std::printf(
            "postgres_bench: BULWARK_PG_DSN is not set (a libpq connection string to a "
            "running server): skipped\n");
        return 0;
    }
    const long ops = ops_per_row();
    const long pg_ops = ops;
    try {
        std::printf("%ld operations per row\n", ops);
        {
            bulwark::InMemoryDeadLetterStore mem(1000000);
            dead_letter_rows(mem, "InMemoryDeadLetterStore", "none (memory)", ops);
            bulwark::InMemoryQueueStore q;
            queue_rows(q, "InMemoryQueueStore", "none (memory)", ops);
        }
        const auto dir = std::filesystem::temp_directory_path() /
                         ("bulwark_pg_bench_" + std::to_string(::getpid()));
        std::filesystem::create_directories(dir);
        {
            bulwark::FileDeadLetterStoreOptions o;
            o.max_entries = 1000000;
            bulwark::FileDeadLetterStore file((dir / "dl").string(), o);
            dead_letter_rows(file, "FileDeadLetterStore", "sync=always (fsync per add)", ops);
            bulwark::FileQueueStore q((dir / "q").string());
            queue_rows(q, "FileQueueStore", "sync=always (fsync per change)", ops);
        }
        std::filesystem::remove_all(dir);
        for (const bool sync : {true, false}) {
            bulwark::PostgresStoreOptions db;
            db.conninfo = dsn;
            db.schema = "bench_" + std::to_string(::getpid()) + (sync ? "_on" : "_off");
            db.pool_size = 4;
            db.synchronous_commit = sync;
            const char* durability =
                sync ? "synchronous_commit=on (WAL flushed)" : "synchronous_commit=off";
            bulwark::PostgresDeadLetterStoreOptions dlo;
            dlo.database = db;
            dlo.max_entries = 1000000;
            bulwark::PostgresDeadLetterStore dl(dlo);
            dead_letter_rows(dl, "PostgresDeadLetterStore", durability, pg_ops);
            bulwark::PostgresQueueStoreOptions qo;
            qo.database = db;
            bulwark::PostgresQueueStore q(qo);
            queue_rows(q, "PostgresQueueStore", durability, pg_ops);
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "postgres_bench: %s\n", e.what());
        return 1;
    }
    return 0;
}

// One instance of a service for the postgres.instances tests: a DeliveryEngine on a shared
// PostgresQueueStore and PostgresDeadLetterStore, driven by its own loop (claim, deliver,
// complete through run_due(), then wait_for_work() when nothing is ready).
//   pg_worker seed CONNINFO SCHEMA N            submit N messages ("m-<i>"; every 1000th is
//                                               "fail-<i>", which the channel refuses for good)
//   pg_worker work CONNINFO SCHEMA LEASE_MS LEDGER PROGRESS_FD
//                                               deliver until the queue is empty; the channel
//                                               appends each body it sends to LEDGER (one
//                                               write() per line: a SIGKILL leaves whole lines)
//                                               and writes a byte to PROGRESS_FD every 500.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fcntl.h>
#include <string>
#include <unistd.h>
#include <vector>

#include <bulwark/delivery.hpp>
#include <bulwark/postgres_dead_letter_store.hpp>
#include <bulwark/postgres_queue_store.hpp>

namespace {

using namespace std::chrono_literals;

bulwark::PostgresStoreOptions database(const char* conninfo, const char* schema) {
    bulwark::PostgresStoreOptions o;
    o.conninfo = conninfo;
    o.schema = schema;
    o.pool_size = 2;
    // BULWARK_PG_SYNCHRONOUS_COMMIT=off: the speed setting of docs/databases.md (a clean server
    // restart still loses nothing: the shutdown flushes the WAL).
    const char* sync = std::getenv("BULWARK_PG_SYNCHRONOUS_COMMIT");
    o.synchronous_commit = sync == nullptr || std::string(sync) != "off";
    return o;
}

bulwark::DeliveryEngineOptions engine_options(bulwark::Duration lease) {
    bulwark::DeliveryEngineOptions o;
    o.workers = 0;  // driven by the loop below
    o.batch_size = 10;
    o.lease = lease;
    o.max_passes = 3;
    o.backoff = bulwark::Backoff::fixed(100ms);
    return o;
}

int seed(const char* conninfo, const char* schema, long n) {
    bulwark::PostgresQueueStoreOptions qo;
    qo.database = database(conninfo, schema);
    bulwark::PostgresQueueStore queue(qo);
    bulwark::PostgresDeadLetterStoreOptions dlo;
    dlo.database = qo.database;
    dlo.max_entries = 1000000;
    bulwark::PostgresDeadLetterStore dead(dlo);
    bulwark::DeliveryEngine<std::string> engine(bulwark::FallbackRules{}, dead, queue,
                                                engine_options(60s));
    engine.add_channel("ledger", [](const std::string&) { return bulwark::Receipt{}; });
    for (long first = 0; first < n; first += 1000) {
        std::vector<std::string> batch;
        for (long i = first; i < std::min(n, first + 1000); ++i) {
            batch.push_back((i % 1000 == 999 ? "fail-" : "m-") + std::to_string(i));
        }
        engine.submit_batch(std::move(batch), std::chrono::system_clock::now(), {"ledger"});
    }
    engine.stop();
    std::printf("seeded %ld messages\n", n);
    return 0;
}

int work(const char* conninfo, const char* schema, long lease_ms, const char* ledger_path,
         int progress_fd) {
    const int ledger = ::open(ledger_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (ledger < 0) {
        std::perror("pg_worker: open ledger");
        return 2;
    }
    bulwark::PostgresQueueStoreOptions qo;
    qo.database = database(conninfo, schema);
    bulwark::PostgresQueueStore queue(qo);
    bulwark::PostgresDeadLetterStoreOptions dlo;
    dlo.database = qo.database;
    dlo.max_entries = 1000000;
    bulwark::PostgresDeadLetterStore dead(dlo);
    bulwark::DeliveryEngine<std::string> engine(
        bulwark::FallbackRules{}, dead, queue, engine_options(std::chrono::milliseconds(lease_ms)));
    std::atomic<long> sent{0};
    engine.add_channel("ledger", [&](const std::string& body) {
        if (body.compare(0, 5, "fail-") == 0) {
            throw bulwark::DeliveryError(bulwark::DeliveryErrorKind::permanent, "refused");
        }
        const std::string line = body + "\n";
        if (::write(ledger, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
            throw bulwark::DeliveryError(bulwark::DeliveryErrorKind::transient, "ledger write");
        }
        if (++sent % 500 == 0 && progress_fd >= 0) {
            (void)!::write(progress_fd, "x", 1);
        }
        bulwark::Receipt r;
        r.delivered = true;
        return r;
    });
    long store_errors = 0;
    for (;;) {
        try {
            if (engine.run_due() > 0) {
                continue;
            }
            if (queue.size() == 0) {
                break;  // every message is in a terminal state (none is leased anywhere)
            }
            bulwark::Duration wait = 200ms;
            if (const auto next = queue.next_ready()) {
                wait = std::clamp<bulwark::Duration>(*next - std::chrono::system_clock::now(), 1ms,
                                                     200ms);
            }
            queue.wait_for_work(wait);
        } catch (const std::exception& e) {
            // The store's retries were spent (a long outage): keep going, as a service would.
            ++store_errors;
            std::fprintf(stderr, "pg_worker: %s\n", e.what());
        }
    }
    engine.stop();
    const auto s = queue.breaker().stats();
    std::printf("worker %d: sent %ld, breaker failures %llu opened %llu, errors %ld\n",
                static_cast<int>(::getpid()), sent.load(),
                static_cast<unsigned long long>(s.failures),
                static_cast<unsigned long long>(s.opened), store_errors);
    ::close(ledger);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const std::string mode = argc > 1 ? argv[1] : "";
        if (mode == "seed" && argc == 5) {
            return seed(argv[2], argv[3], std::atol(argv[4]));
        }
        if (mode == "work" && argc == 7) {
            return work(argv[2], argv[3], std::atol(argv[4]), argv[5], std::atoi(argv[6]));
        }
        std::fprintf(stderr,
                     "usage: pg_worker seed CONNINFO SCHEMA N | work CONNINFO SCHEMA "
                     "LEASE_MS LEDGER PROGRESS_FD\n");
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "pg_worker: %s\n", e.what());
        return 1;
    }
}

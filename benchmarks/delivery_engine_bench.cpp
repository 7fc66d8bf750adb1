// DeliveryEngine: messages from submit() to sent through 2 workers and instant in-memory adapters
// (the engine's own cost: queue store, envelope, routing chain, records, statistics), and
// submit() alone, against a bare call. With a FileQueueStore (when its header is present) the
// same throughput on a durable queue. Memory per queued message is printed at the end.
//
// One iteration of a throughput benchmark is one message: the loop submits, the workers send
// concurrently, and the last iteration waits for the queue to drain, so real time per iteration
// is the engine's cost per message end to end (items_per_second is messages/s). The submitting
// thread shares the 2 cores with the workers, as a service's request threads would.
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#if __has_include(<malloc.h>)
#include <malloc.h>
#endif

#include <bulwark/delivery.hpp>
#include <bulwark/in_memory_dead_letter_store.hpp>
#include <bulwark/in_memory_queue_store.hpp>

#if __has_include(<bulwark/file_queue_store.hpp>)
#include <cstdlib>
#include <filesystem>

#include <bulwark/file_queue_store.hpp>
#define BULWARK_BENCH_FILE_QUEUE_STORE 1
#endif

#include "bench_main.hpp"

namespace {

std::size_t g_sink = 0;

BULWARK_NOINLINE void handle(const std::string& m) {
    g_sink += m.size();
}

const std::string& message() {
    static const std::string m(64, 'm');
    return m;
}

void BM_bare_call(benchmark::State& state) {
    for (auto _ : state) {
        handle(message());
        benchmark::DoNotOptimize(g_sink);
    }
}

// An adapter that accepts at once; it counts what it accepted (one relaxed add per message, on
// a line of its own).
struct Instant {
    alignas(64) std::atomic<std::uint64_t> accepted{0};

    bulwark::Receipt send(const std::string& m) {
        accepted.fetch_add(1, std::memory_order_relaxed);
        g_sink += m.size();
        return bulwark::Receipt{};
    }
};

bulwark::DeliveryEngineOptions engine_options(std::size_t workers,
                                              std::size_t max_tracked = 100000) {
    bulwark::DeliveryEngineOptions o;
    o.workers = workers;
    o.max_tracked = max_tracked;
    return o;
}

// Submits one message per iteration into an engine with 2 workers; the submitter waits (outside
// the engine) whenever more than `backlog` messages are waiting, so that memory stays bounded
// and the figure is the steady state, and the last iteration waits for every message to be sent.
void run_throughput(benchmark::State& state, bulwark::QueueStore* store,
                    std::size_t max_tracked = 100000) {
    constexpr std::uint64_t backlog = 20000;
    bulwark::InMemoryDeadLetterStore dlq;
    Instant email;
    std::unique_ptr<bulwark::DeliveryEngine<std::string>> engine;
    if (store != nullptr) {
        engine = std::make_unique<bulwark::DeliveryEngine<std::string>>(
            bulwark::FallbackRules{}, dlq, *store, engine_options(2, max_tracked));
    } else {
        engine = std::make_unique<bulwark::DeliveryEngine<std::string>>(
            bulwark::FallbackRules{}, dlq, engine_options(2, max_tracked));
    }
    engine->add_channel("email", email);
    const std::vector<std::string> route{"email"};
    engine->start();
    std::uint64_t submitted = 0;
    const auto last = static_cast<std::uint64_t>(state.max_iterations);
    for (auto _ : state) {
        engine->submit(message(), route);
        ++submitted;
        if (submitted == last) {
            if (!engine->drain(std::chrono::minutes(5))) {
                state.SkipWithError("the engine did not drain in 5 minutes");
            }
        } else if ((submitted & 1023) == 0) {
            while (submitted - email.accepted.load(std::memory_order_relaxed) > backlog) {
                std::this_thread::sleep_for(std::chrono::microseconds(100));
            }
        }
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
    const auto counters = engine->counters();
    state.counters["retries"] = static_cast<double>(counters.retries);
    engine->stop();
}

void BM_engine_submit_to_sent(benchmark::State& state) {
    run_throughput(state, nullptr);
}

// The same with 1000 finished messages tracked instead of 100000: what keeping the statuses and
// attempts of the last 100000 costs (their records outgrow the caches).
void BM_engine_submit_to_sent_track_1000(benchmark::State& state) {
    run_throughput(state, nullptr, 1000);
}

void BM_engine_submit_to_sent_queue_store(benchmark::State& state) {
    bulwark::InMemoryQueueStore store;
    run_throughput(state, &store);
}

#ifdef BULWARK_BENCH_FILE_QUEUE_STORE
// A durable queue: every submit() is one synced push (group commit across submitters), every
// pass one complete(). A fresh directory per run, removed after.
void BM_engine_submit_to_sent_file_queue_store(benchmark::State& state) {
    std::string dir =
        (std::filesystem::temp_directory_path() / "bulwark-bench-fqs-XXXXXX").string();
    if (mkdtemp(dir.data()) == nullptr) {
        state.SkipWithError("mkdtemp failed");
        return;
    }
    {
        bulwark::FileQueueStore store(dir + "/queue");
        run_throughput(state, &store);
    }
    std::filesystem::remove_all(dir);
}
#endif

// submit() alone (no workers): the envelope, the id, the record, the store's push. The engine is
// replaced every 2^16 messages, outside the timing, so that memory stays bounded.
void BM_engine_submit(benchmark::State& state) {
    bulwark::InMemoryDeadLetterStore dlq;
    Instant email;
    auto make = [&] {
        auto e = std::make_unique<bulwark::DeliveryEngine<std::string>>(bulwark::FallbackRules{},
                                                                        dlq, engine_options(0));
        e->add_channel("email", email);
        e->start();
        return e;
    };
    auto engine = make();
    const std::vector<std::string> route{"email"};
    std::uint64_t n = 0;
    for (auto _ : state) {
        engine->submit(message(), route);
        if ((++n & 0xffff) == 0) {
            state.PauseTiming();
            engine.reset();
            engine = make();
            state.ResumeTiming();
        }
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

}  // namespace

BENCHMARK(BM_bare_call)->UseRealTime();
BENCHMARK(BM_engine_submit)->UseRealTime();
BENCHMARK(BM_engine_submit_to_sent)->UseRealTime();
BENCHMARK(BM_engine_submit_to_sent_track_1000)->UseRealTime();
BENCHMARK(BM_engine_submit_to_sent_queue_store)->UseRealTime();
#ifdef BULWARK_BENCH_FILE_QUEUE_STORE
BENCHMARK(BM_engine_submit_to_sent_file_queue_store)->UseRealTime();
#endif

namespace {

// Heap bytes per queued message, from glibc's allocator statistics (mallinfo2 where present):
// an engine without workers holding 100000 submitted 64-byte messages (its record of each and
// the queue store's copy), against the 64 bytes themselves.
void print_memory_per_message() {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
    constexpr std::size_t n = 100000;
    bulwark::InMemoryDeadLetterStore dlq;
    Instant email;
    const std::vector<std::string> route{"email"};
    bulwark::DeliveryEngine<std::string> engine(bulwark::FallbackRules{}, dlq, engine_options(0));
    engine.add_channel("email", email);
    engine.start();
    const std::size_t before = mallinfo2().uordblks;
    for (std::size_t i = 0; i < n; ++i) {
        engine.submit(message(), route);
    }
    const std::size_t held = mallinfo2().uordblks - before;
    std::printf(
        "\nDeliveryEngine<std::string> memory: %.0f bytes per queued 64-byte message "
        "(%zu messages, %zu bytes of heap)\n",
        static_cast<double>(held) / n, n, held);
    engine.stop();
#endif
}

}  // namespace

int main(int argc, char** argv) {
    const int status = bulwark_bench::run_main(argc, argv, {"BM_bare_call"});
    print_memory_per_message();
    return status;
}

// RetryQueue: a message through the queue (enqueue, then run_due() delivers it) and enqueue alone,
// against a bare handler call and against a hand-written mutex + std::deque queue (what users
// would otherwise write). Also a message through 2 workers. A message through a durable queue on an
// InMemoryQueueStore: the cost of the store's push, claim and complete and of the state's
// encoding. Memory per queued message is printed at the end.
#include <cstddef>
#include <cstdio>
#include <deque>
#include <mutex>
#include <string>

#if __has_include(<malloc.h>)
#include <malloc.h>
#endif

#include <bulwark/in_memory_dead_letter_store.hpp>
#include <bulwark/in_memory_queue_store.hpp>
#include <bulwark/retry_queue.hpp>

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

// What a user writes without the library: a mutex, a deque, a loop; no schedule, no retry.
void BM_naive_queue(benchmark::State& state) {
    std::mutex m;
    std::deque<std::string> q;
    for (auto _ : state) {
        {
            std::lock_guard<std::mutex> lock(m);
            q.push_back(message());
        }
        std::string next;
        {
            std::lock_guard<std::mutex> lock(m);
            next = std::move(q.front());
            q.pop_front();
        }
        handle(next);
        benchmark::DoNotOptimize(g_sink);
    }
}

void BM_retry_queue_enqueue_and_run_due(benchmark::State& state) {
    bulwark::ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(100, clock);
    bulwark::RetryQueue<std::string> queue(handle, store, bulwark::RetryOptions{},
                                           bulwark::RetryQueueOptions{}, clock);
    for (auto _ : state) {
        queue.enqueue(message());
        queue.run_due();
        benchmark::DoNotOptimize(g_sink);
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

// Durable mode: enqueue pushes the encoded message, run_due() claims it with a lease, delivers it
// and completes it.
void BM_retry_queue_durable_enqueue_and_run_due(benchmark::State& state) {
    bulwark::ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(100, clock);
    bulwark::InMemoryQueueStore queue_store;
    bulwark::RetryQueue<std::string> queue(handle, store, queue_store, bulwark::RetryOptions{},
                                           bulwark::RetryQueueOptions{}, clock);
    for (auto _ : state) {
        queue.enqueue(message());
        queue.run_due();
        benchmark::DoNotOptimize(g_sink);
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

void BM_retry_queue_enqueue(benchmark::State& state) {
    bulwark::ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(100, clock);
    bulwark::RetryQueueOptions o;
    o.max_size = 100000000;
    bulwark::RetryQueue<std::string> queue(handle, store, bulwark::RetryOptions{}, o, clock);
    for (auto _ : state) {
        queue.enqueue(message());
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

}  // namespace

BENCHMARK(BM_bare_call)->UseRealTime();
BENCHMARK(BM_naive_queue)->UseRealTime();
BENCHMARK(BM_retry_queue_enqueue_and_run_due)->UseRealTime();
BENCHMARK(BM_retry_queue_durable_enqueue_and_run_due)->UseRealTime();
BENCHMARK(BM_retry_queue_enqueue)->UseRealTime();

namespace {

// Heap bytes per queued message, from glibc's allocator statistics (mallinfo2 where present):
// the queue holding 100000 messages of 64 bytes, against the same messages in a std::vector.
void print_memory_per_message() {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
    constexpr std::size_t n = 100000;
    bulwark::ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(100, clock);
    bulwark::RetryQueueOptions o;
    o.max_size = n;
    const std::size_t before = mallinfo2().uordblks;
    {
        bulwark::RetryQueue<std::string> queue(handle, store, bulwark::RetryOptions{}, o, clock);
        for (std::size_t i = 0; i < n; ++i) {
            queue.enqueue(message());
        }
        const std::size_t held = mallinfo2().uordblks - before;
        std::printf(
            "\nRetryQueue<std::string> memory: %.0f bytes per queued 64-byte message "
            "(%zu messages, %zu bytes of heap)\n",
            static_cast<double>(held) / n, n, held);
        queue.stop(bulwark::StopMode::persist);
    }
#endif
}

}  // namespace

int main(int argc, char** argv) {
    const int status = bulwark_bench::run_main(argc, argv, {"BM_bare_call", "BM_naive_queue"});
    print_memory_per_message();
    return status;
}

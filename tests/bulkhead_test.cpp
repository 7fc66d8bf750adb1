#include <atomic>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include <bulwark/bulkhead.hpp>
#include <bulwark/pipeline.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

namespace {
// Waits (without any notion of time) until `pred` holds: synchronisation, not timing.
template <class Pred>
void spin_until(Pred pred) {
    while (!pred()) {
        std::this_thread::yield();
    }
}
}  // namespace

TEST_CASE("a bulkhead admits up to max_concurrent calls at once", "[bulkhead]") {
    bulwark::ManualClock clock;
    bulwark::Bulkhead bulkhead(2, 0, 1s, clock);
    auto a = bulkhead.try_acquire();
    auto b = bulkhead.try_acquire();
    auto c = bulkhead.try_acquire();
    CHECK(a);
    CHECK(b);
    CHECK_FALSE(c);
    CHECK(c.rejection() == bulwark::BulkheadRejection::full);
    CHECK(bulkhead.stats().in_flight == 2);
    a.release();
    CHECK(bulkhead.stats().in_flight == 1);
    CHECK(bulkhead.try_acquire());
    auto s = bulkhead.stats();
    CHECK(s.admitted == 3);
    CHECK(s.rejected == 1);
}

TEST_CASE("a full bulkhead without a queue rejects execute with BulkheadFullError", "[bulkhead]") {
    bulwark::ManualClock clock;
    bulwark::Bulkhead bulkhead(1, 0, 1s, clock);
    auto held = bulkhead.try_acquire();
    CHECK_THROWS_AS(bulkhead.execute([] { return 1; }), bulwark::BulkheadFullError);
    CHECK_THROWS_WITH(bulkhead.execute([] { return 1; }), "bulkhead is full: 1 calls in flight");
    held.release();
    CHECK(bulkhead.execute([] { return 2; }) == 2);
}

TEST_CASE("a named bulkhead's rejections carry its name as their source", "[bulkhead]") {
    bulwark::ManualClock clock;
    bulwark::Bulkhead db("db", bulwark::BulkheadOptions{1, 0, 1s}, clock);
    CHECK(db.name() == "db");
    auto held = db.try_acquire();
    auto rejected = db.try_execute([] { return 1; });
    REQUIRE(rejected.has_error());
    CHECK(bulwark_test::rejection_source(rejected.error()) == "db");
    CHECK_THROWS_WITH(rejected.rethrow_if_error(), "bulkhead 'db' is full: 1 calls in flight");
    bulwark::Bulkhead unnamed(1, 0, 1s, clock);
    auto other = unnamed.try_acquire();
    CHECK(bulwark_test::rejection_source(unnamed.try_execute([] { return 1; }).error()).empty());
}

TEST_CASE("a permit moved away is released once", "[bulkhead]") {
    bulwark::ManualClock clock;
    bulwark::Bulkhead bulkhead(1, 0, 1s, clock);
    {
        auto a = bulkhead.try_acquire();
        bulwark::Bulkhead::Permit b = std::move(a);
        CHECK(bulkhead.stats().in_flight == 1);
    }
    CHECK(bulkhead.stats().in_flight == 0);
}

TEST_CASE("a queued call gets the slot when one is released", "[bulkhead]") {
    bulwark::ManualClock clock;
    bulwark::Bulkhead bulkhead(1, 1, 10s, clock);
    auto held = bulkhead.try_acquire();
    std::atomic<bool> ran{false};
    std::thread waiter([&] { ran = bulkhead.execute([] { return true; }); });
    spin_until([&] { return bulkhead.stats().queued == 1; });
    CHECK_FALSE(ran.load());
    held.release();
    waiter.join();
    CHECK(ran.load());
    CHECK(bulkhead.stats().in_flight == 0);
}

TEST_CASE("beyond max_queue callers are rejected at once", "[bulkhead]") {
    bulwark::ManualClock clock;
    bulwark::Bulkhead bulkhead(1, 1, 10s, clock);
    auto held = bulkhead.try_acquire();
    std::thread waiter([&] { auto p = bulkhead.acquire(); });
    spin_until([&] { return bulkhead.stats().queued == 1; });
    auto refused = bulkhead.acquire();
    CHECK_FALSE(refused);
    CHECK(refused.rejection() == bulwark::BulkheadRejection::full);
    held.release();
    waiter.join();
}

TEST_CASE("a queued call gives up after queue_timeout on the bulkhead's clock", "[bulkhead]") {
    bulwark::ManualClock clock;
    bulwark::Bulkhead bulkhead(1, 4, 5s, clock);
    auto held = bulkhead.try_acquire();
    bulwark::BulkheadRejection reason = bulwark::BulkheadRejection::full;
    bool admitted = true;
    std::thread waiter([&] {
        auto p = bulkhead.acquire();
        admitted = static_cast<bool>(p);
        reason = p.rejection();
    });
    spin_until([&] { return bulkhead.stats().queued == 1; });
    clock.advance(4s);
    CHECK(bulkhead.stats().queued == 1);  // still waiting
    clock.advance(1s);
    waiter.join();
    CHECK_FALSE(admitted);
    CHECK(reason == bulwark::BulkheadRejection::queue_timeout);
    auto s = bulkhead.stats();
    CHECK(s.queue_timeouts == 1);
    CHECK(s.queued == 0);
    CHECK(s.in_flight == 1);
}

TEST_CASE("a queued call stops waiting at its context's deadline or cancellation", "[bulkhead]") {
    bulwark::ManualClock clock;
    bulwark::Bulkhead bulkhead(1, 4, 1h, clock);
    auto held = bulkhead.try_acquire();
    bulwark::Context ctx;
    ctx.set_deadline(clock.now() + 2s);
    bool admitted = true;
    std::thread waiter([&] { admitted = static_cast<bool>(bulkhead.acquire(&ctx)); });
    spin_until([&] { return bulkhead.stats().queued == 1; });
    clock.advance(2s);
    waiter.join();
    CHECK_FALSE(admitted);

    bulwark::Context cancellable;
    bulwark::BulkheadRejection reason = bulwark::BulkheadRejection::full;
    std::thread cancelled_waiter([&] { reason = bulkhead.acquire(&cancellable).rejection(); });
    spin_until([&] { return bulkhead.stats().queued == 1; });
    cancellable.cancel();
    cancelled_waiter.join();
    CHECK(reason == bulwark::BulkheadRejection::cancelled);
}

TEST_CASE("a cancelled queued call leaves the queue without waiting out its timeout",
          "[bulkhead]") {
    bulwark::Bulkhead bulkhead(1, 4, 1h);  // the real clock: cancel() notifies no one
    auto held = bulkhead.try_acquire();
    bulwark::Context ctx;
    auto result =
        std::async(std::launch::async, [&] { return bulkhead.try_execute([] { return 1; }, ctx); });
    spin_until([&] { return bulkhead.stats().queued == 1; });
    ctx.cancel();
    // A hang guard, not a timing check: without polling it would wait for an hour.
    REQUIRE(result.wait_for(30s) == std::future_status::ready);
    const bulwark::Outcome<int> outcome = result.get();
    REQUIRE_FALSE(outcome.has_value());
    CHECK_THROWS_WITH(outcome.rethrow_if_error(), "bulkhead: the call was cancelled while queued");
}

TEST_CASE("queued callers are served first in, first out", "[bulkhead]") {
    bulwark::ManualClock clock;
    bulwark::Bulkhead bulkhead(1, 3, 1h, clock);
    auto held = bulkhead.try_acquire();
    std::mutex order_mutex;
    std::vector<int> order;
    std::vector<std::thread> waiters;
    for (int i = 0; i < 3; ++i) {
        waiters.emplace_back([&, i] {
            auto p = bulkhead.acquire();
            std::lock_guard<std::mutex> lock(order_mutex);
            order.push_back(i);
        });
        spin_until([&] { return bulkhead.stats().queued == static_cast<std::uint32_t>(i + 1); });
    }
    held.release();
    for (auto& t : waiters) {
        t.join();
    }
    CHECK(order == std::vector<int>{0, 1, 2});
}

TEST_CASE("rejections reach on_rejected listeners", "[bulkhead]") {
    bulwark::ManualClock clock;
    bulwark::Bulkhead bulkhead(1, 0, 1s, clock);
    std::vector<bulwark::BulkheadEvent> events;
    bulkhead.on_rejected([&](const bulwark::BulkheadEvent& e) { events.push_back(e); });
    auto held = bulkhead.try_acquire();
    (void)bulkhead.try_acquire();
    REQUIRE(events.size() == 1);
    CHECK(events[0].reason == bulwark::BulkheadRejection::full);
    CHECK(events[0].in_flight == 1);
}

TEST_CASE("a removed on_rejected listener hears no more rejections", "[bulkhead]") {
    bulwark::ManualClock clock;
    bulwark::Bulkhead bulkhead(1, 0, 1s, clock);
    int heard = 0;
    const bulwark::ListenerId id =
        bulkhead.on_rejected([&](const bulwark::BulkheadEvent&) { ++heard; });
    auto held = bulkhead.try_acquire();
    (void)bulkhead.try_acquire();
    CHECK(bulkhead.remove_listener(id));
    CHECK_FALSE(bulkhead.remove_listener(id));
    (void)bulkhead.try_acquire();
    CHECK(heard == 1);
}

TEST_CASE("invalid bulkhead options are refused", "[bulkhead]") {
    CHECK_THROWS_WITH(bulwark::Bulkhead(0), "BulkheadOptions.max_concurrent must be >= 1, got 0");
    CHECK_THROWS_WITH(bulwark::Bulkhead(1, 1, 0s),
                      "BulkheadOptions.queue_timeout must be > 0 when max_queue > 0 (1), got 0s");
    CHECK_THROWS_WITH(bulwark::Bulkhead(1, 0, -1s),
                      "BulkheadOptions.queue_timeout must be >= 0, got -1s");
}

TEST_CASE("a queue timeout of 0 is accepted without a queue, where it has no effect",
          "[bulkhead]") {
    bulwark::ManualClock clock;
    bulwark::Bulkhead bulkhead(4, 0, 0s, clock);
    CHECK(bulkhead.options().queue_timeout == bulwark::Duration::zero());
    std::vector<bulwark::Bulkhead::Permit> held;
    for (int i = 0; i < 4; ++i) {
        held.push_back(bulkhead.acquire());
        CHECK(held.back());
    }
    const auto refused = bulkhead.acquire();
    CHECK_FALSE(refused);
    CHECK(refused.rejection() == bulwark::BulkheadRejection::full);
    CHECK(bulkhead.stats().queue_timeouts == 0);
}

TEST_CASE("stress: never more than max_concurrent inside under 8 threads", "[bulkhead][.stress]") {
    bulwark::Bulkhead bulkhead(3, 4, 1h);
    std::atomic<int> inside{0};
    std::atomic<int> max_inside{0};
    std::atomic<std::uint64_t> ok{0};
    std::atomic<std::uint64_t> refused{0};
    constexpr int threads_count = 8;
    constexpr int calls_per_thread = 40000;
    std::vector<std::thread> threads;
    for (int t = 0; t < threads_count; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < calls_per_thread; ++i) {
                auto permit = (i + t) % 2 == 0 ? bulkhead.acquire() : bulkhead.try_acquire();
                if (!permit) {
                    refused.fetch_add(1, std::memory_order_relaxed);
                    continue;
                }
                const int now = inside.fetch_add(1) + 1;
                int seen = max_inside.load();
                while (now > seen && !max_inside.compare_exchange_weak(seen, now)) {
                }
                inside.fetch_sub(1);
                ok.fetch_add(1, std::memory_order_relaxed);
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    CHECK(max_inside.load() <= 3);
    auto s = bulkhead.stats();
    CHECK(s.in_flight == 0);
    CHECK(s.queued == 0);
    CHECK(s.admitted == ok.load());
    CHECK(s.rejected == refused.load());
    CHECK(ok.load() + refused.load() == std::uint64_t{threads_count} * calls_per_thread);
}

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <bulwark/detail/random.hpp>
#include <bulwark/fallback.hpp>
#include <bulwark/hedging.hpp>
#include <bulwark/pipeline.hpp>
#include <bulwark/timeout.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using bulwark::Context;
using bulwark::Duration;
using bulwark::HedgeEvent;
using bulwark::HedgeReason;
using bulwark::Hedging;
using bulwark::HedgingOptions;
using bulwark::TimePoint;

namespace {

struct Transient : std::runtime_error {
    Transient() : std::runtime_error("transient") {}
};

// Waits (without any notion of time) until `pred` holds: synchronisation, not timing. Gives up
// after a bound that only a bug reaches, so a broken build fails instead of hanging.
template <class Pred>
bool spin_until(Pred pred) {
    for (std::uint64_t i = 0; i < 200000000; ++i) {
        if (pred()) {
            return true;
        }
        std::this_thread::yield();
    }
    return pred();
}

// Records hedge events from any thread.
struct EventLog {
    std::mutex mutex;
    std::vector<HedgeEvent> events;

    std::function<void(const HedgeEvent&)> listener() {
        return [this](const HedgeEvent& e) {
            std::lock_guard<std::mutex> lock(mutex);
            events.push_back(e);
        };
    }
    std::vector<HedgeEvent> snapshot() {
        std::lock_guard<std::mutex> lock(mutex);
        return events;
    }
};

// A user executor: a fixed set of worker threads and a queue. Remembers which threads it owns
// and how many tasks it was given. Tasks still queued when it is destroyed are destroyed unrun.
class WorkerPool {
public:
    explicit WorkerPool(int threads) {
        for (int i = 0; i < threads; ++i) {
            threads_.emplace_back([this] { work(); });
        }
    }
    WorkerPool(const WorkerPool&) = delete;
    WorkerPool& operator=(const WorkerPool&) = delete;
    ~WorkerPool() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_ = true;
        }
        cv_.notify_all();
        for (auto& t : threads_) {
            t.join();
        }
    }

    bulwark::HedgingExecutor executor() {
        return [this](std::function<void()> task) {
            posted_.fetch_add(1);
            {
                std::lock_guard<std::mutex> lock(mutex_);
                queue_.push_back(std::move(task));
            }
            cv_.notify_one();
        };
    }

    bool owns(std::thread::id id) const {
        for (const auto& t : threads_) {
            if (t.get_id() == id) {
                return true;
            }
        }
        return false;
    }
    int posted() const { return posted_.load(); }

private:
    void work() {
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
            cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
            if (stop_) {
                return;
            }
            auto task = std::move(queue_.front());
            queue_.pop_front();
            lock.unlock();
            task();
            task = nullptr;
            lock.lock();
        }
    }

    std::mutex mutex_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> queue_;
    bool stop_ = false;
    std::atomic<int> posted_{0};
    std::vector<std::thread> threads_;
};

// A user executor that only keeps the tasks; the test runs them when it wants.
struct HeldTasks {
    std::mutex mutex;
    std::vector<std::function<void()>> tasks;

    bulwark::HedgingExecutor executor() {
        return [this](std::function<void()> task) {
            std::lock_guard<std::mutex> lock(mutex);
            tasks.push_back(std::move(task));
        };
    }
    std::size_t size() {
        std::lock_guard<std::mutex> lock(mutex);
        return tasks.size();
    }
    void run_all() {
        std::vector<std::function<void()>> taken;
        {
            std::lock_guard<std::mutex> lock(mutex);
            taken.swap(tasks);
        }
        for (auto& task : taken) {
            task();
        }
    }
};

}  // namespace

TEST_CASE("a primary that answers before the delay starts no hedge", "[hedging]") {
    bulwark::ManualClock clock;
    Hedging hedge(50ms, 1, clock);
    std::atomic<int> calls{0};
    CHECK(hedge.execute([&] {
        calls.fetch_add(1);
        clock.advance(49ms);
        return 5;
    }) == 5);
    CHECK(calls.load() == 1);
    auto s = hedge.stats();
    CHECK(s.calls == 1);
    CHECK(s.hedges == 0);
    CHECK(s.primary_wins == 1);
    CHECK(s.hedge_wins == 0);
}

TEST_CASE("a primary slower than the delay is hedged: the hedge wins and the primary is cancelled",
          "[hedging]") {
    bulwark::ManualClock clock;
    EventLog log;
    HedgingOptions o;
    o.delay = 50ms;
    o.on_hedge(log.listener());
    Hedging hedge(o, clock);
    const TimePoint start = clock.now();
    Context ctx("quote");
    std::atomic<bool> primary_cancelled{false};
    std::atomic<bool> hedge_cancelled{true};
    const int r = hedge.execute(
        [&](Context& attempt) {
            if (attempt.attempt() == 0) {
                clock.advance(50ms);
                primary_cancelled = spin_until([&] { return attempt.cancelled(); });
                return 1;  // too late: the hedge already won
            }
            hedge_cancelled = attempt.cancelled();
            return 2;
        },
        ctx);
    CHECK(r == 2);
    CHECK(primary_cancelled.load());
    CHECK_FALSE(hedge_cancelled.load());
    CHECK_FALSE(ctx.cancelled());  // only the attempts are cancelled, never the caller's context
    auto events = log.snapshot();
    REQUIRE(events.size() == 1);
    CHECK(events[0].attempt == 1);
    CHECK(events[0].reason == HedgeReason::delay);
    CHECK(events[0].operation == "quote");
    CHECK(clock.now() == start + Duration(50ms));
    auto s = hedge.stats();
    CHECK(s.hedges == 1);
    CHECK(s.hedge_wins == 1);
    CHECK(s.primary_wins == 0);
}

TEST_CASE("a failed primary starts the hedge at once, without waiting for the delay", "[hedging]") {
    bulwark::ManualClock clock;
    Hedging hedge(1h, 1, clock);
    EventLog log;
    hedge.on_hedge(log.listener());
    const TimePoint start = clock.now();
    const int r = hedge.execute([&](Context& ctx) {
        if (ctx.attempt() == 0) {
            throw Transient();
        }
        return 7;
    });
    CHECK(r == 7);
    CHECK(clock.now() == start);
    auto events = log.snapshot();
    REQUIRE(events.size() == 1);
    CHECK(events[0].reason == HedgeReason::failure);
    CHECK(hedge.stats().hedge_wins == 1);
}

TEST_CASE("a removed on_hedge listener hears no more hedges", "[hedging]") {
    bulwark::ManualClock clock;
    Hedging hedge(1h, 1, clock);
    std::atomic<int> heard{0};
    const bulwark::ListenerId id = hedge.on_hedge([&](const HedgeEvent&) { heard.fetch_add(1); });
    auto primary_fails = [](Context& ctx) {
        if (ctx.attempt() == 0) {
            throw Transient();
        }
        return 7;
    };
    CHECK(hedge.execute(primary_fails) == 7);
    CHECK(hedge.remove_listener(id));
    CHECK_FALSE(hedge.remove_listener(id));
    CHECK(hedge.execute(primary_fails) == 7);
    CHECK(hedge.stats().hedges == 2);
    CHECK(heard.load() == 1);
}

TEST_CASE("when every attempt fails, the last failure is returned", "[hedging]") {
    bulwark::ManualClock clock;
    Hedging hedge(1h, 2, clock);
    std::atomic<int> calls{0};
    auto o = hedge.try_execute([&](Context& ctx) -> int {
        calls.fetch_add(1);
        throw std::runtime_error("attempt " + std::to_string(ctx.attempt()));
    });
    REQUIRE(o.has_error());
    CHECK_THROWS_WITH(o.rethrow_if_error(), "attempt 2");
    CHECK(calls.load() == 3);
    auto s = hedge.stats();
    CHECK(s.hedges == 2);
    CHECK(s.exhausted == 1);
    CHECK(s.primary_wins + s.hedge_wins == 0);
}

TEST_CASE("hedges start one delay apart on the policy's clock", "[hedging]") {
    bulwark::ManualClock clock;
    EventLog log;
    HedgingOptions o;
    o.delay = 50ms;
    o.max_extra_attempts = 2;
    o.on_hedge(log.listener());
    Hedging hedge(o, clock);
    const TimePoint start = clock.now();
    std::array<TimePoint, 3> started_at{};
    std::atomic<int> started{0};
    const auto r = hedge.execute([&](Context& ctx) {
        const std::uint32_t i = ctx.attempt();
        started_at[i] = clock.now();
        started.fetch_add(1);
        if (i == 0) {
            clock.advance(50ms);
            spin_until([&] { return started.load() == 2; });
            clock.advance(50ms);
            spin_until([&] { return ctx.cancelled(); });
        } else if (i == 1) {
            spin_until([&] { return ctx.cancelled(); });
        }
        return i;
    });
    CHECK(r == 2);
    CHECK(started_at[0] == start);
    CHECK(started_at[1] == start + Duration(50ms));
    CHECK(started_at[2] == start + Duration(100ms));
    auto events = log.snapshot();
    REQUIRE(events.size() == 2);
    CHECK(events[0].attempt == 1);
    CHECK(events[1].attempt == 2);
    CHECK(events[1].reason == HedgeReason::delay);
}

TEST_CASE("hedging works for void results", "[hedging]") {
    bulwark::ManualClock clock;
    Hedging hedge(50ms, 1, clock);
    std::atomic<int> hedges_ran{0};
    hedge.execute([&](Context& ctx) {
        if (ctx.attempt() == 0) {
            clock.advance(50ms);
            spin_until([&] { return ctx.cancelled(); });
            return;
        }
        hedges_ran.fetch_add(1);
    });
    CHECK(hedges_ran.load() == 1);
    CHECK(hedge.stats().hedge_wins == 1);

    auto failed = hedge.try_execute([](Context& ctx) {
        if (ctx.attempt() == 0) {
            throw Transient();
        }
        throw std::logic_error("hedge failed too");
    });
    REQUIRE(failed.has_error());
    CHECK_THROWS_WITH(failed.rethrow_if_error(), "hedge failed too");
}

TEST_CASE("hedging works for move-only results and move-only callables", "[hedging]") {
    bulwark::ManualClock clock;
    Hedging hedge(50ms, 1, clock);
    auto base = std::make_unique<int>(40);
    bulwark_test::MoveOnly r =
        hedge.execute([base = std::move(base)](Context& ctx) -> bulwark_test::MoveOnly {
            if (ctx.attempt() == 0) {
                throw Transient();
            }
            return bulwark_test::MoveOnly(*base + 2);
        });
    CHECK(r.value == 42);
    auto o = hedge.try_execute([] { return bulwark_test::MoveOnly(3); });
    REQUIRE(o.has_value());
    CHECK(o->value == 3);
}

TEST_CASE("a call returns only after the attempts it started have returned", "[hedging]") {
    bulwark::ManualClock clock;
    Hedging hedge(50ms, 1, clock);
    std::atomic<bool> hedge_started{false};
    std::atomic<bool> primary_done{false};
    std::atomic<bool> release{false};
    std::atomic<bool> returned{false};
    std::atomic<bool> hedge_saw_cancel{false};
    int result = 0;
    std::thread caller([&] {
        result = hedge.execute([&](Context& ctx) {
            if (ctx.attempt() == 0) {
                clock.advance(50ms);
                spin_until([&] { return hedge_started.load(); });
                primary_done = true;
                return 1;  // wins while the hedge still runs
            }
            hedge_started = true;
            spin_until([&] { return release.load(); });  // ignores cancellation until released
            hedge_saw_cancel = spin_until([&] { return ctx.cancelled(); });  // it was told
            return 2;
        });
        returned = true;
    });
    CHECK(spin_until([&] { return primary_done.load(); }));
    CHECK_FALSE(returned.load());  // the loser still borrows the caller's frame
    release = true;
    caller.join();
    CHECK(returned.load());
    CHECK(result == 1);
    CHECK(hedge_saw_cancel.load());
    CHECK(hedge.stats().primary_wins == 1);
}

TEST_CASE("a user-supplied executor runs the hedges", "[hedging]") {
    bulwark::ManualClock clock;
    WorkerPool pool(2);  // outlives the Hedging, as its executor must
    HedgingOptions o;
    o.delay = 50ms;
    o.executor = pool.executor();
    Hedging hedge(o, clock);
    std::atomic<bool> on_pool{false};
    const auto caller = std::this_thread::get_id();
    const int r = hedge.execute([&](Context& ctx) {
        if (ctx.attempt() == 0) {
            CHECK(std::this_thread::get_id() == caller);  // the primary runs on the caller
            throw Transient();
        }
        on_pool = pool.owns(std::this_thread::get_id());
        return 9;
    });
    CHECK(r == 9);
    CHECK(on_pool.load());
    CHECK(pool.posted() == 1);
}

TEST_CASE("a hedge the executor starts after its call ended never runs the call", "[hedging]") {
    HeldTasks held;
    std::atomic<int> calls{0};
    {
        bulwark::ManualClock clock;
        HedgingOptions o;
        o.delay = Duration::zero();  // every hedge is handed over at once
        o.max_extra_attempts = 2;
        o.executor = held.executor();
        Hedging hedge(o, clock);
        CHECK(hedge.execute([&] {
            calls.fetch_add(1);
            return 1;
        }) == 1);
        CHECK(held.size() == 2);
        held.run_all();  // the call is over: the tasks see that and return
        CHECK(calls.load() == 1);
        CHECK(hedge.execute([&] {
            calls.fetch_add(1);
            return 2;
        }) == 2);
        CHECK(hedge.stats().hedges == 4);
        CHECK(hedge.stats().primary_wins == 2);
    }
    held.run_all();  // after the Hedging is gone, too: they own what they touch
    CHECK(calls.load() == 2);
}

TEST_CASE("an executor that drops or refuses a hedge makes it a failed attempt", "[hedging]") {
    bulwark::ManualClock clock;
    SECTION("dropped") {
        HedgingOptions o;
        o.delay = 50ms;
        o.executor = [](std::function<void()>) {
        };  // destroys the task unrun
        Hedging hedge(o, clock);
        CHECK_THROWS_AS(hedge.execute([]() -> int { throw Transient(); }), Transient);
        CHECK(hedge.stats().hedges == 1);
        CHECK(hedge.stats().exhausted == 1);
    }
    SECTION("refused") {
        HedgingOptions o;
        o.delay = 50ms;
        o.executor = [](std::function<void()>) {
            throw std::runtime_error("executor full");
        };
        Hedging hedge(o, clock);
        CHECK_THROWS_AS(hedge.execute([]() -> int { throw Transient(); }), Transient);
        CHECK(hedge.execute([] { return 4; }) == 4);
        CHECK(hedge.stats().exhausted == 1);
    }
}

TEST_CASE("delay 0 starts every hedge at once", "[hedging]") {
    bulwark::ManualClock clock;
    Hedging hedge(Duration::zero(), 2, clock);
    std::atomic<int> started{0};
    const auto r = hedge.execute([&](Context& ctx) {
        started.fetch_add(1);
        spin_until([&] { return started.load() == 3; });
        if (ctx.attempt() != 2) {
            spin_until([&] { return ctx.cancelled(); });
        }
        return ctx.attempt();
    });
    CHECK(r == 2);
    CHECK(started.load() == 3);
    CHECK(hedge.stats().hedges == 2);
}

TEST_CASE("only_on_failure hedges only when an attempt fails", "[hedging]") {
    bulwark::ManualClock clock;
    Hedging hedge(HedgingOptions::only_on_failure, 1, clock);
    CHECK(hedge.execute([&] {
        clock.advance(24h);
        return 1;
    }) == 1);
    CHECK(hedge.stats().hedges == 0);
    CHECK(hedge.execute([](Context& ctx) {
        if (ctx.attempt() == 0) {
            throw Transient();
        }
        return 2;
    }) == 2);
    CHECK(hedge.stats().hedges == 1);
}

TEST_CASE("only handled failures start hedges; anything else is accepted", "[hedging]") {
    bulwark::ManualClock clock;
    SECTION("an exception outside handle<E>() is returned at once") {
        HedgingOptions o;
        o.delay = 1h;
        o.handle<Transient>();
        Hedging hedge(o, clock);
        std::atomic<int> calls{0};
        CHECK_THROWS_AS(hedge.execute([&]() -> int {
            calls.fetch_add(1);
            throw std::logic_error("a bug, not a transient failure");
        }),
                        std::logic_error);
        CHECK(calls.load() == 1);
        CHECK(hedge.stats().hedges == 0);
        CHECK(hedge.stats().primary_wins == 1);
    }
    SECTION("handle_result turns values into failures") {
        HedgingOptions o;
        o.delay = 1h;
        o.handle_result([](int v) { return v < 0; });
        Hedging hedge(o, clock);
        CHECK(hedge.execute([](Context& ctx) { return ctx.attempt() == 0 ? -1 : 3; }) == 3);
        // Every attempt fails: the last failed value is the result.
        CHECK(hedge.execute([](Context& ctx) { return -static_cast<int>(ctx.attempt()) - 1; }) ==
              -2);
        CHECK(hedge.stats().exhausted == 1);
    }
}

TEST_CASE("each attempt has its own child context", "[hedging]") {
    bulwark::ManualClock clock;
    Hedging hedge(1h, 1, clock);
    Context ctx("lookup");
    const TimePoint deadline = clock.now() + 10s;
    ctx.set_deadline(deadline);
    ctx.set_priority(bulwark::Priority::high);
    std::array<const Context*, 2> seen{};
    std::array<bool, 2> inherited{};
    hedge.execute(
        [&](Context& attempt) {
            const std::uint32_t i = attempt.attempt();
            seen[i] = &attempt;
            inherited[i] = attempt.operation() == "lookup" && attempt.deadline() == deadline &&
                           attempt.priority() == bulwark::Priority::high && &attempt != &ctx;
            if (i == 0) {
                throw Transient();
            }
        },
        ctx);
    CHECK(inherited[0]);
    CHECK(inherited[1]);
    CHECK(seen[0] != seen[1]);
    CHECK_FALSE(ctx.cancelled());
}

TEST_CASE("no hedge starts once the caller's context is cancelled", "[hedging]") {
    bulwark::ManualClock clock;
    Hedging hedge(1h, 1, clock);
    Context ctx;
    std::atomic<bool> attempt_saw_it{false};
    CHECK_THROWS_AS(hedge.execute(
                        [&](Context& attempt) -> int {
                            ctx.cancel();
                            attempt_saw_it = attempt.cancelled();
                            throw Transient();
                        },
                        ctx),
                    Transient);
    CHECK(attempt_saw_it.load());
    CHECK(hedge.stats().hedges == 0);
}

TEST_CASE("hedging composes in a pipeline and with try_execute", "[hedging]") {
    bulwark::ManualClock clock;
    Hedging hedge(1h, 1, clock);
    bulwark::Fallback<int> fallback(-1);
    bulwark::Timeout per_attempt(1s, clock);
    auto p = bulwark::pipeline(fallback, hedge, per_attempt);
    const TimePoint start = clock.now();
    std::array<bool, 2> had_deadline{};
    CHECK(p.execute([&](Context& ctx) {
        had_deadline[ctx.attempt()] = ctx.deadline() == start + Duration(1s);
        if (ctx.attempt() == 0) {
            throw Transient();
        }
        return 8;
    }) == 8);
    CHECK(had_deadline[0]);
    CHECK(had_deadline[1]);
    CHECK(p.execute([]() -> int { throw Transient(); }) == -1);  // both failed: the fallback
    auto o = hedge.try_execute([]() -> int { throw Transient(); });
    CHECK(o.has_error());
    CHECK(bulwark::is_policy_v<Hedging>);
}

TEST_CASE("invalid hedging options are refused", "[hedging]") {
    CHECK_THROWS_WITH(Hedging(-1ms), "HedgingOptions.delay must be >= 0, got -1ms");
    CHECK_THROWS_WITH(Hedging(50ms, 0),
                      "HedgingOptions.max_extra_attempts must be in [1, 16], got 0");
    CHECK_THROWS_WITH(Hedging(50ms, 17),
                      "HedgingOptions.max_extra_attempts must be in [1, 16], got 17");
    CHECK_THROWS_WITH(HedgingOptions().on_hedge(nullptr),
                      "HedgingOptions.on_hedge: the listener is empty");
    CHECK_NOTHROW(Hedging(Duration::zero(), 16));
}

#if __cplusplus >= 202002L
TEST_CASE("hedging options read well with designated initializers", "[hedging]") {
    Hedging hedge(HedgingOptions{.delay = 10ms, .max_extra_attempts = 2});
    CHECK(hedge.options().delay == Duration(10ms));
    CHECK(hedge.options().max_extra_attempts == 2);
}
#endif

TEST_CASE("stress: concurrent hedged calls return one result each and leave nothing running",
          "[.stress][hedging]") {
    struct Config {
        Duration delay;
        std::uint32_t extra;
        bool user_executor;
    };
    const Config configs[] = {{20us, 2, false},
                              {Duration::zero(), 2, false},
                              {HedgingOptions::only_on_failure, 1, false},
                              {20us, 3, true}};
    constexpr int threads_count = 4;
    constexpr int calls_per_thread = 300;
    for (const Config& config : configs) {
        std::atomic<int> live{0};                // attempts inside the callable, over all calls
        std::atomic<std::uint64_t> attempts{0};  // attempts that ran the callable
        std::atomic<std::uint64_t> values{0};
        std::atomic<std::uint64_t> errors{0};
        std::atomic<std::uint64_t> violations{0};
        bulwark::HedgingStats s;
        {
            WorkerPool pool(3);
            HedgingOptions o;
            o.delay = config.delay;
            o.max_extra_attempts = config.extra;
            if (config.user_executor) {
                o.executor = pool.executor();
            }
            Hedging hedge(o);
            std::vector<std::thread> threads;
            for (int t = 0; t < threads_count; ++t) {
                threads.emplace_back([&, t] {
                    for (int i = 0; i < calls_per_thread; ++i) {
                        const std::uint64_t id = static_cast<std::uint64_t>(t) * calls_per_thread +
                                                 static_cast<std::uint64_t>(i);
                        // On this frame: attempts that outlived the call would touch them late.
                        std::atomic<std::uint32_t> call_attempts{0};
                        std::atomic<int> call_running{0};
                        auto r = hedge.try_execute([&](Context& ctx) -> std::uint64_t {
                            call_attempts.fetch_add(1);
                            call_running.fetch_add(1);
                            live.fetch_add(1);
                            attempts.fetch_add(1);
                            bulwark::detail::SplitMix64 rng(id * 31 + ctx.attempt());
                            const std::uint64_t x = rng.next();
                            const bool honours_cancel = (x & 1U) != 0;
                            const std::uint64_t spins = (x >> 1U) % 200;
                            for (std::uint64_t k = 0; k < spins; ++k) {
                                if (honours_cancel && ctx.cancelled()) {
                                    break;
                                }
                                std::this_thread::yield();
                            }
                            const bool fail = (x >> 20U) % 3 == 0;
                            live.fetch_sub(1);
                            call_running.fetch_sub(1);
                            if (fail) {
                                throw Transient();
                            }
                            return id;
                        });
                        if (call_running.load() != 0 || call_attempts.load() > 1 + config.extra) {
                            violations.fetch_add(1);
                        }
                        if (r.has_value()) {
                            values.fetch_add(1);
                            if (*r != id) {
                                violations.fetch_add(1);
                            }
                        } else {
                            errors.fetch_add(1);
                        }
                    }
                });
            }
            for (auto& th : threads) {
                th.join();
            }
            s = hedge.stats();
        }  // the Hedging is destroyed: its threads are joined; the pool's queued tasks are inert
        const std::uint64_t total = std::uint64_t{threads_count} * calls_per_thread;
        CHECK(violations.load() == 0);
        CHECK(live.load() == 0);
        CHECK(values.load() + errors.load() == total);
        CHECK(s.calls == total);
        CHECK(s.primary_wins + s.hedge_wins + s.exhausted == total);
        CHECK(s.primary_wins + s.hedge_wins == values.load());
        CHECK(s.exhausted == errors.load());
        CHECK(s.hedges <= std::uint64_t{config.extra} * total);
        CHECK(attempts.load() <= total + s.hedges);
    }
}

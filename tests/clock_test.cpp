#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <bulwark/clock.hpp>
#include <bulwark/rate_limiter.hpp>
#include <bulwark/ticking_clock.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using bulwark::Duration;

TEST_CASE("ManualClock moves only when advanced", "[clock]") {
    bulwark::ManualClock clock;
    const auto start = clock.now();
    CHECK(clock.now() == start);
    clock.advance(5s);
    CHECK(clock.now() - start == Duration(5s));
}

TEST_CASE("ManualClock does not start at the zero time point", "[clock]") {
    bulwark::ManualClock clock;
    CHECK(clock.now() != bulwark::TimePoint{});
}

TEST_CASE("ManualClock sleep_for advances time and records the request", "[clock]") {
    bulwark::ManualClock clock;
    const auto start = clock.now();
    clock.sleep_for(250ms);
    clock.sleep_for(1s);
    clock.sleep_for(-3ms);  // recorded, does not move time
    CHECK(clock.now() - start == Duration(1250ms));
    CHECK(clock.sleeps() == std::vector<Duration>{250ms, 1s, -3ms});
    CHECK(clock.sleep_count() == 3);
    CHECK(clock.total_slept() == Duration(1250ms));
    clock.clear_sleeps();
    CHECK(clock.sleeps().empty());
}

TEST_CASE("ManualClock refuses to go backwards with a clear error", "[clock]") {
    bulwark::ManualClock clock;
    CHECK_THROWS_WITH(clock.advance(-1s), "ManualClock.advance(d): d must be >= 0, got -1s");
    CHECK_THROWS_AS(clock.set(clock.now() - 1ms), std::invalid_argument);
    const auto later = clock.now() + 10s;
    clock.set(later);
    CHECK(clock.now() == later);
}

TEST_CASE("ManualClock can start at a chosen time", "[clock]") {
    const bulwark::TimePoint start{std::chrono::hours(1)};
    bulwark::ManualClock clock(start);
    CHECK(clock.now() == start);
}

TEST_CASE("sleep_until sleeps for the remaining time only", "[clock]") {
    bulwark::ManualClock clock;
    const auto target = clock.now() + 3s;
    clock.sleep_until(target);
    clock.sleep_until(target - 1s);  // already passed: no sleep
    CHECK(clock.sleeps() == std::vector<Duration>{3s});
}

TEST_CASE("SteadyClock is monotonic and the default clock is one", "[clock]") {
    bulwark::SteadyClock clock;
    const auto a = clock.now();
    const auto b = clock.now();
    CHECK(b >= a);
    CHECK(dynamic_cast<bulwark::SteadyClock*>(&bulwark::default_clock()) != nullptr);
    clock.sleep_for(Duration::zero());  // returns at once
}

TEST_CASE("ManualClock is safe to advance from many threads", "[clock][concurrency]") {
    bulwark::ManualClock clock;
    const auto start = clock.now();
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&clock] {
            for (int i = 0; i < 10000; ++i) {
                if (i % 2 == 0) {
                    clock.advance(1ns);
                } else {
                    clock.sleep_for(1ns);
                }
                (void)clock.now();
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    CHECK(clock.now() - start == Duration(40000));
    CHECK(clock.sleep_count() == 20000);
}

namespace {

// A clock the test sets by hand, backwards too, that counts how often it is read.
class SettableClock final : public bulwark::Clock {
public:
    bulwark::TimePoint now() const noexcept override {
        reads.fetch_add(1);
        return bulwark::TimePoint{Duration{ns.load()}};
    }
    void sleep_for(Duration) override {}

    std::atomic<std::int64_t> ns{1000};
    mutable std::atomic<int> reads{0};
};

}  // namespace

TEST_CASE("coarse_now_fast is one load of a ManualClock's time", "[clock]") {
    bulwark::ManualClock clock;
    CHECK(clock.coarse_now_fast() == clock.now());
    clock.advance(7s);
    CHECK(clock.coarse_now_fast() == clock.now());
    CHECK(clock.coarse_now_fast() == clock.coarse_now());
}

TEST_CASE("coarse_now_fast asks a clock without a time cell through coarse_now", "[clock]") {
    SettableClock clock;
    CHECK(clock.coarse_now_fast() == bulwark::TimePoint{Duration{1000}});
    CHECK(clock.reads.load() == 1);
}

TEST_CASE("TickingClock's coarse time moves only when it ticks", "[clock]") {
    bulwark::ManualClock source;
    bulwark::TickingClock clock(bulwark::TickingClock::manual_ticks, source);
    CHECK(clock.resolution() == Duration::zero());
    const auto start = source.now();
    CHECK(clock.coarse_now() == start);  // the constructor ticks once
    CHECK(clock.coarse_now_fast() == start);

    source.advance(5s);
    CHECK(clock.now() == start + 5s);  // now() is the source's
    CHECK(clock.coarse_now() == start);
    CHECK(clock.coarse_now_fast() == start);

    clock.tick();
    CHECK(clock.coarse_now() == start + 5s);
    CHECK(clock.coarse_now_fast() == start + 5s);
}

TEST_CASE("TickingClock never moves its coarse time backwards", "[clock]") {
    SettableClock source;
    source.ns = 5000;
    bulwark::TickingClock clock(bulwark::TickingClock::manual_ticks, source);
    source.ns = 2000;  // a source that went backwards
    clock.tick();
    CHECK(clock.coarse_now() == bulwark::TimePoint{Duration{5000}});
    source.ns = 9000;
    clock.tick();
    CHECK(clock.coarse_now() == bulwark::TimePoint{Duration{9000}});
}

TEST_CASE("TickingClock sleeps through its source and ticks after the sleep", "[clock]") {
    bulwark::ManualClock source;
    bulwark::TickingClock clock(bulwark::TickingClock::manual_ticks, source);
    const auto start = source.now();
    clock.sleep_for(3s);
    CHECK(source.sleeps() == std::vector<Duration>{3s});
    CHECK(clock.now() == start + 3s);
    CHECK(clock.coarse_now() == start + 3s);  // the sleeper sees its own sleep
    source.advance(1s);
    CHECK(clock.now() == start + 4s);
    CHECK(clock.coarse_now() == start + 3s);  // lags until the next tick, never ahead
}

// A sliding-window limiter waits on its clock, then re-reads the coarse time: over a ticking
// clock it must see the time it waited.
TEST_CASE("a component that sleeps on a TickingClock sees the time it slept", "[clock]") {
    bulwark::ManualClock source;
    bulwark::TickingClock clock(bulwark::TickingClock::manual_ticks, source);
    bulwark::RateLimiter limiter(bulwark::SlidingWindow{1, 1s}, clock);
    REQUIRE(limiter.try_acquire().admitted);
    CHECK(limiter.acquire(1, 5s));
    CHECK(source.now() - clock.coarse_now() < 1s);
}

TEST_CASE("TickingClock refuses a resolution that is not positive", "[clock]") {
    for (Duration bad :
         {Duration::zero(), Duration(-1), Duration(std::chrono::hours(1) + 1ns), Duration::max()}) {
        try {
            bulwark::TickingClock clock(bad);
            FAIL("no exception for resolution " << bad.count());
        } catch (const std::invalid_argument& e) {
            const std::string what = e.what();
            CHECK(what.find("TickingClock.resolution") != std::string::npos);
            CHECK(what.find("must be in (0, 1h]") != std::string::npos);
        }
    }
}

// The ticking thread is checked for liveness only: the test waits until it has published the
// source's new time, with no bound on how long a tick takes beyond a generous failure limit.
TEST_CASE("TickingClock's thread publishes the source's time", "[clock][concurrency]") {
    bulwark::ManualClock source;
    bulwark::TickingClock clock(std::chrono::microseconds(100), source);
    CHECK(clock.resolution() == std::chrono::microseconds(100));
    source.advance(1h);
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (clock.coarse_now() != source.now() && std::chrono::steady_clock::now() < give_up) {
        std::this_thread::yield();
    }
    CHECK(clock.coarse_now() == source.now());
    CHECK(clock.coarse_now_fast() == source.now());
}

namespace {

// Counts the threads other than the test's that read it, and how many of them have exited: the
// first read on such a thread arms a thread_local whose destructor runs when that thread exits
// (before a join() of it returns).
class ThreadWatchingClock final : public bulwark::Clock {
public:
    bulwark::TimePoint now() const noexcept override {
        if (std::this_thread::get_id() != owner_) {
            thread_local ExitNotice notice;
            if (notice.exited == nullptr) {
                notice.exited = &exited_;
                readers_.fetch_add(1, std::memory_order_acq_rel);
            }
        }
        return time_.now();
    }
    void sleep_for(Duration d) override { time_.sleep_for(d); }

    int readers() const { return readers_.load(std::memory_order_acquire); }
    int exited() const { return exited_.load(std::memory_order_acquire); }

private:
    struct ExitNotice {
        std::atomic<int>* exited = nullptr;
        ~ExitNotice() {
            if (exited != nullptr) {
                exited->fetch_add(1, std::memory_order_acq_rel);
            }
        }
    };

    const std::thread::id owner_ = std::this_thread::get_id();
    bulwark::ManualClock time_;
    mutable std::atomic<int> readers_{0};
    mutable std::atomic<int> exited_{0};
};

}  // namespace

// A destructor that returns without joining leaves a thread that would go on reading a source
// that may be gone: one never told to stop has certainly not exited when the check runs, and one
// stopped then detached has almost never exited yet (20 rounds; checked by breaking the
// destructor both ways). The test waits only for each thread's first tick (no bound on how long
// that takes beyond a generous failure limit), then checks at once.
TEST_CASE("TickingClock's destructor returns only after its thread has exited",
          "[clock][concurrency]") {
    ThreadWatchingClock source;
    for (int i = 1; i <= 20; ++i) {
        {
            bulwark::TickingClock clock(std::chrono::microseconds(100), source);
            const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
            while (source.readers() < i && std::chrono::steady_clock::now() < give_up) {
                std::this_thread::yield();
            }
            REQUIRE(source.readers() == i);   // the ticking thread has read the source
            CHECK(source.exited() == i - 1);  // and is still running
        }
        CHECK(source.exited() == i);
    }
}

TEST_CASE("ManualClock's wall time starts at a fixed date and moves with it", "[clock]") {
    bulwark::ManualClock clock;
    const bulwark::WallTime start = clock.wall_now();
    CHECK(start.time_since_epoch() == std::chrono::seconds(1767225600));  // 2026-01-01T00:00Z
    clock.advance(90s);
    CHECK(clock.wall_now() == start + 90s);
    bulwark::TickingClock ticking(bulwark::TickingClock::manual_ticks, clock);
    CHECK(ticking.wall_now() == clock.wall_now());
}

TEST_CASE("SteadyClock's wall time is the system clock's", "[clock]") {
    bulwark::SteadyClock clock;
    const auto before = std::chrono::system_clock::now();
    const bulwark::WallTime t = clock.wall_now();
    const auto after = std::chrono::system_clock::now();
    CHECK(t >= std::chrono::time_point_cast<Duration>(before));
    CHECK(t <= std::chrono::time_point_cast<Duration>(after));
}

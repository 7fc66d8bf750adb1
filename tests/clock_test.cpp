#include <thread>
#include <vector>

#include <bulwark/clock.hpp>

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

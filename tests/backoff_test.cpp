#include <cstdint>
#include <vector>

#include <bulwark/backoff.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using bulwark::Backoff;
using bulwark::Duration;

namespace {
std::vector<Duration> first(const Backoff& b, std::uint32_t count) {
    std::vector<Duration> out;
    for (std::uint32_t n = 1; n <= count; ++n) {
        out.push_back(b.delay(n));
    }
    return out;
}
}  // namespace

TEST_CASE("the backoff kinds give the documented sequences", "[backoff]") {
    CHECK(first(Backoff::fixed(1s), 3) == std::vector<Duration>{1s, 1s, 1s});
    CHECK(first(Backoff::linear(1s), 3) == std::vector<Duration>{1s, 2s, 3s});
    CHECK(first(Backoff::exponential(1s), 4) == std::vector<Duration>{1s, 2s, 4s, 8s});
    CHECK(first(Backoff::exponential(500ms, 3.0), 3) ==
          std::vector<Duration>{500ms, 1500ms, 4500ms});
    CHECK(first(Backoff::fibonacci(1s), 5) == std::vector<Duration>{1s, 1s, 2s, 3s, 5s});
    CHECK(Backoff::fibonacci(1ms).delay(40) == Duration(102334155ms));
}

TEST_CASE("max_delay caps every kind", "[backoff]") {
    CHECK(first(Backoff::exponential(1s).max_delay(5s), 5) ==
          std::vector<Duration>{1s, 2s, 4s, 5s, 5s});
    CHECK(first(Backoff::linear(2s).max_delay(3s), 3) == std::vector<Duration>{2s, 3s, 3s});
    CHECK(first(Backoff::fibonacci(1s).max_delay(2s), 5) ==
          std::vector<Duration>{1s, 1s, 2s, 2s, 2s});
    CHECK(Backoff::fixed(10s).max_delay(1s).delay(1) == Duration(1s));
}

TEST_CASE("large attempt numbers saturate instead of overflowing", "[backoff]") {
    CHECK(Backoff::exponential(1s).max_delay(10min).delay(1000) == Duration(10min));
    CHECK(Backoff::exponential(1s, 10.0).delay(4000000000U) == Duration::max());
    CHECK(Backoff::linear(1h).delay(1000) == Duration(1000h));
    CHECK(Backoff::linear(1h).delay(4000000000U) == Duration::max());
    CHECK(Backoff::fibonacci(1s).delay(4000000000U) == Duration::max());
    CHECK(Backoff::exponential(1ns).delay(70) > Duration::zero());
}

TEST_CASE("full and equal jitter stay within their bounds over 100k samples", "[backoff]") {
    const Backoff full = Backoff::exponential(100ms).max_delay(30s).jitter(bulwark::Jitter::full);
    const Backoff equal = Backoff::exponential(100ms).max_delay(30s).jitter(bulwark::Jitter::equal);
    const Backoff plain = Backoff::exponential(100ms).max_delay(30s);
    Duration full_min = Duration::max();
    Duration full_max = Duration::zero();
    for (std::uint32_t i = 0; i < 100000; ++i) {
        const std::uint32_t n = 1 + i % 12;
        const Duration d = plain.delay(n);
        const Duration f = Backoff(full).seed(i).delay(n);
        const Duration e = Backoff(equal).seed(i).delay(n);
        REQUIRE(f >= Duration::zero());
        REQUIRE(f <= d);
        REQUIRE(e >= d / 2);
        REQUIRE(e <= d);
        if (n == 12) {
            full_min = std::min(full_min, f);
            full_max = std::max(full_max, f);
        }
    }
    // Full jitter really spreads over [0, d]: the extremes come close to both ends.
    CHECK(full_min < Duration(1s));
    CHECK(full_max > Duration(29s));
}

TEST_CASE("the same seed gives the same delays, another seed others", "[backoff]") {
    auto b = Backoff::exponential(100ms).jitter(bulwark::Jitter::full);
    CHECK(first(Backoff(b).seed(42), 8) == first(Backoff(b).seed(42), 8));
    CHECK(first(Backoff(b).seed(42), 8) != first(Backoff(b).seed(43), 8));
    auto d = Backoff::decorrelated_jitter(100ms, 30s);
    CHECK(first(Backoff(d).seed(7), 8) == first(Backoff(d).seed(7), 8));
}

TEST_CASE("decorrelated jitter stays in [base, max] and grows from its last delay", "[backoff]") {
    for (std::uint64_t seed = 0; seed < 200; ++seed) {
        const auto b = Backoff::decorrelated_jitter(100ms, 10s).seed(seed);
        Duration previous = b.delay(1);
        CHECK(previous == Duration(100ms));
        for (std::uint32_t n = 2; n <= 30; ++n) {
            const Duration d = b.delay(n, previous);
            REQUIRE(d >= Duration(100ms));
            REQUIRE(d <= Duration(10s));
            REQUIRE(d <= std::max(previous * 3, Duration(100ms)));
            REQUIRE(d == b.delay(n));  // the O(1) form agrees with the pure one
            previous = d;
        }
    }
}

TEST_CASE("invalid backoff arguments are refused with the field and value", "[backoff]") {
    CHECK_THROWS_WITH(Backoff::exponential(1s, 0.5),
                      "Backoff.exponential(base, multiplier): multiplier must be a finite number "
                      ">= 1, got 0.5");
    CHECK_THROWS_WITH(Backoff::linear(0s), "Backoff.linear(step): step must be > 0, got 0s");
    CHECK_THROWS_WITH(Backoff::fixed(-1s), "Backoff.fixed(d): d must be >= 0, got -1s");
    CHECK_THROWS_WITH(Backoff::decorrelated_jitter(1s, 100ms),
                      "Backoff.decorrelated_jitter(base, max): max must be >= base (1s), got "
                      "100ms");
    CHECK_THROWS_AS(Backoff::fibonacci(-1ms), std::invalid_argument);
    CHECK_THROWS_AS(Backoff::fixed(1s).max_delay(-1s), std::invalid_argument);
    CHECK_THROWS_WITH(Backoff::fixed(1s).delay(0),
                      "Backoff.delay(n): n is 1-based and must be >= 1, got 0");
}

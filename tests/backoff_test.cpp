#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#include <bulwark/backoff.hpp>
#include <bulwark/detail/random.hpp>

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

TEST_CASE("full and equal jitter stay within their bounds along one stream", "[backoff]") {
    // One seeded object, delays 1 … 100000: the draws of a single stream (what one retry loop
    // sees), not one draw each of 100k reseeded objects.
    const Backoff full =
        Backoff::exponential(100ms).max_delay(30s).jitter(bulwark::Jitter::full).seed(2024);
    const Backoff equal =
        Backoff::exponential(100ms).max_delay(30s).jitter(bulwark::Jitter::equal).seed(2024);
    const Backoff plain = Backoff::exponential(100ms).max_delay(30s);
    Duration full_min = Duration::max();
    Duration full_max = Duration::zero();
    double full_sum = 0;
    double equal_sum = 0;
    std::uint32_t capped = 0;
    for (std::uint32_t n = 1; n <= 100000; ++n) {
        const Duration d = plain.delay(n);
        const Duration f = full.delay(n);
        const Duration e = equal.delay(n);
        REQUIRE(f >= Duration::zero());
        REQUIRE(f <= d);
        REQUIRE(e >= d / 2);
        REQUIRE(e <= d);
        if (d == Duration(30s)) {
            ++capped;
            full_min = std::min(full_min, f);
            full_max = std::max(full_max, f);
            full_sum += std::chrono::duration<double>(f).count();
            equal_sum += std::chrono::duration<double>(e).count();
        }
    }
    REQUIRE(capped > 99000);
    CHECK(full_min < Duration(100ms));
    CHECK(full_max > Duration(29900ms));
    // Uniform: mean 15 s for full, 22.5 s for equal (standard error about 0.03 s).
    CHECK(full_sum / capped == Approx(15.0).margin(0.3));
    CHECK(equal_sum / capped == Approx(22.5).margin(0.3));
}

TEST_CASE("streams of one backoff are reproducible and differ from each other", "[backoff]") {
    const auto b =
        Backoff::exponential(100ms).max_delay(30s).jitter(bulwark::Jitter::full).seed(42);
    CHECK(first(b.stream(0), 8) == first(b.stream(0), 8));
    CHECK(first(b.stream(0), 8) != first(b.stream(1), 8));
    CHECK(first(b.stream(0), 8) != first(b, 8));
    CHECK(b.stream(3).seed() == bulwark::detail::SplitMix64::at(42, 3));
    // Two objects built apart from the same configuration and seed agree (not only one object
    // with itself).
    const auto rebuilt =
        Backoff::exponential(100ms).max_delay(30s).jitter(bulwark::Jitter::full).seed(42);
    CHECK(first(rebuilt.stream(5), 8) == first(b.stream(5), 8));
    CHECK(first(rebuilt, 8) == first(b, 8));
    // The stream keeps the configuration.
    CHECK(b.stream(1).jitter() == bulwark::Jitter::full);
    CHECK(b.stream(1).max_delay() == Duration(30s));
}

TEST_CASE("SplitMix64::at(seed, k) is the k-th output of the generator", "[backoff]") {
    bulwark::detail::SplitMix64 rng(123);
    for (std::uint64_t k = 0; k < 100; ++k) {
        REQUIRE(rng.next() == bulwark::detail::SplitMix64::at(123, k));
    }
}

TEST_CASE("backoffs made one after another get distinct seeds", "[backoff]") {
    std::vector<std::uint64_t> seeds;
    for (int i = 0; i < 1000; ++i) {
        seeds.push_back(Backoff::fixed(1s).seed());
    }
    std::sort(seeds.begin(), seeds.end());
    CHECK(std::adjacent_find(seeds.begin(), seeds.end()) == seeds.end());
}

TEST_CASE("decorrelated jitter refuses a second jitter", "[backoff]") {
    CHECK_THROWS_WITH(Backoff::decorrelated_jitter(100ms, 30s).jitter(bulwark::Jitter::full),
                      "Backoff.jitter(j): j must be Jitter::none for decorrelated_jitter, which is "
                      "random by construction, got Jitter::full");
    CHECK_THROWS_AS(Backoff::decorrelated_jitter(100ms, 30s).jitter(bulwark::Jitter::equal),
                    std::invalid_argument);
    CHECK(Backoff::decorrelated_jitter(100ms, 30s).jitter(bulwark::Jitter::none).jitter() ==
          bulwark::Jitter::none);
}

TEST_CASE("decorrelated delay(n) replays the chain that delay(n, previous) walks", "[backoff]") {
    const auto b = Backoff::decorrelated_jitter(1ms, 1h).seed(3);
    Duration previous{0};
    for (std::uint32_t n = 1; n <= 500; ++n) {
        previous = b.delay(n, previous);
    }
    CHECK(b.delay(500) == previous);  // O(500) against 500 O(1) steps
}

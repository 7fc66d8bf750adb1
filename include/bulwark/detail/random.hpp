// SplitMix64: a small, seedable generator that keeps <random> out of the headers (private).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_RANDOM_HPP
#define BULWARK_DETAIL_RANDOM_HPP

#include <cstdint>

namespace bulwark {
namespace detail {

// A small, fast, seedable generator (SplitMix64). The same seed gives the same sequence on every
// platform and standard library, which std::uniform_*_distribution does not promise. Kept out of
// <random> to keep the core headers cheap to compile. Not thread-safe.
class SplitMix64 {
public:
    explicit SplitMix64(std::uint64_t seed = 0x9E3779B97F4A7C15ULL) noexcept : state_(seed) {}

    void seed(std::uint64_t seed) noexcept { state_ = seed; }

    std::uint64_t next() noexcept {
        std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30U)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27U)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31U);
    }

    // Uniform in [0, 1), with 53 bits of precision.
    double next_double() noexcept {
        return static_cast<double>(next() >> 11U) * (1.0 / 9007199254740992.0);
    }

    // The k-th output (0-based) of SplitMix64(seed), in O(1): SplitMix64's state after k steps
    // is seed + k·γ. Distinct k give independent-looking values, which makes it a cheap way to
    // derive many streams' seeds from one seed and a counter.
    static std::uint64_t at(std::uint64_t seed, std::uint64_t k) noexcept {
        return SplitMix64(seed + k * 0x9E3779B97F4A7C15ULL).next();
    }

private:
    std::uint64_t state_;
};

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_RANDOM_HPP

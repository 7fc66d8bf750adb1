// The last 32 outcomes of something in one 64-bit word, and their success rate (private).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_RECENT_WINDOW_HPP
#define BULWARK_DETAIL_RECENT_WINDOW_HPP

#include <cstdint>

namespace bulwark {
namespace detail {

inline unsigned popcount32(std::uint32_t v) noexcept {
    unsigned n = 0;
    for (; v != 0; v &= v - 1U) {
        ++n;
    }
    return n;
}

// The last 32 results of a channel in one atomic word: low 32 bits a shift register of
// outcomes (1 = success), high 32 bits how many of them are real (saturates at 32).
struct RecentWindow {
    static constexpr std::uint32_t capacity = 32;

    static std::uint64_t push(std::uint64_t word, bool ok) noexcept {
        const std::uint64_t bits = ((word << 1U) | (ok ? 1U : 0U)) & 0xFFFFFFFFULL;
        std::uint64_t count = word >> 32U;
        if (count < capacity) {
            ++count;
        }
        return (count << 32U) | bits;
    }
    static std::uint32_t samples(std::uint64_t word) noexcept {
        return static_cast<std::uint32_t>(word >> 32U);
    }
    // Success rate over the last `last` recorded samples (fewer if fewer were recorded); 1 with
    // none.
    static double rate(std::uint64_t word, std::uint32_t last = capacity) noexcept {
        const std::uint32_t n = samples(word) < last ? samples(word) : last;
        if (n == 0) {
            return 1.0;
        }
        const std::uint32_t mask = n >= 32 ? 0xFFFFFFFFU : ((1U << n) - 1U);
        const std::uint32_t bits = static_cast<std::uint32_t>(word & 0xFFFFFFFFULL) & mask;
        return static_cast<double>(popcount32(bits)) / static_cast<double>(n);
    }
};

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_RECENT_WINDOW_HPP

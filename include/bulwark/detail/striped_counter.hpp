// Striped per-thread counters: statistics without contended atomics (private).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_STRIPED_COUNTER_HPP
#define BULWARK_DETAIL_STRIPED_COUNTER_HPP

#include <atomic>
#include <cstdint>

#include <bulwark/config.hpp>
#include <bulwark/detail/thread_slot.hpp>

namespace bulwark {
namespace detail {

// A statistics counter that hot paths can bump without a locked instruction or a contended
// cache line: each thread adds to its own cache-line stripe with a relaxed load and store (its
// slot has a single writer, see thread_slot.hpp); threads past the last private stripe share it
// with atomic adds. sum() is a relaxed snapshot. Thread-safe. Does not allocate.
class StripedCounter {
public:
    void add(std::uint64_t n = 1) noexcept {
        const std::uint32_t slot = thread_slot();
        if (BULWARK_LIKELY(slot < stripe_count - 1)) {
            std::atomic<std::uint64_t>& v = stripes_[slot].value;
            // relaxed load + store: this thread is the stripe's only writer.
            v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
        } else {
            // relaxed: a statistic; shared by the overflow threads.
            stripes_[stripe_count - 1].value.fetch_add(n, std::memory_order_relaxed);
        }
    }

    std::uint64_t sum() const noexcept {
        std::uint64_t total = 0;
        for (const Stripe& s : stripes_) {
            total += s.value.load(std::memory_order_relaxed);
        }
        return total;
    }

private:
    static constexpr std::uint32_t stripe_count = 16;
    struct alignas(cache_line_size) Stripe {
        std::atomic<std::uint64_t> value{0};
    };
    Stripe stripes_[stripe_count];
};

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_STRIPED_COUNTER_HPP

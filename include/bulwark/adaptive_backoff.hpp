// AdaptiveBackoff: a delay that doubles on failure and halves on success, lock-free.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_ADAPTIVE_BACKOFF_HPP
#define BULWARK_ADAPTIVE_BACKOFF_HPP

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include <bulwark/backoff.hpp>
#include <bulwark/detail/math.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/time.hpp>

namespace bulwark {

// Options of an AdaptiveBackoff. Every field has a default; validate() throws
// std::invalid_argument naming the field and the value.
//   bulwark::AdaptiveBackoffOptions o;
//   o.initial = 1s; o.ceiling = 30s;
//   auto adaptive = std::make_shared<bulwark::AdaptiveBackoff>(o);
struct AdaptiveBackoffOptions {
    // The delay before anything is learned. In [floor, ceiling].
    Duration initial = std::chrono::milliseconds(100);
    // The shortest delay, reached by successes. > 0.
    Duration floor = std::chrono::milliseconds(1);
    // The longest delay, reached by failures. >= floor.
    Duration ceiling = std::chrono::minutes(1);
    // Each failure multiplies the delay by this. >= 1.
    double grow = 2.0;
    // Each success multiplies the delay by this. In (0, 1].
    double shrink = 0.5;

    void validate() const {
        if (floor <= Duration::zero()) {
            detail::throw_invalid_option("AdaptiveBackoffOptions.floor", "must be > 0",
                                         detail::format_duration(floor));
        }
        if (ceiling < floor) {
            detail::throw_invalid_option(
                "AdaptiveBackoffOptions.ceiling",
                "must be >= floor (" + detail::format_duration(floor) + ")",
                detail::format_duration(ceiling));
        }
        if (initial < floor || initial > ceiling) {
            detail::throw_invalid_option("AdaptiveBackoffOptions.initial",
                                         "must be in [floor, ceiling]",
                                         detail::format_duration(initial));
        }
        if (!(grow >= 1.0)) {
            detail::throw_invalid_option("AdaptiveBackoffOptions.grow", "must be >= 1",
                                         detail::format_number(grow));
        }
        if (!(shrink > 0.0 && shrink <= 1.0)) {
            detail::throw_invalid_option("AdaptiveBackoffOptions.shrink", "must be in (0, 1]",
                                         detail::format_number(shrink));
        }
    }
};

// A delay that adapts to how the dependency is doing: each failure multiplies it by
// `grow` (up to `ceiling`), each success by `shrink` (down to `floor`). Useful on its own (pace a
// polling loop) and as RetryOptions::backoff: then the policy records every failed attempt (so
// the waits within one call grow: 1s, 2s, 4s with grow = 2) and every success, and every retry
// of every call shares what the others learned.
//   bulwark::AdaptiveBackoff adaptive(1s);   // doubles on failure, halves on success
//   adaptive.record_failure(); adaptive.current_delay();   // 2s
// Thread-safe and lock-free (one atomic word).
class AdaptiveBackoff {
public:
    // Throws std::invalid_argument for invalid options (see AdaptiveBackoffOptions).
    explicit AdaptiveBackoff(AdaptiveBackoffOptions options = {})
        : options_((options.validate(), options)), delay_ns_(options_.initial.count()) {}

    // The positional form of the options: AdaptiveBackoff(1s) starts at 1 s, with the default
    // floor (1 ms), ceiling (1 min), grow (2) and shrink (0.5).
    explicit AdaptiveBackoff(Duration initial, Duration floor = std::chrono::milliseconds(1),
                             Duration ceiling = std::chrono::minutes(1), double grow = 2.0,
                             double shrink = 0.5)
        : AdaptiveBackoff(AdaptiveBackoffOptions{initial, floor, ceiling, grow, shrink}) {}

    AdaptiveBackoff(const AdaptiveBackoff& other)
        : options_(other.options_), delay_ns_(other.delay_ns_.load(std::memory_order_relaxed)) {}
    AdaptiveBackoff& operator=(const AdaptiveBackoff&) = delete;

    const AdaptiveBackoffOptions& options() const noexcept { return options_; }

    Duration current_delay() const noexcept {
        // relaxed: the word is the whole state.
        return Duration(delay_ns_.load(std::memory_order_relaxed));
    }
    void record_failure() noexcept { scale(options_.grow); }
    void record_success() noexcept { scale(options_.shrink); }

private:
    void scale(double factor) noexcept {
        std::int64_t current = delay_ns_.load(std::memory_order_relaxed);
        for (;;) {
            const Duration next = std::clamp(
                detail::saturate(static_cast<double>(current) * factor, options_.ceiling),
                options_.floor, options_.ceiling);
            // relaxed: the word is the whole state; nothing else is published with it.
            if (delay_ns_.compare_exchange_weak(current, next.count(), std::memory_order_relaxed,
                                                std::memory_order_relaxed)) {
                return;
            }
        }
    }

    const AdaptiveBackoffOptions options_;
    std::atomic<std::int64_t> delay_ns_;
};

}  // namespace bulwark

#endif  // BULWARK_ADAPTIVE_BACKOFF_HPP

// Time vocabulary: Duration, TimePoint and WallTime.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_TIME_HPP
#define BULWARK_TIME_HPP

#include <chrono>

namespace bulwark {

// Every duration bulwark stores or reports. Nanoseconds in 64 bits span ±292 years.
using Duration = std::chrono::nanoseconds;
// A point on the monotonic timeline of a Clock. Never compared across clocks.
using TimePoint = std::chrono::time_point<std::chrono::steady_clock, Duration>;
// A point in civil (wall-clock) time, in nanoseconds since the Unix epoch: for timestamps that
// must keep their meaning after a restart or on another host (a stored dead letter's times).
using WallTime = std::chrono::time_point<std::chrono::system_clock, Duration>;

namespace detail {
// `a + b`, clamped to [Duration::min(), Duration::max()] instead of overflowing.
constexpr Duration saturating_add(Duration a, Duration b) noexcept {
    if (b > Duration::zero() && a > Duration::max() - b) {
        return Duration::max();
    }
    if (b < Duration::zero() && a < Duration::min() - b) {
        return Duration::min();
    }
    return a + b;
}

// `t + d` for every deadline the library computes from an option or a hint: an option of
// Duration::max() gives TimePoint::max() ("never") instead of a time in the past.
constexpr TimePoint saturating_add(TimePoint t, Duration d) noexcept {
    return TimePoint{saturating_add(t.time_since_epoch(), d)};
}
}  // namespace detail

}  // namespace bulwark

#endif  // BULWARK_TIME_HPP

// Error helpers: invalid-option messages and out-of-line throws (private).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_THROW_HPP
#define BULWARK_DETAIL_THROW_HPP

#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <string_view>

#include <bulwark/config.hpp>

namespace bulwark {
namespace detail {

// Cold helpers: hot inline paths call these so that they carry no string-building code.

[[noreturn]] BULWARK_NOINLINE inline void throw_invalid_argument(const std::string& message) {
    throw std::invalid_argument(message);
}

// For misuse of an object's protocol (recording a permit twice), not for bad configuration.
[[noreturn]] BULWARK_NOINLINE inline void throw_logic_error(const std::string& message) {
    throw std::logic_error(message);
}

// "CircuitBreakerOptions.failure_ratio must be in [0, 1], got 1.5"
[[noreturn]] BULWARK_NOINLINE inline void throw_invalid_option(std::string_view field,
                                                               std::string_view requirement,
                                                               std::string_view got) {
    std::string message;
    message.reserve(field.size() + requirement.size() + got.size() + 8);
    message.append(field).append(" ").append(requirement).append(", got ").append(got);
    throw std::invalid_argument(message);
}

// Refuses an enumerator outside [0, last] (an integer cast to the enum type), naming `field`
// and `type`, so that no switch over it falls through to a default it does not expect.
template <class E>
void check_enumerator(E value, E last, std::string_view field, const char* type) {
    if (static_cast<unsigned long long>(value) > static_cast<unsigned long long>(last)) {
        throw_invalid_option(field, std::string("must be a ") + type,
                             std::to_string(static_cast<unsigned long long>(value)));
    }
}

inline std::string format_number(double value) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%g", value);
    return buffer;
}

inline std::string format_number(long long value) {
    return std::to_string(value);
}

// Renders a duration in the largest unit that keeps it exact: 1500ms, 2s, 250us, -3ns.
template <class Rep, class Period>
std::string format_duration(std::chrono::duration<Rep, Period> d) {
    const auto ns =
        static_cast<long long>(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count());
    struct Unit {
        long long size;
        const char* suffix;
    };
    constexpr Unit units[] = {{3600000000000LL, "h"}, {60000000000LL, "min"}, {1000000000LL, "s"},
                              {1000000LL, "ms"},      {1000LL, "us"},         {1LL, "ns"}};
    if (ns == 0) {
        return "0s";
    }
    for (const Unit& unit : units) {
        if (ns % unit.size == 0) {
            return std::to_string(ns / unit.size) + unit.suffix;
        }
    }
    return std::to_string(ns) + "ns";
}

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_THROW_HPP

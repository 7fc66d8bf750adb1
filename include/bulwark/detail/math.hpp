// Floating-point checks and functions without <cmath>, which costs every includer (private).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_MATH_HPP
#define BULWARK_DETAIL_MATH_HPP

// <cmath> is about a tenth of what the standard headers under <bulwark/policies.hpp> cost to
// parse, for a handful of calls: GCC and Clang give them as builtins; elsewhere, <cmath>.
#include <limits>

#if !defined(__GNUC__) && !defined(__clang__)
#include <cmath>
#endif

namespace bulwark {
namespace detail {

constexpr bool is_nan(double v) noexcept {
    return v != v;
}

constexpr bool is_inf(double v) noexcept {
    return v == std::numeric_limits<double>::infinity() ||
           v == -std::numeric_limits<double>::infinity();
}

constexpr bool is_finite(double v) noexcept {
    return !is_nan(v) && !is_inf(v);
}

#if defined(__GNUC__) || defined(__clang__)
inline double ceil(double v) noexcept {
    return __builtin_ceil(v);
}
inline double log1p(double v) noexcept {
    return __builtin_log1p(v);
}
#else
inline double ceil(double v) noexcept {
    return std::ceil(v);
}
inline double log1p(double v) noexcept {
    return std::log1p(v);
}
#endif

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_MATH_HPP

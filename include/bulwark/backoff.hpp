// Backoff schedules (fixed, linear, exponential, Fibonacci, decorrelated) and AdaptiveBackoff.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_BACKOFF_HPP
#define BULWARK_BACKOFF_HPP

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <string>

#include <bulwark/clock.hpp>
#include <bulwark/detail/math.hpp>
#include <bulwark/detail/random.hpp>
#include <bulwark/detail/throw.hpp>

namespace bulwark {

// How a delay is randomised ("Exponential Backoff and Jitter", AWS Architecture Blog):
// none: the computed delay d; full: uniform in [0, d]; equal: d/2 + uniform in [0, d/2].
enum class Jitter : std::uint8_t { none, full, equal };

namespace detail {
inline std::uint64_t fresh_seed() noexcept {
    static std::atomic<std::uint64_t> counter{0};
    // relaxed: only distinctness matters; mixed with the time so processes differ too.
    // Both parts are mixed before they are combined: a plain n ^ time collides whenever two
    // calls' times differ by n1 ^ n2 (e.g. consecutive n, times 1 ns apart).
    const std::uint64_t n = counter.fetch_add(1, std::memory_order_relaxed);
    const auto time =
        static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    return SplitMix64(SplitMix64::at(0x6A09E667F3BCC909ULL, n) ^ time).next();
}

// A uniform double in [0, 1) that depends only on (seed, n, stream): reproducible for a seed and
// free of shared state, so delay(n) is a pure, thread-safe function.
inline double unit_random(std::uint64_t seed, std::uint64_t n, std::uint64_t stream) noexcept {
    return SplitMix64(seed ^ (n * 0x9E3779B97F4A7C15ULL) ^ (stream * 0xD1B54A32D192ED03ULL))
        .next_double();
}

// x^e by squaring: at most 32 steps and exact for the small integer powers that matter, where
// pow() costs several times more. Overflows to inf, which saturate() caps.
inline double power(double x, std::uint32_t e) noexcept {
    double result = 1.0;
    while (e != 0) {
        if ((e & 1U) != 0) {
            result *= x;
        }
        e >>= 1U;
        if (e != 0) {
            x *= x;
        }
    }
    return result;
}

inline constexpr std::uint32_t fibonacci_table_size = 94;

// fib(1) = fib(2) = 1, … fib(93), computed at compile time.
struct FibonacciTable {
    std::uint64_t values[fibonacci_table_size] = {};
    constexpr FibonacciTable() {
        values[1] = 1;
        values[2] = 1;
        for (std::uint32_t i = 3; i < fibonacci_table_size; ++i) {
            values[i] = values[i - 1] + values[i - 2];
        }
    }
};
inline constexpr FibonacciTable fibonacci_values{};

inline std::uint64_t fibonacci(std::uint32_t n) noexcept {
    return fibonacci_values.values[n];
}

// Converts a non-negative count of nanoseconds held in a double to a Duration, saturating at
// `cap`: no overflow, no wrap, never negative, for any input including inf.
inline Duration saturate(double ns, Duration cap) noexcept {
    if (!(ns > 0.0)) {
        return Duration::zero();
    }
    if (ns >= static_cast<double>(cap.count())) {
        return cap;
    }
    return Duration(static_cast<Duration::rep>(ns));
}
}  // namespace detail

// A schedule of waits between attempts: fixed, linear, exponential, fibonacci or decorrelated
// jitter, each capped by max_delay and optionally jittered.
//   auto b = bulwark::Backoff::exponential(100ms).max_delay(30s).jitter(bulwark::Jitter::full);
//   b.delay(1);   // the wait before the 1st retry (1-based); exponential(1s): 1s, 2s, 4s, …
//   b.seed(42);   // same seed, same delays
//   b.stream(k);  // the k-th independent jitter stream of b (what a RetryPolicy gives each call)
// A small value type (copyable, no allocation). delay(n) is a pure function of the
// configuration, the seed and n: thread-safe, and it saturates at max_delay for any n (attempt
// 1000 of an exponential never overflows, wraps or goes negative).
// Because delay(n) depends only on (seed, n), every user of one seeded Backoff draws the same
// "random" delays: to spread concurrent callers, give each its own stream (stream(k)), as
// RetryPolicy does per execution.
class Backoff {
public:
    enum class Kind : std::uint8_t { fixed, linear, exponential, fibonacci, decorrelated_jitter };

    // The same wait every time. d >= 0.
    static Backoff fixed(Duration d) {
        check_non_negative("Backoff.fixed(d): d", d);
        return {Kind::fixed, d, 1.0, Duration::max()};
    }
    // step, 2·step, 3·step, … step > 0.
    static Backoff linear(Duration step) {
        check_positive("Backoff.linear(step): step", step);
        return {Kind::linear, step, 1.0, Duration::max()};
    }
    // base, base·m, base·m², … base > 0, multiplier >= 1.
    static Backoff exponential(Duration base, double multiplier = 2.0) {
        check_positive("Backoff.exponential(base, multiplier): base", base);
        if (!(multiplier >= 1.0) || !detail::is_finite(multiplier)) {
            detail::throw_invalid_option("Backoff.exponential(base, multiplier): multiplier",
                                         "must be a finite number >= 1",
                                         detail::format_number(multiplier));
        }
        return {Kind::exponential, base, multiplier, Duration::max()};
    }
    // base·1, base·1, base·2, base·3, base·5, … base > 0.
    static Backoff fibonacci(Duration base) {
        check_positive("Backoff.fibonacci(base): base", base);
        return {Kind::fibonacci, base, 1.0, Duration::max()};
    }
    // AWS "decorrelated jitter": d₁ = base, dₙ = min(max, uniform(base, 3·dₙ₋₁)). Random by
    // nature (seed() makes it reproducible), so jitter() other than Jitter::none is refused.
    // delay(n) replays the chain from d₁ (O(n)); a loop should use delay(n, previous) (O(1)).
    // 0 < base <= max.
    static Backoff decorrelated_jitter(Duration base, Duration max) {
        check_positive("Backoff.decorrelated_jitter(base, max): base", base);
        if (max < base) {
            detail::throw_invalid_option("Backoff.decorrelated_jitter(base, max): max",
                                         "must be >= base (" + detail::format_duration(base) + ")",
                                         detail::format_duration(max));
        }
        return {Kind::decorrelated_jitter, base, 3.0, max};
    }

    // Caps every delay (default: no cap other than Duration::max()). >= 0.
    Backoff& max_delay(Duration cap) {
        check_non_negative("Backoff.max_delay(cap): cap", cap);
        max_delay_ = cap;
        return *this;
    }
    // Throws std::invalid_argument for Jitter::full or equal on decorrelated jitter, which is
    // random by construction: a second randomisation on top would only bias it, and silently
    // ignoring the request would hide a configuration mistake.
    Backoff& jitter(Jitter j) {
        if (kind_ == Kind::decorrelated_jitter && j != Jitter::none) {
            detail::throw_invalid_option(
                "Backoff.jitter(j): j",
                "must be Jitter::none for decorrelated_jitter, which is random by construction",
                j == Jitter::full ? "Jitter::full" : "Jitter::equal");
        }
        jitter_ = j;
        return *this;
    }
    // The seed of the jitter; a Backoff is seeded uniquely when made.
    Backoff& seed(std::uint64_t s) noexcept {
        seed_ = s;
        return *this;
    }

    // The k-th jitter stream of this schedule: a copy whose seed is the k-th output of
    // SplitMix64(seed()). Deterministic for a seed and k; different k give uncorrelated delays.
    // A RetryPolicy gives each execution its own stream so that callers that failed together
    // do not retry together. O(1).
    Backoff stream(std::uint64_t k) const noexcept {
        Backoff copy(*this);
        copy.seed_ = detail::SplitMix64::at(seed_, k);
        return copy;
    }

    Kind kind() const noexcept { return kind_; }
    Duration base() const noexcept { return base_; }
    double multiplier() const noexcept { return multiplier_; }
    Duration max_delay() const noexcept { return max_delay_; }
    Jitter jitter() const noexcept { return jitter_; }
    std::uint64_t seed() const noexcept { return seed_; }

    // The wait before the n-th retry (n >= 1; throws std::invalid_argument for 0). O(1) for
    // every kind but decorrelated jitter, whose n-th delay depends on the (n-1)-th: delay(n)
    // replays the whole chain d₁ … dₙ, which is O(n) (attempt 1000 costs 1000 draws). Anything
    // that walks a sequence should use delay(n, previous) instead, as RetryPolicy does.
    Duration delay(std::uint32_t n) const {
        check_n(n);
        if (kind_ == Kind::decorrelated_jitter) {
            Duration previous = base_;
            for (std::uint32_t i = 2; i <= n; ++i) {
                previous = decorrelated(i, previous);
            }
            return std::min(previous, max_delay_);
        }
        return apply_jitter(undithered(n), n);
    }

    // The wait before the n-th retry when the (n-1)-th was `previous`: the same value as
    // delay(n), in O(1) for decorrelated jitter too. Sequences (a retry loop) use this form.
    Duration delay(std::uint32_t n, Duration previous) const {
        check_n(n);
        if (kind_ == Kind::decorrelated_jitter) {
            return n == 1 ? std::min(base_, max_delay_) : decorrelated(n, previous);
        }
        return apply_jitter(undithered(n), n);
    }

private:
    Backoff(Kind kind, Duration base, double multiplier, Duration max) noexcept
        : kind_(kind),
          base_(base),
          multiplier_(multiplier),
          max_delay_(max),
          seed_(detail::fresh_seed()) {}

    static void check_n(std::uint32_t n) {
        if (n == 0) {
            detail::throw_invalid_option("Backoff.delay(n): n", "is 1-based and must be >= 1", "0");
        }
    }

    Duration decorrelated(std::uint32_t n, Duration previous) const noexcept {
        const auto base = static_cast<double>(base_.count());
        const double high = std::min(static_cast<double>(max_delay_.count()),
                                     static_cast<double>(previous.count()) * multiplier_);
        const double drawn =
            base + (std::max(high, base) - base) * detail::unit_random(seed_, n, 1);
        return detail::saturate(drawn, max_delay_);
    }

    static void check_positive(const char* field, Duration d) {
        if (d <= Duration::zero()) {
            detail::throw_invalid_option(field, "must be > 0", detail::format_duration(d));
        }
    }
    static void check_non_negative(const char* field, Duration d) {
        if (d < Duration::zero()) {
            detail::throw_invalid_option(field, "must be >= 0", detail::format_duration(d));
        }
    }

    // The schedule's delay before jitter, saturated at max_delay.
    Duration undithered(std::uint32_t n) const noexcept {
        const auto base = static_cast<double>(base_.count());
        switch (kind_) {
            case Kind::fixed:
                return detail::saturate(base, max_delay_);
            case Kind::linear:
                return detail::saturate(base * static_cast<double>(n), max_delay_);
            case Kind::exponential:
                return detail::saturate(base * detail::power(multiplier_, n - 1), max_delay_);
            case Kind::fibonacci:
                // fib(94) overflows 64 bits; by then any delay is past every cap.
                return detail::saturate(n < detail::fibonacci_table_size
                                            ? base * static_cast<double>(detail::fibonacci(n))
                                            : std::numeric_limits<double>::infinity(),
                                        max_delay_);
            case Kind::decorrelated_jitter:
                break;  // handled by delay()
        }
        return Duration::zero();
    }

    Duration apply_jitter(Duration d, std::uint32_t n) const noexcept {
        if (jitter_ == Jitter::none || kind_ == Kind::decorrelated_jitter) {
            return d;
        }
        const double r = detail::unit_random(seed_, n, 2);
        const auto ns = static_cast<double>(d.count());
        const double jittered = jitter_ == Jitter::full ? ns * r : ns / 2.0 + ns / 2.0 * r;
        return detail::saturate(jittered, d);
    }

    Kind kind_;
    Duration base_;
    double multiplier_;
    Duration max_delay_;
    Jitter jitter_ = Jitter::none;
    std::uint64_t seed_;
};

}  // namespace bulwark

#endif  // BULWARK_BACKOFF_HPP

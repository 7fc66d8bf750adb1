// bulwark 0.1.0 — single-header edition.
// Generated from include/ by cmake/amalgamate.py — do not edit; edit include/ and rerun it.
// SPDX-License-Identifier: MIT
// Copyright (c) the bulwark authors. Permission is granted to use, copy, modify and
// distribute this file under the terms of the MIT License; see LICENSE in the bulwark
// repository for the full text.
#ifndef BULWARK_SINGLE_INCLUDE_HPP
#define BULWARK_SINGLE_INCLUDE_HPP
// #include <bulwark/bulwark.hpp>
// The full umbrella: every public header, exactly what the single header holds.
#ifndef BULWARK_BULWARK_HPP
#define BULWARK_BULWARK_HPP

// Layer by layer, bottom up (docs/development.md has the table). <bulwark/policies.hpp> is the
// lighter include for code that only wraps calls.
// #include <bulwark/breaker_health.hpp>
// Bridge: a circuit breaker's state as a health check (HealthMonitor::add_breaker).
#ifndef BULWARK_BREAKER_HEALTH_HPP
#define BULWARK_BREAKER_HEALTH_HPP

#include <chrono>
#include <string>
#include <utility>

// #include <bulwark/circuit_breaker.hpp>
// CircuitBreaker: options, states, statistics, permits and the breaker itself.
#ifndef BULWARK_CIRCUIT_BREAKER_HPP
#define BULWARK_CIRCUIT_BREAKER_HPP

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

// #include <bulwark/backoff.hpp>
// Backoff schedules (fixed, linear, exponential, Fibonacci, decorrelated) and AdaptiveBackoff.
#ifndef BULWARK_BACKOFF_HPP
#define BULWARK_BACKOFF_HPP

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <string>

// #include <bulwark/clock.hpp>
// Clocks: the Clock interface components read time and wait through, SteadyClock, ManualClock.
#ifndef BULWARK_CLOCK_HPP
#define BULWARK_CLOCK_HPP

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <time.h>  // NOLINT(modernize-deprecated-headers): POSIX clock_gettime
#endif

// #include <bulwark/config.hpp>
// Feature detection and portability macros, done once.
#ifndef BULWARK_CONFIG_HPP
#define BULWARK_CONFIG_HPP

// Feature detection, done once. Other headers branch on the macros defined here, never on
// compiler versions.

#if defined(_MSVC_LANG) && _MSVC_LANG > __cplusplus
#define BULWARK_CPLUSPLUS _MSVC_LANG
#else
#define BULWARK_CPLUSPLUS __cplusplus
#endif

#if BULWARK_CPLUSPLUS < 201703L
#error "bulwark requires C++17 or later (compile with -std=c++17 or newer)."
#endif

// Outcome<T> carries failures as std::exception_ptr and policies classify exceptions by type,
// so there is no meaningful no-exceptions mode.
#if !defined(__cpp_exceptions) && !defined(__EXCEPTIONS) && !defined(_CPPUNWIND)
#error "bulwark needs C++ exceptions: failures travel as std::exception_ptr."
#endif

#if defined(__GNUC__) || defined(__clang__)
#define BULWARK_NOINLINE __attribute__((noinline))
// For the few hot-path helpers whose inlining the compiler's size heuristics would otherwise
// decide differently from one instantiation to the next.
#define BULWARK_ALWAYS_INLINE __attribute__((always_inline)) inline
#define BULWARK_LIKELY(x) __builtin_expect(!!(x), 1)
#define BULWARK_UNLIKELY(x) __builtin_expect(!!(x), 0)
#elif defined(_MSC_VER)
#define BULWARK_NOINLINE __declspec(noinline)
#define BULWARK_ALWAYS_INLINE __forceinline
#define BULWARK_LIKELY(x) (x)
#define BULWARK_UNLIKELY(x) (x)
#else
#define BULWARK_NOINLINE
#define BULWARK_ALWAYS_INLINE inline
#define BULWARK_LIKELY(x) (x)
#define BULWARK_UNLIKELY(x) (x)
#endif

// Clang's thread-safety analysis (-Wthread-safety): which mutex guards a member, and which
// functions acquire, release or need it. Empty for other compilers. bulwark's own mutexes and
// locks carry them (detail/mutex.hpp); libstdc++'s do not.
#if defined(__clang__)
#define BULWARK_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define BULWARK_THREAD_ANNOTATION(x)
#endif
#define BULWARK_CAPABILITY(x) BULWARK_THREAD_ANNOTATION(capability(x))
#define BULWARK_SCOPED_CAPABILITY BULWARK_THREAD_ANNOTATION(scoped_lockable)
#define BULWARK_GUARDED_BY(x) BULWARK_THREAD_ANNOTATION(guarded_by(x))
#define BULWARK_PT_GUARDED_BY(x) BULWARK_THREAD_ANNOTATION(pt_guarded_by(x))
#define BULWARK_REQUIRES(...) BULWARK_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define BULWARK_REQUIRES_SHARED(...) \
    BULWARK_THREAD_ANNOTATION(requires_shared_capability(__VA_ARGS__))
#define BULWARK_ACQUIRE(...) BULWARK_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define BULWARK_ACQUIRE_SHARED(...) \
    BULWARK_THREAD_ANNOTATION(acquire_shared_capability(__VA_ARGS__))
#define BULWARK_RELEASE(...) BULWARK_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define BULWARK_RELEASE_SHARED(...) \
    BULWARK_THREAD_ANNOTATION(release_shared_capability(__VA_ARGS__))
#define BULWARK_TRY_ACQUIRE(...) BULWARK_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
#define BULWARK_TRY_ACQUIRE_SHARED(...) \
    BULWARK_THREAD_ANNOTATION(try_acquire_shared_capability(__VA_ARGS__))
#define BULWARK_EXCLUDES(...) BULWARK_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define BULWARK_NO_THREAD_SAFETY_ANALYSIS BULWARK_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace bulwark {
namespace detail {
// std::hardware_destructive_interference_size is unreliable on GCC 12 (it warns when used in a
// header and varies with -mtune); 64 bytes is right for x86-64 and most AArch64 parts.
inline constexpr unsigned cache_line_size = 64;
}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_CONFIG_HPP
// #include <bulwark/detail/mutex.hpp>
// Mutexes and locks annotated for clang's thread-safety analysis (private).
#ifndef BULWARK_DETAIL_MUTEX_HPP
#define BULWARK_DETAIL_MUTEX_HPP

#include <mutex>
#include <shared_mutex>

// #include <bulwark/config.hpp> (already included above)

namespace bulwark {
namespace detail {

// std::mutex and std::shared_mutex as capabilities, so that -Wthread-safety checks every access
// to a BULWARK_GUARDED_BY member (libstdc++'s own types carry no annotations). Each is its
// standard type and nothing more: every member is an inline forwarding call.
//   mutable detail::Mutex mutex_;
//   int count_ BULWARK_GUARDED_BY(mutex_) = 0;
//   detail::LockGuard lock(mutex_);
// Thread-safe, as the standard types are.
class BULWARK_CAPABILITY("mutex") Mutex {
public:
    Mutex() = default;
    Mutex(const Mutex&) = delete;
    Mutex& operator=(const Mutex&) = delete;

    void lock() BULWARK_ACQUIRE() { mutex_.lock(); }
    void unlock() BULWARK_RELEASE() { mutex_.unlock(); }
    bool try_lock() BULWARK_TRY_ACQUIRE(true) { return mutex_.try_lock(); }

    // The standard mutex, for a std::unique_lock that a std::condition_variable waits with
    // (UniqueLock is the annotated way to build one).
    std::mutex& native() noexcept { return mutex_; }

private:
    std::mutex mutex_;
};

class BULWARK_CAPABILITY("mutex") SharedMutex {
public:
    SharedMutex() = default;
    SharedMutex(const SharedMutex&) = delete;
    SharedMutex& operator=(const SharedMutex&) = delete;

    void lock() BULWARK_ACQUIRE() { mutex_.lock(); }
    void unlock() BULWARK_RELEASE() { mutex_.unlock(); }
    bool try_lock() BULWARK_TRY_ACQUIRE(true) { return mutex_.try_lock(); }
    void lock_shared() BULWARK_ACQUIRE_SHARED() { mutex_.lock_shared(); }
    void unlock_shared() BULWARK_RELEASE_SHARED() { mutex_.unlock_shared(); }
    bool try_lock_shared() BULWARK_TRY_ACQUIRE_SHARED(true) { return mutex_.try_lock_shared(); }

private:
    std::shared_mutex mutex_;
};

// std::lock_guard: holds a Mutex (or a SharedMutex exclusively) for its scope.
template <class M>
class BULWARK_SCOPED_CAPABILITY LockGuard {
public:
    explicit LockGuard(M& mutex) BULWARK_ACQUIRE(mutex) : mutex_(mutex) { mutex_.lock(); }
    ~LockGuard() BULWARK_RELEASE() { mutex_.unlock(); }
    LockGuard(const LockGuard&) = delete;
    LockGuard& operator=(const LockGuard&) = delete;

private:
    M& mutex_;
};

// std::shared_lock: holds a SharedMutex shared for its scope.
class BULWARK_SCOPED_CAPABILITY SharedLock {
public:
    explicit SharedLock(SharedMutex& mutex) BULWARK_ACQUIRE_SHARED(mutex) : mutex_(mutex) {
        mutex_.lock_shared();
    }
    ~SharedLock() BULWARK_RELEASE() { mutex_.unlock_shared(); }
    SharedLock(const SharedLock&) = delete;
    SharedLock& operator=(const SharedLock&) = delete;

private:
    SharedMutex& mutex_;
};

// std::unique_lock<std::mutex> over a Mutex: may be unlocked and locked again within its scope,
// and native() is the std::unique_lock a std::condition_variable (or Clock::wait_until) waits
// with. The analysis treats the mutex as held across such a wait, which is what the code after
// the wait may assume.
class BULWARK_SCOPED_CAPABILITY UniqueLock {
public:
    explicit UniqueLock(Mutex& mutex) BULWARK_ACQUIRE(mutex) : lock_(mutex.native()) {}
    ~UniqueLock() BULWARK_RELEASE() = default;
    UniqueLock(const UniqueLock&) = delete;
    UniqueLock& operator=(const UniqueLock&) = delete;

    void lock() BULWARK_ACQUIRE() { lock_.lock(); }
    void unlock() BULWARK_RELEASE() { lock_.unlock(); }

    std::unique_lock<std::mutex>& native() noexcept { return lock_; }

private:
    std::unique_lock<std::mutex> lock_;
};

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_MUTEX_HPP
// #include <bulwark/detail/throw.hpp>
// Error helpers: invalid-option messages and out-of-line throws (private).
#ifndef BULWARK_DETAIL_THROW_HPP
#define BULWARK_DETAIL_THROW_HPP

#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <string_view>

// #include <bulwark/config.hpp> (already included above)

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
// #include <bulwark/time.hpp>
// Time vocabulary: Duration, TimePoint and WallTime.
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

namespace bulwark {

// Where time comes from and how waiting happens. Every component that reads time or waits takes a
// Clock& as its last constructor argument (it must outlive the component), so that tests run on a
// ManualClock and never sleep for real.
//
// Implementations must be thread-safe: components call now() and sleep_for() from any thread.
// now() is virtual; hot paths are written not to read the clock at all.
class Clock {
public:
    virtual ~Clock() = default;

    // The current time. Monotonic: never goes backwards.
    virtual TimePoint now() const noexcept = 0;

    // Blocks the calling thread for `d` (a non-positive `d` returns at once). A ManualClock
    // advances its time instead.
    virtual void sleep_for(Duration d) = 0;

    // A cheaper reading on the same timeline as now() that may lag it by a few milliseconds.
    // Components use it where that precision is enough (break expiry, per-second window
    // buckets): SteadyClock reads CLOCK_MONOTONIC_COARSE on Linux (about 3 ns against about
    // 26 ns for now() on a VM). Never ahead of now(). The default is now().
    virtual TimePoint coarse_now() const noexcept { return now(); }

    // The wall-clock time, for timestamps that outlive the process. Unlike now() it may jump
    // (the system clock is set), so never measure durations with it. The default is
    // std::chrono::system_clock::now().
    virtual WallTime wall_now() const noexcept {
        return std::chrono::time_point_cast<Duration>(std::chrono::system_clock::now());
    }

    // coarse_now() as components call it: one atomic load, without a virtual call, when the
    // clock keeps its coarse time in memory (ManualClock, TickingClock); coarse_now() otherwise.
    TimePoint coarse_now_fast() const noexcept {
        if (coarse_cell_ != nullptr) {
            // acquire: pairs with the clock's release store, as ManualClock::now() does.
            return TimePoint{Duration{coarse_cell_->load(std::memory_order_acquire)}};
        }
        return coarse_now();
    }

    void sleep_until(TimePoint t) {
        const TimePoint current = now();
        if (t > current) {
            sleep_for(t - current);
        }
    }

    // Blocks on `cv` (with `lock` held, as std::condition_variable::wait does) until it is
    // notified, wakes spuriously, or `deadline` on this clock has passed. Callers re-check their
    // condition and the time in a loop. SteadyClock waits for real; a ManualClock cannot wake a
    // waiter when it is advanced, so it re-checks every 100 microseconds of real time.
    virtual void wait_until(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                            TimePoint deadline) {
        const Duration left = deadline - now();
        if (left > Duration::zero()) {
            // std::condition_variable::wait_for adds its duration to steady_clock::now(): a
            // deadline of TimePoint::max() ("never") would overflow it and return at once. The
            // callers loop, so a day at a time is the same wait.
            cv.wait_for(lock, std::min<Duration>(left, std::chrono::hours(24)));
        }
    }

protected:
    Clock() = default;
    // For a clock that keeps its coarse time as nanoseconds in `cell` (an object of its own,
    // alive as long as the clock): coarse_now_fast() then loads it directly. Every load of
    // `cell` must equal what coarse_now() would return at that moment.
    explicit Clock(const std::atomic<std::int64_t>* cell) noexcept : coarse_cell_(cell) {}
    // A copy does not share the cell: a subclass with a cell is not copyable.
    Clock(const Clock&) noexcept {}
    // Assigns nothing, so self-assignment is harmless.
    // NOLINTNEXTLINE(bugprone-unhandled-self-assignment)
    Clock& operator=(const Clock&) noexcept { return *this; }

private:
    const std::atomic<std::int64_t>* coarse_cell_ = nullptr;
};

// The real monotonic clock (std::chrono::steady_clock) and a real sleep.
//   bulwark::SteadyClock clock; auto t = clock.now(); clock.sleep_for(10ms);
// Thread-safe (stateless).
class SteadyClock final : public Clock {
public:
    TimePoint now() const noexcept override {
        return std::chrono::time_point_cast<Duration>(std::chrono::steady_clock::now());
    }

    void sleep_for(Duration d) override {
        if (d > Duration::zero()) {
            std::this_thread::sleep_for(d);
        }
    }

#if defined(__linux__) && defined(CLOCK_MONOTONIC_COARSE)
    // libstdc++ and libc++ implement steady_clock with CLOCK_MONOTONIC on Linux; the coarse
    // variant is the same timeline, updated once per kernel tick.
    TimePoint coarse_now() const noexcept override {
        timespec ts{};
        if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) != 0) {
            return now();
        }
        return TimePoint{std::chrono::seconds(ts.tv_sec) + Duration(ts.tv_nsec)};
    }
#endif
};

// A clock that moves only when told to: advance(d), set(t), or a sleep_for(d), which advances by
// `d` instead of blocking and records the request so that a test can check the exact waits a
// policy asked for.
//   bulwark::ManualClock clock;  clock.advance(5s);  clock.sleeps();  // every sleep_for request
// Thread-safe. now() is a single atomic load.
class ManualClock final : public Clock {
public:
    // Starts one day after the zero of TimePoint, so that no code can get away with treating a
    // zero time point as "never".
    ManualClock() noexcept : ManualClock(TimePoint{std::chrono::hours(24)}) {}
    explicit ManualClock(TimePoint start) noexcept
        : Clock(&now_ns_), start_(start), now_ns_(start.time_since_epoch().count()) {}

    ManualClock(const ManualClock&) = delete;
    ManualClock& operator=(const ManualClock&) = delete;

    TimePoint now() const noexcept override {
        // acquire: pairs with the release in advance(), so a thread that sees the new time also
        // sees what the advancing thread wrote before it.
        return TimePoint{Duration{now_ns_.load(std::memory_order_acquire)}};
    }

    // 2026-01-01T00:00:00Z plus the time this clock has moved since it was made: wall time in
    // tests moves with now() and is the same on every run.
    WallTime wall_now() const noexcept override {
        return WallTime{detail::saturating_add(std::chrono::seconds(1767225600), now() - start_)};
    }

    // Moves time forward by `d`. Throws std::invalid_argument for a negative `d`: time is
    // monotonic.
    void advance(Duration d) {
        if (d < Duration::zero()) {
            detail::throw_invalid_option("ManualClock.advance(d): d", "must be >= 0",
                                         detail::format_duration(d));
        }
        add(d);
    }

    // Moves time forward to `t`. Throws std::invalid_argument if `t` is earlier than now().
    void set(TimePoint t) {
        std::int64_t current = now_ns_.load(std::memory_order_acquire);
        const std::int64_t target = t.time_since_epoch().count();
        do {
            if (target < current) {
                detail::throw_invalid_option(
                    "ManualClock.set(t): t", "must not be before now()",
                    detail::format_duration(Duration{target - current}) + " relative to now()");
            }
        } while (!now_ns_.compare_exchange_weak(current, target, std::memory_order_acq_rel,
                                                std::memory_order_acquire));
    }

    // Records `d` and advances by it (a negative request is recorded and does not move time).
    void sleep_for(Duration d) override {
        {
            detail::LockGuard lock(sleeps_mutex_);
            sleeps_.push_back(d);
        }
        if (d > Duration::zero()) {
            add(d);
        }
    }

    void wait_until(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                    TimePoint deadline) override {
        if (now() < deadline) {
            cv.wait_for(lock, std::chrono::microseconds(100));
        }
    }

    // Every sleep_for request so far, in the order made.
    std::vector<Duration> sleeps() const {
        detail::LockGuard lock(sleeps_mutex_);
        return sleeps_;
    }

    std::size_t sleep_count() const {
        detail::LockGuard lock(sleeps_mutex_);
        return sleeps_.size();
    }

    // Sum of all positive sleep requests.
    Duration total_slept() const {
        detail::LockGuard lock(sleeps_mutex_);
        Duration total{0};
        for (Duration d : sleeps_) {
            if (d > Duration::zero()) {
                total = detail::saturating_add(total, d);
            }
        }
        return total;
    }

    void clear_sleeps() {
        detail::LockGuard lock(sleeps_mutex_);
        sleeps_.clear();
    }

private:
    // Moves time forward by `d` > 0, stopping at TimePoint::max(): advancing by Duration::max()
    // (a sleep "for ever") reaches the end of time instead of wrapping into the past.
    void add(Duration d) noexcept {
        std::int64_t current = now_ns_.load(std::memory_order_acquire);
        while (!now_ns_.compare_exchange_weak(
            current, detail::saturating_add(Duration{current}, d).count(),
            std::memory_order_acq_rel, std::memory_order_acquire)) {
        }
    }

    const TimePoint start_;
    std::atomic<std::int64_t> now_ns_;
    mutable detail::Mutex sleeps_mutex_;
    std::vector<Duration> sleeps_ BULWARK_GUARDED_BY(sleeps_mutex_);
};

// The process-wide SteadyClock that components use when no clock is given.
inline Clock& default_clock() noexcept {
    static SteadyClock clock;
    return clock;
}

}  // namespace bulwark

#endif  // BULWARK_CLOCK_HPP
// #include <bulwark/detail/math.hpp>
// Floating-point checks and functions without <cmath>, which costs every includer (private).
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
// #include <bulwark/detail/random.hpp>
// SplitMix64: a small, seedable generator that keeps <random> out of the headers (private).
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
// #include <bulwark/detail/throw.hpp> (already included above)

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
// #include <bulwark/circuit_breaker_options.hpp>
// Circuit-breaker vocabulary: CircuitState, windows, CircuitBreakerOptions and the statistics.
#ifndef BULWARK_CIRCUIT_BREAKER_OPTIONS_HPP
#define BULWARK_CIRCUIT_BREAKER_OPTIONS_HPP

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

// #include <bulwark/backoff.hpp> (already included above)
// #include <bulwark/classify.hpp>
// Classification: which exceptions and results a policy counts as failures.
#ifndef BULWARK_CLASSIFY_HPP
#define BULWARK_CLASSIFY_HPP

#include <exception>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/detail/traits.hpp>
// Type traits for callables and results (private).
#ifndef BULWARK_DETAIL_TRAITS_HPP
#define BULWARK_DETAIL_TRAITS_HPP

#include <functional>
#include <type_traits>

namespace bulwark {
namespace detail {

template <class...>
inline constexpr bool always_false_v = false;

template <class T>
using remove_cvref_t = std::remove_cv_t<std::remove_reference_t<T>>;

// The single parameter type of a callable with one non-template operator() or of a function
// (pointer). `void` when it cannot be found (a generic lambda, an overload set).
template <class F, class = void>
struct single_arg {
    using type = void;
};
template <class R, class A>
struct single_arg<R (*)(A), void> {
    using type = A;
};
template <class R, class A>
struct single_arg<R(A), void> {
    using type = A;
};
template <class R, class A>
struct single_arg<R (*)(A) noexcept, void> {
    using type = A;
};
template <class M>
struct member_single_arg {
    using type = void;
};
template <class R, class C, class A>
struct member_single_arg<R (C::*)(A)> {
    using type = A;
};
template <class R, class C, class A>
struct member_single_arg<R (C::*)(A) const> {
    using type = A;
};
template <class R, class C, class A>
struct member_single_arg<R (C::*)(A) noexcept> {
    using type = A;
};
template <class R, class C, class A>
struct member_single_arg<R (C::*)(A) const noexcept> {
    using type = A;
};
template <class F>
struct single_arg<F, std::void_t<decltype(&F::operator())>> {
    using type = typename member_single_arg<decltype(&F::operator())>::type;
};
template <class F>
using single_arg_t = typename single_arg<remove_cvref_t<F>>::type;

// A per-type identity that needs no RTTI: the address of an inline variable is unique per type.
template <class T>
struct type_tag {
    static constexpr char id = 0;
};
using type_id_t = const void*;
template <class T>
constexpr type_id_t type_id() noexcept {
    return &type_tag<remove_cvref_t<T>>::id;
}

template <class T, template <class...> class Template>
struct is_specialization : std::false_type {};
template <template <class...> class Template, class... Args>
struct is_specialization<Template<Args...>, Template> : std::true_type {};

// True for the callables that can be null: function pointers, member pointers, std::function.
template <class F>
bool is_null_callable(const F& f) noexcept {
    using D = remove_cvref_t<F>;
    if constexpr (std::is_pointer<D>::value || std::is_member_pointer<D>::value) {
        return f == nullptr;
    } else if constexpr (is_specialization<D, std::function>::value) {
        return !f;
    } else {
        (void)f;
        return false;
    }
}

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_TRAITS_HPP
// #include <bulwark/outcome.hpp>
// Outcome<T>: a value or an exception_ptr, the result type every policy returns.
#ifndef BULWARK_OUTCOME_HPP
#define BULWARK_OUTCOME_HPP

#include <exception>
#include <type_traits>
#include <utility>
#include <variant>

// #include <bulwark/config.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)

namespace bulwark {

// The result of one execution: a value of T, or the exception that ended it.
//   auto o = policy.try_execute([] { return 42; });
//   if (o) use(o.value()); else log(o.error());        // value() rethrows the stored error
// T may be move-only; Outcome<void> holds only the error. Thread-compatible.
template <class T>
class [[nodiscard]] Outcome {
    static_assert(!std::is_reference<T>::value,
                  "bulwark::Outcome<T> cannot hold a reference: return a pointer or "
                  "std::reference_wrapper from the callable instead.");
    static_assert(!std::is_same<std::decay_t<T>, std::exception_ptr>::value,
                  "bulwark::Outcome<std::exception_ptr> is ambiguous: wrap the exception_ptr in a "
                  "struct of your own.");
    static_assert(!std::is_array<T>::value && std::is_destructible<T>::value,
                  "bulwark::Outcome<T> needs a destructible, non-array value type.");

public:
    using value_type = T;

    static Outcome from_value(T value) noexcept(std::is_nothrow_move_constructible<T>::value) {
        return Outcome(std::in_place_index<0>, std::move(value));
    }

    template <class... Args>
    static Outcome in_place(Args&&... args) {
        return Outcome(std::in_place_index<0>, std::forward<Args>(args)...);
    }

    // Throws std::invalid_argument if `error` is null: an error outcome must say what went wrong.
    static Outcome from_error(std::exception_ptr error) {
        if (!error) {
            detail::throw_invalid_argument(
                "bulwark::Outcome::from_error: the exception_ptr is null");
        }
        return Outcome(std::in_place_index<1>, std::move(error));
    }

    bool has_value() const noexcept { return data_.index() == 0; }
    bool has_error() const noexcept { return data_.index() != 0; }
    explicit operator bool() const noexcept { return has_value(); }

    // The value; rethrows the stored error if there is none.
    T& value() & {
        rethrow_if_error();
        return *std::get_if<0>(&data_);
    }
    const T& value() const& {
        rethrow_if_error();
        return *std::get_if<0>(&data_);
    }
    T&& value() && {
        rethrow_if_error();
        return std::move(*std::get_if<0>(&data_));
    }

    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T&& operator*() && { return std::move(*this).value(); }

    template <class U>
    T value_or(U&& fallback) const& {
        return has_value() ? *std::get_if<0>(&data_) : static_cast<T>(std::forward<U>(fallback));
    }
    template <class U>
    T value_or(U&& fallback) && {
        return has_value() ? std::move(*std::get_if<0>(&data_))
                           : static_cast<T>(std::forward<U>(fallback));
    }

    // The stored error; a null exception_ptr when the outcome holds a value.
    std::exception_ptr error() const noexcept {
        const std::exception_ptr* e = std::get_if<1>(&data_);
        return e != nullptr ? *e : std::exception_ptr();
    }

    void rethrow_if_error() const {
        if (const std::exception_ptr* e = std::get_if<1>(&data_)) {
            std::rethrow_exception(*e);
        }
    }

    // Replaces the value or error with `error`, in place: for a policy that turns a result into a
    // failure (a late one, say) without requiring T to be assignable. Throws
    // std::invalid_argument if `error` is null.
    void replace_with_error(std::exception_ptr error) {
        if (!error) {
            detail::throw_invalid_argument(
                "bulwark::Outcome::replace_with_error: the exception_ptr is null");
        }
        data_.template emplace<1>(std::move(error));
    }

private:
    template <std::size_t I, class... Args>
    explicit Outcome(std::in_place_index_t<I> tag, Args&&... args)
        : data_(tag, std::forward<Args>(args)...) {}

    std::variant<T, std::exception_ptr> data_;
};

// The outcome of a callable that returns nothing: success, or the exception that ended it.
template <>
class [[nodiscard]] Outcome<void> {
public:
    using value_type = void;

    static Outcome success() noexcept { return {}; }
    static Outcome from_value() noexcept { return {}; }

    static Outcome from_error(std::exception_ptr error) {
        if (!error) {
            detail::throw_invalid_argument(
                "bulwark::Outcome::from_error: the exception_ptr is null");
        }
        Outcome o;
        o.error_ = std::move(error);
        return o;
    }

    bool has_value() const noexcept { return !error_; }
    bool has_error() const noexcept { return static_cast<bool>(error_); }
    explicit operator bool() const noexcept { return has_value(); }

    // Rethrows the stored error, if any.
    void value() const { rethrow_if_error(); }

    std::exception_ptr error() const noexcept { return error_; }

    void rethrow_if_error() const {
        if (error_) {
            std::rethrow_exception(error_);
        }
    }

    // Replaces the outcome with `error`. Throws std::invalid_argument if `error` is null.
    void replace_with_error(std::exception_ptr error) {
        if (!error) {
            detail::throw_invalid_argument(
                "bulwark::Outcome::replace_with_error: the exception_ptr is null");
        }
        error_ = std::move(error);
    }

private:
    Outcome() noexcept = default;
    std::exception_ptr error_;
};

namespace detail {
template <class T>
struct is_outcome : std::false_type {};
template <class T>
struct is_outcome<Outcome<T>> : std::true_type {};
template <class T>
inline constexpr bool is_outcome_v = is_outcome<std::decay_t<T>>::value;
}  // namespace detail

}  // namespace bulwark

#endif  // BULWARK_OUTCOME_HPP

namespace bulwark {

namespace detail {
// True if `error` is an E (or derived from it).
template <class E>
bool holds_exception(const std::exception_ptr& error) {
    try {
        std::rethrow_exception(error);
    } catch (const E&) {
        return true;
    } catch (...) {
        return false;
    }
}

// What `error` (not null) says: its what(), or "unknown exception" for a non-std one.
inline std::string describe_exception(const std::exception_ptr& error) {
    try {
        std::rethrow_exception(error);
    } catch (const std::exception& e) {
        return e.what();
    } catch (...) {
        return "unknown exception";
    }
}
}  // namespace detail

// An exception type named at run time, for options that list types
// (CircuitBreakerOptions::counted_rejections): matches(error) is true when `error` holds an E or
// a subclass of E.
//   auto full = bulwark::ExceptionType::of<bulwark::BulkheadFullError>();
//   full.matches(std::make_exception_ptr(bulwark::BulkheadFullError("full")));   // true
// A small value type (one function pointer): copyable, and thread-safe to use. Two values of the
// same E compare equal. matches() rethrows the exception once.
class ExceptionType {
public:
    template <class E>
    static constexpr ExceptionType of() noexcept {
        static_assert(
            !std::is_reference<E>::value && !std::is_pointer<E>::value,
            "ExceptionType::of<E>() takes an exception type, not a reference or pointer.");
        return ExceptionType(&detail::holds_exception<E>);
    }

    // True if `error` holds an E (or a subclass of E). False for a null exception_ptr.
    bool matches(const std::exception_ptr& error) const {
        return error != nullptr && matches_(error);
    }

    friend bool operator==(ExceptionType a, ExceptionType b) noexcept {
        return a.matches_ == b.matches_;
    }
    friend bool operator!=(ExceptionType a, ExceptionType b) noexcept { return !(a == b); }

private:
    using Matcher = bool (*)(const std::exception_ptr&);
    constexpr explicit ExceptionType(Matcher matcher) noexcept : matches_(matcher) {}

    Matcher matches_;
};

// Decides which outcomes a policy treats as failures (to count, retry or fall back on).
// By default every exception is a failure and every returned value a success.
//   Classifier c;
//   c.handle<std::system_error>();                   // now only system_error (and subclasses) fail
//   c.handle_result([](const Response& r) { return r.status >= 500; });  // and these values
// An exception outside the handled set is not a failure: the policy lets it pass through.
// Configuration is not thread-safe; once configured, the const members are safe to call
// concurrently. Classifying a success with no result predicates costs one branch; classifying an
// exception against handle<E>() rethrows it once per handled type.
class Classifier {
public:
    // Exceptions of type E (or derived from it) are failures. The first call narrows the default
    // "every exception" to the listed types.
    template <class E>
    Classifier& handle() {
        static_assert(
            !std::is_reference<E>::value && !std::is_pointer<E>::value,
            "Classifier::handle<E>() takes an exception type, not a reference or pointer.");
        exception_predicates_.emplace_back(&detail::holds_exception<E>);
        return *this;
    }

    // Exceptions for which `predicate` returns true are failures (narrows like handle<E>()).
    Classifier& handle_if(std::function<bool(const std::exception_ptr&)> predicate) {
        if (!predicate) {
            detail::throw_invalid_argument("Classifier::handle_if: the predicate is empty");
        }
        exception_predicates_.push_back(std::move(predicate));
        return *this;
    }

    // Returned values for which `predicate` returns true are failures. The value type is deduced
    // from the predicate's parameter; name it explicitly for a generic lambda:
    // handle_result<Response>([](const auto& r) { ... }). Predicates of other types are ignored
    // for results of another type.
    template <class T = void, class Pred>
    Classifier& handle_result(Pred predicate) {
        using Arg = std::conditional_t<std::is_void<T>::value, detail::single_arg_t<Pred>, T>;
        static_assert(!std::is_void<Arg>::value,
                      "handle_result(pred) could not deduce the result type from the predicate "
                      "(a generic lambda?): write handle_result<YourType>(pred) or give the "
                      "lambda a concrete parameter type.");
        if constexpr (!std::is_void<Arg>::value) {  // else nothing more to report
            using Value = detail::remove_cvref_t<Arg>;
            static_assert(std::is_invocable_r<bool, const Pred&, const Value&>::value,
                          "handle_result(pred): pred must be callable as bool(const T&).");
            if constexpr (std::is_invocable_r<bool, const Pred&, const Value&>::value) {
                result_predicates_.push_back(ResultPredicate{
                    detail::type_id<Value>(), [p = std::move(predicate)](const void* value) {
                        return static_cast<bool>(p(*static_cast<const Value*>(value)));
                    }});
            }
        }
        return *this;
    }

    // True if the exception counts as a failure. A null exception_ptr is not a failure.
    bool is_failure(const std::exception_ptr& error) const {
        if (!error) {
            return false;
        }
        if (exception_predicates_.empty()) {
            return true;
        }
        for (const auto& predicate : exception_predicates_) {
            if (predicate(error)) {
                return true;
            }
        }
        return false;
    }

    // True if the returned value counts as a failure.
    template <class T>
    bool is_failure_result(const T& value) const {
        if (BULWARK_LIKELY(result_predicates_.empty())) {
            return false;
        }
        return is_failure_result_slow(detail::type_id<T>(), &value);
    }

    template <class T>
    bool is_failure(const Outcome<T>& outcome) const {
        if (outcome.has_error()) {
            return is_failure(outcome.error());
        }
        if constexpr (std::is_void<T>::value) {
            return false;
        } else {
            return is_failure_result(*outcome);
        }
    }

    // True when no handle<E>()/handle_if() narrowed the set: every exception is a failure.
    bool handles_all_exceptions() const noexcept { return exception_predicates_.empty(); }
    bool has_result_predicates() const noexcept { return !result_predicates_.empty(); }

private:
    struct ResultPredicate {
        detail::type_id_t type;
        std::function<bool(const void*)> predicate;
    };

    bool is_failure_result_slow(detail::type_id_t type, const void* value) const {
        for (const ResultPredicate& p : result_predicates_) {
            if (p.type == type && p.predicate(value)) {
                return true;
            }
        }
        return false;
    }

    std::vector<std::function<bool(const std::exception_ptr&)>> exception_predicates_;
    std::vector<ResultPredicate> result_predicates_;
};

}  // namespace bulwark

#endif  // BULWARK_CLASSIFY_HPP
// #include <bulwark/clock.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/errors.hpp>
// The error vocabulary: rejection versus failure, RejectedError and every public error type.
#ifndef BULWARK_ERRORS_HPP
#define BULWARK_ERRORS_HPP

#include <algorithm>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

// #include <bulwark/time.hpp> (already included above)

namespace bulwark {

// Rejection and failure: what bulwark means by each.
//
// A *failure* is the dependency's: the call a policy protects threw, returned a value its
// classifier marks as failing, or was too slow (a TimeoutError; a breaker's call_timeout and slow
// calls). Failures are what breakers count against the dependency, and what retries, fallbacks
// and hedges answer.
//
// A *rejection* is a bulwark component's own refusal: it did not run the call (or gave up on
// running it again) although the dependency had not failed — an open breaker, a full bulkhead,
// a rate limit, load shedding, an empty retry budget, a chain with no channel left, a full store.
// It says nothing about the dependency's health, so a breaker never counts one against it
// (CircuitBreakerStats::inner_rejections; CircuitBreakerOptions::handle<E>() with a rejection
// type opts back in). A retry retries it like any exception its classifier accepts — by default
// every one — and waits at least its retry_after(), so retry outside a breaker waits out the
// break instead of hammering it; retry_on<E>() narrows that.
//
// Every error a policy raises in place of the call's result derives from RejectedError, so
// `catch (const bulwark::RejectedError&)` sees all of them. The one that is a failure is
// TimeoutError: the dependency did not answer in time. It is a RejectedError because a Timeout
// raises it (the caller never sees the dependency's own answer), and breakers, fallbacks and
// retries classify it like any exception the dependency threw. RetryBudgetExhaustedError is a
// rejection that stands for the failure it did not retry: a breaker judges its last_error().
//
// Every public error type, by header, with its kind and meaning. Errors of a higher layer stay
// in their layer's header (this one includes no component).
//
//   errors.hpp (this header)
//     RejectedError                       base      a policy's own error; source(), retry_after()
//     CircuitOpenError                    rejection open, forced open, or half-open and full
//     BulkheadFullError                   rejection no slot, no queue room, or the wait ended
//     RateLimitedError                    rejection no permit within the allowed wait
//     LoadShedError                       rejection shed while the service is degraded
//     RetryBudgetExhaustedError           rejection a due retry refused by the budget
//     NoChannelError                      rejection a FallbackChain had no channel left to try
//     TimeoutError                        failure   no answer by the deadline
//   dead_letter_store.hpp
//     DeadLetterStoreFullError            rejection every stored record is pending: add refused
//     DeadLetterTooLargeError             usage     a record over a size limit (length_error)
//   file_dead_letter_store.hpp (all derive from FileDeadLetterStoreError)
//     FileDeadLetterStoreError            failure   the store's files failed; code()
//     DeadLetterJournalIoError            failure   a write or sync failed; poisoned()
//     DeadLetterReprocessInterruptedError failure   reprocess() stopped part-way; partial()
//     DeadLetterStorePoisonedError        failure   a mutation after a failed sync
//     DeadLetterJournalCorruptError       failure   damage the recovery mode refuses; offset()
//     DeadLetterJournalLockedError        usage     another store holds the directory's lock
//     DeadLetterJournalVersionError       usage     a journal of a newer format; version()
//   testing.hpp
//     InjectedFault                       failure   a FaultInjector's stand-in for the dependency's
//
// "usage" errors are neither: the caller asked for something the component cannot do. Invalid
// options and arguments throw std::invalid_argument naming the field.

// A policy refused to run the call, or gave up on it: see "rejection" above (and TimeoutError,
// the one failure among them). Catch RejectedError to treat all of them alike.
// source() names the component that raised it — the breaker's, bulkhead's, rate limiter's, load
// shedder's, timeout's or retry policy's name — and is empty for an unnamed one; it is shared, so
// copying the error never allocates.
// retry_after() is a hint: how long, from when the error was made, until the policy may admit
// again (zero when unknown). retry_at(), when set, is that moment on the rejecting policy's clock;
// it stays exact however long the error is kept (a breaker reuses one error object while the time
// left in its break is unchanged, so that rejecting does not allocate per call). Retry policies
// wait at least until then.
class RejectedError : public std::runtime_error {
public:
    explicit RejectedError(const std::string& what, Duration retry_after = Duration::zero(),
                           std::optional<TimePoint> retry_at = std::nullopt)
        : std::runtime_error(what), retry_after_(retry_after), retry_at_(retry_at) {}

    // As above, raised by the component named *source (null: unnamed).
    RejectedError(std::shared_ptr<const std::string> source, const std::string& what,
                  Duration retry_after = Duration::zero(),
                  std::optional<TimePoint> retry_at = std::nullopt)
        : std::runtime_error(what),
          source_(std::move(source)),
          retry_after_(retry_after),
          retry_at_(retry_at) {}

    // The name of the component that raised it; empty when it has none.
    const std::string& source() const noexcept { return source_ ? *source_ : empty_source(); }
    Duration retry_after() const noexcept { return retry_after_; }
    std::optional<TimePoint> retry_at() const noexcept { return retry_at_; }

private:
    static const std::string& empty_source() noexcept {
        static const std::string empty;
        return empty;
    }

    std::shared_ptr<const std::string> source_;
    Duration retry_after_;
    std::optional<TimePoint> retry_at_;
};

namespace detail {
// How long `error` asks to wait from `now`: a RejectedError's retry_at() (exact however old the
// error), else its retry_after(); zero for anything else. Retry policies and the retry queue wait
// at least this long.
inline Duration rejection_wait(const std::exception_ptr& error, TimePoint now) {
    try {
        std::rethrow_exception(error);
    } catch (const RejectedError& rejected) {
        if (const auto at = rejected.retry_at()) {
            return std::max(*at - now, Duration::zero());
        }
        return std::max(rejected.retry_after(), Duration::zero());
    } catch (...) {
        return Duration::zero();
    }
}
}  // namespace detail

namespace detail {
// "bulkhead" or "bulkhead 'db'": how a rejection's message names its component.
inline std::string component_label(const char* kind, const std::string& name) {
    return name.empty() ? std::string(kind) : std::string(kind) + " '" + name + "'";
}
}  // namespace detail

// A circuit breaker is open (or forced open, or half-open with every probe in flight) and
// rejected the call. source(): the breaker's name.
class CircuitOpenError : public RejectedError {
public:
    using RejectedError::RejectedError;
};

// A bulkhead had no free slot and no room in its queue, or the queue wait timed out (or was
// cancelled).
class BulkheadFullError : public RejectedError {
public:
    using RejectedError::RejectedError;
};

// A rate limiter had no permit for the call within the allowed wait.
class RateLimitedError : public RejectedError {
public:
    using RejectedError::RejectedError;
};

// A load shedder dropped the call because the service is degraded.
class LoadShedError : public RejectedError {
public:
    using RejectedError::RejectedError;
};

// A failure, not a rejection: the call did not produce its result before its deadline (the
// dependency was too slow). Breakers count it; retries and fallbacks answer it by default.
class TimeoutError : public RejectedError {
public:
    using RejectedError::RejectedError;
};

// A retry was due but the shared retry budget was empty. last_error() is the failure that the
// retry would have answered (a breaker classifies that one instead).
class RetryBudgetExhaustedError : public RejectedError {
public:
    RetryBudgetExhaustedError(const std::string& what, std::exception_ptr last_error)
        : RejectedError(what), last_error_(std::move(last_error)) {}
    RetryBudgetExhaustedError(std::shared_ptr<const std::string> source, const std::string& what,
                              std::exception_ptr last_error)
        : RejectedError(std::move(source), what), last_error_(std::move(last_error)) {}

    std::exception_ptr last_error() const noexcept { return last_error_; }

private:
    std::exception_ptr last_error_;
};

// No channel of a FallbackChain delivered and none left an error to report: every candidate was
// skipped by a cost or quality threshold, the chain has no enabled channel, or the call was
// cancelled (or ran past its deadline) before the first channel was tried.
class NoChannelError : public RejectedError {
public:
    using RejectedError::RejectedError;
};

}  // namespace bulwark

#endif  // BULWARK_ERRORS_HPP
// #include <bulwark/time.hpp> (already included above)

namespace bulwark {

// closed: calls pass and results are counted. open: calls are rejected until the break ends.
// half_open: a few probe calls pass; all succeed -> closed, one fails -> open.
// forced_open: trip() — rejects until reset(). disabled: disable() — admits everything, still
// counts, never changes state by itself until reset().
enum class CircuitState : std::uint8_t { closed, open, half_open, forced_open, disabled };

inline const char* to_string(CircuitState state) noexcept {
    switch (state) {
        case CircuitState::closed:
            return "closed";
        case CircuitState::open:
            return "open";
        case CircuitState::half_open:
            return "half_open";
        case CircuitState::forced_open:
            return "forced_open";
        case CircuitState::disabled:
            return "disabled";
    }
    return "unknown";
}

// Why the state changed.
enum class TransitionReason : std::uint8_t {
    consecutive_failures,  // failure_threshold consecutive failures
    failure_rate,          // failure_ratio reached over the window
    slow_call_rate,        // slow_call_ratio reached over the window
    break_elapsed,         // open -> half_open
    probes_succeeded,      // half_open -> closed
    probe_failed,          // half_open -> open
    probe_expired,         // half_open -> open: a probe reported nothing within half_open_max_wait
    manual,                // trip(), reset(), disable()
};

inline const char* to_string(TransitionReason reason) noexcept {
    switch (reason) {
        case TransitionReason::consecutive_failures:
            return "consecutive_failures";
        case TransitionReason::failure_rate:
            return "failure_rate";
        case TransitionReason::slow_call_rate:
            return "slow_call_rate";
        case TransitionReason::break_elapsed:
            return "break_elapsed";
        case TransitionReason::probes_succeeded:
            return "probes_succeeded";
        case TransitionReason::probe_failed:
            return "probe_failed";
        case TransitionReason::probe_expired:
            return "probe_expired";
        case TransitionReason::manual:
            return "manual";
    }
    return "unknown";
}

// A state transition, as reported to on_state_change listeners.
struct StateChange {
    std::string_view breaker;  // the breaker's name (valid while the breaker lives)
    CircuitState from = CircuitState::closed;
    CircuitState to = CircuitState::closed;
    TimePoint at{};  // on the breaker's clock
    TransitionReason reason = TransitionReason::manual;
    std::uint64_t generation = 0;  // increases by one with every transition of this breaker
};

// The last `size` recorded calls, in [1, 1000000].
struct CountWindow {
    std::uint32_t size = 100;
};

// The calls recorded in the last `length`, counted in buckets of `bucket` (so calls expire
// bucket by bucket, without a background thread).
struct TimeWindow {
    Duration length = std::chrono::seconds(60);
    Duration bucket = std::chrono::seconds(1);
};

// Options of a CircuitBreaker. Every field has a default; validate() (called by the breaker's
// constructor) throws std::invalid_argument naming the field and the value. At least one trip
// rule must be on (failure_threshold, failure_ratio or slow_call_ratio): a breaker that can
// never open is refused.
//   bulwark::CircuitBreakerOptions o;
//   o.failure_ratio = 0.5; o.window = bulwark::CountWindow{100}; o.handle<std::system_error>();
struct CircuitBreakerOptions {
    static constexpr std::uint32_t max_count_window = 1000000;
    static constexpr std::uint32_t max_half_open_calls = 10000;

    // Consecutive failures that open the breaker, whatever the window says. 0 = rule off.
    std::uint32_t failure_threshold = 5;
    // Failure rate over the window that opens it, in [0, 1]. 0 = rule off.
    double failure_ratio = 0.5;
    // No rate rule decides before the window holds this many calls. >= 1.
    std::uint32_t minimum_calls = 10;
    // What the rates are computed over: CountWindow{100} (default) or TimeWindow{60s, 1s}.
    std::variant<CountWindow, TimeWindow> window = CountWindow{};
    // A call that takes at least this long is slow. > 0. Timed only while slow_call_ratio > 0.
    Duration slow_call_duration = std::chrono::seconds(60);
    // Slow-call rate over the window that opens it, in [0, 1]. 0 = rule off (default), and then
    // the breaker reads no clock on the closed path.
    double slow_call_ratio = 0.0;
    // A call that takes longer than this counts as a failure (its result is still returned). The
    // breaker cannot stop the call; pair it with a Timeout for that. 0 = off (default).
    Duration call_timeout = Duration::zero();
    // How long the breaker stays open before it lets probes through. > 0. (recovery_timeout)
    Duration break_duration = std::chrono::seconds(60);
    // Optional: the k-th opening in a row (re-opened by a failed probe, without closing in
    // between) lasts break_duration_backoff->delay(k) instead of break_duration; closing starts
    // the count again. E.g. Backoff::exponential(60s, 2.0).max_delay(10min): 1, 2, 4, 8, 10 min.
    std::optional<Backoff> break_duration_backoff{};
    // Probes admitted in half-open; it closes when all of them succeed (success_threshold). In
    // [1, 10000].
    std::uint32_t half_open_calls = 1;
    // A probe that reports nothing within this counts as failed, so a hung probe cannot keep the
    // breaker half-open. 0 = wait for ever (default).
    Duration half_open_max_wait = Duration::zero();
    // What counts as a failure: by default every exception. See Classifier. Whatever it says,
    // a rejection by an inner policy (a RejectedError other than TimeoutError: a full bulkhead,
    // a rate limit, load shedding, an open inner breaker) is neither a success nor a failure,
    // unless handle<E>() named its type (see counted_rejections).
    Classifier classifier{};
    // The rejection types that are not set aside as inner rejections but classified like any
    // other exception (so, with the default classifier or a matching handle<E>(), they count as
    // failures). handle<E>() adds ExceptionType::of<E>() here when E is a RejectedError (or a
    // subclass), e.g. handle<BulkheadFullError>(). Empty by default.
    std::vector<ExceptionType> counted_rejections{};

    // Only exceptions of type E (and subclasses) count as failures; others pass through and
    // count as successes for the breaker: they are not the dependency's fault. Naming a
    // rejection type (handle<BulkheadFullError>(), handle<RejectedError>()) makes those
    // rejections count as failures too.
    template <class E>
    CircuitBreakerOptions& handle() {
        classifier.handle<E>();
        if constexpr (std::is_base_of<RejectedError, E>::value) {
            counted_rejections.push_back(ExceptionType::of<E>());
        }
        return *this;
    }
    CircuitBreakerOptions& handle_if(std::function<bool(const std::exception_ptr&)> predicate) {
        classifier.handle_if(std::move(predicate));
        return *this;
    }
    // Returned values for which `predicate` is true count as failures (the value is still
    // returned to the caller).
    template <class T = void, class Pred>
    CircuitBreakerOptions& handle_result(Pred predicate) {
        classifier.handle_result<T>(std::move(predicate));
        return *this;
    }

    void validate() const {
        auto ratio = [](const char* field, double v) {
            if (!(v >= 0.0 && v <= 1.0)) {
                detail::throw_invalid_option(field, "must be in [0, 1]", detail::format_number(v));
            }
        };
        auto positive = [](const char* field, Duration d) {
            if (d <= Duration::zero()) {
                detail::throw_invalid_option(field, "must be > 0", detail::format_duration(d));
            }
        };
        auto non_negative = [](const char* field, Duration d) {
            if (d < Duration::zero()) {
                detail::throw_invalid_option(field, "must be >= 0", detail::format_duration(d));
            }
        };
        ratio("CircuitBreakerOptions.failure_ratio", failure_ratio);
        ratio("CircuitBreakerOptions.slow_call_ratio", slow_call_ratio);
        if (failure_threshold == 0 && failure_ratio == 0.0 && slow_call_ratio == 0.0) {
            detail::throw_invalid_option(
                "CircuitBreakerOptions.failure_threshold, failure_ratio and slow_call_ratio",
                "must not all be 0: with every trip rule off the breaker can never open (for "
                "one that never opens, call disable() or use bulwark::Noop)",
                "0, 0 and 0");
        }
        if (minimum_calls == 0) {
            detail::throw_invalid_option("CircuitBreakerOptions.minimum_calls", "must be >= 1",
                                         "0");
        }
        if (const CountWindow* count = std::get_if<CountWindow>(&window)) {
            if (count->size == 0 || count->size > max_count_window) {
                // The window keeps the positions of the failures (and slow calls) among its calls.
                detail::throw_invalid_option("CircuitBreakerOptions.window (CountWindow.size)",
                                             "must be in [1, 1000000]",
                                             std::to_string(count->size));
            }
            if (minimum_calls > count->size) {
                detail::throw_invalid_option(
                    "CircuitBreakerOptions.minimum_calls",
                    "must be <= the count window's size (" + std::to_string(count->size) + ")",
                    std::to_string(minimum_calls));
            }
        } else {
            const auto& time = std::get<TimeWindow>(window);
            positive("CircuitBreakerOptions.window (TimeWindow.length)", time.length);
            positive("CircuitBreakerOptions.window (TimeWindow.bucket)", time.bucket);
            if (time.bucket > time.length) {
                detail::throw_invalid_option(
                    "CircuitBreakerOptions.window (TimeWindow.bucket)",
                    "must be <= TimeWindow.length (" + detail::format_duration(time.length) + ")",
                    detail::format_duration(time.bucket));
            }
            if (time.length / time.bucket > 10000) {
                detail::throw_invalid_option("CircuitBreakerOptions.window (TimeWindow)",
                                             "must have at most 10000 buckets (length / bucket)",
                                             std::to_string(time.length / time.bucket));
            }
        }
        positive("CircuitBreakerOptions.slow_call_duration", slow_call_duration);
        non_negative("CircuitBreakerOptions.call_timeout", call_timeout);
        positive("CircuitBreakerOptions.break_duration", break_duration);
        if (half_open_calls == 0 || half_open_calls > max_half_open_calls) {
            // The breaker keeps a slot per probe and scans them in half-open.
            detail::throw_invalid_option("CircuitBreakerOptions.half_open_calls",
                                         "must be in [1, 10000]", std::to_string(half_open_calls));
        }
        non_negative("CircuitBreakerOptions.half_open_max_wait", half_open_max_wait);
    }
};

// What a breaker has seen. Cumulative counters cover the breaker's life, stale results (recorded
// after the breaker changed state) included; window_* and the rates cover the current window
// (emptied whenever the breaker closes), which stale results never enter.
struct CircuitBreakerStats {
    CircuitState state = CircuitState::closed;
    // results recorded: successes + failures + ignored + inner_rejections
    std::uint64_t calls = 0;
    std::uint64_t successes = 0;  // results that were not failures (ignored ones excluded)
    std::uint64_t failures = 0;   // failures, timeouts and probes that reported nothing included
    std::uint64_t ignored = 0;    // exceptions outside the handled set (successes for the rules)
    // rejections by inner policies (RejectedError other than TimeoutError, not named by
    // handle<E>()): neither successes nor failures for the rules
    std::uint64_t inner_rejections = 0;
    std::uint64_t slow = 0;      // slow calls (only while slow_call_ratio > 0)
    std::uint64_t timeouts = 0;  // calls slower than call_timeout (also counted in failures)
    std::uint64_t rejected = 0;  // calls refused while open, forced open or half-open and full
    std::uint64_t opened = 0;    // times the breaker opened
    std::uint64_t expired_probes = 0;  // probes that reported nothing within half_open_max_wait
    std::uint64_t window_calls = 0;
    std::uint64_t window_failures = 0;
    std::uint64_t window_slow = 0;
    double failure_rate = 0.0;    // window_failures / window_calls (0 for an empty window)
    double slow_call_rate = 0.0;  // window_slow / window_calls
    std::uint32_t consecutive_failures = 0;
    Duration time_in_state{0};
    Duration retry_after{0};  // while open: time until probes are admitted
};

}  // namespace bulwark

#endif  // BULWARK_CIRCUIT_BREAKER_OPTIONS_HPP
// #include <bulwark/classify.hpp> (already included above)
// #include <bulwark/clock.hpp> (already included above)
// #include <bulwark/config.hpp> (already included above)
// #include <bulwark/context.hpp>
// Context: what one execution carries through a pipeline (attempt, deadline, cancellation).
#ifndef BULWARK_CONTEXT_HPP
#define BULWARK_CONTEXT_HPP

#include <atomic>
#include <cstdint>
#include <optional>
#include <string_view>

// #include <bulwark/clock.hpp> (already included above)
// #include <bulwark/config.hpp> (already included above)

namespace bulwark {

// How important a call is. Load shedding drops lower priorities first.
enum class Priority : std::uint8_t { low, normal, high, critical };

// The state of one execution as it passes through a pipeline: which attempt this is, the
// operation's name, its deadline, its priority and whether it was cancelled.
//   bulwark::Context ctx("send-sms");
//   policy.execute([](bulwark::Context& c) { return call(c.deadline()); }, ctx);
// A Context lives on the caller's stack for one execution and allocates nothing. The operation
// name is a view: the string must outlive the execution.
// Thread-safety: cancel() may be called from any thread. cancelled() reads the cancel flags of
// the context and its parents (safe from any thread) and this context's deadline, which the
// policies of the executing thread write: call it from that thread, or from the thread of a
// child context (a hedged attempt polls its own context). The other members belong to the
// executing thread.
class Context {
public:
    Context() noexcept = default;
    explicit Context(std::string_view operation) noexcept : operation_(operation) {}

    // A child execution (for example a hedged attempt): it inherits the parent's operation,
    // deadline and priority, and is cancelled whenever the parent is. The parent must outlive it.
    static Context child_of(const Context& parent) noexcept {
        Context child(parent.operation_);
        child.parent_ = &parent;
        child.deadline_ = parent.deadline_;
        child.deadline_clock_ = parent.deadline_clock_;
        child.priority_ = parent.priority_;
        child.attempt_ = parent.attempt_;
        return child;
    }

    Context(const Context&) = delete;
    Context& operator=(const Context&) = delete;
    Context(Context&& other) noexcept
        : operation_(other.operation_),
          parent_(other.parent_),
          deadline_(other.deadline_),
          deadline_clock_(other.deadline_clock_),
          attempt_(other.attempt_),
          priority_(other.priority_),
          stale_(other.stale_),
          cancelled_(other.cancelled_.load(std::memory_order_acquire)) {}
    Context& operator=(Context&&) = delete;
    ~Context() = default;

    // 0 for the first attempt; a retry policy increments it before each retry.
    std::uint32_t attempt() const noexcept { return attempt_; }
    void set_attempt(std::uint32_t attempt) noexcept { attempt_ = attempt; }

    std::string_view operation() const noexcept { return operation_; }
    void set_operation(std::string_view operation) noexcept { operation_ = operation; }

    // The time by which the execution should finish, if any policy or the caller set one.
    // TimePoint::max() is no deadline.
    std::optional<TimePoint> deadline() const noexcept {
        return has_deadline() ? std::optional<TimePoint>(deadline_) : std::nullopt;
    }
    bool has_deadline() const noexcept { return deadline_ != TimePoint::max(); }
    // The deadline, or `none` without one: deadline_or(TimePoint::max()) for comparisons.
    TimePoint deadline_or(TimePoint none) const noexcept {
        return has_deadline() ? deadline_ : none;
    }
    // The clock the deadline is on, if the policy that set it said (a Timeout does); with it,
    // cancelled() turns true once the deadline has passed.
    const Clock* deadline_clock() const noexcept { return deadline_clock_; }
    // Replaces the deadline (nullopt, or TimePoint::max(), removes it). Policies that scope a
    // deadline restore the old one when they return.
    void set_deadline(std::optional<TimePoint> deadline, const Clock* clock = nullptr) noexcept {
        deadline_ = deadline ? *deadline : TimePoint::max();
        deadline_clock_ = has_deadline() ? clock : nullptr;
    }
    // Sets the deadline to `t` unless an earlier one is already set.
    void tighten_deadline(TimePoint t, const Clock* clock = nullptr) noexcept {
        if (t < deadline_) {
            deadline_ = t;
            deadline_clock_ = clock;
        }
    }
    // Time left until the deadline on `clock` (negative once passed); nullopt without a deadline.
    std::optional<Duration> remaining(const Clock& clock) const noexcept {
        if (!has_deadline()) {
            return std::nullopt;
        }
        return deadline_ - clock.now();
    }

    Priority priority() const noexcept { return priority_; }
    void set_priority(Priority priority) noexcept { priority_ = priority; }

    // True once cancel() was called on this context or on any of its parents, or once a
    // deadline set with its clock (by a Timeout) has passed. Callables that run long should poll
    // it and stop early; policies stop retrying once it is set.
    bool cancelled() const noexcept {
        for (const Context* c = this; c != nullptr; c = c->parent_) {
            // acquire: pairs with cancel()'s release, so that what the cancelling thread wrote
            // before cancelling is visible to the thread that sees the flag.
            if (c->cancelled_.load(std::memory_order_acquire)) {
                return true;
            }
        }
        return deadline_passed();
    }

    // True if a deadline set with its clock has passed.
    bool deadline_passed() const noexcept {
        // A clock is only ever set together with a deadline.
        return deadline_clock_ != nullptr && deadline_clock_->coarse_now_fast() >= deadline_;
    }

    // Set by a CacheFallback that answered with a cached value instead of a fresh one.
    bool stale() const noexcept { return stale_; }
    void set_stale(bool stale) noexcept { stale_ = stale; }

    // Requests cancellation. Thread-safe; idempotent; cannot be undone.
    void cancel() noexcept { cancelled_.store(true, std::memory_order_release); }

    const Context* parent() const noexcept { return parent_; }

private:
    std::string_view operation_;
    const Context* parent_ = nullptr;
    // A plain word with TimePoint::max() for none: policies save and restore it with 8-byte
    // moves. (A std::optional is copied as 16 bytes, which the CPU cannot forward from the two
    // narrower stores that wrote it: ~5 ns per copy on a success path.)
    TimePoint deadline_ = TimePoint::max();
    const Clock* deadline_clock_ = nullptr;
    std::uint32_t attempt_ = 0;
    Priority priority_ = Priority::normal;
    bool stale_ = false;
    std::atomic<bool> cancelled_{false};
};

}  // namespace bulwark

#endif  // BULWARK_CONTEXT_HPP
// #include <bulwark/detail/mutex.hpp> (already included above)
// #include <bulwark/detail/thread_slot.hpp>
// Per-thread slots: which stripe a thread writes to (private).
#ifndef BULWARK_DETAIL_THREAD_SLOT_HPP
#define BULWARK_DETAIL_THREAD_SLOT_HPP

#include <atomic>
#include <cstdint>
#include <vector>

// #include <bulwark/config.hpp> (already included above)
// #include <bulwark/detail/mutex.hpp> (already included above)

namespace bulwark {
namespace detail {

// Small per-thread indices for striped counters: each live thread that uses bulwark holds a
// distinct slot, the smallest free one, and gives it back when it exits. A slot below a striped
// structure's stripe count therefore has exactly one writer, which lets that writer update its
// stripe with a plain relaxed load and store instead of a locked read-modify-write.
// Thread-safe.
class SlotRegistry {
public:
    std::uint32_t acquire() {
        detail::LockGuard lock(mutex_);
        for (std::uint32_t i = 0; i < used_.size(); ++i) {
            if (!used_[i]) {
                used_[i] = true;
                return i;
            }
        }
        used_.push_back(true);
        return static_cast<std::uint32_t>(used_.size() - 1);
    }

    void release(std::uint32_t slot) {
        detail::LockGuard lock(mutex_);
        if (slot < used_.size()) {
            used_[slot] = false;
        }
    }

private:
    detail::Mutex mutex_;
    std::vector<bool> used_ BULWARK_GUARDED_BY(mutex_);
};

// Never destroyed: threads may exit (and release their slot) after static destruction began.
inline SlotRegistry& slot_registry() {
    static auto* registry = new SlotRegistry();
    return *registry;
}

// The slot plus one; 0 means "not assigned yet". A constant-initialised, trivially destructible
// thread_local is a plain thread-pointer-relative load, with no TLS wrapper call.
inline thread_local std::uint32_t thread_slot_plus_one = 0;

struct ThreadSlotOwner {
    std::uint32_t slot;
    ThreadSlotOwner() : slot(slot_registry().acquire()) {}
    ~ThreadSlotOwner() { slot_registry().release(slot); }
    ThreadSlotOwner(const ThreadSlotOwner&) = delete;
    ThreadSlotOwner& operator=(const ThreadSlotOwner&) = delete;
};

// What a thread gets while no slot can be made for it (out of memory): above every stripe count,
// so its counts go to the shared overflow stripe, as those of threads beyond the stripes do.
inline constexpr std::uint32_t no_thread_slot = 0xFFFFFFFFU;

BULWARK_NOINLINE inline std::uint32_t assign_thread_slot() noexcept {
    try {
        // Constructed on the first call from this thread; releases the slot when the thread
        // exits. If its construction throws, the next call constructs it again.
        thread_local ThreadSlotOwner owner;
        thread_slot_plus_one = owner.slot + 1;
        return owner.slot;
    } catch (...) {
        return no_thread_slot;
    }
}

// This thread's slot. Does not allocate after the thread's first call, and never throws (the
// counters that call it are noexcept: a worker's first count must not end the process).
inline std::uint32_t thread_slot() noexcept {
    const std::uint32_t s = thread_slot_plus_one;
    return BULWARK_LIKELY(s != 0) ? s - 1 : assign_thread_slot();
}

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_THREAD_SLOT_HPP
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/errors.hpp> (already included above)
// #include <bulwark/events.hpp>
// Events and listeners: how every component tells observers what happened.
#ifndef BULWARK_EVENTS_HPP
#define BULWARK_EVENTS_HPP

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <string>
#include <utility>

// #include <bulwark/config.hpp> (already included above)
// #include <bulwark/detail/mutex.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)

namespace bulwark {

// Called with the exception a listener threw. Listeners must never break the component that
// reports to them, so their exceptions are caught and handed here.
using ListenerErrorHandler = void (*)(std::exception_ptr) noexcept;

namespace detail {
inline void default_listener_error_handler(std::exception_ptr error) noexcept {
    try {
        std::rethrow_exception(std::move(error));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bulwark: a listener threw: %s\n", e.what());
    } catch (...) {
        std::fputs("bulwark: a listener threw a non-std exception\n", stderr);
    }
}

inline std::atomic<ListenerErrorHandler>& listener_error_handler_slot() noexcept {
    static std::atomic<ListenerErrorHandler> handler{&default_listener_error_handler};
    return handler;
}

inline void report_listener_error(std::exception_ptr error) noexcept {
    // acquire: pairs with set_listener_error_handler's release.
    listener_error_handler_slot().load(std::memory_order_acquire)(std::move(error));
}
}  // namespace detail

// Installs the process-wide handler for exceptions thrown by listeners; nullptr restores the
// default, which prints one line to stderr. Thread-safe.
inline void set_listener_error_handler(ListenerErrorHandler handler) noexcept {
    detail::listener_error_handler_slot().store(
        handler != nullptr ? handler : &detail::default_listener_error_handler,
        std::memory_order_release);
}

// Identifies a registered listener, for remove() (and a component's remove_listener()). Ids
// are unique in the process, never 0, so an id from one list is never mistaken in another.
using ListenerId = std::uint64_t;

namespace detail {
inline ListenerId next_listener_id() noexcept {
    static std::atomic<ListenerId> last{0};
    // relaxed: only uniqueness matters; the node is published under the list's mutex.
    return last.fetch_add(1, std::memory_order_relaxed) + 1;
}

// Appends a listener to an options struct's list (RetryOptions::on_retry, HedgingOptions::
// on_hedge), which the policy takes over when it is built. Throws std::invalid_argument for an
// empty listener, naming `field`.
template <class List, class Listener>
void add_option_listener(List& listeners, Listener&& listener, const char* field) {
    if (!listener) {
        throw_invalid_argument(std::string(field) + ": the listener is empty");
    }
    listeners.push_back(std::forward<Listener>(listener));
}
}  // namespace detail

// The callbacks a component reports one kind of event to: the building block behind every
// component's on_xxx(listener) (which returns a ListenerId) and remove_listener(id).
//   Listeners<StateChange> changes;  auto id = changes.add([](const StateChange& c) {...});
//   changes.emit(change);            // or emit_with([&] { return make_change(); })
// Costs one atomic load when nobody listens; build expensive events inside emit_with() so that
// they are built only when someone does.
// Thread-safe: add() and remove() may run concurrently with emit(); emit() takes no lock.
// Listeners run in the order they were added, on the thread that emits, and may be called
// concurrently from several threads. An exception a listener throws goes to the
// ListenerErrorHandler and the remaining listeners still run.
// Memory: a removed listener's node is freed only when the Listeners object is destroyed, which is
// what lets emit() walk the list without a lock; add/remove churn therefore grows memory.
template <class Event>
class Listeners {
public:
    using Callback = std::function<void(const Event&)>;

    Listeners() noexcept = default;
    Listeners(const Listeners&) = delete;
    Listeners& operator=(const Listeners&) = delete;
    // Takes over `other`'s listeners (so components holding Listeners stay movable). Not
    // thread-safe: nobody may use `other` meanwhile.
    Listeners(Listeners&& other) noexcept
        : head_(other.head_.exchange(nullptr, std::memory_order_acq_rel)), tail_(other.tail_) {
        other.tail_ = nullptr;
    }
    Listeners& operator=(Listeners&&) = delete;
    ~Listeners() {
        Node* node = head_.load(std::memory_order_acquire);
        while (node != nullptr) {
            Node* next = node->next.load(std::memory_order_acquire);
            delete node;
            node = next;
        }
    }

    // Throws std::invalid_argument for an empty callback.
    ListenerId add(Callback callback) {
        if (!callback) {
            detail::throw_invalid_argument("bulwark::Listeners::add: the callback is empty");
        }
        auto* node = new Node{std::move(callback)};
        node->id = detail::next_listener_id();
        detail::LockGuard lock(mutex_);
        // release: publishes the node's callback to emitters that load the link with acquire.
        if (tail_ == nullptr) {
            head_.store(node, std::memory_order_release);
        } else {
            tail_->next.store(node, std::memory_order_release);
        }
        tail_ = node;
        return node->id;
    }

    // Stops calling the listener; returns false if `id` is unknown or already removed. A call of
    // it that is already running on another thread finishes.
    bool remove(ListenerId id) noexcept {
        detail::LockGuard lock(mutex_);
        for (Node* node = head_.load(std::memory_order_acquire); node != nullptr;
             node = node->next.load(std::memory_order_acquire)) {
            if (node->id == id) {
                // exchange under the mutex makes a second remove of the same id return false.
                return node->active.exchange(false, std::memory_order_acq_rel);
            }
        }
        return false;
    }

    bool empty() const noexcept {
        // relaxed: a hint for callers that want to skip building an event; a listener added
        // concurrently may or may not see the event either way.
        return head_.load(std::memory_order_relaxed) == nullptr;
    }

    void emit(const Event& event) const noexcept {
        for (Node* node = head_.load(std::memory_order_acquire); node != nullptr;
             node = node->next.load(std::memory_order_acquire)) {
            if (node->active.load(std::memory_order_acquire)) {
                try {
                    node->callback(event);
                } catch (...) {
                    detail::report_listener_error(std::current_exception());
                }
            }
        }
    }

    // Builds the event with `make()` only if someone listens.
    template <class Make>
    void emit_with(Make&& make) const noexcept {
        if (head_.load(std::memory_order_acquire) == nullptr) {
            return;
        }
        try {
            emit(std::forward<Make>(make)());
        } catch (...) {
            detail::report_listener_error(std::current_exception());
        }
    }

private:
    struct Node {
        Callback callback;
        std::atomic<bool> active{true};
        std::atomic<Node*> next{nullptr};
        ListenerId id = 0;
    };

    std::atomic<Node*> head_{nullptr};
    Node* tail_ BULWARK_GUARDED_BY(mutex_) = nullptr;
    detail::Mutex mutex_;
};

}  // namespace bulwark

#endif  // BULWARK_EVENTS_HPP
// #include <bulwark/outcome.hpp> (already included above)
// #include <bulwark/policy.hpp>
// The policy concept: PolicyBase, execute/try_execute, and how callables are invoked.
#ifndef BULWARK_POLICY_HPP
#define BULWARK_POLICY_HPP

#include <exception>
#include <functional>
#include <type_traits>
#include <utility>

// #include <bulwark/context.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/detail/traits.hpp> (already included above)
// #include <bulwark/outcome.hpp> (already included above)

namespace bulwark {

// The policy concept.
//
// A policy is any type with
//     template <class Next> auto apply(Context& ctx, Next&& next);
// where `next(ctx)` runs the rest of the pipeline and returns an Outcome<T>; apply returns an
// Outcome<T> of the same T. A policy may call `next` zero times (reject), once, or several times
// (retry), may change `ctx` (attempt, deadline) and may replace the outcome (fallback).
// Deriving from PolicyBase<P> gives it execute() and try_execute().

namespace detail {

template <class F>
inline constexpr bool takes_context_v = std::is_invocable<F&, Context&>::value;

template <class F>
inline constexpr bool takes_nothing_v = std::is_invocable<F&>::value;

template <class F, class = void>
struct call_result {
    using type = void;
    static constexpr bool valid = false;
};
template <class F>
struct call_result<F, std::enable_if_t<takes_context_v<F>>> {
    using type = std::invoke_result_t<F&, Context&>;
    static constexpr bool valid = true;
};
template <class F>
struct call_result<F, std::enable_if_t<!takes_context_v<F> && takes_nothing_v<F>>> {
    using type = std::invoke_result_t<F&>;
    static constexpr bool valid = true;
};

// True for a callable that execute() accepts: () or (Context&), returning a non-reference.
template <class F>
inline constexpr bool is_valid_callable_v =
    call_result<F>::valid && !std::is_reference<typename call_result<F>::type>::value;

// What an entry point returns once a static_assert of its own has failed, instead of going on
// to instantiate the rest (which would bury the assertion's sentence under a cascade): it
// converts to anything and answers the calls a caller makes next. Only ever built in a program
// that does not compile, so nothing here runs.
struct invalid_call_result {
    template <class T>
    operator T() const noexcept {
        std::terminate();
    }
    template <class... Args>
    invalid_call_result operator()(Args&&...) const noexcept {
        return {};
    }
    template <class... Args>
    invalid_call_result execute(Args&&...) const noexcept {
        return {};
    }
    template <class... Args>
    invalid_call_result try_execute(Args&&...) const noexcept {
        return {};
    }
    template <class... Args>
    invalid_call_result try_call(Args&&...) const noexcept {
        return {};
    }
};

// The decayed result type of running F through a policy.
template <class F>
using call_result_t = typename call_result<std::remove_reference_t<F>>::type;

template <class F>
decltype(auto) invoke_callable(F& f, Context& ctx) {
    if constexpr (takes_context_v<F>) {
        return std::invoke(f, ctx);
    } else {
        (void)ctx;
        return std::invoke(f);
    }
}

// Runs `f()` and captures its value, or what it throws, as an Outcome<R>.
template <class R, class F>
Outcome<R> capture(F&& f) noexcept {
    try {
        if constexpr (std::is_void<R>::value) {
            std::forward<F>(f)();
            return Outcome<void>::success();
        } else {
            return Outcome<R>::from_value(std::forward<F>(f)());
        }
    } catch (...) {
        return Outcome<R>::from_error(std::current_exception());
    }
}

// The innermost step of every pipeline: runs the user's callable and captures what it throws.
template <class F>
class Leaf {
public:
    using result_type = typename call_result<F>::type;

    explicit Leaf(F& f) noexcept : f_(f) {}

    Outcome<result_type> operator()(Context& ctx) const noexcept {
        return capture<result_type>([&]() -> decltype(auto) { return invoke_callable(f_, ctx); });
    }

private:
    F& f_;
};

[[noreturn]] BULWARK_NOINLINE inline void throw_null_callable() {
    throw_invalid_argument("bulwark: execute() was given a null callable");
}

BULWARK_NOINLINE inline std::exception_ptr null_callable_error() {
    return std::make_exception_ptr(
        std::invalid_argument("bulwark: try_execute() was given a null callable"));
}

// A probe "next" used to detect the policy concept at compile time.
struct probe_next {
    Outcome<int> operator()(Context&) const;
};

template <class P, class = void>
struct has_generic_apply : std::false_type {};
template <class P>
struct has_generic_apply<P, std::void_t<decltype(std::declval<P&>().apply(
                                std::declval<Context&>(), std::declval<probe_next&>()))>>
    : std::true_type {};

}  // namespace detail

template <class Derived>
class PolicyBase;

// True if P satisfies the policy concept (see above): it derives from PolicyBase<P> (policies
// for one result type, such as Fallback<T>, are recognised this way without instantiating
// their apply), or its apply accepts any `next`.
// (std::disjunction stops at the first true trait, so the probe is not instantiated for them.)
template <class P>
inline constexpr bool is_policy_v =
    std::disjunction<std::is_base_of<PolicyBase<std::remove_cv_t<std::remove_reference_t<P>>>,
                                     std::remove_cv_t<std::remove_reference_t<P>>>,
                     detail::has_generic_apply<std::remove_reference_t<P>>>::value;

// Gives a policy its user-facing entry points. Derived must provide apply(Context&, Next&&).
//   int v = policy.execute([] { return call(); });               // value, or throws the error
//   bulwark::Outcome<int> r = policy.try_execute([] { ... });    // never throws
//   policy.execute([](bulwark::Context& ctx) { ... }, ctx);      // with the caller's context
// Callables take () or (Context&) and may return any non-reference type, void and move-only
// types included. A null function pointer or empty std::function is rejected with
// std::invalid_argument (try_execute returns it as the error). Does not allocate.
template <class Derived>
class PolicyBase {
public:
    // The return types are deduced, not spelled, so that a callable of the wrong signature
    // stops at check<F>()'s sentence before anything else is instantiated.
    template <class F>
    auto execute(F&& f) {
        Context ctx;
        return execute(std::forward<F>(f), ctx);
    }

    template <class F>
    auto execute(F&& f, Context& ctx) {
        using Fn = std::remove_reference_t<F>;
        static_assert(check<Fn>());
        if constexpr (detail::is_valid_callable_v<Fn>) {
            return execute_valid(f, ctx);
        } else {
            return detail::invalid_call_result{};
        }
    }

    template <class F>
    auto try_execute(F&& f) noexcept {
        Context ctx;
        return try_execute(std::forward<F>(f), ctx);
    }

    template <class F>
    auto try_execute(F&& f, Context& ctx) noexcept {
        using Fn = std::remove_reference_t<F>;
        static_assert(check<Fn>());
        if constexpr (detail::is_valid_callable_v<Fn>) {
            return try_execute_valid(f, ctx);
        } else {
            return detail::invalid_call_result{};
        }
    }

private:
    // One sentence for each way a callable can be wrong; true so that the caller's own
    // static_assert never adds a second message.
    template <class Fn>
    static constexpr bool check() {
        static_assert(detail::call_result<Fn>::valid,
                      "bulwark: a callable passed to execute()/try_execute() must take no "
                      "arguments or a single bulwark::Context&.");
        static_assert(!std::is_reference<typename detail::call_result<Fn>::type>::value,
                      "bulwark: the callable returns a reference; policies return results by "
                      "value (return a pointer or std::reference_wrapper to share an object).");
        return true;
    }

    template <class Fn>
    auto execute_valid(Fn& f, Context& ctx) -> detail::call_result_t<Fn> {
        if (BULWARK_UNLIKELY(detail::is_null_callable(f))) {
            detail::throw_null_callable();
        }
        auto outcome = derived().apply(ctx, detail::Leaf<Fn>(f));
        if constexpr (std::is_void<detail::call_result_t<Fn>>::value) {
            outcome.rethrow_if_error();
        } else {
            return std::move(outcome).value();
        }
    }

    template <class Fn>
    auto try_execute_valid(Fn& f, Context& ctx) noexcept -> Outcome<detail::call_result_t<Fn>> {
        using R = detail::call_result_t<Fn>;
        try {
            if (BULWARK_UNLIKELY(detail::is_null_callable(f))) {
                return Outcome<R>::from_error(detail::null_callable_error());
            }
            return derived().apply(ctx, detail::Leaf<Fn>(f));
        } catch (...) {
            // A policy's own failure (an allocation in a listener, a throwing clock) still
            // becomes an outcome: try_execute never throws.
            return Outcome<R>::from_error(std::current_exception());
        }
    }

    Derived& derived() noexcept { return static_cast<Derived&>(*this); }
};

// The policy that does nothing: runs the call once and returns its outcome. Useful as a
// placeholder in a configurable pipeline and as the benchmark of pipeline overhead.
//   bulwark::pipeline(bulwark::Noop{}, breaker).execute(f);
// Thread-safe (stateless). Does not allocate.
class Noop : public PolicyBase<Noop> {
public:
    template <class Next>
    auto apply(Context& ctx, Next&& next) const {
        return std::forward<Next>(next)(ctx);
    }
};

}  // namespace bulwark

#endif  // BULWARK_POLICY_HPP

namespace bulwark {

namespace detail {

// Unique ids for breakers, so that a per-thread cache keyed by them never confuses a destroyed
// breaker with a new one at the same address.
inline std::uint64_t next_breaker_uid() noexcept {
    static std::atomic<std::uint64_t> last{0};
    // relaxed: only uniqueness matters.
    return last.fetch_add(1, std::memory_order_relaxed) + 1;
}

// Rejections must not allocate: each thread keeps the error it last built for each open period
// of a few breakers and hands out copies of it (an exception_ptr copy touches only this
// thread's error object, so rejecting threads do not contend). The entry is rebuilt when the
// time left in the break has changed, so that retry_after() is exact when it is handed out: on
// the coarse clock, at most once per tick (1-4 ms) per thread.
struct RejectionCacheEntry {
    std::uint64_t breaker = 0;
    std::uint64_t word = 0;
    Duration retry_after{0};
    std::exception_ptr error;
};
inline thread_local RejectionCacheEntry rejection_cache[8];

// Relaxed load + store: the stripe's single writer is this thread, so no locked instruction
// is needed (see thread_slot.hpp); readers only sum.
inline void bump(std::atomic<std::uint64_t>& counter, std::uint64_t n = 1) noexcept {
    counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

}  // namespace detail

// A circuit breaker: stops calling a dependency that keeps failing, and lets a few probes
// through after a break to find out when it has recovered.
//   bulwark::CircuitBreaker breaker("sms-provider", options);       // or (name, options, clock)
//   Receipt r = breaker.execute([&] { return sms.send(msg); });     // throws CircuitOpenError
//   auto permit = breaker.try_acquire();                             // two-step, for async code
//   if (permit) { ...; permit.record_success(); }
// It opens on failure_threshold consecutive failures, or when the failure (or slow-call) rate
// over its window reaches failure_ratio (slow_call_ratio) with at least minimum_calls in the
// window. After break_duration it admits half_open_calls probes: all succeed -> closed, one
// fails -> open again.
// Thread-safe. The closed path takes no lock, reads no clock (unless slow calls or call_timeout
// are tracked, or the window is a TimeWindow, which reads the coarse clock), and allocates
// nothing; the open path rejects without throwing (try_acquire/try_execute) or allocating
// (try_acquire never; try_execute after a thread's first rejection, except once per coarse-clock
// tick while open, to keep retry_after() exact). Transitions take a mutex. Results recorded
// after a transition (stale) count in the lifetime stats only; rejections by inner policies
// (other than timeouts) are neither successes nor failures (see CircuitBreakerOptions).
// CircuitBreaker is BasicCircuitBreaker<>: a class template only so that a translation unit
// compiles only the members it uses (the Tag is never used).
template <class Tag = void>
class BasicCircuitBreaker : public PolicyBase<BasicCircuitBreaker<Tag>> {
    // inner_rejection: an inner policy rejected the call (see CircuitBreakerOptions::classifier);
    // neither a success nor a failure for the rules.
    enum class Result : std::uint8_t { success, failure, ignored, inner_rejection };

public:
    // The right to make one call, from try_acquire(). Movable RAII: a permit destroyed without
    // a recorded result counts as a failure, so a probe slot can never leak.
    //   auto permit = breaker.try_acquire();
    //   if (!permit) return reject(permit.retry_after());
    //   permit.record(outcome, elapsed);     // or record_success() / record_failure()
    // Not thread-safe (one permit belongs to one call); moving it to another thread is fine.
    class [[nodiscard]] Permit {
    public:
        Permit() noexcept = default;
        Permit(Permit&& other) noexcept { take(other); }
        Permit& operator=(Permit&& other) noexcept {
            if (this != &other) {
                abandon();
                take(other);
            }
            return *this;
        }
        Permit(const Permit&) = delete;
        Permit& operator=(const Permit&) = delete;
        ~Permit() { abandon(); }

        explicit operator bool() const noexcept { return admitted_; }
        bool admitted() const noexcept { return admitted_; }
        // True while the call's result is still to be recorded.
        bool pending() const noexcept { return pending_; }
        // The state the breaker was in when it decided, and its generation then (the count of
        // transitions so far; StateChange::generation names the same numbers).
        CircuitState state() const noexcept { return state_of(word_); }
        std::uint64_t generation() const noexcept { return generation_of(word_); }
        // For a rejected permit: how long until the breaker may admit again (zero if unknown).
        Duration retry_after() const noexcept { return retry_after_; }
        // For a rejected permit: the CircuitOpenError that execute() would throw.
        std::exception_ptr rejection() const {
            return (breaker_ != nullptr && !admitted_)
                       ? breaker_->rejection_error(word_, retry_after_)
                       : nullptr;
        }

        void record_success() { finish(Result::success, measured()); }
        // Counts a failure whatever the breaker's classification says.
        void record_failure() { finish(Result::failure, measured()); }
        // Classifies the outcome with the breaker's options; `elapsed` decides slow and
        // call_timeout.
        template <class T>
        void record(const Outcome<T>& outcome, Duration elapsed) {
            check_pending();
            finish(breaker_->classify(outcome), elapsed);
        }
        // As above, measuring the elapsed time from try_acquire() when the breaker needs it.
        template <class T>
        void record(const Outcome<T>& outcome) {
            check_pending();
            finish(breaker_->classify(outcome), measured());
        }

    private:
        friend class BasicCircuitBreaker;

        explicit Permit(BasicCircuitBreaker* breaker) noexcept : breaker_(breaker) {}

        void take(Permit& other) noexcept {
            breaker_ = other.breaker_;
            word_ = other.word_;
            started_ = other.started_;
            retry_after_ = other.retry_after_;
            probe_ = other.probe_;
            admitted_ = other.admitted_;
            pending_ = other.pending_;
            other.pending_ = false;
        }

        void check_pending() const {
            if (!pending_) {
                detail::throw_logic_error(
                    admitted_ ? "CircuitBreaker::Permit: the result was already recorded"
                              : "CircuitBreaker::Permit: the call was rejected; there is no "
                                "result to record");
            }
        }

        Duration measured() const noexcept {
            return (breaker_ != nullptr && breaker_->timed_) ? breaker_->clock_->now() - started_
                                                             : Duration::zero();
        }

        void finish(Result result, Duration elapsed) {
            check_pending();
            pending_ = false;
            breaker_->on_result(word_, probe_, result, elapsed);
        }

        void abandon() noexcept {
            if (pending_) {
                pending_ = false;
                breaker_->on_result(word_, probe_, Result::failure, Duration::zero());
            }
        }

        BasicCircuitBreaker* breaker_ = nullptr;
        std::uint64_t word_ = 0;
        TimePoint started_{};
        Duration retry_after_{0};
        std::uint32_t probe_ = no_probe;
        bool admitted_ = false;
        bool pending_ = false;
    };

    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    explicit BasicCircuitBreaker(std::string name, CircuitBreakerOptions options = {})
        : BasicCircuitBreaker(std::move(name), std::move(options), default_clock()) {}

    // The clock must outlive the breaker. Throws std::invalid_argument for invalid options.
    BasicCircuitBreaker(std::string name, CircuitBreakerOptions options, Clock& clock)
        : name_(std::move(name)),
          source_(std::make_shared<const std::string>(name_)),
          options_((options.validate(), std::move(options))),
          clock_(&clock),
          uid_(detail::next_breaker_uid()),
          timed_(options_.slow_call_ratio > 0.0 || options_.call_timeout > Duration::zero()),
          time_window_(std::holds_alternative<TimeWindow>(options_.window)),
          has_result_predicates_(options_.classifier.has_result_predicates()),
          probes_(options_.half_open_calls) {
        if (time_window_) {
            const auto& tw = std::get<TimeWindow>(options_.window);
            bucket_width_ = tw.bucket;
            // ceil(length / bucket), without the sum that overflows for a length near max.
            bucket_count_ = static_cast<std::uint64_t>(tw.length / tw.bucket) +
                            (tw.length % tw.bucket != Duration::zero() ? 1 : 0);
            buckets_.assign(bucket_count_, Bucket{});
            origin_ = clock_->coarse_now_fast();
        }
        state_since_ = clock_->now();
    }

    BasicCircuitBreaker(const BasicCircuitBreaker&) = delete;
    BasicCircuitBreaker& operator=(const BasicCircuitBreaker&) = delete;

    const std::string& name() const noexcept { return name_; }
    const CircuitBreakerOptions& options() const noexcept { return options_; }
    Clock& clock() const noexcept { return *clock_; }

    // The current state. An open breaker whose break has ended reports half_open; the
    // transition itself (and its StateChange) happens at the next call.
    CircuitState state() const noexcept {
        const CircuitState s = state_of(word_.load(std::memory_order_acquire));
        if (s == CircuitState::open && break_over(clock_->coarse_now_fast())) {
            return CircuitState::half_open;
        }
        return s;
    }

    // Asks to make one call. Never throws, never blocks; allocates nothing except on a thread's
    // first call.
    Permit try_acquire() noexcept {
        Permit permit;
        permit.breaker_ = this;
        // acquire: pairs with the release in transition(), so an open state comes with its
        // open_until_ns_.
        const std::uint64_t w = word_.load(std::memory_order_acquire);
        if (BULWARK_LIKELY(state_of(w) == CircuitState::closed)) {
            admit(permit, w, no_probe);
            return permit;
        }
        return try_acquire_slow(std::move(permit), w);
    }

    // The policy concept (see policy.hpp): execute(f) and try_execute(f) come from PolicyBase.
    // A rejected call fails with CircuitOpenError without running.
    template <class Next>
    auto apply(Context& ctx, Next&& next) {
        using O = std::invoke_result_t<Next&, Context&>;
        // The closed, untimed path is spelled out so that it inlines into the caller: one load
        // of word_, the call, and a store to this thread's stripe.
        const std::uint64_t w = word_.load(std::memory_order_acquire);
        const bool fast = state_of(w) == CircuitState::closed && !timed_;
        // One named result, initialised from one of two prvalues and the only thing returned:
        // no Outcome is moved on either path (NRVO).
        O outcome = BULWARK_LIKELY(fast) ? next(ctx) : apply_guarded<O>(ctx, next, w);
        if (BULWARK_LIKELY(fast)) {
            // A value with no result predicate is a success without asking the classifier.
            record_untimed(w, no_probe,
                           BULWARK_LIKELY(outcome.has_value() && !has_result_predicates_)
                               ? Result::success
                               : classify(outcome));
        }
        return outcome;
    }

    // Forces the breaker open until reset(): every call is rejected.
    void trip() { manual_transition(CircuitState::forced_open); }
    // Closes the breaker and empties its windows (from any state).
    void reset() { manual_transition(CircuitState::closed); }
    // Admits every call and keeps counting, but never opens, until reset().
    void disable() { manual_transition(CircuitState::disabled); }

    // Listeners get every transition, after it happened, outside the breaker's lock (so they
    // may call back into the breaker). Returns the id that remove_listener() takes; throws
    // std::invalid_argument for an empty listener.
    ListenerId on_state_change(std::function<void(const StateChange&)> listener) {
        return state_changes_.add(std::move(listener));
    }
    // Stops calling a listener; false if the id is unknown here or already removed.
    bool remove_listener(ListenerId id) noexcept { return state_changes_.remove(id); }

    // A consistent snapshot. Takes the breaker's lock (not for the hot path).
    CircuitBreakerStats stats() const {
        const TimePoint now = clock_->now();
        detail::LockGuard lock(mutex_);
        CircuitBreakerStats s;
        const std::uint64_t w = word_.load(std::memory_order_relaxed);
        s.state = state_of(w);
        if (s.state == CircuitState::open) {
            const TimePoint coarse = clock_->coarse_now_fast();
            s.retry_after = break_over(coarse) ? Duration::zero() : open_until() - coarse;
            if (break_over(coarse)) {
                s.state = CircuitState::half_open;
            }
        }
        s.successes = stale_successes_;
        s.ignored = stale_ignored_;
        for (const Stripe& stripe : stripes_) {
            s.successes += stripe.successes.load(std::memory_order_relaxed);
            s.ignored += stripe.ignored.load(std::memory_order_relaxed);
            s.inner_rejections += stripe.inner_rejections.load(std::memory_order_relaxed);
            s.rejected += stripe.rejected.load(std::memory_order_relaxed);
        }
        s.failures = failures_;
        s.calls = s.successes + s.failures + s.ignored + s.inner_rejections;
        s.slow = slow_;
        s.timeouts = timeouts_;
        s.opened = opened_;
        s.expired_probes = expired_probes_;
        const WindowCounts wc = window_counts(clock_->coarse_now_fast());
        s.window_calls = wc.calls;
        s.window_failures = wc.failures;
        s.window_slow = wc.slow;
        if (wc.calls > 0) {
            s.failure_rate = static_cast<double>(wc.failures) / static_cast<double>(wc.calls);
            s.slow_call_rate = static_cast<double>(wc.slow) / static_cast<double>(wc.calls);
        }
        s.consecutive_failures = consecutive_failures_.load(std::memory_order_relaxed);
        s.time_in_state = now - state_since_;
        return s;
    }

private:
    // Every state but closed-and-untimed: a permit, the call, its result.
    template <class O, class Next>
    O apply_guarded(Context& ctx, Next& next, std::uint64_t w) {
        Permit permit = try_acquire_slow(Permit(this), w);
        if (!permit) {
            return O::from_error(rejection_error(permit.word_, permit.retry_after_));
        }
        O outcome = next(ctx);
        permit.finish(classify(outcome), permit.measured());
        return outcome;
    }

    BULWARK_NOINLINE Permit try_acquire_slow(Permit permit, std::uint64_t w) noexcept {
        switch (state_of(w)) {
            case CircuitState::closed:
            case CircuitState::disabled:
                admit(permit, w, no_probe);
                return permit;
            case CircuitState::open: {
                const TimePoint now = clock_->coarse_now_fast();
                if (!break_over(now)) {
                    reject(permit, w, open_until() - now);
                    return permit;
                }
                return acquire_slow(std::move(permit));
            }
            case CircuitState::forced_open:
                reject(permit, w, Duration::zero());
                return permit;
            case CircuitState::half_open:
                break;
        }
        return acquire_slow(std::move(permit));
    }

    static constexpr std::uint32_t no_probe = ~std::uint32_t{0};
    static constexpr std::uint32_t stripe_count = 32;
    static constexpr std::uint64_t no_epoch = ~std::uint64_t{0};

    // word_ packs the state (low 3 bits) and the generation (the rest): one load tells a call
    // both what to do and, at record time, whether anything happened in between.
    static CircuitState state_of(std::uint64_t word) noexcept {
        return static_cast<CircuitState>(word & 7U);
    }
    static std::uint64_t generation_of(std::uint64_t word) noexcept { return word >> 3U; }

    // Per-thread counters, each on its own cache line, written only by the thread that owns the
    // slot (see detail::thread_slot). The last stripe is shared by threads whose slot is past
    // the others; they update it with locked instructions.
    // successes and ignored count only results of the generation they were admitted in (stale
    // ones go to stale_successes_/stale_ignored_), because a count window sums them.
    struct alignas(detail::cache_line_size) Stripe {
        std::atomic<std::uint64_t> successes{0};
        std::atomic<std::uint64_t> ignored{0};
        std::atomic<std::uint64_t> inner_rejections{0};
        std::atomic<std::uint64_t> rejected{0};
        // TimeWindow only: the bucket this thread is counting into, and its count so far.
        std::atomic<std::uint64_t> epoch{no_epoch};
        std::atomic<std::uint64_t> bucket_calls{0};
        // Only the owner reads or writes it: the end of the bucket it counts into.
        TimePoint bucket_end{};
        // Guarded by mutex_: what the stripe had counted when the window was last emptied.
        std::uint64_t base_calls = 0;
        std::uint64_t base_epoch = no_epoch;
        std::uint64_t base_bucket_calls = 0;
    };

    struct Bucket {
        std::uint64_t epoch = no_epoch;
        std::uint64_t calls = 0;
        std::uint64_t failures = 0;
        std::uint64_t slow = 0;
    };

    struct WindowCounts {
        std::uint64_t calls = 0;
        std::uint64_t failures = 0;
        std::uint64_t slow = 0;
    };

    // A probe slot. Slots outlive half-open periods: a probe admitted in an earlier period that
    // has not reported yet keeps its slot, so that never more than half_open_calls probes are
    // in flight. A slot is freed when its permit records (or is destroyed), or when the probe
    // expires after half_open_max_wait.
    struct Probe {
        bool in_use = false;
        TimePoint started{};
        std::uint64_t word = 0;  // the permit's word: identifies the holder
    };

    // Transitions decided under the lock, emitted after it is released.
    struct Transitions {
        StateChange events[3];
        int count = 0;
    };

    Stripe& my_stripe(bool& owned) noexcept {
        const std::uint32_t slot = detail::thread_slot();
        owned = slot < stripe_count - 1;
        return stripes_[owned ? slot : stripe_count - 1];
    }

    static void count(Stripe& stripe, std::atomic<std::uint64_t> Stripe::*counter, bool owned) {
        if (owned) {
            detail::bump(stripe.*counter);
        } else {
            // relaxed: a shared statistics counter; decisions read it under the lock.
            (stripe.*counter).fetch_add(1, std::memory_order_relaxed);
        }
    }

    TimePoint open_until() const noexcept {
        // relaxed: written before the release store of word_ that published the open state,
        // and read after an acquire load of word_.
        return TimePoint{Duration{open_until_ns_.load(std::memory_order_relaxed)}};
    }
    bool break_over(TimePoint coarse_now) const noexcept { return coarse_now >= open_until(); }

    void admit(Permit& permit, std::uint64_t word, std::uint32_t probe) const {
        permit.word_ = word;
        permit.probe_ = probe;
        permit.admitted_ = true;
        permit.pending_ = true;
        if (timed_) {
            permit.started_ = clock_->now();
        }
    }

    void reject(Permit& permit, std::uint64_t word, Duration retry_after) noexcept {
        permit.word_ = word;
        permit.retry_after_ = std::max(retry_after, Duration::zero());
        // Two statements: as one call's arguments, `owned` could be read before my_stripe sets
        // it, which turned every rejection into a locked add.
        bool owned = false;
        Stripe& stripe = my_stripe(owned);
        count(stripe, &Stripe::rejected, owned);
    }

    template <class T>
    Result classify(const Outcome<T>& outcome) const {
        if (outcome.has_value()) {
            if constexpr (!std::is_void<T>::value) {
                if (has_result_predicates_ && options_.classifier.is_failure_result(*outcome)) {
                    return Result::failure;
                }
            }
            return Result::success;
        }
        return classify_error(outcome.error());
    }

    // Rejections by inner policies say nothing about the dependency, except a timeout. Telling
    // them apart costs one rethrow per exception (failures take the lock anyway).
    Result classify_error(const std::exception_ptr& error) const {
        try {
            std::rethrow_exception(error);
        } catch (const TimeoutError&) {
            // A real failure of the dependency: classified like any other exception.
        } catch (const RetryBudgetExhaustedError& e) {
            // Stands for the failure that the retry could not answer: that one decides.
            if (!counts_rejection(error)) {
                return e.last_error() ? classify_error(e.last_error()) : Result::inner_rejection;
            }
        } catch (const RejectedError&) {
            if (!counts_rejection(error)) {
                return Result::inner_rejection;
            }
        } catch (...) {
        }
        return options_.classifier.is_failure(error) ? Result::failure : Result::ignored;
    }

    bool counts_rejection(const std::exception_ptr& error) const {
        for (const ExceptionType& counted : options_.counted_rejections) {
            if (counted.matches(error)) {
                return true;
            }
        }
        return false;
    }

    // Records a call's result. The common case — a success in the closed (or disabled) state
    // of the same generation, untimed — touches only this thread's stripe.
    void on_result(std::uint64_t word, std::uint32_t probe, Result result, Duration elapsed) {
        if (BULWARK_LIKELY(!timed_)) {
            record_untimed(word, probe, result);
        } else {
            record_timed(word, probe, result, elapsed);
        }
    }

    BULWARK_ALWAYS_INLINE void record_untimed(std::uint64_t word, std::uint32_t probe,
                                              Result result) {
        if (BULWARK_LIKELY(result != Result::failure && state_of(word) != CircuitState::half_open &&
                           word == word_.load(std::memory_order_relaxed))) {
            record_fast(result);
            return;
        }
        record_slow(word, probe, result, false, false);
    }

    BULWARK_NOINLINE void record_timed(std::uint64_t word, std::uint32_t probe, Result result,
                                       Duration elapsed) {
        if (result == Result::inner_rejection) {
            // The inner policy's verdict, not the dependency's speed: never slow, never late.
            record_untimed(word, probe, result);
            return;
        }
        bool timed_out = false;
        if (options_.call_timeout > Duration::zero() && elapsed > options_.call_timeout) {
            result = Result::failure;
            timed_out = true;
        }
        const bool slow = options_.slow_call_ratio > 0.0 && elapsed >= options_.slow_call_duration;
        if (!slow && !timed_out) {
            record_untimed(word, probe, result);
        } else {
            record_slow(word, probe, result, slow, timed_out);
        }
    }

    BULWARK_ALWAYS_INLINE void record_fast(Result result) {
        bool owned = false;
        Stripe& stripe = my_stripe(owned);
        if (result == Result::inner_rejection) {
            // Neither window nor streak: only the statistics.
            count(stripe, &Stripe::inner_rejections, owned);
            return;
        }
        count(stripe, result == Result::success ? &Stripe::successes : &Stripe::ignored, owned);
        if (time_window_) {
            count_in_bucket(stripe, owned);
        }
        // Plain load first: no write (and no cache-line ping-pong) while there is nothing to
        // reset. relaxed: the streak is a heuristic; the rules re-read it under the lock.
        if (consecutive_failures_.load(std::memory_order_relaxed) != 0) {
            consecutive_failures_.store(0, std::memory_order_relaxed);
        }
    }

    void count_in_bucket(Stripe& stripe, bool owned) {
        const TimePoint now = clock_->coarse_now_fast();
        // The owner remembers where its bucket ends, so the common case needs no division.
        if (owned && now < stripe.bucket_end) {
            detail::bump(stripe.bucket_calls);
            return;
        }
        const std::uint64_t epoch = epoch_of(now);
        detail::LockGuard lock(mutex_);
        if (owned) {
            roll_stripe(stripe, epoch);
            // The bucket's start is at most now; its end saturates for a bucket near max.
            stripe.bucket_end = detail::saturating_add(
                origin_ + bucket_width_ * static_cast<std::int64_t>(epoch), bucket_width_);
        } else {
            bucket_for(epoch).calls += 1;
        }
    }

    std::uint64_t epoch_of(TimePoint coarse_now) const noexcept {
        const Duration since = coarse_now - origin_;
        return since <= Duration::zero() ? 0 : static_cast<std::uint64_t>(since / bucket_width_);
    }

    // Under mutex_. Moves the stripe's finished bucket into the shared ring and starts counting
    // `epoch` with this call.
    void roll_stripe(Stripe& stripe, std::uint64_t epoch) BULWARK_REQUIRES(mutex_) {
        flush_stripe(stripe);
        stripe.bucket_calls.store(1, std::memory_order_relaxed);
        // relaxed: readers of epoch/bucket_calls hold mutex_, which this thread holds too.
        stripe.epoch.store(epoch, std::memory_order_relaxed);
    }

    void flush_stripe(Stripe& stripe) BULWARK_REQUIRES(mutex_) {
        const std::uint64_t old_epoch = stripe.epoch.load(std::memory_order_relaxed);
        if (old_epoch == no_epoch) {
            return;
        }
        std::uint64_t calls = stripe.bucket_calls.load(std::memory_order_relaxed);
        if (stripe.base_epoch == old_epoch) {
            calls -= std::min(calls, stripe.base_bucket_calls);
        }
        stripe.base_epoch = no_epoch;
        stripe.base_bucket_calls = 0;
        if (calls > 0 && in_window(old_epoch, epoch_of(clock_->coarse_now_fast())) &&
            old_epoch >= reset_epoch_) {
            bucket_for(old_epoch).calls += calls;
        }
    }

    bool in_window(std::uint64_t epoch, std::uint64_t now_epoch) const noexcept {
        return epoch <= now_epoch && now_epoch - epoch < bucket_count_;
    }

    Bucket& bucket_for(std::uint64_t epoch) BULWARK_REQUIRES(mutex_) {
        Bucket& b = buckets_[epoch % bucket_count_];
        if (b.epoch != epoch) {
            b = Bucket{epoch, 0, 0, 0};
        }
        return b;
    }

    // Under mutex_.
    WindowCounts window_counts(TimePoint coarse_now) const BULWARK_REQUIRES(mutex_) {
        WindowCounts wc;
        if (!time_window_) {
            const std::uint64_t total = count_calls_since_reset();
            const std::uint64_t size = std::get<CountWindow>(options_.window).size;
            wc.calls = std::min(total, size);
            const std::uint64_t from = total > size ? total - size : 0;
            // A failure or slow call recorded as the n-th call of the generation is in the
            // window while n > total - size.
            wc.failures = static_cast<std::uint64_t>(
                failure_positions_.end() -
                std::upper_bound(failure_positions_.begin(), failure_positions_.end(), from));
            wc.slow = static_cast<std::uint64_t>(
                slow_positions_.end() -
                std::upper_bound(slow_positions_.begin(), slow_positions_.end(), from));
            return wc;
        }
        const std::uint64_t now_epoch = epoch_of(coarse_now);
        for (const Bucket& b : buckets_) {
            if (b.epoch != no_epoch && in_window(b.epoch, now_epoch) && b.epoch >= reset_epoch_) {
                wc.calls += b.calls;
                wc.failures += b.failures;
                wc.slow += b.slow;
            }
        }
        for (const Stripe& stripe : stripes_) {
            const std::uint64_t e = stripe.epoch.load(std::memory_order_relaxed);
            if (e == no_epoch || !in_window(e, now_epoch) || e < reset_epoch_) {
                continue;
            }
            std::uint64_t calls = stripe.bucket_calls.load(std::memory_order_relaxed);
            if (stripe.base_epoch == e) {
                calls -= std::min(calls, stripe.base_bucket_calls);
            }
            wc.calls += calls;
        }
        return wc;
    }

    // Under mutex_: calls recorded in the current generation of a count window.
    std::uint64_t count_calls_since_reset() const BULWARK_REQUIRES(mutex_) {
        std::uint64_t total = 0;
        for (const Stripe& stripe : stripes_) {
            const std::uint64_t now = stripe.successes.load(std::memory_order_relaxed) +
                                      stripe.ignored.load(std::memory_order_relaxed);
            total += now - std::min(now, stripe.base_calls);
        }
        return total + failures_since_reset_;
    }

    // Under mutex_: empties the window.
    void reset_window(TimePoint coarse_now) BULWARK_REQUIRES(mutex_) {
        consecutive_failures_.store(0, std::memory_order_relaxed);
        failures_since_reset_ = 0;
        failure_positions_.clear();
        slow_positions_.clear();
        if (time_window_) {
            reset_epoch_ = epoch_of(coarse_now);
            for (Bucket& b : buckets_) {
                b = Bucket{};
            }
        }
        for (Stripe& stripe : stripes_) {
            stripe.base_calls = stripe.successes.load(std::memory_order_relaxed) +
                                stripe.ignored.load(std::memory_order_relaxed);
            stripe.base_epoch = stripe.epoch.load(std::memory_order_relaxed);
            stripe.base_bucket_calls = stripe.bucket_calls.load(std::memory_order_relaxed);
        }
    }

    BULWARK_NOINLINE void record_slow(std::uint64_t word, std::uint32_t probe, Result result,
                                      bool slow, bool timed_out) {
        Transitions transitions;
        {
            detail::LockGuard lock(mutex_);
            if (probe != no_probe) {
                release_probe(probe, word);
            }
            bool owned = false;
            Stripe& stripe = my_stripe(owned);
            const std::uint64_t current = word_.load(std::memory_order_relaxed);
            if (result == Result::failure) {
                ++failures_;
                if (timed_out) {
                    ++timeouts_;
                }
            } else if (result == Result::inner_rejection) {
                count(stripe, &Stripe::inner_rejections, owned);
            } else if (current != word) {
                // Stale: in the totals only. The stripes' counters feed the count window.
                ++(result == Result::success ? stale_successes_ : stale_ignored_);
            } else {
                count(stripe, result == Result::success ? &Stripe::successes : &Stripe::ignored,
                      owned);
            }
            if (slow) {
                ++slow_;
            }
            if (current == word) {
                const TimePoint now = clock_->now();
                switch (state_of(word)) {
                    case CircuitState::closed:
                    case CircuitState::disabled:
                        if (result == Result::inner_rejection) {
                            break;
                        }
                        record_in_window(stripe, owned, result, slow);
                        if (state_of(word) == CircuitState::closed) {
                            evaluate(now, transitions);
                        }
                        break;
                    case CircuitState::half_open:
                        record_probe(result, slow, now, transitions);
                        break;
                    case CircuitState::open:
                    case CircuitState::forced_open:
                        break;
                }
            }
        }
        emit(transitions);
    }

    // Under mutex_.
    void record_in_window(Stripe& stripe, bool owned, Result result, bool slow)
        BULWARK_REQUIRES(mutex_) {
        if (result == Result::failure) {
            ++failures_since_reset_;
            consecutive_failures_.fetch_add(1, std::memory_order_relaxed);
        } else if (consecutive_failures_.load(std::memory_order_relaxed) != 0) {
            consecutive_failures_.store(0, std::memory_order_relaxed);
        }
        if (!time_window_) {
            const std::uint64_t position = count_calls_since_reset();
            const std::uint64_t size = std::get<CountWindow>(options_.window).size;
            if (result == Result::failure) {
                failure_positions_.push_back(position);
            }
            if (slow) {
                slow_positions_.push_back(position);
            }
            // Drop what left the window; both deques stay below `size` entries.
            const std::uint64_t from = position > size ? position - size : 0;
            while (!failure_positions_.empty() && failure_positions_.front() <= from) {
                failure_positions_.pop_front();
            }
            while (!slow_positions_.empty() && slow_positions_.front() <= from) {
                slow_positions_.pop_front();
            }
            return;
        }
        (void)stripe;
        (void)owned;
        Bucket& b = bucket_for(epoch_of(clock_->coarse_now_fast()));
        b.calls += 1;
        if (result == Result::failure) {
            b.failures += 1;
        }
        if (slow) {
            b.slow += 1;
        }
    }

    // Under mutex_, in the closed state, after a failure or a slow call was recorded.
    void evaluate(TimePoint now, Transitions& transitions) BULWARK_REQUIRES(mutex_) {
        if (options_.failure_threshold > 0 &&
            consecutive_failures_.load(std::memory_order_relaxed) >= options_.failure_threshold) {
            open_breaker(now, TransitionReason::consecutive_failures, transitions);
            return;
        }
        const WindowCounts wc = window_counts(clock_->coarse_now_fast());
        if (wc.calls < options_.minimum_calls) {
            return;
        }
        const auto calls = static_cast<double>(wc.calls);
        if (options_.failure_ratio > 0.0 &&
            static_cast<double>(wc.failures) >= options_.failure_ratio * calls) {
            open_breaker(now, TransitionReason::failure_rate, transitions);
        } else if (options_.slow_call_ratio > 0.0 &&
                   static_cast<double>(wc.slow) >= options_.slow_call_ratio * calls) {
            open_breaker(now, TransitionReason::slow_call_rate, transitions);
        }
    }

    // Under mutex_: frees the probe's slot unless the slot was taken from it (it expired).
    void release_probe(std::uint32_t probe, std::uint64_t word) BULWARK_REQUIRES(mutex_) {
        if (probe < probes_.size() && probes_[probe].in_use && probes_[probe].word == word) {
            probes_[probe] = Probe{};
        }
    }

    // Under mutex_, in the half-open state, for a probe of the current period.
    void record_probe(Result result, bool slow, TimePoint now, Transitions& transitions)
        BULWARK_REQUIRES(mutex_) {
        if (result == Result::failure || slow) {
            open_breaker(now, TransitionReason::probe_failed, transitions);
            return;
        }
        if (result == Result::inner_rejection) {
            // The probe never reached the dependency: it decides nothing, and its turn goes to
            // another call.
            --probes_admitted_;
            return;
        }
        if (++probes_succeeded_ >= options_.half_open_calls) {
            transition(CircuitState::closed, now, TransitionReason::probes_succeeded, transitions);
        }
    }

    // Under mutex_.
    void open_breaker(TimePoint now, TransitionReason reason, Transitions& transitions)
        BULWARK_REQUIRES(mutex_) {
        // A breaker opened from half-open has failed again without closing in between.
        const CircuitState from = state_of(word_.load(std::memory_order_relaxed));
        opens_in_row_ = from == CircuitState::half_open ? opens_in_row_ + 1 : 1;
        const Duration pause = options_.break_duration_backoff
                                   ? options_.break_duration_backoff->delay(opens_in_row_)
                                   : options_.break_duration;
        open_until_ns_.store(detail::saturating_add(now, pause).time_since_epoch().count(),
                             std::memory_order_relaxed);
        ++opened_;
        transition(CircuitState::open, now, reason, transitions);
    }

    // Under mutex_. Publishes the new state with a new generation.
    void transition(CircuitState to, TimePoint now, TransitionReason reason,
                    Transitions& transitions) BULWARK_REQUIRES(mutex_) {
        const std::uint64_t old_word = word_.load(std::memory_order_relaxed);
        const std::uint64_t new_word =
            ((generation_of(old_word) + 1) << 3U) | static_cast<std::uint64_t>(to);
        if (to == CircuitState::closed || to == CircuitState::disabled) {
            reset_window(clock_->coarse_now_fast());
        }
        if (to == CircuitState::half_open) {
            // Probes still in flight from earlier periods keep their slots (see Probe).
            probes_admitted_ = 0;
            probes_succeeded_ = 0;
        }
        state_since_ = now;
        // release: publishes open_until_ns_ and the reset window to threads that load word_.
        word_.store(new_word, std::memory_order_release);
        // A reset of a closed breaker starts a new generation (results of calls admitted before
        // it no longer count) but is not a change of state to report.
        if (state_of(old_word) != to && transitions.count < 3) {
            transitions.events[transitions.count++] =
                StateChange{name_, state_of(old_word), to, now, reason, generation_of(new_word)};
        }
    }

    BULWARK_NOINLINE Permit acquire_slow(Permit permit) {
        Transitions transitions;
        {
            detail::LockGuard lock(mutex_);
            const TimePoint now = clock_->now();
            std::uint64_t w = word_.load(std::memory_order_relaxed);
            if (state_of(w) == CircuitState::open && break_over(now)) {
                transition(CircuitState::half_open, now, TransitionReason::break_elapsed,
                           transitions);
                w = word_.load(std::memory_order_relaxed);
            }
            switch (state_of(w)) {
                case CircuitState::closed:
                case CircuitState::disabled:
                    admit(permit, w, no_probe);
                    break;
                case CircuitState::open:
                    reject(permit, w, open_until() - now);
                    break;
                case CircuitState::forced_open:
                    reject(permit, w, Duration::zero());
                    break;
                case CircuitState::half_open:
                    admit_probe(permit, w, now, transitions);
                    break;
            }
        }
        emit(transitions);
        return permit;
    }

    // Under mutex_.
    void admit_probe(Permit& permit, std::uint64_t w, TimePoint now, Transitions& transitions)
        BULWARK_REQUIRES(mutex_) {
        if (options_.half_open_max_wait > Duration::zero()) {
            bool expired_here = false;
            for (Probe& p : probes_) {
                if (p.in_use && now - p.started >= options_.half_open_max_wait) {
                    // Its permit may still report later; the freed slot no longer answers to it,
                    // and a new generation makes its result stale.
                    ++expired_probes_;
                    expired_here = expired_here || p.word == w;
                    p = Probe{};
                }
            }
            if (expired_here) {
                open_breaker(now, TransitionReason::probe_expired, transitions);
                reject(permit, word_.load(std::memory_order_relaxed), open_until() - now);
                return;
            }
        }
        if (probes_admitted_ >= options_.half_open_calls) {
            reject(permit, w, Duration::zero());
            return;
        }
        for (std::uint32_t index = 0; index < probes_.size(); ++index) {
            if (!probes_[index].in_use) {
                ++probes_admitted_;
                probes_[index] = Probe{true, now, w};
                admit(permit, w, index);
                return;
            }
        }
        // Every slot is held by a probe of an earlier period that has not reported yet.
        reject(permit, w, Duration::zero());
    }

    void manual_transition(CircuitState to) {
        Transitions transitions;
        {
            detail::LockGuard lock(mutex_);
            transition(to, clock_->now(), TransitionReason::manual, transitions);
        }
        emit(transitions);
    }

    void emit(const Transitions& transitions) const {
        for (int i = 0; i < transitions.count; ++i) {
            state_changes_.emit(transitions.events[i]);
        }
    }

    // The error a rejection carries, saying `retry_after` (the time left in the break, as the
    // rejection measured it): built once per thread, breaker, open period and retry_after, then
    // shared (see detail::rejection_cache).
    std::exception_ptr rejection_error(std::uint64_t word, Duration retry_after) const {
        detail::RejectionCacheEntry& entry =
            detail::rejection_cache[(uid_ * 31U + generation_of(word)) % 8U];
        if (BULWARK_LIKELY(entry.breaker == uid_ && entry.word == word &&
                           entry.retry_after == retry_after && entry.error)) {
            return entry.error;
        }
        entry.error = make_rejection_error(word, retry_after);
        entry.breaker = uid_;
        entry.word = word;
        entry.retry_after = retry_after;
        return entry.error;
    }

    BULWARK_NOINLINE std::exception_ptr make_rejection_error(std::uint64_t word,
                                                             Duration retry_after) const {
        std::string what = "circuit breaker '" + name_ + "' ";
        switch (state_of(word)) {
            case CircuitState::open:
                return std::make_exception_ptr(
                    CircuitOpenError(source_, what + "is open", retry_after, open_until()));
            case CircuitState::forced_open:
                return std::make_exception_ptr(CircuitOpenError(source_, what + "is forced open"));
            default:
                return std::make_exception_ptr(CircuitOpenError(
                    source_, what + "is half-open and all its probes are in flight"));
        }
    }

    const std::string name_;
    const std::shared_ptr<const std::string> source_;  // name_, shared by its rejection errors
    const CircuitBreakerOptions options_;
    Clock* const clock_;
    const std::uint64_t uid_;
    const bool timed_;
    const bool time_window_;
    const bool has_result_predicates_;
    Duration bucket_width_{1};
    std::uint64_t bucket_count_ = 1;
    TimePoint origin_{};

    // The hot words, on a line of their own: read by every call, written only on transitions.
    alignas(detail::cache_line_size) std::atomic<std::uint64_t> word_{
        static_cast<std::uint64_t>(CircuitState::closed)};
    std::atomic<std::int64_t> open_until_ns_{0};
    // Written by failures and by the first success after them.
    alignas(detail::cache_line_size) std::atomic<std::uint32_t> consecutive_failures_{0};
    Stripe stripes_[stripe_count];

    mutable detail::Mutex mutex_;
    std::uint64_t failures_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::uint64_t slow_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::uint64_t timeouts_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::uint64_t opened_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::uint64_t expired_probes_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::uint64_t stale_successes_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::uint64_t stale_ignored_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::uint32_t opens_in_row_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::uint64_t failures_since_reset_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::deque<std::uint64_t> failure_positions_ BULWARK_GUARDED_BY(mutex_);
    std::deque<std::uint64_t> slow_positions_ BULWARK_GUARDED_BY(mutex_);
    std::vector<Bucket> buckets_ BULWARK_GUARDED_BY(mutex_);
    std::uint64_t reset_epoch_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::vector<Probe> probes_ BULWARK_GUARDED_BY(mutex_);
    std::uint32_t probes_admitted_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::uint32_t probes_succeeded_ BULWARK_GUARDED_BY(mutex_) = 0;
    TimePoint state_since_ BULWARK_GUARDED_BY(mutex_){};

    Listeners<StateChange> state_changes_;
};

using CircuitBreaker = BasicCircuitBreaker<>;

}  // namespace bulwark

#endif  // BULWARK_CIRCUIT_BREAKER_HPP
// #include <bulwark/health_check.hpp>
// Health vocabulary: HealthStatus, check results and details, HealthCheck, and the HealthReport.
#ifndef BULWARK_HEALTH_CHECK_HPP
#define BULWARK_HEALTH_CHECK_HPP

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// #include <bulwark/detail/json.hpp>
// JsonWriter and its escaping and number helpers: the JSON the reports write (private).
#ifndef BULWARK_DETAIL_JSON_HPP
#define BULWARK_DETAIL_JSON_HPP

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>

// #include <bulwark/detail/math.hpp> (already included above)
// #include <bulwark/detail/number.hpp>
// Locale-independent number formatting (private).
#ifndef BULWARK_DETAIL_NUMBER_HPP
#define BULWARK_DETAIL_NUMBER_HPP

#include <string>

namespace bulwark {
namespace detail {

// `printed` as printf("%g") wrote it under the C locale in force, with its decimal separator (a
// ',' or a multi-byte one) replaced by '.': machine-read formats (JSON, Prometheus) need the
// point whatever locale the service runs under.
inline std::string with_decimal_point(const char* printed) {
    std::string out;
    bool in_separator = false;
    for (const char* c = printed; *c != '\0'; ++c) {
        const bool numeric = (*c >= '0' && *c <= '9') || *c == '-' || *c == '+' || *c == 'e';
        if (numeric) {
            out.push_back(*c);
            in_separator = false;
        } else if (!in_separator) {
            out.push_back('.');
            in_separator = true;
        }
    }
    return out;
}

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_NUMBER_HPP

namespace bulwark {
namespace detail {

// Appends `text` as a JSON string literal. Control characters (CR and LF among them) become
// escapes, so a message from a failing dependency can never break the document or a log line.
inline void json_string(std::string& out, std::string_view text) {
    out.push_back('"');
    for (char c : text) {
        switch (c) {
            case '"':
                out += "\\\"";
                break;
            case '\\':
                out += "\\\\";
                break;
            case '\n':
                out += "\\n";
                break;
            case '\r':
                out += "\\r";
                break;
            case '\t':
                out += "\\t";
                break;
            default:
                if (static_cast<unsigned char>(c) < 0x20 || c == '\x7f') {
                    char buffer[8];
                    std::snprintf(buffer, sizeof buffer, "\\u%04x",
                                  static_cast<unsigned>(static_cast<unsigned char>(c)));
                    out += buffer;
                } else {
                    out.push_back(c);
                }
        }
    }
    out.push_back('"');
}

// Appends a number; NaN and infinities (which JSON cannot express) become null.
inline void json_number(std::string& out, double value) {
    if (!detail::is_finite(value)) {
        out += "null";
        return;
    }
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%.15g", value);
    out += with_decimal_point(buffer);  // a decimal-comma locale must not break the document
}

inline void json_number(std::string& out, std::uint64_t value) {
    out += std::to_string(value);
}

// Writes one JSON document, compact (no whitespace): objects and arrays are opened and closed in
// order and the writer puts the commas and colons. Keys and strings are escaped (json_string),
// numbers written as json_number writes them.
//   JsonWriter w;
//   w.begin_object().field("status", "up").key("checks").begin_array();
//   w.begin_object().field("name", name).field("runs", runs).end_object();
//   w.end_array().end_object();
//   std::string json = w.take();
// A value goes where a value may stand: after key(), as an array element, or as the document.
// Nothing checks that scopes are closed in order: the callers are the library's report types.
// Not thread-safe (a local value).
class JsonWriter {
public:
    JsonWriter& begin_object() {
        separate();
        out_.push_back('{');
        first_ = true;
        return *this;
    }
    JsonWriter& end_object() {
        out_.push_back('}');
        first_ = false;  // the enclosing scope now holds this object
        return *this;
    }
    JsonWriter& begin_array() {
        separate();
        out_.push_back('[');
        first_ = true;
        return *this;
    }
    JsonWriter& end_array() {
        out_.push_back(']');
        first_ = false;
        return *this;
    }

    // An object member's name; its value comes next.
    JsonWriter& key(std::string_view name) {
        separate();
        json_string(out_, name);
        out_.push_back(':');
        after_key_ = true;
        return *this;
    }

    JsonWriter& value(std::string_view text) {
        separate();
        json_string(out_, text);
        return *this;
    }
    JsonWriter& value(const char* text) { return value(std::string_view(text)); }
    JsonWriter& value(const std::string& text) { return value(std::string_view(text)); }
    // NaN and infinities are written null.
    JsonWriter& value(double number) {
        separate();
        json_number(out_, number);
        return *this;
    }
    JsonWriter& value(std::uint64_t number) {
        separate();
        json_number(out_, number);
        return *this;
    }
    JsonWriter& value(bool flag) {
        separate();
        out_ += flag ? "true" : "false";
        return *this;
    }
    JsonWriter& null() {
        separate();
        out_ += "null";
        return *this;
    }

    // key(name).value(v).
    template <class T>
    JsonWriter& field(std::string_view name, const T& v) {
        return key(name).value(v);
    }

    const std::string& str() const noexcept { return out_; }
    std::string take() noexcept { return std::move(out_); }

private:
    // Before a key or a value: a comma unless it is the first in its scope or a key's value.
    void separate() {
        if (after_key_) {
            after_key_ = false;
            return;
        }
        if (!first_) {
            out_.push_back(',');
        }
        first_ = false;
    }

    std::string out_;
    bool first_ = true;       // nothing written yet in the innermost open scope
    bool after_key_ = false;  // the next value is a member's
};

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_JSON_HPP
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/detail/traits.hpp> (already included above)
// #include <bulwark/time.hpp> (already included above)

namespace bulwark {

// What a health check found. unknown: it has not run yet.
enum class HealthStatus : std::uint8_t { unknown, healthy, degraded, unhealthy };

inline const char* to_string(HealthStatus status) noexcept {
    switch (status) {
        case HealthStatus::unknown:
            return "unknown";
        case HealthStatus::healthy:
            return "healthy";
        case HealthStatus::degraded:
            return "degraded";
        case HealthStatus::unhealthy:
            return "unhealthy";
    }
    return "unknown";
}

// Key-value details of a check result, in the order added: r.details["lag_s"] = "4".
// A small flat list rather than a std::map: results hold a handful of entries and are copied
// into history and reports.
class HealthDetails {
public:
    using value_type = std::pair<std::string, std::string>;

    // The value for `key`, added (empty) if missing.
    std::string& operator[](std::string_view key) {
        for (value_type& entry : entries_) {
            if (entry.first == key) {
                return entry.second;
            }
        }
        entries_.emplace_back(std::string(key), std::string());
        return entries_.back().second;
    }

    // The value for `key`; throws std::out_of_range if missing.
    const std::string& at(std::string_view key) const {
        for (const value_type& entry : entries_) {
            if (entry.first == key) {
                return entry.second;
            }
        }
        throw std::out_of_range("HealthDetails: no detail named '" + std::string(key) + "'");
    }

    bool contains(std::string_view key) const noexcept {
        for (const value_type& entry : entries_) {
            if (entry.first == key) {
                return true;
            }
        }
        return false;
    }

    std::size_t size() const noexcept { return entries_.size(); }
    bool empty() const noexcept { return entries_.empty(); }
    std::vector<value_type>::const_iterator begin() const noexcept { return entries_.begin(); }
    std::vector<value_type>::const_iterator end() const noexcept { return entries_.end(); }

private:
    std::vector<value_type> entries_;
};

// One run of one check. A check function may return a whole result (status, message, details);
// the monitor fills in the rest (name, critical, previous, checked_at, response_time, timed_out).
struct HealthCheckResult {
    std::string name;
    HealthStatus status = HealthStatus::unknown;
    HealthStatus previous = HealthStatus::unknown;  // the check's status before this run
    std::string message;
    HealthDetails details;
    bool critical = false;
    bool timed_out = false;    // the run overran its timeout (or was still running when due)
    TimePoint checked_at{};    // when the result was taken, on the monitor's clock
    Duration response_time{};  // how long the check ran (its timeout, if it overran)

    static HealthCheckResult healthy(std::string message = {}) {
        return make(HealthStatus::healthy, std::move(message));
    }
    static HealthCheckResult degraded(std::string message) {
        return make(HealthStatus::degraded, std::move(message));
    }
    static HealthCheckResult unhealthy(std::string message) {
        return make(HealthStatus::unhealthy, std::move(message));
    }

private:
    static HealthCheckResult make(HealthStatus status, std::string message) {
        HealthCheckResult r;
        r.status = status;
        r.message = std::move(message);
        return r;
    }
};

// The function of a check: any callable taking nothing and returning bool (true = healthy),
// HealthStatus, or HealthCheckResult. An exception it throws makes the run unhealthy, with the
// exception's message.
class HealthProbe {
public:
    HealthProbe() = default;

    template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, HealthProbe>>>
    HealthProbe(F f)  // NOLINT(google-explicit-constructor): {"db", [] { ... }} must read well
        : fn_(wrap(std::move(f))) {}

    explicit operator bool() const noexcept { return static_cast<bool>(fn_); }

    HealthCheckResult operator()() const { return fn_(); }

private:
    template <class F>
    static std::function<HealthCheckResult()> wrap(F f) {
        static_assert(std::is_invocable_v<F&>, "a health check must be callable with no arguments");
        using R = std::decay_t<std::invoke_result_t<F&>>;
        static_assert(std::is_same_v<R, bool> || std::is_same_v<R, HealthStatus> ||
                          std::is_same_v<R, HealthCheckResult>,
                      "a health check must return bool, bulwark::HealthStatus or "
                      "bulwark::HealthCheckResult");
        if (detail::is_null_callable(f)) {
            return {};
        }
        return [f = std::move(f)]() mutable -> HealthCheckResult {
            if constexpr (std::is_same_v<R, bool>) {
                return f() ? HealthCheckResult::healthy()
                           : HealthCheckResult::unhealthy("the check returned false");
            } else if constexpr (std::is_same_v<R, HealthStatus>) {
                HealthCheckResult r;
                r.status = f();
                return r;
            } else {
                return f();
            }
        };
    }

    std::function<HealthCheckResult()> fn_;
};

// A named, periodic check.
//   monitor.add_check({"database", [] { return db.ping(); }, /*interval*/ 60s, /*timeout*/ 10s,
//                      /*critical*/ true});
struct HealthCheck {
    std::string name;   // unique within a monitor; required
    HealthProbe probe;  // required
    // How often it runs. > 0. Default 30 s.
    Duration interval = std::chrono::seconds(30);
    // A run that takes longer is reported unhealthy ("timed out") and never blocks other checks
    // or stop(). 0: no timeout, and the check runs on the scheduling thread itself: only for
    // checks that cannot block (a breaker's state, a counter). >= 0. Default 10 s.
    Duration timeout = std::chrono::seconds(10);
    // An unhealthy critical check makes the whole service unhealthy (and not ready); an
    // unhealthy non-critical one makes it degraded. Default false.
    bool critical = false;
    // Results kept per check, oldest dropped first. >= 1. Default 32.
    std::size_t history = 32;

    void validate() const {
        if (name.empty()) {
            detail::throw_invalid_argument("HealthCheck.name must not be empty");
        }
        if (!probe) {
            detail::throw_invalid_argument("HealthCheck.probe of '" + name +
                                           "' is empty: give it a callable");
        }
        if (interval <= Duration::zero()) {
            detail::throw_invalid_option("HealthCheck.interval", "must be > 0",
                                         detail::format_duration(interval));
        }
        if (timeout < Duration::zero()) {
            detail::throw_invalid_option("HealthCheck.timeout", "must be >= 0",
                                         detail::format_duration(timeout));
        }
        if (history == 0) {
            detail::throw_invalid_option("HealthCheck.history", "must be >= 1", "0");
        }
    }
};

struct HealthMonitorOptions {
    // Threads that run checks with a timeout, created when needed and reused. A check that
    // overruns keeps its thread until it returns (C++ cannot stop it), so this also bounds the
    // threads that can pile up behind stuck checks: when all are busy, a due check is reported
    // unhealthy without running. A check never runs twice at once, so more threads than checks
    // are never used. >= 1. Default 4.
    std::size_t max_check_threads = 4;

    void validate() const {
        if (max_check_threads == 0) {
            detail::throw_invalid_option("HealthMonitorOptions.max_check_threads", "must be >= 1",
                                         "0");
        }
    }
};

// The overall status changed.
struct HealthStatusChange {
    HealthStatus from = HealthStatus::unknown;
    HealthStatus to = HealthStatus::unknown;
    TimePoint at{};
};

// One check in a report: its latest result and counts.
struct HealthCheckSummary {
    HealthCheckResult last;  // status unknown until the first run
    Duration interval{};
    Duration timeout{};
    std::uint64_t runs = 0;
    std::uint64_t failures = 0;      // unhealthy results, timeouts included
    std::uint64_t timeouts = 0;      // runs that overran their timeout
    std::uint64_t late_results = 0;  // results that came back after their run was reported
    std::uint32_t consecutive_failures = 0;
    bool running = false;  // a run is in flight (possibly stuck past its timeout)
};

// A snapshot of a monitor, rendered for the three usual endpoints:
//   /health/live   liveness_json():  the process is up (always true while it can answer)
//   /health/ready  readiness_json(): every critical check is healthy or degraded
//   /health        to_json():        every check in detail
struct HealthReport {
    HealthStatus status = HealthStatus::unknown;
    bool ready = false;
    TimePoint at{};
    std::vector<HealthCheckSummary> checks;

    // 200 when ready, else 503: the code a readiness endpoint answers with.
    int http_status() const noexcept { return ready ? 200 : 503; }

    // A member like readiness_json(), though liveness does not depend on the report.
    // NOLINTNEXTLINE(readability-convert-member-functions-to-static)
    std::string liveness_json() const { return R"({"status":"up"})"; }

    std::string readiness_json() const {
        detail::JsonWriter w;
        w.begin_object().field("status", ready ? "ready" : "not_ready");
        w.key("checks").begin_array();
        for (const HealthCheckSummary& c : checks) {
            if (c.last.critical) {
                w.begin_object();
                w.field("name", c.last.name).field("status", to_string(c.last.status));
                w.end_object();
            }
        }
        w.end_array().end_object();
        return w.take();
    }

    std::string to_json() const {
        detail::JsonWriter w;
        w.begin_object().field("status", to_string(status));
        w.field("live", true).field("ready", ready);
        w.key("checks").begin_array();
        for (const HealthCheckSummary& c : checks) {
            write_check(w, c);
        }
        w.end_array().end_object();
        return w.take();
    }

private:
    static double millis(Duration d) noexcept {
        return std::chrono::duration<double, std::milli>(d).count();
    }

    void write_check(detail::JsonWriter& w, const HealthCheckSummary& c) const {
        const HealthCheckResult& r = c.last;
        const bool ran = r.status != HealthStatus::unknown;
        w.begin_object();
        w.field("name", r.name).field("status", to_string(r.status));
        w.field("critical", r.critical).field("message", r.message);
        if (ran) {
            w.field("response_time_ms", millis(r.response_time));
            w.field("age_ms", millis(at - r.checked_at));
        } else {
            w.key("response_time_ms").null().key("age_ms").null();
        }
        w.field("timed_out", r.timed_out).field("running", c.running);
        w.field("runs", c.runs).field("failures", c.failures).field("timeouts", c.timeouts);
        w.field("consecutive_failures", std::uint64_t{c.consecutive_failures});
        w.key("details").begin_object();
        for (const auto& [key, value] : r.details) {
            w.field(key, value);
        }
        w.end_object();
        w.end_object();
    }
};

}  // namespace bulwark

#endif  // BULWARK_HEALTH_CHECK_HPP

namespace bulwark {

// A check that reports `breaker`'s state: closed or disabled -> healthy, half_open -> degraded,
// open or forced_open -> unhealthy, with the state in the details. It reads one atomic, so it
// runs inline (timeout zero). The breaker must outlive whatever runs the check.
//   monitor.add_check(bulwark::breaker_health_check(breaker));   // what add_breaker(breaker) does
inline HealthCheck breaker_health_check(const CircuitBreaker& breaker, bool critical = false,
                                        Duration interval = std::chrono::seconds(1)) {
    HealthCheck check;
    check.name = breaker.name();
    check.probe = [b = &breaker] {
        const CircuitState state = b->state();
        HealthCheckResult r;
        switch (state) {
            case CircuitState::closed:
            case CircuitState::disabled:
                r.status = HealthStatus::healthy;
                break;
            case CircuitState::half_open:
                r.status = HealthStatus::degraded;
                r.message = "circuit half-open: probing";
                break;
            case CircuitState::open:
            case CircuitState::forced_open:
                r.status = HealthStatus::unhealthy;
                r.message = std::string("circuit ") + to_string(state);
                break;
        }
        r.details["state"] = to_string(state);
        return r;
    };
    check.interval = interval;
    check.timeout = Duration::zero();
    check.critical = critical;
    return check;
}

}  // namespace bulwark

#endif  // BULWARK_BREAKER_HEALTH_HPP
// #include <bulwark/circuit_breaker_registry.hpp>
// CircuitBreakerRegistry: named breakers with shared defaults, enumerable for health and metrics.
#ifndef BULWARK_CIRCUIT_BREAKER_REGISTRY_HPP
#define BULWARK_CIRCUIT_BREAKER_REGISTRY_HPP

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// #include <bulwark/circuit_breaker.hpp> (already included above)
// #include <bulwark/clock.hpp> (already included above)
// #include <bulwark/detail/mutex.hpp> (already included above)
// #include <bulwark/events.hpp> (already included above)

namespace bulwark {

// Named breakers with shared defaults, created on first use and kept for the registry's life
// (references stay valid), enumerable for health checks and metrics.
//   bulwark::CircuitBreakerRegistry registry(defaults);
//   auto& email = registry.get("email");            // created with the defaults
//   auto& sms = registry.get("sms", sms_options);   // options apply when it is created
//   registry.for_each([](bulwark::CircuitBreaker& b) { report(b.name(), b.stats()); });
// Thread-safe: lookups of existing breakers take a shared lock.
// CircuitBreakerRegistry is BasicCircuitBreakerRegistry<>: a class template only so that its
// code is compiled where it is used (the umbrella stays cheap); use the alias.
template <class Tag = void>
class BasicCircuitBreakerRegistry {
public:
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    explicit BasicCircuitBreakerRegistry(CircuitBreakerOptions defaults = {})
        : BasicCircuitBreakerRegistry(std::move(defaults), default_clock()) {}

    // Throws std::invalid_argument for invalid defaults. The clock must outlive the registry.
    BasicCircuitBreakerRegistry(CircuitBreakerOptions defaults, Clock& clock)
        : defaults_((defaults.validate(), std::move(defaults))), clock_(&clock) {}

    BasicCircuitBreakerRegistry(const BasicCircuitBreakerRegistry&) = delete;
    BasicCircuitBreakerRegistry& operator=(const BasicCircuitBreakerRegistry&) = delete;

    // The breaker named `name`, created with the registry's defaults if new.
    CircuitBreaker& get(const std::string& name) { return get(name, defaults_); }

    // The breaker named `name`, created with `options` if new (an existing breaker keeps the
    // options it was created with). Throws std::invalid_argument for an empty name or invalid
    // options.
    CircuitBreaker& get(const std::string& name, const CircuitBreakerOptions& options) {
        if (name.empty()) {
            detail::throw_invalid_argument("CircuitBreakerRegistry::get: the name is empty");
        }
        {
            detail::SharedLock lock(mutex_);
            auto it = breakers_.find(name);
            if (it != breakers_.end()) {
                return *it->second;
            }
        }
        detail::LockGuard lock(mutex_);
        auto it = breakers_.find(name);
        if (it != breakers_.end()) {
            return *it->second;
        }
        auto breaker = std::make_unique<CircuitBreaker>(name, options, *clock_);
        // The registry's listeners hear every breaker through one forwarder per breaker, so
        // that one id removes a listener from all of them.
        breaker->on_state_change([this](const StateChange& c) { listeners_.emit(c); });
        CircuitBreaker& ref = *breaker;
        breakers_.emplace(name, std::move(breaker));
        return ref;
    }

    // The breaker named `name`, or nullptr.
    CircuitBreaker* find(const std::string& name) const {
        detail::SharedLock lock(mutex_);
        auto it = breakers_.find(name);
        return it == breakers_.end() ? nullptr : it->second.get();
    }

    // Calls f(CircuitBreaker&) for each breaker, in name order. Do not create breakers from f.
    template <class F>
    void for_each(F&& f) const {
        detail::SharedLock lock(mutex_);
        for (const auto& entry : breakers_) {
            f(*entry.second);
        }
    }

    std::vector<std::string> names() const {
        detail::SharedLock lock(mutex_);
        std::vector<std::string> out;
        out.reserve(breakers_.size());
        for (const auto& entry : breakers_) {
            out.push_back(entry.first);
        }
        return out;
    }

    std::size_t size() const {
        detail::SharedLock lock(mutex_);
        return breakers_.size();
    }

    // A listener for every breaker's transitions, existing and future (StateChange::breaker
    // says which). Returns the id that remove_listener() takes; throws std::invalid_argument for
    // an empty listener.
    ListenerId on_state_change(std::function<void(const StateChange&)> listener) {
        if (!listener) {
            detail::throw_invalid_argument(
                "CircuitBreakerRegistry::on_state_change: the listener is empty");
        }
        return listeners_.add(std::move(listener));
    }
    // Stops calling a listener added by on_state_change(), for every breaker; false if the id is
    // unknown here or already removed.
    bool remove_listener(ListenerId id) noexcept { return listeners_.remove(id); }

    const CircuitBreakerOptions& defaults() const noexcept { return defaults_; }

private:
    const CircuitBreakerOptions defaults_;
    Clock* const clock_;
    // Declared before the breakers, whose forwarders use it: destroyed after them.
    Listeners<StateChange> listeners_;
    mutable detail::SharedMutex mutex_;
    std::map<std::string, std::unique_ptr<CircuitBreaker>, std::less<>> breakers_
        BULWARK_GUARDED_BY(mutex_);
};

using CircuitBreakerRegistry = BasicCircuitBreakerRegistry<>;

}  // namespace bulwark

#endif  // BULWARK_CIRCUIT_BREAKER_REGISTRY_HPP
// #include <bulwark/dead_letter.hpp>
// Dead letters: the vocabulary, the in-memory store and (on POSIX) the durable file store.
#ifndef BULWARK_DEAD_LETTER_HPP
#define BULWARK_DEAD_LETTER_HPP

// #include <bulwark/dead_letter_store.hpp>
// Dead-letter vocabulary: DeadLetter, queries, statistics, errors and the store interface.
#ifndef BULWARK_DEAD_LETTER_STORE_HPP
#define BULWARK_DEAD_LETTER_STORE_HPP

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <mutex>
#include <new>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

// #include <bulwark/config.hpp> (already included above)
// #include <bulwark/context.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/errors.hpp> (already included above)
// #include <bulwark/time.hpp> (already included above)

namespace bulwark {

// Where a dead letter is in its life. pending: waiting for a decision (reprocess or dismiss);
// reprocessed: a reprocess handler resent it; dismissed: someone decided not to resend it.
// Only pending records are ever handed to a reprocess handler or dismissed; the other two are
// final and are the first to be evicted when a store is full.
enum class DeadLetterStatus : std::uint8_t { pending, reprocessed, dismissed };

inline constexpr std::size_t dead_letter_status_count = 3;

inline const char* to_string(DeadLetterStatus status) noexcept {
    switch (status) {
        case DeadLetterStatus::pending:
            return "pending";
        case DeadLetterStatus::reprocessed:
            return "reprocessed";
        case DeadLetterStatus::dismissed:
            return "dismissed";
    }
    return "unknown";
}

// Why a message was dead-lettered, in the brokers' vocabulary (RabbitMQ's x-death reason, SQS's
// redrive): the producer sets it; the store only counts it.
enum class DeadLetterReason : std::uint8_t {
    retries_exhausted,  // every retry failed (the default)
    not_retryable,      // the failure was classified permanent: retrying cannot help
    rejected,           // the consumer or the dependency refused the message outright
    expired,            // its time to live or deadline passed before it was delivered
    delivery_limit,     // it was received or redriven too many times (SQS maxReceiveCount)
    manual,             // an operator or a tool put it here
};

inline constexpr std::size_t dead_letter_reason_count = 6;

inline const char* to_string(DeadLetterReason reason) noexcept {
    switch (reason) {
        case DeadLetterReason::retries_exhausted:
            return "retries_exhausted";
        case DeadLetterReason::not_retryable:
            return "not_retryable";
        case DeadLetterReason::rejected:
            return "rejected";
        case DeadLetterReason::expired:
            return "expired";
        case DeadLetterReason::delivery_limit:
            return "delivery_limit";
        case DeadLetterReason::manual:
            return "manual";
    }
    return "unknown";
}

// One delivery attempt in a dead letter's history: when, over which channel, and what went
// wrong (empty when it succeeded). The producer records its attempts before dead-lettering; each
// reprocess appends one more.
struct DeadLetterAttempt {
    WallTime at{};
    std::string channel;
    std::string error;
};

// A message that could not be delivered, with what is needed to decide about it and resend it.
//   bulwark::DeadLetter d;  d.type = "sms";  d.payload = bytes;  d.error = "provider 503";
//   std::string id = store.add(d);
// A plain value (thread-compatible). The producer fills it; add() assigns an empty id, sets a
// zero created / last_attempt and makes it pending; after add() only the store changes status,
// category, tags, attempts, redrives and note.
struct DeadLetter {
    // Unique within a store. Empty = the store assigns one ("dl-" + 16 hex digits). A producer
    // that may retry an add (after a crash, say) sets its own id so that the retry is a no-op.
    std::string id;
    // What kind of message this is ("sms", "email", "order-created"); queries and stats group by
    // it.
    std::string type;
    // The message itself: arbitrary bytes (NULs included), at most the store's max_payload_bytes.
    std::string payload;
    // The last failure, as text.
    std::string error;
    DeadLetterReason reason = DeadLetterReason::retries_exhausted;
    // A triage label set by categorize() ("provider-outage"); empty = uncategorized.
    std::string category;
    // Free labels; categorize() adds to them without duplicating.
    std::vector<std::string> tags;
    // Delivery history, oldest first; a store keeps the newest max_attempts entries.
    std::vector<DeadLetterAttempt> attempts;
    // When the message was first dead-lettered, in wall-clock time (it is stored, and must mean
    // the same after a restart or on another host). The zero WallTime = add() sets it from the
    // store's clock (Clock::wall_now()). Retention (purge) counts from it, however often the
    // record is redriven.
    WallTime created{};
    // The latest attempt. The zero WallTime = add() takes the newest attempt's time, if any.
    WallTime last_attempt{};
    // add() always stores pending; then only the store changes it.
    DeadLetterStatus status = DeadLetterStatus::pending;
    // How many times reprocess() handed it to a handler (successfully or not).
    std::uint32_t redrives = 0;
    // Why it was dismissed (the note given to dismiss()).
    std::string note;
};

// Selects dead letters: every filter set must hold (AND); an unset filter matches everything.
//   store.list(bulwark::DeadLetterQuery{}.type("sms").status(bulwark::DeadLetterStatus::pending)
//                  .limit(100));
// Setters chain on a named query (returning a reference) and on a temporary (returning a copy,
// so that `const auto& q = DeadLetterQuery{}.type("sms");` does not dangle). Operations take
// matches in the order they were added. A plain value (thread-compatible).
class DeadLetterQuery {
public:
    static constexpr std::size_t no_limit = std::numeric_limits<std::size_t>::max();

    // Exactly this id (a store finds it without scanning).
    DeadLetterQuery& id(std::string value) & { return set(id_, has_id, std::move(value)); }
    DeadLetterQuery id(std::string value) && { return std::move(id(std::move(value))); }
    DeadLetterQuery& type(std::string value) & { return set(type_, has_type, std::move(value)); }
    DeadLetterQuery type(std::string value) && { return std::move(type(std::move(value))); }
    DeadLetterQuery& status(DeadLetterStatus value) & { return set(status_, value); }
    DeadLetterQuery status(DeadLetterStatus value) && { return std::move(set(status_, value)); }
    DeadLetterQuery& reason(DeadLetterReason value) & { return set(reason_, value); }
    DeadLetterQuery reason(DeadLetterReason value) && { return std::move(set(reason_, value)); }
    // Exactly this category; category("") selects the uncategorized.
    DeadLetterQuery& category(std::string value) & {
        return set(category_, has_category, std::move(value));
    }
    DeadLetterQuery category(std::string value) && { return std::move(category(std::move(value))); }
    // Records that carry this tag; called again, records that carry all the tags given.
    DeadLetterQuery& tag(std::string value) & {
        tags_.push_back(std::move(value));
        return *this;
    }
    DeadLetterQuery tag(std::string value) && { return std::move(tag(std::move(value))); }
    // created < t (strictly).
    DeadLetterQuery& created_before(WallTime t) & { return set(created_before_, t); }
    DeadLetterQuery created_before(WallTime t) && { return std::move(set(created_before_, t)); }
    // created > t (strictly).
    DeadLetterQuery& created_after(WallTime t) & { return set(created_after_, t); }
    DeadLetterQuery created_after(WallTime t) && { return std::move(set(created_after_, t)); }
    // At most n records (list returns, dismiss dismisses, reprocess hands to its handler…).
    // Default: no limit. limit(0) selects nothing.
    DeadLetterQuery& limit(std::size_t n) & {
        limit_ = n;
        return *this;
    }
    DeadLetterQuery limit(std::size_t n) && { return std::move(limit(n)); }

    // Whether `d` passes every filter (the limit aside).
    bool matches(const DeadLetter& d) const {
        if ((has(has_id) && d.id != id_) || (has(has_type) && d.type != type_) ||
            (status_ && d.status != *status_) || (reason_ && d.reason != *reason_) ||
            (has(has_category) && d.category != category_) ||
            (created_before_ && !(d.created < *created_before_)) ||
            (created_after_ && !(d.created > *created_after_))) {
            return false;
        }
        for (const std::string& wanted : tags_) {
            bool found = false;
            for (const std::string& t : d.tags) {
                if (t == wanted) {
                    found = true;
                    break;
                }
            }
            if (!found) {
                return false;
            }
        }
        return true;
    }

    // For stores: the id filter (a direct lookup instead of a scan) and the limit.
    const std::string* id_filter() const noexcept { return has(has_id) ? &id_ : nullptr; }
    std::size_t max_results() const noexcept { return limit_; }

private:
    // The string filters are plain strings plus a bit each: moving a disengaged
    // std::optional<std::string> trips GCC 12's -Wmaybe-uninitialized under sanitizers.
    enum Bits : std::uint8_t { has_id = 1U, has_type = 2U, has_category = 4U };

    bool has(Bits bit) const noexcept { return (set_ & bit) != 0; }

    DeadLetterQuery& set(std::string& field, Bits bit, std::string value) {
        field = std::move(value);
        set_ = static_cast<std::uint8_t>(set_ | bit);
        return *this;
    }
    template <class T>
    DeadLetterQuery& set(std::optional<T>& field, T value) {
        field = value;
        return *this;
    }

    std::string id_;
    std::string type_;
    std::string category_;
    std::uint8_t set_ = 0;
    std::optional<DeadLetterStatus> status_;
    std::optional<DeadLetterReason> reason_;
    std::vector<std::string> tags_;
    std::optional<WallTime> created_before_;
    std::optional<WallTime> created_after_;
    std::size_t limit_ = no_limit;
};

// A store refused an add: it holds max_entries records and every one of them is pending. A pending
// dead letter is never dropped to make room; the caller keeps the message and decides. A
// rejection (see errors.hpp): the store works, it is full of what it must keep; source() is empty.
class DeadLetterStoreFullError : public RejectedError {
public:
    DeadLetterStoreFullError(const std::string& what, std::size_t max_entries)
        : RejectedError(what), max_entries_(max_entries) {}

    std::size_t max_entries() const noexcept { return max_entries_; }

private:
    std::size_t max_entries_;
};

// A store refused an add: the record is larger than one of its limits — max_payload_bytes for
// the payload, max_text_bytes for everything else together (id, type, error, category, tags,
// note, attempts). limit_name() says which; no byte of the record is in the message.
class DeadLetterTooLargeError : public std::length_error {
public:
    DeadLetterTooLargeError(const std::string& what, const char* limit_name, std::size_t size,
                            std::size_t limit)
        : std::length_error(what), limit_name_(limit_name), size_(size), limit_(limit) {}

    // "max_payload_bytes" or "max_text_bytes".
    const char* limit_name() const noexcept { return limit_name_; }
    std::size_t size() const noexcept { return size_; }
    std::size_t limit() const noexcept { return limit_; }

private:
    const char* limit_name_;
    std::size_t size_;
    std::size_t limit_;
};

namespace detail {
// Refuses a record, or a string to store in one, of `size` bytes over `limit`.
[[noreturn]] BULWARK_NOINLINE inline void throw_too_large(const char* what, const char* limit_name,
                                                          std::size_t size, std::size_t limit) {
    throw DeadLetterTooLargeError(std::string("dead letter ") + what + " of " +
                                      std::to_string(size) + " bytes exceeds " + limit_name + " (" +
                                      std::to_string(limit) + ")",
                                  limit_name, size, limit);
}

// The bytes a record's category and tags take after categorize(category, tags) on a record that
// carries `held`: a tag already held, or given twice, is stored once.
inline std::size_t categorized_text_bytes(std::string_view category,
                                          const std::vector<std::string>& held,
                                          const std::vector<std::string>& tags) {
    std::size_t text = category.size();
    for (const std::string& tag : held) {
        text += tag.size();
    }
    for (auto tag = tags.begin(); tag != tags.end(); ++tag) {
        if (std::find(held.begin(), held.end(), *tag) == held.end() &&
            std::find(tags.begin(), tag, *tag) == tag) {
            text += tag->size();
        }
    }
    return text;
}
}  // namespace detail

// Decides one dead letter during reprocess(): true when it was resent, false (or a throw) when it
// was not. It gets a copy and runs with no store lock held, so it may call the store.
using DeadLetterHandler = std::function<bool(const DeadLetter&)>;

struct ReprocessOptions {
    // Records already redriven this many times are skipped (and counted): the cycle limit that
    // keeps a poison message from being resent forever. 0 = unlimited (default).
    std::uint32_t max_redrives = 0;
    // When set, reprocess stops before the next record once cancel->cancelled() is true; records
    // already handled keep their new state. Must outlive the call.
    const Context* cancel = nullptr;
    // The channel recorded in each attempt that reprocess appends. At most 256 bytes.
    static constexpr std::size_t max_channel_bytes = 256;
    std::string channel = "reprocess";
};

// What one reprocess() call did. matched = resent + failed + skipped_limit + skipped_changed +
// the records not reached because it was cancelled.
struct ReprocessResult {
    std::size_t matched = 0;          // pending matches it set out to handle
    std::size_t resent = 0;           // the handler returned true: now reprocessed
    std::size_t failed = 0;           // the handler returned false or threw: still pending
    std::size_t skipped_limit = 0;    // already redriven max_redrives times: not handed over
    std::size_t skipped_changed = 0;  // dismissed, resolved or removed before their turn
    bool cancelled = false;           // stopped early by options.cancel
    bool already_running = false;     // another reprocess was running: this one did nothing
};

// What a store holds now, and what it has done since it was made.
struct DeadLetterStats {
    // Stored now.
    std::size_t total = 0;
    std::size_t pending = 0;
    std::size_t reprocessed = 0;
    std::size_t dismissed = 0;
    std::array<std::size_t, dead_letter_reason_count> by_reason{};  // indexed by DeadLetterReason
    std::map<std::string, std::size_t> by_type;
    std::map<std::string, std::size_t> by_category;  // "" = uncategorized; sums to total
    // Per (type, reason), as a broker counts dead letters per (source queue, reason).
    std::map<std::pair<std::string, DeadLetterReason>, std::size_t> by_type_and_reason;
    // Since the store was made.
    std::uint64_t added = 0;               // records stored by add()
    std::uint64_t duplicate_adds = 0;      // add() of an id already stored: nothing stored
    std::uint64_t evicted = 0;             // resolved records removed to make room
    std::uint64_t purged = 0;              // records removed by purge()
    std::uint64_t resent = 0;              // handler successes in reprocess()
    std::uint64_t redrive_failures = 0;    // handler failures in reprocess()
    std::uint64_t rejected_full = 0;       // adds refused with DeadLetterStoreFullError
    std::uint64_t rejected_too_large = 0;  // adds refused with DeadLetterTooLargeError

    std::size_t count(DeadLetterStatus status) const noexcept {
        switch (status) {
            case DeadLetterStatus::pending:
                return pending;
            case DeadLetterStatus::reprocessed:
                return reprocessed;
            case DeadLetterStatus::dismissed:
                return dismissed;
        }
        return 0;
    }
    std::size_t count(DeadLetterReason reason) const noexcept {
        const auto i = static_cast<std::size_t>(reason);
        return i < by_reason.size() ? by_reason[i] : 0;
    }
};

// The bounds a store enforces, so that generic code (and the conformance tests) can read them.
struct DeadLetterLimits {
    std::size_t max_entries = 0;        // records held at most
    std::size_t max_payload_bytes = 0;  // larger payloads are refused
    std::size_t max_attempts = 0;       // attempt history kept per record (the newest)
    std::size_t max_text_bytes = 0;     // all the other strings of a record together
};

// Where dead letters are kept, queried and decided on: the interface users plug stores into.
//   bulwark::DeadLetterStore& store = mem;        // an InMemoryDeadLetterStore, say
//   store.reprocess(bulwark::DeadLetterQuery{}.type("sms"), [&](const auto& d) { return resend(d);
//   });
// The public members are non-virtual and forward to the protected do_* hooks, so default arguments
// stay in one place; an implementation overrides every do_*. Its contract (the conformance suite
// in tests/dead_letter_conformance.hpp checks it): every operation is thread-safe; bulk
// operations return how many records they changed; add() is idempotent by id; a pending record
// is never dropped except by purge(); reprocess() calls its handler with no lock held and runs
// once at a time per store.
class DeadLetterStore {
public:
    virtual ~DeadLetterStore() = default;
    DeadLetterStore(const DeadLetterStore&) = delete;
    DeadLetterStore& operator=(const DeadLetterStore&) = delete;

    // Stores `letter` as pending and returns its id (assigned when empty). created is set from
    // the store's wall clock when it is the zero WallTime; the history is trimmed to
    // max_attempts. An id already stored stores nothing and returns the id (counted in
    // duplicate_adds). When the store is full, the oldest resolved record is evicted once the
    // new one is stored. Throws DeadLetterTooLargeError, DeadLetterStoreFullError (full, and
    // every record pending), or std::invalid_argument for an out-of-range reason; when it
    // throws, nothing was stored or evicted.
    std::string add(DeadLetter letter) { return do_add(std::move(letter)); }

    // A copy of the record, or nullopt.
    std::optional<DeadLetter> get(std::string_view id) const { return do_get(id); }

    // Copies of the matching records, in the order they were added, at most query.limit.
    std::vector<DeadLetter> list(const DeadLetterQuery& query = {}) const { return do_list(query); }

    // Marks the pending matches (at most query.limit of them) dismissed with `note`; returns how
    // many. Reprocessed and dismissed records are left as they are.
    std::size_t dismiss(const DeadLetterQuery& query, std::string_view note = {}) {
        // Every stored string is bounded, so that nothing acknowledged is too large to read back.
        const std::size_t limit = limits().max_text_bytes;
        if (note.size() > limit) {
            detail::throw_too_large("note", "max_text_bytes", note.size(), limit);
        }
        return do_dismiss(query, note);
    }

    // Sets `category` on the matches (at most query.limit, any status) and adds each of `tags`
    // they do not carry yet; returns how many matched.
    std::size_t categorize(const DeadLetterQuery& query, std::string_view category,
                           const std::vector<std::string>& tags = {}) {
        const std::size_t text = detail::categorized_text_bytes(category, {}, tags);
        const std::size_t limit = limits().max_text_bytes;
        if (text > limit) {
            detail::throw_too_large("category and tags", "max_text_bytes", text, limit);
        }
        return do_categorize(query, category, tags);
    }

    // Hands each pending match, oldest added first, to `handler` (see DeadLetterHandler) and
    // records the outcome: true -> reprocessed; false or a throw -> stays pending with the error
    // in a new attempt (its text cut to 1 KiB). Either way redrives + 1 and one attempt appended.
    // query.limit caps how many records are handed over. The matches are chosen when the call
    // starts; one that no longer matches at its turn (dismissed, recategorized, removed) is
    // skipped. A second call while one runs returns already_running at once. At least once: if
    // recording a success fails (an allocation), the record stays pending and may be resent.
    // Throws std::invalid_argument for an empty handler.
    ReprocessResult reprocess(const DeadLetterQuery& query, const DeadLetterHandler& handler,
                              const ReprocessOptions& options = {}) {
        if (options.channel.size() > ReprocessOptions::max_channel_bytes) {
            // Each redrive appends it to a record's history: bounded like the error text.
            detail::throw_invalid_option("ReprocessOptions.channel", "must be at most 256 bytes",
                                         std::to_string(options.channel.size()) + " bytes");
        }
        return do_reprocess(query, handler, options);
    }

    // Removes every record created before `older_than`, whatever its status (retention);
    // returns how many.
    std::size_t purge(WallTime older_than) { return do_purge(older_than); }

    DeadLetterStats stats() const { return do_stats(); }
    std::size_t size() const { return do_size(); }
    DeadLetterLimits limits() const noexcept { return do_limits(); }

protected:
    DeadLetterStore() = default;

    virtual std::string do_add(DeadLetter letter) = 0;
    virtual std::optional<DeadLetter> do_get(std::string_view id) const = 0;
    virtual std::vector<DeadLetter> do_list(const DeadLetterQuery& query) const = 0;
    virtual std::size_t do_dismiss(const DeadLetterQuery& query, std::string_view note) = 0;
    virtual std::size_t do_categorize(const DeadLetterQuery& query, std::string_view category,
                                      const std::vector<std::string>& tags) = 0;
    virtual ReprocessResult do_reprocess(const DeadLetterQuery& query,
                                         const DeadLetterHandler& handler,
                                         const ReprocessOptions& options) = 0;
    virtual std::size_t do_purge(WallTime older_than) = 0;
    virtual DeadLetterStats do_stats() const = 0;
    virtual std::size_t do_size() const = 0;
    virtual DeadLetterLimits do_limits() const noexcept = 0;
};

}  // namespace bulwark

#endif  // BULWARK_DEAD_LETTER_STORE_HPP
// #include <bulwark/in_memory_dead_letter_store.hpp>
// InMemoryDeadLetterStore: a bounded, thread-safe DeadLetterStore kept in memory.
#ifndef BULWARK_IN_MEMORY_DEAD_LETTER_STORE_HPP
#define BULWARK_IN_MEMORY_DEAD_LETTER_STORE_HPP

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <new>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

// #include <bulwark/clock.hpp> (already included above)
// #include <bulwark/config.hpp> (already included above)
// #include <bulwark/context.hpp> (already included above)
// #include <bulwark/dead_letter_store.hpp> (already included above)
// #include <bulwark/detail/dead_letter_index.hpp>
// A dead-letter store's records indexed by id, with their counts (private).
#ifndef BULWARK_DETAIL_DEAD_LETTER_INDEX_HPP
#define BULWARK_DETAIL_DEAD_LETTER_INDEX_HPP

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <mutex>
#include <new>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

// #include <bulwark/config.hpp> (already included above)
// #include <bulwark/context.hpp> (already included above)
// #include <bulwark/dead_letter_store.hpp> (already included above)
// #include <bulwark/detail/random.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/time.hpp> (already included above)

namespace bulwark {

namespace detail {

// `prefix` + 16 lower-case hex digits of `bits`.
inline std::string format_id(std::string_view prefix, std::uint64_t bits) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string id(prefix.size() + 16, '0');
    prefix.copy(id.data(), prefix.size());
    for (std::size_t i = id.size(); i > prefix.size(); --i) {
        id[i - 1] = digits[bits & 0xFU];
        bits >>= 4U;
    }
    return id;
}

// `prefix` + 11 base-62 digits (0-9, A-Z, a-z) of `bits`: every 64-bit value, one to one, in
// fewer characters than hex, so that "msg-" + 11 fits the 15 characters a std::string holds
// without allocating (libstdc++ and MSVC; libc++ holds 22).
inline std::string format_short_id(std::string_view prefix, std::uint64_t bits) {
    static constexpr char digits[] =
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    std::string id(prefix.size() + 11, '0');
    prefix.copy(id.data(), prefix.size());
    for (std::size_t i = id.size(); i > prefix.size(); --i) {
        id[i - 1] = digits[bits % 62U];
        bits /= 62U;
    }
    return id;
}

// "dl-" + 16 lower-case hex digits.
inline std::string format_dead_letter_id(std::uint64_t bits) {
    return format_id("dl-", bits);
}

// Trims a letter to what `limits` accept: its newest attempts, then its error text, so that a
// long history never makes a store refuse the message.
inline void fit_letter(DeadLetter& letter, const DeadLetterLimits& limits) {
    auto& attempts = letter.attempts;
    if (limits.max_attempts > 0 && attempts.size() > limits.max_attempts) {
        attempts.erase(
            attempts.begin(),
            attempts.begin() + static_cast<std::ptrdiff_t>(attempts.size() - limits.max_attempts));
    }
    if (limits.max_text_bytes == 0) {
        return;
    }
    std::size_t text = letter.id.size() + letter.type.size() + letter.error.size() +
                       letter.category.size() + letter.note.size();
    for (const std::string& tag : letter.tags) {
        text += tag.size();
    }
    for (const DeadLetterAttempt& a : attempts) {
        text += a.channel.size() + a.error.size();
    }
    std::size_t drop = 0;
    while (text > limits.max_text_bytes && drop < attempts.size()) {
        text -= attempts[drop].channel.size() + attempts[drop].error.size();
        ++drop;
    }
    attempts.erase(attempts.begin(), attempts.begin() + static_cast<std::ptrdiff_t>(drop));
    if (text > limits.max_text_bytes) {
        const std::size_t over = text - limits.max_text_bytes;
        letter.error.resize(letter.error.size() > over ? letter.error.size() - over : 0);
    }
}

// Differs between stores and between runs, so that ids from two stores (or from one file store
// before and after a restart) are unlikely to meet; uniqueness within a store is checked anyway.
inline std::uint64_t dead_letter_id_seed(const void* store) noexcept {
    static std::atomic<std::uint64_t> stores{0};
    // relaxed: only needs to differ between calls.
    const std::uint64_t n = stores.fetch_add(1, std::memory_order_relaxed);
    const auto wall =
        static_cast<std::uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
    const auto mono =
        static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    const auto address = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(store));
    return SplitMix64::at(wall ^ (mono << 21U) ^ address, n);
}

// Keeps the newest `max` attempts.
inline void trim_attempts(std::vector<DeadLetterAttempt>& attempts, std::size_t max) {
    if (attempts.size() > max) {
        attempts.erase(attempts.begin(),
                       attempts.begin() + static_cast<std::ptrdiff_t>(attempts.size() - max));
    }
}

// The bytes of a record that max_text_bytes bounds: every string but the payload.
inline std::size_t dead_letter_text_bytes(const DeadLetter& d) noexcept {
    std::size_t n =
        d.id.size() + d.type.size() + d.error.size() + d.category.size() + d.note.size();
    for (const std::string& t : d.tags) {
        n += t.size();
    }
    for (const DeadLetterAttempt& a : d.attempts) {
        n += a.channel.size() + a.error.size();
    }
    return n;
}

// A redrive's error text is cut to this, so that a record redriven for months stays bounded
// (max_attempts of them at most).
inline constexpr std::size_t max_redrive_error_bytes = 1024;

// `text` cut to `limit` bytes, the last three "..." when it was longer.
inline std::string clip_text(std::string text, std::size_t limit) {
    if (text.size() > limit && limit >= 3) {
        text.resize(limit - 3);
        text += "...";
    }
    return text;
}

inline std::string redrive_error_text(std::string text) {
    return clip_text(std::move(text), max_redrive_error_bytes);
}

// What a reprocess handler said about one record: resent, or why not (cut to 1 KiB).
struct RedriveOutcome {
    bool resent = false;
    std::string error;  // empty when resent
};

// Runs `handler` on `copy`: false or a throw is a failure, with its text; nothing escapes but an
// allocation failure while recording the text.
inline RedriveOutcome run_redrive_handler(const DeadLetterHandler& handler,
                                          const DeadLetter& copy) {
    RedriveOutcome outcome;
    bool threw = false;
    try {
        outcome.resent = handler(copy);
    } catch (const std::exception& e) {
        threw = true;
        outcome.error = e.what();
    } catch (...) {
        threw = true;
        outcome.error = "handler threw an exception not derived from std::exception";
    }
    if (!outcome.resent && !threw) {
        // Outside the try: our own allocation failing here is not the handler's failure.
        outcome.error = "handler returned false";
    }
    outcome.error = redrive_error_text(std::move(outcome.error));
    return outcome;
}

[[noreturn]] BULWARK_NOINLINE inline void throw_store_full(std::size_t max_entries) {
    throw DeadLetterStoreFullError(
        "dead-letter store is full: max_entries (" + std::to_string(max_entries) +
            ") records are stored and all are pending; none is dropped to make room",
        max_entries);
}

// What a store has done that its records cannot tell: the "since the store was made" half of
// DeadLetterStats, bar the refused adds. A durable store carries them across restarts.
struct DeadLetterCounters {
    std::uint64_t added = 0;
    std::uint64_t evicted = 0;
    std::uint64_t purged = 0;
    std::uint64_t resent = 0;
    std::uint64_t redrive_failures = 0;
};

// The records of a store, indexed by id and kept in the order they were added, with the counts
// stats() reports kept up to date as records change. A building block for stores (it does no
// locking and knows no clock): the in-memory store wraps it in a mutex, a durable store rebuilds
// it from its journal. Records are read through const iterators and changed only through the
// members below, which keep the id index and the counts right. Not thread-safe.
// A class template only so that its code is compiled where a store is used (the header stays
// cheap to include); use the DeadLetterIndex alias.
template <class Tag = void>
class BasicDeadLetterIndex {
public:
    using Seq = std::uint64_t;  // position in add order
    using Records = std::map<Seq, DeadLetter>;
    using const_iterator = typename Records::const_iterator;

    BasicDeadLetterIndex() = default;
    BasicDeadLetterIndex(const BasicDeadLetterIndex&) = delete;
    BasicDeadLetterIndex& operator=(const BasicDeadLetterIndex&) = delete;

    std::size_t size() const noexcept { return records_.size(); }
    // Room for about `n` records' ids without rehashing (best effort: a failure is ignored).
    void reserve(std::size_t n) noexcept {
        try {
            ids_.reserve(n);
        } catch (...) {  // NOLINT(bugprone-empty-catch): only an optimisation
        }
    }
    const_iterator begin() const noexcept { return records_.begin(); }
    const_iterator end() const noexcept { return records_.end(); }

    const_iterator find(std::string_view id) const {
        const auto at = ids_.find(id);
        return at == ids_.end() ? records_.end() : records_.find(at->second);
    }
    const_iterator find_seq(Seq seq) const { return records_.find(seq); }
    bool contains(std::string_view id) const { return ids_.count(id) != 0; }
    bool has_resolved() const noexcept { return !resolved_.empty(); }

    // Stores `letter` last in add order with its status as given. Throws std::invalid_argument
    // for an empty or already stored id, or an out-of-range status or reason (a corrupt journal
    // replayed, say). Strong guarantee.
    const_iterator insert(DeadLetter letter) {
        if (letter.id.empty() || contains(letter.id)) {
            throw_invalid_argument("bulwark::DeadLetterIndex: a record needs an id not stored yet");
        }
        return insert_absent(std::move(letter));
    }

    // insert() for a letter whose id the caller has just found absent (one lookup fewer: a
    // replay of a million records is bound by them). Throws std::invalid_argument for an empty
    // id or an out-of-range status or reason. Strong guarantee.
    const_iterator insert_absent(DeadLetter letter) {
        if (letter.id.empty()) {
            throw_invalid_argument("bulwark::DeadLetterIndex: a record needs an id not stored yet");
        }
        if (static_cast<std::size_t>(letter.status) >= dead_letter_status_count ||
            static_cast<std::size_t>(letter.reason) >= dead_letter_reason_count) {
            throw_invalid_argument("bulwark::DeadLetterIndex: status or reason out of range");
        }
        // Every allocation first, then the noexcept bookkeeping.
        auto type_count = by_type_.try_emplace(letter.type, 0).first;
        auto category_count = by_category_.try_emplace(letter.category, 0).first;
        auto pair_count =
            by_type_and_reason_.try_emplace(std::make_pair(letter.type, letter.reason), 0).first;
        try {
            const auto it = records_.emplace_hint(records_.end(), next_seq_, std::move(letter));
            try {
                const DeadLetter& d = it->second;
                ids_.emplace(std::string_view(d.id), it->first);
                try {
                    if (d.status != DeadLetterStatus::pending) {
                        resolved_.insert(it->first);
                    }
                } catch (...) {
                    ids_.erase(std::string_view(d.id));
                    throw;
                }
            } catch (...) {
                records_.erase(it);
                throw;
            }
            ++next_seq_;
            ++type_count->second;
            ++category_count->second;
            ++pair_count->second;
            ++by_status_[static_cast<std::size_t>(it->second.status)];
            ++by_reason_[static_cast<std::size_t>(it->second.reason)];
            return it;
        } catch (...) {
            drop_if_zero(by_type_, type_count);
            drop_if_zero(by_category_, category_count);
            drop_if_zero(by_type_and_reason_, pair_count);
            throw;
        }
    }

    void erase(const_iterator it) noexcept {
        const DeadLetter& d = it->second;
        --by_status_[static_cast<std::size_t>(d.status)];
        --by_reason_[static_cast<std::size_t>(d.reason)];
        decrement(by_type_, d.type);
        decrement(by_category_, d.category);
        decrement(by_type_and_reason_, std::make_pair(d.type, d.reason));
        resolved_.erase(it->first);
        ids_.erase(std::string_view(d.id));
        records_.erase(it);
    }

    // Strong guarantee.
    void set_status(const_iterator it, DeadLetterStatus status) {
        DeadLetter& d = mutable_record(it);
        if (d.status == status) {
            return;
        }
        if (status == DeadLetterStatus::pending) {
            resolved_.erase(it->first);
        } else {
            resolved_.insert(it->first);
        }
        --by_status_[static_cast<std::size_t>(d.status)];
        ++by_status_[static_cast<std::size_t>(status)];
        d.status = status;
    }

    // Dismisses a pending record with `note`. Strong guarantee.
    // NOLINTNEXTLINE(performance-unnecessary-value-param): it is moved into the record
    void dismiss(const_iterator it, std::string note) {
        set_status(it, DeadLetterStatus::dismissed);
        mutable_record(it).note = std::move(note);  // a move: cannot throw
    }

    // Sets the category and adds each tag the record does not carry yet. Strong guarantee.
    void categorize(const_iterator it, std::string_view category,
                    const std::vector<std::string>& tags) {
        DeadLetter& d = mutable_record(it);
        std::vector<std::string> merged = d.tags;
        for (const std::string& tag : tags) {
            if (std::find(merged.begin(), merged.end(), tag) == merged.end()) {
                merged.push_back(tag);
            }
        }
        if (d.category != category) {
            std::string value(category);
            increment(by_category_, value);
            decrement(by_category_, d.category);
            d.category = std::move(value);
        }
        d.tags.swap(merged);
    }

    // Makes room for the attempt record_redrive(it, ..., max_attempts) adds, so that it stores
    // the attempt without allocating. A durable store calls it first: the attempt is already in
    // its journal, and dropping it from memory alone would part the two. Changes only capacity.
    void reserve_attempt(const_iterator it, std::size_t max_attempts) {
        std::vector<DeadLetterAttempt>& attempts = mutable_record(it).attempts;
        if ((attempts.size() < max_attempts || attempts.empty()) &&
            attempts.size() == attempts.capacity()) {
            // Geometric, capped at the bound: one slot at a time would copy the history on
            // every redrive.
            attempts.reserve(std::max<std::size_t>(
                attempts.size() + 1, std::min<std::size_t>(2 * attempts.size(), max_attempts)));
        }
    }

    // Records one redrive: the outcome first (a success must not be lost to a failed append),
    // then the attempt, best effort (allocation-free after reserve_attempt()), keeping the newest
    // `max_attempts`. Throws only if the status change cannot be made, and then changes nothing.
    void record_redrive(const_iterator it, bool resent, DeadLetterAttempt attempt,
                        std::size_t max_attempts) {
        if (resent) {
            set_status(it, DeadLetterStatus::reprocessed);
        }
        DeadLetter& d = mutable_record(it);
        ++d.redrives;
        d.last_attempt = attempt.at;
        try {
            if (d.attempts.size() >= max_attempts && !d.attempts.empty()) {
                d.attempts.erase(d.attempts.begin());
            }
            d.attempts.push_back(std::move(attempt));
        } catch (const std::bad_alloc&) {
            // The history is diagnostic; the outcome above is what counts.
        }
    }

    // The oldest added record that is not pending — the next to evict — or end().
    const_iterator oldest_resolved() const noexcept {
        return resolved_.empty() ? records_.end() : records_.find(*resolved_.begin());
    }

    // Removes the oldest added record that is not pending; false when every record is pending.
    bool evict_oldest_resolved() noexcept {
        const auto it = oldest_resolved();
        if (it == records_.end()) {
            return false;
        }
        erase(it);
        return true;
    }

    // Calls visit(const_iterator) for each record matching `query` (the limit aside), in add
    // order, until it returns false. A query with an id is a lookup, not a scan. `visit` may
    // change the record it is given through the members above, but must not add or remove
    // records.
    template <class Visit>
    void scan(const DeadLetterQuery& query, Visit&& visit) const {
        if (const std::string* id = query.id_filter()) {
            const auto it = find(*id);
            if (it != records_.end() && query.matches(it->second)) {
                visit(it);
            }
            return;
        }
        for (auto it = records_.begin(); it != records_.end(); ++it) {
            if (query.matches(it->second) && !visit(it)) {
                return;
            }
        }
    }

    // The pending matches a reprocess hands over, in add order, at most query.limit of them;
    // counts them in result.matched. A record already redriven max_redrives times (0 = no limit)
    // is counted in skipped_limit, not handed over, and does not use up the limit: a batch would
    // otherwise stall behind records that reached the cycle limit.
    std::vector<Seq> select_redrive(const DeadLetterQuery& query, std::uint32_t max_redrives,
                                    ReprocessResult& result) const {
        std::vector<Seq> batch;
        const std::size_t limit = query.max_results();
        if (limit == 0) {
            return batch;
        }
        scan(query, [&](const_iterator it) {
            if (it->second.status != DeadLetterStatus::pending) {
                return true;
            }
            ++result.matched;
            if (max_redrives != 0 && it->second.redrives >= max_redrives) {
                ++result.skipped_limit;
                return true;
            }
            batch.push_back(it->first);
            return batch.size() < limit;
        });
        return batch;
    }

    // The record `seq` if a redrive may still hand it over — pending, and still selected by
    // `query` (not dismissed, recategorized or removed since the batch was chosen) — else end().
    const_iterator find_redrivable(Seq seq, const DeadLetterQuery& query) const {
        const auto it = records_.find(seq);
        if (it == records_.end() || it->second.status != DeadLetterStatus::pending ||
            !query.matches(it->second)) {
            return records_.end();
        }
        return it;
    }

    // Fills the "stored now" half of `stats`.
    void fill(DeadLetterStats& stats) const {
        stats.total = records_.size();
        stats.pending = by_status_[static_cast<std::size_t>(DeadLetterStatus::pending)];
        stats.reprocessed = by_status_[static_cast<std::size_t>(DeadLetterStatus::reprocessed)];
        stats.dismissed = by_status_[static_cast<std::size_t>(DeadLetterStatus::dismissed)];
        stats.by_reason = by_reason_;
        stats.by_type = by_type_;
        stats.by_category = by_category_;
        stats.by_type_and_reason = by_type_and_reason_;
    }

private:
    // The index owns the records; only its members change them, through this.
    DeadLetter& mutable_record(const_iterator it) noexcept {
        return const_cast<DeadLetter&>(it->second);
    }

    template <class Counts, class Key>
    static void increment(Counts& counts, const Key& key) {
        ++counts[key];  // changes nothing if it throws
    }

    template <class Counts, class Key>
    static void decrement(Counts& counts, const Key& key) noexcept {
        const auto it = counts.find(key);
        if (it != counts.end() && --it->second == 0) {
            counts.erase(it);
        }
    }

    template <class Counts>
    static void drop_if_zero(Counts& counts, typename Counts::iterator it) noexcept {
        if (it->second == 0) {
            counts.erase(it);
        }
    }

    Records records_;
    // Views into the records' ids, which never change while stored (map nodes do not move).
    std::unordered_map<std::string_view, Seq> ids_;
    std::set<Seq> resolved_;  // records not pending, oldest added first: eviction candidates
    Seq next_seq_ = 0;
    std::array<std::size_t, dead_letter_status_count> by_status_{};
    std::array<std::size_t, dead_letter_reason_count> by_reason_{};
    std::map<std::string, std::size_t> by_type_;
    std::map<std::string, std::size_t> by_category_;
    std::map<std::pair<std::string, DeadLetterReason>, std::size_t> by_type_and_reason_;
};

using DeadLetterIndex = BasicDeadLetterIndex<>;

// What every store does to a letter before storing it: checks the reason and the size limits,
// sets created (from `now`) and last_attempt when they are zero, trims the history to
// max_attempts and makes it pending. The id is the caller's. Throws DeadLetterTooLargeError or
// std::invalid_argument.
inline void prepare_dead_letter(DeadLetter& letter, const DeadLetterLimits& limits, WallTime now) {
    check_enumerator(letter.reason, DeadLetterReason::manual, "DeadLetter.reason",
                     "DeadLetterReason");
    if (letter.payload.size() > limits.max_payload_bytes) {
        throw_too_large("payload", "max_payload_bytes", letter.payload.size(),
                        limits.max_payload_bytes);
    }
    trim_attempts(letter.attempts, limits.max_attempts);
    const std::size_t text = dead_letter_text_bytes(letter);
    if (text > limits.max_text_bytes) {
        throw_too_large("text", "max_text_bytes", text, limits.max_text_bytes);
    }
    if (letter.created == WallTime{}) {
        letter.created = now;
    }
    if (letter.last_attempt == WallTime{}) {
        for (const DeadLetterAttempt& a : letter.attempts) {
            letter.last_attempt = std::max(letter.last_attempt, a.at);
        }
    }
    letter.status = DeadLetterStatus::pending;
}

}  // namespace detail

}  // namespace bulwark

#endif  // BULWARK_DETAIL_DEAD_LETTER_INDEX_HPP
// #include <bulwark/detail/indexed_dead_letter_store.hpp>
// IndexedDeadLetterStore: the admission, reads, stats and reprocess loop both stores share
// (private). SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_INDEXED_DEAD_LETTER_STORE_HPP
#define BULWARK_DETAIL_INDEXED_DEAD_LETTER_STORE_HPP

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// #include <bulwark/clock.hpp> (already included above)
// #include <bulwark/dead_letter_store.hpp> (already included above)
// #include <bulwark/detail/dead_letter_index.hpp> (already included above)
// #include <bulwark/detail/mutex.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)

namespace bulwark {

namespace detail {

// The part of a DeadLetterStore that does not depend on where its records are kept: one mutex
// over a DeadLetterIndex, the checks an add passes before anything is stored (size limits,
// duplicate id, full), id assignment, every read (get, list, size, stats, limits) and the
// reprocess loop (one run at a time per store, the handler called with no lock held). A store
// derives from IndexedDeadLetterStore<Store> (befriending it) and keeps what makes it durable or
// not: do_dismiss, do_categorize, do_purge and these members, each called with mutex_ held:
//   std::string store_new(DeadLetter letter, bool evict)
//       stores a checked letter that has its id (then, when `evict`, removes the oldest resolved
//       record: the store was full) and returns the id; counts it in counters_.
//   void record_outcome(Seq seq, const DeadLetter& copy, bool resent, DeadLetterAttempt attempt,
//                       const ReprocessResult& so_far)
//       records what the handler said about `copy` (record `seq`, which may have been removed
//       meanwhile) and counts it in counters_; so_far is the call's result before it.
// and, when the store can refuse changes (the defaults below accept everything):
//   void check_writable() const                    throws before an add stores anything or a
//                                                  reprocess selects anything;
//   void check_redrive_continues(const ReprocessResult& so_far) const
//                                                  throws to stop a reprocess before its next
//                                                  handler call;
// and, when an add is acknowledged only once durable (the defaults wait for nothing):
//   std::uint64_t durable_ticket(std::string_view id) const
//                                                  what covers the record `id` (stored);
//   void await_durable(std::uint64_t ticket)       called with no lock held: returns once
//                                                  `ticket` is durable, or throws.
// Thread-safe: mutex_ guards every member below and whatever the store's hooks touch. The hooks
// are called as static_cast<Store&>(*this).hook(): a cast the thread-safety analysis sees
// through, so it knows the mutex_ a hook requires is the one held (a store() helper returning
// the reference would hide that).
template <class Store>
class IndexedDeadLetterStore : public DeadLetterStore {
protected:
    using Index = DeadLetterIndex;
    using Seq = Index::Seq;

    // The clock must outlive the store.
    IndexedDeadLetterStore(const DeadLetterLimits& limits, Clock& clock)
        : limits_(limits), clock_(&clock), id_seed_(dead_letter_id_seed(this)) {}

    // The limits of a store's options (which have these four fields), once they are validated.
    template <class Options>
    static DeadLetterLimits checked_limits(const Options& options) {
        options.validate();
        return DeadLetterLimits{options.max_entries, options.max_payload_bytes,
                                options.max_attempts, options.max_text_bytes};
    }

    std::string do_add(DeadLetter letter) override {
        std::uint64_t ticket = 0;
        std::string id = add_locked(std::move(letter), ticket);
        // Without the lock, so that concurrent adds share one sync (group commit). A duplicate
        // waits too: the record it names may be another add's, still in flight.
        static_cast<Store&>(*this).await_durable(ticket);
        return id;
    }

    std::string add_locked(DeadLetter letter, std::uint64_t& ticket) {
        LockGuard lock(mutex_);
        try {
            prepare_dead_letter(letter, limits_, clock_->wall_now());
        } catch (const DeadLetterTooLargeError&) {
            ++rejected_too_large_;
            throw;
        }
        if (!letter.id.empty() && index_.contains(letter.id)) {
            ++duplicate_adds_;
            ticket = static_cast<Store&>(*this).durable_ticket(letter.id);
            return letter.id;
        }
        const bool full = index_.size() >= limits_.max_entries;
        if (full && !index_.has_resolved()) {
            ++rejected_full_;
            throw_store_full(limits_.max_entries);
        }
        static_cast<Store&>(*this).check_writable();
        if (letter.id.empty()) {
            do {
                letter.id = format_dead_letter_id(SplitMix64::at(id_seed_, next_id_++));
            } while (index_.contains(letter.id));
        }
        // The eviction a full store makes comes after the new record is in (it is pending, so it
        // is not the one evicted): an add that throws has removed nothing.
        std::string id = static_cast<Store&>(*this).store_new(std::move(letter), full);
        ticket = static_cast<Store&>(*this).durable_ticket(id);
        return id;
    }

    // Refuses, before anything changes, a categorize() that would take a matched record's
    // category and tags together over max_text_bytes: tags accumulate from call to call, and a
    // record must stay small enough to be read back from a journal. Under mutex_.
    void check_categorize(const DeadLetterQuery& query, std::string_view category,
                          const std::vector<std::string>& tags) const BULWARK_REQUIRES(mutex_) {
        std::size_t matched = 0;
        const std::size_t limit = query.max_results();
        index_.scan(query, [&](Index::const_iterator it) BULWARK_NO_THREAD_SAFETY_ANALYSIS {
            // (scan() runs this under mutex_, held by the caller.)
            const std::size_t text = categorized_text_bytes(category, it->second.tags, tags);
            if (text > limits_.max_text_bytes) {
                throw_too_large("category and tags", "max_text_bytes", text,
                                limits_.max_text_bytes);
            }
            return ++matched < limit;
        });
    }

    std::optional<DeadLetter> do_get(std::string_view id) const override {
        LockGuard lock(mutex_);
        const auto it = index_.find(id);
        if (it == index_.end()) {
            return std::nullopt;
        }
        return it->second;
    }

    std::vector<DeadLetter> do_list(const DeadLetterQuery& query) const override {
        std::vector<DeadLetter> out;
        const std::size_t limit = query.max_results();
        if (limit == 0) {
            return out;
        }
        LockGuard lock(mutex_);
        index_.scan(query, [&](Index::const_iterator it) {
            out.push_back(it->second);
            return out.size() < limit;
        });
        return out;
    }

    ReprocessResult do_reprocess(const DeadLetterQuery& query, const DeadLetterHandler& handler,
                                 const ReprocessOptions& options) override {
        if (!handler) {
            throw_invalid_argument("bulwark::DeadLetterStore::reprocess: empty handler");
        }
        ReprocessResult result;
        std::vector<Seq> batch;
        {
            LockGuard lock(mutex_);
            if (reprocessing_) {
                result.already_running = true;
                return result;
            }
            static_cast<Store&>(*this)
                .check_writable();  // a store that cannot record an outcome resends nothing
            batch = index_.select_redrive(query, options.max_redrives, result);
            reprocessing_ = true;
        }
        // Clears the flag however the loop ends (a throwing clock, allocation or hook included).
        struct Running {
            IndexedDeadLetterStore* self;
            ~Running() {
                LockGuard lock(self->mutex_);
                self->reprocessing_ = false;
            }
        } running{this};

        for (const Seq seq : batch) {
            if (options.cancel != nullptr && options.cancel->cancelled()) {
                result.cancelled = true;
                break;
            }
            DeadLetter copy;
            {
                LockGuard lock(mutex_);
                static_cast<Store&>(*this).check_redrive_continues(result);
                const auto it = index_.find_redrivable(seq, query);
                if (it == index_.end()) {
                    ++result.skipped_changed;
                    continue;
                }
                copy = it->second;
            }
            RedriveOutcome outcome = run_redrive_handler(handler, copy);
            const bool resent = outcome.resent;
            DeadLetterAttempt attempt{clock_->wall_now(), options.channel,
                                      std::move(outcome.error)};
            {
                LockGuard lock(mutex_);
                static_cast<Store&>(*this).record_outcome(seq, copy, resent, std::move(attempt),
                                                          result);
            }
            ++(resent ? result.resent : result.failed);
        }
        return result;
    }

    DeadLetterStats do_stats() const override {
        DeadLetterStats s;
        LockGuard lock(mutex_);
        index_.fill(s);
        s.added = counters_.added;
        s.duplicate_adds = duplicate_adds_;
        s.evicted = counters_.evicted;
        s.purged = counters_.purged;
        s.resent = counters_.resent;
        s.redrive_failures = counters_.redrive_failures;
        s.rejected_full = rejected_full_;
        s.rejected_too_large = rejected_too_large_;
        return s;
    }

    std::size_t do_size() const override {
        LockGuard lock(mutex_);
        return index_.size();
    }

    DeadLetterLimits do_limits() const noexcept override { return limits_; }

    // The hooks a store that accepts every change leaves as they are.
    void check_writable() const noexcept BULWARK_REQUIRES(mutex_) {}
    std::uint64_t durable_ticket(std::string_view /*id*/) const noexcept BULWARK_REQUIRES(mutex_) {
        return 0;
    }
    void await_durable(std::uint64_t /*ticket*/) noexcept {}
    void check_redrive_continues(const ReprocessResult& /*so_far*/) const noexcept
        BULWARK_REQUIRES(mutex_) {}

    const DeadLetterLimits limits_;
    Clock* const clock_;

    mutable Mutex mutex_;
    Index index_ BULWARK_GUARDED_BY(mutex_);
    // Since the store was made (a durable store: ever).
    DeadLetterCounters counters_ BULWARK_GUARDED_BY(mutex_);
    std::uint64_t duplicate_adds_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::uint64_t rejected_full_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::uint64_t rejected_too_large_ BULWARK_GUARDED_BY(mutex_) = 0;

private:
    const std::uint64_t id_seed_;
    std::uint64_t next_id_ BULWARK_GUARDED_BY(mutex_) = 0;
    bool reprocessing_ BULWARK_GUARDED_BY(mutex_) = false;
};

}  // namespace detail

}  // namespace bulwark

#endif  // BULWARK_DETAIL_INDEXED_DEAD_LETTER_STORE_HPP
// #include <bulwark/detail/mutex.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)

namespace bulwark {

struct InMemoryDeadLetterStoreOptions {
    // Records held at most. When full, add() evicts the oldest added record that is no longer
    // pending; with none, it throws DeadLetterStoreFullError. >= 1. Default 100000.
    std::size_t max_entries = 100000;
    // Larger payloads are refused with DeadLetterTooLargeError. >= 1. Default 1 MiB.
    std::size_t max_payload_bytes = std::size_t{1} << 20U;
    // All the other strings of a record together (id, type, error, category, tags, note, the
    // attempts' channels and errors) above this are refused at add() with
    // DeadLetterTooLargeError; a dismiss() note, and a record's category and tags after a
    // categorize(), are each bounded by it too. With redrive attempts (error text cut to 1 KiB,
    // channel at most 256 bytes, max_attempts of them) a record's size stays bounded. >= 1.
    // Default 64 KiB.
    std::size_t max_text_bytes = std::size_t{64} << 10U;
    // Attempt history kept per record: the newest entries (redrives still counts every
    // redrive), so that a record redriven for months stays bounded. >= 1. Default 64.
    std::size_t max_attempts = 64;

    void validate() const {
        if (max_entries == 0) {
            detail::throw_invalid_option("InMemoryDeadLetterStoreOptions.max_entries",
                                         "must be >= 1", "0");
        }
        if (max_payload_bytes == 0) {
            detail::throw_invalid_option("InMemoryDeadLetterStoreOptions.max_payload_bytes",
                                         "must be >= 1", "0");
        }
        if (max_attempts == 0) {
            detail::throw_invalid_option("InMemoryDeadLetterStoreOptions.max_attempts",
                                         "must be >= 1", "0");
        }
        if (max_text_bytes == 0) {
            detail::throw_invalid_option("InMemoryDeadLetterStoreOptions.max_text_bytes",
                                         "must be >= 1", "0");
        }
    }
};

// A DeadLetterStore in memory: bounded, lost when the process exits.
//   bulwark::InMemoryDeadLetterStore mem(/*max_entries*/ 100000);   // optional clock last
//   std::string id = mem.add(d);  mem.list(bulwark::DeadLetterQuery{}.type("sms"));
// get() by id is a hash lookup and a map search (O(log n)); queries without an id scan the
// records in add order; add, dismiss and status changes are O(log n) per record; stats() copies
// the per-type and per-category counts. Full: see InMemoryDeadLetterStoreOptions::max_entries.
// Thread-safe: one mutex guards everything and is never held while a reprocess handler runs.
// InMemoryDeadLetterStore is BasicInMemoryDeadLetterStore<>: a class template only so that its
// code is compiled where it is used; use the alias.
template <class Tag = void>
class BasicInMemoryDeadLetterStore
    : public detail::IndexedDeadLetterStore<BasicInMemoryDeadLetterStore<Tag>> {
    using Base = detail::IndexedDeadLetterStore<BasicInMemoryDeadLetterStore<Tag>>;
    friend Base;

public:
    // Throws std::invalid_argument for max_entries == 0. The clock must outlive the store.
    explicit BasicInMemoryDeadLetterStore(std::size_t max_entries = 100000,
                                          Clock& clock = default_clock())
        : BasicInMemoryDeadLetterStore(make_options(max_entries), clock) {}

    // Throws std::invalid_argument for invalid options. The clock must outlive the store.
    explicit BasicInMemoryDeadLetterStore(InMemoryDeadLetterStoreOptions options,
                                          Clock& clock = default_clock())
        : Base(Base::checked_limits(options), clock), options_(options) {}

    const InMemoryDeadLetterStoreOptions& options() const noexcept { return options_; }

protected:
    std::size_t do_dismiss(const DeadLetterQuery& query, std::string_view note) override {
        std::size_t changed = 0;
        const std::size_t limit = query.max_results();
        if (limit == 0) {
            return 0;
        }
        detail::LockGuard lock(mutex_);
        // The callback runs within scan(), with mutex_ still held; the analysis checks a lambda
        // as a function of its own and cannot know that.
        index_.scan(query, [&](Iterator it) BULWARK_NO_THREAD_SAFETY_ANALYSIS {
            if (it->second.status == DeadLetterStatus::pending) {
                index_.dismiss(it, std::string(note));
                ++changed;
            }
            return changed < limit;
        });
        return changed;
    }

    std::size_t do_categorize(const DeadLetterQuery& query, std::string_view category,
                              const std::vector<std::string>& tags) override {
        std::size_t matched = 0;
        const std::size_t limit = query.max_results();
        if (limit == 0) {
            return 0;
        }
        detail::LockGuard lock(mutex_);
        this->check_categorize(query, category, tags);
        // Within scan(), with mutex_ held (as in do_dismiss).
        index_.scan(query, [&](Iterator it) BULWARK_NO_THREAD_SAFETY_ANALYSIS {
            index_.categorize(it, category, tags);
            return ++matched < limit;
        });
        return matched;
    }

    std::size_t do_purge(WallTime older_than) override {
        detail::LockGuard lock(mutex_);
        std::size_t removed = 0;
        for (auto it = index_.begin(); it != index_.end();) {
            const auto next = std::next(it);
            if (it->second.created < older_than) {
                index_.erase(it);
                ++removed;
            }
            it = next;
        }
        counters_.purged += removed;
        return removed;
    }

private:
    using Iterator = typename Base::Index::const_iterator;
    using Seq = typename Base::Seq;
    using Base::counters_;
    using Base::index_;
    using Base::mutex_;

    static InMemoryDeadLetterStoreOptions make_options(std::size_t max_entries) {
        InMemoryDeadLetterStoreOptions o;
        o.max_entries = max_entries;
        return o;
    }

    // ---- the hooks IndexedDeadLetterStore calls, with mutex_ held ----------------------------

    std::string store_new(DeadLetter letter, bool evict) BULWARK_REQUIRES(mutex_) {
        std::string id = letter.id;
        index_.insert(std::move(letter));
        if (evict && index_.evict_oldest_resolved()) {
            ++counters_.evicted;
        }
        ++counters_.added;
        return id;
    }

    void record_outcome(Seq seq, const DeadLetter& /*copy*/, bool resent, DeadLetterAttempt attempt,
                        const ReprocessResult& /*so_far*/) BULWARK_REQUIRES(mutex_) {
        // Recorded if the record is still here. A success wins over a dismiss made while the
        // handler ran: the message was resent.
        const auto it = index_.find_seq(seq);
        if (it != index_.end()) {
            index_.record_redrive(it, resent, std::move(attempt), options_.max_attempts);
        }
        ++(resent ? counters_.resent : counters_.redrive_failures);
    }

    const InMemoryDeadLetterStoreOptions options_;
};

using InMemoryDeadLetterStore = BasicInMemoryDeadLetterStore<>;

}  // namespace bulwark

#endif  // BULWARK_IN_MEMORY_DEAD_LETTER_STORE_HPP

// The durable store needs POSIX file I/O: elsewhere this header brings the interface and the
// in-memory store only.
#if defined(__unix__) || defined(__APPLE__)
// #include <bulwark/file_dead_letter_store.hpp>
// FileDeadLetterStore: the durable dead-letter store, a crash-safe journal on disk (POSIX).
#ifndef BULWARK_FILE_DEAD_LETTER_STORE_HPP
#define BULWARK_FILE_DEAD_LETTER_STORE_HPP

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

// #include <bulwark/clock.hpp> (already included above)
// #include <bulwark/dead_letter_store.hpp> (already included above)
// #include <bulwark/detail/dead_letter_index.hpp> (already included above)
// #include <bulwark/detail/file_system.hpp>
// The file-system seam of the durable store, and its POSIX implementation.
#ifndef BULWARK_DETAIL_FILE_SYSTEM_HPP
#define BULWARK_DETAIL_FILE_SYSTEM_HPP

#if !defined(__unix__) && !defined(__APPLE__)
#error "bulwark's file store needs POSIX file I/O (Linux, macOS, the BSDs)"
#endif

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <fcntl.h>
#include <string>
#include <string_view>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <system_error>
#include <unistd.h>

// The file-system seam of FileDeadLetterStore (public: tests and users plug in their own, as
// SQLite's VFS and LevelDB's Env allow). Declared here so that the store's header stays
// readable; <bulwark/file_dead_letter_store.hpp> is the header to include.

namespace bulwark {

// The file operations a durable store needs, and nothing else. Every operation reports failure
// by throwing std::system_error carrying the errno value; a store treats anything else that
// escapes (a test's simulated crash, say) as fatal and lets it through. Files are handles
// (small non-negative integers) owned by the caller until close().
// Implementations must be thread-safe for distinct handles; a store serialises its own calls.
class FileSystem {
public:
    using Handle = int;
    enum class Kind : std::uint8_t { missing, regular, directory, symlink, other };

    virtual ~FileSystem() = default;

    // What lstat(2) says about a path: what it is, who owns it, its permission bits and its
    // hard-link count (kind == missing: nothing there, the rest zero).
    struct Info {
        Kind kind = Kind::missing;
        std::uint64_t owner = 0;  // st_uid
        std::uint32_t mode = 0;   // st_mode & 07777
        std::uint64_t links = 0;  // st_nlink
    };

    // What is at `path`, without following a final symlink (lstat).
    virtual Info info(const std::string& path) = 0;
    Kind kind(const std::string& path) { return info(path).kind; }
    // Creates the directory with mode 0700 whatever the umask (mode 0700 on success).
    virtual void make_dir(const std::string& path) = 0;
    // Opens a regular file for reading and writing, creating it with mode 0600 whatever the umask
    // when `create` is set, emptying it when `truncate` is set. Refuses a symlink (ELOOP).
    virtual Handle open(const std::string& path, bool create, bool truncate) = 0;
    // Creates a new regular file (mode 0600 whatever the umask) and opens it for reading and
    // writing; throws std::system_error with EEXIST when anything is at `path` (O_EXCL).
    virtual Handle create_new(const std::string& path) = 0;
    virtual void close(Handle file) noexcept = 0;
    // The whole file.
    virtual std::string read_all(Handle file) = 0;
    // Writes all of `data` at `offset` (retrying short writes); on failure part of it may have
    // been written.
    virtual void write_at(Handle file, std::uint64_t offset, std::string_view data) = 0;
    // Makes the file's data (and the metadata needed to read it back: its size) durable.
    virtual void sync(Handle file) = 0;
    virtual void truncate(Handle file, std::uint64_t size) = 0;
    // Atomically replaces `to` with `from` (rename(2)).
    virtual void rename(const std::string& from, const std::string& to) = 0;
    // Makes the directory's entries (creations, renames, removals) durable. A symlink is refused
    // (ELOOP) as the final component of `path`.
    virtual void sync_dir(const std::string& path) = 0;
    // Removes a file; a missing file is not an error.
    virtual void remove(const std::string& path) = 0;
    // Opens (creating, 0600) and exclusively locks `path` for as long as the handle is open;
    // throws std::system_error with EWOULDBLOCK when another holder has it.
    virtual Handle lock(const std::string& path) = 0;

protected:
    FileSystem() = default;
    FileSystem(const FileSystem&) = default;
    FileSystem& operator=(const FileSystem&) = default;
};

// FileSystem over POSIX calls: O_CLOEXEC | O_NOFOLLOW opens, EINTR retried, short writes
// looped, fdatasync() on Linux (fcntl(F_FULLFSYNC) on macOS, fsync() elsewhere), flock() for the
// lock file.
// Thread-safe (stateless).
class PosixFileSystem final : public FileSystem {
public:
    Info info(const std::string& path) override {
        struct stat st {};
        if (::lstat(path.c_str(), &st) != 0) {
            if (errno == ENOENT) {
                return Info{};
            }
            fail("lstat", path);
        }
        Info out;
        out.kind = S_ISLNK(st.st_mode)   ? Kind::symlink
                   : S_ISDIR(st.st_mode) ? Kind::directory
                   : S_ISREG(st.st_mode) ? Kind::regular
                                         : Kind::other;
        out.owner = static_cast<std::uint64_t>(st.st_uid);
        out.mode = static_cast<std::uint32_t>(st.st_mode & 07777);
        out.links = static_cast<std::uint64_t>(st.st_nlink);
        return out;
    }

    void make_dir(const std::string& path) override {
        if (::mkdir(path.c_str(), 0700) != 0) {
            fail("mkdir", path);
        }
        // mkdir applies the umask (a umask cannot widen 0700, but set the mode explicitly all the
        // same), on the directory just made: fchmod on a descriptor, never chmod by path.
        const int fd = open_retry(path, O_RDONLY | O_CLOEXEC | O_DIRECTORY | O_NOFOLLOW);
        if (::fchmod(fd, 0700) != 0) {
            const int error = errno;
            ::close(fd);
            throw std::system_error(error, std::generic_category(), "fchmod " + path);
        }
        ::close(fd);
    }

    Handle open(const std::string& path, bool create, bool truncate) override {
        return open_flags(path, (create ? O_CREAT : 0) | (truncate ? O_TRUNC : 0));
    }

    Handle create_new(const std::string& path) override {
        return open_flags(path, O_CREAT | O_EXCL);
    }

    void close(Handle file) noexcept override { ::close(file); }

    std::string read_all(Handle file) override {
        // Sized once from fstat and read in place: growing a string chunk by chunk would copy a
        // large journal several times over. The loop still reads to the end of file, however
        // long it turns out to be.
        // One spare byte, where the read that finds the end of the file lands: growing past the
        // capacity would copy everything once more.
        std::string out;
        struct stat st {};
        if (::fstat(file, &st) == 0 && st.st_size > 0) {
            out.reserve(static_cast<std::size_t>(st.st_size) + 1);
            advise_huge_pages(out);
        }
        out.resize(out.capacity());
        std::size_t offset = 0;
        for (;;) {
            if (offset == out.size()) {
                out.resize(out.size() + out.size() / 2 + 65536);  // the file grew meanwhile
            }
            const ssize_t n =
                ::pread(file, &out[offset], out.size() - offset, static_cast<off_t>(offset));
            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                fail("read", "journal");
            }
            if (n == 0) {
                out.resize(offset);
                return out;
            }
            offset += static_cast<std::size_t>(n);
        }
    }

    // Asks for transparent huge pages over a large buffer before it is first touched: reading a
    // journal of hundreds of MiB otherwise takes a page fault per 4 KiB, which dominates an open
    // on a virtual machine. Best effort (Linux with THP in "madvise" mode; a no-op elsewhere).
    static void advise_huge_pages(std::string& buffer) noexcept {
#if defined(MADV_HUGEPAGE)
        constexpr std::uintptr_t huge = std::uintptr_t{2} << 20U;
        char* const data = buffer.data();  // non-const since C++17
        const auto begin = reinterpret_cast<std::uintptr_t>(data);
        const std::uintptr_t first = (begin + huge - 1) & ~(huge - 1);
        const std::uintptr_t last = (begin + buffer.capacity()) & ~(huge - 1);
        if (last > first) {
            ::madvise(data + (first - begin), last - first, MADV_HUGEPAGE);
        }
#else
        (void)buffer;
#endif
    }

    void write_at(Handle file, std::uint64_t offset, std::string_view data) override {
        while (!data.empty()) {
            const ssize_t n = ::pwrite(file, data.data(), data.size(), static_cast<off_t>(offset));
            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                fail("write", "journal");
            }
            if (n == 0) {
                throw std::system_error(EIO, std::generic_category(), "write journal");
            }
            data.remove_prefix(static_cast<std::size_t>(n));
            offset += static_cast<std::uint64_t>(n);
        }
    }

    void sync(Handle file) override {
#if defined(F_FULLFSYNC)
        // macOS: fsync() only reaches the drive's cache; F_FULLFSYNC flushes it.
        if (full_fsync(file) != 0) {
            fail("fcntl(F_FULLFSYNC)", "journal");
        }
#elif defined(__linux__)
        if (::fdatasync(file) != 0) {
            fail("fdatasync", "journal");
        }
#else
        if (::fsync(file) != 0) {
            fail("fsync", "journal");
        }
#endif
    }

    void truncate(Handle file, std::uint64_t size) override {
        while (::ftruncate(file, static_cast<off_t>(size)) != 0) {
            if (errno != EINTR) {
                fail("ftruncate", "journal");
            }
        }
    }

    void rename(const std::string& from, const std::string& to) override {
        if (::rename(from.c_str(), to.c_str()) != 0) {
            fail("rename", from);
        }
    }

    void sync_dir(const std::string& path) override {
        const int fd = open_retry(path, O_RDONLY | O_CLOEXEC | O_DIRECTORY | O_NOFOLLOW);
#if defined(F_FULLFSYNC)
        if (full_fsync(fd) != 0) {
#else
        if (::fsync(fd) != 0) {
#endif
            const int error = errno;
            ::close(fd);
            throw std::system_error(error, std::generic_category(), "fsync " + path);
        }
        ::close(fd);
    }

    void remove(const std::string& path) override {
        if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
            fail("unlink", path);
        }
    }

    Handle lock(const std::string& path) override {
        const Handle fd = open(path, true, false);
        while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
            if (errno != EINTR) {
                const int error = errno == EAGAIN ? EWOULDBLOCK : errno;
                ::close(fd);
                throw std::system_error(error, std::generic_category(), "flock " + path);
            }
        }
        return fd;
    }

private:
    static Handle open_flags(const std::string& path, int extra_flags) {
        const int fd = open_retry(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | extra_flags);
        struct stat st {};
        const int bad = ::fstat(fd, &st) != 0 ? errno : S_ISREG(st.st_mode) ? 0 : EINVAL;
        if (bad != 0) {
            ::close(fd);
            throw std::system_error(bad, std::generic_category(), "open " + path);
        }
        // The umask may have narrowed 0600 (fine) but the file may also predate us: 0600 always.
        if ((st.st_mode & 07777) != 0600 && ::fchmod(fd, 0600) != 0) {
            const int error = errno;
            ::close(fd);
            throw std::system_error(error, std::generic_category(), "fchmod " + path);
        }
        return fd;
    }

#if defined(F_FULLFSYNC)
    // F_FULLFSYNC, falling back to fsync() where the file system does not support it.
    static int full_fsync(int fd) noexcept {
        if (::fcntl(fd, F_FULLFSYNC) == 0) {
            return 0;
        }
        return errno == ENOTSUP || errno == EINVAL ? ::fsync(fd) : -1;
    }
#endif

    [[noreturn]] static void fail(const char* what, const std::string& path) {
        throw std::system_error(errno, std::generic_category(), std::string(what) + " " + path);
    }

    static int open_retry(const std::string& path, int flags) {
        for (;;) {
            const int fd = ::open(path.c_str(), flags, 0600);
            if (fd >= 0) {
                return fd;
            }
            if (errno != EINTR) {
                fail("open", path);
            }
        }
    }
};

// The process-wide PosixFileSystem that stores use when no file system is given.
inline FileSystem& default_file_system() noexcept {
    static PosixFileSystem fs;
    return fs;
}

}  // namespace bulwark

#endif  // BULWARK_DETAIL_FILE_SYSTEM_HPP
// #include <bulwark/detail/group_commit.hpp>
// GroupCommit: one journal sync shared by every writer waiting for one (private).
#ifndef BULWARK_DETAIL_GROUP_COMMIT_HPP
#define BULWARK_DETAIL_GROUP_COMMIT_HPP

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

// #include <bulwark/detail/file_system.hpp> (already included above)
// #include <bulwark/detail/mutex.hpp> (already included above)
// #include <bulwark/journal_errors.hpp>
// The errors of the journal-backed file stores: JournalError and the errors derived from it.
#ifndef BULWARK_JOURNAL_ERRORS_HPP
#define BULWARK_JOURNAL_ERRORS_HPP

#include <cstdint>
#include <stdexcept>
#include <string>
#include <system_error>

namespace bulwark {

// Every error a journal-backed store (FileDeadLetterStore, FileQueueStore) raises about its files
// derives from this; code() is the operating system's error when there was one. Messages name
// the store, paths and offsets, never payload bytes.
class JournalError : public std::runtime_error {
public:
    explicit JournalError(const std::string& what, std::error_code code = {})
        : std::runtime_error(what), code_(code) {}

    std::error_code code() const noexcept { return code_; }

private:
    std::error_code code_;
};

// Another store (in this process or another) holds the directory's lock file.
class JournalLockedError : public JournalError {
public:
    using JournalError::JournalError;
};

// The journal is damaged in a way the recovery mode does not accept; offset() is where.
class JournalCorruptError : public JournalError {
public:
    JournalCorruptError(const std::string& what, std::uint64_t offset)
        : JournalError(what), offset_(offset) {}

    std::uint64_t offset() const noexcept { return offset_; }

private:
    std::uint64_t offset_;
};

// The journal was written by a newer format version than this build reads.
class JournalVersionError : public JournalError {
public:
    JournalVersionError(const std::string& what, std::uint32_t version)
        : JournalError(what), version_(version) {}

    std::uint32_t version() const noexcept { return version_; }

private:
    std::uint32_t version_;
};

// A mutation's journal write or sync failed: the mutation did not happen (it is not
// acknowledged; after a failed sync its record may still surface after a restart).
// poisoned() tells whether the store refuses mutations from now on.
class JournalIoError : public JournalError {
public:
    JournalIoError(const std::string& what, std::error_code code, bool poisoned)
        : JournalError(what, code), poisoned_(poisoned) {}

    bool poisoned() const noexcept { return poisoned_; }

private:
    bool poisoned_;
};

// A mutation on a poisoned store: an earlier sync (or an unrecoverable write) failed, so what the
// journal holds is unknown. Reads still work; reopen the store to recover.
class JournalPoisonedError : public JournalError {
public:
    using JournalError::JournalError;
};

}  // namespace bulwark

#endif  // BULWARK_JOURNAL_ERRORS_HPP

namespace bulwark {
namespace detail {

// Lets writers that appended to a file without syncing it wait, holding no other lock, until
// what they wrote is durable, while one of them syncs for all (group commit, as PostgreSQL's WAL
// and RocksDB's write groups do): while a sync runs, the writers arriving queue up, and the next
// sync covers all of them.
//   const std::uint64_t ticket = group.wrote(records);   // under the writer's lock, after write
//   ...unlock...
//   group.await(ticket);                                 // durable, or throws
// A ticket is the number of records written so far, the writer's own included; await(t) returns
// once a sync that began after ticket t was published has completed. A failed sync poisons:
// await() then throws JournalIoError for every ticket not durable before it, and the
// owner refuses changes. The file is replaced (compaction) only while no sync runs.
// Thread-safe. Lock order: the journal owner's mutex first, then this one's (await() takes only
// this one, so it may be called with or without the owner's).
class GroupCommit {
public:
    // The file system must outlive this.
    // `store_name` (static storage) names the owner in errors.
    explicit GroupCommit(FileSystem& fs,
                         const char* store_name = "bulwark::FileDeadLetterStore") noexcept
        : fs_(fs), store_name_(store_name) {}

    // Publishes `records` records just written to the file; returns their ticket.
    std::uint64_t wrote(std::uint64_t records) {
        LockGuard lock(mutex_);
        written_ += records;
        return written_;
    }

    // Everything written so far: the ticket covering every record already in the file.
    std::uint64_t written() const {
        LockGuard lock(mutex_);
        return written_;
    }

    // Records known durable: every ticket up to it.
    std::uint64_t durable() const {
        LockGuard lock(mutex_);
        return durable_;
    }

    // Records written but not yet known durable.
    std::uint64_t unsynced() const {
        LockGuard lock(mutex_);
        return written_ - durable_;
    }

    // Syncs done by await() (the owner counts its own).
    std::uint64_t syncs() const {
        LockGuard lock(mutex_);
        return syncs_;
    }

    // The owner synced the file (or wrote a synced replacement) while no write could happen:
    // everything written is durable.
    void synced_all() {
        LockGuard lock(mutex_);
        durable_ = written_;
        wake_covered();
    }

    // Makes `file` the handle later syncs use: replace() (which closes the old one) runs once no
    // sync is running, and none starts until it has returned.
    template <class Replace>
    void replace_file(FileSystem::Handle file, Replace&& replace) {
        UniqueLock lock(mutex_);
        idle_.wait(lock.native(), [this]() BULWARK_NO_THREAD_SAFETY_ANALYSIS {
            return !syncing_;  // (mutex_ is held while the predicate runs)
        });
        std::forward<Replace>(replace)();
        file_ = file;
    }

    // Returns once every record up to `ticket` is durable, syncing for every writer waiting if
    // no sync is running. Throws JournalIoError (poisoned) if a sync failed first.
    void await(std::uint64_t ticket) {
        UniqueLock lock(mutex_);
        while (durable_ < ticket) {
            if (poisoned_) {
                throw JournalIoError(
                    std::string(store_name_) +
                        ": the store was poisoned before this change was synced (it may or may not "
                        "be on disk): " +
                        poison_reason_,
                    failure_, true);
            }
            if (!syncing_) {
                lead(lock.native());
                continue;
            }
            // Queue up: woken alone, when a sync covered the ticket or to lead the next one (which
            // another writer may have started meanwhile: then queue again).
            Waiter self{ticket};
            self.next = waiters_;
            waiters_ = &self;
            while (durable_ < ticket && !poisoned_ && !self.lead) {
                self.woken.wait(lock.native());
            }
            unlink(self);
        }
    }

    // Refuses every later change; the first reason is kept.
    void poison(std::string_view reason) noexcept {
        LockGuard lock(mutex_);
        poison_locked(reason, {});
        wake_covered();
    }

    bool poisoned() const {
        LockGuard lock(mutex_);
        return poisoned_;
    }

    std::string poison_reason() const {
        LockGuard lock(mutex_);
        return poison_reason_;
    }

private:
    // A writer waiting in await(), on its own stack: the leader wakes exactly the ones a sync
    // covered (a context switch is dear, more so in a VM), and hands the lead to one left over.
    struct Waiter {
        explicit Waiter(std::uint64_t t) noexcept : ticket(t) {}
        std::uint64_t ticket;
        bool lead = false;
        Waiter* next = nullptr;
        std::condition_variable woken;
    };

    void unlink(Waiter& w) BULWARK_REQUIRES(mutex_) {
        for (Waiter** at = &waiters_; *at != nullptr; at = &(*at)->next) {
            if (*at == &w) {
                *at = w.next;
                return;
            }
        }
    }

    // Wakes every waiter whose records are durable, or all of them once poisoned.
    void wake_covered() BULWARK_REQUIRES(mutex_) {
        for (Waiter* w = waiters_; w != nullptr; w = w->next) {
            if (poisoned_ || w->ticket <= durable_) {
                w->woken.notify_one();
            }
        }
    }

    // Syncs everything written so far, without the lock, so that the writers that arrive
    // meanwhile queue up for the next sync; wakes the writers it covered and hands the lead to
    // one still waiting. (Measured on a 2-core VM: letting the leader go on syncing for the next
    // group, or yielding before a sync for late writers, gained nothing and cost a single writer
    // latency.) `lock` holds mutex_; it is released around the sync through the
    // std::unique_lock itself, which the analysis does not follow (it sees mutex_ held
    // throughout; nothing guarded is touched while it is not).
    void lead(std::unique_lock<std::mutex>& lock) BULWARK_REQUIRES(mutex_) {
        syncing_ = true;
        const std::uint64_t target = written_;
        const FileSystem::Handle file = file_;
        lock.unlock();
        bool failed = false;
        std::error_code code;
        std::string why;
        try {
            fs_.sync(file);
        } catch (const std::exception& e) {
            // Any failure, std::bad_alloc included (the file system builds its error message),
            // leaves the file's state unknown: the next fdatasync could return 0 for pages the
            // kernel dropped.
            failed = true;
            if (const auto* system = dynamic_cast<const std::system_error*>(&e)) {
                code = system->code();
            }
            try {
                why = std::string("a journal sync failed: ") + e.what();
            } catch (...) {  // NOLINT(bugprone-empty-catch): out of memory; poisoned anyway
            }
        } catch (...) {
            // Not an I/O error (a test's simulated crash): give the lead up and rethrow.
            lock.lock();
            syncing_ = false;
            hand_off();
            throw;
        }
        lock.lock();
        if (failed) {
            // What reached the disk is unknown (the kernel may have dropped the dirty pages).
            poison_locked(why.empty() ? std::string_view("a journal sync failed") : why, code);
        } else {
            durable_ = std::max(durable_, target);
            ++syncs_;
        }
        syncing_ = false;
        wake_covered();
        hand_off();
    }

    // After a leader's last sync: the lead goes to a writer still waiting, if any.
    void hand_off() BULWARK_REQUIRES(mutex_) {
        if (!poisoned_) {
            for (Waiter* w = waiters_; w != nullptr; w = w->next) {
                if (w->ticket > durable_) {
                    w->lead = true;
                    w->woken.notify_one();
                    break;
                }
            }
        }
        idle_.notify_all();  // replace_file()
    }

    // Never throws: a leader that could not record why must still end its sync.
    void poison_locked(std::string_view reason, std::error_code code) noexcept
        BULWARK_REQUIRES(mutex_) {
        if (!poisoned_) {
            poisoned_ = true;
            failure_ = code;
            try {
                poison_reason_.assign(reason.data(), reason.size());
            } catch (...) {  // NOLINT(bugprone-empty-catch): out of memory; poisoned all the same
            }
        }
    }

    FileSystem& fs_;
    const char* const store_name_;
    mutable Mutex mutex_;
    std::condition_variable idle_;  // no sync runs: the file may be replaced
    Waiter* waiters_ BULWARK_GUARDED_BY(mutex_) = nullptr;
    FileSystem::Handle file_ BULWARK_GUARDED_BY(mutex_) = -1;
    std::uint64_t written_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::uint64_t durable_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::uint64_t syncs_ BULWARK_GUARDED_BY(mutex_) = 0;
    bool syncing_ BULWARK_GUARDED_BY(mutex_) = false;
    bool poisoned_ BULWARK_GUARDED_BY(mutex_) = false;
    std::string poison_reason_ BULWARK_GUARDED_BY(mutex_);
    std::error_code failure_ BULWARK_GUARDED_BY(mutex_);
};

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_GROUP_COMMIT_HPP
// #include <bulwark/detail/indexed_dead_letter_store.hpp> (already included above)
// #include <bulwark/detail/journal.hpp>
// The journal format: frames, CRC-32C, the dead-letter records and recovery scans (private).
#ifndef BULWARK_DETAIL_JOURNAL_HPP
#define BULWARK_DETAIL_JOURNAL_HPP

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// #include <bulwark/clock.hpp> (already included above)
// #include <bulwark/dead_letter_store.hpp> (already included above)
// #include <bulwark/detail/dead_letter_index.hpp> (already included above)
// #include <bulwark/detail/file_system.hpp> (already included above)
// #include <bulwark/detail/random.hpp> (already included above)

// The dead-letter journal's on-disk format: CRC-32C, little-endian fixed-width integers,
// length-prefixed strings, salted record framing, and the encoding of each record type. No I/O
// here: the store reads the whole file and hands the bytes to check_frame(). See
// docs/file_dead_letter_store.md for the layout.

namespace bulwark {
namespace detail {
namespace journal {

// "BWDLQJNL", the format version (u32), the file's salt (u64, random, new for every file
// written) and the CRC-32C of the 20 bytes before it (u32).
inline constexpr std::array<char, 8> magic = {'B', 'W', 'D', 'L', 'Q', 'J', 'N', 'L'};
inline constexpr std::uint32_t format_version = 3;
// Version 2 journals (bulwark 0.x, frames without a sequence) are read and rewritten as version 3
// on open.
inline constexpr std::uint32_t oldest_readable_version = 2;
inline constexpr std::size_t header_size = 24;
// Version 3: [u32 length of type+payload][u32 header check][u32 body CRC][u64 sequence][u8 type]
// [payload]
//   header check = CRC-32C of (salt; length, sequence, type); body CRC = CRC-32C of (salt;
//   payload).
// The sequence is 1 for a file's first frame and one more for each frame after it, so a frame
// that is duplicated, replayed or moved (a sector written twice, a stale block) does not fit
// where it is found. The salt (new for every file) keeps a frame of another file from checking.
// Version 2 had no sequence: [u32 length][u32 header check over (length, type)][u32 body CRC]
// [u8 type][payload].
inline constexpr std::size_t frame_overhead = 21;
// The largest type+payload a frame may declare: a reader refuses longer frames before looking
// at them, so no allocation or CRC is ever sized by an unchecked length.
inline constexpr std::uint32_t max_frame_bytes = std::uint32_t{256} << 20U;

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as in iSCSI, ext4 and LevelDB.
// The journal's byte order, whatever the platform's: little-endian fixed-width unsigned integers.
template <class U>
void put_le(char* out, U v) noexcept {
    for (unsigned i = 0; i < sizeof(U); ++i) {
        out[i] = static_cast<char>((v >> (8U * i)) & 0xFFU);
    }
}

template <class U>
U get_le(const char* in) noexcept {
    U v = 0;
    for (unsigned i = 0; i < sizeof(U); ++i) {
        v |= static_cast<U>(static_cast<U>(static_cast<unsigned char>(in[i])) << (8U * i));
    }
    return v;
}

// Slicing-by-8 tables: table[0] is the bytewise table; table[k][b] is the CRC of byte b followed
// by k zero bytes, so that 8 bytes are folded with 8 lookups and no dependency between them.
inline const std::array<std::array<std::uint32_t, 256>, 8>& crc32c_tables() noexcept {
    static const std::array<std::array<std::uint32_t, 256>, 8> tables = [] {
        std::array<std::array<std::uint32_t, 256>, 8> t{};
        for (std::uint32_t i = 0; i < 256; ++i) {
            std::uint32_t c = i;
            for (int k = 0; k < 8; ++k) {
                c = (c & 1U) != 0 ? (c >> 1U) ^ 0x82F63B78U : c >> 1U;
            }
            t[0][i] = c;
        }
        for (std::uint32_t i = 0; i < 256; ++i) {
            for (std::size_t k = 1; k < 8; ++k) {
                t[k][i] = (t[k - 1][i] >> 8U) ^ t[0][t[k - 1][i] & 0xFFU];
            }
        }
        return t;
    }();
    return tables;
}

inline std::uint32_t crc32c(std::string_view bytes, std::uint32_t crc = 0) noexcept {
    const std::array<std::array<std::uint32_t, 256>, 8>& t = crc32c_tables();
    crc = ~crc;
    const char* p = bytes.data();
    std::size_t n = bytes.size();
    for (; n >= 8; p += 8, n -= 8) {
        const std::uint32_t lo = crc ^ get_le<std::uint32_t>(p);
        const auto hi = get_le<std::uint32_t>(p + 4);
        crc = t[7][lo & 0xFFU] ^ t[6][(lo >> 8U) & 0xFFU] ^ t[5][(lo >> 16U) & 0xFFU] ^
              t[4][lo >> 24U] ^ t[3][hi & 0xFFU] ^ t[2][(hi >> 8U) & 0xFFU] ^
              t[1][(hi >> 16U) & 0xFFU] ^ t[0][hi >> 24U];
    }
    for (; n > 0; ++p, --n) {
        crc = t[0][(crc ^ static_cast<unsigned char>(*p)) & 0xFFU] ^ (crc >> 8U);
    }
    return ~crc;
}

// The CRC seed of a file: the CRC-32C of its salt (8 bytes, little-endian). Every check of a
// frame starts from it, so a frame encoded for another file (or by someone who cannot read this
// one) does not check here.
inline std::uint32_t salt_seed(std::uint64_t salt) noexcept {
    std::array<char, 8> bytes{};
    put_le(bytes.data(), salt);
    return crc32c(std::string_view(bytes.data(), bytes.size()));
}

// How the frames of one file are checked: its salt_seed() and its format version.
struct Framing {
    std::uint32_t seed = 0;
    std::uint32_t version = format_version;

    // The bytes before a frame's type: length, header check, body CRC (and sequence, version 3).
    std::size_t head_size() const noexcept { return version >= 3 ? 20 : 12; }
    std::size_t overhead() const noexcept { return head_size() + 1; }
};

// The header check of a frame: covers its length, sequence (version 3) and type.
inline std::uint32_t header_check(const Framing& f, std::uint32_t length, std::uint64_t sequence,
                                  unsigned char type) noexcept {
    std::array<char, 13> bytes{};
    put_le(bytes.data(), length);
    std::size_t n = 4;
    if (f.version >= 3) {
        put_le(bytes.data() + n, sequence);
        n += 8;
    }
    bytes[n++] = static_cast<char>(type);
    return crc32c(std::string_view(bytes.data(), n), f.seed);
}

// Up to `size` bytes from the operating system's random source (/dev/urandom); false when it
// cannot be read. The journal is POSIX-only, so this needs neither <random> nor a libc extension.
inline bool os_random_bytes(void* out, std::size_t size) noexcept {
    int fd = -1;
    do {
        fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        return false;
    }
    auto* bytes = static_cast<unsigned char*>(out);
    std::size_t got = 0;
    while (got < size) {
        const ssize_t n = ::read(fd, bytes + got, size - got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        got += static_cast<std::size_t>(n);
    }
    ::close(fd);
    return got == size;
}

// A fresh random salt (the system's random source, mixed with the time and an address in case
// it cannot be read).
inline std::uint64_t new_salt() {
    std::uint64_t salt =
        static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    std::uint64_t entropy = 0;
    if (os_random_bytes(&entropy, sizeof entropy)) {
        salt ^= entropy;
    }
    static int anchor = 0;
    salt ^= static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(&anchor));
    // One SplitMix64 step spreads every input bit over the whole salt.
    return SplitMix64(salt).next();
}

enum class RecordType : std::uint8_t {
    add = 1,         // a whole DeadLetter: a new add, or a snapshot written by compaction
    dismiss = 2,     // id, note
    outcome = 3,     // id, the appended attempt, resent or not (redrives + 1)
    categorize = 4,  // id, category, tags to add when missing
    remove = 5,      // id, cause (purge or eviction)
    counters = 6,    // the cumulative counters, first record of a compacted journal
    batch = 7,       // the frames of one mutation that changes several records: all or none
};

enum class RemoveCause : std::uint8_t { purge = 0, evict = 1 };

// The counters a journal carries across compaction (the rest of DeadLetterStats is either
// recomputed from the records or counts events since open).
using Counters = DeadLetterCounters;

// One decoded record; which fields mean something depends on `type`.
struct Record {
    RecordType type = RecordType::add;
    DeadLetter letter;                       // add
    bool snapshot = false;                   // add: written by compaction, does not count as an add
    std::string id;                          // dismiss, outcome, categorize, remove
    std::string text;                        // dismiss: note; categorize: category
    std::vector<std::string> tags;           // categorize
    DeadLetterAttempt attempt;               // outcome
    bool resent = false;                     // outcome
    RemoveCause cause = RemoveCause::purge;  // remove
    Counters counters;                       // counters
    std::vector<Record> batch;               // batch to encode: the records, none a batch
    // batch as decoded: its inner frames, a view into the bytes decoded (valid while they are;
    // for_each_in_batch() decodes them one at a time). `batch` stays empty: a batch of a million
    // records is never held decoded whole.
    std::string_view batch_frames;
};

inline std::uint32_t load_u32(std::string_view bytes, std::size_t at) noexcept {
    return get_le<std::uint32_t>(bytes.data() + at);
}

inline std::uint64_t load_u64(std::string_view bytes, std::size_t at) noexcept {
    return get_le<std::uint64_t>(bytes.data() + at);
}

class Writer {
public:
    explicit Writer(std::string& out) noexcept : out_(out) {}

    void u8(std::uint8_t v) { out_.push_back(static_cast<char>(v)); }
    void u32(std::uint32_t v) { le(v); }
    void u64(std::uint64_t v) { le(v); }
    void i64(std::int64_t v) { u64(static_cast<std::uint64_t>(v)); }
    void time(WallTime t) { i64(static_cast<std::int64_t>(t.time_since_epoch().count())); }
    void str(std::string_view s) {
        u32(static_cast<std::uint32_t>(s.size()));
        out_.append(s.data(), s.size());
    }
    void strs(const std::vector<std::string>& v) {
        u32(static_cast<std::uint32_t>(v.size()));
        for (const std::string& s : v) {
            str(s);
        }
    }

private:
    template <class U>
    void le(U v) {
        char bytes[sizeof(U)];
        put_le(bytes, v);
        out_.append(bytes, sizeof(U));
    }

    std::string& out_;
};

// Reads what Writer wrote; every read is bounds-checked and a failed read turns ok() false (and
// every later read returns zero or empty).
class Reader {
public:
    explicit Reader(std::string_view bytes) noexcept : bytes_(bytes) {}

    bool ok() const noexcept { return ok_; }
    bool at_end() const noexcept { return pos_ == bytes_.size(); }

    std::uint8_t u8() noexcept {
        if (!need(1)) {
            return 0;
        }
        return static_cast<std::uint8_t>(bytes_[pos_++]);
    }
    std::uint32_t u32() noexcept { return le<std::uint32_t>(); }
    std::uint64_t u64() noexcept { return le<std::uint64_t>(); }
    std::int64_t i64() noexcept { return static_cast<std::int64_t>(u64()); }
    WallTime time() noexcept { return WallTime{Duration{i64()}}; }
    // The length is checked against the bytes left before anything is allocated.
    std::string str() {
        const std::uint32_t n = u32();
        if (!need(n)) {
            return {};
        }
        std::string s(bytes_.substr(pos_, n));
        pos_ += n;
        return s;
    }
    // As str(), without the copy: a view into the bytes being read (valid while they are).
    std::string_view view() noexcept {
        const std::uint32_t n = u32();
        if (!need(n)) {
            return {};
        }
        const std::string_view s = bytes_.substr(pos_, n);
        pos_ += n;
        return s;
    }
    std::vector<std::string> strs() {
        const std::uint32_t n = u32();
        std::vector<std::string> v;
        // Each string takes at least its 4-byte length: a count that cannot fit fails here.
        if (!need_count(n, 4)) {
            return v;
        }
        for (std::uint32_t i = 0; i < n && ok_; ++i) {
            v.push_back(str());
        }
        return v;
    }
    bool need_count(std::uint32_t n, std::size_t min_size) noexcept {
        if (ok_ && n > (bytes_.size() - pos_) / min_size) {
            ok_ = false;
        }
        return ok_;
    }

private:
    bool need(std::size_t n) noexcept {
        if (ok_ && n > bytes_.size() - pos_) {
            ok_ = false;
        }
        return ok_;
    }

    template <class U>
    U le() noexcept {
        if (!need(sizeof(U))) {
            return 0;
        }
        const U v = get_le<U>(bytes_.data() + pos_);
        pos_ += sizeof(U);
        return v;
    }

    std::string_view bytes_;
    std::size_t pos_ = 0;
    bool ok_ = true;
};

// The body of a batch record, for every store's records: each inner record as a u32 length,
// then its type+payload (encode(record, out) appends those); the batch frame's checks cover
// them all.
template <class Record, class Encode>
void encode_inner(const std::vector<Record>& records, std::string& out, const Encode& encode) {
    for (const Record& inner : records) {
        const std::size_t at = out.size();
        out.append(4, '\0');
        encode(inner, out);
        put_le(&out[at], static_cast<std::uint32_t>(out.size() - at - 4));
    }
}

// Decodes the inner records of a batch's body (`frames`) one at a time into `scratch` with
// decode(body, Record&) and calls f(Record&) with each (f may move from it); false, stopping
// there, at the first that does not decode or does not fit.
template <class Record, class Decode, class F>
bool for_each_inner(std::string_view frames, Record& scratch, const Decode& decode, F&& f) {
    std::size_t at = 0;
    while (at < frames.size()) {
        if (frames.size() - at < 4) {
            return false;
        }
        const std::uint32_t length = load_u32(frames, at);
        if (length == 0 || length > frames.size() - at - 4) {
            return false;
        }
        if (!decode(frames.substr(at + 4, length), scratch)) {
            return false;
        }
        f(scratch);
        at += 4 + std::size_t{length};
    }
    return true;
}

inline void encode_letter(Writer& w, const DeadLetter& d) {
    w.str(d.id);
    w.str(d.type);
    w.str(d.payload);
    w.str(d.error);
    w.u8(static_cast<std::uint8_t>(d.reason));
    w.str(d.category);
    w.strs(d.tags);
    w.u32(static_cast<std::uint32_t>(d.attempts.size()));
    for (const DeadLetterAttempt& a : d.attempts) {
        w.time(a.at);
        w.str(a.channel);
        w.str(a.error);
    }
    w.time(d.created);
    w.time(d.last_attempt);
    w.u8(static_cast<std::uint8_t>(d.status));
    w.u32(d.redrives);
    w.str(d.note);
}

// The size of an add record's frame for `d`, without encoding it: what compaction would write.
inline std::uint64_t snapshot_frame_size(const DeadLetter& d) noexcept {
    std::uint64_t n = frame_overhead + 1;  // + the snapshot flag
    n += 4 + d.id.size() + 4 + d.type.size() + 4 + d.payload.size() + 4 + d.error.size() + 1;
    n += 4 + d.category.size() + 4;
    for (const std::string& t : d.tags) {
        n += 4 + t.size();
    }
    n += 4;
    for (const DeadLetterAttempt& a : d.attempts) {
        n += 8 + 4 + a.channel.size() + 4 + a.error.size();
    }
    n += 8 + 8 + 1 + 4 + 4 + d.note.size();
    return n;
}

// Appends the type and payload of `r` to `out` (a frame without its head).
inline void encode_body(const Record& r, std::string& out) {
    Writer w(out);
    w.u8(static_cast<std::uint8_t>(r.type));
    switch (r.type) {
        case RecordType::add:
            w.u8(r.snapshot ? 1 : 0);
            encode_letter(w, r.letter);
            break;
        case RecordType::dismiss:
            w.str(r.id);
            w.str(r.text);
            break;
        case RecordType::outcome:
            w.str(r.id);
            w.time(r.attempt.at);
            w.str(r.attempt.channel);
            w.str(r.attempt.error);
            w.u8(r.resent ? 1 : 0);
            break;
        case RecordType::categorize:
            w.str(r.id);
            w.str(r.text);
            w.strs(r.tags);
            break;
        case RecordType::remove:
            w.str(r.id);
            w.u8(static_cast<std::uint8_t>(r.cause));
            break;
        case RecordType::counters:
            w.u64(r.counters.added);
            w.u64(r.counters.evicted);
            w.u64(r.counters.purged);
            w.u64(r.counters.resent);
            w.u64(r.counters.redrive_failures);
            break;
        case RecordType::batch:
            encode_inner(r.batch, out,
                         [](const Record& inner, std::string& to) { encode_body(inner, to); });
            break;
    }
}

inline bool decode_letter(Reader& r, DeadLetter& d) {
    d.id = r.str();
    d.type = r.str();
    d.payload = r.str();
    d.error = r.str();
    const std::uint8_t reason = r.u8();
    d.category = r.str();
    d.tags = r.strs();
    const std::uint32_t attempts = r.u32();
    // Each attempt takes at least 16 bytes.
    if (!r.need_count(attempts, 16)) {
        return false;
    }
    for (std::uint32_t i = 0; i < attempts && r.ok(); ++i) {
        DeadLetterAttempt a;
        a.at = r.time();
        a.channel = r.str();
        a.error = r.str();
        d.attempts.push_back(std::move(a));
    }
    d.created = r.time();
    d.last_attempt = r.time();
    const std::uint8_t status = r.u8();
    d.redrives = r.u32();
    d.note = r.str();
    if (!r.ok() || d.id.empty() || reason >= dead_letter_reason_count ||
        status >= dead_letter_status_count) {
        return false;
    }
    d.reason = static_cast<DeadLetterReason>(reason);
    d.status = static_cast<DeadLetterStatus>(status);
    return true;
}

inline bool flag(std::uint8_t v, bool& out) noexcept {
    out = v == 1;
    return v <= 1;
}

// Bounds the CRC work of a resynchronising scan over hostile bytes (defence in depth: a scan
// checks each candidate's body once and then skips it, so it is linear in the file anyway).
struct ScanBudget {
    std::uint64_t bytes_left = 0;
    bool exhausted = false;
};

inline bool decode_record(std::string_view body, Record& out, bool allow_batch = true);

// Decodes the inner records of a decoded batch one at a time into a scratch record and calls
// f(Record&) with each (f may move from it); false, stopping there, at the first that does not
// decode. decode_record() has checked them all before it accepted the batch.
template <class F>
bool for_each_in_batch(const Record& batch, F&& f) {
    Record inner;
    return for_each_inner(
        batch.batch_frames, inner,
        [](std::string_view body, Record& out) { return decode_record(body, out, false); },
        std::forward<F>(f));
}

// Decodes type+payload; false for anything that is not exactly one well-formed record.
// A batch may not contain a batch (so that hostile bytes cannot nest frames deeply).
inline bool decode_record(std::string_view body, Record& out, bool allow_batch) {
    Reader r(body);
    const std::uint8_t type = r.u8();
    out = Record{};
    bool good = true;
    switch (type) {
        case static_cast<std::uint8_t>(RecordType::add):
            out.type = RecordType::add;
            good = flag(r.u8(), out.snapshot) && decode_letter(r, out.letter);
            break;
        case static_cast<std::uint8_t>(RecordType::dismiss):
            out.type = RecordType::dismiss;
            out.id = r.str();
            out.text = r.str();
            break;
        case static_cast<std::uint8_t>(RecordType::outcome):
            out.type = RecordType::outcome;
            out.id = r.str();
            out.attempt.at = r.time();
            out.attempt.channel = r.str();
            out.attempt.error = r.str();
            good = flag(r.u8(), out.resent);
            break;
        case static_cast<std::uint8_t>(RecordType::categorize):
            out.type = RecordType::categorize;
            out.id = r.str();
            out.text = r.str();
            out.tags = r.strs();
            break;
        case static_cast<std::uint8_t>(RecordType::remove): {
            out.type = RecordType::remove;
            out.id = r.str();
            const std::uint8_t cause = r.u8();
            good = cause <= 1;
            out.cause = static_cast<RemoveCause>(cause);
            break;
        }
        case static_cast<std::uint8_t>(RecordType::counters):
            out.type = RecordType::counters;
            out.counters.added = r.u64();
            out.counters.evicted = r.u64();
            out.counters.purged = r.u64();
            out.counters.resent = r.u64();
            out.counters.redrive_failures = r.u64();
            break;
        case static_cast<std::uint8_t>(RecordType::batch): {
            out.type = RecordType::batch;
            // The inner frames fill the payload exactly; the outer CRC already covered them.
            // Every one is decoded here (into one scratch record, in turn) so that a batch is
            // accepted or refused whole, but none is kept.
            if (!allow_batch) {
                return false;
            }
            out.batch_frames = body.substr(1);
            std::size_t count = 0;
            return for_each_in_batch(out, [&count](Record&) { ++count; }) && count > 0;
        }
        default:
            return false;
    }
    // An outcome without an id is one for a record removed while its handler ran: it only counts.
    if ((out.type == RecordType::dismiss || out.type == RecordType::categorize ||
         out.type == RecordType::remove) &&
        out.id.empty()) {
        return false;
    }
    return good && r.ok() && r.at_end();
}

// What the journal file needs to know of one store's records (the frames, checks, recovery and
// compaction are the same for every store): DeadLetterCodec for FileDeadLetterStore,
// queue_journal::Codec for FileQueueStore. Record types are 1..max_type; a batch record holds the
// records of one mutation (all or none) and never another batch.
struct DeadLetterCodec {
    using Record = journal::Record;
    static constexpr const char* store_name = "bulwark::FileDeadLetterStore";
    static constexpr const char* journal_kind = "bulwark dead-letter journal";
    static constexpr std::array<char, 8> file_magic = magic;
    static constexpr std::uint32_t version = format_version;
    static constexpr std::uint32_t oldest_version = oldest_readable_version;
    static constexpr unsigned char max_type = static_cast<unsigned char>(RecordType::batch);

    static void encode_body(const Record& r, std::string& out) { journal::encode_body(r, out); }
    static bool decode(std::string_view body, Record& out) { return decode_record(body, out); }
    static bool is_batch(const Record& r) noexcept { return r.type == RecordType::batch; }
    template <class F>
    static bool for_each_in_batch(const Record& batch, F&& f) {
        return journal::for_each_in_batch(batch, std::forward<F>(f));
    }
    static Record batch_of(const Record* first, const Record* last) {
        Record batch;
        batch.type = RecordType::batch;
        batch.batch.assign(first, last);
        return batch;
    }
    // An upper bound of the frame `r` encodes to (a batch's share of one, for a batch's records).
    static std::uint64_t frame_estimate(const Record& r) noexcept {
        if (r.type == RecordType::add) {
            return snapshot_frame_size(r.letter);
        }
        std::uint64_t n = frame_overhead + 24 + r.id.size() + r.text.size() +
                          r.attempt.channel.size() + r.attempt.error.size();
        for (const std::string& t : r.tags) {
            n += 4 + t.size();
        }
        return n;
    }
    [[noreturn]] static void too_large(std::size_t size, std::size_t limit) {
        throw_too_large("journal record", "the journal's frame limit", size, limit);
    }
};

// Appends the frame of `r` (a Codec::Record) to `out`, with sequence number `sequence`, as `f`
// frames them. Throws Codec::too_large()'s error (a std::length_error), appending nothing, for a
// frame over `limit` (tests lower it).
template <class Codec = DeadLetterCodec>
void encode_record(const typename Codec::Record& r, std::string& out, const Framing& f,
                   std::uint64_t sequence, std::size_t limit = max_frame_bytes) {
    const std::size_t start = out.size();
    const std::size_t head = f.head_size();
    out.append(head, '\0');  // filled in below, once the length is known
    Codec::encode_body(r, out);
    const std::string_view type_and_payload(out.data() + start + head, out.size() - start - head);
    if (type_and_payload.size() > limit) {
        // A reader refuses such a frame: never write (and so never acknowledge) one. Callers
        // bound what they store far below this; this is the last line.
        const std::size_t size = type_and_payload.size();
        out.resize(start);
        Codec::too_large(size, limit);
    }
    const auto length = static_cast<std::uint32_t>(type_and_payload.size());
    char* const at = &out[start];
    put_le(at, length);
    put_le(at + 4,
           header_check(f, length, sequence, static_cast<unsigned char>(type_and_payload[0])));
    put_le(at + 8, crc32c(type_and_payload.substr(1), f.seed));
    if (f.version >= 3) {
        put_le(at + 12, sequence);
    }
}

// What is at an offset of a journal.
enum class FrameStatus : std::uint8_t {
    good,        // a whole frame: both checks pass and the payload decodes
    torn,        // fewer bytes left than a frame head, or a head that checks but whose frame
                 // extends past the end of the file: an incomplete write
    bad_body,    // the head checks (so the frame's extent is known) but the body CRC does not,
                 // or the payload does not decode
    bad_header,  // the head does not check: not the start of a frame of this file
};

// Checks the frame at `offset` of `bytes` for the file framed as `f`: `size` is set to the frame's
// size whenever its head checks (good, bad_body and a torn frame past the end), `sequence` to its
// sequence number (version 3; 0 before), `record` is filled when good. Never reads outside
// `bytes`; allocates only for decoded strings, each bounded by the frame. With a budget, the body
// CRC is charged to it first (exhausted: returns bad_header).
template <class Codec = DeadLetterCodec>
FrameStatus check_frame(std::string_view bytes, std::size_t offset, const Framing& f,
                        typename Codec::Record& record, std::size_t& size, std::uint64_t& sequence,
                        ScanBudget* budget = nullptr) {
    const std::size_t head = f.head_size();
    if (offset > bytes.size() || bytes.size() - offset < head + 1) {
        return FrameStatus::torn;
    }
    const std::uint32_t length = load_u32(bytes, offset);
    const auto type = static_cast<unsigned char>(bytes[offset + head]);
    sequence = f.version >= 3 ? load_u64(bytes, offset + 12) : 0;
    // Version 3 numbers frames from 1; 0 and the largest value (after which the next would wrap
    // to 0) are never written.
    const bool bad_sequence = f.version >= 3 && (sequence == 0 || sequence == ~std::uint64_t{0});
    if (bad_sequence || length == 0 || length > max_frame_bytes || type < 1 ||
        type > Codec::max_type ||
        header_check(f, length, sequence, type) != load_u32(bytes, offset + 4)) {
        return FrameStatus::bad_header;
    }
    size = head + std::size_t{length};
    if (length > bytes.size() - offset - head) {
        return FrameStatus::torn;
    }
    if (budget != nullptr) {
        if (budget->bytes_left < length) {
            budget->exhausted = true;
            return FrameStatus::bad_header;
        }
        budget->bytes_left -= length;
    }
    const std::string_view body = bytes.substr(offset + head, length);
    if (crc32c(body.substr(1), f.seed) != load_u32(bytes, offset + 8) ||
        !Codec::decode(body, record)) {
        return FrameStatus::bad_body;
    }
    return FrameStatus::good;
}

// Whether the bytes from `offset` to the end of the file are one whole frame whose head is
// damaged: its body CRC matches exactly the rest of the file. (A torn write cannot produce
// that; bit rot in a synced frame's length, header check or type can.)
inline bool whole_frame_with_bad_head(std::string_view bytes, std::size_t offset,
                                      const Framing& f) noexcept {
    const std::size_t head = f.head_size();
    return offset <= bytes.size() && bytes.size() - offset > head &&
           bytes.size() - offset - head <= max_frame_bytes &&
           crc32c(bytes.substr(offset + head + 1), f.seed) == load_u32(bytes, offset + 8);
}

inline std::string encode_header(std::uint64_t salt, std::uint32_t version = format_version,
                                 const std::array<char, 8>& file_magic = magic) {
    std::string out(file_magic.data(), file_magic.size());
    Writer w(out);
    w.u32(version);
    w.u64(salt);
    w.u32(crc32c(out));
    return out;
}

}  // namespace journal
}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_JOURNAL_HPP
// #include <bulwark/detail/journal_file.hpp>
// BasicJournalFile: a store's journal on disk: recovery, appends, syncs, compaction (private).
#ifndef BULWARK_DETAIL_JOURNAL_FILE_HPP
#define BULWARK_DETAIL_JOURNAL_FILE_HPP

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

// #include <bulwark/clock.hpp> (already included above)
// #include <bulwark/config.hpp> (already included above)
// #include <bulwark/dead_letter_store.hpp> (already included above)
// #include <bulwark/detail/dead_letter_index.hpp> (already included above)
// #include <bulwark/detail/file_system.hpp> (already included above)
// #include <bulwark/detail/group_commit.hpp> (already included above)
// #include <bulwark/detail/journal.hpp> (already included above)
// #include <bulwark/file_dead_letter_store_errors.hpp>
// FileDeadLetterStore's errors: its names for the journal errors, and the interrupted reprocess.
#ifndef BULWARK_FILE_DEAD_LETTER_STORE_ERRORS_HPP
#define BULWARK_FILE_DEAD_LETTER_STORE_ERRORS_HPP

#include <cstdint>
#include <string>
#include <system_error>
#include <utility>

// #include <bulwark/dead_letter_store.hpp> (already included above)
// #include <bulwark/journal_errors.hpp> (already included above)

namespace bulwark {

// FileDeadLetterStore raises the journal errors of journal_errors.hpp (shared with
// FileQueueStore); these are their names from before the journal served two stores.
using FileDeadLetterStoreError = JournalError;
using DeadLetterJournalLockedError = JournalLockedError;
using DeadLetterJournalCorruptError = JournalCorruptError;
using DeadLetterJournalVersionError = JournalVersionError;
using DeadLetterJournalIoError = JournalIoError;
using DeadLetterStorePoisonedError = JournalPoisonedError;

// reprocess() stopped part-way: the journal could not record an outcome, or the store was
// poisoned (by this call or another thread) before the next handler call. partial() is what the
// call did up to then, every outcome in it journaled. unrecorded_id() names the record whose
// handler ran but whose outcome was not recorded ("" when the call stopped before a handler
// call): that record stays pending, so a later reprocess may resend it again (at-least-once);
// after a failed sync (poisoned()) its outcome may still surface after a restart.
class DeadLetterReprocessInterruptedError : public DeadLetterJournalIoError {
public:
    DeadLetterReprocessInterruptedError(const std::string& what, std::error_code code,
                                        bool poisoned, ReprocessResult partial,
                                        std::string unrecorded_id)
        : DeadLetterJournalIoError(what, code, poisoned),
          partial_(partial),
          unrecorded_id_(std::move(unrecorded_id)) {}

    const ReprocessResult& partial() const noexcept { return partial_; }
    const std::string& unrecorded_id() const noexcept { return unrecorded_id_; }

private:
    ReprocessResult partial_;
    std::string unrecorded_id_;
};

}  // namespace bulwark

#endif  // BULWARK_FILE_DEAD_LETTER_STORE_ERRORS_HPP
// #include <bulwark/file_dead_letter_store_options.hpp>
// FileDeadLetterStoreOptions: the durable dead-letter store's settings.
#ifndef BULWARK_FILE_DEAD_LETTER_STORE_OPTIONS_HPP
#define BULWARK_FILE_DEAD_LETTER_STORE_OPTIONS_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/journal_options.hpp>
// The journal-backed stores' shared vocabulary: JournalSync, JournalRecovery and JournalStats.
#ifndef BULWARK_JOURNAL_OPTIONS_HPP
#define BULWARK_JOURNAL_OPTIONS_HPP

#include <cstdint>
#include <string>

namespace bulwark {

// When a mutation's journal record is made durable (fsync) before the call returns.
enum class JournalSync : std::uint8_t {
    always,  // every mutation is synced before it returns (default): survives power loss
    batch,   // synced every batch_records records or batch_interval, whichever comes first
    none,    // never synced by the store: survives a process crash, not a power loss
};

// What opening a journal does with damaged bytes (RocksDB's WAL recovery modes). See
// docs/file_dead_letter_store.md for how a torn tail is told from damage.
enum class JournalRecovery : std::uint8_t {
    // An incomplete last write (a crash mid-write) is dropped and its size reported; damage
    // followed by valid records, or a whole last record whose head is damaged, fails the open
    // with the offset and leaves the file untouched (default).
    tolerate_torn_tail,
    // Stops at the first damage and keeps every record before it; the rest is dropped (after a
    // copy of the file is kept as journal.corrupt-<n>).
    point_in_time,
    // Skips each damaged region, counts it, and keeps every valid record after it (salvage: the
    // damaged records are lost); the journal is then rewritten without the damage, after a copy
    // of the file is kept as journal.corrupt-<n>.
    skip_corrupt,
    // Any damage, a torn tail included, fails the open.
    strict,
};

inline const char* to_string(JournalSync mode) noexcept {
    switch (mode) {
        case JournalSync::always:
            return "always";
        case JournalSync::batch:
            return "batch";
        case JournalSync::none:
            return "none";
    }
    return "unknown";
}

inline const char* to_string(JournalRecovery mode) noexcept {
    switch (mode) {
        case JournalRecovery::tolerate_torn_tail:
            return "tolerate_torn_tail";
        case JournalRecovery::point_in_time:
            return "point_in_time";
        case JournalRecovery::skip_corrupt:
            return "skip_corrupt";
        case JournalRecovery::strict:
            return "strict";
    }
    return "unknown";
}

// The journal's health and what the last open found.
struct JournalStats {
    bool poisoned = false;               // mutations are refused (see DeadLetterStorePoisonedError)
    std::string poison_reason;           // why, when poisoned
    std::uint64_t file_bytes = 0;        // journal size now
    std::uint64_t live_bytes = 0;        // what a compaction would write now
    std::uint64_t unsynced_records = 0;  // written but not yet synced (batch, none)
    std::uint64_t recovered_records = 0;   // records replayed by open
    std::uint64_t dropped_tail_bytes = 0;  // damaged or incomplete tail dropped by open
    std::uint64_t corrupt_regions = 0;     // damaged regions skipped by open (skip_corrupt)
    std::uint64_t skipped_bytes = 0;       // their bytes
    // Whole frames of the journal found out of sequence by open: one already replayed (a
    // duplicated or replayed write; never replayed twice), or one after missing frames.
    // strict and tolerate_torn_tail refuse such a journal; point_in_time stops before the first;
    // skip_corrupt skips duplicates and counts each as a corrupt region.
    std::uint64_t duplicate_records = 0;
    std::uint64_t sequence_gaps = 0;
    // The format version of the journal open found, when it rewrote it in the current one (0:
    // it was current).
    std::uint32_t upgraded_from_version = 0;
    std::uint64_t syncs = 0;  // file syncs since open
    std::uint64_t compactions = 0;
    std::uint64_t compaction_failures = 0;  // compactions abandoned; the old journal stayed
    std::uint64_t write_rollbacks = 0;      // failed writes undone by truncation (disk full…)
    // point_in_time and skip_corrupt: the copy of the journal kept, as found, before open
    // dropped or rewrote anything ("" when nothing was dropped).
    std::string corrupt_copy;
};

}  // namespace bulwark

#endif  // BULWARK_JOURNAL_OPTIONS_HPP
// #include <bulwark/time.hpp> (already included above)

namespace bulwark {

struct FileDeadLetterStoreOptions {
    // As InMemoryDeadLetterStoreOptions: records held at most (full: the oldest resolved record
    // is evicted, never a pending one). >= 1. Default 100000. A journal holding more records
    // than this (the limit was lowered) keeps them all; adds then evict one for one.
    std::size_t max_entries = 100000;
    // Larger payloads are refused with DeadLetterTooLargeError. In [1, 64 MiB]. Default 1 MiB.
    std::size_t max_payload_bytes = std::size_t{1} << 20U;
    // All the other strings of a record together above this are refused (see
    // InMemoryDeadLetterStoreOptions). In [1, 16 MiB]. Default 64 KiB.
    std::size_t max_text_bytes = std::size_t{64} << 10U;
    // Attempt history kept per record. In [1, 65536]. Default 64.
    std::size_t max_attempts = 64;
    // Durability of each mutation (see JournalSync). Default always.
    JournalSync sync = JournalSync::always;
    // sync=batch: sync once this many records are unsynced. >= 1. Default 128.
    std::size_t batch_records = 128;
    // sync=batch: sync at the first mutation at least this long after the last sync (there is no
    // background thread: call sync() from a timer to bound a quiet store's window). >= 0.
    // Default 100 ms.
    Duration batch_interval = std::chrono::milliseconds(100);
    // What open does with damage (see JournalRecovery). Default tolerate_torn_tail.
    JournalRecovery recovery = JournalRecovery::tolerate_torn_tail;
    // The journal is rewritten with only the live records once it is larger than both this and
    // twice the live data. >= 4096. Default 4 MiB.
    std::uint64_t compact_min_bytes = std::uint64_t{4} << 20U;

    void validate() const {
        if (max_entries == 0) {
            detail::throw_invalid_option("FileDeadLetterStoreOptions.max_entries", "must be >= 1",
                                         "0");
        }
        if (max_payload_bytes == 0 || max_payload_bytes > (std::size_t{64} << 20U)) {
            detail::throw_invalid_option("FileDeadLetterStoreOptions.max_payload_bytes",
                                         "must be in [1, 67108864]",
                                         std::to_string(max_payload_bytes));
        }
        if (max_text_bytes == 0 || max_text_bytes > (std::size_t{16} << 20U)) {
            detail::throw_invalid_option("FileDeadLetterStoreOptions.max_text_bytes",
                                         "must be in [1, 16777216]",
                                         std::to_string(max_text_bytes));
        }
        if (max_attempts == 0 || max_attempts > 65536) {
            // Redrives append attempts (error text cut to 1 KiB): the bound keeps a record's
            // journal frame readable (payload + text + attempts < the reader's frame limit).
            detail::throw_invalid_option("FileDeadLetterStoreOptions.max_attempts",
                                         "must be in [1, 65536]", std::to_string(max_attempts));
        }
        detail::check_enumerator(sync, JournalSync::none, "FileDeadLetterStoreOptions.sync",
                                 "JournalSync");
        if (batch_records == 0) {
            detail::throw_invalid_option("FileDeadLetterStoreOptions.batch_records", "must be >= 1",
                                         "0");
        }
        if (batch_interval < Duration::zero()) {
            detail::throw_invalid_option("FileDeadLetterStoreOptions.batch_interval",
                                         "must be >= 0", detail::format_duration(batch_interval));
        }
        detail::check_enumerator(recovery, JournalRecovery::strict,
                                 "FileDeadLetterStoreOptions.recovery", "JournalRecovery");
        if (compact_min_bytes < 4096) {
            detail::throw_invalid_option("FileDeadLetterStoreOptions.compact_min_bytes",
                                         "must be >= 4096", std::to_string(compact_min_bytes));
        }
    }
};

}  // namespace bulwark

#endif  // BULWARK_FILE_DEAD_LETTER_STORE_OPTIONS_HPP
// #include <bulwark/journal_errors.hpp> (already included above)
// #include <bulwark/journal_options.hpp> (already included above)
// #include <bulwark/time.hpp> (already included above)

namespace bulwark {

namespace detail {

// Closes a FileSystem handle when it goes out of scope.
class FileHandle {
public:
    FileHandle() = default;
    FileHandle(FileSystem& fs, FileSystem::Handle h) noexcept : fs_(&fs), h_(h) {}
    FileHandle(FileHandle&& other) noexcept : fs_(other.fs_), h_(other.h_) { other.h_ = -1; }
    FileHandle& operator=(FileHandle&& other) noexcept {
        if (this != &other) {
            reset();
            fs_ = other.fs_;
            h_ = other.h_;
            other.h_ = -1;
        }
        return *this;
    }
    FileHandle(const FileHandle&) = delete;
    FileHandle& operator=(const FileHandle&) = delete;
    ~FileHandle() { reset(); }

    FileSystem::Handle get() const noexcept { return h_; }
    void reset() noexcept {
        if (h_ >= 0) {
            fs_->close(h_);
            h_ = -1;
        }
    }

private:
    FileSystem* fs_ = nullptr;
    FileSystem::Handle h_ = -1;
};

// A compacted journal: its bytes and how many frames they hold.
struct JournalSnapshot {
    std::string bytes;
    std::uint64_t frames = 0;
};

// A compacted journal: a header with `salt`, the counters, every record of `index` (as snapshot
// adds, which replay does not count as adds), numbered from 1.
inline JournalSnapshot journal_snapshot(std::uint64_t salt, const DeadLetterCounters& counters,
                                        const DeadLetterIndex& index) {
    const journal::Framing framing{journal::salt_seed(salt)};
    JournalSnapshot out{journal::encode_header(salt), 0};
    journal::Record record;
    record.type = journal::RecordType::counters;
    record.counters = counters;
    journal::encode_record(record, out.bytes, framing, ++out.frames);
    journal::Record add;
    add.type = journal::RecordType::add;
    add.snapshot = true;
    for (const auto& entry : index) {
        add.letter = entry.second;
        journal::encode_record(add, out.bytes, framing, ++out.frames);
    }
    return out;
}

// The size of journal_snapshot() for an empty index.
inline std::uint64_t journal_snapshot_base_size() noexcept {
    return journal::header_size + journal::frame_overhead + 40;
}

// The settings a journal file follows: the journal part of a store's options.
struct JournalOptions {
    JournalSync sync = JournalSync::always;
    std::size_t batch_records = 128;
    Duration batch_interval{};
    JournalRecovery recovery = JournalRecovery::tolerate_torn_tail;
    std::uint64_t compact_min_bytes = std::uint64_t{4} << 20U;

    // From any store options that carry these fields (validated by their owner).
    template <class Options>
    static JournalOptions of(const Options& o) {
        return {o.sync, o.batch_records, o.batch_interval, o.recovery, o.compact_min_bytes};
    }
};

// The journal file of a file store (Codec says whose: journal::DeadLetterCodec for
// FileDeadLetterStore, queue_journal::Codec for FileQueueStore), in the store's directory:
// opening it (creating the
// directory, refusing what is not private, taking the LOCK, recovering as the options' recovery
// mode says, keeping a copy before salvage changes anything), appending frames (a failed write
// rolled back, a failed sync poisoning), syncing as the options' sync mode says, and compacting
// crash-safely (a new journal renamed over the old one). What the records mean is its owner's:
// it replays them into the owner and writes the snapshot the owner gives. Its errors are the
// journal errors (journal_errors.hpp) and name the store (Codec::store_name). Not thread-safe: the
// store's mutex guards it.
template <class Codec>
class BasicJournalFile {
public:
    using Record = typename Codec::Record;

    // The file system, the clock and `group` (over the same file system) must outlive the
    // journal file; `options` are valid.
    BasicJournalFile(FileSystem& fs, Clock& clock, GroupCommit& group, std::string directory,
                     const JournalOptions& options)
        : options_(options),
          fs_(fs),
          group_(group),
          clock_(&clock),
          directory_(trim_slashes(std::move(directory))),
          journal_path_(directory_ + "/journal"),
          temp_path_(directory_ + "/journal.compact") {}

    const std::string& directory() const noexcept { return directory_; }
    bool poisoned() const { return group_.poisoned(); }
    std::string poison_reason() const { return group_.poison_reason(); }

    // All but live_bytes, which the owner of the records knows.
    JournalStats stats() const {
        JournalStats s = stats_;
        s.poisoned = group_.poisoned();
        s.poison_reason = group_.poison_reason();
        s.syncs += group_.syncs();
        s.file_bytes = end_;
        s.unsynced_records = group_.unsynced();
        return s;
    }

    // Opens (creating if missing) the journal in the directory. replay(Record&) is given every
    // record recovered, in order (it may move from it); snapshot(salt) returns a compacted journal
    // of what was replayed so far (journal_snapshot()). A journal of an older format version is
    // rewritten in the current one. reserve(n) hears that about n records may follow. Throws
    // JournalError and its subclasses, or what replay throws.
    template <class Replay, class Snapshot, class Reserve>
    void open(Replay&& replay, const Snapshot& snapshot, const Reserve& reserve) {
        try {
            FileSystem::Info dir = fs_.info(directory_);
            bool created = false;
            if (dir.kind == FileSystem::Kind::missing) {
                try {
                    fs_.make_dir(directory_);
                    created = true;
                } catch (const std::system_error& e) {
                    // Another store (another process) created it since info(): open that
                    // directory like any existing one; its LOCK says whether it is in use.
                    if (e.code() != std::errc::file_exists) {
                        throw;
                    }
                    dir = fs_.info(directory_);
                }
            }
            if (created) {
                fs_.sync_dir(parent_directory());
            } else if (dir.kind != FileSystem::Kind::directory) {
                throw JournalError(std::string(Codec::store_name) + ": " + directory_ +
                                   (dir.kind == FileSystem::Kind::symlink ? " is a symlink; refused"
                                                                          : " is not a directory"));
            } else {
                check_private(directory_, dir, true);
            }
        } catch (const std::system_error& e) {
            throw_io("cannot create directory " + directory_, e);
        }
        try {
            lock_ = FileHandle(fs_, fs_.lock(directory_ + "/LOCK"));
        } catch (const std::system_error& e) {
            if (e.code() == std::errc::operation_would_block ||
                e.code() == std::errc::resource_unavailable_try_again) {
                throw JournalLockedError(std::string(Codec::store_name) + ": " + directory_ +
                                             " is in use by another store (LOCK held)",
                                         e.code());
            }
            throw_io("cannot lock " + directory_, e);
        }
        try {
            fs_.remove(temp_path_);  // an interrupted compaction's output; the journal is whole
            const FileSystem::Info journal = fs_.info(journal_path_);
            if (journal.kind == FileSystem::Kind::missing) {
                install_snapshot(snapshot);
            } else if (journal.kind != FileSystem::Kind::regular) {
                throw JournalError(std::string(Codec::store_name) + ": " + journal_path_ +
                                   (journal.kind == FileSystem::Kind::symlink
                                        ? " is a symlink; refused"
                                        : " is not a regular file"));
            } else {
                check_private(journal_path_, journal, false);
                FileHandle opened(fs_, fs_.open(journal_path_, false, false));
                const FileSystem::Handle handle = opened.get();
                group_.replace_file(handle, [&] { file_ = std::move(opened); });
                recover(fs_.read_all(file_.get()), replay, snapshot, reserve);
            }
            // Before accepting a write, make every name on the way durable: the directory in its
            // parent, the journal in the directory. A crash of an earlier process may have cut
            // short the directory sync after a mkdir, a journal creation or a compaction's
            // rename; records synced into the new file would then vanish with its name at a
            // power loss.
            fs_.sync_dir(parent_directory());
            fs_.sync_dir(directory_);
        } catch (const std::system_error& e) {
            throw_io("cannot open journal " + journal_path_, e);
        }
        last_sync_ = clock_->now();
    }

    // Poisons the journal after a failure its owner found: a record was written but could not be
    // applied in memory (out of memory), so memory and disk differ until a reopen replays the
    // disk. Never throws (it runs while an exception is in flight); the reason may stay empty if
    // even it cannot be allocated.
    void poison_after(const char* why) noexcept { group_.poison(why); }

    // Throws JournalPoisonedError when poisoned.
    void check_writable() const {
        if (group_.poisoned()) {
            throw JournalPoisonedError(std::string(Codec::store_name) + ": " + directory_ +
                                       " is poisoned and refuses changes (reopen it to recover): " +
                                       group_.poison_reason());
        }
    }

    // Appends `records`; returns the ticket to await() (see commit()).
    std::uint64_t append(const std::vector<Record>& records) {
        // One frame per call, so that a crash applies all of it or none; a call too large for one
        // frame (hundreds of MiB) is split into several, each still all or none.
        std::string frames;
        std::size_t first = 0;
        std::uint64_t count = 0;  // frames
        while (first < records.size()) {
            std::size_t last = first;
            std::uint64_t bytes = 0;
            while (
                last < records.size() &&
                (last == first || bytes + Codec::frame_estimate(records[last]) <= record_limit)) {
                bytes += Codec::frame_estimate(records[last]);
                ++last;
            }
            const std::uint64_t sequence = next_sequence_ + count;
            if (last - first == 1) {
                journal::encode_record<Codec>(records[first], frames, framing_, sequence);
            } else {
                const Record batch = Codec::batch_of(records.data() + first, records.data() + last);
                journal::encode_record<Codec>(batch, frames, framing_, sequence);
            }
            ++count;
            first = last;
        }
        return commit(frames, records.size(), count);
    }

    // Appends one record; returns the ticket to await() (see commit()).
    std::uint64_t append(const Record& record) {
        std::string frames;
        journal::encode_record<Codec>(record, frames, framing_, next_sequence_);
        return commit(frames, 1, 1);
    }

    // Returns once the records of `ticket` (what append() returned) are durable; with
    // sync=always, the writer calls it before acknowledging, best with the owner's lock released
    // so that concurrent writers share one sync. Throws JournalIoError (poisoned) if a
    // sync failed. Thread-safe: needs no lock.
    void await(std::uint64_t ticket) const { group_.await(ticket); }

    // Makes every record written so far durable. Throws JournalIoError (and poisons) if
    // the sync fails.
    void sync() {
        try {
            fs_.sync(file_.get());
        } catch (const std::exception& e) {
            // What reached the disk is unknown (the kernel may have dropped the dirty pages):
            // never write again from this state. Poisoned before anything else can fail.
            poison_with("a journal sync failed", e);
            throw JournalIoError(
                std::string(Codec::store_name) +
                    ": journal sync failed (store poisoned): " + std::string(e.what()),
                error_code_of(e), true);
        }
        ++stats_.syncs;
        group_.synced_all();  // every write happens under the owner's lock, held here
        last_sync_ = clock_->now();
    }

    // Runs after a mutation has been applied: compacts (writes snapshot(salt) as the new journal)
    // once the journal is larger than both compact_min_bytes and twice `live_bytes`, the size of
    // a snapshot now. Never throws a std::system_error or std::bad_alloc (the mutation stands); a
    // failure before the rename keeps the old journal, one after it poisons.
    template <class Snapshot>
    void maybe_compact(std::uint64_t live_bytes, const Snapshot& snapshot) {
        const std::uint64_t threshold = std::max(options_.compact_min_bytes, 2 * live_bytes);
        if (end_ <= threshold || end_ < compact_retry_at_ || group_.poisoned()) {
            return;
        }
        if (options_.sync != JournalSync::none && group_.unsynced() > 0) {
            try {
                sync();  // the old journal must be whole if the rename is lost
            } catch (const JournalIoError&) {
                return;  // poisoned; the mutation itself was written
            }
        }
        Stage stage = Stage::writing;
        try {
            install_snapshot(snapshot, &stage);
            ++stats_.compactions;
            compact_retry_at_ = 0;
        } catch (const std::system_error& e) {
            ++stats_.compaction_failures;
            if (stage == Stage::renamed) {
                poison_with("compaction could not sync the directory", e);
                return;
            }
            if (stage == Stage::renaming) {
                // rename(2) failing with EIO may still have replaced the journal: we cannot
                // tell which file later appends would reach.
                poison_with("compaction rename failed", e);
            }
            try {
                fs_.remove(temp_path_);
            } catch (const std::system_error&) {  // NOLINT(bugprone-empty-catch): next open
            }
            compact_retry_at_ = end_ + options_.compact_min_bytes;
        } catch (const std::length_error&) {
            // A record too large for one frame (the options' bounds rule it out) is found while
            // the snapshot is built, before any file is touched: the journal stays as it is and
            // the mutation, already written, stands.
            ++stats_.compaction_failures;
            compact_retry_at_ = end_ + options_.compact_min_bytes;
        } catch (const std::bad_alloc&) {
            // Out of memory, almost always while the snapshot is built (before any file is
            // touched): the old journal stays and the mutation, written and applied, stands. Past
            // the rename we cannot tell which file later appends would reach.
            ++stats_.compaction_failures;
            if (stage != Stage::writing) {
                poison_after("compaction ran out of memory while renaming the new journal");
                return;
            }
            try {
                fs_.remove(temp_path_);
            } catch (const std::exception&) {  // NOLINT(bugprone-empty-catch): next open
            }
            compact_retry_at_ = end_ + options_.compact_min_bytes;
        }
    }

    // sync=batch: syncs what is still unsynced, for a store that closes. Throws
    // std::system_error.
    void sync_unsynced_batch() {
        if (options_.sync == JournalSync::batch && group_.unsynced() > 0 && !group_.poisoned()) {
            fs_.sync(file_.get());
        }
    }

private:
    // Writes a new journal (with a new salt) to the temp file, created exclusively, syncs it,
    // renames it over the journal and syncs the directory: a crash at any point leaves either
    // the old or the new journal whole. Throws std::system_error; `stage` tells the caller how
    // far it got.
    enum class Stage : std::uint8_t { writing, renaming, renamed };
    template <class Snapshot>
    void install_snapshot(const Snapshot& snapshot, Stage* stage = nullptr) {
        Stage ignored = Stage::writing;
        Stage& at = stage != nullptr ? *stage : ignored;
        at = Stage::writing;
        const std::uint64_t salt = journal::new_salt();
        const JournalSnapshot written = snapshot(salt);
        const std::string& bytes = written.bytes;
        fs_.remove(temp_path_);  // a stale one (an earlier failure): O_EXCL below
        FileHandle temp(fs_, fs_.create_new(temp_path_));
        fs_.write_at(temp.get(), 0, bytes);
        fs_.sync(temp.get());
        at = Stage::renaming;
        fs_.rename(temp_path_, journal_path_);
        at = Stage::renamed;
        // A sync of the old file may be running (a writer leading a group commit): the old
        // handle is closed only once it has returned.
        const FileSystem::Handle handle = temp.get();
        group_.replace_file(handle, [&] { file_ = std::move(temp); });
        framing_ = journal::Framing{journal::salt_seed(salt)};
        next_sequence_ = written.frames + 1;
        end_ = bytes.size();
        ++stats_.syncs;
        fs_.sync_dir(directory_);
        // The new file holds every record and is synced, under its name. (With sync=always or
        // batch, maybe_compact() synced the old one first anyway.)
        group_.synced_all();
    }

    // Keeps the journal's bytes as they were before recovery drops or rewrites anything, as
    // journal.corrupt-<n> (0600, synced, its directory entry too): salvage never destroys the
    // only copy. Throws std::system_error.
    void preserve(std::string_view bytes) {
        for (unsigned n = 0;; ++n) {
            const std::string path = journal_path_ + ".corrupt-" + std::to_string(n);
            if (fs_.kind(path) != FileSystem::Kind::missing) {
                if (n >= 9999) {
                    throw std::system_error(EEXIST, std::generic_category(),
                                            "too many " + journal_path_ + ".corrupt-* copies");
                }
                continue;
            }
            FileHandle copy(fs_, fs_.create_new(path));
            fs_.write_at(copy.get(), 0, bytes);
            fs_.sync(copy.get());
            copy.reset();
            fs_.sync_dir(directory_);
            stats_.corrupt_copy = path;
            return;
        }
    }

    // The first whole frame at or after `from`, or npos: a resynchronising scan. A candidate
    // counts only when its salted header check passes; one whose body fails is skipped whole.
    std::size_t find_frame(std::string_view all, std::size_t from,
                           journal::ScanBudget& budget) const {
        namespace j = detail::journal;
        Record ignored;
        std::size_t at = from;
        while (at < all.size()) {
            std::size_t size = 0;
            std::uint64_t sequence = 0;
            switch (j::check_frame<Codec>(all, at, framing_, ignored, size, sequence, &budget)) {
                case j::FrameStatus::good:
                    return at;
                case j::FrameStatus::torn:
                    return std::string_view::npos;  // the rest is an incomplete write
                case j::FrameStatus::bad_body:
                    at += size;
                    break;
                case j::FrameStatus::bad_header:
                    if (budget.exhausted) {
                        return std::string_view::npos;
                    }
                    ++at;
                    break;
            }
        }
        return std::string_view::npos;
    }

    template <class Replay, class Snapshot, class Reserve>
    void recover(const std::string& bytes, Replay& replay, const Snapshot& snapshot,
                 const Reserve& reserve) {
        namespace j = detail::journal;
        const std::string_view all(bytes);
        const bool salvaging = options_.recovery == JournalRecovery::point_in_time ||
                               options_.recovery == JournalRecovery::skip_corrupt;
        if (all.size() < j::header_size) {
            // The magic and version are fixed; the salt and the header CRC are not.
            const std::string header = j::encode_header(0, Codec::version, Codec::file_magic);
            const std::size_t fixed = std::min<std::size_t>(all.size(), 12);
            if (all.empty() || (options_.recovery != JournalRecovery::strict &&
                                header.compare(0, fixed, all.substr(0, fixed)) == 0)) {
                // A header cut short: nothing was ever acknowledged in this file.
                stats_.dropped_tail_bytes = all.size();
                if (salvaging && !all.empty()) {
                    preserve(all);
                }
                file_.reset();
                install_snapshot(snapshot);
                return;
            }
            throw_corrupt(0, "shorter than its header");
        }
        if (all.compare(0, Codec::file_magic.size(),
                        std::string_view(Codec::file_magic.data(), Codec::file_magic.size())) !=
            0) {
            throw_corrupt(0, std::string("not a ") + Codec::journal_kind + " (bad magic)");
        }
        const std::uint32_t version = j::load_u32(all, 8);
        if (j::crc32c(all.substr(0, 20)) != j::load_u32(all, 20)) {
            throw_corrupt(0, "header checksum mismatch");
        }
        if (version == 0) {
            throw_corrupt(8, "format version 0");
        }
        if (version > Codec::version) {
            throw JournalVersionError(std::string(Codec::store_name) + ": journal " +
                                          journal_path_ + " has format version " +
                                          std::to_string(version) + "; this build reads version " +
                                          std::to_string(Codec::version),
                                      version);
        }
        if (version < Codec::oldest_version) {
            throw JournalVersionError(
                std::string(Codec::store_name) + ": journal " + journal_path_ +
                    " has format version " + std::to_string(version) +
                    ", from a pre-release build; this build reads " + "versions " +
                    std::to_string(Codec::oldest_version) + " to " + std::to_string(Codec::version),
                version);
        }
        framing_ = j::Framing{j::salt_seed(j::load_u64(all, 12)), version};
        const bool sequenced = version >= 3;
        std::size_t pos = j::header_size;
        std::size_t good_end = pos;
        j::ScanBudget budget{8 * static_cast<std::uint64_t>(all.size()) + (1U << 20U)};
        // A record takes at least a frame head and a few bytes: size the owner's id table once
        // rather than rehashing it all the way up (over-estimating by no more than the file/16).
        reserve(all.size() / 128);
        Record record;
        next_sequence_ = 1;
        bool after_damage = false;  // a skipped region ends here: its frames' numbers are missing
        while (pos < all.size()) {
            std::size_t size = 0;
            std::uint64_t sequence = 0;
            const j::FrameStatus status =
                j::check_frame<Codec>(all, pos, framing_, record, size, sequence);
            if (status == j::FrameStatus::good && (!sequenced || sequence == next_sequence_ ||
                                                   (after_damage && sequence > next_sequence_))) {
                if (Codec::is_batch(record)) {
                    // Streamed: its records replayed one at a time, never all decoded at once
                    // (decode_record() has checked them all).
                    Codec::for_each_in_batch(record, replay);
                } else {
                    replay(record);
                }
                ++stats_.recovered_records;
                next_sequence_ = sequence + 1;
                after_damage = false;
                pos += size;
                good_end = pos;
                continue;
            }
            if (status == j::FrameStatus::good) {
                // A whole frame of this file, out of place: one seen already (a duplicated or
                // replayed write), or one whose predecessors are missing. Never replayed as if
                // it fitted, whatever the mode: a replayed add would bring back a purged record.
                const bool duplicate = sequence < next_sequence_;
                if (options_.recovery == JournalRecovery::strict ||
                    options_.recovery == JournalRecovery::tolerate_torn_tail) {
                    throw_corrupt(pos, "record out of sequence: number " +
                                           std::to_string(sequence) + " where " +
                                           std::to_string(next_sequence_) + " was expected (" +
                                           (duplicate ? "a duplicated or replayed write"
                                                      : "records are missing before it") +
                                           "; JournalRecovery::point_in_time keeps the records "
                                           "before it, skip_corrupt skips it, both keeping a copy "
                                           "of the file)");
                }
                ++(duplicate ? stats_.duplicate_records : stats_.sequence_gaps);
                if (options_.recovery == JournalRecovery::point_in_time) {
                    break;
                }
                ++stats_.corrupt_regions;
                if (duplicate) {
                    // skip_corrupt: drop it; the frames after it may still fit.
                    stats_.skipped_bytes += size;
                    pos += size;
                    continue;
                }
                // skip_corrupt: records went missing without a trace; keep what follows.
                after_damage = true;
                continue;
            }
            if (options_.recovery == JournalRecovery::strict) {
                throw_corrupt(pos, std::string(status == j::FrameStatus::torn ? "incomplete record"
                                                                              : "damaged record") +
                                       " (recovery mode strict)");
            }
            if (status == j::FrameStatus::torn) {
                break;  // an incomplete last record: a torn write, dropped unread
            }
            // Damage at `pos`. A head that checks gives the frame's extent; otherwise rescan.
            std::size_t next =
                find_frame(all, status == j::FrameStatus::bad_body ? pos + size : pos + 1, budget);
            if (budget.exhausted) {
                if (options_.recovery == JournalRecovery::tolerate_torn_tail) {
                    throw_corrupt(pos, "damaged record; too much damage after it to resynchronise");
                }
                break;  // salvage what came before; the rest is dropped
            }
            if (next == std::string_view::npos) {
                if (status != j::FrameStatus::bad_header ||
                    !j::whole_frame_with_bad_head(all, pos, framing_)) {
                    break;  // nothing whole after the damage: a torn tail
                }
                // A whole, synced last record whose length or type was damaged afterwards.
                if (options_.recovery == JournalRecovery::tolerate_torn_tail) {
                    throw_corrupt(pos,
                                  "the last record is complete but its header is damaged (not a "
                                  "torn write); JournalRecovery::point_in_time or skip_corrupt "
                                  "open the journal without it (keeping a copy of the file)");
                }
                next = all.size();
            } else if (options_.recovery == JournalRecovery::tolerate_torn_tail) {
                throw_corrupt(pos, "damaged record followed by valid records at offset " +
                                       std::to_string(next) +
                                       " (JournalRecovery::skip_corrupt salvages the valid records "
                                       "but drops the damaged ones, keeping a copy of the file)");
            }
            if (options_.recovery == JournalRecovery::point_in_time) {
                break;
            }
            ++stats_.corrupt_regions;
            stats_.skipped_bytes += next - pos;
            pos = next;
            after_damage = true;
        }
        end_ = good_end;
        if (salvaging && (good_end < all.size() || stats_.corrupt_regions > 0)) {
            preserve(all);  // before anything is dropped or rewritten
        }
        if (good_end < all.size()) {
            stats_.dropped_tail_bytes = all.size() - good_end;
            fs_.truncate(file_.get(), good_end);
            fs_.sync(file_.get());
        }
        if (stats_.corrupt_regions > 0 || !sequenced) {
            // Rewrite without the damage, so that the next open in any mode accepts the file; or
            // in the current format, so that every frame appended to it has a sequence.
            install_snapshot(snapshot);
            ++stats_.compactions;
            stats_.upgraded_from_version = sequenced ? 0 : version;
        } else if (good_end == all.size()) {
            // Replayed as it was: it may hold records a process with sync=batch or none wrote but
            // never synced. Make them durable before an add of the same id (a duplicate) can be
            // acknowledged on their strength. (A truncated or rewritten journal is synced above.)
            fs_.sync(file_.get());
            ++stats_.syncs;
        }
    }

    // The directory that holds the store's directory, as the kernel resolves it (a symlinked
    // ancestor is fine; the final component ".." never is one).
    std::string parent_directory() const { return directory_ + "/.."; }

    static std::string octal(std::uint32_t mode) {
        std::string out;
        for (int shift = 9; shift >= 0; shift -= 3) {
            out.push_back(static_cast<char>('0' + ((mode >> static_cast<unsigned>(shift)) & 7U)));
        }
        return out;
    }

    // Refuses a directory or journal that someone else could read or replace: not owned by this
    // process's effective user, a directory open to group or others, a journal with another name.
    static void check_private(const std::string& path, const FileSystem::Info& info,
                              bool directory) {
        const auto me = static_cast<std::uint64_t>(::geteuid());
        std::string problem;
        if (info.owner != me) {
            problem = " is owned by uid " + std::to_string(info.owner) +
                      ", not by this process's effective uid " + std::to_string(me);
        } else if (directory && (info.mode & 077U) != 0) {
            problem = " has mode " + octal(info.mode) +
                      ": group or others have access (make it 0700: chmod 700)";
        } else if (!directory && info.links != 1) {
            problem = " has " + std::to_string(info.links) +
                      " hard links (another name could read or change it)";
        }
        if (!problem.empty()) {
            throw JournalError(std::string(Codec::store_name) + ": " + path + problem +
                               "; refused");
        }
    }

    static std::string trim_slashes(std::string path) {
        while (path.size() > 1 && path.back() == '/') {
            path.pop_back();
        }
        return path;
    }

    [[noreturn]] BULWARK_NOINLINE static void throw_io(const std::string& what,
                                                       const std::system_error& e) {
        throw JournalError(std::string(Codec::store_name) + ": " + what + ": " + e.what(),
                           e.code());
    }

    [[noreturn]] BULWARK_NOINLINE void throw_corrupt(std::uint64_t offset,
                                                     const std::string& why) const {
        throw JournalCorruptError(std::string(Codec::store_name) + ": journal " + journal_path_ +
                                      " is corrupt at offset " + std::to_string(offset) + ": " +
                                      why,
                                  offset);
    }

    // Appends `frames` (`count` of them, numbered from next_sequence_; `records` records) and, with
    // sync=batch, syncs when the batch is due. Returns the ticket await() takes: with
    // sync=always the caller's records are durable once await() returns (group commit), with
    // batch and none there is nothing to wait for (0). Throws (applying nothing) on failure. A
    // failed write is undone by truncating to the last good end, so no part of it can be
    // replayed; if that fails too, or a sync fails, the store is poisoned.
    std::uint64_t commit(const std::string& frames, std::size_t records, std::uint64_t count) {
        check_writable();
        try {
            fs_.write_at(file_.get(), end_, frames);
        } catch (const std::exception& e) {
            // (std::bad_alloc too: part of the frames may be in the file all the same.)
            try {
                fs_.truncate(file_.get(), end_);
                if (options_.sync != JournalSync::none) {
                    fs_.sync(file_.get());
                }
                ++stats_.write_rollbacks;
            } catch (const std::exception&) {
                poison_with("a journal write failed and could not be undone", e);
                throw JournalIoError(std::string(Codec::store_name) +
                                         ": journal write failed and could not be undone "
                                         "(store poisoned): " +
                                         std::string(e.what()),
                                     error_code_of(e), true);
            }
            throw JournalIoError(
                std::string(Codec::store_name) +
                    ": journal write failed; nothing was recorded: " + std::string(e.what()),
                error_code_of(e), false);
        }
        end_ += frames.size();
        next_sequence_ += count;
        const std::uint64_t ticket = group_.wrote(records);
        if (options_.sync == JournalSync::always) {
            return ticket;
        }
        if (options_.sync == JournalSync::batch &&
            (group_.unsynced() >= options_.batch_records ||
             clock_->now() - last_sync_ >= options_.batch_interval)) {
            sync();
        }
        return 0;
    }

    // Poisons with "<what>: <e.what()>", or just `what` if that cannot be allocated. Never throws.
    void poison_with(const char* what, const std::exception& e) noexcept {
        try {
            group_.poison(std::string(what) + ": " + e.what());
        } catch (...) {
            group_.poison(what);
        }
    }

    static std::error_code error_code_of(const std::exception& e) noexcept {
        const auto* system = dynamic_cast<const std::system_error*>(&e);
        return system != nullptr ? system->code() : std::error_code{};
    }

    // The largest frame written (a reader accepts up to max_frame_bytes).
    static constexpr std::uint64_t record_limit = journal::max_frame_bytes / 2;

    const JournalOptions options_;
    FileSystem& fs_;
    GroupCommit& group_;
    Clock* const clock_;
    const std::string directory_;
    const std::string journal_path_;
    const std::string temp_path_;

    FileHandle lock_;
    FileHandle file_;
    journal::Framing framing_;         // the journal's salt_seed() and format version
    std::uint64_t next_sequence_ = 1;  // of the next frame appended
    std::uint64_t end_ = 0;            // bytes of the journal that hold whole records
    TimePoint last_sync_{};
    std::uint64_t compact_retry_at_ = 0;
    JournalStats stats_;
};

// FileDeadLetterStore's journal.
using JournalFile = BasicJournalFile<journal::DeadLetterCodec>;

}  // namespace detail

}  // namespace bulwark

#endif  // BULWARK_DETAIL_JOURNAL_FILE_HPP
// #include <bulwark/detail/mutex.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/file_dead_letter_store_errors.hpp> (already included above)
// #include <bulwark/file_dead_letter_store_options.hpp> (already included above)

namespace bulwark {

// A DeadLetterStore kept in a journal on disk: an acknowledged mutation survives a crash (with
// JournalSync::always, a power loss too). Same semantics as InMemoryDeadLetterStore; all records
// are also held in memory, so reads never touch the disk.
//   bulwark::FileDeadLetterStore file("/var/lib/app/dlq");   // options, file system, clock
//   std::string id = file.add(d);                             // durable when it returns
// The directory (created 0700; a symlink, another owner or group/other access is refused) holds
// `journal` (0600, one link) and `LOCK`: one store per directory, across processes. Open replays
// the journal (see JournalRecovery) and may throw FileDeadLetterStoreError and its subclasses. A
// failed write is rolled back and the store stays usable (disk full); a failed sync poisons it (see
// DeadLetterStorePoisonedError). Thread-safe: one mutex guards everything, held across journal
// writes, never while a reprocess handler runs; with sync=always, a call waits for its sync with
// the mutex released, so concurrent calls share one sync (group commit) and each returns once its
// own records are durable. See docs/file_dead_letter_store.md.
// Out of memory (R4): a call that throws std::bad_alloc before its record is written has changed
// nothing; after it, the store poisons itself and a reopen replays the whole change.
// FileDeadLetterStore is BasicFileDeadLetterStore<>: a class template only so that its code is
// compiled where it is used (the Tag is never used); use the alias.
// Its destructor is virtual (it overrides DeadLetterStore's): clang-tidy 14 does not see that
// through the dependent base.
template <class Tag = void>
// NOLINTNEXTLINE(cppcoreguidelines-virtual-class-destructor)
class BasicFileDeadLetterStore
    : public detail::IndexedDeadLetterStore<BasicFileDeadLetterStore<Tag>> {
    using Base = detail::IndexedDeadLetterStore<BasicFileDeadLetterStore<Tag>>;
    friend Base;
    // The base is dependent (a template of this one): name what the store uses of it.
    using Index = typename Base::Index;
    using Iterator = typename Index::const_iterator;
    using Seq = typename Base::Seq;
    using Base::counters_;
    using Base::index_;
    using Base::mutex_;

public:
    // Opens (creating if missing) the store in `directory`. The file system and clock must
    // outlive the store. Throws std::invalid_argument for invalid options.
    explicit BasicFileDeadLetterStore(std::string directory,
                                      FileDeadLetterStoreOptions options = {},
                                      FileSystem& fs = default_file_system(),
                                      Clock& clock = default_clock())
        : Base(Base::checked_limits(options), clock),
          options_(options),
          group_(fs),
          journal_(fs, clock, group_, std::move(directory), detail::JournalOptions::of(options_)) {
        // Unlocked, as the constructor is: nothing else can reach the store yet. The analysis
        // skips constructors but not the lambdas in them.
        journal_.open([this](Record& r) BULWARK_NO_THREAD_SAFETY_ANALYSIS { apply_replayed(r); },
                      [this](std::uint64_t salt)
                          BULWARK_NO_THREAD_SAFETY_ANALYSIS { return snapshot(salt); },
                      [this](std::size_t records)
                          BULWARK_NO_THREAD_SAFETY_ANALYSIS { index_.reserve(records); });
    }

    // Syncs what is unsynced (sync=batch), ignoring errors.
    ~BasicFileDeadLetterStore() override {
        try {
            detail::LockGuard lock(mutex_);
            journal_.sync_unsynced_batch();
        } catch (...) {  // NOLINT(bugprone-empty-catch): a destructor reports nothing
        }
    }

    const FileDeadLetterStoreOptions& options() const noexcept { return options_; }
    // Unlocked: the directory is fixed when the journal is made.
    const std::string& directory() const noexcept BULWARK_NO_THREAD_SAFETY_ANALYSIS {
        return journal_.directory();
    }

    // Makes every record written so far durable (for sync=batch or none). Throws
    // DeadLetterJournalIoError (and poisons) if the sync fails, DeadLetterStorePoisonedError on
    // a poisoned store.
    void sync() {
        detail::LockGuard lock(mutex_);
        journal_.check_writable();
        journal_.sync();
    }

    bool poisoned() const { return group_.poisoned(); }

    JournalStats journal_stats() const {
        detail::LockGuard lock(mutex_);
        JournalStats s = journal_.stats();
        s.live_bytes = live_bytes_;
        return s;
    }

protected:
    std::size_t do_dismiss(const DeadLetterQuery& query, std::string_view note) override {
        const std::size_t limit = query.max_results();
        if (limit == 0) {
            return 0;
        }
        detail::UniqueLock lock(mutex_);
        std::vector<Record> records;
        index_.scan(query, [&](Iterator it) {
            if (it->second.status == DeadLetterStatus::pending) {
                Record r;
                r.type = detail::journal::RecordType::dismiss;
                r.id = it->second.id;
                r.text = std::string(note);
                records.push_back(std::move(r));
            }
            return records.size() < limit;
        });
        const std::uint64_t ticket = commit_and_apply(records);
        lock.unlock();
        group_.await(ticket);
        return records.size();
    }

    std::size_t do_categorize(const DeadLetterQuery& query, std::string_view category,
                              const std::vector<std::string>& tags) override {
        const std::size_t limit = query.max_results();
        if (limit == 0) {
            return 0;
        }
        detail::UniqueLock lock(mutex_);
        this->check_categorize(query, category, tags);
        std::size_t matched = 0;
        std::vector<Record> records;
        index_.scan(query, [&](Iterator it) {
            const DeadLetter& d = it->second;
            bool changes = d.category != category;
            for (const std::string& tag : tags) {
                changes = changes || std::find(d.tags.begin(), d.tags.end(), tag) == d.tags.end();
            }
            if (changes) {  // a record it would not change needs no journal record
                Record r;
                r.type = detail::journal::RecordType::categorize;
                r.id = d.id;
                r.text = std::string(category);
                r.tags = tags;
                records.push_back(std::move(r));
            }
            return ++matched < limit;
        });
        const std::uint64_t ticket = commit_and_apply(records);
        lock.unlock();
        group_.await(ticket);
        return matched;
    }

    std::size_t do_purge(WallTime older_than) override {
        detail::UniqueLock lock(mutex_);
        std::vector<Record> records;
        for (const auto& entry : index_) {
            if (entry.second.created < older_than) {
                Record r;
                r.type = detail::journal::RecordType::remove;
                r.id = entry.second.id;
                r.cause = detail::journal::RemoveCause::purge;
                records.push_back(std::move(r));
            }
        }
        const std::uint64_t ticket = commit_and_apply(records);
        lock.unlock();
        group_.await(ticket);
        return records.size();
    }

private:
    using Record = detail::journal::Record;

    // ---- the hooks IndexedDeadLetterStore calls, with mutex_ held ----------------------------

    std::string store_new(DeadLetter letter, bool evict) BULWARK_REQUIRES(mutex_) {
        std::vector<Record> records(1);
        records[0].type = detail::journal::RecordType::add;
        records[0].letter = std::move(letter);
        std::string id = records[0].letter.id;
        if (evict) {
            // The add and the eviction it causes: one atomic batch, as in memory.
            Record r;
            r.type = detail::journal::RecordType::remove;
            r.cause = detail::journal::RemoveCause::evict;
            r.id = index_.oldest_resolved()->second.id;
            records.push_back(std::move(r));
        }
        // Until its sync, a duplicate add of this id must wait for it too. Room for the entry is
        // made first: nothing may fail once the add is journaled. Both sequences grow in write
        // order, so the list stays sorted.
        const bool track = options_.sync == JournalSync::always;
        if (track) {
            const std::uint64_t durable = group_.durable();
            while (!in_flight_.empty() && in_flight_.front().second <= durable) {
                in_flight_.pop_front();
            }
            in_flight_.emplace_back(Seq{}, std::uint64_t{0});
        }
        std::uint64_t ticket = 0;
        try {
            ticket = commit_and_apply(records);
        } catch (...) {
            if (track) {
                in_flight_.pop_back();
            }
            throw;
        }
        if (track) {
            in_flight_.back() = {index_.find(id)->first, ticket};
        }
        return id;
    }

    void check_writable() const BULWARK_REQUIRES(mutex_) { journal_.check_writable(); }

    // sync=always: what an add of `id` (a new record or a duplicate) waits for before it returns:
    // the ticket of the record's own add while that is in flight, else nothing.
    std::uint64_t durable_ticket(std::string_view id) const BULWARK_REQUIRES(mutex_) {
        const auto it = index_.find(id);
        if (in_flight_.empty() || it == index_.end()) {
            return 0;
        }
        const auto at = std::lower_bound(
            in_flight_.begin(), in_flight_.end(), it->first,
            [](const std::pair<Seq, std::uint64_t>& e, Seq seq) { return e.first < seq; });
        return at != in_flight_.end() && at->first == it->first ? at->second : 0;
    }

    void await_durable(std::uint64_t ticket) { group_.await(ticket); }

    void check_redrive_continues(const ReprocessResult& so_far) const BULWARK_REQUIRES(mutex_) {
        if (journal_.poisoned()) {  // meanwhile, by another call: stop before resending
            throw DeadLetterReprocessInterruptedError(
                "bulwark::FileDeadLetterStore: reprocess stopped: " + journal_.directory() +
                    " is poisoned: " + journal_.poison_reason(),
                {}, true, so_far, std::string());
        }
    }

    // The outcome counts only once journaled. An outcome for a record removed while the handler
    // ran is journaled without an id: it only counts.
    void record_outcome(Seq seq, const DeadLetter& copy, bool resent, DeadLetterAttempt attempt,
                        const ReprocessResult& so_far) BULWARK_REQUIRES(mutex_) {
        Record r;
        r.type = detail::journal::RecordType::outcome;
        const auto it = index_.find_seq(seq);
        if (it != index_.end()) {
            r.id = it->second.id;
        }
        r.attempt = std::move(attempt);
        r.resent = resent;
        try {
            // Awaited with the lock held: the outcome counts only once durable, and a reprocess
            // journals one outcome at a time anyway.
            group_.await(journal_.append(r));
        } catch (const DeadLetterJournalIoError& e) {
            throw DeadLetterReprocessInterruptedError(
                std::string(e.what()) + " (reprocess stopped; the handler ran for " + copy.id +
                    " but its outcome was not recorded)",
                e.code(), e.poisoned(), so_far, copy.id);
        } catch (const DeadLetterStorePoisonedError& e) {
            throw DeadLetterReprocessInterruptedError(
                std::string(e.what()) + " (reprocess stopped; the handler ran for " + copy.id +
                    " but its outcome was not recorded)",
                {}, true, so_far, copy.id);
        }
        apply_journaled(&r, 1);
        maybe_compact();
    }

    // ---- replay: the one place where records change the index -------------------------------

    // A record replayed by open: as apply(), moving an add's letter into the index instead of
    // copying it (open is bound by the copies and allocations per record).
    void apply_replayed(Record& r) BULWARK_REQUIRES(mutex_) {
        if (r.type != detail::journal::RecordType::add) {
            apply(r);
            return;
        }
        if (index_.contains(r.letter.id)) {
            return;  // as apply()
        }
        const bool snapshot = r.snapshot;
        const auto it = index_.insert_absent(std::move(r.letter));
        live_bytes_ += detail::journal::snapshot_frame_size(it->second);
        if (!snapshot) {
            ++counters_.added;
        }
    }

    void apply(const Record& r) BULWARK_REQUIRES(mutex_) {
        namespace j = detail::journal;
        switch (r.type) {
            case j::RecordType::add: {
                if (index_.contains(r.letter.id)) {
                    return;  // cannot be written by a store; ignored like a duplicate add
                }
                const auto it = index_.insert(r.letter);
                live_bytes_ += j::snapshot_frame_size(it->second);
                if (!r.snapshot) {
                    ++counters_.added;
                }
                return;
            }
            case j::RecordType::dismiss: {
                const auto it = index_.find(r.id);
                if (it != index_.end() && it->second.status == DeadLetterStatus::pending) {
                    modify(it, [&](Index& index) { index.dismiss(it, r.text); });
                }
                return;
            }
            case j::RecordType::outcome: {
                const auto it = r.id.empty() ? index_.end() : index_.find(r.id);
                if (it != index_.end()) {
                    modify(it, [&](Index& index) {
                        index.reserve_attempt(it, options_.max_attempts);  // no silent drop
                        index.record_redrive(it, r.resent, r.attempt, options_.max_attempts);
                    });
                }
                ++(r.resent ? counters_.resent : counters_.redrive_failures);
                return;
            }
            case j::RecordType::categorize: {
                const auto it = index_.find(r.id);
                if (it != index_.end()) {
                    modify(it, [&](Index& index) { index.categorize(it, r.text, r.tags); });
                }
                return;
            }
            case j::RecordType::remove: {
                const auto it = index_.find(r.id);
                if (it != index_.end()) {
                    live_bytes_ -= j::snapshot_frame_size(it->second);
                    index_.erase(it);
                    ++(r.cause == j::RemoveCause::evict ? counters_.evicted : counters_.purged);
                }
                return;
            }
            case j::RecordType::counters:
                counters_ = r.counters;
                return;
            case j::RecordType::batch:
                for (const Record& inner : r.batch) {
                    apply(inner);
                }
                return;
        }
    }

    // Runs change(index_) on the record at `it`, keeping live_bytes_ right. The index is passed
    // in, not captured, so that the thread-safety analysis sees it used under mutex_.
    template <class Change>
    void modify(Iterator it, Change&& change) BULWARK_REQUIRES(mutex_) {
        const std::uint64_t before = detail::journal::snapshot_frame_size(it->second);
        change(index_);
        live_bytes_ = live_bytes_ - before + detail::journal::snapshot_frame_size(it->second);
    }

    // ---- the write path: journal first, then the index ---------------------------------------

    // Journals `records` (all or none), then applies them. Throws what JournalFile::append
    // throws, having applied nothing; or, if applying runs out of memory, std::bad_alloc with the
    // store poisoned (see apply_journaled). Returns the ticket to await before acknowledging (0:
    // none), which the caller does with the lock released (group commit); if that throws (a sync
    // failed) the store is poisoned, and the records, applied, are readable until it is reopened.
    std::uint64_t commit_and_apply(const std::vector<Record>& records) BULWARK_REQUIRES(mutex_) {
        if (records.empty()) {
            // A call that changes nothing may have found the state another call wrote and is
            // still syncing (the same categorize, a dismiss of a record just dismissed): it
            // reports that state only once it is durable.
            return options_.sync == JournalSync::always ? group_.written() : 0;
        }
        const std::uint64_t ticket = journal_.append(records);
        apply_journaled(records.data(), records.size());
        maybe_compact();
        return ticket;
    }

    // Applies what is already in the journal. If that throws (std::bad_alloc: the index
    // allocates), memory holds none or part of it while the disk holds all of it: the store
    // poisons itself, so that nothing is written on top of a state the journal does not
    // describe, and rethrows; a reopen replays the whole of it.
    void apply_journaled(const Record* records, std::size_t count) BULWARK_REQUIRES(mutex_) {
        try {
            for (std::size_t i = 0; i < count; ++i) {
                apply(records[i]);
            }
        } catch (...) {
            journal_.poison_after(
                "a change was journaled but could not be applied in memory (out of memory); "
                "reopen to recover it");
            throw;
        }
    }

    void maybe_compact() BULWARK_REQUIRES(mutex_) {
        // The lambda runs within maybe_compact(), with mutex_ still held; the analysis checks a
        // lambda as a function of its own and cannot know that.
        journal_.maybe_compact(live_bytes_,
                               [this](std::uint64_t salt)
                                   BULWARK_NO_THREAD_SAFETY_ANALYSIS { return snapshot(salt); });
    }

    // What a compaction writes: the counters and every record.
    detail::JournalSnapshot snapshot(std::uint64_t salt) const BULWARK_REQUIRES(mutex_) {
        return detail::journal_snapshot(salt, counters_, index_);
    }

    const FileDeadLetterStoreOptions options_;
    // Syncs for sync=always writers with mutex_ released; thread-safe by itself, and before
    // journal_, which uses it.
    detail::GroupCommit group_;
    // Guarded by mutex_, as are the index and the counters (whose duplicate_adds_ and rejected_*
    // count since open).
    detail::JournalFile journal_ BULWARK_GUARDED_BY(mutex_);
    // sync=always: (record, ticket) of the adds whose sync may still be running, in add order.
    std::deque<std::pair<Seq, std::uint64_t>> in_flight_ BULWARK_GUARDED_BY(mutex_);
    // snapshot()'s size.
    std::uint64_t live_bytes_ BULWARK_GUARDED_BY(mutex_) = detail::journal_snapshot_base_size();
};

using FileDeadLetterStore = BasicFileDeadLetterStore<>;

}  // namespace bulwark

#endif  // BULWARK_FILE_DEAD_LETTER_STORE_HPP
#endif

#endif  // BULWARK_DEAD_LETTER_HPP
// #include <bulwark/degradation.hpp>
// bulwark — resilience policies for C++17 services.
#ifndef BULWARK_DEGRADATION_HPP
#define BULWARK_DEGRADATION_HPP

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// #include <bulwark/clock.hpp> (already included above)
// #include <bulwark/degradation_level.hpp>
// DegradationLevel and DegradationSignal: the level a component acts on, without its source.
#ifndef BULWARK_DEGRADATION_LEVEL_HPP
#define BULWARK_DEGRADATION_LEVEL_HPP

#include <atomic>
#include <cstdint>

namespace bulwark {

// How degraded the service is, from fully working to keeping only what is critical.
enum class DegradationLevel : std::uint8_t { normal, minor, moderate, severe, critical };

inline const char* to_string(DegradationLevel level) noexcept {
    switch (level) {
        case DegradationLevel::normal:
            return "normal";
        case DegradationLevel::minor:
            return "minor";
        case DegradationLevel::moderate:
            return "moderate";
        case DegradationLevel::severe:
            return "severe";
        case DegradationLevel::critical:
            return "critical";
    }
    return "unknown";
}

// The degradation level in force, as one atomic that any component can read without knowing
// what sets it: a LoadShedder sheds by it, a Degradation (the usual source) publishes it.
//   bulwark::LoadShedder shedder(degradation, bulwark::DegradationLevel::severe);
// level() is one acquire load. Thread-safe. Only a subclass sets the level.
class DegradationSignal {
public:
    DegradationSignal(const DegradationSignal&) = delete;
    DegradationSignal& operator=(const DegradationSignal&) = delete;

    DegradationLevel level() const noexcept {
        // acquire: pairs with the source's release store, so what the source wrote before it
        // changed the level (its reason, its time) is visible to a reader that sees the level.
        return static_cast<DegradationLevel>(level_.load(std::memory_order_acquire));
    }

protected:
    DegradationSignal() = default;
    ~DegradationSignal() = default;

    std::atomic<std::uint8_t> level_{static_cast<std::uint8_t>(DegradationLevel::normal)};
};

}  // namespace bulwark

#endif  // BULWARK_DEGRADATION_LEVEL_HPP
// #include <bulwark/detail/mutex.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/events.hpp> (already included above)
// #include <bulwark/health_check.hpp> (already included above)
// #include <bulwark/resource_report.hpp>
// Resource vocabulary: ResourceStatus, thresholds, readings, changes and the ResourceReport.
#ifndef BULWARK_RESOURCE_REPORT_HPP
#define BULWARK_RESOURCE_REPORT_HPP

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

// #include <bulwark/detail/json.hpp> (already included above)
// #include <bulwark/detail/math.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/time.hpp> (already included above)

namespace bulwark {

// How much of a resource is used. Ordered: a larger value is worse; unknown (the gauge could not
// be read) is the smallest, so it never hides a real reading.
enum class ResourceStatus : std::uint8_t { unknown, healthy, warning, critical, exhausted };

inline const char* to_string(ResourceStatus status) noexcept {
    switch (status) {
        case ResourceStatus::unknown:
            return "unknown";
        case ResourceStatus::healthy:
            return "healthy";
        case ResourceStatus::warning:
            return "warning";
        case ResourceStatus::critical:
            return "critical";
        case ResourceStatus::exhausted:
            return "exhausted";
    }
    return "unknown";
}

// Percent thresholds: warning from `warning` on, critical from `critical` on, exhausted at 100.
struct ResourceThresholds {
    double warning = 80.0;   // in [0, 100]. Default 80.
    double critical = 95.0;  // in [warning, 100]. Default 95.

    void validate(std::string_view resource) const {
        const std::string prefix = "ResourceThresholds(" + std::string(resource) + ").";
        if (!(warning >= 0.0 && warning <= 100.0)) {
            detail::throw_invalid_option(prefix + "warning", "must be in [0, 100]",
                                         detail::format_number(warning));
        }
        if (!(critical >= warning && critical <= 100.0)) {
            detail::throw_invalid_option(prefix + "critical", "must be in [warning, 100]",
                                         detail::format_number(critical));
        }
    }

    ResourceStatus classify(double percent) const noexcept {
        if (detail::is_nan(percent)) {
            return ResourceStatus::unknown;
        }
        if (percent >= 100.0) {
            return ResourceStatus::exhausted;
        }
        if (percent >= critical) {
            return ResourceStatus::critical;
        }
        return percent >= warning ? ResourceStatus::warning : ResourceStatus::healthy;
    }
};

// A reading: `auto [status, percent] = rm.check("llm_tokens");`. percent is NaN when unknown.
struct ResourceCheck {
    ResourceStatus status = ResourceStatus::unknown;
    double percent = std::numeric_limits<double>::quiet_NaN();
};

// A resource's status changed.
struct ResourceChange {
    std::string name;
    ResourceStatus from = ResourceStatus::unknown;
    ResourceStatus to = ResourceStatus::unknown;
    double percent = 0.0;
    TimePoint at{};
};

// One resource in a report.
struct ResourceReading {
    std::string name;
    bool quota = false;  // a quota (else a gauge)
    ResourceStatus status = ResourceStatus::unknown;
    double percent = std::numeric_limits<double>::quiet_NaN();
    double used = 0.0;   // quotas: used within the window
    double limit = 0.0;  // quotas
    Duration window{};   // quotas
    ResourceThresholds thresholds;
    // History summary since the resource was added.
    std::uint64_t readings = 0;
    double peak_percent = 0.0;
    std::uint64_t times_warning = 0;   // entries into warning (from a better status)
    std::uint64_t times_critical = 0;  // entries into critical or exhausted
    TimePoint status_since{};
    std::vector<std::string> alternatives;
};

struct ResourceReport {
    TimePoint at{};
    ResourceStatus worst = ResourceStatus::unknown;
    std::string worst_name;  // the resource with the worst status (empty if none is known)
    std::vector<ResourceReading> resources;

    std::string to_json() const {
        detail::JsonWriter w;
        w.begin_object().field("status", to_string(worst));
        w.key("resources").begin_array();
        for (const ResourceReading& r : resources) {
            w.begin_object();
            w.field("name", r.name).field("kind", r.quota ? "quota" : "gauge");
            w.field("status", to_string(r.status)).field("percent", r.percent);
            if (r.quota) {
                w.field("used", r.used).field("limit", r.limit);
                w.field("window_s", std::chrono::duration<double>(r.window).count());
            }
            w.field("warning", r.thresholds.warning).field("critical", r.thresholds.critical);
            w.field("readings", r.readings).field("peak_percent", r.peak_percent);
            w.field("times_warning", r.times_warning).field("times_critical", r.times_critical);
            w.field("status_for_s", std::chrono::duration<double>(at - r.status_since).count());
            w.key("alternatives").begin_array();
            for (const std::string& alternative : r.alternatives) {
                w.value(alternative);
            }
            w.end_array();
            w.end_object();
        }
        w.end_array().end_object();
        return w.take();
    }
};

}  // namespace bulwark

#endif  // BULWARK_RESOURCE_REPORT_HPP

namespace bulwark {

// Maps the overall health and the worst resource status to a degradation level, for
// Degradation::follow().
using DegradationMap = std::function<DegradationLevel(HealthStatus health, ResourceStatus worst)>;

// The default mapping: the higher of the two columns.
//   health:    unknown, healthy -> normal; degraded -> minor;  unhealthy -> severe
//   resources: unknown, healthy -> normal; warning -> minor;   critical -> moderate;
//              exhausted -> severe
inline DegradationLevel default_degradation_map(HealthStatus health,
                                                ResourceStatus worst) noexcept {
    DegradationLevel from_health = DegradationLevel::normal;
    if (health == HealthStatus::degraded) {
        from_health = DegradationLevel::minor;
    } else if (health == HealthStatus::unhealthy) {
        from_health = DegradationLevel::severe;
    }
    DegradationLevel from_resources = DegradationLevel::normal;
    switch (worst) {
        case ResourceStatus::warning:
            from_resources = DegradationLevel::minor;
            break;
        case ResourceStatus::critical:
            from_resources = DegradationLevel::moderate;
            break;
        case ResourceStatus::exhausted:
            from_resources = DegradationLevel::severe;
            break;
        case ResourceStatus::unknown:
        case ResourceStatus::healthy:
            break;
    }
    return std::max(from_health, from_resources);
}

struct DegradationChange {
    DegradationLevel from = DegradationLevel::normal;
    DegradationLevel to = DegradationLevel::normal;
    std::string reason;
    TimePoint at{};
    bool manual = false;  // set_level()/clear_override(), not observe()
};

// The service's degradation level, its reason and since when, and the feature gates and load
// shedding that follow from it.
//   bulwark::Degradation degradation;
//   degradation.set_level(bulwark::DegradationLevel::moderate, "maintenance");   // admin override
//   if (degradation.enabled("recommendations", bulwark::DegradationLevel::minor)) { ... }
//   degradation.observe(computed_level, "p99 latency high");   // automatic input, with hysteresis
// Two inputs: observe() (automatic: rises at once, falls only after the lower level has held for
// hold(), so it does not flap) and set_level() (manual: overrides the automatic level until
// clear_override()). The level in force is the override if there is one, else the automatic one.
// Thread-safe. level() and enabled() are one atomic load (plus a lock only while a per-feature
// override is set); changes take a mutex. Listeners run after the change, outside the lock.
// Degradation is BasicDegradation<>: a class template only so that its code is compiled where it
// is used (the Tag is never used).
template <class Tag = void>
class BasicDegradation : public DegradationSignal {
public:
    using ChangeListener =
        std::function<void(DegradationLevel from, DegradationLevel to, const std::string& why)>;

    // `hold`: how long a lower automatic level must persist before the level falls. >= 0.
    explicit BasicDegradation(Clock& clock = default_clock(),
                              Duration hold = std::chrono::seconds(30))
        : clock_(&clock), hold_(hold), since_(clock.now()) {
        if (hold < Duration::zero()) {
            detail::throw_invalid_option("Degradation.hold", "must be >= 0",
                                         detail::format_duration(hold));
        }
    }

    BasicDegradation(const BasicDegradation&) = delete;
    BasicDegradation& operator=(const BasicDegradation&) = delete;
    ~BasicDegradation() { unfollow(); }

    std::string reason() const {
        detail::LockGuard lock(mutex_);
        return reason_;
    }
    TimePoint since() const {
        detail::LockGuard lock(mutex_);
        return since_;
    }
    bool overridden() const {
        detail::LockGuard lock(mutex_);
        return override_.has_value();
    }
    Duration hold() const noexcept { return hold_; }

    // Admin override: this level holds, whatever observe() says, until clear_override().
    void set_level(DegradationLevel level, std::string reason) {
        detail::check_enumerator(level, DegradationLevel::critical, "Degradation::set_level(level)",
                                 "DegradationLevel");
        Pending pending;
        {
            detail::LockGuard lock(mutex_);
            override_ = level;
            publish(level, std::move(reason), true, pending);
        }
        notify(pending);
    }

    // Returns to the automatic level.
    void clear_override() {
        Pending pending;
        {
            detail::LockGuard lock(mutex_);
            if (!override_) {
                return;
            }
            override_.reset();
            publish(automatic_, automatic_reason_.empty() ? "override cleared" : automatic_reason_,
                    true, pending);
        }
        notify(pending);
    }

    // An automatic reading (from health checks, resource use, or the caller's own signals).
    // A higher level applies at once; a lower one only once readings at or below it have held
    // for hold() — then the level falls to the highest level seen during that time.
    void observe(DegradationLevel computed, std::string reason) {
        detail::check_enumerator(computed, DegradationLevel::critical,
                                 "Degradation::observe(computed)", "DegradationLevel");
        Pending pending;
        {
            detail::LockGuard lock(mutex_);
            const TimePoint now = clock_->now();
            if (computed >= automatic_) {
                lower_since_.reset();
                if (computed > automatic_ || reason != automatic_reason_) {
                    automatic_ = computed;
                    automatic_reason_ = std::move(reason);
                    if (!override_) {
                        publish(automatic_, automatic_reason_, false, pending);
                    }
                }
            } else {
                if (!lower_since_) {
                    lower_since_ = now;
                    lower_max_ = computed;
                } else if (computed > lower_max_) {
                    lower_max_ = computed;
                }
                if (now - *lower_since_ >= hold_) {
                    automatic_ = lower_max_;
                    automatic_reason_ = std::move(reason);
                    lower_since_.reset();
                    if (computed < automatic_) {
                        // This reading is lower still: it starts the hold for the next step.
                        lower_since_ = now;
                        lower_max_ = computed;
                    }
                    if (!override_) {
                        publish(automatic_, automatic_reason_, false, pending);
                    }
                }
            }
        }
        notify(pending);
    }

    // A feature gate: true while the level is below `disable_at` (unless the feature is forced
    // on or off by force_feature()).
    bool enabled(std::string_view feature, DegradationLevel disable_at) const {
        // acquire: pairs with force_feature()'s release; the map is read under the lock.
        if (BULWARK_UNLIKELY(features_forced_.load(std::memory_order_acquire))) {
            detail::LockGuard lock(mutex_);
            auto it = forced_.find(feature);
            if (it != forced_.end()) {
                return it->second;
            }
        }
        return level() < disable_at;
    }

    // Forces a feature on or off whatever the level (an admin switch); clear_feature() undoes it.
    void force_feature(std::string feature, bool on) {
        detail::LockGuard lock(mutex_);
        forced_[std::move(feature)] = on;
        features_forced_.store(true, std::memory_order_release);
    }
    void clear_feature(std::string_view feature) {
        detail::LockGuard lock(mutex_);
        auto it = forced_.find(feature);
        if (it != forced_.end()) {
            forced_.erase(it);
        }
        features_forced_.store(!forced_.empty(), std::memory_order_release);
    }

    // Derives the automatic level from a HealthMonitor and a ResourceManager: now, and after
    // every health check run and every change of a resource's status, observe(map(overall
    // health, worst resource status), reason) — so the level rises at once and falls after
    // hold(). Replaces an earlier follow(). Both sources must outlive this object or unfollow().
    // Do not call follow() or unfollow() from a listener of this object or of the sources.
    template <class Monitor, class Resources>
    void follow(Monitor& monitor, Resources& resources,
                DegradationMap map = default_degradation_map) {
        if (!map) {
            detail::throw_invalid_argument("Degradation::follow: the mapping is empty");
        }
        detail::LockGuard calls(follow_calls_mutex_);
        unfollow_locked();
        auto state = std::make_shared<FollowState>(this);
        state->read = [&monitor, &resources, map = std::move(map)] {
            return assess(monitor.report(), resources.report(), map);
        };
        // The listeners hold the state, not this object: unfollow() (and so the destructor)
        // closes it and waits for callbacks already inside.
        const ListenerId runs =
            monitor.on_run([state](const HealthCheckResult&) { run_followed(*state); });
        try {
            const ListenerId changes =
                resources.on_change([state](const ResourceChange&) { run_followed(*state); });
            state->stop = [&monitor, &resources, runs, changes] {
                monitor.remove_listener(runs);
                resources.remove_listener(changes);
            };
        } catch (...) {
            monitor.remove_listener(runs);
            throw;
        }
        {
            detail::LockGuard lock(follow_mutex_);
            follow_ = state;
        }
        run_followed(*state);
    }

    // Stops following and returns once no callback from the sources is still running it; does
    // nothing if not following.
    void unfollow() {
        detail::LockGuard calls(follow_calls_mutex_);
        unfollow_locked();
    }

    // Reads the followed sources now and feeds the result to observe(). Does nothing when not
    // following. Called by the sources' listeners; call it yourself to re-evaluate on a timer
    // (the level can only fall at a reading).
    void refresh() {
        std::shared_ptr<FollowState> state;
        {
            detail::LockGuard lock(follow_mutex_);
            state = follow_;
        }
        if (state) {
            run_followed(*state);
        }
    }

    // Called on every change of the level in force, as (from, to, reason); or, in the second
    // form, with the full event (time, and whether the change was manual). Returns the id that
    // remove_listener() takes; throws std::invalid_argument for an empty listener.
    ListenerId on_change(ChangeListener listener) {
        if (!listener) {
            detail::throw_invalid_argument("Degradation::on_change: the listener is empty");
        }
        return changes_.add(
            [l = std::move(listener)](const DegradationChange& c) { l(c.from, c.to, c.reason); });
    }
    ListenerId on_change(std::function<void(const DegradationChange&)> listener) {
        return changes_.add(std::move(listener));
    }
    // Stops calling a listener; false if the id is unknown here or already removed.
    bool remove_listener(ListenerId id) noexcept { return changes_.remove(id); }

private:
    struct Pending {
        std::optional<DegradationChange> change;
    };

    // Under mutex_: makes `level` the level in force.
    void publish(DegradationLevel level, std::string reason, bool manual, Pending& pending)
        BULWARK_REQUIRES(mutex_) {
        const auto old = static_cast<DegradationLevel>(level_.load(std::memory_order_relaxed));
        const TimePoint now = clock_->now();
        if (old != level) {
            since_ = now;
        }
        reason_ = reason;
        level_.store(static_cast<std::uint8_t>(level), std::memory_order_release);
        if (old != level) {
            pending.change = DegradationChange{old, level, std::move(reason), now, manual};
        }
    }

    void notify(const Pending& pending) {
        if (pending.change) {
            changes_.emit(*pending.change);
        }
    }

    // What follow() set up, shared with the sources' listeners so that a callback never
    // touches a Degradation that is gone.
    struct FollowState {
        explicit FollowState(BasicDegradation* o) : owner(o) {}

        detail::Mutex mutex;
        std::condition_variable idle;
        BasicDegradation* owner BULWARK_GUARDED_BY(mutex) = nullptr;  // null once unfollowed
        std::size_t running BULWARK_GUARDED_BY(mutex) = 0;  // callbacks inside run_followed()
        std::function<std::pair<DegradationLevel, std::string>()> read;  // the level and why
        std::function<void()> stop;                                      // removes the listeners
    };

    // Reads the sources and observes the result, unless unfollowed. Runs outside every lock of
    // this object, so that change listeners run unlocked.
    static void run_followed(FollowState& state) {
        // Reading the resources can report a change, whose listener calls back in here on the
        // same thread: that nested call has nothing to add.
        thread_local std::vector<const FollowState*> active;
        if (std::find(active.begin(), active.end(), &state) != active.end()) {
            return;
        }
        BasicDegradation* owner = nullptr;
        {
            detail::LockGuard lock(state.mutex);
            owner = state.owner;
            if (owner == nullptr) {
                return;
            }
            ++state.running;
        }
        active.push_back(&state);
        struct Leave {
            FollowState& state;
            ~Leave() {
                active.pop_back();
                detail::LockGuard lock(state.mutex);
                --state.running;
                state.idle.notify_all();
            }
        } leave{state};
        auto [computed, why] = state.read();
        owner->observe(computed, std::move(why));
    }

    // Under follow_calls_mutex_.
    void unfollow_locked() BULWARK_REQUIRES(follow_calls_mutex_) {
        std::shared_ptr<FollowState> state;
        {
            detail::LockGuard lock(follow_mutex_);
            state = std::move(follow_);
        }
        if (!state) {
            return;
        }
        {
            detail::LockGuard lock(state->mutex);
            state->owner = nullptr;
        }
        state->stop();
        detail::UniqueLock lock(state->mutex);
        while (state->running != 0) {
            state->idle.wait(lock.native());
        }
    }

    // The mapped level and a reason naming what is wrong:
    // "health unhealthy (database unhealthy); resources critical (llm_tokens)".
    static std::pair<DegradationLevel, std::string> assess(const HealthReport& health,
                                                           const ResourceReport& resources,
                                                           const DegradationMap& map) {
        const DegradationLevel computed = map(health.status, resources.worst);
        if (computed == DegradationLevel::normal) {
            return {computed, "healthy"};
        }
        std::string why = std::string("health ") + to_string(health.status);
        std::string failing;
        for (const HealthCheckSummary& c : health.checks) {
            if (c.last.status == HealthStatus::unhealthy ||
                c.last.status == HealthStatus::degraded) {
                failing +=
                    (failing.empty() ? "" : ", ") + c.last.name + " " + to_string(c.last.status);
            }
        }
        if (!failing.empty()) {
            why += " (" + failing + ")";
        }
        if (resources.worst > ResourceStatus::healthy) {
            why += std::string("; resources ") + to_string(resources.worst) + " (" +
                   resources.worst_name + ")";
        }
        return {computed, std::move(why)};
    }

    Clock* const clock_;
    const Duration hold_;
    detail::Mutex follow_calls_mutex_;  // serialises follow() and unfollow()
    detail::Mutex follow_mutex_;        // guards follow_
    std::shared_ptr<FollowState> follow_ BULWARK_GUARDED_BY(follow_mutex_);
    std::atomic<bool> features_forced_{false};

    mutable detail::Mutex mutex_;
    std::string reason_ BULWARK_GUARDED_BY(mutex_);
    TimePoint since_ BULWARK_GUARDED_BY(mutex_){};
    std::optional<DegradationLevel> override_ BULWARK_GUARDED_BY(mutex_);
    DegradationLevel automatic_ BULWARK_GUARDED_BY(mutex_) = DegradationLevel::normal;
    std::string automatic_reason_ BULWARK_GUARDED_BY(mutex_);
    std::optional<TimePoint> lower_since_ BULWARK_GUARDED_BY(mutex_);
    DegradationLevel lower_max_ BULWARK_GUARDED_BY(mutex_) = DegradationLevel::normal;
    std::map<std::string, bool, std::less<>> forced_ BULWARK_GUARDED_BY(mutex_);
    Listeners<DegradationChange> changes_;
};

using Degradation = BasicDegradation<>;

}  // namespace bulwark

#endif  // BULWARK_DEGRADATION_HPP
// #include <bulwark/delivery.hpp>
// Multi-channel delivery: Receipt, MessageStatus, DeliveryAttempt, DeliveryStats, DeliveryEngine.
#ifndef BULWARK_DELIVERY_HPP
#define BULWARK_DELIVERY_HPP

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

// #include <bulwark/backoff.hpp> (already included above)
// #include <bulwark/classify.hpp> (already included above)
// #include <bulwark/clock.hpp> (already included above)
// #include <bulwark/config.hpp> (already included above)
// #include <bulwark/context.hpp> (already included above)
// #include <bulwark/dead_letter_store.hpp> (already included above)
// #include <bulwark/delivery_error.hpp>
// Delivery errors: what a channel adapter's failure means for a message (retry, fall back, stop).
#ifndef BULWARK_DELIVERY_ERROR_HPP
#define BULWARK_DELIVERY_ERROR_HPP

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

// #include <bulwark/classify.hpp> (already included above)
// #include <bulwark/clock.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/errors.hpp> (already included above)
// #include <bulwark/time.hpp> (already included above)

namespace bulwark {

// What a failed delivery attempt means.
enum class DeliveryErrorKind : std::uint8_t {
    transient,     // worth retrying on the same channel (a timeout, a 5xx), then falling back
    permanent,     // retrying cannot help (an invalid address, a 4xx): no retry
    bounced,       // the provider accepted and the recipient refused: no retry
    rate_limited,  // the provider asks to slow down: retry after retry_after
    unknown,       // anything else: treated as transient
};

inline constexpr std::size_t delivery_error_kind_count = 5;

inline const char* to_string(DeliveryErrorKind kind) noexcept {
    switch (kind) {
        case DeliveryErrorKind::transient:
            return "transient";
        case DeliveryErrorKind::permanent:
            return "permanent";
        case DeliveryErrorKind::bounced:
            return "bounced";
        case DeliveryErrorKind::rate_limited:
            return "rate_limited";
        case DeliveryErrorKind::unknown:
            break;
    }
    return "unknown";
}

// Whether an attempt that failed this way may be made again on the same channel.
inline bool retryable(DeliveryErrorKind kind) noexcept {
    return kind == DeliveryErrorKind::transient || kind == DeliveryErrorKind::rate_limited ||
           kind == DeliveryErrorKind::unknown;
}

// What a channel adapter throws to say how its send failed: the kind, the provider's error code
// (empty when none) and, for rate_limited, how long the provider asked to wait.
//   throw bulwark::DeliveryError(bulwark::DeliveryErrorKind::permanent, "invalid number", "21211");
class DeliveryError : public std::runtime_error {
public:
    DeliveryError(DeliveryErrorKind kind, const std::string& what, std::string code = {},
                  Duration retry_after = Duration::zero())
        : std::runtime_error(what),
          kind_(kind),
          code_(std::move(code)),
          retry_after_(retry_after < Duration::zero() ? Duration::zero() : retry_after) {}

    DeliveryErrorKind kind() const noexcept { return kind_; }
    const std::string& code() const noexcept { return code_; }
    Duration retry_after() const noexcept { return retry_after_; }

private:
    DeliveryErrorKind kind_;
    std::string code_;
    Duration retry_after_;
};

// How a failure was classified: its kind, the error code and the wait the error asked for.
struct DeliveryFailure {
    DeliveryErrorKind kind = DeliveryErrorKind::unknown;
    std::string code;
    Duration retry_after{0};
};

// Maps a failed attempt's exception to a DeliveryFailure. Rules are tried in the order added,
// the first that matches wins; then the defaults: a DeliveryError says its own kind; a
// RejectedError (an open breaker, a rate limiter, a bulkhead: the caller's own policies) is
// transient with its retry_after(); anything else is unknown (treated as transient). Per channel
// and overridable, as the policies' classifiers are:
//   bulwark::DeliveryClassifier c;
//   c.on<std::invalid_argument>(bulwark::DeliveryErrorKind::permanent);
//   c.on_if([](const std::exception_ptr& e) { return is_quota(e); },
//           bulwark::DeliveryErrorKind::rate_limited);
// Copyable; const use is thread-safe.
class DeliveryClassifier {
public:
    using Predicate = std::function<bool(const std::exception_ptr&)>;

    // Exceptions of type E (or derived from it) are of `kind`.
    template <class E>
    DeliveryClassifier& on(DeliveryErrorKind kind) {
        static_assert(!std::is_reference<E>::value && !std::is_pointer<E>::value,
                      "DeliveryClassifier::on<E>: E is the exception's type, as thrown");
        return on_if(&detail::holds_exception<E>, kind);
    }

    // Exceptions for which `predicate` returns true are of `kind`.
    DeliveryClassifier& on_if(Predicate predicate, DeliveryErrorKind kind) {
        if (!predicate) {
            detail::throw_invalid_argument("DeliveryClassifier.on_if: empty predicate");
        }
        detail::check_enumerator(kind, DeliveryErrorKind::unknown, "DeliveryClassifier.on_if kind",
                                 "DeliveryErrorKind");
        rules_.push_back(Rule{std::move(predicate), kind});
        return *this;
    }

    // The failure `error` (not null) describes.
    DeliveryFailure classify(const std::exception_ptr& error) const {
        DeliveryFailure failure = defaults(error);
        for (const Rule& rule : rules_) {
            if (rule.predicate(error)) {
                failure.kind = rule.kind;
                break;
            }
        }
        return failure;
    }

private:
    struct Rule {
        Predicate predicate;
        DeliveryErrorKind kind;
    };

    static DeliveryFailure defaults(const std::exception_ptr& error) {
        DeliveryFailure failure;
        try {
            std::rethrow_exception(error);
        } catch (const DeliveryError& e) {
            failure.kind = e.kind();
            failure.code = e.code();
            failure.retry_after = e.retry_after();
        } catch (const RejectedError& e) {
            failure.kind = DeliveryErrorKind::transient;
            failure.retry_after = std::max(e.retry_after(), Duration::zero());
        } catch (...) {
            failure.kind = DeliveryErrorKind::unknown;
        }
        return failure;
    }

    std::vector<Rule> rules_;
};

}  // namespace bulwark

#endif  // BULWARK_DELIVERY_ERROR_HPP
// #include <bulwark/delivery_stats.hpp>
// Delivery statistics: ChannelDeliveryStats and DeliveryStats (with JSON), and the per-channel
// minute buckets a DeliveryEngine keeps them in.
#ifndef BULWARK_DELIVERY_STATS_HPP
#define BULWARK_DELIVERY_STATS_HPP

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

// #include <bulwark/detail/json.hpp> (already included above)
// #include <bulwark/detail/mutex.hpp> (already included above)
// #include <bulwark/message_status.hpp>
// MessageStatus: where a message a DeliveryEngine handles is in its life.
#ifndef BULWARK_MESSAGE_STATUS_HPP
#define BULWARK_MESSAGE_STATUS_HPP

#include <cstddef>
#include <cstdint>

namespace bulwark {

// queued -> sending -> sent -> delivered | failed | bounced, or dead_lettered when the engine
// gave up. A retry goes from sending back to queued; a redrive from dead_lettered to queued.
enum class MessageStatus : std::uint8_t {
    queued,         // waiting for its (next) attempt
    sending,        // a worker is trying its channels
    sent,           // a channel accepted it; a delivery receipt may follow (confirm())
    delivered,      // the provider confirmed delivery (or the receipt said so)
    failed,         // the provider reported it undeliverable after accepting it
    bounced,        // the provider reported a bounce after accepting it
    dead_lettered,  // in the dead-letter store: retries exhausted or a permanent failure
};

inline constexpr std::size_t message_status_count = 7;

inline const char* to_string(MessageStatus status) noexcept {
    switch (status) {
        case MessageStatus::queued:
            return "queued";
        case MessageStatus::sending:
            return "sending";
        case MessageStatus::sent:
            return "sent";
        case MessageStatus::delivered:
            return "delivered";
        case MessageStatus::failed:
            return "failed";
        case MessageStatus::bounced:
            return "bounced";
        case MessageStatus::dead_lettered:
            return "dead_lettered";
    }
    return "unknown";
}

// The engine is done with a message in this status: only confirm() or a redrive moves it on.
inline constexpr bool is_final(MessageStatus status) noexcept {
    return status >= MessageStatus::sent;
}

}  // namespace bulwark

#endif  // BULWARK_MESSAGE_STATUS_HPP
// #include <bulwark/metrics_writer.hpp>
// MetricsWriter: samples grouped into metric families, rendered in the Prometheus text format.
#ifndef BULWARK_METRICS_WRITER_HPP
#define BULWARK_METRICS_WRITER_HPP

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

// #include <bulwark/detail/math.hpp> (already included above)
// #include <bulwark/detail/number.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/detail/utf8.hpp>
// UTF-8 validation: text from message data made safe for formats that require UTF-8 (private).
#ifndef BULWARK_DETAIL_UTF8_HPP
#define BULWARK_DETAIL_UTF8_HPP

#include <cstddef>
#include <string>
#include <string_view>

namespace bulwark {
namespace detail {

// The length of the well-formed UTF-8 sequence that starts at text[at] (1 to 4), or 0 when the
// bytes there are not one (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF).
inline std::size_t utf8_sequence_length(std::string_view text, std::size_t at) noexcept {
    const auto byte = [&](std::size_t i) {
        return static_cast<unsigned char>(text[at + i]);
    };
    const unsigned char lead = byte(0);
    if (lead < 0x80) {
        return 1;
    }
    std::size_t length = 0;
    unsigned char low = 0x80;   // the range of the second byte, which rules out overlong forms,
    unsigned char high = 0xBF;  // surrogates and code points above U+10FFFF
    if (lead >= 0xC2 && lead <= 0xDF) {
        length = 2;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
        length = 3;
        low = lead == 0xE0 ? 0xA0 : 0x80;
        high = lead == 0xED ? 0x9F : 0xBF;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
        length = 4;
        low = lead == 0xF0 ? 0x90 : 0x80;
        high = lead == 0xF4 ? 0x8F : 0xBF;
    } else {
        return 0;
    }
    if (text.size() - at < length || byte(1) < low || byte(1) > high) {
        return 0;
    }
    for (std::size_t i = 2; i < length; ++i) {
        if (byte(i) < 0x80 || byte(i) > 0xBF) {
            return 0;
        }
    }
    return length;
}

// Appends `text` with each byte that does not start a well-formed sequence replaced by U+FFFD,
// calling escape(out, c) for each ASCII character so the caller can escape it.
template <class Escape>
void append_utf8(std::string& out, std::string_view text, Escape&& escape) {
    for (std::size_t at = 0; at < text.size();) {
        const std::size_t length = utf8_sequence_length(text, at);
        if (length == 0) {
            out += "\xEF\xBF\xBD";
            ++at;
        } else if (length == 1) {
            escape(out, text[at]);
            ++at;
        } else {
            out.append(text, at, length);
            at += length;
        }
    }
}

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_UTF8_HPP

namespace bulwark {

// One label of a sample: {name, value}. The value is escaped on output; the name must match
// [a-zA-Z_][a-zA-Z0-9_]* and not start with "__" (reserved by Prometheus).
using MetricLabel = std::pair<std::string_view, std::string_view>;
using MetricLabels = std::vector<MetricLabel>;

namespace detail {

// Prometheus's spelling of a double: "+Inf", "-Inf", "NaN", else the shortest of %.15g, %.16g
// and %.17g that reads back as the same double (so 0.1 prints as 0.1, and every value is exact).
// The decimal separator is always '.', whatever the C locale says: snprintf and strtod agree on
// the locale's separator, and the digits are then copied with any non-numeric run (a ',' or a
// multi-byte separator) replaced by one '.' (with_decimal_point).
inline std::string metric_number(double value) {
    if (detail::is_nan(value)) {
        return "NaN";
    }
    if (detail::is_inf(value)) {
        return value > 0 ? "+Inf" : "-Inf";
    }
    char buffer[48];
    for (int precision = 15; precision <= 17; ++precision) {
        std::snprintf(buffer, sizeof buffer, "%.*g", precision, value);
        if (std::strtod(buffer, nullptr) == value) {
            break;
        }
    }
    return with_decimal_point(buffer);
}

// Label values escape backslash, double quote and line feed; HELP text only backslash and line
// feed (the exposition format's two escaping rules). The format is UTF-8 and a scraper rejects
// the whole exposition for one bad byte, so bytes that are not UTF-8 (a dead letter's type or
// category comes from message data) become U+FFFD.
inline void append_escaped(std::string& out, std::string_view text, bool quote) {
    append_utf8(out, text, [quote](std::string& to, char c) {
        if (c == '\\') {
            to += "\\\\";
        } else if (c == '\n') {
            to += "\\n";
        } else if (c == '"' && quote) {
            to += "\\\"";
        } else {
            to.push_back(c);
        }
    });
}

inline bool is_metric_name(std::string_view name, bool allow_colon) noexcept {
    if (name.empty()) {
        return false;
    }
    for (std::size_t i = 0; i < name.size(); ++i) {
        const char c = name[i];
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                        (allow_colon && c == ':') || (i > 0 && c >= '0' && c <= '9');
        if (!ok) {
            return false;
        }
    }
    return true;
}

template <class Rep, class Period>
double seconds(std::chrono::duration<Rep, Period> d) noexcept {
    return std::chrono::duration<double>(d).count();
}

}  // namespace detail

// A sample's value: integers are kept exact (a 64-bit counter prints every digit), floating-point
// values as described at detail::metric_number, bools as 1 and 0.
class MetricValue {
public:
    template <class N, std::enable_if_t<std::is_integral<N>::value && !std::is_same<N, bool>::value,
                                        int> = 0>
    MetricValue(N n) {  // NOLINT(google-explicit-constructor): values convert implicitly
        if constexpr (std::is_signed<N>::value) {
            text_ = std::to_string(static_cast<long long>(n));
            negative_ = n < 0;
        } else {
            text_ = std::to_string(static_cast<unsigned long long>(n));
        }
    }
    template <class F, std::enable_if_t<std::is_floating_point<F>::value, int> = 0>
    MetricValue(F f)  // NOLINT(google-explicit-constructor)
        : text_(detail::metric_number(static_cast<double>(f))),
          negative_(detail::is_nan(static_cast<double>(f)) || f < 0) {}
    MetricValue(bool b) : text_(b ? "1" : "0") {}  // NOLINT(google-explicit-constructor)

    const std::string& text() const noexcept { return text_; }
    // Negative or NaN: not a valid counter value.
    bool negative() const noexcept { return negative_; }

private:
    std::string text_;
    bool negative_ = false;
};

// Collects samples grouped into metric families and renders them in the Prometheus text
// exposition format: each family once, `# HELP` and `# TYPE` first, then all its samples
// together, families in the order they were first added. to_prometheus() fills one; add your own
// series to the same exposition with add_counter()/add_gauge().
//   bulwark::MetricsWriter w;
//   w.add_counter("app_requests_total", "Requests served.", {{"route", "/send"}}, 42);
//   bulwark::to_prometheus(w, breaker, bulwark::metric_name("sms_retry", retry));
//   respond(200, "text/plain; version=0.0.4; charset=utf-8", w.str());
// A family's help is the first one given. A sample whose family and label set (in any order) were
// already added is dropped, and counted in dropped(): the first wins, so the exposition never
// holds two series with the same identity (Prometheus would reject the scrape).
// Throws std::invalid_argument for an invalid metric or label name, a label named twice, a
// family added as two types, a family named as a histogram's series (<histogram>_bucket, _sum,
// _count), or a negative or NaN counter value.
// Not thread-safe: build one per scrape.
// MetricsWriter is BasicMetricsWriter<>: a class template only so that its code is compiled where
// it is used (the Tag is never used).
template <class Tag = void>
class BasicMetricsWriter {
public:
    enum class Type : std::uint8_t { counter, gauge, histogram };

    BasicMetricsWriter& add_counter(std::string_view name, std::string_view help,
                                    const MetricLabels& labels, const MetricValue& value) {
        add(Type::counter, name, help, labels, value);
        return *this;
    }

    BasicMetricsWriter& add_gauge(std::string_view name, std::string_view help,
                                  const MetricLabels& labels, const MetricValue& value) {
        add(Type::gauge, name, help, labels, value);
        return *this;
    }

    // A histogram: `cumulative[i]` observations were <= `bounds[i]` (ascending, finite), `count`
    // in all (the +Inf bucket) summing to `sum`. Renders name_bucket{...,le="..."} for each
    // bound and +Inf, name_sum and name_count. Throws std::invalid_argument, besides the
    // reasons above, for bounds that do not ascend, counts that decrease or exceed `count`,
    // sizes that differ, or a label named "le".
    BasicMetricsWriter& add_histogram(std::string_view name, std::string_view help,
                                      const MetricLabels& labels, const std::vector<double>& bounds,
                                      const std::vector<std::uint64_t>& cumulative, double sum,
                                      std::uint64_t count) {
        MetricLabels shown;
        std::string key = series_key(name, labels, shown);
        const std::string what = "bulwark::MetricsWriter: histogram " + std::string(name);
        if (bounds.size() != cumulative.size()) {
            detail::throw_invalid_argument(what + ": bounds and counts differ in size");
        }
        for (std::size_t i = 0; i < bounds.size(); ++i) {
            if (!detail::is_finite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1]))) {
                detail::throw_invalid_argument(what + ": bounds must be finite and ascend");
            }
            if ((i > 0 && cumulative[i] < cumulative[i - 1]) || cumulative[i] > count) {
                detail::throw_invalid_argument(what + ": bucket counts must not decrease");
            }
        }
        for (const MetricLabel& label : shown) {
            if (label.first == "le") {
                detail::throw_invalid_argument(what + ": \"le\" is the bucket label");
            }
        }
        Family& f = family(Type::histogram, name, help);
        if (!f.series.insert(std::move(key)).second) {
            ++dropped_;
            return *this;
        }
        for (std::size_t i = 0; i <= bounds.size(); ++i) {
            const std::string le =
                i < bounds.size() ? detail::metric_number(bounds[i]) : std::string("+Inf");
            const MetricLabel bucket{"le", le};
            append_sample(f.samples, name, "_bucket", shown, &bucket,
                          MetricValue(i < bounds.size() ? cumulative[i] : count).text());
        }
        append_sample(f.samples, name, "_sum", shown, nullptr, MetricValue(sum).text());
        append_sample(f.samples, name, "_count", shown, nullptr, MetricValue(count).text());
        ++samples_;
        return *this;
    }

    // The exposition: ends with a line feed unless empty.
    std::string str() const {
        std::string out;
        for (const Family& f : families_) {
            out += "# HELP ";
            out += f.name;
            out.push_back(' ');
            detail::append_escaped(out, f.help, false);
            out += "\n# TYPE ";
            out += f.name;
            out += f.type == Type::counter ? " counter\n"
                   : f.type == Type::gauge ? " gauge\n"
                                           : " histogram\n";
            out += f.samples;
        }
        return out;
    }

    std::size_t families() const noexcept { return families_.size(); }
    std::size_t samples() const noexcept { return samples_; }
    // Samples dropped as duplicates of an earlier (family, label set).
    std::size_t dropped() const noexcept { return dropped_; }
    bool empty() const noexcept { return families_.empty(); }

private:
    struct Family {
        std::string name;
        std::string help;
        Type type;
        std::string samples;           // rendered sample lines
        std::set<std::string> series;  // label sets seen, labels sorted by name
    };

    void add(Type type, std::string_view name, std::string_view help, const MetricLabels& labels,
             const MetricValue& value) {
        if (type == Type::counter && value.negative()) {
            check_name(name);
            detail::throw_invalid_argument("bulwark::MetricsWriter: counter " + std::string(name) +
                                           " must not be negative or NaN, got " + value.text());
        }
        MetricLabels shown;
        std::string key = series_key(name, labels, shown);
        Family& f = family(type, name, help);
        if (!f.series.insert(std::move(key)).second) {
            ++dropped_;
            return;
        }
        append_sample(f.samples, name, "", shown, nullptr, value.text());
        ++samples_;
    }

    static void check_name(std::string_view name) {
        if (!detail::is_metric_name(name, true)) {
            detail::throw_invalid_argument("bulwark::MetricsWriter: invalid metric name \"" +
                                           std::string(name) + "\"");
        }
    }

    // The identity of a series (its labels sorted by name, empty values left out), after
    // checking the names; `shown` gets the labels as given, without the empty ones.
    static std::string series_key(std::string_view name, const MetricLabels& labels,
                                  MetricLabels& shown) {
        check_name(name);
        for (const MetricLabel& label : labels) {
            if (!detail::is_metric_name(label.first, false) || label.first.substr(0, 2) == "__") {
                detail::throw_invalid_argument("bulwark::MetricsWriter: invalid label name \"" +
                                               std::string(label.first) + "\" in " +
                                               std::string(name));
            }
        }
        // A label with an empty value is the same series as one without it (Prometheus's rule),
        // so it is left out of both the identity and the output.
        MetricLabels sorted;
        sorted.reserve(labels.size());
        for (const MetricLabel& label : labels) {
            if (!label.second.empty()) {
                sorted.push_back(label);
            }
        }
        shown = sorted;
        std::sort(sorted.begin(), sorted.end(),
                  [](const MetricLabel& a, const MetricLabel& b) { return a.first < b.first; });
        std::string key;
        for (std::size_t i = 0; i < sorted.size(); ++i) {
            if (i > 0 && sorted[i].first == sorted[i - 1].first) {
                detail::throw_invalid_argument("bulwark::MetricsWriter: label \"" +
                                               std::string(sorted[i].first) + "\" given twice in " +
                                               std::string(name));
            }
            append_label(key, sorted[i]);
        }
        return key;
    }

    static void append_sample(std::string& out, std::string_view name, std::string_view suffix,
                              const MetricLabels& shown, const MetricLabel* extra,
                              const std::string& value) {
        out += name;
        out += suffix;
        if (!shown.empty() || extra != nullptr) {
            out.push_back('{');
            for (std::size_t i = 0; i < shown.size(); ++i) {
                if (i > 0) {
                    out.push_back(',');
                }
                append_label(out, shown[i]);
            }
            if (extra != nullptr) {
                if (!shown.empty()) {
                    out.push_back(',');
                }
                append_label(out, *extra);
            }
            out.push_back('}');
        }
        out.push_back(' ');
        out += value;
        out.push_back('\n');
    }

    static void append_label(std::string& out, const MetricLabel& label) {
        out += label.first;
        out += "=\"";
        detail::append_escaped(out, label.second, true);
        out.push_back('"');
    }

    Family& family(Type type, std::string_view name, std::string_view help) {
        auto it = index_.find(name);
        if (it == index_.end()) {
            // A histogram's series are named <name>_bucket, _sum and _count: no family may take
            // one of those names, before or after the histogram.
            if (const auto r = reserved_.find(name); r != reserved_.end()) {
                detail::throw_invalid_argument("bulwark::MetricsWriter: " + std::string(name) +
                                               " is a series of the histogram " + r->second);
            }
            if (type == Type::histogram) {
                for (const char* suffix : {"_bucket", "_sum", "_count"}) {
                    if (index_.count(std::string(name) + suffix) != 0) {
                        detail::throw_invalid_argument("bulwark::MetricsWriter: the histogram " +
                                                       std::string(name) + " would name a series " +
                                                       std::string(name) + suffix +
                                                       ", already a family");
                    }
                }
                for (const char* suffix : {"_bucket", "_sum", "_count"}) {
                    reserved_.emplace(std::string(name) + suffix, std::string(name));
                }
            }
            // The family first, then its index entry, undone if that throws: the index never
            // points past the end of families_.
            families_.push_back(Family{std::string(name), std::string(help), type, {}, {}});
            try {
                it = index_.emplace(std::string(name), families_.size() - 1).first;
            } catch (...) {
                families_.pop_back();
                throw;
            }
        }
        Family& f = families_[it->second];
        if (f.type != type) {
            detail::throw_invalid_argument("bulwark::MetricsWriter: " + std::string(name) +
                                           " was added as two types (counter, gauge, histogram)");
        }
        return f;
    }

    std::vector<Family> families_;
    std::map<std::string, std::size_t, std::less<>> index_;
    std::map<std::string, std::string, std::less<>> reserved_;  // series name -> its histogram
    std::size_t samples_ = 0;
    std::size_t dropped_ = 0;
};

using MetricsWriter = BasicMetricsWriter<>;

}  // namespace bulwark

#endif  // BULWARK_METRICS_WRITER_HPP
// #include <bulwark/time.hpp> (already included above)

namespace bulwark {

// What one channel (or all of them: channel "") did in a time range. Attempts are adapter calls;
// a channel passed over (breaker open, rate limited) is not an attempt.
struct ChannelDeliveryStats {
    std::string channel;
    std::uint64_t attempts = 0;
    std::uint64_t successes = 0;
    double success_rate = 1.0;  // successes / attempts; 1 with no attempts
    Duration mean_response{0};
    // From the response-time histogram (5 ms .. 10 s buckets), interpolated within the bucket
    // as Prometheus's histogram_quantile does: an estimate, exact to the bucket.
    Duration p95_response{0};
    double cost = 0.0;                       // receipts' costs (or the channel's cost per call)
    std::uint64_t fallbacks = 0;             // attempts made after another channel of the
                                             // same pass did not deliver
    std::uint64_t successful_fallbacks = 0;  // of those, how many delivered
    // Outages that ended in the range (a run of failed attempts ended by a success), and their
    // mean length: from the first failure to the success.
    std::uint64_t recoveries = 0;
    Duration mean_recovery{0};
};

// Statistics of a DeliveryEngine for [from, to), with the queue's state when taken.
//   auto s = engine.stats();  s.overall.success_rate;  s.channels[0].p95_response;
//   respond(200, "application/json", s.to_json());
struct DeliveryStats {
    WallTime from{};
    WallTime to{};
    ChannelDeliveryStats overall;
    std::vector<ChannelDeliveryStats> channels;  // in the order they were added
    std::size_t queued = 0;                      // messages in the queue store now
    std::size_t in_flight = 0;                   // of which leased by a worker now
    // Messages the engine tracks now, by status (indexed by MessageStatus).
    std::array<std::size_t, message_status_count> by_status{};
    // Moves into each status since the engine was made.
    std::array<std::uint64_t, message_status_count> entered{};

    std::string to_json() const {
        detail::JsonWriter w;
        w.begin_object();
        w.field("from_unix_s", seconds(from.time_since_epoch()));
        w.field("to_unix_s", seconds(to.time_since_epoch()));
        w.key("overall");
        write(w, overall);
        w.key("channels").begin_array();
        for (const ChannelDeliveryStats& c : channels) {
            write(w, c);
        }
        w.end_array();
        w.field("queued", static_cast<std::uint64_t>(queued));
        w.field("in_flight", static_cast<std::uint64_t>(in_flight));
        w.key("by_status").begin_object();
        for (std::size_t i = 0; i < message_status_count; ++i) {
            w.field(to_string(static_cast<MessageStatus>(i)),
                    static_cast<std::uint64_t>(by_status[i]));
        }
        w.end_object();
        w.key("entered").begin_object();
        for (std::size_t i = 0; i < message_status_count; ++i) {
            w.field(to_string(static_cast<MessageStatus>(i)), entered[i]);
        }
        w.end_object();
        w.end_object();
        return w.take();
    }

private:
    static double seconds(Duration d) noexcept { return std::chrono::duration<double>(d).count(); }

    static void write(detail::JsonWriter& w, const ChannelDeliveryStats& c) {
        w.begin_object();
        w.field("channel", c.channel);
        w.field("attempts", c.attempts).field("successes", c.successes);
        w.field("success_rate", c.success_rate);
        w.field("mean_response_s", seconds(c.mean_response));
        w.field("p95_response_s", seconds(c.p95_response));
        w.field("cost", c.cost);
        w.field("fallbacks", c.fallbacks).field("successful_fallbacks", c.successful_fallbacks);
        w.field("recoveries", c.recoveries).field("mean_recovery_s", seconds(c.mean_recovery));
        w.end_object();
    }
};

namespace detail {

// Upper bounds of the response-time histogram, in seconds (Prometheus's default buckets).
inline constexpr std::array<double, 11> delivery_latency_bounds = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0};

// Sums of attempts, mergeable: one minute of one channel, a range, or every channel.
struct DeliveryCounts {
    std::uint64_t attempts = 0;
    std::uint64_t successes = 0;
    std::uint64_t fallbacks = 0;
    std::uint64_t fallback_successes = 0;
    std::uint64_t recoveries = 0;
    double cost = 0.0;
    std::int64_t response_ns = 0;
    std::int64_t recovery_ns = 0;
    // Observations per histogram bucket (not cumulative); the last is +Inf.
    std::array<std::uint64_t, delivery_latency_bounds.size() + 1> buckets{};

    void merge(const DeliveryCounts& o) noexcept {
        attempts += o.attempts;
        successes += o.successes;
        fallbacks += o.fallbacks;
        fallback_successes += o.fallback_successes;
        recoveries += o.recoveries;
        cost += o.cost;
        response_ns += o.response_ns;
        recovery_ns += o.recovery_ns;
        for (std::size_t i = 0; i < buckets.size(); ++i) {
            buckets[i] += o.buckets[i];
        }
    }

    // The 95th percentile, interpolated within its bucket (the +Inf bucket answers its lower
    // bound: nothing better is known).
    double p95_s() const noexcept {
        if (attempts == 0) {
            return 0.0;
        }
        const double rank = 0.95 * static_cast<double>(attempts);
        double below = 0.0;
        for (std::size_t i = 0; i < buckets.size(); ++i) {
            const auto here = static_cast<double>(buckets[i]);
            if (here > 0.0 && below + here >= rank) {
                const double lower = i == 0 ? 0.0 : delivery_latency_bounds[i - 1];
                if (i == delivery_latency_bounds.size()) {
                    return lower;
                }
                const double upper = delivery_latency_bounds[i];
                return lower + (upper - lower) * ((rank - below) / here);
            }
            below += here;
        }
        return delivery_latency_bounds.back();
    }

    ChannelDeliveryStats finish(std::string channel) const {
        ChannelDeliveryStats s;
        s.channel = std::move(channel);
        s.attempts = attempts;
        s.successes = successes;
        s.cost = cost;
        s.fallbacks = fallbacks;
        s.successful_fallbacks = fallback_successes;
        s.recoveries = recoveries;
        if (attempts > 0) {
            s.success_rate = static_cast<double>(successes) / static_cast<double>(attempts);
            s.mean_response = Duration(response_ns / static_cast<std::int64_t>(attempts));
            s.p95_response = to_duration(p95_s());
        }
        if (recoveries > 0) {
            s.mean_recovery = Duration(recovery_ns / static_cast<std::int64_t>(recoveries));
        }
        return s;
    }

    static Duration to_duration(double s) noexcept {
        return std::chrono::duration_cast<Duration>(std::chrono::duration<double>(s));
    }
};

// One channel's statistics: a ring of one-minute buckets (wall time) for ranges, and totals
// since it was made for the metrics. Thread-safe (one mutex; one short critical section per
// attempt).
class ChannelStatsCell {
public:
    explicit ChannelStatsCell(std::size_t minutes) : ring_(std::max<std::size_t>(minutes, 1)) {}

    // An attempt that started at `at` (wall) and ended at `end` (on the engine's clock).
    void record(WallTime at, TimePoint end, bool ok, Duration response, double cost,
                bool fallback) {
        const std::int64_t response_ns = std::max<std::int64_t>(response.count(), 0);
        const double response_s = static_cast<double>(response_ns) / 1e9;
        // The first bound >= the duration: Prometheus's buckets are "less than or equal".
        const auto bucket =
            static_cast<std::size_t>(std::lower_bound(delivery_latency_bounds.begin(),
                                                      delivery_latency_bounds.end(), response_s) -
                                     delivery_latency_bounds.begin());
        LockGuard lock(mutex_);
        DeliveryCounts* minute = slot(minute_of(at));
        std::int64_t recovered = -1;
        if (!ok) {
            if (!down_) {
                down_ = true;
                down_since_ = end - response;
            }
        } else if (down_) {
            down_ = false;
            recovered = std::max<std::int64_t>((end - down_since_).count(), 0);
        }
        for (DeliveryCounts* c : {&total_, minute}) {
            if (c == nullptr) {
                continue;
            }
            ++c->attempts;
            c->successes += ok ? 1 : 0;
            c->fallbacks += fallback ? 1 : 0;
            c->fallback_successes += fallback && ok ? 1 : 0;
            c->cost += cost;
            c->response_ns += response_ns;
            ++c->buckets[bucket];
            if (recovered >= 0) {
                ++c->recoveries;
                c->recovery_ns += recovered;
            }
        }
    }

    // The sums of the minutes that start in [minute of `from`, `to`).
    DeliveryCounts range(WallTime from, WallTime to) const {
        DeliveryCounts sum;
        const std::int64_t first = minute_of(from);
        const std::int64_t last = minute_of(to - Duration{1});
        LockGuard lock(mutex_);
        for (const Minute& m : ring_) {
            if (m.minute >= first && m.minute <= last) {
                sum.merge(m.counts);
            }
        }
        return sum;
    }

    DeliveryCounts total() const {
        LockGuard lock(mutex_);
        return total_;
    }

    void write(MetricsWriter& w, std::string_view engine, std::string_view channel) const {
        const DeliveryCounts t = total();
        const MetricLabels l{{"engine", engine}, {"channel", channel}};
        w.add_counter("bulwark_delivery_attempts_total", "Adapter calls, by channel.", l,
                      t.attempts);
        w.add_counter("bulwark_delivery_successes_total", "Adapter calls that delivered.", l,
                      t.successes);
        w.add_counter("bulwark_delivery_fallbacks_total",
                      "Calls made after another channel of the same pass did not deliver.", l,
                      t.fallbacks);
        w.add_counter("bulwark_delivery_fallback_successes_total", "Fallback calls that delivered.",
                      l, t.fallback_successes);
        w.add_counter("bulwark_delivery_cost_total", "What the calls cost, in the user's unit.", l,
                      t.cost);
        std::vector<double> bounds(delivery_latency_bounds.begin(), delivery_latency_bounds.end());
        std::vector<std::uint64_t> cumulative;
        std::uint64_t running = 0;
        for (std::size_t i = 0; i < bounds.size(); ++i) {
            running += t.buckets[i];
            cumulative.push_back(running);
        }
        w.add_histogram("bulwark_delivery_response_seconds", "Adapter call durations.", l, bounds,
                        cumulative, static_cast<double>(t.response_ns) / 1e9, t.attempts);
    }

private:
    struct Minute {
        std::int64_t minute = std::numeric_limits<std::int64_t>::min();
        DeliveryCounts counts;
    };

    static std::int64_t minute_of(WallTime t) noexcept {
        return std::chrono::floor<std::chrono::minutes>(t.time_since_epoch()).count();
    }

    // The bucket of `minute`, reset when it held an older minute; null for a minute older than
    // the ring holds (a late record counts in the totals only).
    DeliveryCounts* slot(std::int64_t minute) BULWARK_REQUIRES(mutex_) {
        const auto n = static_cast<std::int64_t>(ring_.size());
        Minute& m = ring_[static_cast<std::size_t>(((minute % n) + n) % n)];
        if (m.minute > minute) {
            return nullptr;
        }
        if (m.minute != minute) {
            m = Minute{};
            m.minute = minute;
        }
        return &m.counts;
    }

    mutable Mutex mutex_;
    std::vector<Minute> ring_ BULWARK_GUARDED_BY(mutex_);
    DeliveryCounts total_ BULWARK_GUARDED_BY(mutex_);
    bool down_ BULWARK_GUARDED_BY(mutex_) = false;
    TimePoint down_since_ BULWARK_GUARDED_BY(mutex_){};
};

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DELIVERY_STATS_HPP
// #include <bulwark/detail/dead_letter_index.hpp> (already included above)
// #include <bulwark/detail/journal.hpp> (already included above)
// #include <bulwark/detail/mutex.hpp> (already included above)
// #include <bulwark/detail/random.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/detail/traits.hpp> (already included above)
// #include <bulwark/errors.hpp> (already included above)
// #include <bulwark/events.hpp> (already included above)
// #include <bulwark/fallback_chain.hpp>
// FallbackChain: channels tried in turn by priority, rotation, health, load or cost.
#ifndef BULWARK_FALLBACK_CHAIN_HPP
#define BULWARK_FALLBACK_CHAIN_HPP

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

// #include <bulwark/circuit_breaker.hpp> (already included above)
// #include <bulwark/clock.hpp> (already included above)
// #include <bulwark/context.hpp> (already included above)
// #include <bulwark/detail/math.hpp> (already included above)
// #include <bulwark/detail/random.hpp> (already included above)
// #include <bulwark/detail/recent_window.hpp>
// The last 32 outcomes of something in one 64-bit word, and their success rate (private).
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
// #include <bulwark/detail/striped_counter.hpp>
// Striped per-thread counters: statistics without contended atomics (private).
#ifndef BULWARK_DETAIL_STRIPED_COUNTER_HPP
#define BULWARK_DETAIL_STRIPED_COUNTER_HPP

#include <atomic>
#include <cstdint>

// #include <bulwark/config.hpp> (already included above)
// #include <bulwark/detail/thread_slot.hpp> (already included above)

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
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/detail/traits.hpp> (already included above)
// #include <bulwark/errors.hpp> (already included above)
// #include <bulwark/events.hpp> (already included above)
// #include <bulwark/fallback_chain_options.hpp>
// FallbackChain vocabulary: selections, reasons, options, attempts, results and rules.
#ifndef BULWARK_FALLBACK_CHAIN_OPTIONS_HPP
#define BULWARK_FALLBACK_CHAIN_OPTIONS_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <initializer_list>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

// #include <bulwark/detail/math.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/errors.hpp> (already included above)
// #include <bulwark/inline_vector.hpp>
// InlineVector: a vector with its first N elements inline, for results that are usually short.
#ifndef BULWARK_INLINE_VECTOR_HPP
#define BULWARK_INLINE_VECTOR_HPP

#include <array>
#include <cstddef>
#include <type_traits>
#include <utility>
#include <vector>

namespace bulwark {

// A vector that keeps up to N elements inline and moves all of them to the heap past N (so that
// data() stays contiguous): results that are usually short (a chain's attempts) cost no
// allocation. T must be default-constructible and movable. Thread-compatible.
//   bulwark::InlineVector<Attempt, 8> v;  v.push_back(a);  for (const Attempt& x : v) { ... }
template <class T, std::size_t N>
class InlineVector {
public:
    InlineVector() = default;
    InlineVector(const InlineVector&) = default;
    InlineVector& operator=(const InlineVector&) = default;
    // A moved-from vector is empty: its size must not outlive the heap block it described.
    InlineVector(InlineVector&& other) noexcept(std::is_nothrow_move_constructible<T>::value)
        : inline_(std::move(other.inline_)), heap_(std::move(other.heap_)), size_(other.size_) {
        other.clear();
    }
    InlineVector& operator=(InlineVector&& other) noexcept(
        std::is_nothrow_move_assignable<T>::value) {
        if (this != &other) {
            inline_ = std::move(other.inline_);
            heap_ = std::move(other.heap_);
            size_ = other.size_;
            other.clear();
        }
        return *this;
    }
    ~InlineVector() = default;

    void clear() noexcept {
        heap_.clear();
        size_ = 0;
    }

    void push_back(T value) {
        if (heap_.empty() && size_ < N) {
            inline_[size_++] = std::move(value);
            return;
        }
        if (heap_.empty()) {
            heap_.reserve(2 * N);
            for (std::size_t i = 0; i < size_; ++i) {
                heap_.push_back(std::move(inline_[i]));
            }
        }
        heap_.push_back(std::move(value));
        ++size_;
    }
    T* data() noexcept { return heap_.empty() ? inline_.data() : heap_.data(); }
    const T* data() const noexcept { return heap_.empty() ? inline_.data() : heap_.data(); }
    std::size_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }
    T& operator[](std::size_t i) noexcept { return data()[i]; }
    const T& operator[](std::size_t i) const noexcept { return data()[i]; }
    T* begin() noexcept { return data(); }
    T* end() noexcept { return data() + size_; }
    const T* begin() const noexcept { return data(); }
    const T* end() const noexcept { return data() + size_; }
    T& back() noexcept { return data()[size_ - 1]; }
    const T& back() const noexcept { return data()[size_ - 1]; }

private:
    std::array<T, N> inline_{};
    std::vector<T> heap_;
    std::size_t size_ = 0;
};

}  // namespace bulwark

#endif  // BULWARK_INLINE_VECTOR_HPP
// #include <bulwark/time.hpp> (already included above)

namespace bulwark {

template <class Tag>
class BasicCircuitBreaker;
using CircuitBreaker = BasicCircuitBreaker<void>;  // circuit_breaker.hpp
template <class Tag>
class BasicRetryPolicy;
using RetryPolicy = BasicRetryPolicy<void>;  // retry.hpp
template <class Tag>
class BasicRateLimiter;
using RateLimiter = BasicRateLimiter<void>;  // rate_limiter.hpp

// How a FallbackChain orders its channels for one call. See docs/fallback_chain.md.
enum class Selection : std::uint8_t {
    priority,       // the order the channels were added (or a rule lists them)
    round_robin,    // that order, rotated by one per call
    health_based,   // breaker closed first, then by recent success rate, then priority
    load_balanced,  // weighted random by weight / (1 + calls in flight), seeded
    least_cost,     // ascending cost, ties by priority
};

// Why an attempt did not deliver. `none` for the attempt that delivered.
enum class FallbackReason : std::uint8_t {
    none,               // delivered
    primary_failed,     // the channel was called and failed (threw, or its retry gave up)
    unavailable,        // not called: its breaker rejected (open, forced open, probes taken)
    rate_limited,       // not called: its rate limiter had no permit
    cost_threshold,     // not called: its cost is above ChainOptions::max_cost
    quality_threshold,  // not called: recent success rate below ChainOptions::min_success_rate
};

inline const char* to_string(Selection selection) noexcept {
    switch (selection) {
        case Selection::priority:
            return "priority";
        case Selection::round_robin:
            return "round_robin";
        case Selection::health_based:
            return "health_based";
        case Selection::load_balanced:
            return "load_balanced";
        case Selection::least_cost:
            return "least_cost";
    }
    return "unknown";
}

inline const char* to_string(FallbackReason reason) noexcept {
    switch (reason) {
        case FallbackReason::none:
            return "none";
        case FallbackReason::primary_failed:
            return "primary_failed";
        case FallbackReason::unavailable:
            return "unavailable";
        case FallbackReason::rate_limited:
            return "rate_limited";
        case FallbackReason::cost_threshold:
            return "cost_threshold";
        case FallbackReason::quality_threshold:
            return "quality_threshold";
    }
    return "unknown";
}

// Per-channel options of a FallbackChain. Plain aggregate with validate(), which
// FallbackChain::add calls.
//   bulwark::ChannelOptions o;  o.breaker = &email_breaker;  o.cost = 0.001;
// The breaker, retry and limiter are not owned: they must outlive the chain. They may be shared
// with other code (a breaker shared by two chains counts both).
struct ChannelOptions {
    // Relative share for Selection::load_balanced. >= 0 and finite; 0 = only when every
    // weighted channel failed.
    double weight = 1.0;
    // Cost of one call, in the caller's unit, for Selection::least_cost and max_cost. >= 0.
    double cost = 0.0;
    // Asked for a permit before each call; a rejection skips the channel (unavailable).
    CircuitBreaker* breaker = nullptr;
    // Wraps the channel's call: retry->try_execute(call, ctx). Inside the breaker: the breaker
    // sees one result per chain call, whatever the retries did.
    RetryPolicy* retry = nullptr;
    // Asked for one permit (try_acquire, never waits) after the breaker; a refusal skips the
    // channel (rate_limited) and is recorded in the breaker as an inner rejection (neutral).
    RateLimiter* limiter = nullptr;
    // A disabled channel is left out of every call, not even recorded as an attempt.
    // FallbackChain::set_enabled changes it at run time.
    bool enabled = true;

    // Throws std::invalid_argument naming the field and the value. FallbackChain::add calls it.
    void validate() const {
        if (!(weight >= 0.0 && detail::is_finite(weight))) {
            detail::throw_invalid_option("ChannelOptions.weight", "must be finite and >= 0",
                                         detail::format_number(weight));
        }
        if (!(cost >= 0.0 && detail::is_finite(cost))) {
            detail::throw_invalid_option("ChannelOptions.cost", "must be finite and >= 0",
                                         detail::format_number(cost));
        }
    }
};

// Per-chain options. Plain aggregate; the chain's constructor validates it.
//   bulwark::ChainOptions o;  o.max_cost = 0.01;  o.min_success_rate = 0.8;
struct ChainOptions {
    // Channels *called* per execute (skipped channels do not count). 0 = all of them (default).
    std::uint32_t max_attempts = 0;
    // Channels whose cost is above it are skipped (cost_threshold). >= 0; default: no limit.
    double max_cost = std::numeric_limits<double>::infinity();
    // Channels whose success rate over their last min_samples calls (through this chain) is
    // below it are skipped (quality_threshold). In [0, 1]; 0 = off (default).
    double min_success_rate = 0.0;
    // The quality window: the rule judges a channel by its last min_samples calls, and only once
    // it has made that many. In [1, 32].
    std::uint32_t min_samples = 10;
    // A channel skipped for quality gets no new samples, so one call is let through this long
    // after it was first skipped (and again every interval while it stays below). >= 0.
    Duration quality_probe_interval = std::chrono::seconds(30);

    void validate() const {
        if (!(max_cost >= 0.0)) {
            detail::throw_invalid_option("ChainOptions.max_cost", "must be >= 0",
                                         detail::format_number(max_cost));
        }
        if (!(min_success_rate >= 0.0 && min_success_rate <= 1.0)) {
            detail::throw_invalid_option("ChainOptions.min_success_rate", "must be in [0, 1]",
                                         detail::format_number(min_success_rate));
        }
        if (min_samples < 1 || min_samples > 32) {
            detail::throw_invalid_option("ChainOptions.min_samples", "must be in [1, 32]",
                                         std::to_string(min_samples));
        }
        if (quality_probe_interval < Duration::zero()) {
            detail::throw_invalid_option("ChainOptions.quality_probe_interval", "must be >= 0",
                                         detail::format_duration(quality_probe_interval));
        }
    }
};

// One channel considered by one execute: called, or skipped without a call.
struct Attempt {
    std::uint32_t number = 0;  // 1-based position among the attempts of this execute
    std::string_view channel;  // the channel's name (a view into the chain: valid while it lives)
    TimePoint started{};       // when it was considered, on the chain's clock
    Duration elapsed{0};  // the call's duration (retries and their waits included); 0 if skipped
    bool ok = false;      // the channel delivered
    std::exception_ptr error;  // what it threw, or the rejection (breaker, limiter); null if ok
                               // or skipped by a threshold
    FallbackReason reason = FallbackReason::none;  // why it did not deliver; none if ok
    bool called() const noexcept {
        return reason == FallbackReason::none || reason == FallbackReason::primary_failed;
    }
};

// The chain moved on from `from` (which did not deliver, for `reason`) to `to`.
struct ChannelFallbackEvent {
    std::string_view from;
    std::string_view to;
    FallbackReason reason = FallbackReason::none;
    std::exception_ptr error;  // from's error, if it had one
};

// What a channel has seen through this chain (calls made elsewhere are not counted).
// calls == successes + failures once no execute is running.
struct ChannelStats {
    std::uint64_t calls = 0;      // times the channel was called (one per execute, retries inside)
    std::uint64_t successes = 0;  // of those, how many delivered
    std::uint64_t failures = 0;   // of those, how many failed
    std::uint64_t skipped = 0;    // times it was passed over without a call (any skip reason)
    std::uint64_t fallbacks = 0;  // times it delivered after an earlier channel of the same
                                  // execute did not (it served as a fallback)
    double success_rate = 1.0;    // successes / calls over the chain's life; 1 with no calls
    double recent_success_rate = 1.0;  // over the last (up to) 32 calls; 1 with no calls
    Duration mean_latency{0};          // mean duration of the calls
    std::string_view name;             // valid while the chain lives
};

template <class Signature>
class FallbackChain;

// The outcome of FallbackChain::execute: the value and who delivered it, or the last error, and
// every channel considered on the way.
//   auto res = chain.execute(msg);
//   if (res.ok()) log(res.channel()); else alert(res.error());
//   for (const bulwark::Attempt& a : res.attempts()) { ... }
// Holds up to 8 attempts inline (no allocation); a 9th moves them to the heap. The attempts'
// channel names are views into the chain: the chain must outlive them. Thread-compatible.
template <class R>
class [[nodiscard]] ChainResult {
public:
    using value_type = R;
    using AttemptList = InlineVector<Attempt, 8>;

    // A channel delivered. False for a default-constructed (or moved-from) result too.
    bool ok() const noexcept { return ok_; }
    explicit operator bool() const noexcept { return ok(); }

    // The delivered value; throws error() (the last channel's error) if none delivered.
    template <class U = R, std::enable_if_t<!std::is_void<U>::value, int> = 0>
    U& value() & {
        rethrow_if_error();
        return *value_;
    }
    template <class U = R, std::enable_if_t<!std::is_void<U>::value, int> = 0>
    const U& value() const& {
        rethrow_if_error();
        return *value_;
    }
    template <class U = R, std::enable_if_t<!std::is_void<U>::value, int> = 0>
    U&& value() && {
        rethrow_if_error();
        return std::move(*value_);
    }
    template <class U = R, std::enable_if_t<std::is_void<U>::value, int> = 0>
    void value() const {
        rethrow_if_error();
    }

    // The name of the channel that delivered; empty if none did.
    std::string_view channel() const noexcept { return channel_; }
    // Null if a channel delivered. Otherwise the error of the last attempt that has one (a
    // channel's exception, a CircuitOpenError, a RateLimitedError), or a NoChannelError when
    // no attempt has one.
    std::exception_ptr error() const noexcept { return error_; }
    void rethrow_if_error() const {
        if (error_) {
            std::rethrow_exception(error_);
        }
        if (!ok_) {
            detail::throw_invalid_argument(
                "bulwark::ChainResult: no result (default-constructed or moved from)");
        }
    }
    // Every channel considered, in order.
    const AttemptList& attempts() const noexcept { return attempts_; }
    // Channels called (attempts that were not skipped).
    std::uint32_t calls() const noexcept { return calls_; }
    // True if the context was cancelled or its deadline passed before a channel delivered, and
    // channels were left untried because of it.
    bool stopped() const noexcept { return stopped_; }

private:
    template <class S>
    friend class FallbackChain;

    struct NoValue {};
    using Slot = std::conditional_t<std::is_void<R>::value, NoValue, std::optional<R>>;

    Slot value_{};
    bool ok_ = false;
    std::string_view channel_;
    std::exception_ptr error_;
    AttemptList attempts_;
    std::uint32_t calls_ = 0;
    bool stopped_ = false;
};

// The fallbacks for one primary channel, for FallbackChain::execute_for.
struct FallbackRule {
    std::vector<std::string> fallbacks;  // tried after the primary, ordered by `selection`
    Selection selection = Selection::priority;
    std::uint32_t max_attempts = 0;  // channels called, primary included; 0 = the chain's
    // For DeliveryEngine: whether a permanent failure of a channel (DeliveryErrorKind permanent
    // or bounced: a bad address, a refused message) moves on to the next channel. A
    // FallbackChain falls back on every failure and does not read it.
    bool fallback_on_permanent = false;
};

// Which channels back up which: per primary channel, and a global order for primaries without
// a rule. Names are checked when the rules are given to a chain (FallbackChain::rules).
//   bulwark::FallbackRules rules;
//   rules.set("telegram", {{"email", "sms"}, bulwark::Selection::priority, 2});
//   rules.set_global({"email", "sms", "telegram"});
// Plain value type; not thread-safe.
class FallbackRules {
public:
    // Sets (or replaces) the rule for `primary`.
    FallbackRules& set(std::string primary, FallbackRule rule) {
        for (auto& entry : rules_) {
            if (entry.first == primary) {
                entry.second = std::move(rule);
                return *this;
            }
        }
        rules_.emplace_back(std::move(primary), std::move(rule));
        return *this;
    }
    // The fallback order for a primary without a rule; channels it does not list follow in the
    // chain's selection order.
    FallbackRules& set_global(std::vector<std::string> order) {
        global_ = std::move(order);
        return *this;
    }
    const FallbackRule* find(std::string_view primary) const noexcept {
        for (const auto& entry : rules_) {
            if (entry.first == primary) {
                return &entry.second;
            }
        }
        return nullptr;
    }
    const std::vector<std::pair<std::string, FallbackRule>>& rules() const noexcept {
        return rules_;
    }
    const std::vector<std::string>& global() const noexcept { return global_; }

private:
    std::vector<std::pair<std::string, FallbackRule>> rules_;
    std::vector<std::string> global_;
};

}  // namespace bulwark

#endif  // BULWARK_FALLBACK_CHAIN_OPTIONS_HPP
// #include <bulwark/inline_vector.hpp> (already included above)
// #include <bulwark/outcome.hpp> (already included above)
// #include <bulwark/policy.hpp> (already included above)
// #include <bulwark/rate_limiter.hpp>
// RateLimiter: token bucket and sliding-window limits with an optional wait.
#ifndef BULWARK_RATE_LIMITER_HPP
#define BULWARK_RATE_LIMITER_HPP

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

// #include <bulwark/clock.hpp> (already included above)
// #include <bulwark/context.hpp> (already included above)
// #include <bulwark/detail/math.hpp> (already included above)
// #include <bulwark/detail/mutex.hpp> (already included above)
// #include <bulwark/detail/striped_counter.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/errors.hpp> (already included above)
// #include <bulwark/events.hpp> (already included above)
// #include <bulwark/outcome.hpp> (already included above)
// #include <bulwark/policy.hpp> (already included above)

namespace bulwark {

// `rate` permits per second on average, with bursts of up to `burst` at once (a token bucket of
// capacity `burst`, refilled at `rate`; implemented as GCRA, one atomic word).
struct TokenBucket {
    double rate = 100.0;      // permits per second, > 0 and <= 1e9
    std::uint32_t burst = 1;  // bucket capacity, >= 1; burst / rate at most 10 years
};

// At most `limit` permits in any window of length `window` (an exact sliding log).
struct SlidingWindow {
    std::uint32_t limit = 100;                  // 1 .. 1'000'000
    Duration window = std::chrono::seconds(1);  // > 0
};

struct RateLimiterOptions {
    // TokenBucket: burst / rate, the time a full bucket takes to refill, is at most 10 years.
    static constexpr double max_refill_seconds = 10 * 365.25 * 24 * 3600;

    std::variant<TokenBucket, SlidingWindow> limit = TokenBucket{};
    // How long execute() may wait for a permit (also bounded by the context's deadline); a call
    // that would have to wait longer is rejected at once with RateLimitedError. 0 = never wait.
    Duration max_wait = Duration::zero();

    void validate() const {
        if (const TokenBucket* tb = std::get_if<TokenBucket>(&limit)) {
            if (!(tb->rate > 0.0 && tb->rate <= 1e9)) {
                detail::throw_invalid_option("RateLimiterOptions.limit (TokenBucket.rate)",
                                             "must be in (0, 1e9]",
                                             detail::format_number(tb->rate));
            }
            if (tb->burst == 0) {
                detail::throw_invalid_option("RateLimiterOptions.limit (TokenBucket.burst)",
                                             "must be >= 1", "0");
            }
            // The limiter keeps its state as nanoseconds in 64 bits: bounding the time a full
            // bucket takes to refill keeps burst · (1 / rate) and every sum with it in range.
            const double refill_seconds = static_cast<double>(tb->burst) / tb->rate;
            if (!(refill_seconds <= max_refill_seconds)) {
                detail::throw_invalid_option(
                    "RateLimiterOptions.limit (TokenBucket.burst / TokenBucket.rate)",
                    "must be at most 10 years (the time a full bucket takes to refill)",
                    detail::format_number(refill_seconds) + " s");
            }
        } else {
            const auto& sw = std::get<SlidingWindow>(limit);
            if (sw.limit == 0 || sw.limit > 1000000) {
                detail::throw_invalid_option("RateLimiterOptions.limit (SlidingWindow.limit)",
                                             "must be in [1, 1000000]", std::to_string(sw.limit));
            }
            if (sw.window <= Duration::zero()) {
                detail::throw_invalid_option("RateLimiterOptions.limit (SlidingWindow.window)",
                                             "must be > 0", detail::format_duration(sw.window));
            }
        }
        if (max_wait < Duration::zero()) {
            detail::throw_invalid_option("RateLimiterOptions.max_wait", "must be >= 0",
                                         detail::format_duration(max_wait));
        }
    }
};

// The answer to a permit request.
struct RateDecision {
    bool admitted = false;
    Duration retry_after{0};  // refused: how long until the permits could be granted
    Duration waited{0};       // admitted by acquire(): how long it slept for them
    explicit operator bool() const noexcept { return admitted; }
};

struct RateLimiterStats {
    std::uint64_t admitted = 0;  // permits granted
    std::uint64_t rejected = 0;  // requests refused
    std::uint64_t waited = 0;    // requests that slept before being granted
};

// Limits how often calls happen: a token bucket (rate and burst) or a sliding window (limit per
// window).
//   bulwark::RateLimiter limiter(bulwark::TokenBucket{/*rate per s*/ 100, /*burst*/ 20});
//   bulwark::RateLimiter api("api", bulwark::TokenBucket{100, 20});   // named: errors' source()
//   limiter.execute(f);                           // RateLimitedError (with retry_after) when over
//   if (limiter.try_acquire(5)) { ... }           // two-step: 5 permits now or nothing
// Guarantee: over any interval of length T, the permits granted never exceed rate·T + burst
// (token bucket) or `limit` per window of length `window` (sliding window).
// Thread-safe. The token bucket's acquire is one coarse clock read and one CAS, lock-free, and
// reads time from Clock::coarse_now(), so permits are timed to within one clock tick. The
// sliding window takes a mutex. Neither allocates on acquire.
// RateLimiter is BasicRateLimiter<>: a class template only so that a translation unit that does not
// use it does not compile it (the Tag is never used).
template <class Tag = void>
class BasicRateLimiter : public PolicyBase<BasicRateLimiter<Tag>> {
public:
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    explicit BasicRateLimiter(TokenBucket bucket, Clock& clock = default_clock())
        : BasicRateLimiter(RateLimiterOptions{bucket, Duration::zero()}, clock) {}
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    explicit BasicRateLimiter(SlidingWindow window, Clock& clock = default_clock())
        : BasicRateLimiter(RateLimiterOptions{window, Duration::zero()}, clock) {}

    // Throws std::invalid_argument for invalid options. The clock must outlive the limiter.
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    explicit BasicRateLimiter(RateLimiterOptions options, Clock& clock = default_clock())
        : BasicRateLimiter(std::string(), std::move(options), clock) {}

    // A named limiter: its rejections say the name in their message and in
    // RejectedError::source().
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    BasicRateLimiter(std::string name, TokenBucket bucket, Clock& clock = default_clock())
        : BasicRateLimiter(std::move(name), RateLimiterOptions{bucket, Duration::zero()}, clock) {}
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    BasicRateLimiter(std::string name, SlidingWindow window, Clock& clock = default_clock())
        : BasicRateLimiter(std::move(name), RateLimiterOptions{window, Duration::zero()}, clock) {}
    BasicRateLimiter(std::string name, RateLimiterOptions options, Clock& clock = default_clock())
        : name_(std::make_shared<const std::string>(std::move(name))),
          label_(name_->empty() ? std::string()
                                : detail::component_label("rate limiter", *name_) + ": "),
          options_((options.validate(), std::move(options))),
          clock_(&clock) {
        if (const TokenBucket* tb = std::get_if<TokenBucket>(&options_.limit)) {
            // Rounded up, so rounding can only make the limiter stricter than its rate.
            interval_ns_ = static_cast<std::int64_t>(detail::ceil(1e9 / tb->rate));
            burst_ = tb->burst;
            tat_ns_.store(clock_->coarse_now_fast().time_since_epoch().count(),
                          std::memory_order_relaxed);
        } else {
            const auto& sw = std::get<SlidingWindow>(options_.limit);
            log_.assign(sw.limit, TimePoint{});
        }
    }

    BasicRateLimiter(const BasicRateLimiter&) = delete;
    BasicRateLimiter& operator=(const BasicRateLimiter&) = delete;

    const RateLimiterOptions& options() const noexcept { return options_; }
    // Empty when unnamed.
    const std::string& name() const noexcept { return *name_; }

    // `n` permits now, or none. Throws std::invalid_argument if n is 0 or more than can ever be
    // granted at once (the burst, or the window's limit).
    RateDecision try_acquire(std::uint32_t n = 1) {
        check_n(n);
        const RateDecision d = reserve(n, Duration::zero());
        count(d, n);
        return d;
    }

    // `n` permits, sleeping on the limiter's clock for up to `max_wait` if they are not free yet
    // (a token bucket reserves them and sleeps exactly until they are due).
    RateDecision acquire(std::uint32_t n, Duration max_wait) {
        check_n(n);
        RateDecision d = reserve(n, std::max(max_wait, Duration::zero()));
        if (d.admitted && d.waited > Duration::zero()) {
            clock_->sleep_for(d.waited);
        }
        while (!d.admitted && is_window() && d.retry_after <= max_wait - d.waited) {
            // The sliding log cannot reserve the future: sleep until enough entries expire and
            // try again.
            const Duration wait = std::max(d.retry_after, Duration(1));
            clock_->sleep_for(wait);
            const Duration slept = detail::saturating_add(d.waited, wait);
            d = reserve(n, Duration::zero());
            d.waited = slept;
        }
        count(d, n);
        return d;
    }

    template <class Next>
    auto apply(Context& ctx, Next&& next) {
        using O = std::invoke_result_t<Next&, Context&>;
        Duration max_wait = options_.max_wait;
        if (max_wait > Duration::zero()) {
            if (const auto left = ctx.remaining(*clock_)) {
                max_wait = std::min(max_wait, std::max(*left, Duration::zero()));
            }
        }
        const RateDecision d = max_wait > Duration::zero() ? acquire(1, max_wait) : try_acquire(1);
        if (BULWARK_UNLIKELY(!d.admitted)) {
            return O::from_error(std::make_exception_ptr(
                RateLimitedError(name_,
                                 label_ + "rate limit reached; retry after " +
                                     detail::format_duration(d.retry_after),
                                 d.retry_after)));
        }
        return next(ctx);
    }

    // Called for every refused request (apply, try_acquire or acquire), with its retry_after.
    // Returns the id that remove_listener() takes; throws std::invalid_argument for an empty
    // listener.
    ListenerId on_rejected(std::function<void(const RateDecision&)> listener) {
        return rejected_listeners_.add(std::move(listener));
    }
    // Stops calling a listener; false if the id is unknown here or already removed.
    bool remove_listener(ListenerId id) noexcept { return rejected_listeners_.remove(id); }

    RateLimiterStats stats() const noexcept {
        return RateLimiterStats{admitted_.sum(), rejected_.load(std::memory_order_relaxed),
                                waited_.load(std::memory_order_relaxed)};
    }

private:
    bool is_window() const noexcept { return window_size() != 0; }
    // log_'s size is fixed at construction: reading it needs no lock.
    std::size_t window_size() const noexcept BULWARK_NO_THREAD_SAFETY_ANALYSIS {
        return log_.size();
    }

    void check_n(std::uint32_t n) const {
        const std::uint32_t most = is_window() ? static_cast<std::uint32_t>(window_size()) : burst_;
        if (n == 0 || n > most) {
            detail::throw_invalid_option(
                "RateLimiter.acquire(n): n",
                "must be in [1, " + std::to_string(most) + "] (the most ever granted at once)",
                std::to_string(n));
        }
    }

    void count(const RateDecision& d, std::uint32_t n) noexcept {
        if (d.admitted) {
            admitted_.add(n);
            if (d.waited > Duration::zero()) {
                // relaxed: statistics.
                waited_.fetch_add(1, std::memory_order_relaxed);
            }
        } else {
            rejected_.fetch_add(1, std::memory_order_relaxed);
            rejected_listeners_.emit(d);
        }
    }

    // Grants n permits if they are free now or within `may_wait` (then d.waited says how long
    // until they are due); otherwise refuses with retry_after.
    RateDecision reserve(std::uint32_t n, Duration may_wait) {
        return is_window() ? reserve_window(n) : reserve_bucket(n, may_wait);
    }

    // GCRA: tat_ns_ is the theoretical arrival time of the next permit. A request for n permits
    // at time t moves it to max(tat, t) + n·interval, which is allowed while that is no more
    // than burst·interval (+ may_wait) ahead of t.
    RateDecision reserve_bucket(std::uint32_t n, Duration may_wait) noexcept {
        const std::int64_t now = clock_->coarse_now_fast().time_since_epoch().count();
        // validate() bounds capacity and cost by 10 years; waits beyond 100 years are not
        // waited for, so every sum below stays far from overflow (a limiter with max_wait =
        // Duration::max() waits as long as the bucket needs).
        may_wait = std::min(may_wait, max_reservation);
        const std::int64_t capacity = static_cast<std::int64_t>(burst_) * interval_ns_;
        const std::int64_t cost = static_cast<std::int64_t>(n) * interval_ns_;
        std::int64_t tat = tat_ns_.load(std::memory_order_relaxed);
        for (;;) {
            const std::int64_t new_tat = std::max(tat, now) + cost;
            const std::int64_t ahead = new_tat - now - capacity;  // > 0: must wait that long
            if (ahead > may_wait.count()) {
                return RateDecision{false, Duration(ahead), Duration::zero()};
            }
            // relaxed: the word is the whole state; nothing else is published with it.
            if (tat_ns_.compare_exchange_weak(tat, new_tat, std::memory_order_relaxed,
                                              std::memory_order_relaxed)) {
                return RateDecision{true, Duration::zero(),
                                    Duration(std::max<std::int64_t>(ahead, 0))};
            }
        }
    }

    // An exact log of the last `limit` grants, as a ring.
    RateDecision reserve_window(std::uint32_t n) {
        const Duration window = std::get<SlidingWindow>(options_.limit).window;
        const TimePoint now = clock_->coarse_now_fast();
        detail::LockGuard lock(mutex_);
        const std::size_t size = log_.size();
        // Entries still inside the window.
        while (count_ > 0 && log_[(head_ + size - count_) % size] <= now - window) {
            --count_;
        }
        if (count_ + n <= size) {
            for (std::uint32_t i = 0; i < n; ++i) {
                log_[head_] = now;
                head_ = (head_ + 1) % size;
            }
            count_ += n;
            return RateDecision{true, Duration::zero(), Duration::zero()};
        }
        // The n-th oldest of what must expire decides when there is room.
        const std::size_t must_expire = count_ + n - size;
        const TimePoint expires =
            detail::saturating_add(log_[(head_ + size - count_ + must_expire - 1) % size], window);
        return RateDecision{false, std::max(expires - now, Duration(1)), Duration::zero()};
    }

    const std::shared_ptr<const std::string> name_;
    const std::string label_;  // "rate limiter 'name': " (or empty), starts a rejection's message
    const RateLimiterOptions options_;
    Clock* const clock_;
    static constexpr Duration max_reservation = std::chrono::hours(24 * 36525);  // 100 years
    std::int64_t interval_ns_ = 0;
    std::uint32_t burst_ = 0;
    alignas(detail::cache_line_size) std::atomic<std::int64_t> tat_ns_{0};

    detail::Mutex mutex_;
    std::vector<TimePoint> log_ BULWARK_GUARDED_BY(mutex_);  // its size is fixed at construction
    std::size_t head_ BULWARK_GUARDED_BY(mutex_) = 0;        // where the next grant is written
    std::size_t count_ BULWARK_GUARDED_BY(mutex_) = 0;       // grants still in the window

    detail::StripedCounter admitted_;
    std::atomic<std::uint64_t> rejected_{0};
    std::atomic<std::uint64_t> waited_{0};
    Listeners<RateDecision> rejected_listeners_;
};

using RateLimiter = BasicRateLimiter<>;

}  // namespace bulwark

#endif  // BULWARK_RATE_LIMITER_HPP
// #include <bulwark/retry.hpp>
// RetryPolicy: retries with backoff and a budget, and the async schedule.
#ifndef BULWARK_RETRY_HPP
#define BULWARK_RETRY_HPP

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

// #include <bulwark/adaptive_backoff.hpp>
// AdaptiveBackoff: a delay that doubles on failure and halves on success, lock-free.
#ifndef BULWARK_ADAPTIVE_BACKOFF_HPP
#define BULWARK_ADAPTIVE_BACKOFF_HPP

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

// #include <bulwark/backoff.hpp> (already included above)
// #include <bulwark/detail/math.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/time.hpp> (already included above)

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
// #include <bulwark/backoff.hpp> (already included above)
// #include <bulwark/classify.hpp> (already included above)
// #include <bulwark/clock.hpp> (already included above)
// #include <bulwark/context.hpp> (already included above)
// #include <bulwark/detail/striped_counter.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/errors.hpp> (already included above)
// #include <bulwark/events.hpp> (already included above)
// #include <bulwark/outcome.hpp> (already included above)
// #include <bulwark/policy.hpp> (already included above)
// #include <bulwark/retry_budget.hpp>
// RetryBudget: a cap on retries shared across policies, as a ratio of calls plus a floor.
#ifndef BULWARK_RETRY_BUDGET_HPP
#define BULWARK_RETRY_BUDGET_HPP

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

// #include <bulwark/clock.hpp> (already included above)
// #include <bulwark/detail/mutex.hpp> (already included above)
// #include <bulwark/detail/striped_counter.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)

namespace bulwark {

// Options of a RetryBudget. Every field has a default; validate() throws std::invalid_argument
// naming the field and the value.
//   bulwark::RetryBudgetOptions o;
//   o.ratio = 0.2; o.window = 30s;
//   auto budget = bulwark::RetryBudget::shared(o);
struct RetryBudgetOptions {
    // Retries allowed as a share of the calls seen in the window. In [0, 1] (1 allows one retry
    // per call).
    double ratio = 0.1;
    // Retries allowed in any second whatever the ratio says, so a quiet service can still retry.
    std::uint32_t min_per_second = 10;
    // How far back calls and retries are counted, in whole seconds (rounded down). In [1 s, 1 h]:
    // the budget keeps a counter per second and sums them when a retry asks.
    Duration window = std::chrono::seconds(10);

    void validate() const {
        if (!(ratio >= 0.0 && ratio <= 1.0)) {
            detail::throw_invalid_option("RetryBudgetOptions.ratio", "must be in [0, 1]",
                                         detail::format_number(ratio));
        }
        if (window < std::chrono::seconds(1) || window > std::chrono::hours(1)) {
            detail::throw_invalid_option("RetryBudgetOptions.window", "must be in [1s, 1h]",
                                         detail::format_duration(window));
        }
    }
};

// Caps retries across every policy that shares it, so that a fleet-wide outage cannot multiply
// the load on the dependency: retries may be at most `ratio` of the calls seen in the last
// `window` (default 10 s), plus `min_per_second` retries per second at any time (gRPC retry
// throttling and Finagle's RetryBudget work the same way).
//   auto budget = bulwark::RetryBudget::shared(0.1, 10);   // 10% of calls + 10/s
//   options.budget = budget;                                // share it between policies
// Thread-safe. Counting a call is a per-thread counter bump (no lock, no contended line);
// asking for a retry takes a mutex.
// RetryBudget is BasicRetryBudget<>: a class template only so that a translation unit compiles
// only the members it uses (the Tag is never used).
template <class Tag = void>
class BasicRetryBudget {
public:
    static std::shared_ptr<BasicRetryBudget> shared(RetryBudgetOptions options,
                                                    Clock& clock = default_clock()) {
        return std::make_shared<BasicRetryBudget>(options, clock);
    }
    // The positional form: shared(0.1, 10) is RetryBudgetOptions{0.1, 10} (window 10 s).
    static std::shared_ptr<BasicRetryBudget> shared(double ratio, std::uint32_t min_per_second,
                                                    Clock& clock = default_clock()) {
        return std::make_shared<BasicRetryBudget>(ratio, min_per_second, clock);
    }

    // Throws std::invalid_argument for invalid options (see RetryBudgetOptions).
    explicit BasicRetryBudget(RetryBudgetOptions options = {}, Clock& clock = default_clock())
        : options_((options.validate(), options)), clock_(&clock) {
        buckets_.assign(static_cast<std::size_t>(options_.window / std::chrono::seconds(1)),
                        Bucket{});
    }

    // The positional form of the options.
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    BasicRetryBudget(double ratio, std::uint32_t min_per_second, Clock& clock = default_clock(),
                     Duration window = std::chrono::seconds(10))
        : BasicRetryBudget(RetryBudgetOptions{ratio, min_per_second, window}, clock) {}

    BasicRetryBudget(const BasicRetryBudget&) = delete;
    BasicRetryBudget& operator=(const BasicRetryBudget&) = delete;

    // A call was made (a first attempt). Does not allocate or lock.
    void record_call() noexcept { calls_.add(); }

    // A retry wants to happen: true (and counted) if the budget allows it.
    bool try_withdraw() {
        const TimePoint now = clock_->coarse_now_fast();
        detail::LockGuard lock(mutex_);
        const std::int64_t second =
            std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
        const std::uint64_t calls_now = calls_.sum();
        Bucket& current = bucket(second, calls_now);
        // Calls since the oldest bucket of the window started.
        std::uint64_t calls_base = calls_now;
        std::uint64_t retries_in_window = 0;
        for (const Bucket& b : buckets_) {
            if (b.second != no_second && b.second > second - window_seconds()) {
                calls_base = std::min(calls_base, b.calls_at_start);
                retries_in_window += b.retries;
            }
        }
        const double allowance = options_.ratio * static_cast<double>(calls_now - calls_base);
        if (static_cast<double>(retries_in_window) + 1.0 <= allowance + 1e-9 ||
            current.retries < options_.min_per_second) {
            ++current.retries;
            ++withdrawn_;
            return true;
        }
        ++refused_;
        return false;
    }

    const RetryBudgetOptions& options() const noexcept { return options_; }
    double ratio() const noexcept { return options_.ratio; }
    std::uint32_t min_per_second() const noexcept { return options_.min_per_second; }

    std::uint64_t withdrawn() const {
        detail::LockGuard lock(mutex_);
        return withdrawn_;
    }
    std::uint64_t refused() const {
        detail::LockGuard lock(mutex_);
        return refused_;
    }

private:
    static constexpr std::int64_t no_second = std::numeric_limits<std::int64_t>::min();
    struct Bucket {
        std::int64_t second = no_second;
        std::uint64_t calls_at_start = 0;  // cumulative calls when the bucket was first used
        std::uint64_t retries = 0;
    };

    std::int64_t window_seconds() const noexcept BULWARK_REQUIRES(mutex_) {
        return static_cast<std::int64_t>(buckets_.size());
    }

    // A bucket starts counting calls when the first retry of its second asks, so
    // calls made before any retry asked are not counted: the allowance is never larger than
    // exact, and a long healthy period cannot bank a large budget for the next outage.
    Bucket& bucket(std::int64_t second, std::uint64_t calls_now) BULWARK_REQUIRES(mutex_) {
        const std::int64_t slots = window_seconds();
        Bucket& b = buckets_[static_cast<std::size_t>(((second % slots) + slots) % slots)];
        if (b.second != second) {
            b = Bucket{second, calls_now, 0};
        }
        return b;
    }

    detail::StripedCounter calls_;  // first: its cache-line alignment then costs no padding
    const RetryBudgetOptions options_;
    Clock* const clock_;
    mutable detail::Mutex mutex_;
    std::vector<Bucket> buckets_ BULWARK_GUARDED_BY(mutex_);
    std::uint64_t withdrawn_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::uint64_t refused_ BULWARK_GUARDED_BY(mutex_) = 0;
};

using RetryBudget = BasicRetryBudget<>;

}  // namespace bulwark

#endif  // BULWARK_RETRY_BUDGET_HPP

namespace bulwark {

// A retry is about to happen.
struct RetryEvent {
    std::uint32_t attempt = 0;  // the retry's number: 1 for the first retry
    Duration delay{0};          // how long the policy waits before it
    std::exception_ptr error;   // the failure being retried (null for a retried value)
    std::string_view operation;
};

struct RetryStats {
    std::uint64_t calls = 0;                  // operations run through the policy (with
                                              // count_calls; else those that failed first)
    std::uint64_t retries = 0;                // retries made
    std::uint64_t successes_after_retry = 0;  // operations that succeeded on a retry
    std::uint64_t exhausted = 0;              // gave up: retries, time or budget ran out
    std::uint64_t not_retryable = 0;          // failed with something not worth retrying
    std::uint64_t budget_exhausted = 0;       // of the exhausted, refused by the budget
};

// Options of a RetryPolicy. Every field has a default; validate() throws std::invalid_argument
// naming the field.
struct RetryOptions {
    // Retries after the first attempt, >= 0. 0 = never retry. A signed int (as in Polly and
    // resilience4j), so that a negative value is refused by validate() instead of wrapping round
    // to 4294967295 retries.
    int max_retries = 3;
    // The wait before each retry: a Backoff (default exponential from 100 ms, capped at 30 s,
    // with full jitter) or a shared AdaptiveBackoff.
    std::variant<Backoff, std::shared_ptr<AdaptiveBackoff>> backoff =
        Backoff::exponential(std::chrono::milliseconds(100))
            .max_delay(std::chrono::seconds(30))
            .jitter(Jitter::full);
    // Total time budget from the first attempt: no wait is started that would end past it.
    // 0 = no limit.
    Duration max_elapsed = Duration::zero();
    // Optional: a budget shared by many policies (RetryBudget::shared(0.1, 10)).
    std::shared_ptr<RetryBudget> budget{};
    // Count every call in stats().calls. Counting is the only write a first-try success makes
    // (one per-thread counter, ~0.3 ns); switch it off on nanosecond-scale paths, and calls then
    // counts only the operations whose first attempt failed. A budget counts calls either way.
    bool count_calls = true;
    // What is retried: by default every exception, no value. retry_on<E>() / retry_if() narrow
    // the exceptions; retry_if_result() adds values.
    Classifier classifier{};
    // Listeners added by on_retry(), handed to the policy when it is built.
    std::vector<std::function<void(const RetryEvent&)>> retry_listeners{};

    template <class E>
    RetryOptions& retry_on() {
        classifier.handle<E>();
        return *this;
    }
    RetryOptions& retry_if(std::function<bool(const std::exception_ptr&)> predicate) {
        classifier.handle_if(std::move(predicate));
        return *this;
    }
    template <class T = void, class Pred>
    RetryOptions& retry_if_result(Pred predicate) {
        classifier.handle_result<T>(std::move(predicate));
        return *this;
    }
    // Called before every retry, with the attempt, the delay and the error.
    RetryOptions& on_retry(std::function<void(const RetryEvent&)> listener) {
        detail::add_option_listener(retry_listeners, std::move(listener), "RetryOptions.on_retry");
        return *this;
    }

    void validate() const {
        if (max_retries < 0) {
            detail::throw_invalid_option("RetryOptions.max_retries", "must be >= 0",
                                         std::to_string(max_retries));
        }
        if (max_elapsed < Duration::zero()) {
            detail::throw_invalid_option("RetryOptions.max_elapsed", "must be >= 0",
                                         detail::format_duration(max_elapsed));
        }
        if (const auto* adaptive = std::get_if<std::shared_ptr<AdaptiveBackoff>>(&backoff)) {
            if (!*adaptive) {
                detail::throw_invalid_argument(
                    "RetryOptions.backoff holds a null std::shared_ptr<AdaptiveBackoff>");
            }
        }
    }
};

template <class Tag>
class BasicRetryPolicy;
using RetryPolicy = BasicRetryPolicy<void>;

namespace detail {
// One execution's retry state: what the synchronous loop keeps on its stack and a RetrySchedule
// holds.
struct RetryRun {
    TimePoint started{};            // the first attempt's start (read only when it is needed)
    Duration previous{0};           // the last wait, for decorrelated jitter
    std::uint64_t stream_seed = 0;  // this execution's jitter stream, drawn at its first backoff
    bool has_stream = false;
};
}  // namespace detail

// The async form of a RetryPolicy: the caller runs the attempts and does the waiting; the
// schedule says whether and how long to wait before the next one.
//   auto schedule = retry.schedule();
//   while (auto wait = schedule.next_delay(outcome)) { rearm_timer(*wait); ... }
// Each schedule draws its own jitter stream, like each execute(). The caller does the waiting,
// so it checks ctx.cancelled() after the wait itself; next_delay() stops once it is set.
// Not thread-safe (one schedule per operation). The policy must outlive it.
class RetrySchedule {
public:
    // nullopt: stop (success, not retryable, retries, time or budget exhausted). Otherwise the
    // wait before the next attempt; the retry is counted and reported to listeners.
    template <class T>
    std::optional<Duration> next_delay(const Outcome<T>& outcome);

    std::uint32_t retries() const noexcept { return retries_; }

    RetrySchedule(RetrySchedule&& other) noexcept
        : policy_(other.policy_),
          ctx_(other.ctx_ == &other.own_ctx_ ? &own_ctx_ : other.ctx_),
          own_ctx_(std::move(other.own_ctx_)),
          run_(other.run_),
          retries_(other.retries_),
          done_(other.done_) {}
    RetrySchedule& operator=(RetrySchedule&&) = delete;

private:
    friend RetryPolicy;
    RetrySchedule(RetryPolicy& policy, Context* ctx);

    RetryPolicy* policy_;
    Context* ctx_;
    Context own_ctx_;
    detail::RetryRun run_{};
    std::uint32_t retries_ = 0;
    bool done_ = false;
};

// Retries a failed call with a backoff, only for failures that have a chance of succeeding
// later, within a number of retries, a total time and an optional shared budget.
//   bulwark::RetryOptions r;
//   r.max_retries = 3; r.backoff = bulwark::Backoff::exponential(100ms).max_delay(2s);
//   r.retry_on<std::system_error>();
//   bulwark::RetryPolicy retry(r);                 // optional seed, then clock last
//   bulwark::RetryPolicy sms_retry("sms", r);      // named: its errors' source()
//   auto value = retry.execute([&] { return http.get(url); });
// Waits with the clock's sleep_for (a ManualClock records it), and never longer than the
// context's deadline allows; stops when the context is cancelled, also during a wait. Honours a
// rejection's retry_at()/retry_after() (an open breaker's) when it is later than the backoff.
// Jitter: each execution (and each schedule()) draws its own stream of the backoff, so that
// concurrent calls that failed together do not retry in lockstep: the k-th execution to back
// off (0-based, counted per policy) waits options().backoff with .seed(seed()) .stream(k). A
// policy built without a seed draws a fresh one, so policies built from the same options differ
// too; with a seed, the waits are reproducible for the same order of calls.
// Thread-safe: one policy serves many concurrent calls. A call that succeeds first time does
// one per-thread counter bump (none with count_calls off), reads no clock (unless max_elapsed
// is set) and allocates nothing.
// RetryPolicy is BasicRetryPolicy<>: a class template only so that a translation unit compiles only
// the members it uses (the Tag is never used).
template <class Tag = void>
class BasicRetryPolicy : public PolicyBase<BasicRetryPolicy<Tag>> {
public:
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    explicit BasicRetryPolicy(RetryOptions options = {}, Clock& clock = default_clock())
        : BasicRetryPolicy(std::move(options), detail::fresh_seed(), clock) {}

    // `seed` makes the jitter reproducible: the same seed and the same order of calls give the
    // same waits.
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    BasicRetryPolicy(RetryOptions options, std::uint64_t seed, Clock& clock = default_clock())
        : BasicRetryPolicy(std::string(), std::move(options), seed, clock) {}

    // A named policy: its RetryBudgetExhaustedErrors say the name in their message and in
    // RejectedError::source().
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    BasicRetryPolicy(std::string name, RetryOptions options, Clock& clock = default_clock())
        : BasicRetryPolicy(std::move(name), std::move(options), detail::fresh_seed(), clock) {}
    BasicRetryPolicy(std::string name, RetryOptions options, std::uint64_t seed,
                     Clock& clock = default_clock())
        : name_(std::make_shared<const std::string>(std::move(name))),
          options_((options.validate(), std::move(options))),
          clock_(&clock),
          seed_(seed),
          adaptive_(adaptive_of(options_)),
          result_predicates_(options_.classifier.has_result_predicates()),
          plain_success_(!result_predicates_ && adaptive_ == nullptr),
          plain_entry_(!options_.budget && options_.max_elapsed == Duration::zero()) {
        for (auto& listener : options_.retry_listeners) {
            listeners_.add(std::move(listener));
        }
        options_.retry_listeners.clear();
    }

    BasicRetryPolicy(const BasicRetryPolicy&) = delete;
    BasicRetryPolicy& operator=(const BasicRetryPolicy&) = delete;

    const RetryOptions& options() const noexcept { return options_; }
    // Empty when unnamed.
    const std::string& name() const noexcept { return *name_; }

    // The seed the executions' jitter streams derive from.
    std::uint64_t seed() const noexcept { return seed_; }

    // Called before every retry, with the attempt, the delay and the error (as
    // RetryOptions::on_retry). Returns the id that remove_listener() takes; throws
    // std::invalid_argument for an empty listener.
    ListenerId on_retry(std::function<void(const RetryEvent&)> listener) {
        return listeners_.add(std::move(listener));
    }
    // Stops calling a listener (one added here or through the options); false if the id is
    // unknown here or already removed.
    bool remove_listener(ListenerId id) noexcept { return listeners_.remove(id); }

    RetryStats stats() const noexcept {
        RetryStats s;
        s.calls = calls_.sum();
        // relaxed: statistics.
        s.retries = retries_.load(std::memory_order_relaxed);
        s.successes_after_retry = successes_after_retry_.load(std::memory_order_relaxed);
        s.exhausted = exhausted_.load(std::memory_order_relaxed);
        s.not_retryable = not_retryable_.load(std::memory_order_relaxed);
        s.budget_exhausted = budget_exhausted_.load(std::memory_order_relaxed);
        return s;
    }

    RetrySchedule schedule() { return {*this, nullptr}; }
    RetrySchedule schedule(Context& ctx) { return {*this, &ctx}; }

    template <class Next>
    auto apply(Context& ctx, Next&& next) {
        using O = std::invoke_result_t<Next&, Context&>;
        // With count_calls (the default), one per-thread counter store: a first-try success
        // writes nothing else but its context's attempt number.
        if (options_.count_calls) {
            calls_.add();
        }
        // One flag for the rare entry work (a budget, a max_elapsed start time).
        TimePoint started{};
        if (BULWARK_UNLIKELY(!plain_entry_)) {
            started = enter();
        }
        ctx.set_attempt(0);
        // One named result, the only thing returned, so it is constructed in place (NRVO).
        O outcome = next(ctx);
        // One flag for the common case (no result predicate, no AdaptiveBackoff): a value is a
        // success with nothing to record.
        if (BULWARK_LIKELY(outcome.has_value() && plain_success_)) {
            return outcome;
        }
        if (outcome.has_value() && !result_predicates_) {
            adaptive_->record_success();  // plain_success_ is false: adaptive_ is set
        } else {
            retry_loop(ctx, next, outcome, started);
        }
        return outcome;
    }

private:
    friend class RetrySchedule;

    enum class Verdict : std::uint8_t { success, retry, not_retryable, exhausted, budget };

    // Tells the budget about the call and, with max_elapsed, returns the first attempt's start:
    // max_elapsed counts from it, so the clock is read up front only when it is set. (Reading it
    // lazily after a first failure would leave the first attempt's own duration out.)
    TimePoint enter() noexcept {
        if (options_.budget) {
            options_.budget->record_call();
        }
        return options_.max_elapsed > Duration::zero() ? clock_->now() : TimePoint{};
    }

    // Without count_calls, a call is counted once its first attempt has failed.
    void count_failed_first(Verdict first) noexcept {
        if (!options_.count_calls && first != Verdict::success) {
            calls_.add();
        }
    }

    static AdaptiveBackoff* adaptive_of(const RetryOptions& options) noexcept {
        const auto* adaptive = std::get_if<std::shared_ptr<AdaptiveBackoff>>(&options.backoff);
        return adaptive != nullptr ? adaptive->get() : nullptr;
    }

    template <class Next, class O>
    // Retries until the outcome is final, and leaves the final outcome in `outcome`.
    void retry_loop(Context& ctx, Next& next, O& outcome, TimePoint started) {
        detail::RetryRun run;
        run.started = started;
        for (std::uint32_t retry = 1;; ++retry) {
            Duration wait{0};
            const Verdict v = decide(outcome, ctx, retry, run, wait);
            if (retry == 1) {
                count_failed_first(v);
            }
            if (v != Verdict::retry) {
                finish(v, retry);
                // A retried value that the budget refuses is returned as is, like one that ran out
                // of retries: it is the answer, and there is no exception to wrap.
                if (v == Verdict::budget && outcome.has_error()) {
                    outcome = O::from_error(budget_error(outcome.error()));
                }
                return;
            }
            if (wait > Duration::zero()) {
                clock_->sleep_for(wait);
            }
            // A cancel, or the deadline passing, during the wait ends the call with the last
            // outcome, as a cancel noticed before the wait does: no attempt after it.
            if (stopped(ctx)) {
                finish(Verdict::exhausted, retry);
                return;
            }
            retries_.fetch_add(1, std::memory_order_relaxed);
            ctx.set_attempt(retry);
            outcome = next(ctx);
        }
    }

    bool stopped(const Context& ctx) const noexcept {
        return ctx.cancelled() || (ctx.deadline() && clock_->now() >= *ctx.deadline());
    }

    // The one decision both the synchronous loop and RetrySchedule use: given the last
    // outcome, stop (and why) or retry after `wait`. The caller counts the retry.
    template <class T>
    Verdict decide(const Outcome<T>& outcome, const Context& ctx, std::uint32_t retry,
                   detail::RetryRun& run, Duration& wait) {
        if (!options_.classifier.is_failure(outcome)) {
            if (outcome.has_error()) {
                return Verdict::not_retryable;  // an exception not worth retrying
            }
            return Verdict::success;
        }
        // Every failed attempt teaches a shared AdaptiveBackoff, whatever happens next; this
        // retry waits what it had learned before this failure.
        Duration adaptive_wait{0};
        if (adaptive_ != nullptr) {
            adaptive_wait = adaptive_->current_delay();
            adaptive_->record_failure();
        }
        // validate() made max_retries >= 0.
        if (retry > static_cast<std::uint32_t>(options_.max_retries) || ctx.cancelled()) {
            return Verdict::exhausted;
        }
        wait = adaptive_ != nullptr ? adaptive_wait : backoff_delay(retry, run);
        const TimePoint now = clock_->now();  // the failure path: a clock read is affordable
        if (outcome.has_error()) {
            wait = std::max(wait, detail::rejection_wait(outcome.error(), now));
        }
        if (options_.max_elapsed > Duration::zero() &&
            detail::saturating_add(now - run.started, wait) > options_.max_elapsed) {
            return Verdict::exhausted;
        }
        if (ctx.deadline() && detail::saturating_add(now, wait) >= *ctx.deadline()) {
            return Verdict::exhausted;
        }
        if (options_.budget && !options_.budget->try_withdraw()) {
            return Verdict::budget;
        }
        run.previous = wait;
        listeners_.emit_with([&] {
            return RetryEvent{retry, wait, outcome.error(), ctx.operation()};
        });
        return Verdict::retry;
    }

    // The Backoff's delay on this execution's own jitter stream, drawn at its first backoff (a
    // shared counter, on the failure path only). O(1) for every kind: delay(n, previous).
    Duration backoff_delay(std::uint32_t retry, detail::RetryRun& run) {
        if (!run.has_stream) {
            // relaxed: only distinctness (and, single-threaded, the order) matters.
            const std::uint64_t k = streams_.fetch_add(1, std::memory_order_relaxed);
            run.stream_seed = detail::SplitMix64::at(seed_, k);
            run.has_stream = true;
        }
        Backoff stream = std::get<Backoff>(options_.backoff);
        stream.seed(run.stream_seed);  // the same as .seed(seed_).stream(k)
        return stream.delay(retry, run.previous);
    }

    void finish(Verdict v, std::uint32_t retry) noexcept {
        switch (v) {
            case Verdict::success:
                if (adaptive_ != nullptr) {
                    adaptive_->record_success();
                }
                if (retry > 1) {
                    successes_after_retry_.fetch_add(1, std::memory_order_relaxed);
                }
                break;
            case Verdict::not_retryable:
                not_retryable_.fetch_add(1, std::memory_order_relaxed);
                break;
            case Verdict::budget:
                budget_exhausted_.fetch_add(1, std::memory_order_relaxed);
                exhausted_.fetch_add(1, std::memory_order_relaxed);
                break;
            case Verdict::exhausted:
                exhausted_.fetch_add(1, std::memory_order_relaxed);
                break;
            case Verdict::retry:
                break;
        }
    }

    BULWARK_NOINLINE std::exception_ptr budget_error(std::exception_ptr last_error) const {
        return std::make_exception_ptr(RetryBudgetExhaustedError(
            name_,
            (name_->empty() ? std::string() : detail::component_label("retry", *name_) + ": ") +
                "retry budget exhausted",
            std::move(last_error)));
    }

    const std::shared_ptr<const std::string> name_;
    RetryOptions options_;
    Clock* const clock_;
    const std::uint64_t seed_;
    AdaptiveBackoff* const adaptive_;  // options_.backoff's, or null for a Backoff
    const bool result_predicates_;     // options_.classifier.has_result_predicates()
    const bool plain_success_;         // neither result predicates nor an AdaptiveBackoff
    const bool plain_entry_;           // no budget, no max_elapsed: nothing to do on entry
    detail::StripedCounter calls_;
    std::atomic<std::uint64_t> streams_{0};
    std::atomic<std::uint64_t> retries_{0};
    std::atomic<std::uint64_t> successes_after_retry_{0};
    std::atomic<std::uint64_t> exhausted_{0};
    std::atomic<std::uint64_t> not_retryable_{0};
    std::atomic<std::uint64_t> budget_exhausted_{0};
    Listeners<RetryEvent> listeners_;
};

inline RetrySchedule::RetrySchedule(RetryPolicy& policy, Context* ctx)
    : policy_(&policy), ctx_(ctx != nullptr ? ctx : &own_ctx_) {
    // A schedule is the async form of one call, and is counted like one.
    if (policy_->options_.count_calls) {
        policy_->calls_.add();
    }
    if (policy_->options_.budget) {
        policy_->options_.budget->record_call();
    }
    run_.started = policy_->clock_->now();
}

template <class T>
std::optional<Duration> RetrySchedule::next_delay(const Outcome<T>& outcome) {
    if (done_) {
        return std::nullopt;
    }
    Duration wait{0};
    const auto v = policy_->decide(outcome, *ctx_, retries_ + 1, run_, wait);
    if (retries_ == 0) {
        policy_->count_failed_first(v);
    }
    if (v != RetryPolicy::Verdict::retry) {
        done_ = true;
        policy_->finish(v, retries_ + 1);
        return std::nullopt;
    }
    policy_->retries_.fetch_add(1, std::memory_order_relaxed);
    ++retries_;
    ctx_->set_attempt(retries_);
    return wait;
}

}  // namespace bulwark

#endif  // BULWARK_RETRY_HPP

namespace bulwark {

// Tries a list of interchangeable channels (telegram, email, sms…) until one delivers, in an
// order chosen per call (Selection), skipping the ones whose breaker is open, whose rate limit is
// used up or that are above the cost or below the quality threshold.
//   bulwark::FallbackChain<Receipt(const Message&)> chain(bulwark::Selection::priority);
//   chain.add("telegram", send_telegram);  chain.add("sms", send_sms, sms_options);
//   bulwark::ChainResult<Receipt> res = chain.execute(msg);  // never throws for channel failures
// Arguments are passed to every channel tried as lvalues, so by-value parameters are copied per
// channel and rvalue-reference parameters are not supported.
// Thread-safety: execute, execute_for, stats, set_enabled and the listeners are thread-safe;
// execute takes no lock and, with up to 8 attempts and 16 candidates, allocates nothing (a
// listener, a rejection's error object or a channel's own work may). Configuration (add, rules,
// max_attempts, max_cost, min_success_rate) is not synchronized: finish it before the chain is
// shared. The clock must outlive the chain, as must the breakers, retries and limiters.
template <class R, class... Args>
class FallbackChain<R(Args...)> {
    static_assert(!std::is_reference<R>::value,
                  "bulwark::FallbackChain: channels return results by value (return a pointer or "
                  "std::reference_wrapper to share an object).");
    static_assert(std::conjunction<std::negation<std::is_rvalue_reference<Args>>...>::value,
                  "bulwark::FallbackChain: rvalue-reference parameters are not supported: every "
                  "channel tried receives the same arguments.");

public:
    using result_type = R;
    using Function = std::function<R(Args...)>;

    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    explicit FallbackChain(Selection selection = Selection::priority, ChainOptions options = {},
                           Clock& clock = default_clock())
        : FallbackChain(selection, std::move(options), detail::fresh_seed(), clock) {}

    // `seed` makes Selection::load_balanced reproducible for the same order of calls.
    FallbackChain(Selection selection, ChainOptions options, std::uint64_t seed,
                  Clock& clock = default_clock())
        : selection_((detail::check_enumerator(selection, Selection::least_cost,
                                               "FallbackChain(selection)", "Selection"),
                      selection)),
          options_((options.validate(), std::move(options))),
          clock_(&clock),
          seed_(seed),
          count_in_flight_(selection == Selection::load_balanced) {}

    FallbackChain(const FallbackChain&) = delete;
    FallbackChain& operator=(const FallbackChain&) = delete;

    // Adds a channel at the end of the priority order. `f` must be invocable with Args... and
    // return R (or something convertible to it). Throws std::invalid_argument for an empty or
    // duplicate name, a null callable (function pointer, empty std::function) or invalid options.
    template <class F>
    FallbackChain& add(std::string name, F f, ChannelOptions options = {}) {
        static_assert(std::is_invocable_r<R, F&, Args&...>::value,
                      "bulwark::FallbackChain::add: the callable must be invocable with the "
                      "chain's arguments and return its result type.");
        if (name.empty()) {
            detail::throw_invalid_option("FallbackChain.add: name", "must not be empty", "\"\"");
        }
        if (find(name) != npos) {
            detail::throw_invalid_option("FallbackChain.add: name", "must be unique",
                                         "\"" + name + "\" (already added)");
        }
        if (detail::is_null_callable(f)) {
            detail::throw_invalid_option("FallbackChain.add: callable", "must not be null",
                                         "null for \"" + name + "\"");
        }
        options.validate();
        auto channel = std::make_unique<Channel>();
        channel->name = std::move(name);
        channel->fn = Function(std::move(f));
        channel->enabled.store(options.enabled, std::memory_order_relaxed);
        channel->options = options;
        channels_.push_back(std::move(channel));
        // The rules refer to channels by index; a new channel joins the "remaining" tail.
        return *this;
    }

    // Caps the channels called per execute (skipped ones do not count); 0 = all of them, as in
    // ChainOptions::max_attempts.
    FallbackChain& max_attempts(std::uint32_t n) noexcept {
        options_.max_attempts = n;
        return *this;
    }
    // The cap in effect: the number of channels unless max_attempts was set.
    std::uint32_t max_attempts() const noexcept {
        return options_.max_attempts != 0 ? options_.max_attempts
                                          : static_cast<std::uint32_t>(channels_.size());
    }
    FallbackChain& max_cost(double cost) {
        ChainOptions o = options_;
        o.max_cost = cost;
        o.validate();
        options_ = o;
        return *this;
    }
    // Keeps the current min_samples.
    FallbackChain& min_success_rate(double rate) {
        return min_success_rate(rate, options_.min_samples);
    }
    FallbackChain& min_success_rate(double rate, std::uint32_t min_samples) {
        ChainOptions o = options_;
        o.min_success_rate = rate;
        o.min_samples = min_samples;
        o.validate();
        options_ = o;
        return *this;
    }

    // Installs fallback rules for execute_for. Throws std::invalid_argument (and keeps the
    // previous rules) if a rule names a channel the chain does not have, lists a channel twice,
    // or lists its own primary among its fallbacks.
    FallbackChain& rules(const FallbackRules& rules) {
        std::vector<ResolvedRule> resolved(channels_.size());
        for (const auto& entry : rules.rules()) {
            const std::size_t primary = resolve(entry.first, "FallbackRules.set: primary", "");
            ResolvedRule& r = resolved[primary];
            if (r.present) {
                detail::throw_invalid_option("FallbackRules.set: primary", "must be unique",
                                             "\"" + entry.first + "\" twice");
            }
            detail::check_enumerator(entry.second.selection, Selection::least_cost,
                                     "FallbackRule.selection", "Selection");
            r.present = true;
            r.selection = entry.second.selection;
            r.max_attempts = entry.second.max_attempts;
            for (const std::string& name : entry.second.fallbacks) {
                const std::size_t index =
                    resolve(name, "FallbackRules.set: fallbacks", entry.first);
                if (index == primary || contains(r.order, index)) {
                    detail::throw_invalid_option(
                        "FallbackRules.set: fallbacks",
                        "must list distinct channels other than the primary",
                        "\"" + name + "\" in the rule for \"" + entry.first + "\"");
                }
                r.order.push_back(static_cast<std::uint32_t>(index));
            }
        }
        std::vector<std::uint32_t> global;
        for (const std::string& name : rules.global()) {
            const std::size_t index = resolve(name, "FallbackRules.set_global: order", "");
            if (contains(global, index)) {
                detail::throw_invalid_option("FallbackRules.set_global: order",
                                             "must list distinct channels",
                                             "\"" + name + "\" twice");
            }
            global.push_back(static_cast<std::uint32_t>(index));
        }
        rules_ = std::move(resolved);
        global_ = std::move(global);
        for (const ResolvedRule& r : rules_) {
            if (r.present && r.selection == Selection::load_balanced) {
                count_in_flight_ = true;
            }
        }
        return *this;
    }

    // Enables or disables a channel; thread-safe (a call already running may still use it).
    // Throws std::invalid_argument for an unknown name.
    void set_enabled(std::string_view name, bool enabled) {
        channel(name).enabled.store(enabled, std::memory_order_relaxed);
    }

    // Tries the channels in the chain's selection order until one delivers, at most
    // max_attempts() of them called. Never throws for a channel's failure.
    ChainResult<R> execute(Args... args) {
        Context ctx;
        return execute_all(ctx, args...);
    }

    // As above; stops (ChainResult::stopped()) before the next channel once `ctx` is cancelled
    // or its deadline has passed on the chain's clock. The context is passed to the retries.
    ChainResult<R> execute(Context& ctx, Args... args) { return execute_all(ctx, args...); }

    // Tries `primary` first, then its rule's fallbacks in the rule's selection order (at most
    // the rule's max_attempts called); without a rule, the global order and then the remaining
    // channels in the chain's selection order. Throws std::invalid_argument for an unknown
    // primary (a programming error); never for a channel's failure.
    ChainResult<R> execute_for(std::string_view primary, Args... args) {
        Context ctx;
        return execute_for_impl(ctx, primary, args...);
    }

    ChainResult<R> execute_for(Context& ctx, std::string_view primary, Args... args) {
        return execute_for_impl(ctx, primary, args...);
    }

    // Tries exactly the channels of `route`, in that order (no rule, no selection), at most
    // route.size() of them called: a route the caller chose, such as an operator's redrive
    // through named channels. Throws std::invalid_argument for an unknown or repeated name;
    // never for a channel's failure.
    ChainResult<R> execute_route(Context& ctx, const std::vector<std::string>& route,
                                 Args... args) {
        Order order;
        for (auto it = route.begin(); it != route.end(); ++it) {
            const std::string& name = *it;
            const std::size_t i = find(name);
            if (i == npos) {
                unknown_channel(name);
            }
            if (std::find(route.begin(), it, name) != it) {
                detail::throw_invalid_option("FallbackChain.execute_route: route",
                                             "must list distinct channels",
                                             "\"" + name + "\" twice");
            }
            push_enabled(order, static_cast<std::uint32_t>(i));
        }
        return run(ctx, order, static_cast<std::uint32_t>(route.size()), args...);
    }

    // Statistics of one channel; throws std::invalid_argument for an unknown name. Lock-free.
    ChannelStats stats(std::string_view name) const { return snapshot(channel(name)); }

    // Statistics of every channel, in priority order.
    std::vector<ChannelStats> stats() const {
        std::vector<ChannelStats> all;
        all.reserve(channels_.size());
        for (const auto& c : channels_) {
            all.push_back(snapshot(*c));
        }
        return all;
    }

    // Called after every attempt (skipped ones included), on the executing thread. Returns the
    // id that remove_listener() takes; throws std::invalid_argument for an empty listener.
    ListenerId on_attempt(std::function<void(const Attempt&)> listener) {
        return attempt_listeners_.add(std::move(listener));
    }
    // Called each time the chain moves on from a channel that did not deliver to the next one.
    // Returns the id that remove_listener() takes; throws std::invalid_argument for an empty
    // listener.
    ListenerId on_fallback(std::function<void(const ChannelFallbackEvent&)> listener) {
        return fallback_listeners_.add(std::move(listener));
    }
    // Stops calling a listener added by on_attempt() or on_fallback(); false if the id is
    // unknown here or already removed.
    bool remove_listener(ListenerId id) noexcept {
        return attempt_listeners_.remove(id) || fallback_listeners_.remove(id);
    }

    Selection selection() const noexcept { return selection_; }
    const ChainOptions& options() const noexcept { return options_; }
    std::uint64_t seed() const noexcept { return seed_; }
    std::size_t size() const noexcept { return channels_.size(); }
    Clock& clock() const noexcept { return *clock_; }
    // Channel names in priority order.
    std::vector<std::string_view> channels() const {
        std::vector<std::string_view> names;
        names.reserve(channels_.size());
        for (const auto& c : channels_) {
            names.push_back(c->name);
        }
        return names;
    }

private:
    // The public forms take their arguments by value once; from here on they are passed by
    // reference, so a by-value parameter is copied once per channel called, not once more.
    ChainResult<R> execute_all(Context& ctx, Args&... args) {
        Order order;
        for (std::uint32_t i = 0; i < channels_.size(); ++i) {
            if (channels_[i]->enabled.load(std::memory_order_relaxed)) {
                order.push_back(Candidate{i, 0.0});
            }
        }
        arrange(order, 0, selection_, round_robin_);
        return run(ctx, order, max_attempts(), args...);
    }

    ChainResult<R> execute_for_impl(Context& ctx, std::string_view primary, Args&... args) {
        const std::size_t p = find(primary);
        if (p == npos) {
            unknown_channel(primary);
        }
        const auto first = static_cast<std::uint32_t>(p);
        Order order;
        if (channels_[p]->enabled.load(std::memory_order_relaxed)) {
            order.push_back(Candidate{first, 0.0});
        }
        std::uint32_t cap = max_attempts();
        const ResolvedRule* rule = p < rules_.size() && rules_[p].present ? &rules_[p] : nullptr;
        if (rule != nullptr) {
            const std::size_t from = order.size();
            for (std::uint32_t i : rule->order) {
                push_enabled(order, i);
            }
            arrange(order, from, rule->selection, channels_[p]->rotation);
            if (rule->max_attempts != 0) {
                cap = rule->max_attempts;
            }
        } else {
            for (std::uint32_t i : global_) {
                if (i != first) {
                    push_enabled(order, i);
                }
            }
            const std::size_t from = order.size();
            for (std::uint32_t i = 0; i < channels_.size(); ++i) {
                if (i != first && !contains(global_, i)) {
                    push_enabled(order, i);
                }
            }
            arrange(order, from, selection_, channels_[p]->rotation);
        }
        return run(ctx, order, cap, args...);
    }

    static constexpr std::size_t npos = static_cast<std::size_t>(-1);
    static constexpr std::int64_t not_skipping = std::numeric_limits<std::int64_t>::min();

    struct Channel {
        std::string name;
        Function fn;
        ChannelOptions options;
        std::atomic<bool> enabled{true};
        // Per-thread stripes (see detail::StripedCounter): concurrent calls through one channel
        // do not fight over a cache line for their statistics. Read as a relaxed snapshot.
        detail::StripedCounter calls;
        detail::StripedCounter successes;
        detail::StripedCounter failures;
        detail::StripedCounter skipped;
        detail::StripedCounter fallbacks;
        detail::StripedCounter latency_ns;
        // Counted only for Selection::load_balanced, the one reader.
        std::atomic<std::uint32_t> in_flight{0};
        std::atomic<std::uint64_t> recent{0};  // detail::RecentWindow
        std::atomic<std::int64_t> quality_skip_since{not_skipping};
        std::atomic<std::uint64_t> rotation{0};  // round robin of execute_for(this channel)
    };

    struct Candidate {
        std::uint32_t index;
        double key;
    };
    using Order = InlineVector<Candidate, 16>;

    struct ResolvedRule {
        bool present = false;
        Selection selection = Selection::priority;
        std::uint32_t max_attempts = 0;
        std::vector<std::uint32_t> order;
    };

    template <class C>
    static bool contains(const C& c, std::size_t value) noexcept {
        for (auto v : c) {
            if (v == value) {
                return true;
            }
        }
        return false;
    }

    // Linear: chains have a handful of channels, and comparing views allocates nothing.
    std::size_t find(std::string_view name) const noexcept {
        for (std::size_t i = 0; i < channels_.size(); ++i) {
            if (channels_[i]->name == name) {
                return i;
            }
        }
        return npos;
    }

    [[noreturn]] BULWARK_NOINLINE static void unknown_channel(std::string_view name) {
        detail::throw_invalid_option("FallbackChain: channel", "must be one added to the chain",
                                     "\"" + std::string(name) + "\"");
    }

    Channel& channel(std::string_view name) const {
        const std::size_t i = find(name);
        if (i == npos) {
            unknown_channel(name);
        }
        return *channels_[i];
    }

    std::size_t resolve(const std::string& name, const char* field, const std::string& rule) const {
        const std::size_t i = find(name);
        if (i == npos) {
            detail::throw_invalid_option(
                field, "must name channels added to the chain",
                "unknown \"" + name + "\"" +
                    (rule.empty() ? std::string() : " in the rule for \"" + rule + "\""));
        }
        return i;
    }

    void push_enabled(Order& order, std::uint32_t i) const {
        if (channels_[i]->enabled.load(std::memory_order_relaxed)) {
            order.push_back(Candidate{i, 0.0});
        }
    }

    // Orders order[from..] by `selection`; their current order is the priority order.
    // `rotation` turns round_robin: one counter per kind of call (execute, and execute_for per
    // primary), so that each rotates fairly over its own candidates.
    void arrange(Order& order, std::size_t from, Selection selection,
                 std::atomic<std::uint64_t>& rotation) {
        const std::size_t n = order.size() - from;
        if (n < 2) {
            return;
        }
        Candidate* c = order.data() + from;
        switch (selection) {
            case Selection::priority:
                return;
            case Selection::round_robin: {
                // relaxed: only the rotation matters, not what other threads wrote.
                const std::uint64_t turn = rotation.fetch_add(1, std::memory_order_relaxed);
                const auto shift = static_cast<std::size_t>(turn % n);
                for (std::size_t i = 0; i < n; ++i) {
                    c[i].key = static_cast<double>((i + n - shift) % n);
                }
                break;
            }
            case Selection::health_based:
                for (std::size_t i = 0; i < n; ++i) {
                    const Channel& ch = *channels_[c[i].index];
                    // Rank 0: closed, disabled or no breaker; 1: half-open; 2: open. Within a
                    // rank, the higher recent success rate first.
                    double rank = 0.0;
                    if (ch.options.breaker != nullptr) {
                        const CircuitState s = ch.options.breaker->state();
                        rank = s == CircuitState::half_open                                  ? 1.0
                               : (s == CircuitState::open || s == CircuitState::forced_open) ? 2.0
                                                                                             : 0.0;
                    }
                    c[i].key = rank * 2.0 - detail::RecentWindow::rate(
                                                ch.recent.load(std::memory_order_relaxed));
                }
                break;
            case Selection::load_balanced: {
                // Efraimidis–Spirakis: sorting by -ln(u) / w draws a weighted random order.
                // relaxed: a counter naming this call's random stream.
                const std::uint64_t k = load_balance_.fetch_add(1, std::memory_order_relaxed);
                detail::SplitMix64 random(detail::SplitMix64::at(seed_, k));
                for (std::size_t i = 0; i < n; ++i) {
                    const Channel& ch = *channels_[c[i].index];
                    const double u = random.next_double();
                    const double w =
                        ch.options.weight /
                        (1.0 + static_cast<double>(ch.in_flight.load(std::memory_order_relaxed)));
                    c[i].key =
                        w > 0.0 ? -detail::log1p(-u) / w : std::numeric_limits<double>::infinity();
                }
                break;
            }
            case Selection::least_cost:
                for (std::size_t i = 0; i < n; ++i) {
                    c[i].key = channels_[c[i].index]->options.cost;
                }
                break;
        }
        // Insertion sort: stable (ties keep the priority order), allocates nothing, and fast
        // for the handful of channels a chain has.
        for (std::size_t i = 1; i < n; ++i) {
            const Candidate x = c[i];
            std::size_t j = i;
            for (; j > 0 && x.key < c[j - 1].key; --j) {
                c[j] = c[j - 1];
            }
            c[j] = x;
        }
    }

    bool deadline_passed(const Context& ctx) const noexcept {
        return ctx.cancelled() || (ctx.deadline() && clock_->now() >= *ctx.deadline());
    }

    // True if the channel is below the quality floor and must be skipped now. A skipped channel
    // is let through once every quality_probe_interval (the CAS picks one caller) so that it can
    // show it has recovered; that caller gets the stamp it replaced in `probe_from`, to put it
    // back if the probe is not made after all (breaker or limiter said no).
    bool below_quality(Channel& ch, TimePoint now, std::int64_t& probe_from) const noexcept {
        if (options_.min_success_rate <= 0.0) {
            return false;
        }
        const std::uint64_t w = ch.recent.load(std::memory_order_relaxed);
        if (detail::RecentWindow::samples(w) < options_.min_samples ||
            detail::RecentWindow::rate(w, options_.min_samples) >= options_.min_success_rate) {
            if (ch.quality_skip_since.load(std::memory_order_relaxed) != not_skipping) {
                ch.quality_skip_since.store(not_skipping, std::memory_order_relaxed);
            }
            return false;
        }
        const std::int64_t t = now.time_since_epoch().count();
        std::int64_t since = ch.quality_skip_since.load(std::memory_order_relaxed);
        if (since == not_skipping) {
            // relaxed: the stamp is the whole state.
            ch.quality_skip_since.compare_exchange_strong(since, t, std::memory_order_relaxed);
            return true;
        }
        if (t - since >= options_.quality_probe_interval.count()) {
            const std::int64_t before = since;
            if (ch.quality_skip_since.compare_exchange_strong(since, t,
                                                              std::memory_order_relaxed)) {
                probe_from = before;
                return false;
            }
        }
        return true;
    }

    Outcome<R> call(Channel& ch, Context& ctx, Args&... args) noexcept {
        if (ch.options.retry != nullptr) {
            return ch.options.retry->try_execute([&]() -> R { return ch.fn(args...); }, ctx);
        }
        return detail::capture<R>([&]() -> R { return ch.fn(args...); });
    }

    static void record_recent(Channel& ch, bool ok) noexcept {
        std::uint64_t w = ch.recent.load(std::memory_order_relaxed);
        // relaxed: the word is the whole state.
        while (!ch.recent.compare_exchange_weak(w, detail::RecentWindow::push(w, ok),
                                                std::memory_order_relaxed)) {
        }
    }

    BULWARK_NOINLINE static std::exception_ptr rate_limited_error(const Channel& ch,
                                                                  Duration retry_after) {
        // source(): the limiter that refused, as when it rejects a call itself.
        const std::string& limiter = ch.options.limiter->name();
        return std::make_exception_ptr(RateLimitedError(
            limiter.empty() ? nullptr : std::make_shared<const std::string>(limiter),
            "bulwark::FallbackChain: channel \"" + ch.name + "\" is rate limited", retry_after));
    }

    BULWARK_NOINLINE static std::exception_ptr no_channel_error(const ChainResult<R>& result) {
        std::string why = result.stopped() ? "cancelled or past its deadline"
                          : result.attempts().empty()
                              ? "no enabled channel"
                              : "every channel was skipped by a cost or quality threshold";
        return std::make_exception_ptr(
            NoChannelError("bulwark::FallbackChain: no channel delivered: " + why));
    }

    void finish_attempt(ChainResult<R>& result, Attempt&& attempt) {
        attempt.number = static_cast<std::uint32_t>(result.attempts_.size() + 1);
        result.attempts_.push_back(std::move(attempt));
        const Attempt& a = result.attempts_.back();
        attempt_listeners_.emit(a);
    }

    ChainResult<R> run(Context& ctx, const Order& order, std::uint32_t cap, Args&... args) {
        ChainResult<R> result;
        for (const Candidate& candidate : order) {
            if (result.calls_ >= cap) {
                break;
            }
            if (BULWARK_UNLIKELY(deadline_passed(ctx))) {
                result.stopped_ = true;
                break;
            }
            Channel& ch = *channels_[candidate.index];
            if (BULWARK_UNLIKELY(!result.attempts_.empty())) {
                const Attempt& prev = result.attempts_.back();
                fallback_listeners_.emit_with([&] {
                    return ChannelFallbackEvent{prev.channel, ch.name, prev.reason, prev.error};
                });
            }
            Attempt a;
            a.channel = ch.name;
            a.started = clock_->now();

            FallbackReason skip = FallbackReason::none;
            std::int64_t probe_from = not_skipping;
            if (ch.options.cost > options_.max_cost) {
                skip = FallbackReason::cost_threshold;
            } else if (below_quality(ch, a.started, probe_from)) {
                skip = FallbackReason::quality_threshold;
            }
            CircuitBreaker::Permit permit;
            if (skip == FallbackReason::none && ch.options.breaker != nullptr) {
                permit = ch.options.breaker->try_acquire();
                if (!permit) {
                    skip = FallbackReason::unavailable;
                    a.error = permit.rejection();
                }
            }
            if (skip == FallbackReason::none && ch.options.limiter != nullptr) {
                const RateDecision d = ch.options.limiter->try_acquire();
                if (!d) {
                    skip = FallbackReason::rate_limited;
                    a.error = rate_limited_error(ch, d.retry_after);
                    if (permit.pending()) {
                        // An inner rejection: neither a success nor a failure for the breaker,
                        // and it frees a half-open probe slot.
                        permit.record(Outcome<R>::from_error(a.error), Duration::zero());
                    }
                }
            }
            if (skip != FallbackReason::none) {
                if (probe_from != not_skipping) {
                    // A quality probe that was not made: the next call may make it. relaxed: the
                    // stamp is the whole state; losing to a newer stamp is fine.
                    std::int64_t mine = a.started.time_since_epoch().count();
                    ch.quality_skip_since.compare_exchange_strong(mine, probe_from,
                                                                  std::memory_order_relaxed);
                }
                ch.skipped.add();
                a.reason = skip;
                finish_attempt(result, std::move(a));
                continue;
            }

            if (count_in_flight_) {
                ch.in_flight.fetch_add(1, std::memory_order_relaxed);
            }
            Outcome<R> outcome = call(ch, ctx, args...);
            if (count_in_flight_) {
                ch.in_flight.fetch_sub(1, std::memory_order_relaxed);
            }
            a.elapsed = clock_->now() - a.started;
            if (permit.pending()) {
                permit.record(outcome, a.elapsed);
            }
            ++result.calls_;
            ch.calls.add();
            ch.latency_ns.add(
                static_cast<std::uint64_t>(std::max<Duration::rep>(a.elapsed.count(), 0)));
            const bool ok = outcome.has_value();
            record_recent(ch, ok);
            if (ok) {
                ch.successes.add();
                if (!result.attempts_.empty()) {
                    ch.fallbacks.add();
                }
                a.ok = true;
                if constexpr (!std::is_void<R>::value) {
                    result.value_.emplace(std::move(outcome).value());
                }
                result.channel_ = ch.name;
                result.ok_ = true;
                result.stopped_ = false;
                finish_attempt(result, std::move(a));
                return result;
            }
            ch.failures.add();
            a.error = outcome.error();
            a.reason = FallbackReason::primary_failed;
            finish_attempt(result, std::move(a));
        }
        // Nobody delivered: report the last error any attempt has.
        for (std::size_t i = result.attempts_.size(); i > 0; --i) {
            if (result.attempts_[i - 1].error) {
                result.error_ = result.attempts_[i - 1].error;
                return result;
            }
        }
        result.error_ = no_channel_error(result);
        return result;
    }

    static ChannelStats snapshot(const Channel& ch) noexcept {
        ChannelStats s;
        s.name = ch.name;
        s.calls = ch.calls.sum();
        s.successes = ch.successes.sum();
        s.failures = ch.failures.sum();
        s.skipped = ch.skipped.sum();
        s.fallbacks = ch.fallbacks.sum();
        if (s.calls > 0) {
            s.success_rate = static_cast<double>(s.successes) / static_cast<double>(s.calls);
            s.mean_latency = Duration{static_cast<Duration::rep>(ch.latency_ns.sum() / s.calls)};
        }
        s.recent_success_rate =
            detail::RecentWindow::rate(ch.recent.load(std::memory_order_relaxed));
        return s;
    }

    Selection selection_;
    ChainOptions options_;
    Clock* clock_;
    std::uint64_t seed_;
    std::vector<std::unique_ptr<Channel>> channels_;
    std::vector<ResolvedRule> rules_;  // by channel index; may be shorter than channels_
    std::vector<std::uint32_t> global_;
    bool count_in_flight_;  // some order is load_balanced: channels count their calls in flight
    std::atomic<std::uint64_t> round_robin_{0};
    std::atomic<std::uint64_t> load_balance_{0};
    Listeners<Attempt> attempt_listeners_;
    Listeners<ChannelFallbackEvent> fallback_listeners_;
};

}  // namespace bulwark

#endif  // BULWARK_FALLBACK_CHAIN_HPP
// #include <bulwark/in_memory_queue_store.hpp>
// InMemoryQueueStore: a bounded, thread-safe QueueStore kept in memory.
#ifndef BULWARK_IN_MEMORY_QUEUE_STORE_HPP
#define BULWARK_IN_MEMORY_QUEUE_STORE_HPP

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

// #include <bulwark/config.hpp> (already included above)
// #include <bulwark/detail/mutex.hpp> (already included above)
// #include <bulwark/detail/queue_index.hpp>
// QueueIndex: the messages of a QueueStore by id and in ready order (private).
#ifndef BULWARK_DETAIL_QUEUE_INDEX_HPP
#define BULWARK_DETAIL_QUEUE_INDEX_HPP

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

// #include <bulwark/config.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/queue_store.hpp>
// Durable-queue vocabulary: QueuedMessage, leases, QueueFullError and the QueueStore interface.
#ifndef BULWARK_QUEUE_STORE_HPP
#define BULWARK_QUEUE_STORE_HPP

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

// #include <bulwark/config.hpp> (already included above)
// #include <bulwark/errors.hpp> (already included above)
// #include <bulwark/time.hpp> (already included above)

namespace bulwark {

// A queue (or its store) is at its capacity: a rejection, nothing was queued; retry_after() is
// zero. source(): the queue's name when a queue raised it.
class QueueFullError : public RejectedError {
public:
    using RejectedError::RejectedError;
};

// A store refused a message larger than one of its limits; limit_name() says which (a file
// store's max_payload_bytes or max_id_bytes), size() and limit() the numbers. No byte of the
// message is in what().
class QueueMessageTooLargeError : public std::length_error {
public:
    QueueMessageTooLargeError(const std::string& what, const char* limit_name, std::size_t size,
                              std::size_t limit)
        : std::length_error(what), limit_name_(limit_name), size_(size), limit_(limit) {}

    const char* limit_name() const noexcept { return limit_name_; }
    std::size_t size() const noexcept { return size_; }
    std::size_t limit() const noexcept { return limit_; }

private:
    const char* limit_name_;
    std::size_t size_;
    std::size_t limit_;
};

// One message as a QueueStore keeps it: opaque bytes plus what the queue needs to schedule it.
// The store never reads the payload; the queue or engine that owns the store encodes its own
// state (the message, its channels, its attempt history) into it.
struct QueuedMessage {
    std::string id;       // unique within the store; not empty; chosen by the owner
    std::string payload;  // opaque bytes
    WallTime due{};       // claim() does not hand it out before this
    WallTime enqueued{};  // when it was first pushed (kept across releases)
    // The owner's count of attempts made; the store only keeps what release() gives it.
    std::uint32_t attempts = 0;
    // How many times claim() has leased it out (SQS's receive count). A message whose claims
    // outrun its attempts was leased by a worker that died before reporting.
    std::uint32_t claims = 0;
    // Set by claim(): the token that complete(), release() and extend() must carry. 0: not
    // leased. A store never hands out the same token twice, across restarts included.
    std::uint64_t lease = 0;
    WallTime lease_until{};  // when the lease runs out (meaningful while lease != 0)
};

// What a QueueStore holds, at one moment.
struct QueueStoreStats {
    std::size_t size = 0;    // messages held, leased or not
    std::size_t leased = 0;  // of which under a lease that has not been ended (may have run out)
};

// Where a durable queue keeps its messages. A message is pushed, then leased out by claim() to
// one worker at a time for a visibility timeout; the worker ends the lease with complete() (the
// message is done: it leaves the store) or release() (try again at a new due time, with its new
// state). A lease that runs out without either makes the message claimable again, so a worker or
// process that dies loses nothing: the message is delivered again (at least once).
//
// Rules every implementation follows (tests/queue_store_conformance.hpp checks them):
//   - push() returns only once the message is stored (durably, for a durable store); a message
//     with an empty or already held id is refused with std::invalid_argument naming it.
//   - claim(now, max, lease_for) leases up to `max` messages that are ready at `now`: not leased
//     and due <= now, or leased with lease_until <= now. They come in the order they became
//     ready (due, or the end of the lease), ties in push order (the order of the push() calls,
//     whatever was released or re-leased since). Each gets a fresh token, lease_until = now +
//     lease_for and claims + 1. A lease_for <= 0 is refused with std::invalid_argument.
//   - complete/release/extend act only while `lease` is the message's current token and return
//     false otherwise (the lease ran out and another claim took the message, or it is gone):
//     the caller's view is stale and it must not assume the message is done.
//   - Times are wall times (they outlive the process); the store never reads a clock itself.
//   - Every member is thread-safe.
//
// Usage: InMemoryQueueStore store; store.push({"m-1", bytes, now}); auto batch = store.claim(now,
// 50, 30s); ... store.complete(batch[0].id, batch[0].lease);
class QueueStore {
public:
    virtual ~QueueStore() = default;

    // Stores `message` (its claims and lease fields are ignored and start at zero). Throws
    // std::invalid_argument for an empty or duplicate id, QueueFullError when the store is full,
    // QueueMessageTooLargeError when it is over a limit of the store.
    virtual void push(const QueuedMessage& message) = 0;

    // Stores every message, as push() one by one; a store may write them as one durable step.
    // On a throw, the messages before the one that failed are stored.
    virtual void push_all(const std::vector<QueuedMessage>& messages) {
        for (const QueuedMessage& m : messages) {
            push(m);
        }
    }

    // Leases up to `max` ready messages (see the rules above) and returns copies of them.
    virtual std::vector<QueuedMessage> claim(WallTime now, std::size_t max, Duration lease_for) = 0;

    // The message leased under `lease` is done: removes it. false when `lease` is not current.
    virtual bool complete(std::string_view id, std::uint64_t lease) = 0;

    // Ends the lease on `message.id` (which must be `message.lease`) and stores its new payload,
    // due time and attempts; it is claimable again at `due`. false when the lease is not current.
    virtual bool release(const QueuedMessage& message) = 0;

    // Moves the end of a current lease to `until` (a heartbeat for a long attempt).
    virtual bool extend(std::string_view id, std::uint64_t lease, WallTime until) = 0;

    // Removes a message whatever its lease (an operator's cancel). false when it is not held.
    virtual bool remove(std::string_view id) = 0;

    virtual std::optional<QueuedMessage> get(std::string_view id) const = 0;

    virtual std::size_t size() const = 0;

    // The earliest time claim() could return a message: the least due time of the messages not
    // leased and the least lease end of those leased. nullopt when the store is empty.
    virtual std::optional<WallTime> next_ready() const = 0;

    // Up to `limit` messages, in the order claim() would consider them.
    virtual std::vector<QueuedMessage> list(
        std::size_t limit = std::numeric_limits<std::size_t>::max()) const = 0;

    virtual QueueStoreStats stats() const = 0;
};

}  // namespace bulwark

#endif  // BULWARK_QUEUE_STORE_HPP
// #include <bulwark/time.hpp> (already included above)

namespace bulwark {
namespace detail {

// The messages of InMemoryQueueStore and FileQueueStore: by id, and in the order claim() takes
// them. A message's ready key is (due, push number) while it is not leased and (lease_until,
// push number) while it is, so ties between equal times go in push order whatever was released
// or re-leased in between, and a store replayed from its journal orders them as before.
// Checks nothing: its owner validates. What runs under the owner's lock allocates nothing but a
// larger bucket array now and then: a message's nodes are made by stage() before the lock and
// freed from the Removed that erase() returns after it; leasing, releasing and extending re-key
// the ready node in place. Not thread-safe: the owner's lock guards it.
class QueueIndex {
    using Key = std::pair<WallTime, std::uint64_t>;  // ready time, push number
    struct Entry;
    using Ready = std::map<Key, Entry*>;
    struct Entry {
        QueuedMessage message;
        std::uint64_t seq = 0;
        Ready::iterator ready;
    };
    // Keyed by a view of the id that the entry holds: a node never moves, so the view stays
    // valid, and the id is kept once.
    using Entries = std::unordered_map<std::string_view, Entry>;

public:
    QueueIndex() { spare_.reserve(max_spare); }
    // Entries point into each other (keys into messages, ready nodes into entries): no copies.
    QueueIndex(const QueueIndex&) = delete;
    QueueIndex& operator=(const QueueIndex&) = delete;

    // A message with its nodes allocated (by stage(), which needs no lock), so that insert()
    // under the owner's lock allocates nothing but a larger bucket array now and then.
    class Staged {
        friend QueueIndex;
        Entries::node_type entry_node_;
        Ready::node_type ready_node_;
    };

    // What erase() took out: its nodes, freed when this is destroyed, which the owner may do
    // after unlocking. False if the id was not held.
    class Removed {
    public:
        explicit operator bool() const noexcept { return !entry_node_.empty(); }

    private:
        friend QueueIndex;
        Entries::node_type entry_node_;
        Ready::node_type ready_node_;
    };

    std::size_t size() const noexcept { return entries_.size(); }
    std::size_t leased() const noexcept { return leased_; }
    bool contains(std::string_view id) const { return entries_.count(id) != 0; }

    const QueuedMessage* find(std::string_view id) const {
        const Entry* e = find_entry(id);
        return e != nullptr ? &e->message : nullptr;
    }

    // The message under lease `lease` (0 never is a lease), or nullptr.
    const QueuedMessage* find_leased(std::string_view id, std::uint64_t lease) const {
        const Entry* e = lease == 0 ? nullptr : find_entry(id);
        return e != nullptr && e->message.lease == lease ? &e->message : nullptr;
    }

    void reserve(std::size_t n) { entries_.reserve(n); }

    // `message` in nodes of its own, ready for insert(). Thread-safe (touches no index).
    static Staged stage(QueuedMessage message) {
        Staged s;
        {
            Entries one;
            one.try_emplace(std::string_view{});
            s.entry_node_ = one.extract(one.begin());
        }
        {
            Ready one;
            one.emplace(Key{}, nullptr);
            s.ready_node_ = one.extract(one.begin());
        }
        Entry& e = s.entry_node_.mapped();
        e.message = std::move(message);
        s.entry_node_.key() = e.message.id;
        s.ready_node_.mapped() = &e;
        return s;
    }

    // Adds the staged message as it is (its lease included: a snapshot replayed), after every
    // message already held in push order, if its id is absent; false (and `s` unchanged) if
    // not. Strong guarantee (only a larger bucket array can fail to allocate).
    bool try_insert(Staged& s) {
        Entry& e = s.entry_node_.mapped();
        // On a throw or a held id, s still owns the node.
        auto placed = entries_.insert(std::move(s.entry_node_));
        if (!placed.inserted) {
            s.entry_node_ = std::move(placed.node);
            return false;
        }
        e.seq = next_seq_;
        s.ready_node_.key() = Key{ready_time(e.message), e.seq};
        e.ready = ready_.insert(std::move(s.ready_node_)).position;  // no allocation: cannot throw
        ++next_seq_;
        if (e.message.lease != 0) {
            ++leased_;
        }
        return true;
    }

    // try_insert() of a message whose id is absent.
    void insert(const QueuedMessage& message) {
        Staged s = stage_copy(message);
        if (!try_insert(s)) {
            keep_spare(s);
        }
    }

    // Nodes of erased messages are kept (up to max_spare) for the messages inserted next, with
    // their payload's buffer: a store whose messages are pushed on one thread and completed on
    // another would otherwise free on one and allocate on the other, and the two would contend
    // for the allocator's lock.
    static constexpr std::size_t max_spare = 256;

    bool has_spare() const noexcept { return !spare_.empty(); }

    // A staged copy of `message`, in a spare node if there is one (then it allocates only for an
    // id or payload larger than the spare held). Without lease if `fresh`.
    Staged stage_copy(const QueuedMessage& message, bool fresh = false) {
        if (spare_.empty()) {
            Staged s = stage(message);
            clear_lease(s, fresh);
            return s;
        }
        Staged s;
        s.entry_node_ = std::move(spare_.back().entry_node_);
        s.ready_node_ = std::move(spare_.back().ready_node_);
        spare_.pop_back();
        Entry& e = s.entry_node_.mapped();
        e.message = message;  // reuses the strings' buffers
        clear_lease(s, fresh);
        s.entry_node_.key() = e.message.id;
        s.ready_node_.mapped() = &e;
        return s;
    }

    // Keeps the nodes of `r` (erased) or `s` (not inserted) as spares if there is room; what is
    // not kept is freed with `r` or `s`.
    // Never throws: the room for spares is reserved when the index is made.
    void keep_spare(Removed& r) noexcept {
        if (r && spare_.size() < spare_.capacity()) {
            spare_.push_back(std::move(r));
        }
    }
    void keep_spare(Staged& s) noexcept {
        Removed r;
        r.entry_node_ = std::move(s.entry_node_);
        r.ready_node_ = std::move(s.ready_node_);
        keep_spare(r);
    }

    static void clear_lease(Staged& s, bool fresh) noexcept {
        if (fresh) {
            QueuedMessage& m = s.entry_node_.mapped().message;
            m.claims = 0;
            m.lease = 0;
            m.lease_until = WallTime{};
        }
    }

    static const QueuedMessage& message(const Staged& s) noexcept {
        return s.entry_node_.mapped().message;
    }

    // The first message in ready order if it is ready at `now`, else nullptr.
    const QueuedMessage* first_ready(WallTime now) const noexcept {
        if (ready_.empty() || ready_.begin()->first.first > now) {
            return nullptr;
        }
        return &ready_.begin()->second->message;
    }

    // Up to `max` messages ready at `now`, in ready order.
    std::vector<const QueuedMessage*> ready_at(WallTime now, std::size_t max) const {
        std::vector<const QueuedMessage*> out;
        for (auto it = ready_.begin();
             it != ready_.end() && out.size() < max && it->first.first <= now; ++it) {
            out.push_back(&it->second->message);
        }
        return out;
    }

    // Leases the message `id` (held) under `token` until `until`; claims + 1.
    void lease(std::string_view id, std::uint64_t token, WallTime until) {
        lease(*find_entry(id), token, until);
    }

    // Leases the first message in ready order (there is one) as lease(); returns it.
    const QueuedMessage& lease_first(std::uint64_t token, WallTime until) {
        Entry& e = *ready_.begin()->second;
        lease(e, token, until);
        return e.message;
    }

    // Ends the lease of `id` (held) with the message's new state: ready again at `due`.
    void release(std::string_view id, std::string payload, WallTime due, std::uint32_t attempts) {
        Entry& e = *find_entry(id);
        if (e.message.lease != 0) {
            --leased_;
        }
        e.message.payload = std::move(payload);
        e.message.due = due;
        e.message.attempts = attempts;
        e.message.lease = 0;
        e.message.lease_until = WallTime{};
        rekey(e);
    }

    // Moves the end of the lease of `id` (held and leased) to `until`.
    void extend(std::string_view id, WallTime until) {
        Entry& e = *find_entry(id);
        e.message.lease_until = until;
        rekey(e);
    }

    Removed erase(std::string_view id) {
        return erase_if(id, [](const QueuedMessage&) { return true; });
    }

    // erase() of the message `id` if it is under lease `lease` (0 never is a lease).
    Removed erase_leased(std::string_view id, std::uint64_t lease) {
        return erase_if(id, [&](const QueuedMessage& m) { return lease != 0 && m.lease == lease; });
    }

    std::optional<WallTime> next_ready() const {
        if (ready_.empty()) {
            return std::nullopt;
        }
        return ready_.begin()->first.first;
    }

    // Calls f(const QueuedMessage&) for messages in ready order while it returns true.
    template <class F>
    void for_each_ready(F&& f) const {
        for (const auto& node : ready_) {
            if (!f(node.second->message)) {
                return;
            }
        }
    }

    // Every message in push order (what a journal snapshot writes, so that a replay keeps it).
    std::vector<const QueuedMessage*> in_push_order() const {
        std::vector<const Entry*> entries;
        entries.reserve(entries_.size());
        for (const auto& node : entries_) {
            entries.push_back(&node.second);
        }
        std::sort(entries.begin(), entries.end(),
                  [](const Entry* a, const Entry* b) { return a->seq < b->seq; });
        std::vector<const QueuedMessage*> out;
        out.reserve(entries.size());
        for (const Entry* e : entries) {
            out.push_back(&e->message);
        }
        return out;
    }

private:
    // One lookup: the message `id` out if it is held and pred(message) holds.
    template <class Pred>
    Removed erase_if(std::string_view id, Pred&& pred) {
        Removed out;
        const auto it = entries_.find(id);
        if (it == entries_.end() || !pred(it->second.message)) {
            return out;
        }
        if (it->second.message.lease != 0) {
            --leased_;
        }
        out.ready_node_ = ready_.extract(it->second.ready);
        out.entry_node_ = entries_.extract(it);
        return out;
    }

    static WallTime ready_time(const QueuedMessage& m) noexcept {
        return m.lease != 0 ? m.lease_until : m.due;
    }

    void lease(Entry& e, std::uint64_t token, WallTime until) noexcept {
        if (e.message.lease == 0) {
            ++leased_;
        }
        e.message.lease = token;
        e.message.lease_until = until;
        ++e.message.claims;
        rekey(e);
    }

    // Moves e's ready node to its current key: extracted and reinserted, so nothing allocates.
    void rekey(Entry& e) noexcept {
        auto node = ready_.extract(e.ready);
        node.key() = Key{ready_time(e.message), e.seq};
        e.ready = ready_.insert(std::move(node)).position;
    }

    Entry* find_entry(std::string_view id) {
        const auto it = entries_.find(id);
        return it != entries_.end() ? &it->second : nullptr;
    }
    const Entry* find_entry(std::string_view id) const {
        const auto it = entries_.find(id);
        return it != entries_.end() ? &it->second : nullptr;
    }

    Entries entries_;
    Ready ready_;
    std::vector<Removed> spare_;
    std::size_t leased_ = 0;
    std::uint64_t next_seq_ = 0;
};

// The checks every queue store makes of its arguments, so that they fail alike:
// std::invalid_argument naming the store's call, the field and the value.
[[noreturn]] BULWARK_NOINLINE inline void throw_already_queued(const char* call,
                                                               const std::string& id) {
    throw_invalid_argument(std::string(call) + ": id '" + id + "' is already queued");
}

inline void check_push_id(const char* call, const QueuedMessage& message, bool held) {
    if (message.id.empty()) {
        throw_invalid_argument(std::string(call) + ": empty id");
    }
    if (held) {
        throw_already_queued(call, message.id);
    }
}

// A lease must last: one of zero or less would be claimable again at once (two workers on one
// message), and now + lease_for saturates rather than overflows.
inline WallTime lease_end(const char* call, WallTime now, Duration lease_for) {
    if (lease_for <= Duration::zero()) {
        throw_invalid_argument(std::string(call) + ": lease_for must be > 0 (got " +
                               format_duration(lease_for) + ")");
    }
    return WallTime{saturating_add(now.time_since_epoch(), lease_for)};
}

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_QUEUE_INDEX_HPP
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/queue_store.hpp> (already included above)

namespace bulwark {

// A QueueStore in memory: leases work as in a durable store (a worker that never reports gives
// its message back when the lease runs out), but everything is lost with the process.
//   bulwark::InMemoryQueueStore store(/*max_size*/ 1000000);
// push, claim (per message), complete and release are O(log n) under one mutex. claim() throws
// std::invalid_argument for a lease_for <= 0.
class InMemoryQueueStore final : public QueueStore {
public:
    // `max_size` >= 1: push() beyond it throws QueueFullError.
    explicit InMemoryQueueStore(std::size_t max_size = 10000000) : max_size_(max_size) {
        if (max_size_ == 0) {
            detail::throw_invalid_option("InMemoryQueueStore max_size", "must be >= 1", "0");
        }
    }

    void push(const QueuedMessage& message) override {
        if (!insert_in_spare(message)) {
            // Copied before the lock, so that submitters and workers wait on each other only
            // for the index's own work.
            detail::QueueIndex::Staged staged = detail::QueueIndex::stage(fresh(message));
            insert(staged);
        }
    }

    // push() of a message this store may take over (no copy of its bytes).
    void push(QueuedMessage&& message) {
        if (insert_in_spare(message)) {
            return;
        }
        message.claims = 0;
        message.lease = 0;
        message.lease_until = WallTime{};
        detail::QueueIndex::Staged staged = detail::QueueIndex::stage(std::move(message));
        insert(staged);
    }

    // All or nothing: a batch that does not fit, or holds a bad id (a duplicate within it too),
    // stores none of its messages.
    void push_all(const std::vector<QueuedMessage>& messages) override {
        std::vector<detail::QueueIndex::Staged> staged;
        staged.reserve(messages.size());
        for (const QueuedMessage& m : messages) {
            staged.push_back(detail::QueueIndex::stage(fresh(m)));
        }
        detail::LockGuard lock(mutex_);
        if (messages.size() == 1) {
            check(messages.front());  // the common batch: no set to build
        } else {
            std::unordered_set<std::string_view> ids;
            for (const QueuedMessage& m : messages) {
                check(m);
                if (!ids.insert(m.id).second) {
                    detail::check_push_id(call, m, true);  // named twice in the batch
                }
            }
        }
        if (messages.size() > max_size_ - index_.size()) {
            full();
        }
        std::size_t done = 0;
        try {
            for (; done < messages.size(); ++done) {
                index_.try_insert(staged[done]);  // the ids were checked
            }
        } catch (...) {
            for (std::size_t i = 0; i < done; ++i) {
                index_.erase(messages[i].id);
            }
            throw;
        }
    }

    std::vector<QueuedMessage> claim(WallTime now, std::size_t max, Duration lease_for) override {
        const WallTime until =
            detail::lease_end("bulwark::InMemoryQueueStore::claim", now, lease_for);
        std::vector<QueuedMessage> out;
        detail::LockGuard lock(mutex_);
        out.reserve(std::min(max, index_.size()));
        for (const QueuedMessage* m = index_.first_ready(now); m != nullptr && out.size() < max;
             m = index_.first_ready(now)) {
            // The copy first: if it cannot be made, nothing was leased.
            out.push_back(*m);
            const QueuedMessage& leased = index_.lease_first(++last_lease_, until);
            out.back().lease = leased.lease;
            out.back().lease_until = leased.lease_until;
            out.back().claims = leased.claims;
        }
        return out;
    }

    bool complete(std::string_view id, std::uint64_t lease) override {
        detail::QueueIndex::Removed removed;  // freed after the lock is released
        detail::LockGuard lock(mutex_);
        removed = index_.erase_leased(id, lease);
        const bool done = static_cast<bool>(removed);
        index_.keep_spare(removed);
        return done;
    }

    bool release(const QueuedMessage& message) override {
        detail::LockGuard lock(mutex_);
        if (index_.find_leased(message.id, message.lease) == nullptr) {
            return false;
        }
        index_.release(message.id, message.payload, message.due, message.attempts);
        return true;
    }

    bool extend(std::string_view id, std::uint64_t lease, WallTime until) override {
        detail::LockGuard lock(mutex_);
        if (index_.find_leased(id, lease) == nullptr) {
            return false;
        }
        index_.extend(id, until);
        return true;
    }

    bool remove(std::string_view id) override {
        detail::QueueIndex::Removed removed;
        detail::LockGuard lock(mutex_);
        removed = index_.erase(id);
        return static_cast<bool>(removed);
    }

    std::optional<QueuedMessage> get(std::string_view id) const override {
        detail::LockGuard lock(mutex_);
        const QueuedMessage* m = index_.find(id);
        if (m == nullptr) {
            return std::nullopt;
        }
        return *m;
    }

    std::size_t size() const override {
        detail::LockGuard lock(mutex_);
        return index_.size();
    }

    std::optional<WallTime> next_ready() const override {
        detail::LockGuard lock(mutex_);
        return index_.next_ready();
    }

    std::vector<QueuedMessage> list(std::size_t limit) const override {
        std::vector<QueuedMessage> out;
        detail::LockGuard lock(mutex_);
        index_.for_each_ready([&](const QueuedMessage& m) {
            if (out.size() >= limit) {
                return false;
            }
            out.push_back(m);
            return true;
        });
        return out;
    }

    QueueStoreStats stats() const override {
        detail::LockGuard lock(mutex_);
        return {index_.size(), index_.leased()};
    }

private:
    static constexpr const char* call = "bulwark::InMemoryQueueStore::push";

    [[noreturn]] BULWARK_NOINLINE void full() const {
        throw QueueFullError("bulwark::InMemoryQueueStore is full (max_size " +
                             std::to_string(max_size_) + ")");
    }

    // push() of a copy of `message` in a spare node of the index, if it has one (the copy is
    // then made under the lock, but it allocates nothing while the payload fits); false if not.
    bool insert_in_spare(const QueuedMessage& message) BULWARK_EXCLUDES(mutex_) {
        if (message.id.empty()) {
            detail::check_push_id(call, message, false);
        }
        detail::LockGuard lock(mutex_);
        if (!index_.has_spare()) {
            return false;
        }
        if (index_.size() >= max_size_) {
            check(message);
            full();
        }
        detail::QueueIndex::Staged staged = index_.stage_copy(message, true);
        if (!index_.try_insert(staged)) {
            index_.keep_spare(staged);
            detail::throw_already_queued(call, message.id);
        }
        return true;
    }

    // push() of a staged message, with one lookup of its id.
    void insert(detail::QueueIndex::Staged& staged) BULWARK_EXCLUDES(mutex_) {
        const QueuedMessage& m = detail::QueueIndex::message(staged);
        if (m.id.empty()) {
            detail::check_push_id(call, m, false);
        }
        detail::LockGuard lock(mutex_);
        if (index_.size() >= max_size_) {
            check(m);  // a held id is named first
            full();
        }
        if (!index_.try_insert(staged)) {
            detail::throw_already_queued(call, m.id);
        }
    }

    void check(const QueuedMessage& message) const BULWARK_REQUIRES(mutex_) {
        detail::check_push_id(call, message, index_.contains(message.id));
    }

    // What push() stores: the message without claims or lease.
    static QueuedMessage fresh(const QueuedMessage& message) {
        QueuedMessage m = message;
        m.claims = 0;
        m.lease = 0;
        m.lease_until = WallTime{};
        return m;
    }

    const std::size_t max_size_;
    mutable detail::Mutex mutex_;
    detail::QueueIndex index_ BULWARK_GUARDED_BY(mutex_);
    std::uint64_t last_lease_ BULWARK_GUARDED_BY(mutex_) = 0;
};

}  // namespace bulwark

#endif  // BULWARK_IN_MEMORY_QUEUE_STORE_HPP
// #include <bulwark/inline_vector.hpp> (already included above)
// #include <bulwark/message_status.hpp> (already included above)
// #include <bulwark/metrics_writer.hpp> (already included above)
// #include <bulwark/queue_store.hpp> (already included above)
// #include <bulwark/retry_queue.hpp>
// RetryQueue: messages handled, retried on a schedule and dead-lettered when they cannot be.
#ifndef BULWARK_RETRY_QUEUE_HPP
#define BULWARK_RETRY_QUEUE_HPP

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

// #include <bulwark/classify.hpp> (already included above)
// #include <bulwark/clock.hpp> (already included above)
// #include <bulwark/dead_letter_store.hpp> (already included above)
// #include <bulwark/delivery_error.hpp> (already included above)
// #include <bulwark/detail/dead_letter_index.hpp> (already included above)
// #include <bulwark/detail/mutex.hpp> (already included above)
// #include <bulwark/detail/random.hpp> (already included above)
// #include <bulwark/detail/retry_queue_state.hpp>
// The retry state a durable RetryQueue keeps in a QueuedMessage's payload, and its encoding
// (private).
#ifndef BULWARK_DETAIL_RETRY_QUEUE_STATE_HPP
#define BULWARK_DETAIL_RETRY_QUEUE_STATE_HPP

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// #include <bulwark/dead_letter_store.hpp> (already included above)
// #include <bulwark/time.hpp> (already included above)

namespace bulwark {
namespace detail {

// What a RetryQueue needs of a message between two attempts, in a form that outlives the
// process: wall times, not the steady clock's. A plain value.
struct RetryQueueState {
    std::uint32_t attempts = 0;  // handler calls so far
    WallTime first_try{};        // the first attempt (max_elapsed counts from it); 0 before it
    Duration previous{0};        // the last backoff (decorrelated jitter)
    Duration store_wait{0};      // the last wait after the dead-letter store refused
    std::uint64_t stream = 0;    // the message's jitter stream
    bool dead = false;           // bound for the dead-letter store: only the add is tried again
    bool parked = false;         // the dead-letter store can never take it: off the schedule
    DeadLetterReason reason = DeadLetterReason::retries_exhausted;
    std::string error;  // the last error
    std::vector<DeadLetterAttempt> history;
};

// Version 1, little-endian, every field fixed in place:
//   "bRQ" 0x01 | u32 attempts | i64 first_try ns | i64 previous ns | i64 store_wait ns |
//   u64 stream | u8 flags (1 dead, 2 parked) | u8 reason | str error | u32 history count |
//   count x (i64 at ns | str channel | str error) | str message
// where str is a u32 length and that many bytes. Nothing follows the message. A reader refuses
// any other version, flag or reason it does not know, and any length past the end: a payload
// it cannot read whole is corrupt, never half-read.
// a - b, clamped to Duration's range (times from a wall clock that was set can be far apart).
constexpr Duration saturating_sub(Duration a, Duration b) noexcept {
    if (b > Duration::zero() && a < Duration::min() + b) {
        return Duration::min();
    }
    if (b < Duration::zero() && a > Duration::max() + b) {
        return Duration::max();
    }
    return a - b;
}

inline constexpr char retry_queue_state_magic[4] = {'b', 'R', 'Q', '\x01'};

namespace retry_state_codec {

inline void put_u32(std::string& out, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) {
        out.push_back(static_cast<char>((v >> (8 * i)) & 0xFFU));
    }
}

inline void put_u64(std::string& out, std::uint64_t v) {
    for (int i = 0; i < 8; ++i) {
        out.push_back(static_cast<char>((v >> (8 * i)) & 0xFFU));
    }
}

inline void put_i64(std::string& out, std::int64_t v) {
    put_u64(out, static_cast<std::uint64_t>(v));
}

// Text longer than a u32 can count does not occur (the queue clips its errors; a message of
// 4 GiB is refused by the encoder's caller), but is clipped rather than written wrong.
inline void put_str(std::string& out, std::string_view s) {
    const std::size_t n =
        std::min<std::size_t>(s.size(), std::numeric_limits<std::uint32_t>::max());
    put_u32(out, static_cast<std::uint32_t>(n));
    out.append(s.data(), n);
}

// A bounds-checked reader: every get returns false, and reads nothing, past the end.
class Reader {
public:
    explicit Reader(std::string_view bytes) noexcept : bytes_(bytes) {}

    bool u8(std::uint8_t& v) noexcept {
        if (bytes_.size() - pos_ < 1) {
            return false;
        }
        v = static_cast<std::uint8_t>(bytes_[pos_++]);
        return true;
    }

    bool u32(std::uint32_t& v) noexcept {
        std::uint64_t wide = 0;
        if (!fixed(4, wide)) {
            return false;
        }
        v = static_cast<std::uint32_t>(wide);
        return true;
    }

    bool u64(std::uint64_t& v) noexcept { return fixed(8, v); }

    bool i64(std::int64_t& v) noexcept {
        std::uint64_t u = 0;
        if (!fixed(8, u)) {
            return false;
        }
        v = static_cast<std::int64_t>(u);
        return true;
    }

    bool str(std::string& s) {
        std::uint32_t n = 0;
        if (!u32(n) || bytes_.size() - pos_ < n) {
            return false;
        }
        s.assign(bytes_.data() + pos_, n);
        pos_ += n;
        return true;
    }

    std::size_t left() const noexcept { return bytes_.size() - pos_; }

private:
    bool fixed(std::size_t n, std::uint64_t& v) noexcept {
        if (bytes_.size() - pos_ < n) {
            return false;
        }
        v = 0;
        for (std::size_t i = 0; i < n; ++i) {
            v |= static_cast<std::uint64_t>(static_cast<unsigned char>(bytes_[pos_ + i]))
                 << (8 * i);
        }
        pos_ += n;
        return true;
    }

    std::string_view bytes_;
    std::size_t pos_ = 0;  // invariant: pos_ <= bytes_.size()
};

}  // namespace retry_state_codec

inline std::string encode_retry_queue_state(const RetryQueueState& state,
                                            std::string_view message) {
    namespace c = retry_state_codec;
    std::size_t size = 4 + 4 + 8 * 4 + 2 + 4 + state.error.size() + 4 + 4 + message.size();
    for (const DeadLetterAttempt& a : state.history) {
        size += 8 + 8 + a.channel.size() + a.error.size();
    }
    std::string out;
    out.reserve(size);
    out.append(retry_queue_state_magic, sizeof retry_queue_state_magic);
    c::put_u32(out, state.attempts);
    c::put_i64(out, state.first_try.time_since_epoch().count());
    c::put_i64(out, state.previous.count());
    c::put_i64(out, state.store_wait.count());
    c::put_u64(out, state.stream);
    out.push_back(static_cast<char>((state.dead ? 1U : 0U) | (state.parked ? 2U : 0U)));
    out.push_back(static_cast<char>(state.reason));
    c::put_str(out, state.error);
    c::put_u32(out, static_cast<std::uint32_t>(state.history.size()));
    for (const DeadLetterAttempt& a : state.history) {
        c::put_i64(out, a.at.time_since_epoch().count());
        c::put_str(out, a.channel);
        c::put_str(out, a.error);
    }
    c::put_str(out, message);
    return out;
}

// Reads a payload written by encode_retry_queue_state into `state` and `message`. Returns
// nullptr, or why the payload cannot be read (then `state` and `message` are unspecified).
// Never throws on malformed input (only std::bad_alloc).
inline const char* decode_retry_queue_state(std::string_view payload, RetryQueueState& state,
                                            std::string& message) {
    namespace c = retry_state_codec;
    if (payload.size() < 4 ||
        payload.substr(0, 3) != std::string_view(retry_queue_state_magic, 3)) {
        return "not a retry queue payload";
    }
    if (payload[3] != retry_queue_state_magic[3]) {
        return "unknown retry queue payload version";
    }
    c::Reader in(payload.substr(4));
    std::int64_t first_try = 0;
    std::int64_t previous = 0;
    std::int64_t store_wait = 0;
    std::uint8_t flags = 0;
    std::uint8_t reason = 0;
    std::uint32_t count = 0;
    if (!in.u32(state.attempts) || !in.i64(first_try) || !in.i64(previous) || !in.i64(store_wait) ||
        !in.u64(state.stream) || !in.u8(flags) || !in.u8(reason) || !in.str(state.error) ||
        !in.u32(count)) {
        return "truncated retry queue payload";
    }
    if ((flags & ~3U) != 0 || reason >= dead_letter_reason_count || previous < 0 ||
        store_wait < 0) {
        return "invalid retry queue state";
    }
    // Each attempt takes at least 16 bytes: a count the bytes cannot hold is refused before
    // anything is reserved for it.
    if (count > in.left() / 16) {
        return "truncated retry queue payload";
    }
    state.first_try = WallTime{Duration{first_try}};
    state.previous = Duration{previous};
    state.store_wait = Duration{store_wait};
    state.dead = (flags & 1U) != 0;
    state.parked = (flags & 2U) != 0;
    state.reason = static_cast<DeadLetterReason>(reason);
    state.history.clear();
    state.history.reserve(count);
    for (std::uint32_t i = 0; i < count; ++i) {
        DeadLetterAttempt a;
        std::int64_t at = 0;
        if (!in.i64(at) || !in.str(a.channel) || !in.str(a.error)) {
            return "truncated retry queue payload";
        }
        a.at = WallTime{Duration{at}};
        state.history.push_back(std::move(a));
    }
    if (!in.str(message)) {
        return "truncated retry queue payload";
    }
    if (in.left() != 0) {
        return "trailing bytes in retry queue payload";
    }
    return nullptr;
}

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_RETRY_QUEUE_STATE_HPP
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/errors.hpp> (already included above)
// #include <bulwark/queue_store.hpp> (already included above)
// #include <bulwark/retry.hpp> (already included above)
// #include <bulwark/time.hpp> (already included above)

namespace bulwark {

// enqueue() on a RetryQueue that has been stopped.
class QueueStoppedError : public std::logic_error {
public:
    using std::logic_error::logic_error;
};

// What stop() does with the messages still queued.
enum class StopMode : std::uint8_t {
    drain,    // go on handling what is due (retries included) until none is left or the timeout
    persist,  // only let the attempts in flight finish
};

// A RetryQueue's options; validate() throws std::invalid_argument naming the field.
struct RetryQueueOptions {
    // The most messages held, waiting or being handled; enqueue() beyond it throws
    // QueueFullError. In [1, 100000000].
    std::size_t max_size = 100000;
    // Background threads that handle due messages; 0 (the default): none, call run_due().
    // At most 256.
    std::size_t workers = 0;
    // The queue's name: source() of its errors, the channel of the attempts it records.
    std::string name = "retry-queue";
    // DeadLetter::type of the messages it dead-letters. Not empty.
    std::string type = "message";
    // What a failure means: a DeliveryError's kind by default (permanent and bounced are not
    // retried; rate_limited waits its retry_after); rules for the adapter's own exceptions.
    DeliveryClassifier classifier{};
    // Durable mode (a QueueStore): how long a claimed message stays leased to this queue. A
    // worker or process that dies holding it gives it back when the lease runs out, so choose
    // it longer than the longest attempt (and dead-letter add): an attempt that outlasts it may
    // be delivered twice. In [1 ms, 24 h]; unused in memory.
    Duration lease = std::chrono::seconds(30);

    void validate() const {
        if (max_size < 1 || max_size > 100000000) {
            detail::throw_invalid_option("RetryQueueOptions.max_size", "must be in [1, 100000000]",
                                         std::to_string(max_size));
        }
        if (workers > 256) {
            detail::throw_invalid_option("RetryQueueOptions.workers", "must be <= 256",
                                         std::to_string(workers));
        }
        if (type.empty()) {
            detail::throw_invalid_option("RetryQueueOptions.type", "must not be empty", "\"\"");
        }
        if (lease < std::chrono::milliseconds(1) || lease > std::chrono::hours(24)) {
            detail::throw_invalid_option("RetryQueueOptions.lease", "must be in [1ms, 24h]",
                                         detail::format_duration(lease));
        }
    }
};

// What a RetryQueue did so far.
struct RetryQueueStats {
    std::size_t queued = 0;                  // held now: waiting, or being handled
    std::size_t in_flight = 0;               // being handled now
    std::uint64_t enqueued = 0;              // accepted by enqueue()
    std::uint64_t rejected_full = 0;         // refused by enqueue(): the queue was full
    std::uint64_t attempts = 0;              // handler calls
    std::uint64_t delivered = 0;             // handled without an error
    std::uint64_t retries = 0;               // failed attempts scheduled again
    std::uint64_t dead_lettered = 0;         // added to the dead-letter store
    std::uint64_t dead_letter_failures = 0;  // store.add() failed: kept, tried again later
    // Refused by the store for good (too large for it, invalid): held off the schedule until
    // stop() hands them back.
    std::uint64_t parked = 0;
    std::uint64_t returned = 0;  // handed back by stop()
    // Durable mode: payloads that could not be read (not this queue's encoding, a version it
    // does not know, truncated, or the Decoder threw), each dead-lettered as such when seen.
    std::uint64_t corrupt = 0;
    // Durable mode: a turn ended after its lease had run out (complete or release refused): the
    // message was, or will be, claimed again — a duplicate delivery, never a loss.
    std::uint64_t lost_leases = 0;
    // Durable mode: a QueueStore call that threw (the message stays in the store; a lease that
    // was not ended runs out and the message comes back).
    std::uint64_t store_failures = 0;
};

// A queue of messages that a handler delivers: a message whose handler call throws is tried
// again after the RetryOptions' backoff (or the error's retry_after(), when later), and one that
// cannot be delivered — retries exhausted, max_elapsed passed, or an error the options'
// classifier does not count as retryable — goes to the DeadLetterStore with its whole history
// (every attempt: time, queue name, error). Nothing is dropped: a full queue refuses enqueue()
// (QueueFullError), a dead-letter store that refuses an add keeps the message here to try
// again, and stop() hands back what is left.
//   bulwark::RetryQueue<std::string> queue(send, store, retry_options, /*workers*/ 2);
//   queue.enqueue(msg);  queue.enqueue_at(msg, when);  queue.run_due();  queue.stop();
// Driven by worker threads (RetryQueueOptions::workers) or by run_due() from the caller's loop
// (and tests, on a ManualClock). The handler is called with no lock held, once per message at a
// time. A Message that is not a string needs an encoder for its dead-letter payload.
//
// Durable when given a QueueStore: the messages and their retry state (attempts, history,
// backoff) live in the store, not in the queue. A turn claims a due message with a lease
// (RetryQueueOptions::lease), handles it, then completes it (delivered, or dead-lettered: the
// add comes first) or releases it with its next due time and new state. A worker or process that
// dies mid-turn loses nothing: its lease runs out and the message is handled again (at least
// once). A queue made on a store that already holds messages (a previous process's) takes them
// up when due, or when their old lease runs out. stop() then leaves what is left in the store.
//   bulwark::RetryQueue<std::string> queue(send, dead_letters, queue_store, retry, options);
// Thread-safe.
template <class Message>
class RetryQueue {
public:
    using Handler = std::function<void(const Message&)>;
    // The bytes a dead letter (and, in durable mode, the queue store) carries for a message.
    using Encoder = std::function<std::string(const Message&)>;
    // Durable mode: a message back from the encoder's bytes. It may throw: the message is then
    // dead-lettered as corrupt (stats().corrupt), with its bytes.
    using Decoder = std::function<Message(const std::string&)>;

    // `store` and `clock` must outlive the queue. Throws std::invalid_argument for invalid
    // options, an empty handler, or a non-string Message without an encoder.
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    RetryQueue(Handler handler, DeadLetterStore& store, RetryOptions retry = {},
               std::size_t workers = 0)
        : RetryQueue(std::move(handler), store, std::move(retry), with_workers(workers)) {}

    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    RetryQueue(Handler handler, DeadLetterStore& store, RetryOptions retry,
               RetryQueueOptions options, Clock& clock = default_clock(), Encoder encode = {})
        : RetryQueue(std::move(handler), store, nullptr, std::move(retry), std::move(options),
                     clock, std::move(encode), {}) {}

    // Durable: `queue_store` holds the messages (see above); it, `store` and `clock` must
    // outlive the queue, and no other queue may use `queue_store` at the same time (a later
    // one, after this one has stopped, picks up what it left). Store times are the clock's
    // wall_now(). A Message that is not a string needs an encoder and a decoder.
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    RetryQueue(Handler handler, DeadLetterStore& store, QueueStore& queue_store,
               RetryOptions retry = {}, std::size_t workers = 0)
        : RetryQueue(std::move(handler), store, &queue_store, std::move(retry),
                     with_workers(workers), default_clock(), {}, {}) {}

    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    RetryQueue(Handler handler, DeadLetterStore& store, QueueStore& queue_store, RetryOptions retry,
               RetryQueueOptions options, Clock& clock = default_clock(), Encoder encode = {},
               Decoder decode = {})
        : RetryQueue(std::move(handler), store, &queue_store, std::move(retry), std::move(options),
                     clock, std::move(encode), std::move(decode)) {}

private:
    RetryQueue(Handler handler, DeadLetterStore& store, QueueStore* queue_store, RetryOptions retry,
               RetryQueueOptions options, Clock& clock, Encoder encode, Decoder decode)
        : handler_(std::move(handler)),
          store_(store),
          queue_store_(queue_store),
          retry_(std::move(retry)),
          options_(std::move(options)),
          clock_(clock),
          encode_(std::move(encode)),
          decode_(std::move(decode)),
          seed_(detail::fresh_seed()) {
        retry_.validate();
        options_.validate();
        if (retry_.budget) {
            detail::throw_invalid_argument(
                "bulwark::RetryQueue: RetryOptions.budget is not supported (a queue's retries do "
                "not run in the caller's path); leave it empty");
        }
        if (!retry_.retry_listeners.empty()) {
            detail::throw_invalid_argument(
                "bulwark::RetryQueue: RetryOptions.on_retry listeners are not supported; read "
                "stats() instead");
        }
        if (!handler_) {
            detail::throw_invalid_argument("bulwark::RetryQueue: empty handler");
        }
        if (!encode_) {
            if constexpr (std::is_convertible<const Message&, std::string_view>::value) {
                encode_ = [](const Message& m) {
                    return std::string(std::string_view(m));
                };
            } else {
                detail::throw_invalid_argument(
                    "bulwark::RetryQueue: a Message that is not a string needs an encoder for its "
                    "dead-letter payload");
            }
        }
        if (queue_store_ != nullptr && !decode_) {
            if constexpr (std::is_constructible<Message, const std::string&>::value) {
                decode_ = [](const std::string& bytes) {
                    return Message(bytes);
                };
            } else {
                detail::throw_invalid_argument(
                    "bulwark::RetryQueue: a Message that is not a string needs a decoder to be "
                    "read back from its queue store");
            }
        }
        workers_.reserve(options_.workers);
        try {
            for (std::size_t i = 0; i < options_.workers; ++i) {
                if (queue_store_ != nullptr) {
                    workers_.emplace_back([this] { work_durable(); });
                } else {
                    workers_.emplace_back([this] { work(); });
                }
            }
        } catch (...) {
            shut_down_workers();
            throw;
        }
    }

public:
    RetryQueue(const RetryQueue&) = delete;
    RetryQueue& operator=(const RetryQueue&) = delete;

    // Stops the workers after their current attempt. Messages still queued are dropped with the
    // queue (call stop() first to get them back); in durable mode they stay in the store.
    ~RetryQueue() { shut_down_workers(); }

    // Queues `message` for an attempt now; returns its id. Throws QueueFullError when the queue
    // holds max_size messages, QueueStoppedError after stop().
    std::string enqueue(Message message) { return enqueue_at(std::move(message), clock_.now()); }

    // Queues `message` for its first attempt at `when` (on the queue's clock). In durable mode it
    // returns once the store holds the message; max_size is then checked against the store's
    // size (enqueues racing each other may pass it by a few; the store's own bound is exact),
    // and the store's QueueFullError is counted in rejected_full and rethrown as the queue's.
    std::string enqueue_at(Message message, TimePoint when) {
        if (queue_store_ != nullptr) {
            return enqueue_durable(message, when);
        }
        detail::LockGuard lock(mutex_);
        if (stopped_) {
            throw QueueStoppedError("bulwark::RetryQueue '" + options_.name +
                                    "': enqueue() after stop()");
        }
        if (entries_.size() >= options_.max_size) {
            ++stats_.rejected_full;
            throw QueueFullError(std::make_shared<const std::string>(options_.name),
                                 "retry queue '" + options_.name + "' is full (max_size " +
                                     std::to_string(options_.max_size) + ")");
        }
        const std::uint64_t seq = next_seq_++;
        Entry entry{detail::format_dead_letter_id(detail::SplitMix64::at(seed_, seq)),
                    std::move(message)};
        entry.first_try = when;
        entry.next_at = when;
        entry.enqueued = clock_.wall_now();
        std::string id = entry.id;
        const auto it = entries_.emplace(seq, std::move(entry)).first;
        try {
            due_.emplace(when, seq);
        } catch (...) {
            entries_.erase(it);
            throw;
        }
        ++stats_.enqueued;
        wake_.notify_one();
        return id;
    }

    // Handles the messages due when it is called (a retry that falls due meanwhile waits for the
    // next call); returns how many turns it took. With workers running, they may take some first.
    std::size_t run_due() {
        if (queue_store_ != nullptr) {
            return run_due_durable();
        }
        // The messages due at the call, by their place on the schedule: a retry rescheduled for
        // the same instant (a zero backoff on a clock that has not moved) has a new place and
        // waits for the next call, so it can neither repeat here nor crowd out another message.
        std::vector<std::pair<TimePoint, std::uint64_t>> due;
        {
            detail::LockGuard lock(mutex_);
            const TimePoint now = clock_.now();
            for (auto it = due_.begin(); it != due_.end() && it->first <= now; ++it) {
                due.push_back(*it);
            }
        }
        std::size_t done = 0;
        for (const auto& slot : due) {
            {
                detail::LockGuard lock(mutex_);
                const auto it = due_.find(slot);
                if (!claiming_ || it == due_.end()) {
                    continue;  // a worker took it (and it may be waiting again, elsewhere)
                }
                due_.erase(it);
                ++in_flight_;
            }
            handle(slot.second);
            ++done;
        }
        return done;
    }

    // Messages held now (waiting or being handled); in durable mode the store's size (parked
    // messages and those a dead process still leases included).
    std::size_t size() const {
        if (queue_store_ != nullptr) {
            return queue_store_->size();
        }
        detail::LockGuard lock(mutex_);
        return entries_.size();
    }

    // When the earliest waiting message falls due; nullopt when none is waiting. In durable mode
    // the store's next_ready() on the queue's clock (a lease's end counts: its message is
    // claimable again then).
    std::optional<TimePoint> next_due() const {
        if (queue_store_ != nullptr) {
            const std::optional<WallTime> next = queue_store_->next_ready();
            if (!next || *next == WallTime::max()) {
                return std::nullopt;  // empty, or only parked messages
            }
            return to_steady(*next);
        }
        detail::LockGuard lock(mutex_);
        if (due_.empty()) {
            return std::nullopt;
        }
        return due_.begin()->first;
    }

    RetryQueueStats stats() const {
        const std::size_t stored = queue_store_ != nullptr ? queue_store_->size() : 0;
        detail::LockGuard lock(mutex_);
        RetryQueueStats s = stats_;
        s.queued = queue_store_ != nullptr ? stored : entries_.size();
        s.in_flight = in_flight_;
        return s;
    }

    // Refuses further enqueue()s and, with StopMode::drain, goes on handling what falls due
    // (on the workers, or here when there are none) until nothing is left or `timeout` on the
    // queue's clock has passed; then waits for the attempts in flight and stops the workers.
    // Returns the messages neither delivered nor dead-lettered, in the order of their next
    // attempt: nothing is dropped. Call it once; later calls return nothing.
    // In durable mode it returns nothing: what is left stays in the store, where a queue made
    // on it later picks it up.
    std::vector<Message> stop(StopMode mode = StopMode::drain,
                              Duration timeout = std::chrono::seconds(30)) {
        const TimePoint deadline = detail::saturating_add(clock_.now(), timeout);
        {
            detail::UniqueLock lock(mutex_);
            if (stopped_) {
                // Another stop() runs or ran: return once it has, so that the caller may destroy
                // the queue.
                idle_.wait(lock.native(), [this]() BULWARK_NO_THREAD_SAFETY_ANALYSIS {
                    return stop_done_;  // (mutex_ is held while the predicate runs)
                });
                return {};
            }
            stopped_ = true;
            claiming_ = mode == StopMode::drain;
        }
        if (mode == StopMode::drain) {
            drain_until(deadline);
        }
        {
            // Together: a worker that may no longer claim has nothing left to wait for.
            detail::LockGuard lock(mutex_);
            claiming_ = false;  // run_due() calls from other threads too
            quit_ = true;
            wake_.notify_all();
        }
        shut_down_workers();
        detail::UniqueLock lock(mutex_);
        // The attempts in flight (a caller's run_due()) end first: their messages are theirs.
        idle_.wait(lock.native(), [this]() BULWARK_NO_THREAD_SAFETY_ANALYSIS {
            return in_flight_ == 0 && busy_ == 0;  // (mutex_ is held while the predicate runs)
        });
        if (queue_store_ != nullptr) {
            stop_done_ = true;
            idle_.notify_all();
            return {};
        }
        // Every message held (one whose rescheduling ran out of memory is not on the schedule).
        std::vector<std::pair<TimePoint, std::uint64_t>> order;
        order.reserve(entries_.size());
        for (const auto& held : entries_) {
            order.emplace_back(held.second.next_at, held.first);
        }
        std::sort(order.begin(), order.end());
        std::vector<Message> left;
        left.reserve(order.size());
        for (const auto& slot : order) {
            left.push_back(std::move(entries_.at(slot.second).message));
        }
        stats_.returned += left.size();
        due_.clear();
        entries_.clear();
        stop_done_ = true;
        idle_.notify_all();
        return left;
    }

private:
    struct Entry {
        Entry(std::string i, Message m) : id(std::move(i)), message(std::move(m)) {}

        std::string id;
        Message message;
        std::uint32_t attempts = 0;  // handler calls so far
        TimePoint first_try{};       // max_elapsed counts from it
        TimePoint next_at{};
        WallTime enqueued{};
        Duration previous{0};    // the last backoff (decorrelated jitter)
        Duration store_wait{0};  // the last wait after the dead-letter store refused
        std::vector<DeadLetterAttempt> history;
        // Set once the message is to be dead-lettered: later turns only retry the store.
        bool dead = false;
        DeadLetterReason reason = DeadLetterReason::retries_exhausted;
        std::string error;
    };

    static RetryQueueOptions with_workers(std::size_t workers) {
        RetryQueueOptions o;
        o.workers = workers;
        return o;
    }

    // Takes the earliest message due at `now` off the schedule, marking it in flight.
    bool claim_due(TimePoint now, std::uint64_t& seq) BULWARK_REQUIRES(mutex_) {
        if (!claiming_ || due_.empty() || due_.begin()->first > now) {
            return false;
        }
        seq = due_.begin()->second;
        due_.erase(due_.begin());
        ++in_flight_;
        return true;
    }

    // One turn of the message `seq`, claimed: a handler call (or, for one already bound for the
    // dead-letter store, another add), then its fate, under the lock.
    void handle(std::uint64_t seq) {
        Entry* entry = nullptr;
        {
            detail::LockGuard lock(mutex_);
            entry = &entries_.at(seq);  // stable: only its claimer erases or moves it
        }
        try {
            static_cast<void>(turn(*entry, seq));
        } catch (...) {
            // Out of memory in the bookkeeping (finish() cannot throw, so the message is still
            // held): it stays held — stop() returns it — and is tried again if the schedule can
            // take it.
            detail::LockGuard lock(mutex_);
            release(*entry, seq);
            throw;
        }
    }

    // How a turn ended.
    enum class Fate : std::uint8_t {
        delivered,
        retry,          // next_at set
        dead_lettered,  // in the dead-letter store
        store_refused,  // the dead-letter store refused for now: again at next_at
        parked,         // the dead-letter store can never take it
    };

    // A turn of `claimed`: the handler (unless it is bound for the dead-letter store), the
    // classification, the stats. In memory, also its bookkeeping under the lock; a durable
    // caller does its store steps from the Fate. `seq` is its jitter stream (and, in memory, its
    // key).
    Fate turn(Entry& claimed, std::uint64_t seq) {
        Entry* const entry = &claimed;
        if (!entry->dead) {
            const TimePoint started = clock_.now();
            std::exception_ptr error;
            try {
                handler_(entry->message);
            } catch (...) {
                error = std::current_exception();
            }
            // The classifiers are user code too: run without the lock (one may read the queue).
            Verdict verdict;
            if (error) {
                verdict = classify(error);
            }
            detail::LockGuard lock(mutex_);
            ++stats_.attempts;
            if (entry->attempts++ == 0) {
                entry->first_try = started;  // max_elapsed counts from the first attempt
            }
            if (!error) {
                if (const auto* adaptive =
                        std::get_if<std::shared_ptr<AdaptiveBackoff>>(&retry_.backoff)) {
                    (*adaptive)->record_success();
                }
                ++stats_.delivered;
                if (queue_store_ == nullptr) {
                    finish(seq);
                }
                return Fate::delivered;
            }
            if (schedule_retry(*entry, seq, error, verdict)) {
                if (queue_store_ == nullptr) {
                    reschedule(*entry, seq);
                }
                return Fate::retry;
            }
        }
        return dead_letter(*entry, seq);
    }

    // After a failed attempt: records it and schedules the next one, or marks the message for
    // the dead-letter store (returns false).
    // What the classifiers say of a failure.
    struct Verdict {
        DeliveryFailure failure;
        bool retry_failure = true;     // RetryOptions::classifier counts it as a failure
        std::string classifier_error;  // the classification threw: why
    };

    Verdict classify(const std::exception_ptr& error) const {
        Verdict v;
        try {
            // User predicates: one that throws decides for itself (not retried), never leaves
            // the message undecided.
            v.failure = options_.classifier.classify(error);
            v.retry_failure = retry_.classifier.is_failure(error);
        } catch (...) {
            v.classifier_error = " (its classification threw: " +
                                 detail::describe_exception(std::current_exception()) + ")";
            v.failure.kind = DeliveryErrorKind::permanent;
        }
        return v;
    }

    bool schedule_retry(Entry& entry, std::uint64_t seq, const std::exception_ptr& error,
                        const Verdict& verdict) BULWARK_REQUIRES(mutex_) {
        const TimePoint now = clock_.now();
        const DeliveryFailure& failure = verdict.failure;
        const bool retry_failure = verdict.retry_failure;
        const std::string& classifier_error = verdict.classifier_error;
        entry.error = detail::clip_text(detail::describe_exception(error), max_error_bytes);
        if (!failure.code.empty()) {
            entry.error += " (code " + detail::clip_text(failure.code, 64) + ")";
        }
        entry.error += classifier_error;
        DeadLetterAttempt attempt;
        attempt.at = clock_.wall_now();
        attempt.channel = options_.name;
        attempt.error = detail::clip_text(entry.error, max_attempt_error_bytes);
        // Bounded: the store keeps at most its max_attempts newest anyway.
        const std::size_t keep = std::max<std::size_t>(store_.limits().max_attempts, 1);
        if (entry.history.size() >= keep) {
            entry.history.erase(entry.history.begin(),
                                entry.history.begin() +
                                    static_cast<std::ptrdiff_t>(entry.history.size() - keep + 1));
        }
        entry.history.push_back(std::move(attempt));
        if (failure.kind == DeliveryErrorKind::bounced) {
            return mark_dead(entry, DeadLetterReason::rejected);
        }
        if (!retryable(failure.kind) || !retry_failure) {
            return mark_dead(entry, DeadLetterReason::not_retryable);
        }
        // attempts counts the first call: retry n follows attempt n.
        if (entry.attempts > static_cast<std::uint32_t>(retry_.max_retries)) {
            return mark_dead(entry, DeadLetterReason::retries_exhausted);
        }
        Duration wait = backoff(entry, seq);
        wait = std::max({wait, detail::rejection_wait(error, now), failure.retry_after});
        if (retry_.max_elapsed > Duration::zero() &&
            detail::saturating_add(now - entry.first_try, wait) > retry_.max_elapsed) {
            return mark_dead(entry, DeadLetterReason::retries_exhausted);
        }
        entry.previous = wait;
        entry.next_at = detail::saturating_add(now, wait);
        ++stats_.retries;
        return true;
    }

    static bool mark_dead(Entry& entry, DeadLetterReason reason) noexcept {
        entry.dead = true;
        entry.reason = reason;
        return false;
    }

    Duration backoff(const Entry& entry, std::uint64_t seq) const {
        if (const auto* adaptive = std::get_if<std::shared_ptr<AdaptiveBackoff>>(&retry_.backoff)) {
            (*adaptive)->record_failure();
            return (*adaptive)->current_delay();
        }
        // Each message on a jitter stream of its own, so that retries of messages that failed
        // together spread out.
        return std::get<Backoff>(retry_.backoff).stream(seq).delay(entry.attempts, entry.previous);
    }

    // The error text kept per message and per attempt: a store bounds a record's text, and a
    // message failing for days must not grow without bound.
    static constexpr std::size_t max_error_bytes = 1024;
    static constexpr std::size_t max_attempt_error_bytes = 256;

    // Hands the message, bound for the store, to it with the lock released (a durable store
    // syncs). If the store refuses, the message stays here and is tried again after the backoff.
    Fate dead_letter(Entry& entry, std::uint64_t seq) {
        DeadLetter letter;
        {
            detail::LockGuard lock(mutex_);
            letter.id = entry.id;  // a retried add of the same message is a no-op
            letter.type = options_.type;
            letter.error = entry.error;
            letter.reason = entry.reason;
            letter.attempts = entry.history;
            letter.created = clock_.wall_now();
        }
        std::exception_ptr failed;
        bool permanent = false;
        try {
            letter.payload = encode_(entry.message);
            detail::fit_letter(letter, store_.limits());
            store_.add(std::move(letter));
        } catch (const DeadLetterTooLargeError&) {
            failed = std::current_exception();
            permanent = true;  // the same letter would be refused again
        } catch (const std::invalid_argument&) {
            failed = std::current_exception();
            permanent = true;
        } catch (...) {
            failed = std::current_exception();
        }
        detail::LockGuard lock(mutex_);
        if (!failed) {
            ++stats_.dead_lettered;
            if (queue_store_ == nullptr) {
                finish(seq);
            }
            return Fate::dead_lettered;
        }
        ++stats_.dead_letter_failures;
        if (permanent) {
            // Held, off the schedule: stop() hands it back (durable: it stays in the store).
            // Retrying could not help.
            ++stats_.parked;
            if (queue_store_ == nullptr) {
                --in_flight_;
                idle_.notify_all();
            }
            return Fate::parked;
        }
        // A store that refuses for now (full, poisoned, an I/O error): again later, waiting
        // longer each time, up to 5 minutes (not the retry backoff: this is the store's state,
        // not the message's).
        const Duration wait =
            std::min<Duration>(std::max<Duration>(2 * entry.store_wait, std::chrono::seconds(1)),
                               std::chrono::minutes(5));
        entry.store_wait = wait;
        entry.next_at = detail::saturating_add(clock_.now(), wait);
        if (queue_store_ == nullptr) {
            reschedule(entry, seq);
        }
        return Fate::store_refused;
    }

    // A claimed message whose turn failed: no longer in flight, back on the schedule if it fits.
    void release(Entry& entry, std::uint64_t seq) noexcept BULWARK_REQUIRES(mutex_) {
        --in_flight_;
        try {
            entry.next_at = detail::saturating_add(
                clock_.now(), std::max<Duration>(entry.previous, std::chrono::seconds(1)));
            due_.emplace(entry.next_at, seq);
        } catch (...) {  // NOLINT(bugprone-empty-catch): held all the same; stop() returns it
        }
        wake_.notify_one();
        idle_.notify_all();
    }

    void reschedule(const Entry& entry, std::uint64_t seq) BULWARK_REQUIRES(mutex_) {
        due_.emplace(entry.next_at, seq);
        --in_flight_;
        wake_.notify_one();
        idle_.notify_all();
    }

    void finish(std::uint64_t seq) BULWARK_REQUIRES(mutex_) {
        entries_.erase(seq);
        --in_flight_;
        idle_.notify_all();
    }

    // A worker: handles what is due, waits for the next due time (or an enqueue) otherwise.
    void work() {
        for (;;) {
            std::uint64_t seq = 0;
            {
                detail::UniqueLock lock(mutex_);
                for (;;) {
                    if (quit_) {
                        return;
                    }
                    const TimePoint now = clock_.now();
                    if (claim_due(now, seq)) {
                        break;
                    }
                    if (!claiming_) {
                        wake_.wait(lock.native());  // until quit_: stop() is handing back the rest
                        continue;
                    }
                    const TimePoint next = due_.empty() ? TimePoint::max() : due_.begin()->first;
                    clock_.wait_until(wake_, lock.native(), next);
                }
            }
            try {
                handle(seq);
            } catch (...) {  // NOLINT(bugprone-empty-catch): out of memory; the message is held
            }
        }
    }

    // Durable mode. Invariants: the queue holds no message itself, only the store does; a claimed
    // message is the claiming thread's until its complete() or release() (or its lease runs
    // out); busy_ counts the threads between deciding to claim and the end of the turn, so that
    // stop() and the drain can wait for them.

    // The wall time of `t` on the queue's clock, and back: store times outlive the process.
    WallTime to_wall(TimePoint t) const noexcept {
        const Duration ahead =
            detail::saturating_sub(t.time_since_epoch(), clock_.now().time_since_epoch());
        return WallTime{detail::saturating_add(clock_.wall_now().time_since_epoch(), ahead)};
    }

    TimePoint to_steady(WallTime w) const noexcept {
        const Duration ahead =
            detail::saturating_sub(w.time_since_epoch(), clock_.wall_now().time_since_epoch());
        return detail::saturating_add(clock_.now(), ahead);
    }

    std::string enqueue_durable(const Message& message, TimePoint when) {
        std::uint64_t seq = 0;
        {
            detail::LockGuard lock(mutex_);
            if (stopped_) {
                throw QueueStoppedError("bulwark::RetryQueue '" + options_.name +
                                        "': enqueue() after stop()");
            }
            seq = next_seq_++;
        }
        if (queue_store_->size() >= options_.max_size) {
            full("retry queue '" + options_.name + "' is full (max_size " +
                 std::to_string(options_.max_size) + ")");
        }
        // The id's bits are drawn from the queue's random seed, so a later process on the same
        // store does not reuse an id (nor a jitter stream).
        const std::uint64_t bits = detail::SplitMix64::at(seed_, seq);
        detail::RetryQueueState state;
        state.stream = bits;
        QueuedMessage queued;
        queued.id = detail::format_dead_letter_id(bits);
        queued.payload = detail::encode_retry_queue_state(state, encode_(message));
        queued.due = to_wall(when);
        queued.enqueued = clock_.wall_now();
        try {
            queue_store_->push(queued);
        } catch (const QueueFullError& e) {
            full(e.what());
        }
        detail::LockGuard lock(mutex_);
        ++stats_.enqueued;
        ++changes_;
        wake_.notify_one();
        return std::move(queued.id);
    }

    [[noreturn]] BULWARK_NOINLINE void full(const std::string& why) {
        {
            detail::LockGuard lock(mutex_);
            ++stats_.rejected_full;
        }
        throw QueueFullError(std::make_shared<const std::string>(options_.name), why);
    }

    // Claims one message ready now, or none (then busy_ is already released). Claiming one at
    // a time keeps every lease fresh: nothing waits leased behind a slow attempt.
    std::optional<QueuedMessage> claim_one() {
        {
            detail::LockGuard lock(mutex_);
            if (!claiming_) {
                return std::nullopt;
            }
            ++busy_;
        }
        std::vector<QueuedMessage> batch;
        try {
            batch = queue_store_->claim(clock_.wall_now(), 1, options_.lease);
        } catch (...) {
            detail::LockGuard lock(mutex_);
            ++stats_.store_failures;
            not_busy();
            throw;
        }
        if (batch.empty()) {
            detail::LockGuard lock(mutex_);
            not_busy();
            return std::nullopt;
        }
        return std::move(batch.front());
    }

    void not_busy() BULWARK_REQUIRES(mutex_) {
        --busy_;
        ++changes_;
        wake_.notify_one();
        idle_.notify_all();
    }

    // As run_due(): the messages ready when it is called. One that became due after the call,
    // or that this call already handled (a zero-backoff retry), goes back unchanged and ends it.
    std::size_t run_due_durable() {
        const WallTime call = clock_.wall_now();
        std::unordered_set<std::string> seen;
        std::size_t done = 0;
        for (;;) {
            std::optional<QueuedMessage> claimed = claim_one();
            if (!claimed) {
                return done;
            }
            if (claimed->due > call || !seen.insert(claimed->id).second) {
                give_back(*claimed);
                return done;
            }
            handle_durable(std::move(*claimed));
            ++done;
        }
    }

    // Ends a lease without a turn: the message is as it was, ready at its due time.
    void give_back(const QueuedMessage& claimed) noexcept {
        bool failed = false;
        try {
            static_cast<void>(queue_store_->release(claimed));
        } catch (...) {
            failed = true;  // its lease runs out instead
        }
        detail::LockGuard lock(mutex_);
        stats_.store_failures += failed ? 1 : 0;
        not_busy();
    }

    // One turn of a claimed message (busy_ counted by the claimer, released here), then its store
    // step: the dead-letter add before complete(), so a crash between them leaves the message
    // in the store (handled again: the add is repeated, a no-op while the dead-letter store holds
    // the id), never lost.
    void handle_durable(QueuedMessage claimed) {
        struct Done {
            RetryQueue* self;
            ~Done() {
                detail::LockGuard lock(self->mutex_);
                self->not_busy();
            }
        } done{this};
        detail::RetryQueueState state;
        std::string bytes;
        if (const char* why = detail::decode_retry_queue_state(claimed.payload, state, bytes)) {
            corrupt(claimed, claimed.payload, why);
            return;
        }
        std::optional<Message> message;
        try {
            message.emplace(decode_(bytes));
        } catch (...) {
            corrupt(claimed, bytes,
                    "the decoder threw: " + detail::describe_exception(std::current_exception()));
            return;
        }
        Entry entry(claimed.id, std::move(*message));
        entry.attempts = state.attempts;
        entry.first_try = state.attempts == 0 ? clock_.now() : to_steady(state.first_try);
        entry.previous = state.previous;
        entry.store_wait = state.store_wait;
        entry.history = std::move(state.history);
        entry.dead = state.dead || state.parked;  // a parked one tries the add once more
        entry.reason = state.reason;
        entry.error = std::move(state.error);
        {
            detail::LockGuard lock(mutex_);
            ++in_flight_;
        }
        Fate fate = Fate::retry;
        try {
            fate = turn(entry, state.stream);
        } catch (...) {
            // Out of memory in the bookkeeping: the lease is not ended, so the message comes
            // back when it runs out.
            detail::LockGuard lock(mutex_);
            --in_flight_;
            throw;
        }
        {
            detail::LockGuard lock(mutex_);
            --in_flight_;
        }
        bool current = true;
        try {
            if (fate == Fate::delivered || fate == Fate::dead_lettered) {
                current = queue_store_->complete(claimed.id, claimed.lease);
            } else {
                state.attempts = entry.attempts;
                state.first_try = to_wall(entry.first_try);
                state.previous = entry.previous;
                state.store_wait = entry.store_wait;
                state.dead = entry.dead;
                state.parked = fate == Fate::parked;
                state.reason = entry.reason;
                state.error = std::move(entry.error);
                state.history = std::move(entry.history);
                claimed.payload = detail::encode_retry_queue_state(state, bytes);
                // Parked: off the schedule (claim() never reaches the end of time); it stays
                // in the store for an operator (list(), remove()).
                claimed.due = state.parked ? WallTime::max() : to_wall(entry.next_at);
                claimed.attempts = entry.attempts;
                current = queue_store_->release(claimed);
            }
        } catch (...) {
            detail::LockGuard lock(mutex_);
            ++stats_.store_failures;
            return;
        }
        if (!current) {
            detail::LockGuard lock(mutex_);
            ++stats_.lost_leases;
        }
    }

    // A payload this queue cannot read: dead-lettered as it is (the message's own bytes when
    // only the decoder failed), so that nothing is skipped silently. If the dead-letter store
    // refuses, it goes back to the queue store: in a minute, or parked for good.
    void corrupt(QueuedMessage& claimed, const std::string& payload, const std::string& why) {
        DeadLetter letter;
        letter.id = claimed.id;
        letter.type = options_.type;
        letter.payload = payload;
        letter.error = detail::clip_text("corrupt queue payload: " + why, max_error_bytes);
        letter.reason = DeadLetterReason::not_retryable;
        letter.created = clock_.wall_now();
        {
            detail::LockGuard lock(mutex_);
            ++stats_.corrupt;
        }
        bool permanent = false;
        bool added = false;
        try {
            store_.add(std::move(letter));
            added = true;
        } catch (const DeadLetterTooLargeError&) {
            permanent = true;
        } catch (const std::invalid_argument&) {
            permanent = true;
        } catch (...) {  // NOLINT(bugprone-empty-catch): it goes back to the store, below
        }
        bool current = true;
        try {
            if (added) {
                current = queue_store_->complete(claimed.id, claimed.lease);
            } else {
                claimed.due =
                    permanent
                        ? WallTime::max()
                        : to_wall(detail::saturating_add(clock_.now(), std::chrono::minutes(1)));
                current = queue_store_->release(claimed);
            }
        } catch (...) {
            detail::LockGuard lock(mutex_);
            ++stats_.store_failures;
            return;
        }
        detail::LockGuard lock(mutex_);
        stats_.dead_lettered += added ? 1 : 0;
        stats_.dead_letter_failures += added ? 0 : 1;
        stats_.parked += permanent ? 1 : 0;
        stats_.lost_leases += current ? 0 : 1;
    }

    // A durable worker: claims what is ready, waits for the store's next ready time (or an
    // enqueue, a release) otherwise.
    void work_durable() {
        for (;;) {
            std::uint64_t seen = 0;
            {
                detail::UniqueLock lock(mutex_);
                for (;;) {
                    if (quit_) {
                        return;
                    }
                    if (claiming_) {
                        break;
                    }
                    wake_.wait(lock.native());  // until quit_: stop() is ending
                }
                seen = changes_;
            }
            std::optional<WallTime> next;
            try {
                std::optional<QueuedMessage> claimed = claim_one();
                if (claimed) {
                    handle_durable(std::move(*claimed));
                    continue;
                }
                try {
                    next = queue_store_->next_ready();
                } catch (...) {
                    detail::LockGuard lock(mutex_);
                    ++stats_.store_failures;
                    throw;
                }
            } catch (...) {
                // A store that fails (counted where it failed), or out of memory: the message, if
                // any, stays in the store. Wait a second before asking it again.
                detail::UniqueLock lock(mutex_);
                if (!quit_) {
                    clock_.wait_until(
                        wake_, lock.native(),
                        detail::saturating_add(clock_.now(), std::chrono::seconds(1)));
                }
                continue;
            }
            detail::UniqueLock lock(mutex_);
            if (quit_ || changes_ != seen) {
                continue;  // something changed since the claim: look again
            }
            const TimePoint until =
                !next || *next == WallTime::max() ? TimePoint::max() : to_steady(*next);
            clock_.wait_until(wake_, lock.native(), until);
        }
    }

    // drain: handles what falls due until nothing is held or the deadline passes.
    void drain_until(TimePoint deadline) {
        for (;;) {
            if (workers_.empty()) {
                run_due();
            }
            std::uint64_t seen = 0;
            {
                detail::LockGuard lock(mutex_);
                seen = changes_;
            }
            // Durable: what the store holds next, read without the lock (the store has its own);
            // changes_ tells whether a turn ended meanwhile. The end of time: nothing, or only
            // parked messages.
            WallTime ready = WallTime::max();
            if (queue_store_ != nullptr) {
                ready = queue_store_->next_ready().value_or(WallTime::max());
            }
            detail::UniqueLock lock(mutex_);
            // Done when nothing is scheduled or in flight (parked messages wait for stop()).
            const bool scheduled =
                queue_store_ != nullptr ? ready != WallTime::max() : !due_.empty();
            if ((!scheduled && in_flight_ == 0 && busy_ == 0) || clock_.now() >= deadline) {
                break;
            }
            if (changes_ != seen) {
                continue;
            }
            if (!workers_.empty()) {
                // The workers notify idle_ at the end of every turn.
                clock_.wait_until(idle_, lock.native(), deadline);
                continue;
            }
            TimePoint next = deadline;
            if (queue_store_ != nullptr) {
                next = std::min(deadline, to_steady(ready));
            } else if (!due_.empty()) {
                next = std::min(deadline, due_.begin()->first);
            }
            if (next > clock_.now()) {
                clock_.wait_until(idle_, lock.native(), next);
            }
        }
    }

    void shut_down_workers() noexcept {
        {
            detail::LockGuard lock(mutex_);
            quit_ = true;
            wake_.notify_all();
        }
        for (std::thread& w : workers_) {
            if (w.joinable()) {
                w.join();
            }
        }
        workers_.clear();
    }

    const Handler handler_;
    DeadLetterStore& store_;
    QueueStore* const queue_store_;  // durable mode when set
    RetryOptions retry_;
    const RetryQueueOptions options_;
    Clock& clock_;
    Encoder encode_;
    Decoder decode_;
    const std::uint64_t seed_;

    mutable detail::Mutex mutex_;
    std::condition_variable wake_;  // a message was queued or rescheduled; or quit
    std::condition_variable idle_;  // a message left, or an attempt ended
    // Every message held, by sequence; an entry is erased or moved only by the thread that
    // claimed it, so a claimer may use its entry without the lock while it is in flight.
    std::map<std::uint64_t, Entry> entries_ BULWARK_GUARDED_BY(mutex_);
    // The schedule: (next attempt, sequence) of every message waiting (not in flight).
    std::set<std::pair<TimePoint, std::uint64_t>> due_ BULWARK_GUARDED_BY(mutex_);
    std::uint64_t next_seq_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::size_t in_flight_ BULWARK_GUARDED_BY(mutex_) = 0;
    // Durable mode: threads claiming or in a turn (see above).
    std::size_t busy_ BULWARK_GUARDED_BY(mutex_) = 0;
    // Bumped whenever the store may hold something newly ready (an enqueue, the end of a turn),
    // so that a thread about to wait knows whether what it read is stale.
    std::uint64_t changes_ BULWARK_GUARDED_BY(mutex_) = 0;
    bool stopped_ BULWARK_GUARDED_BY(mutex_) = false;
    bool claiming_ BULWARK_GUARDED_BY(mutex_) = true;  // false once stop() keeps what is left
    bool quit_ BULWARK_GUARDED_BY(mutex_) = false;
    bool stop_done_ BULWARK_GUARDED_BY(mutex_) = false;
    RetryQueueStats stats_ BULWARK_GUARDED_BY(mutex_);
    std::vector<std::thread> workers_;
};

}  // namespace bulwark

#endif  // BULWARK_RETRY_QUEUE_HPP
// #include <bulwark/time.hpp> (already included above)

namespace bulwark {

namespace detail {

template <class T, class M, class = void>
struct has_send : std::false_type {};
template <class T, class M>
struct has_send<T, M, std::void_t<decltype(std::declval<T&>().send(std::declval<const M&>()))>>
    : std::true_type {};

template <class T, class M, class = void>
struct has_send_with_context : std::false_type {};
template <class T, class M>
struct has_send_with_context<T, M,
                             std::void_t<decltype(std::declval<T&>().send(
                                 std::declval<const M&>(), std::declval<Context&>()))>>
    : std::true_type {};

}  // namespace detail

// What a channel adapter returns for a message it accepted.
struct Receipt {
    std::string provider;     // who took it (a channel may front several providers)
    std::string external_id;  // the provider's id for it: confirm() finds the message by it
    double cost = 0.0;        // what the send cost; 0 = the channel's ChannelOptions::cost
    bool delivered = false;   // already delivered (no delivery receipt will follow)
};

// One channel considered for a message: an adapter call, or a channel passed over.
struct DeliveryAttempt {
    std::uint32_t number = 0;  // 1-based over the message's attempts (since submit or redrive)
    std::uint32_t pass = 0;    // the queue pass: 1 for the first, + 1 per retry
    std::string channel;
    std::string provider;       // from the receipt (empty unless it delivered)
    WallTime at{};              // when it started
    Duration response_time{0};  // the adapter call's duration; 0 when not called
    bool ok = false;            // the channel accepted the message
    // Not called, and why (breaker open, rate limited, cost, quality); none when called.
    FallbackReason skipped = FallbackReason::none;
    // Why the channel before it in the same pass did not deliver; none for a pass's first.
    FallbackReason fallback_reason = FallbackReason::none;
    DeliveryErrorKind kind = DeliveryErrorKind::unknown;  // the failure's kind (when it failed)
    std::string external_id;                              // from the receipt
    std::string error;                                    // the failure, as text
    std::string code;                                     // the provider's error code
    double cost = 0.0;                                    // what it cost
};

// A message moved from one status to another. The views are valid during the listener call.
struct StatusChange {
    std::string_view id;
    MessageStatus from = MessageStatus::queued;
    MessageStatus to = MessageStatus::queued;
    WallTime at{};
    std::string_view channel;  // the channel that sent it (sent and later); empty otherwise
};

// What the engine knows of one message.
struct MessageInfo {
    std::string id;
    MessageStatus status = MessageStatus::queued;
    // When it last entered each status (indexed by MessageStatus); zero = never.
    std::array<WallTime, message_status_count> since{};
    std::vector<std::string> channels;  // as submitted (or forced by a redrive)
    std::string channel;                // the channel that sent it
    std::string external_id;            // the provider's id for it
    std::string error;                  // the last failure
    std::string dead_letter_id;         // set once dead-lettered
    std::uint32_t passes = 0;           // queue passes made
};

// A message stop() handed back (the engine's own in-memory queue only).
template <class Message>
struct PendingDelivery {
    std::string id;
    Message message;
    std::vector<std::string> channels;
    WallTime due{};
};

// A DeliveryEngine's options; validate() throws std::invalid_argument naming the field.
//   bulwark::DeliveryEngineOptions o;  o.workers = 4;  o.max_passes = 8;
struct DeliveryEngineOptions {
    // Names the engine in its errors, metrics, dead letters' tags. Not empty. Default "delivery".
    std::string name = "delivery";
    // Background workers, started by the first submit() or by start(); 0 = none: drive the
    // engine with run_due() (tests on a ManualClock do). <= 256. Default 2.
    std::size_t workers = 2;
    // Messages a worker leases per pass over the queue. In [1, 10000]. Default 50.
    std::size_t batch_size = 50;
    // The visibility timeout: a leased message whose worker has not finished it by then is
    // handed out again (a worker or a process died). Longer than the slowest attempt (all its
    // channels and their retries). > 0. Default 5 minutes.
    Duration lease = std::chrono::minutes(5);
    // Queue passes per message (each tries its route once); after the last one fails it is
    // dead-lettered. >= 1. Default 5.
    std::uint32_t max_passes = 5;
    // The wait before pass n + 1 (Backoff::delay(n, previous)); a channel's retry_after (rate
    // limited) or an open breaker's wait lengthens it. Default exponential from 1 s, at most
    // 5 minutes.
    Backoff backoff =
        Backoff::exponential(std::chrono::seconds(1)).max_delay(std::chrono::minutes(5));
    // A message first tried longer ago than this is dead-lettered rather than retried. 0 = no
    // limit. >= 0. Default 24 hours.
    Duration max_elapsed = std::chrono::hours(24);
    // The engine keeps the status and attempts of finished messages (sent and later) for
    // track_for, at most max_tracked of them (the oldest finished are forgotten first); a
    // message still queued or sending is always kept. max_tracked >= 1, track_for > 0.
    std::size_t max_tracked = 100000;
    Duration track_for = std::chrono::hours(24);
    // Attempts kept per message for attempts() (the newest). >= 1. Default 64.
    std::size_t max_attempts_kept = 64;
    // Redriven dead letters are released at most this many per second, so that a bulk redrive
    // cannot flood a provider that just recovered. > 0. Default 10.
    double redrive_rate = 10.0;
    // stats(from, to) reaches back this far, in one-minute buckets. In [1 minute, 7 days].
    // Default 1 hour.
    Duration stats_window = std::chrono::hours(1);
    // Idle workers look at the queue store at least this often (another process may share it).
    // > 0. Default 1 second.
    Duration poll_interval = std::chrono::seconds(1);
    // How the routing chain orders channels a rule does not order, and its thresholds.
    Selection selection = Selection::priority;
    ChainOptions chain;

    void validate() const {
        if (name.empty()) {
            detail::throw_invalid_option("DeliveryEngineOptions.name", "must not be empty", "\"\"");
        }
        if (workers > 256) {
            detail::throw_invalid_option("DeliveryEngineOptions.workers", "must be <= 256",
                                         std::to_string(workers));
        }
        if (batch_size < 1 || batch_size > 10000) {
            detail::throw_invalid_option("DeliveryEngineOptions.batch_size",
                                         "must be in [1, 10000]", std::to_string(batch_size));
        }
        positive(lease, "DeliveryEngineOptions.lease");
        if (max_passes < 1) {
            detail::throw_invalid_option("DeliveryEngineOptions.max_passes", "must be >= 1", "0");
        }
        if (max_elapsed < Duration::zero()) {
            detail::throw_invalid_option("DeliveryEngineOptions.max_elapsed", "must be >= 0",
                                         detail::format_duration(max_elapsed));
        }
        if (max_tracked < 1) {
            detail::throw_invalid_option("DeliveryEngineOptions.max_tracked", "must be >= 1", "0");
        }
        positive(track_for, "DeliveryEngineOptions.track_for");
        if (max_attempts_kept < 1) {
            detail::throw_invalid_option("DeliveryEngineOptions.max_attempts_kept", "must be >= 1",
                                         "0");
        }
        if (!(redrive_rate >= 1.0 / 86400.0 && redrive_rate <= 1e9)) {
            detail::throw_invalid_option("DeliveryEngineOptions.redrive_rate",
                                         "must be in [1/86400 (one a day), 1e9] per second",
                                         detail::format_number(redrive_rate));
        }
        if (stats_window < std::chrono::minutes(1) || stats_window > std::chrono::hours(24 * 7)) {
            detail::throw_invalid_option("DeliveryEngineOptions.stats_window",
                                         "must be in [1 minute, 7 days]",
                                         detail::format_duration(stats_window));
        }
        positive(poll_interval, "DeliveryEngineOptions.poll_interval");
        detail::check_enumerator(selection, Selection::least_cost,
                                 "DeliveryEngineOptions.selection", "Selection");
        chain.validate();
    }

private:
    static void positive(Duration d, const char* field) {
        if (d <= Duration::zero()) {
            detail::throw_invalid_option(field, "must be > 0", detail::format_duration(d));
        }
    }
};

// What a DeliveryEngine has done, as counters since it was made.
struct DeliveryEngineCounters {
    std::uint64_t submitted = 0;              // messages accepted by submit()/submit_at()
    std::uint64_t redriven = 0;               // dead letters put back in the queue
    std::uint64_t retries = 0;                // passes rescheduled after a failure
    std::uint64_t duplicates_suppressed = 0;  // leased again after being sent: not resent
    std::uint64_t lease_lost = 0;             // a pass finished after its lease had been taken over
    std::uint64_t dead_letter_failures = 0;   // the dead-letter store refused a letter (retried)
    std::uint64_t undecodable = 0;  // queued bytes that could not be read (dead-lettered raw)
    std::array<std::uint64_t, message_status_count> entered{};  // moves into each status
};

// Delivers messages over channels, with fallback, retries, tracking and dead-lettering.
//   bulwark::DeliveryEngine<Notification> engine(rules, dead_letters);
//   engine.add_channel("email", email_adapter);        // Receipt send(const Notification&)
//   std::string id = engine.submit(notification, {"email"});
//   engine.status(id);  engine.attempts(id);  engine.stats();
// Each message is stored in a QueueStore (the engine's own in-memory one unless given one),
// leased by a worker for a pass over its route (its primary channel and that channel's
// FallbackRule, or an explicit list of channels) through a FallbackChain with each channel's
// breaker, retry and rate limiter; a pass that fails is retried after a backoff, a message that
// cannot be delivered goes to the DeadLetterStore with its history. See docs/delivery.md.
// Thread-safe: every member may be called from any thread.
template <class Message>
class DeliveryEngine {
public:
    // Turns a message into the bytes the queue and dead-letter stores keep, and back. A string
    // Message needs neither.
    using Encoder = std::function<std::string(const Message&)>;
    using Decoder = std::function<Message(std::string_view)>;
    using Adapter = std::function<Receipt(const Message&, Context&)>;

    // The engine's own in-memory queue. `rules` may name channels added later; `dead_letters`
    // and `clock` must outlive the engine.
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    DeliveryEngine(FallbackRules rules, DeadLetterStore& dead_letters,
                   DeliveryEngineOptions options = {}, Clock& clock = default_clock())
        : DeliveryEngine(std::move(rules), dead_letters, nullptr, std::move(options), clock) {}

    // Messages are kept in `queue` (a FileQueueStore makes them survive a crash; other
    // processes may share it); it must outlive the engine.
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    DeliveryEngine(FallbackRules rules, DeadLetterStore& dead_letters, QueueStore& queue,
                   DeliveryEngineOptions options = {}, Clock& clock = default_clock())
        : DeliveryEngine(std::move(rules), dead_letters, &queue, std::move(options), clock) {}

    DeliveryEngine(const DeliveryEngine&) = delete;
    DeliveryEngine& operator=(const DeliveryEngine&) = delete;

    // Stops the workers after their current message; queued messages stay in the queue store
    // (and are lost with the engine's own in-memory one: call stop() first to get them back).
    ~DeliveryEngine() { shut_down(); }

    // Sets how messages become bytes (required before the first submit when Message is not a
    // string). Throws std::invalid_argument for an empty function.
    DeliveryEngine& codec(Encoder encode, Decoder decode) {
        if (!encode || !decode) {
            detail::throw_invalid_argument(
                "bulwark::DeliveryEngine::codec: empty encoder or decoder");
        }
        detail::LockGuard lock(config_mutex_);
        if (started_) {
            throw std::logic_error("bulwark::DeliveryEngine '" + options_.name +
                                   "': codec() after start");
        }
        encode_ = std::move(encode);
        decode_ = std::move(decode);
        plain_codec_ = false;
        return *this;
    }

    // Adds a channel. `adapter` is a callable or an object with a send member, taking the message
    // (and optionally a Context&: its operation() is the message id, an idempotency key) and
    // returning a Receipt; failures are exceptions, classified by `classifier` (DeliveryError
    // says its own kind). It is called from every worker at once. An object with a send member
    // passed as an lvalue is used by reference and must outlive the engine; a callable, or an
    // rvalue, is copied or moved in. Throws std::invalid_argument for an empty or duplicate name,
    // a name with ',', or invalid options. May be called while the engine runs.
    template <class A>
    DeliveryEngine& add_channel(std::string name, A&& adapter, ChannelOptions options = {},
                                DeliveryClassifier classifier = {}) {
        if (name.empty() || name.find(',') != std::string::npos) {
            detail::throw_invalid_option("DeliveryEngine.add_channel: name",
                                         "must be non-empty and without ','", "\"" + name + "\"");
        }
        auto slot = std::make_shared<Slot>();
        // Moved through references of known types: clang-tidy cannot see a move through the
        // dependent `slot->` and would ask for const reference parameters.
        std::string& slot_name = slot->name;
        slot_name = std::move(name);
        DeliveryClassifier& slot_classifier = slot->classifier;
        slot_classifier = std::move(classifier);
        slot->adapter = make_adapter(std::forward<A>(adapter));
        slot->options = options;
        slot->stats = std::make_unique<detail::ChannelStatsCell>(window_buckets());
        detail::LockGuard lock(config_mutex_);
        for (const auto& s : slots_) {
            if (s->name == slot->name) {
                detail::throw_invalid_option("DeliveryEngine.add_channel: name", "must be unique",
                                             "\"" + slot->name + "\" (already added)");
            }
        }
        auto next = slots_;
        next.push_back(slot);
        install(next, rules_, started_);
        slots_ = std::move(next);
        return *this;
    }

    // Replaces the fallback rules; messages being sent finish on the rules they started with.
    // Throws std::invalid_argument (and keeps the old rules) for a rule the chain refuses, or,
    // once the engine has started, one that names a channel not added.
    void set_rules(FallbackRules rules) {
        detail::LockGuard lock(config_mutex_);
        install(slots_, rules, started_);
        rules_ = std::move(rules);
    }

    // Removes the rule for `primary` (its messages then use the global order); false if none.
    bool remove_rule(std::string_view primary) {
        detail::LockGuard lock(config_mutex_);
        FallbackRules next;
        bool found = false;
        for (const auto& [p, rule] : rules_.rules()) {
            if (p == primary) {
                found = true;
            } else {
                next.set(p, rule);
            }
        }
        next.set_global(rules_.global());
        if (found) {
            install(slots_, next, started_);
            rules_ = std::move(next);
        }
        return found;
    }

    FallbackRules rules() const {
        detail::LockGuard lock(config_mutex_);
        return rules_;
    }

    // Enables or disables a channel for the messages sent from now on. Throws
    // std::invalid_argument for an unknown name.
    void set_enabled(std::string_view channel, bool enabled) {
        detail::LockGuard lock(config_mutex_);
        bool found = false;
        for (const auto& s : slots_) {
            if (s->name == channel) {
                s->options.enabled = enabled;
                found = true;
            }
        }
        if (!found) {
            unknown_channel(channel);
        }
        install(slots_, rules_, started_);
    }

    std::vector<std::string> channels() const {
        detail::LockGuard lock(config_mutex_);
        std::vector<std::string> names;
        for (const auto& s : slots_) {
            names.push_back(s->name);
        }
        return names;
    }

    // Checks the rules against the channels and starts the workers (once); the first submit()
    // calls it. Call it to resume the messages a durable queue holds without submitting.
    // Throws std::invalid_argument for a rule naming a channel not added, QueueStoppedError
    // after stop().
    void start() {
        // acquire: pairs with the release below; the codec and the routing are set by then.
        if (live_.load(std::memory_order_acquire)) {
            return;  // stop() clears it first
        }
        {
            detail::LockGuard lock(config_mutex_);
            if (!started_) {
                install(slots_, rules_, true);
                if (!encode_) {
                    default_codec();
                }
                started_ = true;
            }
        }
        detail::LockGuard lock(mutex_);
        if (stopped_) {
            throw QueueStoppedError("bulwark::DeliveryEngine '" + options_.name +
                                    "': start() after stop()");
        }
        if (running_) {
            return;
        }
        running_ = true;
        workers_.reserve(options_.workers);
        try {
            for (std::size_t i = 0; i < options_.workers; ++i) {
                workers_.emplace_back([this] { work(); });
            }
        } catch (...) {
            quit_ = true;
            wake_.notify_all();
            throw;
        }
        live_.store(true, std::memory_order_release);
    }

    // Queues `message` for delivery now over `channels`: one channel = that primary and its
    // FallbackRule (or the global order); several = exactly those, in order; none = the global
    // order (or every channel in the engine's selection order). Returns its id. Throws
    // std::invalid_argument for an unknown channel, QueueFullError when the queue store is full,
    // QueueStoppedError after stop().
    std::string submit(Message message, std::vector<std::string> channels = {}) {
        start();
        check_route(channels);
        const WallTime now = clock_.wall_now();  // one clock read: due now
        return submit_one(message, now, now, channels);
    }

    // As submit(), for its first attempt at `when` (wall time: a scheduled send outlives a
    // restart with a durable queue).
    std::string submit_at(Message message, WallTime when, std::vector<std::string> channels = {}) {
        start();
        check_route(channels);
        return submit_one(message, when, clock_.wall_now(), channels);
    }

    // As submit_at(), with `when` on the engine's clock.
    std::string submit_at(Message message, TimePoint when, std::vector<std::string> channels = {}) {
        return submit_at(std::move(message), to_wall(when), std::move(channels));
    }

    // Queues every message, in one step of the queue store (one durable write for a file
    // store): all of them or, on a throw, none that push_all() did not store.
    std::vector<std::string> submit_batch(std::vector<Message> messages, WallTime when,
                                          std::vector<std::string> channels = {}) {
        start();
        check_route(channels);
        const WallTime now = clock_.wall_now();
        std::vector<QueuedMessage> batch;
        batch.reserve(messages.size());
        for (const Message& m : messages) {
            batch.push_back(make_queued(m, channels, when, now));
        }
        enqueue(batch.data(), batch.size(), channels, now, [&] { queue_->push_all(batch); });
        std::vector<std::string> ids;
        ids.reserve(batch.size());
        for (QueuedMessage& q : batch) {
            ids.push_back(std::move(q.id));
        }
        return ids;
    }

    // Makes one pass over the messages ready now (up to batch_size at a time, until none is
    // ready); returns how many passes it made. For a loop of the caller's own and for tests on
    // a ManualClock; workers may take some messages first.
    std::size_t run_due() {
        start();  // throws QueueStoppedError after stop()
        std::size_t done = 0;
        const WallTime now = clock_.wall_now();
        for (;;) {
            std::vector<QueuedMessage> batch =
                queue_->claim(now, options_.batch_size, options_.lease);
            if (batch.empty()) {
                return done;
            }
            done += handle_batch(batch);
        }
    }

    // The status of a message the engine still tracks (see DeliveryEngineOptions::max_tracked).
    std::optional<MessageStatus> status(std::string_view id) const {
        detail::LockGuard lock(mutex_);
        const auto it = records_.find(std::string(id));
        if (it == records_.end()) {
            return std::nullopt;
        }
        return it->second.status;
    }

    std::optional<MessageInfo> info(std::string_view id) const {
        detail::LockGuard lock(mutex_);
        const auto it = records_.find(std::string(id));
        if (it == records_.end()) {
            return std::nullopt;
        }
        const Record& r = it->second;
        MessageInfo m;
        m.id = it->first;
        m.status = r.status;
        m.since = r.since;
        if (r.route != nullptr) {
            m.channels = *r.route;
        }
        m.channel = r.channel;
        m.external_id = r.external_id;
        m.error = r.error;
        m.dead_letter_id = r.dead_letter_id;
        m.passes = r.passes;
        return m;
    }

    // The audit trail: every channel considered for the message, oldest first (the newest
    // max_attempts_kept).
    std::vector<DeliveryAttempt> attempts(std::string_view id) const {
        detail::LockGuard lock(mutex_);
        const auto it = records_.find(std::string(id));
        if (it == records_.end()) {
            return {};
        }
        return {it->second.attempts.begin(), it->second.attempts.end()};
    }

    // A provider's delivery receipt: moves the message sent with `external_id` to `status`
    // (delivered, failed or bounced). False when no tracked message has that id, or it is not
    // sent (or delivered, for a late bounce). Throws std::invalid_argument for another status.
    bool confirm(std::string_view external_id, MessageStatus status) {
        if (status != MessageStatus::delivered && status != MessageStatus::failed &&
            status != MessageStatus::bounced) {
            detail::throw_invalid_option("DeliveryEngine.confirm: status",
                                         "must be delivered, failed or bounced", to_string(status));
        }
        StatusChange change;
        std::string id;
        std::string channel;
        {
            detail::LockGuard lock(mutex_);
            const auto e = external_ids_.find(std::string(external_id));
            if (e == external_ids_.end()) {
                return false;
            }
            const auto it = records_.find(e->second);
            if (it == records_.end()) {
                return false;
            }
            Record& r = it->second;
            const bool late_bounce =
                r.status == MessageStatus::delivered && status == MessageStatus::bounced;
            if (r.status != MessageStatus::sent && !late_bounce) {
                return false;
            }
            const WallTime now = clock_.wall_now();
            change.from = r.status;
            change.to = status;
            change.at = now;
            enter(r, status, now);
            id = it->first;
            channel = r.channel;
        }
        change.id = id;
        change.channel = channel;
        listeners_.emit(change);
        return true;
    }

    // Called on every status change, on the thread that made it (a worker, or the caller of
    // submit/confirm/run_due), outside the engine's locks. Returns the id remove_listener()
    // takes; throws std::invalid_argument for an empty listener.
    ListenerId on_status(std::function<void(const StatusChange&)> listener) {
        return listeners_.add(std::move(listener));
    }
    bool remove_listener(ListenerId id) noexcept { return listeners_.remove(id); }

    // Puts a pending dead letter back in the queue, over `force_channels` if given (else its
    // original route). The message keeps its id, its origin and its history; it starts a fresh
    // count of passes. It is released at the redrive rate. False when the letter is not
    // pending or was not made by a DeliveryEngine.
    bool reprocess_dead_letter(const std::string& dead_letter_id,
                               std::vector<std::string> force_channels = {}) {
        return reprocess_dead_letters(DeadLetterQuery{}.id(dead_letter_id),
                                      std::move(force_channels))
                   .resent == 1;
    }

    // reprocess_dead_letter() for every pending match of `query` (oldest first), released at
    // most redrive_rate per second: the i-th is due i / redrive_rate seconds after the
    // previous redrive's last one (or now).
    ReprocessResult reprocess_dead_letters(const DeadLetterQuery& query,
                                           std::vector<std::string> force_channels = {}) {
        start();
        check_route(force_channels);
        ReprocessOptions ro;
        ro.channel = "redrive:" + options_.name;
        // Only this engine's letters: another consumer's are not touched (a handler refusing
        // them would still count a redrive against them).
        DeadLetterQuery ours = query;
        ours.tag("engine:" + options_.name);
        return dead_letters_.reprocess(
            ours, [&](const DeadLetter& d) { return redrive(d, force_channels); }, ro);
    }

    // Waits until the queue store holds nothing (no message queued, scheduled or being sent),
    // or `timeout` passes on the engine's clock; true when it emptied. Without workers it makes
    // the passes itself (and sleeps on the clock until the next message is due).
    bool drain(Duration timeout) {
        start();  // throws QueueStoppedError after stop()
        const TimePoint deadline = detail::saturating_add(clock_.now(), timeout);
        for (;;) {
            if (options_.workers == 0) {
                run_due();
            }
            {
                detail::UniqueLock lock(mutex_);
                // submitting_ first, with acquire: a submit that has decremented it has stored
                // its messages, so the size read after it counts them (a submit cannot start its
                // increment, under mutex_, while this check holds it).
                if (submitting_.load(std::memory_order_acquire) == 0 && in_flight_ == 0 &&
                    queue_->size() == 0) {
                    return true;
                }
                if (clock_.now() >= deadline) {
                    return false;
                }
                if (options_.workers != 0) {
                    ++draining_;
                    clock_.wait_until(idle_, lock.native(),
                                      std::min(deadline, clock_.now() + options_.poll_interval));
                    --draining_;
                    continue;
                }
            }
            const std::optional<WallTime> next = queue_->next_ready();
            const WallTime now = clock_.wall_now();
            Duration wait = next ? *next - now : options_.poll_interval;
            wait = std::min(wait, deadline - clock_.now());
            if (wait > Duration::zero()) {
                clock_.sleep_for(wait);
            }
        }
    }

    // Stops the engine; nothing is lost. StopMode::drain first drains (up to `timeout`);
    // persist only lets the passes in flight finish. Then the workers stop, and the messages
    // left stay in the queue store given to the engine, or (with the engine's own in-memory
    // store) are handed back. A second call returns nothing.
    std::vector<PendingDelivery<Message>> stop(StopMode mode = StopMode::persist,
                                               Duration timeout = std::chrono::seconds(30)) {
        if (mode == StopMode::drain) {
            drain(timeout);
        }
        bool started = false;
        {
            detail::UniqueLock lock(mutex_);
            for (const std::thread& t : workers_) {
                if (t.get_id() == std::this_thread::get_id()) {
                    throw std::logic_error("bulwark::DeliveryEngine '" + options_.name +
                                           "': stop() from a worker (a listener or an adapter) "
                                           "would wait for itself");
                }
            }
            if (stopped_) {
                return {};
            }
            stopped_ = true;
            started = live_.exchange(false, std::memory_order_acq_rel);
            // A submit or redrive past its check finishes its push first: what it stores is
            // then handed back below or left in the store, never stranded. A submit ends
            // without the lock (and without a notify): re-check every millisecond; a push is
            // short.
            while (submitting_.load(std::memory_order_acquire) != 0) {
                idle_.wait_for(lock.native(), std::chrono::milliseconds(1));
            }
        }
        shut_down();
        std::vector<PendingDelivery<Message>> left;
        if (own_queue_ == nullptr || !started) {
            return left;
        }
        QueueStore& own = *own_queue_;
        for (QueuedMessage& q : own.list()) {
            Envelope env;
            std::optional<Message> message;
            if (decode_envelope(q.payload, env)) {
                try {
                    message.emplace(decode_(env.body));
                } catch (...) {  // NOLINT(bugprone-empty-catch): buried raw below
                }
            }
            if (message) {
                left.push_back(PendingDelivery<Message>{q.id, std::move(*message),
                                                        std::move(env.route), q.due});
                own.remove(q.id);
                continue;
            }
            // Unreadable: it cannot be handed back as a Message, so it goes to the dead-letter
            // store raw rather than die with the engine.
            DeadLetter d;
            d.type = options_.name;
            d.payload = q.payload;
            d.error = "the queued bytes could not be decoded at stop()";
            d.reason = DeadLetterReason::rejected;
            d.tags = {"undecodable:" + options_.name, "message:" + q.id};
            if (store_letter(d, q.id)) {
                own.remove(q.id);
            }
        }
        return left;
    }

    // Statistics per channel and overall for [from, to) (wall time, whole minutes, at most
    // stats_window back), with the queue's current state.
    DeliveryStats stats(WallTime from, WallTime to) const {
        DeliveryStats s;
        s.from = from;
        s.to = to;
        std::vector<std::shared_ptr<Slot>> slots;
        {
            detail::LockGuard lock(config_mutex_);
            slots = slots_;
        }
        detail::DeliveryCounts all;
        for (const auto& slot : slots) {
            const detail::DeliveryCounts c = slot->stats->range(from, to);
            all.merge(c);
            s.channels.push_back(c.finish(slot->name));
        }
        s.overall = all.finish("");
        const QueueStoreStats q = queue_->stats();
        s.queued = q.size;
        s.in_flight = q.leased;
        {
            detail::LockGuard lock(mutex_);
            for (const auto& [id, r] : records_) {
                ++s.by_status[static_cast<std::size_t>(r.status)];
            }
            s.entered = counters_.entered;
        }
        return s;
    }

    // stats() over the whole stats_window up to now.
    DeliveryStats stats() const {
        const WallTime now = clock_.wall_now();
        return stats(now - options_.stats_window, now + std::chrono::minutes(1));
    }

    DeliveryEngineCounters counters() const {
        detail::LockGuard lock(mutex_);
        DeliveryEngineCounters c = counters_;
        c.submitted = submitted_.load(std::memory_order_relaxed);
        return c;
    }

    // The queue store in use (the engine's own unless one was given).
    QueueStore& queue() const noexcept { return *queue_; }
    const DeliveryEngineOptions& options() const noexcept { return options_; }
    Clock& clock() const noexcept { return clock_; }

    // Adds the engine's series to `w` (what to_prometheus(engine) renders): queue depth, in
    // flight, messages per status, attempts, successes, fallbacks, cost and a response-time
    // histogram per channel.
    void write_metrics(MetricsWriter& w, std::string_view name) const {
        std::vector<std::shared_ptr<Slot>> slots;
        {
            detail::LockGuard lock(config_mutex_);
            slots = slots_;
        }
        const QueueStoreStats q = queue_->stats();
        const MetricLabels l{{"engine", name}};
        w.add_gauge("bulwark_delivery_queue_depth", "Messages in the queue store.", l, q.size);
        w.add_gauge("bulwark_delivery_in_flight", "Messages leased by a worker.", l, q.leased);
        const DeliveryEngineCounters c = counters();
        for (std::size_t i = 0; i < message_status_count; ++i) {
            w.add_counter("bulwark_delivery_status_total", "Moves of a message into each status.",
                          {{"engine", name}, {"status", to_string(static_cast<MessageStatus>(i))}},
                          c.entered[i]);
        }
        w.add_counter("bulwark_delivery_retries_total", "Passes rescheduled after a failure.", l,
                      c.retries);
        w.add_counter("bulwark_delivery_redriven_total", "Dead letters put back in the queue.", l,
                      c.redriven);
        w.add_counter("bulwark_delivery_submitted_total", "Messages accepted by submit.", l,
                      c.submitted);
        w.add_counter("bulwark_delivery_lease_lost_total",
                      "Passes that ended after their lease had run out.", l, c.lease_lost);
        w.add_counter("bulwark_delivery_dead_letter_failures_total",
                      "Adds the dead-letter store refused (retried).", l, c.dead_letter_failures);
        w.add_counter("bulwark_delivery_undecodable_total",
                      "Queued messages that could not be read (dead-lettered raw).", l,
                      c.undecodable);
        w.add_counter("bulwark_delivery_duplicates_suppressed_total",
                      "Messages leased again after they were sent, not resent.", l,
                      c.duplicates_suppressed);
        for (const auto& slot : slots) {
            slot->stats->write(w, name, slot->name);
        }
    }

private:
    struct Slot {
        std::string name;
        Adapter adapter;
        ChannelOptions options;
        DeliveryClassifier classifier;
        std::unique_ptr<detail::ChannelStatsCell> stats;
    };

    // One adapter call, as the chain's channel function saw it.
    struct Call {
        const Slot* slot = nullptr;
        WallTime at{};
        TimePoint begun{};
        Duration elapsed{0};
        bool ok = false;
        Receipt receipt;
        DeliveryFailure failure;
        std::string error;
    };

    // What one pass hands the chain's channel functions (the chain's only argument).
    struct Turn {
        const Message* message = nullptr;
        Context* ctx = nullptr;
        bool fallback_on_permanent = false;
        // Inline: a pass usually calls one or two adapters, and allocates nothing for them.
        InlineVector<Call, 2> calls;
    };

    using Chain = FallbackChain<Receipt(Turn&)>;

    // An immutable routing: the chain of every channel with the rules. Replaced whole when a
    // channel or a rule changes; a pass keeps the one it started with (shared_ptr).
    struct Routing {
        Routing(Selection selection, const ChainOptions& options, Clock& clock)
            : chain(selection, options, clock) {}
        Chain chain;
        FallbackRules rules;
    };

    // What the queue store keeps of a message (its payload), besides the store's own fields.
    struct Envelope {
        std::vector<std::string> route;
        std::uint32_t generation = 0;            // redrives so far
        std::string origin;                      // the dead letter it was redriven from, if any
        WallTime first_try{};                    // zero until the first pass
        Duration previous{0};                    // the last backoff
        std::vector<DeadLetterAttempt> history;  // bounded
        // Set once the message is bound for the dead-letter store and the store refused it:
        // later passes only retry the add (the route is not tried again).
        bool burying = false;
        DeadLetterReason bury_reason = DeadLetterReason::retries_exhausted;
        std::string bury_error;
        Duration store_wait{0};  // the last wait after the store refused
        // The encoded message: a view into the bytes the envelope was decoded from (or the
        // letter it is redriven from), which outlive it.
        std::string_view body;
    };

    struct Record {
        MessageStatus status = MessageStatus::queued;
        std::array<WallTime, message_status_count> since{};
        // As submitted (shared with the records of the same route); null for none.
        std::shared_ptr<const std::vector<std::string>> route;
        // The newest max_attempts_kept, oldest first. A vector: no allocation until the first
        // attempt (a deque allocates on construction), and overflow is rare.
        std::vector<DeliveryAttempt> attempts;
        std::uint32_t numbered = 0;  // attempts numbered so far
        std::uint32_t passes = 0;
        std::string channel;
        std::string external_id;
        std::string error;
        std::string dead_letter_id;
        bool busy = false;  // a worker of this engine is on it
        // The redrive generation of the copy the status is about: a final status holds back
        // copies of that generation or older (the ledger), never a newer (redriven) one.
        std::uint32_t generation = 0;
        std::uint64_t finish_seq = 0;  // its entry in finished_ (0: none)
    };

    // A send a worker made, for its record (see sent()).
    struct Sent {
        Record* record = nullptr;  // held busy by the worker until entered
        std::string id;
        std::vector<DeliveryAttempt> made;
        std::string channel;
        std::string external_id;
        WallTime at{};
        std::uint32_t passes = 0;
        bool delivered = false;
        bool kept = false;  // the queue store still held the lease
    };
    using Records = std::unordered_map<std::string, Record>;
    // What a worker's batch has to enter into the records, and what it let go from them.
    struct Sends {
        std::vector<Sent> list;
        std::vector<typename Records::node_type> forgotten;
    };

    static constexpr std::uint8_t envelope_version = 1;
    static constexpr std::size_t history_kept = 32;
    static constexpr std::size_t max_error_bytes = 1024;

    DeliveryEngine(FallbackRules rules, DeadLetterStore& dead_letters, QueueStore* queue,
                   DeliveryEngineOptions options, Clock& clock)
        : options_((options.validate(), std::move(options))),
          clock_(clock),
          dead_letters_(dead_letters),
          own_queue_(queue == nullptr ? std::make_unique<InMemoryQueueStore>() : nullptr),
          queue_(queue == nullptr ? own_queue_.get() : queue),
          seed_(detail::fresh_seed()) {
        // Up front, so that keeping a spare never allocates (nor throws) later.
        spare_records_.reserve(max_spare_records);
        detail::LockGuard lock(config_mutex_);
        install(slots_, rules, false);
        rules_ = std::move(rules);
    }

    std::size_t window_buckets() const {
        return static_cast<std::size_t>(options_.stats_window / std::chrono::minutes(1)) + 1;
    }

    template <class A>
    Adapter make_adapter(A&& adapter) {
        using T = std::remove_cv_t<std::remove_reference_t<A>>;
        if constexpr (std::is_invocable_r<Receipt, T&, const Message&, Context&>::value) {
            if (detail::is_null_callable(adapter)) {
                detail::throw_invalid_argument(
                    "bulwark::DeliveryEngine::add_channel: null adapter");
            }
            return Adapter(std::forward<A>(adapter));
        } else if constexpr (std::is_invocable_r<Receipt, T&, const Message&>::value) {
            if (detail::is_null_callable(adapter)) {
                detail::throw_invalid_argument(
                    "bulwark::DeliveryEngine::add_channel: null adapter");
            }
            return [f = std::decay_t<A>(std::forward<A>(adapter))](const Message& m,
                                                                   Context&) mutable {
                return f(m);
            };
        } else if constexpr (detail::has_send_with_context<T, Message>::value ||
                             detail::has_send<T, Message>::value) {
            auto holder = hold(std::forward<A>(adapter));
            return [holder](const Message& m, Context& ctx) {
                if constexpr (detail::has_send_with_context<T, Message>::value) {
                    return Receipt(holder->send(m, ctx));
                } else {
                    (void)ctx;
                    return Receipt(holder->send(m));
                }
            };
        } else {
            static_assert(detail::always_false_v<T>,
                          "bulwark::DeliveryEngine::add_channel: the adapter must be callable as "
                          "Receipt(const Message&) or Receipt(const Message&, Context&), or have a "
                          "send member of either form");
            return {};
        }
    }

    // An lvalue object is used by reference (it must outlive the engine); an rvalue is moved
    // into a shared holder.
    template <class A>
    static std::shared_ptr<std::remove_reference_t<A>> hold(A&& adapter) {
        using T = std::remove_reference_t<A>;
        if constexpr (std::is_lvalue_reference<A>::value) {
            return std::shared_ptr<T>(std::shared_ptr<T>(), &adapter);
        } else {
            return std::make_shared<T>(std::forward<A>(adapter));
        }
    }

    void default_codec() BULWARK_REQUIRES(config_mutex_) {
        if constexpr (std::is_convertible<const Message&, std::string_view>::value &&
                      std::is_constructible<Message, std::string_view>::value) {
            encode_ = [](const Message& m) {
                return std::string(std::string_view(m));
            };
            decode_ = [](std::string_view bytes) {
                return Message(bytes);
            };
            plain_codec_ = true;
        } else {
            detail::throw_invalid_argument(
                "bulwark::DeliveryEngine '" + options_.name +
                "': a Message that is not a string needs codec(encode, decode) before start");
        }
    }

    [[noreturn]] BULWARK_NOINLINE static void unknown_channel(std::string_view name) {
        detail::throw_invalid_option("DeliveryEngine: channel", "must be one added to the engine",
                                     "\"" + std::string(name) + "\"");
    }

    void check_route(const std::vector<std::string>& route) const {
        detail::LockGuard lock(config_mutex_);
        for (auto it = route.begin(); it != route.end(); ++it) {
            const bool known = std::any_of(slots_.begin(), slots_.end(),
                                           [&](const auto& s) { return s->name == *it; });
            if (!known) {
                unknown_channel(*it);
            }
            if (std::find(route.begin(), it, *it) != it) {
                detail::throw_invalid_option("DeliveryEngine: channels", "must be distinct",
                                             "\"" + *it + "\" twice");
            }
        }
    }

    // Builds the routing for `slots` and `rules` and makes it current. strict: a rule naming a
    // channel not added is an error; otherwise such names wait for their channel.
    void install(const std::vector<std::shared_ptr<Slot>>& slots, const FallbackRules& rules,
                 bool strict) BULWARK_REQUIRES(config_mutex_) {
        auto known = [&](const std::string& name) {
            return std::any_of(slots.begin(), slots.end(),
                               [&](const auto& s) { return s->name == name; });
        };
        FallbackRules usable;
        std::vector<std::string> missing;
        for (const auto& [primary, rule] : rules.rules()) {
            if (!known(primary)) {
                missing.push_back(primary);
                continue;
            }
            FallbackRule r = rule;
            r.fallbacks.clear();
            for (const std::string& f : rule.fallbacks) {
                if (known(f)) {
                    r.fallbacks.push_back(f);
                } else {
                    missing.push_back(f);
                }
            }
            usable.set(primary, std::move(r));
        }
        std::vector<std::string> global;
        for (const std::string& g : rules.global()) {
            if (known(g)) {
                global.push_back(g);
            } else {
                missing.push_back(g);
            }
        }
        usable.set_global(std::move(global));
        if (strict && !missing.empty()) {
            detail::throw_invalid_option("DeliveryEngine: rules",
                                         "must name channels added to the engine",
                                         "unknown \"" + missing.front() + "\"");
        }
        auto routing = std::make_shared<Routing>(options_.selection, options_.chain, clock_);
        for (const auto& slot : slots) {
            const Slot* s = slot.get();
            routing->chain.add(
                slot->name, [this, s](Turn& turn) { return call(*s, turn); }, slot->options);
        }
        routing->chain.rules(usable);
        routing->rules = std::move(usable);
        detail::LockGuard lock(routing_mutex_);
        routing_ = std::move(routing);
    }

    std::shared_ptr<Routing> routing() const {
        detail::LockGuard lock(routing_mutex_);
        return routing_;
    }

    // The chain's function for one channel: calls the adapter and notes what happened.
    Receipt call(const Slot& slot, Turn& turn) {
        Call c;
        c.slot = &slot;
        c.at = clock_.wall_now();
        const TimePoint started = clock_.now();
        c.begun = started;
        try {
            Receipt r = slot.adapter(*turn.message, *turn.ctx);
            c.elapsed = clock_.now() - started;
            c.ok = true;
            c.receipt = r;
            turn.calls.push_back(std::move(c));
            return r;
        } catch (...) {
            c.elapsed = clock_.now() - started;
            const std::exception_ptr error = std::current_exception();
            c.error = detail::clip_text(detail::describe_exception(error), max_error_bytes);
            try {
                c.failure = slot.classifier.classify(error);
            } catch (...) {
                c.failure.kind = DeliveryErrorKind::permanent;
                c.error += " (its classification threw: " +
                           detail::describe_exception(std::current_exception()) + ")";
            }
            const bool stop_here = !retryable(c.failure.kind) && !turn.fallback_on_permanent;
            turn.calls.push_back(std::move(c));
            if (stop_here) {
                // A permanent failure the rule does not fall back on: the chain stops before
                // the next channel (and a channel retry stops retrying).
                turn.ctx->cancel();
            }
            throw;
        }
    }

    // One message: push() rather than push_all(), and no vectors of messages or ids.
    std::string submit_one(const Message& message, WallTime when, WallTime now,
                           const std::vector<std::string>& channels) {
        QueuedMessage q = make_queued(message, channels, when, now);
        enqueue(&q, 1, channels, now, [&] {
            if (own_queue_ != nullptr) {
                // The engine's own store takes the bytes rather than a copy of them.
                QueuedMessage taken;
                std::swap(taken, q);
                q.id = taken.id;
                own_queue_->push(std::move(taken));
            } else {
                queue_->push(q);
            }
        });
        return std::move(q.id);
    }

    // A message as submitted, encoded for the queue store.
    QueuedMessage make_queued(const Message& m, const std::vector<std::string>& route,
                              WallTime when, WallTime now) {
        QueuedMessage q;
        q.id = next_id();
        q.due = when;
        q.enqueued = now;
        if constexpr (std::is_convertible<const Message&, std::string_view>::value) {
            if (plain_codec_) {
                // The default codec's bytes are the string itself: no copy of it on the way.
                check_fits(std::string_view(m).size());
                q.payload =
                    encode_envelope(route, 0, {}, WallTime{}, Duration{0}, {}, std::string_view(m));
                return q;
            }
        }
        const std::string body = encode_(m);
        check_fits(body.size());
        q.payload = encode_envelope(route, 0, {}, WallTime{}, Duration{0}, {}, body);
        return q;
    }

    // A message that could never be dead-lettered is refused now, not lost later.
    void check_fits(std::size_t bytes) const {
        const std::size_t limit = max_letter_payload_;
        if (limit != 0 && bytes > limit) {
            detail::throw_invalid_option("DeliveryEngine.submit: message",
                                         "must fit the dead-letter store's max_payload_bytes (" +
                                             std::to_string(limit) + ")",
                                         std::to_string(bytes) + " bytes encoded");
        }
    }

    // Tracks the messages [first, first + n), stores them (`push` hands them to the queue store;
    // on a throw, those it did not store are forgotten again) and announces them.
    template <class Push>
    void enqueue(QueuedMessage* first, std::size_t n, const std::vector<std::string>& channels,
                 WallTime now, Push&& push) {
        // One message's record is made before the lock, so that the lock is held only for the
        // table's own work (submitters and workers wait on each other less).
        // (Unless a forgotten record's node is at hand: see spare_records_.)
        typename Records::node_type made;
        if (n == 1 && spare_records_count_.load(std::memory_order_relaxed) == 0) {
            Records one;
            made = one.extract(one.try_emplace(first->id).first);
        }
        // The records first: a worker may take a message as soon as it is pushed.
        {
            detail::LockGuard lock(mutex_);
            if (stopped_) {
                throw QueueStoppedError("bulwark::DeliveryEngine '" + options_.name +
                                        "': submit after stop()");
            }
            const std::shared_ptr<const std::vector<std::string>> route = intern(channels);
            for (std::size_t i = 0; i < n; ++i) {
                // An id is new (ids are unique), so the node goes in; were it held, the held
                // record would be used, as records_[id] does.
                Record& r = !made.empty() ? records_.insert(std::move(made)).position->second
                            : spare_records_.empty() ? records_[first[i].id]
                                                     : reuse_record(first[i].id);
                r.route = route;
                enter(r, MessageStatus::queued, now);
            }
            submitting_.fetch_add(1, std::memory_order_relaxed);
        }
        try {
            push();
        } catch (...) {
            detail::LockGuard lock(mutex_);
            submitting_.fetch_sub(1, std::memory_order_release);
            for (std::size_t i = 0; i < n; ++i) {
                // push_all() may have stored some: those stay tracked.
                const auto it = records_.find(first[i].id);
                if (it != records_.end() && it->second.status == MessageStatus::queued &&
                    !it->second.busy && !queue_->get(first[i].id)) {
                    records_.erase(it);
                    --counters_.entered[static_cast<std::size_t>(MessageStatus::queued)];
                }
            }
            notify_idle();
            throw;
        }
        // No lock after the push: the counts are atomics, and a sleeping worker is woken
        // through notify_workers() (most of the time none is asleep).
        submitted_.fetch_add(n, std::memory_order_relaxed);
        submitting_.fetch_sub(1, std::memory_order_release);
        notify_workers(n);
        for (std::size_t i = 0; i < n; ++i) {
            listeners_.emit_with([&] {
                return StatusChange{
                    first[i].id, MessageStatus::queued, MessageStatus::queued, now, {}};
            });
        }
    }

    // Messages were queued: a sleeping worker (if any) looks at the queue again. One message
    // needs one worker; the ones awake find it anyway. Called without mutex_.
    // seq_cst, a Dekker pair with work(): this thread increments pushes_ then reads sleeping_; a
    // worker about to sleep increments sleeping_ then reads pushes_. One of the two sees the
    // other: the worker does not sleep, or it is woken here (under mutex_, which it holds until
    // it waits, so the notify cannot come between its check and its wait).
    void notify_workers(std::size_t messages) BULWARK_EXCLUDES(mutex_) {
        pushes_.fetch_add(1, std::memory_order_seq_cst);
        if (sleeping_.load(std::memory_order_seq_cst) == 0) {
            return;
        }
        detail::LockGuard lock(mutex_);
        if (messages == 1) {
            wake_.notify_one();
        } else {
            wake_.notify_all();
        }
    }

    // A pass ended, or a submit gave up: drain() re-checks (a syscall only when it waits).
    void notify_idle() BULWARK_REQUIRES(mutex_) {
        if (draining_ != 0) {
            idle_.notify_all();
        }
    }

    // The shared copy of `route` for the records: the last one made is reused while submits
    // name the same channels (most do), so a record costs no vector of its own. Null for none.
    std::shared_ptr<const std::vector<std::string>> intern(const std::vector<std::string>& route)
        BULWARK_REQUIRES(mutex_) {
        if (route.empty()) {
            return nullptr;
        }
        if (last_route_ == nullptr || *last_route_ != route) {
            last_route_ = std::make_shared<const std::vector<std::string>>(route);
        }
        return last_route_;
    }

    std::string next_id() {
        // relaxed: only needs to be unique.
        const std::uint64_t n = next_seq_.fetch_add(1, std::memory_order_relaxed);
        return detail::format_short_id("msg-", detail::SplitMix64::at(seed_, n));
    }

    WallTime to_wall(TimePoint when) const { return clock_.wall_now() + (when - clock_.now()); }

    static std::string encode_envelope(const Envelope& env) {
        return encode_envelope(env.route, env.generation, env.origin, env.first_try, env.previous,
                               env.history, env.body, env.burying, env.bury_reason, env.bury_error,
                               env.store_wait);
    }

    static std::string encode_envelope(
        const std::vector<std::string>& route, std::uint32_t generation, std::string_view origin,
        WallTime first_try, Duration previous, const std::vector<DeadLetterAttempt>& history,
        std::string_view body, bool burying = false,
        DeadLetterReason bury_reason = DeadLetterReason::retries_exhausted,
        std::string_view bury_error = {}, Duration store_wait = Duration{0}) {
        // Sized up front: one allocation.
        std::size_t size = 1 + 4 + 4 + 4 + origin.size() + 8 + 8 + 4 + 1 + 1 + 4 +
                           bury_error.size() + 8 + 4 + body.size();
        for (const std::string& r : route) {
            size += 4 + r.size();
        }
        for (const DeadLetterAttempt& a : history) {
            size += 8 + 4 + a.channel.size() + 4 + a.error.size();
        }
        std::string out;
        out.reserve(size);
        detail::journal::Writer w(out);
        w.u8(envelope_version);
        w.strs(route);
        w.u32(generation);
        w.str(origin);
        w.time(first_try);
        w.i64(static_cast<std::int64_t>(previous.count()));
        w.u32(static_cast<std::uint32_t>(history.size()));
        for (const DeadLetterAttempt& a : history) {
            w.time(a.at);
            w.str(a.channel);
            w.str(a.error);
        }
        w.u8(burying ? 1 : 0);
        w.u8(static_cast<std::uint8_t>(bury_reason));
        w.str(bury_error);
        w.i64(static_cast<std::int64_t>(store_wait.count()));
        w.str(body);
        return out;
    }

    static bool decode_envelope(std::string_view bytes, Envelope& env) {
        detail::journal::Reader r(bytes);
        if (r.u8() != envelope_version) {
            return false;
        }
        env.route = r.strs();
        env.generation = r.u32();
        env.origin = r.str();
        env.first_try = r.time();
        env.previous = Duration(r.i64());
        const std::uint32_t n = r.u32();
        if (!r.need_count(n, 16)) {
            return false;
        }
        env.history.resize(n);
        for (DeadLetterAttempt& a : env.history) {
            a.at = r.time();
            a.channel = r.str();
            a.error = r.str();
        }
        const std::uint8_t burying = r.u8();
        const std::uint8_t reason = r.u8();
        env.burying = burying == 1;
        env.bury_reason = static_cast<DeadLetterReason>(reason);
        env.bury_error = r.str();
        env.store_wait = Duration(r.i64());
        env.body = r.view();
        return r.ok() && r.at_end() && env.previous >= Duration::zero() && burying <= 1 &&
               reason < dead_letter_reason_count && env.store_wait >= Duration::zero();
    }

    void enter(Record& r, MessageStatus status, WallTime at) BULWARK_REQUIRES(mutex_) {
        r.status = status;
        r.since[static_cast<std::size_t>(status)] = at;
        ++counters_.entered[static_cast<std::size_t>(status)];
    }

    // A finished message joins the retention list; the oldest finished beyond the limits are
    // forgotten.
    // `forgotten`, if given, takes the records let go, to be freed after the lock is released.
    void finished(Record& r, const std::string& id, WallTime at,
                  std::vector<typename Records::node_type>* forgotten = nullptr)
        BULWARK_REQUIRES(mutex_) {
        r.finish_seq = ++finish_seq_;
        finished_.push_back(Finished{at, r.finish_seq, id});
        while (!finished_.empty() && (finished_.size() > options_.max_tracked ||
                                      at - finished_.front().at > options_.track_for)) {
            const auto it = records_.find(finished_.front().id);
            // Only the record's latest finish counts (a redriven message finishes again), and
            // only a final record is forgotten.
            if (it != records_.end() && it->second.finish_seq == finished_.front().seq &&
                is_final(it->second.status) && !it->second.busy) {
                if (!it->second.external_id.empty()) {
                    external_ids_.erase(it->second.external_id);
                }
                if (spare_records_.size() < spare_records_.capacity()) {
                    spare_records_.push_back(records_.extract(it));
                    spare_records_count_.store(spare_records_.size(), std::memory_order_relaxed);
                } else if (forgotten != nullptr) {
                    forgotten->push_back(records_.extract(it));
                } else {
                    records_.erase(it);
                }
            }
            finished_.pop_front();
        }
    }

    // The record of `id` (new) in a forgotten record's node, reset.
    Record& reuse_record(const std::string& id) BULWARK_REQUIRES(mutex_) {
        typename Records::node_type node = std::move(spare_records_.back());
        spare_records_.pop_back();
        spare_records_count_.store(spare_records_.size(), std::memory_order_relaxed);
        Record& r = node.mapped();
        // The attempts' buffer is kept: a worker's first pass replaces it (and frees it there).
        std::vector<DeliveryAttempt> attempts = std::move(r.attempts);
        attempts.clear();
        r = Record{};
        r.attempts = std::move(attempts);
        node.key() = id;
        // Were the id held, the held record would be used (as records_[id] does).
        return records_.insert(std::move(node)).position->second;
    }

    void add_attempts(Record& r, std::vector<DeliveryAttempt>& made) BULWARK_REQUIRES(mutex_) {
        if (r.attempts.empty() && made.size() <= options_.max_attempts_kept) {
            // A message's first pass (the usual case): its vector becomes the record's.
            for (DeliveryAttempt& a : made) {
                a.number = ++r.numbered;
            }
            r.attempts = std::move(made);
            made.clear();
            return;
        }
        for (DeliveryAttempt& a : made) {
            a.number = ++r.numbered;
            if (r.attempts.size() >= options_.max_attempts_kept) {
                r.attempts.erase(r.attempts.begin());
            }
            r.attempts.push_back(std::move(a));
        }
    }

    std::size_t handle_batch(std::vector<QueuedMessage>& batch) {
        const std::shared_ptr<Routing> routing = this->routing();
        std::size_t done = 0;
        Sends sends;
        try {
            // So that sent() appends without allocating (a failure there would abandon a
            // message the store has completed).
            sends.list.reserve(batch.size());
        } catch (...) {  // NOLINT(bugprone-empty-catch): then it allocates as it goes
        }
        for (std::size_t i = 0; i < batch.size(); ++i) {
            if (quitting()) {
                // Stopping: hand the rest back at once, untouched.
                for (std::size_t j = i; j < batch.size(); ++j) {
                    give_back(batch[j], batch[j].due);
                }
                break;
            }
            try {
                pass(batch[i], *routing, sends);
                ++done;
            } catch (...) {  // NOLINT(bugprone-empty-catch): the lease runs out; it comes back
            }
        }
        {
            detail::LockGuard lock(mutex_);
            enter_sends(sends);
            notify_idle();
        }
        emit_sends(sends);
        return done;
    }

    // relaxed: a late view only hands the rest of a batch back one message later.
    bool quitting() const noexcept { return quitting_.load(std::memory_order_relaxed); }

    void give_back(const QueuedMessage& q, WallTime due) noexcept {
        try {
            QueuedMessage back = q;
            back.due = due;
            queue_->release(back);
        } catch (...) {  // NOLINT(bugprone-empty-catch): the lease runs out; it comes back
        }
    }

    // One pass of one leased message over its route.
    void pass(QueuedMessage& q, Routing& routing, Sends& sends) {
        const WallTime now = clock_.wall_now();
        // A batch is worked through in turn: a message whose lease ran out meanwhile may be
        // another worker's now; one whose lease is half gone gets a fresh one first.
        if (q.lease_until <= now) {
            return;
        }
        if (q.lease_until - now < options_.lease / 2) {
            if (!queue_->extend(q.id, q.lease, now + options_.lease)) {
                return;
            }
            q.lease_until = now + options_.lease;
        }
        Envelope env;
        std::optional<Message> message;
        std::string unreadable;
        if (!decode_envelope(q.payload, env)) {
            unreadable = "the queued bytes are not a delivery envelope";
        } else {
            try {
                message.emplace(decode_(env.body));
            } catch (...) {
                unreadable = "the message could not be decoded: " +
                             detail::describe_exception(std::current_exception());
            }
        }
        if (!unreadable.empty()) {
            {
                detail::LockGuard lock(mutex_);
                ++counters_.undecodable;
            }
            bury_raw(q, unreadable);
            return;
        }

        // The ledger: a copy of a message this engine has finished (sent, or dead-lettered
        // and not redriven since) is not tried again, nor one a worker of this engine is still
        // on (its lease ran out meanwhile).
        enum class Turnout { fresh, finished_already, busy };
        Turnout turnout = Turnout::fresh;
        MessageStatus from = MessageStatus::queued;
        Record* record = nullptr;
        {
            detail::LockGuard lock(mutex_);
            enter_sends(sends);
            Record& r = records_[q.id];
            record = &r;
            if (r.route == nullptr && !env.route.empty()) {
                r.route = intern(env.route);
            }
            if (is_final(r.status) && env.generation <= r.generation) {
                turnout = Turnout::finished_already;
                ++counters_.duplicates_suppressed;
            } else if (r.busy) {
                turnout = Turnout::busy;
            } else {
                r.busy = true;
                r.generation = env.generation;
                ++in_flight_;
                from = r.status;
                enter(r, MessageStatus::sending, now);
            }
        }
        emit_sends(sends);
        if (turnout == Turnout::finished_already) {
            queue_->complete(q.id, q.lease);
            return;
        }
        if (turnout == Turnout::busy) {
            give_back(q, now + options_.lease);
            return;
        }
        listeners_.emit_with([&] {
            return StatusChange{q.id, from, MessageStatus::sending, now, {}};
        });
        try {
            attempt(q, routing, env, *message, now, *record, sends);
        } catch (...) {
            // A store failed (release, complete): the message stays leased and comes back when
            // the lease runs out; it must not stay "sending" in the ledger meanwhile.
            abandon(q.id);
            throw;
        }
    }

    void abandon(const std::string& id) noexcept {
        detail::LockGuard lock(mutex_);
        const auto it = records_.find(id);
        if (it != records_.end() && it->second.busy) {
            it->second.busy = false;
            --in_flight_;
            it->second.status = MessageStatus::queued;
        }
        idle_.notify_all();
    }

    // `record` is q's, which this worker holds busy (a busy record is never erased).
    void attempt(QueuedMessage& q, Routing& routing, Envelope& env, const Message& message,
                 WallTime now, Record& record, Sends& sends) {
        std::vector<DeliveryAttempt> made;
        if (env.burying) {
            // Bound for the dead-letter store, which refused it last time: only the add again.
            bury_message(q, env, made, env.bury_reason, env.bury_error);
            return;
        }
        if (env.first_try == WallTime{}) {
            env.first_try = now;
        }
        const std::uint32_t pass_number = q.attempts + 1;
        // The operation is the message id: an adapter's idempotency key.
        Context ctx(q.id);
        Turn turn;
        turn.message = &message;
        turn.ctx = &ctx;
        turn.fallback_on_permanent = fallback_on_permanent(routing, env.route);
        const TimePoint started = clock_.now();
        std::optional<ChainResult<Receipt>> result;
        std::string route_error;
        try {
            result.emplace(run_route(routing, ctx, env.route, turn));
        } catch (...) {
            route_error = detail::describe_exception(std::current_exception());
        }
        if (result) {
            made = audit(*result, turn, pass_number, now, started);
        }

        if (result && result->ok()) {
            sent(q, made, std::move(*result).value(), record, sends);
            return;
        }
        // Failed: how, and what that means for the message.
        DeliveryFailure failure;
        std::string error = route_error;
        if (!route_error.empty()) {
            failure.kind = DeliveryErrorKind::permanent;  // a channel no longer added
        } else {
            verdict(*result, turn, failure, error);
        }
        for (const DeliveryAttempt& a : made) {
            if (!a.ok) {
                DeadLetterAttempt h;
                h.at = a.at;
                h.channel = a.channel;
                h.error = detail::clip_text(a.error.empty() ? to_string(a.skipped) : a.error, 256);
                env.history.push_back(std::move(h));
            }
        }
        if (env.history.size() > history_kept) {
            env.history.erase(env.history.begin(),
                              env.history.end() - static_cast<std::ptrdiff_t>(history_kept));
        }
        DeadLetterReason reason = DeadLetterReason::retries_exhausted;
        bool bury = false;
        if (failure.kind == DeliveryErrorKind::bounced) {
            bury = true;
            reason = DeadLetterReason::rejected;
        } else if (!retryable(failure.kind)) {
            bury = true;
            reason = DeadLetterReason::not_retryable;
        } else if (pass_number >= options_.max_passes) {
            bury = true;
        }
        Duration wait{0};
        if (!bury) {
            wait = options_.backoff.stream(std::hash<std::string>{}(q.id))
                       .delay(pass_number, env.previous);
            wait = std::max(wait, failure.retry_after);
            if (options_.max_elapsed > Duration::zero() &&
                (now - env.first_try) + wait > options_.max_elapsed) {
                bury = true;
            }
        }
        if (bury) {
            bury_message(q, env, made, reason, error);
            return;
        }
        env.previous = wait;
        QueuedMessage back = q;
        back.attempts = pass_number;
        back.due = now + wait;
        const bool kept = release_with(back, env);
        finish_pass(q.id, made, MessageStatus::queued, error, pass_number, kept);
    }

    // Releases `back` with `env` as its payload; a store that finds it too large gets it
    // without its history (the history is what grows).
    bool release_with(QueuedMessage& back, Envelope& env) {
        back.payload = encode_envelope(env);
        try {
            return queue_->release(back);
        } catch (const std::length_error&) {
            env.history.clear();
            back.payload = encode_envelope(env);
            return queue_->release(back);
        }
    }

    ChainResult<Receipt> run_route(Routing& routing, Context& ctx,
                                   const std::vector<std::string>& route, Turn& turn) {
        if (route.size() > 1) {
            return routing.chain.execute_route(ctx, route, turn);
        }
        if (route.size() == 1) {
            if (routing.rules.find(route.front()) != nullptr) {
                return routing.chain.execute_for(ctx, route.front(), turn);
            }
            // No rule: the global order after it, and no other channel (a channel the rules do
            // not name may need another address).
            if (routing.rules.global().empty()) {
                return routing.chain.execute_route(ctx, route, turn);
            }
            std::vector<std::string> order{route.front()};
            for (const std::string& g : routing.rules.global()) {
                if (g != route.front()) {
                    order.push_back(g);
                }
            }
            return routing.chain.execute_route(ctx, order, turn);
        }
        if (!routing.rules.global().empty()) {
            return routing.chain.execute_route(ctx, routing.rules.global(), turn);
        }
        return routing.chain.execute(ctx, turn);
    }

    static bool fallback_on_permanent(const Routing& routing,
                                      const std::vector<std::string>& route) {
        const std::string_view primary =
            route.empty() ? (routing.rules.global().empty()
                                 ? std::string_view()
                                 : std::string_view(routing.rules.global().front()))
                          : std::string_view(route.front());
        const FallbackRule* rule = routing.rules.find(primary);
        return rule != nullptr && rule->fallback_on_permanent;
    }

    // The pass's attempts for the audit trail: each adapter call, and each channel passed over.
    std::vector<DeliveryAttempt> audit(const ChainResult<Receipt>& result, const Turn& turn,
                                       std::uint32_t pass_number, WallTime wall_start,
                                       TimePoint started) const {
        // Channels passed over are not attempts in the statistics; each adapter call is.
        std::vector<DeliveryAttempt> made;
        made.reserve(result.attempts().size());
        std::size_t next_call = 0;
        FallbackReason previous = FallbackReason::none;
        for (const Attempt& a : result.attempts()) {
            if (!a.called()) {
                DeliveryAttempt d;
                d.pass = pass_number;
                d.channel = std::string(a.channel);
                d.at = wall_start + (a.started - started);
                d.skipped = a.reason;
                d.fallback_reason = previous;
                if (a.error) {
                    d.error =
                        detail::clip_text(detail::describe_exception(a.error), max_error_bytes);
                    d.kind = DeliveryErrorKind::transient;
                }
                made.push_back(std::move(d));
                previous = a.reason;
                continue;
            }
            while (next_call < turn.calls.size() && turn.calls[next_call].slot->name == a.channel) {
                const Call& c = turn.calls[next_call++];
                DeliveryAttempt d;
                d.pass = pass_number;
                d.channel = c.slot->name;
                d.at = c.at;
                d.response_time = c.elapsed;
                d.ok = c.ok;
                d.fallback_reason = previous;
                if (c.ok) {
                    d.provider = c.receipt.provider;
                    d.external_id = c.receipt.external_id;
                    d.cost = c.receipt.cost > 0.0 ? c.receipt.cost : c.slot->options.cost;
                } else {
                    d.kind = c.failure.kind;
                    d.code = c.failure.code;
                    d.error = c.error;
                    d.cost = c.slot->options.cost;
                }
                c.slot->stats->record(d.at, c.begun + c.elapsed, d.ok, d.response_time, d.cost,
                                      previous != FallbackReason::none);
                made.push_back(std::move(d));
            }
            previous = a.reason;
        }
        return made;
    }

    // Why a pass that delivered nothing failed: the last called channel's failure, or a
    // transient one with the longest wait the skips asked for when nothing was called.
    void verdict(const ChainResult<Receipt>& result, const Turn& turn, DeliveryFailure& failure,
                 std::string& error) const {
        Duration retry_after{0};
        for (const Call& c : turn.calls) {
            if (!c.ok) {
                retry_after = std::max(retry_after, c.failure.retry_after);
            }
        }
        if (!turn.calls.empty()) {
            // Described by the last call; permanent only when no channel of the pass might do
            // better later (each called one failed permanently, none was passed over): a
            // fallback's "no phone number" must not bury a message whose primary is down.
            const Call& last = turn.calls.back();
            failure = last.failure;
            error = last.error;
            if (!failure.code.empty()) {
                error += " (code " + detail::clip_text(failure.code, 64) + ")";
            }
            bool skipped = false;
            for (const Attempt& a : result.attempts()) {
                skipped = skipped || !a.called();
            }
            const Call* retryable_call = nullptr;
            for (const Call& c : turn.calls) {
                if (!c.ok && retryable(c.failure.kind)) {
                    retryable_call = &c;
                }
            }
            if (retryable_call != nullptr) {
                failure.kind = retryable_call->failure.kind;
            } else if (skipped) {
                failure.kind = DeliveryErrorKind::transient;
            } else {
                failure.kind = turn.calls[0].failure.kind;  // the primary's: bounced or not
            }
        } else {
            failure.kind = DeliveryErrorKind::transient;
            error = result.error() ? detail::clip_text(detail::describe_exception(result.error()),
                                                       max_error_bytes)
                                   : "no channel was available";
        }
        const TimePoint now = clock_.now();
        for (const Attempt& a : result.attempts()) {
            if (a.error && !a.called()) {
                retry_after = std::max(retry_after, detail::rejection_wait(a.error, now));
            }
        }
        failure.retry_after = std::max(failure.retry_after, retry_after);
    }

    // A message sent: out of the queue now, into its record at this worker's next lock (the next
    // message's ledger check, or the end of the batch), so that a send costs no lock of its own.
    void sent(const QueuedMessage& q, std::vector<DeliveryAttempt>& made, Receipt&& receipt,
              Record& record, Sends& sends) {
        bool kept = false;
        try {
            kept = queue_->complete(q.id, q.lease);
        } catch (
            ...) {  // NOLINT(bugprone-empty-catch): leased again later, the ledger stops a resend
        }
        Sent s;
        s.record = &record;
        s.id = q.id;
        s.at = clock_.wall_now();
        for (auto it = made.rbegin(); it != made.rend(); ++it) {
            if (it->ok) {
                s.channel = it->channel;
                break;
            }
        }
        s.made = std::move(made);
        s.external_id = std::move(receipt.external_id);
        s.passes = q.attempts + 1;
        s.delivered = receipt.delivered;
        s.kept = kept;
        sends.list.push_back(std::move(s));
    }

    // Enters each send not entered yet (the list is cleared only by emit_sends(), so a throw
    // between the two leaves them to the next call, which skips those entered). Cannot throw:
    // the status, the busy flag and the in-flight count change first and cannot fail; what
    // allocates after them (the audit trail, the external id, the retention entry) is left out
    // of the record if memory runs out, never the status.
    void enter_sends(Sends& sends) noexcept BULWARK_REQUIRES(mutex_) {
        for (Sent& s : sends.list) {
            if (s.record == nullptr) {
                continue;
            }
            Record& r = *s.record;
            s.record = nullptr;  // entered; may be forgotten from now on
            if (!s.kept) {
                ++counters_.lease_lost;
            }
            r.passes = s.passes;
            r.error.clear();
            enter(r, MessageStatus::sent, s.at);
            if (s.delivered) {
                enter(r, MessageStatus::delivered, s.at);
            }
            r.busy = false;
            --in_flight_;
            try {
                add_attempts(r, s.made);
                r.channel = s.channel;
                if (!r.external_id.empty()) {
                    external_ids_.erase(r.external_id);
                }
                r.external_id = s.external_id;
                if (!s.external_id.empty()) {
                    external_ids_[s.external_id] = s.id;
                }
                finished(r, s.id, s.at, &sends.forgotten);
            } catch (...) {  // NOLINT(bugprone-empty-catch): out of memory; the status stands
            }
        }
        if (!sends.list.empty()) {
            notify_idle();
        }
    }

    // After enter_sends(), outside the lock: the listeners hear of the sends, in order.
    void emit_sends(Sends& sends) {
        for (const Sent& s : sends.list) {
            listeners_.emit_with([&] {
                return StatusChange{s.id, MessageStatus::sending, MessageStatus::sent, s.at,
                                    s.channel};
            });
            if (s.delivered) {
                listeners_.emit_with([&] {
                    return StatusChange{s.id, MessageStatus::sent, MessageStatus::delivered, s.at,
                                        s.channel};
                });
            }
        }
        sends.list.clear();
        sends.forgotten.clear();
    }

    // The end of a pass that did not send: back in the queue (queued) or dead-lettered.
    void finish_pass(const std::string& id, std::vector<DeliveryAttempt>& made, MessageStatus to,
                     const std::string& error, std::uint32_t passes, bool kept,
                     const std::string& dead_letter_id = {}) {
        const WallTime now = clock_.wall_now();
        StatusChange change{id, MessageStatus::sending, to, now, {}};
        {
            detail::LockGuard lock(mutex_);
            if (!kept) {
                ++counters_.lease_lost;
            }
            Record& r = records_[id];
            add_attempts(r, made);
            r.passes = passes;
            r.error = error;
            change.from = r.busy ? MessageStatus::sending : r.status;
            if (to == MessageStatus::queued) {
                ++counters_.retries;
            } else {
                r.dead_letter_id = dead_letter_id;
            }
            enter(r, to, now);
            if (r.busy) {
                r.busy = false;
                --in_flight_;
            }
            if (is_final(to)) {
                finished(r, id, now);
            }
            notify_idle();
        }
        listeners_.emit(change);
    }

    static std::string join(const std::vector<std::string>& names) {
        std::string out;
        for (const std::string& n : names) {
            if (!out.empty()) {
                out += ',';
            }
            out += n;
        }
        return out;
    }

    // Hands the message to the dead-letter store, then takes it out of the queue: a crash
    // between the two repeats the add of a still pending letter with the same id (a no-op),
    // never a loss.
    void bury_message(QueuedMessage& q, Envelope& env, std::vector<DeliveryAttempt>& made,
                      DeadLetterReason reason, const std::string& error) {
        DeadLetter d;
        std::string base = q.id;
        if (env.generation > 0) {
            base += "~" + std::to_string(env.generation);
        }
        d.type = env.route.empty() ? options_.name : env.route.front();
        d.payload = env.body;
        d.error = error;
        d.reason = reason;
        d.tags = {"engine:" + options_.name, "message:" + q.id, "route:" + join(env.route),
                  "generation:" + std::to_string(env.generation)};
        if (!env.origin.empty()) {
            d.tags.push_back("origin:" + env.origin);
        }
        d.attempts = env.history;
        const std::uint32_t passes = env.burying ? q.attempts : q.attempts + 1;
        if (!store_letter(d, base)) {
            // The store refused (full, an I/O error): the message stays queued, bound for the
            // store; later passes retry only the add, waiting longer each time (1 s doubling
            // to 5 minutes), and call no adapter.
            env.burying = true;
            env.bury_reason = reason;
            env.bury_error = error;
            env.store_wait =
                std::min<Duration>(std::max<Duration>(2 * env.store_wait, std::chrono::seconds(1)),
                                   std::chrono::minutes(5));
            QueuedMessage back = q;
            back.attempts = passes;
            back.due = clock_.wall_now() + env.store_wait;
            const bool kept = release_with(back, env);
            finish_pass(q.id, made, MessageStatus::queued, error, passes, kept);
            return;
        }
        bool kept = false;
        try {
            kept = queue_->complete(q.id, q.lease);
        } catch (
            ...) {  // NOLINT(bugprone-empty-catch): leased again later, the ledger completes it
        }
        finish_pass(q.id, made, MessageStatus::dead_lettered, error, passes, kept, d.id);
    }

    // A message the engine cannot read: its raw bytes go to the dead-letter store.
    void bury_raw(const QueuedMessage& q, const std::string& why) {
        DeadLetter d;
        d.type = options_.name;
        d.payload = q.payload;
        d.error = why;
        d.reason = DeadLetterReason::rejected;
        // Not "engine:<name>": a redrive of this engine's letters leaves it alone.
        d.tags = {"undecodable:" + options_.name, "message:" + q.id};
        if (!store_letter(d, q.id)) {
            give_back(q, clock_.wall_now() + std::chrono::seconds(30));
            return;
        }
        const bool kept = queue_->complete(q.id, q.lease);
        std::vector<DeliveryAttempt> none;
        finish_pass(q.id, none, MessageStatus::dead_lettered, why, q.attempts, kept, d.id);
    }

    // Adds `d` under `base`, or under base~2, base~3... when a letter that is no longer pending
    // holds the id (a message dead-lettered again after a redrive): a pending letter with the
    // id is this same letter, added before a crash (the add is then a no-op).
    bool store_letter(DeadLetter& d, const std::string& base) {
        try {
            d.id = base;
            for (int n = 2; n < 1000; ++n) {
                const std::optional<DeadLetter> held = dead_letters_.get(d.id);
                if (!held || held->status == DeadLetterStatus::pending) {
                    break;
                }
                d.id = base + "~" + std::to_string(n);
            }
            detail::fit_letter(d, dead_letters_.limits());
            dead_letters_.add(d);
            return true;
        } catch (...) {
            detail::LockGuard lock(mutex_);
            ++counters_.dead_letter_failures;
            return false;
        }
    }

    // The reprocess handler: the letter's message back in the queue.
    bool redrive(const DeadLetter& d, const std::vector<std::string>& force_channels) {
        std::string id;
        std::vector<std::string> route;
        std::uint32_t generation = 0;
        bool ours = false;
        for (const std::string& tag : d.tags) {
            if (tag == "engine:" + options_.name) {
                ours = true;
            } else if (tag.rfind("message:", 0) == 0) {
                id = tag.substr(8);
            } else if (tag.rfind("route:", 0) == 0) {
                route = split(tag.substr(6));
            } else if (tag.rfind("generation:", 0) == 0) {
                generation =
                    static_cast<std::uint32_t>(std::strtoul(tag.c_str() + 11, nullptr, 10));
            }
        }
        if (!ours || id.empty()) {
            return false;
        }
        Envelope env;
        env.route = force_channels.empty() ? route : force_channels;
        env.generation = generation + 1;
        env.origin = d.id;
        env.history = d.attempts;
        env.body = d.payload;
        const WallTime now = clock_.wall_now();
        QueuedMessage q;
        q.id = id;
        q.payload = encode_envelope(env);
        q.enqueued = now;
        const auto spacing = std::chrono::duration_cast<Duration>(
            std::chrono::duration<double>(1.0 / options_.redrive_rate));
        StatusChange change{};
        std::optional<Record> before;
        {
            detail::LockGuard lock(mutex_);
            if (stopped_) {
                throw QueueStoppedError("bulwark::DeliveryEngine '" + options_.name +
                                        "': redrive after stop()");
            }
            q.due = std::max(next_redrive_, now);
            const auto it = records_.find(id);
            if (it != records_.end()) {
                before = it->second;
            }
            Record& r = records_[id];
            change.from = r.status;
            r.route = env.route.empty()
                          ? nullptr
                          : std::make_shared<const std::vector<std::string>>(env.route);
            r.passes = 0;
            r.numbered = 0;
            r.error.clear();
            r.generation = env.generation;
            enter(r, MessageStatus::queued, now);
            ++submitting_;
        }
        try {
            queue_->push(q);
        } catch (...) {
            detail::LockGuard lock(mutex_);
            --submitting_;
            --counters_.entered[static_cast<std::size_t>(MessageStatus::queued)];
            const auto it = records_.find(id);
            if (it != records_.end() && !it->second.busy) {
                if (before) {
                    it->second = std::move(*before);
                } else {
                    records_.erase(it);
                }
            }
            idle_.notify_all();
            throw;
        }
        {
            detail::LockGuard lock(mutex_);
            --submitting_;
            // The next redrive's slot, once this one is in the queue.
            next_redrive_ = std::max(next_redrive_, q.due + spacing);
            ++counters_.redriven;
        }
        notify_workers(1);
        change.id = id;
        change.to = MessageStatus::queued;
        change.at = now;
        listeners_.emit(change);
        return true;
    }

    static std::vector<std::string> split(const std::string& list) {
        std::vector<std::string> out;
        std::size_t from = 0;
        while (from < list.size()) {
            const std::size_t comma = std::min(list.find(',', from), list.size());
            out.push_back(list.substr(from, comma - from));
            from = comma + 1;
        }
        return out;
    }

    void work() {
        for (;;) {
            std::uint64_t seen = 0;
            {
                detail::LockGuard lock(mutex_);
                if (quit_) {
                    return;
                }
                seen = pushes_.load(std::memory_order_seq_cst);
            }
            std::vector<QueuedMessage> batch;
            try {
                batch = queue_->claim(clock_.wall_now(), options_.batch_size, options_.lease);
            } catch (...) {  // NOLINT(bugprone-empty-catch): the store failed; wait and retry
            }
            if (!batch.empty()) {
                handle_batch(batch);
                continue;
            }
            std::optional<WallTime> next;
            try {
                next = queue_->next_ready();
            } catch (...) {  // NOLINT(bugprone-empty-catch): poll again
            }
            detail::UniqueLock lock(mutex_);
            if (quit_) {
                return;
            }
            sleeping_.fetch_add(1, std::memory_order_seq_cst);
            if (pushes_.load(std::memory_order_seq_cst) != seen) {
                // A message came in after the claim: its notify may have found no one.
                sleeping_.fetch_sub(1, std::memory_order_seq_cst);
                continue;
            }
            Duration wait = options_.poll_interval;
            if (next) {
                wait = std::min(wait, *next - clock_.wall_now());
            }
            if (wait > Duration::zero()) {
                clock_.wait_until(wake_, lock.native(), clock_.now() + wait);
            }
            sleeping_.fetch_sub(1, std::memory_order_seq_cst);
        }
    }

    void shut_down() noexcept {
        {
            detail::LockGuard lock(mutex_);
            quit_ = true;
            quitting_.store(true, std::memory_order_relaxed);
            wake_.notify_all();
        }
        for (std::thread& t : workers_) {
            if (!t.joinable()) {
                continue;
            }
            t.join();
        }
        workers_.clear();
    }

    const DeliveryEngineOptions options_;
    Clock& clock_;
    DeadLetterStore& dead_letters_;
    const std::unique_ptr<InMemoryQueueStore> own_queue_;
    QueueStore* const queue_;
    const std::uint64_t seed_;
    std::atomic<std::uint64_t> next_seq_{0};
    Listeners<StatusChange> listeners_;

    // Configuration: channels, rules, codec. Never held while calling out.
    mutable detail::Mutex config_mutex_;
    std::vector<std::shared_ptr<Slot>> slots_ BULWARK_GUARDED_BY(config_mutex_);
    FallbackRules rules_ BULWARK_GUARDED_BY(config_mutex_);
    // Set only before start() (under config_mutex_); read without it afterwards, by threads
    // that passed start(), whose lock (or live_'s acquire) orders the write before them.
    Encoder encode_;
    Decoder decode_;
    bool plain_codec_ = false;  // encode_ is the default one: a string's bytes are itself
    bool started_ BULWARK_GUARDED_BY(config_mutex_) = false;

    mutable detail::Mutex routing_mutex_;
    std::shared_ptr<Routing> routing_ BULWARK_GUARDED_BY(routing_mutex_);

    // Message records and the workers' state.
    mutable detail::Mutex mutex_;
    std::condition_variable wake_;  // a message may be ready, or quit_
    std::condition_variable idle_;  // a pass ended
    Records records_ BULWARK_GUARDED_BY(mutex_);
    // Nodes of forgotten records, reused by the next submits: records are made on the
    // submitting thread and forgotten on a worker, and a node freed on one thread and allocated
    // on another makes the two contend for the allocator's lock. The count is read without the
    // lock, only to decide whether to make a node before taking it.
    static constexpr std::size_t max_spare_records = 256;
    std::vector<typename Records::node_type> spare_records_ BULWARK_GUARDED_BY(mutex_);
    std::atomic<std::size_t> spare_records_count_{0};
    std::unordered_map<std::string, std::string> external_ids_ BULWARK_GUARDED_BY(mutex_);
    struct Finished {
        WallTime at{};
        std::uint64_t seq = 0;
        std::string id;
    };
    std::deque<Finished> finished_ BULWARK_GUARDED_BY(mutex_);
    std::uint64_t finish_seq_ BULWARK_GUARDED_BY(mutex_) = 0;
    DeliveryEngineCounters counters_ BULWARK_GUARDED_BY(mutex_);
    std::size_t in_flight_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::atomic<std::uint64_t> pushes_{0};     // submits and redrives so far
    std::atomic<std::size_t> sleeping_{0};     // workers waiting on wake_ (or about to)
    std::atomic<std::uint64_t> submitted_{0};  // counters_.submitted, kept apart: no lock
    std::size_t draining_ BULWARK_GUARDED_BY(mutex_) = 0;  // drain() calls waiting on idle_
    std::shared_ptr<const std::vector<std::string>> last_route_ BULWARK_GUARDED_BY(mutex_);
    // submits between their records and the end of their push (drain() waits for them).
    std::atomic<std::size_t> submitting_{0};
    // The dead-letter store's payload limit, read once (0: none): a message above it is
    // refused by submit.
    const std::size_t max_letter_payload_ = dead_letters_.limits().max_payload_bytes;
    WallTime next_redrive_ BULWARK_GUARDED_BY(mutex_){};
    bool running_ BULWARK_GUARDED_BY(mutex_) = false;
    bool stopped_ BULWARK_GUARDED_BY(mutex_) = false;
    bool quit_ BULWARK_GUARDED_BY(mutex_) = false;
    // quit_, for the check between two messages of a batch without the lock (set with it).
    std::atomic<bool> quitting_{false};
    std::atomic<bool> live_{false};  // start() has run to the end
    std::vector<std::thread> workers_;
};

}  // namespace bulwark

#endif  // BULWARK_DELIVERY_HPP
// #include <bulwark/delivery_error.hpp> (already included above)
// #include <bulwark/error_classifier.hpp>
// ErrorClassifier: sorts failed messages into operator-defined error classes by rule.
#ifndef BULWARK_ERROR_CLASSIFIER_HPP
#define BULWARK_ERROR_CLASSIFIER_HPP

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

// #include <bulwark/classify.hpp> (already included above)
// #include <bulwark/config.hpp> (already included above)
// #include <bulwark/dead_letter_store.hpp> (already included above)
// #include <bulwark/detail/mutex.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)

namespace bulwark {

// How urgently an error class needs an operator.
enum class ErrorSeverity : std::uint8_t { low, medium, high, critical };

inline constexpr std::size_t error_severity_count = 4;

inline const char* to_string(ErrorSeverity severity) noexcept {
    switch (severity) {
        case ErrorSeverity::low:
            return "low";
        case ErrorSeverity::medium:
            return "medium";
        case ErrorSeverity::high:
            return "high";
        case ErrorSeverity::critical:
            return "critical";
    }
    return "unknown";
}

// What operators fix failed messages by: a named class of errors, its category (who owns the
// fix), its severity and free labels.
//   bulwark::ErrorClass timeout{"network_timeout", "infrastructure", bulwark::ErrorSeverity::high,
//                               {"retryable"}};
// A plain value (thread-compatible).
struct ErrorClass {
    std::string name;      // "network_timeout"; a rule's class must have one
    std::string category;  // "infrastructure"
    ErrorSeverity severity = ErrorSeverity::medium;
    std::vector<std::string> tags;
};

// One classification rule: what it matches and the class it assigns. Every matcher that is set
// must hold (AND); an empty one matches anything, and a rule must set at least one.
//   bulwark::ErrorRule r;
//   r.channel = "sms";  r.pattern = "timed out";  r.error_class = {"network_timeout", "infra"};
//   r.type = bulwark::ErrorRule::of<std::system_error>();   // optional
// A plain value (thread-compatible).
struct ErrorRule {
    using TypeMatcher = std::function<bool(const std::exception_ptr&)>;

    // Exactly this channel (a DeadLetter's last attempt's channel, else its type).
    std::string channel;
    // Exactly this error code (a provider's "21211", a status "503").
    std::string code;
    // A substring of the error text, compared case-insensitively (ASCII letters fold; other
    // bytes compare as they are). Matched against the text before any redaction.
    std::string pattern;
    // Whether the exception is of this kind; never called with a null exception_ptr (a rule that
    // sets it does not match a classification made without an exception). Called with no lock
    // held, from any thread classifying: it must be thread-safe.
    TypeMatcher type;
    // The class assigned when the rule matches.
    ErrorClass error_class;

    // A TypeMatcher that holds for an exception of type E or derived from it (it rethrows the
    // exception_ptr to find out).
    template <class E>
    static TypeMatcher of() {
        static_assert(!std::is_reference<E>::value && !std::is_pointer<E>::value,
                      "ErrorRule::of<E>: E is the exception's type, as thrown");
        return &detail::holds_exception<E>;
    }
};

// What classify() decided for one failed message.
struct Classification {
    static constexpr std::size_t no_rule = std::numeric_limits<std::size_t>::max();

    // The class of the first rule that matched, or the unclassified class (name
    // "unclassified", empty category, medium severity, no tags) when none did.
    ErrorClass error_class;
    // Whether a rule matched; false = unclassified (still counted, never dropped).
    bool matched = false;
    // The index of the matching rule in the rule set classify() used; no_rule when unmatched.
    std::size_t rule = no_rule;
    // The error text as operators see it: passed through the classifier's redactor, if any.
    std::string error;
};

// Rewrites error text before operators see it (masks personal data). Must be thread-safe: every
// thread classifying calls it, with no lock held.
using Redactor = std::function<std::string(std::string_view)>;

namespace detail {

inline bool ascii_digit(char c) noexcept {
    return c >= '0' && c <= '9';
}
inline bool ascii_alpha(char c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
inline char ascii_lower(char c) noexcept {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}
inline std::string ascii_lowered(std::string_view text) {
    std::string out(text);
    for (char& c : out) {
        c = ascii_lower(c);
    }
    return out;
}

// Whether `folded` (already lower-case) occurs in `text`, ASCII letters compared without case.
inline bool contains_folded(std::string_view text, std::string_view folded) {
    return std::search(text.begin(), text.end(), folded.begin(), folded.end(),
                       [](char a, char b) { return ascii_lower(a) == b; }) != text.end();
}

// The characters an address's local part (before '@') and domain (after it) are taken from: the
// common ones, not all RFC 5322 allows, so that punctuation around an address is left alone.
inline bool email_local_char(char c) noexcept {
    return ascii_alpha(c) || ascii_digit(c) || c == '.' || c == '_' || c == '%' || c == '+' ||
           c == '-';
}
inline bool email_domain_char(char c) noexcept {
    return ascii_alpha(c) || ascii_digit(c) || c == '.' || c == '-';
}

// Replaces every e-mail address (local@domain.tld) in `text` with "[email]". One pass: at each
// '@', the local part runs back to the first character that cannot be in one (never into text
// already replaced), the domain forward; the domain must hold a '.' between two labels.
// Trailing dots and hyphens are punctuation, not domain ("write to a@b.com.").
inline std::string mask_emails(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    std::size_t copied = 0;  // text[0, copied) is in out
    std::size_t at = text.find('@');
    while (at != std::string_view::npos) {
        std::size_t begin = at;
        while (begin > copied && email_local_char(text[begin - 1])) {
            --begin;
        }
        while (begin < at && text[begin] == '.') {
            ++begin;  // a local part does not start with a dot
        }
        std::size_t end = at + 1;
        while (end < text.size() && email_domain_char(text[end])) {
            ++end;
        }
        while (end > at + 1 && (text[end - 1] == '.' || text[end - 1] == '-')) {
            --end;
        }
        const std::string_view domain = text.substr(at + 1, end - at - 1);
        const std::size_t dot = domain.find('.');
        const bool valid = begin < at && dot != std::string_view::npos && dot > 0 &&
                           domain.find("..") == std::string_view::npos;
        if (valid) {
            out.append(text.substr(copied, begin - copied)).append("[email]");
            copied = end;
            at = text.find('@', end);
        } else {
            at = text.find('@', at + 1);
        }
    }
    out.append(text.substr(copied));
    return out;
}

// Replaces every run of 12 or more digits in `text` with "[number]": card numbers, phone
// numbers, account numbers. A run may be split by single spaces or hyphens between digits
// ("4111 1111 1111 1111", "+44 7700-900-123 45"); only the digits and the separators inside the
// run are replaced. A run touching a letter or '_' on either side is part of a word (an id, a
// hash) and is left alone.
inline std::string mask_long_numbers(std::string_view text) {
    constexpr std::size_t min_digits = 12;
    std::string out;
    out.reserve(text.size());
    std::size_t copied = 0;
    std::size_t i = 0;
    while (i < text.size()) {
        if (!ascii_digit(text[i])) {
            ++i;
            continue;
        }
        const std::size_t begin = i;
        std::size_t end = i;  // one past the run's last digit
        std::size_t digits = 0;
        while (end < text.size()) {
            if (ascii_digit(text[end])) {
                ++digits;
                ++end;
            } else if ((text[end] == ' ' || text[end] == '-') && end + 1 < text.size() &&
                       ascii_digit(text[end + 1])) {
                ++end;  // a separator between two digits
            } else {
                break;
            }
        }
        const auto word_char = [](char c) {
            return ascii_alpha(c) || c == '_';
        };
        const bool in_word = (begin > 0 && word_char(text[begin - 1])) ||
                             (end < text.size() && word_char(text[end]));
        if (digits >= min_digits && !in_word) {
            out.append(text.substr(copied, begin - copied)).append("[number]");
            copied = end;
        }
        i = end;
    }
    out.append(text.substr(copied));
    return out;
}

// A trailing " (code X)" in an error text, the form DeliveryEngine writes its dead letters'
// errors in: X, or empty when there is none.
inline std::string_view trailing_error_code(std::string_view error) {
    constexpr std::string_view open = " (code ";
    if (error.size() <= open.size() + 1 || error.back() != ')') {
        return {};
    }
    const std::size_t start = error.rfind(open);
    if (start == std::string_view::npos) {
        return {};
    }
    const std::size_t begin = start + open.size();
    const std::string_view code = error.substr(begin, error.size() - 1 - begin);
    if (code.empty() || code.find(')') != std::string_view::npos) {
        return {};
    }
    return code;
}

}  // namespace detail

// The default redaction: masks e-mail addresses as "[email]", then runs of 12 or more digits
// (spaces or hyphens allowed between digits; not inside a word) as "[number]". Everything else
// is left as it is. A hand-written scanner (no std::regex: slow to compile, slow to run); pure
// and thread-safe.
//   bulwark::ErrorClassifier classifier(bulwark::redact_defaults());
inline Redactor redact_defaults() {
    return [](std::string_view text) {
        return detail::mask_long_numbers(detail::mask_emails(text));
    };
}

// Sorts failed messages into error classes by rules, first matching rule wins (in the order
// added), and counts how many fell into each class; a message no rule matches is unclassified,
// counted as such and returned like any other, never dropped.
//   bulwark::ErrorClassifier classifier(bulwark::redact_defaults());
//   classifier.add(rule);                                   // see ErrorRule
//   bulwark::Classification c = classifier.classify(letter);  // a DeadLetter
//   classifier.stats();                                      // {"network_timeout": 3, ...}
// Thread-safe: classify() runs concurrently with itself and with add() / replace(). The rules
// are an immutable snapshot behind a shared_ptr, swapped under the mutex; a classification
// uses the snapshot it took at its start, and matches, calls type matchers and the redactor
// with no lock held. The mutex is held only to take the snapshot and to count.
class ErrorClassifier {
public:
    // The class name of what no rule matched; a rule may not use it.
    static constexpr std::string_view unclassified_name = "unclassified";

    // `redactor` rewrites each Classification::error (none = the text as it is).
    explicit ErrorClassifier(Redactor redactor = {}) : redactor_(std::move(redactor)) {
        counts_.emplace(std::string(unclassified_name), 0);
    }
    ErrorClassifier(const ErrorClassifier&) = delete;
    ErrorClassifier& operator=(const ErrorClassifier&) = delete;

    // Appends `rule` (tried after every rule added before). Throws std::invalid_argument naming
    // the field, and changes nothing, when its class has no name or is named "unclassified", its
    // severity is out of range, it sets none of channel / code / pattern / type, or a rule
    // already added has a class of the same name with another category or severity.
    ErrorClassifier& add(ErrorRule rule) {
        Entry entry = make_entry(std::move(rule));
        detail::LockGuard<detail::Mutex> lock(mutex_);
        check_consistent(*rules_, entry.rule.error_class, "ErrorRule");
        auto next = std::make_shared<std::vector<Entry>>();
        next->reserve(rules_->size() + 1);
        next->insert(next->end(), rules_->begin(), rules_->end());
        next->push_back(std::move(entry));
        counts_.emplace(next->back().rule.error_class.name, 0);
        rules_ = std::move(next);
        return *this;
    }

    // Replaces every rule with `rules`, at once: a classification running sees either the old
    // set or the new. Checked as add() checks, each against those before it
    // ("ErrorRule[2].pattern ..."); when one is refused, nothing changes. Counts are kept.
    void replace(std::vector<ErrorRule> rules) {
        auto next = std::make_shared<std::vector<Entry>>();
        next->reserve(rules.size());
        for (std::size_t i = 0; i < rules.size(); ++i) {
            const std::string label = "ErrorRule[" + std::to_string(i) + "]";
            Entry entry = make_entry(std::move(rules[i]), label);
            check_consistent(*next, entry.rule.error_class, label);
            next->push_back(std::move(entry));
        }
        detail::LockGuard<detail::Mutex> lock(mutex_);
        for (const Entry& e : *next) {
            counts_.emplace(e.rule.error_class.name, 0);
        }
        rules_ = std::move(next);
    }

    // A copy of the rules, in the order they are tried.
    std::vector<ErrorRule> rules() const {
        const std::shared_ptr<const std::vector<Entry>> now = snapshot();
        std::vector<ErrorRule> out;
        out.reserve(now->size());
        for (const Entry& e : *now) {
            out.push_back(e.rule);
        }
        return out;
    }

    std::size_t size() const { return snapshot()->size(); }

    // Classifies a failure described by its error text, its error code and the channel it
    // failed on (each may be empty), and the exception when there is one (type rules need it).
    Classification classify(std::string_view error, std::string_view code, std::string_view channel,
                            const std::exception_ptr& exception = nullptr) {
        const std::shared_ptr<const std::vector<Entry>> rules = snapshot();
        Classification out;
        for (std::size_t i = 0; i < rules->size(); ++i) {
            if (matches((*rules)[i], error, code, channel, exception)) {
                out.matched = true;
                out.rule = i;
                out.error_class = (*rules)[i].rule.error_class;
                break;
            }
        }
        if (!out.matched) {
            out.error_class.name = std::string(unclassified_name);
            out.error_class.severity = ErrorSeverity::medium;
        }
        out.error = redactor_ ? redactor_(error) : std::string(error);
        count(out.error_class.name);
        return out;
    }

    // Classifies a dead letter: its error text (the last attempt's when the letter's own is
    // empty); its code, from a trailing " (code X)" of that text (how DeliveryEngine records
    // a provider's code; DeadLetter has no code field), else none; its channel, the last
    // attempt's when it names one, else the letter's type. No exception: type rules do not
    // match a letter.
    Classification classify(const DeadLetter& letter) {
        std::string_view error = letter.error;
        std::string_view channel = letter.type;
        if (!letter.attempts.empty()) {
            const DeadLetterAttempt& last = letter.attempts.back();
            if (error.empty()) {
                error = last.error;
            }
            if (!last.channel.empty()) {
                channel = last.channel;
            }
        }
        return classify(error, detail::trailing_error_code(error), channel);
    }

    // How many classifications fell into each class since construction, by class name:
    // "unclassified" and every class a rule has assigned (added or replaced) are present, at 0
    // until counted. A class whose rules were replaced away keeps its count.
    std::map<std::string, std::uint64_t> stats() const {
        detail::LockGuard<detail::Mutex> lock(mutex_);
        return {counts_.begin(), counts_.end()};
    }

private:
    struct Entry {
        ErrorRule rule;
        std::string folded_pattern;  // rule.pattern in lower case, folded once
    };

    static Entry make_entry(ErrorRule rule, const std::string& label = "ErrorRule") {
        const ErrorClass& c = rule.error_class;
        if (c.name.empty()) {
            detail::throw_invalid_option(label + ".error_class.name", "must not be empty", "\"\"");
        }
        if (c.name == unclassified_name) {
            detail::throw_invalid_option(label + ".error_class.name",
                                         "must not be \"unclassified\" (it names what no rule "
                                         "matches)",
                                         "\"unclassified\"");
        }
        detail::check_enumerator(c.severity, ErrorSeverity::critical,
                                 label + ".error_class.severity", "ErrorSeverity");
        if (rule.channel.empty() && rule.code.empty() && rule.pattern.empty() && !rule.type) {
            detail::throw_invalid_option(label + ".channel/code/pattern/type",
                                         "must set at least one (a rule must match something)",
                                         "none set for class \"" + c.name + "\"");
        }
        std::string folded = detail::ascii_lowered(rule.pattern);
        return Entry{std::move(rule), std::move(folded)};
    }

    // One class name means one class: its category and severity agree in every rule.
    static void check_consistent(const std::vector<Entry>& before, const ErrorClass& c,
                                 const std::string& label) {
        for (const Entry& e : before) {
            const ErrorClass& other = e.rule.error_class;
            if (other.name != c.name) {
                continue;
            }
            if (other.category != c.category) {
                detail::throw_invalid_option(label + ".error_class.category",
                                             "must be \"" + other.category +
                                                 "\" as in the class \"" + c.name +
                                                 "\" added before",
                                             "\"" + c.category + "\"");
            }
            if (other.severity != c.severity) {
                detail::throw_invalid_option(label + ".error_class.severity",
                                             std::string("must be ") + to_string(other.severity) +
                                                 " as in the class \"" + c.name + "\" added before",
                                             to_string(c.severity));
            }
            return;
        }
    }

    static bool matches(const Entry& e, std::string_view error, std::string_view code,
                        std::string_view channel, const std::exception_ptr& exception) {
        const ErrorRule& r = e.rule;
        return (r.channel.empty() || r.channel == channel) && (r.code.empty() || r.code == code) &&
               (e.folded_pattern.empty() || detail::contains_folded(error, e.folded_pattern)) &&
               (!r.type || (exception != nullptr && r.type(exception)));
    }

    std::shared_ptr<const std::vector<Entry>> snapshot() const {
        detail::LockGuard<detail::Mutex> lock(mutex_);
        return rules_;
    }

    void count(const std::string& name) {
        detail::LockGuard<detail::Mutex> lock(mutex_);
        auto it = counts_.find(name);
        if (it == counts_.end()) {
            it = counts_.emplace(name, 0).first;
        }
        ++it->second;
    }

    const Redactor redactor_;
    mutable detail::Mutex mutex_;
    std::shared_ptr<const std::vector<Entry>> rules_ BULWARK_GUARDED_BY(mutex_) =
        std::make_shared<const std::vector<Entry>>();
    std::map<std::string, std::uint64_t, std::less<>> counts_ BULWARK_GUARDED_BY(mutex_);
};

}  // namespace bulwark

#endif  // BULWARK_ERROR_CLASSIFIER_HPP
// #include <bulwark/fallback_chain.hpp> (already included above)
// #include <bulwark/health.hpp>
// HealthMonitor: scheduled health checks with timeouts, history, listeners and reports.
#ifndef BULWARK_HEALTH_HPP
#define BULWARK_HEALTH_HPP

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

// #include <bulwark/clock.hpp> (already included above)
// #include <bulwark/detail/health_core.hpp>
// The health monitor's scheduler: check state, due times, check threads and timeouts (private).
#ifndef BULWARK_DETAIL_HEALTH_CORE_HPP
#define BULWARK_DETAIL_HEALTH_CORE_HPP

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

// #include <bulwark/clock.hpp> (already included above)
// #include <bulwark/detail/mutex.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/events.hpp> (already included above)
// #include <bulwark/health_check.hpp> (already included above)

namespace bulwark {

namespace detail {

struct HealthCheckState {
    HealthCheckState(const HealthCheckState&) = delete;  // `last` refers into this object
    HealthCheckState& operator=(const HealthCheckState&) = delete;
    explicit HealthCheckState(HealthCheck c) : check(std::move(c)) {
        last.name = check.name;
        last.critical = check.critical;
        ring.reserve(std::min<std::size_t>(check.history, 64));
    }

    const HealthCheck check;  // immutable once added: runner threads read it without the lock
    // Everything below is guarded by the core's mutex.
    HealthCheckSummary summary;
    HealthCheckResult& last = summary.last;
    std::vector<HealthCheckResult> ring;  // history, at most check.history entries
    std::size_t ring_next = 0;            // where the next entry goes once the ring is full
    TimePoint next_due{};
    bool in_flight = false;
    bool timeout_reported = false;  // the run in flight has been reported as timed out
    bool completing = false;        // its result is recorded; its listeners are running
    std::uint64_t run_id = 0;       // identifies the run in flight (or the last one)
    TimePoint deadline{};           // of the run in flight, when it has a timeout
    bool removed = false;
};

// Events gathered under the lock and emitted after it is released.
struct HealthPending {
    std::vector<HealthCheckResult> runs;
    std::vector<HealthCheckResult> changes;
    std::optional<HealthStatusChange> overall;
};

// The state shared by a monitor, its scheduler and its check threads. Check threads co-own it,
// so one stuck in a user's check after the monitor is gone touches nothing that was freed.
// A class template only so that its code is compiled in translation units that use it.
template <class Tag = void>
class BasicHealthCore : public std::enable_shared_from_this<BasicHealthCore<Tag>> {
public:
    BasicHealthCore(HealthMonitorOptions options, Clock& clock)
        : options_(options), clock_(&clock) {}

    Clock& clock() const noexcept { return *clock_; }

    void add(HealthCheck check) {
        check.validate();
        auto state = std::make_shared<HealthCheckState>(std::move(check));
        HealthPending pending;
        {
            detail::LockGuard lock(mutex_);
            for (const auto& s : checks_) {
                if (s->check.name == state->check.name) {
                    throw_invalid_argument("HealthMonitor: a check named '" + s->check.name +
                                           "' already exists");
                }
            }
            state->next_due = clock_->now();  // first run at the next scheduling pass
            checks_.push_back(std::move(state));
            update_overall(pending);
            cv_.notify_all();
        }
        emit(pending);
    }

    bool remove(std::string_view name) {
        HealthPending pending;
        {
            detail::LockGuard lock(mutex_);
            auto it = std::find_if(checks_.begin(), checks_.end(),
                                   [&](const auto& s) { return s->check.name == name; });
            if (it == checks_.end()) {
                return false;
            }
            (*it)->removed = true;
            checks_.erase(it);
            update_overall(pending);
        }
        emit(pending);
        return true;
    }

    // A run of a check: the check and the run's id.
    using Run = std::pair<std::shared_ptr<HealthCheckState>, std::uint64_t>;

    // One scheduling pass: reports overrun runs and starts the due checks — or, with `only`,
    // that one check whatever its schedule (a run of it already in flight is returned to wait
    // on instead). Returns the runs started on check threads, for wait_for(); runs the inline
    // ones itself, adding their number to `*inline_count` if given.
    std::vector<Run> pass(std::string_view only = {}, std::size_t* inline_count = nullptr) {
        std::vector<Run> started;
        std::vector<Run> inline_runs;
        HealthPending pending;
        {
            detail::LockGuard lock(mutex_);
            const TimePoint now = clock_->now();
            expire(now, pending);
            if (only.empty()) {
                for (const auto& s : checks_) {
                    if (now >= s->next_due) {
                        launch(s, now, started, inline_runs, pending);
                    }
                }
            } else if (const auto state = find(only); state->in_flight) {
                started.emplace_back(state, state->run_id);
            } else {
                launch(state, now, started, inline_runs, pending);
            }
        }
        emit(pending);
        for (auto& [state, id] : inline_runs) {
            execute(state, id, clock_->now());
        }
        if (inline_count != nullptr) {
            *inline_count += inline_runs.size();
        }
        return started;
    }

    // Runs one check now (or waits for its run in flight) and returns its result.
    HealthCheckResult run_now(std::string_view name) {
        wait_for(pass(name));
        detail::LockGuard lock(mutex_);
        return find(name)->last;
    }

    // Blocks until each run has finished or has been reported as timed out.
    void wait_for(const std::vector<Run>& waited) {
        HealthPending pending;
        {
            detail::UniqueLock lock(mutex_);
            for (;;) {
                const TimePoint now = clock_->now();
                expire(now, pending);
                bool waiting = false;
                std::optional<TimePoint> wake;  // none while only inline runs are pending
                for (const auto& [s, id] : waited) {
                    if (s->in_flight && s->run_id == id &&
                        (!s->timeout_reported || s->completing)) {
                        waiting = true;
                        if (!s->completing && s->check.timeout > Duration::zero() &&
                            (!wake || s->deadline < *wake)) {
                            wake = s->deadline;
                        }
                    }
                }
                if (!waiting) {
                    break;
                }
                if (wake) {
                    clock_->wait_until(cv_, lock.native(), *wake);
                } else {
                    cv_.wait(lock.native());
                }
            }
        }
        emit(pending);
    }

    // The scheduler thread's loop: a pass, then a wait until the next due time or deadline.
    void schedule_loop() {
        detail::UniqueLock lock(mutex_);
        while (!stop_requested_) {
            lock.unlock();
            pass();
            lock.lock();
            if (stop_requested_) {
                break;
            }
            std::optional<TimePoint> wake;
            for (const auto& s : checks_) {
                TimePoint t = s->next_due;
                // Only a run on a check thread has a deadline to watch; inline and completing
                // runs end with finish(), which notifies.
                if (s->in_flight && s->check.timeout > Duration::zero() && !s->timeout_reported &&
                    !s->completing && s->deadline < t) {
                    t = s->deadline;
                }
                if (!wake || t < *wake) {
                    wake = t;
                }
            }
            if (!wake) {
                // No checks: sleep until one is added or stop() (both notify).
                cv_.wait(lock.native());
            } else if (clock_->now() < *wake) {
                clock_->wait_until(cv_, lock.native(), *wake);
            }
        }
    }

    void request_stop(bool stop) {
        detail::LockGuard lock(mutex_);
        stop_requested_ = stop;
        cv_.notify_all();
    }

    // Ends the idle check threads and waits for those still running a check, until their run
    // finishes or is past its timeout; threads stuck beyond that are left to finish on their
    // own (they co-own this state).
    void shut_down() {
        detail::UniqueLock lock(mutex_);
        shutdown_ = true;
        for (const Run& task : tasks_) {
            finish(task.first);  // never started: not in flight after all
        }
        tasks_.clear();
        cv_.notify_all();
        HealthPending ignored;
        for (;;) {
            expire(clock_->now(), ignored);
            std::size_t stuck = 0;
            std::optional<TimePoint> wake;
            for (const auto& s : flying_) {
                if (s->timeout_reported && !s->completing) {
                    ++stuck;
                } else if (!s->completing && (!wake || s->deadline < *wake)) {
                    // A completing run needs no wake-up: finish() notifies. (Its deadline may
                    // have passed, and waiting until it would spin with the lock held.)
                    wake = s->deadline;
                }
            }
            if (threads_ <= stuck) {
                break;
            }
            if (wake) {
                clock_->wait_until(cv_, lock.native(), *wake);
            } else {
                cv_.wait(lock.native());
            }
        }
    }

    HealthStatus status() const {
        detail::LockGuard lock(mutex_);
        return overall_;
    }

    HealthStatus status(std::string_view name) const {
        detail::LockGuard lock(mutex_);
        return find(name)->last.status;
    }

    std::vector<HealthCheckResult> history(std::string_view name) const {
        detail::LockGuard lock(mutex_);
        const auto state = find(name);
        std::vector<HealthCheckResult> out;
        out.reserve(state->ring.size());
        const std::size_t n = state->ring.size();
        const std::size_t start = n < state->check.history ? 0 : state->ring_next;
        for (std::size_t i = 0; i < n; ++i) {
            out.push_back(state->ring[(start + i) % n]);
        }
        return out;
    }

    std::vector<std::string> names() const {
        detail::LockGuard lock(mutex_);
        std::vector<std::string> out;
        out.reserve(checks_.size());
        for (const auto& s : checks_) {
            out.push_back(s->check.name);
        }
        return out;
    }

    HealthReport report() const {
        HealthReport r;
        detail::LockGuard lock(mutex_);
        r.at = clock_->now();
        r.status = overall_;
        r.ready = true;
        r.checks.reserve(checks_.size());
        for (const auto& s : checks_) {
            r.checks.push_back(s->summary);
            r.checks.back().running = s->in_flight;
            if (s->check.critical && (s->last.status == HealthStatus::unhealthy ||
                                      s->last.status == HealthStatus::unknown)) {
                r.ready = false;
            }
        }
        return r;
    }

    Listeners<HealthCheckResult> runs;
    Listeners<HealthCheckResult> changes;
    Listeners<HealthStatusChange> overall_changes;

private:
    std::shared_ptr<HealthCheckState> find(std::string_view name) const BULWARK_REQUIRES(mutex_) {
        for (const auto& s : checks_) {
            if (s->check.name == name) {
                return s;
            }
        }
        throw_invalid_argument("HealthMonitor: no check named '" + std::string(name) + "'");
    }

    // Under mutex_. Starts a run of `s` (or, if its last run is still in flight, reports it as
    // still running). Inline checks (timeout 0) are handed back to run outside the lock.
    void launch(const std::shared_ptr<HealthCheckState>& s, TimePoint now,
                std::vector<Run>& started, std::vector<Run>& inline_runs, HealthPending& pending)
        BULWARK_REQUIRES(mutex_) {
        s->next_due = detail::saturating_add(now, s->check.interval);
        if (s->in_flight) {
            if (s->timeout_reported) {
                HealthCheckResult r = HealthCheckResult::unhealthy(
                    "still running " + detail::format_duration(now - s->deadline) +
                    " after its timeout of " + detail::format_duration(s->check.timeout));
                r.timed_out = true;
                r.checked_at = now;
                r.response_time = now - (s->deadline - s->check.timeout);
                record(*s, std::move(r), pending);
            }
            return;
        }
        s->in_flight = true;
        s->timeout_reported = false;
        const std::uint64_t id = ++s->run_id;
        if (s->check.timeout == Duration::zero()) {
            inline_runs.emplace_back(s, id);
            return;
        }
        s->deadline = detail::saturating_add(now, s->check.timeout);
        if (!post(s, id)) {
            s->in_flight = false;
            HealthCheckResult r = HealthCheckResult::unhealthy(
                "not run: all " + std::to_string(options_.max_check_threads) +
                " check threads are busy (stuck checks?)");
            r.checked_at = now;
            record(*s, std::move(r), pending);
            return;
        }
        started.emplace_back(s, id);
    }

    // Under mutex_. Hands the run to a check thread, starting one if none is idle. False when
    // max_check_threads are all busy or a thread cannot be started.
    bool post(const std::shared_ptr<HealthCheckState>& s, std::uint64_t id)
        BULWARK_REQUIRES(mutex_) {
        if (shutdown_) {
            return false;
        }
        if (busy_ >= threads_) {
            if (threads_ >= options_.max_check_threads) {
                return false;
            }
            try {
                std::thread([core = this->shared_from_this()] { core->worker(); }).detach();
            } catch (const std::system_error&) {
                return false;
            }
            ++threads_;
        }
        ++busy_;
        tasks_.emplace_back(s, id);
        flying_.push_back(s);
        cv_.notify_all();
        return true;
    }

    void worker() {
        detail::UniqueLock lock(mutex_);
        for (;;) {
            while (!shutdown_ && tasks_.empty()) {
                cv_.wait(lock.native());
            }
            if (tasks_.empty()) {
                break;
            }
            Run task = std::move(tasks_.front());
            tasks_.erase(tasks_.begin());
            const TimePoint start = clock_->now();
            lock.unlock();
            execute(task.first, task.second, start);
            lock.lock();
        }
        --threads_;
        cv_.notify_all();
    }

    // Runs the check (outside the lock) and records its result unless the run was already
    // reported as timed out. A run that returns after the monitor shut down touches neither the
    // clock nor the listeners: they may be gone.
    void execute(const std::shared_ptr<HealthCheckState>& s, std::uint64_t id, TimePoint start) {
        HealthCheckResult r;
        try {
            r = s->check.probe();
        } catch (const std::exception& e) {
            r = HealthCheckResult::unhealthy(std::string("the check threw: ") + e.what());
        } catch (...) {
            r = HealthCheckResult::unhealthy("the check threw a non-standard exception");
        }
        if (r.status == HealthStatus::unknown) {
            r.status = HealthStatus::unhealthy;
            if (r.message.empty()) {
                r.message = "the check reported no status";
            }
        }
        HealthPending pending;
        {
            detail::LockGuard lock(mutex_);
            if (!s->in_flight || s->run_id != id) {
                return;
            }
            if (shutdown_) {
                finish(s);
                return;
            }
            const TimePoint end = clock_->now();
            if (s->timeout_reported) {
                ++s->summary.late_results;
                finish(s);
                return;
            }
            if (s->check.timeout > Duration::zero() && end >= s->deadline) {
                report_timeout(*s, pending);
            } else {
                r.checked_at = end;
                r.response_time = end - start;
                record(*s, std::move(r), pending);
            }
            // The run ends only after its listeners ran, so that run_now() and run_due() return
            // with them done; meanwhile expire() leaves it alone.
            s->completing = true;
        }
        emit(pending);
        detail::LockGuard lock(mutex_);
        finish(s);
    }

    // Under mutex_: the run of `s` in flight has ended.
    void finish(const std::shared_ptr<HealthCheckState>& s) BULWARK_REQUIRES(mutex_) {
        s->in_flight = false;
        s->completing = false;
        if (s->check.timeout > Duration::zero()) {
            flying_.erase(std::find(flying_.begin(), flying_.end(), s));
            --busy_;  // here, not after execute() returns: the thread is free for the next run
        }
        cv_.notify_all();
    }

    // Under mutex_: reports every run on a check thread that is past its deadline as timed out.
    void expire(TimePoint now, HealthPending& pending) BULWARK_REQUIRES(mutex_) {
        for (const auto& s : flying_) {
            if (!s->timeout_reported && !s->completing && now >= s->deadline) {
                report_timeout(*s, pending);
            }
        }
    }

    void report_timeout(HealthCheckState& s, HealthPending& pending) BULWARK_REQUIRES(mutex_) {
        s.timeout_reported = true;
        ++s.summary.timeouts;
        HealthCheckResult r = HealthCheckResult::unhealthy(
            "timed out after " + detail::format_duration(s.check.timeout));
        r.timed_out = true;
        r.checked_at = s.deadline;
        r.response_time = s.check.timeout;
        record(s, std::move(r), pending);
    }

    // Under mutex_: makes `r` the check's latest result.
    void record(HealthCheckState& s, HealthCheckResult r, HealthPending& pending)
        BULWARK_REQUIRES(mutex_) {
        r.name = s.check.name;
        r.critical = s.check.critical;
        r.previous = s.last.status;
        HealthCheckSummary& sum = s.summary;
        ++sum.runs;
        if (r.status == HealthStatus::unhealthy) {
            ++sum.failures;
            ++sum.consecutive_failures;
        } else {
            sum.consecutive_failures = 0;
        }
        if (s.ring.size() < s.check.history) {
            s.ring.push_back(r);
        } else {
            s.ring[s.ring_next] = r;
            s.ring_next = (s.ring_next + 1) % s.check.history;
        }
        const bool changed = r.status != s.last.status;
        s.last = r;
        if (s.removed) {
            return;
        }
        if (!runs.empty()) {
            pending.runs.push_back(r);
        }
        if (changed) {
            pending.changes.push_back(std::move(r));
            update_overall(pending);
        }
    }

    void update_overall(HealthPending& pending) BULWARK_REQUIRES(mutex_) {
        const HealthStatus now_overall = compute_overall();
        if (now_overall != overall_) {
            const HealthStatus from = pending.overall ? pending.overall->from : overall_;
            pending.overall = HealthStatusChange{from, now_overall, clock_->now()};
            overall_ = now_overall;
        }
    }

    // Unhealthy if a critical check is unhealthy; else unknown while any check has not run;
    // else degraded if any check is degraded or a non-critical one unhealthy; else healthy.
    HealthStatus compute_overall() const BULWARK_REQUIRES(mutex_) {
        bool unknown = false;
        bool degraded = false;
        for (const auto& s : checks_) {
            switch (s->last.status) {
                case HealthStatus::unhealthy:
                    if (s->check.critical) {
                        return HealthStatus::unhealthy;
                    }
                    degraded = true;
                    break;
                case HealthStatus::degraded:
                    degraded = true;
                    break;
                case HealthStatus::unknown:
                    unknown = true;
                    break;
                case HealthStatus::healthy:
                    break;
            }
        }
        if (unknown) {
            return HealthStatus::unknown;
        }
        return degraded ? HealthStatus::degraded : HealthStatus::healthy;
    }

    void emit(HealthPending& pending) {
        for (const HealthCheckResult& r : pending.runs) {
            runs.emit(r);
        }
        for (const HealthCheckResult& r : pending.changes) {
            changes.emit(r);
        }
        if (pending.overall && pending.overall->from != pending.overall->to) {
            overall_changes.emit(*pending.overall);
        }
    }

    const HealthMonitorOptions options_;
    Clock* const clock_;
    mutable detail::Mutex mutex_;
    std::condition_variable cv_;  // completions, new checks, stop, thread exits, new tasks
    // In the order added.
    std::vector<std::shared_ptr<HealthCheckState>> checks_ BULWARK_GUARDED_BY(mutex_);
    std::vector<Run> tasks_ BULWARK_GUARDED_BY(mutex_);  // runs waiting for a check thread
    // Checks with a run on a thread.
    std::vector<std::shared_ptr<HealthCheckState>> flying_ BULWARK_GUARDED_BY(mutex_);
    std::size_t threads_ BULWARK_GUARDED_BY(mutex_) = 0;  // check threads alive
    // Runs posted and not finished (queued or running).
    std::size_t busy_ BULWARK_GUARDED_BY(mutex_) = 0;
    HealthStatus overall_ BULWARK_GUARDED_BY(mutex_) = HealthStatus::healthy;
    bool stop_requested_ BULWARK_GUARDED_BY(mutex_) = false;
    bool shutdown_ BULWARK_GUARDED_BY(mutex_) = false;
};

}  // namespace detail

}  // namespace bulwark

#endif  // BULWARK_DETAIL_HEALTH_CORE_HPP
// #include <bulwark/detail/json.hpp> (already included above)
// #include <bulwark/detail/mutex.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/detail/traits.hpp> (already included above)
// #include <bulwark/events.hpp> (already included above)
// #include <bulwark/health_check.hpp> (already included above)

namespace bulwark {

// Runs health checks on a schedule, keeps their history, tells listeners when a check's status
// changes and renders reports for liveness, readiness and detailed endpoints.
//   bulwark::HealthMonitor monitor;                        // optional options and clock
//   monitor.add_check({"database", [] { return db.ping(); }, 60s, 10s, /*critical*/ true});
//   monitor.on_change([](const bulwark::HealthCheckResult& r) { alert(r); });
//   monitor.start();                      // one scheduler thread; or call run_due() yourself
//   std::string json = monitor.report().to_json();
// Checks with a timeout run on a few reusable check threads (HealthMonitorOptions); the
// scheduler never waits for them, so a stuck check delays no other check and never blocks
// stop(). An overrunning check is reported unhealthy when its timeout passes; it keeps running
// until it returns (C++ cannot kill it), is not started again meanwhile, and its late result is
// discarded (counted in late_results). Its captures must therefore outlive it: capture what it
// uses by value or shared_ptr if the monitor may be destroyed first.
// Thread-safe: every member may be called from any thread. Listeners run outside the lock, on
// the thread that recorded the result (scheduler, check thread or run_now()/run_due() caller).
// HealthMonitor is BasicHealthMonitor<>: a class template only so that its code is compiled
// in translation units that use it (the umbrella header stays cheap); use the alias.
template <class Tag = void>
class BasicHealthMonitor {
public:
    explicit BasicHealthMonitor(Clock& clock = default_clock())
        : BasicHealthMonitor(HealthMonitorOptions{}, clock) {}

    explicit BasicHealthMonitor(HealthMonitorOptions options, Clock& clock = default_clock())
        : core_((options.validate(), std::make_shared<Core>(options, clock))) {}

    BasicHealthMonitor(const BasicHealthMonitor&) = delete;
    BasicHealthMonitor& operator=(const BasicHealthMonitor&) = delete;

    // Stops the scheduler, ends idle check threads and waits for running checks until they
    // return or their timeout passes; a check still stuck after that is left to finish on its
    // own thread.
    ~BasicHealthMonitor() {
        stop();
        core_->shut_down();
    }

    // Throws std::invalid_argument for invalid fields (see HealthCheck) or a duplicate name.
    // The check first runs at the next scheduling pass.
    void add_check(HealthCheck check) { core_->add(std::move(check)); }

    // False if there is no such check. A run in flight finishes; its result is dropped.
    bool remove_check(std::string_view name) { return core_->remove(name); }

    // A breaker's state as a check, named after the breaker: closed or disabled -> healthy,
    // half_open -> degraded, open or forced_open -> unhealthy. It reads one atomic, so it runs
    // inline (no timeout). The breaker must outlive the monitor (or remove_check() it).
    // Needs <bulwark/breaker_health.hpp> (the umbrella has it), which joins the two layers: a
    // monitor does not depend on the breaker, and the check is made by breaker_health_check(),
    // found by argument-dependent lookup for any breaker type that provides one.
    template <class Breaker>
    void add_breaker(const Breaker& breaker, bool critical = false,
                     Duration interval = std::chrono::seconds(1)) {
        add_check(breaker_health_check(breaker, critical, interval));
    }

    // Called once per change of a check's status (the first run included: unknown -> x), not on
    // every run. Each on_xxx() returns the id that remove_listener() takes and throws
    // std::invalid_argument for an empty listener.
    ListenerId on_change(std::function<void(const HealthCheckResult&)> listener) {
        return core_->changes.add(std::move(listener));
    }
    // Called with every recorded result, changed or not.
    ListenerId on_run(std::function<void(const HealthCheckResult&)> listener) {
        return core_->runs.add(std::move(listener));
    }
    // Called on every change of the overall status.
    ListenerId on_overall_change(std::function<void(const HealthStatusChange&)> listener) {
        return core_->overall_changes.add(std::move(listener));
    }
    // Stops calling a listener added by any on_xxx(); false if the id is unknown here or
    // already removed.
    bool remove_listener(ListenerId id) noexcept {
        return core_->changes.remove(id) || core_->runs.remove(id) ||
               core_->overall_changes.remove(id);
    }

    // Starts the scheduler thread (once; a second start() does nothing).
    void start() {
        detail::LockGuard lock(thread_mutex_);
        if (scheduler_.joinable()) {
            return;
        }
        core_->request_stop(false);
        scheduler_ = std::thread([core = core_] { core->schedule_loop(); });
    }

    // Stops the scheduler thread and returns once it has: within one scheduling pass, since the
    // scheduler never waits for a check with a timeout. Checks in flight go on; start() again
    // resumes.
    void stop() {
        detail::LockGuard lock(thread_mutex_);
        if (!scheduler_.joinable()) {
            return;
        }
        core_->request_stop(true);
        scheduler_.join();
    }

    bool running() const {
        detail::LockGuard lock(thread_mutex_);
        return scheduler_.joinable();
    }

    // For tests and for users with their own event loop: starts every check that is due and
    // waits until each has a result or has timed out. Returns how many were started.
    std::size_t run_due() {
        std::size_t count = 0;
        const auto started = core_->pass({}, &count);
        core_->wait_for(started);
        return count + started.size();
    }

    // Runs one check now, whatever its schedule (or waits for its run in flight), and returns
    // its result. Throws std::invalid_argument for an unknown name.
    HealthCheckResult run_now(std::string_view name) { return core_->run_now(name); }

    // The overall status: unhealthy if a critical check is unhealthy; else unknown while a check
    // has not run yet; else degraded if any check is degraded or a non-critical one unhealthy;
    // else healthy (also with no checks).
    HealthStatus status() const { return core_->status(); }
    // One check's latest status. Throws std::invalid_argument for an unknown name.
    HealthStatus status(std::string_view name) const { return core_->status(name); }
    // One check's kept results, oldest first.
    std::vector<HealthCheckResult> history(std::string_view name) const {
        return core_->history(name);
    }
    std::vector<std::string> names() const { return core_->names(); }
    HealthReport report() const { return core_->report(); }

private:
    using Core = detail::BasicHealthCore<Tag>;

    std::shared_ptr<Core> core_;
    mutable detail::Mutex thread_mutex_;
    std::thread scheduler_ BULWARK_GUARDED_BY(thread_mutex_);
};

using HealthMonitor = BasicHealthMonitor<>;

}  // namespace bulwark

#endif  // BULWARK_HEALTH_HPP
// #include <bulwark/inline_vector.hpp> (already included above)
// #include <bulwark/metrics.hpp>
// Metrics: to_prometheus() renders every component's statistics in the Prometheus text format.
#ifndef BULWARK_METRICS_HPP
#define BULWARK_METRICS_HPP

// Renders the components' statistics in the Prometheus text exposition format (0.0.4).
//
// This header includes no component header: it forward-declares the component types and renders
// each one in a template (detail::MetricsRenderer<T>) whose member accesses depend on a template
// parameter, so they are compiled only when to_prometheus() is called with that type — and by
// then the caller has included the component's own header. Including <bulwark/metrics.hpp> costs
// a few standard headers, not the library.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/detail/utf8.hpp> (already included above)
// #include <bulwark/metrics_writer.hpp> (already included above)

namespace bulwark {

template <class Tag>
class BasicCircuitBreaker;
template <class Tag>
class BasicCircuitBreakerRegistry;
template <class Tag>
class BasicDegradation;
template <class Tag>
class BasicBulkhead;
template <class Tag>
class BasicRateLimiter;
template <class Tag>
class BasicRetryPolicy;
template <class Tag>
class BasicTimeout;
template <class Tag>
class BasicLoadShedder;
template <class Tag>
class BasicHedging;
template <class T>
class Fallback;
template <class Key, class T, class Hash, class Equal>
class CacheFallback;
template <class Signature>
class FallbackChain;
template <class Tag>
class BasicHealthMonitor;
template <class Tag>
class BasicResourceManager;
class DeadLetterStore;
template <class Tag>
class BasicInMemoryDeadLetterStore;
enum class DeadLetterReason : std::uint8_t;
template <class Message>
class DeliveryEngine;

// A component with the name its metrics are labelled with: components without a name of their
// own (RetryPolicy, Bulkhead, RateLimiter, Timeout, Fallback, CacheFallback, LoadShedder,
// Hedging) need one; for the others it overrides the default (a breaker's own name, "chain",
// "degradation", "health", "resources").
//   bulwark::to_prometheus(bulwark::metric_name("sms_retry", retry), breaker);
// Holds a reference: the component must outlive the Named.
template <class T>
class Named {
public:
    using component_type = T;

    Named(std::string name, T& component) : name_(std::move(name)), component_(&component) {}

    const std::string& name() const noexcept { return name_; }
    T& component() const noexcept { return *component_; }

private:
    std::string name_;
    T* component_;
};

template <class T>
Named<T> metric_name(std::string name, T& component) {
    return Named<T>(std::move(name), component);
}
// A temporary component would be gone before it is rendered.
template <class T>
Named<T> metric_name(std::string name, const T&& component) = delete;

namespace detail {

template <class T, class U>
struct dependent_type {
    using type = U;
};

template <class T>
struct is_named : std::false_type {};
template <class T>
struct is_named<Named<T>> : std::true_type {};

// One sample per enumerator from 0 to `last`, 1 for `current` and 0 for the others: the usual
// way to expose a state as a gauge. to_string(E) is found by argument-dependent lookup.
template <class E>
void write_enum(MetricsWriter& w, std::string_view family, std::string_view help,
                MetricLabels labels, std::string_view label, E current, E last) {
    labels.emplace_back(label, std::string_view());
    for (int i = 0; i <= static_cast<int>(last); ++i) {
        const E e = static_cast<E>(i);
        labels.back().second = to_string(e);
        w.add_gauge(family, help, labels, e == current);
    }
}

// How each component type is rendered. A specialization has:
//   known: to_prometheus() accepts the type;
//   needs_name: it has no name of its own, so it must come wrapped in metric_name();
//   accepts_name: metric_name() may wrap it;
//   default_name(c): the name used when it is not wrapped;
//   write(w, c, name): adds its samples (c is const unless noted).
template <class T>
struct MetricsRenderer {
    static constexpr bool known = false;
    static constexpr bool needs_name = false;
    static constexpr bool accepts_name = true;
    template <class C>
    static std::string_view default_name(const C&) noexcept {
        return {};
    }
    template <class C>
    static void write(MetricsWriter&, C&, std::string_view) {}
};

// Common parts of the renderers of components without a name of their own.
struct UnnamedRenderer {
    static constexpr bool known = true;
    static constexpr bool needs_name = true;
    static constexpr bool accepts_name = true;
    template <class C>
    static std::string_view default_name(const C&) noexcept {
        return {};
    }
};

template <class Tag>
struct MetricsRenderer<BasicCircuitBreaker<Tag>> {
    static constexpr bool known = true;
    static constexpr bool needs_name = false;
    static constexpr bool accepts_name = true;
    template <class B>
    static std::string_view default_name(const B& b) noexcept {
        return b.name();
    }
    template <class B>
    static void write(MetricsWriter& w, const B& b, std::string_view name) {
        const auto s = b.stats();  // one consistent snapshot (takes the breaker's lock)
        using State = decltype(s.state);
        const MetricLabels l{{"name", name}};
        write_enum(w, "bulwark_circuit_breaker_state",
                   "Circuit breaker state: 1 for the current state, 0 for the others.", l, "state",
                   s.state, State::disabled);
        w.add_counter("bulwark_circuit_breaker_calls_total",
                      "Results recorded: successes + failures + ignored + inner rejections.", l,
                      s.calls);
        w.add_counter("bulwark_circuit_breaker_successes_total", "Results that were not failures.",
                      l, s.successes);
        w.add_counter("bulwark_circuit_breaker_failures_total",
                      "Failed results, timeouts and expired probes included.", l, s.failures);
        w.add_counter("bulwark_circuit_breaker_ignored_total",
                      "Exceptions outside the handled set.", l, s.ignored);
        w.add_counter("bulwark_circuit_breaker_inner_rejections_total",
                      "Rejections by inner policies, neither successes nor failures.", l,
                      s.inner_rejections);
        w.add_counter("bulwark_circuit_breaker_slow_calls_total",
                      "Calls slower than the slow-call threshold.", l, s.slow);
        w.add_counter("bulwark_circuit_breaker_timeouts_total",
                      "Calls slower than call_timeout (also counted as failures).", l, s.timeouts);
        w.add_counter("bulwark_circuit_breaker_rejected_total",
                      "Calls refused while open, forced open or half-open and full.", l,
                      s.rejected);
        w.add_counter("bulwark_circuit_breaker_opened_total", "Times the breaker opened.", l,
                      s.opened);
        w.add_counter("bulwark_circuit_breaker_expired_probes_total",
                      "Half-open probes that reported nothing in time.", l, s.expired_probes);
        w.add_gauge("bulwark_circuit_breaker_window_calls", "Calls in the current window.", l,
                    s.window_calls);
        w.add_gauge("bulwark_circuit_breaker_window_failures", "Failures in the current window.", l,
                    s.window_failures);
        w.add_gauge("bulwark_circuit_breaker_window_slow_calls",
                    "Slow calls in the current window.", l, s.window_slow);
        w.add_gauge("bulwark_circuit_breaker_failure_rate",
                    "Failures / calls in the current window (0 when empty).", l, s.failure_rate);
        w.add_gauge("bulwark_circuit_breaker_slow_call_rate",
                    "Slow calls / calls in the current window (0 when empty).", l,
                    s.slow_call_rate);
        w.add_gauge("bulwark_circuit_breaker_consecutive_failures",
                    "Failures since the last success.", l, s.consecutive_failures);
        w.add_gauge("bulwark_circuit_breaker_time_in_state_seconds",
                    "Time since the last state change.", l, seconds(s.time_in_state));
        w.add_gauge("bulwark_circuit_breaker_retry_after_seconds",
                    "While open: time until probes are admitted (else 0).", l,
                    seconds(s.retry_after));
    }
};

template <class Tag>
struct MetricsRenderer<BasicCircuitBreakerRegistry<Tag>> {
    static constexpr bool known = true;
    static constexpr bool needs_name = false;
    // Each breaker is labelled with its own name.
    static constexpr bool accepts_name = false;
    template <class R>
    static std::string_view default_name(const R&) noexcept {
        return {};
    }
    template <class R>
    static void write(MetricsWriter& w, const R& registry, std::string_view) {
        // In name order, under the registry's shared lock: breakers created meanwhile wait.
        registry.for_each([&w](const auto& b) {
            MetricsRenderer<BasicCircuitBreaker<Tag>>::write(w, b, b.name());
        });
    }
};

template <class Signature>
struct MetricsRenderer<FallbackChain<Signature>> {
    static constexpr bool known = true;
    static constexpr bool needs_name = false;
    static constexpr bool accepts_name = true;
    static std::string_view default_name(const FallbackChain<Signature>&) noexcept {
        return "chain";
    }
    static void write(MetricsWriter& w, const FallbackChain<Signature>& chain,
                      std::string_view name) {
        // Each channel's counters are read without a lock: a channel's own numbers may be
        // mid-update against each other while an execute is running.
        for (const auto& s : chain.stats()) {
            const MetricLabels l{{"chain", name}, {"channel", s.name}};
            w.add_counter("bulwark_fallback_chain_channel_calls_total",
                          "Times the channel was called through the chain.", l, s.calls);
            w.add_counter("bulwark_fallback_chain_channel_successes_total",
                          "Calls of the channel that delivered.", l, s.successes);
            w.add_counter("bulwark_fallback_chain_channel_failures_total",
                          "Calls of the channel that failed.", l, s.failures);
            w.add_counter("bulwark_fallback_chain_channel_skipped_total",
                          "Times the channel was passed over without a call.", l, s.skipped);
            w.add_counter("bulwark_fallback_chain_channel_fallbacks_total",
                          "Times the channel delivered after an earlier channel did not.", l,
                          s.fallbacks);
            w.add_gauge("bulwark_fallback_chain_channel_success_rate",
                        "Successes / calls over the chain's life (1 with no calls).", l,
                        s.success_rate);
            w.add_gauge("bulwark_fallback_chain_channel_recent_success_rate",
                        "Successes / calls over the last (up to) 32 calls (1 with no calls).", l,
                        s.recent_success_rate);
            w.add_gauge("bulwark_fallback_chain_channel_mean_latency_seconds",
                        "Mean duration of the channel's calls.", l, seconds(s.mean_latency));
        }
    }
};

template <class Tag>
struct MetricsRenderer<BasicDegradation<Tag>> {
    static constexpr bool known = true;
    static constexpr bool needs_name = false;
    static constexpr bool accepts_name = true;
    template <class D>
    static std::string_view default_name(const D&) noexcept {
        return "degradation";
    }
    template <class D>
    static void write(MetricsWriter& w, const D& d, std::string_view name) {
        const auto level = d.level();
        using Level = decltype(level);
        const MetricLabels l{{"name", name}};
        w.add_gauge("bulwark_degradation_level",
                    "Degradation level in force: 0 normal, 1 minor, 2 moderate, 3 severe, "
                    "4 critical.",
                    l, static_cast<int>(level));
        write_enum(w, "bulwark_degradation_state",
                   "Degradation level in force: 1 for the current level, 0 for the others.", l,
                   "level", level, Level::critical);
    }
};

template <class Tag>
struct MetricsRenderer<BasicHealthMonitor<Tag>> {
    static constexpr bool known = true;
    static constexpr bool needs_name = false;
    static constexpr bool accepts_name = true;
    static std::string_view default_name(const BasicHealthMonitor<Tag>&) noexcept {
        return "health";
    }
    static void write(MetricsWriter& w, const BasicHealthMonitor<Tag>& monitor,
                      std::string_view name) {
        const auto report = monitor.report();  // a snapshot: runs no check
        using Status = decltype(report.status);
        const MetricLabels l{{"name", name}};
        write_enum(w, "bulwark_health_status",
                   "Overall health: 1 for the current status, 0 for the others.", l, "status",
                   report.status, Status::unhealthy);
        w.add_gauge("bulwark_health_ready", "1 when every critical check is healthy or degraded.",
                    l, report.ready);
        for (const auto& c : report.checks) {
            const MetricLabels cl{{"name", name}, {"check", c.last.name}};
            write_enum(w, "bulwark_health_check_status",
                       "Latest status of the check: 1 for the current status, 0 for the others.",
                       cl, "status", c.last.status, Status::unhealthy);
            w.add_gauge("bulwark_health_check_critical",
                        "1 if the check decides readiness (a critical check).", cl,
                        c.last.critical);
            w.add_counter("bulwark_health_check_runs_total", "Runs of the check.", cl, c.runs);
            w.add_counter("bulwark_health_check_failures_total",
                          "Unhealthy results, timeouts included.", cl, c.failures);
            w.add_counter("bulwark_health_check_timeouts_total", "Runs that overran their timeout.",
                          cl, c.timeouts);
            w.add_counter("bulwark_health_check_late_results_total",
                          "Results that came back after their run was reported.", cl,
                          c.late_results);
            w.add_gauge("bulwark_health_check_consecutive_failures", "Unhealthy results in a row.",
                        cl, c.consecutive_failures);
            w.add_gauge("bulwark_health_check_response_time_seconds",
                        "How long the latest run took (its timeout if it overran).", cl,
                        seconds(c.last.response_time));
            w.add_gauge("bulwark_health_check_running", "1 while a run is in flight.", cl,
                        c.running);
        }
    }
};

template <class Tag>
struct MetricsRenderer<BasicResourceManager<Tag>> {
    static constexpr bool known = true;
    static constexpr bool needs_name = false;
    static constexpr bool accepts_name = true;
    static std::string_view default_name(const BasicResourceManager<Tag>&) noexcept {
        return "resources";
    }
    template <class M>
    static void write(MetricsWriter& w, M& manager, std::string_view name) {
        static_assert(!std::is_const<M>::value,
                      "bulwark::to_prometheus: pass the ResourceManager non-const: report() reads "
                      "the gauges whose cached reading has expired.");
        const auto report = manager.report();
        using Status = decltype(report.worst);
        const MetricLabels l{{"name", name}};
        write_enum(w, "bulwark_resource_worst_status",
                   "Worst status of any resource: 1 for the current status, 0 for the others.", l,
                   "status", report.worst, Status::exhausted);
        for (const auto& r : report.resources) {
            const MetricLabels rl{{"name", name}, {"resource", r.name}};
            write_enum(w, "bulwark_resource_status",
                       "Status of the resource: 1 for the current status, 0 for the others.", rl,
                       "status", r.status, Status::exhausted);
            w.add_gauge("bulwark_resource_quota", "1 for a quota, 0 for a gauge.", rl, r.quota);
            w.add_gauge("bulwark_resource_usage_ratio",
                        "Share of the resource in use, 1 = all of it (a quota may exceed 1; NaN "
                        "when unread).",
                        rl, r.percent / 100.0);
            w.add_gauge("bulwark_resource_peak_usage_ratio",
                        "Highest share in use since the resource was added (1 = all of it).", rl,
                        r.peak_percent / 100.0);
            w.add_gauge("bulwark_resource_warning_threshold_ratio",
                        "Share in use from which the resource is in warning.", rl,
                        r.thresholds.warning / 100.0);
            w.add_gauge("bulwark_resource_critical_threshold_ratio",
                        "Share in use from which the resource is critical.", rl,
                        r.thresholds.critical / 100.0);
            w.add_counter("bulwark_resource_readings_total", "Readings of the resource.", rl,
                          r.readings);
            w.add_counter("bulwark_resource_warning_entries_total",
                          "Entries into warning from a better status.", rl, r.times_warning);
            w.add_counter("bulwark_resource_critical_entries_total",
                          "Entries into critical or exhausted.", rl, r.times_critical);
            if (r.quota) {
                w.add_gauge("bulwark_resource_quota_used", "Quota used within the window.", rl,
                            r.used);
                w.add_gauge("bulwark_resource_quota_limit", "Quota limit per window.", rl, r.limit);
                w.add_gauge("bulwark_resource_quota_window_seconds", "Length of the quota window.",
                            rl, seconds(r.window));
            }
        }
    }
};

template <class Tag>
struct MetricsRenderer<BasicRetryPolicy<Tag>> : UnnamedRenderer {
    template <class P>
    static void write(MetricsWriter& w, const P& p, std::string_view name) {
        const auto s = p.stats();
        const MetricLabels l{{"name", name}};
        w.add_counter("bulwark_retry_calls_total",
                      "Operations run through the policy (with count_calls; else those that "
                      "failed first).",
                      l, s.calls);
        w.add_counter("bulwark_retry_retries_total", "Retries made.", l, s.retries);
        w.add_counter("bulwark_retry_successes_after_retry_total",
                      "Operations that succeeded on a retry.", l, s.successes_after_retry);
        w.add_counter("bulwark_retry_exhausted_total",
                      "Operations given up on: retries, time or budget ran out.", l, s.exhausted);
        w.add_counter("bulwark_retry_not_retryable_total",
                      "Operations that failed with something not worth retrying.", l,
                      s.not_retryable);
        w.add_counter("bulwark_retry_budget_exhausted_total",
                      "Of the exhausted, those refused by the retry budget.", l,
                      s.budget_exhausted);
    }
};

template <class Tag>
struct MetricsRenderer<BasicBulkhead<Tag>> : UnnamedRenderer {
    template <class P>
    static void write(MetricsWriter& w, const P& p, std::string_view name) {
        const auto s = p.stats();
        const MetricLabels l{{"name", name}};
        w.add_gauge("bulwark_bulkhead_max_concurrent", "Calls allowed inside at once.", l,
                    s.max_concurrent);
        w.add_gauge("bulwark_bulkhead_max_queue", "Calls allowed to wait for a slot.", l,
                    s.max_queue);
        w.add_gauge("bulwark_bulkhead_in_flight", "Calls inside now.", l, s.in_flight);
        w.add_gauge("bulwark_bulkhead_queued", "Calls waiting for a slot now.", l, s.queued);
        w.add_counter("bulwark_bulkhead_admitted_total", "Calls that got a slot.", l, s.admitted);
        w.add_counter("bulwark_bulkhead_rejected_total", "Calls rejected for any reason.", l,
                      s.rejected);
        w.add_counter("bulwark_bulkhead_queue_timeouts_total",
                      "Of the rejected, calls that timed out in the queue.", l, s.queue_timeouts);
    }
};

template <class Tag>
struct MetricsRenderer<BasicRateLimiter<Tag>> : UnnamedRenderer {
    template <class P>
    static void write(MetricsWriter& w, const P& p, std::string_view name) {
        const auto s = p.stats();
        const MetricLabels l{{"name", name}};
        w.add_counter("bulwark_rate_limiter_admitted_total", "Permits granted.", l, s.admitted);
        w.add_counter("bulwark_rate_limiter_rejected_total", "Requests refused.", l, s.rejected);
        w.add_counter("bulwark_rate_limiter_waited_total",
                      "Requests that waited before being granted.", l, s.waited);
    }
};

template <class Tag>
struct MetricsRenderer<BasicTimeout<Tag>> : UnnamedRenderer {
    template <class P>
    static void write(MetricsWriter& w, const P& p, std::string_view name) {
        const auto s = p.stats();
        const MetricLabels l{{"name", name}};
        w.add_counter("bulwark_timeout_timeouts_total", "Results replaced by a TimeoutError.", l,
                      s.timeouts);
        w.add_gauge("bulwark_timeout_duration_seconds", "The configured timeout.", l,
                    seconds(p.timeout()));
    }
};

template <class T>
struct MetricsRenderer<Fallback<T>> : UnnamedRenderer {
    static void write(MetricsWriter& w, const Fallback<T>& p, std::string_view name) {
        const auto s = p.stats();
        const MetricLabels l{{"name", name}};
        w.add_counter("bulwark_fallback_fallbacks_total",
                      "Handled failures answered by the fallback.", l, s.fallbacks);
        w.add_counter("bulwark_fallback_failures_total",
                      "Of the fallbacks, those where the fallback itself failed.", l,
                      s.fallback_failures);
    }
};

template <class Key, class T, class Hash, class Equal>
struct MetricsRenderer<CacheFallback<Key, T, Hash, Equal>> : UnnamedRenderer {
    static void write(MetricsWriter& w, const CacheFallback<Key, T, Hash, Equal>& p,
                      std::string_view name) {
        const auto s = p.stats();
        const MetricLabels l{{"name", name}};
        w.add_counter("bulwark_cache_fallback_stored_total", "Good results remembered.", l,
                      s.stored);
        w.add_counter("bulwark_cache_fallback_served_total",
                      "Failures answered with a remembered value.", l, s.served);
        w.add_counter("bulwark_cache_fallback_misses_total",
                      "Failures with nothing fresh enough to serve.", l, s.misses);
        w.add_counter("bulwark_cache_fallback_evicted_total",
                      "Entries dropped to stay within max_entries.", l, s.evicted);
        w.add_gauge("bulwark_cache_fallback_entries", "Entries held now.", l, s.size);
    }
};

template <class Tag>
struct MetricsRenderer<BasicLoadShedder<Tag>> : UnnamedRenderer {
    template <class P>
    static void write(MetricsWriter& w, const P& p, std::string_view name) {
        const auto s = p.stats();
        const MetricLabels l{{"name", name}};
        w.add_counter("bulwark_load_shedder_passed_total", "Calls let through.", l, s.passed);
        w.add_counter("bulwark_load_shedder_shed_total", "Calls shed.", l, s.shed);
    }
};

template <class Tag>
struct MetricsRenderer<BasicHedging<Tag>> : UnnamedRenderer {
    template <class P>
    static void write(MetricsWriter& w, const P& p, std::string_view name) {
        const auto s = p.stats();
        const MetricLabels l{{"name", name}};
        w.add_counter("bulwark_hedging_calls_total", "Calls through the policy.", l, s.calls);
        w.add_counter("bulwark_hedging_hedges_total", "Hedged attempts started.", l, s.hedges);
        w.add_counter("bulwark_hedging_primary_wins_total",
                      "Calls answered by the primary attempt.", l, s.primary_wins);
        w.add_counter("bulwark_hedging_hedge_wins_total", "Calls answered by a hedged attempt.", l,
                      s.hedge_wins);
        w.add_counter("bulwark_hedging_exhausted_total", "Calls whose every attempt failed.", l,
                      s.exhausted);
    }
};

// Any store through its interface, so a store of your own renders as a DeadLetterStore&.
template <>
struct MetricsRenderer<DeadLetterStore> : UnnamedRenderer {
    template <class P>
    static void write(MetricsWriter& w, const P& p, std::string_view name) {
        // Dependent, so that to_string(DeadLetterReason) is looked up where this is instantiated
        // (dead_letter.hpp is included by then).
        using Reason = typename dependent_type<P, DeadLetterReason>::type;
        const auto s = p.stats();  // one snapshot, under the store's lock
        const MetricLabels l{{"name", name}};
        w.add_gauge("bulwark_dead_letter_max_entries", "Records the store holds at most.", l,
                    p.limits().max_entries);
        const char* help = "Dead letters stored now, by status.";
        w.add_gauge("bulwark_dead_letters", help, with(l, "status", "pending"), s.pending);
        w.add_gauge("bulwark_dead_letters", help, with(l, "status", "reprocessed"), s.reprocessed);
        w.add_gauge("bulwark_dead_letters", help, with(l, "status", "dismissed"), s.dismissed);
        for (std::size_t i = 0; i < s.by_reason.size(); ++i) {
            w.add_gauge("bulwark_dead_letters_by_reason", "Dead letters stored now, by reason.",
                        with(l, "reason", to_string(static_cast<Reason>(i))), s.by_reason[i]);
        }
        // Types and categories come from message data: two that differ only in bytes that are
        // not UTF-8 render as the same label value, so they are summed, not dropped as a
        // duplicate series.
        for (const auto& [type, n] : by_label(s.by_type)) {
            w.add_gauge("bulwark_dead_letters_by_type", "Dead letters stored now, by type.",
                        with(l, "type", type), n);
        }
        for (const auto& [category, n] : by_label(s.by_category)) {
            w.add_gauge("bulwark_dead_letters_by_category",
                        "Dead letters stored now, by category (\"\" = uncategorized).",
                        with(l, "category", category), n);
        }
        w.add_counter("bulwark_dead_letter_added_total", "Records stored by add().", l, s.added);
        w.add_counter("bulwark_dead_letter_duplicate_adds_total",
                      "Adds of an id already stored (nothing stored).", l, s.duplicate_adds);
        const char* rejected = "Adds refused, by cause.";
        w.add_counter("bulwark_dead_letter_rejected_total", rejected, with(l, "cause", "full"),
                      s.rejected_full);
        w.add_counter("bulwark_dead_letter_rejected_total", rejected, with(l, "cause", "too_large"),
                      s.rejected_too_large);
        w.add_counter("bulwark_dead_letter_evicted_total", "Resolved records removed to make room.",
                      l, s.evicted);
        w.add_counter("bulwark_dead_letter_purged_total", "Records removed by purge().", l,
                      s.purged);
        w.add_counter("bulwark_dead_letter_resent_total", "Reprocess handler successes.", l,
                      s.resent);
        w.add_counter("bulwark_dead_letter_redrive_failures_total", "Reprocess handler failures.",
                      l, s.redrive_failures);
    }

private:
    static MetricLabels with(const MetricLabels& labels, std::string_view label,
                             std::string_view value) {
        MetricLabels out = labels;
        out.emplace_back(label, value);
        return out;
    }

    // Counts keyed by the label value each key renders as (bytes that are not UTF-8 become
    // U+FFFD), summed where two keys render alike.
    static std::map<std::string, std::size_t> by_label(
        const std::map<std::string, std::size_t>& counts) {
        std::map<std::string, std::size_t> out;
        for (const auto& [key, n] : counts) {
            std::string shown;
            detail::append_utf8(shown, key, [](std::string& to, char c) { to.push_back(c); });
            out[shown] += n;
        }
        return out;
    }
};

template <class Tag>
struct MetricsRenderer<BasicInMemoryDeadLetterStore<Tag>> : MetricsRenderer<DeadLetterStore> {};

// The engine writes its own series (queue depth, statuses, per-channel attempts, cost and a
// response-time histogram); labelled engine="<its options' name>".
template <class Message>
struct MetricsRenderer<DeliveryEngine<Message>> {
    static constexpr bool known = true;
    static constexpr bool needs_name = false;
    static constexpr bool accepts_name = true;
    template <class E>
    static std::string_view default_name(const E& e) noexcept {
        return e.options().name;
    }
    template <class E>
    static void write(MetricsWriter& w, const E& e, std::string_view name) {
        e.write_metrics(w, name);
    }
};

template <class C>
void write_component(MetricsWriter& w, C& component) {
    if constexpr (is_named<std::remove_const_t<C>>::value) {
        using T = std::remove_const_t<typename std::remove_const_t<C>::component_type>;
        using R = MetricsRenderer<T>;
        static_assert(R::known,
                      "bulwark::to_prometheus: metric_name() wraps a type it cannot render (see "
                      "docs/metrics.md for the supported components).");
        static_assert(R::accepts_name,
                      "bulwark::to_prometheus: a CircuitBreakerRegistry cannot be renamed: each "
                      "breaker is labelled with its own name.");
        R::write(w, component.component(), component.name());
    } else {
        using R = MetricsRenderer<std::remove_const_t<C>>;
        static_assert(R::known,
                      "bulwark::to_prometheus: unsupported argument (see docs/metrics.md for the "
                      "supported components).");
        static_assert(!R::needs_name,
                      "bulwark::to_prometheus: this component has no name of its own: pass "
                      "bulwark::metric_name(\"name\", component).");
        R::write(w, component, R::default_name(component));
    }
}

}  // namespace detail

// Appends the metrics of each component to `writer`, in argument order (a family's samples stay
// together however many components add to it). Each argument is a CircuitBreaker, a
// CircuitBreakerRegistry (every breaker, in name order), a FallbackChain, a Degradation, a
// HealthMonitor, a ResourceManager (non-const: its report reads expired gauges), or a
// metric_name("name", component) wrapping one of these or a RetryPolicy, Bulkhead, RateLimiter,
// Timeout, Fallback, CacheFallback, LoadShedder, Hedging or dead-letter store (an
// InMemoryDeadLetterStore, or any store as a DeadLetterStore&).
//   bulwark::MetricsWriter w;
//   bulwark::to_prometheus(w, registry, bulwark::metric_name("sms_retry", retry));
// Reads each component's stats() or report() (the breaker, cache fallback, health monitor and
// resource manager read theirs under their lock; the others read relaxed counters one by one, so
// a rate may be briefly off while calls run; nothing is consistent across components):
// safe to call while other threads use the components; it takes the locks stats() takes, so
// call it from a scrape handler, not from a hot path. Throws std::invalid_argument as
// MetricsWriter does (a bad name in a label value is fine: values are escaped).
template <class... Components>
MetricsWriter& to_prometheus(MetricsWriter& writer, Components&&... components) {
    (detail::write_component(writer, components), ...);
    return writer;
}

// The exposition of the components' metrics, as above, for a scrape handler to return with
// Content-Type "text/plain; version=0.0.4; charset=utf-8".
//   std::string body = bulwark::to_prometheus(registry, chain, degradation, monitor);
template <class... Components>
std::string to_prometheus(Components&&... components) {
    MetricsWriter writer;
    to_prometheus(writer, components...);
    return writer.str();
}

}  // namespace bulwark

#endif  // BULWARK_METRICS_HPP
// #include <bulwark/policies.hpp>
// The light umbrella: the core and every resilience policy, for code that calls dependencies.
#ifndef BULWARK_POLICIES_HPP
#define BULWARK_POLICIES_HPP

// What most translation units need: outcomes, contexts, pipelines, and the policies that wrap a
// call (breaker, retry, timeout, bulkhead, rate limiter, fallback, cache, hedging, load shedding,
// test policies). Monitoring, routing, storage and the bridges are in <bulwark/bulwark.hpp>.
// #include <bulwark/backoff.hpp> (already included above)
// #include <bulwark/bulkhead.hpp>
// Bulkhead: a concurrency limit with a bounded, timed waiting queue.
#ifndef BULWARK_BULKHEAD_HPP
#define BULWARK_BULKHEAD_HPP

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

// #include <bulwark/clock.hpp> (already included above)
// #include <bulwark/context.hpp> (already included above)
// #include <bulwark/detail/mutex.hpp> (already included above)
// #include <bulwark/detail/striped_counter.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/errors.hpp> (already included above)
// #include <bulwark/events.hpp> (already included above)
// #include <bulwark/outcome.hpp> (already included above)
// #include <bulwark/policy.hpp> (already included above)

namespace bulwark {

struct BulkheadOptions {
    // Calls allowed inside at once. >= 1.
    std::uint32_t max_concurrent = 10;
    // Calls allowed to wait (first in, first out) for a slot; beyond that a call is rejected at
    // once. 0 = no queue (default).
    std::uint32_t max_queue = 0;
    // The longest a queued call waits for a slot (also bounded by the context's deadline and
    // cancellation). > 0 with a queue; without one (max_queue = 0) it is never used, and >= 0.
    Duration queue_timeout = std::chrono::seconds(1);

    // Throws std::invalid_argument naming the field and the value.
    void validate() const {
        if (max_concurrent == 0) {
            detail::throw_invalid_option("BulkheadOptions.max_concurrent", "must be >= 1", "0");
        }
        if (queue_timeout < Duration::zero()) {
            detail::throw_invalid_option("BulkheadOptions.queue_timeout", "must be >= 0",
                                         detail::format_duration(queue_timeout));
        }
        if (max_queue > 0 && queue_timeout == Duration::zero()) {
            detail::throw_invalid_option(
                "BulkheadOptions.queue_timeout",
                "must be > 0 when max_queue > 0 (" + std::to_string(max_queue) + ")",
                detail::format_duration(queue_timeout));
        }
    }
};

enum class BulkheadRejection : std::uint8_t {
    full,           // no slot and no room in the queue
    queue_timeout,  // waited queue_timeout (or the context's deadline) without getting a slot
    cancelled,      // the context was cancelled while waiting
};

struct BulkheadEvent {
    BulkheadRejection reason = BulkheadRejection::full;
    std::uint32_t in_flight = 0;
    std::uint32_t queued = 0;
};

struct BulkheadStats {
    std::uint32_t max_concurrent = 0;
    std::uint32_t max_queue = 0;
    std::uint32_t in_flight = 0;       // calls inside now
    std::uint32_t queued = 0;          // calls waiting now
    std::uint64_t admitted = 0;        // calls that got a slot
    std::uint64_t rejected = 0;        // rejected for any reason
    std::uint64_t queue_timeouts = 0;  // of those, how many timed out in the queue
};

// Caps how many calls run at once, so that one slow dependency cannot take every thread.
//   bulwark::Bulkhead bulkhead(/*max_concurrent*/ 8, /*max_queue*/ 16);
//   bulwark::Bulkhead db("db", {8, 16});                // named: its rejections' source()
//   bulkhead.execute([&] { return db.query(sql); });   // BulkheadFullError when full
//   if (auto permit = bulkhead.try_acquire()) { ... }   // two-step; released with the permit
// Invariant: never more than max_concurrent calls inside. Up to max_queue callers wait, first
// in first out, for at most queue_timeout (or their context's deadline, or until it is
// cancelled: a waiter looks at its context at least every 10 ms, since cancel() notifies no one).
// Thread-safe. An uncontended acquire and release is two atomic read-modify-writes; waiting and
// handing a slot to a waiter take a mutex. Does not allocate.
// Bulkhead is BasicBulkhead<>: a class template only so that a translation unit compiles only the
// members it uses (the Tag is never used).
template <class Tag = void>
class BasicBulkhead : public PolicyBase<BasicBulkhead<Tag>> {
public:
    // A slot inside the bulkhead; released when destroyed. Movable.
    class [[nodiscard]] Permit {
    public:
        Permit() noexcept = default;
        Permit(Permit&& other) noexcept
            : bulkhead_(std::exchange(other.bulkhead_, nullptr)), reason_(other.reason_) {}
        Permit& operator=(Permit&& other) noexcept {
            if (this != &other) {
                release();
                bulkhead_ = std::exchange(other.bulkhead_, nullptr);
                reason_ = other.reason_;
            }
            return *this;
        }
        Permit(const Permit&) = delete;
        Permit& operator=(const Permit&) = delete;
        ~Permit() { release(); }

        explicit operator bool() const noexcept { return bulkhead_ != nullptr; }
        // Why it was refused (meaningful only for a refused permit).
        BulkheadRejection rejection() const noexcept { return reason_; }

        // Gives the slot back before the permit is destroyed.
        void release() noexcept {
            if (bulkhead_ != nullptr) {
                std::exchange(bulkhead_, nullptr)->release_slot();
            }
        }

    private:
        friend class BasicBulkhead;
        explicit Permit(BasicBulkhead* bulkhead) noexcept : bulkhead_(bulkhead) {}
        explicit Permit(BulkheadRejection reason) noexcept : reason_(reason) {}

        BasicBulkhead* bulkhead_ = nullptr;
        BulkheadRejection reason_ = BulkheadRejection::full;
    };

    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    explicit BasicBulkhead(std::uint32_t max_concurrent, std::uint32_t max_queue = 0,
                           Duration queue_timeout = std::chrono::seconds(1),
                           Clock& clock = default_clock())
        : BasicBulkhead(BulkheadOptions{max_concurrent, max_queue, queue_timeout}, clock) {}

    // Throws std::invalid_argument for invalid options. The clock must outlive the bulkhead.
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    explicit BasicBulkhead(BulkheadOptions options, Clock& clock = default_clock())
        : BasicBulkhead(std::string(), options, clock) {}

    // A named bulkhead: its rejections say the name in their message and in
    // RejectedError::source().
    BasicBulkhead(std::string name, BulkheadOptions options, Clock& clock = default_clock())
        : name_(std::make_shared<const std::string>(std::move(name))),
          options_((options.validate(), options)),
          clock_(&clock),
          full_error_(error(
              " is full: " + std::to_string(options_.max_concurrent) + " calls in flight" +
              (options_.max_queue > 0 ? " and " + std::to_string(options_.max_queue) + " queued"
                                      : std::string()))),
          timeout_error_(error(": no slot within the queue timeout of " +
                               detail::format_duration(options_.queue_timeout))),
          cancelled_error_(error(": the call was cancelled while queued")) {}

    BasicBulkhead(const BasicBulkhead&) = delete;
    BasicBulkhead& operator=(const BasicBulkhead&) = delete;

    const BulkheadOptions& options() const noexcept { return options_; }
    // Empty when unnamed.
    const std::string& name() const noexcept { return *name_; }

    // A slot if one is free right now (never waits, never queues). Does not allocate.
    Permit try_acquire() noexcept {
        if (BULWARK_LIKELY(try_take_fast())) {
            admitted_.add();
            return Permit(this);
        }
        reject(BulkheadRejection::full);
        return Permit(BulkheadRejection::full);
    }

    // A slot, waiting in the queue if there is room (up to queue_timeout, the context's deadline
    // or its cancellation).
    Permit acquire(const Context* ctx = nullptr) {
        if (BULWARK_LIKELY(try_take_fast())) {
            admitted_.add();
            return Permit(this);
        }
        return acquire_slow(ctx);
    }

    template <class Next>
    auto apply(Context& ctx, Next&& next) {
        using O = std::invoke_result_t<Next&, Context&>;
        Permit permit = acquire(&ctx);
        if (BULWARK_UNLIKELY(!permit)) {
            return O::from_error(permit.rejection() == BulkheadRejection::full ? full_error_
                                 : permit.rejection() == BulkheadRejection::cancelled
                                     ? cancelled_error_
                                     : timeout_error_);
        }
        return next(ctx);
    }

    // Called on every rejection, with its reason. Returns the id that remove_listener() takes;
    // throws std::invalid_argument for an empty listener.
    ListenerId on_rejected(std::function<void(const BulkheadEvent&)> listener) {
        return rejected_listeners_.add(std::move(listener));
    }
    // Stops calling a listener; false if the id is unknown here or already removed.
    bool remove_listener(ListenerId id) noexcept { return rejected_listeners_.remove(id); }

    BulkheadStats stats() const {
        BulkheadStats s;
        s.max_concurrent = options_.max_concurrent;
        s.max_queue = options_.max_queue;
        s.in_flight = static_cast<std::uint32_t>(
            std::max<std::int64_t>(0, in_flight_.load(std::memory_order_relaxed)));
        {
            detail::LockGuard lock(mutex_);
            s.queued = queued_;
        }
        s.admitted = admitted_.sum();
        s.rejected = rejected_.load(std::memory_order_relaxed);
        s.queue_timeouts = queue_timeouts_.load(std::memory_order_relaxed);
        return s;
    }

private:
    // A caller waiting for a slot; lives on its stack, linked into the queue under mutex_.
    struct Waiter {
        std::condition_variable cv;
        bool granted = false;
        Waiter* next = nullptr;
        Waiter* prev = nullptr;
    };

    // Memory ordering: waiting_ and in_flight_ form a Dekker pair. A releaser decrements
    // in_flight_ then reads waiting_; a waiter increments waiting_ then (dispatching) reads
    // in_flight_. With seq_cst on both sides at least one of them sees the other, so a freed
    // slot is never left unclaimed while someone waits.
    bool try_take_fast() noexcept {
        if (waiting_.load(std::memory_order_seq_cst) != 0) {
            return false;  // first in, first out: do not overtake the queue
        }
        return take_slot();
    }

    bool take_slot() noexcept {
        std::int64_t current = in_flight_.load(std::memory_order_relaxed);
        while (current < static_cast<std::int64_t>(options_.max_concurrent)) {
            if (in_flight_.compare_exchange_weak(current, current + 1, std::memory_order_seq_cst,
                                                 std::memory_order_relaxed)) {
                return true;
            }
        }
        return false;
    }

    void release_slot() noexcept {
        in_flight_.fetch_sub(1, std::memory_order_seq_cst);
        if (waiting_.load(std::memory_order_seq_cst) != 0) {
            detail::LockGuard lock(mutex_);
            dispatch_locked();
        }
    }

    // Under mutex_: hands free slots to the queue's head, in order.
    void dispatch_locked() noexcept BULWARK_REQUIRES(mutex_) {
        while (head_ != nullptr && take_slot()) {
            Waiter* w = head_;
            unlink(w);
            w->granted = true;
            w->cv.notify_one();
        }
    }

    void unlink(Waiter* w) noexcept BULWARK_REQUIRES(mutex_) {
        (w->prev != nullptr ? w->prev->next : head_) = w->next;
        (w->next != nullptr ? w->next->prev : tail_) = w->prev;
        w->next = w->prev = nullptr;
        --queued_;
        waiting_.fetch_sub(1, std::memory_order_seq_cst);
    }

    BULWARK_NOINLINE Permit acquire_slow(const Context* ctx) {
        detail::UniqueLock lock(mutex_);
        if (head_ == nullptr && take_slot()) {
            admitted_.add();
            return Permit(this);
        }
        if (queued_ >= options_.max_queue) {
            lock.unlock();
            reject(BulkheadRejection::full);
            return Permit(BulkheadRejection::full);
        }
        TimePoint deadline = detail::saturating_add(clock_->now(), options_.queue_timeout);
        if (ctx != nullptr && ctx->deadline() && *ctx->deadline() < deadline) {
            deadline = *ctx->deadline();
        }
        Waiter w;
        w.prev = tail_;
        (tail_ != nullptr ? tail_->next : head_) = &w;
        tail_ = &w;
        ++queued_;
        waiting_.fetch_add(1, std::memory_order_seq_cst);
        dispatch_locked();  // a slot may have been freed before we were visible
        BulkheadRejection reason = BulkheadRejection::queue_timeout;
        while (!w.granted) {
            if (ctx != nullptr && ctx->cancelled()) {
                reason = BulkheadRejection::cancelled;
                break;
            }
            if (clock_->now() >= deadline) {
                break;
            }
            // Cancellation notifies nobody, so a waiter with a context wakes at least every
            // cancel_poll to look at it.
            TimePoint wake = deadline;
            if (ctx != nullptr) {
                wake = std::min(deadline, clock_->now() + cancel_poll);
            }
            clock_->wait_until(w.cv, lock.native(), wake);
        }
        if (w.granted) {
            admitted_.add();
            return Permit(this);
        }
        unlink(&w);
        lock.unlock();
        if (reason == BulkheadRejection::queue_timeout) {
            queue_timeouts_.fetch_add(1, std::memory_order_relaxed);
        }
        reject(reason);
        return Permit(reason);
    }

    void reject(BulkheadRejection reason) noexcept {
        // relaxed: statistics.
        rejected_.fetch_add(1, std::memory_order_relaxed);
        rejected_listeners_.emit_with([&] {
            return BulkheadEvent{
                reason,
                static_cast<std::uint32_t>(
                    std::max<std::int64_t>(0, in_flight_.load(std::memory_order_relaxed))),
                static_cast<std::uint32_t>(waiting_.load(std::memory_order_relaxed))};
        });
    }

    // How often a queued waiter with a context looks at its cancellation.
    static constexpr Duration cancel_poll = std::chrono::milliseconds(10);

    // A rejection error, built once: "bulkhead 'name'" followed by `rest`.
    std::exception_ptr error(const std::string& rest) const {
        return std::make_exception_ptr(
            BulkheadFullError(name_, detail::component_label("bulkhead", *name_) + rest));
    }

    const std::shared_ptr<const std::string> name_;
    const BulkheadOptions options_;
    Clock* const clock_;
    const std::exception_ptr full_error_;
    const std::exception_ptr timeout_error_;
    const std::exception_ptr cancelled_error_;

    alignas(detail::cache_line_size) std::atomic<std::int64_t> in_flight_{0};
    alignas(detail::cache_line_size) std::atomic<std::int64_t> waiting_{0};

    mutable detail::Mutex mutex_;
    Waiter* head_ BULWARK_GUARDED_BY(mutex_) = nullptr;
    Waiter* tail_ BULWARK_GUARDED_BY(mutex_) = nullptr;
    std::uint32_t queued_ BULWARK_GUARDED_BY(mutex_) = 0;

    detail::StripedCounter admitted_;
    std::atomic<std::uint64_t> rejected_{0};
    std::atomic<std::uint64_t> queue_timeouts_{0};
    Listeners<BulkheadEvent> rejected_listeners_;
};

using Bulkhead = BasicBulkhead<>;

}  // namespace bulwark

#endif  // BULWARK_BULKHEAD_HPP
// #include <bulwark/cache.hpp>
// CacheFallback: serves the last good value per key when a call fails.
#ifndef BULWARK_CACHE_HPP
#define BULWARK_CACHE_HPP

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <list>
#include <optional>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>

// #include <bulwark/classify.hpp> (already included above)
// #include <bulwark/clock.hpp> (already included above)
// #include <bulwark/context.hpp> (already included above)
// #include <bulwark/detail/mutex.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/events.hpp> (already included above)
// #include <bulwark/outcome.hpp> (already included above)
// #include <bulwark/policy.hpp> (already included above)

namespace bulwark {

// A stale value was served in place of a failed call.
struct StaleServed {
    std::string_view operation;
    Duration age{0};           // how old the served value was
    std::exception_ptr error;  // the failure it answered
};

struct CacheFallbackStats {
    std::uint64_t stored = 0;   // good results remembered
    std::uint64_t served = 0;   // failures answered with a remembered value
    std::uint64_t misses = 0;   // failures with nothing (fresh enough) to serve
    std::uint64_t evicted = 0;  // entries dropped to stay within max_entries
    std::size_t size = 0;       // entries held now
};

// Remembers the last good result per key and serves it when a later call for that key fails:
// stale data instead of an error, for as long as `ttl`.
//   bulwark::CacheFallback<std::string, Quote> last_good(/*ttl*/ 5min);
//   Quote q = last_good.execute(symbol, [&] { return quotes.fetch(symbol); });
//   bulwark::Context ctx; last_good.execute(symbol, fetch, ctx); if (ctx.stale()) warn();
//   bulwark::pipeline(last_good.for_key(symbol), breaker, retry).execute(fetch);
// Bounded: at most max_entries keys, the least recently used evicted first; entries older than
// ttl are never served. Only handled failures are answered (handle<E>() narrows them, as for
// every policy). The caller learns that a value was stale from ctx.stale() and on_stale().
// Thread-safe (one mutex; a success copies its value into the cache). Key must be hashable
// and equality-comparable, T copyable. A success for a key already held allocates nothing
// (when T's copy assignment does not); a new key costs a list and a map node.
template <class Key, class T, class Hash = std::hash<Key>, class Equal = std::equal_to<Key>>
class CacheFallback {
    static_assert(std::is_copy_constructible<T>::value,
                  "bulwark::CacheFallback<Key, T>: T must be copyable (the cache keeps a copy).");

public:
    // The policy for one key, to compose in a pipeline. Holds a reference to the cache.
    class Keyed : public PolicyBase<Keyed> {
    public:
        template <class Next>
        auto apply(Context& ctx, Next&& next) {
            return cache_->apply_for(key_, ctx, next);
        }

    private:
        friend class CacheFallback;
        Keyed(CacheFallback* cache, Key key) : cache_(cache), key_(std::move(key)) {}
        CacheFallback* cache_;
        Key key_;
    };

    // Throws std::invalid_argument unless ttl > 0 and max_entries >= 1. The clock must outlive
    // the cache.
    explicit CacheFallback(Duration ttl, std::size_t max_entries = 10000,
                           Clock& clock = default_clock())
        : ttl_(ttl), max_entries_(max_entries), clock_(&clock) {
        if (ttl <= Duration::zero()) {
            detail::throw_invalid_option("CacheFallback.ttl", "must be > 0",
                                         detail::format_duration(ttl));
        }
        if (max_entries == 0) {
            detail::throw_invalid_option("CacheFallback.max_entries", "must be >= 1", "0");
        }
    }

    CacheFallback(const CacheFallback&) = delete;
    CacheFallback& operator=(const CacheFallback&) = delete;

    Keyed for_key(Key key) { return Keyed(this, std::move(key)); }

    // The one-step forms borrow the key for the call (no copy of it).
    template <class F>
    T execute(const Key& key, F&& f) {
        return Borrowed(this, key).execute(std::forward<F>(f));
    }
    template <class F>
    T execute(const Key& key, F&& f, Context& ctx) {
        return Borrowed(this, key).execute(std::forward<F>(f), ctx);
    }
    template <class F>
    Outcome<T> try_execute(const Key& key, F&& f) noexcept {
        return Borrowed(this, key).try_execute(std::forward<F>(f));
    }
    template <class F>
    Outcome<T> try_execute(const Key& key, F&& f, Context& ctx) noexcept {
        return Borrowed(this, key).try_execute(std::forward<F>(f), ctx);
    }

    template <class E>
    CacheFallback& handle() {
        classifier_.template handle<E>();
        return *this;
    }
    CacheFallback& handle_if(std::function<bool(const std::exception_ptr&)> predicate) {
        classifier_.handle_if(std::move(predicate));
        return *this;
    }

    // The remembered value for `key` if it is younger than ttl.
    std::optional<T> peek(const Key& key) const {
        detail::LockGuard lock(mutex_);
        auto it = index_.find(key);
        if (it == index_.end() || clock_->now() - it->second->stored_at >= ttl_) {
            return std::nullopt;
        }
        return it->second->value;
    }

    void put(const Key& key, T value) {
        detail::LockGuard lock(mutex_);
        store(key, std::move(value));
    }

    void erase(const Key& key) {
        detail::LockGuard lock(mutex_);
        auto it = index_.find(key);
        if (it != index_.end()) {
            lru_.erase(it->second);
            index_.erase(it);
        }
    }

    void clear() {
        detail::LockGuard lock(mutex_);
        index_.clear();
        lru_.clear();
    }

    // Called each time a stale value is served, with its age. Returns the id that
    // remove_listener() takes; throws std::invalid_argument for an empty listener.
    ListenerId on_stale(std::function<void(const StaleServed&)> listener) {
        return listeners_.add(std::move(listener));
    }
    // Stops calling a listener; false if the id is unknown here or already removed.
    bool remove_listener(ListenerId id) noexcept { return listeners_.remove(id); }

    CacheFallbackStats stats() const {
        detail::LockGuard lock(mutex_);
        CacheFallbackStats s = stats_;
        s.size = index_.size();
        return s;
    }

private:
    // The policy for one key, borrowed for one call by execute()/try_execute().
    class Borrowed : public PolicyBase<Borrowed> {
    public:
        Borrowed(CacheFallback* cache, const Key& key) noexcept : cache_(cache), key_(&key) {}
        template <class Next>
        auto apply(Context& ctx, Next&& next) {
            return cache_->apply_for(*key_, ctx, next);
        }

    private:
        CacheFallback* cache_;
        const Key* key_;
    };

    struct Entry {
        Key key;
        T value;
        TimePoint stored_at;
    };
    using List = std::list<Entry>;

    template <class Next>
    Outcome<T> apply_for(const Key& key, Context& ctx, Next& next) {
        using O = std::invoke_result_t<Next&, Context&>;
        static_assert(std::is_same<O, Outcome<T>>::value,
                      "bulwark::CacheFallback<Key, T>: T must be the result type of the call.");
        Outcome<T> outcome = next(ctx);
        if (!classifier_.is_failure(outcome)) {
            if (outcome.has_value()) {
                detail::LockGuard lock(mutex_);
                store(key, *outcome);
            }
            return outcome;
        }
        detail::UniqueLock lock(mutex_);
        auto it = index_.find(key);
        const TimePoint now = clock_->now();
        if (it == index_.end() || now - it->second->stored_at >= ttl_) {
            ++stats_.misses;
            return outcome;
        }
        lru_.splice(lru_.begin(), lru_, it->second);
        ++stats_.served;
        Outcome<T> stale = Outcome<T>::from_value(it->second->value);
        const Duration age = now - it->second->stored_at;
        lock.unlock();
        ctx.set_stale(true);
        listeners_.emit_with([&] { return StaleServed{ctx.operation(), age, outcome.error()}; });
        return stale;
    }

    // Under mutex_. Updating a key already held assigns the value in place (which reuses its
    // storage where T's assignment does) and allocates nothing; the time stamp is the coarse
    // clock, so an entry may expire up to one clock tick early.
    void store(const Key& key, const T& value) BULWARK_REQUIRES(mutex_) {
        const TimePoint now = clock_->coarse_now_fast();
        ++stats_.stored;
        auto it = index_.find(key);
        if (it != index_.end()) {
            it->second->value = value;
            it->second->stored_at = now;
            lru_.splice(lru_.begin(), lru_, it->second);
            return;
        }
        lru_.push_front(Entry{key, value, now});
        index_.emplace(key, lru_.begin());
        while (index_.size() > max_entries_) {
            index_.erase(lru_.back().key);
            lru_.pop_back();
            ++stats_.evicted;
        }
    }

    const Duration ttl_;
    const std::size_t max_entries_;
    Clock* const clock_;
    Classifier classifier_;
    mutable detail::Mutex mutex_;
    List lru_ BULWARK_GUARDED_BY(mutex_);  // most recently used first
    std::unordered_map<Key, typename List::iterator, Hash, Equal> index_ BULWARK_GUARDED_BY(mutex_);
    CacheFallbackStats stats_ BULWARK_GUARDED_BY(mutex_);
    Listeners<StaleServed> listeners_;
};

}  // namespace bulwark

#endif  // BULWARK_CACHE_HPP
// #include <bulwark/circuit_breaker.hpp> (already included above)
// #include <bulwark/core.hpp>
// The core layer in one include: time, clocks, outcomes, contexts, errors, events, pipelines.
#ifndef BULWARK_CORE_HPP
#define BULWARK_CORE_HPP

// The core vocabulary every policy builds on: clocks, outcomes, contexts, rejections,
// classification, events, the policy concept and composition.
// #include <bulwark/classify.hpp> (already included above)
// #include <bulwark/clock.hpp> (already included above)
// #include <bulwark/config.hpp> (already included above)
// #include <bulwark/context.hpp> (already included above)
// #include <bulwark/errors.hpp> (already included above)
// #include <bulwark/events.hpp> (already included above)
// #include <bulwark/outcome.hpp> (already included above)
// #include <bulwark/pipeline.hpp>
// pipeline() and wrap(): policies composed outermost first, and callables decorated by them.
#ifndef BULWARK_PIPELINE_HPP
#define BULWARK_PIPELINE_HPP

#include <cstddef>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

// #include <bulwark/context.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/detail/traits.hpp> (already included above)
// #include <bulwark/outcome.hpp> (already included above)
// #include <bulwark/policy.hpp> (already included above)

namespace bulwark {

namespace detail {
// How a pipeline holds a policy: an lvalue by reference (a breaker's state must be shared by
// everyone who uses it), an rvalue by value (moved in).
template <class P>
using held_policy_t = std::conditional_t<std::is_lvalue_reference<P>::value, P,
                                         std::remove_cv_t<std::remove_reference_t<P>>>;

// True so that the caller's own static_assert adds no second message.
template <class... Ps>
constexpr bool check_policies() {
    static_assert((is_policy_v<Ps> && ...),
                  "every argument of bulwark::pipeline()/wrap() must be a policy: a type with "
                  "template <class Next> auto apply(bulwark::Context&, Next&&) (for example "
                  "CircuitBreaker, RetryPolicy, Noop or another pipeline).");
    return true;
}
}  // namespace detail

// Policies composed into one, outermost first: pipeline(a, b, c).execute(f) runs
// a.apply(ctx, b.apply(ctx, c.apply(ctx, f))). A pipeline is itself a policy, so pipelines nest.
//   auto p = bulwark::pipeline(fallback, breaker, retry, timeout);
//   auto receipt = p.execute([&] { return sms.send(msg); });
// Policies passed as lvalues are held by reference and must outlive the pipeline; rvalues are
// moved in. The composition is resolved at compile time: no std::function, no allocation, no
// cost beyond the policies' own. Thread-safety is that of the policies it holds.
template <class... Ps>
class Pipeline : public PolicyBase<Pipeline<Ps...>> {
public:
    template <class... Args>
    explicit Pipeline(std::in_place_t, Args&&... policies)
        : policies_(std::forward<Args>(policies)...) {}

    template <class Next>
    auto apply(Context& ctx, Next&& next) {
        return apply_from<0>(ctx, next);
    }

    static constexpr std::size_t size() noexcept { return sizeof...(Ps); }

    // The I-th policy, outermost first.
    template <std::size_t I>
    decltype(auto) get() noexcept {
        return std::get<I>(policies_);
    }

private:
    template <std::size_t I, class Next>
    auto apply_from(Context& ctx, Next& next) {
        if constexpr (I == sizeof...(Ps)) {
            return next(ctx);
        } else {
            return std::get<I>(policies_).apply(ctx, [this, &next](Context& inner) {
                return this->apply_from<I + 1>(inner, next);
            });
        }
    }

    std::tuple<Ps...> policies_;
};

// Composes policies into a Pipeline, outermost first (see Pipeline).
template <class... Ps>
auto pipeline(Ps&&... policies) {
    static_assert(detail::check_policies<Ps...>());
    if constexpr ((is_policy_v<Ps> && ...)) {
        return Pipeline<detail::held_policy_t<Ps&&>...>(std::in_place,
                                                        std::forward<Ps>(policies)...);
    } else {
        return detail::invalid_call_result{};
    }
}

// A callable with the signature of `f` whose every call runs through the policies, outermost
// first. Arguments reach `f` as lvalues on every attempt, so a retried attempt never sees a
// moved-from argument.
//   auto resilient_send = bulwark::wrap(send_sms, breaker, retry);
//   Receipt r = resilient_send(phone, "hello");        // throws the final error
//   bulwark::Outcome<Receipt> o = resilient_send.try_call(phone, "hello");   // never throws
// The callable is stored by value; policies as in pipeline(). Thread-safety is that of the
// callable and the policies.
template <class F, class... Ps>
class Wrapped {
public:
    template <class G, class... Args>
    Wrapped(G&& f, std::in_place_t, Args&&... policies)
        : f_(std::forward<G>(f)), pipeline_(std::in_place, std::forward<Args>(policies)...) {
        if (detail::is_null_callable(f_)) {
            detail::throw_invalid_argument("bulwark::wrap: the callable is null");
        }
    }

    // Returns what `f` returns, or throws the final error. (The return type is deduced, not
    // spelled, so that a wrong argument list stops at check_arguments' sentence before anything
    // else is instantiated.)
    template <class... Args>
    auto operator()(Args&&... args) {
        static_assert(check_arguments<Args...>());
        if constexpr (std::is_invocable<F&, Args&...>::value) {
            return pipeline_.execute([&]() -> decltype(auto) { return std::invoke(f_, args...); });
        } else {
            return detail::invalid_call_result{};
        }
    }

    template <class... Args>
    auto try_call(Args&&... args) noexcept {
        static_assert(check_arguments<Args...>());
        if constexpr (std::is_invocable<F&, Args&...>::value) {
            return pipeline_.try_execute(
                [&]() -> decltype(auto) { return std::invoke(f_, args...); });
        } else {
            return detail::invalid_call_result{};
        }
    }

    Pipeline<Ps...>& policies() noexcept { return pipeline_; }

private:
    // True so that the caller's own static_assert adds no second message.
    template <class... Args>
    static constexpr bool check_arguments() {
        static_assert(std::is_invocable<F&, Args&...>::value,
                      "bulwark::wrap: the wrapped callable cannot be called with these arguments "
                      "(check their number and types). Arguments are passed as lvalues so that "
                      "every attempt sees them intact; a callable that takes an rvalue reference "
                      "or a move-only parameter by value cannot be retried safely.");
        return true;
    }

    F f_;
    Pipeline<Ps...> pipeline_;
};

// Wraps `f` in the policies, outermost first (see Wrapped). Throws std::invalid_argument if `f`
// is a null function pointer or an empty std::function.
template <class F, class... Ps>
auto wrap(F&& f, Ps&&... policies) {
    static_assert(detail::check_policies<Ps...>());
    if constexpr ((is_policy_v<Ps> && ...)) {
        return Wrapped<std::decay_t<F>, detail::held_policy_t<Ps&&>...>(
            std::forward<F>(f), std::in_place, std::forward<Ps>(policies)...);
    } else {
        return detail::invalid_call_result{};
    }
}

}  // namespace bulwark

#endif  // BULWARK_PIPELINE_HPP
// #include <bulwark/policy.hpp> (already included above)
// #include <bulwark/version.hpp>
// The library version macros.
#ifndef BULWARK_VERSION_HPP
#define BULWARK_VERSION_HPP

// The one place the version lives: CMake parses these lines, and the single header and the
// pkg-config file take it from CMake.
#define BULWARK_VERSION_MAJOR 0
#define BULWARK_VERSION_MINOR 1
#define BULWARK_VERSION_PATCH 0

#define BULWARK_VERSION \
    (BULWARK_VERSION_MAJOR * 10000 + BULWARK_VERSION_MINOR * 100 + BULWARK_VERSION_PATCH)
#define BULWARK_VERSION_STRING "0.1.0"

#endif  // BULWARK_VERSION_HPP

#endif  // BULWARK_CORE_HPP
// #include <bulwark/fallback.hpp>
// Fallback: a substitute result when a call fails.
#ifndef BULWARK_FALLBACK_HPP
#define BULWARK_FALLBACK_HPP

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <string_view>
#include <type_traits>
#include <utility>

// #include <bulwark/classify.hpp> (already included above)
// #include <bulwark/context.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/detail/traits.hpp> (already included above)
// #include <bulwark/events.hpp> (already included above)
// #include <bulwark/outcome.hpp> (already included above)
// #include <bulwark/policy.hpp> (already included above)

namespace bulwark {

namespace detail {
// What a Fallback<T> was given: a handler of one of the three signatures, a value, or something
// it cannot use.
enum class fallback_form : std::uint8_t {
    with_context,  // (const std::exception_ptr&, Context&)
    with_error,    // (const std::exception_ptr&)
    no_arguments,  // ()
    value,         // a T
    wrong_result,  // a callable of one of the three signatures whose result is no T
    unusable,
};

// A handler wins over a value when V could be both; F is V decayed. A (error, context) handler
// becomes the std::function itself, so its result must convert implicitly; the other two are
// adapted with a static_cast.
template <class T, class V, class F = std::decay_t<V>>
constexpr fallback_form fallback_form_of() {
    using Error = const std::exception_ptr&;
    constexpr bool is_value = !std::is_void<T>::value && std::is_constructible<T, V&&>::value;
    fallback_form form = fallback_form::unusable;
    bool fits = false;
    if constexpr (std::is_invocable<F&, Error, Context&>::value) {
        form = fallback_form::with_context;
        fits = std::is_invocable_r<T, F&, Error, Context&>::value;
    } else if constexpr (std::is_invocable<F&, Error>::value) {
        form = fallback_form::with_error;
        fits = std::is_void<T>::value ||
               std::is_constructible<T, std::invoke_result_t<F&, Error>>::value;
    } else if constexpr (std::is_invocable<F&>::value) {
        form = fallback_form::no_arguments;
        fits = std::is_void<T>::value || std::is_constructible<T, std::invoke_result_t<F&>>::value;
    } else {
        return is_value ? fallback_form::value : fallback_form::unusable;
    }
    return fits ? form : is_value ? fallback_form::value : fallback_form::wrong_result;
}
}  // namespace detail

// A fallback was used.
struct FallbackEvent {
    std::string_view operation;
    std::exception_ptr error;      // the failure it answered (null when a handled *value* failed)
    bool fallback_failed = false;  // the fallback itself threw; its error is the outcome
};

struct FallbackStats {
    std::uint64_t fallbacks = 0;          // handled failures answered by the fallback
    std::uint64_t fallback_failures = 0;  // of those, how many the fallback itself failed
};

// Replaces a handled failure with a substitute: a value, or a callable of the error, or of the
// error and the context.
//   bulwark::Fallback<Receipt> use_default([](const std::exception_ptr&) { return
//   Receipt::queued(); }); bulwark::Fallback<int> zero(0); bulwark::pipeline(use_default, breaker,
//   retry).execute(send);
// Only handled failures are replaced (by default every exception; narrow with handle<E>(), add
// values with handle_result(pred)); other exceptions pass through. If the fallback throws, that
// exception is the outcome. T must be the pipeline's result type (void for a fallback that only
// swallows or logs the failure).
// Thread-safe if the fallback callable is. The success path costs one branch and does not
// allocate.
template <class T>
class Fallback : public PolicyBase<Fallback<T>> {
public:
    using Handler = std::function<T(const std::exception_ptr&, Context&)>;

    // A fixed value (not for Fallback<void>; T must be copyable), or a callable taking
    // (const std::exception_ptr&, Context&), (const std::exception_ptr&) or () and returning a T
    // (anything for Fallback<void>). Throws std::invalid_argument for a null function pointer or
    // empty std::function. Anything else stops at one static_assert sentence.
    template <class V, std::enable_if_t<!std::is_same<std::decay_t<V>, Fallback>::value, int> = 0>
    explicit Fallback(V&& value_or_handler)
        : handler_(make_handler(std::forward<V>(value_or_handler))) {}

    // Moving keeps the configuration and the listeners; not thread-safe against concurrent use.
    Fallback(Fallback&& other) noexcept
        : handler_(std::move(other.handler_)),
          classifier_(std::move(other.classifier_)),
          fallbacks_(other.fallbacks_.load(std::memory_order_relaxed)),
          fallback_failures_(other.fallback_failures_.load(std::memory_order_relaxed)),
          listeners_(std::move(other.listeners_)) {}
    Fallback& operator=(Fallback&&) = delete;

    template <class E>
    Fallback& handle() {
        classifier_.template handle<E>();
        return *this;
    }
    Fallback& handle_if(std::function<bool(const std::exception_ptr&)> predicate) {
        classifier_.handle_if(std::move(predicate));
        return *this;
    }
    template <class U = void, class Pred>
    Fallback& handle_result(Pred predicate) {
        classifier_.template handle_result<U>(std::move(predicate));
        return *this;
    }

    // Called each time the fallback replaces a failure. Returns the id that remove_listener()
    // takes; throws std::invalid_argument for an empty listener.
    ListenerId on_fallback(std::function<void(const FallbackEvent&)> listener) {
        return listeners_.add(std::move(listener));
    }
    // Stops calling a listener; false if the id is unknown here or already removed.
    bool remove_listener(ListenerId id) noexcept { return listeners_.remove(id); }

    FallbackStats stats() const noexcept {
        return FallbackStats{fallbacks_.load(std::memory_order_relaxed),
                             fallback_failures_.load(std::memory_order_relaxed)};
    }

    template <class Next>
    auto apply(Context& ctx, Next&& next) {
        using O = std::invoke_result_t<Next&, Context&>;
        static_assert(std::is_same<O, Outcome<T>>::value,
                      "bulwark::Fallback<T>: T must be the result type of the call it protects.");
        if constexpr (!std::is_same<O, Outcome<T>>::value) {
            return next(ctx);  // after the static_assert: nothing more to report
        } else {
            O outcome = next(ctx);
            // One named result and one return, so the outcome is constructed in place (NRVO).
            if (BULWARK_UNLIKELY(!(outcome.has_value() && !classifier_.has_result_predicates())) &&
                classifier_.is_failure(outcome)) {
                outcome = substitute(outcome.error(), ctx);
            }
            return outcome;
        }
    }

private:
    template <class V>
    static Handler make_handler(V&& value_or_handler) {
        using detail::fallback_form;
        constexpr fallback_form form = detail::fallback_form_of<T, V>();
        static_assert(form != fallback_form::unusable,
                      "bulwark::Fallback<T>: the fallback must be a value convertible to T, or a "
                      "callable taking (const std::exception_ptr&, bulwark::Context&), (const "
                      "std::exception_ptr&) or () (Fallback<void> takes only a callable).");
        static_assert(form != fallback_form::wrong_result,
                      "bulwark::Fallback<T>: the fallback callable returns something that does "
                      "not convert to T (T must be the result type of the call it protects).");
        if constexpr (form == fallback_form::value) {
            return [v = T(std::forward<V>(value_or_handler))](const std::exception_ptr&, Context&) {
                return v;
            };
        } else if constexpr (form == fallback_form::unusable ||
                             form == fallback_form::wrong_result) {
            return Handler();  // after the static_assert: nothing more to report
        } else {
            std::decay_t<V> f(std::forward<V>(value_or_handler));
            if (detail::is_null_callable(f)) {
                detail::throw_invalid_argument("bulwark::Fallback: the fallback callable is null");
            }
            if constexpr (form == fallback_form::with_context) {
                return Handler(std::move(f));
            } else if constexpr (form == fallback_form::with_error) {
                return [g = std::move(f)](const std::exception_ptr& e, Context&) mutable {
                    return static_cast<T>(g(e));
                };
            } else {
                return [g = std::move(f)](const std::exception_ptr&, Context&) mutable {
                    return static_cast<T>(g());
                };
            }
        }
    }

    BULWARK_NOINLINE Outcome<T> substitute(const std::exception_ptr& error, Context& ctx) {
        // relaxed: statistics.
        fallbacks_.fetch_add(1, std::memory_order_relaxed);
        Outcome<T> replaced = detail::capture<T>([&] { return handler_(error, ctx); });
        if (replaced.has_error()) {
            fallback_failures_.fetch_add(1, std::memory_order_relaxed);
        }
        listeners_.emit_with([&] {
            return FallbackEvent{ctx.operation(), error, replaced.has_error()};
        });
        return replaced;
    }

    Handler handler_;
    Classifier classifier_;
    std::atomic<std::uint64_t> fallbacks_{0};
    std::atomic<std::uint64_t> fallback_failures_{0};
    Listeners<FallbackEvent> listeners_;
};

}  // namespace bulwark

#endif  // BULWARK_FALLBACK_HPP
// #include <bulwark/hedging.hpp>
// Hedging: extra attempts started after a delay, first result wins.
#ifndef BULWARK_HEDGING_HPP
#define BULWARK_HEDGING_HPP

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

// #include <bulwark/classify.hpp> (already included above)
// #include <bulwark/clock.hpp> (already included above)
// #include <bulwark/config.hpp> (already included above)
// #include <bulwark/context.hpp> (already included above)
// #include <bulwark/detail/hedging_pool.hpp>
// The internal executor of Hedging: a few lazily started threads and a task queue (private).
#ifndef BULWARK_DETAIL_HEDGING_POOL_HPP
#define BULWARK_DETAIL_HEDGING_POOL_HPP

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <thread>
#include <utility>
#include <vector>

// #include <bulwark/detail/mutex.hpp> (already included above)

namespace bulwark {
namespace detail {

// The executor a Hedging uses when given none: at most `max_threads` threads, each started when
// a task finds no idle thread, all joined by the destructor. Tasks still queued then are
// destroyed unrun. Thread-safe. A class template only so that a translation unit without a
// Hedging does not compile its threads (the Tag is never used).
template <class Tag = void>
class BasicHedgingPool {
public:
    explicit BasicHedgingPool(std::size_t max_threads) : max_threads_(max_threads) {}
    BasicHedgingPool(const BasicHedgingPool&) = delete;
    BasicHedgingPool& operator=(const BasicHedgingPool&) = delete;

    ~BasicHedgingPool() {
        std::deque<std::function<void()>> unrun;
        {
            detail::LockGuard lock(mutex_);
            stop_ = true;
            unrun.swap(queue_);
        }
        cv_.notify_all();
        for (std::thread& t : threads_) {
            t.join();
        }
        // `unrun` is destroyed here, outside the lock.
    }

    // Throws if no thread could ever be started for the task.
    void post(std::function<void()> task) {
        detail::UniqueLock lock(mutex_);
        queue_.push_back(std::move(task));
        if (queue_.size() > idle_ && threads_.size() < max_threads_) {
            try {
                threads_.emplace_back([this] { work(); });
            } catch (...) {
                if (threads_.empty()) {
                    std::function<void()> refused = std::move(queue_.back());
                    queue_.pop_back();
                    lock.unlock();
                    throw;  // `refused` is destroyed unrun
                }
            }
        }
        lock.unlock();
        cv_.notify_one();
    }

private:
    void work() {
        detail::UniqueLock lock(mutex_);
        for (;;) {
            while (!stop_ && queue_.empty()) {
                ++idle_;
                cv_.wait(lock.native());
                --idle_;
            }
            if (stop_) {
                return;
            }
            std::function<void()> task = std::move(queue_.front());
            queue_.pop_front();
            lock.unlock();
            try {
                task();
            } catch (...) {
                // Hedging's tasks catch everything; nothing else is posted here.
            }
            task = nullptr;  // destroyed outside the lock
            lock.lock();
        }
    }

    const std::size_t max_threads_;
    detail::Mutex mutex_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> queue_ BULWARK_GUARDED_BY(mutex_);
    std::vector<std::thread> threads_ BULWARK_GUARDED_BY(mutex_);
    std::size_t idle_ BULWARK_GUARDED_BY(mutex_) = 0;
    bool stop_ BULWARK_GUARDED_BY(mutex_) = false;
};

using HedgingPool = BasicHedgingPool<>;

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_HEDGING_POOL_HPP
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/events.hpp> (already included above)
// #include <bulwark/outcome.hpp> (already included above)
// #include <bulwark/policy.hpp> (already included above)

namespace bulwark {

// Where hedged attempts run: called with each attempt as a task (see HedgingOptions::executor).
using HedgingExecutor = std::function<void(std::function<void()>)>;

// Why a hedged attempt was started.
enum class HedgeReason : std::uint8_t {
    delay,    // no accepted result within the delay (with delay 0: every hedge starts at once)
    failure,  // an attempt failed, so the next one starts at once
};

// A hedged attempt is about to be handed to the executor.
struct HedgeEvent {
    std::string_view operation;  // the context's operation name
    std::uint32_t attempt = 0;   // the hedge's number: 1 for the first hedge
    HedgeReason reason = HedgeReason::delay;
};

struct HedgingStats {
    std::uint64_t calls = 0;         // calls through the policy
    std::uint64_t hedges = 0;        // hedged attempts started (handed to the executor)
    std::uint64_t primary_wins = 0;  // calls answered by the primary attempt
    std::uint64_t hedge_wins = 0;    // calls answered by a hedged attempt
    std::uint64_t exhausted = 0;     // calls whose every attempt failed (the last failure returned)
};

// Options of a Hedging policy. Every field has a default; validate() throws
// std::invalid_argument naming the field.
struct HedgingOptions {
    static constexpr std::uint32_t max_extra_attempts_limit = 16;
    // A delay that never elapses: hedges start only when an attempt fails.
    static constexpr Duration only_on_failure = Duration::max();

    // How long an attempt may run without an accepted result before the next hedge starts,
    // measured on the policy's clock from the previous start. 0 starts every hedge at once;
    // only_on_failure never starts one on time. >= 0.
    Duration delay = std::chrono::seconds(2);
    // Hedged attempts in addition to the primary one. In [1, 16].
    std::uint32_t max_extra_attempts = 1;
    // Where hedged attempts run. It is given each hedged attempt as a task and must run it once,
    // on a thread of its choosing, or destroy it unrun (the attempt then counts as failed, so a
    // pool that shuts down loses nothing). It is called from the calling thread, the policy's
    // timer thread and the attempts' threads, possibly concurrently: it must be thread-safe, and
    // should neither block nor run the task inline (that serialises the attempts). If it
    // throws, the attempt counts as failed with that error. What it refers to must accept tasks
    // for as long as the Hedging lives; tasks it still holds after that are harmless (they own
    // what they touch).
    //   o.executor = [&pool](std::function<void()> task) { pool.submit(std::move(task)); };
    // Empty (the default): an internal pool of at most max_extra_attempts threads, started as
    // hedges need them and joined by the Hedging's destructor.
    HedgingExecutor executor{};
    // Which outcomes are failures (by default every exception, no value). A failure loses and
    // starts the next hedge at once; anything else — a value, or an exception outside
    // handle<E>() — is accepted and ends the race.
    Classifier classifier{};
    // Listeners added by on_hedge(), handed to the policy when it is built.
    std::vector<std::function<void(const HedgeEvent&)>> hedge_listeners{};

    template <class E>
    HedgingOptions& handle() {
        classifier.handle<E>();
        return *this;
    }
    HedgingOptions& handle_if(std::function<bool(const std::exception_ptr&)> predicate) {
        classifier.handle_if(std::move(predicate));
        return *this;
    }
    template <class T = void, class Pred>
    HedgingOptions& handle_result(Pred predicate) {
        classifier.handle_result<T>(std::move(predicate));
        return *this;
    }
    // Called before every hedged attempt starts, on the thread that starts it.
    HedgingOptions& on_hedge(std::function<void(const HedgeEvent&)> listener) {
        detail::add_option_listener(hedge_listeners, std::move(listener),
                                    "HedgingOptions.on_hedge");
        return *this;
    }

    void validate() const {
        if (delay < Duration::zero()) {
            detail::throw_invalid_option("HedgingOptions.delay", "must be >= 0",
                                         detail::format_duration(delay));
        }
        if (max_extra_attempts < 1 || max_extra_attempts > max_extra_attempts_limit) {
            detail::throw_invalid_option("HedgingOptions.max_extra_attempts", "must be in [1, 16]",
                                         std::to_string(max_extra_attempts));
        }
    }
};

// Hedging: when an attempt has not produced a result after `delay`, starts another attempt of the
// same call alongside it (up to max_extra_attempts), returns the first accepted result and
// cancels the others through their contexts.
//   bulwark::Hedging hedge(/*delay*/ 50ms, /*max_extra*/ 1);          // optional clock last
//   auto r = hedge.execute([&](bulwark::Context& ctx) { return replica(ctx.attempt()).get(ctx); });
// - The primary attempt runs on the calling thread; hedges run on HedgingOptions::executor, or
//   on an internal pool of at most max_extra_attempts threads. A timer thread of the policy's
//   own, started by the first timed call, waits out the delays on the policy's clock.
// - A failed attempt (per the classifier) starts the next hedge at once, without waiting for the
//   delay. An accepted outcome — a value, or an exception outside handle<E>() — wins at once. If
//   every attempt fails, the last failure is returned.
// - Each attempt gets its own child Context (ctx.attempt() is 0 for the primary and n for the
//   n-th hedge), which sees the caller's deadline and cancellation; once an attempt wins, the
//   others see ctx.cancelled() turn true. No hedge starts once the caller's context is cancelled.
// Safety rule: a call returns only after every attempt that started has returned. Attempts
// borrow the callable, the policies inside the hedge and the caller's context by reference, so a
// loser left running after the call returned would dangle. A hedge the executor had not started
// when the call ended never runs: it touches only the call's state, which it co-owns
// (shared_ptr). So a win saves latency only when the losers honour ctx.cancelled() promptly; a
// loser that ignores it holds the call until it finishes.
// The callable, and the policies inside the hedge, run concurrently on several threads: they must
// be thread-safe, and the call should be idempotent.
// Thread-safe: one Hedging serves many concurrent calls. Destroy it only when no call is in
// progress; the destructor joins its threads. Costs one heap allocation per call (the state the
// attempts share) and, for a timed call, one clock read and two lock round trips on the timer's
// mutex; each hedge adds a task (two allocations) and a thread hop.
// Hedging is BasicHedging<>: a class template only so that a translation unit that does not use
// it does not compile its threads and timer (the Tag is never used).
template <class Tag = void>
class BasicHedging : public PolicyBase<BasicHedging<Tag>> {
public:
    // Throws std::invalid_argument for invalid options. The clock must outlive the Hedging.
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    explicit BasicHedging(Duration delay, std::uint32_t max_extra_attempts = 1,
                          Clock& clock = default_clock())
        : BasicHedging(make_options(delay, max_extra_attempts), clock) {}

    explicit BasicHedging(HedgingOptions options, Clock& clock = default_clock())
        : options_((options.validate(), std::move(options))), clock_(&clock) {
        for (auto& listener : options_.hedge_listeners) {
            listeners_.add(std::move(listener));
        }
        options_.hedge_listeners.clear();
    }

    BasicHedging(const BasicHedging&) = delete;
    BasicHedging& operator=(const BasicHedging&) = delete;

    ~BasicHedging() {
        std::thread timer;
        {
            detail::LockGuard lock(timer_mutex_);
            timer_stop_ = true;
            timer = std::move(timer_);
        }
        timer_cv_.notify_all();
        if (timer.joinable()) {
            timer.join();
        }
        // The internal pool, declared last, is destroyed (and joined) first.
    }

    const HedgingOptions& options() const noexcept { return options_; }

    // Called before every hedged attempt starts, on the thread that starts it. Returns the id
    // that remove_listener() takes; throws std::invalid_argument for an empty listener.
    ListenerId on_hedge(std::function<void(const HedgeEvent&)> listener) {
        return listeners_.add(std::move(listener));
    }
    // Stops calling a listener; false if the id is unknown here or already removed.
    bool remove_listener(ListenerId id) noexcept { return listeners_.remove(id); }

    HedgingStats stats() const noexcept {
        HedgingStats s;
        // relaxed: statistics.
        s.calls = calls_.load(std::memory_order_relaxed);
        s.hedges = hedges_.load(std::memory_order_relaxed);
        s.primary_wins = primary_wins_.load(std::memory_order_relaxed);
        s.hedge_wins = hedge_wins_.load(std::memory_order_relaxed);
        s.exhausted = exhausted_.load(std::memory_order_relaxed);
        return s;
    }

    template <class Next>
    auto apply(Context& ctx, Next&& next) {
        using O = std::invoke_result_t<Next&, Context&>;
        using Race = Call<O, std::remove_reference_t<Next>>;
        calls_.fetch_add(1, std::memory_order_relaxed);
        Context race = Context::child_of(ctx);  // cancelled when an attempt wins
        const std::shared_ptr<Race> call = std::make_shared<Race>(*this, race, next);
        // Ends the race on every exit, an exception's included, and waits for the attempts that
        // started: none outlives this frame.
        struct Conclude {
            BasicHedging& self;
            CallBase& call;
            bool done = false;
            void operator()(bool wait_for_result) {
                done = true;
                call.conclude(wait_for_result);
                if (call.timer_scheduled) {
                    self.unschedule(call);
                }
            }
            ~Conclude() {
                if (!done) {
                    (*this)(false);
                }
            }
        } conclude{*this, *call};
        if (options_.delay == Duration::zero()) {
            for (std::uint32_t i = 0; i < options_.max_extra_attempts; ++i) {
                call->start_next(HedgeReason::delay);
            }
        } else if (options_.delay != HedgingOptions::only_on_failure) {
            schedule(*call);
        }
        call->finish(0, call->attempt(0));  // the primary, on this thread
        conclude(true);
        const std::uint32_t winner = call->final_winner();
        if (winner == 0) {
            primary_wins_.fetch_add(1, std::memory_order_relaxed);
        } else if (winner != no_winner) {
            hedge_wins_.fetch_add(1, std::memory_order_relaxed);
        } else {
            exhausted_.fetch_add(1, std::memory_order_relaxed);
        }
        O outcome = call->take_answer();
        return outcome;
    }

private:
    static constexpr std::uint32_t no_winner = ~std::uint32_t{0};

    static HedgingOptions make_options(Duration delay, std::uint32_t max_extra_attempts) {
        HedgingOptions o;
        o.delay = delay;
        o.max_extra_attempts = max_extra_attempts;
        return o;
    }

    // The state one call shares with its hedged attempts, the executor's tasks and the timer.
    // Owned by shared_ptr: a task that outlives the call touches only this.
    class CallBase : public std::enable_shared_from_this<CallBase> {
    public:
        enum class Slot : std::uint8_t { idle, reserved, running, done };

        CallBase(BasicHedging& owner, Context& race)
            : owner_(&owner),
              race_(&race),
              operation_(race.operation()),
              max_extra_(owner.options_.max_extra_attempts),
              delay_(owner.options_.delay) {
            slots_[0] = Slot::running;  // the primary
        }
        CallBase(const CallBase&) = delete;
        CallBase& operator=(const CallBase&) = delete;
        virtual ~CallBase() = default;

        // Runs hedged attempt `index` on this thread, if the race is still open.
        virtual void run(std::uint32_t index) = 0;
        // Hedge `index` will never run (its task was destroyed unrun, or could not be posted).
        virtual void fail_unstarted(std::uint32_t index, std::exception_ptr error) noexcept = 0;

        // Caller thread: waits for the race's result (or, on an exceptional exit, ends the race),
        // cancels the losers and waits until every attempt that started has returned.
        void conclude(bool wait_for_result) {
            detail::UniqueLock lock(mutex_);
            if (wait_for_result) {
                while (!closed_) {
                    cv_.wait(lock.native());
                }
            } else if (!closed_) {
                close_locked();
            }
            if (running_ != 0) {
                race_->cancel();
                while (running_ != 0) {
                    cv_.wait(lock.native());
                }
            }
        }

        // Starts the next hedge, if one may start.
        void start_next(HedgeReason reason) {
            std::uint32_t index = 0;
            {
                detail::LockGuard lock(mutex_);
                index = reserve_locked(timed() ? owner_->clock_->now() : TimePoint{});
            }
            if (index != 0) {
                start_hedge(index, reason);
            }
        }

        // Timer thread: the call's deadline passed at `now`. Returns when to come back
        // (TimePoint::max(): never).
        TimePoint on_timer(TimePoint now) {
            std::uint32_t index = 0;
            TimePoint again = TimePoint::max();
            {
                detail::LockGuard lock(mutex_);
                if (closed_ || launched_ >= max_extra_) {
                    return TimePoint::max();
                }
                const TimePoint due = detail::saturating_add(last_start, delay_);
                if (now < due) {
                    return due;  // a failure started a hedge meanwhile: a full delay from that
                }
                index = reserve_locked(now);
                if (index == 0) {
                    return TimePoint::max();
                }
                if (launched_ < max_extra_) {
                    again = detail::saturating_add(now, delay_);
                }
            }
            start_hedge(index, HedgeReason::delay);
            return again;
        }

        // Written by the caller thread before the call is visible to the timer; then guarded by
        // mutex_.
        TimePoint last_start{};
        // Caller thread only.
        bool timer_scheduled = false;
        // Guarded by BasicHedging::timer_mutex_.
        CallBase* timer_prev = nullptr;
        CallBase* timer_next = nullptr;
        TimePoint timer_deadline{};
        bool timer_linked = false;
        bool timer_done = false;  // the call is over: never link it again
        // The attempt whose outcome was accepted.
        std::uint32_t winner BULWARK_GUARDED_BY(mutex_) = no_winner;

        // Caller thread, once the race is over: as take_answer(), no other thread writes winner
        // any more and conclude()'s wait ordered their writes before this read.
        std::uint32_t final_winner() const BULWARK_NO_THREAD_SAFETY_ANALYSIS { return winner; }

    protected:
        bool timed() const noexcept {
            return delay_ > Duration::zero() && delay_ != HedgingOptions::only_on_failure;
        }

        // Under mutex_: claims the next hedge if the race is open, hedges remain and the caller's
        // context is not cancelled. Returns its index, or 0.
        std::uint32_t reserve_locked(TimePoint now) BULWARK_REQUIRES(mutex_) {
            // The caller's frame (race_) is alive: the race is open, so the caller is waiting.
            if (closed_ || launched_ >= max_extra_ || race_->cancelled()) {
                return 0;
            }
            const std::uint32_t index = ++launched_;
            slots_[index] = Slot::reserved;
            ++outstanding_;
            last_start = now;
            return index;
        }

        void close_locked() BULWARK_REQUIRES(mutex_) {
            closed_ = true;
            cv_.notify_all();
        }

        // Hands hedge `index` (reserved) to the executor. Called by a thread that keeps the
        // caller waiting (the caller, an attempt still counted as running, or the timer).
        void start_hedge(std::uint32_t index, HedgeReason reason) {
            BasicHedging& owner = *owner_;
            owner.hedges_.fetch_add(1, std::memory_order_relaxed);
            owner.listeners_.emit_with([&] { return HedgeEvent{operation_, index, reason}; });
            // Outside the try: if the executor dropped the task already, releasing this last
            // reference reports the attempt as failed, after the catch below had its say.
            std::shared_ptr<Ticket> ticket;
            try {
                ticket = std::make_shared<Ticket>(this->shared_from_this(), index);
                owner.post([ticket] { ticket->call->run(ticket->index); });
            } catch (...) {
                fail_unstarted(index, std::current_exception());
            }
        }

        // Attempt `index` may run (under mutex_): marks it running, or done if the race is over.
        bool begin(std::uint32_t index) {
            detail::LockGuard lock(mutex_);
            if (slots_[index] != Slot::reserved) {
                return false;  // ran already (an executor that ran a copy of the task twice)
            }
            if (closed_) {
                slots_[index] = Slot::done;
                --outstanding_;
                return false;
            }
            slots_[index] = Slot::running;
            ++running_;
            return true;
        }

        // A hedged attempt is done with the caller's frame and the policy.
        void leave() {
            detail::LockGuard lock(mutex_);
            if (--running_ == 0) {
                cv_.notify_all();
            }
        }

        BasicHedging* const owner_;  // used only while the caller waits
        Context* const race_;        // on the caller's frame: used only while the caller waits
        const std::string_view operation_;
        const std::uint32_t max_extra_;
        const Duration delay_;

        detail::Mutex mutex_;
        std::condition_variable cv_;  // the caller waits on it
        std::array<Slot, HedgingOptions::max_extra_attempts_limit + 1> slots_
            BULWARK_GUARDED_BY(mutex_){};
        std::uint32_t launched_ BULWARK_GUARDED_BY(mutex_) = 0;  // hedges reserved
        // Reserved attempts not yet done.
        std::uint32_t outstanding_ BULWARK_GUARDED_BY(mutex_) = 1;
        std::uint32_t running_ BULWARK_GUARDED_BY(mutex_) = 0;  // hedges running the call now
        bool closed_ BULWARK_GUARDED_BY(mutex_) = false;        // the race is over
    };

    // A hedged attempt handed to the executor. Destroyed unrun, it reports the attempt failed.
    struct Ticket {
        Ticket(std::shared_ptr<CallBase> c, std::uint32_t i) noexcept
            : call(std::move(c)), index(i) {}
        Ticket(const Ticket&) = delete;
        Ticket& operator=(const Ticket&) = delete;
        ~Ticket() { call->fail_unstarted(index, std::exception_ptr()); }

        std::shared_ptr<CallBase> call;
        std::uint32_t index;
    };

    // The typed part of a call: the borrowed rest of the pipeline and the answer so far.
    template <class O, class N>
    class Call final : public CallBase {
        // CallBase is a dependent base (a member of the class template): name what Call uses.
        using Slot = typename CallBase::Slot;
        using CallBase::begin;
        using CallBase::close_locked;
        using CallBase::closed_;
        using CallBase::leave;
        using CallBase::mutex_;
        using CallBase::outstanding_;
        using CallBase::owner_;
        using CallBase::race_;
        using CallBase::reserve_locked;
        using CallBase::slots_;
        using CallBase::start_hedge;
        using CallBase::timed;

    public:
        using CallBase::winner;

        Call(BasicHedging& owner, Context& race, N& next) : CallBase(owner, race), next_(&next) {}

        // Runs attempt `index` on this thread and returns what it produced.
        O attempt(std::uint32_t index) {
            Context ctx = Context::child_of(*race_);
            ctx.set_attempt(index);
            try {
                return (*next_)(ctx);
            } catch (...) {
                return O::from_error(std::current_exception());
            }
        }

        void run(std::uint32_t index) override {
            if (begin(index)) {
                finish(index, attempt(index));
                leave();
            }
        }

        // Records attempt `index`'s outcome: it wins if accepted, else it is the latest failure
        // and the next hedge starts at once. The thread still keeps the caller waiting.
        void finish(std::uint32_t index, O outcome) {
            bool failure = true;
            std::exception_ptr predicate_error;  // a classifier predicate threw: a failure
            try {
                failure = owner_->options_.classifier.is_failure(outcome);
            } catch (...) {
                predicate_error = std::current_exception();
            }
            bool won = false;
            std::uint32_t next_hedge = 0;
            {
                detail::LockGuard lock(mutex_);
                slots_[index] = Slot::done;
                --outstanding_;
                if (!closed_) {
                    if (predicate_error) {
                        answer_.emplace(O::from_error(std::move(predicate_error)));
                    } else {
                        answer_.emplace(std::move(outcome));
                    }
                    if (!failure) {
                        winner = index;
                        won = true;
                        close_locked();
                    } else {
                        next_hedge = reserve_locked(timed() ? owner_->clock_->now() : TimePoint{});
                        if (next_hedge == 0 && outstanding_ == 0) {
                            close_locked();  // every attempt failed
                        }
                    }
                }
            }
            if (won) {
                race_->cancel();  // the losers stop
            }
            if (next_hedge != 0) {
                start_hedge(next_hedge, HedgeReason::failure);
            }
        }

        void fail_unstarted(std::uint32_t index, std::exception_ptr error) noexcept override {
            detail::LockGuard lock(mutex_);
            if (slots_[index] != Slot::reserved) {
                return;
            }
            slots_[index] = Slot::done;
            --outstanding_;
            if (closed_) {
                return;
            }
            if (!answer_) {  // an attempt's own failure says more than the executor's
                try {
                    if (!error) {
                        error = std::make_exception_ptr(std::runtime_error(
                            "bulwark::Hedging: the executor destroyed a hedged attempt unrun"));
                    }
                    answer_.emplace(O::from_error(std::move(error)));
                } catch (...) {
                    answer_.emplace(O::from_error(std::current_exception()));
                }
            }
            if (outstanding_ == 0) {
                close_locked();
            }
        }

        // Caller thread, once the race is over and no attempt runs (so no other thread touches
        // answer_ any more: conclude()'s wait ordered their writes before this read).
        O take_answer() BULWARK_NO_THREAD_SAFETY_ANALYSIS {
            if (BULWARK_UNLIKELY(!answer_)) {
                return O::from_error(std::make_exception_ptr(
                    std::logic_error("bulwark::Hedging: the race ended without an outcome")));
            }
            return std::move(*answer_);
        }

    private:
        N* const next_;  // on the caller's frame: used only while the caller waits
        // The winner's outcome, or the latest failure.
        std::optional<O> answer_ BULWARK_GUARDED_BY(mutex_);
    };

    // The internal pool or the user's executor.
    void post(std::function<void()> task) {
        if (options_.executor) {
            options_.executor(std::move(task));
            return;
        }
        detail::HedgingPool* pool = nullptr;
        {
            detail::LockGuard lock(pool_mutex_);
            if (!pool_) {
                pool_ = std::make_unique<detail::HedgingPool>(options_.max_extra_attempts);
            }
            pool = pool_.get();
        }
        pool->post(std::move(task));
    }

    // The timer: one thread per policy, started by the first timed call, waiting on the clock for
    // the earliest deadline of an intrusive list sorted by deadline. While it waits for
    // timer_wake_, a call whose deadline is not earlier needs no wake-up; after a quiet period of
    // one delay it sleeps until a call wakes it.
    void schedule(CallBase& call) {
        detail::UniqueLock lock(timer_mutex_);
        // Read under the lock, so a deadline is never earlier than the timer_wake_ of a quiet
        // period that began before it.
        const TimePoint now = clock_->now();
        call.last_start = now;
        const TimePoint deadline = detail::saturating_add(now, options_.delay);
        if (deadline == TimePoint::max()) {
            return;
        }
        if (!timer_.joinable()) {
            timer_ = std::thread([this] { timer_loop(); });
        }
        call.timer_scheduled = true;
        link_locked(call, deadline);
        if (deadline < timer_wake_) {
            lock.unlock();
            timer_cv_.notify_one();
        }
    }

    void unschedule(CallBase& call) {
        detail::LockGuard lock(timer_mutex_);
        call.timer_done = true;
        if (call.timer_linked) {
            unlink_locked(call);
        }
    }

    void link_locked(CallBase& call, TimePoint deadline) noexcept BULWARK_REQUIRES(timer_mutex_) {
        call.timer_deadline = deadline;
        CallBase* before = timer_tail_;  // deadlines mostly arrive in order: search from the end
        while (before != nullptr && before->timer_deadline > deadline) {
            before = before->timer_prev;
        }
        call.timer_prev = before;
        call.timer_next = before != nullptr ? before->timer_next : timer_head_;
        (call.timer_next != nullptr ? call.timer_next->timer_prev : timer_tail_) = &call;
        (before != nullptr ? before->timer_next : timer_head_) = &call;
        call.timer_linked = true;
    }

    void unlink_locked(CallBase& call) noexcept BULWARK_REQUIRES(timer_mutex_) {
        (call.timer_prev != nullptr ? call.timer_prev->timer_next : timer_head_) = call.timer_next;
        (call.timer_next != nullptr ? call.timer_next->timer_prev : timer_tail_) = call.timer_prev;
        call.timer_prev = nullptr;
        call.timer_next = nullptr;
        call.timer_linked = false;
    }

    void timer_loop() {
        detail::UniqueLock lock(timer_mutex_);
        while (!timer_stop_) {
            const TimePoint now = clock_->now();
            CallBase* head = timer_head_;
            if (head == nullptr) {
                if (timer_wake_ == TimePoint::max()) {
                    timer_cv_.wait(lock.native());
                } else if (now >= timer_wake_) {
                    timer_wake_ = TimePoint::max();  // a quiet period passed: sleep until woken
                } else {
                    clock_->wait_until(timer_cv_, lock.native(), timer_wake_);
                }
                continue;
            }
            if (now < head->timer_deadline) {
                timer_wake_ = head->timer_deadline;
                clock_->wait_until(timer_cv_, lock.native(), timer_wake_);
                continue;
            }
            unlink_locked(*head);
            // The caller unlinks its call under this lock before it lets go of it, so the call
            // is alive here; `keep` holds it while the lock is released.
            std::shared_ptr<CallBase> keep = head->shared_from_this();
            if (timer_head_ == nullptr) {
                timer_wake_ = detail::saturating_add(now, options_.delay);
            }
            lock.unlock();
            const TimePoint again = keep->on_timer(now);
            lock.lock();
            if (again != TimePoint::max() && !keep->timer_done) {
                link_locked(*keep, again);
            }
            lock.unlock();
            keep.reset();  // may be the last owner: not under the lock
            lock.lock();
        }
    }

    HedgingOptions options_;
    Clock* const clock_;
    Listeners<HedgeEvent> listeners_;
    std::atomic<std::uint64_t> calls_{0};
    std::atomic<std::uint64_t> hedges_{0};
    std::atomic<std::uint64_t> primary_wins_{0};
    std::atomic<std::uint64_t> hedge_wins_{0};
    std::atomic<std::uint64_t> exhausted_{0};

    detail::Mutex timer_mutex_;
    std::condition_variable timer_cv_;
    std::thread timer_ BULWARK_GUARDED_BY(timer_mutex_);
    CallBase* timer_head_ BULWARK_GUARDED_BY(timer_mutex_) = nullptr;
    CallBase* timer_tail_ BULWARK_GUARDED_BY(timer_mutex_) = nullptr;
    TimePoint timer_wake_ BULWARK_GUARDED_BY(timer_mutex_) = TimePoint::max();
    bool timer_stop_ BULWARK_GUARDED_BY(timer_mutex_) = false;

    detail::Mutex pool_mutex_;
    std::unique_ptr<detail::HedgingPool> pool_ BULWARK_GUARDED_BY(pool_mutex_);  // declared last
};

using Hedging = BasicHedging<>;

}  // namespace bulwark

#endif  // BULWARK_HEDGING_HPP
// #include <bulwark/load_shedder.hpp>
// LoadShedder: drops calls by priority while the service is degraded.
#ifndef BULWARK_LOAD_SHEDDER_HPP
#define BULWARK_LOAD_SHEDDER_HPP

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

// #include <bulwark/context.hpp> (already included above)
// #include <bulwark/degradation_level.hpp> (already included above)
// #include <bulwark/detail/striped_counter.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/errors.hpp> (already included above)
// #include <bulwark/events.hpp> (already included above)
// #include <bulwark/outcome.hpp> (already included above)
// #include <bulwark/policy.hpp> (already included above)

namespace bulwark {

struct LoadShedderOptions {
    // Normal-priority calls are shed from this level on.
    DegradationLevel shed_at = DegradationLevel::severe;
    // With priorities, low-priority calls are shed one level earlier and high-priority ones one
    // level later; critical calls are never shed by level. false: every call alike.
    bool by_priority = true;
    // Optional: also shed when this returns true (a queue too long, a CPU too hot…).
    std::function<bool(const Context&)> shed_if{};
};

// A call was shed.
struct ShedEvent {
    DegradationLevel level = DegradationLevel::normal;
    Priority priority = Priority::normal;
    bool by_predicate = false;
};

struct LoadShedderStats {
    std::uint64_t passed = 0;
    std::uint64_t shed = 0;
};

// Drops calls while the service is degraded, lowest priority first, so that what matters keeps
// working.
//   bulwark::LoadShedder shedder(degradation, bulwark::DegradationLevel::severe);
//   bulwark::LoadShedder front("front", degradation, bulwark::DegradationLevel::severe);  // named
//   ctx.set_priority(bulwark::Priority::critical);    // a call that must pass longest
//   shedder.execute(f, ctx);                          // LoadShedError when shed
// The degradation must outlive the shedder. Thread-safe. Passing costs one atomic load of the
// level and a per-thread counter; shedding allocates nothing (the error is built once).
// LoadShedder is BasicLoadShedder<>: a class template only so that a translation unit compiles only
// the members it uses (the Tag is never used).
template <class Tag = void>
class BasicLoadShedder : public PolicyBase<BasicLoadShedder<Tag>> {
public:
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    BasicLoadShedder(const DegradationSignal& degradation, DegradationLevel shed_at)
        : BasicLoadShedder(degradation, LoadShedderOptions{shed_at, true, nullptr}) {}

    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    BasicLoadShedder(const DegradationSignal& degradation, LoadShedderOptions options)
        : BasicLoadShedder(std::string(), degradation, std::move(options)) {}

    // A named shedder: its rejections say the name in their message and in
    // RejectedError::source().
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    BasicLoadShedder(std::string name, const DegradationSignal& degradation,
                     DegradationLevel shed_at)
        : BasicLoadShedder(std::move(name), degradation,
                           LoadShedderOptions{shed_at, true, nullptr}) {}
    BasicLoadShedder(std::string name, const DegradationSignal& degradation,
                     LoadShedderOptions options)
        : name_(std::make_shared<const std::string>(std::move(name))),
          degradation_(&degradation),
          options_(std::move(options)),
          error_(std::make_exception_ptr(LoadShedError(
              name_, (name_->empty() ? std::string("load shed")
                                     : detail::component_label("load shedder", *name_)) +
                         ": the service is degraded (shedding from level " +
                         to_string(options_.shed_at) + ")"))) {
        detail::check_enumerator(options_.shed_at, DegradationLevel::critical,
                                 "LoadShedderOptions.shed_at", "DegradationLevel");
        if (options_.shed_at == DegradationLevel::normal) {
            detail::throw_invalid_option("LoadShedderOptions.shed_at",
                                         "must be above normal (or every call would be shed)",
                                         "normal");
        }
    }

    BasicLoadShedder(const BasicLoadShedder&) = delete;
    BasicLoadShedder& operator=(const BasicLoadShedder&) = delete;

    // Empty when unnamed.
    const std::string& name() const noexcept { return *name_; }

    // True if a call with this context would be shed now.
    bool should_shed(const Context& ctx) const {
        return shed_by_level(ctx.priority()) || (options_.shed_if && options_.shed_if(ctx));
    }

    template <class Next>
    auto apply(Context& ctx, Next&& next) {
        using O = std::invoke_result_t<Next&, Context&>;
        const bool by_level = shed_by_level(ctx.priority());
        if (BULWARK_UNLIKELY(by_level || (options_.shed_if && options_.shed_if(ctx)))) {
            shed(ctx, !by_level);
            return O::from_error(error_);
        }
        passed_.add();
        return next(ctx);
    }

    // Called for every call shed. Returns the id that remove_listener() takes; throws
    // std::invalid_argument for an empty listener.
    ListenerId on_shed(std::function<void(const ShedEvent&)> listener) {
        return listeners_.add(std::move(listener));
    }
    // Stops calling a listener; false if the id is unknown here or already removed.
    bool remove_listener(ListenerId id) noexcept { return listeners_.remove(id); }

    LoadShedderStats stats() const noexcept {
        return LoadShedderStats{passed_.sum(), shed_.load(std::memory_order_relaxed)};
    }

private:
    bool shed_by_level(Priority priority) const noexcept {
        const int level = static_cast<int>(degradation_->level());
        int threshold = static_cast<int>(options_.shed_at);
        if (options_.by_priority) {
            switch (priority) {
                case Priority::low:
                    threshold -= 1;
                    break;
                case Priority::normal:
                    break;
                case Priority::high:
                    threshold += 1;
                    break;
                case Priority::critical:
                    return false;
            }
        }
        // A low-priority threshold never falls to normal: a healthy service sheds nothing.
        return level >= std::max(threshold, 1);
    }

    void shed(const Context& ctx, bool by_predicate) noexcept {
        // relaxed: a statistic.
        shed_.fetch_add(1, std::memory_order_relaxed);
        listeners_.emit_with([&] {
            return ShedEvent{degradation_->level(), ctx.priority(), by_predicate};
        });
    }

    const std::shared_ptr<const std::string> name_;
    const DegradationSignal* degradation_;
    const LoadShedderOptions options_;
    const std::exception_ptr error_;
    detail::StripedCounter passed_;
    std::atomic<std::uint64_t> shed_{0};
    Listeners<ShedEvent> listeners_;
};

using LoadShedder = BasicLoadShedder<>;

}  // namespace bulwark

#endif  // BULWARK_LOAD_SHEDDER_HPP
// #include <bulwark/rate_limiter.hpp> (already included above)
// #include <bulwark/retry.hpp> (already included above)
// #include <bulwark/testing.hpp>
// Test policies: Noop and FaultInjector.
#ifndef BULWARK_TESTING_HPP
#define BULWARK_TESTING_HPP

#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>

// #include <bulwark/clock.hpp> (already included above)
// #include <bulwark/context.hpp> (already included above)
// #include <bulwark/detail/mutex.hpp> (already included above)
// #include <bulwark/detail/random.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/events.hpp> (already included above)
// #include <bulwark/outcome.hpp> (already included above)
// #include <bulwark/policy.hpp> (already included above)

namespace bulwark {

// The error a FaultInjector fails calls with unless it is given another.
class InjectedFault : public std::runtime_error {
public:
    InjectedFault() : std::runtime_error("bulwark: injected fault") {}
    using std::runtime_error::runtime_error;
};

// What a FaultInjector did to one call.
struct FaultEvent {
    std::uint64_t call = 0;  // 1-based index of the call through the injector
    bool failed = false;     // the call was failed without reaching the next policy
    Duration latency{0};     // latency added before the call (slept on the injector's clock)
};

// A chaos policy for tests: fails calls on a script, with a seeded probability, and adds latency
// on its clock (a ManualClock in tests, so the latency costs no real time).
//   bulwark::ManualClock clock;
//   bulwark::FaultInjector chaos(clock);
//   chaos.fail_next(2);                       // the next two calls fail with InjectedFault
//   chaos.fail_with_probability(0.3, 42);     // then 30% of calls fail, reproducibly for seed 42
//   chaos.add_latency(200ms);                 // every call first sleeps 200ms on `clock`
//   bulwark::pipeline(breaker, chaos).execute(f);
// Order of decisions per call: the scripted queue (fail_next/pass_next/script) first, then
// fail_always, then the probability. A failed call does not run the rest of the pipeline.
// Thread-safe (a mutex guards the script; this is a test tool, not a hot path).
// FaultInjector is BasicFaultInjector<>: a class template only so that a translation unit that does
// not use it does not compile it (the Tag is never used).
template <class Tag = void>
class BasicFaultInjector : public PolicyBase<BasicFaultInjector<Tag>> {
public:
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    BasicFaultInjector() : BasicFaultInjector(default_clock()) {}
    explicit BasicFaultInjector(Clock& clock)
        : clock_(&clock), error_(std::make_exception_ptr(InjectedFault())) {}

    BasicFaultInjector(const BasicFaultInjector&) = delete;
    BasicFaultInjector& operator=(const BasicFaultInjector&) = delete;

    // The next `n` calls fail (with `error`, or the default error).
    BasicFaultInjector& fail_next(std::size_t n, const std::exception_ptr& error = nullptr) {
        detail::LockGuard lock(mutex_);
        for (std::size_t i = 0; i < n; ++i) {
            script_.push_back(Step{true, error});
        }
        return *this;
    }

    // The next `n` calls pass, whatever the probability or fail_always say.
    BasicFaultInjector& pass_next(std::size_t n) {
        detail::LockGuard lock(mutex_);
        for (std::size_t i = 0; i < n; ++i) {
            script_.push_back(Step{false, nullptr});
        }
        return *this;
    }

    // A script of the next calls: 'x' (or 'F') fails one, '.' (or 'P') passes one.
    //   chaos.script("xx..x");
    // Throws std::invalid_argument on any other character.
    BasicFaultInjector& script(const std::string& steps) {
        std::deque<Step> parsed;
        for (char c : steps) {
            if (c == 'x' || c == 'F') {
                parsed.push_back(Step{true, nullptr});
            } else if (c == '.' || c == 'P') {
                parsed.push_back(Step{false, nullptr});
            } else {
                detail::throw_invalid_option("FaultInjector.script(steps): steps",
                                             "may contain only 'x'/'F' (fail) and '.'/'P' (pass)",
                                             std::string("'") + c + "'");
            }
        }
        detail::LockGuard lock(mutex_);
        script_.insert(script_.end(), parsed.begin(), parsed.end());
        return *this;
    }

    // Every call fails until heal().
    BasicFaultInjector& fail_always(std::exception_ptr error = nullptr) {
        detail::LockGuard lock(mutex_);
        always_fail_ = true;
        if (error) {
            always_error_ = std::move(error);
        }
        return *this;
    }

    // Each call fails with probability `p`, drawn from a generator seeded with `seed`.
    // Throws std::invalid_argument unless 0 <= p <= 1.
    BasicFaultInjector& fail_with_probability(double p, std::uint64_t seed = 0) {
        if (!(p >= 0.0 && p <= 1.0)) {
            detail::throw_invalid_option("FaultInjector.fail_with_probability(p): p",
                                         "must be in [0, 1]", detail::format_number(p));
        }
        detail::LockGuard lock(mutex_);
        probability_ = p;
        rng_.seed(seed);
        return *this;
    }

    // Every call first sleeps `d` on the injector's clock. Throws std::invalid_argument if d < 0.
    BasicFaultInjector& add_latency(Duration d) {
        if (d < Duration::zero()) {
            detail::throw_invalid_option("FaultInjector.add_latency(d): d", "must be >= 0",
                                         detail::format_duration(d));
        }
        detail::LockGuard lock(mutex_);
        latency_ = d;
        return *this;
    }

    // The error failed calls carry when no other was given (default: InjectedFault).
    BasicFaultInjector& fail_with(std::exception_ptr error) {
        if (!error) {
            detail::throw_invalid_argument("FaultInjector.fail_with: the exception_ptr is null");
        }
        detail::LockGuard lock(mutex_);
        error_ = std::move(error);
        return *this;
    }

    // Clears the script, fail_always, the probability and the latency.
    BasicFaultInjector& heal() {
        detail::LockGuard lock(mutex_);
        script_.clear();
        always_fail_ = false;
        always_error_ = nullptr;
        probability_ = 0.0;
        latency_ = Duration::zero();
        return *this;
    }

    std::uint64_t calls() const {
        detail::LockGuard lock(mutex_);
        return calls_;
    }
    std::uint64_t injected_failures() const {
        detail::LockGuard lock(mutex_);
        return injected_;
    }

    // Called for every injected fault and latency. Returns the id that remove_listener()
    // takes; throws std::invalid_argument for an empty listener.
    ListenerId on_fault(std::function<void(const FaultEvent&)> listener) {
        return listeners_.add(std::move(listener));
    }
    // Stops calling a listener; false if the id is unknown here or already removed.
    bool remove_listener(ListenerId id) noexcept { return listeners_.remove(id); }

    template <class Next>
    auto apply(Context& ctx, Next&& next) {
        using R = typename decltype(next(ctx))::value_type;
        const Decision d = decide();
        if (d.latency > Duration::zero()) {
            clock_->sleep_for(d.latency);
        }
        listeners_.emit_with([&] { return FaultEvent{d.call, d.error != nullptr, d.latency}; });
        if (d.error) {
            return Outcome<R>::from_error(d.error);
        }
        return std::forward<Next>(next)(ctx);
    }

private:
    struct Step {
        bool fail = false;
        std::exception_ptr error;
    };
    struct Decision {
        std::uint64_t call = 0;
        std::exception_ptr error;
        Duration latency{0};
    };

    Decision decide() {
        detail::LockGuard lock(mutex_);
        Decision d{++calls_, nullptr, latency_};
        if (!script_.empty()) {
            Step step = std::move(script_.front());
            script_.pop_front();
            if (step.fail) {
                d.error = step.error ? step.error : error_;
            }
        } else if (always_fail_) {
            d.error = always_error_ ? always_error_ : error_;
        } else if (probability_ > 0.0 && rng_.next_double() < probability_) {
            d.error = error_;
        }
        if (d.error) {
            ++injected_;
        }
        return d;
    }

    Clock* clock_;
    mutable detail::Mutex mutex_;
    std::deque<Step> script_ BULWARK_GUARDED_BY(mutex_);
    std::exception_ptr error_ BULWARK_GUARDED_BY(mutex_);
    std::exception_ptr always_error_ BULWARK_GUARDED_BY(mutex_);
    bool always_fail_ BULWARK_GUARDED_BY(mutex_) = false;
    double probability_ BULWARK_GUARDED_BY(mutex_) = 0.0;
    detail::SplitMix64 rng_ BULWARK_GUARDED_BY(mutex_);
    Duration latency_ BULWARK_GUARDED_BY(mutex_){0};
    std::uint64_t calls_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::uint64_t injected_ BULWARK_GUARDED_BY(mutex_) = 0;
    Listeners<FaultEvent> listeners_;
};

using FaultInjector = BasicFaultInjector<>;

}  // namespace bulwark

#endif  // BULWARK_TESTING_HPP
// #include <bulwark/timeout.hpp>
// Timeout: a cooperative deadline on the context; late results fail with TimeoutError.
#ifndef BULWARK_TIMEOUT_HPP
#define BULWARK_TIMEOUT_HPP

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

// #include <bulwark/clock.hpp> (already included above)
// #include <bulwark/context.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/errors.hpp> (already included above)
// #include <bulwark/events.hpp> (already included above)
// #include <bulwark/outcome.hpp> (already included above)
// #include <bulwark/policy.hpp> (already included above)

namespace bulwark {

// A result that arrived after its Timeout's deadline (and was replaced by a TimeoutError).
struct LateResult {
    std::string_view operation;  // the context's operation name
    Duration timeout{0};         // the Timeout's duration
    Duration elapsed{0};         // how long the call really took
    bool succeeded = false;      // the late outcome held a value
    std::exception_ptr error;    // or the error it held
    // It missed a tighter deadline the caller set on the context, not the Timeout's own.
    bool caller_deadline = false;
};

struct TimeoutStats {
    std::uint64_t timeouts = 0;  // results replaced by a TimeoutError
};

// A cooperative timeout: sets ctx.deadline() (the tighter of an outer deadline and its own) so
// that the call can pass it on — to a socket, a query, an inner Retry — and ctx.cancelled()
// turns true once the deadline passes, for calls that poll. A result that arrives after the
// deadline fails with TimeoutError (optionally handed to on_late_result listeners), and so does
// one after a tighter deadline the caller set on the context without a clock.
//   bulwark::Timeout timeout(2s);
//   bulwark::Timeout db_timeout("db", 2s);   // named: its TimeoutErrors' source()
//   timeout.execute([](bulwark::Context& ctx) { return db.query(sql, ctx.deadline()); });
// It never spawns a thread and cannot stop a call that ignores its deadline: it bounds what the
// caller waits for only together with a call that honours ctx. Outside a Retry it bounds all
// attempts together; inside, each attempt.
// Thread-safe. Reads the clock's coarse time twice per call (Clock::coarse_now_fast): it may
// fire up to one clock tick early or late (a few ms on SteadyClock; on a TickingClock, one
// resolution plus however late its thread runs). Does not allocate on the success path.
// Timeout is BasicTimeout<>: a class template only so that a translation unit compiles only the
// members it uses (the Tag is never used).
template <class Tag = void>
class BasicTimeout : public PolicyBase<BasicTimeout<Tag>> {
public:
    // Throws std::invalid_argument unless timeout > 0. The clock must outlive the Timeout.
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    explicit BasicTimeout(Duration timeout, Clock& clock = default_clock())
        : BasicTimeout(std::string(), timeout, clock) {}

    // A named BasicTimeout: its TimeoutErrors say the name in their message and in
    // RejectedError::source().
    BasicTimeout(std::string name, Duration timeout, Clock& clock = default_clock())
        : name_(std::make_shared<const std::string>(std::move(name))),
          timeout_(timeout),
          clock_(&clock) {
        if (timeout <= Duration::zero()) {
            detail::throw_invalid_option("Timeout.timeout", "must be > 0",
                                         detail::format_duration(timeout));
        }
    }

    // A copy has the same name, timeout and clock, and no listeners or stats.
    BasicTimeout(const BasicTimeout& other)
        : name_(other.name_), timeout_(other.timeout_), clock_(other.clock_) {}
    BasicTimeout& operator=(const BasicTimeout&) = delete;

    Duration timeout() const noexcept { return timeout_; }
    // Empty when unnamed.
    const std::string& name() const noexcept { return *name_; }

    // Called for every result that arrived after its deadline (before it is replaced by a
    // TimeoutError). Returns the id that remove_listener() takes; throws std::invalid_argument
    // for an empty listener.
    ListenerId on_late_result(std::function<void(const LateResult&)> listener) {
        return late_.add(std::move(listener));
    }
    // Stops calling a listener; false if the id is unknown here or already removed.
    bool remove_listener(ListenerId id) noexcept { return late_.remove(id); }

    TimeoutStats stats() const noexcept {
        return TimeoutStats{timeouts_.load(std::memory_order_relaxed)};
    }

    template <class Next>
    auto apply(Context& ctx, Next&& next) {
        using O = std::invoke_result_t<Next&, Context&>;
        const TimePoint start = clock_->coarse_now_fast();
        // Saturates: a timeout too long to represent is no deadline (TimePoint::max()).
        const TimePoint deadline = detail::saturating_add(start, timeout_);
        // Restores the caller's deadline on every exit, so an outer policy (a Retry) sees its
        // own again.
        struct Restore {
            Context& ctx;
            TimePoint deadline;  // TimePoint::max(): none
            const Clock* clock = nullptr;
            ~Restore() { ctx.set_deadline(deadline, clock); }
        } restore{ctx, ctx.deadline_or(TimePoint::max()), ctx.deadline_clock()};
        // A tighter outer deadline that came without a clock (a caller's ctx.set_deadline(t))
        // is taken over: this Timeout enforces it, and hands it on with its clock, so that
        // ctx.cancelled() fires at it and inner Timeouts leave it to this one. A tighter one set
        // with a clock belongs to a policy that checks it itself (an outer Timeout): enforcing
        // it here too would make an attempt that answered within its own timeout a failure of
        // the dependency for a breaker in between, when only the caller's total ran out.
        const bool take_over = restore.clock == nullptr && restore.deadline < deadline;
        const TimePoint effective = take_over ? restore.deadline : deadline;
        if (take_over) {
            ctx.set_deadline(effective, clock_);
        } else {
            ctx.tighten_deadline(deadline, clock_);
        }
        // One named result, the only thing returned (NRVO): a late one is replaced in place.
        O outcome = next(ctx);
        const TimePoint end = clock_->coarse_now_fast();
        if (BULWARK_UNLIKELY(end > effective)) {
            late(outcome, ctx, end - start, end <= deadline);
        }
        return outcome;
    }

private:
    template <class O>
    BULWARK_NOINLINE void late(O& outcome, const Context& ctx, Duration elapsed,
                               bool caller_deadline) {
        // relaxed: a statistic.
        timeouts_.fetch_add(1, std::memory_order_relaxed);
        late_.emit_with([&] {
            return LateResult{ctx.operation(),     timeout_,        elapsed,
                              outcome.has_value(), outcome.error(), caller_deadline};
        });
        std::string what = caller_deadline
                               ? "missed the caller's deadline after " +
                                     detail::format_duration(elapsed) + " (its own timeout is " +
                                     detail::format_duration(timeout_) + ")"
                               : "timed out after " + detail::format_duration(timeout_);
        if (!ctx.operation().empty()) {
            what = "operation '" + std::string(ctx.operation()) + "' " + what;
        }
        if (!name_->empty()) {
            what = detail::component_label("timeout", *name_) + ": " + what;
        }
        outcome.replace_with_error(std::make_exception_ptr(TimeoutError(name_, what)));
    }

    const std::shared_ptr<const std::string> name_;
    const Duration timeout_;
    Clock* const clock_;
    std::atomic<std::uint64_t> timeouts_{0};
    Listeners<LateResult> late_;
};

using Timeout = BasicTimeout<>;

}  // namespace bulwark

#endif  // BULWARK_TIMEOUT_HPP

#endif  // BULWARK_POLICIES_HPP
// #include <bulwark/queue.hpp>
// Queue stores: the QueueStore interface, the in-memory store and (on POSIX) the file store.
#ifndef BULWARK_QUEUE_HPP
#define BULWARK_QUEUE_HPP

// #include <bulwark/in_memory_queue_store.hpp> (already included above)
// #include <bulwark/queue_store.hpp> (already included above)

// The durable store needs POSIX file I/O: elsewhere this header brings the interface and the
// in-memory store only.
#if defined(__unix__) || defined(__APPLE__)
// #include <bulwark/file_queue_store.hpp>
// FileQueueStore: the durable QueueStore, a crash-safe journal on disk (POSIX).
#ifndef BULWARK_FILE_QUEUE_STORE_HPP
#define BULWARK_FILE_QUEUE_STORE_HPP

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

// #include <bulwark/clock.hpp> (already included above)
// #include <bulwark/config.hpp> (already included above)
// #include <bulwark/detail/file_system.hpp> (already included above)
// #include <bulwark/detail/group_commit.hpp> (already included above)
// #include <bulwark/detail/journal.hpp> (already included above)
// #include <bulwark/detail/journal_file.hpp> (already included above)
// #include <bulwark/detail/mutex.hpp> (already included above)
// #include <bulwark/detail/queue_index.hpp> (already included above)
// #include <bulwark/detail/queue_journal.hpp>
// The queue journal's records: their encoding and the codec FileQueueStore's journal uses
// (private). SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_QUEUE_JOURNAL_HPP
#define BULWARK_DETAIL_QUEUE_JOURNAL_HPP

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// #include <bulwark/detail/journal.hpp> (already included above)
// #include <bulwark/queue_store.hpp> (already included above)

// FileQueueStore's journal is the dead-letter journal's file format (header, salted CRC-32C
// frames with sequence numbers, batches, torn-tail detection) with its own magic, BWQUEJNL, and
// its own records. No I/O here. See docs/queue_store.md for the layout.

namespace bulwark {
namespace detail {
namespace queue_journal {

inline constexpr std::array<char, 8> magic = {'B', 'W', 'Q', 'U', 'E', 'J', 'N', 'L'};

enum class RecordType : std::uint8_t {
    message = 1,   // a whole QueuedMessage: a push (unleased), or a snapshot written by compaction
    claim = 2,     // id, lease token, lease_until: the message is leased, claims + 1
    complete = 3,  // id, lease: the message is done and leaves the store
    release = 4,   // id, lease, payload, due, attempts: the lease ends, ready again at due
    extend = 5,    // id, lease, lease_until
    remove = 6,    // id
    tokens = 7,    // lease tokens up to this value may have been handed out: start above it
    batch = 8,     // the records of one call (push_all, a claim of several): all or none
};

// One record; `message` carries what the type uses of it (the id always).
struct Record {
    RecordType type = RecordType::message;
    QueuedMessage message;
    std::uint64_t tokens = 0;       // tokens
    std::vector<Record> batch;      // batch to encode: the records, none a batch
    std::string_view batch_frames;  // batch as decoded: its inner frames (see journal.hpp)
};

inline void encode_body(const Record& r, std::string& out) {
    journal::Writer w(out);
    w.u8(static_cast<std::uint8_t>(r.type));
    const QueuedMessage& m = r.message;
    switch (r.type) {
        case RecordType::message:
            w.str(m.id);
            w.str(m.payload);
            w.time(m.due);
            w.time(m.enqueued);
            w.u32(m.attempts);
            w.u32(m.claims);
            w.u64(m.lease);
            w.time(m.lease_until);
            break;
        case RecordType::claim:
        case RecordType::extend:
            w.str(m.id);
            w.u64(m.lease);
            w.time(m.lease_until);
            break;
        case RecordType::complete:
            w.str(m.id);
            w.u64(m.lease);
            break;
        case RecordType::release:
            w.str(m.id);
            w.u64(m.lease);
            w.str(m.payload);
            w.time(m.due);
            w.u32(m.attempts);
            break;
        case RecordType::remove:
            w.str(m.id);
            break;
        case RecordType::tokens:
            w.u64(r.tokens);
            break;
        case RecordType::batch:
            journal::encode_inner(
                r.batch, out, [](const Record& inner, std::string& to) { encode_body(inner, to); });
            break;
    }
}

inline bool decode_record(std::string_view body, Record& out, bool allow_batch = true);

template <class F>
bool for_each_in_batch(const Record& batch, F&& f) {
    Record inner;
    return journal::for_each_inner(
        batch.batch_frames, inner,
        [](std::string_view body, Record& r) { return decode_record(body, r, false); },
        std::forward<F>(f));
}

// Decodes type+payload; false for anything that is not exactly one well-formed record: an empty
// id, a lease record without a lease, a batch in a batch or an empty batch.
inline bool decode_record(std::string_view body, Record& out, bool allow_batch) {
    journal::Reader r(body);
    const std::uint8_t type = r.u8();
    out = Record{};
    QueuedMessage& m = out.message;
    switch (type) {
        case static_cast<std::uint8_t>(RecordType::message):
            m.id = r.str();
            m.payload = r.str();
            m.due = r.time();
            m.enqueued = r.time();
            m.attempts = r.u32();
            m.claims = r.u32();
            m.lease = r.u64();
            m.lease_until = r.time();
            break;
        case static_cast<std::uint8_t>(RecordType::claim):
        case static_cast<std::uint8_t>(RecordType::extend):
            m.id = r.str();
            m.lease = r.u64();
            m.lease_until = r.time();
            break;
        case static_cast<std::uint8_t>(RecordType::complete):
            m.id = r.str();
            m.lease = r.u64();
            break;
        case static_cast<std::uint8_t>(RecordType::release):
            m.id = r.str();
            m.lease = r.u64();
            m.payload = r.str();
            m.due = r.time();
            m.attempts = r.u32();
            break;
        case static_cast<std::uint8_t>(RecordType::remove):
            m.id = r.str();
            break;
        case static_cast<std::uint8_t>(RecordType::tokens):
            out.type = RecordType::tokens;
            out.tokens = r.u64();
            return r.ok() && r.at_end();
        case static_cast<std::uint8_t>(RecordType::batch): {
            out.type = RecordType::batch;
            if (!allow_batch) {
                return false;
            }
            out.batch_frames = body.substr(1);
            std::size_t count = 0;
            return for_each_in_batch(out, [&count](Record&) { ++count; }) && count > 0;
        }
        default:
            return false;
    }
    out.type = static_cast<RecordType>(type);
    const bool needs_lease = out.type == RecordType::claim || out.type == RecordType::extend ||
                             out.type == RecordType::complete || out.type == RecordType::release;
    return r.ok() && r.at_end() && !m.id.empty() && (!needs_lease || m.lease != 0);
}

// The size of the message record compaction writes for `m`, without encoding it.
inline std::uint64_t snapshot_frame_size(const QueuedMessage& m) noexcept {
    return journal::frame_overhead + 4 + m.id.size() + 4 + m.payload.size() + 8 + 8 + 4 + 4 + 8 + 8;
}

// The size of a compacted journal that holds no message: the header and the tokens record.
inline std::uint64_t snapshot_base_size() noexcept {
    return journal::header_size + journal::frame_overhead + 8;
}

// What BasicJournalFile needs of FileQueueStore's records (see journal::DeadLetterCodec). The
// queue journal starts at version 3, the frame layout it shares with the dead-letter journal.
struct Codec {
    using Record = queue_journal::Record;
    static constexpr const char* store_name = "bulwark::FileQueueStore";
    static constexpr const char* journal_kind = "bulwark queue journal";
    static constexpr std::array<char, 8> file_magic = magic;
    static constexpr std::uint32_t version = journal::format_version;
    static constexpr std::uint32_t oldest_version = journal::format_version;
    static constexpr unsigned char max_type = static_cast<unsigned char>(RecordType::batch);

    static void encode_body(const Record& r, std::string& out) {
        queue_journal::encode_body(r, out);
    }
    static bool decode(std::string_view body, Record& out) { return decode_record(body, out); }
    static bool is_batch(const Record& r) noexcept { return r.type == RecordType::batch; }
    template <class F>
    static bool for_each_in_batch(const Record& batch, F&& f) {
        return queue_journal::for_each_in_batch(batch, std::forward<F>(f));
    }
    static Record batch_of(const Record* first, const Record* last) {
        Record batch;
        batch.type = RecordType::batch;
        batch.batch.assign(first, last);
        return batch;
    }
    static std::uint64_t frame_estimate(const Record& r) noexcept {
        return snapshot_frame_size(r.message) + 8;
    }
    [[noreturn]] static void too_large(std::size_t size, std::size_t limit) {
        throw QueueMessageTooLargeError(
            "bulwark::FileQueueStore: journal record of " + std::to_string(size) +
                " bytes exceeds the journal's frame limit (" + std::to_string(limit) + ")",
            "the journal's frame limit", size, limit);
    }
};

}  // namespace queue_journal
}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_QUEUE_JOURNAL_HPP
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/file_queue_store_options.hpp>
// FileQueueStoreOptions: the durable queue store's settings.
#ifndef BULWARK_FILE_QUEUE_STORE_OPTIONS_HPP
#define BULWARK_FILE_QUEUE_STORE_OPTIONS_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/journal_options.hpp> (already included above)
// #include <bulwark/time.hpp> (already included above)

namespace bulwark {

struct FileQueueStoreOptions {
    // Messages held at most, leased or not: push() beyond it throws QueueFullError. A journal
    // holding more (the limit was lowered) keeps them all and refuses pushes until it is below.
    // >= 1. Default 10000000.
    std::size_t max_size = 10000000;
    // Larger payloads are refused with QueueMessageTooLargeError. In [1, 64 MiB]. Default 1 MiB.
    std::size_t max_payload_bytes = std::size_t{1} << 20U;
    // Longer ids are refused with QueueMessageTooLargeError. In [1, 65536]. Default 1024.
    std::size_t max_id_bytes = 1024;
    // Durability of push, complete, release and remove (see JournalSync; claim and extend are
    // never waited for: a lost one only delivers the message again). Default always.
    JournalSync sync = JournalSync::always;
    // sync=batch: sync once this many records are unsynced. >= 1. Default 128.
    std::size_t batch_records = 128;
    // sync=batch: sync at the first change at least this long after the last sync (no background
    // thread: call sync() from a timer to bound a quiet store's window). >= 0. Default 100 ms.
    Duration batch_interval = std::chrono::milliseconds(100);
    // What open does with damage (see JournalRecovery). Default tolerate_torn_tail.
    JournalRecovery recovery = JournalRecovery::tolerate_torn_tail;
    // The journal is rewritten with only the messages held once it is larger than both this and
    // twice their size. >= 4096. Default 4 MiB.
    std::uint64_t compact_min_bytes = std::uint64_t{4} << 20U;

    void validate() const {
        if (max_size == 0) {
            detail::throw_invalid_option("FileQueueStoreOptions.max_size", "must be >= 1", "0");
        }
        if (max_payload_bytes == 0 || max_payload_bytes > (std::size_t{64} << 20U)) {
            detail::throw_invalid_option("FileQueueStoreOptions.max_payload_bytes",
                                         "must be in [1, 67108864]",
                                         std::to_string(max_payload_bytes));
        }
        if (max_id_bytes == 0 || max_id_bytes > 65536) {
            detail::throw_invalid_option("FileQueueStoreOptions.max_id_bytes",
                                         "must be in [1, 65536]", std::to_string(max_id_bytes));
        }
        detail::check_enumerator(sync, JournalSync::none, "FileQueueStoreOptions.sync",
                                 "JournalSync");
        if (batch_records == 0) {
            detail::throw_invalid_option("FileQueueStoreOptions.batch_records", "must be >= 1",
                                         "0");
        }
        if (batch_interval < Duration::zero()) {
            detail::throw_invalid_option("FileQueueStoreOptions.batch_interval", "must be >= 0",
                                         detail::format_duration(batch_interval));
        }
        detail::check_enumerator(recovery, JournalRecovery::strict,
                                 "FileQueueStoreOptions.recovery", "JournalRecovery");
        if (compact_min_bytes < 4096) {
            detail::throw_invalid_option("FileQueueStoreOptions.compact_min_bytes",
                                         "must be >= 4096", std::to_string(compact_min_bytes));
        }
    }
};

}  // namespace bulwark

#endif  // BULWARK_FILE_QUEUE_STORE_OPTIONS_HPP
// #include <bulwark/journal_errors.hpp> (already included above)
// #include <bulwark/journal_options.hpp> (already included above)
// #include <bulwark/queue_store.hpp> (already included above)

namespace bulwark {

// A QueueStore kept in a journal on disk, with the dead-letter store's journal machinery
// (docs/queue_store.md): the same semantics as InMemoryQueueStore, every message also held in
// memory so that reads never touch the disk.
//   bulwark::FileQueueStore store("/var/lib/app/queue");   // options, file system, clock
//   store.push({"m-1", bytes, now});                      // durable when it returns
// Durability (JournalSync::always, the default): a push, complete, release or remove that
// returned survives a crash and a power loss (as far as fsync does), and is never undone. A claim
// or an extend is journaled but not waited for: lost in a power cut, it only means the message is
// delivered again (at least once). Lease tokens are unique across restarts: the store journals
// (and, with sync=always, syncs) a reservation of the next 4096 tokens before handing one out,
// and a reopened store starts above every token reserved or seen. Leases are wall times and
// survive a reopen: a message leased then is claimable again once its lease_until passes.
// With batch or none, the guarantees hold against a process crash only.
// The directory (created 0700; a symlink, another owner or group/other access is refused) holds
// `journal` (0600, one link) and `LOCK`: one store per directory, across processes (a second
// one is refused with JournalLockedError). Open replays the journal (see JournalRecovery) and may
// throw JournalError and its subclasses; it never crashes on a damaged file. A failed write is
// rolled back and the store stays usable (disk full); a failed sync poisons it (mutations then
// throw JournalPoisonedError; reopen to recover). Out of memory after a record was written also
// poisons: a reopen replays the whole change.
// Thread-safe: one mutex guards everything and is held across journal writes; with sync=always a
// call waits for its sync with the mutex released, so concurrent calls share one sync (group
// commit) and each returns once its own record is durable.
class FileQueueStore : public QueueStore {
    using Record = detail::queue_journal::Record;
    using Type = detail::queue_journal::RecordType;
    using Codec = detail::queue_journal::Codec;

public:
    // Opens (creating if missing) the store in `directory`. The file system and clock (read
    // only for sync=batch's interval) must outlive the store. Throws std::invalid_argument for
    // invalid options, JournalError and its subclasses when the journal cannot be opened.
    explicit FileQueueStore(std::string directory, FileQueueStoreOptions options = {},
                            FileSystem& fs = default_file_system(), Clock& clock = default_clock())
        : options_(checked(options)),
          group_(fs, Codec::store_name),
          journal_(fs, clock, group_, std::move(directory), detail::JournalOptions::of(options_)) {
        // Unlocked, as the constructor is: nothing else can reach the store yet. The analysis
        // skips constructors but not the lambdas in them.
        journal_.open([this](Record& r) BULWARK_NO_THREAD_SAFETY_ANALYSIS { apply(r); },
                      [this](std::uint64_t salt)
                          BULWARK_NO_THREAD_SAFETY_ANALYSIS { return snapshot(salt); },
                      [this](std::size_t records)
                          BULWARK_NO_THREAD_SAFETY_ANALYSIS { index_.reserve(records); });
        // Start above every token a process before may have handed out; the first claim
        // reserves a new block.
        last_lease_ = std::max(last_lease_, reserved_);
        reserved_ = last_lease_;
    }

    // Syncs what is unsynced (sync=batch), ignoring errors.
    ~FileQueueStore() override {
        try {
            detail::LockGuard lock(mutex_);
            journal_.sync_unsynced_batch();
        } catch (...) {  // NOLINT(bugprone-empty-catch): a destructor reports nothing
        }
    }

    const FileQueueStoreOptions& options() const noexcept { return options_; }
    // Unlocked: the directory is fixed when the journal is made.
    const std::string& directory() const noexcept BULWARK_NO_THREAD_SAFETY_ANALYSIS {
        return journal_.directory();
    }

    // Throws std::invalid_argument (empty or held id), QueueMessageTooLargeError (id or payload
    // over its limit), QueueFullError, JournalIoError or JournalPoisonedError; stored nothing then.
    void push(const QueuedMessage& message) override {
        detail::UniqueLock lock(mutex_);
        if (const std::uint64_t ticket = held_ticket(message)) {
            lock.unlock();
            group_.await(ticket);
            detail::throw_already_queued(push_call, message.id);
        }
        check_new(message, false);
        if (index_.size() >= options_.max_size) {
            full();
        }
        const std::uint64_t ticket = commit_and_apply({pushed(message)});
        lock.unlock();
        group_.await(ticket);
    }

    // All or nothing, as one journal write (one frame up to 128 MiB): a batch that does not fit
    // or holds a bad message stores none of its messages.
    void push_all(const std::vector<QueuedMessage>& messages) override {
        if (messages.empty()) {
            return;
        }
        detail::UniqueLock lock(mutex_);
        std::unordered_set<std::string_view> ids;
        std::vector<Record> records;
        records.reserve(messages.size());
        for (const QueuedMessage& m : messages) {
            if (const std::uint64_t ticket = held_ticket(m)) {
                lock.unlock();
                group_.await(ticket);
                detail::throw_already_queued(push_all_call, m.id);
            }
            check_new(m, true);
            if (!ids.insert(m.id).second) {
                detail::check_push_id(push_all_call, m, true);
            }
            records.push_back(pushed(m));
        }
        if (messages.size() > options_.max_size - std::min(options_.max_size, index_.size())) {
            full();
        }
        const std::uint64_t ticket = commit_and_apply(records);
        lock.unlock();
        group_.await(ticket);
    }

    std::vector<QueuedMessage> claim(WallTime now, std::size_t max, Duration lease_for) override {
        const WallTime until = detail::lease_end("bulwark::FileQueueStore::claim", now, lease_for);
        std::vector<QueuedMessage> out;
        detail::UniqueLock lock(mutex_);
        const std::vector<const QueuedMessage*> ready = index_.ready_at(now, max);
        if (ready.empty()) {
            return out;
        }
        std::vector<Record> records;
        records.reserve(ready.size() + 1);
        std::uint64_t token = last_lease_;
        if (token + ready.size() > reserved_) {
            // Journaled before any token of the block is handed out (and awaited below).
            Record r;
            r.type = Type::tokens;
            r.tokens = token + ready.size() + lease_block;
            records.push_back(std::move(r));
        }
        out.reserve(ready.size());
        for (const QueuedMessage* m : ready) {
            out.push_back(*m);
            QueuedMessage& c = out.back();
            c.lease = ++token;
            c.lease_until = until;
            ++c.claims;
            Record r;
            r.type = Type::claim;
            r.message.id = m->id;
            r.message.lease = c.lease;
            r.message.lease_until = until;
            records.push_back(std::move(r));
        }
        const bool reserving = records.front().type == Type::tokens;
        const std::uint64_t ticket = commit_and_apply(records);
        if (reserving) {
            reserve_ticket_ = ticket;
        }
        // Every claim waits for the latest reservation (at once when it is durable): no token
        // of a block is acknowledged before the block is.
        const std::uint64_t wait_for = reserve_ticket_;
        lock.unlock();
        group_.await(wait_for);
        return out;
    }

    bool complete(std::string_view id, std::uint64_t lease) override {
        detail::UniqueLock lock(mutex_);
        if (index_.find_leased(id, lease) == nullptr) {
            return false;
        }
        Record r;
        r.type = Type::complete;
        r.message.id = std::string(id);
        r.message.lease = lease;
        const std::uint64_t ticket = commit_and_apply({std::move(r)});
        lock.unlock();
        group_.await(ticket);
        return true;
    }

    // Also throws QueueMessageTooLargeError (the lease stays) for a payload over the limit.
    bool release(const QueuedMessage& message) override {
        detail::UniqueLock lock(mutex_);
        if (index_.find_leased(message.id, message.lease) == nullptr) {
            return false;
        }
        check_payload(message, "release");
        Record r;
        r.type = Type::release;
        r.message.id = message.id;
        r.message.lease = message.lease;
        r.message.payload = message.payload;
        r.message.due = message.due;
        r.message.attempts = message.attempts;
        const std::uint64_t ticket = commit_and_apply({std::move(r)});
        lock.unlock();
        group_.await(ticket);
        return true;
    }

    // Journaled, not awaited: a lost extend ends the lease sooner (the message is redelivered).
    bool extend(std::string_view id, std::uint64_t lease, WallTime until) override {
        detail::LockGuard lock(mutex_);
        if (index_.find_leased(id, lease) == nullptr) {
            return false;
        }
        Record r;
        r.type = Type::extend;
        r.message.id = std::string(id);
        r.message.lease = lease;
        r.message.lease_until = until;
        commit_and_apply({std::move(r)});
        return true;
    }

    bool remove(std::string_view id) override {
        detail::UniqueLock lock(mutex_);
        if (!index_.contains(id)) {
            return false;
        }
        Record r;
        r.type = Type::remove;
        r.message.id = std::string(id);
        const std::uint64_t ticket = commit_and_apply({std::move(r)});
        lock.unlock();
        group_.await(ticket);
        return true;
    }

    std::optional<QueuedMessage> get(std::string_view id) const override {
        detail::LockGuard lock(mutex_);
        const QueuedMessage* m = index_.find(id);
        if (m == nullptr) {
            return std::nullopt;
        }
        return *m;
    }

    std::size_t size() const override {
        detail::LockGuard lock(mutex_);
        return index_.size();
    }

    std::optional<WallTime> next_ready() const override {
        detail::LockGuard lock(mutex_);
        return index_.next_ready();
    }

    std::vector<QueuedMessage> list(std::size_t limit) const override {
        std::vector<QueuedMessage> out;
        detail::LockGuard lock(mutex_);
        index_.for_each_ready([&](const QueuedMessage& m) {
            if (out.size() >= limit) {
                return false;
            }
            out.push_back(m);
            return true;
        });
        return out;
    }

    QueueStoreStats stats() const override {
        detail::LockGuard lock(mutex_);
        return {index_.size(), index_.leased()};
    }

    // Makes every record written so far durable (for sync=batch or none, or to make claims and
    // extends durable). Throws JournalIoError (and poisons) if the sync fails,
    // JournalPoisonedError on a poisoned store.
    void sync() {
        detail::LockGuard lock(mutex_);
        journal_.check_writable();
        journal_.sync();
    }

    bool poisoned() const { return group_.poisoned(); }

    JournalStats journal_stats() const {
        detail::LockGuard lock(mutex_);
        JournalStats s = journal_.stats();
        s.live_bytes = live_bytes_;
        return s;
    }

private:
    static constexpr const char* push_call = "bulwark::FileQueueStore::push";
    static constexpr const char* push_all_call = "bulwark::FileQueueStore::push_all";
    // Tokens reserved at a time: one reservation record (and sync) per this many claims.
    static constexpr std::uint64_t lease_block = 4096;

    static const FileQueueStoreOptions& checked(const FileQueueStoreOptions& options) {
        options.validate();
        return options;
    }

    [[noreturn]] BULWARK_NOINLINE void full() const {
        throw QueueFullError("bulwark::FileQueueStore is full (max_size " +
                             std::to_string(options_.max_size) + ")");
    }

    [[noreturn]] BULWARK_NOINLINE static void too_large(const char* call, const char* what,
                                                        const char* limit_name, std::size_t size,
                                                        std::size_t limit) {
        throw QueueMessageTooLargeError(std::string("bulwark::FileQueueStore::") + call + ": " +
                                            what + " of " + std::to_string(size) +
                                            " bytes exceeds " + limit_name + " (" +
                                            std::to_string(limit) + ")",
                                        limit_name, size, limit);
    }

    void check_payload(const QueuedMessage& m, const char* call) const {
        if (m.payload.size() > options_.max_payload_bytes) {
            too_large(call, "payload", "max_payload_bytes", m.payload.size(),
                      options_.max_payload_bytes);
        }
    }

    // sync=always: for a push of an id already held, what to await before refusing it (0:
    // nothing): "already queued" is said only once the record that holds it is durable, never
    // of a push that a power cut could still undo. (Messages replayed at open are durable.)
    std::uint64_t held_ticket(const QueuedMessage& m) const BULWARK_REQUIRES(mutex_) {
        if (options_.sync != JournalSync::always || m.id.empty() || !index_.contains(m.id)) {
            return 0;
        }
        return group_.written();
    }

    // `batch`: for push_all (the errors name the call).
    void check_new(const QueuedMessage& m, bool batch) const BULWARK_REQUIRES(mutex_) {
        detail::check_push_id(batch ? push_all_call : push_call, m, index_.contains(m.id));
        const char* call = batch ? "push_all" : "push";
        if (m.id.size() > options_.max_id_bytes) {
            too_large(call, "id", "max_id_bytes", m.id.size(), options_.max_id_bytes);
        }
        check_payload(m, call);
    }

    // The record of a push: the message without claims or lease.
    static Record pushed(const QueuedMessage& message) {
        Record r;
        r.type = Type::message;
        r.message = message;
        r.message.claims = 0;
        r.message.lease = 0;
        r.message.lease_until = WallTime{};
        return r;
    }

    // ---- the one place where records change the index (replay and live writes) --------------

    void apply(const Record& r) BULWARK_REQUIRES(mutex_) {
        namespace qj = detail::queue_journal;
        const QueuedMessage& m = r.message;
        switch (r.type) {
            case Type::message:
                if (index_.contains(m.id)) {
                    return;  // cannot be written by a store; ignored like a duplicate push
                }
                index_.insert(m);
                live_bytes_ += qj::snapshot_frame_size(m);
                last_lease_ = std::max(last_lease_, m.lease);
                return;
            case Type::claim:
                if (index_.contains(m.id)) {
                    index_.lease(m.id, m.lease, m.lease_until);
                }
                last_lease_ = std::max(last_lease_, m.lease);
                return;
            case Type::complete:
                if (const QueuedMessage* held = index_.find_leased(m.id, m.lease)) {
                    live_bytes_ -= qj::snapshot_frame_size(*held);
                    index_.erase(m.id);
                }
                return;
            case Type::release:
                if (const QueuedMessage* held = index_.find_leased(m.id, m.lease)) {
                    live_bytes_ -= qj::snapshot_frame_size(*held);
                    index_.release(m.id, m.payload, m.due, m.attempts);
                    live_bytes_ += qj::snapshot_frame_size(*held);
                }
                return;
            case Type::extend:
                if (index_.find_leased(m.id, m.lease) != nullptr) {
                    index_.extend(m.id, m.lease_until);
                }
                return;
            case Type::remove:
                if (const QueuedMessage* held = index_.find(m.id)) {
                    live_bytes_ -= qj::snapshot_frame_size(*held);
                    index_.erase(m.id);
                }
                return;
            case Type::tokens:
                reserved_ = std::max(reserved_, r.tokens);
                return;
            case Type::batch:
                // Replay hands over a batch's records one by one, and a write applies the
                // records it was given: a batch record never gets here.
                return;
        }
    }

    // ---- the write path: journal first, then the index ---------------------------------------

    // Journals `records` (one frame: all or none), then applies them. Throws what
    // BasicJournalFile::append throws, having applied nothing; if applying runs out of memory,
    // std::bad_alloc with the store poisoned (memory and disk differ until a reopen replays the
    // disk). Returns the ticket to await before acknowledging (0: none), which the caller does
    // with the lock released (group commit).
    std::uint64_t commit_and_apply(const std::vector<Record>& records) BULWARK_REQUIRES(mutex_) {
        const std::uint64_t ticket = journal_.append(records);
        try {
            for (const Record& r : records) {
                apply(r);
            }
        } catch (...) {
            journal_.poison_after(
                "a change was journaled but could not be applied in memory (out of memory); "
                "reopen to recover it");
            throw;
        }
        // The lambda runs within maybe_compact(), with mutex_ still held; the analysis checks a
        // lambda as a function of its own and cannot know that.
        journal_.maybe_compact(live_bytes_,
                               [this](std::uint64_t salt)
                                   BULWARK_NO_THREAD_SAFETY_ANALYSIS { return snapshot(salt); });
        return ticket;
    }

    // What a compaction writes: the token high-water mark, then every message with its whole
    // state (lease included), in push order so that a replay keeps the order of ties.
    detail::JournalSnapshot snapshot(std::uint64_t salt) const BULWARK_REQUIRES(mutex_) {
        namespace j = detail::journal;
        const j::Framing framing{j::salt_seed(salt), Codec::version};
        detail::JournalSnapshot out{j::encode_header(salt, Codec::version, Codec::file_magic), 0};
        Record r;
        r.type = Type::tokens;
        r.tokens = std::max(reserved_, last_lease_);
        j::encode_record<Codec>(r, out.bytes, framing, ++out.frames);
        r.type = Type::message;
        for (const QueuedMessage* m : index_.in_push_order()) {
            r.message = *m;
            j::encode_record<Codec>(r, out.bytes, framing, ++out.frames);
        }
        return out;
    }

    const FileQueueStoreOptions options_;
    // Syncs for sync=always writers with mutex_ released; thread-safe by itself, and before
    // journal_, which uses it.
    detail::GroupCommit group_;
    mutable detail::Mutex mutex_;
    detail::BasicJournalFile<Codec> journal_ BULWARK_GUARDED_BY(mutex_);
    detail::QueueIndex index_ BULWARK_GUARDED_BY(mutex_);
    // The last token handed out (or seen in the journal).
    std::uint64_t last_lease_ BULWARK_GUARDED_BY(mutex_) = 0;
    // Tokens up to this one are reserved in the journal: claim journals a new block first.
    std::uint64_t reserved_ BULWARK_GUARDED_BY(mutex_) = 0;
    // The ticket of the latest reservation (0: nothing to wait for).
    std::uint64_t reserve_ticket_ BULWARK_GUARDED_BY(mutex_) = 0;
    // snapshot()'s size.
    std::uint64_t live_bytes_ BULWARK_GUARDED_BY(mutex_) =
        detail::queue_journal::snapshot_base_size();
};

}  // namespace bulwark

#endif  // BULWARK_FILE_QUEUE_STORE_HPP
#endif

#endif  // BULWARK_QUEUE_HPP
// #include <bulwark/resources.hpp>
// ResourceManager: gauges and quotas against thresholds, with alternatives.
#ifndef BULWARK_RESOURCES_HPP
#define BULWARK_RESOURCES_HPP

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

// #include <bulwark/clock.hpp> (already included above)
// #include <bulwark/detail/json.hpp> (already included above)
// #include <bulwark/detail/math.hpp> (already included above)
// #include <bulwark/detail/mutex.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)
// #include <bulwark/detail/traits.hpp> (already included above)
// #include <bulwark/events.hpp> (already included above)
// #include <bulwark/resource_report.hpp> (already included above)

namespace bulwark {

// The function of a gauge: any callable taking nothing and returning the percent used, as an
// arithmetic type or std::optional of one (nullopt: unknown). An exception it throws makes the
// reading unknown.
class ResourceGauge {
public:
    ResourceGauge() = default;

    template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, ResourceGauge>>>
    ResourceGauge(F f)  // NOLINT(google-explicit-constructor): add_gauge("m", [] {...}) reads well
        : fn_(wrap(std::move(f))) {}

    explicit operator bool() const noexcept { return static_cast<bool>(fn_); }

    std::optional<double> operator()() const { return fn_(); }

private:
    template <class T>
    struct is_optional : std::false_type {};
    template <class T>
    struct is_optional<std::optional<T>> : std::true_type {};

    template <class F>
    static std::function<std::optional<double>()> wrap(F f) {
        static_assert(std::is_invocable_v<F&>,
                      "a resource gauge must be callable with no arguments");
        using R = std::decay_t<std::invoke_result_t<F&>>;
        static_assert(std::is_arithmetic_v<R> || is_optional<R>::value,
                      "a resource gauge must return the percent used as a number or a "
                      "std::optional of one");
        if (detail::is_null_callable(f)) {
            return {};
        }
        return [f = std::move(f)]() mutable -> std::optional<double> {
            if constexpr (is_optional<R>::value) {
                auto value = f();
                if (!value) {
                    return std::nullopt;
                }
                return static_cast<double>(*value);
            } else {
                return static_cast<double>(f());
            }
        };
    }

    std::function<std::optional<double>()> fn_;
};

// Watches resources — gauges (a callable returning percent used, e.g. memory) and quotas (a
// limit per rolling window, fed by record_usage()) — against warning and critical thresholds,
// and names alternatives to switch to when one runs short.
//   bulwark::ResourceManager rm;                                    // optional clock
//   rm.add_gauge("memory", [] { return bulwark::system::memory_used_percent(); }, {80, 95});
//   rm.add_quota("llm_tokens", /*limit*/ 100000, /*window*/ 1min, {70, 90});
//   rm.record_usage("llm_tokens", 1000);
//   auto [status, percent] = rm.check("llm_tokens");
//   rm.set_alternatives("gpt-4", {"claude", "small-model"});  rm.alternative("gpt-4");
// A gauge is read again once its cache TTL (default 1 s) has passed (threads that find it stale
// at the same moment may each read it); within the TTL, check() and can_use() use the cached
// reading: a shared lock and a search of the name table, two atomic loads and a coarse clock read.
// A quota keeps 60 buckets per window, so usage leaves the window in steps of window/60.
// Resources cannot be removed.
// Thread-safe. Change listeners run after the reading, outside any lock.
// ResourceManager is BasicResourceManager<>: a class template only so that its code is compiled
// in translation units that use it; use the alias.
template <class Tag = void>
class BasicResourceManager {
public:
    explicit BasicResourceManager(Clock& clock = default_clock()) : clock_(&clock) {}

    BasicResourceManager(const BasicResourceManager&) = delete;
    BasicResourceManager& operator=(const BasicResourceManager&) = delete;

    // Throws std::invalid_argument for an empty name or gauge, a duplicate name, bad thresholds
    // or a negative TTL.
    // NOLINTNEXTLINE(performance-unnecessary-value-param): moved below; llvm-project#43943
    void add_gauge(std::string name, ResourceGauge gauge, ResourceThresholds thresholds = {},
                   Duration cache_ttl = std::chrono::seconds(1)) {
        if (!gauge) {
            detail::throw_invalid_argument("ResourceManager::add_gauge(" + name +
                                           "): the gauge is empty");
        }
        if (cache_ttl < Duration::zero()) {
            detail::throw_invalid_option("ResourceManager::add_gauge(" + name + ").cache_ttl",
                                         "must be >= 0", detail::format_duration(cache_ttl));
        }
        auto r = make_resource(std::move(name), thresholds);
        r->gauge = std::move(gauge);
        r->ttl = cache_ttl;
        insert(std::move(r));
    }

    // A quota of `limit` units per rolling `window`. Throws std::invalid_argument for an empty
    // or duplicate name, a limit <= 0, a window <= 0 or bad thresholds.
    void add_quota(std::string name, double limit, Duration window,
                   ResourceThresholds thresholds = {}) {
        if (!(limit > 0.0) || !detail::is_finite(limit)) {
            detail::throw_invalid_option("ResourceManager::add_quota(" + name + ").limit",
                                         "must be > 0", detail::format_number(limit));
        }
        if (window <= Duration::zero()) {
            detail::throw_invalid_option("ResourceManager::add_quota(" + name + ").window",
                                         "must be > 0", detail::format_duration(window));
        }
        auto r = make_resource(std::move(name), thresholds);
        r->quota = true;
        r->limit = limit;
        r->window = window;
        r->bucket_width = std::max(Duration{1}, window / Resource::buckets_per_window);
        insert(std::move(r));
    }

    // Adds `amount` (>= 0) to a quota's use in the current window and returns the new reading.
    // Throws std::invalid_argument for an unknown name, a gauge, or a negative amount.
    ResourceCheck record_usage(std::string_view name, double amount) {
        Resource& r = quota(name, amount, "record_usage");
        std::optional<ResourceChange> change;
        ResourceCheck result;
        {
            detail::LockGuard lock(r.mutex);
            const TimePoint now = clock_->now();
            add_to_bucket(r, now, amount);
            result = observe(r, quota_percent(r, now), now, change);
        }
        notify(change);
        return result;
    }

    // Records `amount` only if it fits in what is left of the quota; false (and nothing
    // recorded) if it does not. The check and the record are one step.
    bool try_consume(std::string_view name, double amount) {
        Resource& r = quota(name, amount, "try_consume");
        std::optional<ResourceChange> change;
        bool fits = false;
        {
            detail::LockGuard lock(r.mutex);
            const TimePoint now = clock_->now();
            fits = used_in_window(r, now) + amount <= r.limit;
            if (fits) {
                add_to_bucket(r, now, amount);
            }
            observe(r, quota_percent(r, now), now, change);
        }
        notify(change);
        return fits;
    }

    // The current reading (a gauge's cached one while it is fresh). Throws
    // std::invalid_argument for an unknown name.
    ResourceCheck check(std::string_view name) { return read(find(name)); }

    ResourceStatus status(std::string_view name) { return check(name).status; }

    // True unless the resource is critical or exhausted (unknown counts as usable).
    bool can_use(std::string_view name) { return usable(check(name).status); }

    // Alternatives to `resource`, in order of preference (the seeds' SWITCH_PROVIDER). They
    // need not be registered resources; one that is not counts as usable.
    void set_alternatives(std::string resource, std::vector<std::string> alternatives) {
        detail::LockGuard lock(table_mutex_);
        for (auto& entry : alternatives_) {
            if (entry.first == resource) {
                entry.second = std::move(alternatives);
                return;
            }
        }
        alternatives_.emplace_back(std::move(resource), std::move(alternatives));
    }

    // The first alternative of `resource` that can be used, whatever state `resource` is in;
    // nullopt if none can (or none was set).
    std::optional<std::string> alternative(std::string_view resource) {
        for (const std::string& candidate : alternatives_of(resource)) {
            if (candidate_usable(candidate)) {
                return candidate;
            }
        }
        return std::nullopt;
    }

    // `resource` itself while it can be used, else its first usable alternative.
    std::optional<std::string> choose(std::string_view resource) {
        if (candidate_usable(resource)) {
            return std::string(resource);
        }
        return alternative(resource);
    }

    // Reads every resource (gauges past their TTL are read again).
    ResourceReport report() {
        ResourceReport report;
        std::vector<Resource*> all;
        {
            detail::SharedLock lock(table_mutex_);
            for (const auto& r : resources_) {
                all.push_back(r.get());
            }
        }
        for (Resource* r : all) {
            const ResourceCheck c = read(*r);
            ResourceReading reading;
            {
                detail::LockGuard lock(r->mutex);
                reading.name = r->name;
                reading.quota = r->quota;
                reading.status = c.status;
                reading.percent = c.percent;
                reading.limit = r->limit;
                reading.window = r->window;
                if (r->quota) {
                    reading.used = used_in_window(*r, clock_->now());
                }
                reading.thresholds = r->thresholds;
                reading.readings = r->readings;
                reading.peak_percent = r->peak_percent;
                reading.times_warning = r->times_warning;
                reading.times_critical = r->times_critical;
                reading.status_since = r->status_since;
            }
            reading.alternatives = alternatives_of(reading.name);
            if (c.status > report.worst) {
                report.worst = c.status;
                report.worst_name = reading.name;
            }
            report.resources.push_back(std::move(reading));
        }
        report.at = clock_->now();  // after the readings, which may change a status
        return report;
    }

    std::vector<std::string> names() const {
        detail::SharedLock lock(table_mutex_);
        std::vector<std::string> out;
        for (const auto& r : resources_) {
            out.push_back(r->name);
        }
        return out;
    }

    // Called when a resource's status changes (found by a reading, not on every reading).
    // Returns the id that remove_listener() takes; throws std::invalid_argument for an empty
    // listener.
    ListenerId on_change(std::function<void(const ResourceChange&)> listener) {
        return changes_.add(std::move(listener));
    }
    // Stops calling a listener; false if the id is unknown here or already removed.
    bool remove_listener(ListenerId id) noexcept { return changes_.remove(id); }

private:
    struct Resource {
        static constexpr int buckets_per_window = 60;

        std::string name;
        ResourceThresholds thresholds;
        bool quota = false;
        // Gauges. The cache is read without the mutex: cached_at_ns, then the reading.
        ResourceGauge gauge;
        Duration ttl{};
        std::atomic<std::int64_t> cached_at_ns{std::numeric_limits<std::int64_t>::min()};
        std::atomic<double> cached_percent{std::numeric_limits<double>::quiet_NaN()};
        // Quotas: set before the resource is shared, then the buckets guarded by mutex.
        double limit = 0.0;
        Duration window{};
        Duration bucket_width{1};
        std::int64_t bucket_epoch[buckets_per_window] BULWARK_GUARDED_BY(mutex) = {};
        double bucket_amount[buckets_per_window] BULWARK_GUARDED_BY(mutex) = {};
        // Status and history summary, guarded by mutex (status also mirrored for lock-free reads).
        detail::Mutex mutex;
        std::atomic<ResourceStatus> cached_status{ResourceStatus::unknown};
        ResourceStatus last_status BULWARK_GUARDED_BY(mutex) = ResourceStatus::unknown;
        TimePoint status_since BULWARK_GUARDED_BY(mutex){};
        std::uint64_t readings BULWARK_GUARDED_BY(mutex) = 0;
        double peak_percent BULWARK_GUARDED_BY(mutex) = 0.0;
        std::uint64_t times_warning BULWARK_GUARDED_BY(mutex) = 0;
        std::uint64_t times_critical BULWARK_GUARDED_BY(mutex) = 0;
    };

    static bool usable(ResourceStatus status) noexcept {
        return status != ResourceStatus::critical && status != ResourceStatus::exhausted;
    }

    // Not shared yet: its guarded fields need no lock here.
    // NOLINTNEXTLINE(performance-unnecessary-value-param): moved below; llvm-project#43943
    std::unique_ptr<Resource> make_resource(std::string name, const ResourceThresholds& t)
        BULWARK_NO_THREAD_SAFETY_ANALYSIS {
        if (name.empty()) {
            detail::throw_invalid_argument("ResourceManager: a resource name must not be empty");
        }
        t.validate(name);
        auto r = std::make_unique<Resource>();
        r->name = std::move(name);
        r->thresholds = t;
        r->status_since = clock_->now();
        return r;
    }

    void insert(std::unique_ptr<Resource> r) {
        detail::LockGuard lock(table_mutex_);
        for (const auto& existing : resources_) {
            if (existing->name == r->name) {
                detail::throw_invalid_argument("ResourceManager: a resource named '" + r->name +
                                               "' already exists");
            }
        }
        resources_.push_back(std::move(r));
    }

    Resource* lookup(std::string_view name) const {
        detail::SharedLock lock(table_mutex_);
        for (const auto& r : resources_) {
            if (r->name == name) {
                return r.get();
            }
        }
        return nullptr;
    }

    Resource& find(std::string_view name) const {
        Resource* r = lookup(name);
        if (r == nullptr) {
            detail::throw_invalid_argument("ResourceManager: no resource named '" +
                                           std::string(name) + "'");
        }
        return *r;
    }

    // `operation` names the caller in the error message.
    Resource& quota(std::string_view name, double amount, const char* operation) const {
        Resource& r = find(name);
        if (!r.quota) {
            detail::throw_invalid_argument("ResourceManager: '" + r.name +
                                           "' is a gauge, not a quota");
        }
        if (!(amount >= 0.0) || !detail::is_finite(amount)) {
            detail::throw_invalid_option(
                std::string("ResourceManager::") + operation + "(" + r.name + ").amount",
                "must be >= 0", detail::format_number(amount));
        }
        return r;
    }

    std::vector<std::string> alternatives_of(std::string_view resource) const {
        detail::SharedLock lock(table_mutex_);
        for (const auto& entry : alternatives_) {
            if (entry.first == resource) {
                return entry.second;
            }
        }
        return {};
    }

    bool candidate_usable(std::string_view name) {
        Resource* r = lookup(name);
        return r == nullptr || usable(read(*r).status);
    }

    ResourceCheck read(Resource& r) {
        if (r.quota) {
            std::optional<ResourceChange> change;
            ResourceCheck result;
            {
                detail::LockGuard lock(r.mutex);
                const TimePoint now = clock_->now();
                result = observe(r, quota_percent(r, now), now, change);
            }
            notify(change);
            return result;
        }
        const std::int64_t now_ns = clock_->coarse_now_fast().time_since_epoch().count();
        // acquire: pairs with the release store below, so the reading is the one stamped.
        const std::int64_t at = r.cached_at_ns.load(std::memory_order_acquire);
        if (at != std::numeric_limits<std::int64_t>::min() && now_ns - at < r.ttl.count()) {
            // relaxed: ordered after cached_at_ns by its acquire load.
            return {r.cached_status.load(std::memory_order_relaxed),
                    r.cached_percent.load(std::memory_order_relaxed)};
        }
        double percent = std::numeric_limits<double>::quiet_NaN();
        try {
            if (auto value = r.gauge(); value && detail::is_finite(*value)) {
                percent = *value;
            }
        } catch (...) {
            // A gauge that throws reads as unknown.
        }
        std::optional<ResourceChange> change;
        ResourceCheck result;
        {
            detail::LockGuard lock(r.mutex);
            result = observe(r, percent, clock_->now(), change);
            r.cached_percent.store(percent, std::memory_order_relaxed);
            // release: publishes the reading and status stored before it.
            r.cached_at_ns.store(now_ns, std::memory_order_release);
        }
        notify(change);
        return result;
    }

    // Under r.mutex: classifies a reading, keeps the summary and notes a change of status.
    ResourceCheck observe(Resource& r, double percent, TimePoint now,
                          std::optional<ResourceChange>& change) BULWARK_REQUIRES(r.mutex) {
        const ResourceStatus status = r.thresholds.classify(percent);
        ++r.readings;
        if (!detail::is_nan(percent) && percent > r.peak_percent) {
            r.peak_percent = percent;
        }
        if (status != r.last_status) {
            if (status == ResourceStatus::warning && r.last_status < ResourceStatus::warning) {
                ++r.times_warning;
            }
            if (status >= ResourceStatus::critical && r.last_status < ResourceStatus::critical) {
                ++r.times_critical;
            }
            if (!changes_.empty()) {
                change = ResourceChange{r.name, r.last_status, status, percent, now};
            }
            r.last_status = status;
            r.status_since = now;
        }
        // relaxed: readers order it through cached_at_ns (gauges) or take r.mutex (quotas).
        r.cached_status.store(status, std::memory_order_relaxed);
        return {status, percent};
    }

    void notify(const std::optional<ResourceChange>& change) {
        if (change) {
            changes_.emit(*change);
        }
    }

    std::int64_t epoch_of(const Resource& r, TimePoint now) const noexcept {
        return now.time_since_epoch().count() / r.bucket_width.count();
    }

    void add_to_bucket(Resource& r, TimePoint now, double amount) BULWARK_REQUIRES(r.mutex) {
        const std::int64_t epoch = epoch_of(r, now);
        const auto i = static_cast<std::size_t>(epoch % Resource::buckets_per_window);
        if (r.bucket_epoch[i] != epoch) {
            r.bucket_epoch[i] = epoch;
            r.bucket_amount[i] = 0.0;
        }
        r.bucket_amount[i] += amount;
    }

    double used_in_window(const Resource& r, TimePoint now) const BULWARK_REQUIRES(r.mutex) {
        const std::int64_t epoch = epoch_of(r, now);
        double used = 0.0;
        for (int i = 0; i < Resource::buckets_per_window; ++i) {
            if (r.bucket_epoch[i] > epoch - Resource::buckets_per_window &&
                r.bucket_epoch[i] <= epoch) {
                used += r.bucket_amount[i];
            }
        }
        return used;
    }

    double quota_percent(const Resource& r, TimePoint now) const BULWARK_REQUIRES(r.mutex) {
        return 100.0 * used_in_window(r, now) / r.limit;
    }

    Clock* const clock_;
    mutable detail::SharedMutex table_mutex_;
    // A few entries each, searched linearly: cheaper to compile and, at this size, to search
    // than a map. Resources are never removed (references stay valid).
    std::vector<std::unique_ptr<Resource>> resources_ BULWARK_GUARDED_BY(table_mutex_);
    std::vector<std::pair<std::string, std::vector<std::string>>> alternatives_
        BULWARK_GUARDED_BY(table_mutex_);
    Listeners<ResourceChange> changes_;
};

using ResourceManager = BasicResourceManager<>;

}  // namespace bulwark

#endif  // BULWARK_RESOURCES_HPP
// #include <bulwark/retry_queue.hpp> (already included above)
// #include <bulwark/system.hpp>
// System gauges: memory, CPU, disk and process RSS readings (Linux /proc).
#ifndef BULWARK_SYSTEM_HPP
#define BULWARK_SYSTEM_HPP

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>

// #include <bulwark/detail/mutex.hpp> (already included above)

#if defined(__linux__)
#include <sys/statvfs.h>
#include <unistd.h>
#endif

namespace bulwark {

namespace detail {
#if defined(__linux__)
// The value in kB of a "Key:   123 kB" line of /proc/meminfo.
inline std::optional<std::uint64_t> proc_meminfo_kb(const char* key) {
    std::FILE* file = std::fopen("/proc/meminfo", "r");
    if (file == nullptr) {
        return std::nullopt;
    }
    char line[256];
    const std::size_t key_length = std::strlen(key);
    std::optional<std::uint64_t> result;
    while (std::fgets(line, sizeof line, file) != nullptr) {
        if (std::strncmp(line, key, key_length) == 0 && line[key_length] == ':') {
            unsigned long long value = 0;
            if (std::sscanf(line + key_length + 1, "%llu", &value) == 1) {
                result = static_cast<std::uint64_t>(value);
            }
            break;
        }
    }
    std::fclose(file);
    return result;
}

struct CpuTimes {
    std::uint64_t busy = 0;
    std::uint64_t total = 0;
};

// The aggregate "cpu" line of /proc/stat.
inline std::optional<CpuTimes> proc_cpu_times() {
    std::FILE* file = std::fopen("/proc/stat", "r");
    if (file == nullptr) {
        return std::nullopt;
    }
    unsigned long long user = 0;
    unsigned long long nice = 0;
    unsigned long long sys = 0;
    unsigned long long idle = 0;
    unsigned long long iowait = 0;
    unsigned long long irq = 0;
    unsigned long long softirq = 0;
    unsigned long long steal = 0;
    const int fields = std::fscanf(file, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &user,
                                   &nice, &sys, &idle, &iowait, &irq, &softirq, &steal);
    std::fclose(file);
    if (fields < 4) {
        return std::nullopt;
    }
    CpuTimes t;
    const unsigned long long busy = user + nice + sys + irq + softirq + steal;
    t.busy = static_cast<std::uint64_t>(busy);
    t.total = static_cast<std::uint64_t>(busy + idle + iowait);
    return t;
}
#endif
}  // namespace detail

// Gauges of this machine and process, for ResourceManager::add_gauge. Linux reads /proc and
// statvfs; on other platforms (or when the files cannot be read) each returns nullopt, which a
// ResourceManager reports as ResourceStatus::unknown.
//   rm.add_gauge("memory", [] { return bulwark::system::memory_used_percent(); }, {80, 95});
// Thread-safe. Each call reads a small file (a few microseconds): give the gauge a cache TTL
// rather than calling these on a hot path.
namespace system {

// Percent of physical memory in use: 100 × (1 − MemAvailable / MemTotal).
inline std::optional<double> memory_used_percent() {
#if defined(__linux__)
    const auto total = bulwark::detail::proc_meminfo_kb("MemTotal");
    const auto available = bulwark::detail::proc_meminfo_kb("MemAvailable");
    if (!total || !available || *total == 0 || *available > *total) {
        return std::nullopt;
    }
    return 100.0 * static_cast<double>(*total - *available) / static_cast<double>(*total);
#else
    return std::nullopt;
#endif
}

// Percent of CPU time spent busy (all cores together) since the previous call of this
// function in this process; the first call measures since boot. Reads /proc/stat.
inline std::optional<double> cpu_used_percent() {
#if defined(__linux__)
    static detail::Mutex mutex;
    static bulwark::detail::CpuTimes previous BULWARK_GUARDED_BY(mutex);
    // Read under the lock, so that racing callers cannot set `previous` back to an older sample.
    detail::LockGuard lock(mutex);
    const auto now = bulwark::detail::proc_cpu_times();
    if (!now) {
        return std::nullopt;
    }
    const std::uint64_t busy = now->busy - previous.busy;
    const std::uint64_t total = now->total - previous.total;
    if (now->total < previous.total || now->busy < previous.busy) {
        previous = *now;
        return std::nullopt;
    }
    previous = *now;
    if (total == 0) {
        return 0.0;
    }
    return 100.0 * static_cast<double>(busy) / static_cast<double>(total);
#else
    return std::nullopt;
#endif
}

// Percent of the file system holding `path` in use, as df shows it (blocks reserved for root
// count as unavailable).
inline std::optional<double> disk_used_percent(const std::string& path = "/") {
#if defined(__linux__)
    struct statvfs fs {};
    if (statvfs(path.c_str(), &fs) != 0) {
        return std::nullopt;
    }
    const auto used = static_cast<double>(fs.f_blocks - fs.f_bfree);
    const double usable = used + static_cast<double>(fs.f_bavail);
    if (usable <= 0.0) {
        return std::nullopt;
    }
    return 100.0 * used / usable;
#else
    (void)path;
    return std::nullopt;
#endif
}

// This process's resident set size in bytes.
inline std::optional<std::uint64_t> process_rss_bytes() {
#if defined(__linux__)
    std::FILE* file = std::fopen("/proc/self/statm", "r");
    if (file == nullptr) {
        return std::nullopt;
    }
    unsigned long long pages_total = 0;
    unsigned long long pages_resident = 0;
    const int fields = std::fscanf(file, "%llu %llu", &pages_total, &pages_resident);
    std::fclose(file);
    const long page_size = sysconf(_SC_PAGESIZE);
    if (fields != 2 || page_size <= 0) {
        return std::nullopt;
    }
    return static_cast<std::uint64_t>(pages_resident) * static_cast<std::uint64_t>(page_size);
#else
    return std::nullopt;
#endif
}

// This process's resident set size as a percent of physical memory.
inline std::optional<double> process_rss_percent() {
#if defined(__linux__)
    const auto rss = process_rss_bytes();
    const auto total_kb = bulwark::detail::proc_meminfo_kb("MemTotal");
    if (!rss || !total_kb || *total_kb == 0) {
        return std::nullopt;
    }
    return 100.0 * static_cast<double>(*rss) / (static_cast<double>(*total_kb) * 1024.0);
#else
    return std::nullopt;
#endif
}

}  // namespace system
}  // namespace bulwark

#endif  // BULWARK_SYSTEM_HPP
// #include <bulwark/ticking_clock.hpp>
// TickingClock: a clock whose coarse reading is one atomic load, refreshed by a thread or tick().
#ifndef BULWARK_TICKING_CLOCK_HPP
#define BULWARK_TICKING_CLOCK_HPP

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <limits>
#include <mutex>
#include <thread>

// #include <bulwark/clock.hpp> (already included above)
// #include <bulwark/detail/mutex.hpp> (already included above)
// #include <bulwark/detail/throw.hpp> (already included above)

namespace bulwark {

// A clock whose coarse_now() is one atomic load: a time cell that one background thread
// refreshes from a source clock every `resolution`, or that its owner refreshes by calling
// tick() (from an event loop's timer, say) when built with TickingClock::manual_ticks.
//   bulwark::TickingClock clock;            // refreshed every millisecond by its own thread
//   bulwark::Timeout timeout(2s, clock);    // its two clock reads become two loads
// Components read time through coarse_now() on their hot paths (Timeout twice per call, a rate
// limiter's acquire, an open breaker's rejection); CLOCK_MONOTONIC_COARSE costs about 3.5 ns
// per read on a VM, a load well under one. now(), sleep_for() and wait_until() are the source's.
// coarse_now() is never ahead of now() and lags it by one resolution plus however late the
// ticking thread is scheduled: while the thread cannot run, coarse time stands still, and with it
// every Timeout, break expiry and token refill read from it. The thread wakes every `resolution`
// while the clock lives. Not fork-safe: a child process has no ticking thread, so make the clock
// after fork(). Over a ManualClock source (tests), use manual_ticks and tick() after advancing:
// a thread would publish the new time only after up to one real resolution.
// Thread-safe. The destructor stops and joins the thread; the clock must outlive the components
// that use it, and the source must outlive the clock.
class TickingClock final : public Clock {
public:
    struct ManualTicks {
        explicit ManualTicks() = default;
    };
    static constexpr ManualTicks manual_ticks{};

    // Starts the ticking thread. Throws std::invalid_argument unless 0 < resolution <= 1 hour
    // (the bound keeps the thread's timed wait from overflowing), and std::system_error if the
    // thread cannot be started.
    explicit TickingClock(Duration resolution = std::chrono::milliseconds(1),
                          Clock& source = default_clock())
        : Clock(&cell_), source_(source), resolution_(resolution) {
        if (resolution <= Duration::zero() || resolution > std::chrono::hours(1)) {
            detail::throw_invalid_option("TickingClock.resolution", "must be in (0, 1h]",
                                         detail::format_duration(resolution));
        }
        tick();
        thread_ = std::thread([this] { run(); });
    }

    // No thread: the cell moves only when tick() is called.
    explicit TickingClock(ManualTicks, Clock& source = default_clock()) noexcept
        : Clock(&cell_), source_(source), resolution_(Duration::zero()) {
        tick();
    }

    TickingClock(const TickingClock&) = delete;
    TickingClock& operator=(const TickingClock&) = delete;

    ~TickingClock() override {
        if (thread_.joinable()) {
            {
                detail::LockGuard lock(mutex_);
                stop_ = true;
            }
            cv_.notify_one();
            thread_.join();
        }
    }

    TimePoint now() const noexcept override { return source_.now(); }

    TimePoint coarse_now() const noexcept override {
        return TimePoint{Duration{cell_.load(std::memory_order_acquire)}};
    }

    WallTime wall_now() const noexcept override { return source_.wall_now(); }

    // Ticks after the sleep, so that the sleeper's next coarse reading includes it (over a
    // ManualClock source, whose sleep is an advance, nothing else would tell the cell).
    void sleep_for(Duration d) override {
        source_.sleep_for(d);
        tick();
    }

    void wait_until(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                    TimePoint deadline) override {
        source_.wait_until(cv, lock, deadline);
    }

    // Publishes the source's now() as the coarse time. Never moves it backwards, so ticks from
    // several threads may race.
    void tick() noexcept {
        const std::int64_t t = source_.now().time_since_epoch().count();
        std::int64_t current = cell_.load(std::memory_order_relaxed);
        // release: pairs with coarse_now()'s acquire.
        while (t > current && !cell_.compare_exchange_weak(current, t, std::memory_order_release,
                                                           std::memory_order_relaxed)) {
        }
    }

    // The ticking period; zero for a clock built with manual_ticks.
    Duration resolution() const noexcept { return resolution_; }

private:
    void run() {
        detail::UniqueLock lock(mutex_);
        while (!stop_) {
            // Real time, whatever the source: the thread's job is to keep up with it.
            cv_.wait_for(lock.native(), resolution_);
            tick();
        }
    }

    Clock& source_;
    const Duration resolution_;
    std::atomic<std::int64_t> cell_{std::numeric_limits<std::int64_t>::min()};
    detail::Mutex mutex_;
    std::condition_variable cv_;
    bool stop_ BULWARK_GUARDED_BY(mutex_) = false;
    std::thread thread_;
};

}  // namespace bulwark

#endif  // BULWARK_TICKING_CLOCK_HPP

#endif  // BULWARK_BULWARK_HPP
#endif  // BULWARK_SINGLE_INCLUDE_HPP

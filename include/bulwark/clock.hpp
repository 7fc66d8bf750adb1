// Clocks: the Clock interface components read time and wait through, SteadyClock, ManualClock.
// SPDX-License-Identifier: MIT
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

#include <bulwark/config.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/time.hpp>

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

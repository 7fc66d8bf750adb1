// TickingClock: a clock whose coarse reading is one atomic load, refreshed by a thread or tick().
// SPDX-License-Identifier: MIT
#ifndef BULWARK_TICKING_CLOCK_HPP
#define BULWARK_TICKING_CLOCK_HPP

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <limits>
#include <mutex>
#include <thread>

#include <bulwark/clock.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/throw.hpp>

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

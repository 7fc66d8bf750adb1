// RetryBudget: a cap on retries shared across policies, as a ratio of calls plus a floor.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_RETRY_BUDGET_HPP
#define BULWARK_RETRY_BUDGET_HPP

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <bulwark/clock.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/striped_counter.hpp>
#include <bulwark/detail/throw.hpp>

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

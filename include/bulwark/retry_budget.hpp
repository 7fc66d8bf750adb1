// RetryBudget: the interface that caps retries across policies, and its three kinds.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_RETRY_BUDGET_HPP
#define BULWARK_RETRY_BUDGET_HPP

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <bulwark/clock.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/striped_counter.hpp>
#include <bulwark/detail/throw.hpp>

namespace bulwark {

// Why a retry is wanted: a RetryPolicy says `timeout` when the failed attempt threw a
// TimeoutError (a QuotaRetryBudget charges more for it), `failure` otherwise.
enum class RetryCause : std::uint8_t { failure, timeout };

// A budget's answer to one retry request. `cost` is what the budget took and hands back to
// record_success() after the retry succeeds (a QuotaRetryBudget refunds it). `shadow`: the
// budget refused, but is in shadow mode and let the retry through (allowed, cost 0); the caller
// then reports nothing more of that call to the budget, so that its state stays what the
// refusal made it.
struct RetryGrant {
    bool allowed = false;
    std::uint32_t cost = 0;
    bool shadow = false;
    explicit operator bool() const noexcept { return allowed; }
};

namespace detail {
// What record_success() gets for a first-try success: passed by reference to a constant, so the
// success path stores nothing for it (a grant built on the stack field by field and read back
// as a word stalls on store forwarding, ~20 ns).
inline constexpr RetryGrant first_try_grant{};
}  // namespace detail

// What a budget has seen and decided, the same in shadow mode as when enforcing, plus
// shadow_rejections: the refusals that shadow mode let through.
struct RetryBudgetStats {
    std::uint64_t calls = 0;              // record_call(): first attempts
    std::uint64_t successes = 0;          // record_success(): attempts that succeeded
    std::uint64_t granted = 0;            // retries allowed (shadow let-throughs excluded)
    std::uint64_t refused = 0;            // retries refused, or that would have been in shadow mode
    std::uint64_t shadow_rejections = 0;  // of the refused, those let through in shadow mode
    double available = 0.0;  // tokens (token bucket), capacity (quota), or the ratio allowance
                             // left in the window (TPS) when last asked
};

template <class Tag>
class BasicTpsRetryBudget;
using TpsRetryBudget = BasicTpsRetryBudget<void>;
struct RetryBudgetOptions;

// The one interface a RetryPolicy uses (RetryOptions::budget): a budget shared by many policies
// that caps how many retries they make, so that a fleet-wide outage cannot multiply the load on
// the dependency. Three kinds: TokenBucketRetryBudget (gRPC retry throttling),
// QuotaRetryBudget (the AWS SDKs' standard-mode retry quota) and TpsRetryBudget (Finagle and
// Tower: a share of the recent calls plus a minimum per second); docs/retry_budgets.md compares
// them. Users may implement it too.
//   r.budget = bulwark::RetryBudget::shared(0.1, 10);   // TPS: 10% of calls + 10/s
//   r.budget = bulwark::TokenBucketRetryBudget::shared({/*max_tokens*/ 10, /*token_ratio*/ 0.1});
// The protocol, as a RetryPolicy drives it: record_call() when a call's first attempt starts;
// acquire(cause) when a failed attempt would be retried (after max_retries, the deadline and
// max_elapsed allowed it); record_success(last) when an attempt succeeds, with the grant of the
// retry that led to it (a default RetryGrant for a first-try success). A failure not worth
// retrying reports nothing, and neither does a call after a grant with `shadow` set.
// Thread-safety: implementations must be thread-safe. record_call() and record_success() are on
// every call's success path: they must not lock or allocate (the three kinds do neither);
// acquire() is on the failure path.
class RetryBudget {
public:
    virtual ~RetryBudget() = default;

    // A call's first attempt starts.
    virtual void record_call() noexcept = 0;
    // An attempt succeeded; `last` is the grant of the retry it was (default: the first attempt).
    virtual void record_success(const RetryGrant& last) noexcept = 0;
    // A failed attempt would be retried: allowed (and charged) or refused. In shadow mode a
    // refusal is returned as allowed with cost 0, and changes the budget's state exactly as the
    // refusal would have.
    virtual RetryGrant acquire(RetryCause cause) = 0;

    virtual RetryBudgetStats stats() const = 0;

    // Shadow mode: decide, count and change state as when enforcing, but let refused retries
    // through (counted in stats().shadow_rejections). For trying a budget on live traffic.
    virtual void set_shadow(bool shadow) noexcept = 0;
    virtual bool shadow() const noexcept = 0;

    // acquire(cause), as a yes or no.
    bool try_withdraw(RetryCause cause = RetryCause::failure) {
        return static_cast<bool>(acquire(cause));
    }
    std::uint64_t withdrawn() const { return stats().granted; }
    std::uint64_t refused() const { return stats().refused; }

    // A TpsRetryBudget (the default kind): RetryBudget::shared(0.1, 10) allows retries up to 10%
    // of the calls of the last 10 s plus 10 retries in any second.
    static std::shared_ptr<TpsRetryBudget> shared(const RetryBudgetOptions& options,
                                                  Clock& clock = default_clock());
    static std::shared_ptr<TpsRetryBudget> shared(double ratio, std::uint32_t min_per_second,
                                                  Clock& clock = default_clock());

protected:
    RetryBudget() = default;
    RetryBudget(const RetryBudget&) = default;
    RetryBudget& operator=(const RetryBudget&) = default;
    RetryBudget(RetryBudget&&) = default;
    RetryBudget& operator=(RetryBudget&&) = default;
};

namespace detail {
// Shadow flag and the counters every kind keeps. Counters on the failure path are plain
// atomics (relaxed: statistics); calls and successes are per-thread stripes.
struct RetryBudgetCounters {
    detail::StripedCounter calls;
    detail::StripedCounter successes;
    std::atomic<std::uint64_t> granted{0};
    std::atomic<std::uint64_t> refused{0};
    std::atomic<std::uint64_t> shadow_rejections{0};
    std::atomic<bool> shadow{false};

    // The answer to a refused request: allowed at no cost in shadow mode. The flag is read only
    // here, on the refusal branch.
    RetryGrant refuse() noexcept {
        refused.fetch_add(1, std::memory_order_relaxed);
        if (shadow.load(std::memory_order_relaxed)) {
            shadow_rejections.fetch_add(1, std::memory_order_relaxed);
            return RetryGrant{true, 0, true};
        }
        return RetryGrant{};
    }
    RetryGrant grant(std::uint32_t cost) noexcept {
        granted.fetch_add(1, std::memory_order_relaxed);
        return RetryGrant{true, cost, false};
    }
    RetryBudgetStats snapshot() const noexcept {
        RetryBudgetStats s;
        s.calls = calls.sum();
        s.successes = successes.sum();
        s.granted = granted.load(std::memory_order_relaxed);
        s.refused = refused.load(std::memory_order_relaxed);
        s.shadow_rejections = shadow_rejections.load(std::memory_order_relaxed);
        return s;
    }
};
}  // namespace detail

// Options of a TokenBucketRetryBudget (gRPC's retryThrottling: maxTokens, tokenRatio). Every
// field has a default; validate() throws std::invalid_argument naming the field and the value.
//   bulwark::TokenBucketRetryBudgetOptions o;
//   o.max_tokens = 100; o.token_ratio = 0.5;
struct TokenBucketRetryBudgetOptions {
    // The bucket's size and starting fill, in [1, 1000000] (gRPC allows up to 1000).
    std::uint32_t max_tokens = 10;
    // Tokens a success puts back, in [0.001, max_tokens]; kept to thousandths of a token, as
    // gRPC does (0.0015 counts as 0.002).
    double token_ratio = 0.1;
    // Start in shadow mode (see RetryBudget::set_shadow).
    bool shadow = false;

    void validate() const {
        if (max_tokens < 1 || max_tokens > 1000000) {
            detail::throw_invalid_option("TokenBucketRetryBudgetOptions.max_tokens",
                                         "must be in [1, 1000000]", std::to_string(max_tokens));
        }
        if (!(token_ratio >= 0.001 && token_ratio <= static_cast<double>(max_tokens))) {
            detail::throw_invalid_option("TokenBucketRetryBudgetOptions.token_ratio",
                                         "must be in [0.001, max_tokens]",
                                         detail::format_number(token_ratio));
        }
    }
};

// gRPC-style retry throttling. The bucket starts full at max_tokens; every failed attempt that
// asks for a retry takes one token (down to 0), granted or not, as gRPC charges every retryable
// failure; every success puts back token_ratio (up to max_tokens); a retry is allowed only while
// the tokens left after its charge are more than max_tokens / 2.
//   auto budget = bulwark::TokenBucketRetryBudget::shared({/*max_tokens*/ 10, /*ratio*/ 0.1});
// Bound: over any run, granted retries ≤ max_tokens / 2 + token_ratio × successes.
// At low request rates: the state moves only with outcomes, never with time, so the rate does not
// matter: a quiet service whose calls mostly succeed keeps a full bucket and may retry; after an
// outage has emptied it, retries resume after (max_tokens / 2 + 1) / token_ratio successes,
// however long those take (more than 60 successes with the defaults: 61).
// Difference from gRPC: a RetryPolicy asks (and so charges) only for failures it would retry,
// not for the last failure of a call that ran out of max_retries.
// Thread-safe, lock-free: one atomic word of thousandths of a token. record_call() bumps a
// per-thread counter; record_success() bumps one and, unless the bucket is full, adds with a CAS.
class TokenBucketRetryBudget final : public RetryBudget {
public:
    static std::shared_ptr<TokenBucketRetryBudget> shared(TokenBucketRetryBudgetOptions options) {
        return std::make_shared<TokenBucketRetryBudget>(options);
    }

    // Throws std::invalid_argument for invalid options.
    explicit TokenBucketRetryBudget(TokenBucketRetryBudgetOptions options = {})
        : options_((options.validate(), options)),
          max_milli_(static_cast<std::int64_t>(options_.max_tokens) * 1000),
          ratio_milli_(static_cast<std::int64_t>(std::llround(options_.token_ratio * 1000.0))),
          milli_tokens_(max_milli_) {
        counters_.shadow.store(options_.shadow, std::memory_order_relaxed);
    }

    void record_call() noexcept override { counters_.calls.add(); }

    void record_success(const RetryGrant& /*last*/) noexcept override {
        counters_.successes.add();
        // relaxed: the bucket is one word; no other memory is published through it. A full
        // bucket (the healthy case) is only read, so successes do not contend for its line.
        std::int64_t current = milli_tokens_.load(std::memory_order_relaxed);
        while (current < max_milli_ && !milli_tokens_.compare_exchange_weak(
                                           current, std::min(max_milli_, current + ratio_milli_),
                                           std::memory_order_relaxed)) {
        }
    }

    RetryGrant acquire(RetryCause /*cause*/) override {
        std::int64_t current = milli_tokens_.load(std::memory_order_relaxed);
        std::int64_t next = 0;
        do {
            next = std::max<std::int64_t>(0, current - 1000);
        } while (!milli_tokens_.compare_exchange_weak(current, next, std::memory_order_relaxed));
        // The failure is charged either way, so a refusal let through in shadow mode has already
        // changed the state exactly as the refusal does.
        if (next > max_milli_ / 2) {
            return counters_.grant(1);
        }
        return counters_.refuse();
    }

    RetryBudgetStats stats() const override {
        RetryBudgetStats s = counters_.snapshot();
        s.available = tokens();
        return s;
    }
    void set_shadow(bool shadow) noexcept override {
        counters_.shadow.store(shadow, std::memory_order_relaxed);
    }
    bool shadow() const noexcept override {
        return counters_.shadow.load(std::memory_order_relaxed);
    }

    // The tokens in the bucket now.
    double tokens() const noexcept {
        return static_cast<double>(milli_tokens_.load(std::memory_order_relaxed)) / 1000.0;
    }
    const TokenBucketRetryBudgetOptions& options() const noexcept { return options_; }

private:
    detail::RetryBudgetCounters counters_;  // first: its stripes are cache-line aligned
    const TokenBucketRetryBudgetOptions options_;
    const std::int64_t max_milli_;
    const std::int64_t ratio_milli_;
    alignas(detail::cache_line_size) std::atomic<std::int64_t> milli_tokens_;
};

// Options of a QuotaRetryBudget. The defaults are the AWS SDKs' "standard" retry mode: a quota
// of 500, 5 per retry, 10 per retry of a timeout, 1 back for a success without a retry. Every
// field has a default; validate() throws std::invalid_argument naming the field and the value.
//   bulwark::QuotaRetryBudgetOptions o;
//   o.max_capacity = 1000; o.initial_capacity = 1000;
struct QuotaRetryBudgetOptions {
    // The most the quota holds, in [1, 10^9].
    std::uint32_t max_capacity = 500;
    // What it starts with, in [0, max_capacity].
    std::uint32_t initial_capacity = 500;
    // Taken by a retry, in [1, max_capacity].
    std::uint32_t retry_cost = 5;
    // Taken by the retry of a TimeoutError, in [1, max_capacity].
    std::uint32_t timeout_cost = 10;
    // Given back by a success that needed no retry, in [0, max_capacity] (a success after a
    // retry gives back that retry's cost instead).
    std::uint32_t no_retry_increment = 1;
    // Start in shadow mode (see RetryBudget::set_shadow).
    bool shadow = false;

    void validate() const {
        if (max_capacity < 1 || max_capacity > 1000000000) {
            detail::throw_invalid_option("QuotaRetryBudgetOptions.max_capacity",
                                         "must be in [1, 1000000000]",
                                         std::to_string(max_capacity));
        }
        check(initial_capacity, 0, "QuotaRetryBudgetOptions.initial_capacity");
        check(retry_cost, 1, "QuotaRetryBudgetOptions.retry_cost");
        check(timeout_cost, 1, "QuotaRetryBudgetOptions.timeout_cost");
        check(no_retry_increment, 0, "QuotaRetryBudgetOptions.no_retry_increment");
    }

private:
    void check(std::uint32_t value, std::uint32_t low, const char* field) const {
        if (value < low || value > max_capacity) {
            detail::throw_invalid_option(
                field, "must be in [" + std::to_string(low) + ", max_capacity]",
                std::to_string(value) + " (max_capacity " + std::to_string(max_capacity) + ")");
        }
    }
};

// The AWS SDKs' retry quota ("standard" retry mode). A retry takes retry_cost from the quota
// (timeout_cost when the failure was a TimeoutError) and is refused, taking nothing, when the
// quota holds less than that; a success gives back what the retry that led to it took, or
// no_retry_increment when it needed no retry; the quota never exceeds max_capacity.
//   auto budget = bulwark::QuotaRetryBudget::shared({});   // AWS's numbers: 500, 5, 10, 1
// Bound: at every moment, the cost of the granted retries ≤ initial_capacity + what successes
// gave back (with the defaults, 100 retries in a row against a dead dependency, 50 of timeouts).
// At low request rates: rate-independent like the token bucket (no time term): a quiet service
// that mostly succeeds keeps a full quota; after an outage emptied it, every 5 first-try
// successes (with the defaults) buy one retry.
// Thread-safe, lock-free: one atomic word. record_success() bumps a per-thread counter and, unless
// the quota is full, adds with a CAS.
class QuotaRetryBudget final : public RetryBudget {
public:
    static std::shared_ptr<QuotaRetryBudget> shared(QuotaRetryBudgetOptions options) {
        return std::make_shared<QuotaRetryBudget>(options);
    }

    // Throws std::invalid_argument for invalid options.
    explicit QuotaRetryBudget(QuotaRetryBudgetOptions options = {})
        : options_((options.validate(), options)), capacity_(options_.initial_capacity) {
        counters_.shadow.store(options_.shadow, std::memory_order_relaxed);
    }

    void record_call() noexcept override { counters_.calls.add(); }

    void record_success(const RetryGrant& last) noexcept override {
        counters_.successes.add();
        const std::int64_t refund =
            last.allowed ? static_cast<std::int64_t>(last.cost) : options_.no_retry_increment;
        const std::int64_t max = options_.max_capacity;
        // relaxed: one word, nothing published through it; a full quota is only read.
        std::int64_t current = capacity_.load(std::memory_order_relaxed);
        while (refund > 0 && current < max &&
               !capacity_.compare_exchange_weak(current, std::min(max, current + refund),
                                                std::memory_order_relaxed)) {
        }
    }

    RetryGrant acquire(RetryCause cause) override {
        const std::int64_t cost =
            cause == RetryCause::timeout ? options_.timeout_cost : options_.retry_cost;
        std::int64_t current = capacity_.load(std::memory_order_relaxed);
        while (current >= cost) {
            if (capacity_.compare_exchange_weak(current, current - cost,
                                                std::memory_order_relaxed)) {
                return counters_.grant(static_cast<std::uint32_t>(cost));
            }
        }
        // A refusal takes nothing, and neither does a retry shadow mode lets through.
        return counters_.refuse();
    }

    RetryBudgetStats stats() const override {
        RetryBudgetStats s = counters_.snapshot();
        s.available = static_cast<double>(capacity());
        return s;
    }
    void set_shadow(bool shadow) noexcept override {
        counters_.shadow.store(shadow, std::memory_order_relaxed);
    }
    bool shadow() const noexcept override {
        return counters_.shadow.load(std::memory_order_relaxed);
    }

    // What the quota holds now.
    std::uint32_t capacity() const noexcept {
        return static_cast<std::uint32_t>(capacity_.load(std::memory_order_relaxed));
    }
    const QuotaRetryBudgetOptions& options() const noexcept { return options_; }

private:
    detail::RetryBudgetCounters counters_;  // first: its stripes are cache-line aligned
    const QuotaRetryBudgetOptions options_;
    alignas(detail::cache_line_size) std::atomic<std::int64_t> capacity_;
};

// Options of a TpsRetryBudget (also spelled TpsRetryBudgetOptions). Every field has a default;
// validate() throws std::invalid_argument naming the field and the value.
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
    // Start in shadow mode (see RetryBudget::set_shadow).
    bool shadow = false;

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
using TpsRetryBudgetOptions = RetryBudgetOptions;

// The Finagle/Tower budget: retries in the last `window` (default 10 s) may be at most `ratio`
// of the calls in that window, plus `min_per_second` retries in any second whatever the ratio
// says.
//   auto budget = bulwark::RetryBudget::shared(0.1, 10);   // 10% of calls + 10/s
//   options.budget = budget;                                // share it between policies
// Bound: each retry it grants either keeps the retries of the window (seconds s - window + 1 to
// s, this one included) within ratio × the calls of that window, or keeps the retries of its own
// second within min_per_second. Calls made in a second before its first retry asked are not
// counted (a long healthy period cannot bank a large allowance for the next outage).
// At low request rates: the ratio alone would forbid every retry below 1 / ratio calls per window
// (failsafe-go #106); min_per_second is the floor that keeps retries possible there, up to that
// many in any second. With min_per_second = 0 a quiet service gets no retries at all.
// Thread-safe. Counting a call or a success is a per-thread counter bump (no lock, no contended
// line); asking for a retry takes a mutex.
// TpsRetryBudget is BasicTpsRetryBudget<>: a class template only so that a translation unit
// compiles only the members it uses (the Tag is never used).
template <class Tag>
class BasicTpsRetryBudget final : public RetryBudget {
public:
    static std::shared_ptr<BasicTpsRetryBudget> shared(RetryBudgetOptions options,
                                                       Clock& clock = default_clock()) {
        return std::make_shared<BasicTpsRetryBudget>(options, clock);
    }
    // The positional form: shared(0.1, 10) is RetryBudgetOptions{0.1, 10} (window 10 s).
    static std::shared_ptr<BasicTpsRetryBudget> shared(double ratio, std::uint32_t min_per_second,
                                                       Clock& clock = default_clock()) {
        return std::make_shared<BasicTpsRetryBudget>(ratio, min_per_second, clock);
    }

    // Throws std::invalid_argument for invalid options (see RetryBudgetOptions).
    explicit BasicTpsRetryBudget(RetryBudgetOptions options = {}, Clock& clock = default_clock())
        : options_((options.validate(), options)), clock_(&clock) {
        buckets_.assign(static_cast<std::size_t>(options_.window / std::chrono::seconds(1)),
                        Bucket{});
        counters_.shadow.store(options_.shadow, std::memory_order_relaxed);
    }

    // The positional form of the options.
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    BasicTpsRetryBudget(double ratio, std::uint32_t min_per_second, Clock& clock = default_clock(),
                        Duration window = std::chrono::seconds(10))
        : BasicTpsRetryBudget(RetryBudgetOptions{ratio, min_per_second, window}, clock) {}

    BasicTpsRetryBudget(const BasicTpsRetryBudget&) = delete;
    BasicTpsRetryBudget& operator=(const BasicTpsRetryBudget&) = delete;

    // A call was made (a first attempt). Does not allocate or lock.
    void record_call() noexcept override { counters_.calls.add(); }
    // Counted for stats() only: this kind's allowance follows calls, not successes.
    void record_success(const RetryGrant& /*last*/) noexcept override { counters_.successes.add(); }

    RetryGrant acquire(RetryCause /*cause*/) override {
        const TimePoint now = clock_->coarse_now_fast();
        detail::LockGuard lock(mutex_);
        // The clock was read before the lock: a thread preempted in between holds a reading
        // older than one already counted. It asks now, so it counts in the newest second seen;
        // moving a bucket back to an older second would reset the newer second's count (with a
        // 1 s window, its only bucket) and grant that second min_per_second again.
        const std::int64_t second = std::max(
            newest_second_,
            std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count());
        newest_second_ = second;
        const std::uint64_t calls_now = counters_.calls.sum();
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
        last_available_ = std::max(0.0, allowance - static_cast<double>(retries_in_window));
        if (static_cast<double>(retries_in_window) + 1.0 <= allowance + 1e-9 ||
            current.retries < options_.min_per_second) {
            ++current.retries;
            return counters_.grant(1);
        }
        // A refusal, or a retry shadow mode lets through, leaves the buckets as they are.
        return counters_.refuse();
    }

    RetryBudgetStats stats() const override {
        RetryBudgetStats s = counters_.snapshot();
        detail::LockGuard lock(mutex_);
        s.available = last_available_;
        return s;
    }
    void set_shadow(bool shadow) noexcept override {
        counters_.shadow.store(shadow, std::memory_order_relaxed);
    }
    bool shadow() const noexcept override {
        return counters_.shadow.load(std::memory_order_relaxed);
    }

    const RetryBudgetOptions& options() const noexcept { return options_; }
    double ratio() const noexcept { return options_.ratio; }
    std::uint32_t min_per_second() const noexcept { return options_.min_per_second; }

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

    detail::RetryBudgetCounters counters_;  // first: its stripes are cache-line aligned
    const RetryBudgetOptions options_;
    Clock* const clock_;
    mutable detail::Mutex mutex_;
    std::vector<Bucket> buckets_ BULWARK_GUARDED_BY(mutex_);
    double last_available_ BULWARK_GUARDED_BY(mutex_) = 0.0;
    std::int64_t newest_second_ BULWARK_GUARDED_BY(mutex_) = no_second;  // of any acquire()
};

inline std::shared_ptr<TpsRetryBudget> RetryBudget::shared(const RetryBudgetOptions& options,
                                                           Clock& clock) {
    return std::make_shared<TpsRetryBudget>(options, clock);
}
inline std::shared_ptr<TpsRetryBudget> RetryBudget::shared(double ratio,
                                                           std::uint32_t min_per_second,
                                                           Clock& clock) {
    return std::make_shared<TpsRetryBudget>(ratio, min_per_second, clock);
}

}  // namespace bulwark

#endif  // BULWARK_RETRY_BUDGET_HPP

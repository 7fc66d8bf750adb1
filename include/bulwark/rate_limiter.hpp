// RateLimiter: token bucket and sliding-window limits with an optional wait.
// SPDX-License-Identifier: MIT
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

#include <bulwark/clock.hpp>
#include <bulwark/context.hpp>
#include <bulwark/detail/math.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/striped_counter.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/errors.hpp>
#include <bulwark/events.hpp>
#include <bulwark/outcome.hpp>
#include <bulwark/policy.hpp>

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
    // Shadow mode: the limiter decides, waits and counts exactly as it would and reports every
    // refusal to on_rejected, but lets a refused request through: it consumes no permit (so
    // it never delays another request's grant) and is counted in rejected and in
    // shadow_rejections. Switch at run time with set_shadow(). false by default.
    bool shadow = false;

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
    bool admitted = false;    // the request may go ahead
    Duration retry_after{0};  // refused: how long until the permits could be granted
    Duration waited{0};       // admitted by acquire(): how long it slept for them
    // The limit refused the request but the limiter is in shadow mode: the decision returned to
    // the caller says admitted (no permit consumed) with the refusal's retry_after; the
    // on_rejected event says admitted = false, as in enforcing mode.
    bool shadow = false;
    explicit operator bool() const noexcept { return admitted; }
};

struct RateLimiterStats {
    std::uint64_t admitted = 0;  // permits granted
    std::uint64_t rejected = 0;  // requests refused
    std::uint64_t waited = 0;    // requests that slept before being granted
    // of the rejected, how many were let through (consuming nothing) in shadow mode
    std::uint64_t shadow_rejections = 0;
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
        : BasicRateLimiter(RateLimiterOptions{bucket, Duration::zero(), false}, clock) {}
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    explicit BasicRateLimiter(SlidingWindow window, Clock& clock = default_clock())
        : BasicRateLimiter(RateLimiterOptions{window, Duration::zero(), false}, clock) {}

    // Throws std::invalid_argument for invalid options. The clock must outlive the limiter.
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    explicit BasicRateLimiter(RateLimiterOptions options, Clock& clock = default_clock())
        : BasicRateLimiter(std::string(), std::move(options), clock) {}

    // A named limiter: its rejections say the name in their message and in
    // RejectedError::source().
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    BasicRateLimiter(std::string name, TokenBucket bucket, Clock& clock = default_clock())
        : BasicRateLimiter(std::move(name), RateLimiterOptions{bucket, Duration::zero(), false},
                           clock) {}
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    BasicRateLimiter(std::string name, SlidingWindow window, Clock& clock = default_clock())
        : BasicRateLimiter(std::move(name), RateLimiterOptions{window, Duration::zero(), false},
                           clock) {}
    BasicRateLimiter(std::string name, RateLimiterOptions options, Clock& clock = default_clock())
        : name_(std::make_shared<const std::string>(std::move(name))),
          label_(name_->empty() ? std::string()
                                : detail::component_label("rate limiter", *name_) + ": "),
          options_((options.validate(), std::move(options))),
          clock_(&clock),
          shadow_(options_.shadow) {
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
        RateDecision d = reserve(n, Duration::zero());
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

    // Shadow mode on or off, at run time (see RateLimiterOptions::shadow); applies to the next
    // refusal.
    void set_shadow(bool on) noexcept {
        // relaxed: an independent switch; nothing else is published with it.
        shadow_.store(on, std::memory_order_relaxed);
    }
    bool shadow() const noexcept { return shadow_.load(std::memory_order_relaxed); }

    // Called for every refused request (apply, try_acquire or acquire), with its retry_after
    // (in shadow mode too, with RateDecision::shadow set).
    // Returns the id that remove_listener() takes; throws std::invalid_argument for an empty
    // listener.
    ListenerId on_rejected(std::function<void(const RateDecision&)> listener) {
        return rejected_listeners_.add(std::move(listener));
    }
    // Stops calling a listener; false if the id is unknown here or already removed.
    bool remove_listener(ListenerId id) noexcept { return rejected_listeners_.remove(id); }

    RateLimiterStats stats() const noexcept {
        return RateLimiterStats{admitted_.sum(), rejected_.load(std::memory_order_relaxed),
                                waited_.load(std::memory_order_relaxed),
                                shadow_rejections_.load(std::memory_order_relaxed)};
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

    // Counts a decision and reports a refusal; in shadow mode, turns the refusal into a pass
    // that consumed nothing (the switch is read only here, on the refusal path).
    void count(RateDecision& d, std::uint32_t n) noexcept {
        if (d.admitted) {
            admitted_.add(n);
            if (d.waited > Duration::zero()) {
                // relaxed: statistics.
                waited_.fetch_add(1, std::memory_order_relaxed);
            }
        } else {
            d.shadow = shadow_.load(std::memory_order_relaxed);
            rejected_.fetch_add(1, std::memory_order_relaxed);
            if (d.shadow) {
                shadow_rejections_.fetch_add(1, std::memory_order_relaxed);
            }
            rejected_listeners_.emit(d);
            d.admitted = d.shadow;
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
    std::atomic<bool> shadow_;  // read only on the refusal path
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
    std::atomic<std::uint64_t> shadow_rejections_{0};
    Listeners<RateDecision> rejected_listeners_;
};

using RateLimiter = BasicRateLimiter<>;

}  // namespace bulwark

#endif  // BULWARK_RATE_LIMITER_HPP

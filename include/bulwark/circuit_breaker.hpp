// CircuitBreaker: options, states, statistics, permits and the breaker itself.
// SPDX-License-Identifier: MIT
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

#include <bulwark/backoff.hpp>
#include <bulwark/circuit_breaker_options.hpp>
#include <bulwark/classify.hpp>
#include <bulwark/clock.hpp>
#include <bulwark/config.hpp>
#include <bulwark/context.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/thread_slot.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/errors.hpp>
#include <bulwark/events.hpp>
#include <bulwark/outcome.hpp>
#include <bulwark/policy.hpp>

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
// In shadow mode (CircuitBreakerOptions::shadow, set_shadow()) it decides and counts as above but
// lets the calls it refuses through, unrecorded.
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

        // True if the call may go ahead: admitted, or refused but let through in shadow mode.
        explicit operator bool() const noexcept { return admitted_; }
        bool admitted() const noexcept { return admitted_; }
        // True if the breaker refused the call but let it through because it is in shadow mode
        // (see CircuitBreakerOptions::shadow): the call holds no probe slot and recording its
        // result does nothing. retry_after() and rejection() say what the refusal said.
        bool shadowed() const noexcept { return shadow_; }
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
            return (breaker_ != nullptr && (!admitted_ || shadow_))
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
            if (shadow_) {
                return;
            }
            check_pending();
            finish(breaker_->classify(outcome), elapsed);
        }
        // As above, measuring the elapsed time from try_acquire() when the breaker needs it.
        template <class T>
        void record(const Outcome<T>& outcome) {
            if (shadow_) {
                return;
            }
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
            shadow_ = other.shadow_;
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
            if (shadow_) {
                return;  // a refusal let through: like a rejection, it records nothing
            }
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
        bool shadow_ = false;
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
          shadow_(options_.shadow),
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

    // Shadow mode on or off, at run time (see CircuitBreakerOptions::shadow). The change applies
    // to the next decision; permits already handed out keep theirs.
    void set_shadow(bool on) noexcept {
        // relaxed: an independent switch; nothing else is published with it.
        shadow_.store(on, std::memory_order_relaxed);
    }
    bool shadow() const noexcept { return shadow_.load(std::memory_order_relaxed); }

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
            s.shadow_rejections += stripe.shadow_rejections.load(std::memory_order_relaxed);
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
        if (BULWARK_UNLIKELY(permit.shadow_)) {
            return next(ctx);  // refused, let through in shadow mode: nothing to record
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
        std::atomic<std::uint64_t> shadow_rejections{0};
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
        // Read only here, on the reject path: the admit path never looks at the switch.
        if (BULWARK_UNLIKELY(shadow_.load(std::memory_order_relaxed))) {
            // Let through as what it is, a rejection: no probe slot, nothing to record.
            permit.admitted_ = true;
            permit.shadow_ = true;
            count(stripe, &Stripe::shadow_rejections, owned);
        }
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
                StateChange{name_,
                            state_of(old_word),
                            to,
                            now,
                            reason,
                            generation_of(new_word),
                            shadow_.load(std::memory_order_relaxed)};
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
    // Shadow mode (see set_shadow()); read only when a call is refused and at transitions.
    std::atomic<bool> shadow_;
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

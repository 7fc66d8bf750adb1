// RetryPolicy: retries with backoff and a budget, and the async schedule.
// SPDX-License-Identifier: MIT
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

#include <bulwark/adaptive_backoff.hpp>
#include <bulwark/backoff.hpp>
#include <bulwark/classify.hpp>
#include <bulwark/clock.hpp>
#include <bulwark/context.hpp>
#include <bulwark/detail/striped_counter.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/errors.hpp>
#include <bulwark/events.hpp>
#include <bulwark/outcome.hpp>
#include <bulwark/policy.hpp>
#include <bulwark/retry_budget.hpp>

namespace bulwark {

// A retry is about to happen.
struct RetryEvent {
    std::uint32_t attempt = 0;  // the retry's number: 1 for the first retry
    Duration delay{0};          // how long the policy waits before it
    std::exception_ptr error;   // the failure being retried (null for a retried value)
    std::string_view operation;
    // The budget refused this retry but is in shadow mode: a refusal let through.
    bool shadow = false;
};

struct RetryStats {
    std::uint64_t calls = 0;                  // operations run through the policy (with
                                              // count_calls; else those that failed first)
    std::uint64_t retries = 0;                // retries made
    std::uint64_t successes_after_retry = 0;  // operations that succeeded on a retry
    std::uint64_t exhausted = 0;              // gave up: retries, time or budget ran out
    std::uint64_t not_retryable = 0;          // failed with something not worth retrying
    std::uint64_t budget_exhausted = 0;       // of the exhausted, refused by the budget
    std::uint64_t deferred_to_caller = 0;     // failures left to a caller that retries
                                              // (Context::caller_retries(), not exhausted)
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
    // Optional: a budget shared by many policies, of any kind: RetryBudget::shared(0.1, 10)
    // (TPS), TokenBucketRetryBudget::shared(...) (gRPC), QuotaRetryBudget::shared(...) (AWS).
    // The policy tells it every call, every success, and for each retry whether the failure was
    // a TimeoutError.
    std::shared_ptr<RetryBudget> budget{};
    // When the context says the caller will retry this request itself
    // (Context::caller_retries(), read from its retry header), fail at once instead of retrying
    // here: retries at every layer multiply (3 layers of 3 retries make 64 attempts).
    bool defer_to_retrying_caller = true;
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
    RetryGrant last_grant{};  // the budget's grant for the last retry, handed back on success
    // A shadow-mode budget let a refused retry through: the rest of the call is not reported to
    // it (it would have ended there), and its later retries do not ask it.
    bool shadowed = false;
};

// Whether a failed attempt timed out (a QuotaRetryBudget charges more for it). The failure path.
inline bool is_timeout(const std::exception_ptr& error) noexcept {
    try {
        std::rethrow_exception(error);
    } catch (const TimeoutError&) {
        return true;
    } catch (...) {
        return false;
    }
}
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
// Does not retry at all when the context says its caller retries this request
// (Context::caller_retries(), from a retry header; RetryOptions::defer_to_retrying_caller).
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
          plain_success_(!result_predicates_ && adaptive_ == nullptr && !options_.budget),
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
        s.deferred_to_caller = deferred_to_caller_.load(std::memory_order_relaxed);
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
            // plain_success_ is false: an AdaptiveBackoff or a budget hears of the success.
            if (adaptive_ != nullptr) {
                adaptive_->record_success();
            }
            if (options_.budget) {
                options_.budget->record_success(detail::first_try_grant);
            }
        } else {
            retry_loop(ctx, next, outcome, started);
        }
        return outcome;
    }

private:
    friend class RetrySchedule;

    enum class Verdict : std::uint8_t {
        success,
        retry,
        not_retryable,
        exhausted,
        budget,
        deferred
    };

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
                finish(v, retry, run);
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
                finish(Verdict::exhausted, retry, run);
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
        // The caller retries this request itself: leave it the retry.
        if (ctx.caller_retries() && options_.defer_to_retrying_caller) {
            return Verdict::deferred;
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
        // Asked last, once nothing else stops the retry: a budget charges what it grants.
        if (options_.budget && !run.shadowed) {
            const RetryCause cause = outcome.has_error() && detail::is_timeout(outcome.error())
                                         ? RetryCause::timeout
                                         : RetryCause::failure;
            const RetryGrant grant = options_.budget->acquire(cause);
            if (!grant) {
                return Verdict::budget;
            }
            run.last_grant = grant;
            run.shadowed = grant.shadow;
        }
        run.previous = wait;
        listeners_.emit_with([&] {
            return RetryEvent{retry, wait, outcome.error(), ctx.operation(), run.last_grant.shadow};
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

    void finish(Verdict v, std::uint32_t retry, const detail::RetryRun& run) noexcept {
        switch (v) {
            case Verdict::success:
                if (adaptive_ != nullptr) {
                    adaptive_->record_success();
                }
                if (options_.budget && !run.shadowed) {
                    options_.budget->record_success(run.last_grant);
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
            case Verdict::deferred:
                deferred_to_caller_.fetch_add(1, std::memory_order_relaxed);
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
    std::atomic<std::uint64_t> deferred_to_caller_{0};
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
        policy_->finish(v, retries_ + 1, run_);
        return std::nullopt;
    }
    policy_->retries_.fetch_add(1, std::memory_order_relaxed);
    ++retries_;
    ctx_->set_attempt(retries_);
    return wait;
}

}  // namespace bulwark

#endif  // BULWARK_RETRY_HPP

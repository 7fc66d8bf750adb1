// AdaptiveLimiter: a concurrency limit that follows measured latency (Vegas, Gradient2, AIMD).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_ADAPTIVE_LIMITER_HPP
#define BULWARK_ADAPTIVE_LIMITER_HPP

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include <bulwark/clock.hpp>
#include <bulwark/context.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/striped_counter.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/errors.hpp>
#include <bulwark/events.hpp>
#include <bulwark/outcome.hpp>
#include <bulwark/policy.hpp>

namespace bulwark {

// How the limit moves. All three see the same windows of samples (see AdaptiveLimiterOptions).
enum class AdaptiveAlgorithm : std::uint8_t {
    // TCP Vegas: estimates the dependency's queue as limit × (1 − no_load_rtt / rtt) and keeps
    // it between alpha and beta (in units of log10(limit)).
    vegas,
    // Netflix's Gradient2: limit × min(1, tolerance × long_rtt / short_rtt), plus queue_size
    // while the gradient is 1; without its upward drift under sustained overload (see
    // Gradient2Options).
    gradient2,
    // Additive increase, multiplicative decrease on a drop or a window slower than a threshold.
    aimd,
};

struct VegasOptions {
    // Grow while the estimated queue is below alpha × log10(limit); shrink above
    // beta × log10(limit); between the two the limit holds. 0 < alpha < beta.
    double alpha = 3.0;
    double beta = 6.0;
    // Weight of each new estimate, in (0, 1]: limit = (1 − s)·limit + s·estimate.
    double smoothing = 1.0;
    // Every probe_interval windows, the limit is halved for a short probe so that the no-load
    // RTT is measured again at low concurrency (the dependency may have become slower or faster
    // for good): the mean RTT of calls that began and ended with at most that many in flight.
    // 0: never probe (the no-load RTT then only falls, to a window clearly faster than it).
    std::uint32_t probe_interval = 1000;
};

struct Gradient2Options {
    // How much slower than the long-term RTT a window may be before the limit shrinks. >= 1.
    // In a dependency that queues beyond its capacity C, the limit settles near
    // rtt_tolerance × C: lower it (1.1–1.2) for a tighter limit, raise it for more throughput.
    double rtt_tolerance = 1.5;
    // Added to the limit each window while the gradient is 1 (no queueing seen). >= 0.
    std::uint32_t queue_size = 4;
    // The long-term RTT's horizon, in windows (an exponential average over that many). >= 1.
    std::uint32_t long_window = 60;
    // Weight of each new estimate, in (0, 1].
    double smoothing = 0.2;
};

struct AimdOptions {
    // The limit is multiplied by this on a drop or a slow window. In [0.5, 1).
    double backoff_ratio = 0.9;
    // A window whose mean RTT exceeds this counts as a drop. > 0.
    Duration latency_threshold = std::chrono::seconds(5);
    // Added to the limit after a window without drops that used at least half the limit. >= 1.
    std::uint32_t increase = 1;
};

struct AdaptiveLimiterOptions {
    AdaptiveAlgorithm algorithm = AdaptiveAlgorithm::gradient2;
    // The limit starts here and stays within [min_limit, max_limit]. 1 <= min <= initial <= max.
    std::uint32_t initial_limit = 20;
    std::uint32_t min_limit = 1;
    std::uint32_t max_limit = 1000;
    // A window closes (and the limit is recomputed) once it holds window_samples samples and
    // has lasted min_window_time. window_samples >= 1, min_window_time >= 0.
    std::uint32_t window_samples = 50;
    Duration min_window_time = Duration::zero();
    // Calls allowed to wait (first in, first out) for a slot; 0 = no queue (default).
    std::uint32_t max_queue = 0;
    // The longest a queued call waits (also bounded by the context's deadline and cancellation).
    // > 0 with a queue, >= 0 always.
    Duration queue_timeout = std::chrono::seconds(1);
    // Shadow mode: decide as usual, count and report rejections (with shadow = true), but let
    // the calls through. A let-through call holds no slot and its outcome teaches the limit
    // nothing. A queued call whose context is cancelled is still refused (its caller gave it
    // up). Switch at run time with set_shadow().
    bool shadow = false;
    VegasOptions vegas{};
    Gradient2Options gradient2{};
    AimdOptions aimd{};

    // Throws std::invalid_argument naming the field and the value.
    void validate() const {
        detail::check_enumerator(algorithm, AdaptiveAlgorithm::aimd,
                                 "AdaptiveLimiterOptions.algorithm", "AdaptiveAlgorithm");
        if (min_limit == 0) {
            detail::throw_invalid_option("AdaptiveLimiterOptions.min_limit", "must be >= 1", "0");
        }
        if (max_limit < min_limit) {
            detail::throw_invalid_option("AdaptiveLimiterOptions.max_limit",
                                         "must be >= min_limit (" + std::to_string(min_limit) + ")",
                                         std::to_string(max_limit));
        }
        if (initial_limit < min_limit || initial_limit > max_limit) {
            detail::throw_invalid_option("AdaptiveLimiterOptions.initial_limit",
                                         "must be in [min_limit, max_limit] (" +
                                             std::to_string(min_limit) + ", " +
                                             std::to_string(max_limit) + ")",
                                         std::to_string(initial_limit));
        }
        if (window_samples == 0) {
            detail::throw_invalid_option("AdaptiveLimiterOptions.window_samples", "must be >= 1",
                                         "0");
        }
        if (min_window_time < Duration::zero()) {
            detail::throw_invalid_option("AdaptiveLimiterOptions.min_window_time", "must be >= 0",
                                         detail::format_duration(min_window_time));
        }
        if (queue_timeout < Duration::zero() ||
            (max_queue > 0 && queue_timeout == Duration::zero())) {
            detail::throw_invalid_option(
                "AdaptiveLimiterOptions.queue_timeout",
                max_queue > 0 ? "must be > 0 when max_queue > 0" : "must be >= 0",
                detail::format_duration(queue_timeout));
        }
        // Written so that NaN fails too.
        if (!(vegas.alpha > 0)) {
            detail::throw_invalid_option("AdaptiveLimiterOptions.vegas.alpha", "must be > 0",
                                         detail::format_number(vegas.alpha));
        }
        if (!(vegas.beta > vegas.alpha)) {
            detail::throw_invalid_option(
                "AdaptiveLimiterOptions.vegas.beta",
                "must be > vegas.alpha (" + detail::format_number(vegas.alpha) + ")",
                detail::format_number(vegas.beta));
        }
        check_smoothing("AdaptiveLimiterOptions.vegas.smoothing", vegas.smoothing);
        if (!(gradient2.rtt_tolerance >= 1.0) || std::isinf(gradient2.rtt_tolerance)) {
            detail::throw_invalid_option("AdaptiveLimiterOptions.gradient2.rtt_tolerance",
                                         "must be >= 1 and finite",
                                         detail::format_number(gradient2.rtt_tolerance));
        }
        if (gradient2.long_window == 0) {
            detail::throw_invalid_option("AdaptiveLimiterOptions.gradient2.long_window",
                                         "must be >= 1", "0");
        }
        check_smoothing("AdaptiveLimiterOptions.gradient2.smoothing", gradient2.smoothing);
        if (!(aimd.backoff_ratio >= 0.5 && aimd.backoff_ratio < 1.0)) {
            detail::throw_invalid_option("AdaptiveLimiterOptions.aimd.backoff_ratio",
                                         "must be in [0.5, 1)",
                                         detail::format_number(aimd.backoff_ratio));
        }
        if (aimd.latency_threshold <= Duration::zero()) {
            detail::throw_invalid_option("AdaptiveLimiterOptions.aimd.latency_threshold",
                                         "must be > 0",
                                         detail::format_duration(aimd.latency_threshold));
        }
        if (aimd.increase == 0) {
            detail::throw_invalid_option("AdaptiveLimiterOptions.aimd.increase", "must be >= 1",
                                         "0");
        }
    }

private:
    static void check_smoothing(const char* field, double value) {
        if (!(value > 0.0 && value <= 1.0)) {
            detail::throw_invalid_option(field, "must be in (0, 1]", detail::format_number(value));
        }
    }
};

enum class AdaptiveLimitRejection : std::uint8_t {
    limit_reached,  // every slot under the current limit is taken and there is no queue
    queue_full,     // every slot is taken and the queue is full
    queue_timeout,  // waited queue_timeout (or the context's deadline) without a slot
    cancelled,      // the context was cancelled while waiting
};

// A call was rejected (or, in shadow mode, would have been: shadow = true, and it ran).
struct AdaptiveLimitRejectedEvent {
    AdaptiveLimitRejection reason = AdaptiveLimitRejection::limit_reached;
    std::uint32_t limit = 0;
    std::uint32_t in_flight = 0;
    std::uint32_t queued = 0;
    bool shadow = false;
};

// The limit moved at the close of a window.
struct AdaptiveLimitChange {
    std::uint32_t old_limit = 0;
    std::uint32_t new_limit = 0;
    Duration short_rtt{};    // the window's mean RTT
    Duration long_rtt{};     // the long-term RTT
    Duration no_load_rtt{};  // the RTT without queueing, as estimated
};

struct AdaptiveLimiterStats {
    AdaptiveAlgorithm algorithm = AdaptiveAlgorithm::gradient2;
    std::uint32_t limit = 0;  // the current limit (halved during a Vegas probe)
    std::uint32_t in_flight = 0;
    std::uint32_t queued = 0;
    std::uint64_t admitted = 0;
    std::uint64_t rejected = 0;  // in shadow mode too: what enforcing would have rejected
    std::uint64_t queue_timeouts = 0;
    std::uint64_t shadow_rejections = 0;  // of `rejected`, how many were let through
    std::uint64_t samples = 0;            // completed calls whose RTT was sampled
    std::uint64_t drops = 0;              // completed calls reported dropped (overload)
    std::uint64_t windows = 0;            // windows closed (limit recomputations)
    std::uint64_t probes = 0;             // Vegas no-load probes started
    bool probing = false;                 // a Vegas probe holds the limit halved now
    Duration no_load_rtt{};  // the RTT without queueing (see VegasOptions::probe_interval)
    Duration short_rtt{};    // the last window's mean RTT
    Duration long_rtt{};     // the long-term RTT (Gradient2's baseline)
};

// A concurrency limit that moves with the latency it measures, so that the number of calls
// in flight follows what the dependency can take now (Netflix concurrency-limits' idea).
//   bulwark::AdaptiveLimiter limiter({});                    // Gradient2, limit 20 to start
//   limiter.execute([&] { return db.query(sql); });          // AdaptiveLimitError when full
//   if (auto permit = limiter.try_acquire()) { call(); }     // RTT sampled when it ends
//   else if (permit.rejection() == bulwark::AdaptiveLimitRejection::limit_reached) { ... }
// Invariant: a call is admitted only while in flight < the limit at that moment (the limit may
// then shrink below the calls already inside; none is cut short). Queueing as in Bulkhead.
// Thread-safe. Admission and release are one atomic read-modify-write each, the RTT sample two
// more plus two clock reads; the limit is recomputed once per window by the thread that closes
// it, under a mutex. Does not allocate after construction.
template <class Tag = void>
class BasicAdaptiveLimiter : public PolicyBase<BasicAdaptiveLimiter<Tag>> {
    // What a finished call tells the limit.
    enum class Sample : std::uint8_t { none, rtt, drop };

public:
    // A slot under the limit, released when destroyed (the call's RTT is then sampled). A
    // refused permit is false and says why; in shadow mode a refused call gets a true permit
    // that holds nothing (shadow() is true) and is not sampled. Movable.
    class [[nodiscard]] Permit {
    public:
        Permit() noexcept = default;
        Permit(Permit&& other) noexcept
            : limiter_(std::exchange(other.limiter_, nullptr)),
              start_(other.start_),
              in_flight_(other.in_flight_),
              reason_(other.reason_),
              state_(std::exchange(other.state_, State::refused)) {}
        Permit& operator=(Permit&& other) noexcept {
            if (this != &other) {
                complete();
                limiter_ = std::exchange(other.limiter_, nullptr);
                start_ = other.start_;
                in_flight_ = other.in_flight_;
                reason_ = other.reason_;
                state_ = std::exchange(other.state_, State::refused);
            }
            return *this;
        }
        Permit(const Permit&) = delete;
        Permit& operator=(const Permit&) = delete;
        ~Permit() { complete(); }

        // True when the call may run: admitted, or let through in shadow mode.
        explicit operator bool() const noexcept { return state_ != State::refused; }
        // True for a call let through by shadow mode (it holds no slot).
        bool shadow() const noexcept { return state_ == State::shadow; }
        // Why it was (or in shadow mode would have been) refused.
        AdaptiveLimitRejection rejection() const noexcept { return reason_; }

        // The call finished normally (whether it succeeded or failed): releases the slot and
        // samples its RTT. What the destructor does.
        void complete() noexcept { finish(Sample::rtt); }
        // The call was dropped for overload (timed out, or the dependency said it is
        // overloaded): releases the slot and tells the limit to shrink.
        void drop() noexcept { finish(Sample::drop); }
        // The call says nothing about the dependency's latency (it failed before reaching it):
        // releases the slot without a sample.
        void ignore() noexcept { finish(Sample::none); }

    private:
        friend class BasicAdaptiveLimiter;
        enum class State : std::uint8_t { refused, admitted, shadow };
        Permit(BasicAdaptiveLimiter* limiter, TimePoint start, std::uint32_t in_flight) noexcept
            : limiter_(limiter), start_(start), in_flight_(in_flight), state_(State::admitted) {}
        Permit(AdaptiveLimitRejection reason, bool shadow) noexcept
            : reason_(reason), state_(shadow ? State::shadow : State::refused) {}

        void finish(Sample kind) noexcept {
            if (limiter_ != nullptr) {
                std::exchange(limiter_, nullptr)->release(start_, in_flight_, kind);
            }
        }

        BasicAdaptiveLimiter* limiter_ = nullptr;
        TimePoint start_{};
        std::uint32_t in_flight_ = 0;  // calls in flight just after this one was admitted
        AdaptiveLimitRejection reason_ = AdaptiveLimitRejection::limit_reached;
        State state_ = State::refused;
    };

    // Throws std::invalid_argument for invalid options. The clock must outlive the limiter.
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    explicit BasicAdaptiveLimiter(AdaptiveLimiterOptions options, Clock& clock = default_clock())
        : BasicAdaptiveLimiter(std::string(), options, clock) {}

    // A named limiter: its rejections say the name in their message and in
    // RejectedError::source().
    BasicAdaptiveLimiter(std::string name, AdaptiveLimiterOptions options,
                         Clock& clock = default_clock())
        : name_(std::make_shared<const std::string>(std::move(name))),
          options_((options.validate(), options)),
          clock_(&clock),
          limit_error_(error(": the adaptive concurrency limit is reached")),
          queue_full_error_(error(": the adaptive concurrency limit is reached and " +
                                  std::to_string(options_.max_queue) + " calls are queued")),
          timeout_error_(error(": no slot within the queue timeout of " +
                               detail::format_duration(options_.queue_timeout))),
          cancelled_error_(error(": the call was cancelled while queued")),
          estimate_(static_cast<double>(options_.initial_limit)),
          limit_(options_.initial_limit),
          shadow_(options_.shadow),
          window_start_ns_(clock.now().time_since_epoch().count()) {}

    BasicAdaptiveLimiter(const BasicAdaptiveLimiter&) = delete;
    BasicAdaptiveLimiter& operator=(const BasicAdaptiveLimiter&) = delete;

    const AdaptiveLimiterOptions& options() const noexcept { return options_; }
    // Empty when unnamed.
    const std::string& name() const noexcept { return *name_; }

    // The current limit.
    std::uint32_t limit() const noexcept { return limit_.load(std::memory_order_relaxed); }

    void set_shadow(bool on) noexcept { shadow_.store(on, std::memory_order_relaxed); }
    bool shadow() const noexcept { return shadow_.load(std::memory_order_relaxed); }

    // A slot if one is free under the limit right now (never waits). Does not allocate.
    Permit try_acquire() noexcept {
        std::uint32_t in_flight = 0;
        if (BULWARK_LIKELY(try_take_fast(in_flight))) {
            return admit(in_flight);
        }
        return reject(AdaptiveLimitRejection::limit_reached);
    }

    // A slot, waiting in the queue if there is room (up to queue_timeout, the context's
    // deadline or its cancellation).
    Permit acquire(const Context* ctx = nullptr) {
        std::uint32_t in_flight = 0;
        if (BULWARK_LIKELY(try_take_fast(in_flight))) {
            return admit(in_flight);
        }
        return acquire_slow(ctx);
    }

    // As a pipeline policy: a TimeoutError from inside is a drop, another RejectedError from
    // inside (the call never reached the dependency) is ignored, any other outcome is sampled.
    template <class Next>
    auto apply(Context& ctx, Next&& next) {
        using O = std::invoke_result_t<Next&, Context&>;
        Permit permit = acquire(&ctx);
        if (BULWARK_UNLIKELY(!permit)) {
            return O::from_error(error_for(permit.rejection()));
        }
        O outcome = next(ctx);
        if (BULWARK_UNLIKELY(outcome.has_error())) {
            classify(permit, outcome.error());
        }
        return outcome;
    }

    // Called on every rejection (and would-be rejection in shadow mode). Returns the id that
    // remove_listener() takes; throws std::invalid_argument for an empty listener.
    ListenerId on_rejected(std::function<void(const AdaptiveLimitRejectedEvent&)> listener) {
        return rejected_listeners_.add(std::move(listener));
    }
    // Called when a window moves the limit, from the thread that closed the window.
    ListenerId on_limit_changed(std::function<void(const AdaptiveLimitChange&)> listener) {
        return changed_listeners_.add(std::move(listener));
    }
    // Stops calling a listener; false if the id is unknown here or already removed.
    bool remove_listener(ListenerId id) noexcept {
        return rejected_listeners_.remove(id) || changed_listeners_.remove(id);
    }

    AdaptiveLimiterStats stats() const {
        AdaptiveLimiterStats s;
        s.algorithm = options_.algorithm;
        s.limit = limit_.load(std::memory_order_relaxed);
        s.in_flight = static_cast<std::uint32_t>(
            std::max<std::int64_t>(0, in_flight_.load(std::memory_order_relaxed)));
        {
            detail::LockGuard lock(mutex_);
            s.queued = queued_;
        }
        s.admitted = admitted_.sum();
        s.rejected = rejected_.load(std::memory_order_relaxed);
        s.queue_timeouts = queue_timeouts_.load(std::memory_order_relaxed);
        s.shadow_rejections = shadow_rejections_.load(std::memory_order_relaxed);
        {
            detail::LockGuard lock(update_mutex_);
            s.samples = samples_total_;
            s.drops = drops_total_;
            s.windows = windows_;
            s.probes = probes_;
            s.probing = probing_.load(std::memory_order_relaxed);
            s.no_load_rtt = to_duration(no_load_ns_);
            s.short_rtt = to_duration(short_ns_);
            s.long_rtt = to_duration(long_ns_);
        }
        return s;
    }

private:
    struct Waiter {
        std::condition_variable cv;
        bool granted = false;
        std::uint32_t in_flight = 0;
        Waiter* next = nullptr;
        Waiter* prev = nullptr;
    };

    static Duration to_duration(double ns) noexcept {
        return Duration(static_cast<Duration::rep>(ns));
    }

    BULWARK_ALWAYS_INLINE Permit admit(std::uint32_t in_flight) noexcept {
        admitted_.add();
        return Permit(this, clock_->now(), in_flight);
    }

    // Memory ordering: as in Bulkhead, waiting_ and in_flight_ form a Dekker pair (seq_cst on
    // both sides), so a freed slot is never left unclaimed while someone waits.
    bool try_take_fast(std::uint32_t& in_flight) noexcept {
        if (waiting_.load(std::memory_order_seq_cst) != 0) {
            return false;  // first in, first out: do not overtake the queue
        }
        return take_slot(in_flight);
    }

    bool take_slot(std::uint32_t& in_flight) noexcept {
        // seq_cst: a raised limit and a new waiter form a Dekker pair too (the closer stores
        // limit_ then reads waiting_, see close_window_locked; a waiter increments waiting_ then
        // reads limit_ here). Admission itself is decided by the CAS on in_flight_, which alone
        // keeps in_flight <= the limit read here.
        const auto limit = static_cast<std::int64_t>(limit_.load(std::memory_order_seq_cst));
        // seq_cst, the load and the failed CAS too: a waiter's read of in_flight_ is its side of
        // the Dekker pair (see try_take_fast). A relaxed read after its seq_cst increment of
        // waiting_ may see a slot taken that a releaser has freed while that releaser sees no
        // waiter: the slot is left unclaimed and the waiter times out. (Free on x86; an LDAR
        // instead of an LDR on ARM.)
        std::int64_t current = in_flight_.load(std::memory_order_seq_cst);
        while (current < limit) {
            if (in_flight_.compare_exchange_weak(current, current + 1, std::memory_order_seq_cst,
                                                 std::memory_order_seq_cst)) {
                in_flight = static_cast<std::uint32_t>(current + 1);
                return true;
            }
        }
        return false;
    }

    void release(TimePoint start, std::uint32_t in_flight, Sample kind) noexcept {
        const TimePoint now = kind == Sample::none ? TimePoint{} : clock_->now();
        const std::int64_t before = in_flight_.fetch_sub(1, std::memory_order_seq_cst);
        if (waiting_.load(std::memory_order_seq_cst) != 0) {
            detail::LockGuard lock(mutex_);
            dispatch_locked();
        }
        if (kind != Sample::none) {
            // The load a call saw is at least what was in flight when it began and when it
            // ended (calls admitted just after it shared the dependency with it).
            const auto at_end = static_cast<std::uint32_t>(std::max<std::int64_t>(0, before));
            record(now, start, std::max(in_flight, at_end), kind == Sample::drop);
        }
    }

    // Adds one sample to the open window; the sample that fills it closes it. A sample racing
    // the close may be counted in the next window instead (its count and its RTT always land
    // in windows next to each other): the estimate is statistical, not exact.
    void record(TimePoint now, TimePoint start, std::uint32_t load, bool dropped) noexcept {
        const auto rtt_ns =
            static_cast<std::uint64_t>(std::max<Duration::rep>(0, (now - start).count()));
        // relaxed throughout: window accumulators, read by the closer under update_mutex_ after
        // it has seen the count that its own increment completed.
        w_sum_ns_.fetch_add(rtt_ns, std::memory_order_relaxed);
        update_max(w_max_in_flight_, load);
        // relaxed: last_decrease_ns_ is a hint that moves once per decrease.
        if (BULWARK_UNLIKELY(start.time_since_epoch().count() <=
                             last_decrease_ns_.load(std::memory_order_relaxed))) {
            w_stale_.fetch_add(1, std::memory_order_relaxed);
        }
        if (dropped) {
            w_drops_.fetch_add(1, std::memory_order_relaxed);
        }
        if (BULWARK_UNLIKELY(probing_.load(std::memory_order_relaxed)) &&
            load <= probe_limit_.load(std::memory_order_relaxed)) {
            w_probe_sum_ns_.fetch_add(rtt_ns, std::memory_order_relaxed);
            w_probe_samples_.fetch_add(1, std::memory_order_relaxed);
        }
        const std::uint64_t n = w_count_.fetch_add(1, std::memory_order_acq_rel) + 1;
        if (BULWARK_LIKELY(n < options_.window_samples)) {
            return;
        }
        if (now.time_since_epoch().count() - window_start_ns_.load(std::memory_order_relaxed) <
            options_.min_window_time.count()) {
            return;
        }
        close_window(now);
    }

    template <class T>
    static void update_max(std::atomic<T>& cell, T value) noexcept {
        T current = cell.load(std::memory_order_relaxed);
        while (value > current &&
               !cell.compare_exchange_weak(current, value, std::memory_order_relaxed)) {
        }
    }

    BULWARK_NOINLINE void close_window(TimePoint now) noexcept {
        // Only one closer at a time; a sample that finds the lock taken leaves its window to
        // the closer (or to the next sample).
        if (!update_mutex_.try_lock()) {
            return;
        }
        AdaptiveLimitChange change;
        const bool changed = close_window_locked(now, change);
        update_mutex_.unlock();
        if (changed) {
            changed_listeners_.emit(change);
        }
    }

    bool close_window_locked(TimePoint now, AdaptiveLimitChange& change) noexcept
        BULWARK_REQUIRES(update_mutex_) {
        const std::uint64_t count = w_count_.exchange(0, std::memory_order_acq_rel);
        if (count < options_.window_samples) {
            w_count_.fetch_add(count, std::memory_order_relaxed);  // another closer won
            return false;
        }
        Window w;
        w.count = count;
        w.sum_ns = w_sum_ns_.exchange(0, std::memory_order_relaxed);
        w.max_in_flight = w_max_in_flight_.exchange(0, std::memory_order_relaxed);
        w.drops = w_drops_.exchange(0, std::memory_order_relaxed);
        w.stale = w_stale_.exchange(0, std::memory_order_relaxed);
        w.probe_sum_ns = w_probe_sum_ns_.exchange(0, std::memory_order_relaxed);
        w.probe_samples = w_probe_samples_.exchange(0, std::memory_order_relaxed);
        window_start_ns_.store(now.time_since_epoch().count(), std::memory_order_relaxed);
        const std::uint32_t old_limit = limit_.load(std::memory_order_relaxed);
        update_locked(w);
        const std::uint32_t new_limit = limit_.load(std::memory_order_relaxed);
        change = AdaptiveLimitChange{old_limit, new_limit, to_duration(short_ns_),
                                     to_duration(long_ns_), to_duration(no_load_ns_)};
        if (new_limit > old_limit && waiting_.load(std::memory_order_seq_cst) != 0) {
            detail::LockGuard queue_lock(mutex_);
            dispatch_locked();
        }
        return new_limit != old_limit;
    }

    struct Window {
        std::uint64_t count = 0;
        std::uint64_t sum_ns = 0;
        std::uint32_t max_in_flight = 0;
        std::uint64_t drops = 0;
        std::uint64_t stale = 0;  // calls that began before the last AIMD decrease
        std::uint64_t probe_sum_ns = 0;
        std::uint64_t probe_samples = 0;
    };

    // Under update_mutex_: folds a closed window into the estimates and moves the limit.
    void update_locked(const Window& w) noexcept BULWARK_REQUIRES(update_mutex_) {
        ++windows_;
        samples_total_ += w.count;
        drops_total_ += w.drops;
        const double mean = static_cast<double>(w.sum_ns) / static_cast<double>(w.count);
        short_ns_ = mean;
        // Window means, not single samples (one lucky call would make every later window look
        // queued), and only a clearly faster window lowers it between probes: the minimum of
        // noisy means keeps falling with noise alone.
        if (no_load_ns_ <= 0 || mean < no_load_ns_ * no_load_margin) {
            no_load_ns_ = mean;
        }
        const double limit = estimate_;
        // A window that used less than half the limit says nothing about whether more would fit.
        const bool app_limited = 2.0 * static_cast<double>(w.max_in_flight) < limit;
        double next = limit;
        switch (options_.algorithm) {
            case AdaptiveAlgorithm::vegas:
                next = vegas_locked(w, limit, mean, app_limited);
                break;
            case AdaptiveAlgorithm::gradient2:
                next = gradient2_locked(w, limit, mean, app_limited);
                break;
            case AdaptiveAlgorithm::aimd:
                long_ns_ = long_ns_ <= 0 ? mean : long_ns_ + (mean - long_ns_) / 60.0;
                next = aimd_locked(w, limit, mean, app_limited);
                break;
        }
        estimate_ = std::clamp(next, static_cast<double>(options_.min_limit),
                               static_cast<double>(options_.max_limit));
        publish_locked();
    }

    double vegas_locked(const Window& w, double limit, double mean, bool app_limited) noexcept
        BULWARK_REQUIRES(update_mutex_) {
        const VegasOptions& o = options_.vegas;
        long_ns_ = long_ns_ <= 0 ? mean : long_ns_ + (mean - long_ns_) / 60.0;
        if (probing_.load(std::memory_order_relaxed)) {
            // The probe ends once two generations of calls under the halved limit have
            // finished (the first to finish are the fastest: fewer would bias it low), or after
            // enough windows for that at the old limit.
            ++probe_windows_;
            const double probe_limit = probe_limit_.load(std::memory_order_relaxed);
            const double window = options_.window_samples;
            const auto wanted = static_cast<std::uint64_t>(std::max(window, 2.0 * probe_limit));
            const auto most_windows = static_cast<std::uint64_t>(4.0 + 4.0 * limit / window);
            probe_sum_ns_ += w.probe_sum_ns;
            probe_samples_ += w.probe_samples;
            if (probe_samples_ >= wanted || probe_windows_ > most_windows) {
                if (probe_samples_ > 0) {
                    no_load_ns_ =
                        static_cast<double>(probe_sum_ns_) / static_cast<double>(probe_samples_);
                }
                probing_.store(false, std::memory_order_relaxed);
                windows_since_probe_ = 0;
            }
            return limit;
        }
        ++windows_since_probe_;
        if (o.probe_interval > 0 && windows_since_probe_ >= o.probe_interval) {
            ++probes_;
            probe_windows_ = 0;
            probe_sum_ns_ = 0;
            probe_samples_ = 0;
            probe_limit_.store(
                std::max(options_.min_limit, static_cast<std::uint32_t>(limit / 2.0)),
                std::memory_order_relaxed);
            probing_.store(true, std::memory_order_relaxed);
            return limit;
        }
        const double log_limit = std::max(1.0, std::log10(limit));
        double next = limit;
        if (w.drops > 0) {
            next = limit - log_limit;
        } else if (app_limited) {
            return limit;
        } else {
            const double queue = limit * (1.0 - no_load_ns_ / std::max(mean, 1.0));
            if (queue <= log_limit) {
                next = limit + o.beta * log_limit;  // far from queueing: grow fast
            } else if (queue < o.alpha * log_limit) {
                next = limit + log_limit;
            } else if (queue > o.beta * log_limit) {
                next = limit - log_limit;
            }
        }
        return limit * (1.0 - o.smoothing) + next * o.smoothing;
    }

    // Gradient2 without the drift. Netflix's long RTT is an average of every window, so under
    // sustained overload it catches up with the short RTT, the gradient returns to 1 and the
    // queue_size term lifts the limit a little every window, for ever (concurrency-limits
    // #134). Here the long RTT is a no-load baseline: it follows the short RTT down at once
    // (fast when the short RTT is under half of it) but up only from windows that cannot be
    // queueing caused by this limiter: app-limited ones, or ones at min_limit (where a higher
    // RTT can only be the dependency's own). And queue_size is added only at gradient 1.
    double gradient2_locked(const Window& w, double limit, double short_ns,
                            bool app_limited) noexcept BULWARK_REQUIRES(update_mutex_) {
        const Gradient2Options& o = options_.gradient2;
        const auto horizon = static_cast<double>(o.long_window);
        if (long_ns_ <= 0) {
            long_ns_ = short_ns;
        } else if (short_ns < long_ns_) {
            long_ns_ =
                long_ns_ > 2.0 * short_ns ? short_ns : long_ns_ + (short_ns - long_ns_) / horizon;
        } else if (app_limited || limit <= static_cast<double>(options_.min_limit)) {
            long_ns_ += (short_ns - long_ns_) / horizon;
        }
        if (app_limited && w.drops == 0) {
            return limit;
        }
        double gradient = 0.5;
        if (w.drops == 0) {
            gradient = std::clamp(o.rtt_tolerance * long_ns_ / std::max(short_ns, 1.0), 0.5, 1.0);
        }
        const double next =
            limit * gradient + (gradient >= 1.0 ? static_cast<double>(o.queue_size) : 0.0);
        return limit * (1.0 - o.smoothing) + next * o.smoothing;
    }

    // One decrease per round trip, as in TCP: a window whose calls all began before the last
    // decrease measured the old limit, so it neither shrinks the limit again nor grows it.
    double aimd_locked(const Window& w, double limit, double mean, bool app_limited) noexcept
        BULWARK_REQUIRES(update_mutex_) {
        const AimdOptions& o = options_.aimd;
        if (w.stale >= w.count) {
            return limit;
        }
        if (w.drops > 0 || mean > static_cast<double>(o.latency_threshold.count())) {
            last_decrease_ns_.store(window_start_ns_.load(std::memory_order_relaxed),
                                    std::memory_order_relaxed);
            return limit * o.backoff_ratio;
        }
        return app_limited ? limit : limit + static_cast<double>(o.increase);
    }

    void publish_locked() noexcept BULWARK_REQUIRES(update_mutex_) {
        auto whole = static_cast<std::uint32_t>(estimate_);
        if (probing_.load(std::memory_order_relaxed)) {
            whole = std::min(whole, probe_limit_.load(std::memory_order_relaxed));
        }
        // seq_cst: see take_slot. A relaxed store may still sit in this CPU's store buffer (x86
        // too) when close_window_locked reads waiting_ as 0, while a waiter that has just
        // counted itself reads the old limit: it then waits for the next release although the
        // raised limit has room. Once per window.
        limit_.store(whole, std::memory_order_seq_cst);
    }

    void dispatch_locked() noexcept BULWARK_REQUIRES(mutex_) {
        std::uint32_t in_flight = 0;
        while (head_ != nullptr && take_slot(in_flight)) {
            Waiter* w = head_;
            unlink(w);
            w->granted = true;
            w->in_flight = in_flight;
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
        std::uint32_t in_flight = 0;
        if (head_ == nullptr && take_slot(in_flight)) {
            lock.unlock();
            return admit(in_flight);
        }
        if (queued_ >= options_.max_queue) {
            lock.unlock();
            return reject(options_.max_queue == 0 ? AdaptiveLimitRejection::limit_reached
                                                  : AdaptiveLimitRejection::queue_full);
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
        AdaptiveLimitRejection reason = AdaptiveLimitRejection::queue_timeout;
        while (!w.granted) {
            if (ctx != nullptr && ctx->cancelled()) {
                reason = AdaptiveLimitRejection::cancelled;
                break;
            }
            if (clock_->now() >= deadline) {
                break;
            }
            // Cancellation notifies nobody: a waiter with a context looks at it every poll.
            TimePoint wake = deadline;
            if (ctx != nullptr) {
                wake = std::min(deadline, clock_->now() + cancel_poll);
            }
            clock_->wait_until(w.cv, lock.native(), wake);
        }
        if (w.granted) {
            lock.unlock();
            return admit(w.in_flight);
        }
        unlink(&w);
        lock.unlock();
        if (reason == AdaptiveLimitRejection::queue_timeout) {
            queue_timeouts_.fetch_add(1, std::memory_order_relaxed);
        }
        return reject(reason);
    }

    // The reject branch: counts, reports, and lets the call through in shadow mode. A call
    // cancelled while queued is refused in shadow mode too: its caller gave it up, not the
    // limiter (as in Bulkhead).
    BULWARK_NOINLINE Permit reject(AdaptiveLimitRejection reason) noexcept {
        // relaxed: statistics, and a mode switch that need not order anything else.
        rejected_.fetch_add(1, std::memory_order_relaxed);
        const bool shadow =
            reason != AdaptiveLimitRejection::cancelled && shadow_.load(std::memory_order_relaxed);
        if (shadow) {
            shadow_rejections_.fetch_add(1, std::memory_order_relaxed);
        }
        rejected_listeners_.emit_with([&] {
            return AdaptiveLimitRejectedEvent{
                reason, limit_.load(std::memory_order_relaxed),
                static_cast<std::uint32_t>(
                    std::max<std::int64_t>(0, in_flight_.load(std::memory_order_relaxed))),
                static_cast<std::uint32_t>(waiting_.load(std::memory_order_relaxed)), shadow};
        });
        return Permit(reason, shadow);
    }

    std::exception_ptr error_for(AdaptiveLimitRejection reason) const noexcept {
        switch (reason) {
            case AdaptiveLimitRejection::limit_reached:
                return limit_error_;
            case AdaptiveLimitRejection::queue_full:
                return queue_full_error_;
            case AdaptiveLimitRejection::queue_timeout:
                return timeout_error_;
            case AdaptiveLimitRejection::cancelled:
                break;
        }
        return cancelled_error_;
    }

    // The failure path of apply(): what a failed call tells the limit.
    BULWARK_NOINLINE static void classify(Permit& permit, const std::exception_ptr& error) {
        try {
            std::rethrow_exception(error);
        } catch (const TimeoutError&) {
            permit.drop();
        } catch (const RejectedError&) {
            permit.ignore();
        } catch (...) {
            permit.complete();
        }
    }

    std::exception_ptr error(const std::string& rest) const;

    static constexpr Duration cancel_poll = std::chrono::milliseconds(10);
    // A window lowers the no-load RTT between probes only when this much faster (20%) than it.
    static constexpr double no_load_margin = 0.8;

    const std::shared_ptr<const std::string> name_;
    const AdaptiveLimiterOptions options_;
    Clock* const clock_;
    const std::exception_ptr limit_error_;
    const std::exception_ptr queue_full_error_;
    const std::exception_ptr timeout_error_;
    const std::exception_ptr cancelled_error_;

    // The limit's estimate and the RTT estimates, in nanoseconds; moved once per window.
    mutable detail::Mutex update_mutex_;
    double estimate_ BULWARK_GUARDED_BY(update_mutex_);
    double short_ns_ BULWARK_GUARDED_BY(update_mutex_) = 0;
    double long_ns_ BULWARK_GUARDED_BY(update_mutex_) = 0;
    double no_load_ns_ BULWARK_GUARDED_BY(update_mutex_) = 0;
    std::uint64_t samples_total_ BULWARK_GUARDED_BY(update_mutex_) = 0;
    std::uint64_t drops_total_ BULWARK_GUARDED_BY(update_mutex_) = 0;
    std::uint64_t windows_ BULWARK_GUARDED_BY(update_mutex_) = 0;
    std::uint64_t probes_ BULWARK_GUARDED_BY(update_mutex_) = 0;
    std::uint64_t windows_since_probe_ BULWARK_GUARDED_BY(update_mutex_) = 0;
    std::uint64_t probe_windows_ BULWARK_GUARDED_BY(update_mutex_) = 0;
    std::uint64_t probe_sum_ns_ BULWARK_GUARDED_BY(update_mutex_) = 0;
    std::uint64_t probe_samples_ BULWARK_GUARDED_BY(update_mutex_) = 0;

    alignas(detail::cache_line_size) std::atomic<std::uint32_t> limit_;
    std::atomic<bool> shadow_;
    std::atomic<bool> probing_{false};
    std::atomic<std::uint32_t> probe_limit_{0};
    alignas(detail::cache_line_size) std::atomic<std::int64_t> in_flight_{0};
    alignas(detail::cache_line_size) std::atomic<std::int64_t> waiting_{0};

    // The open window's accumulators.
    alignas(detail::cache_line_size) std::atomic<std::uint64_t> w_count_{0};
    std::atomic<std::uint64_t> w_sum_ns_{0};
    std::atomic<std::uint32_t> w_max_in_flight_{0};
    std::atomic<std::uint64_t> w_drops_{0};
    std::atomic<std::uint64_t> w_stale_{0};
    // When AIMD last shrank the limit (ns on the clock); calls that began before it are stale.
    std::atomic<std::int64_t> last_decrease_ns_{std::numeric_limits<std::int64_t>::min()};
    std::atomic<std::uint64_t> w_probe_sum_ns_{0};
    std::atomic<std::uint64_t> w_probe_samples_{0};
    std::atomic<std::int64_t> window_start_ns_;

    mutable detail::Mutex mutex_;
    Waiter* head_ BULWARK_GUARDED_BY(mutex_) = nullptr;
    Waiter* tail_ BULWARK_GUARDED_BY(mutex_) = nullptr;
    std::uint32_t queued_ BULWARK_GUARDED_BY(mutex_) = 0;

    detail::StripedCounter admitted_;
    std::atomic<std::uint64_t> rejected_{0};
    std::atomic<std::uint64_t> queue_timeouts_{0};
    std::atomic<std::uint64_t> shadow_rejections_{0};
    Listeners<AdaptiveLimitRejectedEvent> rejected_listeners_;
    Listeners<AdaptiveLimitChange> changed_listeners_;
};

// An adaptive limiter refused the call: no slot under its current limit and no room in its
// queue, or the queue wait ended. A BulkheadFullError (a concurrency limit that moves), so code
// that handles a full bulkhead handles it too. source(): the limiter's name.
class AdaptiveLimitError : public BulkheadFullError {
public:
    using BulkheadFullError::BulkheadFullError;
};

template <class Tag>
std::exception_ptr BasicAdaptiveLimiter<Tag>::error(const std::string& rest) const {
    return std::make_exception_ptr(
        AdaptiveLimitError(name_, detail::component_label("adaptive limiter", *name_) + rest));
}

using AdaptiveLimiter = BasicAdaptiveLimiter<>;

}  // namespace bulwark

#endif  // BULWARK_ADAPTIVE_LIMITER_HPP

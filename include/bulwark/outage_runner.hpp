// OutageLab: runs the library's own policies under an OutageScenario as a discrete-event
// simulation. SPDX-License-Identifier: MIT
#ifndef BULWARK_OUTAGE_RUNNER_HPP
#define BULWARK_OUTAGE_RUNNER_HPP

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <queue>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <bulwark/circuit_breaker.hpp>
#include <bulwark/clock.hpp>
#include <bulwark/context.hpp>
#include <bulwark/detail/random.hpp>
#include <bulwark/detail/sim_fiber.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/errors.hpp>
#include <bulwark/fallback_chain_options.hpp>
#include <bulwark/outage_scenario.hpp>
#include <bulwark/outage_timeline.hpp>
#include <bulwark/outcome.hpp>

namespace bulwark {

// A simulated dependency's failure (every SimErrorKind but rate_limited): what a real client
// would throw. kind() says which; the breaker, retry and fallback see it as any exception.
class SimError : public std::runtime_error {
public:
    SimError(SimErrorKind kind, std::string dependency, const std::string& what)
        : std::runtime_error(what), kind_(kind), dependency_(std::move(dependency)) {}
    SimErrorKind kind() const noexcept { return kind_; }
    const std::string& dependency() const noexcept { return dependency_; }

private:
    SimErrorKind kind_;
    std::string dependency_;
};

// A simulated dependency answered 429: a RateLimitedError (so a RetryPolicy waits at least its
// retry_after(), as it would for a real client that maps 429 to it) whose source() is the
// dependency's name. The lab counts it as a failure of kind rate_limited, not as a rejection.
class SimRateLimitedError : public RateLimitedError {
public:
    using RateLimitedError::RateLimitedError;
};

// What a simulated call that succeeded returns.
struct SimResponse {
    std::size_t dependency = 0;
    Duration latency = Duration::zero();
};

// Options of an OutageLab run.
struct SimOptions {
    // Stack of each simulated caller (one per unit of load.concurrency, made as needed). The
    // policies and the call run on it; >= 32 KiB. Sanitizer builds need more than plain ones.
    std::size_t stack_size = std::size_t{256} * 1024;
    // With background fibers (OutageLab::background, a DeliveryEngine's workers), the run goes on
    // after the load's duration until settle_when() says so, but at most this much longer; > 0.
    Duration max_drain = std::chrono::hours(1);

    void validate() const {
        if (!(max_drain > Duration::zero())) {
            detail::throw_invalid_option("SimOptions.max_drain", "must be > 0",
                                         detail::format_duration(max_drain));
        }
        if (stack_size < std::size_t{32} * 1024) {
            detail::throw_invalid_option("SimOptions.stack_size", "must be >= 32768",
                                         std::to_string(stack_size));
        }
    }
};

class OutageLab;

// The lab's clock: virtual time that moves only when the simulation does. Give it to every
// policy of the configuration (lab.clock()). sleep_for() from a simulated call suspends that call
// until the virtual time has moved by `d` while the other calls go on; wait_until() (a
// bulkhead's queue) suspends it until another call has made progress or the deadline comes.
// Outside a simulated call both advance the time like a ManualClock. now() is one atomic load;
// everything else is for the lab's thread only.
class SimClock final : public Clock {
public:
    SimClock(const SimClock&) = delete;
    SimClock& operator=(const SimClock&) = delete;

    TimePoint now() const noexcept override {
        // relaxed: the lab runs on one thread; the atomic exists for Clock's coarse cell.
        return TimePoint{Duration{now_ns_.load(std::memory_order_relaxed)}};
    }
    WallTime wall_now() const noexcept override {
        return WallTime{std::chrono::seconds(1767225600) + (now() - start_)};
    }
    void sleep_for(Duration d) override;
    void wait_until(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                    TimePoint deadline) override;

    // When the scenario's virtual time 0 is.
    TimePoint start() const noexcept { return start_; }

private:
    friend class OutageLab;
    explicit SimClock(OutageLab& lab)
        : Clock(&now_ns_),
          lab_(&lab),
          start_(TimePoint{std::chrono::hours(24)}),
          now_ns_(start_.time_since_epoch().count()) {}
    void set_ns(std::int64_t ns) noexcept { now_ns_.store(ns, std::memory_order_relaxed); }
    std::int64_t ns() const noexcept { return now_ns_.load(std::memory_order_relaxed); }

    OutageLab* lab_;
    TimePoint start_;
    std::atomic<std::int64_t> now_ns_;
};

// One simulated caller's call, handed to the configuration's call function. Call dependencies
// through it: each call suspends this caller for the dependency's latency (virtual time) and
// returns a SimResponse or throws a SimError / SimRateLimitedError. A call honours the deadline
// of the context it is given (a Timeout's): when the deadline comes first it ends just after it,
// failing with a timeout, so the Timeout replaces it with its own TimeoutError.
//   lab.run("retry", [&](bulwark::SimCall& call) {
//       return retry.try_execute([&](bulwark::Context& ctx) { return call.dependency(0, ctx); },
//                                call.context());
//   });
// Do not keep it past the call function's return. Not thread-safe (nothing in a lab is).
class SimCall {
public:
    SimCall(const SimCall&) = delete;
    SimCall& operator=(const SimCall&) = delete;

    // A context for this call (no deadline): pass it to execute(f, ctx) so that dependency(i)
    // without a context sees the deadlines the policies set on it.
    Context& context() noexcept { return ctx_; }

    // Calls dependency `index` (in the scenario's order) with the deadline of context().
    SimResponse dependency(std::size_t index) { return dependency(index, ctx_); }
    // Calls dependency `index` honouring `ctx`'s deadline.
    SimResponse dependency(std::size_t index, const Context& ctx);
    // By name; throws std::invalid_argument for an unknown name.
    SimResponse dependency(std::string_view name);
    SimResponse dependency(std::string_view name, const Context& ctx);

    // When the call arrived, in virtual time since the scenario began.
    Duration arrived() const noexcept { return arrived_; }
    // 0 for the first call of the run, then 1, 2...
    std::uint64_t id() const noexcept { return id_; }
    // Counts this call's value as a fallback's, whatever dependency gave it. Otherwise a
    // ChainResult's value is a fallback's when it did not come from the first channel the chain
    // considered, and any other success when it did not come from the first dependency the call
    // reached (or came from no dependency: a Fallback policy's value).
    void mark_fallback() noexcept { marked_fallback_ = true; }

private:
    friend class OutageLab;
    SimCall(OutageLab& lab, std::uint64_t id, Duration arrived) noexcept
        : lab_(&lab), id_(id), arrived_(arrived) {}

    static constexpr std::size_t none = std::numeric_limits<std::size_t>::max();

    OutageLab* lab_;
    std::uint64_t id_;
    Duration arrived_;
    Context ctx_;
    std::size_t first_dependency_ = none;
    std::size_t last_success_ = none;
    std::uint64_t called_mask_ = 0;
    bool marked_fallback_ = false;
};

namespace detail {
// How the lab reads the end of a call from what the call function returned: an Outcome, a
// FallbackChain's ChainResult, or any other value (a success).
struct SimCallEnd {
    bool ok = true;
    std::exception_ptr error;
    // The result says itself whether a fallback gave it (a chain does); otherwise the lab
    // judges by the dependencies the call reached.
    bool knows_fallback = false;
    bool fallback = false;
};

template <class T>
SimCallEnd sim_call_end(const Outcome<T>& o) {
    return SimCallEnd{o.has_value(), o.error()};
}
// A chain's value is a fallback's when another channel than the first one it considered gave
// it (the primary skipped by its open breaker counts).
template <class R>
SimCallEnd sim_call_end(const ChainResult<R>& r) {
    const bool fallback = r.ok() && !r.attempts().empty() && r.attempts()[0].channel != r.channel();
    return SimCallEnd{r.ok(), r.ok() ? std::exception_ptr() : r.error(), true, fallback};
}
template <class T>
SimCallEnd sim_call_end(const T&) {
    return SimCallEnd{};
}
}  // namespace detail

// The outage lab's runner: executes a configuration of the library's own policies (a pipeline, a
// FallbackChain...) under an OutageScenario, in one thread, as a discrete-event simulation on
// virtual time, and records an OutageTimeline. Each simulated caller (up to load.concurrency) is
// a fiber running the real policy code; a dependency call or a policy's wait suspends it with a
// wake-up time, and the scheduler resumes the earliest (ties in the order they were scheduled),
// so calls overlap exactly as they would with that many callers. Same scenario and seed, same
// timeline, with every compiler and standard library.
//   bulwark::OutageLab lab(scenario);
//   bulwark::CircuitBreaker breaker("provider", breaker_options, lab.clock());
//   bulwark::RetryPolicy retry(retry_options, lab.seed(1), lab.clock());
//   auto p = bulwark::pipeline(retry, breaker);
//   lab.watch(breaker);
//   bulwark::OutageTimeline t = lab.run("retry + breaker", [&](bulwark::SimCall& call) {
//       return p.try_execute([&](bulwark::Context& c) { return call.dependency(0, c); },
//                            call.context());
//   });
// One run per lab (make a lab per configuration). Policies that start threads of their own
// (Hedging, TickingClock) cannot run in it. Not thread-safe.
class OutageLab {
public:
    explicit OutageLab(OutageScenario scenario, SimOptions options = {})
        : scenario_((scenario.validate(), std::move(scenario))),
          options_((options.validate(), options)),
          clock_(*this) {
        for (std::size_t d = 0; d < scenario_.dependencies.size(); ++d) {
            dependency_rng_.emplace_back(detail::SplitMix64::at(scenario_.seed, 1 + d));
        }
        arrival_rng_.seed(detail::SplitMix64::at(scenario_.seed, 0));
        build_outages();
    }

    OutageLab(const OutageLab&) = delete;
    OutageLab& operator=(const OutageLab&) = delete;

    ~OutageLab() { release_callers(); }

    // The virtual clock: build every policy of the configuration on it.
    SimClock& clock() noexcept { return clock_; }
    // A seed for a policy's own randomness (RetryPolicy jitter, a load-balanced chain), derived
    // from the scenario's seed and `stream`, so that a run is reproducible.
    std::uint64_t seed(std::uint64_t stream = 0) const noexcept {
        return detail::SplitMix64::at(scenario_.seed, 1000000 + stream);
    }
    const OutageScenario& scenario() const noexcept { return scenario_; }

    // Records a breaker's state per bucket and every change of it (the timeline's breakers).
    // The breaker must outlive the run.
    template <class Tag>
    void watch(BasicCircuitBreaker<Tag>& breaker) {
        std::string name = breaker.name().empty() ? "breaker " + std::to_string(watched_.size() + 1)
                                                  : breaker.name();
        watch(std::move(name), [&breaker] { return breaker.state(); });
    }
    // Any state source (a FallbackChain channel's breaker, a registry's).
    void watch(std::string name, std::function<CircuitState()> state) {
        if (!state) {
            detail::throw_invalid_option("OutageLab.watch: state", "must not be empty",
                                         R"(an empty std::function for ")" + name + '"');
        }
        const CircuitState initial = state();
        watched_.push_back(Watched{std::move(name), std::move(state), initial});
    }

    // Runs `poll` on a fiber of its own from the start of the run, again `interval` (virtual
    // time) after each return, until the run ends: a DeliveryEngine's worker
    // (engine.run_due()), a health probe. It may call dependency() and wait on the lab's clock.
    // Throws std::invalid_argument for a non-positive interval or an empty function.
    void background(Duration interval, std::function<void()> poll) {
        if (!(interval > Duration::zero())) {
            detail::throw_invalid_option("OutageLab.background: interval", "must be > 0",
                                         detail::format_duration(interval));
        }
        if (!poll) {
            detail::throw_invalid_option("OutageLab.background: poll", "must not be empty",
                                         "an empty std::function");
        }
        backgrounds_.push_back(Background{interval, std::move(poll)});
    }
    // With background fibers: the run ends at the first bucket boundary after the load at which
    // every call has ended and `settled()` is true (a queue is empty), or SimOptions::max_drain
    // after the load's end.
    void settle_when(std::function<bool()> settled) { settled_ = std::move(settled); }

    // A dependency call made outside a SimCall (from a background fiber, a DeliveryEngine
    // channel): as SimCall::dependency, without a call to count retries and fallbacks for.
    // Throws std::logic_error outside the lab's run.
    SimResponse dependency(std::size_t index, const Context& ctx) {
        return call_dependency(nullptr, index, ctx);
    }
    SimResponse dependency(std::size_t index) {
        const Context ctx;
        return call_dependency(nullptr, index, ctx);
    }

    // Runs the scenario: `call(SimCall&)` is one caller's call through the configuration; it
    // returns an Outcome<T>, a ChainResult<R> or any other value (a success), and what it throws
    // is a failure. Returns the timeline. Throws std::logic_error on a second run.
    template <class F>
    OutageTimeline run(std::string configuration, F&& call) {
        using Fn = std::remove_reference_t<F>;
        static_assert(std::is_invocable<Fn&, SimCall&>::value,
                      "bulwark::OutageLab::run: the call function must take a bulwark::SimCall&");
        if (ran_) {
            detail::throw_logic_error(
                "bulwark::OutageLab::run: a lab runs once; make a new "
                "lab for each configuration");
        }
        ran_ = true;
        invoke_ = [](void* f, SimCall& c) -> detail::SimCallEnd {
            return detail::sim_call_end((*static_cast<Fn*>(f))(c));
        };
        call_fn_ = static_cast<void*>(&call);
        timeline_.configuration = std::move(configuration);
        simulate();
        release_callers();
        invoke_ = nullptr;
        call_fn_ = nullptr;
        return std::move(timeline_);
    }

private:
    friend class SimClock;
    friend class SimCall;

    static constexpr std::uint32_t arrival_target = std::numeric_limits<std::uint32_t>::max();
    static constexpr std::uint32_t boundary_target = arrival_target - 1;

    struct Event {
        std::int64_t at;
        std::uint64_t seq;
        std::uint32_t target;
        std::uint32_t token;
    };
    struct Later {
        bool operator()(const Event& a, const Event& b) const noexcept {
            // At the same time a bucket's boundary comes first: what happens at t belongs to the
            // bucket that starts at t.
            if (a.at != b.at) {
                return a.at > b.at;
            }
            if ((a.target == boundary_target) != (b.target == boundary_target)) {
                return b.target == boundary_target;
            }
            return a.seq > b.seq;
        }
    };

    struct Background {
        Duration interval;
        std::function<void()> poll;
    };

    struct Caller {
        std::unique_ptr<detail::SimFiber> fiber;
        OutageLab* lab = nullptr;
        std::uint32_t index = 0;
        std::uint32_t token = 0;
        bool busy = false;
        bool cv_waiting = false;
        bool exit = false;
        const Background* background = nullptr;
        std::int64_t work = 0;  // the arrival (ns since the start) of the call handed to it
    };

    struct Watched {
        std::string name;
        std::function<CircuitState()> state;
        CircuitState last;
    };

    struct Outage {
        std::size_t dependency;
        Duration start;
        Duration end;  // Duration::max(): never recovers
        std::uint64_t calls_before = 0;
        bool captured = false;
    };

    // ---- scheduling --------------------------------------------------------------------------

    void push(std::int64_t at, std::uint32_t target, std::uint32_t token) {
        events_.push(Event{at, seq_++, target, token});
    }

    Caller* current() noexcept { return current_; }

    // From inside a caller: suspends it until virtual time `wake` (ns since the clock's epoch).
    // When nothing else is due before `wake` the caller just moves the time and goes on: the
    // order of events is the same as through the queue, without two context switches.
    void suspend_until(std::int64_t wake) {
        Caller* self = current_;
        if (self->fiber->unwinding()) {
            self->fiber->suspend();  // throws: a fiber being unwound waits for nothing
        }
        if (wake <= clock_.ns()) {
            return;
        }
        if (cv_waiters_.empty() && (events_.empty() || wake < events_.top().at)) {
            poll_breakers();
            clock_.set_ns(wake);
            return;
        }
        push(wake, self->index, self->token);
        self->fiber->suspend();
    }

    void cv_wait(std::int64_t deadline) {
        Caller* self = current_;
        self->cv_waiting = true;
        cv_waiters_.push_back(self->index);
        if (deadline != std::numeric_limits<std::int64_t>::max()) {
            push(std::max(deadline, clock_.ns()), self->index, self->token);
        }
        self->fiber->suspend();
        self->cv_waiting = false;
    }

    void resume(Caller& c) {
        ++c.token;
        Caller* previous = current_;
        current_ = &c;
        c.fiber->resume();
        current_ = previous;
        poll_breakers();
        if (!c.cv_waiting && !cv_waiters_.empty()) {
            // Another caller made progress: a bulkhead slot may have been released. Waiters
            // re-check their condition (Clock::wait_until allows spurious wake-ups).
            for (std::uint32_t w : cv_waiters_) {
                push(clock_.ns(), w, callers_[w]->token);
            }
            cv_waiters_.clear();
        } else if (c.cv_waiting) {
            // Stays in cv_waiters_ (cv_wait put it there).
        }
    }

    static void caller_main(void* arg) {
        Caller& self = *static_cast<Caller*>(arg);
        if (self.background != nullptr) {
            self.lab->background_loop(self);
        } else {
            self.lab->caller_loop(self);
        }
    }

    void background_loop(Caller& self) {
        while (!stopping_) {
            try {
                self.background->poll();
            } catch (...) {  // NOLINT(bugprone-empty-catch): polled again after the interval
            }
            if (stopping_) {
                return;
            }
            suspend_until(clock_.ns() + self.background->interval.count());
        }
    }

    // At a bucket boundary: with background fibers, whether the run is over.
    bool settled(std::int64_t now) const {
        if (backgrounds_.empty()) {
            return false;
        }
        if (now - start_ns_ >= (scenario_.load.duration + options_.max_drain).count()) {
            return true;
        }
        return !arrival_pending_ && busy_callers_ == 0 && waiting_.empty() &&
               (!settled_ || settled_());
    }

    void caller_loop(Caller& self) {
        for (;;) {
            while (!self.busy) {
                if (self.exit) {
                    return;
                }
                self.fiber->suspend();
            }
            run_call(self.work);
            if (stopping_) {
                return;  // unwound (release_callers) through a handler that swallowed it
            }
            if (!waiting_.empty()) {
                self.work = waiting_.front();
                waiting_.pop_front();
            } else {
                self.busy = false;
                --busy_callers_;
                idle_.push_back(self.index);
            }
        }
    }

    void run_call(std::int64_t arrived_ns) {
        SimCall call(*this, calls_started_++, Duration{arrived_ns - start_ns_});
        detail::SimCallEnd end;
        try {
            end = invoke_(call_fn_, call);
        } catch (const detail::SimFiberUnwind&) {
            throw;
        } catch (...) {
            end = detail::SimCallEnd{false, std::current_exception()};
        }
        if (stopping_) {
            return;  // ended by release_callers after the timeline was closed
        }
        finish_call(call, end);
    }

    void simulate() {
        start_ns_ = clock_.start().time_since_epoch().count();
        bucket_ns_ = scenario_.bucket.count();
        timeline_.scenario = scenario_.name;
        timeline_.bucket = scenario_.bucket;
        for (const SimDependency& d : scenario_.dependencies) {
            timeline_.dependencies.push_back(d.name);
        }
        for (const Watched& w : watched_) {
            timeline_.breakers.push_back(w.name);
        }
        dependency_calls_.assign(scenario_.dependencies.size(), 0);
        open_bucket(0);
        schedule_next_arrival();
        push(start_ns_ + bucket_ns_, boundary_target, 0);
        for (const Background& b : backgrounds_) {
            auto c = std::make_unique<Caller>();
            c->lab = this;
            c->index = static_cast<std::uint32_t>(callers_.size());
            c->busy = true;
            c->background = &b;
            c->fiber =
                std::make_unique<detail::SimFiber>(options_.stack_size, &caller_main, c.get());
            push(start_ns_, c->index, c->token);
            callers_.push_back(std::move(c));
        }
        while (!events_.empty()) {
            const Event ev = events_.top();
            events_.pop();
            if (ev.target == boundary_target) {
                if (events_.empty()) {
                    break;  // nothing left to happen: every caller is idle (or stuck)
                }
                clock_.set_ns(ev.at);
                poll_breakers();
                if (settled(ev.at)) {
                    break;
                }
                close_bucket();
                open_bucket(buckets_.size());
                push(ev.at + bucket_ns_, boundary_target, 0);
                continue;
            }
            clock_.set_ns(std::max(ev.at, clock_.ns()));
            if (ev.target == arrival_target) {
                arrive();
                continue;
            }
            Caller& c = *callers_[ev.target];
            if (ev.token != c.token) {
                continue;  // superseded (a waiter woken by progress before its deadline)
            }
            if (c.cv_waiting) {
                cv_waiters_.erase(std::remove(cv_waiters_.begin(), cv_waiters_.end(), c.index),
                                  cv_waiters_.end());
            }
            resume(c);
        }
        poll_breakers();
        close_bucket();
        finish_timeline();
    }

    void schedule_next_arrival() {
        const SimLoad& load = scenario_.load;
        std::int64_t offset = 0;
        switch (load.arrival) {
            case SimArrival::constant:
                offset = constant_offset(arrivals_made_);
                break;
            case SimArrival::poisson: {
                if (arrivals_made_ > 0) {
                    // Exponential gap: -ln(1 - u) / rate, in ns.
                    const double u = arrival_rng_.next_double();
                    poisson_ns_ += -__builtin_log(1.0 - u) * 1e9 / load.rate_per_second;
                }
                offset = offset_within_load(poisson_ns_);
                break;
            }
            case SimArrival::bursts: {
                // Merges the constant stream with the bursts (a burst's calls come first on a
                // tie), keeping each stream's own counter.
                const std::int64_t c = constant_offset(constant_made_);
                const std::int64_t every = load.burst_every.count();
                const std::uint64_t burst_index = burst_made_ / load.burst_size;
                // The first at `every`; past INT64_MAX (a burst_every near the duration) none.
                const std::uint64_t most =
                    static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max() / every);
                const std::int64_t b = burst_index + 1 > most
                                           ? std::numeric_limits<std::int64_t>::max()
                                           : static_cast<std::int64_t>(burst_index + 1) * every;
                if (b <= c && b < load.duration.count()) {
                    offset = b;
                    ++burst_made_;
                } else {
                    offset = c;
                    ++constant_made_;
                }
                break;
            }
        }
        if (offset >= load.duration.count()) {
            arrival_pending_ = false;
            return;
        }
        arrival_pending_ = true;
        ++arrivals_made_;
        push(start_ns_ + offset, arrival_target, 0);
    }

    std::int64_t constant_offset(std::uint64_t k) const noexcept {
        if (k == 0) {
            return 0;  // the first call comes at the start whatever the rate (0 * inf is NaN)
        }
        return offset_within_load(static_cast<double>(k) * (1e9 / scenario_.load.rate_per_second));
    }

    // An arrival's offset (ns since the start) as an integer, or load.duration (no arrival) when
    // it falls at or past the load's end. A tiny rate (validate() allows any > 0) gives gaps past
    // INT64_MAX or infinite (0 * inf is NaN): converting those is undefined, and on x86-64 gave
    // INT64_MIN, an arrival in the past that never let the load end.
    std::int64_t offset_within_load(double ns) const noexcept {
        const std::int64_t end = scenario_.load.duration.count();
        if (!(ns < static_cast<double>(end))) {
            return end;
        }
        return static_cast<std::int64_t>(ns);
    }

    void arrive() {
        const std::int64_t now = clock_.ns();
        schedule_next_arrival();
        SimBucket& b = bucket();
        ++b.offered;
        ++summary_calls_;
        if (any_down(Duration{now - start_ns_})) {
            ++timeline_.summary.calls_offered_while_down;
        }
        if (!idle_.empty()) {
            Caller& c = *callers_[idle_.back()];
            idle_.pop_back();
            ++busy_callers_;
            c.busy = true;
            c.work = now;
            resume(c);
        } else if (caller_count_ < scenario_.load.concurrency) {
            ++caller_count_;
            ++busy_callers_;
            auto c = std::make_unique<Caller>();
            c->lab = this;
            c->index = static_cast<std::uint32_t>(callers_.size());
            c->busy = true;
            c->work = now;
            c->fiber =
                std::make_unique<detail::SimFiber>(options_.stack_size, &caller_main, c.get());
            callers_.push_back(std::move(c));
            resume(*callers_.back());
        } else {
            waiting_.push_back(now);
        }
    }

    // Ends every fiber still suspended (an idle caller, a background fiber between or inside
    // polls, a call still waiting at max_drain or for ever) by unwinding its stack, so that what
    // the call and the policies hold there (permits, locks, buffers) is released. Nothing that
    // ends now is counted: the timeline is closed.
    void release_callers() {
        stopping_ = true;
        for (auto& c : callers_) {
            c->exit = true;
            current_ = c.get();
            c->fiber->unwind();
            current_ = nullptr;
        }
        callers_.clear();
    }

    // ---- the simulated dependencies ------------------------------------------------------------

    struct Draw {
        bool ok = true;
        SimErrorKind kind = SimErrorKind::transient;
        Duration latency = Duration::zero();
        Duration retry_after = Duration::zero();
    };

    static Duration draw_latency(const SimLatency& l, detail::SplitMix64& rng) {
        switch (l.kind) {
            case SimLatencyKind::fixed:
                return l.value;
            case SimLatencyKind::uniform: {
                const double u = rng.next_double();
                const auto span = static_cast<double>((l.high - l.low).count());
                return l.low + Duration{static_cast<std::int64_t>(u * span)};
            }
            case SimLatencyKind::log_normal: {
                // Marsaglia's polar method: a standard normal from two uniforms.
                double x = 0.0;
                double s = 0.0;
                do {
                    x = 2.0 * rng.next_double() - 1.0;
                    const double y = 2.0 * rng.next_double() - 1.0;
                    s = x * x + y * y;
                } while (s >= 1.0 || s == 0.0);
                const double z = x * __builtin_sqrt(-2.0 * __builtin_log(s) / s);
                const double ns =
                    static_cast<double>(l.median.count()) * __builtin_exp(l.sigma * z);
                return Duration{ns >= 9.2e18 ? std::numeric_limits<std::int64_t>::max()
                                             : static_cast<std::int64_t>(ns)};
            }
            case SimLatencyKind::empirical: {
                const std::uint64_t i = rng.next() % l.samples.size();
                return l.samples[static_cast<std::size_t>(i)];
            }
        }
        return l.value;
    }

    Draw draw(std::size_t index, Duration t) {
        const SimDependency& dep = scenario_.dependencies[index];
        detail::SplitMix64& rng = dependency_rng_[index];
        Draw d;
        if (!dep.trace.empty()) {
            const SimTraceSample& s = trace_sample(dep, t, rng);
            d.ok = s.ok;
            d.kind = s.kind;
            d.latency = s.latency;
            d.retry_after = dep.trace_retry_after;
            return d;
        }
        const SimPhase& phase = dep.phase_at(t);
        const double u = rng.next_double();
        d.ok = !(u < phase.error_rate);
        d.kind = phase.error_kind;
        d.retry_after = phase.retry_after;
        d.latency = (!d.ok && d.kind == SimErrorKind::timeout) ? phase.hang
                                                               : draw_latency(phase.latency, rng);
        return d;
    }

    // One of the samples recorded in the second before `t`, else the latest before `t`, else
    // the first.
    static const SimTraceSample& trace_sample(const SimDependency& dep, Duration t,
                                              detail::SplitMix64& rng) {
        const auto& tr = dep.trace;
        const auto after = std::upper_bound(
            tr.begin(), tr.end(), t, [](Duration v, const SimTraceSample& s) { return v < s.at; });
        const auto from =
            std::lower_bound(tr.begin(), after, t - std::chrono::seconds(1),
                             [](const SimTraceSample& s, Duration v) { return s.at < v; });
        const std::uint64_t u = rng.next();
        if (from != after) {
            const auto n = static_cast<std::uint64_t>(after - from);
            return *(from + static_cast<std::ptrdiff_t>(u % n));
        }
        return after == tr.begin() ? tr.front() : *(after - 1);
    }

    bool down(std::size_t index, Duration t) const {
        const SimDependency& dep = scenario_.dependencies[index];
        if (dep.trace.empty()) {
            return dep.phase_at(t).error_rate >= scenario_.outage_error_rate;
        }
        for (const Outage& o : outages_) {
            if (o.dependency == index && o.start <= t && t < o.end) {
                return true;
            }
        }
        return false;
    }

    bool any_down(Duration t) const {
        for (std::size_t d = 0; d < scenario_.dependencies.size(); ++d) {
            if (down(d, t)) {
                return true;
            }
        }
        return false;
    }

    SimResponse call_dependency(SimCall* call, std::size_t index, const Context& ctx) {
        if (index >= scenario_.dependencies.size()) {
            detail::throw_invalid_option("SimCall.dependency(index): index",
                                         "must be < the number of dependencies (" +
                                             std::to_string(scenario_.dependencies.size()) + ")",
                                         std::to_string(index));
        }
        if (current_ == nullptr) {
            detail::throw_logic_error("bulwark::SimCall::dependency: called outside the lab's run");
        }
        const std::int64_t now = clock_.ns();
        const Duration t{now - start_ns_};
        Draw d = draw(index, t);
        std::int64_t end =
            now + std::min<std::int64_t>(d.latency.count(),
                                         std::numeric_limits<std::int64_t>::max() - now);
        const std::int64_t deadline = ctx.deadline_or(TimePoint::max()).time_since_epoch().count();
        bool cut = false;
        if (end > deadline) {
            // A client that honours the deadline gives up just after it: the Timeout that set it
            // sees a late result and raises its own TimeoutError.
            end = std::max(
                now, deadline < std::numeric_limits<std::int64_t>::max() ? deadline + 1 : deadline);
            cut = true;
        }
        const bool ok = d.ok && !cut;
        // Recorded at the start: the bucket in which the call reached the dependency.
        SimDependencyBucket& db = bucket().per_dependency[index];
        ++db.calls;
        (ok ? db.successes : db.failures) += 1;
        capture_outage_start(index, t);
        ++dependency_calls_[index];
        if (down(index, t)) {
            ++timeline_.summary.calls_to_failing_dependency_while_down;
        }
        if (call != nullptr) {
            const std::uint64_t bit = std::uint64_t{1} << (index % 64);
            if ((call->called_mask_ & bit) != 0) {
                ++bucket().retries;
                ++timeline_.summary.retries;
            }
            call->called_mask_ |= bit;
            if (call->first_dependency_ == SimCall::none) {
                call->first_dependency_ = index;
            }
        }
        suspend_until(end);
        const Duration took{end - now};
        if (ok) {
            if (call != nullptr) {
                call->last_success_ = index;
            }
            return SimResponse{index, took};
        }
        const std::string& name = scenario_.dependencies[index].name;
        if (cut) {
            throw SimError(SimErrorKind::timeout, name,
                           "dependency '" + name + "' did not answer before the deadline");
        }
        if (d.kind == SimErrorKind::rate_limited) {
            throw SimRateLimitedError(std::make_shared<const std::string>(name),
                                      "dependency '" + name + "' answered rate_limited",
                                      d.retry_after, clock_.now() + d.retry_after);
        }
        throw SimError(d.kind, name,
                       "dependency '" + name + "' failed (" + to_string(d.kind) + ")");
    }

    // ---- recording -----------------------------------------------------------------------------

    SimBucket& bucket() noexcept { return buckets_.back(); }

    void open_bucket(std::size_t k) {
        SimBucket b;
        b.start = Duration{static_cast<std::int64_t>(k) * bucket_ns_};
        b.per_dependency.resize(scenario_.dependencies.size());
        buckets_.push_back(std::move(b));
    }

    void close_bucket() {
        SimBucket& b = bucket();
        b.breaker_state.clear();
        for (const Watched& w : watched_) {
            b.breaker_state.push_back(static_cast<std::uint8_t>(w.last));
        }
        if (!bucket_latencies_.empty()) {
            b.p50 = Duration{percentile(bucket_latencies_, 0.50)};
            b.p99 = Duration{percentile(bucket_latencies_, 0.99)};
            bucket_latencies_.clear();
        }
    }

    // Nearest rank: the smallest value with at least p of the values at or below it.
    static std::int64_t percentile(std::vector<std::int64_t>& v, double p) {
        const double rank = p * static_cast<double>(v.size());
        auto k = static_cast<std::size_t>(rank);
        if (static_cast<double>(k) < rank) {
            ++k;
        }
        k = std::max<std::size_t>(k, 1) - 1;
        std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
        return v[k];
    }

    void poll_breakers() {
        for (std::size_t i = 0; i < watched_.size(); ++i) {
            Watched& w = watched_[i];
            const CircuitState s = w.state();
            if (s != w.last) {
                SimBreakerTransition tr;
                tr.at = Duration{clock_.ns() - start_ns_};
                tr.breaker = i;
                tr.from = static_cast<std::uint8_t>(w.last);
                tr.to = static_cast<std::uint8_t>(s);
                tr.dependency_calls = dependency_calls_;
                timeline_.transitions.push_back(std::move(tr));
                w.last = s;
            }
        }
    }

    void finish_call(SimCall& call, const detail::SimCallEnd& end) {
        const std::int64_t latency = clock_.ns() - start_ns_ - call.arrived_.count();
        SimBucket& b = bucket();
        bucket_latencies_.push_back(latency);
        all_latencies_.push_back(latency);
        OutageSummary& s = timeline_.summary;
        if (end.ok) {
            ++b.succeeded;
            ++s.succeeded;
            const bool fallback = end.knows_fallback
                                      ? end.fallback
                                      : (call.last_success_ == SimCall::none ||
                                         call.last_success_ != call.first_dependency_);
            if (call.marked_fallback_ || fallback) {
                ++b.fallbacks;
                ++s.fallbacks;
            }
            return;
        }
        classify(b, end.error);
    }

    void classify(SimBucket& b, const std::exception_ptr& error) {
        OutageSummary& s = timeline_.summary;
        const auto failed = [&](SimErrorKind kind) {
            ++b.failed;
            ++s.failed;
            ++b.failed_by_kind[static_cast<std::size_t>(kind)];
        };
        const auto rejected = [&](const char* kind, const std::string& source) {
            ++b.rejected;
            ++s.rejected;
            const std::string label = detail::component_label(kind, source);
            auto it =
                std::lower_bound(b.rejected_by_policy.begin(), b.rejected_by_policy.end(), label,
                                 [](const std::pair<std::string, std::uint64_t>& e,
                                    const std::string& v) { return e.first < v; });
            if (it != b.rejected_by_policy.end() && it->first == label) {
                ++it->second;
            } else {
                b.rejected_by_policy.emplace(it, label, 1);
            }
        };
        if (!error) {
            failed(SimErrorKind::transient);
            return;
        }
        try {
            std::rethrow_exception(error);
        } catch (const SimRateLimitedError&) {
            failed(SimErrorKind::rate_limited);
        } catch (const SimError& e) {
            failed(e.kind());
        } catch (const TimeoutError&) {
            failed(SimErrorKind::timeout);
        } catch (const CircuitOpenError& e) {
            rejected("circuit_breaker", e.source());
        } catch (const BulkheadFullError& e) {
            rejected("bulkhead", e.source());
        } catch (const RateLimitedError& e) {
            rejected("rate_limiter", e.source());
        } catch (const LoadShedError& e) {
            rejected("load_shedder", e.source());
        } catch (const RetryBudgetExhaustedError& e) {
            rejected("retry_budget", e.source());
        } catch (const NoChannelError& e) {
            rejected("fallback_chain", e.source());
        } catch (const RejectedError& e) {
            rejected("policy", e.source());
        } catch (...) {
            failed(SimErrorKind::transient);
        }
    }

    void build_outages() {
        const Duration second = std::chrono::seconds(1);
        for (std::size_t d = 0; d < scenario_.dependencies.size(); ++d) {
            const SimDependency& dep = scenario_.dependencies[d];
            std::optional<Duration> open;
            const auto close = [&](Duration at) {
                if (open) {
                    outages_.push_back(Outage{d, *open, at});
                    open.reset();
                }
            };
            if (dep.trace.empty()) {
                for (const SimPhase& p : dep.phases) {
                    const bool is_down = p.error_rate >= scenario_.outage_error_rate;
                    if (is_down && !open) {
                        open = p.start;
                    } else if (!is_down) {
                        close(p.start);
                    }
                }
            } else {
                // Whole seconds of the trace whose failure share is an outage's.
                std::size_t i = 0;
                const auto& tr = dep.trace;
                while (i < tr.size()) {
                    const std::int64_t sec = tr[i].at / second;
                    std::size_t n = 0;
                    std::size_t failures = 0;
                    const Duration from = second * sec;
                    while (i < tr.size() && tr[i].at < from + second) {
                        ++n;
                        failures += tr[i].ok ? 0U : 1U;
                        ++i;
                    }
                    const bool is_down = static_cast<double>(failures) >=
                                         scenario_.outage_error_rate * static_cast<double>(n);
                    if (is_down && !open) {
                        open = from;
                    } else if (!is_down) {
                        close(from);
                    } else if (open && i < tr.size() && tr[i].at >= from + 2 * second) {
                        close(from + second);  // a gap in the trace ends it
                    }
                }
                if (open) {
                    close(second * (tr.back().at / second + 1));
                }
            }
            if (open) {
                outages_.push_back(Outage{d, *open, Duration::max()});
            }
        }
    }

    void capture_outage_start(std::size_t index, Duration t) {
        for (Outage& o : outages_) {
            if (!o.captured && o.dependency == index && o.start <= t) {
                o.calls_before = dependency_calls_[index];
                o.captured = true;
            }
        }
    }

    void finish_timeline() {
        OutageSummary& s = timeline_.summary;
        const std::int64_t elapsed = clock_.ns() - start_ns_;
        timeline_.elapsed = Duration{elapsed};
        s.calls = summary_calls_;
        s.success_rate =
            s.calls == 0 ? 0.0 : static_cast<double>(s.succeeded) / static_cast<double>(s.calls);
        if (!all_latencies_.empty()) {
            s.p50 = Duration{percentile(all_latencies_, 0.50)};
            s.p99 = Duration{percentile(all_latencies_, 0.99)};
        }
        s.extra_load_ratio = s.calls_offered_while_down == 0
                                 ? 0.0
                                 : static_cast<double>(s.calls_to_failing_dependency_while_down) /
                                       static_cast<double>(s.calls_offered_while_down);
        for (Outage& o : outages_) {
            if (!o.captured) {
                o.calls_before = dependency_calls_[o.dependency];
            }
            timeline_.outages.push_back(SimOutage{o.dependency, o.start, o.end, o.calls_before});
            for (SimBucket& b : buckets_) {
                const Duration bucket_end = b.start + scenario_.bucket;
                if (o.start <= b.start && bucket_end <= o.end) {
                    b.per_dependency[o.dependency].down = true;
                }
            }
        }
        s.time_to_recover = time_to_recover();
        timeline_.buckets = std::move(buckets_);
    }

    std::optional<Duration> time_to_recover() const {
        // The end of the last outage that ended while calls still came.
        std::optional<Duration> recovered;
        std::size_t dependency = 0;
        for (const Outage& o : outages_) {
            if (o.end != Duration::max() && o.end < scenario_.load.duration &&
                (!recovered || o.end > *recovered)) {
                recovered = o.end;
                dependency = o.dependency;
            }
        }
        if (!recovered) {
            return std::nullopt;
        }
        const SimDependency& dep = scenario_.dependencies[dependency];
        for (const SimBucket& b : buckets_) {
            if (b.start < *recovered) {
                continue;
            }
            const std::uint64_t ended = b.succeeded + b.failed + b.rejected;
            if (ended == 0) {
                continue;
            }
            const double allowed = dep.trace.empty() ? 1.0 - dep.phase_at(b.start).error_rate
                                                     : 1.0 - scenario_.outage_error_rate;
            const double rate = static_cast<double>(b.succeeded) / static_cast<double>(ended);
            if (rate >= scenario_.recovered_fraction * allowed) {
                return b.start + scenario_.bucket - *recovered;
            }
        }
        return std::nullopt;
    }

    OutageScenario scenario_;
    SimOptions options_;
    SimClock clock_;
    std::vector<detail::SplitMix64> dependency_rng_;
    detail::SplitMix64 arrival_rng_;
    std::vector<Outage> outages_;
    std::vector<Watched> watched_;
    bool ran_ = false;

    detail::SimCallEnd (*invoke_)(void*, SimCall&) = nullptr;
    void* call_fn_ = nullptr;

    std::priority_queue<Event, std::vector<Event>, Later> events_;
    std::uint64_t seq_ = 0;
    std::vector<Background> backgrounds_;
    std::function<bool()> settled_;
    bool stopping_ = false;
    bool arrival_pending_ = false;
    std::size_t busy_callers_ = 0;
    std::size_t caller_count_ = 0;
    std::vector<std::unique_ptr<Caller>> callers_;
    std::vector<std::uint32_t> idle_;
    std::vector<std::uint32_t> cv_waiters_;
    std::deque<std::int64_t> waiting_;
    Caller* current_ = nullptr;

    std::int64_t start_ns_ = 0;
    std::int64_t bucket_ns_ = 0;
    std::uint64_t arrivals_made_ = 0;
    std::uint64_t constant_made_ = 0;
    std::uint64_t burst_made_ = 0;
    double poisson_ns_ = 0.0;
    std::uint64_t calls_started_ = 0;
    std::uint64_t summary_calls_ = 0;
    std::vector<std::uint64_t> dependency_calls_;

    std::vector<SimBucket> buckets_;
    std::vector<std::int64_t> bucket_latencies_;
    std::vector<std::int64_t> all_latencies_;
    OutageTimeline timeline_;
};

inline void SimClock::sleep_for(Duration d) {
    if (d <= Duration::zero()) {
        return;
    }
    const std::int64_t wake = detail::saturating_add(now(), d).time_since_epoch().count();
    if (lab_->current_ != nullptr) {
        lab_->suspend_until(wake);
    } else {
        set_ns(std::max(ns(), wake));
    }
}

inline void SimClock::wait_until(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                                 TimePoint deadline) {
    (void)cv;
    if (now() >= deadline) {
        return;
    }
    if (lab_->current_ == nullptr) {
        set_ns(deadline.time_since_epoch().count());
        return;
    }
    // The lock is released while this caller is suspended, as a condition variable's wait does:
    // the caller that will release the slot needs it.
    lock.unlock();
    try {
        lab_->cv_wait(deadline.time_since_epoch().count());
    } catch (...) {
        lock.lock();  // held again on the way out, as std::condition_variable::wait does
        throw;
    }
    lock.lock();
}

inline SimResponse SimCall::dependency(std::size_t index, const Context& ctx) {
    return lab_->call_dependency(this, index, ctx);
}

inline SimResponse SimCall::dependency(std::string_view name) {
    return dependency(name, ctx_);
}

inline SimResponse SimCall::dependency(std::string_view name, const Context& ctx) {
    const auto& deps = lab_->scenario_.dependencies;
    for (std::size_t i = 0; i < deps.size(); ++i) {
        if (deps[i].name == name) {
            return dependency(i, ctx);
        }
    }
    detail::throw_invalid_option("SimCall.dependency(name): name", "must name a dependency",
                                 '"' + std::string(name) + '"');
}

}  // namespace bulwark

#endif  // BULWARK_OUTAGE_RUNNER_HPP

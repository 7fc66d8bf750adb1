// Test policies: Noop and FaultInjector.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_TESTING_HPP
#define BULWARK_TESTING_HPP

#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>

#include <bulwark/clock.hpp>
#include <bulwark/context.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/random.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/events.hpp>
#include <bulwark/outcome.hpp>
#include <bulwark/policy.hpp>

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

// Circuit-breaker vocabulary: CircuitState, windows, CircuitBreakerOptions and the statistics.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_CIRCUIT_BREAKER_OPTIONS_HPP
#define BULWARK_CIRCUIT_BREAKER_OPTIONS_HPP

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <bulwark/backoff.hpp>
#include <bulwark/classify.hpp>
#include <bulwark/clock.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/errors.hpp>
#include <bulwark/time.hpp>

namespace bulwark {

// closed: calls pass and results are counted. open: calls are rejected until the break ends.
// half_open: a few probe calls pass; all succeed -> closed, one fails -> open.
// forced_open: trip() — rejects until reset(). disabled: disable() — admits everything, still
// counts, never changes state by itself until reset().
enum class CircuitState : std::uint8_t { closed, open, half_open, forced_open, disabled };

inline const char* to_string(CircuitState state) noexcept {
    switch (state) {
        case CircuitState::closed:
            return "closed";
        case CircuitState::open:
            return "open";
        case CircuitState::half_open:
            return "half_open";
        case CircuitState::forced_open:
            return "forced_open";
        case CircuitState::disabled:
            return "disabled";
    }
    return "unknown";
}

// Why the state changed.
enum class TransitionReason : std::uint8_t {
    consecutive_failures,  // failure_threshold consecutive failures
    failure_rate,          // failure_ratio reached over the window
    slow_call_rate,        // slow_call_ratio reached over the window
    break_elapsed,         // open -> half_open
    probes_succeeded,      // half_open -> closed
    probe_failed,          // half_open -> open
    probe_expired,         // half_open -> open: a probe reported nothing within half_open_max_wait
    manual,                // trip(), reset(), disable()
};

inline const char* to_string(TransitionReason reason) noexcept {
    switch (reason) {
        case TransitionReason::consecutive_failures:
            return "consecutive_failures";
        case TransitionReason::failure_rate:
            return "failure_rate";
        case TransitionReason::slow_call_rate:
            return "slow_call_rate";
        case TransitionReason::break_elapsed:
            return "break_elapsed";
        case TransitionReason::probes_succeeded:
            return "probes_succeeded";
        case TransitionReason::probe_failed:
            return "probe_failed";
        case TransitionReason::probe_expired:
            return "probe_expired";
        case TransitionReason::manual:
            return "manual";
    }
    return "unknown";
}

// A state transition, as reported to on_state_change listeners.
struct StateChange {
    std::string_view breaker;  // the breaker's name (valid while the breaker lives)
    CircuitState from = CircuitState::closed;
    CircuitState to = CircuitState::closed;
    TimePoint at{};  // on the breaker's clock
    TransitionReason reason = TransitionReason::manual;
    std::uint64_t generation = 0;  // increases by one with every transition of this breaker
    // The breaker was in shadow mode (see CircuitBreakerOptions::shadow): an open state here
    // rejects nothing, it only counts what it would have rejected.
    bool shadow = false;
};

// The last `size` recorded calls, in [1, 1000000].
struct CountWindow {
    std::uint32_t size = 100;
};

// The calls recorded in the last `length`, counted in buckets of `bucket` (so calls expire
// bucket by bucket, without a background thread).
struct TimeWindow {
    Duration length = std::chrono::seconds(60);
    Duration bucket = std::chrono::seconds(1);
};

// Options of a CircuitBreaker. Every field has a default; validate() (called by the breaker's
// constructor) throws std::invalid_argument naming the field and the value. At least one trip
// rule must be on (failure_threshold, failure_ratio or slow_call_ratio): a breaker that can
// never open is refused.
//   bulwark::CircuitBreakerOptions o;
//   o.failure_ratio = 0.5; o.window = bulwark::CountWindow{100}; o.handle<std::system_error>();
struct CircuitBreakerOptions {
    static constexpr std::uint32_t max_count_window = 1000000;
    static constexpr std::uint32_t max_half_open_calls = 10000;

    // Consecutive failures that open the breaker, whatever the window says. 0 = rule off.
    std::uint32_t failure_threshold = 5;
    // Failure rate over the window that opens it, in [0, 1]. 0 = rule off.
    double failure_ratio = 0.5;
    // No rate rule decides before the window holds this many calls. >= 1.
    std::uint32_t minimum_calls = 10;
    // What the rates are computed over: CountWindow{100} (default) or TimeWindow{60s, 1s}.
    std::variant<CountWindow, TimeWindow> window = CountWindow{};
    // A call that takes at least this long is slow. > 0. Timed only while slow_call_ratio > 0.
    Duration slow_call_duration = std::chrono::seconds(60);
    // Slow-call rate over the window that opens it, in [0, 1]. 0 = rule off (default), and then
    // the breaker reads no clock on the closed path.
    double slow_call_ratio = 0.0;
    // A call that takes longer than this counts as a failure (its result is still returned). The
    // breaker cannot stop the call; pair it with a Timeout for that. 0 = off (default).
    Duration call_timeout = Duration::zero();
    // How long the breaker stays open before it lets probes through. > 0. (recovery_timeout)
    Duration break_duration = std::chrono::seconds(60);
    // Optional: the k-th opening in a row (re-opened by a failed probe, without closing in
    // between) lasts break_duration_backoff->delay(k) instead of break_duration; closing starts
    // the count again. E.g. Backoff::exponential(60s, 2.0).max_delay(10min): 1, 2, 4, 8, 10 min.
    std::optional<Backoff> break_duration_backoff{};
    // Probes admitted in half-open; it closes when all of them succeed (success_threshold). In
    // [1, 10000].
    std::uint32_t half_open_calls = 1;
    // A probe that reports nothing within this counts as failed, so a hung probe cannot keep the
    // breaker half-open. 0 = wait for ever (default).
    Duration half_open_max_wait = Duration::zero();
    // What counts as a failure: by default every exception. See Classifier. Whatever it says,
    // a rejection by an inner policy (a RejectedError other than TimeoutError: a full bulkhead,
    // a rate limit, load shedding, an open inner breaker) is neither a success nor a failure,
    // unless handle<E>() named its type (see counted_rejections).
    Classifier classifier{};
    // The rejection types that are not set aside as inner rejections but classified like any
    // other exception (so, with the default classifier or a matching handle<E>(), they count as
    // failures). handle<E>() adds ExceptionType::of<E>() here when E is a RejectedError (or a
    // subclass), e.g. handle<BulkheadFullError>(). Empty by default.
    std::vector<ExceptionType> counted_rejections{};
    // Shadow mode: the breaker makes and records every decision, changes state, emits the same
    // events and counts the same statistics, but lets every call through. A call it would have
    // rejected runs outside the breaker: it holds no probe slot and its result is not recorded
    // (so the breaker decides exactly as an enforcing one would), and it is counted in
    // rejected and in shadow_rejections. Switch at run time with set_shadow(). false by default.
    bool shadow = false;

    // Only exceptions of type E (and subclasses) count as failures; others pass through and
    // count as successes for the breaker: they are not the dependency's fault. Naming a
    // rejection type (handle<BulkheadFullError>(), handle<RejectedError>()) makes those
    // rejections count as failures too.
    template <class E>
    CircuitBreakerOptions& handle() {
        classifier.handle<E>();
        if constexpr (std::is_base_of<RejectedError, E>::value) {
            counted_rejections.push_back(ExceptionType::of<E>());
        }
        return *this;
    }
    CircuitBreakerOptions& handle_if(std::function<bool(const std::exception_ptr&)> predicate) {
        classifier.handle_if(std::move(predicate));
        return *this;
    }
    // Returned values for which `predicate` is true count as failures (the value is still
    // returned to the caller).
    template <class T = void, class Pred>
    CircuitBreakerOptions& handle_result(Pred predicate) {
        classifier.handle_result<T>(std::move(predicate));
        return *this;
    }

    void validate() const {
        auto ratio = [](const char* field, double v) {
            if (!(v >= 0.0 && v <= 1.0)) {
                detail::throw_invalid_option(field, "must be in [0, 1]", detail::format_number(v));
            }
        };
        auto positive = [](const char* field, Duration d) {
            if (d <= Duration::zero()) {
                detail::throw_invalid_option(field, "must be > 0", detail::format_duration(d));
            }
        };
        auto non_negative = [](const char* field, Duration d) {
            if (d < Duration::zero()) {
                detail::throw_invalid_option(field, "must be >= 0", detail::format_duration(d));
            }
        };
        ratio("CircuitBreakerOptions.failure_ratio", failure_ratio);
        ratio("CircuitBreakerOptions.slow_call_ratio", slow_call_ratio);
        if (failure_threshold == 0 && failure_ratio == 0.0 && slow_call_ratio == 0.0) {
            detail::throw_invalid_option(
                "CircuitBreakerOptions.failure_threshold, failure_ratio and slow_call_ratio",
                "must not all be 0: with every trip rule off the breaker can never open (for "
                "one that never opens, call disable() or use bulwark::Noop)",
                "0, 0 and 0");
        }
        if (minimum_calls == 0) {
            detail::throw_invalid_option("CircuitBreakerOptions.minimum_calls", "must be >= 1",
                                         "0");
        }
        if (const CountWindow* count = std::get_if<CountWindow>(&window)) {
            if (count->size == 0 || count->size > max_count_window) {
                // The window keeps the positions of the failures (and slow calls) among its calls.
                detail::throw_invalid_option("CircuitBreakerOptions.window (CountWindow.size)",
                                             "must be in [1, 1000000]",
                                             std::to_string(count->size));
            }
            if (minimum_calls > count->size) {
                detail::throw_invalid_option(
                    "CircuitBreakerOptions.minimum_calls",
                    "must be <= the count window's size (" + std::to_string(count->size) + ")",
                    std::to_string(minimum_calls));
            }
        } else {
            const auto& time = std::get<TimeWindow>(window);
            positive("CircuitBreakerOptions.window (TimeWindow.length)", time.length);
            positive("CircuitBreakerOptions.window (TimeWindow.bucket)", time.bucket);
            if (time.bucket > time.length) {
                detail::throw_invalid_option(
                    "CircuitBreakerOptions.window (TimeWindow.bucket)",
                    "must be <= TimeWindow.length (" + detail::format_duration(time.length) + ")",
                    detail::format_duration(time.bucket));
            }
            if (time.length / time.bucket > 10000) {
                detail::throw_invalid_option("CircuitBreakerOptions.window (TimeWindow)",
                                             "must have at most 10000 buckets (length / bucket)",
                                             std::to_string(time.length / time.bucket));
            }
        }
        positive("CircuitBreakerOptions.slow_call_duration", slow_call_duration);
        non_negative("CircuitBreakerOptions.call_timeout", call_timeout);
        positive("CircuitBreakerOptions.break_duration", break_duration);
        if (half_open_calls == 0 || half_open_calls > max_half_open_calls) {
            // The breaker keeps a slot per probe and scans them in half-open.
            detail::throw_invalid_option("CircuitBreakerOptions.half_open_calls",
                                         "must be in [1, 10000]", std::to_string(half_open_calls));
        }
        non_negative("CircuitBreakerOptions.half_open_max_wait", half_open_max_wait);
    }
};

// What a breaker has seen. Cumulative counters cover the breaker's life, stale results (recorded
// after the breaker changed state) included; window_* and the rates cover the current window
// (emptied whenever the breaker closes), which stale results never enter.
struct CircuitBreakerStats {
    CircuitState state = CircuitState::closed;
    // results recorded: successes + failures + ignored + inner_rejections
    std::uint64_t calls = 0;
    std::uint64_t successes = 0;  // results that were not failures (ignored ones excluded)
    std::uint64_t failures = 0;   // failures, timeouts and probes that reported nothing included
    std::uint64_t ignored = 0;    // exceptions outside the handled set (successes for the rules)
    // rejections by inner policies (RejectedError other than TimeoutError, not named by
    // handle<E>()): neither successes nor failures for the rules
    std::uint64_t inner_rejections = 0;
    std::uint64_t slow = 0;      // slow calls (only while slow_call_ratio > 0)
    std::uint64_t timeouts = 0;  // calls slower than call_timeout (also counted in failures)
    std::uint64_t rejected = 0;  // calls refused while open, forced open or half-open and full
    // of those, the calls let through because the breaker is in shadow mode (their results are
    // not recorded)
    std::uint64_t shadow_rejections = 0;
    std::uint64_t opened = 0;          // times the breaker opened
    std::uint64_t expired_probes = 0;  // probes that reported nothing within half_open_max_wait
    std::uint64_t window_calls = 0;
    std::uint64_t window_failures = 0;
    std::uint64_t window_slow = 0;
    double failure_rate = 0.0;    // window_failures / window_calls (0 for an empty window)
    double slow_call_rate = 0.0;  // window_slow / window_calls
    std::uint32_t consecutive_failures = 0;
    Duration time_in_state{0};
    Duration retry_after{0};  // while open: time until probes are admitted
};

}  // namespace bulwark

#endif  // BULWARK_CIRCUIT_BREAKER_OPTIONS_HPP

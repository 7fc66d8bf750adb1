// The error vocabulary: rejection versus failure, RejectedError and every public error type.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_ERRORS_HPP
#define BULWARK_ERRORS_HPP

#include <algorithm>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include <bulwark/time.hpp>

namespace bulwark {

// Rejection and failure: what bulwark means by each.
//
// A *failure* is the dependency's: the call a policy protects threw, returned a value its
// classifier marks as failing, or was too slow (a TimeoutError; a breaker's call_timeout and slow
// calls). Failures are what breakers count against the dependency, and what retries, fallbacks
// and hedges answer.
//
// A *rejection* is a bulwark component's own refusal: it did not run the call (or gave up on
// running it again) although the dependency had not failed — an open breaker, a full bulkhead,
// a rate limit, load shedding, an empty retry budget, a chain with no channel left, a full store.
// It says nothing about the dependency's health, so a breaker never counts one against it
// (CircuitBreakerStats::inner_rejections; CircuitBreakerOptions::handle<E>() with a rejection
// type opts back in). A retry retries it like any exception its classifier accepts — by default
// every one — and waits at least its retry_after(), so retry outside a breaker waits out the
// break instead of hammering it; retry_on<E>() narrows that.
//
// Every error a policy raises in place of the call's result derives from RejectedError, so
// `catch (const bulwark::RejectedError&)` sees all of them. The one that is a failure is
// TimeoutError: the dependency did not answer in time. It is a RejectedError because a Timeout
// raises it (the caller never sees the dependency's own answer), and breakers, fallbacks and
// retries classify it like any exception the dependency threw. RetryBudgetExhaustedError is a
// rejection that stands for the failure it did not retry: a breaker judges its last_error().
//
// Every public error type, by header, with its kind and meaning. Errors of a higher layer stay
// in their layer's header (this one includes no component).
//
//   errors.hpp (this header)
//     RejectedError                       base      a policy's own error; source(), retry_after()
//     CircuitOpenError                    rejection open, forced open, or half-open and full
//     BulkheadFullError                   rejection no slot, no queue room, or the wait ended
//     RateLimitedError                    rejection no permit within the allowed wait
//     LoadShedError                       rejection shed while the service is degraded
//     RetryBudgetExhaustedError           rejection a due retry refused by the budget
//     NoChannelError                      rejection a FallbackChain had no channel left to try
//     TimeoutError                        failure   no answer by the deadline
//   adaptive_limiter.hpp
//     AdaptiveLimitError                  rejection no slot under the adaptive limit (a
//                                         BulkheadFullError)
//   throttler.hpp
//     ThrottledError                      rejection rejected locally: the backend is refusing
//   dead_letter_store.hpp
//     DeadLetterStoreFullError            rejection every stored record is pending: add refused
//     DeadLetterTooLargeError             usage     a record over a size limit (length_error)
//   file_dead_letter_store.hpp (all derive from FileDeadLetterStoreError)
//     FileDeadLetterStoreError            failure   the store's files failed; code()
//     DeadLetterJournalIoError            failure   a write or sync failed; poisoned()
//     DeadLetterReprocessInterruptedError failure   reprocess() stopped part-way; partial()
//     DeadLetterStorePoisonedError        failure   a mutation after a failed sync
//     DeadLetterJournalCorruptError       failure   damage the recovery mode refuses; offset()
//     DeadLetterJournalLockedError        usage     another store holds the directory's lock
//     DeadLetterJournalVersionError       usage     a journal of a newer format; version()
//   testing.hpp
//     InjectedFault                       failure   a FaultInjector's stand-in for the dependency's
//
// "usage" errors are neither: the caller asked for something the component cannot do. Invalid
// options and arguments throw std::invalid_argument naming the field.

// A policy refused to run the call, or gave up on it: see "rejection" above (and TimeoutError,
// the one failure among them). Catch RejectedError to treat all of them alike.
// source() names the component that raised it — the breaker's, bulkhead's, rate limiter's, load
// shedder's, timeout's or retry policy's name — and is empty for an unnamed one; it is shared, so
// copying the error never allocates.
// retry_after() is a hint: how long, from when the error was made, until the policy may admit
// again (zero when unknown). retry_at(), when set, is that moment on the rejecting policy's clock;
// it stays exact however long the error is kept (a breaker reuses one error object while the time
// left in its break is unchanged, so that rejecting does not allocate per call). Retry policies
// wait at least until then.
class RejectedError : public std::runtime_error {
public:
    explicit RejectedError(const std::string& what, Duration retry_after = Duration::zero(),
                           std::optional<TimePoint> retry_at = std::nullopt)
        : std::runtime_error(what), retry_after_(retry_after), retry_at_(retry_at) {}

    // As above, raised by the component named *source (null: unnamed).
    RejectedError(std::shared_ptr<const std::string> source, const std::string& what,
                  Duration retry_after = Duration::zero(),
                  std::optional<TimePoint> retry_at = std::nullopt)
        : std::runtime_error(what),
          source_(std::move(source)),
          retry_after_(retry_after),
          retry_at_(retry_at) {}

    // The name of the component that raised it; empty when it has none.
    const std::string& source() const noexcept { return source_ ? *source_ : empty_source(); }
    Duration retry_after() const noexcept { return retry_after_; }
    std::optional<TimePoint> retry_at() const noexcept { return retry_at_; }

private:
    static const std::string& empty_source() noexcept {
        static const std::string empty;
        return empty;
    }

    std::shared_ptr<const std::string> source_;
    Duration retry_after_;
    std::optional<TimePoint> retry_at_;
};

namespace detail {
// How long `error` asks to wait from `now`: a RejectedError's retry_at() (exact however old the
// error), else its retry_after(); zero for anything else. Retry policies and the retry queue wait
// at least this long.
inline Duration rejection_wait(const std::exception_ptr& error, TimePoint now) {
    try {
        std::rethrow_exception(error);
    } catch (const RejectedError& rejected) {
        if (const auto at = rejected.retry_at()) {
            return std::max(*at - now, Duration::zero());
        }
        return std::max(rejected.retry_after(), Duration::zero());
    } catch (...) {
        return Duration::zero();
    }
}
}  // namespace detail

namespace detail {
// "bulkhead" or "bulkhead 'db'": how a rejection's message names its component.
inline std::string component_label(const char* kind, const std::string& name) {
    return name.empty() ? std::string(kind) : std::string(kind) + " '" + name + "'";
}
}  // namespace detail

// A circuit breaker is open (or forced open, or half-open with every probe in flight) and
// rejected the call. source(): the breaker's name.
class CircuitOpenError : public RejectedError {
public:
    using RejectedError::RejectedError;
};

// A bulkhead had no free slot and no room in its queue, or the queue wait timed out (or was
// cancelled).
class BulkheadFullError : public RejectedError {
public:
    using RejectedError::RejectedError;
};

// A rate limiter had no permit for the call within the allowed wait.
class RateLimitedError : public RejectedError {
public:
    using RejectedError::RejectedError;
};

// A load shedder dropped the call because the service is degraded.
class LoadShedError : public RejectedError {
public:
    using RejectedError::RejectedError;
};

// A failure, not a rejection: the call did not produce its result before its deadline (the
// dependency was too slow). Breakers count it; retries and fallbacks answer it by default.
class TimeoutError : public RejectedError {
public:
    using RejectedError::RejectedError;
};

// A retry was due but the shared retry budget was empty. last_error() is the failure that the
// retry would have answered (a breaker classifies that one instead).
class RetryBudgetExhaustedError : public RejectedError {
public:
    RetryBudgetExhaustedError(const std::string& what, std::exception_ptr last_error)
        : RejectedError(what), last_error_(std::move(last_error)) {}
    RetryBudgetExhaustedError(std::shared_ptr<const std::string> source, const std::string& what,
                              std::exception_ptr last_error)
        : RejectedError(std::move(source), what), last_error_(std::move(last_error)) {}

    std::exception_ptr last_error() const noexcept { return last_error_; }

private:
    std::exception_ptr last_error_;
};

// No channel of a FallbackChain delivered and none left an error to report: every candidate was
// skipped by a cost or quality threshold, the chain has no enabled channel, or the call was
// cancelled (or ran past its deadline) before the first channel was tried.
class NoChannelError : public RejectedError {
public:
    using RejectedError::RejectedError;
};

}  // namespace bulwark

#endif  // BULWARK_ERRORS_HPP

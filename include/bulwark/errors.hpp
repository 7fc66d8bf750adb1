// The error vocabulary: RejectedError and every rejection a policy raises.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_ERRORS_HPP
#define BULWARK_ERRORS_HPP

#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include <bulwark/time.hpp>

namespace bulwark {

// A policy refused to run the call (or gave up on it) without the dependency failing: an open
// breaker, a full bulkhead, a rate limit, load shedding, a timeout, an exhausted retry budget.
// Catch RejectedError to treat all of them alike.
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

    Duration retry_after() const noexcept { return retry_after_; }
    std::optional<TimePoint> retry_at() const noexcept { return retry_at_; }

private:
    Duration retry_after_;
    std::optional<TimePoint> retry_at_;
};

// A circuit breaker is open (or forced open) and rejected the call.
class CircuitOpenError : public RejectedError {
public:
    using RejectedError::RejectedError;
};

// A bulkhead had no free slot and no room in its queue, or the queue wait timed out.
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

// The call did not produce its result before its deadline.
class TimeoutError : public RejectedError {
public:
    using RejectedError::RejectedError;
};

// A retry was due but the shared retry budget was empty. last_error() is the failure that the
// retry would have answered.
class RetryBudgetExhaustedError : public RejectedError {
public:
    RetryBudgetExhaustedError(const std::string& what, std::exception_ptr last_error)
        : RejectedError(what), last_error_(std::move(last_error)) {}

    std::exception_ptr last_error() const noexcept { return last_error_; }

private:
    std::exception_ptr last_error_;
};

}  // namespace bulwark

#endif  // BULWARK_ERRORS_HPP

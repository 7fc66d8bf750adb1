// bulwark — resilience policies for C++17 services.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_ERRORS_HPP
#define BULWARK_ERRORS_HPP

#include <exception>
#include <stdexcept>
#include <string>

#include <bulwark/clock.hpp>

namespace bulwark {

// A policy refused to run the call (or gave up on it) without the dependency failing: an open
// breaker, a full bulkhead, a rate limit, load shedding, a timeout, an exhausted retry budget.
// Catch RejectedError to treat all of them alike.
// retry_after() is a hint: how long until the policy may admit again (zero when unknown). Retry
// policies wait at least that long before the next attempt.
class RejectedError : public std::runtime_error {
public:
    explicit RejectedError(const std::string& what, Duration retry_after = Duration::zero())
        : std::runtime_error(what), retry_after_(retry_after) {}

    Duration retry_after() const noexcept { return retry_after_; }

private:
    Duration retry_after_;
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

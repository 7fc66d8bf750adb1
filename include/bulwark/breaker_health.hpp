// Bridge: a circuit breaker's state as a health check (HealthMonitor::add_breaker).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_BREAKER_HEALTH_HPP
#define BULWARK_BREAKER_HEALTH_HPP

#include <chrono>
#include <string>
#include <utility>

#include <bulwark/circuit_breaker.hpp>
#include <bulwark/health_check.hpp>

namespace bulwark {

// A check that reports `breaker`'s state: closed or disabled -> healthy, half_open -> degraded,
// open or forced_open -> unhealthy, with the state in the details. It reads one atomic, so it
// runs inline (timeout zero). The breaker must outlive whatever runs the check.
//   monitor.add_check(bulwark::breaker_health_check(breaker));   // what add_breaker(breaker) does
inline HealthCheck breaker_health_check(const CircuitBreaker& breaker, bool critical = false,
                                        Duration interval = std::chrono::seconds(1)) {
    HealthCheck check;
    check.name = breaker.name();
    check.probe = [b = &breaker] {
        const CircuitState state = b->state();
        HealthCheckResult r;
        switch (state) {
            case CircuitState::closed:
            case CircuitState::disabled:
                r.status = HealthStatus::healthy;
                break;
            case CircuitState::half_open:
                r.status = HealthStatus::degraded;
                r.message = "circuit half-open: probing";
                break;
            case CircuitState::open:
            case CircuitState::forced_open:
                r.status = HealthStatus::unhealthy;
                r.message = std::string("circuit ") + to_string(state);
                break;
        }
        r.details["state"] = to_string(state);
        return r;
    };
    check.interval = interval;
    check.timeout = Duration::zero();
    check.critical = critical;
    return check;
}

}  // namespace bulwark

#endif  // BULWARK_BREAKER_HEALTH_HPP

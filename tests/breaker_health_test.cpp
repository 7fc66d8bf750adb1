#include <chrono>

#include <bulwark/breaker_health.hpp>
#include <bulwark/health.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using bulwark::HealthMonitor;
using bulwark::HealthStatus;

TEST_CASE("a breaker's state becomes a check", "[health][breaker_health]") {
    bulwark::ManualClock clock;
    bulwark::CircuitBreakerOptions o;
    o.failure_threshold = 1;
    o.break_duration = 10s;
    bulwark::CircuitBreaker breaker("sms", o, clock);
    HealthMonitor monitor(clock);
    monitor.add_breaker(breaker);
    CHECK(monitor.run_now("sms").status == HealthStatus::healthy);
    CHECK(monitor.history("sms").back().details.at("state") == "closed");
    {
        auto permit = breaker.try_acquire();
        permit.record_failure();
    }
    CHECK(monitor.run_now("sms").status == HealthStatus::unhealthy);
    CHECK(monitor.status() == HealthStatus::degraded);  // not critical by default
    clock.advance(10s);
    auto probe = breaker.try_acquire();
    REQUIRE(breaker.state() == bulwark::CircuitState::half_open);
    CHECK(monitor.run_now("sms").status == HealthStatus::degraded);
    probe.record_success();
    breaker.trip();
    CHECK(monitor.run_now("sms").status == HealthStatus::unhealthy);
    breaker.disable();
    CHECK(monitor.run_now("sms").status == HealthStatus::healthy);
}

TEST_CASE("breaker_health_check names the check after the breaker and runs it inline",
          "[health][breaker_health]") {
    bulwark::ManualClock clock;
    bulwark::CircuitBreaker breaker("email", {}, clock);
    const bulwark::HealthCheck check = bulwark::breaker_health_check(breaker, true, 5s);
    CHECK(check.name == "email");
    CHECK(check.critical);
    CHECK(check.interval == 5s);
    CHECK(check.timeout == bulwark::Duration::zero());
    breaker.trip();
    CHECK(check.probe().status == HealthStatus::unhealthy);
}

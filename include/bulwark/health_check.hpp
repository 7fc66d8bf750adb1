// Health vocabulary: HealthStatus, check results and details, HealthCheck, and the HealthReport.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_HEALTH_CHECK_HPP
#define BULWARK_HEALTH_CHECK_HPP

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <bulwark/detail/json.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/detail/traits.hpp>
#include <bulwark/time.hpp>

namespace bulwark {

// What a health check found. unknown: it has not run yet.
enum class HealthStatus : std::uint8_t { unknown, healthy, degraded, unhealthy };

inline const char* to_string(HealthStatus status) noexcept {
    switch (status) {
        case HealthStatus::unknown:
            return "unknown";
        case HealthStatus::healthy:
            return "healthy";
        case HealthStatus::degraded:
            return "degraded";
        case HealthStatus::unhealthy:
            return "unhealthy";
    }
    return "unknown";
}

// Key-value details of a check result, in the order added: r.details["lag_s"] = "4".
// A small flat list rather than a std::map: results hold a handful of entries and are copied
// into history and reports.
class HealthDetails {
public:
    using value_type = std::pair<std::string, std::string>;

    // The value for `key`, added (empty) if missing.
    std::string& operator[](std::string_view key) {
        for (value_type& entry : entries_) {
            if (entry.first == key) {
                return entry.second;
            }
        }
        entries_.emplace_back(std::string(key), std::string());
        return entries_.back().second;
    }

    // The value for `key`; throws std::out_of_range if missing.
    const std::string& at(std::string_view key) const {
        for (const value_type& entry : entries_) {
            if (entry.first == key) {
                return entry.second;
            }
        }
        throw std::out_of_range("HealthDetails: no detail named '" + std::string(key) + "'");
    }

    bool contains(std::string_view key) const noexcept {
        for (const value_type& entry : entries_) {
            if (entry.first == key) {
                return true;
            }
        }
        return false;
    }

    std::size_t size() const noexcept { return entries_.size(); }
    bool empty() const noexcept { return entries_.empty(); }
    std::vector<value_type>::const_iterator begin() const noexcept { return entries_.begin(); }
    std::vector<value_type>::const_iterator end() const noexcept { return entries_.end(); }

private:
    std::vector<value_type> entries_;
};

// One run of one check. A check function may return a whole result (status, message, details);
// the monitor fills in the rest (name, critical, previous, checked_at, response_time, timed_out).
struct HealthCheckResult {
    std::string name;
    HealthStatus status = HealthStatus::unknown;
    HealthStatus previous = HealthStatus::unknown;  // the check's status before this run
    std::string message;
    HealthDetails details;
    bool critical = false;
    bool timed_out = false;    // the run overran its timeout (or was still running when due)
    TimePoint checked_at{};    // when the result was taken, on the monitor's clock
    Duration response_time{};  // how long the check ran (its timeout, if it overran)

    static HealthCheckResult healthy(std::string message = {}) {
        return make(HealthStatus::healthy, std::move(message));
    }
    static HealthCheckResult degraded(std::string message) {
        return make(HealthStatus::degraded, std::move(message));
    }
    static HealthCheckResult unhealthy(std::string message) {
        return make(HealthStatus::unhealthy, std::move(message));
    }

private:
    static HealthCheckResult make(HealthStatus status, std::string message) {
        HealthCheckResult r;
        r.status = status;
        r.message = std::move(message);
        return r;
    }
};

// The function of a check: any callable taking nothing and returning bool (true = healthy),
// HealthStatus, or HealthCheckResult. An exception it throws makes the run unhealthy, with the
// exception's message.
class HealthProbe {
public:
    HealthProbe() = default;

    template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, HealthProbe>>>
    HealthProbe(F f)  // NOLINT(google-explicit-constructor): {"db", [] { ... }} must read well
        : fn_(wrap(std::move(f))) {}

    explicit operator bool() const noexcept { return static_cast<bool>(fn_); }

    HealthCheckResult operator()() const { return fn_(); }

private:
    template <class F>
    static std::function<HealthCheckResult()> wrap(F f) {
        static_assert(std::is_invocable_v<F&>, "a health check must be callable with no arguments");
        using R = std::decay_t<std::invoke_result_t<F&>>;
        static_assert(std::is_same_v<R, bool> || std::is_same_v<R, HealthStatus> ||
                          std::is_same_v<R, HealthCheckResult>,
                      "a health check must return bool, bulwark::HealthStatus or "
                      "bulwark::HealthCheckResult");
        if (detail::is_null_callable(f)) {
            return {};
        }
        return [f = std::move(f)]() mutable -> HealthCheckResult {
            if constexpr (std::is_same_v<R, bool>) {
                return f() ? HealthCheckResult::healthy()
                           : HealthCheckResult::unhealthy("the check returned false");
            } else if constexpr (std::is_same_v<R, HealthStatus>) {
                HealthCheckResult r;
                r.status = f();
                return r;
            } else {
                return f();
            }
        };
    }

    std::function<HealthCheckResult()> fn_;
};

// A named, periodic check.
//   monitor.add_check({"database", [] { return db.ping(); }, /*interval*/ 60s, /*timeout*/ 10s,
//                      /*critical*/ true});
struct HealthCheck {
    std::string name;   // unique within a monitor; required
    HealthProbe probe;  // required
    // How often it runs. > 0. Default 30 s.
    Duration interval = std::chrono::seconds(30);
    // A run that takes longer is reported unhealthy ("timed out") and never blocks other checks
    // or stop(). 0: no timeout, and the check runs on the scheduling thread itself: only for
    // checks that cannot block (a breaker's state, a counter). >= 0. Default 10 s.
    Duration timeout = std::chrono::seconds(10);
    // An unhealthy critical check makes the whole service unhealthy (and not ready); an
    // unhealthy non-critical one makes it degraded. Default false.
    bool critical = false;
    // Results kept per check, oldest dropped first. >= 1. Default 32.
    std::size_t history = 32;

    void validate() const {
        if (name.empty()) {
            detail::throw_invalid_argument("HealthCheck.name must not be empty");
        }
        if (!probe) {
            detail::throw_invalid_argument("HealthCheck.probe of '" + name +
                                           "' is empty: give it a callable");
        }
        if (interval <= Duration::zero()) {
            detail::throw_invalid_option("HealthCheck.interval", "must be > 0",
                                         detail::format_duration(interval));
        }
        if (timeout < Duration::zero()) {
            detail::throw_invalid_option("HealthCheck.timeout", "must be >= 0",
                                         detail::format_duration(timeout));
        }
        if (history == 0) {
            detail::throw_invalid_option("HealthCheck.history", "must be >= 1", "0");
        }
    }
};

struct HealthMonitorOptions {
    // Threads that run checks with a timeout, created when needed and reused. A check that
    // overruns keeps its thread until it returns (C++ cannot stop it), so this also bounds the
    // threads that can pile up behind stuck checks: when all are busy, a due check is reported
    // unhealthy without running. A check never runs twice at once, so more threads than checks
    // are never used. >= 1. Default 4.
    std::size_t max_check_threads = 4;

    void validate() const {
        if (max_check_threads == 0) {
            detail::throw_invalid_option("HealthMonitorOptions.max_check_threads", "must be >= 1",
                                         "0");
        }
    }
};

// The overall status changed.
struct HealthStatusChange {
    HealthStatus from = HealthStatus::unknown;
    HealthStatus to = HealthStatus::unknown;
    TimePoint at{};
};

// One check in a report: its latest result and counts.
struct HealthCheckSummary {
    HealthCheckResult last;  // status unknown until the first run
    Duration interval{};
    Duration timeout{};
    std::uint64_t runs = 0;
    std::uint64_t failures = 0;      // unhealthy results, timeouts included
    std::uint64_t timeouts = 0;      // runs that overran their timeout
    std::uint64_t late_results = 0;  // results that came back after their run was reported
    std::uint32_t consecutive_failures = 0;
    bool running = false;  // a run is in flight (possibly stuck past its timeout)
};

// A snapshot of a monitor, rendered for the three usual endpoints:
//   /health/live   liveness_json():  the process is up (always true while it can answer)
//   /health/ready  readiness_json(): every critical check is healthy or degraded
//   /health        to_json():        every check in detail
struct HealthReport {
    HealthStatus status = HealthStatus::unknown;
    bool ready = false;
    TimePoint at{};
    std::vector<HealthCheckSummary> checks;

    // 200 when ready, else 503: the code a readiness endpoint answers with.
    int http_status() const noexcept { return ready ? 200 : 503; }

    // A member like readiness_json(), though liveness does not depend on the report.
    // NOLINTNEXTLINE(readability-convert-member-functions-to-static)
    std::string liveness_json() const { return R"({"status":"up"})"; }

    std::string readiness_json() const {
        detail::JsonWriter w;
        w.begin_object().field("status", ready ? "ready" : "not_ready");
        w.key("checks").begin_array();
        for (const HealthCheckSummary& c : checks) {
            if (c.last.critical) {
                w.begin_object();
                w.field("name", c.last.name).field("status", to_string(c.last.status));
                w.end_object();
            }
        }
        w.end_array().end_object();
        return w.take();
    }

    std::string to_json() const {
        detail::JsonWriter w;
        w.begin_object().field("status", to_string(status));
        w.field("live", true).field("ready", ready);
        w.key("checks").begin_array();
        for (const HealthCheckSummary& c : checks) {
            write_check(w, c);
        }
        w.end_array().end_object();
        return w.take();
    }

private:
    static double millis(Duration d) noexcept {
        return std::chrono::duration<double, std::milli>(d).count();
    }

    void write_check(detail::JsonWriter& w, const HealthCheckSummary& c) const {
        const HealthCheckResult& r = c.last;
        const bool ran = r.status != HealthStatus::unknown;
        w.begin_object();
        w.field("name", r.name).field("status", to_string(r.status));
        w.field("critical", r.critical).field("message", r.message);
        if (ran) {
            w.field("response_time_ms", millis(r.response_time));
            w.field("age_ms", millis(at - r.checked_at));
        } else {
            w.key("response_time_ms").null().key("age_ms").null();
        }
        w.field("timed_out", r.timed_out).field("running", c.running);
        w.field("runs", c.runs).field("failures", c.failures).field("timeouts", c.timeouts);
        w.field("consecutive_failures", std::uint64_t{c.consecutive_failures});
        w.key("details").begin_object();
        for (const auto& [key, value] : r.details) {
            w.field(key, value);
        }
        w.end_object();
        w.end_object();
    }
};

}  // namespace bulwark

#endif  // BULWARK_HEALTH_CHECK_HPP

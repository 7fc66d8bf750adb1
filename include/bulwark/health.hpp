// bulwark — resilience policies for C++17 services.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_HEALTH_HPP
#define BULWARK_HEALTH_HPP

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <bulwark/circuit_breaker.hpp>
#include <bulwark/clock.hpp>
#include <bulwark/detail/json.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/detail/traits.hpp>
#include <bulwark/events.hpp>

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

    std::string liveness_json() const { return "{\"status\":\"up\"}"; }

    std::string readiness_json() const {
        std::string out = "{\"status\":";
        detail::json_string(out, ready ? "ready" : "not_ready");
        out += ",\"checks\":[";
        bool first_check = true;
        for (const HealthCheckSummary& c : checks) {
            if (!c.last.critical) {
                continue;
            }
            if (!first_check) {
                out.push_back(',');
            }
            first_check = false;
            bool first = true;
            out.push_back('{');
            detail::json_key(out, "name", first);
            detail::json_string(out, c.last.name);
            detail::json_key(out, "status", first);
            detail::json_string(out, to_string(c.last.status));
            out.push_back('}');
        }
        out += "]}";
        return out;
    }

    std::string to_json() const {
        std::string out;
        bool first = true;
        out.push_back('{');
        detail::json_key(out, "status", first);
        detail::json_string(out, to_string(status));
        detail::json_key(out, "live", first);
        out += "true";
        detail::json_key(out, "ready", first);
        out += ready ? "true" : "false";
        detail::json_key(out, "checks", first);
        out.push_back('[');
        for (std::size_t i = 0; i < checks.size(); ++i) {
            if (i != 0) {
                out.push_back(',');
            }
            append_check(out, checks[i]);
        }
        out += "]}";
        return out;
    }

private:
    static double millis(Duration d) noexcept {
        return std::chrono::duration<double, std::milli>(d).count();
    }

    void append_check(std::string& out, const HealthCheckSummary& c) const {
        const HealthCheckResult& r = c.last;
        const bool ran = r.status != HealthStatus::unknown;
        bool first = true;
        out.push_back('{');
        detail::json_key(out, "name", first);
        detail::json_string(out, r.name);
        detail::json_key(out, "status", first);
        detail::json_string(out, to_string(r.status));
        detail::json_key(out, "critical", first);
        out += r.critical ? "true" : "false";
        detail::json_key(out, "message", first);
        detail::json_string(out, r.message);
        detail::json_key(out, "response_time_ms", first);
        if (ran) {
            detail::json_number(out, millis(r.response_time));
        } else {
            out += "null";
        }
        detail::json_key(out, "age_ms", first);
        if (ran) {
            detail::json_number(out, millis(at - r.checked_at));
        } else {
            out += "null";
        }
        detail::json_key(out, "timed_out", first);
        out += r.timed_out ? "true" : "false";
        detail::json_key(out, "running", first);
        out += c.running ? "true" : "false";
        detail::json_key(out, "runs", first);
        detail::json_number(out, c.runs);
        detail::json_key(out, "failures", first);
        detail::json_number(out, c.failures);
        detail::json_key(out, "timeouts", first);
        detail::json_number(out, c.timeouts);
        detail::json_key(out, "consecutive_failures", first);
        detail::json_number(out, std::uint64_t{c.consecutive_failures});
        detail::json_key(out, "details", first);
        out.push_back('{');
        bool first_detail = true;
        for (const auto& [key, value] : r.details) {
            detail::json_key(out, key, first_detail);
            detail::json_string(out, value);
        }
        out += "}}";
    }
};

namespace detail {

struct HealthCheckState {
    HealthCheckState(const HealthCheckState&) = delete;  // `last` refers into this object
    HealthCheckState& operator=(const HealthCheckState&) = delete;
    explicit HealthCheckState(HealthCheck c) : check(std::move(c)) {
        last.name = check.name;
        last.critical = check.critical;
        ring.reserve(std::min<std::size_t>(check.history, 64));
    }

    const HealthCheck check;  // immutable once added: runner threads read it without the lock
    // Everything below is guarded by the core's mutex.
    HealthCheckSummary summary;
    HealthCheckResult& last = summary.last;
    std::vector<HealthCheckResult> ring;  // history, at most check.history entries
    std::size_t ring_next = 0;            // where the next entry goes once the ring is full
    TimePoint next_due{};
    bool in_flight = false;
    bool timeout_reported = false;  // the run in flight has been reported as timed out
    bool completing = false;        // its result is recorded; its listeners are running
    std::uint64_t run_id = 0;       // identifies the run in flight (or the last one)
    TimePoint deadline{};           // of the run in flight, when it has a timeout
    bool removed = false;
};

// Events gathered under the lock and emitted after it is released.
struct HealthPending {
    std::vector<HealthCheckResult> runs;
    std::vector<HealthCheckResult> changes;
    std::optional<HealthStatusChange> overall;
};

// The state shared by a monitor, its scheduler and its check threads. Check threads co-own it,
// so one stuck in a user's check after the monitor is gone touches nothing that was freed.
// A class template only so that its code is compiled in translation units that use it.
template <class Tag = void>
class BasicHealthCore : public std::enable_shared_from_this<BasicHealthCore<Tag>> {
public:
    BasicHealthCore(HealthMonitorOptions options, Clock& clock)
        : options_(options), clock_(&clock) {}

    Clock& clock() const noexcept { return *clock_; }

    void add(HealthCheck check) {
        check.validate();
        auto state = std::make_shared<HealthCheckState>(std::move(check));
        HealthPending pending;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            for (const auto& s : checks_) {
                if (s->check.name == state->check.name) {
                    throw_invalid_argument("HealthMonitor: a check named '" + s->check.name +
                                           "' already exists");
                }
            }
            state->next_due = clock_->now();  // first run at the next scheduling pass
            checks_.push_back(std::move(state));
            update_overall(pending);
            cv_.notify_all();
        }
        emit(pending);
    }

    bool remove(std::string_view name) {
        HealthPending pending;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            auto it = std::find_if(checks_.begin(), checks_.end(),
                                   [&](const auto& s) { return s->check.name == name; });
            if (it == checks_.end()) {
                return false;
            }
            (*it)->removed = true;
            checks_.erase(it);
            update_overall(pending);
        }
        emit(pending);
        return true;
    }

    // A run of a check: the check and the run's id.
    using Run = std::pair<std::shared_ptr<HealthCheckState>, std::uint64_t>;

    // One scheduling pass: reports overrun runs and starts the due checks — or, with `only`,
    // that one check whatever its schedule (a run of it already in flight is returned to wait
    // on instead). Returns the runs started on check threads, for wait_for(); runs the inline
    // ones itself, adding their number to `*inline_count` if given.
    std::vector<Run> pass(std::string_view only = {}, std::size_t* inline_count = nullptr) {
        std::vector<Run> started;
        std::vector<Run> inline_runs;
        HealthPending pending;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            const TimePoint now = clock_->now();
            expire(now, pending);
            if (only.empty()) {
                for (const auto& s : checks_) {
                    if (now >= s->next_due) {
                        launch(s, now, started, inline_runs, pending);
                    }
                }
            } else if (const auto state = find(only); state->in_flight) {
                started.emplace_back(state, state->run_id);
            } else {
                launch(state, now, started, inline_runs, pending);
            }
        }
        emit(pending);
        for (auto& [state, id] : inline_runs) {
            execute(state, id, clock_->now());
        }
        if (inline_count != nullptr) {
            *inline_count += inline_runs.size();
        }
        return started;
    }

    // Runs one check now (or waits for its run in flight) and returns its result.
    HealthCheckResult run_now(std::string_view name) {
        wait_for(pass(name));
        std::lock_guard<std::mutex> lock(mutex_);
        return find(name)->last;
    }

    // Blocks until each run has finished or has been reported as timed out.
    void wait_for(const std::vector<Run>& waited) {
        HealthPending pending;
        {
            std::unique_lock<std::mutex> lock(mutex_);
            for (;;) {
                const TimePoint now = clock_->now();
                expire(now, pending);
                bool waiting = false;
                std::optional<TimePoint> wake;  // none while only inline runs are pending
                for (const auto& [s, id] : waited) {
                    if (s->in_flight && s->run_id == id &&
                        (!s->timeout_reported || s->completing)) {
                        waiting = true;
                        if (!s->completing && s->check.timeout > Duration::zero() &&
                            (!wake || s->deadline < *wake)) {
                            wake = s->deadline;
                        }
                    }
                }
                if (!waiting) {
                    break;
                }
                if (wake) {
                    clock_->wait_until(cv_, lock, *wake);
                } else {
                    cv_.wait(lock);
                }
            }
        }
        emit(pending);
    }

    // The scheduler thread's loop: a pass, then a wait until the next due time or deadline.
    void schedule_loop() {
        std::unique_lock<std::mutex> lock(mutex_);
        while (!stop_requested_) {
            lock.unlock();
            pass();
            lock.lock();
            if (stop_requested_) {
                break;
            }
            std::optional<TimePoint> wake;
            for (const auto& s : checks_) {
                TimePoint t = s->next_due;
                // Only a run on a check thread has a deadline to watch; inline and completing
                // runs end with finish(), which notifies.
                if (s->in_flight && s->check.timeout > Duration::zero() && !s->timeout_reported &&
                    !s->completing && s->deadline < t) {
                    t = s->deadline;
                }
                if (!wake || t < *wake) {
                    wake = t;
                }
            }
            if (!wake) {
                // No checks: sleep until one is added or stop() (both notify).
                cv_.wait(lock);
            } else if (clock_->now() < *wake) {
                clock_->wait_until(cv_, lock, *wake);
            }
        }
    }

    void request_stop(bool stop) {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_requested_ = stop;
        cv_.notify_all();
    }

    // Ends the idle check threads and waits for those still running a check, until their run
    // finishes or is past its timeout; threads stuck beyond that are left to finish on their
    // own (they co-own this state).
    void shut_down() {
        std::unique_lock<std::mutex> lock(mutex_);
        shutdown_ = true;
        for (const Run& task : tasks_) {
            finish(task.first);  // never started: not in flight after all
        }
        tasks_.clear();
        cv_.notify_all();
        HealthPending ignored;
        for (;;) {
            expire(clock_->now(), ignored);
            std::size_t stuck = 0;
            std::optional<TimePoint> wake;
            for (const auto& s : flying_) {
                if (s->timeout_reported && !s->completing) {
                    ++stuck;
                } else if (!s->completing && (!wake || s->deadline < *wake)) {
                    // A completing run needs no wake-up: finish() notifies. (Its deadline may
                    // have passed, and waiting until it would spin with the lock held.)
                    wake = s->deadline;
                }
            }
            if (threads_ <= stuck) {
                break;
            }
            if (wake) {
                clock_->wait_until(cv_, lock, *wake);
            } else {
                cv_.wait(lock);
            }
        }
    }

    HealthStatus status() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return overall_;
    }

    HealthStatus status(std::string_view name) const {
        std::lock_guard<std::mutex> lock(mutex_);
        return find(name)->last.status;
    }

    std::vector<HealthCheckResult> history(std::string_view name) const {
        std::lock_guard<std::mutex> lock(mutex_);
        const auto state = find(name);
        std::vector<HealthCheckResult> out;
        out.reserve(state->ring.size());
        const std::size_t n = state->ring.size();
        const std::size_t start = n < state->check.history ? 0 : state->ring_next;
        for (std::size_t i = 0; i < n; ++i) {
            out.push_back(state->ring[(start + i) % n]);
        }
        return out;
    }

    std::vector<std::string> names() const {
        std::lock_guard<std::mutex> lock(mutex_);
        std::vector<std::string> out;
        out.reserve(checks_.size());
        for (const auto& s : checks_) {
            out.push_back(s->check.name);
        }
        return out;
    }

    HealthReport report() const {
        HealthReport r;
        std::lock_guard<std::mutex> lock(mutex_);
        r.at = clock_->now();
        r.status = overall_;
        r.ready = true;
        r.checks.reserve(checks_.size());
        for (const auto& s : checks_) {
            r.checks.push_back(s->summary);
            r.checks.back().running = s->in_flight;
            if (s->check.critical && (s->last.status == HealthStatus::unhealthy ||
                                      s->last.status == HealthStatus::unknown)) {
                r.ready = false;
            }
        }
        return r;
    }

    Listeners<HealthCheckResult> runs;
    Listeners<HealthCheckResult> changes;
    Listeners<HealthStatusChange> overall_changes;

private:
    std::shared_ptr<HealthCheckState> find(std::string_view name) const {
        for (const auto& s : checks_) {
            if (s->check.name == name) {
                return s;
            }
        }
        throw_invalid_argument("HealthMonitor: no check named '" + std::string(name) + "'");
    }

    // Under mutex_. Starts a run of `s` (or, if its last run is still in flight, reports it as
    // still running). Inline checks (timeout 0) are handed back to run outside the lock.
    void launch(const std::shared_ptr<HealthCheckState>& s, TimePoint now,
                std::vector<Run>& started, std::vector<Run>& inline_runs, HealthPending& pending) {
        s->next_due = now + s->check.interval;
        if (s->in_flight) {
            if (s->timeout_reported) {
                HealthCheckResult r = HealthCheckResult::unhealthy(
                    "still running " + detail::format_duration(now - s->deadline) +
                    " after its timeout of " + detail::format_duration(s->check.timeout));
                r.timed_out = true;
                r.checked_at = now;
                r.response_time = now - (s->deadline - s->check.timeout);
                record(*s, std::move(r), pending);
            }
            return;
        }
        s->in_flight = true;
        s->timeout_reported = false;
        const std::uint64_t id = ++s->run_id;
        if (s->check.timeout == Duration::zero()) {
            inline_runs.emplace_back(s, id);
            return;
        }
        s->deadline = now + s->check.timeout;
        if (!post(s, id)) {
            s->in_flight = false;
            HealthCheckResult r = HealthCheckResult::unhealthy(
                "not run: all " + std::to_string(options_.max_check_threads) +
                " check threads are busy (stuck checks?)");
            r.checked_at = now;
            record(*s, std::move(r), pending);
            return;
        }
        started.emplace_back(s, id);
    }

    // Under mutex_. Hands the run to a check thread, starting one if none is idle. False when
    // max_check_threads are all busy or a thread cannot be started.
    bool post(const std::shared_ptr<HealthCheckState>& s, std::uint64_t id) {
        if (shutdown_) {
            return false;
        }
        if (busy_ >= threads_) {
            if (threads_ >= options_.max_check_threads) {
                return false;
            }
            try {
                std::thread([core = this->shared_from_this()] { core->worker(); }).detach();
            } catch (const std::system_error&) {
                return false;
            }
            ++threads_;
        }
        ++busy_;
        tasks_.emplace_back(s, id);
        flying_.push_back(s);
        cv_.notify_all();
        return true;
    }

    void worker() {
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
            cv_.wait(lock, [&] { return shutdown_ || !tasks_.empty(); });
            if (tasks_.empty()) {
                break;
            }
            Run task = std::move(tasks_.front());
            tasks_.erase(tasks_.begin());
            const TimePoint start = clock_->now();
            lock.unlock();
            execute(task.first, task.second, start);
            lock.lock();
        }
        --threads_;
        cv_.notify_all();
    }

    // Runs the check (outside the lock) and records its result unless the run was already
    // reported as timed out. A run that returns after the monitor shut down touches neither the
    // clock nor the listeners: they may be gone.
    void execute(const std::shared_ptr<HealthCheckState>& s, std::uint64_t id, TimePoint start) {
        HealthCheckResult r;
        try {
            r = s->check.probe();
        } catch (const std::exception& e) {
            r = HealthCheckResult::unhealthy(std::string("the check threw: ") + e.what());
        } catch (...) {
            r = HealthCheckResult::unhealthy("the check threw a non-standard exception");
        }
        if (r.status == HealthStatus::unknown) {
            r.status = HealthStatus::unhealthy;
            if (r.message.empty()) {
                r.message = "the check reported no status";
            }
        }
        HealthPending pending;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (!s->in_flight || s->run_id != id) {
                return;
            }
            if (shutdown_) {
                finish(s);
                return;
            }
            const TimePoint end = clock_->now();
            if (s->timeout_reported) {
                ++s->summary.late_results;
                finish(s);
                return;
            }
            if (s->check.timeout > Duration::zero() && end >= s->deadline) {
                report_timeout(*s, pending);
            } else {
                r.checked_at = end;
                r.response_time = end - start;
                record(*s, std::move(r), pending);
            }
            // The run ends only after its listeners ran, so that run_now() and run_due() return
            // with them done; meanwhile expire() leaves it alone.
            s->completing = true;
        }
        emit(pending);
        std::lock_guard<std::mutex> lock(mutex_);
        finish(s);
    }

    // Under mutex_: the run of `s` in flight has ended.
    void finish(const std::shared_ptr<HealthCheckState>& s) {
        s->in_flight = false;
        s->completing = false;
        if (s->check.timeout > Duration::zero()) {
            flying_.erase(std::find(flying_.begin(), flying_.end(), s));
            --busy_;  // here, not after execute() returns: the thread is free for the next run
        }
        cv_.notify_all();
    }

    // Under mutex_: reports every run on a check thread that is past its deadline as timed out.
    void expire(TimePoint now, HealthPending& pending) {
        for (const auto& s : flying_) {
            if (!s->timeout_reported && !s->completing && now >= s->deadline) {
                report_timeout(*s, pending);
            }
        }
    }

    void report_timeout(HealthCheckState& s, HealthPending& pending) {
        s.timeout_reported = true;
        ++s.summary.timeouts;
        HealthCheckResult r = HealthCheckResult::unhealthy(
            "timed out after " + detail::format_duration(s.check.timeout));
        r.timed_out = true;
        r.checked_at = s.deadline;
        r.response_time = s.check.timeout;
        record(s, std::move(r), pending);
    }

    // Under mutex_: makes `r` the check's latest result.
    void record(HealthCheckState& s, HealthCheckResult r, HealthPending& pending) {
        r.name = s.check.name;
        r.critical = s.check.critical;
        r.previous = s.last.status;
        HealthCheckSummary& sum = s.summary;
        ++sum.runs;
        if (r.status == HealthStatus::unhealthy) {
            ++sum.failures;
            ++sum.consecutive_failures;
        } else {
            sum.consecutive_failures = 0;
        }
        if (s.ring.size() < s.check.history) {
            s.ring.push_back(r);
        } else {
            s.ring[s.ring_next] = r;
            s.ring_next = (s.ring_next + 1) % s.check.history;
        }
        const bool changed = r.status != s.last.status;
        s.last = r;
        if (s.removed) {
            return;
        }
        if (!runs.empty()) {
            pending.runs.push_back(r);
        }
        if (changed) {
            pending.changes.push_back(std::move(r));
            update_overall(pending);
        }
    }

    void update_overall(HealthPending& pending) {
        const HealthStatus now_overall = compute_overall();
        if (now_overall != overall_) {
            const HealthStatus from = pending.overall ? pending.overall->from : overall_;
            pending.overall = HealthStatusChange{from, now_overall, clock_->now()};
            overall_ = now_overall;
        }
    }

    // Unhealthy if a critical check is unhealthy; else unknown while any check has not run;
    // else degraded if any check is degraded or a non-critical one unhealthy; else healthy.
    HealthStatus compute_overall() const {
        bool unknown = false;
        bool degraded = false;
        for (const auto& s : checks_) {
            switch (s->last.status) {
                case HealthStatus::unhealthy:
                    if (s->check.critical) {
                        return HealthStatus::unhealthy;
                    }
                    degraded = true;
                    break;
                case HealthStatus::degraded:
                    degraded = true;
                    break;
                case HealthStatus::unknown:
                    unknown = true;
                    break;
                case HealthStatus::healthy:
                    break;
            }
        }
        if (unknown) {
            return HealthStatus::unknown;
        }
        return degraded ? HealthStatus::degraded : HealthStatus::healthy;
    }

    void emit(HealthPending& pending) {
        for (const HealthCheckResult& r : pending.runs) {
            runs.emit(r);
        }
        for (const HealthCheckResult& r : pending.changes) {
            changes.emit(r);
        }
        if (pending.overall && pending.overall->from != pending.overall->to) {
            overall_changes.emit(*pending.overall);
        }
    }

    const HealthMonitorOptions options_;
    Clock* const clock_;
    mutable std::mutex mutex_;
    std::condition_variable cv_;  // completions, new checks, stop, thread exits, new tasks
    // All guarded by mutex_.
    std::vector<std::shared_ptr<HealthCheckState>> checks_;  // in the order added
    std::vector<Run> tasks_;                                 // runs waiting for a check thread
    std::vector<std::shared_ptr<HealthCheckState>> flying_;  // checks with a run on a thread
    std::size_t threads_ = 0;                                // check threads alive
    std::size_t busy_ = 0;  // runs posted and not finished (queued or running)
    HealthStatus overall_ = HealthStatus::healthy;
    bool stop_requested_ = false;
    bool shutdown_ = false;
};

}  // namespace detail

// Runs health checks on a schedule, keeps their history, tells listeners when a check's status
// changes and renders reports for liveness, readiness and detailed endpoints.
//   bulwark::HealthMonitor monitor;                        // optional options and clock
//   monitor.add_check({"database", [] { return db.ping(); }, 60s, 10s, /*critical*/ true});
//   monitor.on_change([](const bulwark::HealthCheckResult& r) { alert(r); });
//   monitor.start();                      // one scheduler thread; or call run_due() yourself
//   std::string json = monitor.report().to_json();
// Checks with a timeout run on a few reusable check threads (HealthMonitorOptions); the
// scheduler never waits for them, so a stuck check delays no other check and never blocks
// stop(). An overrunning check is reported unhealthy when its timeout passes; it keeps running
// until it returns (C++ cannot kill it), is not started again meanwhile, and its late result is
// discarded (counted in late_results). Its captures must therefore outlive it: capture what it
// uses by value or shared_ptr if the monitor may be destroyed first.
// Thread-safe: every member may be called from any thread. Listeners run outside the lock, on
// the thread that recorded the result (scheduler, check thread or run_now()/run_due() caller).
// HealthMonitor is BasicHealthMonitor<>: a class template only so that its code is compiled
// in translation units that use it (the umbrella header stays cheap); use the alias.
template <class Tag = void>
class BasicHealthMonitor {
public:
    explicit BasicHealthMonitor(Clock& clock = default_clock())
        : BasicHealthMonitor(HealthMonitorOptions{}, clock) {}

    explicit BasicHealthMonitor(HealthMonitorOptions options, Clock& clock = default_clock())
        : core_((options.validate(), std::make_shared<Core>(options, clock))) {}

    BasicHealthMonitor(const BasicHealthMonitor&) = delete;
    BasicHealthMonitor& operator=(const BasicHealthMonitor&) = delete;

    // Stops the scheduler, ends idle check threads and waits for running checks until they
    // return or their timeout passes; a check still stuck after that is left to finish on its
    // own thread.
    ~BasicHealthMonitor() {
        stop();
        core_->shut_down();
    }

    // Throws std::invalid_argument for invalid fields (see HealthCheck) or a duplicate name.
    // The check first runs at the next scheduling pass.
    void add_check(HealthCheck check) { core_->add(std::move(check)); }

    // False if there is no such check. A run in flight finishes; its result is dropped.
    bool remove_check(std::string_view name) { return core_->remove(name); }

    // A breaker's state as a check, named after the breaker: closed or disabled -> healthy,
    // half_open -> degraded, open or forced_open -> unhealthy. It reads one atomic, so it runs
    // inline (no timeout). The breaker must outlive the monitor (or remove_check() it).
    void add_breaker(const CircuitBreaker& breaker, bool critical = false,
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
        add_check(std::move(check));
    }

    // Called once per change of a check's status (the first run included: unknown -> x), not on
    // every run. Throws std::invalid_argument for an empty listener.
    ListenerId on_change(std::function<void(const HealthCheckResult&)> listener) {
        return core_->changes.add(std::move(listener));
    }
    Listeners<HealthCheckResult>& changes() noexcept { return core_->changes; }
    // Every recorded result, changed or not.
    Listeners<HealthCheckResult>& runs() noexcept { return core_->runs; }
    // Changes of the overall status.
    Listeners<HealthStatusChange>& overall_changes() noexcept { return core_->overall_changes; }

    // Starts the scheduler thread (once; a second start() does nothing).
    void start() {
        std::lock_guard<std::mutex> lock(thread_mutex_);
        if (scheduler_.joinable()) {
            return;
        }
        core_->request_stop(false);
        scheduler_ = std::thread([core = core_] { core->schedule_loop(); });
    }

    // Stops the scheduler thread and returns once it has: within one scheduling pass, since the
    // scheduler never waits for a check with a timeout. Checks in flight go on; start() again
    // resumes.
    void stop() {
        std::lock_guard<std::mutex> lock(thread_mutex_);
        if (!scheduler_.joinable()) {
            return;
        }
        core_->request_stop(true);
        scheduler_.join();
    }

    bool running() const {
        std::lock_guard<std::mutex> lock(thread_mutex_);
        return scheduler_.joinable();
    }

    // For tests and for users with their own event loop: starts every check that is due and
    // waits until each has a result or has timed out. Returns how many were started.
    std::size_t run_due() {
        std::size_t count = 0;
        const auto started = core_->pass({}, &count);
        core_->wait_for(started);
        return count + started.size();
    }

    // Runs one check now, whatever its schedule (or waits for its run in flight), and returns
    // its result. Throws std::invalid_argument for an unknown name.
    HealthCheckResult run_now(std::string_view name) { return core_->run_now(name); }

    // The overall status: unhealthy if a critical check is unhealthy; else unknown while a check
    // has not run yet; else degraded if any check is degraded or a non-critical one unhealthy;
    // else healthy (also with no checks).
    HealthStatus status() const { return core_->status(); }
    // One check's latest status. Throws std::invalid_argument for an unknown name.
    HealthStatus status(std::string_view name) const { return core_->status(name); }
    // One check's kept results, oldest first.
    std::vector<HealthCheckResult> history(std::string_view name) const {
        return core_->history(name);
    }
    std::vector<std::string> names() const { return core_->names(); }
    HealthReport report() const { return core_->report(); }

private:
    using Core = detail::BasicHealthCore<Tag>;

    std::shared_ptr<Core> core_;
    mutable std::mutex thread_mutex_;
    std::thread scheduler_;  // guarded by thread_mutex_
};

using HealthMonitor = BasicHealthMonitor<>;

}  // namespace bulwark

#endif  // BULWARK_HEALTH_HPP

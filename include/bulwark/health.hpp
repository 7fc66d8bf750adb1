// HealthMonitor: scheduled health checks with timeouts, history, listeners and reports.
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
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <bulwark/clock.hpp>
#include <bulwark/detail/health_core.hpp>
#include <bulwark/detail/json.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/detail/traits.hpp>
#include <bulwark/events.hpp>
#include <bulwark/health_check.hpp>

namespace bulwark {

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
    // Needs <bulwark/breaker_health.hpp> (the umbrella has it), which joins the two layers: a
    // monitor does not depend on the breaker, and the check is made by breaker_health_check(),
    // found by argument-dependent lookup for any breaker type that provides one.
    template <class Breaker>
    void add_breaker(const Breaker& breaker, bool critical = false,
                     Duration interval = std::chrono::seconds(1)) {
        add_check(breaker_health_check(breaker, critical, interval));
    }

    // Called once per change of a check's status (the first run included: unknown -> x), not on
    // every run. Each on_xxx() returns the id that remove_listener() takes and throws
    // std::invalid_argument for an empty listener.
    ListenerId on_change(std::function<void(const HealthCheckResult&)> listener) {
        return core_->changes.add(std::move(listener));
    }
    // Called with every recorded result, changed or not.
    ListenerId on_run(std::function<void(const HealthCheckResult&)> listener) {
        return core_->runs.add(std::move(listener));
    }
    // Called on every change of the overall status.
    ListenerId on_overall_change(std::function<void(const HealthStatusChange&)> listener) {
        return core_->overall_changes.add(std::move(listener));
    }
    // Stops calling a listener added by any on_xxx(); false if the id is unknown here or
    // already removed.
    bool remove_listener(ListenerId id) noexcept {
        return core_->changes.remove(id) || core_->runs.remove(id) ||
               core_->overall_changes.remove(id);
    }

    // Starts the scheduler thread (once; a second start() does nothing).
    void start() {
        detail::LockGuard lock(thread_mutex_);
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
        detail::LockGuard lock(thread_mutex_);
        if (!scheduler_.joinable()) {
            return;
        }
        core_->request_stop(true);
        scheduler_.join();
    }

    bool running() const {
        detail::LockGuard lock(thread_mutex_);
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
    mutable detail::Mutex thread_mutex_;
    std::thread scheduler_ BULWARK_GUARDED_BY(thread_mutex_);
};

using HealthMonitor = BasicHealthMonitor<>;

}  // namespace bulwark

#endif  // BULWARK_HEALTH_HPP

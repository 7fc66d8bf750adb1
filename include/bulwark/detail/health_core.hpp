// The health monitor's scheduler: check state, due times, check threads and timeouts (private).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_HEALTH_CORE_HPP
#define BULWARK_DETAIL_HEALTH_CORE_HPP

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <bulwark/clock.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/events.hpp>
#include <bulwark/health_check.hpp>

namespace bulwark {

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
            detail::LockGuard lock(mutex_);
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
            detail::LockGuard lock(mutex_);
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
            detail::LockGuard lock(mutex_);
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
        detail::LockGuard lock(mutex_);
        return find(name)->last;
    }

    // Blocks until each run has finished or has been reported as timed out.
    void wait_for(const std::vector<Run>& waited) {
        HealthPending pending;
        {
            detail::UniqueLock lock(mutex_);
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
                    clock_->wait_until(cv_, lock.native(), *wake);
                } else {
                    cv_.wait(lock.native());
                }
            }
        }
        emit(pending);
    }

    // The scheduler thread's loop: a pass, then a wait until the next due time or deadline.
    void schedule_loop() {
        detail::UniqueLock lock(mutex_);
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
                cv_.wait(lock.native());
            } else if (clock_->now() < *wake) {
                clock_->wait_until(cv_, lock.native(), *wake);
            }
        }
    }

    void request_stop(bool stop) {
        detail::LockGuard lock(mutex_);
        stop_requested_ = stop;
        cv_.notify_all();
    }

    // Ends the idle check threads and waits for those still running a check, until their run
    // finishes or is past its timeout; threads stuck beyond that are left to finish on their
    // own (they co-own this state).
    void shut_down() {
        detail::UniqueLock lock(mutex_);
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
                clock_->wait_until(cv_, lock.native(), *wake);
            } else {
                cv_.wait(lock.native());
            }
        }
    }

    HealthStatus status() const {
        detail::LockGuard lock(mutex_);
        return overall_;
    }

    HealthStatus status(std::string_view name) const {
        detail::LockGuard lock(mutex_);
        return find(name)->last.status;
    }

    std::vector<HealthCheckResult> history(std::string_view name) const {
        detail::LockGuard lock(mutex_);
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
        detail::LockGuard lock(mutex_);
        std::vector<std::string> out;
        out.reserve(checks_.size());
        for (const auto& s : checks_) {
            out.push_back(s->check.name);
        }
        return out;
    }

    HealthReport report() const {
        HealthReport r;
        detail::LockGuard lock(mutex_);
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
    std::shared_ptr<HealthCheckState> find(std::string_view name) const BULWARK_REQUIRES(mutex_) {
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
                std::vector<Run>& started, std::vector<Run>& inline_runs, HealthPending& pending)
        BULWARK_REQUIRES(mutex_) {
        s->next_due = detail::saturating_add(now, s->check.interval);
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
        s->deadline = detail::saturating_add(now, s->check.timeout);
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
    bool post(const std::shared_ptr<HealthCheckState>& s, std::uint64_t id)
        BULWARK_REQUIRES(mutex_) {
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
        detail::UniqueLock lock(mutex_);
        for (;;) {
            while (!shutdown_ && tasks_.empty()) {
                cv_.wait(lock.native());
            }
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
            detail::LockGuard lock(mutex_);
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
        detail::LockGuard lock(mutex_);
        finish(s);
    }

    // Under mutex_: the run of `s` in flight has ended.
    void finish(const std::shared_ptr<HealthCheckState>& s) BULWARK_REQUIRES(mutex_) {
        s->in_flight = false;
        s->completing = false;
        if (s->check.timeout > Duration::zero()) {
            flying_.erase(std::find(flying_.begin(), flying_.end(), s));
            --busy_;  // here, not after execute() returns: the thread is free for the next run
        }
        cv_.notify_all();
    }

    // Under mutex_: reports every run on a check thread that is past its deadline as timed out.
    void expire(TimePoint now, HealthPending& pending) BULWARK_REQUIRES(mutex_) {
        for (const auto& s : flying_) {
            if (!s->timeout_reported && !s->completing && now >= s->deadline) {
                report_timeout(*s, pending);
            }
        }
    }

    void report_timeout(HealthCheckState& s, HealthPending& pending) BULWARK_REQUIRES(mutex_) {
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
    void record(HealthCheckState& s, HealthCheckResult r, HealthPending& pending)
        BULWARK_REQUIRES(mutex_) {
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

    void update_overall(HealthPending& pending) BULWARK_REQUIRES(mutex_) {
        const HealthStatus now_overall = compute_overall();
        if (now_overall != overall_) {
            const HealthStatus from = pending.overall ? pending.overall->from : overall_;
            pending.overall = HealthStatusChange{from, now_overall, clock_->now()};
            overall_ = now_overall;
        }
    }

    // Unhealthy if a critical check is unhealthy; else unknown while any check has not run;
    // else degraded if any check is degraded or a non-critical one unhealthy; else healthy.
    HealthStatus compute_overall() const BULWARK_REQUIRES(mutex_) {
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
    mutable detail::Mutex mutex_;
    std::condition_variable cv_;  // completions, new checks, stop, thread exits, new tasks
    // In the order added.
    std::vector<std::shared_ptr<HealthCheckState>> checks_ BULWARK_GUARDED_BY(mutex_);
    std::vector<Run> tasks_ BULWARK_GUARDED_BY(mutex_);  // runs waiting for a check thread
    // Checks with a run on a thread.
    std::vector<std::shared_ptr<HealthCheckState>> flying_ BULWARK_GUARDED_BY(mutex_);
    std::size_t threads_ BULWARK_GUARDED_BY(mutex_) = 0;  // check threads alive
    // Runs posted and not finished (queued or running).
    std::size_t busy_ BULWARK_GUARDED_BY(mutex_) = 0;
    HealthStatus overall_ BULWARK_GUARDED_BY(mutex_) = HealthStatus::healthy;
    bool stop_requested_ BULWARK_GUARDED_BY(mutex_) = false;
    bool shutdown_ BULWARK_GUARDED_BY(mutex_) = false;
};

}  // namespace detail

}  // namespace bulwark

#endif  // BULWARK_DETAIL_HEALTH_CORE_HPP

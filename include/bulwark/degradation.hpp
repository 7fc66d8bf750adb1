// bulwark — resilience policies for C++17 services.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DEGRADATION_HPP
#define BULWARK_DEGRADATION_HPP

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <bulwark/clock.hpp>
#include <bulwark/degradation_level.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/events.hpp>
#include <bulwark/health_check.hpp>
#include <bulwark/resource_report.hpp>

namespace bulwark {

// Maps the overall health and the worst resource status to a degradation level, for
// Degradation::follow().
using DegradationMap = std::function<DegradationLevel(HealthStatus health, ResourceStatus worst)>;

// The default mapping: the higher of the two columns.
//   health:    unknown, healthy -> normal; degraded -> minor;  unhealthy -> severe
//   resources: unknown, healthy -> normal; warning -> minor;   critical -> moderate;
//              exhausted -> severe
inline DegradationLevel default_degradation_map(HealthStatus health,
                                                ResourceStatus worst) noexcept {
    DegradationLevel from_health = DegradationLevel::normal;
    if (health == HealthStatus::degraded) {
        from_health = DegradationLevel::minor;
    } else if (health == HealthStatus::unhealthy) {
        from_health = DegradationLevel::severe;
    }
    DegradationLevel from_resources = DegradationLevel::normal;
    switch (worst) {
        case ResourceStatus::warning:
            from_resources = DegradationLevel::minor;
            break;
        case ResourceStatus::critical:
            from_resources = DegradationLevel::moderate;
            break;
        case ResourceStatus::exhausted:
            from_resources = DegradationLevel::severe;
            break;
        case ResourceStatus::unknown:
        case ResourceStatus::healthy:
            break;
    }
    return std::max(from_health, from_resources);
}

struct DegradationChange {
    DegradationLevel from = DegradationLevel::normal;
    DegradationLevel to = DegradationLevel::normal;
    std::string reason;
    TimePoint at{};
    bool manual = false;  // set_level()/clear_override(), not observe()
};

// The service's degradation level, its reason and since when, and the feature gates and load
// shedding that follow from it.
//   bulwark::Degradation degradation;
//   degradation.set_level(bulwark::DegradationLevel::moderate, "maintenance");   // admin override
//   if (degradation.enabled("recommendations", bulwark::DegradationLevel::minor)) { ... }
//   degradation.observe(computed_level, "p99 latency high");   // automatic input, with hysteresis
// Two inputs: observe() (automatic: rises at once, falls only after the lower level has held for
// hold(), so it does not flap) and set_level() (manual: overrides the automatic level until
// clear_override()). The level in force is the override if there is one, else the automatic one.
// Thread-safe. level() and enabled() are one atomic load (plus a lock only while a per-feature
// override is set); changes take a mutex. Listeners run after the change, outside the lock.
// Degradation is BasicDegradation<>: a class template only so that its code is compiled where it
// is used (the Tag is never used).
template <class Tag = void>
class BasicDegradation : public DegradationSignal {
public:
    using ChangeListener =
        std::function<void(DegradationLevel from, DegradationLevel to, const std::string& why)>;

    // `hold`: how long a lower automatic level must persist before the level falls. >= 0.
    explicit BasicDegradation(Clock& clock = default_clock(),
                              Duration hold = std::chrono::seconds(30))
        : clock_(&clock), hold_(hold), since_(clock.now()) {
        if (hold < Duration::zero()) {
            detail::throw_invalid_option("Degradation.hold", "must be >= 0",
                                         detail::format_duration(hold));
        }
    }

    BasicDegradation(const BasicDegradation&) = delete;
    BasicDegradation& operator=(const BasicDegradation&) = delete;
    ~BasicDegradation() { unfollow(); }

    std::string reason() const {
        detail::LockGuard lock(mutex_);
        return reason_;
    }
    TimePoint since() const {
        detail::LockGuard lock(mutex_);
        return since_;
    }
    bool overridden() const {
        detail::LockGuard lock(mutex_);
        return override_.has_value();
    }
    Duration hold() const noexcept { return hold_; }

    // Admin override: this level holds, whatever observe() says, until clear_override().
    void set_level(DegradationLevel level, std::string reason) {
        detail::check_enumerator(level, DegradationLevel::critical, "Degradation::set_level(level)",
                                 "DegradationLevel");
        Pending pending;
        {
            detail::LockGuard lock(mutex_);
            override_ = level;
            publish(level, std::move(reason), true, pending);
        }
        notify(pending);
    }

    // Returns to the automatic level.
    void clear_override() {
        Pending pending;
        {
            detail::LockGuard lock(mutex_);
            if (!override_) {
                return;
            }
            override_.reset();
            publish(automatic_, automatic_reason_.empty() ? "override cleared" : automatic_reason_,
                    true, pending);
        }
        notify(pending);
    }

    // An automatic reading (from health checks, resource use, or the caller's own signals).
    // A higher level applies at once; a lower one only once readings at or below it have held
    // for hold() — then the level falls to the highest level seen during that time.
    void observe(DegradationLevel computed, std::string reason) {
        detail::check_enumerator(computed, DegradationLevel::critical,
                                 "Degradation::observe(computed)", "DegradationLevel");
        Pending pending;
        {
            detail::LockGuard lock(mutex_);
            const TimePoint now = clock_->now();
            if (computed >= automatic_) {
                lower_since_.reset();
                if (computed > automatic_ || reason != automatic_reason_) {
                    automatic_ = computed;
                    automatic_reason_ = std::move(reason);
                    if (!override_) {
                        publish(automatic_, automatic_reason_, false, pending);
                    }
                }
            } else {
                if (!lower_since_) {
                    lower_since_ = now;
                    lower_max_ = computed;
                } else if (computed > lower_max_) {
                    lower_max_ = computed;
                }
                if (now - *lower_since_ >= hold_) {
                    automatic_ = lower_max_;
                    automatic_reason_ = std::move(reason);
                    lower_since_.reset();
                    if (computed < automatic_) {
                        // This reading is lower still: it starts the hold for the next step.
                        lower_since_ = now;
                        lower_max_ = computed;
                    }
                    if (!override_) {
                        publish(automatic_, automatic_reason_, false, pending);
                    }
                }
            }
        }
        notify(pending);
    }

    // A feature gate: true while the level is below `disable_at` (unless the feature is forced
    // on or off by force_feature()).
    bool enabled(std::string_view feature, DegradationLevel disable_at) const {
        // acquire: pairs with force_feature()'s release; the map is read under the lock.
        if (BULWARK_UNLIKELY(features_forced_.load(std::memory_order_acquire))) {
            detail::LockGuard lock(mutex_);
            auto it = forced_.find(feature);
            if (it != forced_.end()) {
                return it->second;
            }
        }
        return level() < disable_at;
    }

    // Forces a feature on or off whatever the level (an admin switch); clear_feature() undoes it.
    void force_feature(std::string feature, bool on) {
        detail::LockGuard lock(mutex_);
        forced_[std::move(feature)] = on;
        features_forced_.store(true, std::memory_order_release);
    }
    void clear_feature(std::string_view feature) {
        detail::LockGuard lock(mutex_);
        auto it = forced_.find(feature);
        if (it != forced_.end()) {
            forced_.erase(it);
        }
        features_forced_.store(!forced_.empty(), std::memory_order_release);
    }

    // Derives the automatic level from a HealthMonitor and a ResourceManager: now, and after
    // every health check run and every change of a resource's status, observe(map(overall
    // health, worst resource status), reason) — so the level rises at once and falls after
    // hold(). Replaces an earlier follow(). Both sources must outlive this object or unfollow().
    // Do not call follow() or unfollow() from a listener of this object or of the sources.
    template <class Monitor, class Resources>
    void follow(Monitor& monitor, Resources& resources,
                DegradationMap map = default_degradation_map) {
        if (!map) {
            detail::throw_invalid_argument("Degradation::follow: the mapping is empty");
        }
        detail::LockGuard calls(follow_calls_mutex_);
        unfollow_locked();
        auto state = std::make_shared<FollowState>(this);
        state->read = [&monitor, &resources, map = std::move(map)] {
            return assess(monitor.report(), resources.report(), map);
        };
        // The listeners hold the state, not this object: unfollow() (and so the destructor)
        // closes it and waits for callbacks already inside.
        const ListenerId runs =
            monitor.on_run([state](const HealthCheckResult&) { run_followed(*state); });
        try {
            const ListenerId changes =
                resources.on_change([state](const ResourceChange&) { run_followed(*state); });
            state->stop = [&monitor, &resources, runs, changes] {
                monitor.remove_listener(runs);
                resources.remove_listener(changes);
            };
        } catch (...) {
            monitor.remove_listener(runs);
            throw;
        }
        {
            detail::LockGuard lock(follow_mutex_);
            follow_ = state;
        }
        run_followed(*state);
    }

    // Stops following and returns once no callback from the sources is still running it; does
    // nothing if not following.
    void unfollow() {
        detail::LockGuard calls(follow_calls_mutex_);
        unfollow_locked();
    }

    // Reads the followed sources now and feeds the result to observe(). Does nothing when not
    // following. Called by the sources' listeners; call it yourself to re-evaluate on a timer
    // (the level can only fall at a reading).
    void refresh() {
        std::shared_ptr<FollowState> state;
        {
            detail::LockGuard lock(follow_mutex_);
            state = follow_;
        }
        if (state) {
            run_followed(*state);
        }
    }

    // Called on every change of the level in force, as (from, to, reason); or, in the second
    // form, with the full event (time, and whether the change was manual). Returns the id that
    // remove_listener() takes; throws std::invalid_argument for an empty listener.
    ListenerId on_change(ChangeListener listener) {
        if (!listener) {
            detail::throw_invalid_argument("Degradation::on_change: the listener is empty");
        }
        return changes_.add(
            [l = std::move(listener)](const DegradationChange& c) { l(c.from, c.to, c.reason); });
    }
    ListenerId on_change(std::function<void(const DegradationChange&)> listener) {
        return changes_.add(std::move(listener));
    }
    // Stops calling a listener; false if the id is unknown here or already removed.
    bool remove_listener(ListenerId id) noexcept { return changes_.remove(id); }

private:
    struct Pending {
        std::optional<DegradationChange> change;
    };

    // Under mutex_: makes `level` the level in force.
    void publish(DegradationLevel level, std::string reason, bool manual, Pending& pending)
        BULWARK_REQUIRES(mutex_) {
        const auto old = static_cast<DegradationLevel>(level_.load(std::memory_order_relaxed));
        const TimePoint now = clock_->now();
        if (old != level) {
            since_ = now;
        }
        reason_ = reason;
        level_.store(static_cast<std::uint8_t>(level), std::memory_order_release);
        if (old != level) {
            pending.change = DegradationChange{old, level, std::move(reason), now, manual};
        }
    }

    void notify(const Pending& pending) {
        if (pending.change) {
            changes_.emit(*pending.change);
        }
    }

    // What follow() set up, shared with the sources' listeners so that a callback never
    // touches a Degradation that is gone.
    struct FollowState {
        explicit FollowState(BasicDegradation* o) : owner(o) {}

        detail::Mutex mutex;
        std::condition_variable idle;
        BasicDegradation* owner BULWARK_GUARDED_BY(mutex) = nullptr;  // null once unfollowed
        std::size_t running BULWARK_GUARDED_BY(mutex) = 0;  // callbacks inside run_followed()
        std::function<std::pair<DegradationLevel, std::string>()> read;  // the level and why
        std::function<void()> stop;                                      // removes the listeners
    };

    // Reads the sources and observes the result, unless unfollowed. Runs outside every lock of
    // this object, so that change listeners run unlocked.
    static void run_followed(FollowState& state) {
        // Reading the resources can report a change, whose listener calls back in here on the
        // same thread: that nested call has nothing to add.
        thread_local std::vector<const FollowState*> active;
        if (std::find(active.begin(), active.end(), &state) != active.end()) {
            return;
        }
        BasicDegradation* owner = nullptr;
        {
            detail::LockGuard lock(state.mutex);
            owner = state.owner;
            if (owner == nullptr) {
                return;
            }
            ++state.running;
        }
        active.push_back(&state);
        struct Leave {
            FollowState& state;
            ~Leave() {
                active.pop_back();
                detail::LockGuard lock(state.mutex);
                --state.running;
                state.idle.notify_all();
            }
        } leave{state};
        auto [computed, why] = state.read();
        owner->observe(computed, std::move(why));
    }

    // Under follow_calls_mutex_.
    void unfollow_locked() BULWARK_REQUIRES(follow_calls_mutex_) {
        std::shared_ptr<FollowState> state;
        {
            detail::LockGuard lock(follow_mutex_);
            state = std::move(follow_);
        }
        if (!state) {
            return;
        }
        {
            detail::LockGuard lock(state->mutex);
            state->owner = nullptr;
        }
        state->stop();
        detail::UniqueLock lock(state->mutex);
        while (state->running != 0) {
            state->idle.wait(lock.native());
        }
    }

    // The mapped level and a reason naming what is wrong:
    // "health unhealthy (database unhealthy); resources critical (llm_tokens)".
    static std::pair<DegradationLevel, std::string> assess(const HealthReport& health,
                                                           const ResourceReport& resources,
                                                           const DegradationMap& map) {
        const DegradationLevel computed = map(health.status, resources.worst);
        if (computed == DegradationLevel::normal) {
            return {computed, "healthy"};
        }
        std::string why = std::string("health ") + to_string(health.status);
        std::string failing;
        for (const HealthCheckSummary& c : health.checks) {
            if (c.last.status == HealthStatus::unhealthy ||
                c.last.status == HealthStatus::degraded) {
                failing +=
                    (failing.empty() ? "" : ", ") + c.last.name + " " + to_string(c.last.status);
            }
        }
        if (!failing.empty()) {
            why += " (" + failing + ")";
        }
        if (resources.worst > ResourceStatus::healthy) {
            why += std::string("; resources ") + to_string(resources.worst) + " (" +
                   resources.worst_name + ")";
        }
        return {computed, std::move(why)};
    }

    Clock* const clock_;
    const Duration hold_;
    detail::Mutex follow_calls_mutex_;  // serialises follow() and unfollow()
    detail::Mutex follow_mutex_;        // guards follow_
    std::shared_ptr<FollowState> follow_ BULWARK_GUARDED_BY(follow_mutex_);
    std::atomic<bool> features_forced_{false};

    mutable detail::Mutex mutex_;
    std::string reason_ BULWARK_GUARDED_BY(mutex_);
    TimePoint since_ BULWARK_GUARDED_BY(mutex_){};
    std::optional<DegradationLevel> override_ BULWARK_GUARDED_BY(mutex_);
    DegradationLevel automatic_ BULWARK_GUARDED_BY(mutex_) = DegradationLevel::normal;
    std::string automatic_reason_ BULWARK_GUARDED_BY(mutex_);
    std::optional<TimePoint> lower_since_ BULWARK_GUARDED_BY(mutex_);
    DegradationLevel lower_max_ BULWARK_GUARDED_BY(mutex_) = DegradationLevel::normal;
    std::map<std::string, bool, std::less<>> forced_ BULWARK_GUARDED_BY(mutex_);
    Listeners<DegradationChange> changes_;
};

using Degradation = BasicDegradation<>;

}  // namespace bulwark

#endif  // BULWARK_DEGRADATION_HPP

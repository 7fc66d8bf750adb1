// ResourceManager: gauges and quotas against thresholds, with alternatives.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_RESOURCES_HPP
#define BULWARK_RESOURCES_HPP

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <bulwark/clock.hpp>
#include <bulwark/detail/json.hpp>
#include <bulwark/detail/math.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/detail/traits.hpp>
#include <bulwark/events.hpp>
#include <bulwark/resource_report.hpp>

namespace bulwark {

// The function of a gauge: any callable taking nothing and returning the percent used, as an
// arithmetic type or std::optional of one (nullopt: unknown). An exception it throws makes the
// reading unknown.
class ResourceGauge {
public:
    ResourceGauge() = default;

    template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, ResourceGauge>>>
    ResourceGauge(F f)  // NOLINT(google-explicit-constructor): add_gauge("m", [] {...}) reads well
        : fn_(wrap(std::move(f))) {}

    explicit operator bool() const noexcept { return static_cast<bool>(fn_); }

    std::optional<double> operator()() const { return fn_(); }

private:
    template <class T>
    struct is_optional : std::false_type {};
    template <class T>
    struct is_optional<std::optional<T>> : std::true_type {};

    template <class F>
    static std::function<std::optional<double>()> wrap(F f) {
        static_assert(std::is_invocable_v<F&>,
                      "a resource gauge must be callable with no arguments");
        using R = std::decay_t<std::invoke_result_t<F&>>;
        static_assert(std::is_arithmetic_v<R> || is_optional<R>::value,
                      "a resource gauge must return the percent used as a number or a "
                      "std::optional of one");
        if (detail::is_null_callable(f)) {
            return {};
        }
        return [f = std::move(f)]() mutable -> std::optional<double> {
            if constexpr (is_optional<R>::value) {
                auto value = f();
                if (!value) {
                    return std::nullopt;
                }
                return static_cast<double>(*value);
            } else {
                return static_cast<double>(f());
            }
        };
    }

    std::function<std::optional<double>()> fn_;
};

// Watches resources — gauges (a callable returning percent used, e.g. memory) and quotas (a
// limit per rolling window, fed by record_usage()) — against warning and critical thresholds,
// and names alternatives to switch to when one runs short.
//   bulwark::ResourceManager rm;                                    // optional clock
//   rm.add_gauge("memory", [] { return bulwark::system::memory_used_percent(); }, {80, 95});
//   rm.add_quota("llm_tokens", /*limit*/ 100000, /*window*/ 1min, {70, 90});
//   rm.record_usage("llm_tokens", 1000);
//   auto [status, percent] = rm.check("llm_tokens");
//   rm.set_alternatives("gpt-4", {"claude", "small-model"});  rm.alternative("gpt-4");
// A gauge is read again once its cache TTL (default 1 s) has passed (threads that find it stale
// at the same moment may each read it); within the TTL, check() and can_use() use the cached
// reading: a shared lock and a search of the name table, two atomic loads and a coarse clock read.
// A quota keeps 60 buckets per window, so usage leaves the window in steps of window/60.
// Resources cannot be removed.
// Thread-safe. Change listeners run after the reading, outside any lock.
// ResourceManager is BasicResourceManager<>: a class template only so that its code is compiled
// in translation units that use it; use the alias.
template <class Tag = void>
class BasicResourceManager {
public:
    explicit BasicResourceManager(Clock& clock = default_clock()) : clock_(&clock) {}

    BasicResourceManager(const BasicResourceManager&) = delete;
    BasicResourceManager& operator=(const BasicResourceManager&) = delete;

    // Throws std::invalid_argument for an empty name or gauge, a duplicate name, bad thresholds
    // or a negative TTL.
    // NOLINTNEXTLINE(performance-unnecessary-value-param): moved below; llvm-project#43943
    void add_gauge(std::string name, ResourceGauge gauge, ResourceThresholds thresholds = {},
                   Duration cache_ttl = std::chrono::seconds(1)) {
        if (!gauge) {
            detail::throw_invalid_argument("ResourceManager::add_gauge(" + name +
                                           "): the gauge is empty");
        }
        if (cache_ttl < Duration::zero()) {
            detail::throw_invalid_option("ResourceManager::add_gauge(" + name + ").cache_ttl",
                                         "must be >= 0", detail::format_duration(cache_ttl));
        }
        auto r = make_resource(std::move(name), thresholds);
        r->gauge = std::move(gauge);
        r->ttl = cache_ttl;
        insert(std::move(r));
    }

    // A quota of `limit` units per rolling `window`. Throws std::invalid_argument for an empty
    // or duplicate name, a limit <= 0, a window <= 0 or bad thresholds.
    void add_quota(std::string name, double limit, Duration window,
                   ResourceThresholds thresholds = {}) {
        if (!(limit > 0.0) || !detail::is_finite(limit)) {
            detail::throw_invalid_option("ResourceManager::add_quota(" + name + ").limit",
                                         "must be > 0", detail::format_number(limit));
        }
        if (window <= Duration::zero()) {
            detail::throw_invalid_option("ResourceManager::add_quota(" + name + ").window",
                                         "must be > 0", detail::format_duration(window));
        }
        auto r = make_resource(std::move(name), thresholds);
        r->quota = true;
        r->limit = limit;
        r->window = window;
        r->bucket_width = std::max(Duration{1}, window / Resource::buckets_per_window);
        insert(std::move(r));
    }

    // Adds `amount` (>= 0) to a quota's use in the current window and returns the new reading.
    // Throws std::invalid_argument for an unknown name, a gauge, or a negative amount.
    ResourceCheck record_usage(std::string_view name, double amount) {
        Resource& r = quota(name, amount, "record_usage");
        std::optional<ResourceChange> change;
        ResourceCheck result;
        {
            detail::LockGuard lock(r.mutex);
            const TimePoint now = clock_->now();
            add_to_bucket(r, now, amount);
            result = observe(r, quota_percent(r, now), now, change);
        }
        notify(change);
        return result;
    }

    // Records `amount` only if it fits in what is left of the quota; false (and nothing
    // recorded) if it does not. The check and the record are one step.
    bool try_consume(std::string_view name, double amount) {
        Resource& r = quota(name, amount, "try_consume");
        std::optional<ResourceChange> change;
        bool fits = false;
        {
            detail::LockGuard lock(r.mutex);
            const TimePoint now = clock_->now();
            fits = used_in_window(r, now) + amount <= r.limit;
            if (fits) {
                add_to_bucket(r, now, amount);
            }
            observe(r, quota_percent(r, now), now, change);
        }
        notify(change);
        return fits;
    }

    // The current reading (a gauge's cached one while it is fresh). Throws
    // std::invalid_argument for an unknown name.
    ResourceCheck check(std::string_view name) { return read(find(name)); }

    ResourceStatus status(std::string_view name) { return check(name).status; }

    // True unless the resource is critical or exhausted (unknown counts as usable).
    bool can_use(std::string_view name) { return usable(check(name).status); }

    // Alternatives to `resource`, in order of preference (the seeds' SWITCH_PROVIDER). They
    // need not be registered resources; one that is not counts as usable.
    void set_alternatives(std::string resource, std::vector<std::string> alternatives) {
        detail::LockGuard lock(table_mutex_);
        for (auto& entry : alternatives_) {
            if (entry.first == resource) {
                entry.second = std::move(alternatives);
                return;
            }
        }
        alternatives_.emplace_back(std::move(resource), std::move(alternatives));
    }

    // The first alternative of `resource` that can be used, whatever state `resource` is in;
    // nullopt if none can (or none was set).
    std::optional<std::string> alternative(std::string_view resource) {
        for (const std::string& candidate : alternatives_of(resource)) {
            if (candidate_usable(candidate)) {
                return candidate;
            }
        }
        return std::nullopt;
    }

    // `resource` itself while it can be used, else its first usable alternative.
    std::optional<std::string> choose(std::string_view resource) {
        if (candidate_usable(resource)) {
            return std::string(resource);
        }
        return alternative(resource);
    }

    // Reads every resource (gauges past their TTL are read again).
    ResourceReport report() {
        ResourceReport report;
        std::vector<Resource*> all;
        {
            detail::SharedLock lock(table_mutex_);
            for (const auto& r : resources_) {
                all.push_back(r.get());
            }
        }
        for (Resource* r : all) {
            const ResourceCheck c = read(*r);
            ResourceReading reading;
            {
                detail::LockGuard lock(r->mutex);
                reading.name = r->name;
                reading.quota = r->quota;
                reading.status = c.status;
                reading.percent = c.percent;
                reading.limit = r->limit;
                reading.window = r->window;
                if (r->quota) {
                    reading.used = used_in_window(*r, clock_->now());
                }
                reading.thresholds = r->thresholds;
                reading.readings = r->readings;
                reading.peak_percent = r->peak_percent;
                reading.times_warning = r->times_warning;
                reading.times_critical = r->times_critical;
                reading.status_since = r->status_since;
            }
            reading.alternatives = alternatives_of(reading.name);
            if (c.status > report.worst) {
                report.worst = c.status;
                report.worst_name = reading.name;
            }
            report.resources.push_back(std::move(reading));
        }
        report.at = clock_->now();  // after the readings, which may change a status
        return report;
    }

    std::vector<std::string> names() const {
        detail::SharedLock lock(table_mutex_);
        std::vector<std::string> out;
        for (const auto& r : resources_) {
            out.push_back(r->name);
        }
        return out;
    }

    // Called when a resource's status changes (found by a reading, not on every reading).
    // Returns the id that remove_listener() takes; throws std::invalid_argument for an empty
    // listener.
    ListenerId on_change(std::function<void(const ResourceChange&)> listener) {
        return changes_.add(std::move(listener));
    }
    // Stops calling a listener; false if the id is unknown here or already removed.
    bool remove_listener(ListenerId id) noexcept { return changes_.remove(id); }

private:
    struct Resource {
        static constexpr int buckets_per_window = 60;

        std::string name;
        ResourceThresholds thresholds;
        bool quota = false;
        // Gauges. The cache is read without the mutex: cached_at_ns, then the reading.
        ResourceGauge gauge;
        Duration ttl{};
        std::atomic<std::int64_t> cached_at_ns{std::numeric_limits<std::int64_t>::min()};
        std::atomic<double> cached_percent{std::numeric_limits<double>::quiet_NaN()};
        // Quotas: set before the resource is shared, then the buckets guarded by mutex.
        double limit = 0.0;
        Duration window{};
        Duration bucket_width{1};
        std::int64_t bucket_epoch[buckets_per_window] BULWARK_GUARDED_BY(mutex) = {};
        double bucket_amount[buckets_per_window] BULWARK_GUARDED_BY(mutex) = {};
        // Status and history summary, guarded by mutex (status also mirrored for lock-free reads).
        detail::Mutex mutex;
        std::atomic<ResourceStatus> cached_status{ResourceStatus::unknown};
        ResourceStatus last_status BULWARK_GUARDED_BY(mutex) = ResourceStatus::unknown;
        TimePoint status_since BULWARK_GUARDED_BY(mutex){};
        std::uint64_t readings BULWARK_GUARDED_BY(mutex) = 0;
        double peak_percent BULWARK_GUARDED_BY(mutex) = 0.0;
        std::uint64_t times_warning BULWARK_GUARDED_BY(mutex) = 0;
        std::uint64_t times_critical BULWARK_GUARDED_BY(mutex) = 0;
    };

    static bool usable(ResourceStatus status) noexcept {
        return status != ResourceStatus::critical && status != ResourceStatus::exhausted;
    }

    // Not shared yet: its guarded fields need no lock here.
    // NOLINTNEXTLINE(performance-unnecessary-value-param): moved below; llvm-project#43943
    std::unique_ptr<Resource> make_resource(std::string name, const ResourceThresholds& t)
        BULWARK_NO_THREAD_SAFETY_ANALYSIS {
        if (name.empty()) {
            detail::throw_invalid_argument("ResourceManager: a resource name must not be empty");
        }
        t.validate(name);
        auto r = std::make_unique<Resource>();
        r->name = std::move(name);
        r->thresholds = t;
        r->status_since = clock_->now();
        return r;
    }

    void insert(std::unique_ptr<Resource> r) {
        detail::LockGuard lock(table_mutex_);
        for (const auto& existing : resources_) {
            if (existing->name == r->name) {
                detail::throw_invalid_argument("ResourceManager: a resource named '" + r->name +
                                               "' already exists");
            }
        }
        resources_.push_back(std::move(r));
    }

    Resource* lookup(std::string_view name) const {
        detail::SharedLock lock(table_mutex_);
        for (const auto& r : resources_) {
            if (r->name == name) {
                return r.get();
            }
        }
        return nullptr;
    }

    Resource& find(std::string_view name) const {
        Resource* r = lookup(name);
        if (r == nullptr) {
            detail::throw_invalid_argument("ResourceManager: no resource named '" +
                                           std::string(name) + "'");
        }
        return *r;
    }

    // `operation` names the caller in the error message.
    Resource& quota(std::string_view name, double amount, const char* operation) const {
        Resource& r = find(name);
        if (!r.quota) {
            detail::throw_invalid_argument("ResourceManager: '" + r.name +
                                           "' is a gauge, not a quota");
        }
        if (!(amount >= 0.0) || !detail::is_finite(amount)) {
            detail::throw_invalid_option(
                std::string("ResourceManager::") + operation + "(" + r.name + ").amount",
                "must be >= 0", detail::format_number(amount));
        }
        return r;
    }

    std::vector<std::string> alternatives_of(std::string_view resource) const {
        detail::SharedLock lock(table_mutex_);
        for (const auto& entry : alternatives_) {
            if (entry.first == resource) {
                return entry.second;
            }
        }
        return {};
    }

    bool candidate_usable(std::string_view name) {
        Resource* r = lookup(name);
        return r == nullptr || usable(read(*r).status);
    }

    ResourceCheck read(Resource& r) {
        if (r.quota) {
            std::optional<ResourceChange> change;
            ResourceCheck result;
            {
                detail::LockGuard lock(r.mutex);
                const TimePoint now = clock_->now();
                result = observe(r, quota_percent(r, now), now, change);
            }
            notify(change);
            return result;
        }
        const std::int64_t now_ns = clock_->coarse_now_fast().time_since_epoch().count();
        // acquire: pairs with the release store below, so the reading is the one stamped.
        const std::int64_t at = r.cached_at_ns.load(std::memory_order_acquire);
        if (at != std::numeric_limits<std::int64_t>::min() && now_ns - at < r.ttl.count()) {
            // relaxed: ordered after cached_at_ns by its acquire load.
            return {r.cached_status.load(std::memory_order_relaxed),
                    r.cached_percent.load(std::memory_order_relaxed)};
        }
        double percent = std::numeric_limits<double>::quiet_NaN();
        try {
            if (auto value = r.gauge(); value && detail::is_finite(*value)) {
                percent = *value;
            }
        } catch (...) {
            // A gauge that throws reads as unknown.
        }
        std::optional<ResourceChange> change;
        ResourceCheck result;
        {
            detail::LockGuard lock(r.mutex);
            result = observe(r, percent, clock_->now(), change);
            r.cached_percent.store(percent, std::memory_order_relaxed);
            // release: publishes the reading and status stored before it.
            r.cached_at_ns.store(now_ns, std::memory_order_release);
        }
        notify(change);
        return result;
    }

    // Under r.mutex: classifies a reading, keeps the summary and notes a change of status.
    ResourceCheck observe(Resource& r, double percent, TimePoint now,
                          std::optional<ResourceChange>& change) BULWARK_REQUIRES(r.mutex) {
        const ResourceStatus status = r.thresholds.classify(percent);
        ++r.readings;
        if (!detail::is_nan(percent) && percent > r.peak_percent) {
            r.peak_percent = percent;
        }
        if (status != r.last_status) {
            if (status == ResourceStatus::warning && r.last_status < ResourceStatus::warning) {
                ++r.times_warning;
            }
            if (status >= ResourceStatus::critical && r.last_status < ResourceStatus::critical) {
                ++r.times_critical;
            }
            if (!changes_.empty()) {
                change = ResourceChange{r.name, r.last_status, status, percent, now};
            }
            r.last_status = status;
            r.status_since = now;
        }
        // relaxed: readers order it through cached_at_ns (gauges) or take r.mutex (quotas).
        r.cached_status.store(status, std::memory_order_relaxed);
        return {status, percent};
    }

    void notify(const std::optional<ResourceChange>& change) {
        if (change) {
            changes_.emit(*change);
        }
    }

    std::int64_t epoch_of(const Resource& r, TimePoint now) const noexcept {
        return now.time_since_epoch().count() / r.bucket_width.count();
    }

    void add_to_bucket(Resource& r, TimePoint now, double amount) BULWARK_REQUIRES(r.mutex) {
        const std::int64_t epoch = epoch_of(r, now);
        const auto i = static_cast<std::size_t>(epoch % Resource::buckets_per_window);
        if (r.bucket_epoch[i] != epoch) {
            r.bucket_epoch[i] = epoch;
            r.bucket_amount[i] = 0.0;
        }
        r.bucket_amount[i] += amount;
    }

    double used_in_window(const Resource& r, TimePoint now) const BULWARK_REQUIRES(r.mutex) {
        const std::int64_t epoch = epoch_of(r, now);
        double used = 0.0;
        for (int i = 0; i < Resource::buckets_per_window; ++i) {
            if (r.bucket_epoch[i] > epoch - Resource::buckets_per_window &&
                r.bucket_epoch[i] <= epoch) {
                used += r.bucket_amount[i];
            }
        }
        return used;
    }

    double quota_percent(const Resource& r, TimePoint now) const BULWARK_REQUIRES(r.mutex) {
        return 100.0 * used_in_window(r, now) / r.limit;
    }

    Clock* const clock_;
    mutable detail::SharedMutex table_mutex_;
    // A few entries each, searched linearly: cheaper to compile and, at this size, to search
    // than a map. Resources are never removed (references stay valid).
    std::vector<std::unique_ptr<Resource>> resources_ BULWARK_GUARDED_BY(table_mutex_);
    std::vector<std::pair<std::string, std::vector<std::string>>> alternatives_
        BULWARK_GUARDED_BY(table_mutex_);
    Listeners<ResourceChange> changes_;
};

using ResourceManager = BasicResourceManager<>;

}  // namespace bulwark

#endif  // BULWARK_RESOURCES_HPP

// Registry<T, Options>: keyed components created from an options template, bounded by TTL and LRU.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_REGISTRY_HPP
#define BULWARK_REGISTRY_HPP

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <bulwark/clock.hpp>
#include <bulwark/config.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/striped_counter.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/events.hpp>
#include <bulwark/time.hpp>

namespace bulwark {

namespace detail {

template <class T, class = void>
struct has_in_flight_member : std::false_type {};
template <class T>
struct has_in_flight_member<T, std::void_t<decltype(std::declval<const T&>().in_flight())>>
    : std::true_type {};

template <class T, class = void>
struct has_stats_in_flight : std::false_type {};
template <class T>
struct has_stats_in_flight<T, std::void_t<decltype(std::declval<const T&>().stats().in_flight)>>
    : std::true_type {};

template <class T, class = void>
struct has_stats_queued : std::false_type {};
template <class T>
struct has_stats_queued<T, std::void_t<decltype(std::declval<const T&>().stats().queued)>>
    : std::true_type {};

// state() returning an enumeration with a `closed` enumerator: a circuit breaker of any kind.
template <class T, class = void>
struct has_closed_state : std::false_type {};
template <class T>
struct has_closed_state<
    T, std::void_t<decltype(std::declval<const T&>().state() ==
                            std::decay_t<decltype(std::declval<const T&>().state())>::closed)>>
    : std::true_type {};

template <class T, class = void>
struct has_validate : std::false_type {};
template <class T>
struct has_validate<T, std::void_t<decltype(std::declval<const T&>().validate())>>
    : std::true_type {};

}  // namespace detail

// Whether a Registry may drop a component now (TTL or size eviction): the customisation point.
// The default, found by detection so that new components fit without registering:
//   - a component with in_flight() is evictable only when it returns 0 (an adaptive limiter);
//   - else one whose stats() has in_flight (and queued) only when they are 0 (Bulkhead);
//   - a component whose state() has a `closed` enumerator only when closed (CircuitBreaker,
//     SharedCircuitBreaker: never open, half-open, forced open or disabled);
//   - anything else (RateLimiter, RetryBudget) always.
// Specialise it for your own type:
//   template <> struct bulwark::Evictable<MyPool> {
//       static bool check(const MyPool& p) { return p.idle(); } };
// check() runs under a registry shard's lock: it must be quick and must not call the registry.
template <class T, class = void>
struct Evictable {
    static bool check(const T& component) {
        if constexpr (detail::has_in_flight_member<T>::value) {
            if (component.in_flight() != 0) {
                return false;
            }
        } else if constexpr (detail::has_stats_in_flight<T>::value) {
            const auto stats = component.stats();
            if (stats.in_flight != 0) {
                return false;
            }
            if constexpr (detail::has_stats_queued<T>::value) {
                if (stats.queued != 0) {
                    return false;
                }
            }
        }
        if constexpr (detail::has_closed_state<T>::value) {
            using State = std::decay_t<decltype(component.state())>;
            if (!(component.state() == State::closed)) {
                return false;
            }
        }
        return true;
    }
};

// Evictable<T>::check(component).
template <class T>
bool evictable(const T& component) {
    return Evictable<T>::check(component);
}

// Bounds of a Registry. Every field has a default; validate() throws std::invalid_argument
// naming the field and the value.
//   bulwark::RegistryOptions limits;
//   limits.max_size = 10000; limits.ttl = std::chrono::minutes(10);
struct RegistryOptions {
    // At most this many components; creating one more evicts the least recently used evictable
    // ones (down to max_size - max_size/32, to amortise the scan). 0 = unbounded (default). When
    // nothing is evictable the registry grows past it (a breaker that is open is never dropped) and
    // counts over_capacity.
    std::size_t max_size = 0;
    // A component not looked up for this long is dropped (if evictable) by evict_expired() and
    // by the next creation of a key once ttl/4 has passed since the last sweep. 0 = never
    // (default). Must be >= 0.
    Duration ttl = Duration::zero();
    // Lookups take a shared lock on one of this many shards. A power of two in [1, 1024].
    std::uint32_t shards = 16;
    // false (default): a component whose handle a caller still holds is in use and is never
    // evicted, so everyone asking for a key shares one component. true: TTL and size evict it
    // anyway; the holder keeps a working component (handles are shared_ptr), no longer shared
    // with later get()s of the key.
    bool evict_referenced = false;
    // The label value of the registry's own metrics (registry="..."). Not empty.
    std::string name = "registry";

    void validate() const {
        if (ttl < Duration::zero()) {
            detail::throw_invalid_option("RegistryOptions.ttl", "must be >= 0",
                                         detail::format_duration(ttl));
        }
        if (shards == 0 || shards > 1024 || (shards & (shards - 1)) != 0) {
            detail::throw_invalid_option("RegistryOptions.shards",
                                         "must be a power of two in [1, 1024]",
                                         std::to_string(shards));
        }
        if (name.empty()) {
            detail::throw_invalid_option("RegistryOptions.name", "must not be empty", "\"\"");
        }
    }
};

// Why a component left a Registry.
enum class EvictionCause : std::uint8_t {
    expired,  // idle for longer than RegistryOptions::ttl
    size,     // the least recently used when the registry was over max_size
    removed,  // erase()
};

inline const char* to_string(EvictionCause cause) noexcept {
    switch (cause) {
        case EvictionCause::expired:
            return "expired";
        case EvictionCause::size:
            return "size";
        case EvictionCause::removed:
            return "removed";
    }
    return "unknown";
}

// What an eviction listener hears. `component` is the evicted one: callers holding its handle
// keep using it; it is destroyed when the last handle (and this event) goes.
template <class T>
struct RegistryEviction {
    const std::string& key;
    std::shared_ptr<T> component;
    EvictionCause cause = EvictionCause::expired;
};

struct RegistryStats {
    std::size_t size = 0;                // components now
    std::uint64_t hits = 0;              // lookups that found their key
    std::uint64_t created = 0;           // components created
    std::uint64_t expired = 0;           // evicted for idling past the ttl
    std::uint64_t evicted_for_size = 0;  // evicted as least recently used over max_size
    std::uint64_t removed = 0;           // erase()d
    std::uint64_t over_capacity = 0;     // creations that left it over max_size (none evictable)
};

// How a Registry makes its components. Both optional; both run under the key's shard lock, so
// they must not call the registry.
//   factory:   builds the component for a key from its options; by default T(key, options,
//              clock), else T(options, clock), else T(options).
//   customize: adjusts a copy of the template options for one key before creation, e.g. a
//              longer break for "payments".
template <class T, class Options>
struct RegistryHooks {
    std::function<std::shared_ptr<T>(const std::string& key, const Options& options, Clock& clock)>
        factory{};
    std::function<void(const std::string& key, Options& options)> customize{};
};

// Components of one kind by key (per host, per tenant, per endpoint), created on first use from
// a template of options, bounded in size (LRU) and idle time (TTL), never dropping one that is
// busy (see Evictable: an open breaker, a bulkhead with calls in flight).
//   bulwark::Registry<bulwark::CircuitBreaker, bulwark::CircuitBreakerOptions> breakers(
//       options, limits);
//   std::shared_ptr<bulwark::CircuitBreaker> b = breakers.get("host-17");
//   b->execute(call);
// Handles are shared_ptr: an evicted component lives on while a caller holds it. By default a
// held component is not evicted at all (RegistryOptions::evict_referenced).
// Thread-safe. A lookup of an existing key hashes it, takes one shard's shared lock, copies the
// shared_ptr and may store its last-use time (once per coarse-clock tick); it allocates
// nothing. Creation takes the shard's exclusive lock (the component is built exactly once per
// key) and, when bounded, may sweep: O(size). Listeners run after the locks are released.
// Unlike CircuitBreakerRegistry (named breakers kept for the registry's life, references),
// entries here can go: hold the handle, not a reference.
template <class T, class Options>
class Registry {
public:
    using Handle = std::shared_ptr<T>;
    using Hooks = RegistryHooks<T, Options>;

    // Throws std::invalid_argument for invalid defaults or limits. The clock must outlive the
    // registry.
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    explicit Registry(Options defaults = {}, RegistryOptions limits = {},
                      Clock& clock = default_clock())
        : Registry(std::move(defaults), std::move(limits), Hooks{}, clock) {}

    Registry(Options defaults, RegistryOptions limits, Hooks hooks, Clock& clock = default_clock())
        : defaults_((validate_options(defaults), std::move(defaults))),
          limits_((limits.validate(), std::move(limits))),
          hooks_(std::move(hooks)),
          clock_(&clock),
          shards_(std::make_unique<Shard[]>(limits_.shards)),
          next_sweep_ns_(now_ns()) {}

    Registry(const Registry&) = delete;
    Registry& operator=(const Registry&) = delete;

    // The component for `key`, created from the template (and the customiser) if new. Throws
    // std::invalid_argument for an empty key or customised options that are invalid, and
    // whatever the factory throws (nothing is inserted then).
    Handle get(const std::string& key) { return get_or_create(key, nullptr); }

    // As above, created from `options` (not customised) if new; an existing component keeps
    // the options it was created with.
    Handle get(const std::string& key, const Options& options) {
        return get_or_create(key, &options);
    }

    // The component for `key` (a use: it resets the idle time), or null.
    Handle find(const std::string& key) const {
        Shard& shard = shard_for(key);
        detail::SharedLock lock(shard.mutex);
        auto it = shard.map.find(key);
        if (it == shard.map.end()) {
            return nullptr;
        }
        touch(it->second);
        return it->second.component;
    }

    bool contains(const std::string& key) const {
        Shard& shard = shard_for(key);
        detail::SharedLock lock(shard.mutex);
        return shard.map.find(key) != shard.map.end();
    }

    // Drops `key` whatever its state (an explicit act, unlike eviction); listeners hear
    // EvictionCause::removed. False if absent.
    bool erase(const std::string& key) {
        Handle gone;
        {
            Shard& shard = shard_for(key);
            detail::LockGuard lock(shard.mutex);
            auto it = shard.map.find(key);
            if (it == shard.map.end()) {
                return false;
            }
            gone = std::move(it->second.component);
            shard.map.erase(it);
            size_.fetch_sub(1, std::memory_order_relaxed);
        }
        removed_.fetch_add(1, std::memory_order_relaxed);
        listeners_.emit(RegistryEviction<T>{key, std::move(gone), EvictionCause::removed});
        return true;
    }

    // Drops every evictable component idle for longer than the ttl (none if the ttl is 0);
    // returns how many. Call it from a timer or a metrics scrape when keys stop being created.
    std::size_t evict_expired() {
        if (limits_.ttl == Duration::zero()) {
            return 0;
        }
        std::vector<Victim> victims;
        {
            detail::LockGuard evict_lock(evict_mutex_);
            sweep(now_ns(), victims, nullptr);
        }
        return notify(victims);
    }

    // Calls f(const std::string& key, T& component) for each component present when it is
    // called, in key order, outside the registry's locks (f may use the registry). Evicted keys
    // are not listed; a key evicted while f runs may still be.
    template <class F>
    void for_each(F&& f) const {
        for (auto& entry : entries()) {
            f(entry.first, *entry.second);
        }
    }

    // The components present now, in key order.
    std::vector<std::pair<std::string, Handle>> entries() const {
        std::vector<std::pair<std::string, Handle>> out;
        out.reserve(size());
        for (std::uint32_t i = 0; i < limits_.shards; ++i) {
            detail::SharedLock lock(shards_[i].mutex);
            for (const auto& kv : shards_[i].map) {
                out.emplace_back(kv.first, kv.second.component);
            }
        }
        std::sort(out.begin(), out.end(),
                  [](const auto& a, const auto& b) { return a.first < b.first; });
        return out;
    }

    std::vector<std::string> keys() const {
        std::vector<std::string> out;
        for (auto& entry : entries()) {
            out.push_back(std::move(entry.first));
        }
        return out;
    }

    std::size_t size() const noexcept { return size_.load(std::memory_order_relaxed); }

    RegistryStats stats() const noexcept {
        RegistryStats s;
        s.size = size();
        s.hits = hits_.sum();
        s.created = created_.load(std::memory_order_relaxed);
        s.expired = expired_.load(std::memory_order_relaxed);
        s.evicted_for_size = evicted_for_size_.load(std::memory_order_relaxed);
        s.removed = removed_.load(std::memory_order_relaxed);
        s.over_capacity = over_capacity_.load(std::memory_order_relaxed);
        return s;
    }

    // A listener for every eviction and erase(), called on the evicting thread after the
    // registry's locks are released (it may use the registry). Use it to drop the key's metrics
    // or caches. Returns the id remove_listener() takes; throws std::invalid_argument for an
    // empty listener.
    ListenerId on_eviction(std::function<void(const RegistryEviction<T>&)> listener) {
        if (!listener) {
            detail::throw_invalid_argument("bulwark::Registry::on_eviction: the listener is empty");
        }
        return listeners_.add(std::move(listener));
    }
    bool remove_listener(ListenerId id) noexcept { return listeners_.remove(id); }

    const Options& defaults() const noexcept { return defaults_; }
    const RegistryOptions& limits() const noexcept { return limits_; }
    Clock& clock() const noexcept { return *clock_; }

private:
    struct Entry {
        Entry(Handle c, std::int64_t now) : component(std::move(c)), last_used_ns(now) {}
        Handle component;
        // Nanoseconds on the clock's coarse timeline; relaxed: an approximate recency is all
        // LRU and TTL need.
        mutable std::atomic<std::int64_t> last_used_ns;
    };

    struct alignas(detail::cache_line_size) Shard {
        mutable detail::SharedMutex mutex;
        std::unordered_map<std::string, Entry> map BULWARK_GUARDED_BY(mutex);
    };

    struct Victim {
        std::string key;
        Handle component;
        EvictionCause cause = EvictionCause::expired;
    };

    static void validate_options(const Options& options) {
        if constexpr (detail::has_validate<Options>::value) {
            options.validate();
        }
    }

    std::int64_t now_ns() const noexcept {
        return clock_->coarse_now_fast().time_since_epoch().count();
    }

    bool bounded() const noexcept {
        return limits_.max_size != 0 || limits_.ttl != Duration::zero();
    }

    void touch(const Entry& entry) const noexcept {
        if (!bounded()) {
            return;
        }
        const std::int64_t now = now_ns();
        // Stored only when it moves, so threads reading a hot key do not write its cache line
        // more than once per clock tick.
        if (entry.last_used_ns.load(std::memory_order_relaxed) < now) {
            entry.last_used_ns.store(now, std::memory_order_relaxed);
        }
    }

    Shard& shard_for(const std::string& key) const noexcept {
        const std::size_t h = std::hash<std::string>{}(key);
        // The high bits: the map uses the low ones for its buckets.
        return shards_[static_cast<std::uint32_t>(h >> 20U) & (limits_.shards - 1U)];
    }

    Handle make(const std::string& key, const Options& options) {
        if (hooks_.factory) {
            Handle made = hooks_.factory(key, options, *clock_);
            if (!made) {
                detail::throw_logic_error(
                    "bulwark::Registry: the factory returned null for key \"" + key + "\"");
            }
            return made;
        }
        if constexpr (std::is_constructible<T, const std::string&, const Options&, Clock&>::value) {
            return std::make_shared<T>(key, options, *clock_);
        } else if constexpr (std::is_constructible<T, const Options&, Clock&>::value) {
            return std::make_shared<T>(options, *clock_);
        } else if constexpr (std::is_constructible<T, const Options&>::value) {
            return std::make_shared<T>(options);
        } else {
            detail::throw_logic_error(
                "bulwark::Registry: the component cannot be built from (key, options, clock), "
                "(options, clock) or (options): pass RegistryHooks::factory");
        }
    }

    Handle get_or_create(const std::string& key, const Options* explicit_options) {
        Shard& shard = shard_for(key);
        {
            detail::SharedLock lock(shard.mutex);
            auto it = shard.map.find(key);
            if (BULWARK_LIKELY(it != shard.map.end())) {
                touch(it->second);
                hits_.add();
                return it->second.component;
            }
        }
        if (key.empty()) {
            detail::throw_invalid_argument("bulwark::Registry::get: the key is empty");
        }
        Handle created;
        const Entry* entry = nullptr;
        {
            detail::LockGuard lock(shard.mutex);
            auto it = shard.map.find(key);
            if (it != shard.map.end()) {
                touch(it->second);
                hits_.add();
                return it->second.component;
            }
            if (explicit_options != nullptr) {
                created = make(key, *explicit_options);
            } else if (hooks_.customize) {
                Options options = defaults_;
                hooks_.customize(key, options);
                validate_options(options);
                created = make(key, options);
            } else {
                created = make(key, defaults_);
            }
            auto inserted = shard.map.try_emplace(key, created, now_ns());
            entry = &inserted.first->second;
            size_.fetch_add(1, std::memory_order_relaxed);
        }
        created_.fetch_add(1, std::memory_order_relaxed);
        if (bounded()) {
            trim(entry);
        }
        return created;
    }

    // Whether an entry may go now; exact under the shard's exclusive lock: no new handle can be
    // taken then, so use_count() == 1 means only the registry holds it.
    bool removable(const Entry& entry) const {
        return (limits_.evict_referenced || entry.component.use_count() == 1) &&
               Evictable<T>::check(*entry.component);
    }

    // TTL sweep (at most every ttl/4 unless forced) and LRU down to max_size, sparing `keep`
    // (the entry just created, which the caller is about to return).
    void trim(const Entry* keep) {
        std::vector<Victim> victims;
        {
            detail::LockGuard evict_lock(evict_mutex_);
            const std::int64_t now = now_ns();
            if (limits_.ttl != Duration::zero() &&
                now >= next_sweep_ns_.load(std::memory_order_relaxed)) {
                sweep(now, victims, keep);
            }
            if (limits_.max_size != 0 && size() > limits_.max_size) {
                shrink(victims, keep);
                if (size() > limits_.max_size) {
                    over_capacity_.fetch_add(1, std::memory_order_relaxed);
                }
            }
        }
        notify(victims);
    }

    void sweep(std::int64_t now, std::vector<Victim>& victims, const Entry* keep)
        BULWARK_REQUIRES(evict_mutex_) {
        const std::int64_t ttl = limits_.ttl.count();
        next_sweep_ns_.store(now + std::max<std::int64_t>(ttl / 4, 1), std::memory_order_relaxed);
        for (std::uint32_t i = 0; i < limits_.shards; ++i) {
            Shard& shard = shards_[i];
            detail::LockGuard lock(shard.mutex);
            for (auto it = shard.map.begin(); it != shard.map.end();) {
                const Entry& e = it->second;
                if (&e != keep && now - e.last_used_ns.load(std::memory_order_relaxed) >= ttl &&
                    removable(e)) {
                    victims.push_back(Victim{it->first, e.component, EvictionCause::expired});
                    it = shard.map.erase(it);
                    size_.fetch_sub(1, std::memory_order_relaxed);
                    expired_.fetch_add(1, std::memory_order_relaxed);
                } else {
                    ++it;
                }
            }
        }
    }

    void shrink(std::vector<Victim>& victims, const Entry* keep) BULWARK_REQUIRES(evict_mutex_) {
        // Candidates by last use, oldest first (ties by key, so the order is deterministic).
        std::vector<std::tuple<std::int64_t, std::string, std::uint32_t>> candidates;
        for (std::uint32_t i = 0; i < limits_.shards; ++i) {
            detail::SharedLock lock(shards_[i].mutex);
            for (const auto& kv : shards_[i].map) {
                if (&kv.second != keep && removable(kv.second)) {
                    candidates.emplace_back(kv.second.last_used_ns.load(std::memory_order_relaxed),
                                            kv.first, i);
                }
            }
        }
        std::sort(candidates.begin(), candidates.end());
        // Down to 1/32 below the bound, so that the O(size) scan is paid once per max_size/32
        // creations rather than at each one (exactly the bound below 32 entries).
        const std::size_t target = limits_.max_size - limits_.max_size / 32;
        for (const auto& candidate : candidates) {
            if (size() <= target) {
                break;
            }
            Shard& shard = shards_[std::get<2>(candidate)];
            detail::LockGuard lock(shard.mutex);
            auto it = shard.map.find(std::get<1>(candidate));
            // Re-checked under the exclusive lock: it may have been used, taken or opened since.
            if (it == shard.map.end() || &it->second == keep ||
                it->second.last_used_ns.load(std::memory_order_relaxed) != std::get<0>(candidate) ||
                !removable(it->second)) {
                continue;
            }
            victims.push_back(Victim{it->first, it->second.component, EvictionCause::size});
            shard.map.erase(it);
            size_.fetch_sub(1, std::memory_order_relaxed);
            evicted_for_size_.fetch_add(1, std::memory_order_relaxed);
        }
    }

    std::size_t notify(std::vector<Victim>& victims) {
        for (Victim& v : victims) {
            listeners_.emit(RegistryEviction<T>{v.key, std::move(v.component), v.cause});
        }
        return victims.size();
    }

    // First: the aligned stripes would otherwise leave padding between the fields.
    mutable detail::StripedCounter hits_;
    const Options defaults_;
    const RegistryOptions limits_;
    const Hooks hooks_;
    Clock* const clock_;
    Listeners<RegistryEviction<T>> listeners_;
    std::unique_ptr<Shard[]> shards_;
    // One evictor at a time; lookups never take it.
    detail::Mutex evict_mutex_;
    std::atomic<std::size_t> size_{0};
    std::atomic<std::int64_t> next_sweep_ns_;
    std::atomic<std::uint64_t> created_{0};
    std::atomic<std::uint64_t> expired_{0};
    std::atomic<std::uint64_t> evicted_for_size_{0};
    std::atomic<std::uint64_t> removed_{0};
    std::atomic<std::uint64_t> over_capacity_{0};
};

}  // namespace bulwark

#endif  // BULWARK_REGISTRY_HPP

// CircuitBreakerRegistry: named breakers with shared defaults, enumerable for health and metrics.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_CIRCUIT_BREAKER_REGISTRY_HPP
#define BULWARK_CIRCUIT_BREAKER_REGISTRY_HPP

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <bulwark/circuit_breaker.hpp>
#include <bulwark/clock.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/events.hpp>

namespace bulwark {

// Named breakers with shared defaults, created on first use and kept for the registry's life
// (references stay valid), enumerable for health checks and metrics.
//   bulwark::CircuitBreakerRegistry registry(defaults);
//   auto& email = registry.get("email");            // created with the defaults
//   auto& sms = registry.get("sms", sms_options);   // options apply when it is created
//   registry.for_each([](bulwark::CircuitBreaker& b) { report(b.name(), b.stats()); });
// Thread-safe: lookups of existing breakers take a shared lock.
// For keys that come from traffic (hosts, tenants) and must be bounded, use
// Registry<CircuitBreaker, CircuitBreakerOptions> (registry.hpp): TTL/LRU eviction, shared_ptr
// handles instead of references.
// CircuitBreakerRegistry is BasicCircuitBreakerRegistry<>: a class template only so that its
// code is compiled where it is used (the umbrella stays cheap); use the alias.
template <class Tag = void>
class BasicCircuitBreakerRegistry {
public:
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    explicit BasicCircuitBreakerRegistry(CircuitBreakerOptions defaults = {})
        : BasicCircuitBreakerRegistry(std::move(defaults), default_clock()) {}

    // Throws std::invalid_argument for invalid defaults. The clock must outlive the registry.
    BasicCircuitBreakerRegistry(CircuitBreakerOptions defaults, Clock& clock)
        : defaults_((defaults.validate(), std::move(defaults))), clock_(&clock) {}

    BasicCircuitBreakerRegistry(const BasicCircuitBreakerRegistry&) = delete;
    BasicCircuitBreakerRegistry& operator=(const BasicCircuitBreakerRegistry&) = delete;

    // The breaker named `name`, created with the registry's defaults if new.
    CircuitBreaker& get(const std::string& name) { return get(name, defaults_); }

    // The breaker named `name`, created with `options` if new (an existing breaker keeps the
    // options it was created with). Throws std::invalid_argument for an empty name or invalid
    // options.
    CircuitBreaker& get(const std::string& name, const CircuitBreakerOptions& options) {
        if (name.empty()) {
            detail::throw_invalid_argument("CircuitBreakerRegistry::get: the name is empty");
        }
        {
            detail::SharedLock lock(mutex_);
            auto it = breakers_.find(name);
            if (it != breakers_.end()) {
                return *it->second;
            }
        }
        detail::LockGuard lock(mutex_);
        auto it = breakers_.find(name);
        if (it != breakers_.end()) {
            return *it->second;
        }
        auto breaker = std::make_unique<CircuitBreaker>(name, options, *clock_);
        // The registry's listeners hear every breaker through one forwarder per breaker, so
        // that one id removes a listener from all of them.
        breaker->on_state_change([this](const StateChange& c) { listeners_.emit(c); });
        CircuitBreaker& ref = *breaker;
        breakers_.emplace(name, std::move(breaker));
        return ref;
    }

    // The breaker named `name`, or nullptr.
    CircuitBreaker* find(const std::string& name) const {
        detail::SharedLock lock(mutex_);
        auto it = breakers_.find(name);
        return it == breakers_.end() ? nullptr : it->second.get();
    }

    // Calls f(CircuitBreaker&) for each breaker, in name order. Do not create breakers from f.
    template <class F>
    void for_each(F&& f) const {
        detail::SharedLock lock(mutex_);
        for (const auto& entry : breakers_) {
            f(*entry.second);
        }
    }

    std::vector<std::string> names() const {
        detail::SharedLock lock(mutex_);
        std::vector<std::string> out;
        out.reserve(breakers_.size());
        for (const auto& entry : breakers_) {
            out.push_back(entry.first);
        }
        return out;
    }

    std::size_t size() const {
        detail::SharedLock lock(mutex_);
        return breakers_.size();
    }

    // A listener for every breaker's transitions, existing and future (StateChange::breaker
    // says which). Returns the id that remove_listener() takes; throws std::invalid_argument for
    // an empty listener.
    ListenerId on_state_change(std::function<void(const StateChange&)> listener) {
        if (!listener) {
            detail::throw_invalid_argument(
                "CircuitBreakerRegistry::on_state_change: the listener is empty");
        }
        return listeners_.add(std::move(listener));
    }
    // Stops calling a listener added by on_state_change(), for every breaker; false if the id is
    // unknown here or already removed.
    bool remove_listener(ListenerId id) noexcept { return listeners_.remove(id); }

    const CircuitBreakerOptions& defaults() const noexcept { return defaults_; }

private:
    const CircuitBreakerOptions defaults_;
    Clock* const clock_;
    // Declared before the breakers, whose forwarders use it: destroyed after them.
    Listeners<StateChange> listeners_;
    mutable detail::SharedMutex mutex_;
    std::map<std::string, std::unique_ptr<CircuitBreaker>, std::less<>> breakers_
        BULWARK_GUARDED_BY(mutex_);
};

using CircuitBreakerRegistry = BasicCircuitBreakerRegistry<>;

}  // namespace bulwark

#endif  // BULWARK_CIRCUIT_BREAKER_REGISTRY_HPP

// CacheFallback: serves the last good value per key when a call fails.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_CACHE_HPP
#define BULWARK_CACHE_HPP

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <list>
#include <optional>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include <bulwark/classify.hpp>
#include <bulwark/clock.hpp>
#include <bulwark/context.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/events.hpp>
#include <bulwark/outcome.hpp>
#include <bulwark/policy.hpp>

namespace bulwark {

// A stale value was served in place of a failed call.
struct StaleServed {
    std::string_view operation;
    Duration age{0};           // how old the served value was
    std::exception_ptr error;  // the failure it answered
};

struct CacheFallbackStats {
    std::uint64_t stored = 0;   // good results remembered
    std::uint64_t served = 0;   // failures answered with a remembered value
    std::uint64_t misses = 0;   // failures with nothing (fresh enough) to serve
    std::uint64_t evicted = 0;  // entries dropped to stay within max_entries
    std::size_t size = 0;       // entries held now
};

// Remembers the last good result per key and serves it when a later call for that key fails:
// stale data instead of an error, for as long as `ttl`.
//   bulwark::CacheFallback<std::string, Quote> last_good(/*ttl*/ 5min);
//   Quote q = last_good.execute(symbol, [&] { return quotes.fetch(symbol); });
//   bulwark::Context ctx; last_good.execute(symbol, fetch, ctx); if (ctx.stale()) warn();
//   bulwark::pipeline(last_good.for_key(symbol), breaker, retry).execute(fetch);
// Bounded: at most max_entries keys, the least recently used evicted first; entries older than
// ttl are never served. Only handled failures are answered (handle<E>() narrows them, as for
// every policy). The caller learns that a value was stale from ctx.stale() and on_stale().
// Thread-safe (one mutex; a success copies its value into the cache). Key must be hashable
// and equality-comparable, T copyable. A success for a key already held allocates nothing
// (when T's copy assignment does not); a new key costs a list and a map node.
template <class Key, class T, class Hash = std::hash<Key>, class Equal = std::equal_to<Key>>
class CacheFallback {
    static_assert(std::is_copy_constructible<T>::value,
                  "bulwark::CacheFallback<Key, T>: T must be copyable (the cache keeps a copy).");

public:
    // The policy for one key, to compose in a pipeline. Holds a reference to the cache.
    class Keyed : public PolicyBase<Keyed> {
    public:
        template <class Next>
        auto apply(Context& ctx, Next&& next) {
            return cache_->apply_for(key_, ctx, next);
        }

    private:
        friend class CacheFallback;
        Keyed(CacheFallback* cache, Key key) : cache_(cache), key_(std::move(key)) {}
        CacheFallback* cache_;
        Key key_;
    };

    // Throws std::invalid_argument unless ttl > 0 and max_entries >= 1. The clock must outlive
    // the cache.
    explicit CacheFallback(Duration ttl, std::size_t max_entries = 10000,
                           Clock& clock = default_clock())
        : ttl_(ttl), max_entries_(max_entries), clock_(&clock) {
        if (ttl <= Duration::zero()) {
            detail::throw_invalid_option("CacheFallback.ttl", "must be > 0",
                                         detail::format_duration(ttl));
        }
        if (max_entries == 0) {
            detail::throw_invalid_option("CacheFallback.max_entries", "must be >= 1", "0");
        }
    }

    CacheFallback(const CacheFallback&) = delete;
    CacheFallback& operator=(const CacheFallback&) = delete;

    Keyed for_key(Key key) { return Keyed(this, std::move(key)); }

    // The one-step forms borrow the key for the call (no copy of it).
    template <class F>
    T execute(const Key& key, F&& f) {
        return Borrowed(this, key).execute(std::forward<F>(f));
    }
    template <class F>
    T execute(const Key& key, F&& f, Context& ctx) {
        return Borrowed(this, key).execute(std::forward<F>(f), ctx);
    }
    template <class F>
    Outcome<T> try_execute(const Key& key, F&& f) noexcept {
        return Borrowed(this, key).try_execute(std::forward<F>(f));
    }
    template <class F>
    Outcome<T> try_execute(const Key& key, F&& f, Context& ctx) noexcept {
        return Borrowed(this, key).try_execute(std::forward<F>(f), ctx);
    }

    template <class E>
    CacheFallback& handle() {
        classifier_.template handle<E>();
        return *this;
    }
    CacheFallback& handle_if(std::function<bool(const std::exception_ptr&)> predicate) {
        classifier_.handle_if(std::move(predicate));
        return *this;
    }

    // The remembered value for `key` if it is younger than ttl.
    std::optional<T> peek(const Key& key) const {
        detail::LockGuard lock(mutex_);
        auto it = index_.find(key);
        if (it == index_.end() || clock_->now() - it->second->stored_at >= ttl_) {
            return std::nullopt;
        }
        return it->second->value;
    }

    void put(const Key& key, T value) {
        detail::LockGuard lock(mutex_);
        store(key, std::move(value));
    }

    void erase(const Key& key) {
        detail::LockGuard lock(mutex_);
        auto it = index_.find(key);
        if (it != index_.end()) {
            lru_.erase(it->second);
            index_.erase(it);
        }
    }

    void clear() {
        detail::LockGuard lock(mutex_);
        index_.clear();
        lru_.clear();
    }

    // Called each time a stale value is served, with its age. Returns the id that
    // remove_listener() takes; throws std::invalid_argument for an empty listener.
    ListenerId on_stale(std::function<void(const StaleServed&)> listener) {
        return listeners_.add(std::move(listener));
    }
    // Stops calling a listener; false if the id is unknown here or already removed.
    bool remove_listener(ListenerId id) noexcept { return listeners_.remove(id); }

    CacheFallbackStats stats() const {
        detail::LockGuard lock(mutex_);
        CacheFallbackStats s = stats_;
        s.size = index_.size();
        return s;
    }

private:
    // The policy for one key, borrowed for one call by execute()/try_execute().
    class Borrowed : public PolicyBase<Borrowed> {
    public:
        Borrowed(CacheFallback* cache, const Key& key) noexcept : cache_(cache), key_(&key) {}
        template <class Next>
        auto apply(Context& ctx, Next&& next) {
            return cache_->apply_for(*key_, ctx, next);
        }

    private:
        CacheFallback* cache_;
        const Key* key_;
    };

    struct Entry {
        Key key;
        T value;
        TimePoint stored_at;
    };
    using List = std::list<Entry>;

    template <class Next>
    Outcome<T> apply_for(const Key& key, Context& ctx, Next& next) {
        using O = std::invoke_result_t<Next&, Context&>;
        static_assert(std::is_same<O, Outcome<T>>::value,
                      "bulwark::CacheFallback<Key, T>: T must be the result type of the call.");
        Outcome<T> outcome = next(ctx);
        if (!classifier_.is_failure(outcome)) {
            if (outcome.has_value()) {
                detail::LockGuard lock(mutex_);
                store(key, *outcome);
            }
            return outcome;
        }
        detail::UniqueLock lock(mutex_);
        auto it = index_.find(key);
        const TimePoint now = clock_->now();
        if (it == index_.end() || now - it->second->stored_at >= ttl_) {
            ++stats_.misses;
            return outcome;
        }
        lru_.splice(lru_.begin(), lru_, it->second);
        ++stats_.served;
        Outcome<T> stale = Outcome<T>::from_value(it->second->value);
        const Duration age = now - it->second->stored_at;
        lock.unlock();
        ctx.set_stale(true);
        listeners_.emit_with([&] { return StaleServed{ctx.operation(), age, outcome.error()}; });
        return stale;
    }

    // Under mutex_. Updating a key already held assigns the value in place (which reuses its
    // storage where T's assignment does) and allocates nothing; the time stamp is the coarse
    // clock, so an entry may expire up to one clock tick early.
    void store(const Key& key, const T& value) BULWARK_REQUIRES(mutex_) {
        const TimePoint now = clock_->coarse_now_fast();
        ++stats_.stored;
        auto it = index_.find(key);
        if (it != index_.end()) {
            it->second->value = value;
            it->second->stored_at = now;
            lru_.splice(lru_.begin(), lru_, it->second);
            return;
        }
        lru_.push_front(Entry{key, value, now});
        index_.emplace(key, lru_.begin());
        while (index_.size() > max_entries_) {
            index_.erase(lru_.back().key);
            lru_.pop_back();
            ++stats_.evicted;
        }
    }

    const Duration ttl_;
    const std::size_t max_entries_;
    Clock* const clock_;
    Classifier classifier_;
    mutable detail::Mutex mutex_;
    List lru_ BULWARK_GUARDED_BY(mutex_);  // most recently used first
    std::unordered_map<Key, typename List::iterator, Hash, Equal> index_ BULWARK_GUARDED_BY(mutex_);
    CacheFallbackStats stats_ BULWARK_GUARDED_BY(mutex_);
    Listeners<StaleServed> listeners_;
};

}  // namespace bulwark

#endif  // BULWARK_CACHE_HPP

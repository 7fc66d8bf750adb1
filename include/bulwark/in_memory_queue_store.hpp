// InMemoryQueueStore: a bounded, thread-safe QueueStore kept in memory.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_IN_MEMORY_QUEUE_STORE_HPP
#define BULWARK_IN_MEMORY_QUEUE_STORE_HPP

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <bulwark/config.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/queue_store.hpp>

namespace bulwark {

// A QueueStore in memory: leases work as in a durable store (a worker that never reports gives
// its message back when the lease runs out), but everything is lost with the process.
//   bulwark::InMemoryQueueStore store(/*max_size*/ 1000000);
// push, claim (per message), complete and release are O(log n) under one mutex.
class InMemoryQueueStore final : public QueueStore {
public:
    // `max_size` >= 1: push() beyond it throws QueueFullError.
    explicit InMemoryQueueStore(std::size_t max_size = 10000000) : max_size_(max_size) {
        if (max_size_ == 0) {
            detail::throw_invalid_option("InMemoryQueueStore max_size", "must be >= 1", "0");
        }
    }

    void push(const QueuedMessage& message) override {
        detail::LockGuard lock(mutex_);
        insert(message);
    }

    // All or nothing: a batch that does not fit, or holds a bad id, stores none of its messages.
    void push_all(const std::vector<QueuedMessage>& messages) override {
        detail::LockGuard lock(mutex_);
        if (messages.size() > max_size_ - entries_.size()) {
            full();
        }
        std::size_t done = 0;
        try {
            for (; done < messages.size(); ++done) {
                insert(messages[done]);
            }
        } catch (...) {
            for (std::size_t i = 0; i < done; ++i) {
                erase(find(messages[i].id));
            }
            throw;
        }
    }

    std::vector<QueuedMessage> claim(WallTime now, std::size_t max, Duration lease_for) override {
        std::vector<QueuedMessage> out;
        detail::LockGuard lock(mutex_);
        if (ready_.empty() || ready_.begin()->first > now) {
            return out;
        }
        out.reserve(std::min(max, ready_.size()));
        while (out.size() < max && !ready_.empty() && ready_.begin()->first <= now) {
            auto node = ready_.begin();
            Node& n = *node->second;
            Entry& e = n.second;
            if (e.message.lease == 0) {
                ++leased_;
            }
            e.message.lease = ++last_lease_;
            e.message.lease_until = now + lease_for;
            ++e.message.claims;
            // The node is reused under its new key (no allocation): extract, rekey, reinsert.
            auto handle = ready_.extract(node);
            handle.key() = e.message.lease_until;
            e.ready = ready_.insert(std::move(handle));
            out.push_back(copy(n));
        }
        return out;
    }

    bool complete(std::string_view id, std::uint64_t lease) override {
        detail::LockGuard lock(mutex_);
        const auto it = leased(id, lease);
        if (it == entries_.end()) {
            return false;
        }
        erase(it);
        return true;
    }

    bool release(const QueuedMessage& message) override {
        detail::LockGuard lock(mutex_);
        const auto it = leased(message.id, message.lease);
        if (it == entries_.end()) {
            return false;
        }
        Entry& e = it->second;
        e.message.payload = message.payload;
        e.message.due = message.due;
        e.message.attempts = message.attempts;
        e.message.lease = 0;
        e.message.lease_until = WallTime{};
        --leased_;
        rekey(e, e.message.due);
        return true;
    }

    bool extend(std::string_view id, std::uint64_t lease, WallTime until) override {
        detail::LockGuard lock(mutex_);
        const auto it = leased(id, lease);
        if (it == entries_.end()) {
            return false;
        }
        it->second.message.lease_until = until;
        rekey(it->second, until);
        return true;
    }

    bool remove(std::string_view id) override {
        detail::LockGuard lock(mutex_);
        const auto it = find(id);
        if (it == entries_.end()) {
            return false;
        }
        erase(it);
        return true;
    }

    std::optional<QueuedMessage> get(std::string_view id) const override {
        detail::LockGuard lock(mutex_);
        const auto it = find(id);
        if (it == entries_.end()) {
            return std::nullopt;
        }
        return copy(*it);
    }

    std::size_t size() const override {
        detail::LockGuard lock(mutex_);
        return entries_.size();
    }

    std::optional<WallTime> next_ready() const override {
        detail::LockGuard lock(mutex_);
        if (ready_.empty()) {
            return std::nullopt;
        }
        return ready_.begin()->first;
    }

    std::vector<QueuedMessage> list(std::size_t limit) const override {
        std::vector<QueuedMessage> out;
        detail::LockGuard lock(mutex_);
        for (auto it = ready_.begin(); it != ready_.end() && out.size() < limit; ++it) {
            out.push_back(copy(*it->second));
        }
        return out;
    }

    QueueStoreStats stats() const override {
        detail::LockGuard lock(mutex_);
        return {entries_.size(), leased_};
    }

private:
    struct Entry;
    using Map = std::unordered_map<std::string, Entry>;
    using Node = Map::value_type;

    // A message's id is its key in entries_ only (message.id stays empty): one copy of it, and
    // lookups by string_view go through scratch_ rather than a fresh string.
    struct Entry {
        QueuedMessage message;
        // Its node in ready_: keyed by due while not leased, by lease_until while leased.
        std::multimap<WallTime, Node*>::iterator ready;
    };

    static QueuedMessage copy(const Node& n) {
        QueuedMessage m = n.second.message;
        m.id = n.first;
        return m;
    }

    // Moves e's node in ready_ to `key`, reusing it.
    void rekey(Entry& e, WallTime key) BULWARK_REQUIRES(mutex_) {
        auto handle = ready_.extract(e.ready);
        handle.key() = key;
        e.ready = ready_.insert(std::move(handle));
    }

    Map::const_iterator find(std::string_view id) const BULWARK_REQUIRES(mutex_) {
        scratch_.assign(id.data(), id.size());
        return entries_.find(scratch_);
    }
    Map::iterator find(std::string_view id) BULWARK_REQUIRES(mutex_) {
        scratch_.assign(id.data(), id.size());
        return entries_.find(scratch_);
    }

    [[noreturn]] BULWARK_NOINLINE void full() const {
        throw QueueFullError("bulwark::InMemoryQueueStore is full (max_size " +
                             std::to_string(max_size_) + ")");
    }

    void insert(const QueuedMessage& message) BULWARK_REQUIRES(mutex_) {
        if (message.id.empty()) {
            detail::throw_invalid_argument("bulwark::InMemoryQueueStore::push: empty id");
        }
        if (entries_.size() >= max_size_) {
            full();
        }
        auto [it, inserted] = entries_.try_emplace(message.id);
        if (!inserted) {
            detail::throw_invalid_argument("bulwark::InMemoryQueueStore::push: id '" + message.id +
                                           "' is already queued");
        }
        Entry& e = it->second;
        try {
            e.message.payload = message.payload;
            e.message.due = message.due;
            e.message.enqueued = message.enqueued;
            e.message.attempts = message.attempts;
            e.ready = ready_.emplace(e.message.due, &*it);
        } catch (...) {
            entries_.erase(it);
            throw;
        }
    }

    void erase(Map::iterator it) BULWARK_REQUIRES(mutex_) {
        if (it->second.message.lease != 0) {
            --leased_;
        }
        ready_.erase(it->second.ready);
        entries_.erase(it);
    }

    // The entry leased under `lease`, or end().
    Map::iterator leased(std::string_view id, std::uint64_t lease) BULWARK_REQUIRES(mutex_) {
        if (lease == 0) {
            return entries_.end();
        }
        const auto it = find(id);
        if (it == entries_.end() || it->second.message.lease != lease) {
            return entries_.end();
        }
        return it;
    }

    const std::size_t max_size_;
    mutable detail::Mutex mutex_;
    // Node-based: node addresses stay valid while the map grows.
    Map entries_ BULWARK_GUARDED_BY(mutex_);
    std::multimap<WallTime, Node*> ready_ BULWARK_GUARDED_BY(mutex_);
    mutable std::string scratch_ BULWARK_GUARDED_BY(mutex_);  // the key of the last lookup
    std::size_t leased_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::uint64_t last_lease_ BULWARK_GUARDED_BY(mutex_) = 0;
};

}  // namespace bulwark

#endif  // BULWARK_IN_MEMORY_QUEUE_STORE_HPP

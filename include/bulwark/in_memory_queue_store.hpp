// InMemoryQueueStore: a bounded, thread-safe QueueStore kept in memory.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_IN_MEMORY_QUEUE_STORE_HPP
#define BULWARK_IN_MEMORY_QUEUE_STORE_HPP

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
                erase(messages[i].id);
            }
            throw;
        }
    }

    std::vector<QueuedMessage> claim(WallTime now, std::size_t max, Duration lease_for) override {
        std::vector<QueuedMessage> out;
        detail::LockGuard lock(mutex_);
        while (out.size() < max && !ready_.empty() && ready_.begin()->first <= now) {
            auto node = ready_.begin();
            Entry& e = *node->second;
            ready_.erase(node);
            if (e.message.lease == 0) {
                ++leased_;
            }
            e.message.lease = ++last_lease_;
            e.message.lease_until = now + lease_for;
            ++e.message.claims;
            e.ready = ready_.emplace(e.message.lease_until, &e);
            out.push_back(e.message);
        }
        return out;
    }

    bool complete(std::string_view id, std::uint64_t lease) override {
        detail::LockGuard lock(mutex_);
        Entry* e = leased(id, lease);
        if (e == nullptr) {
            return false;
        }
        erase(e->message.id);
        return true;
    }

    bool release(const QueuedMessage& message) override {
        detail::LockGuard lock(mutex_);
        Entry* e = leased(message.id, message.lease);
        if (e == nullptr) {
            return false;
        }
        ready_.erase(e->ready);
        e->message.payload = message.payload;
        e->message.due = message.due;
        e->message.attempts = message.attempts;
        e->message.lease = 0;
        e->message.lease_until = WallTime{};
        --leased_;
        e->ready = ready_.emplace(e->message.due, e);
        return true;
    }

    bool extend(std::string_view id, std::uint64_t lease, WallTime until) override {
        detail::LockGuard lock(mutex_);
        Entry* e = leased(id, lease);
        if (e == nullptr) {
            return false;
        }
        ready_.erase(e->ready);
        e->message.lease_until = until;
        e->ready = ready_.emplace(until, e);
        return true;
    }

    bool remove(std::string_view id) override {
        detail::LockGuard lock(mutex_);
        return erase(id);
    }

    std::optional<QueuedMessage> get(std::string_view id) const override {
        detail::LockGuard lock(mutex_);
        auto it = entries_.find(std::string(id));
        if (it == entries_.end()) {
            return std::nullopt;
        }
        return it->second.message;
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
            out.push_back(it->second->message);
        }
        return out;
    }

    QueueStoreStats stats() const override {
        detail::LockGuard lock(mutex_);
        return {entries_.size(), leased_};
    }

private:
    struct Entry {
        QueuedMessage message;
        // Its node in ready_: keyed by due while not leased, by lease_until while leased.
        std::multimap<WallTime, Entry*>::iterator ready;
    };

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
        e.message = message;
        e.message.claims = 0;
        e.message.lease = 0;
        e.message.lease_until = WallTime{};
        try {
            e.ready = ready_.emplace(e.message.due, &e);
        } catch (...) {
            entries_.erase(it);
            throw;
        }
    }

    bool erase(std::string_view id) BULWARK_REQUIRES(mutex_) {
        auto it = entries_.find(std::string(id));
        if (it == entries_.end()) {
            return false;
        }
        if (it->second.message.lease != 0) {
            --leased_;
        }
        ready_.erase(it->second.ready);
        entries_.erase(it);
        return true;
    }

    Entry* leased(std::string_view id, std::uint64_t lease) BULWARK_REQUIRES(mutex_) {
        if (lease == 0) {
            return nullptr;
        }
        auto it = entries_.find(std::string(id));
        if (it == entries_.end() || it->second.message.lease != lease) {
            return nullptr;
        }
        return &it->second;
    }

    const std::size_t max_size_;
    mutable detail::Mutex mutex_;
    // Node-based: Entry addresses stay valid while the map grows.
    std::unordered_map<std::string, Entry> entries_ BULWARK_GUARDED_BY(mutex_);
    std::multimap<WallTime, Entry*> ready_ BULWARK_GUARDED_BY(mutex_);
    std::size_t leased_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::uint64_t last_lease_ BULWARK_GUARDED_BY(mutex_) = 0;
};

}  // namespace bulwark

#endif  // BULWARK_IN_MEMORY_QUEUE_STORE_HPP

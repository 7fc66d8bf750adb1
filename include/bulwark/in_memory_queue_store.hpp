// InMemoryQueueStore: a bounded, thread-safe QueueStore kept in memory.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_IN_MEMORY_QUEUE_STORE_HPP
#define BULWARK_IN_MEMORY_QUEUE_STORE_HPP

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include <bulwark/config.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/queue_index.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/queue_store.hpp>

namespace bulwark {

// A QueueStore in memory: leases work as in a durable store (a worker that never reports gives
// its message back when the lease runs out), but everything is lost with the process.
//   bulwark::InMemoryQueueStore store(/*max_size*/ 1000000);
// push, claim (per message), complete and release are O(log n) under one mutex. claim() throws
// std::invalid_argument for a lease_for <= 0.
class InMemoryQueueStore final : public QueueStore {
public:
    // `max_size` >= 1: push() beyond it throws QueueFullError.
    explicit InMemoryQueueStore(std::size_t max_size = 10000000) : max_size_(max_size) {
        if (max_size_ == 0) {
            detail::throw_invalid_option("InMemoryQueueStore max_size", "must be >= 1", "0");
        }
    }

    void push(const QueuedMessage& message) override {
        push_with(message, [&] { return detail::QueueIndex::stage(message, true); });
    }

    // push() of a message this store may take over (no copy of its bytes).
    void push(QueuedMessage&& message) {
        push_with(message, [&] { return detail::QueueIndex::stage(std::move(message), true); });
    }

    // All or nothing: a batch that does not fit, or holds a bad id (a duplicate within it too),
    // stores none of its messages.
    void push_all(const std::vector<QueuedMessage>& messages) override {
        std::vector<detail::QueueIndex::Staged> staged;
        staged.reserve(messages.size());
        for (const QueuedMessage& m : messages) {
            staged.push_back(detail::QueueIndex::stage(m, true));
        }
        detail::LockGuard lock(mutex_);
        if (messages.size() == 1) {
            check(messages.front());  // the common batch: no set to build
        } else {
            std::unordered_set<std::string_view> ids;
            for (const QueuedMessage& m : messages) {
                check(m);
                if (!ids.insert(m.id).second) {
                    detail::check_push_id(call, m, true);  // named twice in the batch
                }
            }
        }
        if (messages.size() > max_size_ - index_.size()) {
            full();
        }
        std::size_t done = 0;
        try {
            for (; done < messages.size(); ++done) {
                index_.try_insert(staged[done]);  // the ids were checked
            }
        } catch (...) {
            for (std::size_t i = 0; i < done; ++i) {
                index_.erase(messages[i].id);
            }
            throw;
        }
    }

    std::vector<QueuedMessage> claim(WallTime now, std::size_t max, Duration lease_for) override {
        const WallTime until =
            detail::lease_end("bulwark::InMemoryQueueStore::claim", now, lease_for);
        std::vector<QueuedMessage> out;
        detail::LockGuard lock(mutex_);
        out.reserve(std::min(max, index_.size()));
        for (const QueuedMessage* m = index_.first_ready(now); m != nullptr && out.size() < max;
             m = index_.first_ready(now)) {
            // The copy first: if it cannot be made, nothing was leased.
            out.push_back(*m);
            const QueuedMessage& leased = index_.lease_first(++last_lease_, until);
            out.back().lease = leased.lease;
            out.back().lease_until = leased.lease_until;
            out.back().claims = leased.claims;
        }
        return out;
    }

    bool complete(std::string_view id, std::uint64_t lease) override {
        detail::QueueIndex::Removed removed;  // freed after the lock is released
        detail::LockGuard lock(mutex_);
        removed = index_.erase_leased(id, lease);
        const bool done = static_cast<bool>(removed);
        index_.keep_spare(removed);
        return done;
    }

    bool release(const QueuedMessage& message) override {
        detail::LockGuard lock(mutex_);
        if (index_.find_leased(message.id, message.lease) == nullptr) {
            return false;
        }
        index_.release(message.id, message.payload, message.due, message.attempts);
        return true;
    }

    bool extend(std::string_view id, std::uint64_t lease, WallTime until) override {
        detail::LockGuard lock(mutex_);
        if (index_.find_leased(id, lease) == nullptr) {
            return false;
        }
        index_.extend(id, until);
        return true;
    }

    bool remove(std::string_view id) override {
        detail::QueueIndex::Removed removed;
        detail::LockGuard lock(mutex_);
        removed = index_.erase(id);
        return static_cast<bool>(removed);
    }

    std::optional<QueuedMessage> get(std::string_view id) const override {
        detail::LockGuard lock(mutex_);
        const QueuedMessage* m = index_.find(id);
        if (m == nullptr) {
            return std::nullopt;
        }
        return *m;
    }

    std::size_t size() const override {
        detail::LockGuard lock(mutex_);
        return index_.size();
    }

    std::optional<WallTime> next_ready() const override {
        detail::LockGuard lock(mutex_);
        return index_.next_ready();
    }

    std::vector<QueuedMessage> list(std::size_t limit) const override {
        std::vector<QueuedMessage> out;
        detail::LockGuard lock(mutex_);
        index_.for_each_ready([&](const QueuedMessage& m) {
            if (out.size() >= limit) {
                return false;
            }
            out.push_back(m);
            return true;
        });
        return out;
    }

    QueueStoreStats stats() const override {
        detail::LockGuard lock(mutex_);
        return {index_.size(), index_.leased()};
    }

private:
    static constexpr const char* call = "bulwark::InMemoryQueueStore::push";

    [[noreturn]] BULWARK_NOINLINE void full() const {
        throw QueueFullError("bulwark::InMemoryQueueStore is full (max_size " +
                             std::to_string(max_size_) + ")");
    }

    // push(): a copy of `message` in a spare node of the index if it has one (made under the
    // lock, but it allocates nothing while the payload fits), else in the nodes `stage()` makes
    // before the lock, so that submitters and workers wait on each other only for the index's
    // own work. One lookup of the id.
    template <class Stage>
    void push_with(const QueuedMessage& message, Stage&& stage) BULWARK_EXCLUDES(mutex_) {
        if (message.id.empty()) {
            detail::check_push_id(call, message, false);
        }
        {
            detail::LockGuard lock(mutex_);
            if (index_.has_spare()) {
                check_room(message);
                detail::QueueIndex::Staged staged = index_.stage_copy(message, true);
                place(staged);
                return;
            }
        }
        detail::QueueIndex::Staged staged = stage();  // may move `message` away
        detail::LockGuard lock(mutex_);
        check_room(detail::QueueIndex::message(staged));
        place(staged);
    }

    void check_room(const QueuedMessage& message) const BULWARK_REQUIRES(mutex_) {
        if (index_.size() >= max_size_) {
            check(message);  // a held id is named first
            full();
        }
    }

    // Inserts `staged`, or keeps its nodes as a spare and throws for a held id.
    void place(detail::QueueIndex::Staged& staged) BULWARK_REQUIRES(mutex_) {
        if (!index_.try_insert(staged)) {
            const std::string id = detail::QueueIndex::message(staged).id;
            index_.keep_spare(staged);
            detail::throw_already_queued(call, id);
        }
    }

    void check(const QueuedMessage& message) const BULWARK_REQUIRES(mutex_) {
        detail::check_push_id(call, message, index_.contains(message.id));
    }

    const std::size_t max_size_;
    mutable detail::Mutex mutex_;
    detail::QueueIndex index_ BULWARK_GUARDED_BY(mutex_);
    std::uint64_t last_lease_ BULWARK_GUARDED_BY(mutex_) = 0;
};

}  // namespace bulwark

#endif  // BULWARK_IN_MEMORY_QUEUE_STORE_HPP

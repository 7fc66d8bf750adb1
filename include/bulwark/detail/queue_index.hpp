// QueueIndex: the messages of a QueueStore by id and in ready order (private).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_QUEUE_INDEX_HPP
#define BULWARK_DETAIL_QUEUE_INDEX_HPP

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <bulwark/config.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/queue_store.hpp>
#include <bulwark/time.hpp>

namespace bulwark {
namespace detail {

// The messages of InMemoryQueueStore and FileQueueStore: by id, and in the order claim() takes
// them. A message's ready key is (due, push number) while it is not leased and (lease_until,
// push number) while it is, so ties between equal times go in push order whatever was released
// or re-leased in between, and a store replayed from its journal orders them as before.
// Checks nothing: its owner validates. Leasing, releasing and extending re-key the ready node in
// place; they allocate only to look up an id longer than any before (std::bad_alloc, before
// anything changes). Not thread-safe: the owner's lock guards it.
class QueueIndex {
public:
    std::size_t size() const noexcept { return entries_.size(); }
    std::size_t leased() const noexcept { return leased_; }
    bool contains(std::string_view id) const { return find_entry(id) != nullptr; }

    const QueuedMessage* find(std::string_view id) const {
        const Entry* e = find_entry(id);
        return e != nullptr ? &e->message : nullptr;
    }

    // The message under lease `lease` (0 never is a lease), or nullptr.
    const QueuedMessage* find_leased(std::string_view id, std::uint64_t lease) const {
        const Entry* e = lease == 0 ? nullptr : find_entry(id);
        return e != nullptr && e->message.lease == lease ? &e->message : nullptr;
    }

    void reserve(std::size_t n) { entries_.reserve(n); }

    // Adds `message` as it is (its lease included: a snapshot replayed), after every message
    // already held in push order. The id must be absent. Strong guarantee.
    void insert(const QueuedMessage& message) {
        const auto it = entries_.try_emplace(message.id).first;
        Entry& e = it->second;
        try {
            e.message = message;
            e.seq = next_seq_;
            e.ready = ready_.emplace(Key{ready_time(e.message), e.seq}, &e).first;
        } catch (...) {
            entries_.erase(it);
            throw;
        }
        ++next_seq_;
        if (e.message.lease != 0) {
            ++leased_;
        }
    }

    // The first message in ready order if it is ready at `now`, else nullptr.
    const QueuedMessage* first_ready(WallTime now) const noexcept {
        if (ready_.empty() || ready_.begin()->first.first > now) {
            return nullptr;
        }
        return &ready_.begin()->second->message;
    }

    // Up to `max` messages ready at `now`, in ready order.
    std::vector<const QueuedMessage*> ready_at(WallTime now, std::size_t max) const {
        std::vector<const QueuedMessage*> out;
        for (auto it = ready_.begin();
             it != ready_.end() && out.size() < max && it->first.first <= now; ++it) {
            out.push_back(&it->second->message);
        }
        return out;
    }

    // Leases the message `id` (held) under `token` until `until`; claims + 1.
    void lease(std::string_view id, std::uint64_t token, WallTime until) {
        Entry& e = *find_entry(id);
        if (e.message.lease == 0) {
            ++leased_;
        }
        e.message.lease = token;
        e.message.lease_until = until;
        ++e.message.claims;
        rekey(e);
    }

    // Ends the lease of `id` (held) with the message's new state: ready again at `due`.
    void release(std::string_view id, std::string payload, WallTime due, std::uint32_t attempts) {
        Entry& e = *find_entry(id);
        if (e.message.lease != 0) {
            --leased_;
        }
        e.message.payload = std::move(payload);
        e.message.due = due;
        e.message.attempts = attempts;
        e.message.lease = 0;
        e.message.lease_until = WallTime{};
        rekey(e);
    }

    // Moves the end of the lease of `id` (held and leased) to `until`.
    void extend(std::string_view id, WallTime until) {
        Entry& e = *find_entry(id);
        e.message.lease_until = until;
        rekey(e);
    }

    bool erase(std::string_view id) {
        auto it = entries_.find(key(id));
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

    std::optional<WallTime> next_ready() const {
        if (ready_.empty()) {
            return std::nullopt;
        }
        return ready_.begin()->first.first;
    }

    // Calls f(const QueuedMessage&) for messages in ready order while it returns true.
    template <class F>
    void for_each_ready(F&& f) const {
        for (const auto& node : ready_) {
            if (!f(node.second->message)) {
                return;
            }
        }
    }

    // Every message in push order (what a journal snapshot writes, so that a replay keeps it).
    std::vector<const QueuedMessage*> in_push_order() const {
        std::vector<const Entry*> entries;
        entries.reserve(entries_.size());
        for (const auto& node : entries_) {
            entries.push_back(&node.second);
        }
        std::sort(entries.begin(), entries.end(),
                  [](const Entry* a, const Entry* b) { return a->seq < b->seq; });
        std::vector<const QueuedMessage*> out;
        out.reserve(entries.size());
        for (const Entry* e : entries) {
            out.push_back(&e->message);
        }
        return out;
    }

private:
    using Key = std::pair<WallTime, std::uint64_t>;  // ready time, push number
    struct Entry;
    using Ready = std::map<Key, Entry*>;
    struct Entry {
        QueuedMessage message;
        std::uint64_t seq = 0;
        typename Ready::iterator ready;
    };

    static WallTime ready_time(const QueuedMessage& m) noexcept {
        return m.lease != 0 ? m.lease_until : m.due;
    }

    // Moves e's ready node to its current key: extracted and reinserted, so nothing allocates.
    void rekey(Entry& e) noexcept {
        auto node = ready_.extract(e.ready);
        node.key() = Key{ready_time(e.message), e.seq};
        e.ready = ready_.insert(std::move(node)).position;
    }

    // The id as a key for the map (C++17 has no heterogeneous unordered lookup): copied into a
    // buffer kept for it, so that a lookup allocates only when an id is longer than any before.
    // The owner's one lock guards every call, const ones included.
    const std::string& key(std::string_view id) const {
        scratch_.assign(id.data(), id.size());
        return scratch_;
    }

    Entry* find_entry(std::string_view id) {
        auto it = entries_.find(key(id));
        return it != entries_.end() ? &it->second : nullptr;
    }
    const Entry* find_entry(std::string_view id) const {
        auto it = entries_.find(key(id));
        return it != entries_.end() ? &it->second : nullptr;
    }

    // Node-based: Entry addresses stay valid while the map grows.
    std::unordered_map<std::string, Entry> entries_;
    Ready ready_;
    std::size_t leased_ = 0;
    std::uint64_t next_seq_ = 0;
    mutable std::string scratch_;
};

// The checks every queue store makes of its arguments, so that they fail alike:
// std::invalid_argument naming the store's call, the field and the value.
[[noreturn]] BULWARK_NOINLINE inline void throw_already_queued(const char* call,
                                                               const std::string& id) {
    throw_invalid_argument(std::string(call) + ": id '" + id + "' is already queued");
}

inline void check_push_id(const char* call, const QueuedMessage& message, bool held) {
    if (message.id.empty()) {
        throw_invalid_argument(std::string(call) + ": empty id");
    }
    if (held) {
        throw_already_queued(call, message.id);
    }
}

// A lease must last: one of zero or less would be claimable again at once (two workers on one
// message), and now + lease_for saturates rather than overflows.
inline WallTime lease_end(const char* call, WallTime now, Duration lease_for) {
    if (lease_for <= Duration::zero()) {
        throw_invalid_argument(std::string(call) + ": lease_for must be > 0 (got " +
                               format_duration(lease_for) + ")");
    }
    return WallTime{saturating_add(now.time_since_epoch(), lease_for)};
}

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_QUEUE_INDEX_HPP

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
// Checks nothing: its owner validates. What runs under the owner's lock allocates nothing but a
// larger bucket array now and then: a message's nodes are made by stage() before the lock and
// freed from the Removed that erase() returns after it; leasing, releasing and extending re-key
// the ready node in place. Not thread-safe: the owner's lock guards it.
class QueueIndex {
    using Key = std::pair<WallTime, std::uint64_t>;  // ready time, push number
    struct Entry;
    using Ready = std::map<Key, Entry*>;
    struct Entry {
        QueuedMessage message;
        std::uint64_t seq = 0;
        Ready::iterator ready;
    };
    // Keyed by a view of the id that the entry holds: a node never moves, so the view stays
    // valid, and the id is kept once.
    using Entries = std::unordered_map<std::string_view, Entry>;

public:
    QueueIndex() { spare_.reserve(max_spare); }
    // Entries point into each other (keys into messages, ready nodes into entries): no copies.
    QueueIndex(const QueueIndex&) = delete;
    QueueIndex& operator=(const QueueIndex&) = delete;

    // A message with its nodes allocated (by stage(), which needs no lock), so that insert()
    // under the owner's lock allocates nothing but a larger bucket array now and then.
    class Staged {
        friend QueueIndex;
        Entries::node_type entry_node_;
        Ready::node_type ready_node_;
    };

    // What erase() took out: its nodes, freed when this is destroyed, which the owner may do
    // after unlocking. False if the id was not held.
    class Removed {
    public:
        explicit operator bool() const noexcept { return !entry_node_.empty(); }

    private:
        friend QueueIndex;
        Entries::node_type entry_node_;
        Ready::node_type ready_node_;
    };

    std::size_t size() const noexcept { return entries_.size(); }
    std::size_t leased() const noexcept { return leased_; }
    bool contains(std::string_view id) const { return entries_.count(id) != 0; }

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

    // `message` in nodes of its own, ready for try_insert(); without lease if `fresh` (what a
    // push stores). Thread-safe (touches no index).
    static Staged stage(QueuedMessage message, bool fresh = false) {
        Staged s;
        {
            Entries one;
            one.try_emplace(std::string_view{});
            s.entry_node_ = one.extract(one.begin());
        }
        {
            Ready one;
            one.emplace(Key{}, nullptr);
            s.ready_node_ = one.extract(one.begin());
        }
        Entry& e = s.entry_node_.mapped();
        e.message = std::move(message);
        clear_lease(s, fresh);
        s.entry_node_.key() = e.message.id;
        s.ready_node_.mapped() = &e;
        return s;
    }

    // Adds the staged message as it is (its lease included: a snapshot replayed), after every
    // message already held in push order, if its id is absent; false (and `s` unchanged) if
    // not. Strong guarantee (only a larger bucket array can fail to allocate).
    bool try_insert(Staged& s) {
        Entry& e = s.entry_node_.mapped();
        // On a throw or a held id, s still owns the node.
        auto placed = entries_.insert(std::move(s.entry_node_));
        if (!placed.inserted) {
            s.entry_node_ = std::move(placed.node);
            return false;
        }
        e.seq = next_seq_;
        s.ready_node_.key() = Key{ready_time(e.message), e.seq};
        e.ready = ready_.insert(std::move(s.ready_node_)).position;  // no allocation: cannot throw
        ++next_seq_;
        if (e.message.lease != 0) {
            ++leased_;
        }
        return true;
    }

    // try_insert() of a message whose id is absent.
    void insert(const QueuedMessage& message) {
        Staged s = stage_copy(message);
        if (!try_insert(s)) {
            keep_spare(s);
        }
    }

    // Nodes of erased messages are kept (up to max_spare) for the messages inserted next, with
    // their payload's buffer: a store whose messages are pushed on one thread and completed on
    // another would otherwise free on one and allocate on the other, and the two would contend
    // for the allocator's lock.
    static constexpr std::size_t max_spare = 256;

    bool has_spare() const noexcept { return !spare_.empty(); }

    // A staged copy of `message`, in a spare node if there is one (then it allocates only for an
    // id or payload larger than the spare held). Without lease if `fresh`.
    Staged stage_copy(const QueuedMessage& message, bool fresh = false) {
        if (spare_.empty()) {
            return stage(message, fresh);
        }
        Staged s;
        s.entry_node_ = std::move(spare_.back().entry_node_);
        s.ready_node_ = std::move(spare_.back().ready_node_);
        spare_.pop_back();
        Entry& e = s.entry_node_.mapped();
        e.message = message;  // reuses the strings' buffers
        clear_lease(s, fresh);
        s.entry_node_.key() = e.message.id;
        s.ready_node_.mapped() = &e;
        return s;
    }

    // Keeps the nodes of `r` (erased) or `s` (not inserted) as spares if there is room; what is
    // not kept is freed with `r` or `s`.
    // Never throws: the room for spares is reserved when the index is made.
    void keep_spare(Removed& r) noexcept {
        if (r && spare_.size() < spare_.capacity()) {
            spare_.push_back(std::move(r));
        }
    }
    void keep_spare(Staged& s) noexcept {
        Removed r;
        r.entry_node_ = std::move(s.entry_node_);
        r.ready_node_ = std::move(s.ready_node_);
        keep_spare(r);
    }

    static const QueuedMessage& message(const Staged& s) noexcept {
        return s.entry_node_.mapped().message;
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
        lease(*find_entry(id), token, until);
    }

    // Leases the first message in ready order (there is one) as lease(); returns it.
    const QueuedMessage& lease_first(std::uint64_t token, WallTime until) {
        Entry& e = *ready_.begin()->second;
        lease(e, token, until);
        return e.message;
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

    Removed erase(std::string_view id) {
        return erase_if(id, [](const QueuedMessage&) { return true; });
    }

    // erase() of the message `id` if it is under lease `lease` (0 never is a lease).
    Removed erase_leased(std::string_view id, std::uint64_t lease) {
        return erase_if(id, [&](const QueuedMessage& m) { return lease != 0 && m.lease == lease; });
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
    static void clear_lease(Staged& s, bool fresh) noexcept {
        if (fresh) {
            QueuedMessage& m = s.entry_node_.mapped().message;
            m.claims = 0;
            m.lease = 0;
            m.lease_until = WallTime{};
        }
    }

    // One lookup: the message `id` out if it is held and pred(message) holds.
    template <class Pred>
    Removed erase_if(std::string_view id, Pred&& pred) {
        Removed out;
        const auto it = entries_.find(id);
        if (it == entries_.end() || !pred(it->second.message)) {
            return out;
        }
        if (it->second.message.lease != 0) {
            --leased_;
        }
        out.ready_node_ = ready_.extract(it->second.ready);
        out.entry_node_ = entries_.extract(it);
        return out;
    }

    static WallTime ready_time(const QueuedMessage& m) noexcept {
        return m.lease != 0 ? m.lease_until : m.due;
    }

    void lease(Entry& e, std::uint64_t token, WallTime until) noexcept {
        if (e.message.lease == 0) {
            ++leased_;
        }
        e.message.lease = token;
        e.message.lease_until = until;
        ++e.message.claims;
        rekey(e);
    }

    // Moves e's ready node to its current key: extracted and reinserted, so nothing allocates.
    void rekey(Entry& e) noexcept {
        auto node = ready_.extract(e.ready);
        node.key() = Key{ready_time(e.message), e.seq};
        e.ready = ready_.insert(std::move(node)).position;
    }

    Entry* find_entry(std::string_view id) {
        const auto it = entries_.find(id);
        return it != entries_.end() ? &it->second : nullptr;
    }
    const Entry* find_entry(std::string_view id) const {
        const auto it = entries_.find(id);
        return it != entries_.end() ? &it->second : nullptr;
    }

    Entries entries_;
    Ready ready_;
    std::vector<Removed> spare_;
    std::size_t leased_ = 0;
    std::uint64_t next_seq_ = 0;
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

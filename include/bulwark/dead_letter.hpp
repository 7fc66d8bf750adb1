// bulwark — resilience policies for C++17 services.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DEAD_LETTER_HPP
#define BULWARK_DEAD_LETTER_HPP

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <bulwark/clock.hpp>
#include <bulwark/config.hpp>
#include <bulwark/context.hpp>
#include <bulwark/detail/random.hpp>
#include <bulwark/detail/throw.hpp>

namespace bulwark {

// Where a dead letter is in its life. pending: waiting for a decision (reprocess or dismiss);
// reprocessed: a reprocess handler resent it; dismissed: someone decided not to resend it.
// Only pending records are ever handed to a reprocess handler or dismissed; the other two are
// final and are the first to be evicted when a store is full.
enum class DeadLetterStatus : std::uint8_t { pending, reprocessed, dismissed };

inline constexpr std::size_t dead_letter_status_count = 3;

inline const char* to_string(DeadLetterStatus status) noexcept {
    switch (status) {
        case DeadLetterStatus::pending:
            return "pending";
        case DeadLetterStatus::reprocessed:
            return "reprocessed";
        case DeadLetterStatus::dismissed:
            return "dismissed";
    }
    return "unknown";
}

// Why a message was dead-lettered, in the brokers' vocabulary (RabbitMQ's x-death reason, SQS's
// redrive): the producer sets it; the store only counts it.
enum class DeadLetterReason : std::uint8_t {
    retries_exhausted,  // every retry failed (the default)
    not_retryable,      // the failure was classified permanent: retrying cannot help
    rejected,           // the consumer or the dependency refused the message outright
    expired,            // its time to live or deadline passed before it was delivered
    delivery_limit,     // it was received or redriven too many times (SQS maxReceiveCount)
    manual,             // an operator or a tool put it here
};

inline constexpr std::size_t dead_letter_reason_count = 6;

inline const char* to_string(DeadLetterReason reason) noexcept {
    switch (reason) {
        case DeadLetterReason::retries_exhausted:
            return "retries_exhausted";
        case DeadLetterReason::not_retryable:
            return "not_retryable";
        case DeadLetterReason::rejected:
            return "rejected";
        case DeadLetterReason::expired:
            return "expired";
        case DeadLetterReason::delivery_limit:
            return "delivery_limit";
        case DeadLetterReason::manual:
            return "manual";
    }
    return "unknown";
}

// One delivery attempt in a dead letter's history: when, over which channel, and what went
// wrong (empty when it succeeded). The producer records its attempts before dead-lettering; each
// reprocess appends one more.
struct DeadLetterAttempt {
    TimePoint at{};
    std::string channel;
    std::string error;
};

// A message that could not be delivered, with what is needed to decide about it and resend it.
//   bulwark::DeadLetter d;  d.type = "sms";  d.payload = bytes;  d.error = "provider 503";
//   std::string id = store.add(d);
// A plain value (thread-compatible). The store owns id, created, status, redrives and note after
// add(); the producer fills the rest.
struct DeadLetter {
    // Unique within a store. Empty = the store assigns one ("dl-" + 16 hex digits). A producer
    // that may retry an add (after a crash, say) sets its own id so that the retry is a no-op.
    std::string id;
    // What kind of message this is ("sms", "email", "order-created"); queries and stats group by
    // it.
    std::string type;
    // The message itself: arbitrary bytes (NULs included), at most the store's max_payload_bytes.
    std::string payload;
    // The last failure, as text.
    std::string error;
    DeadLetterReason reason = DeadLetterReason::retries_exhausted;
    // A triage label set by categorize() ("provider-outage"); empty = uncategorized.
    std::string category;
    // Free labels; categorize() adds to them without duplicating.
    std::vector<std::string> tags;
    // Delivery history, oldest first; a store keeps the newest max_attempts entries.
    std::vector<DeadLetterAttempt> attempts;
    // When the message was first dead-lettered. The zero TimePoint = add() sets it to the store's
    // clock. Retention (purge) counts from it, however often the record is redriven.
    TimePoint created{};
    // The latest attempt. The zero TimePoint = add() takes the newest attempt's time, if any.
    TimePoint last_attempt{};
    // add() always stores pending; then only the store changes it.
    DeadLetterStatus status = DeadLetterStatus::pending;
    // How many times reprocess() handed it to a handler (successfully or not).
    std::uint32_t redrives = 0;
    // Why it was dismissed (the note given to dismiss()).
    std::string note;
};

// Selects dead letters: every filter set must hold (AND); an unset filter matches everything.
//   store.list(bulwark::DeadLetterQuery{}.type("sms").status(bulwark::DeadLetterStatus::pending)
//                  .limit(100));
// Setters chain on a named query (returning a reference) and on a temporary (returning a copy,
// so that `const auto& q = DeadLetterQuery{}.type("sms");` does not dangle). Operations take
// matches in the order they were added. A plain value (thread-compatible).
class DeadLetterQuery {
public:
    static constexpr std::size_t no_limit = std::numeric_limits<std::size_t>::max();

    // Exactly this id (a store finds it without scanning).
    DeadLetterQuery& id(std::string value) & { return set(id_, has_id, std::move(value)); }
    DeadLetterQuery id(std::string value) && { return std::move(id(std::move(value))); }
    DeadLetterQuery& type(std::string value) & { return set(type_, has_type, std::move(value)); }
    DeadLetterQuery type(std::string value) && { return std::move(type(std::move(value))); }
    DeadLetterQuery& status(DeadLetterStatus value) & { return set(status_, value); }
    DeadLetterQuery status(DeadLetterStatus value) && { return std::move(set(status_, value)); }
    DeadLetterQuery& reason(DeadLetterReason value) & { return set(reason_, value); }
    DeadLetterQuery reason(DeadLetterReason value) && { return std::move(set(reason_, value)); }
    // Exactly this category; category("") selects the uncategorized.
    DeadLetterQuery& category(std::string value) & {
        return set(category_, has_category, std::move(value));
    }
    DeadLetterQuery category(std::string value) && { return std::move(category(std::move(value))); }
    // Records that carry this tag; called again, records that carry all the tags given.
    DeadLetterQuery& tag(std::string value) & {
        tags_.push_back(std::move(value));
        return *this;
    }
    DeadLetterQuery tag(std::string value) && { return std::move(tag(std::move(value))); }
    // created < t (strictly).
    DeadLetterQuery& created_before(TimePoint t) & { return set(created_before_, t); }
    DeadLetterQuery created_before(TimePoint t) && { return std::move(set(created_before_, t)); }
    // created > t (strictly).
    DeadLetterQuery& created_after(TimePoint t) & { return set(created_after_, t); }
    DeadLetterQuery created_after(TimePoint t) && { return std::move(set(created_after_, t)); }
    // At most n records (list returns, dismiss dismisses, reprocess hands to its handler…).
    // Default: no limit. limit(0) selects nothing.
    DeadLetterQuery& limit(std::size_t n) & {
        limit_ = n;
        return *this;
    }
    DeadLetterQuery limit(std::size_t n) && { return std::move(limit(n)); }

    // Whether `d` passes every filter (the limit aside).
    bool matches(const DeadLetter& d) const {
        if ((has(has_id) && d.id != id_) || (has(has_type) && d.type != type_) ||
            (status_ && d.status != *status_) || (reason_ && d.reason != *reason_) ||
            (has(has_category) && d.category != category_) ||
            (created_before_ && !(d.created < *created_before_)) ||
            (created_after_ && !(d.created > *created_after_))) {
            return false;
        }
        for (const std::string& wanted : tags_) {
            bool found = false;
            for (const std::string& t : d.tags) {
                if (t == wanted) {
                    found = true;
                    break;
                }
            }
            if (!found) {
                return false;
            }
        }
        return true;
    }

    // For stores: the id filter (a direct lookup instead of a scan) and the limit.
    const std::string* id_filter() const noexcept { return has(has_id) ? &id_ : nullptr; }
    std::size_t max_results() const noexcept { return limit_; }

private:
    // The string filters are plain strings plus a bit each: moving a disengaged
    // std::optional<std::string> trips GCC 12's -Wmaybe-uninitialized under sanitizers.
    enum Bits : std::uint8_t { has_id = 1U, has_type = 2U, has_category = 4U };

    bool has(Bits bit) const noexcept { return (set_ & bit) != 0; }

    DeadLetterQuery& set(std::string& field, Bits bit, std::string value) {
        field = std::move(value);
        set_ = static_cast<std::uint8_t>(set_ | bit);
        return *this;
    }
    template <class T>
    DeadLetterQuery& set(std::optional<T>& field, T value) {
        field = value;
        return *this;
    }

    std::string id_;
    std::string type_;
    std::string category_;
    std::uint8_t set_ = 0;
    std::optional<DeadLetterStatus> status_;
    std::optional<DeadLetterReason> reason_;
    std::vector<std::string> tags_;
    std::optional<TimePoint> created_before_;
    std::optional<TimePoint> created_after_;
    std::size_t limit_ = no_limit;
};

// A store refused an add: it holds max_entries records and every one of them is pending. A pending
// dead letter is never dropped to make room; the caller keeps the message and decides.
class DeadLetterStoreFullError : public std::runtime_error {
public:
    DeadLetterStoreFullError(const std::string& what, std::size_t max_entries)
        : std::runtime_error(what), max_entries_(max_entries) {}

    std::size_t max_entries() const noexcept { return max_entries_; }

private:
    std::size_t max_entries_;
};

// A store refused an add: the payload is larger than its max_payload_bytes.
class DeadLetterPayloadTooLargeError : public std::length_error {
public:
    DeadLetterPayloadTooLargeError(const std::string& what, std::size_t size, std::size_t limit)
        : std::length_error(what), size_(size), limit_(limit) {}

    std::size_t size() const noexcept { return size_; }
    std::size_t limit() const noexcept { return limit_; }

private:
    std::size_t size_;
    std::size_t limit_;
};

// Decides one dead letter during reprocess(): true when it was resent, false (or a throw) when it
// was not. It gets a copy and runs with no store lock held, so it may call the store.
using DeadLetterHandler = std::function<bool(const DeadLetter&)>;

struct ReprocessOptions {
    // Records already redriven this many times are skipped (and counted): the cycle limit that
    // keeps a poison message from being resent forever. 0 = unlimited (default).
    std::uint32_t max_redrives = 0;
    // When set, reprocess stops before the next record once cancel->cancelled() is true; records
    // already handled keep their new state. Must outlive the call.
    const Context* cancel = nullptr;
    // The channel recorded in each attempt that reprocess appends.
    std::string channel = "reprocess";
};

// What one reprocess() call did. matched = resent + failed + skipped_limit + skipped_changed +
// the records not reached because it was cancelled.
struct ReprocessResult {
    std::size_t matched = 0;          // pending matches it set out to handle
    std::size_t resent = 0;           // the handler returned true: now reprocessed
    std::size_t failed = 0;           // the handler returned false or threw: still pending
    std::size_t skipped_limit = 0;    // already redriven max_redrives times: not handed over
    std::size_t skipped_changed = 0;  // dismissed, resolved or removed before their turn
    bool cancelled = false;           // stopped early by options.cancel
    bool already_running = false;     // another reprocess was running: this one did nothing
};

// What a store holds now, and what it has done since it was made.
struct DeadLetterStats {
    // Stored now.
    std::size_t total = 0;
    std::size_t pending = 0;
    std::size_t reprocessed = 0;
    std::size_t dismissed = 0;
    std::array<std::size_t, dead_letter_reason_count> by_reason{};  // indexed by DeadLetterReason
    std::map<std::string, std::size_t> by_type;
    std::map<std::string, std::size_t> by_category;  // "" = uncategorized; sums to total
    // Since the store was made.
    std::uint64_t added = 0;               // records stored by add()
    std::uint64_t duplicate_adds = 0;      // add() of an id already stored: nothing stored
    std::uint64_t evicted = 0;             // resolved records removed to make room
    std::uint64_t purged = 0;              // records removed by purge()
    std::uint64_t resent = 0;              // handler successes in reprocess()
    std::uint64_t redrive_failures = 0;    // handler failures in reprocess()
    std::uint64_t rejected_full = 0;       // adds refused with DeadLetterStoreFullError
    std::uint64_t rejected_too_large = 0;  // adds refused with DeadLetterPayloadTooLargeError

    std::size_t count(DeadLetterStatus status) const noexcept {
        switch (status) {
            case DeadLetterStatus::pending:
                return pending;
            case DeadLetterStatus::reprocessed:
                return reprocessed;
            case DeadLetterStatus::dismissed:
                return dismissed;
        }
        return 0;
    }
    std::size_t count(DeadLetterReason reason) const noexcept {
        const auto i = static_cast<std::size_t>(reason);
        return i < by_reason.size() ? by_reason[i] : 0;
    }
};

// The bounds a store enforces, so that generic code (and the conformance tests) can read them.
struct DeadLetterLimits {
    std::size_t max_entries = 0;        // records held at most
    std::size_t max_payload_bytes = 0;  // larger payloads are refused
    std::size_t max_attempts = 0;       // attempt history kept per record (the newest)
};

// Where dead letters are kept, queried and decided on: the interface users plug stores into.
//   bulwark::DeadLetterStore& store = mem;        // an InMemoryDeadLetterStore, say
//   store.reprocess(bulwark::DeadLetterQuery{}.type("sms"), [&](const auto& d) { return resend(d);
//   });
// The public members are non-virtual and forward to the protected do_* hooks, so default arguments
// stay in one place; an implementation overrides every do_*. Its contract (the conformance suite
// in tests/dead_letter_conformance.hpp checks it): every operation is thread-safe; bulk
// operations return how many records they changed; add() is idempotent by id; a pending record
// is never dropped except by purge(); reprocess() calls its handler with no lock held and runs
// once at a time per store.
class DeadLetterStore {
public:
    virtual ~DeadLetterStore() = default;
    DeadLetterStore(const DeadLetterStore&) = delete;
    DeadLetterStore& operator=(const DeadLetterStore&) = delete;

    // Stores `letter` as pending and returns its id (assigned when empty). created is set from
    // the store's clock when it is the zero TimePoint; the history is trimmed to max_attempts. An
    // id already stored stores nothing and returns the id (counted in duplicate_adds). Throws
    // DeadLetterPayloadTooLargeError, DeadLetterStoreFullError (after evicting the oldest
    // resolved record failed to make room), or std::invalid_argument for an out-of-range reason.
    std::string add(DeadLetter letter) { return do_add(std::move(letter)); }

    // A copy of the record, or nullopt.
    std::optional<DeadLetter> get(std::string_view id) const { return do_get(id); }

    // Copies of the matching records, in the order they were added, at most query.limit.
    std::vector<DeadLetter> list(const DeadLetterQuery& query = {}) const { return do_list(query); }

    // Marks the pending matches (at most query.limit of them) dismissed with `note`; returns how
    // many. Reprocessed and dismissed records are left as they are.
    std::size_t dismiss(const DeadLetterQuery& query, std::string_view note = {}) {
        return do_dismiss(query, note);
    }

    // Sets `category` on the matches (at most query.limit, any status) and adds each of `tags`
    // they do not carry yet; returns how many matched.
    std::size_t categorize(const DeadLetterQuery& query, std::string_view category,
                           const std::vector<std::string>& tags = {}) {
        return do_categorize(query, category, tags);
    }

    // Hands each pending match, oldest added first, to `handler` (see DeadLetterHandler) and
    // records the outcome: true -> reprocessed; false or a throw -> stays pending with the error
    // in a new attempt. Either way redrives + 1 and one attempt appended. query.limit caps how
    // many records are handed over. The matches are chosen when the call starts; one changed
    // before its turn is skipped. A second call while one runs returns already_running at once.
    // Throws std::invalid_argument for an empty handler.
    ReprocessResult reprocess(const DeadLetterQuery& query, const DeadLetterHandler& handler,
                              const ReprocessOptions& options = {}) {
        return do_reprocess(query, handler, options);
    }

    // Removes every record created before `older_than`, whatever its status (retention);
    // returns how many.
    std::size_t purge(TimePoint older_than) { return do_purge(older_than); }

    DeadLetterStats stats() const { return do_stats(); }
    std::size_t size() const { return do_size(); }
    DeadLetterLimits limits() const noexcept { return do_limits(); }

protected:
    DeadLetterStore() = default;

    virtual std::string do_add(DeadLetter letter) = 0;
    virtual std::optional<DeadLetter> do_get(std::string_view id) const = 0;
    virtual std::vector<DeadLetter> do_list(const DeadLetterQuery& query) const = 0;
    virtual std::size_t do_dismiss(const DeadLetterQuery& query, std::string_view note) = 0;
    virtual std::size_t do_categorize(const DeadLetterQuery& query, std::string_view category,
                                      const std::vector<std::string>& tags) = 0;
    virtual ReprocessResult do_reprocess(const DeadLetterQuery& query,
                                         const DeadLetterHandler& handler,
                                         const ReprocessOptions& options) = 0;
    virtual std::size_t do_purge(TimePoint older_than) = 0;
    virtual DeadLetterStats do_stats() const = 0;
    virtual std::size_t do_size() const = 0;
    virtual DeadLetterLimits do_limits() const noexcept = 0;
};

struct InMemoryDeadLetterStoreOptions {
    // Records held at most. When full, add() evicts the oldest added record that is no longer
    // pending; with none, it throws DeadLetterStoreFullError. >= 1. Default 100000.
    std::size_t max_entries = 100000;
    // Larger payloads are refused with DeadLetterPayloadTooLargeError. >= 1. Default 1 MiB.
    std::size_t max_payload_bytes = std::size_t{1} << 20U;
    // Attempt history kept per record: the newest entries (redrives still counts every
    // redrive), so that a record redriven for months stays bounded. >= 1. Default 64.
    std::size_t max_attempts = 64;

    void validate() const {
        if (max_entries == 0) {
            detail::throw_invalid_option("InMemoryDeadLetterStoreOptions.max_entries",
                                         "must be >= 1", "0");
        }
        if (max_payload_bytes == 0) {
            detail::throw_invalid_option("InMemoryDeadLetterStoreOptions.max_payload_bytes",
                                         "must be >= 1", "0");
        }
        if (max_attempts == 0) {
            detail::throw_invalid_option("InMemoryDeadLetterStoreOptions.max_attempts",
                                         "must be >= 1", "0");
        }
    }
};

namespace detail {

// "dl-" + 16 lower-case hex digits.
inline std::string format_dead_letter_id(std::uint64_t bits) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string id(19, '0');
    id[0] = 'd';
    id[1] = 'l';
    id[2] = '-';
    for (std::size_t i = id.size(); i > 3; --i) {
        id[i - 1] = digits[bits & 0xFU];
        bits >>= 4U;
    }
    return id;
}

// Differs between stores and between runs, so that ids from two stores (or from one file store
// before and after a restart) are unlikely to meet; uniqueness within a store is checked anyway.
inline std::uint64_t dead_letter_id_seed(const void* store) noexcept {
    static std::atomic<std::uint64_t> stores{0};
    // relaxed: only needs to differ between calls.
    const std::uint64_t n = stores.fetch_add(1, std::memory_order_relaxed);
    const auto wall =
        static_cast<std::uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
    const auto mono =
        static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    const auto address = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(store));
    return SplitMix64::at(wall ^ (mono << 21U) ^ address, n);
}

// Keeps the newest `max` attempts.
inline void trim_attempts(std::vector<DeadLetterAttempt>& attempts, std::size_t max) {
    if (attempts.size() > max) {
        attempts.erase(attempts.begin(),
                       attempts.begin() + static_cast<std::ptrdiff_t>(attempts.size() - max));
    }
}

[[noreturn]] BULWARK_NOINLINE inline void throw_payload_too_large(std::size_t size,
                                                                  std::size_t limit) {
    throw DeadLetterPayloadTooLargeError("dead letter payload of " + std::to_string(size) +
                                             " bytes exceeds max_payload_bytes (" +
                                             std::to_string(limit) + ")",
                                         size, limit);
}

[[noreturn]] BULWARK_NOINLINE inline void throw_store_full(std::size_t max_entries) {
    throw DeadLetterStoreFullError(
        "dead-letter store is full: max_entries (" + std::to_string(max_entries) +
            ") records are stored and all are pending; none is dropped to make room",
        max_entries);
}

// The records of a store, indexed by id and kept in the order they were added, with the counts
// stats() reports kept up to date as records change. A building block for stores (it does no
// locking and knows no clock): the in-memory store wraps it in a mutex, a durable store can
// rebuild it from its journal. Every change to a stored record's status or category must go
// through set_status() / set_category() so that the counts stay right. Not thread-safe.
class DeadLetterIndex {
public:
    using Seq = std::uint64_t;  // position in add order
    using Records = std::map<Seq, DeadLetter>;
    using iterator = Records::iterator;
    using const_iterator = Records::const_iterator;

    DeadLetterIndex() = default;
    DeadLetterIndex(const DeadLetterIndex&) = delete;
    DeadLetterIndex& operator=(const DeadLetterIndex&) = delete;

    std::size_t size() const noexcept { return records_.size(); }
    iterator begin() noexcept { return records_.begin(); }
    iterator end() noexcept { return records_.end(); }
    const_iterator begin() const noexcept { return records_.begin(); }
    const_iterator end() const noexcept { return records_.end(); }

    iterator find(std::string_view id) {
        const auto at = ids_.find(id);
        return at == ids_.end() ? records_.end() : records_.find(at->second);
    }
    const_iterator find(std::string_view id) const {
        const auto at = ids_.find(id);
        return at == ids_.end() ? records_.end() : records_.find(at->second);
    }
    iterator find_seq(Seq seq) { return records_.find(seq); }
    bool contains(std::string_view id) const { return ids_.count(id) != 0; }

    // Stores `letter` last in add order with its status as given; its id must be non-empty and
    // not stored yet, its reason in range. Strong guarantee.
    iterator insert(DeadLetter letter) {
        const auto it = records_.emplace_hint(records_.end(), next_seq_, std::move(letter));
        const DeadLetter& d = it->second;
        try {
            ids_.emplace(std::string_view(d.id), it->first);
            try {
                if (d.status != DeadLetterStatus::pending) {
                    resolved_.insert(it->first);
                }
                try {
                    increment(by_type_, d.type);
                    try {
                        increment(by_category_, d.category);
                    } catch (...) {
                        decrement(by_type_, d.type);
                        throw;
                    }
                } catch (...) {
                    resolved_.erase(it->first);
                    throw;
                }
            } catch (...) {
                ids_.erase(std::string_view(d.id));
                throw;
            }
        } catch (...) {
            records_.erase(it);
            throw;
        }
        ++next_seq_;
        ++by_status_[static_cast<std::size_t>(d.status)];
        ++by_reason_[static_cast<std::size_t>(d.reason)];
        return it;
    }

    void erase(iterator it) noexcept {
        const DeadLetter& d = it->second;
        --by_status_[static_cast<std::size_t>(d.status)];
        --by_reason_[static_cast<std::size_t>(d.reason)];
        decrement(by_type_, d.type);
        decrement(by_category_, d.category);
        resolved_.erase(it->first);
        ids_.erase(std::string_view(d.id));
        records_.erase(it);
    }

    // Strong guarantee.
    void set_status(iterator it, DeadLetterStatus status) {
        DeadLetter& d = it->second;
        if (d.status == status) {
            return;
        }
        if (status == DeadLetterStatus::pending) {
            resolved_.erase(it->first);
        } else {
            resolved_.insert(it->first);
        }
        --by_status_[static_cast<std::size_t>(d.status)];
        ++by_status_[static_cast<std::size_t>(status)];
        d.status = status;
    }

    // Strong guarantee.
    void set_category(iterator it, std::string_view category) {
        DeadLetter& d = it->second;
        if (d.category == category) {
            return;
        }
        std::string value(category);
        increment(by_category_, value);
        decrement(by_category_, d.category);
        d.category = std::move(value);
    }

    // Removes the oldest added record that is not pending; false when every record is pending.
    bool evict_oldest_resolved() noexcept {
        if (resolved_.empty()) {
            return false;
        }
        erase(records_.find(*resolved_.begin()));
        return true;
    }

    // Calls visit(iterator) for each record matching `query` (the limit aside), in add order,
    // until it returns false. A query with an id is a lookup, not a scan. `visit` must not add
    // or remove records.
    template <class Visit>
    void scan(const DeadLetterQuery& query, Visit&& visit) {
        scan_impl(*this, query, visit);
    }
    template <class Visit>
    void scan(const DeadLetterQuery& query, Visit&& visit) const {
        scan_impl(*this, query, visit);
    }

    // Fills the "stored now" half of `stats`.
    void fill(DeadLetterStats& stats) const {
        stats.total = records_.size();
        stats.pending = by_status_[static_cast<std::size_t>(DeadLetterStatus::pending)];
        stats.reprocessed = by_status_[static_cast<std::size_t>(DeadLetterStatus::reprocessed)];
        stats.dismissed = by_status_[static_cast<std::size_t>(DeadLetterStatus::dismissed)];
        stats.by_reason = by_reason_;
        stats.by_type = by_type_;
        stats.by_category = by_category_;
    }

private:
    using Counts = std::map<std::string, std::size_t>;

    template <class Self, class Visit>
    static void scan_impl(Self& self, const DeadLetterQuery& query, Visit& visit) {
        if (const std::string* id = query.id_filter()) {
            const auto it = self.find(*id);
            if (it != self.records_.end() && query.matches(it->second)) {
                visit(it);
            }
            return;
        }
        for (auto it = self.records_.begin(); it != self.records_.end(); ++it) {
            if (query.matches(it->second) && !visit(it)) {
                return;
            }
        }
    }

    // Changes nothing if it throws.
    static void increment(Counts& counts, const std::string& key) { ++counts[key]; }

    static void decrement(Counts& counts, const std::string& key) noexcept {
        const auto it = counts.find(key);
        if (it != counts.end() && --it->second == 0) {
            counts.erase(it);
        }
    }

    Records records_;
    // Views into the records' ids, which never change while stored (map nodes do not move).
    std::unordered_map<std::string_view, Seq> ids_;
    std::set<Seq> resolved_;  // records not pending, oldest added first: eviction candidates
    Seq next_seq_ = 0;
    std::array<std::size_t, dead_letter_status_count> by_status_{};
    std::array<std::size_t, dead_letter_reason_count> by_reason_{};
    Counts by_type_;
    Counts by_category_;
};

}  // namespace detail

// A DeadLetterStore in memory: bounded, lost when the process exits (a durable file store is
// planned, not built yet).
//   bulwark::InMemoryDeadLetterStore mem(/*max_entries*/ 100000);   // optional clock last
//   std::string id = mem.add(d);  mem.list(bulwark::DeadLetterQuery{}.type("sms"));
// get() by id is O(1) on average; queries without an id scan the records in add order; add,
// dismiss and status changes are O(log n) per record; stats() copies the per-type and
// per-category counts. Full: see InMemoryDeadLetterStoreOptions::max_entries.
// Thread-safe: one mutex guards everything and is never held while a reprocess handler runs.
class InMemoryDeadLetterStore : public DeadLetterStore {
public:
    // Throws std::invalid_argument for max_entries == 0. The clock must outlive the store.
    explicit InMemoryDeadLetterStore(std::size_t max_entries = 100000,
                                     Clock& clock = default_clock())
        : InMemoryDeadLetterStore(make_options(max_entries), clock) {}

    // Throws std::invalid_argument for invalid options. The clock must outlive the store.
    explicit InMemoryDeadLetterStore(InMemoryDeadLetterStoreOptions options,
                                     Clock& clock = default_clock())
        : options_((options.validate(), options)),
          clock_(&clock),
          id_seed_(detail::dead_letter_id_seed(this)) {}

    const InMemoryDeadLetterStoreOptions& options() const noexcept { return options_; }

protected:
    std::string do_add(DeadLetter letter) override {
        if (static_cast<std::size_t>(letter.reason) >= dead_letter_reason_count) {
            detail::throw_invalid_option("DeadLetter.reason", "must be a DeadLetterReason",
                                         std::to_string(static_cast<unsigned>(letter.reason)));
        }
        std::lock_guard<std::mutex> lock(mutex_);
        if (letter.payload.size() > options_.max_payload_bytes) {
            ++rejected_too_large_;
            detail::throw_payload_too_large(letter.payload.size(), options_.max_payload_bytes);
        }
        if (!letter.id.empty() && index_.contains(letter.id)) {
            ++duplicate_adds_;
            return letter.id;
        }
        if (index_.size() >= options_.max_entries) {
            if (!index_.evict_oldest_resolved()) {
                ++rejected_full_;
                detail::throw_store_full(options_.max_entries);
            }
            ++evicted_;
        }
        if (letter.id.empty()) {
            do {
                letter.id =
                    detail::format_dead_letter_id(detail::SplitMix64::at(id_seed_, next_id_++));
            } while (index_.contains(letter.id));
        }
        if (letter.created == TimePoint{}) {
            letter.created = clock_->now();
        }
        detail::trim_attempts(letter.attempts, options_.max_attempts);
        if (letter.last_attempt == TimePoint{}) {
            for (const DeadLetterAttempt& a : letter.attempts) {
                letter.last_attempt = std::max(letter.last_attempt, a.at);
            }
        }
        letter.status = DeadLetterStatus::pending;
        std::string id = letter.id;
        index_.insert(std::move(letter));
        ++added_;
        return id;
    }

    std::optional<DeadLetter> do_get(std::string_view id) const override {
        std::lock_guard<std::mutex> lock(mutex_);
        const auto it = index_.find(id);
        if (it == index_.end()) {
            return std::nullopt;
        }
        return it->second;
    }

    std::vector<DeadLetter> do_list(const DeadLetterQuery& query) const override {
        std::vector<DeadLetter> out;
        const std::size_t limit = query.max_results();
        if (limit == 0) {
            return out;
        }
        std::lock_guard<std::mutex> lock(mutex_);
        index_.scan(query, [&](Index::const_iterator it) {
            out.push_back(it->second);
            return out.size() < limit;
        });
        return out;
    }

    std::size_t do_dismiss(const DeadLetterQuery& query, std::string_view note) override {
        std::size_t changed = 0;
        const std::size_t limit = query.max_results();
        if (limit == 0) {
            return 0;
        }
        const std::string text(note);
        std::lock_guard<std::mutex> lock(mutex_);
        index_.scan(query, [&](Index::iterator it) {
            if (it->second.status == DeadLetterStatus::pending) {
                it->second.note = text;
                index_.set_status(it, DeadLetterStatus::dismissed);
                ++changed;
            }
            return changed < limit;
        });
        return changed;
    }

    std::size_t do_categorize(const DeadLetterQuery& query, std::string_view category,
                              const std::vector<std::string>& tags) override {
        std::size_t matched = 0;
        const std::size_t limit = query.max_results();
        if (limit == 0) {
            return 0;
        }
        std::lock_guard<std::mutex> lock(mutex_);
        index_.scan(query, [&](Index::iterator it) {
            index_.set_category(it, category);
            std::vector<std::string>& have = it->second.tags;
            for (const std::string& tag : tags) {
                if (std::find(have.begin(), have.end(), tag) == have.end()) {
                    have.push_back(tag);
                }
            }
            return ++matched < limit;
        });
        return matched;
    }

    ReprocessResult do_reprocess(const DeadLetterQuery& query, const DeadLetterHandler& handler,
                                 const ReprocessOptions& options) override {
        if (!handler) {
            detail::throw_invalid_argument("bulwark::DeadLetterStore::reprocess: empty handler");
        }
        ReprocessResult result;
        std::vector<Index::Seq> batch;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (reprocessing_) {
                result.already_running = true;
                return result;
            }
            const std::size_t limit = query.max_results();
            if (limit != 0) {
                index_.scan(query, [&](Index::const_iterator it) {
                    if (it->second.status != DeadLetterStatus::pending) {
                        return true;
                    }
                    ++result.matched;
                    if (options.max_redrives != 0 && it->second.redrives >= options.max_redrives) {
                        // Not handed over, so it does not use up the limit: a batch would
                        // otherwise stall behind records that reached the cycle limit.
                        ++result.skipped_limit;
                        return true;
                    }
                    batch.push_back(it->first);
                    return batch.size() < limit;
                });
            }
            reprocessing_ = true;
        }
        // Clears the flag however the loop ends (a throwing clock or allocation included).
        struct Running {
            InMemoryDeadLetterStore* store;
            ~Running() {
                std::lock_guard<std::mutex> lock(store->mutex_);
                store->reprocessing_ = false;
            }
        } running{this};

        for (const Index::Seq seq : batch) {
            if (options.cancel != nullptr && options.cancel->cancelled()) {
                result.cancelled = true;
                break;
            }
            DeadLetter copy;
            {
                std::lock_guard<std::mutex> lock(mutex_);
                const auto it = index_.find_seq(seq);
                if (it == index_.end() || it->second.status != DeadLetterStatus::pending) {
                    ++result.skipped_changed;
                    continue;
                }
                copy = it->second;
            }
            bool resent = false;
            std::string error;
            try {
                resent = handler(copy);
                if (!resent) {
                    error = "handler returned false";
                }
            } catch (const std::exception& e) {
                error = e.what();
            } catch (...) {
                error = "handler threw an exception not derived from std::exception";
            }
            std::lock_guard<std::mutex> lock(mutex_);
            const TimePoint now = clock_->now();
            // Recorded if the record is still here. A success wins over a dismiss made while
            // the handler ran: the message was resent.
            const auto it = index_.find_seq(seq);
            if (it != index_.end()) {
                DeadLetter& d = it->second;
                d.attempts.push_back(DeadLetterAttempt{now, options.channel, std::move(error)});
                detail::trim_attempts(d.attempts, options_.max_attempts);
                d.last_attempt = now;
                ++d.redrives;
                if (resent) {
                    index_.set_status(it, DeadLetterStatus::reprocessed);
                }
            }
            if (resent) {
                ++result.resent;
                ++resent_;
            } else {
                ++result.failed;
                ++redrive_failures_;
            }
        }
        return result;
    }

    std::size_t do_purge(TimePoint older_than) override {
        std::lock_guard<std::mutex> lock(mutex_);
        std::size_t removed = 0;
        for (auto it = index_.begin(); it != index_.end();) {
            const auto next = std::next(it);
            if (it->second.created < older_than) {
                index_.erase(it);
                ++removed;
            }
            it = next;
        }
        purged_ += removed;
        return removed;
    }

    DeadLetterStats do_stats() const override {
        DeadLetterStats s;
        std::lock_guard<std::mutex> lock(mutex_);
        index_.fill(s);
        s.added = added_;
        s.duplicate_adds = duplicate_adds_;
        s.evicted = evicted_;
        s.purged = purged_;
        s.resent = resent_;
        s.redrive_failures = redrive_failures_;
        s.rejected_full = rejected_full_;
        s.rejected_too_large = rejected_too_large_;
        return s;
    }

    std::size_t do_size() const override {
        std::lock_guard<std::mutex> lock(mutex_);
        return index_.size();
    }

    DeadLetterLimits do_limits() const noexcept override {
        return DeadLetterLimits{options_.max_entries, options_.max_payload_bytes,
                                options_.max_attempts};
    }

private:
    using Index = detail::DeadLetterIndex;

    static InMemoryDeadLetterStoreOptions make_options(std::size_t max_entries) {
        InMemoryDeadLetterStoreOptions o;
        o.max_entries = max_entries;
        return o;
    }

    const InMemoryDeadLetterStoreOptions options_;
    Clock* const clock_;
    const std::uint64_t id_seed_;

    mutable std::mutex mutex_;
    Index index_;                // guarded by mutex_
    std::uint64_t next_id_ = 0;  // guarded by mutex_
    bool reprocessing_ = false;  // guarded by mutex_
    std::uint64_t added_ = 0;    // guarded by mutex_, as are the counters below
    std::uint64_t duplicate_adds_ = 0;
    std::uint64_t evicted_ = 0;
    std::uint64_t purged_ = 0;
    std::uint64_t resent_ = 0;
    std::uint64_t redrive_failures_ = 0;
    std::uint64_t rejected_full_ = 0;
    std::uint64_t rejected_too_large_ = 0;
};

}  // namespace bulwark

#endif  // BULWARK_DEAD_LETTER_HPP

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
#include <new>
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
    WallTime at{};
    std::string channel;
    std::string error;
};

// A message that could not be delivered, with what is needed to decide about it and resend it.
//   bulwark::DeadLetter d;  d.type = "sms";  d.payload = bytes;  d.error = "provider 503";
//   std::string id = store.add(d);
// A plain value (thread-compatible). The producer fills it; add() assigns an empty id, sets a
// zero created / last_attempt and makes it pending; after add() only the store changes status,
// category, tags, attempts, redrives and note.
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
    // When the message was first dead-lettered, in wall-clock time (it is stored, and must mean
    // the same after a restart or on another host). The zero WallTime = add() sets it from the
    // store's clock (Clock::wall_now()). Retention (purge) counts from it, however often the
    // record is redriven.
    WallTime created{};
    // The latest attempt. The zero WallTime = add() takes the newest attempt's time, if any.
    WallTime last_attempt{};
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
    DeadLetterQuery& created_before(WallTime t) & { return set(created_before_, t); }
    DeadLetterQuery created_before(WallTime t) && { return std::move(set(created_before_, t)); }
    // created > t (strictly).
    DeadLetterQuery& created_after(WallTime t) & { return set(created_after_, t); }
    DeadLetterQuery created_after(WallTime t) && { return std::move(set(created_after_, t)); }
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
    std::optional<WallTime> created_before_;
    std::optional<WallTime> created_after_;
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

// A store refused an add: the record is larger than one of its limits — max_payload_bytes for
// the payload, max_text_bytes for everything else together (id, type, error, category, tags,
// note, attempts). limit_name() says which; no byte of the record is in the message.
class DeadLetterTooLargeError : public std::length_error {
public:
    DeadLetterTooLargeError(const std::string& what, const char* limit_name, std::size_t size,
                            std::size_t limit)
        : std::length_error(what), limit_name_(limit_name), size_(size), limit_(limit) {}

    // "max_payload_bytes" or "max_text_bytes".
    const char* limit_name() const noexcept { return limit_name_; }
    std::size_t size() const noexcept { return size_; }
    std::size_t limit() const noexcept { return limit_; }

private:
    const char* limit_name_;
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
    // Per (type, reason), as a broker counts dead letters per (source queue, reason).
    std::map<std::pair<std::string, DeadLetterReason>, std::size_t> by_type_and_reason;
    // Since the store was made.
    std::uint64_t added = 0;               // records stored by add()
    std::uint64_t duplicate_adds = 0;      // add() of an id already stored: nothing stored
    std::uint64_t evicted = 0;             // resolved records removed to make room
    std::uint64_t purged = 0;              // records removed by purge()
    std::uint64_t resent = 0;              // handler successes in reprocess()
    std::uint64_t redrive_failures = 0;    // handler failures in reprocess()
    std::uint64_t rejected_full = 0;       // adds refused with DeadLetterStoreFullError
    std::uint64_t rejected_too_large = 0;  // adds refused with DeadLetterTooLargeError

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
    std::size_t max_text_bytes = 0;     // all the other strings of a record together
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
    // the store's wall clock when it is the zero WallTime; the history is trimmed to
    // max_attempts. An id already stored stores nothing and returns the id (counted in
    // duplicate_adds). When the store is full, the oldest resolved record is evicted once the
    // new one is stored. Throws DeadLetterTooLargeError, DeadLetterStoreFullError (full, and
    // every record pending), or std::invalid_argument for an out-of-range reason; when it
    // throws, nothing was stored or evicted.
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
    // in a new attempt (its text cut to 1 KiB). Either way redrives + 1 and one attempt appended.
    // query.limit caps how many records are handed over. The matches are chosen when the call
    // starts; one that no longer matches at its turn (dismissed, recategorized, removed) is
    // skipped. A second call while one runs returns already_running at once. At least once: if
    // recording a success fails (an allocation), the record stays pending and may be resent.
    // Throws std::invalid_argument for an empty handler.
    ReprocessResult reprocess(const DeadLetterQuery& query, const DeadLetterHandler& handler,
                              const ReprocessOptions& options = {}) {
        return do_reprocess(query, handler, options);
    }

    // Removes every record created before `older_than`, whatever its status (retention);
    // returns how many.
    std::size_t purge(WallTime older_than) { return do_purge(older_than); }

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
    virtual std::size_t do_purge(WallTime older_than) = 0;
    virtual DeadLetterStats do_stats() const = 0;
    virtual std::size_t do_size() const = 0;
    virtual DeadLetterLimits do_limits() const noexcept = 0;
};

struct InMemoryDeadLetterStoreOptions {
    // Records held at most. When full, add() evicts the oldest added record that is no longer
    // pending; with none, it throws DeadLetterStoreFullError. >= 1. Default 100000.
    std::size_t max_entries = 100000;
    // Larger payloads are refused with DeadLetterTooLargeError. >= 1. Default 1 MiB.
    std::size_t max_payload_bytes = std::size_t{1} << 20U;
    // All the other strings of a record together (id, type, error, category, tags, note, the
    // attempts' channels and errors) above this are refused with DeadLetterTooLargeError, so
    // that a record's size is bounded by max_payload_bytes + max_text_bytes. >= 1. Default
    // 64 KiB. (categorize() is not limited: an operator chooses what it adds.)
    std::size_t max_text_bytes = std::size_t{64} << 10U;
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
        if (max_text_bytes == 0) {
            detail::throw_invalid_option("InMemoryDeadLetterStoreOptions.max_text_bytes",
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

[[noreturn]] BULWARK_NOINLINE inline void throw_too_large(const char* what, const char* limit_name,
                                                          std::size_t size, std::size_t limit) {
    throw DeadLetterTooLargeError(std::string("dead letter ") + what + " of " +
                                      std::to_string(size) + " bytes exceeds " + limit_name + " (" +
                                      std::to_string(limit) + ")",
                                  limit_name, size, limit);
}

// The bytes of a record that max_text_bytes bounds: every string but the payload.
inline std::size_t dead_letter_text_bytes(const DeadLetter& d) noexcept {
    std::size_t n =
        d.id.size() + d.type.size() + d.error.size() + d.category.size() + d.note.size();
    for (const std::string& t : d.tags) {
        n += t.size();
    }
    for (const DeadLetterAttempt& a : d.attempts) {
        n += a.channel.size() + a.error.size();
    }
    return n;
}

// A redrive's error text is cut to this, so that a record redriven for months stays bounded
// (max_attempts of them at most).
inline constexpr std::size_t max_redrive_error_bytes = 1024;

inline std::string redrive_error_text(std::string text) {
    if (text.size() > max_redrive_error_bytes) {
        text.resize(max_redrive_error_bytes - 3);
        text += "...";
    }
    return text;
}

// What a reprocess handler said about one record: resent, or why not (cut to 1 KiB).
struct RedriveOutcome {
    bool resent = false;
    std::string error;  // empty when resent
};

// Runs `handler` on `copy`: false or a throw is a failure, with its text; nothing escapes but an
// allocation failure while recording the text.
inline RedriveOutcome run_redrive_handler(const DeadLetterHandler& handler,
                                          const DeadLetter& copy) {
    RedriveOutcome outcome;
    try {
        outcome.resent = handler(copy);
        if (!outcome.resent) {
            outcome.error = "handler returned false";
        }
    } catch (const std::exception& e) {
        outcome.error = e.what();
    } catch (...) {
        outcome.error = "handler threw an exception not derived from std::exception";
    }
    outcome.error = redrive_error_text(std::move(outcome.error));
    return outcome;
}

[[noreturn]] BULWARK_NOINLINE inline void throw_store_full(std::size_t max_entries) {
    throw DeadLetterStoreFullError(
        "dead-letter store is full: max_entries (" + std::to_string(max_entries) +
            ") records are stored and all are pending; none is dropped to make room",
        max_entries);
}

// The records of a store, indexed by id and kept in the order they were added, with the counts
// stats() reports kept up to date as records change. A building block for stores (it does no
// locking and knows no clock): the in-memory store wraps it in a mutex, a durable store rebuilds
// it from its journal. Records are read through const iterators and changed only through the
// members below, which keep the id index and the counts right. Not thread-safe.
// A class template only so that its code is compiled where a store is used (the header stays
// cheap to include); use the DeadLetterIndex alias.
template <class Tag = void>
class BasicDeadLetterIndex {
public:
    using Seq = std::uint64_t;  // position in add order
    using Records = std::map<Seq, DeadLetter>;
    using const_iterator = typename Records::const_iterator;

    BasicDeadLetterIndex() = default;
    BasicDeadLetterIndex(const BasicDeadLetterIndex&) = delete;
    BasicDeadLetterIndex& operator=(const BasicDeadLetterIndex&) = delete;

    std::size_t size() const noexcept { return records_.size(); }
    const_iterator begin() const noexcept { return records_.begin(); }
    const_iterator end() const noexcept { return records_.end(); }

    const_iterator find(std::string_view id) const {
        const auto at = ids_.find(id);
        return at == ids_.end() ? records_.end() : records_.find(at->second);
    }
    const_iterator find_seq(Seq seq) const { return records_.find(seq); }
    bool contains(std::string_view id) const { return ids_.count(id) != 0; }
    bool has_resolved() const noexcept { return !resolved_.empty(); }

    // Stores `letter` last in add order with its status as given. Throws std::invalid_argument
    // for an empty or already stored id, or an out-of-range status or reason (a corrupt journal
    // replayed, say). Strong guarantee.
    const_iterator insert(DeadLetter letter) {
        if (letter.id.empty() || contains(letter.id)) {
            throw_invalid_argument("bulwark::DeadLetterIndex: a record needs an id not stored yet");
        }
        if (static_cast<std::size_t>(letter.status) >= dead_letter_status_count ||
            static_cast<std::size_t>(letter.reason) >= dead_letter_reason_count) {
            throw_invalid_argument("bulwark::DeadLetterIndex: status or reason out of range");
        }
        // Every allocation first, then the noexcept bookkeeping.
        auto type_count = by_type_.try_emplace(letter.type, 0).first;
        auto category_count = by_category_.try_emplace(letter.category, 0).first;
        auto pair_count =
            by_type_and_reason_.try_emplace(std::make_pair(letter.type, letter.reason), 0).first;
        try {
            const auto it = records_.emplace_hint(records_.end(), next_seq_, std::move(letter));
            try {
                const DeadLetter& d = it->second;
                ids_.emplace(std::string_view(d.id), it->first);
                try {
                    if (d.status != DeadLetterStatus::pending) {
                        resolved_.insert(it->first);
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
            ++type_count->second;
            ++category_count->second;
            ++pair_count->second;
            ++by_status_[static_cast<std::size_t>(it->second.status)];
            ++by_reason_[static_cast<std::size_t>(it->second.reason)];
            return it;
        } catch (...) {
            drop_if_zero(by_type_, type_count);
            drop_if_zero(by_category_, category_count);
            drop_if_zero(by_type_and_reason_, pair_count);
            throw;
        }
    }

    void erase(const_iterator it) noexcept {
        const DeadLetter& d = it->second;
        --by_status_[static_cast<std::size_t>(d.status)];
        --by_reason_[static_cast<std::size_t>(d.reason)];
        decrement(by_type_, d.type);
        decrement(by_category_, d.category);
        decrement(by_type_and_reason_, std::make_pair(d.type, d.reason));
        resolved_.erase(it->first);
        ids_.erase(std::string_view(d.id));
        records_.erase(it);
    }

    // Strong guarantee.
    void set_status(const_iterator it, DeadLetterStatus status) {
        DeadLetter& d = mutable_record(it);
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

    // Dismisses a pending record with `note`. Strong guarantee.
    void dismiss(const_iterator it, std::string note) {
        set_status(it, DeadLetterStatus::dismissed);
        mutable_record(it).note = std::move(note);  // a move: cannot throw
    }

    // Sets the category and adds each tag the record does not carry yet. Strong guarantee.
    void categorize(const_iterator it, std::string_view category,
                    const std::vector<std::string>& tags) {
        DeadLetter& d = mutable_record(it);
        std::vector<std::string> merged = d.tags;
        for (const std::string& tag : tags) {
            if (std::find(merged.begin(), merged.end(), tag) == merged.end()) {
                merged.push_back(tag);
            }
        }
        if (d.category != category) {
            std::string value(category);
            increment(by_category_, value);
            decrement(by_category_, d.category);
            d.category = std::move(value);
        }
        d.tags.swap(merged);
    }

    // Records one redrive: the outcome first (a success must not be lost to a failed append),
    // then the attempt, best effort, keeping the newest `max_attempts`. Throws only if the status
    // change cannot be made, and then changes nothing.
    void record_redrive(const_iterator it, bool resent, DeadLetterAttempt attempt,
                        std::size_t max_attempts) {
        if (resent) {
            set_status(it, DeadLetterStatus::reprocessed);
        }
        DeadLetter& d = mutable_record(it);
        ++d.redrives;
        d.last_attempt = attempt.at;
        try {
            if (d.attempts.size() >= max_attempts && !d.attempts.empty()) {
                d.attempts.erase(d.attempts.begin());
            }
            d.attempts.push_back(std::move(attempt));
        } catch (const std::bad_alloc&) {
            // The history is diagnostic; the outcome above is what counts.
        }
    }

    // The oldest added record that is not pending — the next to evict — or end().
    const_iterator oldest_resolved() const noexcept {
        return resolved_.empty() ? records_.end() : records_.find(*resolved_.begin());
    }

    // Removes the oldest added record that is not pending; false when every record is pending.
    bool evict_oldest_resolved() noexcept {
        const const_iterator it = oldest_resolved();
        if (it == records_.end()) {
            return false;
        }
        erase(it);
        return true;
    }

    // Calls visit(const_iterator) for each record matching `query` (the limit aside), in add
    // order, until it returns false. A query with an id is a lookup, not a scan. `visit` may
    // change the record it is given through the members above, but must not add or remove
    // records.
    template <class Visit>
    void scan(const DeadLetterQuery& query, Visit&& visit) const {
        if (const std::string* id = query.id_filter()) {
            const auto it = find(*id);
            if (it != records_.end() && query.matches(it->second)) {
                visit(it);
            }
            return;
        }
        for (auto it = records_.begin(); it != records_.end(); ++it) {
            if (query.matches(it->second) && !visit(it)) {
                return;
            }
        }
    }

    // The pending matches a reprocess hands over, in add order, at most query.limit of them;
    // counts them in result.matched. A record already redriven max_redrives times (0 = no limit)
    // is counted in skipped_limit, not handed over, and does not use up the limit: a batch would
    // otherwise stall behind records that reached the cycle limit.
    std::vector<Seq> select_redrive(const DeadLetterQuery& query, std::uint32_t max_redrives,
                                    ReprocessResult& result) const {
        std::vector<Seq> batch;
        const std::size_t limit = query.max_results();
        if (limit == 0) {
            return batch;
        }
        scan(query, [&](const_iterator it) {
            if (it->second.status != DeadLetterStatus::pending) {
                return true;
            }
            ++result.matched;
            if (max_redrives != 0 && it->second.redrives >= max_redrives) {
                ++result.skipped_limit;
                return true;
            }
            batch.push_back(it->first);
            return batch.size() < limit;
        });
        return batch;
    }

    // The record `seq` if a redrive may still hand it over — pending, and still selected by
    // `query` (not dismissed, recategorized or removed since the batch was chosen) — else end().
    const_iterator find_redrivable(Seq seq, const DeadLetterQuery& query) const {
        const auto it = records_.find(seq);
        if (it == records_.end() || it->second.status != DeadLetterStatus::pending ||
            !query.matches(it->second)) {
            return records_.end();
        }
        return it;
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
        stats.by_type_and_reason = by_type_and_reason_;
    }

private:
    // The index owns the records; only its members change them, through this.
    DeadLetter& mutable_record(const_iterator it) noexcept {
        return const_cast<DeadLetter&>(it->second);
    }

    template <class Counts, class Key>
    static void increment(Counts& counts, const Key& key) {
        ++counts[key];  // changes nothing if it throws
    }

    template <class Counts, class Key>
    static void decrement(Counts& counts, const Key& key) noexcept {
        const auto it = counts.find(key);
        if (it != counts.end() && --it->second == 0) {
            counts.erase(it);
        }
    }

    template <class Counts>
    static void drop_if_zero(Counts& counts, typename Counts::iterator it) noexcept {
        if (it->second == 0) {
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
    std::map<std::string, std::size_t> by_type_;
    std::map<std::string, std::size_t> by_category_;
    std::map<std::pair<std::string, DeadLetterReason>, std::size_t> by_type_and_reason_;
};

using DeadLetterIndex = BasicDeadLetterIndex<>;

// What every store does to a letter before storing it: checks the reason and the size limits,
// sets created (from `now`) and last_attempt when they are zero, trims the history to
// max_attempts and makes it pending. The id is the caller's. Throws DeadLetterTooLargeError or
// std::invalid_argument.
inline void prepare_dead_letter(DeadLetter& letter, const DeadLetterLimits& limits, WallTime now) {
    if (static_cast<std::size_t>(letter.reason) >= dead_letter_reason_count) {
        throw_invalid_option("DeadLetter.reason", "must be a DeadLetterReason",
                             std::to_string(static_cast<unsigned>(letter.reason)));
    }
    if (letter.payload.size() > limits.max_payload_bytes) {
        throw_too_large("payload", "max_payload_bytes", letter.payload.size(),
                        limits.max_payload_bytes);
    }
    trim_attempts(letter.attempts, limits.max_attempts);
    const std::size_t text = dead_letter_text_bytes(letter);
    if (text > limits.max_text_bytes) {
        throw_too_large("text", "max_text_bytes", text, limits.max_text_bytes);
    }
    if (letter.created == WallTime{}) {
        letter.created = now;
    }
    if (letter.last_attempt == WallTime{}) {
        for (const DeadLetterAttempt& a : letter.attempts) {
            letter.last_attempt = std::max(letter.last_attempt, a.at);
        }
    }
    letter.status = DeadLetterStatus::pending;
}

}  // namespace detail

// A DeadLetterStore in memory: bounded, lost when the process exits.
//   bulwark::InMemoryDeadLetterStore mem(/*max_entries*/ 100000);   // optional clock last
//   std::string id = mem.add(d);  mem.list(bulwark::DeadLetterQuery{}.type("sms"));
// get() by id is a hash lookup and a map search (O(log n)); queries without an id scan the
// records in add order; add, dismiss and status changes are O(log n) per record; stats() copies
// the per-type and per-category counts. Full: see InMemoryDeadLetterStoreOptions::max_entries.
// Thread-safe: one mutex guards everything and is never held while a reprocess handler runs.
// InMemoryDeadLetterStore is BasicInMemoryDeadLetterStore<>: a class template only so that its
// code is compiled where it is used; use the alias.
template <class Tag = void>
class BasicInMemoryDeadLetterStore : public DeadLetterStore {
public:
    // Throws std::invalid_argument for max_entries == 0. The clock must outlive the store.
    explicit BasicInMemoryDeadLetterStore(std::size_t max_entries = 100000,
                                          Clock& clock = default_clock())
        : BasicInMemoryDeadLetterStore(make_options(max_entries), clock) {}

    // Throws std::invalid_argument for invalid options. The clock must outlive the store.
    explicit BasicInMemoryDeadLetterStore(InMemoryDeadLetterStoreOptions options,
                                          Clock& clock = default_clock())
        : options_((options.validate(), options)),
          clock_(&clock),
          id_seed_(detail::dead_letter_id_seed(this)) {}

    const InMemoryDeadLetterStoreOptions& options() const noexcept { return options_; }

protected:
    std::string do_add(DeadLetter letter) override {
        std::lock_guard<std::mutex> lock(mutex_);
        try {
            detail::prepare_dead_letter(letter, do_limits(), clock_->wall_now());
        } catch (const DeadLetterTooLargeError&) {
            ++rejected_too_large_;
            throw;
        }
        if (!letter.id.empty() && index_.contains(letter.id)) {
            ++duplicate_adds_;
            return letter.id;
        }
        const bool full = index_.size() >= options_.max_entries;
        if (full && !index_.has_resolved()) {
            ++rejected_full_;
            detail::throw_store_full(options_.max_entries);
        }
        if (letter.id.empty()) {
            do {
                letter.id =
                    detail::format_dead_letter_id(detail::SplitMix64::at(id_seed_, next_id_++));
            } while (index_.contains(letter.id));
        }
        std::string id = letter.id;
        index_.insert(std::move(letter));
        // Evicted only once the new record is in (it is pending, so it is not the one evicted):
        // an add that throws has removed nothing.
        if (full && index_.evict_oldest_resolved()) {
            ++evicted_;
        }
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
        index_.scan(query, [&](Iterator it) {
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
        std::lock_guard<std::mutex> lock(mutex_);
        index_.scan(query, [&](Iterator it) {
            if (it->second.status == DeadLetterStatus::pending) {
                index_.dismiss(it, std::string(note));
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
        index_.scan(query, [&](Iterator it) {
            index_.categorize(it, category, tags);
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
        std::vector<Seq> batch;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (reprocessing_) {
                result.already_running = true;
                return result;
            }
            batch = index_.select_redrive(query, options.max_redrives, result);
            reprocessing_ = true;
        }
        // Clears the flag however the loop ends (a throwing clock or allocation included).
        struct Running {
            BasicInMemoryDeadLetterStore* store;
            ~Running() {
                std::lock_guard<std::mutex> lock(store->mutex_);
                store->reprocessing_ = false;
            }
        } running{this};

        for (const Seq seq : batch) {
            if (options.cancel != nullptr && options.cancel->cancelled()) {
                result.cancelled = true;
                break;
            }
            DeadLetter copy;
            {
                std::lock_guard<std::mutex> lock(mutex_);
                const auto it = index_.find_redrivable(seq, query);
                if (it == index_.end()) {
                    ++result.skipped_changed;
                    continue;
                }
                copy = it->second;
            }
            detail::RedriveOutcome outcome = detail::run_redrive_handler(handler, copy);
            const bool resent = outcome.resent;
            DeadLetterAttempt attempt{clock_->wall_now(), options.channel,
                                      std::move(outcome.error)};
            std::lock_guard<std::mutex> lock(mutex_);
            // Recorded if the record is still here. A success wins over a dismiss made while
            // the handler ran: the message was resent.
            const auto it = index_.find_seq(seq);
            if (it != index_.end()) {
                index_.record_redrive(it, resent, std::move(attempt), options_.max_attempts);
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

    std::size_t do_purge(WallTime older_than) override {
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
                                options_.max_attempts, options_.max_text_bytes};
    }

private:
    using Index = detail::BasicDeadLetterIndex<Tag>;
    using Iterator = typename Index::const_iterator;
    using Seq = typename Index::Seq;

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

using InMemoryDeadLetterStore = BasicInMemoryDeadLetterStore<>;

}  // namespace bulwark

// The durable store (API.md section 7 names both stores in this header). It needs POSIX file
// I/O, so elsewhere only the interface and the in-memory store are here. Not when this header is
// reached from detail/journal.hpp, which the file store needs complete before it.
#if (defined(__unix__) || defined(__APPLE__)) && !defined(BULWARK_DETAIL_JOURNAL_HPP)
#include <bulwark/file_dead_letter_store.hpp>
#endif

#endif  // BULWARK_DEAD_LETTER_HPP

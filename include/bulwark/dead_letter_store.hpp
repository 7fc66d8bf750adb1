// Dead-letter vocabulary: DeadLetter, queries, statistics, errors and the store interface.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DEAD_LETTER_STORE_HPP
#define BULWARK_DEAD_LETTER_STORE_HPP

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

#include <bulwark/config.hpp>
#include <bulwark/context.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/errors.hpp>
#include <bulwark/time.hpp>

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
    // For stores that translate a query (into SQL, say): each filter, nullptr / nullopt / empty
    // when unset.
    const std::string* type_filter() const noexcept { return has(has_type) ? &type_ : nullptr; }
    const std::string* category_filter() const noexcept {
        return has(has_category) ? &category_ : nullptr;
    }
    std::optional<DeadLetterStatus> status_filter() const noexcept { return status_; }
    std::optional<DeadLetterReason> reason_filter() const noexcept { return reason_; }
    const std::vector<std::string>& tag_filters() const noexcept { return tags_; }
    std::optional<WallTime> created_before_filter() const noexcept { return created_before_; }
    std::optional<WallTime> created_after_filter() const noexcept { return created_after_; }

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
// dead letter is never dropped to make room; the caller keeps the message and decides. A
// rejection (see errors.hpp): the store works, it is full of what it must keep; source() is empty.
class DeadLetterStoreFullError : public RejectedError {
public:
    DeadLetterStoreFullError(const std::string& what, std::size_t max_entries)
        : RejectedError(what), max_entries_(max_entries) {}

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

namespace detail {
// Refuses a record, or a string to store in one, of `size` bytes over `limit`.
[[noreturn]] BULWARK_NOINLINE inline void throw_too_large(const char* what, const char* limit_name,
                                                          std::size_t size, std::size_t limit) {
    throw DeadLetterTooLargeError(std::string("dead letter ") + what + " of " +
                                      std::to_string(size) + " bytes exceeds " + limit_name + " (" +
                                      std::to_string(limit) + ")",
                                  limit_name, size, limit);
}

// The bytes a record's category and tags take after categorize(category, tags) on a record that
// carries `held`: a tag already held, or given twice, is stored once.
inline std::size_t categorized_text_bytes(std::string_view category,
                                          const std::vector<std::string>& held,
                                          const std::vector<std::string>& tags) {
    std::size_t text = category.size();
    for (const std::string& tag : held) {
        text += tag.size();
    }
    for (auto tag = tags.begin(); tag != tags.end(); ++tag) {
        if (std::find(held.begin(), held.end(), *tag) == held.end() &&
            std::find(tags.begin(), tag, *tag) == tag) {
            text += tag->size();
        }
    }
    return text;
}
}  // namespace detail

// Rewrites text before it is stored or operators see it (masks personal data): an
// ErrorClassifier, a DeliveryEngine (DeliveryEngineOptions::redact) and an AdminHandler take
// one. Must be thread-safe: every thread that records or shows a failure calls it, with no lock
// held.
using Redactor = std::function<std::string(std::string_view)>;

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
    // The channel recorded in each attempt that reprocess appends. At most 256 bytes.
    static constexpr std::size_t max_channel_bytes = 256;
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
        // Every stored string is bounded, so that nothing acknowledged is too large to read back.
        const std::size_t limit = limits().max_text_bytes;
        if (note.size() > limit) {
            detail::throw_too_large("note", "max_text_bytes", note.size(), limit);
        }
        return do_dismiss(query, note);
    }

    // Sets `category` on the matches (at most query.limit, any status) and adds each of `tags`
    // they do not carry yet; returns how many matched.
    std::size_t categorize(const DeadLetterQuery& query, std::string_view category,
                           const std::vector<std::string>& tags = {}) {
        const std::size_t text = detail::categorized_text_bytes(category, {}, tags);
        const std::size_t limit = limits().max_text_bytes;
        if (text > limit) {
            detail::throw_too_large("category and tags", "max_text_bytes", text, limit);
        }
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
        if (options.channel.size() > ReprocessOptions::max_channel_bytes) {
            // Each redrive appends it to a record's history: bounded like the error text.
            detail::throw_invalid_option("ReprocessOptions.channel", "must be at most 256 bytes",
                                         std::to_string(options.channel.size()) + " bytes");
        }
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

}  // namespace bulwark

#endif  // BULWARK_DEAD_LETTER_STORE_HPP

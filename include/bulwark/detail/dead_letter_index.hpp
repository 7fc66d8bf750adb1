// A dead-letter store's records indexed by id, with their counts (private).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_DEAD_LETTER_INDEX_HPP
#define BULWARK_DETAIL_DEAD_LETTER_INDEX_HPP

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
#include <bulwark/dead_letter_store.hpp>
#include <bulwark/detail/random.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/time.hpp>

namespace bulwark {

namespace detail {

// `prefix` + `width` digits of `bits` in the base of `digits` (its length), most significant
// first, zero-padded: one to one when base^width covers every 64-bit value.
template <std::size_t N>
std::string format_in_base(std::string_view prefix, std::uint64_t bits, const char (&digits)[N],
                           std::size_t width) {
    constexpr std::uint64_t base = N - 1;  // the literal's terminating zero is not a digit
    std::string id(prefix.size() + width, digits[0]);
    prefix.copy(id.data(), prefix.size());
    for (std::size_t i = id.size(); i > prefix.size(); --i) {
        id[i - 1] = digits[bits % base];
        bits /= base;
    }
    return id;
}

// `prefix` + 16 lower-case hex digits of `bits`.
inline std::string format_id(std::string_view prefix, std::uint64_t bits) {
    return format_in_base(prefix, bits, "0123456789abcdef", 16);
}

// `prefix` + 11 base-62 digits (0-9, A-Z, a-z) of `bits`: every 64-bit value, one to one, in
// fewer characters than hex, so that "msg-" + 11 fits the 15 characters a std::string holds
// without allocating (libstdc++ and MSVC; libc++ holds 22).
inline std::string format_short_id(std::string_view prefix, std::uint64_t bits) {
    return format_in_base(prefix, bits,
                          "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", 11);
}

// "dl-" + 16 lower-case hex digits.
inline std::string format_dead_letter_id(std::uint64_t bits) {
    return format_id("dl-", bits);
}

// Trims a letter to what `limits` accept: its newest attempts, then its error text, so that a
// long history never makes a store refuse the message.
inline void fit_letter(DeadLetter& letter, const DeadLetterLimits& limits) {
    auto& attempts = letter.attempts;
    if (limits.max_attempts > 0 && attempts.size() > limits.max_attempts) {
        attempts.erase(
            attempts.begin(),
            attempts.begin() + static_cast<std::ptrdiff_t>(attempts.size() - limits.max_attempts));
    }
    if (limits.max_text_bytes == 0) {
        return;
    }
    std::size_t text = letter.id.size() + letter.type.size() + letter.error.size() +
                       letter.category.size() + letter.note.size();
    for (const std::string& tag : letter.tags) {
        text += tag.size();
    }
    for (const DeadLetterAttempt& a : attempts) {
        text += a.channel.size() + a.error.size();
    }
    std::size_t drop = 0;
    while (text > limits.max_text_bytes && drop < attempts.size()) {
        text -= attempts[drop].channel.size() + attempts[drop].error.size();
        ++drop;
    }
    attempts.erase(attempts.begin(), attempts.begin() + static_cast<std::ptrdiff_t>(drop));
    if (text > limits.max_text_bytes) {
        const std::size_t over = text - limits.max_text_bytes;
        letter.error.resize(letter.error.size() > over ? letter.error.size() - over : 0);
    }
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

// `text` cut to `limit` bytes, the last three "..." when it was longer.
inline std::string clip_text(std::string text, std::size_t limit) {
    if (text.size() > limit && limit >= 3) {
        text.resize(limit - 3);
        text += "...";
    }
    return text;
}

inline std::string redrive_error_text(std::string text) {
    return clip_text(std::move(text), max_redrive_error_bytes);
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
    bool threw = false;
    try {
        outcome.resent = handler(copy);
    } catch (const std::exception& e) {
        threw = true;
        outcome.error = e.what();
    } catch (...) {
        threw = true;
        outcome.error = "handler threw an exception not derived from std::exception";
    }
    if (!outcome.resent && !threw) {
        // Outside the try: our own allocation failing here is not the handler's failure.
        outcome.error = "handler returned false";
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

// What a store has done that its records cannot tell: the "since the store was made" half of
// DeadLetterStats, bar the refused adds. A durable store carries them across restarts.
struct DeadLetterCounters {
    std::uint64_t added = 0;
    std::uint64_t evicted = 0;
    std::uint64_t purged = 0;
    std::uint64_t resent = 0;
    std::uint64_t redrive_failures = 0;
};

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
    // Room for about `n` records' ids without rehashing (best effort: a failure is ignored).
    void reserve(std::size_t n) noexcept {
        try {
            ids_.reserve(n);
        } catch (...) {  // NOLINT(bugprone-empty-catch): only an optimisation
        }
    }
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
        return insert_absent(std::move(letter));
    }

    // insert() for a letter whose id the caller has just found absent (one lookup fewer: a
    // replay of a million records is bound by them). Throws std::invalid_argument for an empty
    // id or an out-of-range status or reason. Strong guarantee.
    const_iterator insert_absent(DeadLetter letter) {
        if (letter.id.empty()) {
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
    // NOLINTNEXTLINE(performance-unnecessary-value-param): it is moved into the record
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

    // Makes room for the attempt record_redrive(it, ..., max_attempts) adds, so that it stores
    // the attempt without allocating. A durable store calls it first: the attempt is already in
    // its journal, and dropping it from memory alone would part the two. Changes only capacity.
    void reserve_attempt(const_iterator it, std::size_t max_attempts) {
        std::vector<DeadLetterAttempt>& attempts = mutable_record(it).attempts;
        if ((attempts.size() < max_attempts || attempts.empty()) &&
            attempts.size() == attempts.capacity()) {
            // Geometric, capped at the bound: one slot at a time would copy the history on
            // every redrive.
            attempts.reserve(std::max<std::size_t>(
                attempts.size() + 1, std::min<std::size_t>(2 * attempts.size(), max_attempts)));
        }
    }

    // Records one redrive: the outcome first (a success must not be lost to a failed append),
    // then the attempt, best effort (allocation-free after reserve_attempt()), keeping the newest
    // `max_attempts`. Throws only if the status change cannot be made, and then changes nothing.
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
        const auto it = oldest_resolved();
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
    check_enumerator(letter.reason, DeadLetterReason::manual, "DeadLetter.reason",
                     "DeadLetterReason");
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

}  // namespace bulwark

#endif  // BULWARK_DETAIL_DEAD_LETTER_INDEX_HPP

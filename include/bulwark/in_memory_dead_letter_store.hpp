// InMemoryDeadLetterStore: a bounded, thread-safe DeadLetterStore kept in memory.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_IN_MEMORY_DEAD_LETTER_STORE_HPP
#define BULWARK_IN_MEMORY_DEAD_LETTER_STORE_HPP

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
#include <bulwark/dead_letter_store.hpp>
#include <bulwark/detail/dead_letter_index.hpp>
#include <bulwark/detail/indexed_dead_letter_store.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/throw.hpp>

namespace bulwark {

struct InMemoryDeadLetterStoreOptions {
    // Records held at most. When full, add() evicts the oldest added record that is no longer
    // pending; with none, it throws DeadLetterStoreFullError. >= 1. Default 100000.
    std::size_t max_entries = 100000;
    // Larger payloads are refused with DeadLetterTooLargeError. >= 1. Default 1 MiB.
    std::size_t max_payload_bytes = std::size_t{1} << 20U;
    // All the other strings of a record together (id, type, error, category, tags, note, the
    // attempts' channels and errors) above this are refused at add() with
    // DeadLetterTooLargeError; a dismiss() note, and a record's category and tags after a
    // categorize(), are each bounded by it too. With redrive attempts (error text cut to 1 KiB,
    // channel at most 256 bytes, max_attempts of them) a record's size stays bounded. >= 1.
    // Default 64 KiB.
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
class BasicInMemoryDeadLetterStore
    : public detail::IndexedDeadLetterStore<BasicInMemoryDeadLetterStore<Tag>> {
    using Base = detail::IndexedDeadLetterStore<BasicInMemoryDeadLetterStore<Tag>>;
    friend Base;

public:
    // Throws std::invalid_argument for max_entries == 0. The clock must outlive the store.
    explicit BasicInMemoryDeadLetterStore(std::size_t max_entries = 100000,
                                          Clock& clock = default_clock())
        : BasicInMemoryDeadLetterStore(make_options(max_entries), clock) {}

    // Throws std::invalid_argument for invalid options. The clock must outlive the store.
    explicit BasicInMemoryDeadLetterStore(InMemoryDeadLetterStoreOptions options,
                                          Clock& clock = default_clock())
        : Base(Base::checked_limits(options), clock), options_(options) {}

    const InMemoryDeadLetterStoreOptions& options() const noexcept { return options_; }

protected:
    std::size_t do_dismiss(const DeadLetterQuery& query, std::string_view note) override {
        std::size_t changed = 0;
        const std::size_t limit = query.max_results();
        if (limit == 0) {
            return 0;
        }
        detail::LockGuard lock(mutex_);
        // The callback runs within scan(), with mutex_ still held; the analysis checks a lambda
        // as a function of its own and cannot know that.
        index_.scan(query, [&](Iterator it) BULWARK_NO_THREAD_SAFETY_ANALYSIS {
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
        detail::LockGuard lock(mutex_);
        this->check_categorize(query, category, tags);
        // Within scan(), with mutex_ held (as in do_dismiss).
        index_.scan(query, [&](Iterator it) BULWARK_NO_THREAD_SAFETY_ANALYSIS {
            index_.categorize(it, category, tags);
            return ++matched < limit;
        });
        return matched;
    }

    std::size_t do_purge(WallTime older_than) override {
        detail::LockGuard lock(mutex_);
        std::size_t removed = 0;
        for (auto it = index_.begin(); it != index_.end();) {
            const auto next = std::next(it);
            if (it->second.created < older_than) {
                index_.erase(it);
                ++removed;
            }
            it = next;
        }
        counters_.purged += removed;
        return removed;
    }

private:
    using Iterator = typename Base::Index::const_iterator;
    using Seq = typename Base::Seq;
    using Base::counters_;
    using Base::index_;
    using Base::mutex_;

    static InMemoryDeadLetterStoreOptions make_options(std::size_t max_entries) {
        InMemoryDeadLetterStoreOptions o;
        o.max_entries = max_entries;
        return o;
    }

    // ---- the hooks IndexedDeadLetterStore calls, with mutex_ held ----------------------------

    std::string store_new(DeadLetter letter, bool evict) BULWARK_REQUIRES(mutex_) {
        std::string id = letter.id;
        index_.insert(std::move(letter));
        if (evict && index_.evict_oldest_resolved()) {
            ++counters_.evicted;
        }
        ++counters_.added;
        return id;
    }

    void record_outcome(Seq seq, const DeadLetter& /*copy*/, bool resent, DeadLetterAttempt attempt,
                        const ReprocessResult& /*so_far*/) BULWARK_REQUIRES(mutex_) {
        // Recorded if the record is still here. A success wins over a dismiss made while the
        // handler ran: the message was resent.
        const auto it = index_.find_seq(seq);
        if (it != index_.end()) {
            index_.record_redrive(it, resent, std::move(attempt), options_.max_attempts);
        }
        ++(resent ? counters_.resent : counters_.redrive_failures);
    }

    const InMemoryDeadLetterStoreOptions options_;
};

using InMemoryDeadLetterStore = BasicInMemoryDeadLetterStore<>;

}  // namespace bulwark

#endif  // BULWARK_IN_MEMORY_DEAD_LETTER_STORE_HPP

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
#include <bulwark/dead_letter_store.hpp>
#include <bulwark/detail/dead_letter_index.hpp>
#include <bulwark/detail/throw.hpp>

namespace bulwark {

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

#endif  // BULWARK_IN_MEMORY_DEAD_LETTER_STORE_HPP

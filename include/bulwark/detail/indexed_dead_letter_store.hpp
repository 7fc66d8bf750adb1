// IndexedDeadLetterStore: the admission, reads, stats and reprocess loop both stores share
// (private). SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_INDEXED_DEAD_LETTER_STORE_HPP
#define BULWARK_DETAIL_INDEXED_DEAD_LETTER_STORE_HPP

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <bulwark/clock.hpp>
#include <bulwark/dead_letter_store.hpp>
#include <bulwark/detail/dead_letter_index.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/throw.hpp>

namespace bulwark {

namespace detail {

// The part of a DeadLetterStore that does not depend on where its records are kept: one mutex
// over a DeadLetterIndex, the checks an add passes before anything is stored (size limits,
// duplicate id, full), id assignment, every read (get, list, size, stats, limits) and the
// reprocess loop (one run at a time per store, the handler called with no lock held). A store
// derives from IndexedDeadLetterStore<Store> (befriending it) and keeps what makes it durable or
// not: do_dismiss, do_categorize, do_purge and these members, each called with mutex_ held:
//   std::string store_new(DeadLetter letter, bool evict)
//       stores a checked letter that has its id (then, when `evict`, removes the oldest resolved
//       record: the store was full) and returns the id; counts it in counters_.
//   void record_outcome(Seq seq, const DeadLetter& copy, bool resent, DeadLetterAttempt attempt,
//                       const ReprocessResult& so_far)
//       records what the handler said about `copy` (record `seq`, which may have been removed
//       meanwhile) and counts it in counters_; so_far is the call's result before it.
// and, when the store can refuse changes (the defaults below accept everything):
//   void check_writable() const                    throws before an add stores anything or a
//                                                  reprocess selects anything;
//   void check_redrive_continues(const ReprocessResult& so_far) const
//                                                  throws to stop a reprocess before its next
//                                                  handler call;
// and, when an add is acknowledged only once durable (the defaults wait for nothing):
//   std::uint64_t durable_ticket(std::string_view id) const
//                                                  what covers the record `id` (stored);
//   void await_durable(std::uint64_t ticket)       called with no lock held: returns once
//                                                  `ticket` is durable, or throws.
// Thread-safe: mutex_ guards every member below and whatever the store's hooks touch. The hooks
// are called as static_cast<Store&>(*this).hook(): a cast the thread-safety analysis sees
// through, so it knows the mutex_ a hook requires is the one held (a store() helper returning
// the reference would hide that).
template <class Store>
class IndexedDeadLetterStore : public DeadLetterStore {
protected:
    using Index = DeadLetterIndex;
    using Seq = Index::Seq;

    // The clock must outlive the store.
    IndexedDeadLetterStore(const DeadLetterLimits& limits, Clock& clock)
        : limits_(limits), clock_(&clock), id_seed_(dead_letter_id_seed(this)) {}

    // The limits of a store's options (which have these four fields), once they are validated.
    template <class Options>
    static DeadLetterLimits checked_limits(const Options& options) {
        options.validate();
        return DeadLetterLimits{options.max_entries, options.max_payload_bytes,
                                options.max_attempts, options.max_text_bytes};
    }

    std::string do_add(DeadLetter letter) override {
        std::uint64_t ticket = 0;
        std::string id = add_locked(std::move(letter), ticket);
        // Without the lock, so that concurrent adds share one sync (group commit). A duplicate
        // waits too: the record it names may be another add's, still in flight.
        static_cast<Store&>(*this).await_durable(ticket);
        return id;
    }

    std::string add_locked(DeadLetter letter, std::uint64_t& ticket) {
        LockGuard lock(mutex_);
        try {
            prepare_dead_letter(letter, limits_, clock_->wall_now());
        } catch (const DeadLetterTooLargeError&) {
            ++rejected_too_large_;
            throw;
        }
        if (!letter.id.empty() && index_.contains(letter.id)) {
            ++duplicate_adds_;
            ticket = static_cast<Store&>(*this).durable_ticket(letter.id);
            return letter.id;
        }
        const bool full = index_.size() >= limits_.max_entries;
        if (full && !index_.has_resolved()) {
            ++rejected_full_;
            throw_store_full(limits_.max_entries);
        }
        static_cast<Store&>(*this).check_writable();
        if (letter.id.empty()) {
            do {
                letter.id = format_dead_letter_id(SplitMix64::at(id_seed_, next_id_++));
            } while (index_.contains(letter.id));
        }
        // The eviction a full store makes comes after the new record is in (it is pending, so it
        // is not the one evicted): an add that throws has removed nothing.
        std::string id = static_cast<Store&>(*this).store_new(std::move(letter), full);
        ticket = static_cast<Store&>(*this).durable_ticket(id);
        return id;
    }

    // Refuses, before anything changes, a categorize() that would take a matched record's
    // category and tags together over max_text_bytes: tags accumulate from call to call, and a
    // record must stay small enough to be read back from a journal. Under mutex_.
    void check_categorize(const DeadLetterQuery& query, std::string_view category,
                          const std::vector<std::string>& tags) const BULWARK_REQUIRES(mutex_) {
        std::size_t matched = 0;
        const std::size_t limit = query.max_results();
        index_.scan(query, [&](Index::const_iterator it) BULWARK_NO_THREAD_SAFETY_ANALYSIS {
            // (scan() runs this under mutex_, held by the caller.)
            const std::size_t text = categorized_text_bytes(category, it->second.tags, tags);
            if (text > limits_.max_text_bytes) {
                throw_too_large("category and tags", "max_text_bytes", text,
                                limits_.max_text_bytes);
            }
            return ++matched < limit;
        });
    }

    std::optional<DeadLetter> do_get(std::string_view id) const override {
        LockGuard lock(mutex_);
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
        LockGuard lock(mutex_);
        index_.scan(query, [&](Index::const_iterator it) {
            out.push_back(it->second);
            return out.size() < limit;
        });
        return out;
    }

    ReprocessResult do_reprocess(const DeadLetterQuery& query, const DeadLetterHandler& handler,
                                 const ReprocessOptions& options) override {
        if (!handler) {
            throw_invalid_argument("bulwark::DeadLetterStore::reprocess: empty handler");
        }
        ReprocessResult result;
        std::vector<Seq> batch;
        {
            LockGuard lock(mutex_);
            if (reprocessing_) {
                result.already_running = true;
                return result;
            }
            static_cast<Store&>(*this)
                .check_writable();  // a store that cannot record an outcome resends nothing
            batch = index_.select_redrive(query, options.max_redrives, result);
            reprocessing_ = true;
        }
        // Clears the flag however the loop ends (a throwing clock, allocation or hook included).
        struct Running {
            IndexedDeadLetterStore* self;
            ~Running() {
                LockGuard lock(self->mutex_);
                self->reprocessing_ = false;
            }
        } running{this};

        for (const Seq seq : batch) {
            if (options.cancel != nullptr && options.cancel->cancelled()) {
                result.cancelled = true;
                break;
            }
            DeadLetter copy;
            {
                LockGuard lock(mutex_);
                static_cast<Store&>(*this).check_redrive_continues(result);
                const auto it = index_.find_redrivable(seq, query);
                if (it == index_.end()) {
                    ++result.skipped_changed;
                    continue;
                }
                copy = it->second;
            }
            RedriveOutcome outcome = run_redrive_handler(handler, copy);
            const bool resent = outcome.resent;
            DeadLetterAttempt attempt{clock_->wall_now(), options.channel,
                                      std::move(outcome.error)};
            {
                LockGuard lock(mutex_);
                static_cast<Store&>(*this).record_outcome(seq, copy, resent, std::move(attempt),
                                                          result);
            }
            ++(resent ? result.resent : result.failed);
        }
        return result;
    }

    DeadLetterStats do_stats() const override {
        DeadLetterStats s;
        LockGuard lock(mutex_);
        index_.fill(s);
        s.added = counters_.added;
        s.duplicate_adds = duplicate_adds_;
        s.evicted = counters_.evicted;
        s.purged = counters_.purged;
        s.resent = counters_.resent;
        s.redrive_failures = counters_.redrive_failures;
        s.rejected_full = rejected_full_;
        s.rejected_too_large = rejected_too_large_;
        return s;
    }

    std::size_t do_size() const override {
        LockGuard lock(mutex_);
        return index_.size();
    }

    DeadLetterLimits do_limits() const noexcept override { return limits_; }

    // The hooks a store that accepts every change leaves as they are.
    void check_writable() const noexcept BULWARK_REQUIRES(mutex_) {}
    std::uint64_t durable_ticket(std::string_view /*id*/) const noexcept BULWARK_REQUIRES(mutex_) {
        return 0;
    }
    void await_durable(std::uint64_t /*ticket*/) noexcept {}
    void check_redrive_continues(const ReprocessResult& /*so_far*/) const noexcept
        BULWARK_REQUIRES(mutex_) {}

    const DeadLetterLimits limits_;
    Clock* const clock_;

    mutable Mutex mutex_;
    Index index_ BULWARK_GUARDED_BY(mutex_);
    // Since the store was made (a durable store: ever).
    DeadLetterCounters counters_ BULWARK_GUARDED_BY(mutex_);
    std::uint64_t duplicate_adds_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::uint64_t rejected_full_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::uint64_t rejected_too_large_ BULWARK_GUARDED_BY(mutex_) = 0;

private:
    const std::uint64_t id_seed_;
    std::uint64_t next_id_ BULWARK_GUARDED_BY(mutex_) = 0;
    bool reprocessing_ BULWARK_GUARDED_BY(mutex_) = false;
};

}  // namespace detail

}  // namespace bulwark

#endif  // BULWARK_DETAIL_INDEXED_DEAD_LETTER_STORE_HPP

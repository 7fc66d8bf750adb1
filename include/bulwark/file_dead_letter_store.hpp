// FileDeadLetterStore: the durable dead-letter store, a crash-safe journal on disk (POSIX).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_FILE_DEAD_LETTER_STORE_HPP
#define BULWARK_FILE_DEAD_LETTER_STORE_HPP

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <bulwark/clock.hpp>
#include <bulwark/dead_letter_store.hpp>
#include <bulwark/detail/dead_letter_index.hpp>
#include <bulwark/detail/file_system.hpp>
#include <bulwark/detail/group_commit.hpp>
#include <bulwark/detail/indexed_dead_letter_store.hpp>
#include <bulwark/detail/journal.hpp>
#include <bulwark/detail/journal_file.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/file_dead_letter_store_errors.hpp>
#include <bulwark/file_dead_letter_store_options.hpp>

namespace bulwark {

// A DeadLetterStore kept in a journal on disk: an acknowledged mutation survives a crash (with
// JournalSync::always, a power loss too). Same semantics as InMemoryDeadLetterStore; all records
// are also held in memory, so reads never touch the disk.
//   bulwark::FileDeadLetterStore file("/var/lib/app/dlq");   // options, file system, clock
//   std::string id = file.add(d);                             // durable when it returns
// The directory (created 0700; a symlink, another owner or group/other access is refused) holds
// `journal` (0600, one link) and `LOCK`: one store per directory, across processes. Open replays
// the journal (see JournalRecovery) and may throw FileDeadLetterStoreError and its subclasses. A
// failed write is rolled back and the store stays usable (disk full); a failed sync poisons it (see
// DeadLetterStorePoisonedError). Thread-safe: one mutex guards everything, held across journal
// writes, never while a reprocess handler runs; with sync=always, a call waits for its sync with
// the mutex released, so concurrent calls share one sync (group commit) and each returns once its
// own records are durable. See docs/file_dead_letter_store.md.
// Out of memory (R4): a call that throws std::bad_alloc before its record is written has changed
// nothing; after it, the store poisons itself and a reopen replays the whole change.
// FileDeadLetterStore is BasicFileDeadLetterStore<>: a class template only so that its code is
// compiled where it is used (the Tag is never used); use the alias.
// Its destructor is virtual (it overrides DeadLetterStore's): clang-tidy 14 does not see that
// through the dependent base.
template <class Tag = void>
// NOLINTNEXTLINE(cppcoreguidelines-virtual-class-destructor)
class BasicFileDeadLetterStore
    : public detail::IndexedDeadLetterStore<BasicFileDeadLetterStore<Tag>> {
    using Base = detail::IndexedDeadLetterStore<BasicFileDeadLetterStore<Tag>>;
    friend Base;
    // The base is dependent (a template of this one): name what the store uses of it.
    using Index = typename Base::Index;
    using Iterator = typename Index::const_iterator;
    using Seq = typename Base::Seq;
    using Base::counters_;
    using Base::index_;
    using Base::mutex_;

public:
    // Opens (creating if missing) the store in `directory`. The file system and clock must
    // outlive the store. Throws std::invalid_argument for invalid options.
    explicit BasicFileDeadLetterStore(std::string directory,
                                      FileDeadLetterStoreOptions options = {},
                                      FileSystem& fs = default_file_system(),
                                      Clock& clock = default_clock())
        : Base(Base::checked_limits(options), clock),
          options_(options),
          group_(fs),
          journal_(fs, clock, group_, std::move(directory), detail::JournalOptions::of(options_)) {
        // Unlocked, as the constructor is: nothing else can reach the store yet. The analysis
        // skips constructors but not the lambdas in them.
        journal_.open([this](Record& r) BULWARK_NO_THREAD_SAFETY_ANALYSIS { apply_replayed(r); },
                      [this](std::uint64_t salt)
                          BULWARK_NO_THREAD_SAFETY_ANALYSIS { return snapshot(salt); },
                      [this](std::size_t records)
                          BULWARK_NO_THREAD_SAFETY_ANALYSIS { index_.reserve(records); });
    }

    // Syncs what is unsynced (sync=batch), ignoring errors.
    ~BasicFileDeadLetterStore() override {
        try {
            detail::LockGuard lock(mutex_);
            journal_.sync_unsynced_batch();
        } catch (...) {  // NOLINT(bugprone-empty-catch): a destructor reports nothing
        }
    }

    const FileDeadLetterStoreOptions& options() const noexcept { return options_; }
    // Unlocked: the directory is fixed when the journal is made.
    const std::string& directory() const noexcept BULWARK_NO_THREAD_SAFETY_ANALYSIS {
        return journal_.directory();
    }

    // Makes every record written so far durable (for sync=batch or none). Throws
    // DeadLetterJournalIoError (and poisons) if the sync fails, DeadLetterStorePoisonedError on
    // a poisoned store.
    void sync() {
        detail::LockGuard lock(mutex_);
        journal_.check_writable();
        journal_.sync();
    }

    bool poisoned() const { return group_.poisoned(); }

    JournalStats journal_stats() const {
        detail::LockGuard lock(mutex_);
        JournalStats s = journal_.stats();
        s.live_bytes = live_bytes_;
        return s;
    }

protected:
    std::size_t do_dismiss(const DeadLetterQuery& query, std::string_view note) override {
        const std::size_t limit = query.max_results();
        if (limit == 0) {
            return 0;
        }
        detail::UniqueLock lock(mutex_);
        std::vector<Record> records;
        index_.scan(query, [&](Iterator it) {
            if (it->second.status == DeadLetterStatus::pending) {
                Record r;
                r.type = detail::journal::RecordType::dismiss;
                r.id = it->second.id;
                r.text = std::string(note);
                records.push_back(std::move(r));
            }
            return records.size() < limit;
        });
        const std::uint64_t ticket = commit_and_apply(records);
        lock.unlock();
        group_.await(ticket);
        return records.size();
    }

    std::size_t do_categorize(const DeadLetterQuery& query, std::string_view category,
                              const std::vector<std::string>& tags) override {
        const std::size_t limit = query.max_results();
        if (limit == 0) {
            return 0;
        }
        detail::UniqueLock lock(mutex_);
        this->check_categorize(query, category, tags);
        std::size_t matched = 0;
        std::vector<Record> records;
        index_.scan(query, [&](Iterator it) {
            const DeadLetter& d = it->second;
            bool changes = d.category != category;
            for (const std::string& tag : tags) {
                changes = changes || std::find(d.tags.begin(), d.tags.end(), tag) == d.tags.end();
            }
            if (changes) {  // a record it would not change needs no journal record
                Record r;
                r.type = detail::journal::RecordType::categorize;
                r.id = d.id;
                r.text = std::string(category);
                r.tags = tags;
                records.push_back(std::move(r));
            }
            return ++matched < limit;
        });
        const std::uint64_t ticket = commit_and_apply(records);
        lock.unlock();
        group_.await(ticket);
        return matched;
    }

    std::size_t do_purge(WallTime older_than) override {
        detail::UniqueLock lock(mutex_);
        std::vector<Record> records;
        for (const auto& entry : index_) {
            if (entry.second.created < older_than) {
                Record r;
                r.type = detail::journal::RecordType::remove;
                r.id = entry.second.id;
                r.cause = detail::journal::RemoveCause::purge;
                records.push_back(std::move(r));
            }
        }
        const std::uint64_t ticket = commit_and_apply(records);
        lock.unlock();
        group_.await(ticket);
        return records.size();
    }

private:
    using Record = detail::journal::Record;

    // ---- the hooks IndexedDeadLetterStore calls, with mutex_ held ----------------------------

    std::string store_new(DeadLetter letter, bool evict) BULWARK_REQUIRES(mutex_) {
        std::vector<Record> records(1);
        records[0].type = detail::journal::RecordType::add;
        records[0].letter = std::move(letter);
        std::string id = records[0].letter.id;
        if (evict) {
            // The add and the eviction it causes: one atomic batch, as in memory.
            Record r;
            r.type = detail::journal::RecordType::remove;
            r.cause = detail::journal::RemoveCause::evict;
            r.id = index_.oldest_resolved()->second.id;
            records.push_back(std::move(r));
        }
        // Until its sync, a duplicate add of this id must wait for it too. Room for the entry is
        // made first: nothing may fail once the add is journaled. Both sequences grow in write
        // order, so the list stays sorted.
        const bool track = options_.sync == JournalSync::always;
        if (track) {
            const std::uint64_t durable = group_.durable();
            while (!in_flight_.empty() && in_flight_.front().second <= durable) {
                in_flight_.pop_front();
            }
            in_flight_.emplace_back(Seq{}, std::uint64_t{0});
        }
        std::uint64_t ticket = 0;
        try {
            ticket = commit_and_apply(records);
        } catch (...) {
            if (track) {
                in_flight_.pop_back();
            }
            throw;
        }
        if (track) {
            in_flight_.back() = {index_.find(id)->first, ticket};
        }
        return id;
    }

    void check_writable() const BULWARK_REQUIRES(mutex_) { journal_.check_writable(); }

    // sync=always: what an add of `id` (a new record or a duplicate) waits for before it returns:
    // the ticket of the record's own add while that is in flight, else nothing.
    std::uint64_t durable_ticket(std::string_view id) const BULWARK_REQUIRES(mutex_) {
        const auto it = index_.find(id);
        if (in_flight_.empty() || it == index_.end()) {
            return 0;
        }
        const auto at = std::lower_bound(
            in_flight_.begin(), in_flight_.end(), it->first,
            [](const std::pair<Seq, std::uint64_t>& e, Seq seq) { return e.first < seq; });
        return at != in_flight_.end() && at->first == it->first ? at->second : 0;
    }

    void await_durable(std::uint64_t ticket) { group_.await(ticket); }

    void check_redrive_continues(const ReprocessResult& so_far) const BULWARK_REQUIRES(mutex_) {
        if (journal_.poisoned()) {  // meanwhile, by another call: stop before resending
            throw DeadLetterReprocessInterruptedError(
                "bulwark::FileDeadLetterStore: reprocess stopped: " + journal_.directory() +
                    " is poisoned: " + journal_.poison_reason(),
                {}, true, so_far, std::string());
        }
    }

    // The outcome counts only once journaled. An outcome for a record removed while the handler
    // ran is journaled without an id: it only counts.
    void record_outcome(Seq seq, const DeadLetter& copy, bool resent, DeadLetterAttempt attempt,
                        const ReprocessResult& so_far) BULWARK_REQUIRES(mutex_) {
        Record r;
        r.type = detail::journal::RecordType::outcome;
        const auto it = index_.find_seq(seq);
        if (it != index_.end()) {
            r.id = it->second.id;
        }
        r.attempt = std::move(attempt);
        r.resent = resent;
        try {
            // Awaited with the lock held: the outcome counts only once durable, and a reprocess
            // journals one outcome at a time anyway.
            group_.await(journal_.append(r));
        } catch (const DeadLetterJournalIoError& e) {
            throw DeadLetterReprocessInterruptedError(
                std::string(e.what()) + " (reprocess stopped; the handler ran for " + copy.id +
                    " but its outcome was not recorded)",
                e.code(), e.poisoned(), so_far, copy.id);
        } catch (const DeadLetterStorePoisonedError& e) {
            throw DeadLetterReprocessInterruptedError(
                std::string(e.what()) + " (reprocess stopped; the handler ran for " + copy.id +
                    " but its outcome was not recorded)",
                {}, true, so_far, copy.id);
        }
        apply_journaled(&r, 1);
        maybe_compact();
    }

    // ---- replay: the one place where records change the index -------------------------------

    // A record replayed by open: as apply(), moving an add's letter into the index instead of
    // copying it (open is bound by the copies and allocations per record).
    void apply_replayed(Record& r) BULWARK_REQUIRES(mutex_) {
        if (r.type != detail::journal::RecordType::add) {
            apply(r);
            return;
        }
        if (index_.contains(r.letter.id)) {
            return;  // as apply()
        }
        const bool snapshot = r.snapshot;
        const auto it = index_.insert_absent(std::move(r.letter));
        live_bytes_ += detail::journal::snapshot_frame_size(it->second);
        if (!snapshot) {
            ++counters_.added;
        }
    }

    void apply(const Record& r) BULWARK_REQUIRES(mutex_) {
        namespace j = detail::journal;
        switch (r.type) {
            case j::RecordType::add: {
                if (index_.contains(r.letter.id)) {
                    return;  // cannot be written by a store; ignored like a duplicate add
                }
                const auto it = index_.insert(r.letter);
                live_bytes_ += j::snapshot_frame_size(it->second);
                if (!r.snapshot) {
                    ++counters_.added;
                }
                return;
            }
            case j::RecordType::dismiss: {
                const auto it = index_.find(r.id);
                if (it != index_.end() && it->second.status == DeadLetterStatus::pending) {
                    modify(it, [&](Index& index) { index.dismiss(it, r.text); });
                }
                return;
            }
            case j::RecordType::outcome: {
                const auto it = r.id.empty() ? index_.end() : index_.find(r.id);
                if (it != index_.end()) {
                    modify(it, [&](Index& index) {
                        index.reserve_attempt(it, options_.max_attempts);  // no silent drop
                        index.record_redrive(it, r.resent, r.attempt, options_.max_attempts);
                    });
                }
                ++(r.resent ? counters_.resent : counters_.redrive_failures);
                return;
            }
            case j::RecordType::categorize: {
                const auto it = index_.find(r.id);
                if (it != index_.end()) {
                    modify(it, [&](Index& index) { index.categorize(it, r.text, r.tags); });
                }
                return;
            }
            case j::RecordType::remove: {
                const auto it = index_.find(r.id);
                if (it != index_.end()) {
                    live_bytes_ -= j::snapshot_frame_size(it->second);
                    index_.erase(it);
                    ++(r.cause == j::RemoveCause::evict ? counters_.evicted : counters_.purged);
                }
                return;
            }
            case j::RecordType::counters:
                counters_ = r.counters;
                return;
            case j::RecordType::batch:
                for (const Record& inner : r.batch) {
                    apply(inner);
                }
                return;
        }
    }

    // Runs change(index_) on the record at `it`, keeping live_bytes_ right. The index is passed
    // in, not captured, so that the thread-safety analysis sees it used under mutex_.
    template <class Change>
    void modify(Iterator it, Change&& change) BULWARK_REQUIRES(mutex_) {
        const std::uint64_t before = detail::journal::snapshot_frame_size(it->second);
        change(index_);
        live_bytes_ = live_bytes_ - before + detail::journal::snapshot_frame_size(it->second);
    }

    // ---- the write path: journal first, then the index ---------------------------------------

    // Journals `records` (all or none), then applies them. Throws what JournalFile::append
    // throws, having applied nothing; or, if applying runs out of memory, std::bad_alloc with the
    // store poisoned (see apply_journaled). Returns the ticket to await before acknowledging (0:
    // none), which the caller does with the lock released (group commit); if that throws (a sync
    // failed) the store is poisoned, and the records, applied, are readable until it is reopened.
    std::uint64_t commit_and_apply(const std::vector<Record>& records) BULWARK_REQUIRES(mutex_) {
        if (records.empty()) {
            // A call that changes nothing may have found the state another call wrote and is
            // still syncing (the same categorize, a dismiss of a record just dismissed): it
            // reports that state only once it is durable.
            return options_.sync == JournalSync::always ? group_.written() : 0;
        }
        const std::uint64_t ticket = journal_.append(records);
        apply_journaled(records.data(), records.size());
        maybe_compact();
        return ticket;
    }

    // Applies what is already in the journal. If that throws (std::bad_alloc: the index
    // allocates), memory holds none or part of it while the disk holds all of it: the store
    // poisons itself, so that nothing is written on top of a state the journal does not
    // describe, and rethrows; a reopen replays the whole of it.
    void apply_journaled(const Record* records, std::size_t count) BULWARK_REQUIRES(mutex_) {
        try {
            for (std::size_t i = 0; i < count; ++i) {
                apply(records[i]);
            }
        } catch (...) {
            journal_.poison_after(
                "a change was journaled but could not be applied in memory (out of memory); "
                "reopen to recover it");
            throw;
        }
    }

    void maybe_compact() BULWARK_REQUIRES(mutex_) {
        // The lambda runs within maybe_compact(), with mutex_ still held; the analysis checks a
        // lambda as a function of its own and cannot know that.
        journal_.maybe_compact(live_bytes_,
                               [this](std::uint64_t salt)
                                   BULWARK_NO_THREAD_SAFETY_ANALYSIS { return snapshot(salt); });
    }

    // What a compaction writes: the counters and every record.
    detail::JournalSnapshot snapshot(std::uint64_t salt) const BULWARK_REQUIRES(mutex_) {
        return detail::journal_snapshot(salt, counters_, index_);
    }

    const FileDeadLetterStoreOptions options_;
    // Syncs for sync=always writers with mutex_ released; thread-safe by itself, and before
    // journal_, which uses it.
    detail::GroupCommit group_;
    // Guarded by mutex_, as are the index and the counters (whose duplicate_adds_ and rejected_*
    // count since open).
    detail::JournalFile journal_ BULWARK_GUARDED_BY(mutex_);
    // sync=always: (record, ticket) of the adds whose sync may still be running, in add order.
    std::deque<std::pair<Seq, std::uint64_t>> in_flight_ BULWARK_GUARDED_BY(mutex_);
    // snapshot()'s size.
    std::uint64_t live_bytes_ BULWARK_GUARDED_BY(mutex_) = detail::journal_snapshot_base_size();
};

using FileDeadLetterStore = BasicFileDeadLetterStore<>;

}  // namespace bulwark

#endif  // BULWARK_FILE_DEAD_LETTER_STORE_HPP

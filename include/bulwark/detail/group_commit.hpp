// GroupCommit: one journal sync shared by every writer waiting for one (private).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_GROUP_COMMIT_HPP
#define BULWARK_DETAIL_GROUP_COMMIT_HPP

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include <bulwark/detail/file_system.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/journal_errors.hpp>

namespace bulwark {
namespace detail {

// Lets writers that appended to a file without syncing it wait, holding no other lock, until
// what they wrote is durable, while one of them syncs for all (group commit, as PostgreSQL's WAL
// and RocksDB's write groups do): while a sync runs, the writers arriving queue up, and the next
// sync covers all of them.
//   const std::uint64_t ticket = group.wrote(records);   // under the writer's lock, after write
//   ...unlock...
//   group.await(ticket);                                 // durable, or throws
// A ticket is the number of records written so far, the writer's own included; await(t) returns
// once a sync that began after ticket t was published has completed. A failed sync poisons:
// await() then throws JournalIoError for every ticket not durable before it, and the
// owner refuses changes. The file is replaced (compaction) only while no sync runs.
// Thread-safe. Lock order: the journal owner's mutex first, then this one's (await() takes only
// this one, so it may be called with or without the owner's).
class GroupCommit {
public:
    // The file system must outlive this.
    // `store_name` (static storage) names the owner in errors.
    explicit GroupCommit(FileSystem& fs,
                         const char* store_name = "bulwark::FileDeadLetterStore") noexcept
        : fs_(fs), store_name_(store_name) {}

    // Publishes `records` records just written to the file; returns their ticket.
    std::uint64_t wrote(std::uint64_t records) {
        LockGuard lock(mutex_);
        written_ += records;
        return written_;
    }

    // Everything written so far: the ticket covering every record already in the file.
    std::uint64_t written() const {
        LockGuard lock(mutex_);
        return written_;
    }

    // Records known durable: every ticket up to it.
    std::uint64_t durable() const {
        LockGuard lock(mutex_);
        return durable_;
    }

    // Records written but not yet known durable.
    std::uint64_t unsynced() const {
        LockGuard lock(mutex_);
        return written_ - durable_;
    }

    // Syncs done by await() (the owner counts its own).
    std::uint64_t syncs() const {
        LockGuard lock(mutex_);
        return syncs_;
    }

    // The owner synced the file (or wrote a synced replacement) while no write could happen:
    // everything written is durable.
    void synced_all() {
        LockGuard lock(mutex_);
        durable_ = written_;
        wake_covered();
    }

    // Makes `file` the handle later syncs use: replace() (which closes the old one) runs once no
    // sync is running, and none starts until it has returned.
    template <class Replace>
    void replace_file(FileSystem::Handle file, Replace&& replace) {
        UniqueLock lock(mutex_);
        idle_.wait(lock.native(), [this]() BULWARK_NO_THREAD_SAFETY_ANALYSIS {
            return !syncing_;  // (mutex_ is held while the predicate runs)
        });
        std::forward<Replace>(replace)();
        file_ = file;
    }

    // Returns once every record up to `ticket` is durable, syncing for every writer waiting if
    // no sync is running. Throws JournalIoError (poisoned) if a sync failed first.
    void await(std::uint64_t ticket) {
        UniqueLock lock(mutex_);
        while (durable_ < ticket) {
            if (poisoned_) {
                throw JournalIoError(
                    std::string(store_name_) +
                        ": the store was poisoned before this change was synced (it may or may not "
                        "be on disk): " +
                        poison_reason_,
                    failure_, true);
            }
            if (!syncing_) {
                lead(lock.native());
                continue;
            }
            // Queue up: woken alone, when a sync covered the ticket or to lead the next one (which
            // another writer may have started meanwhile: then queue again).
            Waiter self{ticket};
            self.next = waiters_;
            waiters_ = &self;
            while (durable_ < ticket && !poisoned_ && !self.lead) {
                self.woken.wait(lock.native());
            }
            unlink(self);
        }
    }

    // Refuses every later change; the first reason is kept.
    void poison(std::string_view reason) noexcept {
        LockGuard lock(mutex_);
        poison_locked(reason, {});
        wake_covered();
    }

    bool poisoned() const {
        LockGuard lock(mutex_);
        return poisoned_;
    }

    std::string poison_reason() const {
        LockGuard lock(mutex_);
        return poison_reason_;
    }

private:
    // A writer waiting in await(), on its own stack: the leader wakes exactly the ones a sync
    // covered (a context switch is dear, more so in a VM), and hands the lead to one left over.
    struct Waiter {
        explicit Waiter(std::uint64_t t) noexcept : ticket(t) {}
        std::uint64_t ticket;
        bool lead = false;
        Waiter* next = nullptr;
        std::condition_variable woken;
    };

    void unlink(Waiter& w) BULWARK_REQUIRES(mutex_) {
        for (Waiter** at = &waiters_; *at != nullptr; at = &(*at)->next) {
            if (*at == &w) {
                *at = w.next;
                return;
            }
        }
    }

    // Wakes every waiter whose records are durable, or all of them once poisoned.
    void wake_covered() BULWARK_REQUIRES(mutex_) {
        for (Waiter* w = waiters_; w != nullptr; w = w->next) {
            if (poisoned_ || w->ticket <= durable_) {
                w->woken.notify_one();
            }
        }
    }

    // Syncs everything written so far, without the lock, so that the writers that arrive
    // meanwhile queue up for the next sync; wakes the writers it covered and hands the lead to
    // one still waiting. (Measured on a 2-core VM: letting the leader go on syncing for the next
    // group, or yielding before a sync for late writers, gained nothing and cost a single writer
    // latency.) `lock` holds mutex_; it is released around the sync through the
    // std::unique_lock itself, which the analysis does not follow (it sees mutex_ held
    // throughout; nothing guarded is touched while it is not).
    void lead(std::unique_lock<std::mutex>& lock) BULWARK_REQUIRES(mutex_) {
        syncing_ = true;
        const std::uint64_t target = written_;
        const FileSystem::Handle file = file_;
        lock.unlock();
        bool failed = false;
        std::error_code code;
        std::string why;
        try {
            fs_.sync(file);
        } catch (const std::exception& e) {
            // Any failure, std::bad_alloc included (the file system builds its error message),
            // leaves the file's state unknown: the next fdatasync could return 0 for pages the
            // kernel dropped.
            failed = true;
            if (const auto* system = dynamic_cast<const std::system_error*>(&e)) {
                code = system->code();
            }
            try {
                why = std::string("a journal sync failed: ") + e.what();
            } catch (...) {  // NOLINT(bugprone-empty-catch): out of memory; poisoned anyway
            }
        } catch (...) {
            // Not an I/O error (a test's simulated crash): give the lead up and rethrow.
            lock.lock();
            syncing_ = false;
            hand_off();
            throw;
        }
        lock.lock();
        if (failed) {
            // What reached the disk is unknown (the kernel may have dropped the dirty pages).
            poison_locked(why.empty() ? std::string_view("a journal sync failed") : why, code);
        } else {
            durable_ = std::max(durable_, target);
            ++syncs_;
        }
        syncing_ = false;
        wake_covered();
        hand_off();
    }

    // After a leader's last sync: the lead goes to a writer still waiting, if any.
    void hand_off() BULWARK_REQUIRES(mutex_) {
        if (!poisoned_) {
            for (Waiter* w = waiters_; w != nullptr; w = w->next) {
                if (w->ticket > durable_) {
                    w->lead = true;
                    w->woken.notify_one();
                    break;
                }
            }
        }
        idle_.notify_all();  // replace_file()
    }

    // Never throws: a leader that could not record why must still end its sync.
    void poison_locked(std::string_view reason, std::error_code code) noexcept
        BULWARK_REQUIRES(mutex_) {
        if (!poisoned_) {
            poisoned_ = true;
            failure_ = code;
            try {
                poison_reason_.assign(reason.data(), reason.size());
            } catch (...) {  // NOLINT(bugprone-empty-catch): out of memory; poisoned all the same
            }
        }
    }

    FileSystem& fs_;
    const char* const store_name_;
    mutable Mutex mutex_;
    std::condition_variable idle_;  // no sync runs: the file may be replaced
    Waiter* waiters_ BULWARK_GUARDED_BY(mutex_) = nullptr;
    FileSystem::Handle file_ BULWARK_GUARDED_BY(mutex_) = -1;
    std::uint64_t written_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::uint64_t durable_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::uint64_t syncs_ BULWARK_GUARDED_BY(mutex_) = 0;
    bool syncing_ BULWARK_GUARDED_BY(mutex_) = false;
    bool poisoned_ BULWARK_GUARDED_BY(mutex_) = false;
    std::string poison_reason_ BULWARK_GUARDED_BY(mutex_);
    std::error_code failure_ BULWARK_GUARDED_BY(mutex_);
};

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_GROUP_COMMIT_HPP

// FileQueueStore: the durable QueueStore, a crash-safe journal on disk (POSIX).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_FILE_QUEUE_STORE_HPP
#define BULWARK_FILE_QUEUE_STORE_HPP

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include <bulwark/clock.hpp>
#include <bulwark/config.hpp>
#include <bulwark/detail/file_system.hpp>
#include <bulwark/detail/group_commit.hpp>
#include <bulwark/detail/journal.hpp>
#include <bulwark/detail/journal_file.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/queue_index.hpp>
#include <bulwark/detail/queue_journal.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/file_queue_store_options.hpp>
#include <bulwark/journal_errors.hpp>
#include <bulwark/journal_options.hpp>
#include <bulwark/queue_store.hpp>

namespace bulwark {

// A QueueStore kept in a journal on disk, with the dead-letter store's journal machinery
// (docs/queue_store.md): the same semantics as InMemoryQueueStore, every message also held in
// memory so that reads never touch the disk.
//   bulwark::FileQueueStore store("/var/lib/app/queue");   // options, file system, clock
//   store.push({"m-1", bytes, now});                      // durable when it returns
// Durability (JournalSync::always, the default): a push, complete, release or remove that
// returned survives a crash and a power loss (as far as fsync does), and is never undone. A claim
// or an extend is journaled but not waited for: lost in a power cut, it only means the message is
// delivered again (at least once). Lease tokens are unique across restarts: the store journals
// (and, with sync=always, syncs) a reservation of the next 4096 tokens before handing one out,
// and a reopened store starts above every token reserved or seen. Leases are wall times and
// survive a reopen: a message leased then is claimable again once its lease_until passes.
// With batch or none, the guarantees hold against a process crash only.
// The directory (created 0700; a symlink, another owner or group/other access is refused) holds
// `journal` (0600, one link) and `LOCK`: one store per directory, across processes (a second
// one is refused with JournalLockedError). Open replays the journal (see JournalRecovery) and may
// throw JournalError and its subclasses; it never crashes on a damaged file. A failed write is
// rolled back and the store stays usable (disk full); a failed sync poisons it (mutations then
// throw JournalPoisonedError; reopen to recover). Out of memory after a record was written also
// poisons: a reopen replays the whole change.
// Thread-safe: one mutex guards everything and is held across journal writes; with sync=always a
// call waits for its sync with the mutex released, so concurrent calls share one sync (group
// commit) and each returns once its own record is durable.
class FileQueueStore : public QueueStore {
    using Record = detail::queue_journal::Record;
    using Type = detail::queue_journal::RecordType;
    using Codec = detail::queue_journal::Codec;

public:
    // Opens (creating if missing) the store in `directory`. The file system and clock (read
    // only for sync=batch's interval) must outlive the store. Throws std::invalid_argument for
    // invalid options, JournalError and its subclasses when the journal cannot be opened.
    explicit FileQueueStore(std::string directory, FileQueueStoreOptions options = {},
                            FileSystem& fs = default_file_system(), Clock& clock = default_clock())
        : options_(checked(options)),
          group_(fs, Codec::store_name),
          journal_(fs, clock, group_, std::move(directory), detail::JournalOptions::of(options_)) {
        // Unlocked, as the constructor is: nothing else can reach the store yet. The analysis
        // skips constructors but not the lambdas in them.
        journal_.open([this](Record& r) BULWARK_NO_THREAD_SAFETY_ANALYSIS { apply(r); },
                      [this](std::uint64_t salt)
                          BULWARK_NO_THREAD_SAFETY_ANALYSIS { return snapshot(salt); },
                      [this](std::size_t records)
                          BULWARK_NO_THREAD_SAFETY_ANALYSIS { index_.reserve(records); });
        // Start above every token a process before may have handed out; the first claim
        // reserves a new block.
        last_lease_ = std::max(last_lease_, reserved_);
        reserved_ = last_lease_;
    }

    // Syncs what is unsynced (sync=batch), ignoring errors.
    ~FileQueueStore() override {
        try {
            detail::LockGuard lock(mutex_);
            journal_.sync_unsynced_batch();
        } catch (...) {  // NOLINT(bugprone-empty-catch): a destructor reports nothing
        }
    }

    const FileQueueStoreOptions& options() const noexcept { return options_; }
    // Unlocked: the directory is fixed when the journal is made.
    const std::string& directory() const noexcept BULWARK_NO_THREAD_SAFETY_ANALYSIS {
        return journal_.directory();
    }

    // Throws std::invalid_argument (empty or held id), QueueMessageTooLargeError (id or payload
    // over its limit), QueueFullError, JournalIoError or JournalPoisonedError; stored nothing then.
    void push(const QueuedMessage& message) override {
        detail::UniqueLock lock(mutex_);
        if (const std::uint64_t ticket = held_ticket(message)) {
            lock.unlock();
            group_.await(ticket);
            detail::throw_already_queued(push_call, message.id);
        }
        check_new(message, false);
        if (index_.size() >= options_.max_size) {
            full();
        }
        const std::uint64_t ticket = commit_and_apply({pushed(message)});
        lock.unlock();
        group_.await(ticket);
    }

    // All or nothing, as one journal write (one frame up to 128 MiB): a batch that does not fit
    // or holds a bad message stores none of its messages.
    void push_all(const std::vector<QueuedMessage>& messages) override {
        if (messages.empty()) {
            return;
        }
        detail::UniqueLock lock(mutex_);
        std::unordered_set<std::string_view> ids;
        std::vector<Record> records;
        records.reserve(messages.size());
        for (const QueuedMessage& m : messages) {
            if (const std::uint64_t ticket = held_ticket(m)) {
                lock.unlock();
                group_.await(ticket);
                detail::throw_already_queued(push_all_call, m.id);
            }
            check_new(m, true);
            if (!ids.insert(m.id).second) {
                detail::check_push_id(push_all_call, m, true);
            }
            records.push_back(pushed(m));
        }
        if (messages.size() > options_.max_size - std::min(options_.max_size, index_.size())) {
            full();
        }
        const std::uint64_t ticket = commit_and_apply(records);
        lock.unlock();
        group_.await(ticket);
    }

    std::vector<QueuedMessage> claim(WallTime now, std::size_t max, Duration lease_for) override {
        const WallTime until = detail::lease_end("bulwark::FileQueueStore::claim", now, lease_for);
        std::vector<QueuedMessage> out;
        detail::UniqueLock lock(mutex_);
        const std::vector<const QueuedMessage*> ready = index_.ready_at(now, max);
        if (ready.empty()) {
            return out;
        }
        std::vector<Record> records;
        records.reserve(ready.size() + 1);
        std::uint64_t token = last_lease_;
        if (token + ready.size() > reserved_) {
            // Journaled before any token of the block is handed out (and awaited below).
            Record r;
            r.type = Type::tokens;
            r.tokens = token + ready.size() + lease_block;
            records.push_back(std::move(r));
        }
        out.reserve(ready.size());
        for (const QueuedMessage* m : ready) {
            out.push_back(*m);
            QueuedMessage& c = out.back();
            c.lease = ++token;
            c.lease_until = until;
            ++c.claims;
            Record r;
            r.type = Type::claim;
            r.message.id = m->id;
            r.message.lease = c.lease;
            r.message.lease_until = until;
            records.push_back(std::move(r));
        }
        const bool reserving = records.front().type == Type::tokens;
        const std::uint64_t ticket = commit_and_apply(records);
        if (reserving) {
            reserve_ticket_ = ticket;
        }
        // Every claim waits for the latest reservation (at once when it is durable): no token
        // of a block is acknowledged before the block is.
        const std::uint64_t wait_for = reserve_ticket_;
        lock.unlock();
        group_.await(wait_for);
        return out;
    }

    bool complete(std::string_view id, std::uint64_t lease) override {
        detail::UniqueLock lock(mutex_);
        if (index_.find_leased(id, lease) == nullptr) {
            return false;
        }
        Record r;
        r.type = Type::complete;
        r.message.id = std::string(id);
        r.message.lease = lease;
        const std::uint64_t ticket = commit_and_apply({std::move(r)});
        lock.unlock();
        group_.await(ticket);
        return true;
    }

    // Also throws QueueMessageTooLargeError (the lease stays) for a payload over the limit.
    bool release(const QueuedMessage& message) override {
        detail::UniqueLock lock(mutex_);
        if (index_.find_leased(message.id, message.lease) == nullptr) {
            return false;
        }
        check_payload(message, "release");
        Record r;
        r.type = Type::release;
        r.message.id = message.id;
        r.message.lease = message.lease;
        r.message.payload = message.payload;
        r.message.due = message.due;
        r.message.attempts = message.attempts;
        const std::uint64_t ticket = commit_and_apply({std::move(r)});
        lock.unlock();
        group_.await(ticket);
        return true;
    }

    // Journaled, not awaited: a lost extend ends the lease sooner (the message is redelivered).
    bool extend(std::string_view id, std::uint64_t lease, WallTime until) override {
        detail::LockGuard lock(mutex_);
        if (index_.find_leased(id, lease) == nullptr) {
            return false;
        }
        Record r;
        r.type = Type::extend;
        r.message.id = std::string(id);
        r.message.lease = lease;
        r.message.lease_until = until;
        commit_and_apply({std::move(r)});
        return true;
    }

    bool remove(std::string_view id) override {
        detail::UniqueLock lock(mutex_);
        if (!index_.contains(id)) {
            return false;
        }
        Record r;
        r.type = Type::remove;
        r.message.id = std::string(id);
        const std::uint64_t ticket = commit_and_apply({std::move(r)});
        lock.unlock();
        group_.await(ticket);
        return true;
    }

    std::optional<QueuedMessage> get(std::string_view id) const override {
        detail::LockGuard lock(mutex_);
        const QueuedMessage* m = index_.find(id);
        if (m == nullptr) {
            return std::nullopt;
        }
        return *m;
    }

    std::size_t size() const override {
        detail::LockGuard lock(mutex_);
        return index_.size();
    }

    std::optional<WallTime> next_ready() const override {
        detail::LockGuard lock(mutex_);
        return index_.next_ready();
    }

    std::vector<QueuedMessage> list(std::size_t limit) const override {
        std::vector<QueuedMessage> out;
        detail::LockGuard lock(mutex_);
        index_.for_each_ready([&](const QueuedMessage& m) {
            if (out.size() >= limit) {
                return false;
            }
            out.push_back(m);
            return true;
        });
        return out;
    }

    QueueStoreStats stats() const override {
        detail::LockGuard lock(mutex_);
        return {index_.size(), index_.leased()};
    }

    // Makes every record written so far durable (for sync=batch or none, or to make claims and
    // extends durable). Throws JournalIoError (and poisons) if the sync fails,
    // JournalPoisonedError on a poisoned store.
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

private:
    static constexpr const char* push_call = "bulwark::FileQueueStore::push";
    static constexpr const char* push_all_call = "bulwark::FileQueueStore::push_all";
    // Tokens reserved at a time: one reservation record (and sync) per this many claims.
    static constexpr std::uint64_t lease_block = 4096;

    static const FileQueueStoreOptions& checked(const FileQueueStoreOptions& options) {
        options.validate();
        return options;
    }

    [[noreturn]] BULWARK_NOINLINE void full() const {
        throw QueueFullError("bulwark::FileQueueStore is full (max_size " +
                             std::to_string(options_.max_size) + ")");
    }

    [[noreturn]] BULWARK_NOINLINE static void too_large(const char* call, const char* what,
                                                        const char* limit_name, std::size_t size,
                                                        std::size_t limit) {
        throw QueueMessageTooLargeError(std::string("bulwark::FileQueueStore::") + call + ": " +
                                            what + " of " + std::to_string(size) +
                                            " bytes exceeds " + limit_name + " (" +
                                            std::to_string(limit) + ")",
                                        limit_name, size, limit);
    }

    void check_payload(const QueuedMessage& m, const char* call) const {
        if (m.payload.size() > options_.max_payload_bytes) {
            too_large(call, "payload", "max_payload_bytes", m.payload.size(),
                      options_.max_payload_bytes);
        }
    }

    // sync=always: for a push of an id already held, what to await before refusing it (0:
    // nothing): "already queued" is said only once the record that holds it is durable, never
    // of a push that a power cut could still undo. (Messages replayed at open are durable.)
    std::uint64_t held_ticket(const QueuedMessage& m) const BULWARK_REQUIRES(mutex_) {
        if (options_.sync != JournalSync::always || m.id.empty() || !index_.contains(m.id)) {
            return 0;
        }
        return group_.written();
    }

    // `batch`: for push_all (the errors name the call).
    void check_new(const QueuedMessage& m, bool batch) const BULWARK_REQUIRES(mutex_) {
        detail::check_push_id(batch ? push_all_call : push_call, m, index_.contains(m.id));
        const char* call = batch ? "push_all" : "push";
        if (m.id.size() > options_.max_id_bytes) {
            too_large(call, "id", "max_id_bytes", m.id.size(), options_.max_id_bytes);
        }
        check_payload(m, call);
    }

    // The record of a push: the message without claims or lease.
    static Record pushed(const QueuedMessage& message) {
        Record r;
        r.type = Type::message;
        r.message = message;
        r.message.claims = 0;
        r.message.lease = 0;
        r.message.lease_until = WallTime{};
        return r;
    }

    // ---- the one place where records change the index (replay and live writes) --------------

    void apply(const Record& r) BULWARK_REQUIRES(mutex_) {
        namespace qj = detail::queue_journal;
        const QueuedMessage& m = r.message;
        switch (r.type) {
            case Type::message:
                if (index_.contains(m.id)) {
                    return;  // cannot be written by a store; ignored like a duplicate push
                }
                index_.insert(m);
                live_bytes_ += qj::snapshot_frame_size(m);
                last_lease_ = std::max(last_lease_, m.lease);
                return;
            case Type::claim:
                if (index_.contains(m.id)) {
                    index_.lease(m.id, m.lease, m.lease_until);
                }
                last_lease_ = std::max(last_lease_, m.lease);
                return;
            case Type::complete:
                if (const QueuedMessage* held = index_.find_leased(m.id, m.lease)) {
                    live_bytes_ -= qj::snapshot_frame_size(*held);
                    index_.erase(m.id);
                }
                return;
            case Type::release:
                if (const QueuedMessage* held = index_.find_leased(m.id, m.lease)) {
                    live_bytes_ -= qj::snapshot_frame_size(*held);
                    index_.release(m.id, m.payload, m.due, m.attempts);
                    live_bytes_ += qj::snapshot_frame_size(*held);
                }
                return;
            case Type::extend:
                if (index_.find_leased(m.id, m.lease) != nullptr) {
                    index_.extend(m.id, m.lease_until);
                }
                return;
            case Type::remove:
                if (const QueuedMessage* held = index_.find(m.id)) {
                    live_bytes_ -= qj::snapshot_frame_size(*held);
                    index_.erase(m.id);
                }
                return;
            case Type::tokens:
                reserved_ = std::max(reserved_, r.tokens);
                return;
            case Type::batch:
                // Replay hands over a batch's records one by one, and a write applies the
                // records it was given: a batch record never gets here.
                return;
        }
    }

    // ---- the write path: journal first, then the index ---------------------------------------

    // Journals `records` (one frame: all or none), then applies them. Throws what
    // BasicJournalFile::append throws, having applied nothing; if applying runs out of memory,
    // std::bad_alloc with the store poisoned (memory and disk differ until a reopen replays the
    // disk). Returns the ticket to await before acknowledging (0: none), which the caller does
    // with the lock released (group commit).
    std::uint64_t commit_and_apply(const std::vector<Record>& records) BULWARK_REQUIRES(mutex_) {
        const std::uint64_t ticket = journal_.append(records);
        try {
            for (const Record& r : records) {
                apply(r);
            }
        } catch (...) {
            journal_.poison_after(
                "a change was journaled but could not be applied in memory (out of memory); "
                "reopen to recover it");
            throw;
        }
        // The lambda runs within maybe_compact(), with mutex_ still held; the analysis checks a
        // lambda as a function of its own and cannot know that.
        journal_.maybe_compact(live_bytes_,
                               [this](std::uint64_t salt)
                                   BULWARK_NO_THREAD_SAFETY_ANALYSIS { return snapshot(salt); });
        return ticket;
    }

    // What a compaction writes: the token high-water mark, then every message with its whole
    // state (lease included), in push order so that a replay keeps the order of ties.
    detail::JournalSnapshot snapshot(std::uint64_t salt) const BULWARK_REQUIRES(mutex_) {
        namespace j = detail::journal;
        const j::Framing framing{j::salt_seed(salt), Codec::version};
        detail::JournalSnapshot out{j::encode_header(salt, Codec::version, Codec::file_magic), 0};
        Record r;
        r.type = Type::tokens;
        r.tokens = std::max(reserved_, last_lease_);
        j::encode_record<Codec>(r, out.bytes, framing, ++out.frames);
        r.type = Type::message;
        for (const QueuedMessage* m : index_.in_push_order()) {
            r.message = *m;
            j::encode_record<Codec>(r, out.bytes, framing, ++out.frames);
        }
        return out;
    }

    const FileQueueStoreOptions options_;
    // Syncs for sync=always writers with mutex_ released; thread-safe by itself, and before
    // journal_, which uses it.
    detail::GroupCommit group_;
    mutable detail::Mutex mutex_;
    detail::BasicJournalFile<Codec> journal_ BULWARK_GUARDED_BY(mutex_);
    detail::QueueIndex index_ BULWARK_GUARDED_BY(mutex_);
    // The last token handed out (or seen in the journal).
    std::uint64_t last_lease_ BULWARK_GUARDED_BY(mutex_) = 0;
    // Tokens up to this one are reserved in the journal: claim journals a new block first.
    std::uint64_t reserved_ BULWARK_GUARDED_BY(mutex_) = 0;
    // The ticket of the latest reservation (0: nothing to wait for).
    std::uint64_t reserve_ticket_ BULWARK_GUARDED_BY(mutex_) = 0;
    // snapshot()'s size.
    std::uint64_t live_bytes_ BULWARK_GUARDED_BY(mutex_) =
        detail::queue_journal::snapshot_base_size();
};

}  // namespace bulwark

#endif  // BULWARK_FILE_QUEUE_STORE_HPP

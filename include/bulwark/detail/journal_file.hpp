// BasicJournalFile: a store's journal on disk: recovery, appends, syncs, compaction (private).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_JOURNAL_FILE_HPP
#define BULWARK_DETAIL_JOURNAL_FILE_HPP

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <bulwark/clock.hpp>
#include <bulwark/config.hpp>
#include <bulwark/dead_letter_store.hpp>
#include <bulwark/detail/dead_letter_index.hpp>
#include <bulwark/detail/file_system.hpp>
#include <bulwark/detail/group_commit.hpp>
#include <bulwark/detail/journal.hpp>
#include <bulwark/file_dead_letter_store_errors.hpp>
#include <bulwark/file_dead_letter_store_options.hpp>
#include <bulwark/journal_errors.hpp>
#include <bulwark/journal_options.hpp>
#include <bulwark/time.hpp>

namespace bulwark {

namespace detail {

// Closes a FileSystem handle when it goes out of scope.
class FileHandle {
public:
    FileHandle() = default;
    FileHandle(FileSystem& fs, FileSystem::Handle h) noexcept : fs_(&fs), h_(h) {}
    FileHandle(FileHandle&& other) noexcept : fs_(other.fs_), h_(other.h_) { other.h_ = -1; }
    FileHandle& operator=(FileHandle&& other) noexcept {
        if (this != &other) {
            reset();
            fs_ = other.fs_;
            h_ = other.h_;
            other.h_ = -1;
        }
        return *this;
    }
    FileHandle(const FileHandle&) = delete;
    FileHandle& operator=(const FileHandle&) = delete;
    ~FileHandle() { reset(); }

    FileSystem::Handle get() const noexcept { return h_; }
    void reset() noexcept {
        if (h_ >= 0) {
            fs_->close(h_);
            h_ = -1;
        }
    }

private:
    FileSystem* fs_ = nullptr;
    FileSystem::Handle h_ = -1;
};

// A compacted journal: its bytes and how many frames they hold.
struct JournalSnapshot {
    std::string bytes;
    std::uint64_t frames = 0;
};

// A compacted journal: a header with `salt`, the counters, every record of `index` (as snapshot
// adds, which replay does not count as adds), numbered from 1.
inline JournalSnapshot journal_snapshot(std::uint64_t salt, const DeadLetterCounters& counters,
                                        const DeadLetterIndex& index) {
    const journal::Framing framing{journal::salt_seed(salt)};
    JournalSnapshot out{journal::encode_header(salt), 0};
    journal::Record record;
    record.type = journal::RecordType::counters;
    record.counters = counters;
    journal::encode_record(record, out.bytes, framing, ++out.frames);
    journal::Record add;
    add.type = journal::RecordType::add;
    add.snapshot = true;
    for (const auto& entry : index) {
        add.letter = entry.second;
        journal::encode_record(add, out.bytes, framing, ++out.frames);
    }
    return out;
}

// The size of journal_snapshot() for an empty index.
inline std::uint64_t journal_snapshot_base_size() noexcept {
    return journal::header_size + journal::frame_overhead + 40;
}

// The settings a journal file follows: the journal part of a store's options.
struct JournalOptions {
    JournalSync sync = JournalSync::always;
    std::size_t batch_records = 128;
    Duration batch_interval{};
    JournalRecovery recovery = JournalRecovery::tolerate_torn_tail;
    std::uint64_t compact_min_bytes = std::uint64_t{4} << 20U;

    // From any store options that carry these fields (validated by their owner).
    template <class Options>
    static JournalOptions of(const Options& o) {
        return {o.sync, o.batch_records, o.batch_interval, o.recovery, o.compact_min_bytes};
    }
};

// The journal file of a file store (Codec says whose: journal::DeadLetterCodec for
// FileDeadLetterStore, queue_journal::Codec for FileQueueStore), in the store's directory:
// opening it (creating the
// directory, refusing what is not private, taking the LOCK, recovering as the options' recovery
// mode says, keeping a copy before salvage changes anything), appending frames (a failed write
// rolled back, a failed sync poisoning), syncing as the options' sync mode says, and compacting
// crash-safely (a new journal renamed over the old one). What the records mean is its owner's:
// it replays them into the owner and writes the snapshot the owner gives. Its errors are the
// journal errors (journal_errors.hpp) and name the store (Codec::store_name). Not thread-safe: the
// store's mutex guards it.
template <class Codec>
class BasicJournalFile {
public:
    using Record = typename Codec::Record;

    // The file system, the clock and `group` (over the same file system) must outlive the
    // journal file; `options` are valid.
    BasicJournalFile(FileSystem& fs, Clock& clock, GroupCommit& group, std::string directory,
                     const JournalOptions& options)
        : options_(options),
          fs_(fs),
          group_(group),
          clock_(&clock),
          directory_(trim_slashes(std::move(directory))),
          journal_path_(directory_ + "/journal"),
          temp_path_(directory_ + "/journal.compact") {}

    const std::string& directory() const noexcept { return directory_; }
    bool poisoned() const { return group_.poisoned(); }
    std::string poison_reason() const { return group_.poison_reason(); }

    // All but live_bytes, which the owner of the records knows.
    JournalStats stats() const {
        JournalStats s = stats_;
        s.poisoned = group_.poisoned();
        s.poison_reason = group_.poison_reason();
        s.syncs += group_.syncs();
        s.file_bytes = end_;
        s.unsynced_records = group_.unsynced();
        return s;
    }

    // Opens (creating if missing) the journal in the directory. replay(Record&) is given every
    // record recovered, in order (it may move from it); snapshot(salt) returns a compacted journal
    // of what was replayed so far (journal_snapshot()). A journal of an older format version is
    // rewritten in the current one. reserve(n) hears that about n records may follow. Throws
    // JournalError and its subclasses, or what replay throws.
    template <class Replay, class Snapshot, class Reserve>
    void open(Replay&& replay, const Snapshot& snapshot, const Reserve& reserve) {
        try {
            FileSystem::Info dir = fs_.info(directory_);
            bool created = false;
            if (dir.kind == FileSystem::Kind::missing) {
                try {
                    fs_.make_dir(directory_);
                    created = true;
                } catch (const std::system_error& e) {
                    // Another store (another process) created it since info(): open that
                    // directory like any existing one; its LOCK says whether it is in use.
                    if (e.code() != std::errc::file_exists) {
                        throw;
                    }
                    dir = fs_.info(directory_);
                }
            }
            if (created) {
                fs_.sync_dir(parent_directory());
            } else if (dir.kind != FileSystem::Kind::directory) {
                throw JournalError(std::string(Codec::store_name) + ": " + directory_ +
                                   (dir.kind == FileSystem::Kind::symlink ? " is a symlink; refused"
                                                                          : " is not a directory"));
            } else {
                check_private(directory_, dir, true);
            }
        } catch (const std::system_error& e) {
            throw_io("cannot create directory " + directory_, e);
        }
        try {
            lock_ = FileHandle(fs_, fs_.lock(directory_ + "/LOCK"));
        } catch (const std::system_error& e) {
            if (e.code() == std::errc::operation_would_block ||
                e.code() == std::errc::resource_unavailable_try_again) {
                throw JournalLockedError(std::string(Codec::store_name) + ": " + directory_ +
                                             " is in use by another store (LOCK held)",
                                         e.code());
            }
            throw_io("cannot lock " + directory_, e);
        }
        try {
            fs_.remove(temp_path_);  // an interrupted compaction's output; the journal is whole
            const FileSystem::Info journal = fs_.info(journal_path_);
            if (journal.kind == FileSystem::Kind::missing) {
                install_snapshot(snapshot);
            } else if (journal.kind != FileSystem::Kind::regular) {
                throw JournalError(std::string(Codec::store_name) + ": " + journal_path_ +
                                   (journal.kind == FileSystem::Kind::symlink
                                        ? " is a symlink; refused"
                                        : " is not a regular file"));
            } else {
                check_private(journal_path_, journal, false);
                FileHandle opened(fs_, fs_.open(journal_path_, false, false));
                const FileSystem::Handle handle = opened.get();
                group_.replace_file(handle, [&] { file_ = std::move(opened); });
                recover(fs_.read_all(file_.get()), replay, snapshot, reserve);
            }
            // Before accepting a write, make every name on the way durable: the directory in its
            // parent, the journal in the directory. A crash of an earlier process may have cut
            // short the directory sync after a mkdir, a journal creation or a compaction's
            // rename; records synced into the new file would then vanish with its name at a
            // power loss.
            fs_.sync_dir(parent_directory());
            fs_.sync_dir(directory_);
        } catch (const std::system_error& e) {
            throw_io("cannot open journal " + journal_path_, e);
        }
        last_sync_ = clock_->now();
    }

    // Poisons the journal after a failure its owner found: a record was written but could not be
    // applied in memory (out of memory), so memory and disk differ until a reopen replays the
    // disk. Never throws (it runs while an exception is in flight); the reason may stay empty if
    // even it cannot be allocated.
    void poison_after(const char* why) noexcept { group_.poison(why); }

    // Throws JournalPoisonedError when poisoned.
    void check_writable() const {
        if (group_.poisoned()) {
            throw JournalPoisonedError(std::string(Codec::store_name) + ": " + directory_ +
                                       " is poisoned and refuses changes (reopen it to recover): " +
                                       group_.poison_reason());
        }
    }

    // Appends `records`; returns the ticket to await() (see commit()).
    std::uint64_t append(const std::vector<Record>& records) {
        // One frame per call, so that a crash applies all of it or none; a call too large for one
        // frame (hundreds of MiB) is split into several, each still all or none.
        std::string frames;
        std::size_t first = 0;
        std::uint64_t count = 0;  // frames
        while (first < records.size()) {
            std::size_t last = first;
            std::uint64_t bytes = 0;
            while (
                last < records.size() &&
                (last == first || bytes + Codec::frame_estimate(records[last]) <= record_limit)) {
                bytes += Codec::frame_estimate(records[last]);
                ++last;
            }
            const std::uint64_t sequence = next_sequence_ + count;
            if (last - first == 1) {
                journal::encode_record<Codec>(records[first], frames, framing_, sequence);
            } else {
                const Record batch = Codec::batch_of(records.data() + first, records.data() + last);
                journal::encode_record<Codec>(batch, frames, framing_, sequence);
            }
            ++count;
            first = last;
        }
        return commit(frames, records.size(), count);
    }

    // Appends one record; returns the ticket to await() (see commit()).
    std::uint64_t append(const Record& record) {
        std::string frames;
        journal::encode_record<Codec>(record, frames, framing_, next_sequence_);
        return commit(frames, 1, 1);
    }

    // Returns once the records of `ticket` (what append() returned) are durable; with
    // sync=always, the writer calls it before acknowledging, best with the owner's lock released
    // so that concurrent writers share one sync. Throws JournalIoError (poisoned) if a
    // sync failed. Thread-safe: needs no lock.
    void await(std::uint64_t ticket) const { group_.await(ticket); }

    // Makes every record written so far durable. Throws JournalIoError (and poisons) if
    // the sync fails.
    void sync() {
        try {
            fs_.sync(file_.get());
        } catch (const std::exception& e) {
            // What reached the disk is unknown (the kernel may have dropped the dirty pages):
            // never write again from this state. Poisoned before anything else can fail.
            poison_with("a journal sync failed", e);
            throw JournalIoError(
                std::string(Codec::store_name) +
                    ": journal sync failed (store poisoned): " + std::string(e.what()),
                error_code_of(e), true);
        }
        ++stats_.syncs;
        group_.synced_all();  // every write happens under the owner's lock, held here
        last_sync_ = clock_->now();
    }

    // Runs after a mutation has been applied: compacts (writes snapshot(salt) as the new journal)
    // once the journal is larger than both compact_min_bytes and twice `live_bytes`, the size of
    // a snapshot now. Never throws a std::system_error or std::bad_alloc (the mutation stands); a
    // failure before the rename keeps the old journal, one after it poisons.
    template <class Snapshot>
    void maybe_compact(std::uint64_t live_bytes, const Snapshot& snapshot) {
        const std::uint64_t threshold = std::max(options_.compact_min_bytes, 2 * live_bytes);
        if (end_ <= threshold || end_ < compact_retry_at_ || group_.poisoned()) {
            return;
        }
        if (options_.sync != JournalSync::none && group_.unsynced() > 0) {
            try {
                sync();  // the old journal must be whole if the rename is lost
            } catch (const JournalIoError&) {
                return;  // poisoned; the mutation itself was written
            }
        }
        Stage stage = Stage::writing;
        try {
            install_snapshot(snapshot, &stage);
            ++stats_.compactions;
            compact_retry_at_ = 0;
        } catch (const std::system_error& e) {
            ++stats_.compaction_failures;
            if (stage == Stage::renamed) {
                poison_with("compaction could not sync the directory", e);
                return;
            }
            if (stage == Stage::renaming) {
                // rename(2) failing with EIO may still have replaced the journal: we cannot
                // tell which file later appends would reach.
                poison_with("compaction rename failed", e);
            }
            try {
                fs_.remove(temp_path_);
            } catch (const std::system_error&) {  // NOLINT(bugprone-empty-catch): next open
            }
            compact_retry_at_ = end_ + options_.compact_min_bytes;
        } catch (const std::length_error&) {
            // A record too large for one frame (the options' bounds rule it out) is found while
            // the snapshot is built, before any file is touched: the journal stays as it is and
            // the mutation, already written, stands.
            ++stats_.compaction_failures;
            compact_retry_at_ = end_ + options_.compact_min_bytes;
        } catch (const std::bad_alloc&) {
            // Out of memory, almost always while the snapshot is built (before any file is
            // touched): the old journal stays and the mutation, written and applied, stands. Past
            // the rename we cannot tell which file later appends would reach.
            ++stats_.compaction_failures;
            if (stage != Stage::writing) {
                poison_after("compaction ran out of memory while renaming the new journal");
                return;
            }
            try {
                fs_.remove(temp_path_);
            } catch (const std::exception&) {  // NOLINT(bugprone-empty-catch): next open
            }
            compact_retry_at_ = end_ + options_.compact_min_bytes;
        }
    }

    // sync=batch: syncs what is still unsynced, for a store that closes. Throws
    // std::system_error.
    void sync_unsynced_batch() {
        if (options_.sync == JournalSync::batch && group_.unsynced() > 0 && !group_.poisoned()) {
            fs_.sync(file_.get());
        }
    }

private:
    // Writes a new journal (with a new salt) to the temp file, created exclusively, syncs it,
    // renames it over the journal and syncs the directory: a crash at any point leaves either
    // the old or the new journal whole. Throws std::system_error; `stage` tells the caller how
    // far it got.
    enum class Stage : std::uint8_t { writing, renaming, renamed };
    template <class Snapshot>
    void install_snapshot(const Snapshot& snapshot, Stage* stage = nullptr) {
        Stage ignored = Stage::writing;
        Stage& at = stage != nullptr ? *stage : ignored;
        at = Stage::writing;
        const std::uint64_t salt = journal::new_salt();
        const JournalSnapshot written = snapshot(salt);
        const std::string& bytes = written.bytes;
        fs_.remove(temp_path_);  // a stale one (an earlier failure): O_EXCL below
        FileHandle temp(fs_, fs_.create_new(temp_path_));
        fs_.write_at(temp.get(), 0, bytes);
        fs_.sync(temp.get());
        at = Stage::renaming;
        fs_.rename(temp_path_, journal_path_);
        at = Stage::renamed;
        // A sync of the old file may be running (a writer leading a group commit): the old
        // handle is closed only once it has returned.
        const FileSystem::Handle handle = temp.get();
        group_.replace_file(handle, [&] { file_ = std::move(temp); });
        framing_ = journal::Framing{journal::salt_seed(salt)};
        next_sequence_ = written.frames + 1;
        end_ = bytes.size();
        ++stats_.syncs;
        fs_.sync_dir(directory_);
        // The new file holds every record and is synced, under its name. (With sync=always or
        // batch, maybe_compact() synced the old one first anyway.)
        group_.synced_all();
    }

    // Keeps the journal's bytes as they were before recovery drops or rewrites anything, as
    // journal.corrupt-<n> (0600, synced, its directory entry too): salvage never destroys the
    // only copy. Throws std::system_error.
    void preserve(std::string_view bytes) {
        for (unsigned n = 0;; ++n) {
            const std::string path = journal_path_ + ".corrupt-" + std::to_string(n);
            if (fs_.kind(path) != FileSystem::Kind::missing) {
                if (n >= 9999) {
                    throw std::system_error(EEXIST, std::generic_category(),
                                            "too many " + journal_path_ + ".corrupt-* copies");
                }
                continue;
            }
            FileHandle copy(fs_, fs_.create_new(path));
            fs_.write_at(copy.get(), 0, bytes);
            fs_.sync(copy.get());
            copy.reset();
            fs_.sync_dir(directory_);
            stats_.corrupt_copy = path;
            return;
        }
    }

    // The first whole frame at or after `from`, or npos: a resynchronising scan. A candidate
    // counts only when its salted header check passes; one whose body fails is skipped whole.
    std::size_t find_frame(std::string_view all, std::size_t from,
                           journal::ScanBudget& budget) const {
        namespace j = detail::journal;
        Record ignored;
        std::size_t at = from;
        while (at < all.size()) {
            std::size_t size = 0;
            std::uint64_t sequence = 0;
            switch (j::check_frame<Codec>(all, at, framing_, ignored, size, sequence, &budget)) {
                case j::FrameStatus::good:
                    return at;
                case j::FrameStatus::torn:
                    return std::string_view::npos;  // the rest is an incomplete write
                case j::FrameStatus::bad_body:
                    at += size;
                    break;
                case j::FrameStatus::bad_header:
                    if (budget.exhausted) {
                        return std::string_view::npos;
                    }
                    ++at;
                    break;
            }
        }
        return std::string_view::npos;
    }

    template <class Replay, class Snapshot, class Reserve>
    void recover(const std::string& bytes, Replay& replay, const Snapshot& snapshot,
                 const Reserve& reserve) {
        namespace j = detail::journal;
        const std::string_view all(bytes);
        const bool salvaging = options_.recovery == JournalRecovery::point_in_time ||
                               options_.recovery == JournalRecovery::skip_corrupt;
        if (all.size() < j::header_size) {
            // The magic and version are fixed; the salt and the header CRC are not.
            const std::string header = j::encode_header(0, Codec::version, Codec::file_magic);
            const std::size_t fixed = std::min<std::size_t>(all.size(), 12);
            if (all.empty() || (options_.recovery != JournalRecovery::strict &&
                                header.compare(0, fixed, all.substr(0, fixed)) == 0)) {
                // A header cut short: nothing was ever acknowledged in this file.
                stats_.dropped_tail_bytes = all.size();
                if (salvaging && !all.empty()) {
                    preserve(all);
                }
                file_.reset();
                install_snapshot(snapshot);
                return;
            }
            throw_corrupt(0, "shorter than its header");
        }
        if (all.compare(0, Codec::file_magic.size(),
                        std::string_view(Codec::file_magic.data(), Codec::file_magic.size())) !=
            0) {
            throw_corrupt(0, std::string("not a ") + Codec::journal_kind + " (bad magic)");
        }
        const std::uint32_t version = j::load_u32(all, 8);
        if (j::crc32c(all.substr(0, 20)) != j::load_u32(all, 20)) {
            throw_corrupt(0, "header checksum mismatch");
        }
        if (version == 0) {
            throw_corrupt(8, "format version 0");
        }
        if (version > Codec::version) {
            throw JournalVersionError(std::string(Codec::store_name) + ": journal " +
                                          journal_path_ + " has format version " +
                                          std::to_string(version) + "; this build reads version " +
                                          std::to_string(Codec::version),
                                      version);
        }
        if (version < Codec::oldest_version) {
            throw JournalVersionError(
                std::string(Codec::store_name) + ": journal " + journal_path_ +
                    " has format version " + std::to_string(version) +
                    ", from a pre-release build; this build reads " + "versions " +
                    std::to_string(Codec::oldest_version) + " to " + std::to_string(Codec::version),
                version);
        }
        framing_ = j::Framing{j::salt_seed(j::load_u64(all, 12)), version};
        const bool sequenced = version >= 3;
        std::size_t pos = j::header_size;
        std::size_t good_end = pos;
        j::ScanBudget budget{8 * static_cast<std::uint64_t>(all.size()) + (1U << 20U)};
        // A record takes at least a frame head and a few bytes: size the owner's id table once
        // rather than rehashing it all the way up (over-estimating by no more than the file/16).
        reserve(all.size() / 128);
        Record record;
        next_sequence_ = 1;
        bool after_damage = false;  // a skipped region ends here: its frames' numbers are missing
        while (pos < all.size()) {
            std::size_t size = 0;
            std::uint64_t sequence = 0;
            const j::FrameStatus status =
                j::check_frame<Codec>(all, pos, framing_, record, size, sequence);
            if (status == j::FrameStatus::good && (!sequenced || sequence == next_sequence_ ||
                                                   (after_damage && sequence > next_sequence_))) {
                if (Codec::is_batch(record)) {
                    // Streamed: its records replayed one at a time, never all decoded at once
                    // (decode_record() has checked them all).
                    Codec::for_each_in_batch(record, replay);
                } else {
                    replay(record);
                }
                ++stats_.recovered_records;
                next_sequence_ = sequence + 1;
                after_damage = false;
                pos += size;
                good_end = pos;
                continue;
            }
            if (status == j::FrameStatus::good) {
                // A whole frame of this file, out of place: one seen already (a duplicated or
                // replayed write), or one whose predecessors are missing. Never replayed as if
                // it fitted, whatever the mode: a replayed add would bring back a purged record.
                const bool duplicate = sequence < next_sequence_;
                if (options_.recovery == JournalRecovery::strict ||
                    options_.recovery == JournalRecovery::tolerate_torn_tail) {
                    throw_corrupt(pos, "record out of sequence: number " +
                                           std::to_string(sequence) + " where " +
                                           std::to_string(next_sequence_) + " was expected (" +
                                           (duplicate ? "a duplicated or replayed write"
                                                      : "records are missing before it") +
                                           "; JournalRecovery::point_in_time keeps the records "
                                           "before it, skip_corrupt skips it, both keeping a copy "
                                           "of the file)");
                }
                ++(duplicate ? stats_.duplicate_records : stats_.sequence_gaps);
                if (options_.recovery == JournalRecovery::point_in_time) {
                    break;
                }
                ++stats_.corrupt_regions;
                if (duplicate) {
                    // skip_corrupt: drop it; the frames after it may still fit.
                    stats_.skipped_bytes += size;
                    pos += size;
                    continue;
                }
                // skip_corrupt: records went missing without a trace; keep what follows.
                after_damage = true;
                continue;
            }
            if (options_.recovery == JournalRecovery::strict) {
                throw_corrupt(pos, std::string(status == j::FrameStatus::torn ? "incomplete record"
                                                                              : "damaged record") +
                                       " (recovery mode strict)");
            }
            if (status == j::FrameStatus::torn) {
                break;  // an incomplete last record: a torn write, dropped unread
            }
            // Damage at `pos`. A head that checks gives the frame's extent; otherwise rescan.
            std::size_t next =
                find_frame(all, status == j::FrameStatus::bad_body ? pos + size : pos + 1, budget);
            if (budget.exhausted) {
                if (options_.recovery == JournalRecovery::tolerate_torn_tail) {
                    throw_corrupt(pos, "damaged record; too much damage after it to resynchronise");
                }
                break;  // salvage what came before; the rest is dropped
            }
            if (next == std::string_view::npos) {
                if (status != j::FrameStatus::bad_header ||
                    !j::whole_frame_with_bad_head(all, pos, framing_)) {
                    break;  // nothing whole after the damage: a torn tail
                }
                // A whole, synced last record whose length or type was damaged afterwards.
                if (options_.recovery == JournalRecovery::tolerate_torn_tail) {
                    throw_corrupt(pos,
                                  "the last record is complete but its header is damaged (not a "
                                  "torn write); JournalRecovery::point_in_time or skip_corrupt "
                                  "open the journal without it (keeping a copy of the file)");
                }
                next = all.size();
            } else if (options_.recovery == JournalRecovery::tolerate_torn_tail) {
                throw_corrupt(pos, "damaged record followed by valid records at offset " +
                                       std::to_string(next) +
                                       " (JournalRecovery::skip_corrupt salvages the valid records "
                                       "but drops the damaged ones, keeping a copy of the file)");
            }
            if (options_.recovery == JournalRecovery::point_in_time) {
                break;
            }
            ++stats_.corrupt_regions;
            stats_.skipped_bytes += next - pos;
            pos = next;
            after_damage = true;
        }
        end_ = good_end;
        if (salvaging && (good_end < all.size() || stats_.corrupt_regions > 0)) {
            preserve(all);  // before anything is dropped or rewritten
        }
        if (good_end < all.size()) {
            stats_.dropped_tail_bytes = all.size() - good_end;
            fs_.truncate(file_.get(), good_end);
            fs_.sync(file_.get());
        }
        if (stats_.corrupt_regions > 0 || !sequenced) {
            // Rewrite without the damage, so that the next open in any mode accepts the file; or
            // in the current format, so that every frame appended to it has a sequence.
            install_snapshot(snapshot);
            ++stats_.compactions;
            stats_.upgraded_from_version = sequenced ? 0 : version;
        } else if (good_end == all.size()) {
            // Replayed as it was: it may hold records a process with sync=batch or none wrote but
            // never synced. Make them durable before an add of the same id (a duplicate) can be
            // acknowledged on their strength. (A truncated or rewritten journal is synced above.)
            fs_.sync(file_.get());
            ++stats_.syncs;
        }
    }

    // The directory that holds the store's directory, as the kernel resolves it (a symlinked
    // ancestor is fine; the final component ".." never is one).
    std::string parent_directory() const { return directory_ + "/.."; }

    static std::string octal(std::uint32_t mode) {
        std::string out;
        for (int shift = 9; shift >= 0; shift -= 3) {
            out.push_back(static_cast<char>('0' + ((mode >> static_cast<unsigned>(shift)) & 7U)));
        }
        return out;
    }

    // Refuses a directory or journal that someone else could read or replace: not owned by this
    // process's effective user, a directory open to group or others, a journal with another name.
    static void check_private(const std::string& path, const FileSystem::Info& info,
                              bool directory) {
        const auto me = static_cast<std::uint64_t>(::geteuid());
        std::string problem;
        if (info.owner != me) {
            problem = " is owned by uid " + std::to_string(info.owner) +
                      ", not by this process's effective uid " + std::to_string(me);
        } else if (directory && (info.mode & 077U) != 0) {
            problem = " has mode " + octal(info.mode) +
                      ": group or others have access (make it 0700: chmod 700)";
        } else if (!directory && info.links != 1) {
            problem = " has " + std::to_string(info.links) +
                      " hard links (another name could read or change it)";
        }
        if (!problem.empty()) {
            throw JournalError(std::string(Codec::store_name) + ": " + path + problem +
                               "; refused");
        }
    }

    static std::string trim_slashes(std::string path) {
        while (path.size() > 1 && path.back() == '/') {
            path.pop_back();
        }
        return path;
    }

    [[noreturn]] BULWARK_NOINLINE static void throw_io(const std::string& what,
                                                       const std::system_error& e) {
        throw JournalError(std::string(Codec::store_name) + ": " + what + ": " + e.what(),
                           e.code());
    }

    [[noreturn]] BULWARK_NOINLINE void throw_corrupt(std::uint64_t offset,
                                                     const std::string& why) const {
        throw JournalCorruptError(std::string(Codec::store_name) + ": journal " + journal_path_ +
                                      " is corrupt at offset " + std::to_string(offset) + ": " +
                                      why,
                                  offset);
    }

    // Appends `frames` (`count` of them, numbered from next_sequence_; `records` records) and, with
    // sync=batch, syncs when the batch is due. Returns the ticket await() takes: with
    // sync=always the caller's records are durable once await() returns (group commit), with
    // batch and none there is nothing to wait for (0). Throws (applying nothing) on failure. A
    // failed write is undone by truncating to the last good end, so no part of it can be
    // replayed; if that fails too, or a sync fails, the store is poisoned.
    std::uint64_t commit(const std::string& frames, std::size_t records, std::uint64_t count) {
        check_writable();
        try {
            fs_.write_at(file_.get(), end_, frames);
        } catch (const std::exception& e) {
            // (std::bad_alloc too: part of the frames may be in the file all the same.)
            try {
                fs_.truncate(file_.get(), end_);
                if (options_.sync != JournalSync::none) {
                    fs_.sync(file_.get());
                }
                ++stats_.write_rollbacks;
            } catch (const std::exception&) {
                poison_with("a journal write failed and could not be undone", e);
                throw JournalIoError(std::string(Codec::store_name) +
                                         ": journal write failed and could not be undone "
                                         "(store poisoned): " +
                                         std::string(e.what()),
                                     error_code_of(e), true);
            }
            throw JournalIoError(
                std::string(Codec::store_name) +
                    ": journal write failed; nothing was recorded: " + std::string(e.what()),
                error_code_of(e), false);
        }
        end_ += frames.size();
        next_sequence_ += count;
        const std::uint64_t ticket = group_.wrote(records);
        if (options_.sync == JournalSync::always) {
            return ticket;
        }
        if (options_.sync == JournalSync::batch &&
            (group_.unsynced() >= options_.batch_records ||
             clock_->now() - last_sync_ >= options_.batch_interval)) {
            sync();
        }
        return 0;
    }

    // Poisons with "<what>: <e.what()>", or just `what` if that cannot be allocated. Never throws.
    void poison_with(const char* what, const std::exception& e) noexcept {
        try {
            group_.poison(std::string(what) + ": " + e.what());
        } catch (...) {
            group_.poison(what);
        }
    }

    static std::error_code error_code_of(const std::exception& e) noexcept {
        const auto* system = dynamic_cast<const std::system_error*>(&e);
        return system != nullptr ? system->code() : std::error_code{};
    }

    // The largest frame written (a reader accepts up to max_frame_bytes).
    static constexpr std::uint64_t record_limit = journal::max_frame_bytes / 2;

    const JournalOptions options_;
    FileSystem& fs_;
    GroupCommit& group_;
    Clock* const clock_;
    const std::string directory_;
    const std::string journal_path_;
    const std::string temp_path_;

    FileHandle lock_;
    FileHandle file_;
    journal::Framing framing_;         // the journal's salt_seed() and format version
    std::uint64_t next_sequence_ = 1;  // of the next frame appended
    std::uint64_t end_ = 0;            // bytes of the journal that hold whole records
    TimePoint last_sync_{};
    std::uint64_t compact_retry_at_ = 0;
    JournalStats stats_;
};

// FileDeadLetterStore's journal.
using JournalFile = BasicJournalFile<journal::DeadLetterCodec>;

}  // namespace detail

}  // namespace bulwark

#endif  // BULWARK_DETAIL_JOURNAL_FILE_HPP

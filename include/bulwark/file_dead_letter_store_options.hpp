// FileDeadLetterStore's settings and report: JournalSync, JournalRecovery, options, JournalStats.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_FILE_DEAD_LETTER_STORE_OPTIONS_HPP
#define BULWARK_FILE_DEAD_LETTER_STORE_OPTIONS_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include <bulwark/detail/throw.hpp>
#include <bulwark/time.hpp>

namespace bulwark {

// When a mutation's journal record is made durable (fsync) before the call returns.
enum class JournalSync : std::uint8_t {
    always,  // every mutation is synced before it returns (default): survives power loss
    batch,   // synced every batch_records records or batch_interval, whichever comes first
    none,    // never synced by the store: survives a process crash, not a power loss
};

// What opening a journal does with damaged bytes (RocksDB's WAL recovery modes). See
// docs/file_dead_letter_store.md for how a torn tail is told from damage.
enum class JournalRecovery : std::uint8_t {
    // An incomplete last write (a crash mid-write) is dropped and its size reported; damage
    // followed by valid records, or a whole last record whose head is damaged, fails the open
    // with the offset and leaves the file untouched (default).
    tolerate_torn_tail,
    // Stops at the first damage and keeps every record before it; the rest is dropped (after a
    // copy of the file is kept as journal.corrupt-<n>).
    point_in_time,
    // Skips each damaged region, counts it, and keeps every valid record after it (salvage: the
    // damaged records are lost); the journal is then rewritten without the damage, after a copy
    // of the file is kept as journal.corrupt-<n>.
    skip_corrupt,
    // Any damage, a torn tail included, fails the open.
    strict,
};

inline const char* to_string(JournalSync mode) noexcept {
    switch (mode) {
        case JournalSync::always:
            return "always";
        case JournalSync::batch:
            return "batch";
        case JournalSync::none:
            return "none";
    }
    return "unknown";
}

inline const char* to_string(JournalRecovery mode) noexcept {
    switch (mode) {
        case JournalRecovery::tolerate_torn_tail:
            return "tolerate_torn_tail";
        case JournalRecovery::point_in_time:
            return "point_in_time";
        case JournalRecovery::skip_corrupt:
            return "skip_corrupt";
        case JournalRecovery::strict:
            return "strict";
    }
    return "unknown";
}

struct FileDeadLetterStoreOptions {
    // As InMemoryDeadLetterStoreOptions: records held at most (full: the oldest resolved record
    // is evicted, never a pending one). >= 1. Default 100000. A journal holding more records
    // than this (the limit was lowered) keeps them all; adds then evict one for one.
    std::size_t max_entries = 100000;
    // Larger payloads are refused with DeadLetterTooLargeError. In [1, 64 MiB]. Default 1 MiB.
    std::size_t max_payload_bytes = std::size_t{1} << 20U;
    // All the other strings of a record together above this are refused (see
    // InMemoryDeadLetterStoreOptions). In [1, 16 MiB]. Default 64 KiB.
    std::size_t max_text_bytes = std::size_t{64} << 10U;
    // Attempt history kept per record. In [1, 65536]. Default 64.
    std::size_t max_attempts = 64;
    // Durability of each mutation (see JournalSync). Default always.
    JournalSync sync = JournalSync::always;
    // sync=batch: sync once this many records are unsynced. >= 1. Default 128.
    std::size_t batch_records = 128;
    // sync=batch: sync at the first mutation at least this long after the last sync (there is no
    // background thread: call sync() from a timer to bound a quiet store's window). >= 0.
    // Default 100 ms.
    Duration batch_interval = std::chrono::milliseconds(100);
    // What open does with damage (see JournalRecovery). Default tolerate_torn_tail.
    JournalRecovery recovery = JournalRecovery::tolerate_torn_tail;
    // The journal is rewritten with only the live records once it is larger than both this and
    // twice the live data. >= 4096. Default 4 MiB.
    std::uint64_t compact_min_bytes = std::uint64_t{4} << 20U;

    void validate() const {
        if (max_entries == 0) {
            detail::throw_invalid_option("FileDeadLetterStoreOptions.max_entries", "must be >= 1",
                                         "0");
        }
        if (max_payload_bytes == 0 || max_payload_bytes > (std::size_t{64} << 20U)) {
            detail::throw_invalid_option("FileDeadLetterStoreOptions.max_payload_bytes",
                                         "must be in [1, 67108864]",
                                         std::to_string(max_payload_bytes));
        }
        if (max_text_bytes == 0 || max_text_bytes > (std::size_t{16} << 20U)) {
            detail::throw_invalid_option("FileDeadLetterStoreOptions.max_text_bytes",
                                         "must be in [1, 16777216]",
                                         std::to_string(max_text_bytes));
        }
        if (max_attempts == 0 || max_attempts > 65536) {
            // Redrives append attempts (error text cut to 1 KiB): the bound keeps a record's
            // journal frame readable (payload + text + attempts < the reader's frame limit).
            detail::throw_invalid_option("FileDeadLetterStoreOptions.max_attempts",
                                         "must be in [1, 65536]", std::to_string(max_attempts));
        }
        detail::check_enumerator(sync, JournalSync::none, "FileDeadLetterStoreOptions.sync",
                                 "JournalSync");
        if (batch_records == 0) {
            detail::throw_invalid_option("FileDeadLetterStoreOptions.batch_records", "must be >= 1",
                                         "0");
        }
        if (batch_interval < Duration::zero()) {
            detail::throw_invalid_option("FileDeadLetterStoreOptions.batch_interval",
                                         "must be >= 0", detail::format_duration(batch_interval));
        }
        detail::check_enumerator(recovery, JournalRecovery::strict,
                                 "FileDeadLetterStoreOptions.recovery", "JournalRecovery");
        if (compact_min_bytes < 4096) {
            detail::throw_invalid_option("FileDeadLetterStoreOptions.compact_min_bytes",
                                         "must be >= 4096", std::to_string(compact_min_bytes));
        }
    }
};

// The journal's health and what the last open found.
struct JournalStats {
    bool poisoned = false;               // mutations are refused (see DeadLetterStorePoisonedError)
    std::string poison_reason;           // why, when poisoned
    std::uint64_t file_bytes = 0;        // journal size now
    std::uint64_t live_bytes = 0;        // what a compaction would write now
    std::uint64_t unsynced_records = 0;  // written but not yet synced (batch, none)
    std::uint64_t recovered_records = 0;   // records replayed by open
    std::uint64_t dropped_tail_bytes = 0;  // damaged or incomplete tail dropped by open
    std::uint64_t corrupt_regions = 0;     // damaged regions skipped by open (skip_corrupt)
    std::uint64_t skipped_bytes = 0;       // their bytes
    // Whole frames of the journal found out of sequence by open: one already replayed (a
    // duplicated or replayed write; never replayed twice), or one after missing frames.
    // strict and tolerate_torn_tail refuse such a journal; point_in_time stops before the first;
    // skip_corrupt skips duplicates and counts each as a corrupt region.
    std::uint64_t duplicate_records = 0;
    std::uint64_t sequence_gaps = 0;
    // The format version of the journal open found, when it rewrote it in the current one (0:
    // it was current).
    std::uint32_t upgraded_from_version = 0;
    std::uint64_t syncs = 0;  // file syncs since open
    std::uint64_t compactions = 0;
    std::uint64_t compaction_failures = 0;  // compactions abandoned; the old journal stayed
    std::uint64_t write_rollbacks = 0;      // failed writes undone by truncation (disk full…)
    // point_in_time and skip_corrupt: the copy of the journal kept, as found, before open
    // dropped or rewrote anything ("" when nothing was dropped).
    std::string corrupt_copy;
};

}  // namespace bulwark

#endif  // BULWARK_FILE_DEAD_LETTER_STORE_OPTIONS_HPP

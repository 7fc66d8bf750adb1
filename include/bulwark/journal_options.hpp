// The journal-backed stores' shared vocabulary: JournalSync, JournalRecovery and JournalStats.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_JOURNAL_OPTIONS_HPP
#define BULWARK_JOURNAL_OPTIONS_HPP

#include <cstdint>
#include <string>

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

#endif  // BULWARK_JOURNAL_OPTIONS_HPP

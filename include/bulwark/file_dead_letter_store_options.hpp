// FileDeadLetterStoreOptions: the durable dead-letter store's settings.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_FILE_DEAD_LETTER_STORE_OPTIONS_HPP
#define BULWARK_FILE_DEAD_LETTER_STORE_OPTIONS_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include <bulwark/detail/throw.hpp>
#include <bulwark/journal_options.hpp>
#include <bulwark/time.hpp>

namespace bulwark {

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

}  // namespace bulwark

#endif  // BULWARK_FILE_DEAD_LETTER_STORE_OPTIONS_HPP

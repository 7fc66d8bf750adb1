// FileQueueStoreOptions: the durable queue store's settings.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_FILE_QUEUE_STORE_OPTIONS_HPP
#define BULWARK_FILE_QUEUE_STORE_OPTIONS_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include <bulwark/detail/throw.hpp>
#include <bulwark/journal_options.hpp>
#include <bulwark/time.hpp>

namespace bulwark {

struct FileQueueStoreOptions {
    // Messages held at most, leased or not: push() beyond it throws QueueFullError. A journal
    // holding more (the limit was lowered) keeps them all and refuses pushes until it is below.
    // >= 1. Default 10000000.
    std::size_t max_size = 10000000;
    // Larger payloads are refused with QueueMessageTooLargeError. In [1, 64 MiB]. Default 1 MiB.
    std::size_t max_payload_bytes = std::size_t{1} << 20U;
    // Longer ids are refused with QueueMessageTooLargeError. In [1, 65536]. Default 1024.
    std::size_t max_id_bytes = 1024;
    // Durability of push, complete, release and remove (see JournalSync; claim and extend are
    // never waited for: a lost one only delivers the message again). Default always.
    JournalSync sync = JournalSync::always;
    // sync=batch: sync once this many records are unsynced. >= 1. Default 128.
    std::size_t batch_records = 128;
    // sync=batch: sync at the first change at least this long after the last sync (no background
    // thread: call sync() from a timer to bound a quiet store's window). >= 0. Default 100 ms.
    Duration batch_interval = std::chrono::milliseconds(100);
    // What open does with damage (see JournalRecovery). Default tolerate_torn_tail.
    JournalRecovery recovery = JournalRecovery::tolerate_torn_tail;
    // The journal is rewritten with only the messages held once it is larger than both this and
    // twice their size. >= 4096. Default 4 MiB.
    std::uint64_t compact_min_bytes = std::uint64_t{4} << 20U;

    void validate() const {
        if (max_size == 0) {
            detail::throw_invalid_option("FileQueueStoreOptions.max_size", "must be >= 1", "0");
        }
        if (max_payload_bytes == 0 || max_payload_bytes > (std::size_t{64} << 20U)) {
            detail::throw_invalid_option("FileQueueStoreOptions.max_payload_bytes",
                                         "must be in [1, 67108864]",
                                         std::to_string(max_payload_bytes));
        }
        if (max_id_bytes == 0 || max_id_bytes > 65536) {
            detail::throw_invalid_option("FileQueueStoreOptions.max_id_bytes",
                                         "must be in [1, 65536]", std::to_string(max_id_bytes));
        }
        detail::check_enumerator(sync, JournalSync::none, "FileQueueStoreOptions.sync",
                                 "JournalSync");
        if (batch_records == 0) {
            detail::throw_invalid_option("FileQueueStoreOptions.batch_records", "must be >= 1",
                                         "0");
        }
        if (batch_interval < Duration::zero()) {
            detail::throw_invalid_option("FileQueueStoreOptions.batch_interval", "must be >= 0",
                                         detail::format_duration(batch_interval));
        }
        detail::check_enumerator(recovery, JournalRecovery::strict,
                                 "FileQueueStoreOptions.recovery", "JournalRecovery");
        if (compact_min_bytes < 4096) {
            detail::throw_invalid_option("FileQueueStoreOptions.compact_min_bytes",
                                         "must be >= 4096", std::to_string(compact_min_bytes));
        }
    }
};

}  // namespace bulwark

#endif  // BULWARK_FILE_QUEUE_STORE_OPTIONS_HPP

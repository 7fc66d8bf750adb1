// FileDeadLetterStore's errors: its names for the journal errors, and the interrupted reprocess.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_FILE_DEAD_LETTER_STORE_ERRORS_HPP
#define BULWARK_FILE_DEAD_LETTER_STORE_ERRORS_HPP

#include <cstdint>
#include <string>
#include <system_error>
#include <utility>

#include <bulwark/dead_letter_store.hpp>
#include <bulwark/journal_errors.hpp>

namespace bulwark {

// FileDeadLetterStore raises the journal errors of journal_errors.hpp (shared with
// FileQueueStore); these are their names from before the journal served two stores.
using FileDeadLetterStoreError = JournalError;
using DeadLetterJournalLockedError = JournalLockedError;
using DeadLetterJournalCorruptError = JournalCorruptError;
using DeadLetterJournalVersionError = JournalVersionError;
using DeadLetterJournalIoError = JournalIoError;
using DeadLetterStorePoisonedError = JournalPoisonedError;

// reprocess() stopped part-way: the journal could not record an outcome, or the store was
// poisoned (by this call or another thread) before the next handler call. partial() is what the
// call did up to then, every outcome in it journaled. unrecorded_id() names the record whose
// handler ran but whose outcome was not recorded ("" when the call stopped before a handler
// call): that record stays pending, so a later reprocess may resend it again (at-least-once);
// after a failed sync (poisoned()) its outcome may still surface after a restart.
class DeadLetterReprocessInterruptedError : public DeadLetterJournalIoError {
public:
    DeadLetterReprocessInterruptedError(const std::string& what, std::error_code code,
                                        bool poisoned, ReprocessResult partial,
                                        std::string unrecorded_id)
        : DeadLetterJournalIoError(what, code, poisoned),
          partial_(partial),
          unrecorded_id_(std::move(unrecorded_id)) {}

    const ReprocessResult& partial() const noexcept { return partial_; }
    const std::string& unrecorded_id() const noexcept { return unrecorded_id_; }

private:
    ReprocessResult partial_;
    std::string unrecorded_id_;
};

}  // namespace bulwark

#endif  // BULWARK_FILE_DEAD_LETTER_STORE_ERRORS_HPP

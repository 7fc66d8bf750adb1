// FileDeadLetterStore's errors: FileDeadLetterStoreError and the journal errors derived from it.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_FILE_DEAD_LETTER_STORE_ERRORS_HPP
#define BULWARK_FILE_DEAD_LETTER_STORE_ERRORS_HPP

#include <cstdint>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

#include <bulwark/dead_letter_store.hpp>

namespace bulwark {

// Every error a FileDeadLetterStore raises about its files derives from this; code() is the
// operating system's error when there was one. Messages name paths and offsets, never payload
// bytes.
class FileDeadLetterStoreError : public std::runtime_error {
public:
    explicit FileDeadLetterStoreError(const std::string& what, std::error_code code = {})
        : std::runtime_error(what), code_(code) {}

    std::error_code code() const noexcept { return code_; }

private:
    std::error_code code_;
};

// Another store (in this process or another) holds the directory's lock file.
class DeadLetterJournalLockedError : public FileDeadLetterStoreError {
public:
    using FileDeadLetterStoreError::FileDeadLetterStoreError;
};

// The journal is damaged in a way the recovery mode does not accept; offset() is where.
class DeadLetterJournalCorruptError : public FileDeadLetterStoreError {
public:
    DeadLetterJournalCorruptError(const std::string& what, std::uint64_t offset)
        : FileDeadLetterStoreError(what), offset_(offset) {}

    std::uint64_t offset() const noexcept { return offset_; }

private:
    std::uint64_t offset_;
};

// The journal was written by a newer format version than this build reads.
class DeadLetterJournalVersionError : public FileDeadLetterStoreError {
public:
    DeadLetterJournalVersionError(const std::string& what, std::uint32_t version)
        : FileDeadLetterStoreError(what), version_(version) {}

    std::uint32_t version() const noexcept { return version_; }

private:
    std::uint32_t version_;
};

// A mutation's journal write or sync failed: the mutation did not happen (it is not
// acknowledged; after a failed sync its record may still surface after a restart).
// poisoned() tells whether the store refuses mutations from now on.
class DeadLetterJournalIoError : public FileDeadLetterStoreError {
public:
    DeadLetterJournalIoError(const std::string& what, std::error_code code, bool poisoned)
        : FileDeadLetterStoreError(what, code), poisoned_(poisoned) {}

    bool poisoned() const noexcept { return poisoned_; }

private:
    bool poisoned_;
};

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

// A mutation on a poisoned store: an earlier sync (or an unrecoverable write) failed, so what the
// journal holds is unknown. Reads still work; reopen the store to recover.
class DeadLetterStorePoisonedError : public FileDeadLetterStoreError {
public:
    using FileDeadLetterStoreError::FileDeadLetterStoreError;
};

}  // namespace bulwark

#endif  // BULWARK_FILE_DEAD_LETTER_STORE_ERRORS_HPP

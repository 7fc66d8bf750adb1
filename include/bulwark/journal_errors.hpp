// The errors of the journal-backed file stores: JournalError and the errors derived from it.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_JOURNAL_ERRORS_HPP
#define BULWARK_JOURNAL_ERRORS_HPP

#include <cstdint>
#include <stdexcept>
#include <string>
#include <system_error>

namespace bulwark {

// Every error a journal-backed store (FileDeadLetterStore, FileQueueStore) raises about its files
// derives from this; code() is the operating system's error when there was one. Messages name
// the store, paths and offsets, never payload bytes.
class JournalError : public std::runtime_error {
public:
    explicit JournalError(const std::string& what, std::error_code code = {})
        : std::runtime_error(what), code_(code) {}

    std::error_code code() const noexcept { return code_; }

private:
    std::error_code code_;
};

// Another store (in this process or another) holds the directory's lock file.
class JournalLockedError : public JournalError {
public:
    using JournalError::JournalError;
};

// The journal is damaged in a way the recovery mode does not accept; offset() is where.
class JournalCorruptError : public JournalError {
public:
    JournalCorruptError(const std::string& what, std::uint64_t offset)
        : JournalError(what), offset_(offset) {}

    std::uint64_t offset() const noexcept { return offset_; }

private:
    std::uint64_t offset_;
};

// The journal was written by a newer format version than this build reads.
class JournalVersionError : public JournalError {
public:
    JournalVersionError(const std::string& what, std::uint32_t version)
        : JournalError(what), version_(version) {}

    std::uint32_t version() const noexcept { return version_; }

private:
    std::uint32_t version_;
};

// A mutation's journal write or sync failed: the mutation did not happen (it is not
// acknowledged; after a failed sync its record may still surface after a restart).
// poisoned() tells whether the store refuses mutations from now on.
class JournalIoError : public JournalError {
public:
    JournalIoError(const std::string& what, std::error_code code, bool poisoned)
        : JournalError(what, code), poisoned_(poisoned) {}

    bool poisoned() const noexcept { return poisoned_; }

private:
    bool poisoned_;
};

// A mutation on a poisoned store: an earlier sync (or an unrecoverable write) failed, so what the
// journal holds is unknown. Reads still work; reopen the store to recover.
class JournalPoisonedError : public JournalError {
public:
    using JournalError::JournalError;
};

}  // namespace bulwark

#endif  // BULWARK_JOURNAL_ERRORS_HPP

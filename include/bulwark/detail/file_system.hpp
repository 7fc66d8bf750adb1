// The file-system seam of the durable store, and its POSIX implementation.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_FILE_SYSTEM_HPP
#define BULWARK_DETAIL_FILE_SYSTEM_HPP

#if !defined(__unix__) && !defined(__APPLE__)
#error "bulwark's file store needs POSIX file I/O (Linux, macOS, the BSDs)"
#endif

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <fcntl.h>
#include <string>
#include <string_view>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <system_error>
#include <unistd.h>

// The file-system seam of FileDeadLetterStore (public: tests and users plug in their own, as
// SQLite's VFS and LevelDB's Env allow). Declared here so that the store's header stays
// readable; <bulwark/file_dead_letter_store.hpp> is the header to include.

namespace bulwark {

// The file operations a durable store needs, and nothing else. Every operation reports failure
// by throwing std::system_error carrying the errno value; a store treats anything else that
// escapes (a test's simulated crash, say) as fatal and lets it through. Files are handles
// (small non-negative integers) owned by the caller until close().
// Implementations must be thread-safe for distinct handles; a store serialises its own calls.
class FileSystem {
public:
    using Handle = int;
    enum class Kind : std::uint8_t { missing, regular, directory, symlink, other };

    virtual ~FileSystem() = default;

    // What lstat(2) says about a path: what it is, who owns it, its permission bits and its
    // hard-link count (kind == missing: nothing there, the rest zero).
    struct Info {
        Kind kind = Kind::missing;
        std::uint64_t owner = 0;  // st_uid
        std::uint32_t mode = 0;   // st_mode & 07777
        std::uint64_t links = 0;  // st_nlink
    };

    // What is at `path`, without following a final symlink (lstat).
    virtual Info info(const std::string& path) = 0;
    Kind kind(const std::string& path) { return info(path).kind; }
    // Creates the directory with mode 0700 whatever the umask (mode 0700 on success).
    virtual void make_dir(const std::string& path) = 0;
    // Opens a regular file for reading and writing, creating it with mode 0600 whatever the umask
    // when `create` is set, emptying it when `truncate` is set. Refuses a symlink (ELOOP).
    virtual Handle open(const std::string& path, bool create, bool truncate) = 0;
    // Creates a new regular file (mode 0600 whatever the umask) and opens it for reading and
    // writing; throws std::system_error with EEXIST when anything is at `path` (O_EXCL).
    virtual Handle create_new(const std::string& path) = 0;
    virtual void close(Handle file) noexcept = 0;
    // The whole file.
    virtual std::string read_all(Handle file) = 0;
    // Writes all of `data` at `offset` (retrying short writes); on failure part of it may have
    // been written.
    virtual void write_at(Handle file, std::uint64_t offset, std::string_view data) = 0;
    // Makes the file's data (and the metadata needed to read it back: its size) durable.
    virtual void sync(Handle file) = 0;
    virtual void truncate(Handle file, std::uint64_t size) = 0;
    // Atomically replaces `to` with `from` (rename(2)).
    virtual void rename(const std::string& from, const std::string& to) = 0;
    // Makes the directory's entries (creations, renames, removals) durable. A symlink is refused
    // (ELOOP) as the final component of `path`.
    virtual void sync_dir(const std::string& path) = 0;
    // Removes a file; a missing file is not an error.
    virtual void remove(const std::string& path) = 0;
    // Opens (creating, 0600) and exclusively locks `path` for as long as the handle is open;
    // throws std::system_error with EWOULDBLOCK when another holder has it.
    virtual Handle lock(const std::string& path) = 0;

protected:
    FileSystem() = default;
    FileSystem(const FileSystem&) = default;
    FileSystem& operator=(const FileSystem&) = default;
};

// FileSystem over POSIX calls: O_CLOEXEC | O_NOFOLLOW opens, EINTR retried, short writes
// looped, fdatasync() on Linux (fcntl(F_FULLFSYNC) on macOS, fsync() elsewhere), flock() for the
// lock file.
// Thread-safe (stateless).
class PosixFileSystem final : public FileSystem {
public:
    Info info(const std::string& path) override {
        struct stat st {};
        if (::lstat(path.c_str(), &st) != 0) {
            if (errno == ENOENT) {
                return Info{};
            }
            fail("lstat", path);
        }
        Info out;
        out.kind = S_ISLNK(st.st_mode)   ? Kind::symlink
                   : S_ISDIR(st.st_mode) ? Kind::directory
                   : S_ISREG(st.st_mode) ? Kind::regular
                                         : Kind::other;
        out.owner = static_cast<std::uint64_t>(st.st_uid);
        out.mode = static_cast<std::uint32_t>(st.st_mode & 07777);
        out.links = static_cast<std::uint64_t>(st.st_nlink);
        return out;
    }

    void make_dir(const std::string& path) override {
        if (::mkdir(path.c_str(), 0700) != 0) {
            fail("mkdir", path);
        }
        // mkdir applies the umask (a umask cannot widen 0700, but set the mode explicitly all the
        // same), on the directory just made: fchmod on a descriptor, never chmod by path.
        const int fd = open_retry(path, O_RDONLY | O_CLOEXEC | O_DIRECTORY | O_NOFOLLOW);
        if (::fchmod(fd, 0700) != 0) {
            const int error = errno;
            ::close(fd);
            throw std::system_error(error, std::generic_category(), "fchmod " + path);
        }
        ::close(fd);
    }

    Handle open(const std::string& path, bool create, bool truncate) override {
        return open_flags(path, (create ? O_CREAT : 0) | (truncate ? O_TRUNC : 0));
    }

    Handle create_new(const std::string& path) override {
        return open_flags(path, O_CREAT | O_EXCL);
    }

    void close(Handle file) noexcept override { ::close(file); }

    std::string read_all(Handle file) override {
        // Sized once from fstat and read in place: growing a string chunk by chunk would copy a
        // large journal several times over. The loop still reads to the end of file, however
        // long it turns out to be.
        // One spare byte, where the read that finds the end of the file lands: growing past the
        // capacity would copy everything once more.
        std::string out;
        struct stat st {};
        if (::fstat(file, &st) == 0 && st.st_size > 0) {
            out.reserve(static_cast<std::size_t>(st.st_size) + 1);
            advise_huge_pages(out);
        }
        out.resize(out.capacity());
        std::size_t offset = 0;
        for (;;) {
            if (offset == out.size()) {
                out.resize(out.size() + out.size() / 2 + 65536);  // the file grew meanwhile
            }
            const ssize_t n =
                ::pread(file, &out[offset], out.size() - offset, static_cast<off_t>(offset));
            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                fail("read", "journal");
            }
            if (n == 0) {
                out.resize(offset);
                return out;
            }
            offset += static_cast<std::size_t>(n);
        }
    }

    // Asks for transparent huge pages over a large buffer before it is first touched: reading a
    // journal of hundreds of MiB otherwise takes a page fault per 4 KiB, which dominates an open
    // on a virtual machine. Best effort (Linux with THP in "madvise" mode; a no-op elsewhere).
    static void advise_huge_pages(std::string& buffer) noexcept {
#if defined(MADV_HUGEPAGE)
        constexpr std::uintptr_t huge = std::uintptr_t{2} << 20U;
        char* const data = buffer.data();  // non-const since C++17
        const auto begin = reinterpret_cast<std::uintptr_t>(data);
        const std::uintptr_t first = (begin + huge - 1) & ~(huge - 1);
        const std::uintptr_t last = (begin + buffer.capacity()) & ~(huge - 1);
        if (last > first) {
            ::madvise(data + (first - begin), last - first, MADV_HUGEPAGE);
        }
#else
        (void)buffer;
#endif
    }

    void write_at(Handle file, std::uint64_t offset, std::string_view data) override {
        while (!data.empty()) {
            const ssize_t n = ::pwrite(file, data.data(), data.size(), static_cast<off_t>(offset));
            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                fail("write", "journal");
            }
            if (n == 0) {
                throw std::system_error(EIO, std::generic_category(), "write journal");
            }
            data.remove_prefix(static_cast<std::size_t>(n));
            offset += static_cast<std::uint64_t>(n);
        }
    }

    void sync(Handle file) override {
#if defined(F_FULLFSYNC)
        // macOS: fsync() only reaches the drive's cache; F_FULLFSYNC flushes it.
        if (full_fsync(file) != 0) {
            fail("fcntl(F_FULLFSYNC)", "journal");
        }
#elif defined(__linux__)
        if (::fdatasync(file) != 0) {
            fail("fdatasync", "journal");
        }
#else
        if (::fsync(file) != 0) {
            fail("fsync", "journal");
        }
#endif
    }

    void truncate(Handle file, std::uint64_t size) override {
        while (::ftruncate(file, static_cast<off_t>(size)) != 0) {
            if (errno != EINTR) {
                fail("ftruncate", "journal");
            }
        }
    }

    void rename(const std::string& from, const std::string& to) override {
        if (::rename(from.c_str(), to.c_str()) != 0) {
            fail("rename", from);
        }
    }

    void sync_dir(const std::string& path) override {
        const int fd = open_retry(path, O_RDONLY | O_CLOEXEC | O_DIRECTORY | O_NOFOLLOW);
#if defined(F_FULLFSYNC)
        if (full_fsync(fd) != 0) {
#else
        if (::fsync(fd) != 0) {
#endif
            const int error = errno;
            ::close(fd);
            throw std::system_error(error, std::generic_category(), "fsync " + path);
        }
        ::close(fd);
    }

    void remove(const std::string& path) override {
        if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
            fail("unlink", path);
        }
    }

    Handle lock(const std::string& path) override {
        const Handle fd = open(path, true, false);
        while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
            if (errno != EINTR) {
                const int error = errno == EAGAIN ? EWOULDBLOCK : errno;
                ::close(fd);
                throw std::system_error(error, std::generic_category(), "flock " + path);
            }
        }
        return fd;
    }

private:
    static Handle open_flags(const std::string& path, int extra_flags) {
        const int fd = open_retry(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | extra_flags);
        struct stat st {};
        const int bad = ::fstat(fd, &st) != 0 ? errno : S_ISREG(st.st_mode) ? 0 : EINVAL;
        if (bad != 0) {
            ::close(fd);
            throw std::system_error(bad, std::generic_category(), "open " + path);
        }
        // The umask may have narrowed 0600 (fine) but the file may also predate us: 0600 always.
        if ((st.st_mode & 07777) != 0600 && ::fchmod(fd, 0600) != 0) {
            const int error = errno;
            ::close(fd);
            throw std::system_error(error, std::generic_category(), "fchmod " + path);
        }
        return fd;
    }

#if defined(F_FULLFSYNC)
    // F_FULLFSYNC, falling back to fsync() where the file system does not support it.
    static int full_fsync(int fd) noexcept {
        if (::fcntl(fd, F_FULLFSYNC) == 0) {
            return 0;
        }
        return errno == ENOTSUP || errno == EINVAL ? ::fsync(fd) : -1;
    }
#endif

    [[noreturn]] static void fail(const char* what, const std::string& path) {
        throw std::system_error(errno, std::generic_category(), std::string(what) + " " + path);
    }

    static int open_retry(const std::string& path, int flags) {
        for (;;) {
            const int fd = ::open(path.c_str(), flags, 0600);
            if (fd >= 0) {
                return fd;
            }
            if (errno != EINTR) {
                fail("open", path);
            }
        }
    }
};

// The process-wide PosixFileSystem that stores use when no file system is given.
inline FileSystem& default_file_system() noexcept {
    static PosixFileSystem fs;
    return fs;
}

}  // namespace bulwark

#endif  // BULWARK_DETAIL_FILE_SYSTEM_HPP

// A fault-injecting, in-memory bulwark::FileSystem for the durable store's tests (the idea of
// SQLite's test6.c and RocksDB's FaultInjectionTestFS): every file keeps the bytes a sync made
// durable apart from the bytes written since, and every directory keeps the entries a directory
// sync made durable apart from the current ones. A test can
//   - crash at the k-th sync (crash_at_sync(k)): that sync does not happen, every later call
//     throws SimulatedCrash (not a std::exception, so no store code swallows it), and crash()
//     then rebuilds the "after power loss" state with one of the Damage kinds;
//   - fail the n-th call once or forever (fail_call) with an errno, a failing write leaving half
//     of its bytes behind as a real short write would;
//   - kill the process (process_crash()): handles and locks are gone, but what was written and
//     every name stay (the kernel's page cache survives), durable or not.
// A directory that was never made durable (its parent not synced since it was made) loses its
// entries with it at a power loss.
// Thread-safe (one mutex).
#ifndef BULWARK_TESTS_FAULT_FS_HPP
#define BULWARK_TESTS_FAULT_FS_HPP

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <unistd.h>

#include <bulwark/file_dead_letter_store.hpp>

namespace bulwark_test {

// Thrown by every FaultFs call once a simulated crash has happened.
struct SimulatedCrash {};

class FaultFs final : public bulwark::FileSystem {
public:
    // What a power loss does to the bytes and names that were not yet synced.
    enum class Damage {
        drop_unsynced,     // every unsynced byte is lost; names as they are now
        keep_prefix,       // a random prefix of each file's unsynced bytes survives
        garbage_tail,      // all unsynced bytes survive but the last 512 of them are garbage
        drop_dir_entries,  // names revert to the last directory sync; unsynced bytes lost
    };

    explicit FaultFs(std::string root = "/fault") {
        dirs_.insert(root);
        durable_dirs_.insert(root);
    }

    // ---- fault control ----------------------------------------------------------------------

    // The k-th sync or directory sync (1-based, counted from now) crashes instead; 0 = never.
    void crash_at_sync(std::size_t k) {
        std::lock_guard<std::mutex> lock(mutex_);
        crash_at_sync_ = k == 0 ? 0 : syncs_ + k;
    }
    // The n-th call (1-based, counted from now) fails with `error`; every later one too when
    // `forever`.
    void fail_call(std::size_t n, bool forever, int error = EIO) {
        std::lock_guard<std::mutex> lock(mutex_);
        fail_at_ = calls_ + n;
        forever_ = forever;
        error_ = error;
        faulted_ = false;
    }
    void lift_faults() {
        std::lock_guard<std::mutex> lock(mutex_);
        fail_at_ = 0;
        crash_at_sync_ = 0;
    }
    bool crashed() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return crashed_;
    }
    // Whether an injected failure happened, and whether the first one was a sync of the file
    // named `journal_path` at that moment.
    bool faulted() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return faulted_;
    }
    bool first_fault_synced(const std::string& path) const {
        std::lock_guard<std::mutex> lock(mutex_);
        return faulted_ && first_fault_path_ == path && first_fault_was_sync_;
    }
    std::size_t calls() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return calls_;
    }
    std::size_t syncs() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return syncs_;
    }

    // The process dies (SIGKILL, not a power loss): nothing becomes durable and nothing is lost
    // yet; every handle and lock is dropped and the faults are lifted.
    void process_crash() {
        std::lock_guard<std::mutex> lock(mutex_);
        handles_.clear();
        locks_.clear();
        crashed_ = false;
        crash_at_sync_ = 0;
        fail_at_ = 0;
    }

    // The power loss: rebuilds the durable state with `damage`, forgets every handle and lock,
    // lifts the faults.
    void crash(Damage damage, std::mt19937_64& rng) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (damage == Damage::drop_dir_entries) {
            names_ = durable_names_;
            dirs_ = durable_dirs_;
            // A directory whose own entry was never made durable is gone, with its entries.
            for (auto it = dirs_.begin(); it != dirs_.end();) {
                const std::string up = parent(*it);  // parents sort before their children
                it = up != "/" && dirs_.count(up) == 0 ? dirs_.erase(it) : std::next(it);
            }
            for (auto it = names_.begin(); it != names_.end();) {
                it = dirs_.count(parent(it->first)) == 0 ? names_.erase(it) : std::next(it);
            }
            durable_names_ = names_;
            durable_dirs_ = dirs_;
        }
        std::set<Node*> done;
        for (auto& entry : names_) {
            Node& node = *entry.second;
            if (!done.insert(&node).second) {
                continue;
            }
            node.data = survivor(node, damage, rng);
            node.synced = node.data;
        }
        handles_.clear();
        locks_.clear();
        crashed_ = false;
        crash_at_sync_ = 0;
        fail_at_ = 0;
    }

    // ---- direct access for tests --------------------------------------------------------------

    std::string contents(const std::string& path) const {
        std::lock_guard<std::mutex> lock(mutex_);
        const auto it = names_.find(path);
        return it == names_.end() ? std::string() : it->second->data;
    }
    // Makes `path` hold `bytes`, durably (parent directories included).
    void put(const std::string& path, std::string bytes) {
        std::lock_guard<std::mutex> lock(mutex_);
        for (std::string dir = parent(path); dir.size() > 1; dir = parent(dir)) {
            dirs_.insert(dir);
            durable_dirs_.insert(dir);
        }
        auto node = std::make_shared<Node>();
        node->data = bytes;
        node->synced = std::move(bytes);
        names_[path] = node;
        durable_names_[path] = node;
    }

    // ---- bulwark::FileSystem ------------------------------------------------------------------

    Info info(const std::string& path) override {
        std::lock_guard<std::mutex> lock(mutex_);
        enter(path, false);
        Info out;
        out.owner = static_cast<std::uint64_t>(::geteuid());
        out.links = 1;
        if (dirs_.count(path) != 0) {
            out.kind = Kind::directory;
            out.mode = 0700;
        } else if (names_.count(path) != 0) {
            out.kind = Kind::regular;
            out.mode = 0600;
        } else {
            return Info{};
        }
        return out;
    }

    void make_dir(const std::string& path) override {
        std::lock_guard<std::mutex> lock(mutex_);
        enter(path, false);
        if (dirs_.count(parent(path)) == 0) {
            fail_now(ENOENT, "mkdir");
        }
        if (dirs_.count(path) != 0 || names_.count(path) != 0) {
            fail_now(EEXIST, "mkdir");
        }
        dirs_.insert(path);
    }

    Handle open(const std::string& path, bool create, bool truncate) override {
        std::lock_guard<std::mutex> lock(mutex_);
        enter(path, false);
        return open_locked(path, create, truncate);
    }

    Handle create_new(const std::string& path) override {
        std::lock_guard<std::mutex> lock(mutex_);
        enter(path, false);
        if (names_.count(path) != 0 || dirs_.count(path) != 0) {
            fail_now(EEXIST, "open");
        }
        return open_locked(path, true, false);
    }

    void close(Handle file) noexcept override {
        std::lock_guard<std::mutex> lock(mutex_);
        handles_.erase(file);
        locks_.erase(file);
    }

    std::string read_all(Handle file) override {
        std::lock_guard<std::mutex> lock(mutex_);
        return node(file, false).data;
    }

    void write_at(Handle file, std::uint64_t offset, std::string_view data) override {
        std::lock_guard<std::mutex> lock(mutex_);
        Node& n = node_unchecked(file);
        const bool fails = enter_fails(path_of(file), false);
        if (fails) {
            data = data.substr(0, data.size() / 2);  // a short write, then the error
        }
        const auto at = static_cast<std::size_t>(offset);
        if (n.data.size() < at) {
            n.data.resize(at, '\0');
        }
        n.data.replace(at, std::min(data.size(), n.data.size() - at), data);
        if (fails) {
            fail_now(error_, "write");
        }
    }

    void sync(Handle file) override {
        std::lock_guard<std::mutex> lock(mutex_);
        Node& n = node_unchecked(file);
        enter_sync(path_of(file));
        n.synced = n.data;
    }

    void truncate(Handle file, std::uint64_t size) override {
        std::lock_guard<std::mutex> lock(mutex_);
        node(file, false).data.resize(static_cast<std::size_t>(size));
    }

    void rename(const std::string& from, const std::string& to) override {
        std::lock_guard<std::mutex> lock(mutex_);
        enter(from, false);
        const auto it = names_.find(from);
        if (it == names_.end()) {
            fail_now(ENOENT, "rename");
        }
        names_[to] = it->second;
        names_.erase(from);
    }

    void sync_dir(const std::string& where) override {
        std::lock_guard<std::mutex> lock(mutex_);
        enter_sync(where);
        const std::string path = normal(where);
        for (auto it = durable_names_.begin(); it != durable_names_.end();) {
            it = parent(it->first) == path && names_.count(it->first) == 0
                     ? durable_names_.erase(it)
                     : std::next(it);
        }
        for (const auto& entry : names_) {
            if (parent(entry.first) == path) {
                durable_names_[entry.first] = entry.second;
            }
        }
        for (const std::string& dir : dirs_) {
            if (parent(dir) == path) {
                durable_dirs_.insert(dir);
            }
        }
    }

    void remove(const std::string& path) override {
        std::lock_guard<std::mutex> lock(mutex_);
        enter(path, false);
        names_.erase(path);
    }

    Handle lock(const std::string& path) override {
        std::lock_guard<std::mutex> lock(mutex_);
        enter(path, false);
        for (const auto& held : locks_) {
            if (held.second == path) {
                fail_now(EWOULDBLOCK, "flock");
            }
        }
        const Handle h = open_locked(path, true, false);
        locks_[h] = path;
        return h;
    }

private:
    struct Node {
        std::string data;    // what a read sees now
        std::string synced;  // what survives a power loss
    };

    // "/a/b/.." is "/a" (the store names its parent directory that way).
    static std::string normal(const std::string& path) {
        const std::string up = "/..";
        if (path.size() > up.size() && path.compare(path.size() - up.size(), up.size(), up) == 0) {
            return parent(path.substr(0, path.size() - up.size()));
        }
        return path;
    }

    static std::string parent(const std::string& path) {
        const std::size_t slash = path.rfind('/');
        return slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
    }

    std::string survivor(const Node& node, Damage damage, std::mt19937_64& rng) const {
        if (damage == Damage::drop_unsynced || damage == Damage::drop_dir_entries) {
            return node.synced;
        }
        std::size_t common = 0;
        while (common < node.data.size() && common < node.synced.size() &&
               node.data[common] == node.synced[common]) {
            ++common;
        }
        if (damage == Damage::keep_prefix) {
            if (node.data.size() < node.synced.size() && rng() % 2 == 0) {
                return node.synced;  // an unsynced truncation that did not reach the disk
            }
            const std::size_t keep =
                common + static_cast<std::size_t>(rng() % (node.data.size() - common + 1));
            std::string out = node.data.substr(0, keep);
            if (out.size() < node.synced.size()) {
                out += node.synced.substr(out.size());  // old bytes where new ones were lost
            }
            return out;
        }
        std::string out = node.data;  // garbage_tail
        const std::size_t unsynced = out.size() - std::min(common, out.size());
        const std::size_t from = out.size() - std::min<std::size_t>(unsynced, 512);
        for (std::size_t i = from; i < out.size(); ++i) {
            out[i] = static_cast<char>(rng() & 0xFFU);
        }
        return out;
    }

    Handle open_locked(const std::string& path, bool create, bool truncate) {
        auto it = names_.find(path);
        if (it == names_.end()) {
            if (!create) {
                fail_now(ENOENT, "open");
            }
            if (dirs_.count(parent(path)) == 0) {
                fail_now(ENOENT, "open");
            }
            it = names_.emplace(path, std::make_shared<Node>()).first;
        }
        if (truncate) {
            it->second->data.clear();
        }
        const Handle h = next_handle_++;
        handles_[h] = it->second;
        return h;
    }

    // The path the handle's file has now ("" once it has no name).
    std::string path_of(Handle file) const {
        const auto it = handles_.find(file);
        if (it != handles_.end()) {
            for (const auto& entry : names_) {
                if (entry.second == it->second) {
                    return entry.first;
                }
            }
        }
        return {};
    }

    Node& node_unchecked(Handle file) {
        if (crashed_) {
            throw SimulatedCrash{};
        }
        const auto it = handles_.find(file);
        if (it == handles_.end()) {
            fail_now(EBADF, "handle");
        }
        return *it->second;
    }

    Node& node(Handle file, bool is_sync) {
        Node& n = node_unchecked(file);
        enter(path_of(file), is_sync);
        return n;
    }

    void enter(const std::string& path, bool is_sync) {
        if (enter_fails(path, is_sync)) {
            fail_now(error_, "injected");
        }
    }

    void enter_sync(const std::string& path) {
        if (crashed_) {
            throw SimulatedCrash{};
        }
        ++syncs_;
        if (crash_at_sync_ != 0 && syncs_ == crash_at_sync_) {
            crashed_ = true;
            throw SimulatedCrash{};
        }
        enter(path, true);
    }

    // Counts the call; true when it is to fail.
    bool enter_fails(const std::string& path, bool is_sync) {
        if (crashed_) {
            throw SimulatedCrash{};
        }
        ++calls_;
        const bool fails = fail_at_ != 0 && (calls_ == fail_at_ || (forever_ && calls_ > fail_at_));
        if (fails && !faulted_) {
            faulted_ = true;
            first_fault_path_ = path;
            first_fault_was_sync_ = is_sync;
        }
        return fails;
    }

    [[noreturn]] static void fail_now(int error, const char* what) {
        throw std::system_error(error, std::generic_category(), what);
    }

    mutable std::mutex mutex_;
    std::map<std::string, std::shared_ptr<Node>> names_;
    std::map<std::string, std::shared_ptr<Node>> durable_names_;
    std::set<std::string> dirs_;
    std::set<std::string> durable_dirs_;
    std::map<Handle, std::shared_ptr<Node>> handles_;
    std::map<Handle, std::string> locks_;
    Handle next_handle_ = 3;
    std::size_t calls_ = 0;
    std::size_t syncs_ = 0;
    std::size_t crash_at_sync_ = 0;
    std::size_t fail_at_ = 0;
    bool forever_ = false;
    int error_ = EIO;
    bool crashed_ = false;
    bool faulted_ = false;
    std::string first_fault_path_;
    bool first_fault_was_sync_ = false;
};

}  // namespace bulwark_test

#endif  // BULWARK_TESTS_FAULT_FS_HPP

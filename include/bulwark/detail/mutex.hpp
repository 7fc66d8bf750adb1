// Mutexes and locks annotated for clang's thread-safety analysis (private).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_MUTEX_HPP
#define BULWARK_DETAIL_MUTEX_HPP

#include <mutex>
#include <shared_mutex>

#include <bulwark/config.hpp>

namespace bulwark {
namespace detail {

// std::mutex and std::shared_mutex as capabilities, so that -Wthread-safety checks every access
// to a BULWARK_GUARDED_BY member (libstdc++'s own types carry no annotations). Each is its
// standard type and nothing more: every member is an inline forwarding call.
//   mutable detail::Mutex mutex_;
//   int count_ BULWARK_GUARDED_BY(mutex_) = 0;
//   detail::LockGuard lock(mutex_);
// Thread-safe, as the standard types are.
class BULWARK_CAPABILITY("mutex") Mutex {
public:
    Mutex() = default;
    Mutex(const Mutex&) = delete;
    Mutex& operator=(const Mutex&) = delete;

    void lock() BULWARK_ACQUIRE() { mutex_.lock(); }
    void unlock() BULWARK_RELEASE() { mutex_.unlock(); }
    bool try_lock() BULWARK_TRY_ACQUIRE(true) { return mutex_.try_lock(); }

    // The standard mutex, for a std::unique_lock that a std::condition_variable waits with
    // (UniqueLock is the annotated way to build one).
    std::mutex& native() noexcept { return mutex_; }

private:
    std::mutex mutex_;
};

class BULWARK_CAPABILITY("mutex") SharedMutex {
public:
    SharedMutex() = default;
    SharedMutex(const SharedMutex&) = delete;
    SharedMutex& operator=(const SharedMutex&) = delete;

    void lock() BULWARK_ACQUIRE() { mutex_.lock(); }
    void unlock() BULWARK_RELEASE() { mutex_.unlock(); }
    bool try_lock() BULWARK_TRY_ACQUIRE(true) { return mutex_.try_lock(); }
    void lock_shared() BULWARK_ACQUIRE_SHARED() { mutex_.lock_shared(); }
    void unlock_shared() BULWARK_RELEASE_SHARED() { mutex_.unlock_shared(); }
    bool try_lock_shared() BULWARK_TRY_ACQUIRE_SHARED(true) { return mutex_.try_lock_shared(); }

private:
    std::shared_mutex mutex_;
};

// std::lock_guard: holds a Mutex (or a SharedMutex exclusively) for its scope.
template <class M>
class BULWARK_SCOPED_CAPABILITY LockGuard {
public:
    explicit LockGuard(M& mutex) BULWARK_ACQUIRE(mutex) : mutex_(mutex) { mutex_.lock(); }
    ~LockGuard() BULWARK_RELEASE() { mutex_.unlock(); }
    LockGuard(const LockGuard&) = delete;
    LockGuard& operator=(const LockGuard&) = delete;

private:
    M& mutex_;
};

// std::shared_lock: holds a SharedMutex shared for its scope.
class BULWARK_SCOPED_CAPABILITY SharedLock {
public:
    explicit SharedLock(SharedMutex& mutex) BULWARK_ACQUIRE_SHARED(mutex) : mutex_(mutex) {
        mutex_.lock_shared();
    }
    ~SharedLock() BULWARK_RELEASE() { mutex_.unlock_shared(); }
    SharedLock(const SharedLock&) = delete;
    SharedLock& operator=(const SharedLock&) = delete;

private:
    SharedMutex& mutex_;
};

// std::unique_lock<std::mutex> over a Mutex: may be unlocked and locked again within its scope,
// and native() is the std::unique_lock a std::condition_variable (or Clock::wait_until) waits
// with. The analysis treats the mutex as held across such a wait, which is what the code after
// the wait may assume.
class BULWARK_SCOPED_CAPABILITY UniqueLock {
public:
    explicit UniqueLock(Mutex& mutex) BULWARK_ACQUIRE(mutex) : lock_(mutex.native()) {}
    ~UniqueLock() BULWARK_RELEASE() = default;
    UniqueLock(const UniqueLock&) = delete;
    UniqueLock& operator=(const UniqueLock&) = delete;

    void lock() BULWARK_ACQUIRE() { lock_.lock(); }
    void unlock() BULWARK_RELEASE() { lock_.unlock(); }

    std::unique_lock<std::mutex>& native() noexcept { return lock_; }

private:
    std::unique_lock<std::mutex> lock_;
};

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_MUTEX_HPP

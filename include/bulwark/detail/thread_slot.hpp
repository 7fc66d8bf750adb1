// Per-thread slots: which stripe a thread writes to (private).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_THREAD_SLOT_HPP
#define BULWARK_DETAIL_THREAD_SLOT_HPP

#include <atomic>
#include <cstdint>
#include <vector>

#include <bulwark/config.hpp>
#include <bulwark/detail/mutex.hpp>

namespace bulwark {
namespace detail {

// Small per-thread indices for striped counters: each live thread that uses bulwark holds a
// distinct slot, the smallest free one, and gives it back when it exits. A slot below a striped
// structure's stripe count therefore has exactly one writer, which lets that writer update its
// stripe with a plain relaxed load and store instead of a locked read-modify-write.
// Thread-safe.
class SlotRegistry {
public:
    std::uint32_t acquire() {
        detail::LockGuard lock(mutex_);
        for (std::uint32_t i = 0; i < used_.size(); ++i) {
            if (!used_[i]) {
                used_[i] = true;
                return i;
            }
        }
        used_.push_back(true);
        return static_cast<std::uint32_t>(used_.size() - 1);
    }

    void release(std::uint32_t slot) {
        detail::LockGuard lock(mutex_);
        if (slot < used_.size()) {
            used_[slot] = false;
        }
    }

private:
    detail::Mutex mutex_;
    std::vector<bool> used_ BULWARK_GUARDED_BY(mutex_);
};

// Never destroyed: threads may exit (and release their slot) after static destruction began.
inline SlotRegistry& slot_registry() {
    static auto* registry = new SlotRegistry();
    return *registry;
}

// The slot plus one; 0 means "not assigned yet". A constant-initialised, trivially destructible
// thread_local is a plain thread-pointer-relative load, with no TLS wrapper call.
inline thread_local std::uint32_t thread_slot_plus_one = 0;

struct ThreadSlotOwner {
    std::uint32_t slot;
    ThreadSlotOwner() : slot(slot_registry().acquire()) {}
    ~ThreadSlotOwner() { slot_registry().release(slot); }
    ThreadSlotOwner(const ThreadSlotOwner&) = delete;
    ThreadSlotOwner& operator=(const ThreadSlotOwner&) = delete;
};

// What a thread gets while no slot can be made for it (out of memory): above every stripe count,
// so its counts go to the shared overflow stripe, as those of threads beyond the stripes do.
inline constexpr std::uint32_t no_thread_slot = 0xFFFFFFFFU;

BULWARK_NOINLINE inline std::uint32_t assign_thread_slot() noexcept {
    try {
        // Constructed on the first call from this thread; releases the slot when the thread
        // exits. If its construction throws, the next call constructs it again.
        thread_local ThreadSlotOwner owner;
        thread_slot_plus_one = owner.slot + 1;
        return owner.slot;
    } catch (...) {
        return no_thread_slot;
    }
}

// This thread's slot. Does not allocate after the thread's first call, and never throws (the
// counters that call it are noexcept: a worker's first count must not end the process).
inline std::uint32_t thread_slot() noexcept {
    const std::uint32_t s = thread_slot_plus_one;
    return BULWARK_LIKELY(s != 0) ? s - 1 : assign_thread_slot();
}

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_THREAD_SLOT_HPP

// Stackful fibers on one thread (POSIX ucontext) for the outage lab's simulator (private).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_SIM_FIBER_HPP
#define BULWARK_DETAIL_SIM_FIBER_HPP

#include <cstddef>
#include <memory>

#if defined(_WIN32)
#error "bulwark's outage lab needs POSIX ucontext (Linux, the BSDs)"
#endif

#include <cxxabi.h>
#include <ucontext.h>

#include <bulwark/detail/throw.hpp>

#if defined(__SANITIZE_ADDRESS__)
#define BULWARK_SIM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BULWARK_SIM_ASAN 1
#endif
#endif

#if defined(__SANITIZE_THREAD__)
#define BULWARK_SIM_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define BULWARK_SIM_TSAN 1
#endif
#endif

#if defined(BULWARK_SIM_ASAN)
extern "C" {
void __sanitizer_start_switch_fiber(void** fake_stack_save, const void* bottom, std::size_t size);
void __sanitizer_finish_switch_fiber(void* fake_stack_save, const void** bottom_old,
                                     std::size_t* size_old);
}
#endif
#if defined(BULWARK_SIM_TSAN)
extern "C" {
void* __tsan_get_current_fiber(void);
void* __tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void* fiber);
void __tsan_switch_to_fiber(void* fiber, unsigned flags);
}
#endif

namespace bulwark {
namespace detail {

// The per-thread exception state of the C++ runtime (the caught-exception stack and the
// uncaught count; the same first two fields in libstdc++ and libc++abi). A fiber that switches
// away inside a catch handler would otherwise leave its exception on the other fiber's stack,
// so every switch saves it for the fiber leaving and restores it for the one resuming.
struct SimEhGlobals {
    void* caught = nullptr;
    unsigned int uncaught = 0;
};

inline SimEhGlobals* sim_eh_globals() noexcept {
    return reinterpret_cast<SimEhGlobals*>(abi::__cxa_get_globals());
}

// One fiber: its own stack, entered at `entry(arg)`, switched to with resume() from the thread's
// main context and back with suspend() from inside. Not thread-safe: all fibers of a SimFiber
// set run on the thread that made them.
//   SimFiber f(64 * 1024, &body, &state);  f.resume();  // body runs until it calls f.suspend()
// When `entry` returns the fiber is finished and resume() must not be called again.
class SimFiber {
public:
    using Entry = void (*)(void*);

    SimFiber(std::size_t stack_size, Entry entry, void* arg)
        : stack_(new char[stack_size]), stack_size_(stack_size), entry_(entry), arg_(arg) {
        if (getcontext(&context_) != 0) {
            throw_logic_error("bulwark outage lab: getcontext failed");
        }
        context_.uc_stack.ss_sp = stack_.get();
        context_.uc_stack.ss_size = stack_size_;
        context_.uc_link = &return_;
        makecontext(&context_, &SimFiber::trampoline, 0);
#if defined(BULWARK_SIM_TSAN)
        tsan_fiber_ = __tsan_create_fiber(0);
#endif
    }

    SimFiber(const SimFiber&) = delete;
    SimFiber& operator=(const SimFiber&) = delete;

    ~SimFiber() {
#if defined(BULWARK_SIM_TSAN)
        __tsan_destroy_fiber(tsan_fiber_);
#endif
    }

    // From the main context: runs the fiber until it suspends or finishes.
    void resume() {
        SimEhGlobals* eh = sim_eh_globals();
        main_eh_ = *eh;
        *eh = fiber_eh_;
        starting() = this;
#if defined(BULWARK_SIM_TSAN)
        main_tsan_ = __tsan_get_current_fiber();
        __tsan_switch_to_fiber(tsan_fiber_, 0);
#endif
#if defined(BULWARK_SIM_ASAN)
        void* fake = nullptr;
        __sanitizer_start_switch_fiber(&fake, stack_.get(), stack_size_);
#endif
        swapcontext(&return_, &context_);
#if defined(BULWARK_SIM_ASAN)
        __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
        fiber_eh_ = *eh;
        *eh = main_eh_;
    }

    // From inside the fiber: back to the main context that resumed it.
    void suspend() {
#if defined(BULWARK_SIM_TSAN)
        __tsan_switch_to_fiber(main_tsan_, 0);
#endif
#if defined(BULWARK_SIM_ASAN)
        void* fake = nullptr;
        __sanitizer_start_switch_fiber(&fake, main_bottom_, main_size_);
#endif
        swapcontext(&context_, &return_);
#if defined(BULWARK_SIM_ASAN)
        __sanitizer_finish_switch_fiber(fake, &main_bottom_, &main_size_);
#endif
    }

    bool finished() const noexcept {
        return finished_;
    }

private:
    static SimFiber*& starting() noexcept {
        static thread_local SimFiber* fiber = nullptr;
        return fiber;
    }

    static void trampoline() {
        SimFiber* self = starting();
#if defined(BULWARK_SIM_ASAN)
        __sanitizer_finish_switch_fiber(nullptr, &self->main_bottom_, &self->main_size_);
#endif
        self->entry_(self->arg_);
        self->finished_ = true;
#if defined(BULWARK_SIM_TSAN)
        __tsan_switch_to_fiber(self->main_tsan_, 0);
#endif
#if defined(BULWARK_SIM_ASAN)
        // A null save slot tells ASan this stack is done with.
        __sanitizer_start_switch_fiber(nullptr, self->main_bottom_, self->main_size_);
#endif
        // Returning switches to uc_link (return_).
    }

    std::unique_ptr<char[]> stack_;
    std::size_t stack_size_;
    Entry entry_;
    void* arg_;
    ucontext_t context_{};
    ucontext_t return_{};
    SimEhGlobals fiber_eh_{};
    SimEhGlobals main_eh_{};
    bool finished_ = false;
#if defined(BULWARK_SIM_ASAN)
    const void* main_bottom_ = nullptr;
    std::size_t main_size_ = 0;
#endif
#if defined(BULWARK_SIM_TSAN)
    void* tsan_fiber_ = nullptr;
    void* main_tsan_ = nullptr;
#endif
};

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_SIM_FIBER_HPP

// Stackful fibers on one thread (POSIX ucontext) for the outage lab's simulator (private).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_SIM_FIBER_HPP
#define BULWARK_DETAIL_SIM_FIBER_HPP

#include <cstddef>
#include <cstdint>
#include <memory>

#if defined(_WIN32)
#error "bulwark's outage lab needs POSIX ucontext (Linux, the BSDs)"
#endif

#include <cxxabi.h>
#include <ucontext.h>

// glibc's swapcontext saves and restores the signal mask with a system call on every switch
// (about 0.3-1 us on a VM, four switches per simulated call); on x86-64 the fibers switch with a
// few instructions instead (callee-saved registers are left to the compiler through the clobber
// list). Elsewhere, or with BULWARK_SIM_UCONTEXT defined, ucontext does all the switching.
#if defined(__x86_64__) && !defined(BULWARK_SIM_UCONTEXT)
#define BULWARK_SIM_FAST_SWITCH 1
#endif

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

#if defined(BULWARK_SIM_FAST_SWITCH)
// Saves this context's stack pointer in *from and resumes the one saved in `to`. The red zone
// below the stack pointer (128 bytes the compiler may use without moving it) is skipped first;
// the resume address, the frame pointer and the floating-point control state (MXCSR and the x87
// control word: callee-saved in the System V ABI, and per context with swapcontext, so a fiber's
// fesetround() stays its own) are pushed, and everything else a caller might keep in a register
// is declared clobbered, so the compiler saves it around the switch.
// Frame at the saved stack pointer: [mxcsr:4][x87 cw:2][pad:2] [rbp] [resume address].
inline void sim_switch(void** from, void* to) noexcept {
    __asm__ volatile(
        "subq $128, %%rsp\n\t"
        "leaq 1f(%%rip), %%rax\n\t"
        "pushq %%rax\n\t"
        "pushq %%rbp\n\t"
        "subq $8, %%rsp\n\t"
        "stmxcsr (%%rsp)\n\t"
        "fnstcw 4(%%rsp)\n\t"
        "movq %%rsp, (%0)\n\t"
        "movq %1, %%rsp\n\t"
        "ldmxcsr (%%rsp)\n\t"
        "fldcw 4(%%rsp)\n\t"
        "addq $8, %%rsp\n\t"
        "popq %%rbp\n\t"
        "retq\n\t"
        "1:\n\t"
        "addq $128, %%rsp\n\t"
        : "+D"(from), "+S"(to)
        :
        : "rax", "rbx", "rcx", "rdx", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
          "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
          "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15",
          // The x87 register stack (long double) and MMX, shared by every context: a value
          // the compiler kept there across the switch would meet the other context's.
          "st", "st(1)", "st(2)", "st(3)", "st(4)", "st(5)", "st(6)", "st(7)", "mm0", "mm1", "mm2",
          "mm3", "mm4", "mm5", "mm6", "mm7");
}
#endif

// Thrown by SimFiber::suspend() in a fiber being unwound (SimFiber::unwind()): not a
// std::exception, so that handlers for errors let it pass; the fiber's entry ends with it.
struct SimFiberUnwind {};

// One fiber: its own stack, entered at `entry(arg)`, switched to with resume() from the thread's
// main context and back with suspend() from inside. Not thread-safe: all fibers of a SimFiber
// set run on the thread that made them.
//   SimFiber f(64 * 1024, &body, &state);  f.resume();  // body runs until it calls f.suspend()
// When `entry` returns the fiber is finished and resume() must not be called again. A fiber
// still suspended must be unwound (unwind()) before it is destroyed, or what its stack holds is
// never destroyed.
class SimFiber {
public:
    using Entry = void (*)(void*);

    SimFiber(std::size_t stack_size, Entry entry, void* arg)
        : stack_(new char[stack_size]), stack_size_(stack_size), entry_(entry), arg_(arg) {
#if defined(BULWARK_SIM_FAST_SWITCH)
        // The first switch loads the creator's floating-point control state (as makecontext
        // after getcontext does), pops a zero frame pointer and "returns" into trampoline with
        // the stack aligned as after a call (16-byte aligned before the return-address slot).
        char* top = stack_.get() + stack_size_;
        top -= reinterpret_cast<std::uintptr_t>(top) & std::uintptr_t{15};
        void** sp = reinterpret_cast<void**>(top - 16);
        sp[0] = reinterpret_cast<void*>(&SimFiber::trampoline);
        sp[1] = nullptr;
        --sp;
        sp[0] = nullptr;  // rbp
        --sp;
        sp[0] = nullptr;
        __asm__ volatile(
            "stmxcsr (%0)\n\t"
            "fnstcw 4(%0)\n\t"
            :
            : "r"(sp)
            : "memory");
        sp_ = sp;
#else
        if (getcontext(&context_) != 0) {
            throw_logic_error("bulwark outage lab: getcontext failed");
        }
        context_.uc_stack.ss_sp = stack_.get();
        context_.uc_stack.ss_size = stack_size_;
        context_.uc_link = &return_;
        makecontext(&context_, &SimFiber::trampoline, 0);
#endif
#if defined(BULWARK_SIM_TSAN)
        tsan_fiber_ = __tsan_create_fiber(0);
#endif
    }

    SimFiber(const SimFiber&) = delete;
    SimFiber& operator=(const SimFiber&) = delete;

#if defined(BULWARK_SIM_TSAN)
    ~SimFiber() {
        __tsan_destroy_fiber(tsan_fiber_);
    }
#else
    ~SimFiber() = default;
#endif

    // From the main context: ends a fiber that is suspended (or never started) by unwinding
    // its stack: its suspend() throws SimFiberUnwind, and so does every later suspend() (a
    // handler that swallows it cannot wait again), until `entry` returns or lets it out.
    void unwind() {
        if (finished_) {
            return;
        }
        unwinding_ = true;
        if (!started_) {
            finished_ = true;  // nothing on its stack yet
            return;
        }
        resume();
    }

    // From the main context: runs the fiber until it suspends or finishes.
    void resume() {
        started_ = true;
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
#if defined(BULWARK_SIM_FAST_SWITCH)
        sim_switch(&main_sp_, sp_);
#else
        swapcontext(&return_, &context_);
#endif
#if defined(BULWARK_SIM_ASAN)
        __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
        fiber_eh_ = *eh;
        *eh = main_eh_;
    }

    // From inside the fiber: back to the main context that resumed it. Throws SimFiberUnwind
    // when the fiber is resumed by unwind() (or is being unwound already).
    void suspend() {
        if (unwinding_) {
            throw SimFiberUnwind{};
        }
#if defined(BULWARK_SIM_TSAN)
        __tsan_switch_to_fiber(main_tsan_, 0);
#endif
#if defined(BULWARK_SIM_ASAN)
        void* fake = nullptr;
        __sanitizer_start_switch_fiber(&fake, main_bottom_, main_size_);
#endif
#if defined(BULWARK_SIM_FAST_SWITCH)
        sim_switch(&sp_, main_sp_);
#else
        swapcontext(&context_, &return_);
#endif
#if defined(BULWARK_SIM_ASAN)
        __sanitizer_finish_switch_fiber(fake, &main_bottom_, &main_size_);
#endif
        if (unwinding_) {
            throw SimFiberUnwind{};
        }
    }

    bool unwinding() const noexcept {
        return unwinding_;
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
        try {
            self->entry_(self->arg_);
        } catch (const SimFiberUnwind&) {  // NOLINT(bugprone-empty-catch): unwind() asked for it
        }
        self->finished_ = true;
#if defined(BULWARK_SIM_TSAN)
        __tsan_switch_to_fiber(self->main_tsan_, 0);
#endif
#if defined(BULWARK_SIM_ASAN)
        // A null save slot tells ASan this stack is done with.
        __sanitizer_start_switch_fiber(nullptr, self->main_bottom_, self->main_size_);
#endif
#if defined(BULWARK_SIM_FAST_SWITCH)
        // Never resumed again: the stack pointer saved here is not used.
        void* unused = nullptr;
        sim_switch(&unused, self->main_sp_);
        __builtin_unreachable();
#endif
        // With ucontext, returning switches to uc_link (return_).
    }

    std::unique_ptr<char[]> stack_;
    std::size_t stack_size_;
    Entry entry_;
    void* arg_;
#if defined(BULWARK_SIM_FAST_SWITCH)
    void* sp_ = nullptr;
    void* main_sp_ = nullptr;
#else
    ucontext_t context_{};
    ucontext_t return_{};
#endif
    SimEhGlobals fiber_eh_{};
    SimEhGlobals main_eh_{};
    bool finished_ = false;
    bool started_ = false;
    bool unwinding_ = false;
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

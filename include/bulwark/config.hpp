// Feature detection and portability macros, done once.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_CONFIG_HPP
#define BULWARK_CONFIG_HPP

// Feature detection, done once. Other headers branch on the macros defined here, never on
// compiler versions.

#if defined(_MSVC_LANG) && _MSVC_LANG > __cplusplus
#define BULWARK_CPLUSPLUS _MSVC_LANG
#else
#define BULWARK_CPLUSPLUS __cplusplus
#endif

#if BULWARK_CPLUSPLUS < 201703L
#error "bulwark requires C++17 or later (compile with -std=c++17 or newer)."
#endif

// Outcome<T> carries failures as std::exception_ptr and policies classify exceptions by type,
// so there is no meaningful no-exceptions mode.
#if !defined(__cpp_exceptions) && !defined(__EXCEPTIONS) && !defined(_CPPUNWIND)
#error "bulwark needs C++ exceptions: failures travel as std::exception_ptr."
#endif

#if defined(__GNUC__) || defined(__clang__)
#define BULWARK_NOINLINE __attribute__((noinline))
// For the few hot-path helpers whose inlining the compiler's size heuristics would otherwise
// decide differently from one instantiation to the next.
#define BULWARK_ALWAYS_INLINE __attribute__((always_inline)) inline
#define BULWARK_LIKELY(x) __builtin_expect(!!(x), 1)
#define BULWARK_UNLIKELY(x) __builtin_expect(!!(x), 0)
#elif defined(_MSC_VER)
#define BULWARK_NOINLINE __declspec(noinline)
#define BULWARK_ALWAYS_INLINE __forceinline
#define BULWARK_LIKELY(x) (x)
#define BULWARK_UNLIKELY(x) (x)
#else
#define BULWARK_NOINLINE
#define BULWARK_ALWAYS_INLINE inline
#define BULWARK_LIKELY(x) (x)
#define BULWARK_UNLIKELY(x) (x)
#endif

// Clang's thread-safety analysis (-Wthread-safety): which mutex guards a member, and which
// functions acquire, release or need it. Empty for other compilers. bulwark's own mutexes and
// locks carry them (detail/mutex.hpp); libstdc++'s do not.
#if defined(__clang__)
#define BULWARK_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define BULWARK_THREAD_ANNOTATION(x)
#endif
#define BULWARK_CAPABILITY(x) BULWARK_THREAD_ANNOTATION(capability(x))
#define BULWARK_SCOPED_CAPABILITY BULWARK_THREAD_ANNOTATION(scoped_lockable)
#define BULWARK_GUARDED_BY(x) BULWARK_THREAD_ANNOTATION(guarded_by(x))
#define BULWARK_PT_GUARDED_BY(x) BULWARK_THREAD_ANNOTATION(pt_guarded_by(x))
#define BULWARK_REQUIRES(...) BULWARK_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define BULWARK_REQUIRES_SHARED(...) \
    BULWARK_THREAD_ANNOTATION(requires_shared_capability(__VA_ARGS__))
#define BULWARK_ACQUIRE(...) BULWARK_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define BULWARK_ACQUIRE_SHARED(...) \
    BULWARK_THREAD_ANNOTATION(acquire_shared_capability(__VA_ARGS__))
#define BULWARK_RELEASE(...) BULWARK_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define BULWARK_RELEASE_SHARED(...) \
    BULWARK_THREAD_ANNOTATION(release_shared_capability(__VA_ARGS__))
#define BULWARK_TRY_ACQUIRE(...) BULWARK_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
#define BULWARK_TRY_ACQUIRE_SHARED(...) \
    BULWARK_THREAD_ANNOTATION(try_acquire_shared_capability(__VA_ARGS__))
#define BULWARK_EXCLUDES(...) BULWARK_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define BULWARK_NO_THREAD_SAFETY_ANALYSIS BULWARK_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace bulwark {
namespace detail {
// std::hardware_destructive_interference_size is unreliable on GCC 12 (it warns when used in a
// header and varies with -mtune); 64 bytes is right for x86-64 and most AArch64 parts.
inline constexpr unsigned cache_line_size = 64;
}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_CONFIG_HPP

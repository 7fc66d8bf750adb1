// The policy concept: PolicyBase, execute/try_execute, and how callables are invoked.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_POLICY_HPP
#define BULWARK_POLICY_HPP

#include <exception>
#include <functional>
#include <type_traits>
#include <utility>

#include <bulwark/context.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/detail/traits.hpp>
#include <bulwark/outcome.hpp>

namespace bulwark {

// The policy concept.
//
// A policy is any type with
//     template <class Next> auto apply(Context& ctx, Next&& next);
// where `next(ctx)` runs the rest of the pipeline and returns an Outcome<T>; apply returns an
// Outcome<T> of the same T. A policy may call `next` zero times (reject), once, or several times
// (retry), may change `ctx` (attempt, deadline) and may replace the outcome (fallback).
// Deriving from PolicyBase<P> gives it execute() and try_execute().

namespace detail {

template <class F>
inline constexpr bool takes_context_v = std::is_invocable<F&, Context&>::value;

template <class F>
inline constexpr bool takes_nothing_v = std::is_invocable<F&>::value;

template <class F, class = void>
struct call_result {
    using type = void;
    static constexpr bool valid = false;
};
template <class F>
struct call_result<F, std::enable_if_t<takes_context_v<F>>> {
    using type = std::invoke_result_t<F&, Context&>;
    static constexpr bool valid = true;
};
template <class F>
struct call_result<F, std::enable_if_t<!takes_context_v<F> && takes_nothing_v<F>>> {
    using type = std::invoke_result_t<F&>;
    static constexpr bool valid = true;
};

// True for a callable that execute() accepts: () or (Context&), returning a non-reference.
template <class F>
inline constexpr bool is_valid_callable_v =
    call_result<F>::valid && !std::is_reference<typename call_result<F>::type>::value;

// What an entry point returns once a static_assert of its own has failed, instead of going on
// to instantiate the rest (which would bury the assertion's sentence under a cascade): it
// converts to anything and answers the calls a caller makes next. Only ever built in a program
// that does not compile, so nothing here runs.
struct invalid_call_result {
    template <class T>
    operator T() const noexcept {
        std::terminate();
    }
    template <class... Args>
    invalid_call_result operator()(Args&&...) const noexcept {
        return {};
    }
    template <class... Args>
    invalid_call_result execute(Args&&...) const noexcept {
        return {};
    }
    template <class... Args>
    invalid_call_result try_execute(Args&&...) const noexcept {
        return {};
    }
    template <class... Args>
    invalid_call_result try_call(Args&&...) const noexcept {
        return {};
    }
};

// The decayed result type of running F through a policy.
template <class F>
using call_result_t = typename call_result<std::remove_reference_t<F>>::type;

template <class F>
decltype(auto) invoke_callable(F& f, Context& ctx) {
    if constexpr (takes_context_v<F>) {
        return std::invoke(f, ctx);
    } else {
        (void)ctx;
        return std::invoke(f);
    }
}

// Runs `f()` and captures its value, or what it throws, as an Outcome<R>.
template <class R, class F>
Outcome<R> capture(F&& f) noexcept {
    try {
        if constexpr (std::is_void<R>::value) {
            std::forward<F>(f)();
            return Outcome<void>::success();
        } else {
            return Outcome<R>::from_value(std::forward<F>(f)());
        }
    } catch (...) {
        return Outcome<R>::from_error(std::current_exception());
    }
}

// The innermost step of every pipeline: runs the user's callable and captures what it throws.
template <class F>
class Leaf {
public:
    using result_type = typename call_result<F>::type;

    explicit Leaf(F& f) noexcept : f_(f) {}

    Outcome<result_type> operator()(Context& ctx) const noexcept {
        return capture<result_type>([&]() -> decltype(auto) { return invoke_callable(f_, ctx); });
    }

private:
    F& f_;
};

[[noreturn]] BULWARK_NOINLINE inline void throw_null_callable() {
    throw_invalid_argument("bulwark: execute() was given a null callable");
}

BULWARK_NOINLINE inline std::exception_ptr null_callable_error() {
    return std::make_exception_ptr(
        std::invalid_argument("bulwark: try_execute() was given a null callable"));
}

// A probe "next" used to detect the policy concept at compile time.
struct probe_next {
    Outcome<int> operator()(Context&) const;
};

template <class P, class = void>
struct has_generic_apply : std::false_type {};
template <class P>
struct has_generic_apply<P, std::void_t<decltype(std::declval<P&>().apply(
                                std::declval<Context&>(), std::declval<probe_next&>()))>>
    : std::true_type {};

}  // namespace detail

template <class Derived>
class PolicyBase;

// True if P satisfies the policy concept (see above): it derives from PolicyBase<P> (policies
// for one result type, such as Fallback<T>, are recognised this way without instantiating
// their apply), or its apply accepts any `next`.
// (std::disjunction stops at the first true trait, so the probe is not instantiated for them.)
template <class P>
inline constexpr bool is_policy_v =
    std::disjunction<std::is_base_of<PolicyBase<std::remove_cv_t<std::remove_reference_t<P>>>,
                                     std::remove_cv_t<std::remove_reference_t<P>>>,
                     detail::has_generic_apply<std::remove_reference_t<P>>>::value;

// Gives a policy its user-facing entry points. Derived must provide apply(Context&, Next&&).
//   int v = policy.execute([] { return call(); });               // value, or throws the error
//   bulwark::Outcome<int> r = policy.try_execute([] { ... });    // never throws
//   policy.execute([](bulwark::Context& ctx) { ... }, ctx);      // with the caller's context
// Callables take () or (Context&) and may return any non-reference type, void and move-only
// types included. A null function pointer or empty std::function is rejected with
// std::invalid_argument (try_execute returns it as the error). Does not allocate.
template <class Derived>
class PolicyBase {
public:
    // The return types are deduced, not spelled, so that a callable of the wrong signature
    // stops at check<F>()'s sentence before anything else is instantiated.
    template <class F>
    auto execute(F&& f) {
        Context ctx;
        return execute(std::forward<F>(f), ctx);
    }

    template <class F>
    auto execute(F&& f, Context& ctx) {
        using Fn = std::remove_reference_t<F>;
        static_assert(check<Fn>());
        if constexpr (detail::is_valid_callable_v<Fn>) {
            return execute_valid(f, ctx);
        } else {
            return detail::invalid_call_result{};
        }
    }

    template <class F>
    auto try_execute(F&& f) noexcept {
        Context ctx;
        return try_execute(std::forward<F>(f), ctx);
    }

    template <class F>
    auto try_execute(F&& f, Context& ctx) noexcept {
        using Fn = std::remove_reference_t<F>;
        static_assert(check<Fn>());
        if constexpr (detail::is_valid_callable_v<Fn>) {
            return try_execute_valid(f, ctx);
        } else {
            return detail::invalid_call_result{};
        }
    }

private:
    // One sentence for each way a callable can be wrong; true so that the caller's own
    // static_assert never adds a second message.
    template <class Fn>
    static constexpr bool check() {
        static_assert(detail::call_result<Fn>::valid,
                      "bulwark: a callable passed to execute()/try_execute() must take no "
                      "arguments or a single bulwark::Context&.");
        static_assert(!std::is_reference<typename detail::call_result<Fn>::type>::value,
                      "bulwark: the callable returns a reference; policies return results by "
                      "value (return a pointer or std::reference_wrapper to share an object).");
        return true;
    }

    template <class Fn>
    auto execute_valid(Fn& f, Context& ctx) -> detail::call_result_t<Fn> {
        if (BULWARK_UNLIKELY(detail::is_null_callable(f))) {
            detail::throw_null_callable();
        }
        auto outcome = derived().apply(ctx, detail::Leaf<Fn>(f));
        if constexpr (std::is_void<detail::call_result_t<Fn>>::value) {
            outcome.rethrow_if_error();
        } else {
            return std::move(outcome).value();
        }
    }

    template <class Fn>
    auto try_execute_valid(Fn& f, Context& ctx) noexcept -> Outcome<detail::call_result_t<Fn>> {
        using R = detail::call_result_t<Fn>;
        try {
            if (BULWARK_UNLIKELY(detail::is_null_callable(f))) {
                return Outcome<R>::from_error(detail::null_callable_error());
            }
            return derived().apply(ctx, detail::Leaf<Fn>(f));
        } catch (...) {
            // A policy's own failure (an allocation in a listener, a throwing clock) still
            // becomes an outcome: try_execute never throws.
            return Outcome<R>::from_error(std::current_exception());
        }
    }

    Derived& derived() noexcept { return static_cast<Derived&>(*this); }
};

// The policy that does nothing: runs the call once and returns its outcome. Useful as a
// placeholder in a configurable pipeline and as the benchmark of pipeline overhead.
//   bulwark::pipeline(bulwark::Noop{}, breaker).execute(f);
// Thread-safe (stateless). Does not allocate.
class Noop : public PolicyBase<Noop> {
public:
    template <class Next>
    auto apply(Context& ctx, Next&& next) const {
        return std::forward<Next>(next)(ctx);
    }
};

}  // namespace bulwark

#endif  // BULWARK_POLICY_HPP

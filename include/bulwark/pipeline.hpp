// pipeline() and wrap(): policies composed outermost first, and callables decorated by them.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_PIPELINE_HPP
#define BULWARK_PIPELINE_HPP

#include <cstddef>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#include <bulwark/context.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/detail/traits.hpp>
#include <bulwark/outcome.hpp>
#include <bulwark/policy.hpp>

namespace bulwark {

namespace detail {
// How a pipeline holds a policy: an lvalue by reference (a breaker's state must be shared by
// everyone who uses it), an rvalue by value (moved in).
template <class P>
using held_policy_t = std::conditional_t<std::is_lvalue_reference<P>::value, P,
                                         std::remove_cv_t<std::remove_reference_t<P>>>;

// True so that the caller's own static_assert adds no second message.
template <class... Ps>
constexpr bool check_policies() {
    static_assert((is_policy_v<Ps> && ...),
                  "every argument of bulwark::pipeline()/wrap() must be a policy: a type with "
                  "template <class Next> auto apply(bulwark::Context&, Next&&) (for example "
                  "CircuitBreaker, RetryPolicy, Noop or another pipeline).");
    return true;
}
}  // namespace detail

// Policies composed into one, outermost first: pipeline(a, b, c).execute(f) runs
// a.apply(ctx, b.apply(ctx, c.apply(ctx, f))). A pipeline is itself a policy, so pipelines nest.
//   auto p = bulwark::pipeline(fallback, breaker, retry, timeout);
//   auto receipt = p.execute([&] { return sms.send(msg); });
// Policies passed as lvalues are held by reference and must outlive the pipeline; rvalues are
// moved in. The composition is resolved at compile time: no std::function, no allocation, no
// cost beyond the policies' own. Thread-safety is that of the policies it holds.
template <class... Ps>
class Pipeline : public PolicyBase<Pipeline<Ps...>> {
public:
    template <class... Args>
    explicit Pipeline(std::in_place_t, Args&&... policies)
        : policies_(std::forward<Args>(policies)...) {}

    template <class Next>
    auto apply(Context& ctx, Next&& next) {
        return apply_from<0>(ctx, next);
    }

    static constexpr std::size_t size() noexcept { return sizeof...(Ps); }

    // The I-th policy, outermost first.
    template <std::size_t I>
    decltype(auto) get() noexcept {
        return std::get<I>(policies_);
    }

private:
    template <std::size_t I, class Next>
    auto apply_from(Context& ctx, Next& next) {
        if constexpr (I == sizeof...(Ps)) {
            return next(ctx);
        } else {
            return std::get<I>(policies_).apply(ctx, [this, &next](Context& inner) {
                return this->apply_from<I + 1>(inner, next);
            });
        }
    }

    std::tuple<Ps...> policies_;
};

// Composes policies into a Pipeline, outermost first (see Pipeline).
template <class... Ps>
auto pipeline(Ps&&... policies) {
    static_assert(detail::check_policies<Ps...>());
    if constexpr ((is_policy_v<Ps> && ...)) {
        return Pipeline<detail::held_policy_t<Ps&&>...>(std::in_place,
                                                        std::forward<Ps>(policies)...);
    } else {
        return detail::invalid_call_result{};
    }
}

// A callable with the signature of `f` whose every call runs through the policies, outermost
// first. Arguments reach `f` as lvalues on every attempt, so a retried attempt never sees a
// moved-from argument.
//   auto resilient_send = bulwark::wrap(send_sms, breaker, retry);
//   Receipt r = resilient_send(phone, "hello");        // throws the final error
//   bulwark::Outcome<Receipt> o = resilient_send.try_call(phone, "hello");   // never throws
// The callable is stored by value; policies as in pipeline(). Thread-safety is that of the
// callable and the policies.
template <class F, class... Ps>
class Wrapped {
public:
    template <class G, class... Args>
    Wrapped(G&& f, std::in_place_t, Args&&... policies)
        : f_(std::forward<G>(f)), pipeline_(std::in_place, std::forward<Args>(policies)...) {
        if (detail::is_null_callable(f_)) {
            detail::throw_invalid_argument("bulwark::wrap: the callable is null");
        }
    }

    // Returns what `f` returns, or throws the final error. (The return type is deduced, not
    // spelled, so that a wrong argument list stops at check_arguments' sentence before anything
    // else is instantiated.)
    template <class... Args>
    auto operator()(Args&&... args) {
        static_assert(check_arguments<Args...>());
        if constexpr (std::is_invocable<F&, Args&...>::value) {
            return pipeline_.execute([&]() -> decltype(auto) { return std::invoke(f_, args...); });
        } else {
            return detail::invalid_call_result{};
        }
    }

    template <class... Args>
    auto try_call(Args&&... args) noexcept {
        static_assert(check_arguments<Args...>());
        if constexpr (std::is_invocable<F&, Args&...>::value) {
            return pipeline_.try_execute(
                [&]() -> decltype(auto) { return std::invoke(f_, args...); });
        } else {
            return detail::invalid_call_result{};
        }
    }

    Pipeline<Ps...>& policies() noexcept { return pipeline_; }

private:
    // True so that the caller's own static_assert adds no second message.
    template <class... Args>
    static constexpr bool check_arguments() {
        static_assert(std::is_invocable<F&, Args&...>::value,
                      "bulwark::wrap: the wrapped callable cannot be called with these arguments "
                      "(check their number and types). Arguments are passed as lvalues so that "
                      "every attempt sees them intact; a callable that takes an rvalue reference "
                      "or a move-only parameter by value cannot be retried safely.");
        return true;
    }

    F f_;
    Pipeline<Ps...> pipeline_;
};

// Wraps `f` in the policies, outermost first (see Wrapped). Throws std::invalid_argument if `f`
// is a null function pointer or an empty std::function.
template <class F, class... Ps>
auto wrap(F&& f, Ps&&... policies) {
    static_assert(detail::check_policies<Ps...>());
    if constexpr ((is_policy_v<Ps> && ...)) {
        return Wrapped<std::decay_t<F>, detail::held_policy_t<Ps&&>...>(
            std::forward<F>(f), std::in_place, std::forward<Ps>(policies)...);
    } else {
        return detail::invalid_call_result{};
    }
}

}  // namespace bulwark

#endif  // BULWARK_PIPELINE_HPP

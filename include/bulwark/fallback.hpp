// Fallback: a substitute result when a call fails.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_FALLBACK_HPP
#define BULWARK_FALLBACK_HPP

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <string_view>
#include <type_traits>
#include <utility>

#include <bulwark/classify.hpp>
#include <bulwark/context.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/detail/traits.hpp>
#include <bulwark/events.hpp>
#include <bulwark/outcome.hpp>
#include <bulwark/policy.hpp>

namespace bulwark {

namespace detail {
template <class F, class T>
constexpr bool is_fallback_handler() {
    return std::is_invocable<F&, const std::exception_ptr&, Context&>::value ||
           std::is_invocable<F&, const std::exception_ptr&>::value || std::is_invocable<F&>::value;
}
}  // namespace detail

// A fallback was used.
struct FallbackEvent {
    std::string_view operation;
    std::exception_ptr error;      // the failure it answered (null when a handled *value* failed)
    bool fallback_failed = false;  // the fallback itself threw; its error is the outcome
};

struct FallbackStats {
    std::uint64_t fallbacks = 0;          // handled failures answered by the fallback
    std::uint64_t fallback_failures = 0;  // of those, how many the fallback itself failed
};

// Replaces a handled failure with a substitute: a value, or a callable of the error, or of the
// error and the context.
//   bulwark::Fallback<Receipt> use_default([](const std::exception_ptr&) { return
//   Receipt::queued(); }); bulwark::Fallback<int> zero(0); bulwark::pipeline(use_default, breaker,
//   retry).execute(send);
// Only handled failures are replaced (by default every exception; narrow with handle<E>(), add
// values with handle_result(pred)); other exceptions pass through. If the fallback throws, that
// exception is the outcome. T must be the pipeline's result type (void for a fallback that only
// swallows or logs the failure).
// Thread-safe if the fallback callable is. The success path costs one branch and does not
// allocate.
template <class T>
class Fallback : public PolicyBase<Fallback<T>> {
public:
    using Handler = std::function<T(const std::exception_ptr&, Context&)>;

    // A fixed value (not for Fallback<void>); T must be copyable.
    template <class V, std::enable_if_t<!std::is_same<std::decay_t<V>, Fallback>::value &&
                                            !detail::is_fallback_handler<std::decay_t<V>, T>() &&
                                            std::is_constructible<T, V&&>::value,
                                        int> = 0>
    explicit Fallback(V&& value)
        : handler_(
              [v = T(std::forward<V>(value))](const std::exception_ptr&, Context&) { return v; }) {}

    // A callable taking (const std::exception_ptr&, Context&), (const std::exception_ptr&) or
    // (). Throws std::invalid_argument for a null function pointer or empty std::function.
    template <class F, std::enable_if_t<!std::is_same<std::decay_t<F>, Fallback>::value &&
                                            detail::is_fallback_handler<std::decay_t<F>, T>(),
                                        int> = 0>
    explicit Fallback(F f) : handler_(adapt(std::move(f))) {}

    // Moving keeps the configuration and the listeners; not thread-safe against concurrent use.
    Fallback(Fallback&& other) noexcept
        : handler_(std::move(other.handler_)),
          classifier_(std::move(other.classifier_)),
          fallbacks_(other.fallbacks_.load(std::memory_order_relaxed)),
          fallback_failures_(other.fallback_failures_.load(std::memory_order_relaxed)),
          listeners_(std::move(other.listeners_)) {}
    Fallback& operator=(Fallback&&) = delete;

    template <class E>
    Fallback& handle() {
        classifier_.template handle<E>();
        return *this;
    }
    Fallback& handle_if(std::function<bool(const std::exception_ptr&)> predicate) {
        classifier_.handle_if(std::move(predicate));
        return *this;
    }
    template <class U = detail::deduce_result_type, class Pred>
    Fallback& handle_result(Pred predicate) {
        classifier_.template handle_result<U>(std::move(predicate));
        return *this;
    }

    // Called each time the fallback replaces a failure. Returns the id that remove_listener()
    // takes; throws std::invalid_argument for an empty listener.
    ListenerId on_fallback(std::function<void(const FallbackEvent&)> listener) {
        return listeners_.add(std::move(listener));
    }
    // Stops calling a listener; false if the id is unknown here or already removed.
    bool remove_listener(ListenerId id) noexcept { return listeners_.remove(id); }

    FallbackStats stats() const noexcept {
        return FallbackStats{fallbacks_.load(std::memory_order_relaxed),
                             fallback_failures_.load(std::memory_order_relaxed)};
    }

    template <class Next>
    auto apply(Context& ctx, Next&& next) {
        using O = std::invoke_result_t<Next&, Context&>;
        static_assert(std::is_same<O, Outcome<T>>::value,
                      "bulwark::Fallback<T>: T must be the result type of the call it protects.");
        O outcome = next(ctx);
        // One named result and one return, so the outcome is constructed in place (NRVO).
        if (BULWARK_UNLIKELY(!(outcome.has_value() && !classifier_.has_result_predicates())) &&
            classifier_.is_failure(outcome)) {
            outcome = substitute(outcome.error(), ctx);
        }
        return outcome;
    }

private:
    template <class F>
    static Handler adapt(F f) {
        if (detail::is_null_callable(f)) {
            detail::throw_invalid_argument("bulwark::Fallback: the fallback callable is null");
        }
        if constexpr (std::is_invocable<F&, const std::exception_ptr&, Context&>::value) {
            return Handler(std::move(f));
        } else if constexpr (std::is_invocable<F&, const std::exception_ptr&>::value) {
            return [g = std::move(f)](const std::exception_ptr& e, Context&) mutable {
                return static_cast<T>(g(e));
            };
        } else {
            return [g = std::move(f)](const std::exception_ptr&, Context&) mutable {
                return static_cast<T>(g());
            };
        }
    }

    BULWARK_NOINLINE Outcome<T> substitute(const std::exception_ptr& error, Context& ctx) {
        // relaxed: statistics.
        fallbacks_.fetch_add(1, std::memory_order_relaxed);
        Outcome<T> replaced = detail::capture<T>([&] { return handler_(error, ctx); });
        if (replaced.has_error()) {
            fallback_failures_.fetch_add(1, std::memory_order_relaxed);
        }
        listeners_.emit_with([&] {
            return FallbackEvent{ctx.operation(), error, replaced.has_error()};
        });
        return replaced;
    }

    Handler handler_;
    Classifier classifier_;
    std::atomic<std::uint64_t> fallbacks_{0};
    std::atomic<std::uint64_t> fallback_failures_{0};
    Listeners<FallbackEvent> listeners_;
};

}  // namespace bulwark

#endif  // BULWARK_FALLBACK_HPP

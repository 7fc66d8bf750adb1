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
// What a Fallback<T> was given: a handler of one of the three signatures, a value, or something
// it cannot use.
enum class fallback_form : std::uint8_t {
    with_context,  // (const std::exception_ptr&, Context&)
    with_error,    // (const std::exception_ptr&)
    no_arguments,  // ()
    value,         // a T
    wrong_result,  // a callable of one of the three signatures whose result is no T
    unusable,
};

// A handler wins over a value when V could be both; F is V decayed. A (error, context) handler
// becomes the std::function itself, so its result must convert implicitly; the other two are
// adapted with a static_cast.
template <class T, class V, class F = std::decay_t<V>>
constexpr fallback_form fallback_form_of() {
    using Error = const std::exception_ptr&;
    constexpr bool is_value = !std::is_void<T>::value && std::is_constructible<T, V&&>::value;
    fallback_form form = fallback_form::unusable;
    bool fits = false;
    if constexpr (std::is_invocable<F&, Error, Context&>::value) {
        form = fallback_form::with_context;
        fits = std::is_invocable_r<T, F&, Error, Context&>::value;
    } else if constexpr (std::is_invocable<F&, Error>::value) {
        form = fallback_form::with_error;
        fits = std::is_void<T>::value ||
               std::is_constructible<T, std::invoke_result_t<F&, Error>>::value;
    } else if constexpr (std::is_invocable<F&>::value) {
        form = fallback_form::no_arguments;
        fits = std::is_void<T>::value || std::is_constructible<T, std::invoke_result_t<F&>>::value;
    } else {
        return is_value ? fallback_form::value : fallback_form::unusable;
    }
    return fits ? form : is_value ? fallback_form::value : fallback_form::wrong_result;
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

    // A fixed value (not for Fallback<void>; T must be copyable), or a callable taking
    // (const std::exception_ptr&, Context&), (const std::exception_ptr&) or () and returning a T
    // (anything for Fallback<void>). Throws std::invalid_argument for a null function pointer or
    // empty std::function. Anything else stops at one static_assert sentence.
    template <class V, std::enable_if_t<!std::is_same<std::decay_t<V>, Fallback>::value, int> = 0>
    explicit Fallback(V&& value_or_handler)
        : handler_(make_handler(std::forward<V>(value_or_handler))) {}

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
    template <class U = void, class Pred>
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
        if constexpr (!std::is_same<O, Outcome<T>>::value) {
            return next(ctx);  // after the static_assert: nothing more to report
        } else {
            O outcome = next(ctx);
            // One named result and one return, so the outcome is constructed in place (NRVO).
            if (BULWARK_UNLIKELY(!(outcome.has_value() && !classifier_.has_result_predicates())) &&
                classifier_.is_failure(outcome)) {
                outcome = substitute(outcome.error(), ctx);
            }
            return outcome;
        }
    }

private:
    template <class V>
    static Handler make_handler(V&& value_or_handler) {
        using detail::fallback_form;
        constexpr fallback_form form = detail::fallback_form_of<T, V>();
        static_assert(form != fallback_form::unusable,
                      "bulwark::Fallback<T>: the fallback must be a value convertible to T, or a "
                      "callable taking (const std::exception_ptr&, bulwark::Context&), (const "
                      "std::exception_ptr&) or () (Fallback<void> takes only a callable).");
        static_assert(form != fallback_form::wrong_result,
                      "bulwark::Fallback<T>: the fallback callable returns something that does "
                      "not convert to T (T must be the result type of the call it protects).");
        if constexpr (form == fallback_form::value) {
            return [v = T(std::forward<V>(value_or_handler))](const std::exception_ptr&, Context&) {
                return v;
            };
        } else if constexpr (form == fallback_form::unusable ||
                             form == fallback_form::wrong_result) {
            return Handler();  // after the static_assert: nothing more to report
        } else {
            std::decay_t<V> f(std::forward<V>(value_or_handler));
            if (detail::is_null_callable(f)) {
                detail::throw_invalid_argument("bulwark::Fallback: the fallback callable is null");
            }
            if constexpr (form == fallback_form::with_context) {
                return Handler(std::move(f));
            } else if constexpr (form == fallback_form::with_error) {
                return [g = std::move(f)](const std::exception_ptr& e, Context&) mutable {
                    return static_cast<T>(g(e));
                };
            } else {
                return [g = std::move(f)](const std::exception_ptr&, Context&) mutable {
                    return static_cast<T>(g());
                };
            }
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

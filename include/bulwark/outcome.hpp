// Outcome<T>: a value or an exception_ptr, the result type every policy returns.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_OUTCOME_HPP
#define BULWARK_OUTCOME_HPP

#include <exception>
#include <type_traits>
#include <utility>
#include <variant>

#include <bulwark/config.hpp>
#include <bulwark/detail/throw.hpp>

namespace bulwark {

// The result of one execution: a value of T, or the exception that ended it.
//   auto o = policy.try_execute([] { return 42; });
//   if (o) use(o.value()); else log(o.error());        // value() rethrows the stored error
// T may be move-only; Outcome<void> holds only the error. Thread-compatible.
template <class T>
class [[nodiscard]] Outcome {
    static_assert(!std::is_reference<T>::value,
                  "bulwark::Outcome<T> cannot hold a reference: return a pointer or "
                  "std::reference_wrapper from the callable instead.");
    static_assert(!std::is_same<std::decay_t<T>, std::exception_ptr>::value,
                  "bulwark::Outcome<std::exception_ptr> is ambiguous: wrap the exception_ptr in a "
                  "struct of your own.");
    static_assert(!std::is_array<T>::value && std::is_destructible<T>::value,
                  "bulwark::Outcome<T> needs a destructible, non-array value type.");

public:
    using value_type = T;

    static Outcome from_value(T value) noexcept(std::is_nothrow_move_constructible<T>::value) {
        return Outcome(std::in_place_index<0>, std::move(value));
    }

    template <class... Args>
    static Outcome in_place(Args&&... args) {
        return Outcome(std::in_place_index<0>, std::forward<Args>(args)...);
    }

    // Throws std::invalid_argument if `error` is null: an error outcome must say what went wrong.
    static Outcome from_error(std::exception_ptr error) {
        if (!error) {
            detail::throw_invalid_argument(
                "bulwark::Outcome::from_error: the exception_ptr is null");
        }
        return Outcome(std::in_place_index<1>, std::move(error));
    }

    bool has_value() const noexcept { return data_.index() == 0; }
    bool has_error() const noexcept { return data_.index() != 0; }
    explicit operator bool() const noexcept { return has_value(); }

    // The value; rethrows the stored error if there is none.
    T& value() & {
        rethrow_if_error();
        return *std::get_if<0>(&data_);
    }
    const T& value() const& {
        rethrow_if_error();
        return *std::get_if<0>(&data_);
    }
    T&& value() && {
        rethrow_if_error();
        return std::move(*std::get_if<0>(&data_));
    }

    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T&& operator*() && { return std::move(*this).value(); }

    template <class U>
    T value_or(U&& fallback) const& {
        return has_value() ? *std::get_if<0>(&data_) : static_cast<T>(std::forward<U>(fallback));
    }
    template <class U>
    T value_or(U&& fallback) && {
        return has_value() ? std::move(*std::get_if<0>(&data_))
                           : static_cast<T>(std::forward<U>(fallback));
    }

    // The stored error; a null exception_ptr when the outcome holds a value.
    std::exception_ptr error() const noexcept {
        const std::exception_ptr* e = std::get_if<1>(&data_);
        return e != nullptr ? *e : std::exception_ptr();
    }

    void rethrow_if_error() const {
        if (const std::exception_ptr* e = std::get_if<1>(&data_)) {
            std::rethrow_exception(*e);
        }
    }

    // Replaces the value or error with `error`, in place: for a policy that turns a result into a
    // failure (a late one, say) without requiring T to be assignable. Throws
    // std::invalid_argument if `error` is null.
    void replace_with_error(std::exception_ptr error) {
        if (!error) {
            detail::throw_invalid_argument(
                "bulwark::Outcome::replace_with_error: the exception_ptr is null");
        }
        data_.template emplace<1>(std::move(error));
    }

private:
    template <std::size_t I, class... Args>
    explicit Outcome(std::in_place_index_t<I> tag, Args&&... args)
        : data_(tag, std::forward<Args>(args)...) {}

    std::variant<T, std::exception_ptr> data_;
};

// The outcome of a callable that returns nothing: success, or the exception that ended it.
template <>
class [[nodiscard]] Outcome<void> {
public:
    using value_type = void;

    static Outcome success() noexcept { return {}; }
    static Outcome from_value() noexcept { return {}; }

    static Outcome from_error(std::exception_ptr error) {
        if (!error) {
            detail::throw_invalid_argument(
                "bulwark::Outcome::from_error: the exception_ptr is null");
        }
        Outcome o;
        o.error_ = std::move(error);
        return o;
    }

    bool has_value() const noexcept { return !error_; }
    bool has_error() const noexcept { return static_cast<bool>(error_); }
    explicit operator bool() const noexcept { return has_value(); }

    // Rethrows the stored error, if any.
    void value() const { rethrow_if_error(); }

    std::exception_ptr error() const noexcept { return error_; }

    void rethrow_if_error() const {
        if (error_) {
            std::rethrow_exception(error_);
        }
    }

    // Replaces the outcome with `error`. Throws std::invalid_argument if `error` is null.
    void replace_with_error(std::exception_ptr error) {
        if (!error) {
            detail::throw_invalid_argument(
                "bulwark::Outcome::replace_with_error: the exception_ptr is null");
        }
        error_ = std::move(error);
    }

private:
    Outcome() noexcept = default;
    std::exception_ptr error_;
};

namespace detail {
template <class T>
struct is_outcome : std::false_type {};
template <class T>
struct is_outcome<Outcome<T>> : std::true_type {};
template <class T>
inline constexpr bool is_outcome_v = is_outcome<std::decay_t<T>>::value;
}  // namespace detail

}  // namespace bulwark

#endif  // BULWARK_OUTCOME_HPP

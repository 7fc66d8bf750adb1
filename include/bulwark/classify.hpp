// Classification: which exceptions and results a policy counts as failures.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_CLASSIFY_HPP
#define BULWARK_CLASSIFY_HPP

#include <exception>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <bulwark/detail/throw.hpp>
#include <bulwark/detail/traits.hpp>
#include <bulwark/outcome.hpp>

namespace bulwark {

namespace detail {
// True if `error` is an E (or derived from it).
template <class E>
bool holds_exception(const std::exception_ptr& error) {
    try {
        std::rethrow_exception(error);
    } catch (const E&) {
        return true;
    } catch (...) {
        return false;
    }
}

// What `error` (not null) says: its what(), or "unknown exception" for a non-std one.
inline std::string describe_exception(const std::exception_ptr& error) {
    try {
        std::rethrow_exception(error);
    } catch (const std::exception& e) {
        return e.what();
    } catch (...) {
        return "unknown exception";
    }
}
}  // namespace detail

// An exception type named at run time, for options that list types
// (CircuitBreakerOptions::counted_rejections): matches(error) is true when `error` holds an E or
// a subclass of E.
//   auto full = bulwark::ExceptionType::of<bulwark::BulkheadFullError>();
//   full.matches(std::make_exception_ptr(bulwark::BulkheadFullError("full")));   // true
// A small value type (one function pointer): copyable, and thread-safe to use. Two values of the
// same E compare equal. matches() rethrows the exception once.
class ExceptionType {
public:
    template <class E>
    static constexpr ExceptionType of() noexcept {
        static_assert(
            !std::is_reference<E>::value && !std::is_pointer<E>::value,
            "ExceptionType::of<E>() takes an exception type, not a reference or pointer.");
        return ExceptionType(&detail::holds_exception<E>);
    }

    // True if `error` holds an E (or a subclass of E). False for a null exception_ptr.
    bool matches(const std::exception_ptr& error) const {
        return error != nullptr && matches_(error);
    }

    friend bool operator==(ExceptionType a, ExceptionType b) noexcept {
        return a.matches_ == b.matches_;
    }
    friend bool operator!=(ExceptionType a, ExceptionType b) noexcept { return !(a == b); }

private:
    using Matcher = bool (*)(const std::exception_ptr&);
    constexpr explicit ExceptionType(Matcher matcher) noexcept : matches_(matcher) {}

    Matcher matches_;
};

// Decides which outcomes a policy treats as failures (to count, retry or fall back on).
// By default every exception is a failure and every returned value a success.
//   Classifier c;
//   c.handle<std::system_error>();                   // now only system_error (and subclasses) fail
//   c.handle_result([](const Response& r) { return r.status >= 500; });  // and these values
// An exception outside the handled set is not a failure: the policy lets it pass through.
// Configuration is not thread-safe; once configured, the const members are safe to call
// concurrently. Classifying a success with no result predicates costs one branch; classifying an
// exception against handle<E>() rethrows it once per handled type.
class Classifier {
public:
    // Exceptions of type E (or derived from it) are failures. The first call narrows the default
    // "every exception" to the listed types.
    template <class E>
    Classifier& handle() {
        static_assert(
            !std::is_reference<E>::value && !std::is_pointer<E>::value,
            "Classifier::handle<E>() takes an exception type, not a reference or pointer.");
        exception_predicates_.emplace_back(&detail::holds_exception<E>);
        return *this;
    }

    // Exceptions for which `predicate` returns true are failures (narrows like handle<E>()).
    Classifier& handle_if(std::function<bool(const std::exception_ptr&)> predicate) {
        if (!predicate) {
            detail::throw_invalid_argument("Classifier::handle_if: the predicate is empty");
        }
        exception_predicates_.push_back(std::move(predicate));
        return *this;
    }

    // Returned values for which `predicate` returns true are failures. The value type is deduced
    // from the predicate's parameter; name it explicitly for a generic lambda:
    // handle_result<Response>([](const auto& r) { ... }). Predicates of other types are ignored
    // for results of another type.
    template <class T = void, class Pred>
    Classifier& handle_result(Pred predicate) {
        using Arg = std::conditional_t<std::is_void<T>::value, detail::single_arg_t<Pred>, T>;
        static_assert(!std::is_void<Arg>::value,
                      "handle_result(pred) could not deduce the result type from the predicate "
                      "(a generic lambda?): write handle_result<YourType>(pred) or give the "
                      "lambda a concrete parameter type.");
        if constexpr (!std::is_void<Arg>::value) {  // else nothing more to report
            using Value = detail::remove_cvref_t<Arg>;
            static_assert(std::is_invocable_r<bool, const Pred&, const Value&>::value,
                          "handle_result(pred): pred must be callable as bool(const T&).");
            if constexpr (std::is_invocable_r<bool, const Pred&, const Value&>::value) {
                result_predicates_.push_back(ResultPredicate{
                    detail::type_id<Value>(), [p = std::move(predicate)](const void* value) {
                        return static_cast<bool>(p(*static_cast<const Value*>(value)));
                    }});
            }
        }
        return *this;
    }

    // True if the exception counts as a failure. A null exception_ptr is not a failure.
    bool is_failure(const std::exception_ptr& error) const {
        if (!error) {
            return false;
        }
        if (exception_predicates_.empty()) {
            return true;
        }
        for (const auto& predicate : exception_predicates_) {
            if (predicate(error)) {
                return true;
            }
        }
        return false;
    }

    // True if the returned value counts as a failure.
    template <class T>
    bool is_failure_result(const T& value) const {
        if (BULWARK_LIKELY(result_predicates_.empty())) {
            return false;
        }
        return is_failure_result_slow(detail::type_id<T>(), &value);
    }

    template <class T>
    bool is_failure(const Outcome<T>& outcome) const {
        if (outcome.has_error()) {
            return is_failure(outcome.error());
        }
        if constexpr (std::is_void<T>::value) {
            return false;
        } else {
            return is_failure_result(*outcome);
        }
    }

    // True when no handle<E>()/handle_if() narrowed the set: every exception is a failure.
    bool handles_all_exceptions() const noexcept { return exception_predicates_.empty(); }
    bool has_result_predicates() const noexcept { return !result_predicates_.empty(); }

private:
    struct ResultPredicate {
        detail::type_id_t type;
        std::function<bool(const void*)> predicate;
    };

    bool is_failure_result_slow(detail::type_id_t type, const void* value) const {
        for (const ResultPredicate& p : result_predicates_) {
            if (p.type == type && p.predicate(value)) {
                return true;
            }
        }
        return false;
    }

    std::vector<std::function<bool(const std::exception_ptr&)>> exception_predicates_;
    std::vector<ResultPredicate> result_predicates_;
};

}  // namespace bulwark

#endif  // BULWARK_CLASSIFY_HPP

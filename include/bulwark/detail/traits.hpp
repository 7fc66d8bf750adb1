// Type traits for callables and results (private).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_TRAITS_HPP
#define BULWARK_DETAIL_TRAITS_HPP

#include <functional>
#include <type_traits>

namespace bulwark {
namespace detail {

template <class...>
inline constexpr bool always_false_v = false;

template <class T>
using remove_cvref_t = std::remove_cv_t<std::remove_reference_t<T>>;

// The single parameter type of a callable with one non-template operator() or of a function
// (pointer). `void` when it cannot be found (a generic lambda, an overload set).
template <class F, class = void>
struct single_arg {
    using type = void;
};
template <class R, class A>
struct single_arg<R (*)(A), void> {
    using type = A;
};
template <class R, class A>
struct single_arg<R(A), void> {
    using type = A;
};
template <class R, class A>
struct single_arg<R (*)(A) noexcept, void> {
    using type = A;
};
template <class M>
struct member_single_arg {
    using type = void;
};
template <class R, class C, class A>
struct member_single_arg<R (C::*)(A)> {
    using type = A;
};
template <class R, class C, class A>
struct member_single_arg<R (C::*)(A) const> {
    using type = A;
};
template <class R, class C, class A>
struct member_single_arg<R (C::*)(A) noexcept> {
    using type = A;
};
template <class R, class C, class A>
struct member_single_arg<R (C::*)(A) const noexcept> {
    using type = A;
};
template <class F>
struct single_arg<F, std::void_t<decltype(&F::operator())>> {
    using type = typename member_single_arg<decltype(&F::operator())>::type;
};
template <class F>
using single_arg_t = typename single_arg<remove_cvref_t<F>>::type;

// A per-type identity that needs no RTTI: the address of an inline variable is unique per type.
template <class T>
struct type_tag {
    static constexpr char id = 0;
};
using type_id_t = const void*;
template <class T>
constexpr type_id_t type_id() noexcept {
    return &type_tag<remove_cvref_t<T>>::id;
}

template <class T, template <class...> class Template>
struct is_specialization : std::false_type {};
template <template <class...> class Template, class... Args>
struct is_specialization<Template<Args...>, Template> : std::true_type {};

// True for the callables that can be null: function pointers, member pointers, std::function.
template <class F>
bool is_null_callable(const F& f) noexcept {
    using D = remove_cvref_t<F>;
    if constexpr (std::is_pointer<D>::value || std::is_member_pointer<D>::value) {
        return f == nullptr;
    } else if constexpr (is_specialization<D, std::function>::value) {
        return !f;
    } else {
        (void)f;
        return false;
    }
}

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_TRAITS_HPP

// Catch2 v2/v3 shim: the tests include this instead of a Catch2 header.
#ifndef BULWARK_TESTS_CATCH_HPP
#define BULWARK_TESTS_CATCH_HPP

#if __has_include(<catch2/catch_test_macros.hpp>)
#include <catch2/catch_approx.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#define BULWARK_CATCH_MESSAGE_CONTAINS(text) Catch::Matchers::ContainsSubstring(text)
using Catch::Approx;  // v2 spells it unqualified
#else
#include <catch2/catch.hpp>
#define BULWARK_CATCH_MESSAGE_CONTAINS(text) Catch::Matchers::Contains(text)
#endif

#endif  // BULWARK_TESTS_CATCH_HPP

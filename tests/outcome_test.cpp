#include <memory>
#include <stdexcept>
#include <string>

#include <bulwark/outcome.hpp>

#include "catch.hpp"
#include "support.hpp"

using bulwark::Outcome;

TEST_CASE("Outcome holds a value", "[outcome]") {
    auto o = Outcome<int>::from_value(42);
    CHECK(o.has_value());
    CHECK_FALSE(o.has_error());
    CHECK(static_cast<bool>(o));
    CHECK(o.value() == 42);
    CHECK(*o == 42);
    CHECK(o.value_or(0) == 42);
    CHECK(o.error() == nullptr);
    CHECK_NOTHROW(o.rethrow_if_error());
}

TEST_CASE("Outcome holds an error and value() rethrows it", "[outcome]") {
    auto o = Outcome<int>::from_error(std::make_exception_ptr(std::runtime_error("x")));
    CHECK_FALSE(o.has_value());
    CHECK(o.has_error());
    CHECK(o.error() != nullptr);
    CHECK(o.value_or(7) == 7);
    CHECK_THROWS_WITH(o.value(), "x");
    CHECK_THROWS_AS(o.rethrow_if_error(), std::runtime_error);
}

TEST_CASE("Outcome rejects a null error", "[outcome]") {
    CHECK_THROWS_AS(Outcome<int>::from_error(nullptr), std::invalid_argument);
    CHECK_THROWS_AS(Outcome<void>::from_error(nullptr), std::invalid_argument);
}

TEST_CASE("replace_with_error turns any outcome into an error in place", "[outcome]") {
    struct Fixed {
        const int v;
    };
    auto o = bulwark::Outcome<Fixed>::from_value(Fixed{1});
    o.replace_with_error(std::make_exception_ptr(std::runtime_error("late")));
    REQUIRE(o.has_error());
    CHECK_THROWS_WITH(o.rethrow_if_error(), "late");
    CHECK_THROWS_AS(o.replace_with_error(nullptr), std::invalid_argument);

    auto v = bulwark::Outcome<void>::success();
    v.replace_with_error(std::make_exception_ptr(std::runtime_error("late")));
    CHECK(v.has_error());
    CHECK_THROWS_AS(v.replace_with_error(nullptr), std::invalid_argument);
}

TEST_CASE("Outcome<void> is success or error", "[outcome]") {
    auto ok = Outcome<void>::success();
    CHECK(ok.has_value());
    CHECK_NOTHROW(ok.value());
    auto bad = Outcome<void>::from_error(std::make_exception_ptr(std::logic_error("bad")));
    CHECK_FALSE(bad);
    CHECK_THROWS_WITH(bad.value(), "bad");
}

TEST_CASE("Outcome supports move-only values", "[outcome]") {
    auto o = Outcome<std::unique_ptr<int>>::from_value(std::make_unique<int>(5));
    std::unique_ptr<int> p = std::move(o).value();
    REQUIRE(p != nullptr);
    CHECK(*p == 5);

    auto m = Outcome<bulwark_test::MoveOnly>::in_place(9);
    CHECK(m->value == 9);
    bulwark_test::MoveOnly taken = *std::move(m);
    CHECK(taken.value == 9);
}

TEST_CASE("Outcome value_or converts the fallback", "[outcome]") {
    auto o = Outcome<std::string>::from_error(std::make_exception_ptr(std::runtime_error("x")));
    CHECK(o.value_or("fallback") == "fallback");
    CHECK(std::move(o).value_or("moved") == "moved");
}

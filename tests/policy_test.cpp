#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>

#include <bulwark/core.hpp>
#include <bulwark/fallback.hpp>

#include "catch.hpp"
#include "support.hpp"

TEST_CASE("execute returns the value of a callable taking nothing", "[policy]") {
    bulwark::Noop noop;
    CHECK(noop.execute([] { return 42; }) == 42);
}

TEST_CASE("execute passes the context to a callable that takes one", "[policy]") {
    bulwark::Noop noop;
    bulwark::Context ctx("lookup");
    ctx.set_attempt(3);
    auto seen = noop.execute(
        [](bulwark::Context& c) {
            return std::string(c.operation()) + "#" + std::to_string(c.attempt());
        },
        ctx);
    CHECK(seen == "lookup#3");
}

TEST_CASE("execute rethrows the callable's exception unchanged", "[policy]") {
    bulwark::Noop noop;
    CHECK_THROWS_AS(noop.execute([]() -> int { throw std::out_of_range("gone"); }),
                    std::out_of_range);
}

TEST_CASE("try_execute never throws and returns the error", "[policy]") {
    bulwark::Noop noop;
    auto o = noop.try_execute([]() -> int { throw std::out_of_range("gone"); });
    REQUIRE(o.has_error());
    CHECK_THROWS_AS(o.rethrow_if_error(), std::out_of_range);
    auto ok = noop.try_execute([] { return 1; });
    CHECK(ok.value() == 1);
}

TEST_CASE("void callables run through execute and try_execute", "[policy]") {
    bulwark::Noop noop;
    int calls = 0;
    noop.execute([&] { ++calls; });
    bulwark::Outcome<void> o = noop.try_execute([&](bulwark::Context&) { ++calls; });
    CHECK(o.has_value());
    CHECK(calls == 2);
    CHECK_THROWS_AS(noop.execute([] { throw std::runtime_error("v"); }), std::runtime_error);
    CHECK_FALSE(noop.try_execute([] { throw std::runtime_error("v"); }).has_value());
}

TEST_CASE("move-only results pass through execute and try_execute", "[policy]") {
    bulwark::Noop noop;
    std::unique_ptr<int> p = noop.execute([] { return std::make_unique<int>(7); });
    CHECK(*p == 7);
    auto o = noop.try_execute([] { return bulwark_test::MoveOnly(8); });
    CHECK(o->value == 8);
}

TEST_CASE("move-only callables are accepted", "[policy]") {
    bulwark::Noop noop;
    auto owned = std::make_unique<int>(5);
    auto f = [owned = std::move(owned)] {
        return *owned + 1;
    };
    CHECK(noop.execute(std::move(f)) == 6);
}

TEST_CASE("a null callable is a clear error", "[policy]") {
    bulwark::Noop noop;
    int (*null_function)() = nullptr;
    CHECK_THROWS_WITH(noop.execute(null_function), "bulwark: execute() was given a null callable");
    std::function<void()> empty;
    CHECK_THROWS_AS(noop.execute(empty), std::invalid_argument);
    auto o = noop.try_execute(empty);
    REQUIRE(o.has_error());
    CHECK_THROWS_WITH(o.rethrow_if_error(), "bulwark: try_execute() was given a null callable");
}

TEST_CASE("is_policy_v recognises policies", "[policy]") {
    STATIC_REQUIRE(bulwark::is_policy_v<bulwark::Noop>);
    STATIC_REQUIRE(bulwark::is_policy_v<bulwark_test::Repeat>);
    STATIC_REQUIRE(bulwark::is_policy_v<const bulwark::Noop&>);
    // A policy for one result type is recognised without instantiating its apply.
    STATIC_REQUIRE(bulwark::is_policy_v<bulwark::Fallback<std::string>>);
    STATIC_REQUIRE_FALSE(bulwark::is_policy_v<int>);
    STATIC_REQUIRE_FALSE(bulwark::is_policy_v<std::string>);
}

TEST_CASE("every rejection derives from RejectedError and carries retry_after", "[errors]") {
    using namespace std::chrono_literals;
    bulwark::CircuitOpenError open("open", 5s);
    const bulwark::RejectedError& base = open;
    CHECK(base.retry_after() == bulwark::Duration(5s));
    CHECK(std::string(base.what()) == "open");
    CHECK(bulwark::RateLimitedError("limited").retry_after() == bulwark::Duration::zero());

    auto last = std::make_exception_ptr(std::runtime_error("dependency down"));
    bulwark::RetryBudgetExhaustedError exhausted("budget", last);
    CHECK(exhausted.last_error() == last);

    auto is_rejection = [](std::exception_ptr e) {
        try {
            std::rethrow_exception(e);
        } catch (const bulwark::RejectedError&) {
            return true;
        } catch (...) {
            return false;
        }
    };
    CHECK(is_rejection(std::make_exception_ptr(bulwark::BulkheadFullError("full"))));
    CHECK(is_rejection(std::make_exception_ptr(bulwark::LoadShedError("shed"))));
    CHECK(is_rejection(std::make_exception_ptr(bulwark::TimeoutError("late"))));
    CHECK(is_rejection(std::make_exception_ptr(exhausted)));
    CHECK_FALSE(is_rejection(std::make_exception_ptr(std::runtime_error("plain"))));
}

TEST_CASE("a rejection's source is the name it was raised with, shared by its copies", "[errors]") {
    auto name = std::make_shared<const std::string>("db");
    bulwark::BulkheadFullError full(name, "bulkhead 'db' is full");
    CHECK(full.source() == "db");
    const bulwark::BulkheadFullError copy = full;
    CHECK(&copy.source() == &full.source());  // one string, however many copies
    CHECK(bulwark::RateLimitedError("limited").source().empty());
    CHECK(bulwark::RejectedError(nullptr, "unnamed").source().empty());
    bulwark::RetryBudgetExhaustedError exhausted(name, "budget", nullptr);
    CHECK(exhausted.source() == "db");
    STATIC_REQUIRE(std::is_nothrow_copy_constructible<bulwark::RejectedError>::value);
    STATIC_REQUIRE(std::is_nothrow_copy_constructible<bulwark::RetryBudgetExhaustedError>::value);
}

TEST_CASE("NoChannelError is a core rejection", "[errors]") {
    const bulwark::NoChannelError none("no channel delivered");
    const bulwark::RejectedError& base = none;
    CHECK(std::string(base.what()) == "no channel delivered");
}

TEST_CASE("the version macros match the CMake project version", "[version]") {
    CHECK(std::string(BULWARK_VERSION_STRING) == BULWARK_EXPECTED_VERSION);
    CHECK(BULWARK_VERSION ==
          BULWARK_VERSION_MAJOR * 10000 + BULWARK_VERSION_MINOR * 100 + BULWARK_VERSION_PATCH);
}

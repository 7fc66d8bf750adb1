#include <stdexcept>
#include <string>
#include <system_error>

#include <bulwark/classify.hpp>

#include "catch.hpp"

namespace {
struct Response {
    int status;
};

template <class E>
std::exception_ptr error_of(E e) {
    return std::make_exception_ptr(e);
}
}  // namespace

TEST_CASE("By default every exception is a failure and every value a success", "[classify]") {
    bulwark::Classifier c;
    CHECK(c.handles_all_exceptions());
    CHECK(c.is_failure(error_of(std::runtime_error("x"))));
    CHECK(c.is_failure(error_of(42)));
    CHECK_FALSE(c.is_failure(std::exception_ptr()));
    CHECK_FALSE(c.is_failure_result(Response{500}));
    CHECK_FALSE(c.is_failure(bulwark::Outcome<int>::from_value(1)));
    CHECK(c.is_failure(bulwark::Outcome<void>::from_error(error_of(std::logic_error("y")))));
}

TEST_CASE("handle<E>() narrows failures to E and its subclasses", "[classify]") {
    bulwark::Classifier c;
    c.handle<std::system_error>();
    CHECK_FALSE(c.handles_all_exceptions());
    CHECK(c.is_failure(error_of(std::system_error(std::make_error_code(std::errc::timed_out)))));
    CHECK_FALSE(c.is_failure(error_of(std::runtime_error("not handled"))));

    c.handle<std::logic_error>();
    CHECK(c.is_failure(error_of(std::invalid_argument("a logic_error subclass"))));
    CHECK_FALSE(c.is_failure(error_of(3)));
}

TEST_CASE("ExceptionType matches its type and subclasses, and nothing else", "[classify]") {
    constexpr auto logic = bulwark::ExceptionType::of<std::logic_error>();
    CHECK(logic.matches(error_of(std::logic_error("x"))));
    CHECK(logic.matches(error_of(std::invalid_argument("a subclass"))));
    CHECK_FALSE(logic.matches(error_of(std::runtime_error("another type"))));
    CHECK_FALSE(logic.matches(error_of(42)));
    CHECK_FALSE(logic.matches(std::exception_ptr()));
    CHECK(logic == bulwark::ExceptionType::of<std::logic_error>());
    CHECK(logic != bulwark::ExceptionType::of<std::invalid_argument>());
}

TEST_CASE("handle_if takes an exception predicate", "[classify]") {
    bulwark::Classifier c;
    c.handle_if([](const std::exception_ptr& e) {
        try {
            std::rethrow_exception(e);
        } catch (const std::runtime_error& r) {
            return std::string(r.what()) == "transient";
        } catch (...) {
            return false;
        }
    });
    CHECK(c.is_failure(error_of(std::runtime_error("transient"))));
    CHECK_FALSE(c.is_failure(error_of(std::runtime_error("permanent"))));
    CHECK_THROWS_AS(c.handle_if(nullptr), std::invalid_argument);
}

TEST_CASE("handle_result makes matching values failures", "[classify]") {
    bulwark::Classifier c;
    c.handle_result([](const Response& r) { return r.status >= 500; });
    CHECK(c.has_result_predicates());
    CHECK(c.is_failure_result(Response{503}));
    CHECK_FALSE(c.is_failure_result(Response{200}));
    CHECK(c.is_failure(bulwark::Outcome<Response>::from_value(Response{500})));
    // A predicate for another type does not apply.
    CHECK_FALSE(c.is_failure_result(503));
    // Exceptions are still all failures: handle_result does not narrow exceptions.
    CHECK(c.handles_all_exceptions());
}

TEST_CASE("handle_result with an explicit type accepts a generic lambda", "[classify]") {
    bulwark::Classifier c;
    c.handle_result<int>([](const auto& v) { return v < 0; });
    CHECK(c.is_failure_result(-1));
    CHECK_FALSE(c.is_failure_result(1));
}

TEST_CASE("handle_result accepts a function pointer", "[classify]") {
    bulwark::Classifier c;
    bool (*empty)(const std::string&) = [](const std::string& s) {
        return s.empty();
    };
    c.handle_result(empty);
    CHECK(c.is_failure_result(std::string()));
    CHECK_FALSE(c.is_failure_result(std::string("x")));
}

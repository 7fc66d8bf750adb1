#include <functional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include <bulwark/fallback.hpp>
#include <bulwark/pipeline.hpp>
#include <bulwark/testing.hpp>

#include "catch.hpp"
#include "support.hpp"

namespace {
struct Receipt {
    std::string id;
    static Receipt queued() { return Receipt{"queued"}; }
};
}  // namespace

TEST_CASE("a fallback value replaces a failure", "[fallback]") {
    bulwark::Fallback<int> zero(0);
    CHECK(zero.execute([]() -> int { throw std::runtime_error("down"); }) == 0);
    CHECK(zero.execute([] { return 5; }) == 5);
    CHECK(zero.stats().fallbacks == 1);
}

TEST_CASE("a fallback callable receives the error and the context", "[fallback]") {
    std::string seen;
    bulwark::Fallback<Receipt> use_default([&](const std::exception_ptr& e, bulwark::Context& ctx) {
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& ex) {
            seen = std::string(ctx.operation()) + ": " + ex.what();
        }
        return Receipt::queued();
    });
    bulwark::Context ctx("send");
    auto r = use_default.execute([]() -> Receipt { throw std::runtime_error("smtp down"); }, ctx);
    CHECK(r.id == "queued");
    CHECK(seen == "send: smtp down");

    bulwark::Fallback<Receipt> from_error(
        [](const std::exception_ptr&) { return Receipt::queued(); });
    CHECK(from_error.execute([]() -> Receipt { throw 1; }).id == "queued");
    bulwark::Fallback<Receipt> nullary([] { return Receipt{"n"}; });
    CHECK(nullary.execute([]() -> Receipt { throw 1; }).id == "n");
}

TEST_CASE("a fallback callable's result converts to T", "[fallback]") {
    bulwark::Fallback<std::string> from_literal(
        [](const std::exception_ptr&) { return "queued"; });  // const char* -> std::string
    CHECK(from_literal.execute([]() -> std::string { throw 1; }) == "queued");
    bulwark::Fallback<long> widened([] { return 7; });  // int -> long
    CHECK(widened.execute([]() -> long { throw 1; }) == 7L);
    bulwark::Fallback<std::string> value("none");  // a value, not a callable
    CHECK(value.execute([]() -> std::string { throw 1; }) == "none");
}

TEST_CASE("only handled failures are replaced", "[fallback]") {
    bulwark::Fallback<int> fb(-1);
    fb.handle<std::system_error>();
    CHECK_THROWS_AS(fb.execute([]() -> int { throw std::logic_error("bug"); }), std::logic_error);
    CHECK(fb.execute([]() -> int {
        throw std::system_error(std::make_error_code(std::errc::timed_out));
    }) == -1);
    CHECK(fb.stats().fallbacks == 1);
}

TEST_CASE("handle_result replaces bad values", "[fallback]") {
    bulwark::Fallback<int> fb(200);
    fb.handle_result([](const int& status) { return status >= 500; });
    CHECK(fb.execute([] { return 503; }) == 200);
    CHECK(fb.execute([] { return 404; }) == 404);
}

TEST_CASE("a throwing fallback's exception becomes the outcome", "[fallback]") {
    bulwark::Fallback<int> fb(
        [](const std::exception_ptr&) -> int { throw std::out_of_range("no fallback either"); });
    auto o = fb.try_execute([]() -> int { throw std::runtime_error("down"); });
    CHECK_THROWS_AS(o.rethrow_if_error(), std::out_of_range);
    CHECK(fb.stats().fallback_failures == 1);
}

TEST_CASE("Fallback<void> swallows handled failures", "[fallback]") {
    int logged = 0;
    bulwark::Fallback<void> log_only([&](const std::exception_ptr&) { ++logged; });
    log_only.execute([] { throw std::runtime_error("ignored"); });
    CHECK(logged == 1);
}

TEST_CASE("on_fallback listeners hear each use", "[fallback]") {
    bulwark::Fallback<int> fb(0);
    std::vector<bulwark::FallbackEvent> events;
    fb.on_fallback([&](const bulwark::FallbackEvent& e) { events.push_back(e); });
    bulwark::Context ctx("quote");
    (void)fb.try_execute([]() -> int { throw std::runtime_error("x"); }, ctx);
    REQUIRE(events.size() == 1);
    CHECK(events[0].operation == "quote");
    CHECK(events[0].error != nullptr);
    CHECK_FALSE(events[0].fallback_failed);
}

TEST_CASE("a removed on_fallback listener hears no more uses", "[fallback]") {
    bulwark::Fallback<int> fb(0);
    int heard = 0;
    const bulwark::ListenerId id = fb.on_fallback([&](const bulwark::FallbackEvent&) { ++heard; });
    auto fail = []() -> int {
        throw std::runtime_error("x");
    };
    (void)fb.try_execute(fail);
    CHECK(fb.remove_listener(id));
    CHECK_FALSE(fb.remove_listener(id));
    (void)fb.try_execute(fail);
    CHECK(heard == 1);
}

TEST_CASE("a fallback outside a fault injector answers its failures in a pipeline",
          "[fallback][pipeline]") {
    bulwark::FaultInjector chaos;
    chaos.fail_next(2);
    auto p = bulwark::pipeline(bulwark::Fallback<int>(-1), bulwark_test::Repeat(2), chaos);
    CHECK(p.execute([] { return 1; }) == -1);  // both attempts failed
    CHECK(p.execute([] { return 1; }) == 1);
}

TEST_CASE("a null fallback callable is refused", "[fallback]") {
    std::function<int(const std::exception_ptr&)> empty;
    CHECK_THROWS_WITH(bulwark::Fallback<int>(empty),
                      "bulwark::Fallback: the fallback callable is null");
}

// The user-facing contract: the usage the API reference shows, compiled and checked here so that
// it cannot rot. One test case per section; each grows as its section's components are built.
#include <stdexcept>
#include <string>

#include <bulwark/bulwark.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;

namespace {
struct Receipt {
    std::string id;
};
Receipt send_sms(const std::string& phone, const std::string& text) {
    return Receipt{phone + ":" + text};
}
int call() {
    return 7;
}
int call_with_deadline(std::optional<bulwark::TimePoint> deadline) {
    return deadline ? 1 : 0;
}
}  // namespace

TEST_CASE("API section 1: core vocabulary", "[api]") {
    bulwark::SteadyClock clock;
    bulwark::ManualClock test_clock;
    const auto t0 = test_clock.now();
    test_clock.advance(5s);
    test_clock.sleep_for(1s);
    CHECK(test_clock.now() - t0 == bulwark::Duration(6s));
    CHECK(clock.now() <= bulwark::SteadyClock().now());

    bulwark::Outcome<int> o = bulwark::Outcome<int>::from_value(42);
    auto bad = bulwark::Outcome<int>::from_error(std::make_exception_ptr(std::runtime_error("x")));
    CHECK(o.has_value());
    CHECK(o.value() == 42);
    CHECK(o.error() == nullptr);
    CHECK(bad.value_or(0) == 0);
    CHECK_THROWS_WITH(bad.rethrow_if_error(), "x");

    bulwark::Noop policy;
    int v = policy.execute([] { return call(); });
    bulwark::Outcome<int> r = policy.try_execute([] { return call(); });
    CHECK(v == 7);
    CHECK(r.value() == 7);
    CHECK(policy.execute(
              [](bulwark::Context& ctx) { return call_with_deadline(ctx.deadline()); }) == 0);
    policy.execute([](bulwark::Context& ctx) {
        CHECK(ctx.attempt() == 0);
        CHECK(ctx.operation().empty());
        CHECK_FALSE(ctx.cancelled());
        ctx.cancel();
        CHECK(ctx.cancelled());
    });

    auto pipeline = bulwark::pipeline(bulwark::Noop{}, policy);
    auto receipt = pipeline.execute([&] { return send_sms("+1", "hi"); });
    CHECK(receipt.id == "+1:hi");

    auto resilient_send = bulwark::wrap(send_sms, policy, bulwark::Noop{});
    std::string phone = "+44";
    Receipt r2 = resilient_send(phone, "hello");
    CHECK(r2.id == "+44:hello");
}

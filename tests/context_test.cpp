#include <thread>

#include <bulwark/context.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;

TEST_CASE("Context starts as the first attempt with no deadline", "[context]") {
    bulwark::Context ctx("send-sms");
    CHECK(ctx.operation() == "send-sms");
    CHECK(ctx.attempt() == 0);
    CHECK_FALSE(ctx.deadline().has_value());
    CHECK_FALSE(ctx.cancelled());
    CHECK(ctx.priority() == bulwark::Priority::normal);
}

TEST_CASE("tighten_deadline keeps the earlier deadline", "[context]") {
    bulwark::ManualClock clock;
    bulwark::Context ctx;
    ctx.tighten_deadline(clock.now() + 5s);
    ctx.tighten_deadline(clock.now() + 10s);
    REQUIRE(ctx.deadline().has_value());
    CHECK(*ctx.deadline() == clock.now() + 5s);
    ctx.tighten_deadline(clock.now() + 1s);
    CHECK(*ctx.deadline() == clock.now() + 1s);
    CHECK(*ctx.remaining(clock) == bulwark::Duration(1s));
    clock.advance(3s);
    CHECK(*ctx.remaining(clock) == bulwark::Duration(-2s));
    ctx.set_deadline(std::nullopt);
    CHECK_FALSE(ctx.remaining(clock).has_value());
}

TEST_CASE("TimePoint::max() as a deadline means none", "[context]") {
    bulwark::ManualClock clock;
    bulwark::Context ctx;
    CHECK(ctx.deadline_or(bulwark::TimePoint::max()) == bulwark::TimePoint::max());
    CHECK(ctx.deadline_or(clock.now()) == clock.now());
    ctx.set_deadline(clock.now() + 1s, &clock);
    CHECK(ctx.has_deadline());
    CHECK(ctx.deadline_or(bulwark::TimePoint::max()) == clock.now() + 1s);
    CHECK(ctx.deadline_clock() == &clock);
    ctx.set_deadline(bulwark::TimePoint::max(), &clock);
    CHECK_FALSE(ctx.has_deadline());
    CHECK_FALSE(ctx.deadline().has_value());
    CHECK(ctx.deadline_clock() == nullptr);  // no clock without a deadline
    clock.advance(24h * 365);
    CHECK_FALSE(ctx.cancelled());
    ctx.tighten_deadline(bulwark::TimePoint::max(), &clock);  // no earlier than none: no change
    CHECK_FALSE(ctx.has_deadline());
}

TEST_CASE("A child context sees its parent's cancellation but not the reverse", "[context]") {
    bulwark::ManualClock clock;
    bulwark::Context parent("op");
    parent.set_deadline(clock.now() + 2s);
    parent.set_priority(bulwark::Priority::critical);
    bulwark::Context child = bulwark::Context::child_of(parent);
    CHECK(child.operation() == "op");
    CHECK(child.deadline() == parent.deadline());
    CHECK(child.priority() == bulwark::Priority::critical);
    CHECK(child.parent() == &parent);

    child.cancel();
    CHECK(child.cancelled());
    CHECK_FALSE(parent.cancelled());

    bulwark::Context sibling = bulwark::Context::child_of(parent);
    parent.cancel();
    CHECK(sibling.cancelled());
}

TEST_CASE("Context can be cancelled from another thread", "[context][concurrency]") {
    bulwark::Context ctx;
    std::thread canceller([&ctx] { ctx.cancel(); });
    canceller.join();
    CHECK(ctx.cancelled());
}

#include <vector>

#include <bulwark/degradation.hpp>
#include <bulwark/load_shedder.hpp>
#include <bulwark/pipeline.hpp>

#include "catch.hpp"
#include "support.hpp"

using bulwark::DegradationLevel;
using bulwark::Priority;

namespace {
bool passes(bulwark::LoadShedder& shedder, Priority priority) {
    bulwark::Context ctx;
    ctx.set_priority(priority);
    return shedder.try_execute([] { return 1; }, ctx).has_value();
}
}  // namespace

TEST_CASE("calls pass while the service is below the shedding level", "[load_shedder]") {
    bulwark::ManualClock clock;
    bulwark::Degradation degradation(clock);
    bulwark::LoadShedder shedder(degradation, DegradationLevel::severe);
    CHECK(shedder.execute([] { return 1; }) == 1);
    degradation.set_level(DegradationLevel::moderate, "busy");
    CHECK(passes(shedder, Priority::normal));
    CHECK(shedder.stats().passed == 2);
}

TEST_CASE("from the shedding level calls fail with LoadShedError", "[load_shedder]") {
    bulwark::ManualClock clock;
    bulwark::Degradation degradation(clock);
    bulwark::LoadShedder shedder(degradation, DegradationLevel::severe);
    degradation.set_level(DegradationLevel::severe, "overload");
    int ran = 0;
    CHECK_THROWS_AS(shedder.execute([&] { return ++ran; }), bulwark::LoadShedError);
    CHECK_THROWS_AS(shedder.execute([&] { return ++ran; }), bulwark::RejectedError);
    CHECK(ran == 0);
    CHECK(shedder.stats().shed == 2);
}

TEST_CASE("a named shedder's rejections carry its name as their source", "[load_shedder]") {
    bulwark::ManualClock clock;
    bulwark::Degradation degradation(clock);
    bulwark::LoadShedder front("front", degradation, DegradationLevel::severe);
    CHECK(front.name() == "front");
    degradation.set_level(DegradationLevel::severe, "overload");
    auto shed = front.try_execute([] { return 1; });
    REQUIRE(shed.has_error());
    CHECK(bulwark_test::rejection_source(shed.error()) == "front");
    CHECK_THROWS_WITH(shed.rethrow_if_error(),
                      "load shedder 'front': the service is degraded (shedding from level severe)");
}

TEST_CASE("lower priorities are shed first, critical calls never by level", "[load_shedder]") {
    bulwark::ManualClock clock;
    bulwark::Degradation degradation(clock);
    bulwark::LoadShedder shedder(degradation, DegradationLevel::severe);
    struct Row {
        DegradationLevel level;
        bool low, normal, high, critical;
    };
    const std::vector<Row> table{
        {DegradationLevel::normal, true, true, true, true},
        {DegradationLevel::minor, true, true, true, true},
        {DegradationLevel::moderate, false, true, true, true},
        {DegradationLevel::severe, false, false, true, true},
        {DegradationLevel::critical, false, false, false, true},
    };
    for (const Row& row : table) {
        degradation.set_level(row.level, "test");
        INFO(bulwark::to_string(row.level));
        CHECK(passes(shedder, Priority::low) == row.low);
        CHECK(passes(shedder, Priority::normal) == row.normal);
        CHECK(passes(shedder, Priority::high) == row.high);
        CHECK(passes(shedder, Priority::critical) == row.critical);
    }
}

TEST_CASE("without priorities every call is shed alike", "[load_shedder]") {
    bulwark::ManualClock clock;
    bulwark::Degradation degradation(clock);
    bulwark::LoadShedderOptions o;
    o.shed_at = DegradationLevel::moderate;
    o.by_priority = false;
    bulwark::LoadShedder shedder(degradation, o);
    degradation.set_level(DegradationLevel::moderate, "x");
    CHECK_FALSE(passes(shedder, Priority::critical));
}

TEST_CASE("a predicate can shed too, and listeners hear every shed call", "[load_shedder]") {
    bulwark::ManualClock clock;
    bulwark::Degradation degradation(clock);
    bulwark::LoadShedderOptions o;
    int queue_length = 0;
    o.shed_if = [&](const bulwark::Context&) {
        return queue_length > 100;
    };
    bulwark::LoadShedder shedder(degradation, o);
    std::vector<bulwark::ShedEvent> events;
    shedder.on_shed([&](const bulwark::ShedEvent& e) { events.push_back(e); });
    CHECK(passes(shedder, Priority::normal));
    queue_length = 500;
    CHECK_FALSE(passes(shedder, Priority::normal));
    bulwark::Context ctx;
    CHECK(shedder.should_shed(ctx));
    REQUIRE(events.size() == 1);
    CHECK(events[0].by_predicate);
    CHECK(events[0].level == DegradationLevel::normal);
}

TEST_CASE("a removed on_shed listener hears no more shed calls", "[load_shedder]") {
    bulwark::ManualClock clock;
    bulwark::Degradation degradation(clock);
    degradation.set_level(DegradationLevel::severe, "test");
    bulwark::LoadShedder shedder(degradation, DegradationLevel::severe);
    int heard = 0;
    const bulwark::ListenerId id = shedder.on_shed([&](const bulwark::ShedEvent&) { ++heard; });
    CHECK_FALSE(passes(shedder, Priority::normal));
    CHECK(shedder.remove_listener(id));
    CHECK_FALSE(shedder.remove_listener(id));
    CHECK_FALSE(passes(shedder, Priority::normal));
    CHECK(heard == 1);
}

TEST_CASE("shedding at normal is refused", "[load_shedder]") {
    bulwark::ManualClock clock;
    bulwark::Degradation degradation(clock);
    CHECK_THROWS_WITH(bulwark::LoadShedder(degradation, DegradationLevel::normal),
                      "LoadShedderOptions.shed_at must be above normal (or every call would be "
                      "shed), got normal");
}

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <bulwark/degradation.hpp>
#include <bulwark/health.hpp>
#include <bulwark/resources.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using bulwark::Degradation;
using bulwark::DegradationLevel;

TEST_CASE("a new Degradation is normal and every feature is enabled", "[degradation]") {
    bulwark::ManualClock clock;
    Degradation d(clock);
    CHECK(d.level() == DegradationLevel::normal);
    CHECK(d.enabled("recommendations", DegradationLevel::minor));
    CHECK_FALSE(d.overridden());
}

TEST_CASE("set_level overrides and feature gates follow it", "[degradation]") {
    bulwark::ManualClock clock;
    Degradation d(clock);
    d.set_level(DegradationLevel::moderate, "maintenance");
    CHECK(d.level() == DegradationLevel::moderate);
    CHECK(d.reason() == "maintenance");
    CHECK(d.since() == clock.now());
    CHECK(d.overridden());
    CHECK_FALSE(d.enabled("recommendations", DegradationLevel::minor));
    CHECK_FALSE(d.enabled("search", DegradationLevel::moderate));
    CHECK(d.enabled("checkout", DegradationLevel::critical));
}

TEST_CASE("an override holds against automatic readings until cleared", "[degradation]") {
    bulwark::ManualClock clock;
    Degradation d(clock, 10s);
    d.set_level(DegradationLevel::minor, "admin");
    d.observe(DegradationLevel::severe, "db down");
    CHECK(d.level() == DegradationLevel::minor);
    d.clear_override();
    CHECK(d.level() == DegradationLevel::severe);
    CHECK(d.reason() == "db down");
}

TEST_CASE("the automatic level rises at once and falls only after the hold", "[degradation]") {
    bulwark::ManualClock clock;
    Degradation d(clock, 30s);
    d.observe(DegradationLevel::severe, "errors");
    CHECK(d.level() == DegradationLevel::severe);
    d.observe(DegradationLevel::normal, "recovered");
    CHECK(d.level() == DegradationLevel::severe);  // not yet: no flapping
    clock.advance(20s);
    d.observe(DegradationLevel::minor, "mostly recovered");
    clock.advance(10s);
    d.observe(DegradationLevel::normal, "recovered");
    // Lower for 30 s; the highest reading in that time was minor.
    CHECK(d.level() == DegradationLevel::minor);
    clock.advance(30s);
    d.observe(DegradationLevel::normal, "recovered");
    CHECK(d.level() == DegradationLevel::normal);
}

TEST_CASE("a higher reading during the hold restarts it", "[degradation]") {
    bulwark::ManualClock clock;
    Degradation d(clock, 30s);
    d.observe(DegradationLevel::moderate, "slow");
    d.observe(DegradationLevel::normal, "ok");
    clock.advance(20s);
    d.observe(DegradationLevel::moderate, "slow again");
    clock.advance(20s);
    d.observe(DegradationLevel::normal, "ok");
    CHECK(d.level() == DegradationLevel::moderate);  // the hold started again at +40 s
    clock.advance(30s);
    d.observe(DegradationLevel::normal, "ok");
    CHECK(d.level() == DegradationLevel::normal);
}

TEST_CASE("listeners hear each change once with its reason", "[degradation]") {
    bulwark::ManualClock clock;
    Degradation d(clock, 0s);
    std::vector<std::string> log;
    d.on_change([&](DegradationLevel from, DegradationLevel to, const std::string& why) {
        log.push_back(std::string(bulwark::to_string(from)) + "->" + bulwark::to_string(to) + ": " +
                      why);
    });
    std::vector<bool> manual;
    d.on_change([&](const bulwark::DegradationChange& c) { manual.push_back(c.manual); });
    d.observe(DegradationLevel::severe, "errors");
    d.observe(DegradationLevel::severe, "errors");  // no change, no event
    d.set_level(DegradationLevel::critical, "admin");
    d.clear_override();
    d.observe(DegradationLevel::normal, "ok");
    CHECK(log == std::vector<std::string>{"normal->severe: errors", "severe->critical: admin",
                                          "critical->severe: errors", "severe->normal: ok"});
    CHECK(manual == std::vector<bool>{false, true, true, false});
}

TEST_CASE("removed change listeners of either form hear no more changes", "[degradation]") {
    bulwark::ManualClock clock;
    Degradation d(clock, 0s);
    int heard = 0;
    const bulwark::ListenerId short_form =
        d.on_change([&](DegradationLevel, DegradationLevel, const std::string&) { ++heard; });
    const bulwark::ListenerId full_form =
        d.on_change([&](const bulwark::DegradationChange&) { ++heard; });
    d.observe(DegradationLevel::severe, "errors");
    CHECK(d.remove_listener(short_form));
    CHECK(d.remove_listener(full_form));
    CHECK_FALSE(d.remove_listener(full_form));
    d.observe(DegradationLevel::normal, "ok");
    CHECK(heard == 2);
}

TEST_CASE("features can be forced on or off whatever the level", "[degradation]") {
    bulwark::ManualClock clock;
    Degradation d(clock);
    d.set_level(DegradationLevel::severe, "incident");
    d.force_feature("checkout", true);
    d.force_feature("banner", false);
    CHECK(d.enabled("checkout", DegradationLevel::minor));
    CHECK_FALSE(d.enabled("recommendations", DegradationLevel::minor));
    d.clear_override();
    CHECK_FALSE(d.enabled("banner", DegradationLevel::critical));
    d.clear_feature("banner");
    CHECK(d.enabled("banner", DegradationLevel::critical));
}

TEST_CASE("invalid degradation arguments are refused", "[degradation]") {
    bulwark::ManualClock clock;
    CHECK_THROWS_WITH(Degradation(clock, -1s), "Degradation.hold must be >= 0, got -1s");
    Degradation d(clock);
    CHECK_THROWS_AS(d.on_change(Degradation::ChangeListener{}), std::invalid_argument);
    CHECK_THROWS_AS(d.on_change(std::function<void(const bulwark::DegradationChange&)>{}),
                    std::invalid_argument);
}

TEST_CASE("readers see only levels that were set while writers flip it",
          "[degradation][concurrency]") {
    bulwark::ManualClock clock;
    Degradation d(clock, 0s);
    std::atomic<bool> stop{false};
    std::atomic<int> impossible{0};
    std::vector<std::thread> readers;
    for (int t = 0; t < 3; ++t) {
        readers.emplace_back([&] {
            while (!stop.load()) {
                const DegradationLevel l = d.level();
                if (l != DegradationLevel::normal && l != DegradationLevel::severe) {
                    impossible.fetch_add(1);
                }
                // The gate agrees with the level it read or a newer one.
                (void)d.enabled("x", DegradationLevel::moderate);
            }
        });
    }
    for (int i = 0; i < 2000; ++i) {
        d.observe(i % 2 == 0 ? DegradationLevel::severe : DegradationLevel::normal, "flip");
    }
    stop = true;
    for (auto& t : readers) {
        t.join();
    }
    CHECK(impossible.load() == 0);
    CHECK(d.level() == DegradationLevel::normal);
}

TEST_CASE("follow() derives the level from health checks, with hysteresis", "[degradation]") {
    bulwark::ManualClock clock;
    bulwark::HealthMonitor monitor(clock);
    bulwark::ResourceManager resources(clock);
    bool db_up = true;
    monitor.add_check({"database", [&] { return db_up; }, 10s, 0s, /*critical*/ true});
    Degradation d(clock, 30s);
    std::vector<DegradationLevel> levels;
    d.on_change(
        [&](DegradationLevel, DegradationLevel to, const std::string&) { levels.push_back(to); });
    d.follow(monitor, resources);

    monitor.run_due();
    CHECK(d.level() == DegradationLevel::normal);
    db_up = false;
    clock.advance(10s);
    monitor.run_due();
    CHECK(d.level() == DegradationLevel::severe);
    CHECK(d.reason() == "health unhealthy (database unhealthy)");

    db_up = true;
    clock.advance(10s);
    monitor.run_due();
    CHECK(d.level() == DegradationLevel::severe);  // must hold for 30 s before it falls
    clock.advance(20s);
    monitor.run_due();
    CHECK(d.level() == DegradationLevel::severe);
    clock.advance(10s);
    monitor.run_due();
    CHECK(d.level() == DegradationLevel::normal);
    CHECK(levels ==
          std::vector<DegradationLevel>{DegradationLevel::severe, DegradationLevel::normal});
}

TEST_CASE("follow() raises the level when a resource runs short", "[degradation]") {
    bulwark::ManualClock clock;
    bulwark::HealthMonitor monitor(clock);
    bulwark::ResourceManager resources(clock);
    resources.add_quota("llm_tokens", 1000, 1min, {70, 90});
    Degradation d(clock, 0s);
    d.follow(monitor, resources);
    resources.record_usage("llm_tokens", 750);
    CHECK(d.level() == DegradationLevel::minor);
    resources.record_usage("llm_tokens", 200);
    CHECK(d.level() == DegradationLevel::moderate);
    CHECK(d.reason() == "health healthy; resources critical (llm_tokens)");
    CHECK_FALSE(d.enabled("recommendations", DegradationLevel::moderate));
    resources.record_usage("llm_tokens", 50);
    CHECK(d.level() == DegradationLevel::severe);
}

TEST_CASE("follow() takes a custom mapping, and unfollow() stops following", "[degradation]") {
    bulwark::ManualClock clock;
    bulwark::HealthMonitor monitor(clock);
    bulwark::ResourceManager resources(clock);
    bulwark::HealthStatus status = bulwark::HealthStatus::degraded;
    monitor.add_check({"search", [&] { return status; }, 1s, 0s});
    Degradation d(clock, 0s);
    d.follow(monitor, resources, [](bulwark::HealthStatus health, bulwark::ResourceStatus) {
        return health == bulwark::HealthStatus::degraded ? DegradationLevel::critical
                                                         : DegradationLevel::normal;
    });
    monitor.run_due();
    CHECK(d.level() == DegradationLevel::critical);
    d.unfollow();
    status = bulwark::HealthStatus::healthy;
    clock.advance(1s);
    monitor.run_due();
    CHECK(d.level() == DegradationLevel::critical);
    d.refresh();  // not following: nothing to read
    CHECK(d.level() == DegradationLevel::critical);
    CHECK_THROWS_WITH(d.follow(monitor, resources, nullptr),
                      "Degradation::follow: the mapping is empty");
}

TEST_CASE("several Degradations can follow the same sources", "[degradation]") {
    bulwark::ManualClock clock;
    bulwark::HealthMonitor monitor(clock);
    bulwark::ResourceManager resources(clock);
    double memory = 10;
    resources.add_gauge(
        "memory", [&] { return memory; }, {80, 95}, 0s);
    Degradation first(clock, 0s);
    Degradation second(clock, 0s);
    first.follow(monitor, resources);
    second.follow(monitor, resources);
    memory = 99;
    first.refresh();  // finds the change; the second hears of it from the resource manager
    CHECK(first.level() == DegradationLevel::moderate);
    CHECK(second.level() == DegradationLevel::moderate);
}

TEST_CASE("follow() reads the sources at once, and a listener may read the Degradation",
          "[degradation]") {
    bulwark::ManualClock clock;
    bulwark::HealthMonitor monitor(clock);
    bulwark::ResourceManager resources(clock);
    resources.add_quota("tokens", 100, 1min);
    resources.record_usage("tokens", 96);
    Degradation d(clock, 0s);
    std::string seen;
    d.on_change([&](DegradationLevel, DegradationLevel, const std::string&) {
        seen = d.reason();  // runs outside the Degradation's locks
        d.refresh();        // and may even ask for a new reading
    });
    d.follow(monitor, resources);
    CHECK(d.level() == DegradationLevel::moderate);
    CHECK(seen == "health healthy; resources critical (tokens)");
}

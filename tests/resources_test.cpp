#include <atomic>
#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <bulwark/resources.hpp>
#include <bulwark/system.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using bulwark::ResourceManager;
using bulwark::ResourceStatus;

TEST_CASE("a gauge's reading is classified against its thresholds", "[resources]") {
    bulwark::ManualClock clock;
    ResourceManager rm(clock);
    std::optional<double> value = 10.0;
    rm.add_gauge(
        "memory", [&] { return value; }, {80, 95}, 0s);
    CHECK(rm.status("memory") == ResourceStatus::healthy);
    value = 80.0;
    CHECK(rm.status("memory") == ResourceStatus::warning);
    value = 95.0;
    CHECK(rm.status("memory") == ResourceStatus::critical);
    CHECK_FALSE(rm.can_use("memory"));
    value = 100.0;
    CHECK(rm.status("memory") == ResourceStatus::exhausted);
    value = std::nullopt;
    auto [status, percent] = rm.check("memory");
    CHECK(status == ResourceStatus::unknown);
    CHECK(std::isnan(percent));
    CHECK(rm.can_use("memory"));  // unknown does not block
}

TEST_CASE("a gauge that throws or returns NaN reads as unknown", "[resources]") {
    bulwark::ManualClock clock;
    ResourceManager rm(clock);
    rm.add_gauge("disk", []() -> double { throw std::runtime_error("statvfs failed"); });
    rm.add_gauge("cpu", [] { return std::nan(""); });
    CHECK(rm.status("disk") == ResourceStatus::unknown);
    CHECK(rm.status("cpu") == ResourceStatus::unknown);
}

TEST_CASE("a gauge is read at most once per cache TTL", "[resources]") {
    bulwark::ManualClock clock;
    ResourceManager rm(clock);
    int reads = 0;
    double value = 50.0;
    rm.add_gauge(
        "memory",
        [&] {
            ++reads;
            return value;
        },
        {}, 2s);
    CHECK(rm.check("memory").percent == 50.0);
    value = 99.0;
    CHECK(rm.can_use("memory"));  // the cached reading
    clock.advance(1999ms);
    CHECK(rm.check("memory").percent == 50.0);
    CHECK(reads == 1);
    clock.advance(1ms);
    CHECK(rm.check("memory").percent == 99.0);
    CHECK_FALSE(rm.can_use("memory"));
    CHECK(reads == 2);
}

TEST_CASE("a quota counts usage over a rolling window", "[resources]") {
    bulwark::ManualClock clock;
    ResourceManager rm(clock);
    rm.add_quota("llm_tokens", 100000, 1min, {70, 90});
    auto [status, percent] = rm.record_usage("llm_tokens", 50000);
    CHECK(status == ResourceStatus::healthy);
    CHECK(percent == Approx(50.0));
    clock.advance(30s);
    CHECK(rm.record_usage("llm_tokens", 25000).status == ResourceStatus::warning);
    CHECK(rm.record_usage("llm_tokens", 15000).status == ResourceStatus::critical);
    CHECK(rm.record_usage("llm_tokens", 10000).status == ResourceStatus::exhausted);
    clock.advance(30s);  // the first 50000 leave the window
    auto after = rm.check("llm_tokens");
    CHECK(after.percent == Approx(50.0));
    CHECK(after.status == ResourceStatus::healthy);
    clock.advance(30s);
    CHECK(rm.check("llm_tokens").percent == Approx(0.0));
}

TEST_CASE("try_consume records only what fits in the quota", "[resources]") {
    bulwark::ManualClock clock;
    ResourceManager rm(clock);
    rm.add_quota("sms_per_hour", 10, 1h);
    int sent = 0;
    for (int i = 0; i < 15; ++i) {
        sent += rm.try_consume("sms_per_hour", 1) ? 1 : 0;
    }
    CHECK(sent == 10);
    CHECK(rm.status("sms_per_hour") == ResourceStatus::exhausted);
    CHECK_FALSE(rm.try_consume("sms_per_hour", 0.5));
    clock.advance(1h);
    CHECK(rm.try_consume("sms_per_hour", 10));
}

TEST_CASE("alternative() names the first alternative that is not critical", "[resources]") {
    bulwark::ManualClock clock;
    ResourceManager rm(clock);
    rm.add_quota("gpt-4", 100, 1min);
    rm.add_quota("claude", 100, 1min);
    rm.set_alternatives("gpt-4", {"claude", "small-model"});
    CHECK(rm.alternative("gpt-4") == "claude");
    CHECK(rm.choose("gpt-4") == "gpt-4");
    rm.record_usage("gpt-4", 96);
    CHECK(rm.choose("gpt-4") == "claude");
    rm.record_usage("claude", 100);
    CHECK(rm.alternative("gpt-4") == "small-model");  // not registered: usable
    rm.set_alternatives("gpt-4", {"claude"});
    CHECK(rm.alternative("gpt-4") == std::nullopt);
    CHECK(rm.choose("gpt-4") == std::nullopt);
    CHECK(rm.alternative("no-alternatives") == std::nullopt);
}

TEST_CASE("change listeners hear each change of status once", "[resources]") {
    bulwark::ManualClock clock;
    ResourceManager rm(clock);
    rm.add_quota("api", 100, 1min);
    std::vector<std::pair<ResourceStatus, ResourceStatus>> changes;
    rm.on_change([&](const bulwark::ResourceChange& c) {
        CHECK(c.name == "api");
        changes.emplace_back(c.from, c.to);
    });
    rm.record_usage("api", 10);
    rm.record_usage("api", 10);
    rm.record_usage("api", 70);
    rm.record_usage("api", 1);
    clock.advance(1min);
    rm.check("api");
    REQUIRE(changes.size() == 3);
    CHECK(changes[0] == std::make_pair(ResourceStatus::unknown, ResourceStatus::healthy));
    CHECK(changes[1] == std::make_pair(ResourceStatus::healthy, ResourceStatus::warning));
    CHECK(changes[2] == std::make_pair(ResourceStatus::warning, ResourceStatus::healthy));
}

TEST_CASE("a removed change listener hears no more changes", "[resources]") {
    bulwark::ManualClock clock;
    ResourceManager rm(clock);
    rm.add_quota("api", 100, 1min);
    int heard = 0;
    const bulwark::ListenerId id = rm.on_change([&](const bulwark::ResourceChange&) { ++heard; });
    rm.record_usage("api", 10);  // unknown -> healthy
    CHECK(rm.remove_listener(id));
    CHECK_FALSE(rm.remove_listener(id));
    rm.record_usage("api", 80);  // healthy -> warning, unheard
    CHECK(heard == 1);
}

TEST_CASE("the report summarises status, use and history, and renders JSON", "[resources]") {
    bulwark::ManualClock clock;
    ResourceManager rm(clock);
    rm.add_gauge("memory", [] { return 42.0; });
    rm.add_quota("tokens", 1000, 1min, {50, 90});
    rm.set_alternatives("tokens", {"spare\ntokens"});
    rm.record_usage("tokens", 600);
    rm.record_usage("tokens", 350);
    clock.advance(1min);
    rm.record_usage("tokens", 100);
    const bulwark::ResourceReport report = rm.report();
    CHECK(report.worst == ResourceStatus::healthy);
    REQUIRE(report.resources.size() == 2);
    const bulwark::ResourceReading& tokens = report.resources[1];
    CHECK(tokens.name == "tokens");
    CHECK(tokens.quota);
    CHECK(tokens.used == Approx(100));
    CHECK(tokens.peak_percent == Approx(95));
    CHECK(tokens.times_warning == 1);
    CHECK(tokens.times_critical == 1);
    const std::string json = report.to_json();
    CHECK(json.rfind("{\"status\":\"healthy\",\"resources\":[{\"name\":\"memory\",\"kind\":"
                     "\"gauge\",\"status\":\"healthy\",\"percent\":42,",
                     0) == 0);
    CHECK(json.find("\"alternatives\":[\"spare\\ntokens\"]") != std::string::npos);
    CHECK(json.find("\"used\":100,\"limit\":1000,\"window_s\":60") != std::string::npos);
}

TEST_CASE("invalid resources and usage are rejected with the field named", "[resources]") {
    bulwark::ManualClock clock;
    ResourceManager rm(clock);
    CHECK_THROWS_WITH(rm.add_quota("q", 0, 1min),
                      "ResourceManager::add_quota(q).limit must be > 0, got 0");
    CHECK_THROWS_WITH(rm.add_quota("q", 10, 0s),
                      "ResourceManager::add_quota(q).window must be > 0, got 0s");
    CHECK_THROWS_WITH(rm.add_quota("q", 10, 1s, {90, 80}),
                      "ResourceThresholds(q).critical must be in [warning, 100], got 80");
    CHECK_THROWS_WITH(rm.add_quota("q", 10, 1s, {-1, 80}),
                      "ResourceThresholds(q).warning must be in [0, 100], got -1");
    CHECK_THROWS_WITH(rm.add_quota("", 10, 1s),
                      "ResourceManager: a resource name must not be empty");
    double (*null_gauge)() = nullptr;
    CHECK_THROWS_WITH(rm.add_gauge("g", null_gauge),
                      "ResourceManager::add_gauge(g): the gauge is empty");
    CHECK_THROWS_WITH(rm.add_gauge(
                          "g", [] { return 1.0; }, {}, -1s),
                      "ResourceManager::add_gauge(g).cache_ttl must be >= 0, got -1s");
    rm.add_gauge("g", [] { return 1.0; });
    rm.add_quota("q", 10, 1s);
    CHECK_THROWS_WITH(rm.add_quota("q", 10, 1s),
                      "ResourceManager: a resource named 'q' already exists");
    CHECK_THROWS_WITH(rm.record_usage("g", 1), "ResourceManager: 'g' is a gauge, not a quota");
    CHECK_THROWS_WITH(rm.record_usage("q", -1),
                      "ResourceManager::record_usage(q).amount must be >= 0, got -1");
    CHECK_THROWS_WITH(rm.try_consume("q", -1),
                      "ResourceManager::try_consume(q).amount must be >= 0, got -1");
    CHECK_THROWS_WITH(rm.check("nope"), "ResourceManager: no resource named 'nope'");
}

TEST_CASE("the built-in system gauges read this machine", "[resources]") {
#if defined(__linux__)
    for (const auto& reading :
         {bulwark::system::memory_used_percent(), bulwark::system::cpu_used_percent(),
          bulwark::system::disk_used_percent("/"), bulwark::system::process_rss_percent()}) {
        REQUIRE(reading.has_value());
        CHECK(*reading >= 0.0);
        CHECK(*reading <= 100.0);
    }
    CHECK(bulwark::system::process_rss_bytes().value_or(0) > 0);
    CHECK_FALSE(bulwark::system::disk_used_percent("/no/such/path").has_value());
#endif
    ResourceManager rm;
    rm.add_gauge("memory", [] { return bulwark::system::memory_used_percent(); }, {80, 95});
    CHECK(rm.status("memory") != ResourceStatus::exhausted);
}

TEST_CASE("readers and writers share a manager across threads", "[.stress][resources]") {
    bulwark::ManualClock clock;
    ResourceManager rm(clock);
    std::atomic<int> gauge_value{10};
    rm.add_gauge(
        "memory", [&] { return static_cast<double>(gauge_value.load()); }, {}, 1ms);
    rm.add_quota("tokens", 1e9, 1h);
    std::atomic<int> changes{0};
    rm.on_change([&](const bulwark::ResourceChange&) { ++changes; });
    constexpr int threads = 4;
    constexpr int per_thread = 20000;
    std::atomic<int> consumed{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            for (int i = 0; i < per_thread; ++i) {
                if (t == 0 && i % 100 == 0) {
                    clock.advance(1ms);
                    gauge_value.store(i % 200 == 0 ? 97 : 10);
                }
                (void)rm.can_use("memory");
                if (rm.try_consume("tokens", 1)) {
                    ++consumed;
                }
                if (i % 1000 == 0) {
                    (void)rm.report();
                }
            }
        });
    }
    for (auto& th : pool) {
        th.join();
    }
    CHECK(consumed.load() == threads * per_thread);
    CHECK(rm.check("tokens").percent == Approx(100.0 * threads * per_thread / 1e9));
    CHECK(changes.load() > 0);
}

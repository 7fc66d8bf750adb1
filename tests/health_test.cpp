#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <bulwark/health.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using bulwark::HealthCheck;
using bulwark::HealthCheckResult;
using bulwark::HealthMonitor;
using bulwark::HealthStatus;

namespace health_test {

// A door a check waits behind, so a test decides when a "stuck" check returns.
class Gate {
public:
    void wait() {
        std::unique_lock<std::mutex> lock(mutex_);
        entered_ = true;
        cv_.notify_all();
        cv_.wait(lock, [&] { return open_; });
    }
    void open() {
        std::lock_guard<std::mutex> lock(mutex_);
        open_ = true;
        cv_.notify_all();
    }
    // Blocks until a check is waiting behind the gate.
    void wait_entered() {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return entered_; });
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    bool entered_ = false;
    bool open_ = false;
};

// Spins (yielding) until `done()`; a guard against hangs, not a timing assertion.
template <class Pred>
bool eventually(Pred done) {
    const auto give_up = std::chrono::steady_clock::now() + 30s;
    while (!done()) {
        if (std::chrono::steady_clock::now() > give_up) {
            return false;
        }
        std::this_thread::yield();
    }
    return true;
}

HealthCheck check(std::string name, bulwark::HealthProbe probe, bool critical = false,
                  bulwark::Duration timeout = 10s) {
    HealthCheck c;
    c.name = std::move(name);
    c.probe = std::move(probe);
    c.interval = 60s;
    c.timeout = timeout;
    c.critical = critical;
    return c;
}

}  // namespace health_test

using health_test::check;
using health_test::eventually;
using health_test::Gate;

TEST_CASE("a check runs on run_due and its result, time and response time are recorded",
          "[health]") {
    bulwark::ManualClock clock;
    HealthMonitor monitor(clock);
    monitor.add_check({"database",
                       [&] {
                           clock.advance(5ms);
                           return true;
                       },
                       60s, 10s, true});
    CHECK(monitor.status("database") == HealthStatus::unknown);
    CHECK(monitor.run_due() == 1);
    const HealthCheckResult r = monitor.history("database").back();
    CHECK(r.status == HealthStatus::healthy);
    CHECK(r.name == "database");
    CHECK(r.critical);
    CHECK(r.response_time == 5ms);
    CHECK(r.checked_at == clock.now());
    CHECK(monitor.status() == HealthStatus::healthy);
}

TEST_CASE("checks may return bool, HealthStatus or a full result with details", "[health]") {
    bulwark::ManualClock clock;
    HealthMonitor monitor(clock);
    monitor.add_check(check("flag", [] { return false; }));
    monitor.add_check(check("status", [] { return HealthStatus::degraded; }));
    monitor.add_check(check("full", [] {
        HealthCheckResult r = HealthCheckResult::degraded("replica lag 4s");
        r.details["lag_s"] = "4";
        return r;
    }));
    monitor.run_due();
    CHECK(monitor.status("flag") == HealthStatus::unhealthy);
    CHECK(monitor.history("flag").back().message == "the check returned false");
    CHECK(monitor.status("status") == HealthStatus::degraded);
    const HealthCheckResult full = monitor.history("full").back();
    CHECK(full.message == "replica lag 4s");
    CHECK(full.details.at("lag_s") == "4");
}

TEST_CASE("a check that throws is unhealthy with the exception's message", "[health]") {
    bulwark::ManualClock clock;
    HealthMonitor monitor(clock);
    monitor.add_check(
        check("db", []() -> bool { throw std::runtime_error("connection refused"); }));
    monitor.run_due();
    const HealthCheckResult r = monitor.history("db").back();
    CHECK(r.status == HealthStatus::unhealthy);
    CHECK(r.message == "the check threw: connection refused");
}

TEST_CASE("checks run when their interval has passed and not before", "[health]") {
    bulwark::ManualClock clock;
    HealthMonitor monitor(clock);
    int runs = 0;
    monitor.add_check({"cache",
                       [&] {
                           ++runs;
                           return true;
                       },
                       30s, 0s});
    CHECK(monitor.run_due() == 1);
    CHECK(runs == 1);
    monitor.run_due();
    CHECK(runs == 1);
    clock.advance(29s);
    monitor.run_due();
    CHECK(runs == 1);
    clock.advance(1s);
    monitor.run_due();
    CHECK(runs == 2);
}

TEST_CASE("run_now runs a check whatever its schedule", "[health]") {
    bulwark::ManualClock clock;
    HealthMonitor monitor(clock);
    int runs = 0;
    monitor.add_check(check("queue", [&] { return ++runs < 2; }));
    CHECK(monitor.run_now("queue").status == HealthStatus::healthy);
    CHECK(monitor.run_now("queue").status == HealthStatus::unhealthy);
    CHECK(runs == 2);
}

TEST_CASE("overall status: unknown until all ran, critical unhealthy wins, else degraded",
          "[health]") {
    bulwark::ManualClock clock;
    HealthMonitor monitor(clock);
    CHECK(monitor.status() == HealthStatus::healthy);  // nothing to be unhealthy about
    HealthStatus db = HealthStatus::healthy;
    HealthStatus cache = HealthStatus::healthy;
    monitor.add_check(check(
        "db", [&] { return db; }, /*critical*/ true));
    monitor.add_check(check("cache", [&] { return cache; }));
    CHECK(monitor.status() == HealthStatus::unknown);
    monitor.run_now("db");
    CHECK(monitor.status() == HealthStatus::unknown);
    monitor.run_now("cache");
    CHECK(monitor.status() == HealthStatus::healthy);

    cache = HealthStatus::unhealthy;
    monitor.run_now("cache");
    CHECK(monitor.status() == HealthStatus::degraded);
    CHECK(monitor.report().ready);

    db = HealthStatus::degraded;
    cache = HealthStatus::healthy;
    monitor.run_now("db");
    monitor.run_now("cache");
    CHECK(monitor.status() == HealthStatus::degraded);

    db = HealthStatus::unhealthy;
    cache = HealthStatus::unhealthy;
    monitor.run_now("db");
    monitor.run_now("cache");
    CHECK(monitor.status() == HealthStatus::unhealthy);
    CHECK_FALSE(monitor.report().ready);
    CHECK(monitor.report().http_status() == 503);
}

TEST_CASE("the alert callback fires once per change, not on every run", "[health]") {
    bulwark::ManualClock clock;
    HealthMonitor monitor(clock);
    bool up = true;
    monitor.add_check(check("db", [&] { return up; }));
    std::vector<std::pair<HealthStatus, HealthStatus>> alerts;
    int runs = 0;
    monitor.on_change(
        [&](const HealthCheckResult& r) { alerts.emplace_back(r.previous, r.status); });
    monitor.on_run([&](const HealthCheckResult&) { ++runs; });
    std::vector<HealthStatus> overall;
    monitor.on_overall_change(
        [&](const bulwark::HealthStatusChange& c) { overall.push_back(c.to); });

    for (int i = 0; i < 3; ++i) {
        monitor.run_now("db");
    }
    up = false;
    for (int i = 0; i < 3; ++i) {
        monitor.run_now("db");
    }
    up = true;
    monitor.run_now("db");

    CHECK(runs == 7);
    REQUIRE(alerts.size() == 3);
    CHECK(alerts[0] == std::make_pair(HealthStatus::unknown, HealthStatus::healthy));
    CHECK(alerts[1] == std::make_pair(HealthStatus::healthy, HealthStatus::unhealthy));
    CHECK(alerts[2] == std::make_pair(HealthStatus::unhealthy, HealthStatus::healthy));
    CHECK(overall == std::vector<HealthStatus>{HealthStatus::healthy, HealthStatus::degraded,
                                               HealthStatus::healthy});
}

TEST_CASE("removed monitor listeners hear no more runs or changes", "[health]") {
    bulwark::ManualClock clock;
    HealthMonitor monitor(clock);
    bool up = true;
    monitor.add_check(check("db", [&] { return up; }));
    int heard = 0;
    const bulwark::ListenerId change =
        monitor.on_change([&](const HealthCheckResult&) { ++heard; });
    const bulwark::ListenerId run = monitor.on_run([&](const HealthCheckResult&) { ++heard; });
    const bulwark::ListenerId overall =
        monitor.on_overall_change([&](const bulwark::HealthStatusChange&) { ++heard; });
    monitor.run_now("db");  // one run, one change, one overall change
    CHECK(heard == 3);
    CHECK(monitor.remove_listener(change));
    CHECK(monitor.remove_listener(run));
    CHECK(monitor.remove_listener(overall));
    CHECK_FALSE(monitor.remove_listener(run));
    up = false;
    monitor.run_now("db");
    CHECK(heard == 3);
}

TEST_CASE("history keeps the last results per check, oldest first", "[health]") {
    bulwark::ManualClock clock;
    HealthMonitor monitor(clock);
    int n = 0;
    HealthCheck c =
        check("counter", [&] { return HealthCheckResult::healthy(std::to_string(++n)); });
    c.history = 3;
    monitor.add_check(std::move(c));
    for (int i = 0; i < 5; ++i) {
        monitor.run_now("counter");
    }
    const auto history = monitor.history("counter");
    REQUIRE(history.size() == 3);
    CHECK(history[0].message == "3");
    CHECK(history[1].message == "4");
    CHECK(history[2].message == "5");
    CHECK(monitor.report().checks[0].runs == 5);
}

TEST_CASE("a check that overruns its timeout is unhealthy and does not hold up other checks",
          "[health]") {
    bulwark::ManualClock clock;
    HealthMonitor monitor(clock);
    Gate gate;
    std::atomic<int> slow_runs{0};
    monitor.add_check(check("slow", [&] {
        ++slow_runs;
        gate.wait();
        return true;
    }));
    monitor.add_check(check("fast", [] { return true; }));

    std::thread runner([&] { monitor.run_due(); });
    gate.wait_entered();
    REQUIRE(eventually([&] { return monitor.status("fast") == HealthStatus::healthy; }));
    clock.advance(10s);  // the slow check's timeout passes
    runner.join();

    HealthCheckResult r = monitor.history("slow").back();
    CHECK(r.status == HealthStatus::unhealthy);
    CHECK(r.timed_out);
    CHECK(r.message == "timed out after 10s");
    CHECK(r.response_time == 10s);

    // While it is stuck it is not started again: the next due run reports it still running.
    clock.advance(60s);
    monitor.run_due();
    CHECK(slow_runs == 1);
    r = monitor.history("slow").back();
    CHECK(r.timed_out);
    CHECK(r.message == "still running 1min after its timeout of 10s");
    CHECK(monitor.report().checks[0].running);

    // Its late result is discarded; the next run after it returns counts again.
    gate.open();
    REQUIRE(eventually([&] { return !monitor.report().checks[0].running; }));
    CHECK(monitor.report().checks[0].late_results == 1);
    CHECK(monitor.status("slow") == HealthStatus::unhealthy);
    CHECK(monitor.run_now("slow").status == HealthStatus::healthy);
    CHECK(slow_runs == 2);
    CHECK(monitor.report().checks[0].timeouts == 1);
}

TEST_CASE("when every check thread is stuck, a due check is reported without running", "[health]") {
    bulwark::ManualClock clock;
    bulwark::HealthMonitorOptions options;
    options.max_check_threads = 1;
    HealthMonitor monitor(options, clock);
    Gate gate;
    monitor.add_check(check("stuck", [&] {
        gate.wait();
        return true;
    }));
    bool other_ran = false;
    monitor.add_check(check("other", [&] { return other_ran = true; }));
    std::thread runner([&] { monitor.run_due(); });
    gate.wait_entered();
    clock.advance(10s);
    runner.join();
    CHECK_FALSE(other_ran);
    CHECK(monitor.history("other").back().message ==
          "not run: all 1 check threads are busy (stuck checks?)");
    gate.open();
    REQUIRE(eventually([&] { return !monitor.report().checks[0].running; }));
    CHECK(monitor.run_now("other").status == HealthStatus::healthy);
}

TEST_CASE("stop() returns while a check is stuck, and the destructor does not wait for it",
          "[health]") {
    bulwark::ManualClock clock;
    auto gate = std::make_shared<Gate>();
    std::atomic<int> fast_runs{0};
    {
        HealthMonitor monitor(clock);
        monitor.add_check(check("stuck", [gate] {
            gate->wait();
            return true;
        }));
        monitor.add_check(check("fast", [&] {
            ++fast_runs;
            return true;
        }));
        monitor.start();
        gate->wait_entered();
        REQUIRE(eventually([&] { return fast_runs.load() == 1; }));

        auto stopped = std::async(std::launch::async, [&] { monitor.stop(); });
        // A hang guard, not a timing check: stop() must return while the check is still stuck.
        REQUIRE(stopped.wait_for(30s) == std::future_status::ready);
        CHECK_FALSE(monitor.running());

        clock.advance(10s);  // past the stuck check's timeout: the destructor leaves it
    }
    gate->open();  // the stuck check returns after its monitor is gone, into state it co-owns
}

TEST_CASE("destroying a monitor while a finished run's listener still runs does not hang",
          "[health]") {
    bulwark::ManualClock clock;
    auto gate = std::make_shared<Gate>();
    auto monitor = std::make_unique<HealthMonitor>(clock);
    monitor->add_check(check(
        "db", [] { return true; }, false, 1s));
    monitor->on_run([gate](const HealthCheckResult&) { gate->wait(); });
    monitor->start();
    gate->wait_entered();  // the run is recorded; its listener holds it open
    monitor->stop();
    clock.advance(5s);  // past the run's deadline
    auto destroyed = std::async(std::launch::async, [&] { monitor.reset(); });
    for (int i = 0; i < 100000; ++i) {
        std::this_thread::yield();  // let the destructor start waiting for the run
    }
    gate->open();
    // A hang guard: the destructor must wait for the listener without holding the lock.
    REQUIRE(destroyed.wait_for(30s) == std::future_status::ready);
}

TEST_CASE("the scheduler thread runs checks as they fall due", "[health]") {
    bulwark::ManualClock clock;
    HealthMonitor monitor(clock);
    std::atomic<int> runs{0};
    monitor.add_check({"ping",
                       [&] {
                           ++runs;
                           return true;
                       },
                       5s, 1s});
    // Until a run's result is recorded, moving the clock would time it out.
    const auto recorded = [&](std::uint64_t n) {
        return eventually([&] {
            const auto report = monitor.report();
            return report.checks[0].runs == n && !report.checks[0].running;
        });
    };
    monitor.start();
    monitor.start();  // a second start does nothing
    REQUIRE(recorded(1));
    clock.advance(5s);
    REQUIRE(recorded(2));
    CHECK(runs.load() == 2);
    CHECK(monitor.status("ping") == HealthStatus::healthy);
    monitor.stop();
    clock.advance(5s);
    CHECK(monitor.run_due() == 1);
    CHECK(runs.load() == 3);
}

TEST_CASE("invalid checks and unknown names are rejected with a clear error", "[health]") {
    bulwark::ManualClock clock;
    HealthMonitor monitor(clock);
    using Catch::Matchers::Equals;
    CHECK_THROWS_WITH(monitor.add_check(check("", [] { return true; })),
                      "HealthCheck.name must not be empty");
    bool (*null_probe)() = nullptr;
    CHECK_THROWS_WITH(monitor.add_check(check("db", null_probe)),
                      "HealthCheck.probe of 'db' is empty: give it a callable");
    HealthCheck c = check("db", [] { return true; });
    c.interval = 0s;
    CHECK_THROWS_WITH(monitor.add_check(c), "HealthCheck.interval must be > 0, got 0s");
    c.interval = 1s;
    c.timeout = -1s;
    CHECK_THROWS_WITH(monitor.add_check(c), "HealthCheck.timeout must be >= 0, got -1s");
    c.timeout = 1s;
    c.history = 0;
    CHECK_THROWS_WITH(monitor.add_check(c), "HealthCheck.history must be >= 1, got 0");
    c.history = 1;
    monitor.add_check(c);
    CHECK_THROWS_WITH(monitor.add_check(c), "HealthMonitor: a check named 'db' already exists");
    CHECK_THROWS_WITH(monitor.status("nope"), "HealthMonitor: no check named 'nope'");
    CHECK_THROWS_WITH(monitor.run_now("nope"), "HealthMonitor: no check named 'nope'");
    bulwark::HealthMonitorOptions options;
    options.max_check_threads = 0;
    CHECK_THROWS_WITH(HealthMonitor(options, clock),
                      "HealthMonitorOptions.max_check_threads must be >= 1, got 0");
    CHECK(monitor.remove_check("db"));
    CHECK_FALSE(monitor.remove_check("db"));
}

TEST_CASE("reports render liveness, readiness and detail as JSON", "[health]") {
    bulwark::ManualClock clock;
    HealthMonitor monitor(clock);
    monitor.add_check(check(
        "db", [] { return true; }, /*critical*/ true));
    monitor.add_check(check("mail", [] {
        return HealthCheckResult::unhealthy("smtp said \"no\"\r\nInjected: header");
    }));
    monitor.run_due();
    clock.advance(2s);
    const bulwark::HealthReport report = monitor.report();
    CHECK(report.liveness_json() == "{\"status\":\"up\"}");
    CHECK(report.readiness_json() ==
          "{\"status\":\"ready\",\"checks\":[{\"name\":\"db\",\"status\":\"healthy\"}]}");
    CHECK(report.http_status() == 200);
    const std::string json = report.to_json();
    CHECK(json.rfind("{\"status\":\"degraded\",\"live\":true,\"ready\":true,\"checks\":[", 0) == 0);
    CHECK(json.find("\"message\":\"smtp said \\\"no\\\"\\r\\nInjected: header\"") !=
          std::string::npos);
    CHECK(json.find("\"age_ms\":2000") != std::string::npos);
    CHECK(json.find('\n') == std::string::npos);
}

TEST_CASE("monitor members may be called from many threads while the scheduler runs",
          "[.stress][health]") {
    bulwark::ManualClock clock;
    HealthMonitor monitor(clock);
    std::atomic<int> runs{0};
    std::atomic<bool> up{true};
    for (int i = 0; i < 4; ++i) {
        monitor.add_check({"check" + std::to_string(i),
                           [&] {
                               ++runs;
                               return up.load() ? HealthStatus::healthy : HealthStatus::unhealthy;
                           },
                           1s, i % 2 == 0 ? bulwark::Duration(1h) : bulwark::Duration(0s), i == 0});
    }
    std::atomic<int> changes{0};
    monitor.on_change([&](const HealthCheckResult&) { ++changes; });
    monitor.start();
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 2000; ++i) {
                switch ((i + t) % 4) {
                    case 0:
                        monitor.run_now("check" + std::to_string(i % 4));
                        break;
                    case 1:
                        (void)monitor.report().to_json();
                        break;
                    case 2:
                        (void)monitor.status();
                        break;
                    default:
                        clock.advance(100ms);
                        up.store(i % 3 != 0);
                }
            }
        });
    }
    for (auto& th : threads) {
        th.join();
    }
    monitor.stop();
    std::uint64_t recorded = 0;
    for (const auto& c : monitor.report().checks) {
        recorded += c.runs;
        CHECK(c.timeouts == 0);
        CHECK_FALSE(c.running);
    }
    CHECK(recorded == static_cast<std::uint64_t>(runs.load()));
    CHECK(changes.load() > 0);
}

// Health and degradation: a monitor checks a database and an SMS provider's circuit breaker, a
// resource manager watches memory and an LLM token quota, and a Degradation follows both to turn
// features off as things get worse — then back on, after a hold, as they recover.
//
// It runs on a ManualClock so that a minute of service life takes no time; in a service, drop
// the clock arguments and call monitor.start().
//
// Build and run:  cmake --preset dev && cmake --build --preset dev --target 03_health_degradation
//                 ./build/dev/examples/03_health_degradation
#include <cstdio>
#include <string>

#include <bulwark/bulwark.hpp>

using namespace std::chrono_literals;

namespace {

struct Database {
    bool up = true;
    bool ping() const { return up; }
};

void show_features(const bulwark::Degradation& degradation) {
    const struct {
        const char* name;
        bulwark::DegradationLevel disable_at;
    } features[] = {{"recommendations", bulwark::DegradationLevel::minor},
                    {"search", bulwark::DegradationLevel::moderate},
                    {"notifications", bulwark::DegradationLevel::severe},
                    {"checkout", bulwark::DegradationLevel::critical}};
    std::printf("  level %-8s features:", bulwark::to_string(degradation.level()));
    for (const auto& f : features) {
        std::printf(" %s=%s", f.name, degradation.enabled(f.name, f.disable_at) ? "on" : "off");
    }
    std::printf("\n");
}

}  // namespace

int main() {
    bulwark::ManualClock clock;
    Database db;

    bulwark::CircuitBreakerOptions breaker_options;
    breaker_options.failure_threshold = 3;
    breaker_options.break_duration = 30s;
    bulwark::CircuitBreaker sms("sms-provider", breaker_options, clock);

    bulwark::HealthMonitor monitor(clock);
    monitor.add_check({"database", [&] { return db.ping(); }, 10s, 2s, /*critical*/ true});
    monitor.add_breaker(sms);
    monitor.on_change([](const bulwark::HealthCheckResult& r) {
        std::printf("  alert: %s %s -> %s %s\n", r.name.c_str(), bulwark::to_string(r.previous),
                    bulwark::to_string(r.status), r.message.c_str());
    });

    bulwark::ResourceManager resources(clock);
    resources.add_gauge("memory", [] { return bulwark::system::memory_used_percent(); });
    resources.add_quota("llm_tokens", 100000, 1min, {70, 90});
    resources.set_alternatives("llm_tokens", {"small-model"});

    bulwark::Degradation degradation(clock, /*hold*/ 20s);
    degradation.follow(monitor, resources);
    degradation.on_change(
        [](bulwark::DegradationLevel from, bulwark::DegradationLevel to, const std::string& why) {
            std::printf("  degradation: %s -> %s (%s)\n", bulwark::to_string(from),
                        bulwark::to_string(to), why.c_str());
        });

    std::printf("t=0s: everything works\n");
    monitor.run_due();
    show_features(degradation);
    std::printf("  /health: %s\n", monitor.report().to_json().c_str());

    std::printf("t=10s: heavy LLM use\n");
    clock.advance(10s);
    resources.record_usage("llm_tokens", 92000);
    std::printf("  llm_tokens usable: %s, switch to: %s\n",
                resources.can_use("llm_tokens") ? "yes" : "no",
                resources.choose("llm_tokens").value_or("nothing").c_str());
    show_features(degradation);

    std::printf("t=20s: the SMS provider fails three times and the database goes down\n");
    clock.advance(10s);
    for (int i = 0; i < 3; ++i) {
        (void)sms.try_execute([]() -> int { throw std::runtime_error("503 from provider"); });
    }
    db.up = false;
    monitor.run_due();
    show_features(degradation);
    const bulwark::HealthReport report = monitor.report();
    std::printf("  /health/ready (%d): %s\n", report.http_status(),
                report.readiness_json().c_str());

    std::printf("t=30s..100s: the database is back; the level falls only after the hold\n");
    db.up = true;
    sms.reset();
    for (int second = 30; second <= 100; second += 10) {
        clock.advance(10s);
        monitor.run_due();
        std::printf(" t=%ds", second);
        show_features(degradation);
    }
    std::printf("  /health: %s\n", monitor.report().to_json().c_str());
    return degradation.level() == bulwark::DegradationLevel::normal ? 0 : 1;
}

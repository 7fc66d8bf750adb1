// Outage replay: the email provider outage of the flagship, replayed on virtual time against
// three configurations, compared side by side and drawn as SVG timelines.
//
// The provider answers in about 80 ms, then from 2:00 to 5:00 every call fails with a 503 after
// 2.5 s (as in examples/notification_delivery), then it recovers. 200 notifications a second
// arrive (Poisson) from 64 callers for 8 minutes. The three configurations:
//   retry only          3 retries, exponential backoff from 200 ms, no jitter
//   retry + breaker     the same retry around a breaker (5 failures in a row, 10 s break)
//   recommended         fallback (queue to the outbox) -> retry (2 retries, full jitter, a
//                       retry budget, never on an open breaker) -> breaker -> timeout 1 s
// Each run is the library's own policies on the lab's clock (bulwark/outage_lab.hpp): a few
// seconds of CPU for 8 minutes of traffic.
//
// Usage: outage_replay [output-dir] [--scenario FILE.json] [--trace FILE.csv]
//   output-dir (default: the current directory) receives outage-<configuration>.svg and .csv
//   for each configuration, what-if.md and scenario.json. --scenario replays a scenario of your
//   own (the JSON of docs/outage_lab.md; its first dependency is the provider); --trace replaces
//   the provider's phases by a recorded trace ("timestamp_ms,latency_ms,outcome").
// Exit code: with the built-in scenario, 0 when the recommended configuration does what it
// should (checked below); with yours, 0 when it ran.
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include <bulwark/bulwark.hpp>
#include <bulwark/outage_lab.hpp>
#include <bulwark/outage_report.hpp>
#include <bulwark/outage_scenario_json.hpp>

using namespace std::chrono_literals;

namespace {

bulwark::OutageScenario provider_outage() {
    bulwark::OutageScenario s;
    s.name = "email provider outage (503 after 2.5 s, 2:00-5:00)";
    s.seed = 2024;
    s.bucket = 2s;
    s.load.arrival = bulwark::SimArrival::poisson;
    s.load.rate_per_second = 200;
    s.load.duration = 8min;
    s.load.concurrency = 64;

    bulwark::SimDependency email;
    email.name = "email provider";
    bulwark::SimPhase healthy;
    healthy.name = "healthy";
    healthy.latency = bulwark::SimLatency::log_normal(80ms, 0.4);
    healthy.error_rate = 0.002;
    bulwark::SimPhase down;
    down.name = "down: 503 after 2.5 s";
    down.start = 2min;
    down.latency = bulwark::SimLatency::fixed_at(2500ms);
    down.error_rate = 1.0;
    bulwark::SimPhase recovering;
    recovering.name = "recovering";
    recovering.start = 5min;
    recovering.latency = bulwark::SimLatency::log_normal(150ms, 0.5);
    recovering.error_rate = 0.05;
    bulwark::SimPhase healthy_again = healthy;
    healthy_again.name = "healthy again";
    healthy_again.start = 5min + 30s;
    email.phases = {healthy, down, recovering, healthy_again};
    s.dependencies = {email};
    return s;
}

bulwark::RetryOptions naive_retry() {
    bulwark::RetryOptions r;
    r.max_retries = 3;
    r.backoff = bulwark::Backoff::exponential(200ms);
    return r;
}

bulwark::CircuitBreakerOptions breaker_options() {
    bulwark::CircuitBreakerOptions o;
    o.failure_threshold = 5;
    o.break_duration = 10s;
    o.half_open_calls = 1;
    return o;
}

bulwark::OutageTimeline run_retry_only(const bulwark::OutageScenario& s) {
    bulwark::OutageLab lab(s);
    bulwark::RetryPolicy retry("retry", naive_retry(), lab.seed(1), lab.clock());
    auto p = bulwark::pipeline(retry);
    return lab.run("retry only", [&](bulwark::SimCall& call) {
        return p.try_execute([&](bulwark::Context& c) { return call.dependency(0, c); },
                             call.context());
    });
}

bulwark::OutageTimeline run_retry_breaker(const bulwark::OutageScenario& s) {
    bulwark::OutageLab lab(s);
    bulwark::RetryPolicy retry("retry", naive_retry(), lab.seed(1), lab.clock());
    bulwark::CircuitBreaker breaker("email", breaker_options(), lab.clock());
    lab.watch(breaker);
    auto p = bulwark::pipeline(retry, breaker);
    return lab.run("retry + breaker", [&](bulwark::SimCall& call) {
        return p.try_execute([&](bulwark::Context& c) { return call.dependency(0, c); },
                             call.context());
    });
}

bool is_open_breaker(const std::exception_ptr& error) {
    try {
        std::rethrow_exception(error);
    } catch (const bulwark::CircuitOpenError&) {
        return true;
    } catch (...) {
        return false;
    }
}

bulwark::OutageTimeline run_recommended(const bulwark::OutageScenario& s) {
    bulwark::OutageLab lab(s);
    bulwark::RetryOptions r;
    r.max_retries = 2;
    r.backoff = bulwark::Backoff::exponential(100ms).max_delay(2s).jitter(bulwark::Jitter::full);
    r.budget = bulwark::RetryBudget::shared(0.1, 10, lab.clock());
    r.retry_if([](const std::exception_ptr& e) { return !is_open_breaker(e); });
    bulwark::RetryPolicy retry("retry", r, lab.seed(1), lab.clock());
    bulwark::CircuitBreaker breaker("email", breaker_options(), lab.clock());
    lab.watch(breaker);
    bulwark::Timeout timeout("timeout", 1s, lab.clock());
    // The message is kept in the outbox and sent when the provider is back: the caller is
    // answered at once instead of waiting out the outage.
    bulwark::Fallback<bulwark::SimResponse> outbox(
        [](const std::exception_ptr&) { return bulwark::SimResponse{}; });
    auto p = bulwark::pipeline(outbox, retry, breaker, timeout);
    return lab.run("recommended", [&](bulwark::SimCall& call) {
        return p.try_execute([&](bulwark::Context& c) { return call.dependency(0, c); },
                             call.context());
    });
}

bool read_file(const std::string& path, std::string& out) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (f == nullptr) {
        std::fprintf(stderr, "cannot read %s\n", path.c_str());
        return false;
    }
    char buffer[65536];
    std::size_t n = 0;
    while ((n = std::fread(buffer, 1, sizeof buffer, f)) > 0) {
        out.append(buffer, n);
    }
    std::fclose(f);
    return true;
}

bool write_file(const std::string& path, const std::string& text) {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) {
        std::fprintf(stderr, "cannot write %s\n", path.c_str());
        return false;
    }
    const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
    return std::fclose(f) == 0 && ok;
}

std::string slug(const std::string& name) {
    std::string out;
    for (const char c : name) {
        const bool keep = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (keep) {
            out.push_back(c);
        } else if (!out.empty() && out.back() != '-') {
            out.push_back('-');
        }
    }
    while (!out.empty() && out.back() == '-') {
        out.pop_back();
    }
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    std::string dir = ".";
    std::string scenario_file;
    std::string trace_file;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if ((arg == "--scenario" || arg == "--trace") && i + 1 < argc) {
            (arg == "--scenario" ? scenario_file : trace_file) = argv[++i];
        } else if (!arg.empty() && arg[0] != '-') {
            dir = arg;
        } else {
            std::fprintf(stderr,
                         "usage: outage_replay [output-dir] [--scenario FILE.json] "
                         "[--trace FILE.csv]\n");
            return 2;
        }
    }
    const bool built_in = scenario_file.empty() && trace_file.empty();
    bulwark::OutageScenario scenario = provider_outage();
    try {
        std::string text;
        if (!scenario_file.empty()) {
            if (!read_file(scenario_file, text)) {
                return 1;
            }
            scenario = bulwark::outage_scenario_from_json(text);
        }
        if (!trace_file.empty()) {
            text.clear();
            if (!read_file(trace_file, text)) {
                return 1;
            }
            scenario.dependencies.at(0).trace = bulwark::read_outage_trace_csv(text);
            scenario.validate();
        }
    } catch (const std::invalid_argument& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }

    // The scenario as the JSON a team would keep next to its runbook; read back, it is the same.
    const std::string json = bulwark::outage_scenario_to_json(scenario);
    if (bulwark::outage_scenario_to_json(bulwark::outage_scenario_from_json(json)) != json) {
        std::fprintf(stderr, "the scenario's JSON does not read back the same\n");
        return 1;
    }

    std::printf("outage replay: %s\n", scenario.name.c_str());
    std::printf("  %.0f notifications/s (%s) from %zu callers for %s, %s buckets\n\n",
                scenario.load.rate_per_second, bulwark::to_string(scenario.load.arrival),
                scenario.load.concurrency,
                bulwark::detail::format_duration(scenario.load.duration).c_str(),
                bulwark::detail::format_duration(scenario.bucket).c_str());

    std::vector<bulwark::OutageTimeline> runs;
    runs.push_back(run_retry_only(scenario));
    runs.push_back(run_retry_breaker(scenario));
    runs.push_back(run_recommended(scenario));

    std::fputs(bulwark::outage_what_if_table(runs).c_str(), stdout);

    bool ok = write_file(dir + "/scenario.json", json + "\n") &&
              write_file(dir + "/what-if.md", bulwark::outage_what_if_markdown(runs));
    std::printf("\nwritten to %s:\n  scenario.json  what-if.md\n", dir.c_str());
    for (const bulwark::OutageTimeline& t : runs) {
        const std::string base = dir + "/outage-" + slug(t.configuration);
        ok = write_file(base + ".svg", bulwark::outage_timeline_svg(t)) && ok;
        ok = write_file(base + ".csv", bulwark::outage_timeline_csv(t)) && ok;
        std::printf("  outage-%s.svg  outage-%s.csv\n", slug(t.configuration).c_str(),
                    slug(t.configuration).c_str());
    }

    if (!built_in) {
        return ok ? 0 : 1;
    }
    // What the comparison should show; a failed check is the example's exit code.
    const bulwark::OutageTimeline& naive = runs[0];
    const bulwark::OutageTimeline& recommended = runs[2];
    const bulwark::LabCheck checks[] = {
        bulwark::breaker_opens_within(recommended, "email", 80),
        bulwark::breaker_opens_within(runs[1], "email", 80),
        bulwark::dependency_rate_while_down_at_most(recommended, scenario.dependencies[0].name,
                                                    40.0),
        bulwark::p99_stays_under(recommended, 2s),
        bulwark::success_rate_at_least(recommended, 0.99),
        {recommended.summary.extra_load_ratio < naive.summary.extra_load_ratio / 10,
         "the recommended configuration puts a tenth or less of retry-only's load on the "
         "provider while it is down"},
    };
    std::printf("\nchecks:\n");
    for (const bulwark::LabCheck& c : checks) {
        std::printf("  %s %s\n", c.passed ? "ok    " : "FAILED", c.message.c_str());
        ok = ok && c.passed;
    }
    return ok ? 0 : 1;
}

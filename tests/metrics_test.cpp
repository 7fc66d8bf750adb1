#include <clocale>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <bulwark/bulkhead.hpp>
#include <bulwark/cache.hpp>
#include <bulwark/circuit_breaker.hpp>
#include <bulwark/circuit_breaker_registry.hpp>
#include <bulwark/dead_letter.hpp>
#include <bulwark/degradation.hpp>
#include <bulwark/fallback.hpp>
#include <bulwark/fallback_chain.hpp>
#include <bulwark/health.hpp>
#include <bulwark/hedging.hpp>
#include <bulwark/load_shedder.hpp>
#include <bulwark/metrics.hpp>
#include <bulwark/rate_limiter.hpp>
#include <bulwark/resources.hpp>
#include <bulwark/retry.hpp>
#include <bulwark/timeout.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using bulwark::CircuitBreaker;
using bulwark::CircuitBreakerOptions;
using bulwark::ManualClock;
using bulwark::metric_name;
using bulwark::MetricsWriter;
using bulwark::to_prometheus;

namespace {

struct Down : std::runtime_error {
    Down() : std::runtime_error("down") {}
};

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        lines.push_back(line);
    }
    return lines;
}

bool has_line(const std::string& text, const std::string& line) {
    for (const std::string& l : lines_of(text)) {
        if (l == line) {
            return true;
        }
    }
    return false;
}

std::size_t count_lines(const std::string& text, const std::string& line) {
    std::size_t n = 0;
    for (const std::string& l : lines_of(text)) {
        if (l == line) {
            ++n;
        }
    }
    return n;
}

// A breaker opened by three consecutive failures.
CircuitBreakerOptions opens_after_three() {
    CircuitBreakerOptions o;
    o.failure_threshold = 3;
    o.failure_ratio = 0.0;
    o.break_duration = 10s;
    return o;
}

void open(CircuitBreaker& b) {
    for (int i = 0; i < 3; ++i) {
        (void)b.try_execute([]() -> int { throw Down(); });
    }
}

// Checks the exposition's grammar: every line is a HELP, a TYPE or a sample; HELP and TYPE come
// once per family, HELP right before TYPE; every sample belongs to the family of the TYPE line
// above it, so no family is split. Returns the families in order.
std::vector<std::string> check_exposition(const std::string& text) {
    static const std::regex sample(
        R"(^[a-zA-Z_:][a-zA-Z0-9_:]*)"
        R"((\{[a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*"(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*")*\})?)"
        R"( ([-+]?[0-9]+(\.[0-9]*)?(e[-+]?[0-9]+)?|\+Inf|-Inf|NaN)$)");
    static const std::regex help(R"(^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .*$)");
    static const std::regex type(R"(^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge)$)");
    std::vector<std::string> families;
    std::set<std::string> seen;
    std::string current;
    std::string pending_help;
    std::size_t samples_in_current = 0;
    REQUIRE((text.empty() || text.back() == '\n'));
    for (const std::string& line : lines_of(text)) {
        INFO(line);
        std::smatch m;
        if (std::regex_match(line, m, help)) {
            CHECK(pending_help.empty());
            CHECK((current.empty() || samples_in_current > 0));
            pending_help = m[1];
        } else if (std::regex_match(line, m, type)) {
            CHECK(pending_help == m[1]);
            CHECK(seen.insert(m[1]).second);  // one TYPE per family
            current = m[1];
            families.push_back(current);
            pending_help.clear();
            samples_in_current = 0;
        } else {
            REQUIRE(std::regex_match(line, sample));
            CHECK(pending_help.empty());
            const std::string name = line.substr(0, line.find_first_of("{ "));
            CHECK(name == current);  // a sample outside its family's block: the family is split
            ++samples_in_current;
        }
    }
    CHECK(pending_help.empty());
    return families;
}

}  // namespace

TEST_CASE("metrics: an opened breaker's state gauge and counters", "[metrics]") {
    ManualClock clock;
    CircuitBreaker sms("sms", opens_after_three(), clock);
    (void)sms.try_execute([] { return 1; });
    open(sms);
    (void)sms.try_execute([] { return 1; });  // rejected while open
    clock.advance(4s);

    const std::string out = to_prometheus(sms);
    CHECK(count_lines(out, "# TYPE bulwark_circuit_breaker_state gauge") == 1);
    CHECK(count_lines(out,
                      "# HELP bulwark_circuit_breaker_state Circuit breaker state: 1 for the "
                      "current state, 0 for the others.") == 1);
    CHECK(has_line(out, R"(bulwark_circuit_breaker_state{name="sms",state="closed"} 0)"));
    CHECK(has_line(out, R"(bulwark_circuit_breaker_state{name="sms",state="open"} 1)"));
    CHECK(has_line(out, R"(bulwark_circuit_breaker_state{name="sms",state="half_open"} 0)"));
    CHECK(has_line(out, R"(bulwark_circuit_breaker_state{name="sms",state="forced_open"} 0)"));
    CHECK(has_line(out, R"(bulwark_circuit_breaker_state{name="sms",state="disabled"} 0)"));
    CHECK(has_line(out, "# TYPE bulwark_circuit_breaker_calls_total counter"));
    CHECK(has_line(out, R"(bulwark_circuit_breaker_calls_total{name="sms"} 4)"));
    CHECK(has_line(out, R"(bulwark_circuit_breaker_successes_total{name="sms"} 1)"));
    CHECK(has_line(out, R"(bulwark_circuit_breaker_failures_total{name="sms"} 3)"));
    CHECK(has_line(out, R"(bulwark_circuit_breaker_rejected_total{name="sms"} 1)"));
    CHECK(has_line(out, R"(bulwark_circuit_breaker_opened_total{name="sms"} 1)"));
    CHECK(has_line(out, R"(bulwark_circuit_breaker_consecutive_failures{name="sms"} 3)"));
    CHECK(has_line(out, R"(bulwark_circuit_breaker_time_in_state_seconds{name="sms"} 4)"));
    CHECK(has_line(out, R"(bulwark_circuit_breaker_retry_after_seconds{name="sms"} 6)"));
    check_exposition(out);
}

TEST_CASE("metrics: a registry renders every breaker, each family in one block", "[metrics]") {
    ManualClock clock;
    bulwark::CircuitBreakerRegistry registry(opens_after_three(), clock);
    open(registry.get("sms"));
    (void)registry.get("email").try_execute([] { return 1; });
    CircuitBreaker push("push", {}, clock);

    const std::string out = to_prometheus(registry, metric_name("push_v2", push));
    const auto families = check_exposition(out);
    CHECK(families.front() == "bulwark_circuit_breaker_state");
    CHECK(std::set<std::string>(families.begin(), families.end()).size() == families.size());
    // Name order within the registry, then the wrapped breaker under its metric name.
    const std::string block =
        "bulwark_circuit_breaker_calls_total{name=\"email\"} 1\n"
        "bulwark_circuit_breaker_calls_total{name=\"sms\"} 3\n"
        "bulwark_circuit_breaker_calls_total{name=\"push_v2\"} 0\n";
    CHECK(out.find(block) != std::string::npos);
    CHECK(has_line(out, R"(bulwark_circuit_breaker_state{name="sms",state="open"} 1)"));
    CHECK(has_line(out, R"(bulwark_circuit_breaker_state{name="email",state="closed"} 1)"));
}

TEST_CASE("metrics: retry, bulkhead, rate limiter, timeout and fallbacks are named by the wrapper",
          "[metrics]") {
    ManualClock clock;

    bulwark::RetryOptions ro;
    ro.max_retries = 3;
    ro.backoff = bulwark::Backoff::fixed(1s);
    bulwark::RetryPolicy retry(ro, 1, clock);
    int attempts = 0;
    CHECK(retry.execute([&] {
        if (++attempts <= 2) {
            throw Down();
        }
        return attempts;
    }) == 3);

    bulwark::Bulkhead bulkhead(2, 0, 1s, clock);
    auto p1 = bulkhead.try_acquire();
    auto p2 = bulkhead.try_acquire();
    auto p3 = bulkhead.try_acquire();
    CHECK((p1 && p2 && !p3));

    bulwark::RateLimiter limiter(bulwark::TokenBucket{1.0, 2}, clock);
    CHECK(limiter.try_acquire());
    CHECK(limiter.try_acquire());
    CHECK(!limiter.try_acquire());

    bulwark::Timeout timeout(2s, clock);
    CHECK(timeout
              .try_execute([&] {
                  clock.advance(3s);
                  return 1;
              })
              .has_error());

    bulwark::Fallback<int> fallback(0);
    CHECK(fallback.execute([]() -> int { throw Down(); }) == 0);

    bulwark::CacheFallback<std::string, int> cache(5min, 100, clock);
    CHECK(cache.execute("k", [] { return 7; }) == 7);
    CHECK(cache.execute("k", []() -> int { throw Down(); }) == 7);

    bulwark::Hedging hedging(50ms, 1, clock);

    const std::string out = to_prometheus(
        metric_name("sms_retry", retry), metric_name("db", bulkhead), metric_name("api", limiter),
        metric_name("db_call", timeout), metric_name("quote", fallback),
        metric_name("quotes", cache), metric_name("search", hedging));
    check_exposition(out);
    CHECK(has_line(out, R"(bulwark_retry_calls_total{name="sms_retry"} 1)"));
    CHECK(has_line(out, R"(bulwark_retry_retries_total{name="sms_retry"} 2)"));
    CHECK(has_line(out, R"(bulwark_retry_successes_after_retry_total{name="sms_retry"} 1)"));
    CHECK(has_line(out, R"(bulwark_retry_exhausted_total{name="sms_retry"} 0)"));
    CHECK(has_line(out, R"(bulwark_retry_deferred_to_caller_total{name="sms_retry"} 0)"));
    CHECK(has_line(out, R"(bulwark_bulkhead_in_flight{name="db"} 2)"));
    CHECK(has_line(out, R"(bulwark_bulkhead_max_concurrent{name="db"} 2)"));
    CHECK(has_line(out, R"(bulwark_bulkhead_admitted_total{name="db"} 2)"));
    CHECK(has_line(out, R"(bulwark_bulkhead_rejected_total{name="db"} 1)"));
    CHECK(has_line(out, R"(bulwark_rate_limiter_admitted_total{name="api"} 2)"));
    CHECK(has_line(out, R"(bulwark_rate_limiter_rejected_total{name="api"} 1)"));
    CHECK(has_line(out, R"(bulwark_timeout_timeouts_total{name="db_call"} 1)"));
    CHECK(has_line(out, R"(bulwark_timeout_duration_seconds{name="db_call"} 2)"));
    CHECK(has_line(out, R"(bulwark_fallback_fallbacks_total{name="quote"} 1)"));
    CHECK(has_line(out, R"(bulwark_fallback_failures_total{name="quote"} 0)"));
    CHECK(has_line(out, R"(bulwark_cache_fallback_stored_total{name="quotes"} 1)"));
    CHECK(has_line(out, R"(bulwark_cache_fallback_served_total{name="quotes"} 1)"));
    CHECK(has_line(out, R"(bulwark_cache_fallback_entries{name="quotes"} 1)"));
    CHECK(has_line(out, R"(bulwark_hedging_calls_total{name="search"} 0)"));
    CHECK(has_line(out, "# TYPE bulwark_retry_retries_total counter"));
    CHECK(has_line(out, "# TYPE bulwark_bulkhead_in_flight gauge"));
}

TEST_CASE("metrics: a fallback chain's channels, labelled with the chain and the channel",
          "[metrics]") {
    ManualClock clock;
    bulwark::FallbackChain<std::string(const std::string&)> chain(bulwark::Selection::priority, {},
                                                                  1, clock);
    chain.add("sms", [&](const std::string&) -> std::string {
        clock.advance(250ms);
        throw Down();
    });
    chain.add("email", [&](const std::string& m) {
        clock.advance(100ms);
        return "email:" + m;
    });
    CHECK(chain.execute("hi").value() == "email:hi");
    CHECK(chain.execute("again").value() == "email:again");

    const std::string out = to_prometheus(metric_name("delivery", chain));
    check_exposition(out);
    CHECK(
        out.find("bulwark_fallback_chain_channel_calls_total{chain=\"delivery\",channel=\"sms\"} "
                 "2\n"
                 "bulwark_fallback_chain_channel_calls_total{chain=\"delivery\",channel=\"email\"}"
                 " 2\n") != std::string::npos);
    CHECK(has_line(
        out, R"(bulwark_fallback_chain_channel_failures_total{chain="delivery",channel="sms"} 2)"));
    CHECK(has_line(
        out,
        R"(bulwark_fallback_chain_channel_fallbacks_total{chain="delivery",channel="email"} 2)"));
    CHECK(has_line(
        out, R"(bulwark_fallback_chain_channel_success_rate{chain="delivery",channel="sms"} 0)"));
    CHECK(has_line(
        out,
        R"(bulwark_fallback_chain_channel_mean_latency_seconds{chain="delivery",channel="sms"} 0.25)"));
    CHECK(has_line(
        out,
        R"(bulwark_fallback_chain_channel_mean_latency_seconds{chain="delivery",channel="email"} 0.1)"));
    // Unwrapped, the chain is called "chain".
    CHECK(has_line(to_prometheus(chain),
                   R"(bulwark_fallback_chain_channel_calls_total{chain="chain",channel="sms"} 2)"));
}

TEST_CASE("metrics: degradation level, load shedder, health and resources", "[metrics]") {
    ManualClock clock;
    bulwark::Degradation degradation(clock);
    degradation.set_level(bulwark::DegradationLevel::moderate, "maintenance");

    bulwark::LoadShedder shedder(degradation, bulwark::DegradationLevel::severe);
    CHECK(shedder.try_execute([] { return 1; }).has_value());
    bulwark::Context low;
    low.set_priority(bulwark::Priority::low);
    CHECK(shedder.try_execute([] { return 1; }, low).has_error());

    bulwark::HealthMonitor monitor(clock);
    monitor.add_check({"db", [] { return false; }, 60s, 0s, true});
    monitor.add_check({"cache", [] { return bulwark::HealthStatus::degraded; }, 60s, 0s, false});
    CHECK(monitor.run_due() == 2);

    bulwark::ResourceManager resources(clock);
    resources.add_quota("llm_tokens", 1000, 1min, {70, 90});
    resources.record_usage("llm_tokens", 800);

    const std::string out = to_prometheus(degradation, metric_name("api", shedder), monitor,
                                          metric_name("llm", resources));
    check_exposition(out);
    CHECK(has_line(out, R"(bulwark_degradation_level{name="degradation"} 2)"));
    CHECK(has_line(out, R"(bulwark_degradation_state{name="degradation",level="moderate"} 1)"));
    CHECK(has_line(out, R"(bulwark_degradation_state{name="degradation",level="normal"} 0)"));
    CHECK(has_line(out, R"(bulwark_load_shedder_passed_total{name="api"} 1)"));
    CHECK(has_line(out, R"(bulwark_load_shedder_shed_total{name="api"} 1)"));
    CHECK(has_line(out, R"(bulwark_health_status{name="health",status="unhealthy"} 1)"));
    CHECK(has_line(out, R"(bulwark_health_status{name="health",status="healthy"} 0)"));
    CHECK(has_line(out, R"(bulwark_health_ready{name="health"} 0)"));
    CHECK(has_line(
        out, R"(bulwark_health_check_status{name="health",check="db",status="unhealthy"} 1)"));
    CHECK(has_line(
        out, R"(bulwark_health_check_status{name="health",check="cache",status="degraded"} 1)"));
    CHECK(has_line(out, R"(bulwark_health_check_critical{name="health",check="db"} 1)"));
    CHECK(has_line(out, R"(bulwark_health_check_runs_total{name="health",check="db"} 1)"));
    CHECK(has_line(out, R"(bulwark_health_check_failures_total{name="health",check="db"} 1)"));
    CHECK(has_line(out, R"(bulwark_resource_worst_status{name="llm",status="warning"} 1)"));
    CHECK(has_line(
        out, R"(bulwark_resource_status{name="llm",resource="llm_tokens",status="warning"} 1)"));
    CHECK(has_line(out, R"(bulwark_resource_usage_ratio{name="llm",resource="llm_tokens"} 0.8)"));
    CHECK(has_line(
        out, R"(bulwark_resource_warning_threshold_ratio{name="llm",resource="llm_tokens"} 0.7)"));
    CHECK(has_line(out, R"(bulwark_resource_quota_used{name="llm",resource="llm_tokens"} 800)"));
    CHECK(has_line(out, R"(bulwark_resource_quota_limit{name="llm",resource="llm_tokens"} 1000)"));
    CHECK(has_line(
        out, R"(bulwark_resource_quota_window_seconds{name="llm",resource="llm_tokens"} 60)"));
}

TEST_CASE("metrics: a dead-letter store's records by status, reason, type and category",
          "[metrics]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(100, clock);
    bulwark::DeadLetter sms;
    sms.type = "sms";
    const std::string first = store.add(sms);
    store.add(sms);
    bulwark::DeadLetter email;
    email.type = "email";
    email.reason = bulwark::DeadLetterReason::not_retryable;
    email.id = "e1";
    store.add(email);
    store.add(email);  // a duplicate: nothing stored
    store.dismiss(bulwark::DeadLetterQuery{}.id(first), "duplicate");
    store.categorize(bulwark::DeadLetterQuery{}.type("email"), "bounced");
    store.reprocess(bulwark::DeadLetterQuery{}.type("email"),
                    [](const bulwark::DeadLetter&) { return true; });

    const bulwark::DeadLetterStore& any = store;  // a store of your own renders the same way
    const std::string text = to_prometheus(metric_name("dlq", store), metric_name("other", any));
    check_exposition(text);
    CHECK(has_line(text, "bulwark_dead_letter_max_entries{name=\"dlq\"} 100"));
    CHECK(has_line(text, "bulwark_dead_letters{name=\"dlq\",status=\"pending\"} 1"));
    CHECK(has_line(text, "bulwark_dead_letters{name=\"dlq\",status=\"reprocessed\"} 1"));
    CHECK(has_line(text, "bulwark_dead_letters{name=\"dlq\",status=\"dismissed\"} 1"));
    CHECK(has_line(text,
                   "bulwark_dead_letters_by_reason{name=\"dlq\",reason=\"retries_exhausted\"} 2"));
    CHECK(
        has_line(text, "bulwark_dead_letters_by_reason{name=\"dlq\",reason=\"not_retryable\"} 1"));
    CHECK(has_line(text, "bulwark_dead_letters_by_reason{name=\"dlq\",reason=\"manual\"} 0"));
    CHECK(has_line(text, "bulwark_dead_letters_by_type{name=\"dlq\",type=\"sms\"} 2"));
    CHECK(has_line(text, "bulwark_dead_letters_by_type{name=\"dlq\",type=\"email\"} 1"));
    CHECK(has_line(text, "bulwark_dead_letters_by_category{name=\"dlq\",category=\"bounced\"} 1"));
    // An empty label value is the same series as no label (see below): uncategorized.
    CHECK(has_line(text, "bulwark_dead_letters_by_category{name=\"dlq\"} 2"));
    CHECK(has_line(text, "bulwark_dead_letter_added_total{name=\"dlq\"} 3"));
    CHECK(has_line(text, "bulwark_dead_letter_duplicate_adds_total{name=\"dlq\"} 1"));
    CHECK(has_line(text, "bulwark_dead_letter_rejected_total{name=\"dlq\",cause=\"full\"} 0"));
    CHECK(has_line(text, "bulwark_dead_letter_resent_total{name=\"dlq\"} 1"));
    CHECK(has_line(text, "bulwark_dead_letters{name=\"other\",status=\"pending\"} 1"));
}

TEST_CASE("metrics: label values escape backslash, double quote and line feed", "[metrics]") {
    ManualClock clock;
    CircuitBreaker odd("a\"b\\c\nd", {}, clock);
    const std::string out = to_prometheus(odd);
    check_exposition(out);
    CHECK(has_line(out, R"(bulwark_circuit_breaker_calls_total{name="a\"b\\c\nd"} 0)"));

    MetricsWriter w;
    w.add_gauge("app_temperature", "Line one\nback\\slash \"quoted\"", {{"room", "x"}}, 1);
    CHECK(w.str() ==
          "# HELP app_temperature Line one\\nback\\\\slash \"quoted\"\n"
          "# TYPE app_temperature gauge\n"
          "app_temperature{room=\"x\"} 1\n");
}

TEST_CASE("metrics: numbers are exact integers, round-tripping doubles and Prometheus's Inf/NaN",
          "[metrics]") {
    MetricsWriter w;
    w.add_counter("n_total", "h", {{"k", "max"}}, std::numeric_limits<std::uint64_t>::max());
    w.add_gauge("g", "h", {{"k", "neg"}}, -42);
    w.add_gauge("g", "h", {{"k", "tenth"}}, 0.1);
    w.add_gauge("g", "h", {{"k", "third"}}, 2.0 / 3.0);
    w.add_gauge("g", "h", {{"k", "big"}}, 1e21);
    w.add_gauge("g", "h", {{"k", "inf"}}, std::numeric_limits<double>::infinity());
    w.add_gauge("g", "h", {{"k", "-inf"}}, -std::numeric_limits<double>::infinity());
    w.add_gauge("g", "h", {{"k", "nan"}}, std::numeric_limits<double>::quiet_NaN());
    w.add_gauge("g", "h", {{"k", "true"}}, true);
    const std::string out = w.str();
    check_exposition(out);
    CHECK(has_line(out, R"(n_total{k="max"} 18446744073709551615)"));
    CHECK(has_line(out, R"(g{k="neg"} -42)"));
    CHECK(has_line(out, R"(g{k="tenth"} 0.1)"));
    CHECK(has_line(out, R"(g{k="third"} 0.6666666666666666)"));
    CHECK(has_line(out, R"(g{k="big"} 1e+21)"));
    CHECK(has_line(out, R"(g{k="inf"} +Inf)"));
    CHECK(has_line(out, R"(g{k="-inf"} -Inf)"));
    CHECK(has_line(out, R"(g{k="nan"} NaN)"));
    CHECK(has_line(out, R"(g{k="true"} 1)"));
    CHECK(std::stod(lines_of(out)[7].substr(lines_of(out)[7].find(' ') + 1)) == 2.0 / 3.0);
}

TEST_CASE("metrics: a locale's decimal separator, one byte or several, becomes a point",
          "[metrics]") {
    // What printf writes under de_DE and under a locale with a multi-byte separator (U+066B):
    // checked without the locales, which a fresh machine does not have.
    CHECK(bulwark::detail::with_decimal_point("0,1") == "0.1");
    CHECK(bulwark::detail::with_decimal_point("-1,25e-07") == "-1.25e-07");
    CHECK(bulwark::detail::with_decimal_point("1\xd9\xab"
                                              "5") == "1.5");
    CHECK(bulwark::detail::with_decimal_point("42") == "42");
    CHECK(bulwark::detail::with_decimal_point("1.5e+300") == "1.5e+300");
}

TEST_CASE("metrics: a label with an empty value is the same series as one without it",
          "[metrics]") {
    bulwark::MetricsWriter w;
    w.add_gauge("x", "h", {}, 1);
    w.add_gauge("x", "h", {{"a", ""}}, 2);
    w.add_gauge("x", "h", {{"a", "v"}, {"b", ""}}, 3);
    CHECK(w.str() == "# HELP x h\n# TYPE x gauge\nx 1\nx{a=\"v\"} 3\n");
    CHECK(w.dropped() == 1);
}

TEST_CASE("metrics: a decimal-comma locale still prints a point", "[metrics]") {
    // Found through LOCPATH too, so a test machine without the locale installed can build one
    // with localedef; skipped (with a warning) when none is available.
    const char* names[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "fr_FR.utf8"};
    const std::string before = std::setlocale(LC_NUMERIC, nullptr);
    bool switched = false;
    for (const char* name : names) {
        if (std::setlocale(LC_NUMERIC, name) != nullptr) {
            switched = true;
            break;
        }
    }
    if (!switched) {
        WARN("no decimal-comma locale installed: not checked");
        return;
    }
    char probe[16];
    std::snprintf(probe, sizeof probe, "%.1f", 0.5);
    const std::string localized = probe;
    MetricsWriter w;
    w.add_gauge("g", "h", {}, 0.25);
    w.add_gauge("h", "h", {}, -1.5e-7);
    const std::string out = w.str();
    std::setlocale(LC_NUMERIC, before.c_str());
    CHECK(localized == "0,5");  // the locale really uses a comma
    CHECK(has_line(out, "g 0.25"));
    CHECK(has_line(out, "h -1.5e-07"));
}

TEST_CASE("metrics: a duplicate (family, label set) keeps the first sample and drops the later",
          "[metrics]") {
    ManualClock clock;
    CircuitBreaker a("sms", {}, clock);
    CircuitBreaker b("sms", opens_after_three(), clock);
    open(b);
    MetricsWriter w;
    to_prometheus(w, a, b);
    const std::string out = w.str();
    check_exposition(out);
    CHECK(has_line(out, R"(bulwark_circuit_breaker_state{name="sms",state="closed"} 1)"));
    CHECK(!has_line(out, R"(bulwark_circuit_breaker_state{name="sms",state="open"} 1)"));
    CHECK(count_lines(out, R"(bulwark_circuit_breaker_failures_total{name="sms"} 0)") == 1);
    CHECK(w.dropped() == w.samples());  // every sample of b had a twin from a

    // Label order does not make a different series.
    MetricsWriter m;
    m.add_gauge("x", "h", {{"a", "1"}, {"b", "2"}}, 1);
    m.add_gauge("x", "h", {{"b", "2"}, {"a", "1"}}, 2);
    m.add_gauge("x", "h", {{"a", "1"}, {"b", "3"}}, 3);
    CHECK(m.dropped() == 1);
    CHECK(m.samples() == 2);
    CHECK(m.str() == "# HELP x h\n# TYPE x gauge\nx{a=\"1\",b=\"2\"} 1\nx{a=\"1\",b=\"3\"} 3\n");
}

TEST_CASE("metrics: user series join the same exposition, families first-seen", "[metrics]") {
    ManualClock clock;
    CircuitBreaker sms("sms", {}, clock);
    MetricsWriter w;
    w.add_counter("app_requests_total", "Requests served.", {{"route", "/send"}}, 42);
    to_prometheus(w, sms);
    w.add_counter("app_requests_total", "ignored: the first help wins", {{"route", "/status"}}, 7);
    w.add_gauge("bulwark_circuit_breaker_window_calls", "x", {{"name", "other"}}, 5);
    const std::string out = w.str();
    const auto families = check_exposition(out);
    CHECK(families.front() == "app_requests_total");
    CHECK(families[1] == "bulwark_circuit_breaker_state");
    CHECK(out.rfind("# HELP app_requests_total Requests served.\n"
                    "# TYPE app_requests_total counter\n"
                    "app_requests_total{route=\"/send\"} 42\n"
                    "app_requests_total{route=\"/status\"} 7\n",
                    0) == 0);
    CHECK(out.find("bulwark_circuit_breaker_window_calls{name=\"sms\"} 0\n"
                   "bulwark_circuit_breaker_window_calls{name=\"other\"} 5\n") !=
          std::string::npos);
    CHECK(to_prometheus().empty());
}

TEST_CASE("metrics: invalid names, repeated labels, type clashes and negative counters throw",
          "[metrics]") {
    MetricsWriter w;
    CHECK_THROWS_AS(w.add_gauge("1abc", "h", {}, 1), std::invalid_argument);
    CHECK_THROWS_AS(w.add_gauge("a-b", "h", {}, 1), std::invalid_argument);
    CHECK_THROWS_AS(w.add_gauge("", "h", {}, 1), std::invalid_argument);
    CHECK_THROWS_AS(w.add_gauge("ok", "h", {{"a:b", "v"}}, 1), std::invalid_argument);
    CHECK_THROWS_AS(w.add_gauge("ok", "h", {{"__reserved", "v"}}, 1), std::invalid_argument);
    CHECK_THROWS_AS(w.add_gauge("ok", "h", {{"a", "1"}, {"a", "2"}}, 1), std::invalid_argument);
    CHECK_THROWS_AS(w.add_counter("c_total", "h", {}, -1), std::invalid_argument);
    CHECK_THROWS_AS(w.add_counter("c_total", "h", {}, std::nan("")), std::invalid_argument);
    w.add_gauge("ns:ok", "h", {}, 1);
    CHECK_THROWS_AS(w.add_counter("ns:ok", "h", {}, 1), std::invalid_argument);
    CHECK(w.samples() == 1);
    CHECK(w.str() == "# HELP ns:ok h\n# TYPE ns:ok gauge\nns:ok 1\n");
}

namespace {

// An independent UTF-8 check for the tests: decodes each code point with masks and rejects
// overlong forms, surrogates and values above U+10FFFF by the decoded value.
bool valid_utf8(const std::string& s) {
    for (std::size_t i = 0; i < s.size();) {
        const auto b = static_cast<unsigned char>(s[i]);
        std::size_t n = 0;
        std::uint32_t cp = 0;
        if (b < 0x80) {
            n = 1;
            cp = b;
        } else if ((b & 0xE0U) == 0xC0) {
            n = 2;
            cp = b & 0x1FU;
        } else if ((b & 0xF0U) == 0xE0) {
            n = 3;
            cp = b & 0x0FU;
        } else if ((b & 0xF8U) == 0xF0) {
            n = 4;
            cp = b & 0x07U;
        } else {
            return false;
        }
        if (i + n > s.size()) {
            return false;
        }
        for (std::size_t k = 1; k < n; ++k) {
            const auto c = static_cast<unsigned char>(s[i + k]);
            if ((c & 0xC0U) != 0x80) {
                return false;
            }
            cp = (cp << 6U) | (c & 0x3FU);
        }
        const std::uint32_t smallest[] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < smallest[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            return false;
        }
        i += n;
    }
    return true;
}

}  // namespace

TEST_CASE("metrics: label values of arbitrary bytes make a valid UTF-8 exposition", "[metrics]") {
    CHECK(valid_utf8("plain \xE2\x82\xAC \xF0\x9F\x98\x80"));
    CHECK_FALSE(valid_utf8("\xC0\x80"));          // overlong
    CHECK_FALSE(valid_utf8("\xED\xA0\x80"));      // a surrogate
    CHECK_FALSE(valid_utf8("\xF4\x90\x80\x80"));  // above U+10FFFF
    CHECK_FALSE(valid_utf8("\xE2\x82"));          // cut short

    // Well-formed text passes through unchanged; each bad byte becomes U+FFFD.
    MetricsWriter w;
    w.add_gauge("g", "help", {{"v", "ok \xE2\x82\xAC"}}, 1.0);
    w.add_gauge("g", "help",
                {{"v",
                  "a\xFF"
                  "b\xC0\x80"
                  "c\xE2\x82"}},
                1.0);
    CHECK(has_line(w.str(), "g{v=\"ok \xE2\x82\xAC\"} 1"));
    CHECK(has_line(w.str(),
                   "g{v=\"a\xEF\xBF\xBD"
                   "b\xEF\xBF\xBD\xEF\xBF\xBD"
                   "c\xEF\xBF\xBD"
                   "\xEF\xBF\xBD\"} 1"));

    // A dead-letter store whose records' type and category are random bytes.
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(1000, clock);
    std::uint64_t state = 42;
    const auto next = [&state] {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        return static_cast<char>(state >> 56U);
    };
    for (int i = 0; i < 300; ++i) {
        bulwark::DeadLetter d;
        for (int k = 0; k < 1 + i % 7; ++k) {
            d.type.push_back(next());
            d.category.push_back(next());
        }
        store.add(d);
    }
    const std::string text = to_prometheus(metric_name("dlq", store));
    CHECK(valid_utf8(text));
    check_exposition(text);

    // Types that differ only in bytes that are not UTF-8 are one series, with their sum.
    bulwark::InMemoryDeadLetterStore two(100, clock);
    for (const char* type : {"sms\xFF", "sms\xFE", "sms\xFE"}) {
        bulwark::DeadLetter d;
        d.type = type;
        two.add(d);
    }
    MetricsWriter out;
    to_prometheus(out, metric_name("dlq", two));
    CHECK(out.dropped() == 0);
    CHECK(has_line(out.str(),
                   "bulwark_dead_letters_by_type{name=\"dlq\",type=\"sms\xEF\xBF\xBD\"} 3"));
}

TEST_CASE("MetricsWriter renders a histogram's buckets, sum and count and reserves their names",
          "[metrics]") {
    bulwark::MetricsWriter w;
    w.add_histogram("app_latency_seconds", "Latency.", {{"route", "/send"}}, {0.1, 1.0}, {2, 5},
                    3.5, 6);
    const std::string text = w.str();
    CHECK(text.find("# TYPE app_latency_seconds histogram") != std::string::npos);
    CHECK(text.find("app_latency_seconds_bucket{route=\"/send\",le=\"0.1\"} 2") !=
          std::string::npos);
    CHECK(text.find("app_latency_seconds_bucket{route=\"/send\",le=\"+Inf\"} 6") !=
          std::string::npos);
    CHECK(text.find("app_latency_seconds_sum{route=\"/send\"} 3.5") != std::string::npos);
    CHECK(text.find("app_latency_seconds_count{route=\"/send\"} 6") != std::string::npos);

    // Bad shapes are refused.
    CHECK_THROWS_AS(w.add_histogram("h2", "", {}, {1.0, 0.5}, {1, 2}, 1, 2), std::invalid_argument);
    CHECK_THROWS_AS(w.add_histogram("h3", "", {}, {1.0}, {3}, 1, 2), std::invalid_argument);
    CHECK_THROWS_AS(w.add_histogram("h4", "", {{"le", "1"}}, {1.0}, {1}, 1, 1),
                    std::invalid_argument);

    // Its series' names are taken: a family of that name would render two series alike.
    try {
        w.add_counter("app_latency_seconds_count", "", {}, 1);
        FAIL("a counter named as a histogram's series was accepted");
    } catch (const std::invalid_argument& e) {
        CHECK(std::string(e.what()).find("app_latency_seconds_count") != std::string::npos);
    }
    CHECK_THROWS_AS(w.add_gauge("app_latency_seconds_sum", "", {}, 1), std::invalid_argument);
    w.add_counter("jobs_sum", "", {}, 1);
    CHECK_THROWS_AS(w.add_histogram("jobs", "", {}, {1.0}, {1}, 1, 1), std::invalid_argument);
    CHECK(w.str().find("jobs_bucket") == std::string::npos);
}

TEST_CASE("metrics: each rejecting policy exports its shadow rejections", "[metrics][shadow]") {
    ManualClock clock;
    CircuitBreakerOptions o;
    o.failure_threshold = 1;
    o.failure_ratio = 0.0;
    o.shadow = true;
    CircuitBreaker breaker("sms", o, clock);
    breaker.try_acquire().record_failure();
    CHECK(breaker.execute([] { return 1; }) == 1);  // open, let through
    bulwark::Bulkhead bulkhead("db", bulwark::BulkheadOptions{1, 0, 1s, true}, clock);
    auto held = bulkhead.try_acquire();
    CHECK(bulkhead.execute([] { return 1; }) == 1);
    bulwark::RateLimiter limiter(
        "api", bulwark::RateLimiterOptions{bulwark::TokenBucket{1.0, 1}, 0s, true}, clock);
    CHECK(limiter.execute([] { return 1; }) == 1);
    CHECK(limiter.execute([] { return 1; }) == 1);  // refused, let through
    bulwark::Degradation degradation(clock);
    degradation.set_level(bulwark::DegradationLevel::critical, "overload");
    bulwark::LoadShedderOptions shed_options;
    shed_options.shadow = true;
    bulwark::LoadShedder shedder(degradation, shed_options);
    CHECK(shedder.execute([] { return 1; }) == 1);

    const std::string out =
        to_prometheus(breaker, metric_name("db", bulkhead), metric_name("api", limiter),
                      metric_name("front", shedder));
    check_exposition(out);
    CHECK(has_line(out, R"(bulwark_circuit_breaker_rejected_total{name="sms"} 1)"));
    CHECK(has_line(out, R"(bulwark_circuit_breaker_shadow_rejections_total{name="sms"} 1)"));
    CHECK(has_line(out, R"(bulwark_bulkhead_rejected_total{name="db"} 1)"));
    CHECK(has_line(out, R"(bulwark_bulkhead_shadow_rejections_total{name="db"} 1)"));
    CHECK(has_line(out, R"(bulwark_rate_limiter_rejected_total{name="api"} 1)"));
    CHECK(has_line(out, R"(bulwark_rate_limiter_shadow_rejections_total{name="api"} 1)"));
    CHECK(has_line(out, R"(bulwark_load_shedder_shed_total{name="front"} 1)"));
    CHECK(has_line(out, R"(bulwark_load_shedder_shadow_rejections_total{name="front"} 1)"));
}

#include <stdexcept>
#include <string>
#include <vector>

#include <bulwark/outage_scenario_json.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;

namespace {

// A scenario that sets every field to something other than its default.
bulwark::OutageScenario full_scenario() {
    bulwark::OutageScenario s;
    s.name = "email \"provider\" outage \xC3\xA9";
    s.seed = 18446744073709551557ULL;  // above 2^53: written as a string
    s.bucket = 500ms;
    s.outage_error_rate = 0.75;
    s.recovered_fraction = 0.9;
    s.load.arrival = bulwark::SimArrival::bursts;
    s.load.rate_per_second = 1234.5678901234567;
    s.load.duration = 10min;
    s.load.concurrency = 48;
    s.load.burst_every = 15s;
    s.load.burst_size = 250;

    bulwark::SimDependency email;
    email.name = "email";
    email.trace_retry_after = 7s;
    bulwark::SimPhase healthy;
    healthy.name = "healthy";
    healthy.latency = bulwark::SimLatency::log_normal(80ms, 0.35);
    healthy.error_rate = 0.001;
    bulwark::SimPhase degraded;
    degraded.name = "degraded";
    degraded.start = 1min;
    degraded.latency = bulwark::SimLatency::uniform(150ms, 900ms);
    degraded.error_rate = 0.2;
    degraded.error_kind = bulwark::SimErrorKind::rate_limited;
    degraded.retry_after = 20s;
    bulwark::SimPhase down;
    down.name = "down";
    down.start = 2min + 500ms;
    down.latency = bulwark::SimLatency::fixed_at(2500ms);
    down.error_rate = 1.0;
    down.error_kind = bulwark::SimErrorKind::timeout;
    down.hang = 45s;
    bulwark::SimPhase recovering;
    recovering.name = "recovering";
    recovering.start = 5min;
    recovering.latency = bulwark::SimLatency::empirical({70ms, 95ms, 130ms, 1234567ns});
    recovering.error_rate = 0.1;
    recovering.error_kind = bulwark::SimErrorKind::permanent;
    email.phases = {healthy, degraded, down, recovering};

    bulwark::SimDependency sms;
    sms.name = "sms";
    sms.trace = {{0ms, 40ms, true, bulwark::SimErrorKind::transient},
                 {1500us, 2s, false, bulwark::SimErrorKind::timeout},
                 {3s, 10ms, false, bulwark::SimErrorKind::rate_limited}};
    s.dependencies = {email, sms};
    return s;
}

bool same_latency(const bulwark::SimLatency& a, const bulwark::SimLatency& b) {
    return a.kind == b.kind && a.value == b.value && a.low == b.low && a.high == b.high &&
           a.median == b.median && a.sigma == b.sigma && a.samples == b.samples;
}

void check_equal(const bulwark::OutageScenario& a, const bulwark::OutageScenario& b) {
    CHECK(a.name == b.name);
    CHECK(a.seed == b.seed);
    CHECK(a.bucket == b.bucket);
    CHECK(a.outage_error_rate == b.outage_error_rate);
    CHECK(a.recovered_fraction == b.recovered_fraction);
    CHECK(a.load.arrival == b.load.arrival);
    CHECK(a.load.rate_per_second == b.load.rate_per_second);
    CHECK(a.load.duration == b.load.duration);
    CHECK(a.load.concurrency == b.load.concurrency);
    CHECK(a.load.burst_every == b.load.burst_every);
    CHECK(a.load.burst_size == b.load.burst_size);
    REQUIRE(a.dependencies.size() == b.dependencies.size());
    for (std::size_t d = 0; d < a.dependencies.size(); ++d) {
        const bulwark::SimDependency& x = a.dependencies[d];
        const bulwark::SimDependency& y = b.dependencies[d];
        CHECK(x.name == y.name);
        CHECK(x.trace_retry_after == y.trace_retry_after);
        REQUIRE(x.phases.size() == y.phases.size());
        for (std::size_t p = 0; p < x.phases.size(); ++p) {
            CHECK(x.phases[p].name == y.phases[p].name);
            CHECK(x.phases[p].start == y.phases[p].start);
            CHECK(same_latency(x.phases[p].latency, y.phases[p].latency));
            CHECK(x.phases[p].error_rate == y.phases[p].error_rate);
            CHECK(x.phases[p].error_kind == y.phases[p].error_kind);
            CHECK(x.phases[p].retry_after == y.phases[p].retry_after);
            CHECK(x.phases[p].hang == y.phases[p].hang);
        }
        REQUIRE(x.trace.size() == y.trace.size());
        for (std::size_t t = 0; t < x.trace.size(); ++t) {
            CHECK(x.trace[t].at == y.trace[t].at);
            CHECK(x.trace[t].latency == y.trace[t].latency);
            CHECK(x.trace[t].ok == y.trace[t].ok);
            if (!x.trace[t].ok) {
                CHECK(x.trace[t].kind == y.trace[t].kind);
            }
        }
    }
}

std::string error_of(const std::string& json) {
    try {
        (void)bulwark::outage_scenario_from_json(json);
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return "no error";
}

std::string csv_error_of(const std::string& csv) {
    try {
        (void)bulwark::read_outage_trace_csv(csv);
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return "no error";
}

}  // namespace

TEST_CASE("a scenario written as JSON reads back equal, every field", "[outage_scenario_json]") {
    const bulwark::OutageScenario s = full_scenario();
    s.validate();
    const std::string json = bulwark::outage_scenario_to_json(s);
    INFO(json);
    CHECK(json.find(R"("seed":"18446744073709551557")") != std::string::npos);
    CHECK(json.find(R"("start":"2500ms")") == std::string::npos);
    CHECK(json.find(R"("start":"120500ms")") != std::string::npos);
    // Numbers as short as reads back the same: 0.9, not 0.90000000000000002.
    CHECK(json.find(R"("recovered_fraction":0.9,)") != std::string::npos);
    CHECK(json.find(R"("sigma":0.35})") != std::string::npos);
    const bulwark::OutageScenario back = bulwark::outage_scenario_from_json(json);
    check_equal(s, back);
    // And writing it again gives the same bytes.
    CHECK(bulwark::outage_scenario_to_json(back) == json);

    // A small seed is a plain number.
    bulwark::OutageScenario small = s;
    small.seed = 42;
    CHECK(bulwark::outage_scenario_to_json(small).find(R"("seed":42,)") != std::string::npos);
    CHECK(bulwark::outage_scenario_from_json(bulwark::outage_scenario_to_json(small)).seed == 42);
}

TEST_CASE("a hand-written scenario uses defaults, bare durations and numbers of milliseconds",
          "[outage_scenario_json]") {
    const bulwark::OutageScenario s = bulwark::outage_scenario_from_json(R"({
        "name": "sms outage",
        "seed": 7,
        "load": { "arrival": "poisson", "rate_per_second": 200, "duration": "1.5min" },
        "dependencies": [
          { "name": "sms",
            "phases": [ { "latency": "80ms" },
                        { "name": "down", "start": 30000, "error_rate": 1,
                          "latency": { "kind": "fixed", "value": 2.5 } } ] } ]
    })");
    CHECK(s.name == "sms outage");
    CHECK(s.seed == 7);
    CHECK(s.bucket == 1s);  // the default
    CHECK(s.load.arrival == bulwark::SimArrival::poisson);
    CHECK(s.load.duration == 90s);
    CHECK(s.load.concurrency == bulwark::SimLoad{}.concurrency);
    REQUIRE(s.dependencies.size() == 1);
    REQUIRE(s.dependencies[0].phases.size() == 2);
    CHECK(s.dependencies[0].phases[0].start == 0s);
    CHECK(s.dependencies[0].phases[0].latency.kind == bulwark::SimLatencyKind::fixed);
    CHECK(s.dependencies[0].phases[0].latency.value == 80ms);
    CHECK(s.dependencies[0].phases[1].start == 30s);
    CHECK(s.dependencies[0].phases[1].latency.value == 2500us);
    CHECK(s.dependencies[0].phases[1].error_rate == 1.0);
}

TEST_CASE("durations are read in every unit, exactly for whole numbers", "[outage_scenario_json]") {
    bulwark::Duration d{};
    using bulwark::detail::parse_duration_text;
    CHECK((parse_duration_text("7ns", d) && d == 7ns));
    CHECK((parse_duration_text("250us", d) && d == 250us));
    CHECK((parse_duration_text("1500ms", d) && d == 1500ms));
    CHECK((parse_duration_text("1.5s", d) && d == 1500ms));
    CHECK((parse_duration_text("2min", d) && d == 2min));
    CHECK((parse_duration_text("1h", d) && d == 1h));
    CHECK((parse_duration_text("-3s", d) && d == -3s));
    CHECK_FALSE(parse_duration_text("3", d));
    CHECK_FALSE(parse_duration_text("s", d));
    CHECK_FALSE(parse_duration_text("3 s", d));
    CHECK_FALSE(parse_duration_text("3sec", d));
    CHECK_FALSE(parse_duration_text("+3s", d));
    CHECK_FALSE(parse_duration_text("nans", d));
    CHECK_FALSE(parse_duration_text("99999999999h", d));
}

TEST_CASE("malformed scenario JSON is refused naming the path and the value",
          "[outage_scenario_json]") {
    const std::string deps = R"("dependencies": [{"name": "email"}])";
    CHECK(error_of("{").find("outage scenario JSON: ") == 0);
    CHECK(error_of("{").find("at byte 1") != std::string::npos);
    CHECK(error_of("[]") == "outage scenario JSON: $ must be an object, got an array");
    CHECK(error_of("{}") == "outage scenario JSON: $ must have a member, got no \"dependencies\"");
    CHECK(error_of(R"({"name": 5, )" + deps + "}") ==
          "outage scenario JSON: name must be a string, got 5");
    CHECK(error_of(R"({"bukket": "1s", )" + deps + "}") ==
          "outage scenario JSON: $ has an unknown member (known: name, seed, bucket, load, "
          "dependencies, outage_error_rate, recovered_fraction), got \"bukket\"");
    // A member given twice: JSON readers disagree on which one counts, so neither is guessed.
    CHECK(error_of(R"({"dependencies": [{"name": "a", "phases": [{"error_rate": 0.1,)"
                   R"( "error_rate": 1}]}]})") ==
          "outage scenario JSON: dependencies[0].phases[0] has a member given twice, "
          "got \"error_rate\"");
    CHECK(error_of(R"({"dependencies": [], )" + deps + "}") ==
          "outage scenario JSON: $ has a member given twice, got \"dependencies\"");
    // 60 s of 1 ns buckets: 6e10 buckets would exhaust memory before the run ended.
    CHECK(error_of(R"({"bucket": "1ns", )" + deps + "}") ==
          "OutageScenario.bucket must leave at most 1000000 buckets in load.duration (1min), "
          "got 1ns");
    CHECK(error_of(R"({"bucket": "60us", )" + deps + "}") == "no error");  // exactly 1e6
    CHECK(error_of(R"({"seed": -1, )" + deps + "}") ==
          "outage scenario JSON: seed must be a whole number or a string of decimal digits, "
          "got -1");
    CHECK(error_of(R"({"seed": "12x", )" + deps + "}") ==
          "outage scenario JSON: seed must be a whole number or a string of decimal digits, "
          "got \"12x\"");
    CHECK(error_of(R"({"bucket": "1 second", )" + deps + "}")
              .find("outage scenario JSON: bucket must be a duration") == 0);
    CHECK(error_of(R"({"bucket": "1 second", )" + deps + "}").find(", got \"1 second\"") !=
          std::string::npos);
    CHECK(error_of(R"({"load": {"arrival": "steady"}, )" + deps + "}") ==
          "outage scenario JSON: load.arrival must be one of \"constant\", \"poisson\", "
          "\"bursts\", got \"steady\"");
    CHECK(error_of(R"({"load": {"concurrency": 2.5}, )" + deps + "}") ==
          "outage scenario JSON: load.concurrency must be a whole number >= 0, got 2.5");
    CHECK(error_of(R"({"dependencies": {}})") ==
          "outage scenario JSON: dependencies must be an array, got an object");
    CHECK(error_of(R"({"dependencies": [{"phases": []}]})") ==
          "outage scenario JSON: dependencies[0] must have a member, got no \"name\"");
    CHECK(
        error_of(
            R"({"dependencies": [{"name": "a", "phases": [{}, {"start": "1s", "error_rate": "high"}]}]})") ==
        "outage scenario JSON: dependencies[0].phases[1].error_rate must be a number, got "
        "\"high\"");
    CHECK(error_of(R"({"dependencies": [{"name": "a", "phases": [{"error_kind": "flaky"}]}]})") ==
          "outage scenario JSON: dependencies[0].phases[0].error_kind must be one of "
          "\"transient\", \"permanent\", \"rate_limited\", \"timeout\", got \"flaky\"");
    CHECK(error_of(
              R"({"dependencies": [{"name": "a", "phases": [{"latency": {"kind": "gamma"}}]}]})") ==
          "outage scenario JSON: dependencies[0].phases[0].latency.kind must be one of "
          "\"fixed\", \"uniform\", \"log_normal\", \"empirical\", got \"gamma\"");
    CHECK(
        error_of(
            R"({"dependencies": [{"name": "a", "phases": [{"latency": {"kind": "uniform", "low": "1ms"}}]}]})") ==
        "outage scenario JSON: dependencies[0].phases[0].latency must have a member, got no "
        "\"high\"");
    CHECK(
        error_of(
            R"({"dependencies": [{"name": "a", "phases": [{"latency": {"kind": "empirical", "samples": ["1ms", true]}}]}]})")
            .find("dependencies[0].phases[0].latency.samples[1] must be a duration") !=
        std::string::npos);
    CHECK(
        error_of(
            R"({"dependencies": [{"name": "a", "trace": [{"at": "0s", "latency": "1ms", "outcome": "fine"}]}]})") ==
        "outage scenario JSON: dependencies[0].trace[0].outcome must be one of \"ok\", "
        "\"transient\", \"permanent\", \"rate_limited\", \"timeout\", got \"fine\"");
    // What the JSON says but the scenario refuses: validate()'s message.
    CHECK(error_of(R"({"dependencies": [{"name": "a", "phases": [{"error_rate": 1.5}]}]})") ==
          "OutageScenario.dependencies[0].phases[0].error_rate must be in [0, 1], got 1.5");
    // A long hostile value is cut short in the message.
    const std::string long_value(500, 'x');
    CHECK(error_of(R"({"name": 1, "bucket": ")" + long_value + "\", " + deps + "}").size() < 200);
}

TEST_CASE("a trace CSV reads with or without its header, sorted and from 0",
          "[outage_scenario_json]") {
    const std::vector<bulwark::SimTraceSample> trace = bulwark::read_outage_trace_csv(
        "timestamp_ms,latency_ms,outcome\r\n"
        "1733380000100,85.5,ok\r\n"
        "# a comment\n"
        "\n"
        "1733380000000, 40 , transient\n"
        "1733380000250,2000,timeout\n"
        "1733380000250,3,rate_limited\n"
        "1733380001000,1,permanent");
    REQUIRE(trace.size() == 5);
    CHECK(trace[0].at == 0ms);
    CHECK(trace[0].latency == 40ms);
    CHECK_FALSE(trace[0].ok);
    CHECK(trace[0].kind == bulwark::SimErrorKind::transient);
    CHECK(trace[1].at == 100ms);
    CHECK(trace[1].latency == 85500us);
    CHECK(trace[1].ok);
    CHECK(trace[2].kind == bulwark::SimErrorKind::timeout);  // stable for equal timestamps
    CHECK(trace[3].kind == bulwark::SimErrorKind::rate_limited);
    CHECK(trace[4].at == 1000ms);
    CHECK(trace[4].kind == bulwark::SimErrorKind::permanent);

    bulwark::OutageTraceCsvOptions absolute;
    absolute.relative_to_first = false;
    const auto kept = bulwark::read_outage_trace_csv("500,1,ok\n250,1,ok\n", absolute);
    REQUIRE(kept.size() == 2);
    CHECK(kept[0].at == 250ms);
    CHECK(kept[1].at == 500ms);
    CHECK(bulwark::read_outage_trace_csv("").empty());
    CHECK(bulwark::read_outage_trace_csv("timestamp_ms,latency_ms,outcome\n").empty());

    // The trace replays through a scenario that validates.
    bulwark::OutageScenario s;
    s.dependencies[0].trace = trace;
    CHECK_NOTHROW(s.validate());
}

TEST_CASE("a malformed trace CSV is refused naming the line, the column and the value",
          "[outage_scenario_json]") {
    CHECK(csv_error_of("0,1,ok\n1,2\n") ==
          "outage trace CSV line 2: expected 3 fields (timestamp_ms,latency_ms,outcome), got 2: "
          "\"1,2\"");
    CHECK(csv_error_of("0,1,ok,extra\n").find("outage trace CSV line 1: expected 3 fields") == 0);
    CHECK(csv_error_of("timestamp_ms,latency_ms,outcome\n0,1,ok\n\nabc,1,ok\n") ==
          "outage trace CSV line 4: timestamp_ms must be a number of milliseconds, got \"abc\"");
    CHECK(csv_error_of("0,-3,ok\n") ==
          "outage trace CSV line 1: latency_ms must be a number of milliseconds >= 0, got \"-3\"");
    CHECK(csv_error_of("0,nan,ok\n") ==
          "outage trace CSV line 1: latency_ms must be a number of milliseconds >= 0, got "
          "\"nan\"");
    CHECK(csv_error_of("0,1,OK\n") ==
          "outage trace CSV line 1: outcome must be one of ok, transient, permanent, "
          "rate_limited, timeout, got \"OK\"");
    CHECK(csv_error_of("0,1e300,ok\n").find("line 1: latency_ms") != std::string::npos);
    // A header anywhere but first is a bad line.
    CHECK(csv_error_of("0,1,ok\ntimestamp_ms,latency_ms,outcome\n")
              .find("line 2: timestamp_ms must be a number") != std::string::npos);
}

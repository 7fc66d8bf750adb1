// Outage scenarios from JSON and outage traces from CSV: the outage lab's input formats.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_OUTAGE_SCENARIO_JSON_HPP
#define BULWARK_OUTAGE_SCENARIO_JSON_HPP

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <bulwark/detail/json.hpp>
#include <bulwark/detail/json_read.hpp>
#include <bulwark/detail/number.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/outage_scenario.hpp>

namespace bulwark {

namespace detail {

// "12.5" -> 12.5 with the C format whatever the locale; false for anything else (no sign
// allowed unless `negative_ok`, no leading or trailing text, no NaN or infinity).
inline bool parse_plain_number(std::string_view text, double& out, bool negative_ok) {
    if (text.empty() || (!negative_ok && text.front() == '-') || text.front() == '+') {
        return false;
    }
    for (const char c : text) {
        const bool allowed =
            (c >= '0' && c <= '9') || c == '.' || c == '-' || c == 'e' || c == 'E' || c == '+';
        if (!allowed) {
            return false;  // refuses "nan", "inf", hex floats and spaces
        }
    }
    const std::from_chars_result r = std::from_chars(text.data(), text.data() + text.size(), out);
    return r.ec == std::errc() && r.ptr == text.data() + text.size() && is_finite(out);
}

// `count` units of `unit_ns` nanoseconds as a Duration, or false when it does not fit.
inline bool scaled_duration(double count, double unit_ns, Duration& out) {
    const double ns = count * unit_ns;
    // 9.2e18 is just under INT64_MAX; beyond it a cast would be undefined.
    if (!is_finite(ns) || ns > 9.2e18 || ns < -9.2e18) {
        return false;
    }
    out = Duration(static_cast<Duration::rep>(ns < 0 ? ns - 0.5 : ns + 0.5));
    return true;
}

// "250ms", "1.5s", "2min", "1h", "500us", "7ns" -> a Duration; false when not one. Integers are
// converted exactly; a fraction is rounded to the nearest nanosecond.
inline bool parse_duration_text(std::string_view text, Duration& out) {
    struct Unit {
        const char* suffix;
        long long ns;
    };
    // Longest suffix first: "ms" and "min" end in letters that "s" and "n" would also match.
    constexpr Unit units[] = {{"min", 60000000000LL}, {"ms", 1000000LL},
                              {"us", 1000LL},         {"ns", 1LL},
                              {"h", 3600000000000LL}, {"s", 1000000000LL}};
    for (const Unit& unit : units) {
        const std::string_view suffix(unit.suffix);
        if (text.size() <= suffix.size() || text.substr(text.size() - suffix.size()) != suffix) {
            continue;
        }
        const std::string_view number = text.substr(0, text.size() - suffix.size());
        long long whole = 0;
        const std::from_chars_result r =
            std::from_chars(number.data(), number.data() + number.size(), whole);
        if (r.ec == std::errc() && r.ptr == number.data() + number.size() &&
            number.front() != '+') {
            if (whole > 9200000000000000000LL / unit.ns ||
                whole < -9200000000000000000LL / unit.ns) {
                return false;
            }
            out = Duration(whole * unit.ns);
            return true;
        }
        double value = 0.0;
        return parse_plain_number(number, value, true) &&
               scaled_duration(value, static_cast<double>(unit.ns), out);
    }
    return false;
}

// "ok" or an error kind's name into `s.ok` and `s.kind`; false for anything else.
inline bool outcome_from_text(std::string_view text, SimTraceSample& s) {
    if (text == "ok") {
        s.ok = true;
        return true;
    }
    for (const SimErrorKind k : {SimErrorKind::transient, SimErrorKind::permanent,
                                 SimErrorKind::rate_limited, SimErrorKind::timeout}) {
        if (text == to_string(k)) {
            s.ok = false;
            s.kind = k;
            return true;
        }
    }
    return false;
}

// Reads one OutageScenario document; every error names the member's JSON path and its value.
class OutageScenarioJsonReader {
public:
    static OutageScenario read(std::string_view text) {
        JsonValue root;
        std::string error;
        if (!read_json(text, root, error, 16)) {
            throw_invalid_argument("outage scenario JSON: " + error);
        }
        OutageScenario scenario;
        object(root, "$",
               {"name", "seed", "bucket", "load", "dependencies", "outage_error_rate",
                "recovered_fraction"});
        if (const JsonValue* v = root.find("name")) {
            scenario.name = string(*v, "name");
        }
        if (const JsonValue* v = root.find("seed")) {
            scenario.seed = seed(*v, "seed");
        }
        if (const JsonValue* v = root.find("bucket")) {
            scenario.bucket = duration(*v, "bucket");
        }
        if (const JsonValue* v = root.find("load")) {
            scenario.load = load(*v, "load");
        }
        if (const JsonValue* v = root.find("outage_error_rate")) {
            scenario.outage_error_rate = number(*v, "outage_error_rate");
        }
        if (const JsonValue* v = root.find("recovered_fraction")) {
            scenario.recovered_fraction = number(*v, "recovered_fraction");
        }
        const JsonValue& deps = required(root, "dependencies", "$");
        array(deps, "dependencies");
        scenario.dependencies.clear();  // the default's one dependency is replaced
        for (std::size_t i = 0; i < deps.items.size(); ++i) {
            scenario.dependencies.push_back(
                dependency(deps.items[i], "dependencies[" + std::to_string(i) + "]"));
        }
        scenario.validate();
        return scenario;
    }

private:
    // The value as it stood in the document, cut short, for an error message.
    static std::string shown(const JsonValue& v) {
        std::string out;
        switch (v.kind) {
            case JsonValue::Kind::null:
                return "null";
            case JsonValue::Kind::boolean:
                return v.boolean ? "true" : "false";
            case JsonValue::Kind::number:
                json_number(out, v.number);
                return out;
            case JsonValue::Kind::string:
                json_string(out, v.text.size() > 60 ? v.text.substr(0, 60) + "..." : v.text);
                return out;
            case JsonValue::Kind::array:
                return "an array";
            case JsonValue::Kind::object:
                return "an object";
        }
        return "?";
    }

    [[noreturn]] static void fail(const std::string& path, std::string_view requirement,
                                  const JsonValue& v) {
        throw_invalid_option("outage scenario JSON: " + path, requirement, shown(v));
    }

    static void object(const JsonValue& v, const std::string& path,
                       std::initializer_list<const char*> known) {
        if (!v.is(JsonValue::Kind::object)) {
            fail(path, "must be an object", v);
        }
        // A misspelt member ("eror_rate") would otherwise be ignored and its default used, and
        // of a member given twice only the first would count (other readers take the last).
        for (std::size_t i = 0; i < v.members.size(); ++i) {
            const auto& m = v.members[i];
            for (std::size_t j = 0; j < i; ++j) {
                if (v.members[j].first == m.first) {
                    std::string quoted;
                    json_string(quoted, m.first);
                    throw_invalid_option("outage scenario JSON: " + path,
                                         "has a member given twice", quoted);
                }
            }
            const bool ok = std::any_of(known.begin(), known.end(),
                                        [&](const char* k) { return m.first == k; });
            if (!ok) {
                std::string names;
                for (const char* k : known) {
                    names += names.empty() ? "" : ", ";
                    names += k;
                }
                std::string quoted;
                json_string(quoted, m.first);
                throw_invalid_option("outage scenario JSON: " + path,
                                     "has an unknown member (known: " + names + ")", quoted);
            }
        }
    }

    static void array(const JsonValue& v, const std::string& path) {
        if (!v.is(JsonValue::Kind::array)) {
            fail(path, "must be an array", v);
        }
    }

    static const JsonValue& required(const JsonValue& v, const char* name,
                                     const std::string& path) {
        const JsonValue* m = v.find(name);
        if (m == nullptr) {
            throw_invalid_option("outage scenario JSON: " + path, "must have a member",
                                 std::string("no \"") + name + "\"");
        }
        return *m;
    }

    static std::string join(const std::string& path, const char* name) { return path + "." + name; }

    static std::string string(const JsonValue& v, const std::string& path) {
        if (!v.is(JsonValue::Kind::string)) {
            fail(path, "must be a string", v);
        }
        return v.text;
    }

    static double number(const JsonValue& v, const std::string& path) {
        if (!v.is(JsonValue::Kind::number)) {
            fail(path, "must be a number", v);
        }
        return v.number;
    }

    static std::size_t count(const JsonValue& v, const std::string& path) {
        // 2^53: every integer up to it is exact in the double the reader holds.
        if (!v.is(JsonValue::Kind::number) || v.number < 0 || v.number > 9007199254740992.0 ||
            static_cast<double>(static_cast<std::uint64_t>(v.number)) != v.number) {
            fail(path, "must be a whole number >= 0", v);
        }
        return static_cast<std::size_t>(v.number);
    }

    // A number up to 2^53, or a string of decimal digits for any 64-bit seed.
    static std::uint64_t seed(const JsonValue& v, const std::string& path) {
        if (v.is(JsonValue::Kind::string)) {
            std::uint64_t out = 0;
            const char* end = v.text.data() + v.text.size();
            const std::from_chars_result r = std::from_chars(v.text.data(), end, out);
            if (v.text.empty() || r.ec != std::errc() || r.ptr != end) {
                fail(path, "must be a whole number or a string of decimal digits", v);
            }
            return out;
        }
        if (!v.is(JsonValue::Kind::number) || v.number < 0 || v.number > 9007199254740992.0 ||
            static_cast<double>(static_cast<std::uint64_t>(v.number)) != v.number) {
            fail(path, "must be a whole number or a string of decimal digits", v);
        }
        return static_cast<std::uint64_t>(v.number);
    }

    // "250ms", "1.5s", "2min", "1h", "500us", "7ns", or a number of milliseconds.
    static Duration duration(const JsonValue& v, const std::string& path) {
        Duration out{};
        if (v.is(JsonValue::Kind::number)) {
            if (scaled_duration(v.number, 1e6, out)) {
                return out;
            }
        } else if (v.is(JsonValue::Kind::string) && parse_duration_text(v.text, out)) {
            return out;
        }
        fail(path,
             "must be a duration (\"250ms\", \"1.5s\", \"2min\", \"1h\", \"500us\", \"7ns\") "
             "or a number of milliseconds",
             v);
    }

    static SimErrorKind error_kind(const JsonValue& v, const std::string& path) {
        if (v.is(JsonValue::Kind::string)) {
            for (const SimErrorKind k : {SimErrorKind::transient, SimErrorKind::permanent,
                                         SimErrorKind::rate_limited, SimErrorKind::timeout}) {
                if (v.text == to_string(k)) {
                    return k;
                }
            }
        }
        fail(path, R"(must be one of "transient", "permanent", "rate_limited", "timeout")", v);
    }

    static SimLatency latency(const JsonValue& v, const std::string& path) {
        if (!v.is(JsonValue::Kind::object)) {
            // A bare duration is a fixed latency: "latency": "80ms".
            return SimLatency::fixed_at(duration(v, path));
        }
        const JsonValue& kind = required(v, "kind", path);
        const std::string kind_path = join(path, "kind");
        const std::string k = kind.is(JsonValue::Kind::string) ? kind.text : std::string();
        if (k == "fixed") {
            object(v, path, {"kind", "value"});
            return SimLatency::fixed_at(duration(required(v, "value", path), join(path, "value")));
        }
        if (k == "uniform") {
            object(v, path, {"kind", "low", "high"});
            return SimLatency::uniform(duration(required(v, "low", path), join(path, "low")),
                                       duration(required(v, "high", path), join(path, "high")));
        }
        if (k == "log_normal") {
            object(v, path, {"kind", "median", "sigma"});
            return SimLatency::log_normal(
                duration(required(v, "median", path), join(path, "median")),
                number(required(v, "sigma", path), join(path, "sigma")));
        }
        if (k == "empirical") {
            object(v, path, {"kind", "samples"});
            const JsonValue& samples = required(v, "samples", path);
            const std::string samples_path = join(path, "samples");
            array(samples, samples_path);
            std::vector<Duration> out;
            out.reserve(samples.items.size());
            for (std::size_t i = 0; i < samples.items.size(); ++i) {
                out.push_back(
                    duration(samples.items[i], samples_path + "[" + std::to_string(i) + "]"));
            }
            return SimLatency::empirical(std::move(out));
        }
        fail(kind_path, R"(must be one of "fixed", "uniform", "log_normal", "empirical")", kind);
    }

    static SimPhase phase(const JsonValue& v, const std::string& path) {
        object(v, path,
               {"name", "start", "latency", "error_rate", "error_kind", "retry_after", "hang"});
        SimPhase p;
        if (const JsonValue* m = v.find("name")) {
            p.name = string(*m, join(path, "name"));
        }
        if (const JsonValue* m = v.find("start")) {
            p.start = duration(*m, join(path, "start"));
        }
        if (const JsonValue* m = v.find("latency")) {
            p.latency = latency(*m, join(path, "latency"));
        }
        if (const JsonValue* m = v.find("error_rate")) {
            p.error_rate = number(*m, join(path, "error_rate"));
        }
        if (const JsonValue* m = v.find("error_kind")) {
            p.error_kind = error_kind(*m, join(path, "error_kind"));
        }
        if (const JsonValue* m = v.find("retry_after")) {
            p.retry_after = duration(*m, join(path, "retry_after"));
        }
        if (const JsonValue* m = v.find("hang")) {
            p.hang = duration(*m, join(path, "hang"));
        }
        return p;
    }

    static SimTraceSample sample(const JsonValue& v, const std::string& path) {
        object(v, path, {"at", "latency", "outcome"});
        SimTraceSample s;
        s.at = duration(required(v, "at", path), join(path, "at"));
        s.latency = duration(required(v, "latency", path), join(path, "latency"));
        const JsonValue& outcome = required(v, "outcome", path);
        if (!outcome_from_text(outcome.is(JsonValue::Kind::string) ? outcome.text : "", s)) {
            fail(join(path, "outcome"),
                 "must be one of \"ok\", \"transient\", \"permanent\", \"rate_limited\", "
                 "\"timeout\"",
                 outcome);
        }
        return s;
    }

    static SimDependency dependency(const JsonValue& v, const std::string& path) {
        object(v, path, {"name", "phases", "trace", "trace_retry_after"});
        SimDependency d;
        d.name = string(required(v, "name", path), join(path, "name"));
        if (const JsonValue* m = v.find("phases")) {
            const std::string p = join(path, "phases");
            array(*m, p);
            d.phases.clear();  // the default's one healthy phase is replaced, not added to
            for (std::size_t i = 0; i < m->items.size(); ++i) {
                d.phases.push_back(phase(m->items[i], p + "[" + std::to_string(i) + "]"));
            }
        }
        if (const JsonValue* m = v.find("trace")) {
            const std::string p = join(path, "trace");
            array(*m, p);
            for (std::size_t i = 0; i < m->items.size(); ++i) {
                d.trace.push_back(sample(m->items[i], p + "[" + std::to_string(i) + "]"));
            }
        }
        if (const JsonValue* m = v.find("trace_retry_after")) {
            d.trace_retry_after = duration(*m, join(path, "trace_retry_after"));
        }
        return d;
    }

    static SimArrival arrival(const JsonValue& v, const std::string& path) {
        if (v.is(JsonValue::Kind::string)) {
            for (const SimArrival a :
                 {SimArrival::constant, SimArrival::poisson, SimArrival::bursts}) {
                if (v.text == to_string(a)) {
                    return a;
                }
            }
        }
        fail(path, R"(must be one of "constant", "poisson", "bursts")", v);
    }

    static SimLoad load(const JsonValue& v, const std::string& path) {
        object(
            v, path,
            {"arrival", "rate_per_second", "duration", "concurrency", "burst_every", "burst_size"});
        SimLoad l;
        if (const JsonValue* m = v.find("arrival")) {
            l.arrival = arrival(*m, join(path, "arrival"));
        }
        if (const JsonValue* m = v.find("rate_per_second")) {
            l.rate_per_second = number(*m, join(path, "rate_per_second"));
        }
        if (const JsonValue* m = v.find("duration")) {
            l.duration = duration(*m, join(path, "duration"));
        }
        if (const JsonValue* m = v.find("concurrency")) {
            l.concurrency = count(*m, join(path, "concurrency"));
        }
        if (const JsonValue* m = v.find("burst_every")) {
            l.burst_every = duration(*m, join(path, "burst_every"));
        }
        if (const JsonValue* m = v.find("burst_size")) {
            l.burst_size = count(*m, join(path, "burst_size"));
        }
        return l;
    }
};

inline void json_duration(JsonWriter& w, Duration d) {
    w.value(format_duration(d));  // exact: "1500ms", "250us"
}

inline void json_exact_number(JsonWriter& w, double v) {
    // The shortest of 15, 16 or 17 significant digits that reads back as the same double (0.95,
    // not 0.94999999999999996); 17 always does.
    std::string text;
    for (int digits = 15; digits <= 17; ++digits) {
        char buffer[40];
        std::snprintf(buffer, sizeof buffer, "%.*g", digits, v);
        text = with_decimal_point(buffer);
        double back = 0.0;
        const std::from_chars_result r =
            std::from_chars(text.data(), text.data() + text.size(), back);
        if (r.ec == std::errc() && back == v) {
            break;
        }
    }
    w.raw(text);
}

}  // namespace detail

// Reads an OutageScenario from a JSON document and validates it (OutageScenario::validate()).
// The members, each optional unless marked (defaults are OutageScenario's):
//   { "name": "email outage", "seed": 42, "bucket": "1s",
//     "outage_error_rate": 0.5, "recovered_fraction": 0.95,
//     "load": { "arrival": "constant" | "poisson" | "bursts", "rate_per_second": 200,
//               "duration": "10min", "concurrency": 64, "burst_every": "30s", "burst_size": 500 },
//     "dependencies": [                                                  (required)
//       { "name": "email",                                               (required)
//         "phases": [ { "name": "down", "start": "2min",                 (start required)
//                       "latency": "80ms" | { "kind": "fixed", "value": "80ms" }
//                                 | { "kind": "uniform", "low": "50ms", "high": "120ms" }
//                                 | { "kind": "log_normal", "median": "80ms", "sigma": 0.4 }
//                                 | { "kind": "empirical", "samples": ["70ms", "95ms"] },
//                       "error_rate": 1.0,
//                       "error_kind": "transient" | "permanent" | "rate_limited" | "timeout",
//                       "retry_after": "20s", "hang": "30s" } ],      (start 0 when left out)
//         "trace": [ { "at": "1200ms", "latency": "85ms", "outcome": "ok" | <an error kind> } ],
//         "trace_retry_after": "1s" } ] }
// A duration is a string with a unit (ns, us, ms, s, min, h; "1.5s" is allowed) or a number of
// milliseconds; a seed above 2^53 is written as a string of digits. Unknown members are refused,
// so a misspelt one cannot silently keep its default.
// Throws std::invalid_argument naming the JSON path and the value:
//   outage scenario JSON: dependencies[0].phases[1].error_rate must be a number, got "high"
inline OutageScenario outage_scenario_from_json(std::string_view json) {
    return detail::OutageScenarioJsonReader::read(json);
}

// Writes `scenario` as the JSON outage_scenario_from_json reads back to an equal scenario
// (durations exactly, numbers with 17 significant digits). Compact, deterministic.
inline std::string outage_scenario_to_json(const OutageScenario& scenario) {
    detail::JsonWriter w;
    w.begin_object().field("name", scenario.name);
    if (scenario.seed <= 9007199254740992ULL) {
        w.field("seed", static_cast<std::uint64_t>(scenario.seed));
    } else {
        w.field("seed", std::to_string(scenario.seed));
    }
    w.key("bucket");
    detail::json_duration(w, scenario.bucket);
    w.key("outage_error_rate");
    detail::json_exact_number(w, scenario.outage_error_rate);
    w.key("recovered_fraction");
    detail::json_exact_number(w, scenario.recovered_fraction);
    const SimLoad& l = scenario.load;
    w.key("load").begin_object().field("arrival", to_string(l.arrival));
    w.key("rate_per_second");
    detail::json_exact_number(w, l.rate_per_second);
    w.key("duration");
    detail::json_duration(w, l.duration);
    w.field("concurrency", static_cast<std::uint64_t>(l.concurrency));
    w.key("burst_every");
    detail::json_duration(w, l.burst_every);
    w.field("burst_size", static_cast<std::uint64_t>(l.burst_size)).end_object();
    w.key("dependencies").begin_array();
    for (const SimDependency& d : scenario.dependencies) {
        w.begin_object().field("name", d.name).key("phases").begin_array();
        for (const SimPhase& p : d.phases) {
            w.begin_object().field("name", p.name).key("start");
            detail::json_duration(w, p.start);
            w.key("latency").begin_object().field("kind", to_string(p.latency.kind));
            switch (p.latency.kind) {
                case SimLatencyKind::fixed:
                    w.key("value");
                    detail::json_duration(w, p.latency.value);
                    break;
                case SimLatencyKind::uniform:
                    w.key("low");
                    detail::json_duration(w, p.latency.low);
                    w.key("high");
                    detail::json_duration(w, p.latency.high);
                    break;
                case SimLatencyKind::log_normal:
                    w.key("median");
                    detail::json_duration(w, p.latency.median);
                    w.key("sigma");
                    detail::json_exact_number(w, p.latency.sigma);
                    break;
                case SimLatencyKind::empirical:
                    w.key("samples").begin_array();
                    for (const Duration s : p.latency.samples) {
                        detail::json_duration(w, s);
                    }
                    w.end_array();
                    break;
            }
            w.end_object().key("error_rate");
            detail::json_exact_number(w, p.error_rate);
            w.field("error_kind", to_string(p.error_kind)).key("retry_after");
            detail::json_duration(w, p.retry_after);
            w.key("hang");
            detail::json_duration(w, p.hang);
            w.end_object();
        }
        w.end_array();
        if (!d.trace.empty()) {
            w.key("trace").begin_array();
            for (const SimTraceSample& s : d.trace) {
                w.begin_object().key("at");
                detail::json_duration(w, s.at);
                w.key("latency");
                detail::json_duration(w, s.latency);
                w.field("outcome", s.ok ? "ok" : to_string(s.kind)).end_object();
            }
            w.end_array();
        }
        w.key("trace_retry_after");
        detail::json_duration(w, d.trace_retry_after);
        w.end_object();
    }
    w.end_array().end_object();
    return w.take();
}

// How read_outage_trace_csv places the samples on the scenario's time line.
struct OutageTraceCsvOptions {
    // true (default): the earliest timestamp becomes 0, so a trace of epoch milliseconds
    // replays from the scenario's start; false: timestamp_ms is already the offset.
    bool relative_to_first = true;

    void validate() const {}
};

// Reads a recorded trace, one call a line: "timestamp_ms,latency_ms,outcome", outcome one of
// ok, transient, permanent, rate_limited, timeout. The header line "timestamp_ms,latency_ms,
// outcome" is optional; blank lines and lines starting with '#' are skipped; CRLF is accepted;
// milliseconds may have a fraction ("12.5"). Samples are returned sorted by time (a log of
// concurrent calls is rarely in order). For SimDependency::trace:
//   dependency.trace = read_outage_trace_csv(file_contents);
// Throws std::invalid_argument naming the line number, the column and the value:
//   outage trace CSV line 7: latency_ms must be a number of milliseconds >= 0, got "-3"
inline std::vector<SimTraceSample> read_outage_trace_csv(
    std::string_view csv, const OutageTraceCsvOptions& options = {}) {
    options.validate();
    std::vector<SimTraceSample> out;
    std::size_t line_number = 0;
    bool first_content = true;
    const auto trim = [](std::string_view s) {
        while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
            s.remove_prefix(1);
        }
        while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
            s.remove_suffix(1);
        }
        return s;
    };
    const auto quoted = [](std::string_view s) {
        std::string q;
        detail::json_string(q, s.size() > 60 ? std::string(s.substr(0, 60)) + "..." : s);
        return q;
    };
    while (!csv.empty()) {
        const std::size_t end = csv.find('\n');
        const std::string_view raw = csv.substr(0, end);
        csv.remove_prefix(end == std::string_view::npos ? csv.size() : end + 1);
        ++line_number;
        const std::string_view line = trim(raw);
        if (line.empty() || line.front() == '#') {
            continue;
        }
        const std::string where = "outage trace CSV line " + std::to_string(line_number) + ": ";
        std::string_view fields[3];
        std::size_t n = 0;
        std::string_view rest = line;
        for (;;) {
            const std::size_t comma = rest.find(',');
            if (n == 3) {
                detail::throw_invalid_argument(where +
                                               "expected 3 fields (timestamp_ms,latency_ms,"
                                               "outcome), got more: " +
                                               quoted(line));
            }
            fields[n++] = trim(rest.substr(0, comma));
            if (comma == std::string_view::npos) {
                break;
            }
            rest.remove_prefix(comma + 1);
        }
        if (first_content) {
            first_content = false;
            if (n == 3 && fields[0] == "timestamp_ms" && fields[1] == "latency_ms" &&
                fields[2] == "outcome") {
                continue;
            }
        }
        if (n != 3) {
            detail::throw_invalid_argument(
                where + "expected 3 fields (timestamp_ms,latency_ms,outcome), got " +
                std::to_string(n) + ": " + quoted(line));
        }
        SimTraceSample s;
        double ms = 0.0;
        if (!detail::parse_plain_number(fields[0], ms, true) ||
            !detail::scaled_duration(ms, 1e6, s.at)) {
            detail::throw_invalid_option(where + "timestamp_ms", "must be a number of milliseconds",
                                         quoted(fields[0]));
        }
        if (!detail::parse_plain_number(fields[1], ms, false) ||
            !detail::scaled_duration(ms, 1e6, s.latency)) {
            detail::throw_invalid_option(
                where + "latency_ms", "must be a number of milliseconds >= 0", quoted(fields[1]));
        }
        if (!detail::outcome_from_text(fields[2], s)) {
            detail::throw_invalid_option(
                where + "outcome", "must be one of ok, transient, permanent, rate_limited, timeout",
                quoted(fields[2]));
        }
        out.push_back(s);
    }
    std::stable_sort(out.begin(), out.end(),
                     [](const SimTraceSample& a, const SimTraceSample& b) { return a.at < b.at; });
    if (options.relative_to_first && !out.empty()) {
        const Duration first = out.front().at;
        for (SimTraceSample& s : out) {
            s.at -= first;
        }
    }
    return out;
}

}  // namespace bulwark

#endif  // BULWARK_OUTAGE_SCENARIO_JSON_HPP

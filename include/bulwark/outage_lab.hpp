// The outage lab in one include: runner, reports, input formats, assertions for tests.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_OUTAGE_LAB_HPP
#define BULWARK_OUTAGE_LAB_HPP

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include <bulwark/circuit_breaker_options.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/outage_report.hpp>
#include <bulwark/outage_runner.hpp>
#include <bulwark/outage_scenario.hpp>
#include <bulwark/outage_scenario_json.hpp>
#include <bulwark/outage_timeline.hpp>

namespace bulwark {

// The timeline as canonical text: one line per field group, integers in nanoseconds, ratios with
// six decimals. Two runs of the same scenario and seed give the same bytes with every compiler
// and standard library (the determinism test compares them, and their checksum).
inline std::string to_canonical_text(const OutageTimeline& t) {
    std::string out;
    const auto num = [&out](std::uint64_t v) {
        out += std::to_string(v);
    };
    const auto dur = [&out](Duration d) {
        out += std::to_string(d.count());
    };
    // Six decimals from integers, not printf: "%.6f" follows the C locale, and a program that
    // set a decimal-comma locale would get other bytes and another checksum.
    const auto ratio = [&out](double v) {
        if (!(v == v)) {
            out += "nan";
            return;
        }
        const double scaled = std::round((v < 0 ? -v : v) * 1e6);
        if (scaled >= 1e18) {
            out += v < 0 ? "-inf" : "inf";
            return;
        }
        const auto units = static_cast<std::uint64_t>(scaled);
        if (v < 0 && units != 0) {
            out += '-';
        }
        out += std::to_string(units / 1000000U);
        out += '.';
        const std::string fraction = std::to_string(units % 1000000U);
        out.append(6 - fraction.size(), '0');
        out += fraction;
    };
    out += "scenario=" + t.scenario + "\nconfiguration=" + t.configuration + "\nbucket=";
    dur(t.bucket);
    out += "\nelapsed=";
    dur(t.elapsed);
    out += "\ndependencies=";
    for (const std::string& d : t.dependencies) {
        out += d + ";";
    }
    out += "\nbreakers=";
    for (const std::string& b : t.breakers) {
        out += b + ";";
    }
    out += '\n';
    for (const SimBucket& b : t.buckets) {
        out += "b ";
        dur(b.start);
        out += " o=";
        num(b.offered);
        out += " s=";
        num(b.succeeded);
        out += " f=";
        num(b.failed);
        out += " k=";
        for (std::uint64_t k : b.failed_by_kind) {
            num(k);
            out += ',';
        }
        out += " r=";
        num(b.rejected);
        for (const auto& rp : b.rejected_by_policy) {
            out += " [" + rp.first + "]=";
            num(rp.second);
        }
        out += " rt=";
        num(b.retries);
        out += " fb=";
        num(b.fallbacks);
        for (const SimDependencyBucket& d : b.per_dependency) {
            out += " d=";
            num(d.calls);
            out += '/';
            num(d.successes);
            out += '/';
            num(d.failures);
            out += d.down ? "!" : "";
        }
        out += " br=";
        for (std::uint8_t s : b.breaker_state) {
            num(s);
            out += ',';
        }
        out += " p50=";
        dur(b.p50);
        out += " p99=";
        dur(b.p99);
        out += '\n';
    }
    for (const SimBreakerTransition& tr : t.transitions) {
        out += "t ";
        dur(tr.at);
        out += ' ';
        num(tr.breaker);
        out += ' ';
        num(tr.from);
        out += "->";
        num(tr.to);
        for (std::uint64_t c : tr.dependency_calls) {
            out += ' ';
            num(c);
        }
        out += '\n';
    }
    for (const SimOutage& o : t.outages) {
        out += "outage ";
        num(o.dependency);
        out += ' ';
        dur(o.start);
        out += ' ';
        dur(o.end);
        out += ' ';
        num(o.calls_before);
        out += '\n';
    }
    const OutageSummary& s = t.summary;
    out += "summary calls=";
    num(s.calls);
    out += " succeeded=";
    num(s.succeeded);
    out += " failed=";
    num(s.failed);
    out += " rejected=";
    num(s.rejected);
    out += " success_rate=";
    ratio(s.success_rate);
    out += " p50=";
    dur(s.p50);
    out += " p99=";
    dur(s.p99);
    out += " retries=";
    num(s.retries);
    out += " fallbacks=";
    num(s.fallbacks);
    out += " down_calls=";
    num(s.calls_to_failing_dependency_while_down);
    out += " offered_down=";
    num(s.calls_offered_while_down);
    out += " extra_load=";
    ratio(s.extra_load_ratio);
    out += " ttr=";
    if (s.time_to_recover) {
        dur(*s.time_to_recover);
    } else {
        out += "none";
    }
    out += " lost=";
    num(s.lost);
    out += " delivered=";
    num(s.delivered);
    out += " dead_lettered=";
    num(s.dead_lettered);
    out += '\n';
    return out;
}

// FNV-1a (64 bits) of to_canonical_text(t), as 16 lowercase hex digits: a short fingerprint to
// keep as a golden value.
inline std::string timeline_checksum(const OutageTimeline& t) {
    const std::string text = to_canonical_text(t);
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (char c : text) {
        h ^= static_cast<unsigned char>(c);
        h *= 0x100000001b3ULL;
    }
    char buffer[24];
    std::snprintf(buffer, sizeof buffer, "%016llx", static_cast<unsigned long long>(h));
    return buffer;
}

// What an outage-lab assertion found: passed, and a sentence saying what was seen either way.
//   auto check = bulwark::breaker_opens_within(timeline, "provider", 20);
//   CHECK(check);                 // Catch2 prints check.message when it fails
//   if (!check) fail(check.message);
struct LabCheck {
    bool passed = false;
    std::string message;
    explicit operator bool() const noexcept { return passed; }
};

// Streams the message (Catch2 and other frameworks print a failed check this way). A template
// on the stream, so that this header needs no <ostream>.
template <class Stream>
auto operator<<(Stream& os, const LabCheck& check) -> decltype(os << std::string()) {
    return os << std::string(check.passed ? "passed: " : "FAILED: ") + check.message;
}

// Thrown by the require_ variants of the assertions.
class OutageAssertionError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Throws OutageAssertionError with the check's message unless it passed.
inline void require(const LabCheck& check) {
    if (!check.passed) {
        throw OutageAssertionError(check.message);
    }
}

namespace detail {
inline std::optional<std::size_t> lab_index(const std::vector<std::string>& names,
                                            std::string_view name) {
    for (std::size_t i = 0; i < names.size(); ++i) {
        if (names[i] == name) {
            return i;
        }
    }
    return std::nullopt;
}

inline std::string lab_seconds(Duration d) {
    char buffer[48];
    std::snprintf(buffer, sizeof buffer, "%.3f s", static_cast<double>(d.count()) / 1e9);
    return buffer;
}
}  // namespace detail

// "The breaker opens within N calls of the outage": after the first outage of `dependency`
// (empty: the first outage of any dependency) began, breaker `breaker` turns open (or forced
// open) before more than `calls` calls have reached that dependency.
inline LabCheck breaker_opens_within(const OutageTimeline& t, std::string_view breaker,
                                     std::uint64_t calls, std::string_view dependency = {}) {
    const auto b = detail::lab_index(t.breakers, breaker);
    if (!b) {
        return {false, "no breaker named '" + std::string(breaker) + "' was watched"};
    }
    const SimOutage* outage = nullptr;
    std::optional<std::size_t> dep;
    if (!dependency.empty()) {
        dep = detail::lab_index(t.dependencies, dependency);
        if (!dep) {
            return {false, "no dependency named '" + std::string(dependency) + "'"};
        }
    }
    for (const SimOutage& o : t.outages) {
        if ((!dep || o.dependency == *dep) && (outage == nullptr || o.start < outage->start)) {
            outage = &o;
        }
    }
    if (outage == nullptr) {
        return {false,
                "the scenario has no outage" +
                    (dependency.empty() ? std::string() : " of '" + std::string(dependency) + "'")};
    }
    const std::string& dep_name = t.dependencies[outage->dependency];
    for (const SimBreakerTransition& tr : t.transitions) {
        const auto to = static_cast<CircuitState>(tr.to);
        if (tr.breaker != *b || tr.at < outage->start ||
            (to != CircuitState::open && to != CircuitState::forced_open)) {
            continue;
        }
        const std::uint64_t seen = tr.dependency_calls[outage->dependency] - outage->calls_before;
        std::string msg = "breaker '" + std::string(breaker) + "' opened " +
                          detail::lab_seconds(tr.at - outage->start) + " after the outage of '" +
                          dep_name + "' began, after " + std::to_string(seen) +
                          " calls reached it (limit " + std::to_string(calls) + ")";
        return {seen <= calls, std::move(msg)};
    }
    return {false, "breaker '" + std::string(breaker) + "' never opened after the outage of '" +
                       dep_name + "' began at " + detail::lab_seconds(outage->start)};
}

// "The dependency never sees more than X calls/s while down": in every bucket in which
// `dependency` was down for the whole bucket, the calls that reached it, per second of bucket,
// are at most `calls_per_second`. Fails when no bucket was wholly down (nothing to check).
inline LabCheck dependency_rate_while_down_at_most(const OutageTimeline& t,
                                                   std::string_view dependency,
                                                   double calls_per_second) {
    const auto dep = detail::lab_index(t.dependencies, dependency);
    if (!dep) {
        return {false, "no dependency named '" + std::string(dependency) + "'"};
    }
    const double seconds = static_cast<double>(t.bucket.count()) / 1e9;
    double worst = -1.0;
    Duration worst_at{0};
    std::size_t down_buckets = 0;
    for (const SimBucket& b : t.buckets) {
        const SimDependencyBucket& d = b.per_dependency[*dep];
        if (!d.down) {
            continue;
        }
        ++down_buckets;
        const double rate = static_cast<double>(d.calls) / seconds;
        if (rate > worst) {
            worst = rate;
            worst_at = b.start;
        }
    }
    if (down_buckets == 0) {
        return {false, "'" + std::string(dependency) + "' was never down for a whole bucket"};
    }
    char buffer[160];
    std::snprintf(buffer, sizeof buffer, "%.1f calls/s at most (in the bucket at %s; limit %.1f)",
                  worst, detail::lab_seconds(worst_at).c_str(), calls_per_second);
    return {worst <= calls_per_second,
            "while down, '" + std::string(dependency) + "' saw " + buffer};
}

// "p99 stays under Y": every bucket's caller-seen p99 (and the whole run's) is at most `limit`.
inline LabCheck p99_stays_under(const OutageTimeline& t, Duration limit) {
    Duration worst = t.summary.p99;
    Duration worst_at = Duration::min();
    for (const SimBucket& b : t.buckets) {
        if (b.p99 > worst) {
            worst = b.p99;
            worst_at = b.start;
        }
    }
    std::string where = worst_at == Duration::min()
                            ? "over the run"
                            : "in the bucket at " + detail::lab_seconds(worst_at);
    return {worst <= limit, "worst p99 " + detail::format_duration(worst) + " " + where +
                                " (limit " + detail::format_duration(limit) + ")"};
}

// Whole-run success rate at least `rate` (in [0, 1]).
inline LabCheck success_rate_at_least(const OutageTimeline& t, double rate) {
    char buffer[96];
    std::snprintf(buffer, sizeof buffer, "success rate %.4f (limit %.4f)", t.summary.success_rate,
                  rate);
    return {t.summary.success_rate >= rate, buffer};
}

inline void require_breaker_opens_within(const OutageTimeline& t, std::string_view breaker,
                                         std::uint64_t calls, std::string_view dependency = {}) {
    require(breaker_opens_within(t, breaker, calls, dependency));
}
inline void require_dependency_rate_while_down_at_most(const OutageTimeline& t,
                                                       std::string_view dependency,
                                                       double calls_per_second) {
    require(dependency_rate_while_down_at_most(t, dependency, calls_per_second));
}
inline void require_p99_stays_under(const OutageTimeline& t, Duration limit) {
    require(p99_stays_under(t, limit));
}
inline void require_success_rate_at_least(const OutageTimeline& t, double rate) {
    require(success_rate_at_least(t, rate));
}

}  // namespace bulwark

#endif  // BULWARK_OUTAGE_LAB_HPP

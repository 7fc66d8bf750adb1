// Outage lab scenarios: simulated dependencies over virtual time, their phases, and the load.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_OUTAGE_SCENARIO_HPP
#define BULWARK_OUTAGE_SCENARIO_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <bulwark/detail/throw.hpp>
#include <bulwark/time.hpp>

namespace bulwark {

// How a simulated dependency's latency is drawn.
enum class SimLatencyKind : std::uint8_t { fixed, uniform, log_normal, empirical };

inline const char* to_string(SimLatencyKind kind) noexcept {
    switch (kind) {
        case SimLatencyKind::fixed:
            return "fixed";
        case SimLatencyKind::uniform:
            return "uniform";
        case SimLatencyKind::log_normal:
            return "log_normal";
        case SimLatencyKind::empirical:
            return "empirical";
    }
    return "unknown";
}

// A latency distribution for a simulated dependency. Draws are made by the lab's own seeded
// generator (never a std:: distribution), so a scenario gives the same draws with every standard
// library.
//   auto l = bulwark::SimLatency::log_normal(20ms, 0.5);  // median 20 ms, sigma 0.5
struct SimLatency {
    SimLatencyKind kind = SimLatencyKind::fixed;
    // kind == fixed: every call takes this long. >= 0.
    Duration value = std::chrono::milliseconds(10);
    // kind == uniform: drawn from [low, high]. 0 <= low <= high.
    Duration low = Duration::zero();
    Duration high = Duration::zero();
    // kind == log_normal: exp(N(ln(median), sigma²)). median > 0, sigma in [0, 10].
    Duration median = std::chrono::milliseconds(10);
    double sigma = 0.0;
    // kind == empirical: one of these, each equally likely. Not empty, every sample >= 0.
    std::vector<Duration> samples;

    static SimLatency fixed_at(Duration d) {
        SimLatency l;
        l.kind = SimLatencyKind::fixed;
        l.value = d;
        return l;
    }
    static SimLatency uniform(Duration lo, Duration hi) {
        SimLatency l;
        l.kind = SimLatencyKind::uniform;
        l.low = lo;
        l.high = hi;
        return l;
    }
    static SimLatency log_normal(Duration median_latency, double sigma_value) {
        SimLatency l;
        l.kind = SimLatencyKind::log_normal;
        l.median = median_latency;
        l.sigma = sigma_value;
        return l;
    }
    static SimLatency empirical(std::vector<Duration> values) {
        SimLatency l;
        l.kind = SimLatencyKind::empirical;
        l.samples = std::move(values);
        return l;
    }

    // `field` prefixes the names in the messages
    // ("OutageScenario.dependencies[0].phases[1].latency").
    void validate(const std::string& field = "SimLatency") const {
        detail::check_enumerator(kind, SimLatencyKind::empirical, field + ".kind",
                                 "SimLatencyKind");
        switch (kind) {
            case SimLatencyKind::fixed:
                if (value < Duration::zero()) {
                    detail::throw_invalid_option(field + ".value", "must be >= 0",
                                                 detail::format_duration(value));
                }
                break;
            case SimLatencyKind::uniform:
                if (low < Duration::zero()) {
                    detail::throw_invalid_option(field + ".low", "must be >= 0",
                                                 detail::format_duration(low));
                }
                if (high < low) {
                    detail::throw_invalid_option(field + ".high", "must be >= low",
                                                 detail::format_duration(high));
                }
                break;
            case SimLatencyKind::log_normal:
                if (median <= Duration::zero()) {
                    detail::throw_invalid_option(field + ".median", "must be > 0",
                                                 detail::format_duration(median));
                }
                if (!(sigma >= 0.0 && sigma <= 10.0)) {
                    detail::throw_invalid_option(field + ".sigma", "must be in [0, 10]",
                                                 detail::format_number(sigma));
                }
                break;
            case SimLatencyKind::empirical:
                if (samples.empty()) {
                    detail::throw_invalid_option(field + ".samples", "must not be empty",
                                                 "0 samples");
                }
                for (std::size_t i = 0; i < samples.size(); ++i) {
                    if (samples[i] < Duration::zero()) {
                        detail::throw_invalid_option(field + ".samples[" + std::to_string(i) + "]",
                                                     "must be >= 0",
                                                     detail::format_duration(samples[i]));
                    }
                }
                break;
        }
    }
};

// How a simulated call fails.
//   transient: an error worth retrying (a 503, a reset connection).
//   permanent: an error not worth retrying (a 400).
//   rate_limited: a 429 carrying a retry-after hint (SimPhase::retry_after).
//   timeout: the dependency hangs for SimPhase::hang and then fails (unless a TimeoutPolicy of
//            the configuration gives up earlier).
enum class SimErrorKind : std::uint8_t { transient, permanent, rate_limited, timeout };

inline constexpr std::size_t sim_error_kind_count = 4;

inline const char* to_string(SimErrorKind kind) noexcept {
    switch (kind) {
        case SimErrorKind::transient:
            return "transient";
        case SimErrorKind::permanent:
            return "permanent";
        case SimErrorKind::rate_limited:
            return "rate_limited";
        case SimErrorKind::timeout:
            return "timeout";
    }
    return "unknown";
}

// One stretch of a dependency's life: from `start` (virtual time since the scenario began) until
// the next phase's start, calls take `latency` and fail with probability `error_rate`, with
// `error_kind`. Phases of a dependency are listed by increasing start; the first starts at 0.
//   bulwark::SimPhase{"down", 60s, bulwark::SimLatency::fixed_at(2ms), 1.0}
struct SimPhase {
    std::string name = "healthy";
    Duration start = Duration::zero();
    SimLatency latency;
    // Probability that a call fails, in [0, 1].
    double error_rate = 0.0;
    SimErrorKind error_kind = SimErrorKind::transient;
    // error_kind == rate_limited: the retry-after hint the failure carries. >= 0.
    Duration retry_after = std::chrono::seconds(1);
    // error_kind == timeout: how long a failing call hangs before the dependency gives up. > 0.
    Duration hang = std::chrono::seconds(30);
};

// One recorded call of a real dependency, for replaying an outage: `at` is the time since the
// trace began. A call made at virtual time t replays one of the samples recorded in the second
// before t (drawn by the seeded generator), or the latest one before t when that second is empty.
struct SimTraceSample {
    Duration at = Duration::zero();
    Duration latency = Duration::zero();
    bool ok = true;
    SimErrorKind kind = SimErrorKind::transient;
};

// A simulated dependency: `phases`, or a recorded `trace` replayed instead when not empty.
struct SimDependency {
    std::string name = "dependency";
    std::vector<SimPhase> phases = {SimPhase{}};
    // Sorted by `at`. When not empty, replaces `phases` for drawing outcomes.
    std::vector<SimTraceSample> trace;
    // For a trace: the retry-after a rate_limited sample carries.
    Duration trace_retry_after = std::chrono::seconds(1);

    // The phase in force at `t` (time since the scenario began); requires validate() to pass.
    const SimPhase& phase_at(Duration t) const noexcept {
        std::size_t i = 0;
        while (i + 1 < phases.size() && phases[i + 1].start <= t) {
            ++i;
        }
        return phases[i];
    }
};

// How calls arrive.
//   constant: exactly rate_per_second, evenly spaced.
//   poisson: exponential gaps with mean 1 / rate_per_second.
//   bursts: constant arrivals plus burst_size extra calls at once every burst_every.
enum class SimArrival : std::uint8_t { constant, poisson, bursts };

inline const char* to_string(SimArrival arrival) noexcept {
    switch (arrival) {
        case SimArrival::constant:
            return "constant";
        case SimArrival::poisson:
            return "poisson";
        case SimArrival::bursts:
            return "bursts";
    }
    return "unknown";
}

// The load callers put on the configuration. `concurrency` is how many calls callers have in
// flight at most (their thread pool): an arrival that finds every caller busy waits, first come
// first served, and its caller-seen latency includes that wait.
struct SimLoad {
    SimArrival arrival = SimArrival::constant;
    // > 0 and <= 1e7.
    double rate_per_second = 100.0;
    // Virtual time during which calls arrive; > 0. Calls in flight at the end are run to their end.
    Duration duration = std::chrono::seconds(60);
    // >= 1 and <= 100000.
    std::size_t concurrency = 16;
    // arrival == bursts: the period of the bursts (> 0) and the calls in each (>= 1).
    Duration burst_every = std::chrono::seconds(10);
    std::size_t burst_size = 100;
};

// A whole scenario: dependencies over virtual time and the load. validate() throws
// std::invalid_argument naming the field (with its index) and the value.
//   bulwark::OutageScenario s;  s.name = "provider outage";  s.seed = 42;
//   s.dependencies = {dep};  s.load.rate_per_second = 1000;  s.validate();
// A plain value; not synchronised.
struct OutageScenario {
    std::string name = "scenario";
    std::uint64_t seed = 1;
    // Width of a timeline bucket; > 0, <= load.duration and at most max_buckets in it.
    Duration bucket = std::chrono::seconds(1);
    // At least one; names unique and not empty.
    std::vector<SimDependency> dependencies = {SimDependency{}};
    SimLoad load;
    // A phase is an outage when its error_rate is at least this ("while down" in the summary).
    // In (0, 1].
    double outage_error_rate = 0.5;
    // The summary's time_to_recover ends with the first bucket after the dependency recovered in
    // which the caller-seen success rate reaches this share of what the phase then in force
    // allows (1 - error_rate). In (0, 1].
    double recovered_fraction = 0.95;

    // The most buckets validate() allows in load.duration.
    static constexpr std::int64_t max_buckets = 1000000;

    void validate() const {
        if (!(bucket > Duration::zero())) {
            detail::throw_invalid_option("OutageScenario.bucket", "must be > 0",
                                         detail::format_duration(bucket));
        }
        validate_load();
        if (bucket > load.duration) {
            detail::throw_invalid_option("OutageScenario.bucket", "must be <= load.duration",
                                         detail::format_duration(bucket));
        }
        // The timeline holds one bucket per `bucket` of the run: a tiny bucket ("1ns" for
        // "1s") would exhaust memory long before the run ended.
        if (load.duration.count() / bucket.count() > max_buckets) {
            detail::throw_invalid_option("OutageScenario.bucket",
                                         "must leave at most " + std::to_string(max_buckets) +
                                             " buckets in load.duration (" +
                                             detail::format_duration(load.duration) + ")",
                                         detail::format_duration(bucket));
        }
        if (!(outage_error_rate > 0.0 && outage_error_rate <= 1.0)) {
            detail::throw_invalid_option("OutageScenario.outage_error_rate", "must be in (0, 1]",
                                         detail::format_number(outage_error_rate));
        }
        if (!(recovered_fraction > 0.0 && recovered_fraction <= 1.0)) {
            detail::throw_invalid_option("OutageScenario.recovered_fraction", "must be in (0, 1]",
                                         detail::format_number(recovered_fraction));
        }
        if (dependencies.empty()) {
            detail::throw_invalid_option("OutageScenario.dependencies", "must not be empty",
                                         "0 dependencies");
        }
        for (std::size_t d = 0; d < dependencies.size(); ++d) {
            validate_dependency(d);
        }
    }

private:
    void validate_load() const {
        if (!(load.rate_per_second > 0.0 && load.rate_per_second <= 1e7)) {
            detail::throw_invalid_option("OutageScenario.load.rate_per_second",
                                         "must be in (0, 1e7]",
                                         detail::format_number(load.rate_per_second));
        }
        detail::check_enumerator(load.arrival, SimArrival::bursts, "OutageScenario.load.arrival",
                                 "SimArrival");
        if (!(load.duration > Duration::zero())) {
            detail::throw_invalid_option("OutageScenario.load.duration", "must be > 0",
                                         detail::format_duration(load.duration));
        }
        if (load.concurrency < 1 || load.concurrency > 100000) {
            detail::throw_invalid_option("OutageScenario.load.concurrency",
                                         "must be in [1, 100000]",
                                         std::to_string(load.concurrency));
        }
        if (load.arrival == SimArrival::bursts) {
            if (!(load.burst_every > Duration::zero())) {
                detail::throw_invalid_option("OutageScenario.load.burst_every", "must be > 0",
                                             detail::format_duration(load.burst_every));
            }
            if (load.burst_size < 1) {
                detail::throw_invalid_option("OutageScenario.load.burst_size", "must be >= 1",
                                             std::to_string(load.burst_size));
            }
        }
    }

    void validate_dependency(std::size_t d) const {
        const SimDependency& dep = dependencies[d];
        const std::string field = "OutageScenario.dependencies[" + std::to_string(d) + "]";
        if (dep.name.empty()) {
            detail::throw_invalid_option(field + ".name", "must not be empty", R"("")");
        }
        for (std::size_t o = 0; o < d; ++o) {
            if (dependencies[o].name == dep.name) {
                detail::throw_invalid_option(field + ".name", "must be unique",
                                             '"' + dep.name + '"');
            }
        }
        if (dep.trace.empty() && dep.phases.empty()) {
            detail::throw_invalid_option(field + ".phases", "must not be empty without a trace",
                                         "0 phases");
        }
        for (std::size_t p = 0; p < dep.phases.size(); ++p) {
            const SimPhase& phase = dep.phases[p];
            const std::string pf = field + ".phases[" + std::to_string(p) + "]";
            if (p == 0 && phase.start != Duration::zero()) {
                detail::throw_invalid_option(pf + ".start", "must be 0 for the first phase",
                                             detail::format_duration(phase.start));
            }
            if (p > 0 && phase.start <= dep.phases[p - 1].start) {
                detail::throw_invalid_option(pf + ".start",
                                             "must be after the previous phase's start",
                                             detail::format_duration(phase.start));
            }
            phase.latency.validate(pf + ".latency");
            if (!(phase.error_rate >= 0.0 && phase.error_rate <= 1.0)) {
                detail::throw_invalid_option(pf + ".error_rate", "must be in [0, 1]",
                                             detail::format_number(phase.error_rate));
            }
            detail::check_enumerator(phase.error_kind, SimErrorKind::timeout, pf + ".error_kind",
                                     "SimErrorKind");
            if (phase.retry_after < Duration::zero()) {
                detail::throw_invalid_option(pf + ".retry_after", "must be >= 0",
                                             detail::format_duration(phase.retry_after));
            }
            if (!(phase.hang > Duration::zero())) {
                detail::throw_invalid_option(pf + ".hang", "must be > 0",
                                             detail::format_duration(phase.hang));
            }
        }
        for (std::size_t t = 0; t < dep.trace.size(); ++t) {
            const SimTraceSample& s = dep.trace[t];
            const std::string tf = field + ".trace[" + std::to_string(t) + "]";
            if (s.at < Duration::zero() || (t > 0 && s.at < dep.trace[t - 1].at)) {
                detail::throw_invalid_option(tf + ".at", "must be >= 0 and sorted",
                                             detail::format_duration(s.at));
            }
            if (s.latency < Duration::zero()) {
                detail::throw_invalid_option(tf + ".latency", "must be >= 0",
                                             detail::format_duration(s.latency));
            }
            detail::check_enumerator(s.kind, SimErrorKind::timeout, tf + ".kind", "SimErrorKind");
        }
        if (dep.trace_retry_after < Duration::zero()) {
            detail::throw_invalid_option(field + ".trace_retry_after", "must be >= 0",
                                         detail::format_duration(dep.trace_retry_after));
        }
    }
};

}  // namespace bulwark

#endif  // BULWARK_OUTAGE_SCENARIO_HPP

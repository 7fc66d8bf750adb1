// Outage lab results: the per-bucket timeline and the summary a simulated run records.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_OUTAGE_TIMELINE_HPP
#define BULWARK_OUTAGE_TIMELINE_HPP

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <bulwark/outage_scenario.hpp>
#include <bulwark/time.hpp>

namespace bulwark {

// What one dependency saw during one bucket: calls that reached it (attempts, retries
// included), and how they ended. A call counts in the bucket in which it reached the dependency.
struct SimDependencyBucket {
    std::uint64_t calls = 0;
    std::uint64_t successes = 0;
    std::uint64_t failures = 0;
    // The dependency was in an outage (OutageScenario::outage_error_rate) for the whole bucket.
    bool down = false;
};

// One bucket of a timeline: [start, start + OutageTimeline::bucket) in virtual time since the
// scenario began. `offered` counts arrivals in the bucket; succeeded, failed, rejected and the
// latencies count the calls that ENDED in the bucket (as their callers saw them).
struct SimBucket {
    Duration start = Duration::zero();
    std::uint64_t offered = 0;
    // Ended with a value (from the dependency, or from a fallback).
    std::uint64_t succeeded = 0;
    // Ended with an error that was no policy's rejection.
    std::uint64_t failed = 0;
    // failed, by SimErrorKind (a TimeoutPolicy's timeout counts as timeout).
    std::array<std::uint64_t, sim_error_kind_count> failed_by_kind{};
    // Ended rejected by a policy (breaker open, bulkhead full, rate limited, shed...).
    std::uint64_t rejected = 0;
    // rejected, by the name of the policy that rejected (sorted by name; only non-zero ones).
    std::vector<std::pair<std::string, std::uint64_t>> rejected_by_policy;
    // Retry attempts made in the bucket (second and later attempts).
    std::uint64_t retries = 0;
    // Calls that ended in the bucket with a value a fallback (or a FallbackChain's later
    // handler) gave instead of the first choice.
    std::uint64_t fallbacks = 0;
    // Per dependency, in the order of OutageTimeline::dependencies.
    std::vector<SimDependencyBucket> per_dependency;
    // Per breaker, in the order of OutageTimeline::breakers: the CircuitState (as its
    // std::uint8_t value) at the bucket's end.
    std::vector<std::uint8_t> breaker_state;
    // Caller-seen latency (arrival to end, waiting for a free caller included) of the calls that
    // ended in the bucket; zero when none ended.
    Duration p50 = Duration::zero();
    Duration p99 = Duration::zero();
};

// A watched breaker changed state (as the lab saw it after a step of the simulation).
struct SimBreakerTransition {
    // Virtual time since the scenario began.
    Duration at = Duration::zero();
    // Index into OutageTimeline::breakers.
    std::size_t breaker = 0;
    // CircuitState values.
    std::uint8_t from = 0;
    std::uint8_t to = 0;
    // Calls that had reached each dependency so far (OutageTimeline::dependencies' order).
    std::vector<std::uint64_t> dependency_calls;
};

// A stretch of time in which a dependency was down (its phases' error_rate at least
// OutageScenario::outage_error_rate; for a trace, whole seconds with that failure share).
struct SimOutage {
    std::size_t dependency = 0;
    Duration start = Duration::zero();
    // Duration::max(): it never recovered.
    Duration end = Duration::max();
    // Calls that had reached the dependency before the outage began.
    std::uint64_t calls_before = 0;
};

// The totals of a run.
struct OutageSummary {
    // Calls offered (arrived), and how the ones that ended did.
    std::uint64_t calls = 0;
    std::uint64_t succeeded = 0;
    std::uint64_t failed = 0;
    std::uint64_t rejected = 0;
    // succeeded / calls (0 when no call).
    double success_rate = 0.0;
    // Caller-seen latency over the whole run.
    Duration p50 = Duration::zero();
    Duration p99 = Duration::zero();
    std::uint64_t retries = 0;
    std::uint64_t fallbacks = 0;
    // Calls that reached a dependency while it was in an outage phase (error_rate >=
    // OutageScenario::outage_error_rate), summed over dependencies.
    std::uint64_t calls_to_failing_dependency_while_down = 0;
    // Calls offered while some dependency was down.
    std::uint64_t calls_offered_while_down = 0;
    // calls_to_failing_dependency_while_down / calls_offered_while_down: 1 means the failing
    // dependency saw exactly the callers' load, 3 that retries tripled it, 0.05 that a breaker
    // kept 95% of it away. 0 when nothing was offered while down.
    double extra_load_ratio = 0.0;
    // From the end of the last outage to the end of the first bucket in which callers see the
    // success rate recover (OutageScenario::recovered_fraction); empty when there was no outage
    // that ended, or the rate never recovered before the run ended.
    std::optional<Duration> time_to_recover;
    // DeliveryEngine runs: messages accepted and neither delivered nor dead-lettered at the end.
    std::uint64_t lost = 0;
    // DeliveryEngine runs: messages delivered, and dead-lettered.
    std::uint64_t delivered = 0;
    std::uint64_t dead_lettered = 0;
};

// Everything a run of the outage lab records: one SimBucket per bucket from 0 to the end of the
// run (the load's duration plus the time the last calls took to end), and the summary.
// A plain value; not synchronised.
struct OutageTimeline {
    std::string scenario;
    // The configuration's label, as given to the runner.
    std::string configuration;
    Duration bucket = std::chrono::seconds(1);
    std::vector<std::string> dependencies;
    // Breakers registered with the run, in registration order.
    std::vector<std::string> breakers;
    std::vector<SimBucket> buckets;
    OutageSummary summary;
    // Every state change of the watched breakers, in order.
    std::vector<SimBreakerTransition> transitions;
    // The scenario's outages, by dependency then start.
    std::vector<SimOutage> outages;
    // Virtual time from the start to the last call's end.
    Duration elapsed = Duration::zero();
};

}  // namespace bulwark

#endif  // BULWARK_OUTAGE_TIMELINE_HPP

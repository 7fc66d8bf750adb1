// Metrics: to_prometheus() renders every component's statistics in the Prometheus text format.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_METRICS_HPP
#define BULWARK_METRICS_HPP

// Renders the components' statistics in the Prometheus text exposition format (0.0.4).
//
// This header includes no component header: it forward-declares the component types and renders
// each one in a template (detail::MetricsRenderer<T>) whose member accesses depend on a template
// parameter, so they are compiled only when to_prometheus() is called with that type — and by
// then the caller has included the component's own header. Including <bulwark/metrics.hpp> costs
// a few standard headers, not the library.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <bulwark/detail/throw.hpp>
#include <bulwark/detail/utf8.hpp>
#include <bulwark/metrics_writer.hpp>

namespace bulwark {

template <class Tag>
class BasicCircuitBreaker;
template <class Tag>
class BasicCircuitBreakerRegistry;
template <class T, class Options>
class Registry;
template <class Tag>
class BasicDegradation;
template <class Tag>
class BasicBulkhead;
template <class Tag>
class BasicRateLimiter;
template <class Tag>
class BasicRetryPolicy;
template <class Tag>
class BasicTimeout;
template <class Tag>
class BasicLoadShedder;
template <class Tag>
class BasicHedging;
template <class T>
class Fallback;
template <class Key, class T, class Hash, class Equal>
class CacheFallback;
template <class Signature>
class FallbackChain;
template <class Tag>
class BasicHealthMonitor;
template <class Tag>
class BasicResourceManager;
class DeadLetterStore;
template <class Tag>
class BasicInMemoryDeadLetterStore;
enum class DeadLetterReason : std::uint8_t;
template <class Message>
class DeliveryEngine;

// A component with the name its metrics are labelled with: components without a name of their
// own (RetryPolicy, Bulkhead, RateLimiter, Timeout, Fallback, CacheFallback, LoadShedder,
// Hedging) need one; for the others it overrides the default (a breaker's own name, "chain",
// "degradation", "health", "resources").
//   bulwark::to_prometheus(bulwark::metric_name("sms_retry", retry), breaker);
// Holds a reference: the component must outlive the Named.
template <class T>
class Named {
public:
    using component_type = T;

    Named(std::string name, T& component) : name_(std::move(name)), component_(&component) {}

    const std::string& name() const noexcept { return name_; }
    T& component() const noexcept { return *component_; }

private:
    std::string name_;
    T* component_;
};

template <class T>
Named<T> metric_name(std::string name, T& component) {
    return Named<T>(std::move(name), component);
}
// A temporary component would be gone before it is rendered.
template <class T>
Named<T> metric_name(std::string name, const T&& component) = delete;

namespace detail {

template <class T, class U>
struct dependent_type {
    using type = U;
};

template <class T>
struct is_named : std::false_type {};
template <class T>
struct is_named<Named<T>> : std::true_type {};

// One sample per enumerator from 0 to `last`, 1 for `current` and 0 for the others: the usual
// way to expose a state as a gauge. to_string(E) is found by argument-dependent lookup.
template <class E>
void write_enum(MetricsWriter& w, std::string_view family, std::string_view help,
                MetricLabels labels, std::string_view label, E current, E last) {
    labels.emplace_back(label, std::string_view());
    for (int i = 0; i <= static_cast<int>(last); ++i) {
        const E e = static_cast<E>(i);
        labels.back().second = to_string(e);
        w.add_gauge(family, help, labels, e == current);
    }
}

// How each component type is rendered. A specialization has:
//   known: to_prometheus() accepts the type;
//   needs_name: it has no name of its own, so it must come wrapped in metric_name();
//   accepts_name: metric_name() may wrap it;
//   default_name(c): the name used when it is not wrapped;
//   write(w, c, name): adds its samples (c is const unless noted).
template <class T>
struct MetricsRenderer {
    static constexpr bool known = false;
    static constexpr bool needs_name = false;
    static constexpr bool accepts_name = true;
    template <class C>
    static std::string_view default_name(const C&) noexcept {
        return {};
    }
    template <class C>
    static void write(MetricsWriter&, C&, std::string_view) {}
};

// Common parts of the renderers of components without a name of their own.
struct UnnamedRenderer {
    static constexpr bool known = true;
    static constexpr bool needs_name = true;
    static constexpr bool accepts_name = true;
    template <class C>
    static std::string_view default_name(const C&) noexcept {
        return {};
    }
};

template <class Tag>
struct MetricsRenderer<BasicCircuitBreaker<Tag>> {
    static constexpr bool known = true;
    static constexpr bool needs_name = false;
    static constexpr bool accepts_name = true;
    template <class B>
    static std::string_view default_name(const B& b) noexcept {
        return b.name();
    }
    template <class B>
    static void write(MetricsWriter& w, const B& b, std::string_view name) {
        const auto s = b.stats();  // one consistent snapshot (takes the breaker's lock)
        using State = decltype(s.state);
        const MetricLabels l{{"name", name}};
        write_enum(w, "bulwark_circuit_breaker_state",
                   "Circuit breaker state: 1 for the current state, 0 for the others.", l, "state",
                   s.state, State::disabled);
        w.add_counter("bulwark_circuit_breaker_calls_total",
                      "Results recorded: successes + failures + ignored + inner rejections.", l,
                      s.calls);
        w.add_counter("bulwark_circuit_breaker_successes_total", "Results that were not failures.",
                      l, s.successes);
        w.add_counter("bulwark_circuit_breaker_failures_total",
                      "Failed results, timeouts and expired probes included.", l, s.failures);
        w.add_counter("bulwark_circuit_breaker_ignored_total",
                      "Exceptions outside the handled set.", l, s.ignored);
        w.add_counter("bulwark_circuit_breaker_inner_rejections_total",
                      "Rejections by inner policies, neither successes nor failures.", l,
                      s.inner_rejections);
        w.add_counter("bulwark_circuit_breaker_slow_calls_total",
                      "Calls slower than the slow-call threshold.", l, s.slow);
        w.add_counter("bulwark_circuit_breaker_timeouts_total",
                      "Calls slower than call_timeout (also counted as failures).", l, s.timeouts);
        w.add_counter("bulwark_circuit_breaker_rejected_total",
                      "Calls refused while open, forced open or half-open and full.", l,
                      s.rejected);
        w.add_counter("bulwark_circuit_breaker_shadow_rejections_total",
                      "Of the rejected, calls let through in shadow mode.", l, s.shadow_rejections);
        w.add_counter("bulwark_circuit_breaker_opened_total", "Times the breaker opened.", l,
                      s.opened);
        w.add_counter("bulwark_circuit_breaker_expired_probes_total",
                      "Half-open probes that reported nothing in time.", l, s.expired_probes);
        w.add_gauge("bulwark_circuit_breaker_window_calls", "Calls in the current window.", l,
                    s.window_calls);
        w.add_gauge("bulwark_circuit_breaker_window_failures", "Failures in the current window.", l,
                    s.window_failures);
        w.add_gauge("bulwark_circuit_breaker_window_slow_calls",
                    "Slow calls in the current window.", l, s.window_slow);
        w.add_gauge("bulwark_circuit_breaker_failure_rate",
                    "Failures / calls in the current window (0 when empty).", l, s.failure_rate);
        w.add_gauge("bulwark_circuit_breaker_slow_call_rate",
                    "Slow calls / calls in the current window (0 when empty).", l,
                    s.slow_call_rate);
        w.add_gauge("bulwark_circuit_breaker_consecutive_failures",
                    "Failures since the last success.", l, s.consecutive_failures);
        w.add_gauge("bulwark_circuit_breaker_time_in_state_seconds",
                    "Time since the last state change.", l, seconds(s.time_in_state));
        w.add_gauge("bulwark_circuit_breaker_retry_after_seconds",
                    "While open: time until probes are admitted (else 0).", l,
                    seconds(s.retry_after));
    }
};

template <class Tag>
struct MetricsRenderer<BasicCircuitBreakerRegistry<Tag>> {
    static constexpr bool known = true;
    static constexpr bool needs_name = false;
    // Each breaker is labelled with its own name.
    static constexpr bool accepts_name = false;
    template <class R>
    static std::string_view default_name(const R&) noexcept {
        return {};
    }
    template <class R>
    static void write(MetricsWriter& w, const R& registry, std::string_view) {
        // In name order, under the registry's shared lock: breakers created meanwhile wait.
        registry.for_each([&w](const auto& b) {
            MetricsRenderer<BasicCircuitBreaker<Tag>>::write(w, b, b.name());
        });
    }
};

// A keyed Registry: its own series labelled registry="<RegistryOptions::name>" (or the
// metric_name() given), then each component present, labelled with its key, when its kind is
// renderable. Evicted keys are gone from the next scrape.
template <class T, class Options>
struct MetricsRenderer<Registry<T, Options>> {
    static constexpr bool known = true;
    static constexpr bool needs_name = false;
    static constexpr bool accepts_name = true;
    template <class R>
    static std::string_view default_name(const R& registry) noexcept {
        return registry.limits().name;
    }
    template <class R>
    static void write(MetricsWriter& w, const R& registry, std::string_view name) {
        const auto s = registry.stats();
        const MetricLabels l{{"registry", name}};
        w.add_gauge("bulwark_registry_entries", "Components in the registry now.", l, s.size);
        w.add_counter("bulwark_registry_created_total", "Components created.", l, s.created);
        const char* const help = "Components that left the registry, by cause.";
        w.add_counter("bulwark_registry_evictions_total", help,
                      MetricLabels{{"registry", name}, {"cause", "expired"}}, s.expired);
        w.add_counter("bulwark_registry_evictions_total", help,
                      MetricLabels{{"registry", name}, {"cause", "size"}}, s.evicted_for_size);
        w.add_counter("bulwark_registry_evictions_total", help,
                      MetricLabels{{"registry", name}, {"cause", "removed"}}, s.removed);
        w.add_counter("bulwark_registry_over_capacity_total",
                      "Creations that left the registry over max_size (nothing evictable).", l,
                      s.over_capacity);
        if constexpr (MetricsRenderer<T>::known) {
            // A snapshot: the components are rendered outside the registry's locks.
            for (const auto& entry : registry.entries()) {
                MetricsRenderer<T>::write(w, *entry.second, entry.first);
            }
        }
    }
};

template <class Signature>
struct MetricsRenderer<FallbackChain<Signature>> {
    static constexpr bool known = true;
    static constexpr bool needs_name = false;
    static constexpr bool accepts_name = true;
    static std::string_view default_name(const FallbackChain<Signature>&) noexcept {
        return "chain";
    }
    static void write(MetricsWriter& w, const FallbackChain<Signature>& chain,
                      std::string_view name) {
        // Each channel's counters are read without a lock: a channel's own numbers may be
        // mid-update against each other while an execute is running.
        for (const auto& s : chain.stats()) {
            const MetricLabels l{{"chain", name}, {"channel", s.name}};
            w.add_counter("bulwark_fallback_chain_channel_calls_total",
                          "Times the channel was called through the chain.", l, s.calls);
            w.add_counter("bulwark_fallback_chain_channel_successes_total",
                          "Calls of the channel that delivered.", l, s.successes);
            w.add_counter("bulwark_fallback_chain_channel_failures_total",
                          "Calls of the channel that failed.", l, s.failures);
            w.add_counter("bulwark_fallback_chain_channel_skipped_total",
                          "Times the channel was passed over without a call.", l, s.skipped);
            w.add_counter("bulwark_fallback_chain_channel_fallbacks_total",
                          "Times the channel delivered after an earlier channel did not.", l,
                          s.fallbacks);
            w.add_gauge("bulwark_fallback_chain_channel_success_rate",
                        "Successes / calls over the chain's life (1 with no calls).", l,
                        s.success_rate);
            w.add_gauge("bulwark_fallback_chain_channel_recent_success_rate",
                        "Successes / calls over the last (up to) 32 calls (1 with no calls).", l,
                        s.recent_success_rate);
            w.add_gauge("bulwark_fallback_chain_channel_mean_latency_seconds",
                        "Mean duration of the channel's calls.", l, seconds(s.mean_latency));
        }
    }
};

template <class Tag>
struct MetricsRenderer<BasicDegradation<Tag>> {
    static constexpr bool known = true;
    static constexpr bool needs_name = false;
    static constexpr bool accepts_name = true;
    template <class D>
    static std::string_view default_name(const D&) noexcept {
        return "degradation";
    }
    template <class D>
    static void write(MetricsWriter& w, const D& d, std::string_view name) {
        const auto level = d.level();
        using Level = decltype(level);
        const MetricLabels l{{"name", name}};
        w.add_gauge("bulwark_degradation_level",
                    "Degradation level in force: 0 normal, 1 minor, 2 moderate, 3 severe, "
                    "4 critical.",
                    l, static_cast<int>(level));
        write_enum(w, "bulwark_degradation_state",
                   "Degradation level in force: 1 for the current level, 0 for the others.", l,
                   "level", level, Level::critical);
    }
};

template <class Tag>
struct MetricsRenderer<BasicHealthMonitor<Tag>> {
    static constexpr bool known = true;
    static constexpr bool needs_name = false;
    static constexpr bool accepts_name = true;
    static std::string_view default_name(const BasicHealthMonitor<Tag>&) noexcept {
        return "health";
    }
    static void write(MetricsWriter& w, const BasicHealthMonitor<Tag>& monitor,
                      std::string_view name) {
        const auto report = monitor.report();  // a snapshot: runs no check
        using Status = decltype(report.status);
        const MetricLabels l{{"name", name}};
        write_enum(w, "bulwark_health_status",
                   "Overall health: 1 for the current status, 0 for the others.", l, "status",
                   report.status, Status::unhealthy);
        w.add_gauge("bulwark_health_ready", "1 when every critical check is healthy or degraded.",
                    l, report.ready);
        for (const auto& c : report.checks) {
            const MetricLabels cl{{"name", name}, {"check", c.last.name}};
            write_enum(w, "bulwark_health_check_status",
                       "Latest status of the check: 1 for the current status, 0 for the others.",
                       cl, "status", c.last.status, Status::unhealthy);
            w.add_gauge("bulwark_health_check_critical",
                        "1 if the check decides readiness (a critical check).", cl,
                        c.last.critical);
            w.add_counter("bulwark_health_check_runs_total", "Runs of the check.", cl, c.runs);
            w.add_counter("bulwark_health_check_failures_total",
                          "Unhealthy results, timeouts included.", cl, c.failures);
            w.add_counter("bulwark_health_check_timeouts_total", "Runs that overran their timeout.",
                          cl, c.timeouts);
            w.add_counter("bulwark_health_check_late_results_total",
                          "Results that came back after their run was reported.", cl,
                          c.late_results);
            w.add_gauge("bulwark_health_check_consecutive_failures", "Unhealthy results in a row.",
                        cl, c.consecutive_failures);
            w.add_gauge("bulwark_health_check_response_time_seconds",
                        "How long the latest run took (its timeout if it overran).", cl,
                        seconds(c.last.response_time));
            w.add_gauge("bulwark_health_check_running", "1 while a run is in flight.", cl,
                        c.running);
        }
    }
};

template <class Tag>
struct MetricsRenderer<BasicResourceManager<Tag>> {
    static constexpr bool known = true;
    static constexpr bool needs_name = false;
    static constexpr bool accepts_name = true;
    static std::string_view default_name(const BasicResourceManager<Tag>&) noexcept {
        return "resources";
    }
    template <class M>
    static void write(MetricsWriter& w, M& manager, std::string_view name) {
        static_assert(!std::is_const<M>::value,
                      "bulwark::to_prometheus: pass the ResourceManager non-const: report() reads "
                      "the gauges whose cached reading has expired.");
        const auto report = manager.report();
        using Status = decltype(report.worst);
        const MetricLabels l{{"name", name}};
        write_enum(w, "bulwark_resource_worst_status",
                   "Worst status of any resource: 1 for the current status, 0 for the others.", l,
                   "status", report.worst, Status::exhausted);
        for (const auto& r : report.resources) {
            const MetricLabels rl{{"name", name}, {"resource", r.name}};
            write_enum(w, "bulwark_resource_status",
                       "Status of the resource: 1 for the current status, 0 for the others.", rl,
                       "status", r.status, Status::exhausted);
            w.add_gauge("bulwark_resource_quota", "1 for a quota, 0 for a gauge.", rl, r.quota);
            w.add_gauge("bulwark_resource_usage_ratio",
                        "Share of the resource in use, 1 = all of it (a quota may exceed 1; NaN "
                        "when unread).",
                        rl, r.percent / 100.0);
            w.add_gauge("bulwark_resource_peak_usage_ratio",
                        "Highest share in use since the resource was added (1 = all of it).", rl,
                        r.peak_percent / 100.0);
            w.add_gauge("bulwark_resource_warning_threshold_ratio",
                        "Share in use from which the resource is in warning.", rl,
                        r.thresholds.warning / 100.0);
            w.add_gauge("bulwark_resource_critical_threshold_ratio",
                        "Share in use from which the resource is critical.", rl,
                        r.thresholds.critical / 100.0);
            w.add_counter("bulwark_resource_readings_total", "Readings of the resource.", rl,
                          r.readings);
            w.add_counter("bulwark_resource_warning_entries_total",
                          "Entries into warning from a better status.", rl, r.times_warning);
            w.add_counter("bulwark_resource_critical_entries_total",
                          "Entries into critical or exhausted.", rl, r.times_critical);
            if (r.quota) {
                w.add_gauge("bulwark_resource_quota_used", "Quota used within the window.", rl,
                            r.used);
                w.add_gauge("bulwark_resource_quota_limit", "Quota limit per window.", rl, r.limit);
                w.add_gauge("bulwark_resource_quota_window_seconds", "Length of the quota window.",
                            rl, seconds(r.window));
            }
        }
    }
};

template <class Tag>
struct MetricsRenderer<BasicRetryPolicy<Tag>> : UnnamedRenderer {
    template <class P>
    static void write(MetricsWriter& w, const P& p, std::string_view name) {
        const auto s = p.stats();
        const MetricLabels l{{"name", name}};
        w.add_counter("bulwark_retry_calls_total",
                      "Operations run through the policy (with count_calls; else those that "
                      "failed first).",
                      l, s.calls);
        w.add_counter("bulwark_retry_retries_total", "Retries made.", l, s.retries);
        w.add_counter("bulwark_retry_successes_after_retry_total",
                      "Operations that succeeded on a retry.", l, s.successes_after_retry);
        w.add_counter("bulwark_retry_exhausted_total",
                      "Operations given up on: retries, time or budget ran out.", l, s.exhausted);
        w.add_counter("bulwark_retry_not_retryable_total",
                      "Operations that failed with something not worth retrying.", l,
                      s.not_retryable);
        w.add_counter("bulwark_retry_budget_exhausted_total",
                      "Of the exhausted, those refused by the retry budget.", l,
                      s.budget_exhausted);
        w.add_counter("bulwark_retry_deferred_to_caller_total",
                      "Failures not retried because the caller retries them.", l,
                      s.deferred_to_caller);
    }
};

template <class Tag>
struct MetricsRenderer<BasicBulkhead<Tag>> : UnnamedRenderer {
    template <class P>
    static void write(MetricsWriter& w, const P& p, std::string_view name) {
        const auto s = p.stats();
        const MetricLabels l{{"name", name}};
        w.add_gauge("bulwark_bulkhead_max_concurrent", "Calls allowed inside at once.", l,
                    s.max_concurrent);
        w.add_gauge("bulwark_bulkhead_max_queue", "Calls allowed to wait for a slot.", l,
                    s.max_queue);
        w.add_gauge("bulwark_bulkhead_in_flight", "Calls inside now.", l, s.in_flight);
        w.add_gauge("bulwark_bulkhead_queued", "Calls waiting for a slot now.", l, s.queued);
        w.add_counter("bulwark_bulkhead_admitted_total", "Calls that got a slot.", l, s.admitted);
        w.add_counter("bulwark_bulkhead_rejected_total", "Calls rejected for any reason.", l,
                      s.rejected);
        w.add_counter("bulwark_bulkhead_queue_timeouts_total",
                      "Of the rejected, calls that timed out in the queue.", l, s.queue_timeouts);
        w.add_counter("bulwark_bulkhead_shadow_rejections_total",
                      "Of the rejected, calls let through (without a slot) in shadow mode.", l,
                      s.shadow_rejections);
    }
};

template <class Tag>
struct MetricsRenderer<BasicRateLimiter<Tag>> : UnnamedRenderer {
    template <class P>
    static void write(MetricsWriter& w, const P& p, std::string_view name) {
        const auto s = p.stats();
        const MetricLabels l{{"name", name}};
        w.add_counter("bulwark_rate_limiter_admitted_total", "Permits granted.", l, s.admitted);
        w.add_counter("bulwark_rate_limiter_rejected_total", "Requests refused.", l, s.rejected);
        w.add_counter("bulwark_rate_limiter_waited_total",
                      "Requests that waited before being granted.", l, s.waited);
        w.add_counter("bulwark_rate_limiter_shadow_rejections_total",
                      "Of the refused, requests let through in shadow mode.", l,
                      s.shadow_rejections);
    }
};

template <class Tag>
struct MetricsRenderer<BasicTimeout<Tag>> : UnnamedRenderer {
    template <class P>
    static void write(MetricsWriter& w, const P& p, std::string_view name) {
        const auto s = p.stats();
        const MetricLabels l{{"name", name}};
        w.add_counter("bulwark_timeout_timeouts_total", "Results replaced by a TimeoutError.", l,
                      s.timeouts);
        w.add_gauge("bulwark_timeout_duration_seconds", "The configured timeout.", l,
                    seconds(p.timeout()));
    }
};

template <class T>
struct MetricsRenderer<Fallback<T>> : UnnamedRenderer {
    static void write(MetricsWriter& w, const Fallback<T>& p, std::string_view name) {
        const auto s = p.stats();
        const MetricLabels l{{"name", name}};
        w.add_counter("bulwark_fallback_fallbacks_total",
                      "Handled failures answered by the fallback.", l, s.fallbacks);
        w.add_counter("bulwark_fallback_failures_total",
                      "Of the fallbacks, those where the fallback itself failed.", l,
                      s.fallback_failures);
    }
};

template <class Key, class T, class Hash, class Equal>
struct MetricsRenderer<CacheFallback<Key, T, Hash, Equal>> : UnnamedRenderer {
    static void write(MetricsWriter& w, const CacheFallback<Key, T, Hash, Equal>& p,
                      std::string_view name) {
        const auto s = p.stats();
        const MetricLabels l{{"name", name}};
        w.add_counter("bulwark_cache_fallback_stored_total", "Good results remembered.", l,
                      s.stored);
        w.add_counter("bulwark_cache_fallback_served_total",
                      "Failures answered with a remembered value.", l, s.served);
        w.add_counter("bulwark_cache_fallback_misses_total",
                      "Failures with nothing fresh enough to serve.", l, s.misses);
        w.add_counter("bulwark_cache_fallback_evicted_total",
                      "Entries dropped to stay within max_entries.", l, s.evicted);
        w.add_gauge("bulwark_cache_fallback_entries", "Entries held now.", l, s.size);
    }
};

template <class Tag>
struct MetricsRenderer<BasicLoadShedder<Tag>> : UnnamedRenderer {
    template <class P>
    static void write(MetricsWriter& w, const P& p, std::string_view name) {
        const auto s = p.stats();
        const MetricLabels l{{"name", name}};
        w.add_counter("bulwark_load_shedder_passed_total", "Calls let through.", l, s.passed);
        w.add_counter("bulwark_load_shedder_shed_total", "Calls shed.", l, s.shed);
        w.add_counter("bulwark_load_shedder_shadow_rejections_total",
                      "Of the shed, calls let through in shadow mode.", l, s.shadow_rejections);
    }
};

template <class Tag>
struct MetricsRenderer<BasicHedging<Tag>> : UnnamedRenderer {
    template <class P>
    static void write(MetricsWriter& w, const P& p, std::string_view name) {
        const auto s = p.stats();
        const MetricLabels l{{"name", name}};
        w.add_counter("bulwark_hedging_calls_total", "Calls through the policy.", l, s.calls);
        w.add_counter("bulwark_hedging_hedges_total", "Hedged attempts started.", l, s.hedges);
        w.add_counter("bulwark_hedging_primary_wins_total",
                      "Calls answered by the primary attempt.", l, s.primary_wins);
        w.add_counter("bulwark_hedging_hedge_wins_total", "Calls answered by a hedged attempt.", l,
                      s.hedge_wins);
        w.add_counter("bulwark_hedging_exhausted_total", "Calls whose every attempt failed.", l,
                      s.exhausted);
    }
};

// Any store through its interface, so a store of your own renders as a DeadLetterStore&.
template <>
struct MetricsRenderer<DeadLetterStore> : UnnamedRenderer {
    template <class P>
    static void write(MetricsWriter& w, const P& p, std::string_view name) {
        // Dependent, so that to_string(DeadLetterReason) is looked up where this is instantiated
        // (dead_letter.hpp is included by then).
        using Reason = typename dependent_type<P, DeadLetterReason>::type;
        const auto s = p.stats();  // one snapshot, under the store's lock
        const MetricLabels l{{"name", name}};
        w.add_gauge("bulwark_dead_letter_max_entries", "Records the store holds at most.", l,
                    p.limits().max_entries);
        const char* help = "Dead letters stored now, by status.";
        w.add_gauge("bulwark_dead_letters", help, with(l, "status", "pending"), s.pending);
        w.add_gauge("bulwark_dead_letters", help, with(l, "status", "reprocessed"), s.reprocessed);
        w.add_gauge("bulwark_dead_letters", help, with(l, "status", "dismissed"), s.dismissed);
        for (std::size_t i = 0; i < s.by_reason.size(); ++i) {
            w.add_gauge("bulwark_dead_letters_by_reason", "Dead letters stored now, by reason.",
                        with(l, "reason", to_string(static_cast<Reason>(i))), s.by_reason[i]);
        }
        // Types and categories come from message data: two that differ only in bytes that are
        // not UTF-8 render as the same label value, so they are summed, not dropped as a
        // duplicate series.
        for (const auto& [type, n] : by_label(s.by_type)) {
            w.add_gauge("bulwark_dead_letters_by_type", "Dead letters stored now, by type.",
                        with(l, "type", type), n);
        }
        for (const auto& [category, n] : by_label(s.by_category)) {
            w.add_gauge("bulwark_dead_letters_by_category",
                        "Dead letters stored now, by category (\"\" = uncategorized).",
                        with(l, "category", category), n);
        }
        w.add_counter("bulwark_dead_letter_added_total", "Records stored by add().", l, s.added);
        w.add_counter("bulwark_dead_letter_duplicate_adds_total",
                      "Adds of an id already stored (nothing stored).", l, s.duplicate_adds);
        const char* rejected = "Adds refused, by cause.";
        w.add_counter("bulwark_dead_letter_rejected_total", rejected, with(l, "cause", "full"),
                      s.rejected_full);
        w.add_counter("bulwark_dead_letter_rejected_total", rejected, with(l, "cause", "too_large"),
                      s.rejected_too_large);
        w.add_counter("bulwark_dead_letter_evicted_total", "Resolved records removed to make room.",
                      l, s.evicted);
        w.add_counter("bulwark_dead_letter_purged_total", "Records removed by purge().", l,
                      s.purged);
        w.add_counter("bulwark_dead_letter_resent_total", "Reprocess handler successes.", l,
                      s.resent);
        w.add_counter("bulwark_dead_letter_redrive_failures_total", "Reprocess handler failures.",
                      l, s.redrive_failures);
    }

private:
    static MetricLabels with(const MetricLabels& labels, std::string_view label,
                             std::string_view value) {
        MetricLabels out = labels;
        out.emplace_back(label, value);
        return out;
    }

    // Counts keyed by the label value each key renders as (bytes that are not UTF-8 become
    // U+FFFD), summed where two keys render alike.
    static std::map<std::string, std::size_t> by_label(
        const std::map<std::string, std::size_t>& counts) {
        std::map<std::string, std::size_t> out;
        for (const auto& [key, n] : counts) {
            std::string shown;
            detail::append_utf8(shown, key, [](std::string& to, char c) { to.push_back(c); });
            out[shown] += n;
        }
        return out;
    }
};

template <class Tag>
struct MetricsRenderer<BasicInMemoryDeadLetterStore<Tag>> : MetricsRenderer<DeadLetterStore> {};

// The engine writes its own series (queue depth, statuses, per-channel attempts, cost and a
// response-time histogram); labelled engine="<its options' name>".
template <class Message>
struct MetricsRenderer<DeliveryEngine<Message>> {
    static constexpr bool known = true;
    static constexpr bool needs_name = false;
    static constexpr bool accepts_name = true;
    template <class E>
    static std::string_view default_name(const E& e) noexcept {
        return e.options().name;
    }
    template <class E>
    static void write(MetricsWriter& w, const E& e, std::string_view name) {
        e.write_metrics(w, name);
    }
};

template <class C>
void write_component(MetricsWriter& w, C& component) {
    if constexpr (is_named<std::remove_const_t<C>>::value) {
        using T = std::remove_const_t<typename std::remove_const_t<C>::component_type>;
        using R = MetricsRenderer<T>;
        static_assert(R::known,
                      "bulwark::to_prometheus: metric_name() wraps a type it cannot render (see "
                      "docs/metrics.md for the supported components).");
        static_assert(R::accepts_name,
                      "bulwark::to_prometheus: a CircuitBreakerRegistry cannot be renamed: each "
                      "breaker is labelled with its own name.");
        R::write(w, component.component(), component.name());
    } else {
        using R = MetricsRenderer<std::remove_const_t<C>>;
        static_assert(R::known,
                      "bulwark::to_prometheus: unsupported argument (see docs/metrics.md for the "
                      "supported components).");
        static_assert(!R::needs_name,
                      "bulwark::to_prometheus: this component has no name of its own: pass "
                      "bulwark::metric_name(\"name\", component).");
        R::write(w, component, R::default_name(component));
    }
}

}  // namespace detail

// Appends the metrics of each component to `writer`, in argument order (a family's samples stay
// together however many components add to it). Each argument is a CircuitBreaker, a
// CircuitBreakerRegistry (every breaker, in name order), a Registry (its own series, then each
// component present, labelled with its key), a FallbackChain, a Degradation, a
// HealthMonitor, a ResourceManager (non-const: its report reads expired gauges), or a
// metric_name("name", component) wrapping one of these or a RetryPolicy, Bulkhead, RateLimiter,
// Timeout, Fallback, CacheFallback, LoadShedder, Hedging or dead-letter store (an
// InMemoryDeadLetterStore, or any store as a DeadLetterStore&).
//   bulwark::MetricsWriter w;
//   bulwark::to_prometheus(w, registry, bulwark::metric_name("sms_retry", retry));
// Reads each component's stats() or report() (the breaker, cache fallback, health monitor and
// resource manager read theirs under their lock; the others read relaxed counters one by one, so
// a rate may be briefly off while calls run; nothing is consistent across components):
// safe to call while other threads use the components; it takes the locks stats() takes, so
// call it from a scrape handler, not from a hot path. Throws std::invalid_argument as
// MetricsWriter does (a bad name in a label value is fine: values are escaped).
template <class... Components>
MetricsWriter& to_prometheus(MetricsWriter& writer, Components&&... components) {
    (detail::write_component(writer, components), ...);
    return writer;
}

// The exposition of the components' metrics, as above, for a scrape handler to return with
// Content-Type "text/plain; version=0.0.4; charset=utf-8".
//   std::string body = bulwark::to_prometheus(registry, chain, degradation, monitor);
template <class... Components>
std::string to_prometheus(Components&&... components) {
    MetricsWriter writer;
    to_prometheus(writer, components...);
    return writer.str();
}

}  // namespace bulwark

#endif  // BULWARK_METRICS_HPP

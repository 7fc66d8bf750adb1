#include <atomic>
#include <chrono>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <bulwark/bulkhead.hpp>
#include <bulwark/fallback_chain.hpp>
#include <bulwark/in_memory_dead_letter_store.hpp>
#include <bulwark/outage_delivery.hpp>
#include <bulwark/outage_lab.hpp>
#include <bulwark/pipeline.hpp>
#include <bulwark/retry.hpp>
#include <bulwark/timeout.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using bulwark::Duration;
using bulwark::OutageScenario;
using bulwark::SimLatency;
using bulwark::SimPhase;

namespace {

OutageScenario one_dependency(std::vector<SimPhase> phases, double rate, Duration duration,
                              std::size_t concurrency) {
    OutageScenario s;
    s.name = "test";
    s.seed = 2024;
    bulwark::SimDependency dep;
    dep.name = "provider";
    dep.phases = std::move(phases);
    s.dependencies = {dep};
    s.load.rate_per_second = rate;
    s.load.duration = duration;
    s.load.concurrency = concurrency;
    return s;
}

// Healthy, down from 20 s, recovered from 40 s: the provider outage most tests use.
OutageScenario provider_outage() {
    return one_dependency({SimPhase{"healthy", 0s, SimLatency::log_normal(20ms, 0.5), 0.01},
                           SimPhase{"down", 20s, SimLatency::fixed_at(5ms), 1.0},
                           SimPhase{"recovered", 40s, SimLatency::log_normal(20ms, 0.5), 0.01}},
                          200, 60s, 32);
}

// Runs a calling function that returns the pipeline's outcome for dependency 0.
template <class P>
bulwark::OutageTimeline run_pipeline(bulwark::OutageLab& lab, P& p, const char* name) {
    return lab.run(name, [&](bulwark::SimCall& call) {
        return p.try_execute([&](bulwark::Context& c) { return call.dependency(0, c); },
                             call.context());
    });
}

// The retry + breaker + timeout configuration of the determinism test.
bulwark::OutageTimeline run_reference(const OutageScenario& s) {
    bulwark::OutageLab lab(s);
    bulwark::CircuitBreakerOptions bo;
    bo.break_duration = 5s;
    bulwark::CircuitBreaker breaker("provider", bo, lab.clock());
    bulwark::RetryOptions ro;
    ro.max_retries = 2;
    bulwark::RetryPolicy retry(ro, lab.seed(1), lab.clock());
    bulwark::Timeout timeout(100ms, lab.clock());
    auto p = bulwark::pipeline(retry, breaker, timeout);
    lab.watch(breaker);
    return run_pipeline(lab, p, "retry, breaker, timeout");
}

std::string golden(const std::string& name) {
    std::string path = __FILE__;
    path = path.substr(0, path.find_last_of('/') + 1) + "outage_lab_golden.txt";
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind(name + " ", 0) == 0) {
            return line.substr(name.size() + 1);
        }
    }
    return "(no line '" + name + "' in " + path + ")";
}

template <class F>
std::string invalid_message(F&& f) {
    try {
        f();
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return "(no exception)";
}

}  // namespace

TEST_CASE("the same scenario and seed give the same timeline, byte for byte", "[outage_lab]") {
    OutageScenario s = provider_outage();
    s.dependencies[0].phases[1].error_kind = bulwark::SimErrorKind::timeout;
    s.dependencies[0].phases[1].hang = 2s;
    s.load.arrival = bulwark::SimArrival::poisson;
    const bulwark::OutageTimeline a = run_reference(s);
    const bulwark::OutageTimeline b = run_reference(s);
    const std::string text = bulwark::to_canonical_text(a);
    CHECK(text == bulwark::to_canonical_text(b));
    CHECK(a.summary.calls > 11000);
    CHECK(a.summary.failed > 0);
    CHECK(a.summary.rejected > 0);
    // The golden checksum is the same with g++/libstdc++ and clang++/libc++: no std::
    // distribution, no unordered iteration, no address in the result.
    CHECK(bulwark::timeline_checksum(a) == golden("retry_breaker_timeout_poisson"));

    s.seed = 2025;
    CHECK(bulwark::to_canonical_text(run_reference(s)) != text);
}

TEST_CASE("a bucket records the phase the dependency is in, and the breaker's answer to it",
          "[outage_lab]") {
    const bulwark::OutageTimeline t = run_reference(provider_outage());
    REQUIRE(t.buckets.size() >= 60);
    REQUIRE(t.outages.size() == 1);
    CHECK(t.outages[0].start == 20s);
    CHECK(t.outages[0].end == 40s);
    for (std::size_t i = 0; i < 20; ++i) {
        INFO("bucket " << i);
        CHECK_FALSE(t.buckets[i].per_dependency[0].down);
        CHECK(t.buckets[i].per_dependency[0].calls >= 200);  // every offered call reached it
        CHECK(t.buckets[i].breaker_state[0] ==
              static_cast<std::uint8_t>(bulwark::CircuitState::closed));
    }
    for (std::size_t i = 20; i < 40; ++i) {
        INFO("bucket " << i);
        CHECK(t.buckets[i].per_dependency[0].down);
        CHECK(t.buckets[i].per_dependency[0].successes == 0);
        // Bucket 20 still sees the calls that reached the provider before it went down end.
        CHECK(t.buckets[i].succeeded == (i == 20 ? t.buckets[20].succeeded : 0));
    }
    CHECK(t.buckets[20].succeeded < 10);
    // The breaker opened during the first second of the outage and stayed away from closed
    // until the provider recovered.
    CHECK(t.buckets[20].breaker_state[0] !=
          static_cast<std::uint8_t>(bulwark::CircuitState::closed));
    REQUIRE_FALSE(t.transitions.empty());
    CHECK(t.transitions[0].at >= 20s);
    CHECK(t.transitions[0].at < 21s);
    CHECK(t.transitions[0].to == static_cast<std::uint8_t>(bulwark::CircuitState::open));
    CHECK(t.buckets[50].breaker_state[0] ==
          static_cast<std::uint8_t>(bulwark::CircuitState::closed));
    CHECK(t.buckets[50].succeeded >= 190);
    // With the breaker, the down provider saw a small share of the offered load.
    CHECK(t.summary.calls_offered_while_down == 4000);
    CHECK(t.summary.extra_load_ratio < 0.1);
    REQUIRE(t.summary.time_to_recover.has_value());
    CHECK(*t.summary.time_to_recover <= 10s);
}

TEST_CASE("retry alone multiplies the load on a down dependency", "[outage_lab]") {
    bulwark::OutageLab lab(provider_outage());
    bulwark::RetryOptions ro;
    ro.max_retries = 2;
    ro.backoff = bulwark::Backoff::fixed(10ms);
    bulwark::RetryPolicy retry(ro, lab.seed(1), lab.clock());
    auto p = bulwark::pipeline(retry);
    const bulwark::OutageTimeline t = run_pipeline(lab, p, "retry only");
    // Every call offered while down made three attempts.
    CHECK(t.summary.extra_load_ratio > 2.9);
    CHECK(t.summary.extra_load_ratio <= 3.0);
    CHECK(t.buckets[30].retries == 400);
    CHECK(t.buckets[30].failed == 200);
    CHECK(t.buckets[30].failed_by_kind[0] == 200);
    CHECK(bulwark::dependency_rate_while_down_at_most(t, "provider", 600));
    CHECK_FALSE(bulwark::dependency_rate_while_down_at_most(t, "provider", 599));
}

TEST_CASE("callers overlap in virtual time: a burst of 20 against a bulkhead of 10",
          "[outage_lab]") {
    OutageScenario s =
        one_dependency({SimPhase{"healthy", 0s, SimLatency::fixed_at(100ms), 0.0}}, 0.001, 5s, 20);
    s.load.arrival = bulwark::SimArrival::bursts;
    s.load.burst_every = 1s;
    s.load.burst_size = 20;
    bulwark::OutageLab lab(s);
    bulwark::Bulkhead bulkhead("pool", bulwark::BulkheadOptions{10, 0, 0s}, lab.clock());
    auto p = bulwark::pipeline(bulkhead);
    const bulwark::OutageTimeline t = run_pipeline(lab, p, "bulkhead 10");
    // One call at 0 (the constant stream), then bursts at 1, 2, 3 and 4 s.
    CHECK(t.summary.calls == 81);
    CHECK(t.summary.rejected == 40);
    CHECK(t.summary.succeeded == 41);
    for (std::size_t i = 1; i <= 4; ++i) {
        INFO("bucket " << i);
        CHECK(t.buckets[i].offered == 20);
        CHECK(t.buckets[i].per_dependency[0].calls == 10);
        REQUIRE(t.buckets[i].rejected_by_policy.size() == 1);
        CHECK(t.buckets[i].rejected_by_policy[0].first == "bulkhead 'pool'");
        CHECK(t.buckets[i].rejected_by_policy[0].second == 10);
    }
    CHECK(t.elapsed == 4s + 100ms);
}

TEST_CASE("callers beyond the load's concurrency wait their turn", "[outage_lab]") {
    OutageScenario s =
        one_dependency({SimPhase{"healthy", 0s, SimLatency::fixed_at(100ms), 0.0}}, 0.001, 2s, 5);
    s.load.arrival = bulwark::SimArrival::bursts;
    s.load.burst_every = 1s;
    s.load.burst_size = 20;
    bulwark::OutageLab lab(s);
    const bulwark::OutageTimeline t =
        lab.run("bare", [](bulwark::SimCall& call) { return call.dependency(0); });
    // The burst at 1 s runs in four waves of five: caller-seen latencies 100..400 ms.
    CHECK(t.summary.calls == 21);
    CHECK(t.buckets[1].p50 == 200ms);
    CHECK(t.buckets[1].p99 == 400ms);
    CHECK(t.elapsed == 1s + 400ms);
}

TEST_CASE("a bulkhead's queue waits in virtual time while other callers release slots",
          "[outage_lab]") {
    OutageScenario s =
        one_dependency({SimPhase{"healthy", 0s, SimLatency::fixed_at(100ms), 0.0}}, 0.001, 2s, 20);
    s.load.arrival = bulwark::SimArrival::bursts;
    s.load.burst_every = 1s;
    s.load.burst_size = 20;
    SECTION("the queued calls get the slots the first ten release") {
        bulwark::OutageLab lab(s);
        bulwark::Bulkhead bulkhead("pool", bulwark::BulkheadOptions{10, 10, 150ms}, lab.clock());
        auto p = bulwark::pipeline(bulkhead);
        const bulwark::OutageTimeline t = run_pipeline(lab, p, "bulkhead 10 + queue 10");
        CHECK(t.summary.rejected == 0);
        CHECK(t.summary.succeeded == 21);
        CHECK(t.buckets[1].p50 == 100ms);
        CHECK(t.buckets[1].p99 == 200ms);
    }
    SECTION("a queue timeout shorter than the calls rejects the queued ones at the timeout") {
        bulwark::OutageLab lab(s);
        bulwark::Bulkhead bulkhead("pool", bulwark::BulkheadOptions{10, 10, 50ms}, lab.clock());
        auto p = bulwark::pipeline(bulkhead);
        const bulwark::OutageTimeline t = run_pipeline(lab, p, "bulkhead 10 + queue 10");
        CHECK(t.summary.rejected == 10);
        CHECK(t.buckets[1].p50 == 50ms);
        CHECK(t.buckets[1].p99 == 100ms);
    }
}

TEST_CASE("a Timeout cuts a hanging dependency at its deadline and counts it", "[outage_lab]") {
    OutageScenario s = one_dependency({SimPhase{"hanging", 0s, SimLatency::fixed_at(10ms), 1.0,
                                                bulwark::SimErrorKind::timeout, 1s, 30s}},
                                      10, 2s, 4);
    bulwark::OutageLab lab(s);
    bulwark::Timeout timeout(100ms, lab.clock());
    auto p = bulwark::pipeline(timeout);
    const bulwark::OutageTimeline t = run_pipeline(lab, p, "timeout");
    CHECK(t.summary.calls == 20);
    CHECK(t.summary.failed == 20);
    // The call that arrived at 900 ms ends just after 1 s, in the next bucket.
    CHECK(t.buckets[0].failed_by_kind[static_cast<std::size_t>(bulwark::SimErrorKind::timeout)] ==
          9);
    CHECK(timeout.stats().timeouts == 20);
    CHECK(t.summary.p99 == 100ms + 1ns);
}

TEST_CASE("a retry waits in virtual time: backoff and a rate limit's retry-after", "[outage_lab]") {
    SECTION("fixed backoff") {
        OutageScenario s =
            one_dependency({SimPhase{"down", 0s, SimLatency::fixed_at(10ms), 1.0}}, 1, 1s, 1);
        bulwark::OutageLab lab(s);
        bulwark::RetryOptions ro;
        ro.max_retries = 2;
        ro.backoff = bulwark::Backoff::fixed(1s);
        bulwark::RetryPolicy retry(ro, lab.seed(1), lab.clock());
        auto p = bulwark::pipeline(retry);
        const bulwark::OutageTimeline t = run_pipeline(lab, p, "retry");
        CHECK(t.summary.calls == 1);
        CHECK(t.summary.retries == 2);
        CHECK(t.summary.p50 == 2s + 30ms);
    }
    SECTION("a 429's retry-after is longer than the backoff") {
        OutageScenario s = one_dependency({SimPhase{"throttled", 0s, SimLatency::fixed_at(10ms),
                                                    1.0, bulwark::SimErrorKind::rate_limited, 3s}},
                                          1, 1s, 1);
        bulwark::OutageLab lab(s);
        bulwark::RetryOptions ro;
        ro.max_retries = 1;
        ro.backoff = bulwark::Backoff::fixed(1s);
        bulwark::RetryPolicy retry(ro, lab.seed(1), lab.clock());
        auto p = bulwark::pipeline(retry);
        const bulwark::OutageTimeline t = run_pipeline(lab, p, "retry");
        CHECK(t.summary.failed == 1);
        CHECK(t.buckets[3]
                  .failed_by_kind[static_cast<std::size_t>(bulwark::SimErrorKind::rate_limited)] ==
              1);
        CHECK(t.summary.p50 == 3s + 20ms);
    }
}

TEST_CASE("a FallbackChain falls back to the second dependency while the first is down",
          "[outage_lab]") {
    OutageScenario s = provider_outage();
    bulwark::SimDependency backup;
    backup.name = "backup";
    backup.phases = {SimPhase{"healthy", 0s, SimLatency::fixed_at(50ms), 0.0}};
    s.dependencies.push_back(backup);
    bulwark::OutageLab lab(s);
    bulwark::CircuitBreakerOptions bo;
    bo.break_duration = 5s;
    bulwark::CircuitBreaker breaker("provider", bo, lab.clock());
    bulwark::FallbackChain<bulwark::SimResponse(bulwark::SimCall*)> chain(
        bulwark::Selection::priority, {}, lab.seed(2), lab.clock());
    bulwark::ChannelOptions primary;
    primary.breaker = &breaker;
    chain.add(
        "provider", [](bulwark::SimCall* call) { return call->dependency(0); }, primary);
    chain.add("backup", [](bulwark::SimCall* call) { return call->dependency(1); });
    lab.watch(breaker);
    const bulwark::OutageTimeline t = lab.run("chain", [&](bulwark::SimCall& call) {
        return chain.execute_for(call.context(), "provider", &call);
    });
    CHECK(t.summary.success_rate == 1.0);
    CHECK(t.buckets[10].fallbacks <= 5);  // the provider's 1% errors
    CHECK(t.buckets[30].fallbacks == 200);
    // Skipped while the breaker is open, but for a half-open probe every 5 s.
    CHECK(t.buckets[30].per_dependency[0].calls <= 1);
    CHECK(t.buckets[30].per_dependency[1].calls == 200);
    CHECK(t.buckets[30].p99 == 50ms);
    CHECK(bulwark::breaker_opens_within(t, "provider", 20, "provider"));
    CHECK(bulwark::timeline_checksum(t) == golden("fallback_chain"));
}

TEST_CASE("a recorded trace replays its outage", "[outage_lab]") {
    OutageScenario s = one_dependency({}, 50, 6s, 8);
    for (int i = 0; i < 600; ++i) {
        const Duration at = 10ms * i;
        const bool ok = at < 2s || at >= 4s;
        s.dependencies[0].trace.push_back(
            bulwark::SimTraceSample{at, ok ? 20ms : 1ms, ok, bulwark::SimErrorKind::permanent});
    }
    bulwark::OutageLab lab(s);
    const bulwark::OutageTimeline t =
        lab.run("bare", [](bulwark::SimCall& call) { return call.dependency(0); });
    REQUIRE(t.outages.size() == 1);
    CHECK(t.outages[0].start == 2s);
    CHECK(t.outages[0].end == 4s);
    CHECK(t.buckets[0].failed == 0);
    // A call in the first 1 s of the outage may replay a sample from before it.
    CHECK(t.buckets[3].failed_by_kind[static_cast<std::size_t>(bulwark::SimErrorKind::permanent)] ==
          50);
    CHECK(t.buckets[5].failed == 0);
}

TEST_CASE("the assertions pass and fail with a message saying what was seen", "[outage_lab]") {
    const bulwark::OutageTimeline t = run_reference(provider_outage());
    const bulwark::LabCheck opened = bulwark::breaker_opens_within(t, "provider", 50);
    CHECK(opened);
    CHECK(opened.message.find("breaker 'provider' opened") != std::string::npos);
    const std::uint64_t seen = t.transitions[0].dependency_calls[0] - t.outages[0].calls_before;
    CHECK(bulwark::breaker_opens_within(t, "provider", seen));
    CHECK_FALSE(bulwark::breaker_opens_within(t, "provider", seen - 1));
    CHECK_FALSE(bulwark::breaker_opens_within(t, "nobody", 50));
    CHECK_THROWS_AS(bulwark::require_breaker_opens_within(t, "provider", seen - 1),
                    bulwark::OutageAssertionError);
    CHECK_NOTHROW(bulwark::require_breaker_opens_within(t, "provider", seen));

    CHECK(bulwark::p99_stays_under(t, 10min));
    const bulwark::LabCheck p99 = bulwark::p99_stays_under(t, 10ms);
    CHECK_FALSE(p99);
    CHECK(p99.message.find("worst p99") != std::string::npos);
    CHECK_THROWS_AS(bulwark::require_p99_stays_under(t, 10ms), bulwark::OutageAssertionError);

    CHECK(bulwark::dependency_rate_while_down_at_most(t, "provider", 1000));
    CHECK_FALSE(bulwark::dependency_rate_while_down_at_most(t, "provider", 0.5));
    CHECK_FALSE(bulwark::dependency_rate_while_down_at_most(t, "nobody", 1000));
    CHECK(bulwark::success_rate_at_least(t, 0.5));
    CHECK_FALSE(bulwark::success_rate_at_least(t, 0.999));

    // A breaker that never opens fails the check with "never opened".
    bulwark::OutageLab lab(provider_outage());
    bulwark::CircuitBreakerOptions bo;
    bo.handle<std::out_of_range>();  // counts nothing the provider throws
    bulwark::CircuitBreaker lazy("lazy", bo, lab.clock());
    auto p = bulwark::pipeline(lazy);
    lab.watch(lazy);
    const bulwark::OutageTimeline never = run_pipeline(lab, p, "lazy breaker");
    const bulwark::LabCheck c = bulwark::breaker_opens_within(never, "lazy", 1000000);
    CHECK_FALSE(c);
    CHECK(c.message.find("never opened") != std::string::npos);
}

TEST_CASE("scenario validate() names the field and the value", "[outage_lab]") {
    OutageScenario s = provider_outage();
    CHECK_NOTHROW(s.validate());
    auto bad = s;
    bad.load.rate_per_second = 0;
    CHECK(invalid_message([&] { bad.validate(); }) ==
          "OutageScenario.load.rate_per_second must be in (0, 1e7], got 0");
    bad = s;
    bad.load.concurrency = 0;
    CHECK(invalid_message([&] { bad.validate(); }) ==
          "OutageScenario.load.concurrency must be in [1, 100000], got 0");
    bad = s;
    bad.dependencies[0].phases[2].start = 10s;
    CHECK(invalid_message([&] { bad.validate(); }) ==
          "OutageScenario.dependencies[0].phases[2].start must be after the previous phase's "
          "start, got 10s");
    bad = s;
    bad.dependencies[0].phases[1].error_rate = 1.5;
    CHECK(invalid_message([&] { bad.validate(); }) ==
          "OutageScenario.dependencies[0].phases[1].error_rate must be in [0, 1], got 1.5");
    bad = s;
    bad.dependencies[0].phases[0].latency.sigma = -1;
    CHECK(invalid_message([&] { bad.validate(); }) ==
          "OutageScenario.dependencies[0].phases[0].latency.sigma must be in [0, 10], got -1");
    bad = s;
    bad.dependencies.push_back(bad.dependencies[0]);
    CHECK(invalid_message([&] { bad.validate(); }) ==
          R"(OutageScenario.dependencies[1].name must be unique, got "provider")");
    bad = s;
    bad.bucket = 2min;
    CHECK(invalid_message([&] { bad.validate(); }) ==
          "OutageScenario.bucket must be <= load.duration, got 2min");
    bad = s;
    bad.dependencies[0].phases[0].latency = SimLatency::empirical({});
    CHECK(invalid_message([&] { bad.validate(); }) ==
          "OutageScenario.dependencies[0].phases[0].latency.samples must not be empty, got 0 "
          "samples");
    // The lab validates the scenario it is given.
    bad = s;
    bad.load.duration = 0s;
    CHECK(invalid_message([&] { bulwark::OutageLab lab(bad); }) ==
          "OutageScenario.load.duration must be > 0, got 0s");
}

TEST_CASE("a lab runs once, and refuses an unknown dependency", "[outage_lab]") {
    OutageScenario s = one_dependency({SimPhase{}}, 10, 1s, 2);
    bulwark::OutageLab lab(s);
    int refused = 0;
    const auto refuses = [&](auto&& f) {
        try {
            f();
        } catch (const std::invalid_argument&) {
            ++refused;
        }
    };
    const bulwark::OutageTimeline t = lab.run("by name", [&](bulwark::SimCall& call) {
        const bulwark::SimResponse r = call.dependency("provider");
        refuses([&] { (void)call.dependency("nobody"); });
        refuses([&] { (void)call.dependency(7); });
        return r;
    });
    CHECK(t.summary.succeeded == 10);
    CHECK(refused == 20);
    CHECK_THROWS_AS(lab.run("again", [](bulwark::SimCall&) { return 0; }), std::logic_error);
}

namespace {

// The cross-check's scenario at small scale: healthy for 500 ms, down for 500 ms, healthy again,
// 100 calls/s, 4 callers, 5 ms per call.
OutageScenario cross_check_scenario() {
    OutageScenario s = one_dependency({SimPhase{"healthy", 0s, SimLatency::fixed_at(5ms), 0.0},
                                       SimPhase{"down", 500ms, SimLatency::fixed_at(5ms), 1.0},
                                       SimPhase{"healthy", 1000ms, SimLatency::fixed_at(5ms), 0.0}},
                                      100, 1500ms, 4);
    s.bucket = 100ms;
    return s;
}

bulwark::CircuitBreakerOptions cross_check_breaker() {
    bulwark::CircuitBreakerOptions bo;
    bo.failure_threshold = 5;
    bo.break_duration = 100ms;
    return bo;
}

bulwark::RetryOptions cross_check_retry() {
    bulwark::RetryOptions ro;
    ro.max_retries = 1;
    ro.backoff = bulwark::Backoff::fixed(20ms);
    ro.retry_on<bulwark::SimError>();  // not the breaker's rejections
    return ro;
}

struct Decisions {
    std::uint64_t offered = 0;
    std::uint64_t succeeded = 0;
    std::uint64_t rejected = 0;
    std::uint64_t calls_while_down = 0;
    bool opened = false;
};

// The same configuration with real threads on the real clock: `concurrency` callers take the
// arrivals in order, wait for each one's time and make the call; the dependency fails while the
// real time since the start is in the scenario's down phase.
Decisions real_time_run(const OutageScenario& s) {
    bulwark::SteadyClock clock;
    bulwark::CircuitBreaker breaker("provider", cross_check_breaker(), clock);
    bulwark::RetryPolicy retry(cross_check_retry(), 7, clock);
    auto p = bulwark::pipeline(retry, breaker);
    const std::uint64_t total = static_cast<std::uint64_t>(
        std::chrono::duration<double>(s.load.duration).count() * s.load.rate_per_second);
    const Duration spacing{static_cast<std::int64_t>(1e9 / s.load.rate_per_second)};
    const bulwark::SimDependency& dep = s.dependencies[0];
    std::atomic<std::uint64_t> next{0};
    std::atomic<std::uint64_t> succeeded{0};
    std::atomic<std::uint64_t> rejected{0};
    std::atomic<std::uint64_t> calls_while_down{0};
    std::atomic<bool> opened{false};
    const bulwark::TimePoint start = clock.now();
    const auto caller = [&] {
        for (;;) {
            const std::uint64_t k = next.fetch_add(1);
            if (k >= total) {
                return;
            }
            clock.sleep_until(start + spacing * static_cast<std::int64_t>(k));
            auto out = p.try_execute([&]() -> int {
                const Duration t = clock.now() - start;
                const SimPhase& phase = dep.phase_at(t);
                const bool down = phase.error_rate >= 1.0;
                if (down) {
                    calls_while_down.fetch_add(1);
                }
                clock.sleep_for(phase.latency.value);
                if (down) {
                    throw bulwark::SimError(bulwark::SimErrorKind::transient, dep.name, "down");
                }
                return 1;
            });
            if (breaker.state() == bulwark::CircuitState::open) {
                opened.store(true);
            }
            if (out.has_value()) {
                succeeded.fetch_add(1);
            } else {
                try {
                    out.rethrow_if_error();
                } catch (const bulwark::CircuitOpenError&) {
                    rejected.fetch_add(1);
                } catch (...) {
                }
            }
        }
    };
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < s.load.concurrency; ++i) {
        threads.emplace_back(caller);
    }
    for (std::thread& t : threads) {
        t.join();
    }
    return Decisions{total, succeeded.load(), rejected.load(), calls_while_down.load(),
                     opened.load()};
}

Decisions simulated_run(const OutageScenario& s) {
    bulwark::OutageLab lab(s);
    bulwark::CircuitBreaker breaker("provider", cross_check_breaker(), lab.clock());
    bulwark::RetryPolicy retry(cross_check_retry(), 7, lab.clock());
    auto p = bulwark::pipeline(retry, breaker);
    lab.watch(breaker);
    const bulwark::OutageTimeline t = run_pipeline(lab, p, "retry, breaker");
    bool opened = false;
    for (const bulwark::SimBreakerTransition& tr : t.transitions) {
        opened = opened || tr.to == static_cast<std::uint8_t>(bulwark::CircuitState::open);
    }
    return Decisions{t.summary.calls, t.summary.succeeded, t.summary.rejected,
                     t.summary.calls_to_failing_dependency_while_down, opened};
}

}  // namespace

// The simulator runs the library's own breaker and retry; the same configuration with real
// threads on the real clock must take the same decisions. Real time makes the real run jitter
// (a loaded machine, a sanitizer), so the tolerance is stated: the same calls offered, both
// breakers open, successes within 15% of the offered calls, calls reaching the down dependency
// within 8 of each other and spared by the breaker in both (at most 40% of the 50 calls offered
// while down reach it, against 200% with retries and no breaker). Measured here, quiet or not:
// 92 / 91 successes, 10 / 9-10 calls while down. No timing is asserted. About 1.5 s of real
// time.
TEST_CASE("cross-check: real threads in real time take the simulator's decisions",
          "[outage_lab][cross_check]") {
    const OutageScenario s = cross_check_scenario();
    const Decisions sim = simulated_run(s);
    const Decisions real = real_time_run(s);
    INFO("simulated: succeeded " << sim.succeeded << ", rejected " << sim.rejected
                                 << ", calls while down " << sim.calls_while_down);
    INFO("real time: succeeded " << real.succeeded << ", rejected " << real.rejected
                                 << ", calls while down " << real.calls_while_down);
    CHECK(sim.offered == 150);
    CHECK(real.offered == sim.offered);
    CHECK(sim.opened);
    CHECK(real.opened);
    const auto diff = [](std::uint64_t a, std::uint64_t b) {
        return a > b ? a - b : b - a;
    };
    CHECK(diff(sim.succeeded, real.succeeded) <= 150 * 15 / 100);
    CHECK(diff(sim.calls_while_down, real.calls_while_down) <= 8);
    CHECK(sim.calls_while_down <= 20);
    CHECK(real.calls_while_down <= 20);
    CHECK(sim.rejected >= 25);
    CHECK(real.rejected >= 25);
}

namespace {

bulwark::OutageTimeline run_engine(const OutageScenario& s) {
    bulwark::OutageLab lab(s);
    bulwark::InMemoryDeadLetterStore dead_letters;
    bulwark::DeliveryEngineOptions o;
    o.workers = 0;  // the lab's fibers are the workers
    bulwark::DeliveryEngine<std::string> engine(bulwark::FallbackRules{}, dead_letters, o,
                                                lab.clock());
    engine.add_channel("sms", [&lab](const std::string& m, bulwark::Context& ctx) {
        lab.dependency(0, ctx);
        return bulwark::Receipt{"sms", "sms-" + m, 0.0, true};
    });
    return bulwark::run_delivery(lab, "engine", engine,
                                 [](bulwark::SimCall& c) { return std::to_string(c.id()); });
}

}  // namespace

TEST_CASE("a DeliveryEngine under an outage: its workers are fibers and no message is lost",
          "[outage_lab]") {
    OutageScenario s = one_dependency({SimPhase{"healthy", 0s, SimLatency::fixed_at(20ms), 0.0},
                                       SimPhase{"down", 5s, SimLatency::fixed_at(5ms), 1.0},
                                       SimPhase{"healthy", 10s, SimLatency::fixed_at(20ms), 0.0}},
                                      20, 20s, 4);
    const bulwark::OutageTimeline t = run_engine(s);
    CHECK(t.summary.calls == 400);
    CHECK(t.summary.succeeded == 400);  // every submit accepted
    CHECK(t.summary.lost == 0);
    CHECK(t.summary.delivered + t.summary.dead_lettered == 400);
    CHECK(t.summary.delivered > 300);
    // The engine went on after the load until its queue was empty, retrying the messages the
    // outage failed: the provider saw more sends than messages.
    std::uint64_t sends = 0;
    for (const bulwark::SimBucket& b : t.buckets) {
        sends += b.per_dependency[0].calls;
    }
    CHECK(sends > 400);
    CHECK(t.elapsed >= 20s);
    CHECK(bulwark::to_canonical_text(t) == bulwark::to_canonical_text(run_engine(s)));
    CHECK(bulwark::timeline_checksum(t) == golden("delivery_engine"));
}

TEST_CASE("arrivals and latencies follow the scenario's distributions", "[outage_lab]") {
    SECTION("Poisson arrivals average the rate") {
        OutageScenario s = one_dependency({SimPhase{}}, 500, 20s, 16);
        s.load.arrival = bulwark::SimArrival::poisson;
        bulwark::OutageLab lab(s);
        const bulwark::OutageTimeline t =
            lab.run("bare", [](bulwark::SimCall& call) { return call.dependency(0); });
        CHECK(t.summary.calls > 9700);  // 10000 expected; sd 100
        CHECK(t.summary.calls < 10300);
        bool varies = false;
        for (const bulwark::SimBucket& b : t.buckets) {
            varies = varies || (b.offered != 0 && b.offered != 500);
        }
        CHECK(varies);
    }
    SECTION("uniform latencies stay in their bounds") {
        OutageScenario s = one_dependency(
            {SimPhase{"uniform", 0s, SimLatency::uniform(10ms, 30ms), 0.0}}, 100, 10s, 64);
        bulwark::OutageLab lab(s);
        Duration low = Duration::max();
        Duration high = Duration::min();
        lab.run("bare", [&](bulwark::SimCall& call) {
            const bulwark::SimResponse r = call.dependency(0);
            low = std::min(low, r.latency);
            high = std::max(high, r.latency);
            return r;
        });
        CHECK(low >= 10ms);
        CHECK(low < 11ms);
        CHECK(high <= 30ms);
        CHECK(high > 29ms);
    }
    SECTION("empirical latencies are the samples") {
        OutageScenario s = one_dependency(
            {SimPhase{"recorded", 0s, SimLatency::empirical({1ms, 7ms, 40ms}), 0.0}}, 100, 5s, 64);
        bulwark::OutageLab lab(s);
        std::vector<std::uint64_t> seen(3);
        lab.run("bare", [&](bulwark::SimCall& call) {
            const bulwark::SimResponse r = call.dependency(0);
            seen[r.latency == 1ms ? 0 : r.latency == 7ms ? 1 : 2] += 1;
            return r;
        });
        CHECK(seen[0] > 100);
        CHECK(seen[1] > 100);
        CHECK(seen[2] > 100);
        CHECK(seen[0] + seen[1] + seen[2] == 500);
    }
    SECTION("log-normal latencies have the median they are given") {
        OutageScenario s = one_dependency(
            {SimPhase{"log-normal", 0s, SimLatency::log_normal(20ms, 0.5), 0.0}}, 1000, 10s, 256);
        bulwark::OutageLab lab(s);
        const bulwark::OutageTimeline t =
            lab.run("bare", [](bulwark::SimCall& call) { return call.dependency(0); });
        CHECK(t.summary.p50 > 19ms);
        CHECK(t.summary.p50 < 21ms);
        CHECK(t.summary.p99 > 55ms);  // exp(2.326 * 0.5) * 20 ms = 64 ms
        CHECK(t.summary.p99 < 75ms);
    }
}

TEST_CASE("lab options and background fibers refuse invalid values", "[outage_lab]") {
    bulwark::SimOptions o;
    o.stack_size = 1024;
    CHECK(invalid_message([&] { o.validate(); }) ==
          "SimOptions.stack_size must be >= 32768, got 1024");
    o = bulwark::SimOptions{};
    o.max_drain = 0s;
    CHECK(invalid_message([&] { o.validate(); }) == "SimOptions.max_drain must be > 0, got 0s");
    bulwark::OutageLab lab(one_dependency({SimPhase{}}, 10, 1s, 2));
    CHECK(invalid_message([&] { lab.background(0s, [] {}); }) ==
          "OutageLab.background: interval must be > 0, got 0s");
    CHECK_THROWS_AS(lab.dependency(0), std::logic_error);  // outside the run
}

namespace {
// Counts live instances: what a call or a poll holds on its fiber's stack.
struct Alive {
    explicit Alive(int& n) : count(&n) { ++*count; }
    Alive(const Alive&) = delete;
    Alive& operator=(const Alive&) = delete;
    ~Alive() { --*count; }
    int* count;
};
}  // namespace

TEST_CASE("calls and polls still waiting when the run ends are unwound, not leaked",
          "[outage_lab]") {
    // Every call hangs for an hour; with a background fiber the run ends at max_drain (1 s after
    // the load), with every call and the poll still waiting inside the dependency.
    OutageScenario s = one_dependency({SimPhase{"hanging", 0s, SimLatency::fixed_at(10ms), 1.0,
                                                bulwark::SimErrorKind::timeout, 1s, 1h}},
                                      10, 1s, 4);
    bulwark::SimOptions o;
    o.max_drain = 1s;
    int alive = 0;
    bulwark::OutageTimeline t;
    {
        bulwark::OutageLab lab(s, o);
        lab.background(100ms, [&] {
            const Alive a(alive);
            (void)lab.dependency(0);
        });
        SECTION("the exception passes through the call") {
            t = lab.run("stuck", [&](bulwark::SimCall& call) {
                const Alive a(alive);
                return call.dependency(0);
            });
        }
        SECTION("the call swallows it") {
            t = lab.run("stuck", [&](bulwark::SimCall& call) {
                const Alive a(alive);
                try {
                    (void)call.dependency(0);
                    return 1;
                } catch (...) {
                    return 0;  // a fallback
                }
            });
        }
        CHECK(alive == 0);  // every stack was unwound by the end of run()
    }
    CHECK(alive == 0);
    CHECK(t.summary.calls == 10);
    CHECK(t.summary.succeeded == 0);  // nothing that ended after the run is counted
    CHECK(t.summary.failed == 0);
}

TEST_CASE("a tiny arrival rate ends the load instead of arriving in the past", "[outage_lab]") {
    // Gaps of 1e309 ns (infinite) or 1e21 ns do not fit an int64: the load is one call at 0.
    for (const double rate : {1e-300, 1e-12}) {
        for (const auto arrival : {bulwark::SimArrival::constant, bulwark::SimArrival::poisson,
                                   bulwark::SimArrival::bursts}) {
            OutageScenario s = one_dependency(
                {SimPhase{"healthy", 0s, SimLatency::fixed_at(10ms), 0.0}}, rate, 2s, 4);
            s.load.arrival = arrival;
            s.load.burst_every = 5s;  // after the load: no burst
            s.bucket = 1s;
            bulwark::OutageLab lab(s);
            const bulwark::OutageTimeline t =
                lab.run("tiny", [](bulwark::SimCall& call) { return call.dependency(0); });
            CHECK(t.summary.calls == 1);
        }
    }
}

TEST_CASE("bursts far apart do not overflow the burst schedule", "[outage_lab]") {
    OutageScenario s =
        one_dependency({SimPhase{"healthy", 0s, SimLatency::fixed_at(10ms), 0.0}}, 1, 4s, 4);
    s.load.arrival = bulwark::SimArrival::bursts;
    s.load.burst_every = Duration{std::numeric_limits<std::int64_t>::max() / 2 + 1};
    s.load.duration = s.load.burst_every + 2s;
    s.load.burst_size = 1;
    s.load.rate_per_second = 1e-10;  // one call at 0 from the constant stream
    s.bucket = s.load.duration;
    bulwark::OutageLab lab(s);
    const bulwark::OutageTimeline t =
        lab.run("far", [](bulwark::SimCall& call) { return call.dependency(0); });
    CHECK(t.summary.calls == 2);  // the call at 0 and the one burst
}

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <bulwark/adaptive_limiter.hpp>
#include <bulwark/detail/random.hpp>
#include <bulwark/pipeline.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;

namespace {

using Limiter = bulwark::AdaptiveLimiter;

template <class Pred>
void spin_until(Pred pred) {
    while (!pred()) {
        std::this_thread::yield();
    }
}

// A dependency with `capacity` workers that shares them among the calls in flight (processor
// sharing): each call needs `base` of work, and with n > capacity calls inside each progresses
// at capacity / n of full speed, so a steady n takes base × n / capacity (Little's law). An
// optional jitter spreads each call's work uniformly over ±jitter/2 of it, from a seeded
// generator.
struct Server {
    std::uint32_t capacity = 100;
    bulwark::Duration base = 10ms;
    double jitter = 0.0;
    bulwark::detail::SplitMix64 random{42};

    double work_ns() {
        double ns = static_cast<double>(base.count());
        if (jitter > 0) {
            ns *= 1.0 + jitter * (random.next_double() - 0.5);
        }
        return ns;
    }
};

// Closed-loop load: `clients` callers that call again as soon as they can. At every event the
// idle ones try the limiter; time then jumps to the next completion.
class Simulation {
public:
    Simulation(bulwark::ManualClock& clock, Limiter& limiter, Server& server, std::uint32_t clients)
        : clock_(clock), limiter_(limiter), server_(server), clients_(clients) {}

    // Runs for `d`; returns the limits seen (once per event) in the last `tail` of it, outside
    // Vegas probes.
    std::vector<std::uint32_t> run(bulwark::Duration d, bulwark::Duration tail) {
        std::vector<std::uint32_t> seen;
        const bulwark::TimePoint end = clock_.now() + d;
        while (clock_.now() < end) {
            while (calls_.size() < clients_) {
                auto permit = limiter_.try_acquire();
                if (!permit) {
                    break;
                }
                calls_.emplace(served_ + server_.work_ns(), std::move(permit));
            }
            // Every call inside progresses at `rate`; the first to finish its work ends next.
            const double n = static_cast<double>(calls_.size());
            const double rate = std::min(1.0, server_.capacity / n);
            const double next = calls_.begin()->first;
            const double dt = std::ceil((next - served_) / rate);
            clock_.advance(bulwark::Duration(static_cast<bulwark::Duration::rep>(dt)));
            served_ = next;
            while (!calls_.empty() && calls_.begin()->first <= served_) {
                calls_.erase(calls_.begin());  // completes the permit: an RTT sample
            }
            if (clock_.now() + tail >= end && !limiter_.stats().probing) {
                seen.push_back(limiter_.limit());
            }
        }
        return seen;
    }

private:
    bulwark::ManualClock& clock_;
    Limiter& limiter_;
    Server& server_;
    std::uint32_t clients_;
    double served_ = 0;  // work each call inside has received since the start, in ns
    std::multimap<double, Limiter::Permit> calls_;  // by the served_ at which each finishes
};

bool within(const std::vector<std::uint32_t>& limits, double low, double high) {
    return !limits.empty() && std::all_of(limits.begin(), limits.end(),
                                          [&](std::uint32_t l) { return l >= low && l <= high; });
}

std::uint32_t lowest(const std::vector<std::uint32_t>& v) {
    return v.empty() ? 0 : *std::min_element(v.begin(), v.end());
}
std::uint32_t highest(const std::vector<std::uint32_t>& v) {
    return v.empty() ? 0 : *std::max_element(v.begin(), v.end());
}

// Capacity 200, then 100, then 200 again: after each change the limit must settle within 20%
// of the capacity.
void check_follows_capacity(bulwark::AdaptiveLimiterOptions options) {
    bulwark::ManualClock clock;
    Limiter limiter(options, clock);
    Server server;
    server.capacity = 200;
    server.jitter = 0.2;
    Simulation sim(clock, limiter, server, 600);
    auto first = sim.run(30s, 10s);
    INFO("capacity 200: limit in [" << lowest(first) << ", " << highest(first) << "]");
    CHECK(within(first, 160, 240));
    server.capacity = 100;
    auto reduced = sim.run(30s, 10s);
    INFO("capacity 100: limit in [" << lowest(reduced) << ", " << highest(reduced) << "]");
    CHECK(within(reduced, 80, 120));
    server.capacity = 200;
    auto recovered = sim.run(30s, 10s);
    INFO("capacity 200 again: limit in [" << lowest(recovered) << ", " << highest(recovered)
                                          << "]");
    CHECK(within(recovered, 160, 240));
}

bulwark::AdaptiveLimiterOptions with(bulwark::AdaptiveAlgorithm algorithm) {
    bulwark::AdaptiveLimiterOptions o;
    o.algorithm = algorithm;
    return o;
}

}  // namespace

TEST_CASE("vegas follows a dependency's capacity down and back up", "[adaptive_limiter]") {
    check_follows_capacity(with(bulwark::AdaptiveAlgorithm::vegas));
}

TEST_CASE("gradient2 follows a dependency's capacity down and back up", "[adaptive_limiter]") {
    auto o = with(bulwark::AdaptiveAlgorithm::gradient2);
    // The limit settles near rtt_tolerance × capacity in a queueing dependency.
    o.gradient2.rtt_tolerance = 1.1;
    check_follows_capacity(o);
}

TEST_CASE("aimd follows a dependency's capacity down and back up", "[adaptive_limiter]") {
    auto o = with(bulwark::AdaptiveAlgorithm::aimd);
    o.aimd.latency_threshold = 11ms;  // 1.1 × the dependency's unloaded latency
    check_follows_capacity(o);
}

TEST_CASE("gradient2's limit does not creep up under sustained overload", "[adaptive_limiter]") {
    // Netflix/concurrency-limits #134: a long RTT that averages every window catches up with
    // the overloaded short RTT, and the queue term then lifts the limit without end.
    bulwark::ManualClock clock;
    Limiter limiter(with(bulwark::AdaptiveAlgorithm::gradient2), clock);
    Server server;
    server.jitter = 0.2;
    Simulation sim(clock, limiter, server, 1000);  // 10 × the capacity, for ever
    auto settled = sim.run(20s, 5s);
    const std::uint32_t settled_high = highest(settled);
    // Defaults: rtt_tolerance 1.5, so the limit settles near 150 here.
    CHECK(settled_high <= 165);
    CHECK(lowest(settled) >= 100);
    const auto windows_before = limiter.stats().windows;
    // Hundreds of long windows (60 windows each) more of the same overload.
    auto later = sim.run(100s, 100s);
    CHECK(limiter.stats().windows - windows_before > 300 * 60);
    INFO("settled at most " << settled_high << ", later in [" << lowest(later) << ", "
                            << highest(later) << "]");
    CHECK(highest(later) <= settled_high + 5);
    CHECK(lowest(later) >= 100);
    // The baseline stayed the dependency's unloaded latency (10 ms, jitter ±10%).
    CHECK(limiter.stats().long_rtt <= 11ms);
}

TEST_CASE("vegas measures the no-load RTT again in probes", "[adaptive_limiter]") {
    bulwark::ManualClock clock;
    Limiter limiter(with(bulwark::AdaptiveAlgorithm::vegas), clock);
    Server server;
    server.capacity = 200;
    Simulation sim(clock, limiter, server, 600);
    (void)sim.run(10s, 0s);
    CHECK(limiter.stats().no_load_rtt == 10ms);
    // The dependency becomes slower for good, at any load: the next probe learns it.
    server.base = 20ms;
    auto later = sim.run(60s, 10s);
    auto s = limiter.stats();
    INFO("limit in [" << lowest(later) << ", " << highest(later) << "], no-load RTT "
                      << s.no_load_rtt.count() << " ns, " << s.probes << " probes");
    CHECK(s.probes >= 2);
    CHECK(s.no_load_rtt == 20ms);
    CHECK(within(later, 160, 240));
}

TEST_CASE("the limit stays within [min_limit, max_limit]", "[adaptive_limiter]") {
    bulwark::ManualClock clock;
    auto o = with(bulwark::AdaptiveAlgorithm::aimd);
    o.min_limit = 5;
    o.initial_limit = 10;
    o.max_limit = 30;
    o.aimd.latency_threshold = 1s;
    Limiter limiter(o, clock);
    Server server;
    server.capacity = 1000;  // never slow: AIMD grows
    Simulation sim(clock, limiter, server, 100);
    CHECK(highest(sim.run(10s, 10s)) == 30);
    server.capacity = 10;  // always slower than the threshold: AIMD shrinks
    server.base = 2s;
    CHECK(lowest(sim.run(600s, 100s)) == 5);
}

TEST_CASE("drops shrink the limit multiplicatively under aimd", "[adaptive_limiter]") {
    bulwark::ManualClock clock;
    auto o = with(bulwark::AdaptiveAlgorithm::aimd);
    o.initial_limit = 100;
    o.window_samples = 1;
    Limiter limiter(o, clock);
    std::vector<bulwark::AdaptiveLimitChange> changes;
    limiter.on_limit_changed([&](const bulwark::AdaptiveLimitChange& c) { changes.push_back(c); });
    auto permit = limiter.try_acquire();
    REQUIRE(permit);
    clock.advance(1ms);
    permit.drop();
    CHECK(limiter.limit() == 90);
    REQUIRE(changes.size() == 1);
    CHECK(changes[0].old_limit == 100);
    CHECK(changes[0].new_limit == 90);
    CHECK(changes[0].short_rtt == 1ms);
    auto s = limiter.stats();
    CHECK(s.drops == 1);
    CHECK(s.samples == 1);
    CHECK(s.windows == 1);
}

TEST_CASE("an ignored call releases its slot without a sample", "[adaptive_limiter]") {
    bulwark::ManualClock clock;
    auto o = with(bulwark::AdaptiveAlgorithm::aimd);
    o.window_samples = 1;
    Limiter limiter(o, clock);
    auto permit = limiter.try_acquire();
    CHECK(limiter.stats().in_flight == 1);
    permit.ignore();
    permit.drop();  // released already: nothing more happens
    auto s = limiter.stats();
    CHECK(s.in_flight == 0);
    CHECK(s.samples == 0);
    CHECK(s.windows == 0);
    CHECK(limiter.limit() == 20);
}

TEST_CASE("an app-limited window does not raise the limit", "[adaptive_limiter]") {
    bulwark::ManualClock clock;
    auto o = with(bulwark::AdaptiveAlgorithm::aimd);
    o.window_samples = 1;
    Limiter limiter(o, clock);  // limit 20
    for (int i = 0; i < 50; ++i) {
        auto p = limiter.try_acquire();  // one call at a time: 1 < 20 / 2
        clock.advance(1ms);
    }
    CHECK(limiter.limit() == 20);
    CHECK(limiter.stats().windows == 50);
}

TEST_CASE("a full limiter without a queue rejects with the reason limit_reached",
          "[adaptive_limiter]") {
    bulwark::ManualClock clock;
    auto o = with(bulwark::AdaptiveAlgorithm::gradient2);
    o.initial_limit = 2;
    Limiter limiter("db", o, clock);
    std::vector<bulwark::AdaptiveLimitRejectedEvent> events;
    limiter.on_rejected([&](const bulwark::AdaptiveLimitRejectedEvent& e) { events.push_back(e); });
    auto a = limiter.try_acquire();
    auto b = limiter.try_acquire();
    auto c = limiter.try_acquire();
    CHECK(a);
    CHECK(b);
    CHECK_FALSE(c);
    CHECK_FALSE(c.shadow());
    CHECK(c.rejection() == bulwark::AdaptiveLimitRejection::limit_reached);
    REQUIRE(events.size() == 1);
    CHECK(events[0].limit == 2);
    CHECK(events[0].in_flight == 2);
    CHECK_FALSE(events[0].shadow);
    bool ran = false;
    auto outcome = limiter.try_execute([&] {
        ran = true;
        return 1;
    });
    CHECK_FALSE(ran);
    REQUIRE(outcome.has_error());
    try {
        std::rethrow_exception(outcome.error());
    } catch (const bulwark::AdaptiveLimitError& e) {
        CHECK(e.source() == "db");
        CHECK(std::string(e.what()) ==
              "adaptive limiter 'db': the adaptive concurrency limit is reached");
    }
    CHECK_THROWS_AS(limiter.execute([] { return 1; }), bulwark::BulkheadFullError);
    auto s = limiter.stats();
    CHECK(s.rejected == 3);
    CHECK(s.admitted == 2);
    CHECK(s.in_flight == 2);
}

TEST_CASE("a queued call gets a slot released by another", "[adaptive_limiter]") {
    bulwark::ManualClock clock;
    auto o = with(bulwark::AdaptiveAlgorithm::gradient2);
    o.initial_limit = 1;
    o.max_queue = 1;
    o.queue_timeout = 10s;
    Limiter limiter(o, clock);
    auto held = limiter.try_acquire();
    bool admitted = false;
    std::thread waiter([&] { admitted = static_cast<bool>(limiter.acquire()); });
    spin_until([&] { return limiter.stats().queued == 1; });
    auto refused = limiter.acquire();
    CHECK_FALSE(refused);
    CHECK(refused.rejection() == bulwark::AdaptiveLimitRejection::queue_full);
    held.complete();
    waiter.join();
    CHECK(admitted);
    CHECK(limiter.stats().in_flight == 0);
}

TEST_CASE("a queued call gives up after queue_timeout on the limiter's clock",
          "[adaptive_limiter]") {
    bulwark::ManualClock clock;
    auto o = with(bulwark::AdaptiveAlgorithm::gradient2);
    o.initial_limit = 1;
    o.max_queue = 4;
    o.queue_timeout = 5s;
    Limiter limiter(o, clock);
    auto held = limiter.try_acquire();
    bool admitted = true;
    auto reason = bulwark::AdaptiveLimitRejection::limit_reached;
    std::thread waiter([&] {
        auto p = limiter.acquire();
        admitted = static_cast<bool>(p);
        reason = p.rejection();
    });
    spin_until([&] { return limiter.stats().queued == 1; });
    clock.advance(4s);
    CHECK(limiter.stats().queued == 1);
    clock.advance(1s);
    waiter.join();
    CHECK_FALSE(admitted);
    CHECK(reason == bulwark::AdaptiveLimitRejection::queue_timeout);
    auto s = limiter.stats();
    CHECK(s.queue_timeouts == 1);
    CHECK(s.queued == 0);
    CHECK(s.in_flight == 1);
}

TEST_CASE("a cancelled queued call leaves an adaptive limiter's queue", "[adaptive_limiter]") {
    bulwark::ManualClock clock;
    auto o = with(bulwark::AdaptiveAlgorithm::gradient2);
    o.initial_limit = 1;
    o.max_queue = 1;
    o.queue_timeout = 1h;
    Limiter limiter(o, clock);
    auto held = limiter.try_acquire();
    bulwark::Context ctx;
    auto reason = bulwark::AdaptiveLimitRejection::limit_reached;
    std::thread waiter([&] { reason = limiter.acquire(&ctx).rejection(); });
    spin_until([&] { return limiter.stats().queued == 1; });
    ctx.cancel();
    waiter.join();
    CHECK(reason == bulwark::AdaptiveLimitRejection::cancelled);
    auto s = limiter.stats();
    CHECK(s.queued == 0);
    CHECK(s.queue_timeouts == 0);
    CHECK(s.rejected == 1);
}

TEST_CASE("a shadow adaptive limiter still refuses a queued call whose caller cancelled it",
          "[adaptive_limiter][shadow]") {
    bulwark::ManualClock clock;
    auto o = with(bulwark::AdaptiveAlgorithm::gradient2);
    o.initial_limit = 1;
    o.max_queue = 1;
    o.queue_timeout = 1h;
    o.shadow = true;
    Limiter limiter(o, clock);
    std::vector<bool> flags;
    limiter.on_rejected(
        [&](const bulwark::AdaptiveLimitRejectedEvent& e) { flags.push_back(e.shadow); });
    auto held = limiter.try_acquire();
    bulwark::Context ctx;
    bool let_through = true;
    auto reason = bulwark::AdaptiveLimitRejection::limit_reached;
    std::thread waiter([&] {
        auto p = limiter.acquire(&ctx);
        let_through = static_cast<bool>(p);
        reason = p.rejection();
    });
    spin_until([&] { return limiter.stats().queued == 1; });
    ctx.cancel();
    waiter.join();
    // Its caller gave it up, not the limiter: shadow mode must not run it (as Bulkhead).
    CHECK_FALSE(let_through);
    CHECK(reason == bulwark::AdaptiveLimitRejection::cancelled);
    CHECK(flags == std::vector<bool>{false});
    const auto s = limiter.stats();
    CHECK(s.rejected == 1);
    CHECK(s.shadow_rejections == 0);
}

TEST_CASE("in a pipeline a timeout from inside is a drop and another rejection is ignored",
          "[adaptive_limiter]") {
    bulwark::ManualClock clock;
    auto o = with(bulwark::AdaptiveAlgorithm::aimd);
    o.window_samples = 1;
    o.initial_limit = 100;
    Limiter limiter(o, clock);
    auto p = bulwark::pipeline(limiter);
    auto timed_out =
        p.try_execute([]() -> int { throw bulwark::TimeoutError("inner timeout", 0s); });
    CHECK(timed_out.has_error());
    CHECK(limiter.stats().drops == 1);
    CHECK(limiter.limit() == 90);
    auto rejected = p.try_execute([]() -> int { throw bulwark::RejectedError("inner"); });
    CHECK(rejected.has_error());
    CHECK(limiter.stats().samples == 1);
    auto failed = p.try_execute([]() -> int { throw std::runtime_error("bad request"); });
    CHECK(failed.has_error());
    auto s = limiter.stats();
    CHECK(s.samples == 2);
    CHECK(s.drops == 1);
    CHECK(s.in_flight == 0);
}

TEST_CASE(
    "an adaptive limiter in shadow mode makes the enforcing decisions but lets the calls through",
    "[adaptive_limiter]") {
    bulwark::ManualClock clock;
    auto o = with(bulwark::AdaptiveAlgorithm::gradient2);
    o.initial_limit = 3;
    Limiter enforcing(o, clock);
    o.shadow = true;
    Limiter shadow(o, clock);
    CHECK(shadow.shadow());
    std::vector<bulwark::AdaptiveLimitRejectedEvent> events;
    shadow.on_rejected([&](const bulwark::AdaptiveLimitRejectedEvent& e) { events.push_back(e); });
    std::vector<Limiter::Permit> held_e;
    std::vector<Limiter::Permit> held_s;
    for (int i = 0; i < 6; ++i) {
        auto e = enforcing.try_acquire();
        auto s = shadow.try_acquire();
        CHECK(s);  // always let through
        CHECK(s.shadow() == !e);
        if (!e) {
            CHECK(s.rejection() == e.rejection());
        }
        held_e.push_back(std::move(e));
        held_s.push_back(std::move(s));
    }
    auto se = enforcing.stats();
    auto ss = shadow.stats();
    CHECK(ss.rejected == se.rejected);
    CHECK(ss.admitted == se.admitted);
    CHECK(ss.in_flight == se.in_flight);  // the let-through calls hold no slot
    CHECK(ss.shadow_rejections == 3);
    CHECK(se.shadow_rejections == 0);
    REQUIRE(events.size() == 3);
    CHECK(events[0].shadow);
    // A let-through call teaches the limit nothing.
    clock.advance(1ms);
    held_s.clear();
    held_e.clear();
    CHECK(shadow.stats().samples == enforcing.stats().samples);
    shadow.set_shadow(false);
    CHECK_FALSE(shadow.shadow());
    std::vector<Limiter::Permit> again;
    for (int i = 0; i < 3; ++i) {
        again.push_back(shadow.try_acquire());
    }
    auto refused = shadow.try_acquire();
    CHECK_FALSE(refused);
    CHECK_FALSE(refused.shadow());
    bool ran = false;
    shadow.set_shadow(true);
    CHECK(shadow.execute([&] {
        ran = true;
        return 7;
    }) == 7);
    CHECK(ran);
    CHECK(shadow.stats().in_flight == 3);
}

TEST_CASE("invalid adaptive limiter options are refused, naming the field and value",
          "[adaptive_limiter]") {
    auto refused = [](auto change) {
        bulwark::AdaptiveLimiterOptions o;
        change(o);
        try {
            o.validate();
        } catch (const std::invalid_argument& e) {
            return std::string(e.what());
        }
        return std::string("accepted");
    };
    using O = bulwark::AdaptiveLimiterOptions;
    CHECK(refused([](O& o) { o.min_limit = 0; }) ==
          "AdaptiveLimiterOptions.min_limit must be >= 1, got 0");
    CHECK(refused([](O& o) { o.max_limit = 10; }) ==
          "AdaptiveLimiterOptions.initial_limit must be in [min_limit, max_limit] (1, 10), got "
          "20");
    CHECK(refused([](O& o) {
              o.min_limit = 5;
              o.max_limit = 4;
          }) == "AdaptiveLimiterOptions.max_limit must be >= min_limit (5), got 4");
    CHECK(refused([](O& o) { o.window_samples = 0; }) ==
          "AdaptiveLimiterOptions.window_samples must be >= 1, got 0");
    CHECK(refused([](O& o) { o.max_queue = 2, o.queue_timeout = 0s; }) ==
          "AdaptiveLimiterOptions.queue_timeout must be > 0 when max_queue > 0, got 0s");
    CHECK(refused([](O& o) { o.vegas.beta = 2; }) ==
          "AdaptiveLimiterOptions.vegas.beta must be > vegas.alpha (3), got 2");
    CHECK(refused([](O& o) { o.gradient2.rtt_tolerance = 0.9; }) ==
          "AdaptiveLimiterOptions.gradient2.rtt_tolerance must be >= 1 and finite, got 0.9");
    CHECK(refused([](O& o) { o.gradient2.smoothing = 0; }) ==
          "AdaptiveLimiterOptions.gradient2.smoothing must be in (0, 1], got 0");
    CHECK(refused([](O& o) { o.aimd.backoff_ratio = 1; }) ==
          "AdaptiveLimiterOptions.aimd.backoff_ratio must be in [0.5, 1), got 1");
    CHECK(refused([](O& o) { o.aimd.latency_threshold = 0s; }) ==
          "AdaptiveLimiterOptions.aimd.latency_threshold must be > 0, got 0s");
    CHECK(refused([](O& o) { o.algorithm = static_cast<bulwark::AdaptiveAlgorithm>(7); }) ==
          "AdaptiveLimiterOptions.algorithm must be a AdaptiveAlgorithm, got 7");
    CHECK(refused([](O&) {}) == "accepted");
    bulwark::ManualClock clock;
    O bad;
    bad.min_limit = 0;
    CHECK_THROWS_AS(Limiter(bad, clock), std::invalid_argument);
}

TEST_CASE("stress: in flight never exceeds the limit at admission and returns to 0",
          "[adaptive_limiter][.stress]") {
    bulwark::ManualClock clock;
    auto o = with(bulwark::AdaptiveAlgorithm::gradient2);
    o.initial_limit = 4;
    o.min_limit = 2;
    o.max_limit = 16;
    o.window_samples = 5;
    o.max_queue = 2;
    o.queue_timeout = 1h;
    Limiter limiter(o, clock);
    std::atomic<std::uint32_t> highest_limit{o.initial_limit};
    limiter.on_limit_changed([&](const bulwark::AdaptiveLimitChange& c) {
        std::uint32_t seen = highest_limit.load();
        while (c.new_limit > seen && !highest_limit.compare_exchange_weak(seen, c.new_limit)) {
        }
    });
    std::atomic<std::uint32_t> inside{0};
    std::atomic<std::uint32_t> max_inside{0};
    std::atomic<std::uint64_t> ok{0};
    std::atomic<std::uint64_t> refused{0};
    constexpr int threads_count = 4;
    constexpr int calls_per_thread = 20000;
    std::vector<std::thread> threads;
    for (int t = 0; t < threads_count; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < calls_per_thread; ++i) {
                auto permit = (i + t) % 2 == 0 ? limiter.acquire() : limiter.try_acquire();
                if (!permit) {
                    refused.fetch_add(1, std::memory_order_relaxed);
                    continue;
                }
                const std::uint32_t now_inside = inside.fetch_add(1) + 1;
                std::uint32_t seen = max_inside.load();
                while (now_inside > seen && !max_inside.compare_exchange_weak(seen, now_inside)) {
                }
                inside.fetch_sub(1);
                clock.advance(std::chrono::microseconds(1 + (i % 7)));
                if (i % 11 == 0) {
                    permit.drop();
                } else if (i % 13 == 0) {
                    permit.ignore();
                }
                ok.fetch_add(1, std::memory_order_relaxed);
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    auto s = limiter.stats();
    // Admission happens only while in flight < the limit of that moment, and the limit never
    // exceeded the highest one published.
    CHECK(max_inside.load() <= highest_limit.load());
    CHECK(highest_limit.load() <= o.max_limit);
    CHECK(s.in_flight == 0);
    CHECK(s.queued == 0);
    CHECK(s.admitted == ok.load());
    CHECK(s.rejected == refused.load());
    CHECK(ok.load() + refused.load() == std::uint64_t{threads_count} * calls_per_thread);
    CHECK(s.limit >= o.min_limit);
    CHECK(s.limit <= o.max_limit);
    CHECK(s.windows > 0);
}

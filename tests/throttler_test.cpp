#include <algorithm>
#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <bulwark/detail/random.hpp>
#include <bulwark/pipeline.hpp>
#include <bulwark/throttler.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;

namespace {

// The SRE formula, written out independently of the throttler.
double expected_probability(double requests, double accepts, double k, double cap) {
    return std::min(cap, std::max(0.0, (requests - k * accepts) / (requests + 1)));
}

// A scripted random source that remembers how often it was asked.
struct Draws {
    bulwark::detail::SplitMix64 generator{7};
    std::vector<double> values;
    double next() {
        values.push_back(generator.next_double());
        return values.back();
    }
};

}  // namespace

TEST_CASE("a throttler rejects with exactly the SRE probability on a scripted random source",
          "[throttler]") {
    bulwark::ManualClock clock;
    Draws draws;
    bulwark::ThrottlerOptions o;
    o.k = 1.5;
    o.max_rejection_probability = 0.7;
    o.random = [&draws] {
        return draws.next();
    };
    bulwark::Throttler throttler(o, clock);
    double requests = 0;
    double accepts = 0;
    int rejected = 0;
    for (int i = 0; i < 2000; ++i) {
        const double p = expected_probability(requests, accepts, o.k, o.max_rejection_probability);
        CHECK(throttler.stats().rejection_probability == Approx(p).margin(1e-12));
        const std::size_t drawn = draws.values.size();
        auto ticket = throttler.try_acquire();
        requests += 1;  // rejected requests count too
        if (p <= 0) {
            CHECK(draws.values.size() == drawn);  // no draw while nothing is rejected
            CHECK(ticket);
        } else {
            REQUIRE(draws.values.size() == drawn + 1);
            CHECK(static_cast<bool>(ticket) == (draws.values.back() >= p));
        }
        if (!ticket) {
            ++rejected;
            continue;
        }
        // The backend accepts only every fourth request it is sent, for the first 1000.
        if (i < 1000 ? i % 4 == 0 : true) {
            ticket.accepted();
            accepts += 1;
        }
    }
    auto s = throttler.stats();
    CHECK(s.requests == 2000);
    CHECK(s.accepts == static_cast<std::uint64_t>(accepts));
    CHECK(s.rejected == static_cast<std::uint64_t>(rejected));
    CHECK(rejected > 100);
}

TEST_CASE("the local rejection rate settles where k × the backend's capacity passes",
          "[throttler]") {
    // Offered 1000 requests a second; the backend accepts 100 a second and refuses the rest.
    // With k = 2 the throttler should send about 200 a second: a rejection rate of 0.8.
    bulwark::ManualClock clock;
    bulwark::ThrottlerOptions o;
    o.window = 10s;
    o.buckets = 10;
    bulwark::Throttler throttler(o, clock);
    std::uint64_t offered = 0;
    std::uint64_t sent = 0;
    for (int second = 0; second < 120; ++second) {
        int accepted_this_second = 0;
        for (int ms = 0; ms < 1000; ++ms) {
            auto ticket = throttler.try_acquire();
            if (second >= 30) {
                ++offered;
            }
            if (ticket) {
                if (second >= 30) {
                    ++sent;
                }
                if (accepted_this_second < 100) {
                    ++accepted_this_second;
                    ticket.accepted();
                }
            }
            clock.advance(1ms);
        }
    }
    const double rate = 1.0 - static_cast<double>(sent) / static_cast<double>(offered);
    INFO("rejection rate " << rate);
    // 90k draws: the binomial standard deviation is about 0.0013.
    CHECK(rate == Approx(0.8).margin(0.02));
}

TEST_CASE("the rejection probability never exceeds max_rejection_probability", "[throttler]") {
    bulwark::ManualClock clock;
    bulwark::ThrottlerOptions o;
    o.max_rejection_probability = 0.5;
    bulwark::Throttler throttler(o, clock);
    std::uint64_t let_through = 0;
    for (int i = 0; i < 20000; ++i) {
        auto ticket = throttler.try_acquire();  // the backend refuses everything
        let_through += ticket ? 1U : 0U;
    }
    CHECK(throttler.stats().rejection_probability == 0.5);
    const double rate = static_cast<double>(let_through) / 20000.0;
    CHECK(rate == Approx(0.5).margin(0.02));
}

TEST_CASE("requests and accepts expire with the window, bucket by bucket", "[throttler]") {
    bulwark::ManualClock clock;
    bulwark::ThrottlerOptions o;
    o.window = 10s;
    o.buckets = 5;  // 2 s each
    o.random = [] {
        return 0.999;
    };  // admit everything below the cap
    bulwark::Throttler throttler(o, clock);
    for (int i = 0; i < 10; ++i) {
        (void)throttler.try_acquire();
    }
    clock.advance(4s);
    for (int i = 0; i < 10; ++i) {
        auto t = throttler.try_acquire();
        t.accepted();
    }
    auto s = throttler.stats();
    CHECK(s.requests == 20);
    CHECK(s.accepts == 10);
    CHECK(s.rejection_probability == 0.0);
    clock.advance(6s);  // the first 10 requests' bucket has left the window
    s = throttler.stats();
    CHECK(s.requests == 10);
    CHECK(s.accepts == 10);
    clock.advance(4s);  // and now everything
    s = throttler.stats();
    CHECK(s.requests == 0);
    CHECK(s.accepts == 0);
}

TEST_CASE("an accept counts in its request's bucket and expires with it", "[throttler]") {
    bulwark::ManualClock clock;
    bulwark::ThrottlerOptions o;
    o.window = 10s;
    o.buckets = 5;  // 2 s each
    bulwark::Throttler throttler(o, clock);
    auto early = throttler.try_acquire();
    clock.advance(1s);
    early.accepted();  // same bucket as its request, although the clock moved
    CHECK(throttler.stats().accepts == 1);
    auto slow = throttler.try_acquire();
    clock.advance(10s);                    // the window has moved past both requests
    auto fresh = throttler.try_acquire();  // reuses their bucket's slot
    slow.accepted();                       // too late: its request has left the window
    auto s = throttler.stats();
    CHECK(s.requests == 1);
    CHECK(s.accepts == 0);
    fresh.accepted();
    CHECK(throttler.stats().accepts == 1);
}

TEST_CASE("a refused backend call is no accept, and a failure can be declared one", "[throttler]") {
    bulwark::ManualClock clock;
    bulwark::ThrottlerOptions o;
    o.random = [] {
        return 0.999;
    };
    o.rejected_by_backend = [](const std::exception_ptr& e) {
        try {
            std::rethrow_exception(e);
        } catch (const std::invalid_argument&) {
            return false;  // the backend answered: a bad request is an accept
        } catch (...) {
            return true;
        }
    };
    bulwark::Throttler throttler("payments", o, clock);
    auto p = bulwark::pipeline(throttler);
    CHECK(p.execute([] { return 1; }) == 1);
    CHECK_THROWS_AS(p.execute([]() -> int { throw std::invalid_argument("bad"); }),
                    std::invalid_argument);
    CHECK_THROWS_AS(p.execute([]() -> int { throw std::runtime_error("overloaded"); }),
                    std::runtime_error);
    auto s = throttler.stats();
    CHECK(s.requests == 3);
    CHECK(s.accepts == 2);
}

TEST_CASE("a throttled call fails with ThrottledError naming the throttler", "[throttler]") {
    bulwark::ManualClock clock;
    bulwark::ThrottlerOptions o;
    o.random = [] {
        return 0.0;
    };  // reject whenever the probability is above 0
    bulwark::Throttler throttler("payments", o, clock);
    std::vector<bulwark::ThrottleEvent> events;
    throttler.on_rejected([&](const bulwark::ThrottleEvent& e) { events.push_back(e); });
    (void)throttler.try_acquire();  // p = 0: admitted, never accepted
    bool ran = false;
    auto outcome = throttler.try_execute([&] {
        ran = true;
        return 1;
    });
    CHECK_FALSE(ran);
    REQUIRE(outcome.has_error());
    try {
        std::rethrow_exception(outcome.error());
    } catch (const bulwark::ThrottledError& e) {
        CHECK(e.source() == "payments");
        CHECK(std::string(e.what()) ==
              "throttler 'payments': rejected locally, the backend is refusing requests");
    }
    REQUIRE(events.size() == 1);
    CHECK(events[0].probability == Approx(0.5));  // (1 − 0) / (1 + 1)
    CHECK(events[0].requests == 1);
    CHECK_FALSE(events[0].shadow);
}

TEST_CASE("a throttler in shadow mode makes the enforcing decisions but lets the calls through",
          "[throttler]") {
    bulwark::ManualClock clock;
    Draws a;
    Draws b;
    bulwark::ThrottlerOptions o;
    o.random = [&a] {
        return a.next();
    };
    bulwark::Throttler enforcing(o, clock);
    o.random = [&b] {
        return b.next();
    };
    o.shadow = true;
    bulwark::Throttler shadow(o, clock);
    std::vector<bool> shadow_events;
    shadow.on_rejected([&](const bulwark::ThrottleEvent& e) { shadow_events.push_back(e.shadow); });
    for (int i = 0; i < 500; ++i) {
        auto e = enforcing.try_acquire();
        auto s = shadow.try_acquire();
        CHECK(s);
        CHECK(s.shadow() == !e);
        // The backend accepts every third call it sees; a let-through call's accept is not
        // counted, just as the enforcing throttler never sends it.
        if (i % 3 == 0) {
            e.accepted();
            s.accepted();
        }
        CHECK(enforcing.stats().rejection_probability == shadow.stats().rejection_probability);
    }
    auto se = enforcing.stats();
    auto ss = shadow.stats();
    CHECK(ss.requests == se.requests);
    CHECK(ss.accepts == se.accepts);
    CHECK(ss.rejected == se.rejected);
    CHECK(ss.shadow_rejections == se.rejected);
    CHECK(se.shadow_rejections == 0);
    CHECK(se.rejected > 0);
    CHECK(shadow_events.size() == ss.rejected);
    CHECK(std::all_of(shadow_events.begin(), shadow_events.end(), [](bool s) { return s; }));
    shadow.set_shadow(false);
    CHECK_FALSE(shadow.shadow());
}

TEST_CASE("invalid throttler options are refused, naming the field and value", "[throttler]") {
    auto refused = [](auto change) {
        bulwark::ThrottlerOptions o;
        change(o);
        try {
            o.validate();
        } catch (const std::invalid_argument& e) {
            return std::string(e.what());
        }
        return std::string("accepted");
    };
    using O = bulwark::ThrottlerOptions;
    CHECK(refused([](O& o) { o.k = 0; }) == "ThrottlerOptions.k must be > 0 and finite, got 0");
    CHECK(refused([](O& o) { o.window = 0s; }) == "ThrottlerOptions.window must be > 0, got 0s");
    CHECK(refused([](O& o) { o.buckets = 0; }) ==
          "ThrottlerOptions.buckets must be in [1, 1000], got 0");
    CHECK(refused([](O& o) {
              o.window = 5ns;
              o.buckets = 10;
          }) == "ThrottlerOptions.buckets must be at most window in nanoseconds (5ns), got 10");
    CHECK(refused([](O& o) { o.max_rejection_probability = 1.5; }) ==
          "ThrottlerOptions.max_rejection_probability must be in [0, 1], got 1.5");
    CHECK(refused([](O&) {}) == "accepted");
    bulwark::ManualClock clock;
    O bad;
    bad.k = -1;
    CHECK_THROWS_AS(bulwark::Throttler(bad, clock), std::invalid_argument);
}

TEST_CASE("stress: a throttler counts every request and accept from 4 threads",
          "[throttler][.stress]") {
    bulwark::ManualClock clock;
    bulwark::ThrottlerOptions o;
    o.window = 1h;  // no bucket expires during the test: every count must be there
    bulwark::Throttler throttler(o, clock);
    std::atomic<std::uint64_t> admitted{0};
    std::atomic<std::uint64_t> accepted{0};
    std::atomic<std::uint64_t> refused{0};
    constexpr int threads_count = 4;
    constexpr int calls_per_thread = 20000;
    std::vector<std::thread> threads;
    for (int t = 0; t < threads_count; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < calls_per_thread; ++i) {
                auto ticket = throttler.try_acquire();
                if (!ticket) {
                    refused.fetch_add(1, std::memory_order_relaxed);
                    continue;
                }
                admitted.fetch_add(1, std::memory_order_relaxed);
                if ((i + t) % 3 == 0) {
                    ticket.accepted();
                    accepted.fetch_add(1, std::memory_order_relaxed);
                }
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    auto s = throttler.stats();
    CHECK(s.requests == std::uint64_t{threads_count} * calls_per_thread);
    CHECK(s.accepts == accepted.load());
    CHECK(s.rejected == refused.load());
    CHECK(admitted.load() + refused.load() == s.requests);
    CHECK(refused.load() > 0);  // accepts are a third of the sent: it must throttle
}

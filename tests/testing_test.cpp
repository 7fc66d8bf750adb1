#include <atomic>
#include <system_error>
#include <thread>
#include <vector>

#include <bulwark/testing.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

namespace {
int run(bulwark::FaultInjector& chaos, int& reached) {
    auto o = chaos.try_execute([&] { return ++reached; });
    return o.has_value() ? 1 : 0;
}
}  // namespace

TEST_CASE("FaultInjector passes calls through by default", "[testing]") {
    bulwark::FaultInjector chaos;
    CHECK(chaos.execute([] { return 3; }) == 3);
    CHECK(chaos.calls() == 1);
    CHECK(chaos.injected_failures() == 0);
}

TEST_CASE("fail_next fails exactly the next N calls without reaching the callable", "[testing]") {
    bulwark::FaultInjector chaos;
    chaos.fail_next(2);
    int reached = 0;
    std::vector<int> ok;
    for (int i = 0; i < 4; ++i) {
        ok.push_back(run(chaos, reached));
    }
    CHECK(ok == std::vector<int>{0, 0, 1, 1});
    CHECK(reached == 2);
    CHECK(chaos.injected_failures() == 2);
    CHECK_THROWS_AS(chaos.fail_next(1).execute([] { return 0; }), bulwark::InjectedFault);
}

TEST_CASE("fail_next can inject a chosen error", "[testing]") {
    bulwark::FaultInjector chaos;
    chaos.fail_next(1, std::make_exception_ptr(
                           std::system_error(std::make_error_code(std::errc::connection_refused))));
    CHECK_THROWS_AS(chaos.execute([] { return 0; }), std::system_error);
}

TEST_CASE("script fails and passes calls in order", "[testing]") {
    bulwark::FaultInjector chaos;
    chaos.fail_always();
    chaos.script("x.x.");
    int reached = 0;
    std::vector<int> ok;
    for (int i = 0; i < 6; ++i) {
        ok.push_back(run(chaos, reached));
    }
    // The script wins over fail_always; after it, fail_always applies.
    CHECK(ok == std::vector<int>{0, 1, 0, 1, 0, 0});
    chaos.heal();
    CHECK(run(chaos, reached) == 1);
    CHECK_THROWS_WITH(chaos.script("x?"),
                      "FaultInjector.script(steps): steps may contain only 'x'/'F' (fail) and "
                      "'.'/'P' (pass), got '?'");
}

TEST_CASE("fail_with_probability is reproducible for a seed and near p", "[testing]") {
    auto pattern = [](std::uint64_t seed) {
        bulwark::FaultInjector chaos;
        chaos.fail_with_probability(0.3, seed);
        int reached = 0;
        std::vector<int> ok;
        for (int i = 0; i < 10000; ++i) {
            ok.push_back(run(chaos, reached));
        }
        return ok;
    };
    auto a = pattern(42);
    CHECK(a == pattern(42));
    CHECK(a != pattern(43));
    long failures = 0;
    for (int v : a) {
        failures += v == 0 ? 1 : 0;
    }
    CHECK(failures > 2700);
    CHECK(failures < 3300);
}

TEST_CASE("probability 0 and 1 are exact, outside [0, 1] is refused", "[testing]") {
    bulwark::FaultInjector chaos;
    int reached = 0;
    chaos.fail_with_probability(1.0, 1);
    for (int i = 0; i < 100; ++i) {
        CHECK(run(chaos, reached) == 0);
    }
    chaos.fail_with_probability(0.0, 1);
    for (int i = 0; i < 100; ++i) {
        CHECK(run(chaos, reached) == 1);
    }
    CHECK_THROWS_WITH(chaos.fail_with_probability(1.5),
                      "FaultInjector.fail_with_probability(p): p must be in [0, 1], got 1.5");
    CHECK_THROWS_AS(chaos.fail_with_probability(-0.1), std::invalid_argument);
}

TEST_CASE("add_latency sleeps on the injector's clock before each call", "[testing]") {
    bulwark::ManualClock clock;
    bulwark::FaultInjector chaos(clock);
    chaos.add_latency(200ms);
    const auto start = clock.now();
    bulwark::TimePoint seen_at{};
    chaos.execute([&] { seen_at = clock.now(); });
    CHECK(seen_at - start == bulwark::Duration(200ms));
    CHECK(clock.sleeps() == std::vector<bulwark::Duration>{200ms});
    CHECK_THROWS_AS(chaos.add_latency(-1ms), std::invalid_argument);
}

TEST_CASE("FaultInjector reports what it did to listeners", "[testing]") {
    bulwark::ManualClock clock;
    bulwark::FaultInjector chaos(clock);
    std::vector<bulwark::FaultEvent> events;
    chaos.on_fault([&](const bulwark::FaultEvent& e) { events.push_back(e); });
    chaos.script("x.").add_latency(5ms);
    (void)chaos.try_execute([] {});
    (void)chaos.try_execute([] {});
    REQUIRE(events.size() == 2);
    CHECK(events[0].call == 1);
    CHECK(events[0].failed);
    CHECK(events[0].latency == bulwark::Duration(5ms));
    CHECK_FALSE(events[1].failed);
}

TEST_CASE("a removed on_fault listener hears no more faults", "[testing]") {
    bulwark::ManualClock clock;
    bulwark::FaultInjector chaos(clock);
    int heard = 0;
    const bulwark::ListenerId id = chaos.on_fault([&](const bulwark::FaultEvent&) { ++heard; });
    chaos.fail_always();
    (void)chaos.try_execute([] {});
    CHECK(chaos.remove_listener(id));
    CHECK_FALSE(chaos.remove_listener(id));
    (void)chaos.try_execute([] {});
    CHECK(heard == 1);
}

TEST_CASE("FaultInjector composes in a pipeline and counts calls under threads",
          "[testing][concurrency]") {
    bulwark::FaultInjector chaos;
    chaos.fail_with_probability(0.5, 7);
    auto p = bulwark::pipeline(bulwark_test::Repeat(1), chaos);
    std::atomic<long> ok{0};
    std::atomic<long> failed{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&] {
            for (int i = 0; i < 5000; ++i) {
                if (p.try_execute([] { return 1; })) {
                    ok.fetch_add(1);
                } else {
                    failed.fetch_add(1);
                }
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    CHECK(chaos.calls() == 20000);
    CHECK(static_cast<long>(chaos.injected_failures()) == failed.load());
    CHECK(ok.load() + failed.load() == 20000);
}

TEST_CASE("stress: counts add up across a pipeline under 4 threads", "[testing][.stress]") {
    // 4 threads x 250k calls through listeners, a fault injector and a retrying policy; the
    // invariant: every call is accounted for exactly once, and every injected failure was seen
    // by the listener.
    bulwark::FaultInjector chaos;
    chaos.fail_with_probability(0.25, 2026);
    std::atomic<long> listener_failures{0};
    chaos.on_fault([&](const bulwark::FaultEvent& e) {
        if (e.failed) {
            listener_failures.fetch_add(1, std::memory_order_relaxed);
        }
    });
    auto p = bulwark::pipeline(bulwark::Noop{}, bulwark_test::Repeat(2), chaos);
    constexpr int threads_count = 4;
    constexpr int calls_per_thread = 250000;
    std::atomic<long> ok{0};
    std::atomic<long> failed{0};
    std::atomic<long> reached{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < threads_count; ++t) {
        threads.emplace_back([&] {
            for (int i = 0; i < calls_per_thread; ++i) {
                auto o = p.try_execute([&] { return reached.fetch_add(1) >= 0; });
                (o ? ok : failed).fetch_add(1, std::memory_order_relaxed);
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    const long calls = static_cast<long>(chaos.calls());
    const long injected = static_cast<long>(chaos.injected_failures());
    CHECK(ok.load() + failed.load() == threads_count * calls_per_thread);
    CHECK(reached.load() == ok.load());           // the callable ran once per success
    CHECK(calls == reached.load() + injected);    // every injector call either failed or passed
    CHECK(listener_failures.load() == injected);  // and the listener saw every failure
    // A call that failed its first attempt made a second one; a failed call failed both.
    CHECK(calls == threads_count * calls_per_thread + (injected - failed.load()));
    CHECK(injected >= 2 * failed.load());
}

#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <bulwark/circuit_breaker_registry.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using bulwark::CircuitBreaker;
using bulwark::CircuitBreakerOptions;
using bulwark::CircuitState;

namespace {

struct Down : std::runtime_error {
    Down() : std::runtime_error("dependency down") {}
};

CircuitBreakerOptions only_consecutive(std::uint32_t threshold) {
    CircuitBreakerOptions o;
    o.failure_threshold = threshold;
    o.failure_ratio = 0.0;
    o.break_duration = 10s;
    return o;
}

void fail(CircuitBreaker& b) {
    (void)b.try_execute([]() -> int { throw Down(); });
}

}  // namespace

TEST_CASE("the registry creates each named breaker once", "[circuit_breaker][registry]") {
    bulwark::ManualClock clock;
    CircuitBreakerOptions defaults = only_consecutive(2);
    bulwark::CircuitBreakerRegistry registry(defaults, clock);
    auto& email = registry.get("email");
    auto& again = registry.get("email", only_consecutive(50));
    CHECK(&email == &again);
    CHECK(email.options().failure_threshold == 2);  // created with the defaults
    auto& sms = registry.get("sms", only_consecutive(1));
    CHECK(sms.options().failure_threshold == 1);
    CHECK(registry.size() == 2);
    CHECK(registry.names() == std::vector<std::string>{"email", "sms"});
    CHECK(registry.find("sms") == &sms);
    CHECK(registry.find("push") == nullptr);
    std::vector<std::string> seen;
    registry.for_each([&](CircuitBreaker& b) { seen.push_back(b.name()); });
    CHECK(seen == std::vector<std::string>{"email", "sms"});
    CHECK_THROWS_AS(registry.get(""), std::invalid_argument);
    CircuitBreakerOptions bad;
    bad.failure_ratio = 2;
    CHECK_THROWS_AS(registry.get("bad", bad), std::invalid_argument);
    CHECK_THROWS_AS(bulwark::CircuitBreakerRegistry(bad, clock), std::invalid_argument);
}

TEST_CASE("a registry listener hears every breaker, old and new", "[circuit_breaker][registry]") {
    bulwark::ManualClock clock;
    bulwark::CircuitBreakerRegistry registry(only_consecutive(1), clock);
    auto& before = registry.get("before");
    std::vector<std::string> opened;
    registry.on_state_change([&](const bulwark::StateChange& c) {
        if (c.to == CircuitState::open) {
            opened.emplace_back(c.breaker);
        }
    });
    auto& after = registry.get("after");
    fail(before);
    fail(after);
    CHECK(opened == std::vector<std::string>{"before", "after"});
}

TEST_CASE("a removed registry listener hears no breaker, old or new",
          "[circuit_breaker][registry]") {
    bulwark::ManualClock clock;
    bulwark::CircuitBreakerRegistry registry(only_consecutive(1), clock);
    auto& before = registry.get("before");
    int heard = 0;
    const bulwark::ListenerId id =
        registry.on_state_change([&](const bulwark::StateChange&) { ++heard; });
    before.trip();
    CHECK(registry.remove_listener(id));
    CHECK_FALSE(registry.remove_listener(id));
    before.reset();
    registry.get("after").trip();
    CHECK(heard == 1);
}

TEST_CASE("the registry is safe to use from many threads", "[circuit_breaker][registry]") {
    bulwark::CircuitBreakerRegistry registry;
    std::vector<std::thread> threads;
    std::atomic<int> mismatches{0};
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 200; ++i) {
                auto& b = registry.get("dep-" + std::to_string(i % 20));
                if (b.name() != "dep-" + std::to_string(i % 20)) {
                    mismatches.fetch_add(1);
                }
                (void)b.try_execute([t] { return t; });
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    CHECK(mismatches.load() == 0);
    CHECK(registry.size() == 20);
    std::uint64_t calls = 0;
    registry.for_each([&](CircuitBreaker& b) { calls += b.stats().calls; });
    CHECK(calls == 800);
}

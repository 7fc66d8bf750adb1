#include <atomic>
#include <cstdint>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <bulwark/adaptive_limiter.hpp>
#include <bulwark/bulkhead.hpp>
#include <bulwark/circuit_breaker.hpp>
#include <bulwark/metrics.hpp>
#include <bulwark/rate_limiter.hpp>
#include <bulwark/registry.hpp>
#include <bulwark/retry_budget.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using bulwark::Bulkhead;
using bulwark::BulkheadOptions;
using bulwark::CircuitBreaker;
using bulwark::CircuitBreakerOptions;
using bulwark::CircuitState;
using bulwark::EvictionCause;
using bulwark::RegistryOptions;

namespace {

using BreakerRegistry = bulwark::Registry<CircuitBreaker, CircuitBreakerOptions>;

struct Down : std::runtime_error {
    Down() : std::runtime_error("dependency down") {}
};

CircuitBreakerOptions consecutive(std::uint32_t threshold) {
    CircuitBreakerOptions o;
    o.failure_threshold = threshold;
    o.failure_ratio = 0.0;
    o.break_duration = 10s;
    return o;
}

void fail(CircuitBreaker& b) {
    (void)b.try_execute([]() -> int { throw Down(); });
}

void open(CircuitBreaker& b) {
    for (std::uint32_t i = 0; i < b.options().failure_threshold; ++i) {
        fail(b);
    }
}

RegistryOptions bounded(std::size_t max_size, bulwark::Duration ttl = bulwark::Duration::zero()) {
    RegistryOptions limits;
    limits.max_size = max_size;
    limits.ttl = ttl;
    return limits;
}

std::vector<std::string> keys(std::initializer_list<const char*> list) {
    return std::vector<std::string>(list.begin(), list.end());
}

// A component the default Evictable finds by its in_flight() member (as an adaptive limiter).
struct Gauge {
    explicit Gauge(const int&) {}
    int in_flight() const { return busy; }
    int busy = 0;
};

// One whose eviction rule is specialised.
struct Pinned {
    explicit Pinned(const int&) {}
    bool pinned = true;
};

}  // namespace

template <>
struct bulwark::Evictable<Pinned> {
    static bool check(const Pinned& p) { return !p.pinned; }
};

TEST_CASE("registry creates each key once from the template", "[registry]") {
    bulwark::ManualClock clock;
    BreakerRegistry registry(consecutive(2), {}, clock);
    auto a = registry.get("a");
    auto again = registry.get("a");
    CHECK(a == again);
    CHECK(a->name() == "a");
    CHECK(a->options().failure_threshold == 2);
    CHECK(registry.get("b") != a);
    CHECK(registry.size() == 2);
    CHECK(registry.stats().created == 2);
    CHECK(registry.stats().hits == 1);
    CHECK(registry.find("c") == nullptr);
    CHECK(registry.keys() == keys({"a", "b"}));
}

TEST_CASE("registry applies explicit options and the per-key customiser at creation",
          "[registry]") {
    bulwark::ManualClock clock;
    bulwark::RegistryHooks<CircuitBreaker, CircuitBreakerOptions> hooks;
    hooks.customize = [](const std::string& key, CircuitBreakerOptions& o) {
        if (key == "payments") {
            o.break_duration = 120s;
        }
    };
    BreakerRegistry registry(consecutive(2), {}, hooks, clock);
    CHECK(registry.get("payments")->options().break_duration == 120s);
    CHECK(registry.get("email")->options().break_duration == 10s);
    CHECK(registry.get("sms", consecutive(7))->options().failure_threshold == 7);
    // An existing component keeps its options.
    CHECK(registry.get("sms", consecutive(9))->options().failure_threshold == 7);
}

TEST_CASE("registry builds components through a factory and by constructor detection",
          "[registry]") {
    bulwark::ManualClock clock;
    bulwark::Registry<Bulkhead, BulkheadOptions> bulkheads(BulkheadOptions{3, 0, 1s}, {}, clock);
    CHECK(bulkheads.get("db")->options().max_concurrent == 3);

    bulwark::Registry<bulwark::TpsRetryBudget, bulwark::RetryBudgetOptions> budgets({}, {}, clock);
    CHECK(budgets.get("api")->ratio() == Approx(0.1));

    // A registry of the budget interface, whose factory picks the kind.
    bulwark::RegistryHooks<bulwark::RetryBudget, bulwark::TokenBucketRetryBudgetOptions> kinds;
    kinds.factory = [](const std::string&, const bulwark::TokenBucketRetryBudgetOptions& o,
                       bulwark::Clock&) -> std::shared_ptr<bulwark::RetryBudget> {
        return std::make_shared<bulwark::TokenBucketRetryBudget>(o);
    };
    bulwark::Registry<bulwark::RetryBudget, bulwark::TokenBucketRetryBudgetOptions> any_budget(
        {}, {}, kinds, clock);
    CHECK(any_budget.get("route")->try_withdraw());

    bulwark::Registry<bulwark::RateLimiter, bulwark::RateLimiterOptions> limiters(
        bulwark::RateLimiterOptions{bulwark::TokenBucket{10, 2}, bulwark::Duration::zero()}, {},
        clock);
    CHECK(limiters.get("tenant-1")->try_acquire(2));
    CHECK_FALSE(limiters.get("tenant-1")->try_acquire(1));
    CHECK(limiters.get("tenant-2")->try_acquire(1));

    bulwark::RegistryHooks<Gauge, int> hooks;
    int built = 0;
    hooks.factory = [&built](const std::string&, const int& o, bulwark::Clock&) {
        ++built;
        return std::make_shared<Gauge>(o);
    };
    bulwark::Registry<Gauge, int> gauges(0, {}, hooks, clock);
    (void)gauges.get("x");
    (void)gauges.get("x");
    CHECK(built == 1);
}

TEST_CASE("registry refuses invalid limits, options and keys naming the field and value",
          "[registry]") {
    bulwark::ManualClock clock;
    RegistryOptions limits;
    limits.shards = 3;
    CHECK_THROWS_WITH(BreakerRegistry({}, limits, clock),
                      Catch::Contains("RegistryOptions.shards") && Catch::Contains("3"));
    limits = {};
    limits.ttl = -1s;
    CHECK_THROWS_WITH(BreakerRegistry({}, limits, clock),
                      Catch::Contains("RegistryOptions.ttl") && Catch::Contains("-1"));
    limits = {};
    limits.name.clear();
    CHECK_THROWS_WITH(BreakerRegistry({}, limits, clock), Catch::Contains("RegistryOptions.name"));
    CircuitBreakerOptions bad;
    bad.failure_ratio = 1.5;
    CHECK_THROWS_WITH(BreakerRegistry(bad, {}, clock),
                      Catch::Contains("failure_ratio") && Catch::Contains("1.5"));

    bulwark::RegistryHooks<CircuitBreaker, CircuitBreakerOptions> hooks;
    hooks.customize = [](const std::string&, CircuitBreakerOptions& o) {
        o.minimum_calls = 0;
    };
    BreakerRegistry registry(consecutive(2), {}, hooks, clock);
    CHECK_THROWS_WITH(registry.get("x"), Catch::Contains("minimum_calls"));
    CHECK(registry.size() == 0);
    CHECK_THROWS_AS(registry.get(""), std::invalid_argument);
}

TEST_CASE("registry evicts components idle past the ttl", "[registry]") {
    bulwark::ManualClock clock;
    BreakerRegistry registry(consecutive(2), bounded(0, 10s), clock);
    (void)registry.get("a");
    (void)registry.get("b");
    clock.advance(6s);
    (void)registry.get("a");  // a use resets a's idle time
    clock.advance(6s);
    CHECK(registry.evict_expired() == 1);
    CHECK(registry.keys() == keys({"a"}));
    CHECK(registry.stats().expired == 1);
    clock.advance(10s);
    CHECK(registry.evict_expired() == 1);
    CHECK(registry.size() == 0);
}

TEST_CASE("registry sweeps expired components when it creates one", "[registry]") {
    bulwark::ManualClock clock;
    BreakerRegistry registry(consecutive(2), bounded(0, 10s), clock);
    (void)registry.get("a");
    clock.advance(11s);
    (void)registry.get("c");
    CHECK(registry.keys() == keys({"c"}));
}

TEST_CASE("registry evicts the least recently used over max_size", "[registry]") {
    bulwark::ManualClock clock;
    BreakerRegistry registry(consecutive(2), bounded(3), clock);
    (void)registry.get("a");
    clock.advance(1s);
    (void)registry.get("b");
    clock.advance(1s);
    (void)registry.get("c");
    clock.advance(1s);
    (void)registry.find("a");
    clock.advance(1s);
    (void)registry.get("d");
    CHECK(registry.keys() == keys({"a", "c", "d"}));
    clock.advance(1s);
    (void)registry.get("e");
    CHECK(registry.keys() == keys({"a", "d", "e"}));
    CHECK(registry.stats().evicted_for_size == 2);
}

TEST_CASE("registry over max_size evicts the oldest down to 1/32 below it in one pass",
          "[registry]") {
    bulwark::ManualClock clock;
    BreakerRegistry registry(consecutive(2), bounded(64), clock);
    for (int i = 0; i < 64; ++i) {
        (void)registry.get("k" + std::to_string(100 + i));
        clock.advance(1s);
    }
    CHECK(registry.size() == 64);
    (void)registry.get("new");
    CHECK(registry.size() == 62);
    CHECK_FALSE(registry.contains("k100"));
    CHECK_FALSE(registry.contains("k101"));
    CHECK_FALSE(registry.contains("k102"));
    CHECK(registry.contains("k103"));
    CHECK(registry.contains("new"));
    CHECK(registry.stats().evicted_for_size == 3);
}

TEST_CASE("registry never evicts an open or half-open breaker", "[registry]") {
    bulwark::ManualClock clock;
    BreakerRegistry registry(consecutive(2), bounded(2, 30s), clock);
    open(*registry.get("down"));
    clock.advance(1s);
    (void)registry.get("b");
    clock.advance(1s);
    (void)registry.get("c");  // over max_size: b goes, not the older open "down"
    CHECK(registry.keys() == keys({"c", "down"}));
    CHECK(registry.find("down")->state() == CircuitState::open);

    clock.advance(40s);  // the break is over: "down" reports half-open; idle past the ttl
    CHECK(registry.find("down")->state() == CircuitState::half_open);
    clock.advance(40s);
    CHECK(registry.evict_expired() == 1);  // c
    CHECK(registry.keys() == keys({"down"}));

    // Nothing evictable: the registry grows past max_size and says so.
    (void)registry.get("e");
    open(*registry.get("e"));
    (void)registry.get("f");
    CHECK(registry.size() == 3);
    CHECK(registry.stats().over_capacity >= 1);

    // Once closed again it can go.
    {
        auto down = registry.get("down");
        auto probe = down->try_acquire();
        REQUIRE(probe);
        probe.record_success();
        CHECK(down->state() == CircuitState::closed);
    }
    clock.advance(31s);
    CHECK(registry.evict_expired() == 2);  // down and f; e is still open
    CHECK(registry.keys() == keys({"e"}));
}

TEST_CASE("registry never evicts a bulkhead with calls in flight", "[registry]") {
    bulwark::ManualClock clock;
    bulwark::Registry<Bulkhead, BulkheadOptions> registry(BulkheadOptions{2, 0, 1s},
                                                          bounded(0, 10s), clock);
    auto permit = registry.get("db")->try_acquire();
    REQUIRE(permit);
    clock.advance(20s);
    CHECK(registry.evict_expired() == 0);
    CHECK(registry.contains("db"));
    permit = {};
    CHECK(registry.evict_expired() == 1);
    CHECK_FALSE(registry.contains("db"));
}

TEST_CASE("registry never evicts an adaptive limiter with calls in flight", "[registry]") {
    bulwark::ManualClock clock;
    bulwark::Registry<bulwark::AdaptiveLimiter, bulwark::AdaptiveLimiterOptions> registry(
        {}, bounded(0, 10s), clock);
    auto permit = registry.get("api")->try_acquire();
    REQUIRE(permit);
    (void)registry.get("idle");
    clock.advance(20s);
    CHECK(registry.evict_expired() == 1);
    CHECK(registry.keys() == keys({"api"}));
    permit = {};
    CHECK(registry.evict_expired() == 1);
    CHECK(registry.size() == 0);
}

TEST_CASE("registry finds in_flight() and specialised Evictable rules", "[registry]") {
    bulwark::ManualClock clock;
    bulwark::Registry<Gauge, int> gauges(0, bounded(0, 10s), clock);
    gauges.get("busy")->busy = 1;
    (void)gauges.get("idle");
    clock.advance(20s);
    CHECK(gauges.evict_expired() == 1);
    CHECK(gauges.keys() == keys({"busy"}));

    bulwark::Registry<Pinned, int> pinned(0, bounded(0, 10s), clock);
    (void)pinned.get("p");
    pinned.get("q")->pinned = false;
    clock.advance(20s);
    CHECK(pinned.evict_expired() == 1);
    CHECK(pinned.keys() == keys({"p"}));
    CHECK(bulwark::evictable(Gauge{0}));
    CHECK_FALSE(bulwark::evictable(Pinned{0}));
}

TEST_CASE("registry keeps a component whose handle is held unless told otherwise", "[registry]") {
    bulwark::ManualClock clock;
    BreakerRegistry keep(consecutive(2), bounded(0, 10s), clock);
    auto held = keep.get("a");
    clock.advance(20s);
    CHECK(keep.evict_expired() == 0);
    CHECK(keep.get("a") == held);

    RegistryOptions limits = bounded(0, 10s);
    limits.evict_referenced = true;
    BreakerRegistry loose(consecutive(2), limits, clock);
    std::weak_ptr<CircuitBreaker> watch;
    {
        auto handle = loose.get("a");
        watch = handle;
        clock.advance(20s);
        CHECK(loose.evict_expired() == 1);
        // The evicted breaker still works for its holder.
        CHECK(handle->execute([] { return 7; }) == 7);
        open(*handle);
        CHECK(handle->state() == CircuitState::open);
        CHECK(loose.get("a") != handle);  // a new one for the key
        CHECK_FALSE(watch.expired());
    }
    CHECK(watch.expired());  // destroyed with the last handle
}

TEST_CASE("registry tells eviction listeners and its metrics drop evicted keys", "[registry]") {
    bulwark::ManualClock clock;
    RegistryOptions limits = bounded(2, 10s);
    limits.name = "hosts";
    BreakerRegistry registry(consecutive(2), limits, clock);
    std::vector<std::pair<std::string, EvictionCause>> heard;
    const auto id = registry.on_eviction([&](const bulwark::RegistryEviction<CircuitBreaker>& e) {
        heard.emplace_back(e.key, e.cause);
        CHECK(e.component->name() == e.key);
    });
    (void)registry.get("host-a");
    clock.advance(1s);
    (void)registry.get("host-b");
    std::string before = bulwark::to_prometheus(registry);
    CHECK(before.find(R"(name="host-a")") != std::string::npos);
    clock.advance(1s);
    (void)registry.get("host-c");
    REQUIRE(heard.size() == 1);
    CHECK(heard[0] == std::make_pair(std::string("host-a"), EvictionCause::size));

    const std::string after = bulwark::to_prometheus(registry);
    CHECK(after.find("host-a") == std::string::npos);
    CHECK(after.find(R"(name="host-b")") != std::string::npos);
    CHECK(after.find(R"(bulwark_registry_entries{registry="hosts"} 2)") != std::string::npos);
    CHECK(after.find(R"(bulwark_registry_evictions_total{registry="hosts",cause="size"} 1)") !=
          std::string::npos);

    CHECK(registry.erase("host-b"));
    CHECK_FALSE(registry.erase("host-b"));
    REQUIRE(heard.size() == 2);
    CHECK(heard[1].second == EvictionCause::removed);
    CHECK(registry.remove_listener(id));
    CHECK(registry.erase("host-c"));
    CHECK(heard.size() == 2);

    // Renders the entries of any renderable kind, labelled with their keys.
    bulwark::Registry<Bulkhead, BulkheadOptions> bulkheads(BulkheadOptions{2, 0, 1s}, {}, clock);
    (void)bulkheads.get("db");
    CHECK(bulwark::to_prometheus(bulkheads).find(
              R"(bulwark_bulkhead_max_concurrent{name="db"} 2)") != std::string::npos);
}

namespace {

void churn(int iterations) {
    bulwark::ManualClock clock;
    CircuitBreakerOptions o = consecutive(3);
    o.break_duration = 24h;
    RegistryOptions limits = bounded(16, 50ms);
    limits.shards = 4;
    BreakerRegistry registry(o, limits, clock);
    std::atomic<int> evicted_open{0};
    std::atomic<int> evicted{0};
    registry.on_eviction([&](const bulwark::RegistryEviction<CircuitBreaker>& e) {
        evicted.fetch_add(1);
        if (e.component->state() != CircuitState::closed) {
            evicted_open.fetch_add(1);
        }
    });
    std::atomic<bool> opened{false};
    std::vector<int> errors(4, 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            std::mt19937 rng(static_cast<std::uint32_t>(t + 1));
            std::uniform_int_distribution<int> pick(0, 63);
            for (int i = 0; i < iterations; ++i) {
                const std::string key = "k" + std::to_string(pick(rng));
                auto b = registry.get(key);
                if (b->name() != key) {
                    ++errors[static_cast<std::size_t>(t)];
                }
                if (b->state() == CircuitState::closed && b->execute([] { return 1; }) != 1) {
                    ++errors[static_cast<std::size_t>(t)];
                }
                if (i % 97 == 0) {
                    (void)registry.erase("k" + std::to_string(pick(rng)));
                }
                if (i % 50 == 0) {
                    (void)registry.evict_expired();
                }
                if (t == 0 && i % 10 == 0) {
                    clock.advance(1ms);
                }
                if (t == 1 && i == iterations / 2) {
                    open(*registry.get("victim"));
                    opened.store(true);
                }
            }
        });
    }
    for (auto& th : threads) {
        th.join();
    }
    for (int e : errors) {
        CHECK(e == 0);
    }
    REQUIRE(opened.load());
    CHECK(evicted.load() > 100);
    CHECK(evicted_open.load() == 0);
    auto victim = registry.find("victim");
    REQUIRE(victim != nullptr);
    CHECK(victim->state() == CircuitState::open);
    clock.advance(1s);
    (void)registry.evict_expired();
    CHECK(registry.keys() == keys({"victim"}));
}

}  // namespace

TEST_CASE("registry churn from four threads never evicts an open breaker", "[registry]") {
    churn(4000);
}

TEST_CASE("registry churn, long", "[registry][.stress]") {
    churn(200000);
}

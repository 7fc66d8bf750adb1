#include <atomic>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <bulwark/cache.hpp>
#include <bulwark/pipeline.hpp>
#include <bulwark/testing.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using bulwark::Duration;

namespace {
struct Quote {
    double price;
};
}  // namespace

TEST_CASE("a failure is answered with the last good value for its key", "[cache]") {
    bulwark::ManualClock clock;
    bulwark::CacheFallback<std::string, Quote> last_good(5min, 100, clock);
    CHECK(last_good.execute("ACME", [] { return Quote{10.0}; }).price == 10.0);
    CHECK(last_good.execute("ACME", [] { return Quote{11.0}; }).price == 11.0);
    bulwark::Context ctx;
    auto q = last_good.execute(
        "ACME", []() -> Quote { throw std::runtime_error("feed down"); }, ctx);
    CHECK(q.price == 11.0);
    CHECK(ctx.stale());
    auto s = last_good.stats();
    CHECK(s.stored == 2);
    CHECK(s.served == 1);
}

TEST_CASE("with nothing cached the failure passes through", "[cache]") {
    bulwark::ManualClock clock;
    bulwark::CacheFallback<std::string, Quote> last_good(5min, 100, clock);
    last_good.execute("ACME", [] { return Quote{1.0}; });
    CHECK_THROWS_AS(last_good.execute("OTHER", []() -> Quote { throw std::runtime_error("x"); }),
                    std::runtime_error);
    CHECK(last_good.stats().misses == 1);
}

TEST_CASE("values older than the ttl are not served", "[cache]") {
    bulwark::ManualClock clock;
    bulwark::CacheFallback<std::string, Quote> last_good(5min, 100, clock);
    last_good.execute("ACME", [] { return Quote{1.0}; });
    clock.advance(4min);
    CHECK(last_good.peek("ACME").has_value());
    std::vector<bulwark::StaleServed> served;
    last_good.on_stale([&](const bulwark::StaleServed& s) { served.push_back(s); });
    CHECK(last_good.execute("ACME", []() -> Quote { throw 1; }).price == 1.0);
    REQUIRE(served.size() == 1);
    CHECK(served[0].age == Duration(4min));
    clock.advance(1min);
    CHECK_FALSE(last_good.peek("ACME").has_value());
    CHECK_THROWS(last_good.execute("ACME", []() -> Quote { throw 1; }));
}

TEST_CASE("a removed on_stale listener hears no more stale values", "[cache]") {
    bulwark::ManualClock clock;
    bulwark::CacheFallback<std::string, Quote> last_good(5min, 100, clock);
    last_good.execute("ACME", [] { return Quote{1.0}; });
    int heard = 0;
    const bulwark::ListenerId id =
        last_good.on_stale([&](const bulwark::StaleServed&) { ++heard; });
    auto fail = []() -> Quote {
        throw 1;
    };
    (void)last_good.execute("ACME", fail);
    CHECK(last_good.remove_listener(id));
    CHECK_FALSE(last_good.remove_listener(id));
    (void)last_good.execute("ACME", fail);
    CHECK(heard == 1);
}

TEST_CASE("the least recently used key is evicted beyond max_entries", "[cache]") {
    bulwark::ManualClock clock;
    bulwark::CacheFallback<int, int> cache(1h, 2, clock);
    cache.put(1, 10);
    cache.put(2, 20);
    CHECK(cache.execute(1, []() -> int { throw 1; }) == 10);  // 1 is now the most recent
    cache.put(3, 30);                                         // evicts 2
    CHECK_FALSE(cache.peek(2).has_value());
    CHECK(cache.peek(1) == 10);
    CHECK(cache.peek(3) == 30);
    auto s = cache.stats();
    CHECK(s.size == 2);
    CHECK(s.evicted == 1);
    cache.erase(1);
    CHECK_FALSE(cache.peek(1).has_value());
    cache.clear();
    CHECK(cache.stats().size == 0);
}

TEST_CASE("only handled failures are answered from the cache", "[cache]") {
    bulwark::ManualClock clock;
    bulwark::CacheFallback<int, int> cache(1h, 10, clock);
    cache.handle<std::system_error>();
    cache.put(1, 10);
    CHECK_THROWS_AS(cache.execute(1, []() -> int { throw std::logic_error("bug"); }),
                    std::logic_error);
    CHECK(cache.execute(1, []() -> int {
        throw std::system_error(std::make_error_code(std::errc::timed_out));
    }) == 10);
}

TEST_CASE("for_key composes the cache into a pipeline", "[cache][pipeline]") {
    bulwark::ManualClock clock;
    bulwark::CacheFallback<std::string, int> cache(1h, 10, clock);
    bulwark::FaultInjector chaos(clock);
    auto p = bulwark::pipeline(cache.for_key("k"), chaos);
    CHECK(p.execute([] { return 7; }) == 7);
    chaos.fail_next(1);
    bulwark::Context ctx;
    CHECK(p.execute([] { return 8; }, ctx) == 7);
    CHECK(ctx.stale());
    auto o = cache.try_execute("missing", []() -> int { throw 1; });
    CHECK(o.has_error());
}

TEST_CASE("invalid cache options are refused", "[cache]") {
    using Cache = bulwark::CacheFallback<int, int>;
    CHECK_THROWS_WITH(Cache(0s), "CacheFallback.ttl must be > 0, got 0s");
    CHECK_THROWS_WITH(Cache(1s, 0), "CacheFallback.max_entries must be >= 1, got 0");
}

TEST_CASE("the cache is safe to share between threads", "[cache][concurrency]") {
    bulwark::CacheFallback<int, int> cache(1h, 16);
    std::vector<std::thread> threads;
    std::atomic<int> wrong{0};
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 2000; ++i) {
                const int key = (i + t) % 32;
                const int v = cache
                                  .try_execute(key,
                                               [&]() -> int {
                                                   if (i % 3 == 0) {
                                                       throw std::runtime_error("flaky");
                                                   }
                                                   return key * 10;
                                               })
                                  .value_or(key * 10);
                if (v != key * 10) {
                    wrong.fetch_add(1);
                }
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    CHECK(wrong.load() == 0);
    CHECK(cache.stats().size <= 16);
}

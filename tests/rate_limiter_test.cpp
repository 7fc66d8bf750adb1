#include <atomic>
#include <deque>
#include <thread>
#include <vector>

#include <bulwark/detail/random.hpp>
#include <bulwark/pipeline.hpp>
#include <bulwark/rate_limiter.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using bulwark::Duration;

TEST_CASE("a token bucket grants a burst at once, then one permit per interval", "[rate_limiter]") {
    bulwark::ManualClock clock;
    bulwark::RateLimiter limiter(bulwark::TokenBucket{10, 3}, clock);  // one per 100 ms
    CHECK(limiter.try_acquire());
    CHECK(limiter.try_acquire());
    CHECK(limiter.try_acquire());
    auto refused = limiter.try_acquire();
    CHECK_FALSE(refused);
    CHECK(refused.retry_after == Duration(100ms));
    clock.advance(99ms);
    CHECK_FALSE(limiter.try_acquire());
    clock.advance(1ms);
    CHECK(limiter.try_acquire());
    CHECK_FALSE(limiter.try_acquire());
    clock.advance(1s);  // refills to the burst, not beyond
    CHECK(limiter.try_acquire(3));
    CHECK_FALSE(limiter.try_acquire());
    auto s = limiter.stats();
    CHECK(s.admitted == 7);
    CHECK(s.rejected == 4);
}

TEST_CASE("try_acquire(n) takes n permits or none", "[rate_limiter]") {
    bulwark::ManualClock clock;
    bulwark::RateLimiter limiter(bulwark::TokenBucket{10, 5}, clock);
    CHECK(limiter.try_acquire(4));
    auto refused = limiter.try_acquire(2);
    CHECK_FALSE(refused);
    CHECK(refused.retry_after == Duration(100ms));
    CHECK(limiter.try_acquire(1));
    CHECK_THROWS_WITH(limiter.try_acquire(6),
                      "RateLimiter.acquire(n): n must be in [1, 5] (the most ever granted at "
                      "once), got 6");
    CHECK_THROWS_AS(limiter.try_acquire(0), std::invalid_argument);
}

TEST_CASE("acquire waits for permits up to max_wait on the limiter's clock", "[rate_limiter]") {
    bulwark::ManualClock clock;
    bulwark::RateLimiter limiter(bulwark::TokenBucket{10, 1}, clock);
    CHECK(limiter.try_acquire());
    auto waited = limiter.acquire(1, 150ms);
    CHECK(waited);
    CHECK(waited.waited == Duration(100ms));
    CHECK(clock.sleeps() == std::vector<Duration>{100ms});
    auto refused = limiter.acquire(1, 50ms);  // the next permit is 100 ms away
    CHECK_FALSE(refused);
    CHECK(clock.sleeps().size() == 1);
}

TEST_CASE("execute rejects with RateLimitedError carrying retry_after", "[rate_limiter]") {
    bulwark::ManualClock clock;
    bulwark::RateLimiter limiter(bulwark::TokenBucket{2, 1}, clock);
    CHECK(limiter.execute([] { return 1; }) == 1);
    auto o = limiter.try_execute([] { return 1; });
    REQUIRE(o.has_error());
    try {
        o.rethrow_if_error();
    } catch (const bulwark::RateLimitedError& e) {
        CHECK(e.retry_after() == Duration(500ms));
    }
}

TEST_CASE("a named limiter's rejections carry its name as their source", "[rate_limiter]") {
    bulwark::ManualClock clock;
    bulwark::RateLimiter api("api", bulwark::TokenBucket{2, 1}, clock);
    CHECK(api.name() == "api");
    CHECK(api.execute([] { return 1; }) == 1);
    auto rejected = api.try_execute([] { return 1; });
    REQUIRE(rejected.has_error());
    CHECK(bulwark_test::rejection_source(rejected.error()) == "api");
    CHECK_THROWS_WITH(rejected.rethrow_if_error(),
                      "rate limiter 'api': rate limit reached; retry after 500ms");
}

TEST_CASE("a removed on_rejected listener hears no more refusals", "[rate_limiter]") {
    bulwark::ManualClock clock;
    bulwark::RateLimiter limiter(bulwark::TokenBucket{1, 1}, clock);
    int heard = 0;
    const bulwark::ListenerId id =
        limiter.on_rejected([&](const bulwark::RateDecision&) { ++heard; });
    CHECK(limiter.try_acquire().admitted);
    CHECK_FALSE(limiter.try_acquire().admitted);
    CHECK(limiter.remove_listener(id));
    CHECK_FALSE(limiter.remove_listener(id));
    CHECK_FALSE(limiter.try_acquire().admitted);
    CHECK(heard == 1);
}

TEST_CASE("execute waits up to max_wait and the context's deadline", "[rate_limiter]") {
    bulwark::ManualClock clock;
    bulwark::RateLimiterOptions options;
    options.limit = bulwark::TokenBucket{1, 1};
    options.max_wait = 2s;
    bulwark::RateLimiter limiter(options, clock);
    CHECK(limiter.execute([] { return 1; }) == 1);
    CHECK(limiter.execute([] { return 2; }) == 2);  // waited 1 s
    CHECK(clock.sleeps() == std::vector<Duration>{1s});
    bulwark::Context ctx;
    ctx.set_deadline(clock.now() + 500ms);
    CHECK_THROWS_AS(limiter.execute([] { return 3; }, ctx), bulwark::RateLimitedError);
}

TEST_CASE("a sliding window allows limit per window and reports when room returns",
          "[rate_limiter]") {
    bulwark::ManualClock clock;
    bulwark::RateLimiter limiter(bulwark::SlidingWindow{3, 1s}, clock);
    CHECK(limiter.try_acquire());
    clock.advance(300ms);
    CHECK(limiter.try_acquire(2));
    auto refused = limiter.try_acquire();
    CHECK_FALSE(refused);
    CHECK(refused.retry_after == Duration(700ms));  // the first grant leaves the window
    clock.advance(700ms);
    CHECK(limiter.try_acquire());
    CHECK_FALSE(limiter.try_acquire());
    auto waited = limiter.acquire(1, 1s);
    CHECK(waited);
    CHECK(waited.waited == Duration(300ms));
}

namespace {
// Checks the rate limiter's guarantee on a recorded history of grant times: every interval
// [t_i, t_j] holds at most rate * (t_j - t_i) + burst grants.
bool within_bucket_bound(const std::vector<bulwark::TimePoint>& grants, double rate,
                         std::uint32_t burst) {
    for (std::size_t i = 0; i < grants.size(); ++i) {
        for (std::size_t j = i; j < grants.size(); ++j) {
            const double seconds = std::chrono::duration<double>(grants[j] - grants[i]).count();
            if (static_cast<double>(j - i + 1) > rate * seconds + burst + 1e-9) {
                return false;
            }
        }
    }
    return true;
}
}  // namespace

TEST_CASE("property: a token bucket never grants more than rate*T + burst in any interval",
          "[rate_limiter]") {
    for (std::uint64_t seed = 1; seed <= 20; ++seed) {
        bulwark::ManualClock clock;
        const double rate = 5.0 + static_cast<double>(seed % 7) * 3.0;
        const std::uint32_t burst = 1 + static_cast<std::uint32_t>(seed % 4);
        bulwark::RateLimiter limiter(bulwark::TokenBucket{rate, burst}, clock);
        bulwark::detail::SplitMix64 rng(seed);
        std::vector<bulwark::TimePoint> grants;
        for (int i = 0; i < 400; ++i) {
            clock.advance(Duration(static_cast<std::int64_t>(rng.next() % 120000000)));
            const std::uint32_t n = 1 + static_cast<std::uint32_t>(rng.next() % burst);
            if (limiter.try_acquire(n)) {
                for (std::uint32_t k = 0; k < n; ++k) {
                    grants.push_back(clock.now());
                }
            }
        }
        INFO("seed " << seed);
        CHECK(grants.size() > 50);  // the limiter did grant, so the bound is tested
        CHECK(within_bucket_bound(grants, rate, burst));
    }
}

TEST_CASE("property: a sliding window never grants more than limit in any window",
          "[rate_limiter]") {
    for (std::uint64_t seed = 1; seed <= 20; ++seed) {
        bulwark::ManualClock clock;
        const std::uint32_t limit = 2 + static_cast<std::uint32_t>(seed % 5);
        bulwark::RateLimiter limiter(bulwark::SlidingWindow{limit, 1s}, clock);
        bulwark::detail::SplitMix64 rng(seed);
        std::vector<bulwark::TimePoint> grants;
        for (int i = 0; i < 500; ++i) {
            clock.advance(Duration(static_cast<std::int64_t>(rng.next() % 300000000)));
            if (limiter.try_acquire()) {
                grants.push_back(clock.now());
            }
        }
        std::size_t worst = 0;
        for (std::size_t i = 0; i < grants.size(); ++i) {
            std::size_t j = i;
            while (j < grants.size() && grants[j] - grants[i] < Duration(1s)) {
                ++j;
            }
            worst = std::max(worst, j - i);
        }
        INFO("seed " << seed);
        CHECK(worst <= limit);
        CHECK(worst == limit);  // and it does use its allowance
    }
}

TEST_CASE("invalid rate limiter options are refused", "[rate_limiter]") {
    CHECK_THROWS_WITH(bulwark::RateLimiter(bulwark::TokenBucket{0, 1}),
                      "RateLimiterOptions.limit (TokenBucket.rate) must be in (0, 1e9], got 0");
    CHECK_THROWS_WITH(bulwark::RateLimiter(bulwark::TokenBucket{10, 0}),
                      "RateLimiterOptions.limit (TokenBucket.burst) must be >= 1, got 0");
    CHECK_THROWS_WITH(bulwark::RateLimiter(bulwark::SlidingWindow{0, 1s}),
                      "RateLimiterOptions.limit (SlidingWindow.limit) must be in [1, 1000000], "
                      "got 0");
    CHECK_THROWS_AS(bulwark::RateLimiter(bulwark::SlidingWindow{5, 0s}), std::invalid_argument);
    bulwark::RateLimiterOptions o;
    o.max_wait = -1s;
    CHECK_THROWS_WITH(bulwark::RateLimiter(o), "RateLimiterOptions.max_wait must be >= 0, got -1s");
}

TEST_CASE("stress: concurrent acquires never exceed the bucket's allowance",
          "[rate_limiter][.stress]") {
    // 8 threads x 25k acquires on one limiter while one of them moves time forward; the grants
    // can never exceed what the bucket allows over the whole run, and every grant is counted.
    bulwark::ManualClock clock;
    const double rate = 1000.0;
    const std::uint32_t burst = 50;
    bulwark::RateLimiter limiter(bulwark::TokenBucket{rate, burst}, clock);
    std::atomic<std::uint64_t> granted{0};
    std::atomic<std::uint64_t> refused{0};
    const auto start = clock.now();
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 25000; ++i) {
                if (t == 0 && i % 50 == 0) {
                    clock.advance(1ms);
                }
                if (limiter.try_acquire()) {
                    granted.fetch_add(1, std::memory_order_relaxed);
                } else {
                    refused.fetch_add(1, std::memory_order_relaxed);
                }
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    const double seconds = std::chrono::duration<double>(clock.now() - start).count();
    CHECK(granted.load() > 0);
    CHECK(static_cast<double>(granted.load()) <= rate * seconds + burst);
    auto s = limiter.stats();
    CHECK(s.admitted == granted.load());
    CHECK(s.rejected == refused.load());
}

// Proves that the success paths allocate nothing: this binary replaces the global allocation
// functions with counting ones. It is a separate executable so that the replacement does not
// affect the other tests.
#include <atomic>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>

#include <bulwark/adaptive_limiter.hpp>
#include <bulwark/bulkhead.hpp>
#include <bulwark/cache.hpp>
#include <bulwark/circuit_breaker.hpp>
#include <bulwark/core.hpp>
#include <bulwark/degradation.hpp>
#include <bulwark/fallback.hpp>
#include <bulwark/fallback_chain.hpp>
#include <bulwark/load_shedder.hpp>
#include <bulwark/rate_limiter.hpp>
#include <bulwark/registry.hpp>
#include <bulwark/retry.hpp>
#include <bulwark/throttler.hpp>
#include <bulwark/timeout.hpp>

#include "catch.hpp"
#include "support.hpp"

namespace {
std::atomic<long> g_allocations{0};

// Not inlined: GCC would otherwise pair the inlined malloc with `delete` and warn
// (-Wmismatched-new-delete) although both sides of every pair end in malloc/free.
BULWARK_NOINLINE void* counted_alloc_nothrow(std::size_t size) noexcept {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
    return std::malloc(size == 0 ? 1 : size);
}

BULWARK_NOINLINE void* counted_alloc(std::size_t size) {
    if (void* p = counted_alloc_nothrow(size)) {
        return p;
    }
    throw std::bad_alloc();
}

BULWARK_NOINLINE void counted_free(void* p) noexcept {
    std::free(p);
}

// Counts the allocations `f` makes on this thread's behalf.
template <class F>
long allocations_during(F&& f) {
    const long before = g_allocations.load();
    f();
    return g_allocations.load() - before;
}

BULWARK_NOINLINE int plus_one(int x) {
    return x + 1;
}
}  // namespace

// Every ordinary form is replaced, so that no allocation is served by one allocator and freed by
// another (ASan reports that as a mismatch).
void* operator new(std::size_t size) {
    return counted_alloc(size);
}
void* operator new[](std::size_t size) {
    return counted_alloc(size);
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
    return counted_alloc_nothrow(size);
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
    return counted_alloc_nothrow(size);
}
void operator delete(void* p) noexcept {
    counted_free(p);
}
void operator delete[](void* p) noexcept {
    counted_free(p);
}
void operator delete(void* p, std::size_t) noexcept {
    counted_free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
    counted_free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
    counted_free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
    counted_free(p);
}

TEST_CASE("the counting allocator sees allocations", "[alloc]") {
    CHECK(allocations_during([] { auto p = std::make_unique<int>(1); }) == 1);
}

TEST_CASE("pipeline(Noop, Noop, Noop).execute allocates nothing", "[alloc]") {
    auto p = bulwark::pipeline(bulwark::Noop{}, bulwark::Noop{}, bulwark::Noop{});
    int x = 0;
    CHECK(allocations_during([&] {
              for (int i = 0; i < 1000; ++i) {
                  x = p.execute([&] { return plus_one(x); });
              }
          }) == 0);
    CHECK(x == 1000);
}

TEST_CASE("try_execute, context callables and void results allocate nothing", "[alloc]") {
    bulwark::Noop a;
    bulwark::Noop b;
    auto p = bulwark::pipeline(a, b);
    int x = 0;
    CHECK(allocations_during([&] {
              for (int i = 0; i < 1000; ++i) {
                  auto o = p.try_execute([&](bulwark::Context& ctx) {
                      return plus_one(x) + static_cast<int>(ctx.attempt());
                  });
                  x = o.value();
                  p.execute([&] { x = plus_one(x) - 1; });
              }
          }) == 0);
    CHECK(x == 1000);
}

TEST_CASE("a wrapped function call allocates nothing", "[alloc]") {
    auto resilient = bulwark::wrap(plus_one, bulwark::Noop{}, bulwark::Noop{});
    int x = 0;
    CHECK(allocations_during([&] {
              for (int i = 0; i < 1000; ++i) {
                  x = resilient(x);
              }
          }) == 0);
    CHECK(x == 1000);
}

TEST_CASE("emitting to no listeners allocates nothing", "[alloc]") {
    bulwark::Listeners<int> listeners;
    CHECK(allocations_during([&] {
              for (int i = 0; i < 1000; ++i) {
                  listeners.emit(i);
                  listeners.emit_with([&] { return i; });
              }
          }) == 0);
}

TEST_CASE("a closed breaker's execute and two-step calls allocate nothing", "[alloc]") {
    bulwark::CircuitBreaker breaker("alloc-closed");
    int x = breaker.execute([] { return plus_one(0); });  // this thread's first call takes a slot
    CHECK(allocations_during([&] {
              for (int i = 0; i < 1000; ++i) {
                  x = breaker.execute([&] { return plus_one(x); });
                  auto permit = breaker.try_acquire();
                  permit.record_success();
              }
          }) == 0);
    CHECK(x == 1001);
}

TEST_CASE("a time-window breaker's closed path allocates nothing", "[alloc]") {
    bulwark::CircuitBreakerOptions o;
    o.window = bulwark::TimeWindow{std::chrono::seconds(10), std::chrono::seconds(1)};
    bulwark::CircuitBreaker breaker("alloc-time", o);
    int x = breaker.execute([] { return plus_one(0); });
    CHECK(allocations_during([&] {
              for (int i = 0; i < 1000; ++i) {
                  x = breaker.execute([&] { return plus_one(x); });
              }
          }) == 0);
    CHECK(x == 1001);
}

TEST_CASE("an open breaker rejects without allocating after a thread's first rejection",
          "[alloc]") {
    bulwark::CircuitBreaker breaker("alloc-open");
    breaker.trip();
    (void)breaker.try_execute([] { return 1; });  // builds this thread's cached error
    CHECK(allocations_during([&] {
              for (int i = 0; i < 1000; ++i) {
                  auto permit = breaker.try_acquire();
                  auto outcome = breaker.try_execute([] { return 1; });
                  CHECK_FALSE(outcome.has_value());
              }
          }) == 0);
}

TEST_CASE("the strategies' success paths allocate nothing", "[alloc]") {
    using namespace std::chrono_literals;
    bulwark::Timeout timeout(1s);
    bulwark::Fallback<int> fallback(0);
    bulwark::Bulkhead bulkhead(4, 4);
    bulwark::RateLimiter limiter(bulwark::TokenBucket{1e9, 1000000});
    auto p = bulwark::pipeline(fallback, timeout, bulkhead, limiter);
    int x = p.execute([] { return plus_one(0); });  // this thread's first call takes a slot
    CHECK(allocations_during([&] {
              for (int i = 0; i < 1000; ++i) {
                  x = p.execute([&] { return plus_one(x); });
                  auto permit = bulkhead.try_acquire();
                  (void)limiter.try_acquire();
              }
          }) == 0);
    CHECK(x == 1001);
}

TEST_CASE("a cache fallback's success for a key it holds allocates nothing", "[alloc]") {
    using namespace std::chrono_literals;
    struct Quote {
        double bid[4];
        double ask[4];
    };
    bulwark::CacheFallback<std::string, Quote> cache(1min);
    const std::string key = "a key longer than the small-string buffer";
    (void)cache.execute(key, [] { return Quote{{1, 2, 3, 4}, {5, 6, 7, 8}}; });  // stores the key
    double total = 0;
    CHECK(allocations_during([&] {
              for (int i = 0; i < 1000; ++i) {
                  total += cache.try_execute(key,
                                             [&] {
                                                 return Quote{{1, 2, 3, 4}, {5, 6, 7, 8}};
                                             })
                               .value()
                               .ask[3];
              }
          }) == 0);
    CHECK(total == 8000);
}

TEST_CASE("a load shedder's pass and a sliding-window limiter allocate nothing", "[alloc]") {
    using namespace std::chrono_literals;
    bulwark::Degradation degradation;
    bulwark::LoadShedder shedder(degradation, bulwark::DegradationLevel::severe);
    bulwark::RateLimiter window(bulwark::SlidingWindow{1000000, 1s});
    auto p = bulwark::pipeline(shedder, window);
    int x = p.execute([] { return plus_one(0); });
    CHECK(allocations_during([&] {
              for (int i = 0; i < 1000; ++i) {
                  x = p.execute([&] { return plus_one(x); });
              }
          }) == 0);
    CHECK(x == 1001);
}

TEST_CASE("a retry that succeeds first time allocates nothing", "[alloc]") {
    bulwark::RetryPolicy retry;
    bulwark::CircuitBreaker breaker("alloc-retry");
    auto p = bulwark::pipeline(retry, breaker);
    int x = p.execute([] { return plus_one(0); });
    CHECK(allocations_during([&] {
              for (int i = 0; i < 1000; ++i) {
                  x = p.execute([&] { return plus_one(x); });
              }
          }) == 0);
    CHECK(x == 1001);
}

TEST_CASE("a retry with a budget of each kind that succeeds first time allocates nothing",
          "[alloc]") {
    const std::shared_ptr<bulwark::RetryBudget> budgets[] = {
        bulwark::RetryBudget::shared(0.1, 10),
        bulwark::TokenBucketRetryBudget::shared(bulwark::TokenBucketRetryBudgetOptions{}),
        bulwark::QuotaRetryBudget::shared(bulwark::QuotaRetryBudgetOptions{})};
    for (const auto& budget : budgets) {
        bulwark::RetryOptions o;
        o.budget = budget;
        bulwark::RetryPolicy retry(o);
        int x = retry.execute([] { return plus_one(0); });
        CHECK(allocations_during([&] {
                  for (int i = 0; i < 1000; ++i) {
                      x = retry.execute([&] { return plus_one(x); });
                  }
              }) == 0);
        CHECK(x == 1001);
        CHECK(budget->stats().successes == 1001);
    }
}

TEST_CASE("a fallback chain whose first channel delivers allocates nothing", "[alloc]") {
    bulwark::RetryPolicy retry;
    bulwark::CircuitBreaker breaker("alloc-chain");
    bulwark::ChannelOptions guarded;
    guarded.breaker = &breaker;
    guarded.retry = &retry;
    for (const auto selection :
         {bulwark::Selection::priority, bulwark::Selection::round_robin,
          bulwark::Selection::health_based, bulwark::Selection::load_balanced,
          bulwark::Selection::least_cost}) {
        bulwark::FallbackChain<int(int)> chain(selection);
        chain.add(
            "a", [](int v) { return plus_one(v); }, guarded);
        chain.add("b", [](int v) { return plus_one(v); });
        chain.add("c", [](int v) { return plus_one(v); });
        int x = chain.execute(0).value();
        CHECK(allocations_during([&] {
                  for (int i = 0; i < 1000; ++i) {
                      x = chain.execute(x).value();
                  }
              }) == 0);
        CHECK(x == 1001);
    }
}

TEST_CASE("an adaptive limiter's admissions, samples and windows allocate nothing", "[alloc]") {
    using namespace std::chrono_literals;
    bulwark::ManualClock clock;
    bulwark::AdaptiveLimiterOptions o;
    o.window_samples = 10;  // 200 windows below, each moving the limit
    bulwark::AdaptiveLimiter limiter(o, clock);
    int x = limiter.execute([] { return plus_one(0); });
    CHECK(allocations_during([&] {
              for (int i = 0; i < 1000; ++i) {
                  x = limiter.execute([&] { return plus_one(x); });
                  auto permit = limiter.try_acquire();
                  clock.advance(1ms);
              }
          }) == 0);
    CHECK(x == 1001);
    CHECK(limiter.stats().windows >= 199);
}

TEST_CASE("a throttler's decisions, accepts and bucket rollovers allocate nothing", "[alloc]") {
    using namespace std::chrono_literals;
    bulwark::ManualClock clock;
    bulwark::ThrottlerOptions o;
    o.window = 10s;
    o.buckets = 10;
    bulwark::Throttler throttler(o, clock);
    (void)throttler.try_execute([] { return plus_one(0); });  // this thread's generator
    int ran = 0;
    CHECK(allocations_during([&] {
              for (int i = 0; i < 1000; ++i) {
                  auto outcome = throttler.try_execute([&] { return plus_one(++ran); });
                  // Two requests never accepted: p rises to about 1/3, and rejections draw.
                  const auto a = throttler.try_acquire();
                  const auto b = throttler.try_acquire();
                  (void)a;
                  (void)b;
                  clock.advance(50ms);
              }
          }) == 0);
    CHECK(ran > 0);
    CHECK(throttler.stats().rejected > 0);
}

TEST_CASE("registry lookups of existing keys allocate nothing", "[alloc]") {
    using namespace std::chrono_literals;
    bulwark::ManualClock clock;
    bulwark::RegistryOptions limits;
    limits.max_size = 100;
    limits.ttl = 10min;
    bulwark::Registry<bulwark::CircuitBreaker, bulwark::CircuitBreakerOptions> registry({}, limits,
                                                                                        clock);
    const std::string key = "host-a";
    (void)registry.get(key)->execute([] { return plus_one(0); });  // this thread's first call
    int x = 0;
    CHECK(allocations_during([&] {
              for (int i = 0; i < 1000; ++i) {
                  auto breaker = registry.get(key);
                  x = breaker->execute([&] { return plus_one(x); });
                  clock.advance(1ms);
              }
          }) == 0);
    CHECK(x == 1000);
}

// A retry whose call succeeds first time, against the bare call. Target: within 1.2x. The
// default policy counts every call (stats().calls): one per-thread counter store per call;
// count_calls = false leaves a first-try success nothing to write but its context.
#include <bulwark/retry.hpp>

#include "bench_main.hpp"

namespace {

BULWARK_NOINLINE int plus_one(int x) {
    return x + 1;
}

void BM_bare_call(benchmark::State& state) {
    int x = 0;
    for (auto _ : state) {
        x = plus_one(x);
        benchmark::DoNotOptimize(x);
    }
}

void BM_retry_first_try_success(benchmark::State& state) {
    static bulwark::RetryPolicy retry;
    int x = 0;
    for (auto _ : state) {
        x = retry.execute([&x] { return plus_one(x); });
        benchmark::DoNotOptimize(x);
    }
}

void BM_retry_uncounted_first_try_success(benchmark::State& state) {
    static bulwark::RetryPolicy retry([] {
        bulwark::RetryOptions o;
        o.count_calls = false;
        return o;
    }());
    int x = 0;
    for (auto _ : state) {
        x = retry.execute([&x] { return plus_one(x); });
        benchmark::DoNotOptimize(x);
    }
}

// A budget of each kind on the success path: record_call() and record_success() are virtual
// calls that bump per-thread counters (the token bucket and the quota also read their word,
// which stays unwritten while full).
template <class MakeBudget>
void retry_with_budget(benchmark::State& state, MakeBudget make) {
    static bulwark::RetryPolicy retry([&] {
        bulwark::RetryOptions o;
        o.budget = make();
        return o;
    }());
    int x = 0;
    for (auto _ : state) {
        x = retry.execute([&x] { return plus_one(x); });
        benchmark::DoNotOptimize(x);
    }
}

void BM_retry_with_tps_budget_first_try_success(benchmark::State& state) {
    retry_with_budget(state, [] { return bulwark::RetryBudget::shared(0.1, 10); });
}

void BM_retry_with_token_bucket_first_try_success(benchmark::State& state) {
    retry_with_budget(state, [] {
        return bulwark::TokenBucketRetryBudget::shared(bulwark::TokenBucketRetryBudgetOptions{});
    });
}

void BM_retry_with_quota_first_try_success(benchmark::State& state) {
    retry_with_budget(state, [] {
        return bulwark::QuotaRetryBudget::shared(bulwark::QuotaRetryBudgetOptions{});
    });
}

}  // namespace

BENCHMARK(BM_bare_call)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_retry_first_try_success)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_retry_uncounted_first_try_success)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_retry_with_tps_budget_first_try_success)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_retry_with_token_bucket_first_try_success)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_retry_with_quota_first_try_success)->Threads(1)->Threads(2)->UseRealTime();

int main(int argc, char** argv) {
    return bulwark_bench::run_main(argc, argv, {"BM_bare_call"});
}

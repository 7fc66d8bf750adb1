// What composition costs: pipeline(Noop, Noop, Noop).execute(f) against calling f directly.
// Target: within 1.2x of the bare call, with 1 and 2 threads.
#include <bulwark/core.hpp>

#include "bench_main.hpp"

namespace {

// Not inlined, like a real dependency call: the floor every policy is measured against.
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

void BM_pipeline_noop3_execute(benchmark::State& state) {
    auto p = bulwark::pipeline(bulwark::Noop{}, bulwark::Noop{}, bulwark::Noop{});
    int x = 0;
    for (auto _ : state) {
        x = p.execute([&x] { return plus_one(x); });
        benchmark::DoNotOptimize(x);
    }
}

void BM_pipeline_noop3_try_execute(benchmark::State& state) {
    auto p = bulwark::pipeline(bulwark::Noop{}, bulwark::Noop{}, bulwark::Noop{});
    int x = 0;
    for (auto _ : state) {
        auto outcome = p.try_execute([&x] { return plus_one(x); });
        x = *outcome;
        benchmark::DoNotOptimize(x);
    }
}

void BM_wrap_noop3(benchmark::State& state) {
    auto resilient = bulwark::wrap(plus_one, bulwark::Noop{}, bulwark::Noop{}, bulwark::Noop{});
    int x = 0;
    for (auto _ : state) {
        x = resilient(x);
        benchmark::DoNotOptimize(x);
    }
}

void BM_listeners_emit_nobody(benchmark::State& state) {
    static bulwark::Listeners<int> listeners;
    int x = 0;
    for (auto _ : state) {
        x = plus_one(x);
        listeners.emit_with([x] { return x; });
        benchmark::DoNotOptimize(x);
    }
}

}  // namespace

BENCHMARK(BM_bare_call)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_pipeline_noop3_execute)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_pipeline_noop3_try_execute)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_wrap_noop3)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_listeners_emit_nobody)->Threads(1)->Threads(2)->UseRealTime();

int main(int argc, char** argv) {
    return bulwark_bench::run_main(argc, argv, {"BM_bare_call"});
}

// A FallbackChain whose first channel delivers, against calling that channel directly, and a
// chain whose first channel's breaker is open (skipped without a call). A chain call is meant for
// network calls of milliseconds: it records one Attempt (two clock reads) and a few relaxed
// counters per channel tried; these figures show that cost, not a ratio to meet.
#include <stdexcept>

#include <bulwark/circuit_breaker.hpp>
#include <bulwark/fallback_chain.hpp>

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

// The chains are built once, before any benchmark thread uses them (configuration is not
// synchronized with execute).
struct Chains {
    bulwark::CircuitBreaker breaker{"bench-chain-open"};
    bulwark::FallbackChain<int(int)> priority;
    bulwark::FallbackChain<int(int)> open_first;

    Chains() {
        priority.add("first", plus_one);
        priority.add("second", plus_one);
        breaker.trip();
        bulwark::ChannelOptions guarded;
        guarded.breaker = &breaker;
        open_first.add("guarded", plus_one, guarded);
        open_first.add("backup", plus_one);
    }
};

Chains& chains() {
    static Chains c;
    return c;
}

void BM_chain_first_channel_delivers(benchmark::State& state) {
    auto& chain = chains().priority;
    int x = 0;
    for (auto _ : state) {
        x = chain.execute(x).value();
        benchmark::DoNotOptimize(x);
    }
}

void BM_chain_open_breaker_skipped(benchmark::State& state) {
    auto& chain = chains().open_first;
    int x = 0;
    for (auto _ : state) {
        x = chain.execute(x).value();
        benchmark::DoNotOptimize(x);
    }
}

}  // namespace

BENCHMARK(BM_bare_call)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_chain_first_channel_delivers)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_chain_open_breaker_skipped)->Threads(1)->Threads(2)->UseRealTime();

int main(int argc, char** argv) {
    chains();
    return bulwark_bench::run_main(argc, argv, {"BM_bare_call"});
}

// Keyed registries and the shared-memory breaker against the bare call: the lookup of an existing
// key (Registry, CircuitBreakerRegistry, and the mutex + unordered_map users would otherwise
// write), and SharedCircuitBreaker's success path beside CircuitBreaker's, at 1 and 2 threads.
#include <memory>
#include <mutex>
#include <string>
#include <unistd.h>
#include <unordered_map>
#include <vector>

#include <bulwark/circuit_breaker.hpp>
#include <bulwark/circuit_breaker_registry.hpp>
#include <bulwark/registry.hpp>
#include <bulwark/shared_circuit_breaker.hpp>

#include "bench_main.hpp"

namespace {

using namespace std::chrono_literals;

BULWARK_NOINLINE int plus_one(int x) {
    return x + 1;
}

using BreakerRegistry = bulwark::Registry<bulwark::CircuitBreaker, bulwark::CircuitBreakerOptions>;

constexpr int key_count = 1000;

std::string key(int i) {
    return "tenant-" + std::to_string(i);
}

// Registries holding key_count breakers; unbounded, and bounded (the lookup then stores the
// last-use time).
BreakerRegistry& registry(bool bounded) {
    static BreakerRegistry* const plain = [] {
        auto* r = new BreakerRegistry();
        for (int i = 0; i < key_count; ++i) {
            (void)r->get(key(i));
        }
        return r;
    }();
    static BreakerRegistry* const limited = [] {
        bulwark::RegistryOptions limits;
        limits.max_size = 2 * key_count;
        limits.ttl = 10min;
        auto* r = new BreakerRegistry({}, limits);
        for (int i = 0; i < key_count; ++i) {
            (void)r->get(key(i));
        }
        return r;
    }();
    return bounded ? *limited : *plain;
}

// What users write without a registry type: a mutex around an unordered_map of shared_ptr.
class NaiveRegistry {
public:
    std::shared_ptr<bulwark::CircuitBreaker> get(const std::string& k) {
        std::lock_guard<std::mutex> lock(mutex_);
        auto& slot = map_[k];
        if (!slot) {
            slot = std::make_shared<bulwark::CircuitBreaker>(k);
        }
        return slot;
    }

private:
    std::mutex mutex_;
    std::unordered_map<std::string, std::shared_ptr<bulwark::CircuitBreaker>> map_;
};

void BM_bare_call(benchmark::State& state) {
    int x = 0;
    for (auto _ : state) {
        x = plus_one(x);
        benchmark::DoNotOptimize(x);
    }
}

// Each thread looks up its own key (the common case: many keys, spread over the shards).
void BM_registry_get(benchmark::State& state) {
    BreakerRegistry& r = registry(false);
    const std::string k = key(state.thread_index() * 7);
    for (auto _ : state) {
        auto handle = r.get(k);
        benchmark::DoNotOptimize(handle.get());
    }
}

void BM_registry_get_bounded(benchmark::State& state) {
    BreakerRegistry& r = registry(true);
    const std::string k = key(state.thread_index() * 7);
    for (auto _ : state) {
        auto handle = r.get(k);
        benchmark::DoNotOptimize(handle.get());
    }
}

// Every thread on one key: the shard's lock word and the handle's count are shared.
void BM_registry_get_same_key(benchmark::State& state) {
    BreakerRegistry& r = registry(false);
    const std::string k = key(1);
    for (auto _ : state) {
        auto handle = r.get(k);
        benchmark::DoNotOptimize(handle.get());
    }
}

void BM_circuit_breaker_registry_get(benchmark::State& state) {
    static bulwark::CircuitBreakerRegistry* const r = [] {
        auto* reg = new bulwark::CircuitBreakerRegistry();
        for (int i = 0; i < key_count; ++i) {
            (void)reg->get(key(i));
        }
        return reg;
    }();
    const std::string k = key(state.thread_index() * 7);
    for (auto _ : state) {
        benchmark::DoNotOptimize(&r->get(k));
    }
}

void BM_naive_mutex_registry_get(benchmark::State& state) {
    static NaiveRegistry* const r = [] {
        auto* reg = new NaiveRegistry();
        for (int i = 0; i < key_count; ++i) {
            (void)reg->get(key(i));
        }
        return reg;
    }();
    const std::string k = key(state.thread_index() * 7);
    for (auto _ : state) {
        auto handle = r->get(k);
        benchmark::DoNotOptimize(handle.get());
    }
}

void BM_breaker_two_step(benchmark::State& state) {
    static bulwark::CircuitBreaker breaker("bench-local");
    int x = 0;
    for (auto _ : state) {
        auto permit = breaker.try_acquire();
        if (permit) {
            x = plus_one(x);
            permit.record_success();
        }
        benchmark::DoNotOptimize(x);
    }
}

void BM_shared_breaker_two_step(benchmark::State& state) {
    static bulwark::SharedCircuitBreaker* const breaker = [] {
        const std::string name = "/bulwark-bench-" + std::to_string(::getpid());
        bulwark::SharedCircuitBreaker::unlink(name);
        auto* b = new bulwark::SharedCircuitBreaker(name, {});
        bulwark::SharedCircuitBreaker::unlink(name);  // the mapping stays; nothing is left behind
        return b;
    }();
    int x = 0;
    for (auto _ : state) {
        auto permit = breaker->try_acquire();
        if (permit) {
            x = plus_one(x);
            permit.record_success();
        }
        benchmark::DoNotOptimize(x);
    }
}

}  // namespace

BENCHMARK(BM_bare_call)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_registry_get)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_registry_get_bounded)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_registry_get_same_key)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_circuit_breaker_registry_get)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_naive_mutex_registry_get)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_breaker_two_step)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_shared_breaker_two_step)->Threads(1)->Threads(2)->UseRealTime();

int main(int argc, char** argv) {
    return bulwark_bench::run_main(argc, argv, {"BM_bare_call", "BM_naive_mutex_registry_get"});
}

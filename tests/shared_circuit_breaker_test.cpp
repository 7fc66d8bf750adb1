#include <atomic>
#include <cstdint>
#include <cstring>
#include <fcntl.h>
#include <new>
#include <sched.h>
#include <signal.h>
#include <stdexcept>
#include <string>
#include <sys/mman.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <bulwark/registry.hpp>
#include <bulwark/shared_circuit_breaker.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using bulwark::CircuitState;
using bulwark::SharedCircuitBreaker;
using bulwark::SharedCircuitBreakerOptions;

// fork() in a ThreadSanitizer build is unreliable: the forked-process cases run outside TSan, and
// the threaded case below covers the same block from several mappings under it.
#if defined(__SANITIZE_THREAD__)
#define BULWARK_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define BULWARK_TEST_TSAN 1
#endif
#endif
#ifndef BULWARK_TEST_TSAN
#define BULWARK_TEST_TSAN 0
#endif

namespace {

// What the processes of a test share besides the breaker: the time, barriers, results.
struct SharedArea {
    std::atomic<std::int64_t> clock_ns{std::chrono::nanoseconds(24h).count()};
    std::atomic<int> arrived{0};
    std::atomic<int> flag{0};
    std::atomic<int> counts[8] = {};
};

// Anonymous MAP_SHARED memory, created before fork() so every child sees the same bytes.
class Shared {
public:
    Shared() {
        void* p = ::mmap(nullptr, sizeof(SharedArea), PROT_READ | PROT_WRITE,
                         MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        REQUIRE(p != MAP_FAILED);
        area_ = ::new (p) SharedArea();
    }
    ~Shared() { ::munmap(area_, sizeof(SharedArea)); }
    Shared(const Shared&) = delete;
    Shared& operator=(const Shared&) = delete;
    SharedArea& operator*() const { return *area_; }
    SharedArea* operator->() const { return area_; }

private:
    SharedArea* area_;
};

// A manual clock whose time lives in shared memory: a per-process ManualClock would not move
// in the other processes. Tests advance it; nothing sleeps.
class SharedClock final : public bulwark::Clock {
public:
    explicit SharedClock(std::atomic<std::int64_t>& ns) : ns_(&ns) {}
    bulwark::TimePoint now() const noexcept override {
        return bulwark::TimePoint{bulwark::Duration{ns_->load(std::memory_order_acquire)}};
    }
    void sleep_for(bulwark::Duration d) override { advance(d); }
    void advance(bulwark::Duration d) {
        if (d > bulwark::Duration::zero()) {
            ns_->fetch_add(d.count(), std::memory_order_acq_rel);
        }
    }

private:
    std::atomic<std::int64_t>* ns_;
};

std::string unique_name() {
    static int n = 0;
    return "/bulwark-test-" + std::to_string(::getpid()) + "-" + std::to_string(++n);
}

// Unlinks the block at both ends of a test.
struct BlockName {
    BlockName() : name(unique_name()) { SharedCircuitBreaker::unlink(name); }
    ~BlockName() { SharedCircuitBreaker::unlink(name); }
    BlockName(const BlockName&) = delete;
    BlockName& operator=(const BlockName&) = delete;
    std::string name;
};

SharedCircuitBreakerOptions ratio_options() {
    SharedCircuitBreakerOptions o;
    o.failure_threshold = 0;
    o.failure_ratio = 0.5;
    o.minimum_calls = 10;
    o.window_size = 100;
    o.break_duration = 60s;
    o.probe_lease = 30s;
    return o;
}

// Every process arrives; returns once `total` have. Bounded so a dead peer cannot hang a child.
bool barrier(std::atomic<int>& arrived, int total) {
    arrived.fetch_add(1);
    for (long spin = 0; spin < 200000000L; ++spin) {
        if (arrived.load() >= total) {
            return true;
        }
        ::sched_yield();
    }
    return false;
}

#if !BULWARK_TEST_TSAN
// Runs f in a child process, which leaves with _exit(f()) (no Catch2, no destructors).
template <class F>
pid_t spawn(F f) {
    const pid_t pid = ::fork();
    if (pid == 0) {
        int code = 100;
        try {
            code = f();
        } catch (...) {
            code = 101;
        }
        ::_exit(code);
    }
    return pid;
}

int exit_code(pid_t pid) {
    int status = 0;
    if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) {
        return -1;
    }
    return WEXITSTATUS(status);
}
#endif

}  // namespace

TEST_CASE("shared breaker refuses invalid options naming the field", "[shared_breaker]") {
    SharedCircuitBreakerOptions o;
    o.window_size = 0;
    CHECK_THROWS_WITH(o.validate(), Catch::Contains("SharedCircuitBreakerOptions.window_size") &&
                                        Catch::Contains("0"));
    o = {};
    o.failure_ratio = 1.5;
    CHECK_THROWS_WITH(o.validate(), Catch::Contains("failure_ratio") && Catch::Contains("1.5"));
    o = {};
    o.probe_lease = -1s;
    CHECK_THROWS_WITH(o.validate(), Catch::Contains("probe_lease"));
    o = {};
    o.minimum_calls = 200;
    CHECK_THROWS_WITH(o.validate(), Catch::Contains("minimum_calls") && Catch::Contains("200"));
    CHECK_THROWS_AS(SharedCircuitBreaker("/a/b", {}), std::invalid_argument);
    CHECK_THROWS_AS(SharedCircuitBreaker("", {}), std::invalid_argument);
}

TEST_CASE("shared breaker opens, probes and closes like a breaker", "[shared_breaker]") {
    Shared area;
    SharedClock clock(area->clock_ns);
    BlockName block;
    SharedCircuitBreakerOptions o;
    o.failure_threshold = 3;
    o.failure_ratio = 0.0;
    o.break_duration = 10s;
    o.half_open_calls = 2;
    SharedCircuitBreaker b(block.name, o, clock);
    CHECK(b.created());
    CHECK(b.execute([] { return 4; }) == 4);
    for (int i = 0; i < 3; ++i) {
        CHECK_THROWS_AS(b.execute([]() -> int { throw std::runtime_error("down"); }),
                        std::runtime_error);
    }
    CHECK(b.state() == CircuitState::open);
    auto rejected = b.try_acquire();
    CHECK_FALSE(rejected);
    CHECK(rejected.retry_after() == 10s);
    CHECK_THROWS_AS(b.execute([] { return 1; }), bulwark::CircuitOpenError);

    clock.advance(10s);
    CHECK(b.state() == CircuitState::half_open);
    auto p1 = b.try_acquire();
    auto p2 = b.try_acquire();
    REQUIRE(p1);
    REQUIRE(p2);
    CHECK(p1.probe());
    CHECK_FALSE(b.try_acquire());
    p1.record_failure();  // one probe fails: open again
    CHECK(b.state() == CircuitState::open);
    p2.record_success();  // stale: counts for nothing
    CHECK(b.state() == CircuitState::open);

    clock.advance(10s);
    auto q1 = b.try_acquire();
    auto q2 = b.try_acquire();
    q1.record_success();
    CHECK(b.state() == CircuitState::half_open);
    q2.record_success();
    CHECK(b.state() == CircuitState::closed);
    const auto s = b.stats();
    CHECK(s.window_calls == 0);  // closing empties the window
    CHECK(s.opened == 2);
    CHECK(s.generation == 5);  // open, half-open, open, half-open, closed
}

TEST_CASE("shared breaker opens on the failure rate over its window", "[shared_breaker]") {
    Shared area;
    SharedClock clock(area->clock_ns);
    BlockName block;
    SharedCircuitBreaker b(block.name, ratio_options(), clock);
    for (int i = 0; i < 100; ++i) {
        b.try_acquire().record_success();
    }
    int failures = 0;
    while (b.state() == CircuitState::closed && failures < 1000) {
        b.try_acquire().record_failure();
        ++failures;
    }
    CHECK(failures == 50);  // 50 failures among the last 100 calls
    CHECK(b.state() == CircuitState::open);
}

TEST_CASE("shared breaker refuses a corrupt or mismatched block with a clear error",
          "[shared_breaker]") {
    Shared area;
    SharedClock clock(area->clock_ns);
    BlockName block;
    SharedCircuitBreakerOptions o = ratio_options();
    {
        SharedCircuitBreaker creator(block.name, o, clock);
        SharedCircuitBreaker attached(block.name, o, clock);
        CHECK_FALSE(attached.created());
        creator.trip();
        CHECK(attached.state() == CircuitState::open);

        SharedCircuitBreakerOptions other = o;
        other.half_open_calls = 4;
        CHECK_THROWS_WITH(SharedCircuitBreaker(block.name, other, clock),
                          Catch::Contains("half_open_calls = 1") && Catch::Contains("passes 4"));
        other = o;
        other.window_size = 50;
        CHECK_THROWS_AS(SharedCircuitBreaker(block.name, other, clock), bulwark::SharedBlockError);
        CHECK_THROWS_WITH(SharedCircuitBreaker(block.name, other, clock), Catch::Contains("bytes"));
        other = o;
        other.break_duration = 5s;
        CHECK_THROWS_WITH(SharedCircuitBreaker(block.name, other, clock),
                          Catch::Contains("break_duration"));
    }
    // Corrupt the block behind the breaker's back.
    const int fd = ::shm_open(block.name.c_str(), O_RDWR, 0600);
    REQUIRE(fd >= 0);
    const std::size_t size = bulwark::detail::shared_breaker_block_size(o.window_size);
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    REQUIRE(p != MAP_FAILED);
    auto* bytes = static_cast<unsigned char*>(p);
    bytes[8] = 77;  // the version
    CHECK_THROWS_WITH(SharedCircuitBreaker(block.name, o, clock), Catch::Contains("version 77"));
    std::memset(bytes, 0x5a, 8);  // the magic
    CHECK_THROWS_WITH(SharedCircuitBreaker(block.name, o, clock), Catch::Contains("magic"));
    ::munmap(p, size);
    REQUIRE(::ftruncate(fd, 16) == 0);
    ::close(fd);
    CHECK_THROWS_WITH(SharedCircuitBreaker(block.name, o, clock), Catch::Contains("has 16 bytes"));

    CHECK(SharedCircuitBreaker::unlink(block.name));
    CHECK_FALSE(SharedCircuitBreaker::unlink(block.name));
    SharedCircuitBreaker fresh(block.name, o, clock);
    CHECK(fresh.created());
    CHECK(fresh.state() == CircuitState::closed);
}

TEST_CASE("shared breaker shared by four threads through their own mappings", "[shared_breaker]") {
    Shared area;
    SharedClock clock(area->clock_ns);
    BlockName block;
    SharedCircuitBreakerOptions o = ratio_options();
    o.half_open_calls = 3;
    SharedCircuitBreaker main_view(block.name, o, clock);
    std::vector<int> codes(4, -1);
    std::vector<int> probes(4, 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            SharedCircuitBreaker b(block.name, o, clock);
            int code = 0;
            for (int i = 0; i < 5000; ++i) {
                auto p = b.try_acquire();
                if (!p) {
                    code = 1;
                    break;
                }
                p.record_success();
            }
            if (!barrier(area->arrived, 4)) {
                code = 2;
            }
            if (t == 0) {
                for (int i = 0; i < 200 && b.state() == CircuitState::closed; ++i) {
                    b.try_acquire().record_failure();
                }
                area->flag.store(b.state() == CircuitState::open ? 1 : 2);
            } else {
                while (area->flag.load() == 0) {
                    std::this_thread::yield();
                }
                if (b.try_acquire()) {
                    code = 3;  // admitted after another thread opened it
                }
            }
            if (!barrier(area->arrived, 8)) {
                code = 4;
            }
            if (t == 0) {
                clock.advance(60s);
            }
            if (!barrier(area->arrived, 12)) {
                code = 5;
            }
            std::vector<SharedCircuitBreaker::Permit> held;
            for (int i = 0; i < 100; ++i) {
                auto p = b.try_acquire();
                if (p) {
                    held.push_back(std::move(p));
                }
            }
            probes[static_cast<std::size_t>(t)] = static_cast<int>(held.size());
            if (!barrier(area->arrived, 16)) {
                code = 6;
            }
            for (auto& p : held) {
                p.record_success();
            }
            codes[static_cast<std::size_t>(t)] = code;
        });
    }
    for (auto& th : threads) {
        th.join();
    }
    for (int c : codes) {
        CHECK(c == 0);
    }
    CHECK(area->flag.load() == 1);
    CHECK(probes[0] + probes[1] + probes[2] + probes[3] == 3);
    CHECK(main_view.state() == CircuitState::closed);
    CHECK(main_view.stats().calls >= 20000);
}

TEST_CASE("shared breakers in a registry: keys are block names, an open one is kept",
          "[shared_breaker][registry]") {
    Shared area;
    SharedClock clock(area->clock_ns);
    BlockName a;
    BlockName b;
    bulwark::RegistryOptions limits;
    limits.ttl = 10s;
    bulwark::Registry<SharedCircuitBreaker, SharedCircuitBreakerOptions> registry(ratio_options(),
                                                                                  limits, clock);
    registry.get(a.name)->trip();
    (void)registry.get(b.name);
    clock.advance(11s);
    CHECK(registry.evict_expired() == 1);
    REQUIRE(registry.keys() == std::vector<std::string>{a.name});
    // Another process (here: another object) still sees the block of the evicted key.
    SharedCircuitBreaker again(b.name, ratio_options(), clock);
    CHECK_FALSE(again.created());
}

#if !BULWARK_TEST_TSAN

TEST_CASE("shared breaker: failures in one process open it for four processes",
          "[shared_breaker][fork]") {
    Shared area;
    SharedClock clock(area->clock_ns);
    BlockName block;
    const SharedCircuitBreakerOptions o = ratio_options();
    SharedCircuitBreaker parent(block.name, o, clock);
    std::vector<pid_t> children;
    for (int c = 0; c < 4; ++c) {
        children.push_back(spawn([&, c] {
            SharedCircuitBreaker b(block.name, o, clock);  // attaches
            if (b.created()) {
                return 10;
            }
            for (int i = 0; i < 20000; ++i) {
                auto p = b.try_acquire();
                if (!p) {
                    return 1;
                }
                p.record_success();
            }
            if (!barrier(area->arrived, 4)) {
                return 2;
            }
            if (c == 0) {
                int failed = 0;
                while (b.state() == CircuitState::closed && failed < 1000) {
                    b.try_acquire().record_failure();
                    ++failed;
                }
                area->counts[0].store(failed);
                area->flag.store(b.state() == CircuitState::open ? 1 : 2);
                return b.state() == CircuitState::open ? 0 : 3;
            }
            for (long spin = 0; area->flag.load() == 0 && spin < 200000000L; ++spin) {
                ::sched_yield();
            }
            if (area->flag.load() != 1) {
                return 4;
            }
            return b.try_acquire() ? 5 : 0;  // admitted after another process opened it
        }));
    }
    for (pid_t pid : children) {
        CHECK(exit_code(pid) == 0);
    }
    CHECK(parent.state() == CircuitState::open);
    const auto s = parent.stats();
    CHECK(area->counts[0].load() == 50);
    CHECK(s.failures == 50);
    CHECK(s.calls == 80000 + 50);  // every success of every process counted once
    CHECK(s.rejected == 3);
}

TEST_CASE("shared breaker: half-open admits exactly half_open_calls probes across processes",
          "[shared_breaker][fork]") {
    Shared area;
    SharedClock clock(area->clock_ns);
    BlockName block;
    SharedCircuitBreakerOptions o = ratio_options();
    o.half_open_calls = 3;
    SharedCircuitBreaker parent(block.name, o, clock);
    parent.trip();
    clock.advance(60s);
    std::vector<pid_t> children;
    for (int c = 0; c < 4; ++c) {
        children.push_back(spawn([&, c] {
            SharedCircuitBreaker b(block.name, o, clock);
            if (!barrier(area->arrived, 4)) {
                return 2;
            }
            // Leaked on purpose: _exit() skips destructors, as a crash would.
            auto* held = new std::vector<SharedCircuitBreaker::Permit>();
            for (int i = 0; i < 500; ++i) {
                auto p = b.try_acquire();
                if (p) {
                    held->push_back(std::move(p));
                }
            }
            area->counts[c].store(static_cast<int>(held->size()));
            return barrier(area->arrived, 8) ? 0 : 3;
        }));
    }
    for (pid_t pid : children) {
        CHECK(exit_code(pid) == 0);
    }
    int admitted = 0;
    for (int c = 0; c < 4; ++c) {
        admitted += area->counts[c].load();
    }
    CHECK(admitted == 3);
    // The probes died with their processes: rejected until the lease ends, then reopened.
    CHECK_FALSE(parent.try_acquire());
    CHECK(parent.state() == CircuitState::half_open);
    clock.advance(30s);
    CHECK_FALSE(parent.try_acquire());
    CHECK(parent.state() == CircuitState::open);
    CHECK(parent.stats().expired_probes == 1);
    clock.advance(60s);
    std::vector<SharedCircuitBreaker::Permit> probes;
    for (int i = 0; i < 3; ++i) {
        probes.push_back(parent.try_acquire());
        REQUIRE(probes.back());
    }
    for (auto& p : probes) {
        p.record_success();
    }
    CHECK(parent.state() == CircuitState::closed);
}

TEST_CASE("shared breaker: a SIGKILLed probe holder does not wedge it", "[shared_breaker][fork]") {
    Shared area;
    SharedClock clock(area->clock_ns);
    BlockName block;
    const SharedCircuitBreakerOptions o = ratio_options();
    SharedCircuitBreaker parent(block.name, o, clock);
    parent.trip();
    clock.advance(60s);
    int to_parent[2];
    int to_child[2];
    REQUIRE(::pipe(to_parent) == 0);
    REQUIRE(::pipe(to_child) == 0);
    const pid_t pid = spawn([&] {
        SharedCircuitBreaker b(block.name, o, clock);
        auto probe = b.try_acquire();
        const char admitted = probe ? 'y' : 'n';
        if (::write(to_parent[1], &admitted, 1) != 1) {
            return 1;
        }
        char never = 0;
        return static_cast<int>(::read(to_child[0], &never, 1));  // blocks until killed
    });
    char admitted = 0;
    REQUIRE(::read(to_parent[0], &admitted, 1) == 1);
    CHECK(admitted == 'y');
    REQUIRE(::kill(pid, SIGKILL) == 0);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status));
    for (int fd : {to_parent[0], to_parent[1], to_child[0], to_child[1]}) {
        ::close(fd);
    }

    CHECK_FALSE(parent.try_acquire());  // the dead process still holds the only probe
    clock.advance(29s);
    CHECK_FALSE(parent.try_acquire());
    CHECK(parent.state() == CircuitState::half_open);
    clock.advance(1s);  // the lease is over
    CHECK_FALSE(parent.try_acquire());
    CHECK(parent.state() == CircuitState::open);
    clock.advance(60s);
    auto probe = parent.try_acquire();
    REQUIRE(probe);
    probe.record_success();
    CHECK(parent.state() == CircuitState::closed);
}

#endif

// SharedCircuitBreaker: a breaker whose state block lives in POSIX shared memory, for pre-forked
// workers. SPDX-License-Identifier: MIT
#ifndef BULWARK_SHARED_CIRCUIT_BREAKER_HPP
#define BULWARK_SHARED_CIRCUIT_BREAKER_HPP

#if !defined(__unix__) && !defined(__APPLE__)
#error "bulwark/shared_circuit_breaker.hpp needs POSIX shared memory (shm_open, mmap)"
#endif

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <new>
#include <sched.h>
#include <stdexcept>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <system_error>
#include <type_traits>
#include <unistd.h>
#include <utility>

#include <bulwark/circuit_breaker_options.hpp>
#include <bulwark/clock.hpp>
#include <bulwark/config.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/errors.hpp>
#include <bulwark/time.hpp>

namespace bulwark {

// Options of a SharedCircuitBreaker. Every process attaching to one block must pass the same
// options (the block records them and refuses a mismatch). Every field has a default;
// validate() throws std::invalid_argument naming the field and the value.
//   bulwark::SharedCircuitBreakerOptions o;
//   o.failure_ratio = 0.5; o.window_size = 100; o.probe_lease = std::chrono::seconds(10);
struct SharedCircuitBreakerOptions {
    static constexpr std::uint32_t max_window_size = 4096;
    static constexpr std::uint32_t max_half_open_calls = 1024;
    // Consecutive failures (in all processes together) that open it. 0 = rule off.
    std::uint32_t failure_threshold = 5;
    // Failure rate over the last window_size calls (of all processes) that opens it, in [0, 1].
    // 0 = rule off. At least one of the two rules must be on.
    double failure_ratio = 0.5;
    // No rate decision before the window holds this many calls. In [1, window_size].
    std::uint32_t minimum_calls = 10;
    // The count window, in calls, kept in the shared block. In [1, 4096].
    std::uint32_t window_size = 100;
    // How long it stays open before admitting probes. > 0.
    Duration break_duration = std::chrono::seconds(60);
    // Probes admitted in half-open, across all processes; it closes when all succeed. In
    // [1, 1024].
    std::uint32_t half_open_calls = 1;
    // Half-open whose probes have not all reported within this reopens (TransitionReason::
    // probe_expired), so a process that crashed holding a probe cannot wedge the breaker. > 0.
    Duration probe_lease = std::chrono::seconds(30);

    void validate() const {
        if (!(failure_ratio >= 0.0 && failure_ratio <= 1.0)) {
            detail::throw_invalid_option("SharedCircuitBreakerOptions.failure_ratio",
                                         "must be in [0, 1]", detail::format_number(failure_ratio));
        }
        if (failure_threshold == 0 && failure_ratio == 0.0) {
            detail::throw_invalid_option(
                "SharedCircuitBreakerOptions.failure_threshold and failure_ratio",
                "must not both be 0: the breaker could never open", "0 and 0");
        }
        if (window_size == 0 || window_size > max_window_size) {
            detail::throw_invalid_option("SharedCircuitBreakerOptions.window_size",
                                         "must be in [1, 4096]", std::to_string(window_size));
        }
        if (minimum_calls == 0 || minimum_calls > window_size) {
            detail::throw_invalid_option("SharedCircuitBreakerOptions.minimum_calls",
                                         "must be in [1, window_size]",
                                         std::to_string(minimum_calls));
        }
        if (break_duration <= Duration::zero()) {
            detail::throw_invalid_option("SharedCircuitBreakerOptions.break_duration",
                                         "must be > 0", detail::format_duration(break_duration));
        }
        if (half_open_calls == 0 || half_open_calls > max_half_open_calls) {
            detail::throw_invalid_option("SharedCircuitBreakerOptions.half_open_calls",
                                         "must be in [1, 1024]", std::to_string(half_open_calls));
        }
        if (probe_lease <= Duration::zero()) {
            detail::throw_invalid_option("SharedCircuitBreakerOptions.probe_lease", "must be > 0",
                                         detail::format_duration(probe_lease));
        }
    }
};

// The shared block could not be created or attached: it is corrupt, of another version, or was
// created with other options. what() says which and what to do.
class SharedBlockError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct SharedCircuitBreakerStats {
    CircuitState state = CircuitState::closed;
    std::uint64_t generation = 0;      // transitions so far, by any process
    std::uint64_t calls = 0;           // results recorded while closed, all processes
    std::uint64_t failures = 0;        // failures recorded while closed or half-open
    std::uint64_t rejected = 0;        // calls refused
    std::uint64_t opened = 0;          // times it opened (including failed and expired probes)
    std::uint64_t expired_probes = 0;  // half-open periods abandoned at the probe lease
    std::uint32_t window_calls = 0;    // calls in the current window (counted on demand)
    std::uint32_t window_failures = 0;
};

namespace detail {

// Process-shared atomics must be lock-free: a lock-based std::atomic keeps its lock in a
// process-local table, which another process never sees.
static_assert(std::atomic<std::uint64_t>::is_always_lock_free,
              "SharedCircuitBreaker needs lock-free 64-bit atomics for process-shared state");
static_assert(std::atomic<std::int64_t>::is_always_lock_free,
              "SharedCircuitBreaker needs lock-free 64-bit atomics for process-shared state");
static_assert(std::atomic<std::uint32_t>::is_always_lock_free,
              "SharedCircuitBreaker needs lock-free 32-bit atomics for process-shared state");

inline constexpr std::uint64_t shared_breaker_magic = 0x4b52425f4b525742ULL;  // "BWRK_BRK"
inline constexpr std::uint32_t shared_breaker_version = 1;

// The block: this header, then window_size 32-bit slots. Fixed layout, no pointers, only
// lock-free atomics and plain fields written once before `magic` is published.
// NOLINTNEXTLINE(clang-analyzer-optin.performance.Padding): cache lines kept apart on purpose
struct SharedBreakerHeader {
    // Written last by the creator (release); attachers wait for it (acquire).
    std::atomic<std::uint64_t> magic{0};
    std::uint32_t version = 0;
    std::uint32_t header_size = 0;
    std::uint64_t block_size = 0;
    // The options the block was created with.
    std::uint32_t failure_threshold = 0;
    std::uint32_t minimum_calls = 0;
    std::uint32_t window_size = 0;
    std::uint32_t half_open_calls = 0;
    std::uint64_t failure_ratio_bits = 0;
    std::int64_t break_ns = 0;
    std::int64_t lease_ns = 0;
    // The creator's clock reading at creation: the origin of the deadlines in `state`.
    std::int64_t epoch_ns = 0;
    // deadline in ms since epoch_ns (40 bits) << 24 | generation (22 bits) << 2 | state (0
    // closed, 1 open, 2 half-open). The deadline is the end of the break while open and the end
    // of the probe lease while half-open. Every transition is one CAS of the whole word, so
    // exactly one process makes each, and a state never appears without its deadline.
    alignas(cache_line_size) std::atomic<std::uint64_t> state{0};
    // Half-open bookkeeping: probes admitted << 48 | probes succeeded << 32 | generation (low
    // 32 bits). A generation that does not match the state's means a transition in progress
    // (or a stale probe), so nothing counts against another half-open period.
    std::atomic<std::uint64_t> half{0};
    // Closed-path counters: the only words a success writes (with its slot).
    alignas(cache_line_size) std::atomic<std::uint64_t> position{0};
    std::atomic<std::uint64_t> consecutive_failures{0};
    alignas(cache_line_size) std::atomic<std::uint64_t> failures{0};
    std::atomic<std::uint64_t> rejected{0};
    std::atomic<std::uint64_t> opened{0};
    std::atomic<std::uint64_t> expired_probes{0};
};

inline std::size_t shared_breaker_block_size(std::uint32_t window_size) noexcept {
    return sizeof(SharedBreakerHeader) + sizeof(std::atomic<std::uint32_t>) * window_size;
}

}  // namespace detail

// A circuit breaker whose state is shared by every process on the host that opens the same
// name: pre-forked workers see one breaker, so one worker's failures open it for all and
// half-open admits half_open_calls probes in total.
//   bulwark::SharedCircuitBreaker breaker("/payments-breaker", options);  // create or attach
//   auto permit = breaker.try_acquire();
//   if (permit) { call(); permit.record_success(); }                        // or execute(f)
//   bulwark::SharedCircuitBreaker::unlink("/payments-breaker");             // at deployment end
// The state block is POSIX shared memory (shm_open + mmap) holding only lock-free atomics; no
// lock is ever held across processes, so a crashed process cannot leave one held, and a probe
// it held expires after probe_lease. Times are the clock's now() in nanoseconds: every process
// must use a clock with one host-wide timeline (SteadyClock: CLOCK_MONOTONIC on Linux).
// Thread-safe and process-safe. The closed path is one atomic load to admit, and a fetch_add, a
// store and a load to record a success: no lock, no syscall, no clock read, no allocation.
// Failures scan the window (window_size loads) to decide on the rate. Optional header, POSIX
// only; not in bulwark.hpp.
class SharedCircuitBreaker {
public:
    // The right to make one call. Movable RAII: destroyed without a result, it counts as a
    // failure (a probe slot never leaks within a live process).
    // Not thread-safe (one permit belongs to one call).
    class [[nodiscard]] Permit {
    public:
        Permit() noexcept = default;
        Permit(Permit&& other) noexcept { take(other); }
        Permit& operator=(Permit&& other) noexcept {
            if (this != &other) {
                abandon();
                take(other);
            }
            return *this;
        }
        Permit(const Permit&) = delete;
        Permit& operator=(const Permit&) = delete;
        ~Permit() { abandon(); }

        explicit operator bool() const noexcept { return admitted_; }
        bool admitted() const noexcept { return admitted_; }
        bool probe() const noexcept { return probe_; }
        // For a rejected permit: time until probes may be admitted (zero if unknown).
        Duration retry_after() const noexcept { return retry_after_; }

        void record_success() { finish(true); }
        void record_failure() { finish(false); }

    private:
        friend class SharedCircuitBreaker;

        void take(Permit& other) noexcept {
            breaker_ = other.breaker_;
            word_ = other.word_;
            retry_after_ = other.retry_after_;
            admitted_ = other.admitted_;
            probe_ = other.probe_;
            pending_ = other.pending_;
            other.pending_ = false;
        }

        void finish(bool success) {
            if (!pending_) {
                detail::throw_logic_error(
                    admitted_ ? "SharedCircuitBreaker::Permit: the result was already recorded"
                              : "SharedCircuitBreaker::Permit: the call was rejected; there is "
                                "no result to record");
            }
            pending_ = false;
            breaker_->on_result(word_, probe_, success);
        }

        void abandon() noexcept {
            if (pending_) {
                pending_ = false;
                breaker_->on_result(word_, probe_, false);
            }
        }

        SharedCircuitBreaker* breaker_ = nullptr;
        std::uint64_t word_ = 0;
        Duration retry_after_{0};
        bool admitted_ = false;
        bool probe_ = false;
        bool pending_ = false;
    };

    // Creates the block `name` ("/name"; a leading '/' is added if missing) or attaches to it.
    // Throws std::invalid_argument for invalid options or name, SharedBlockError for a block
    // that is corrupt, of another version, or created with other options, and std::system_error
    // when shm_open/ftruncate/mmap fail. The clock must outlive the breaker.
    SharedCircuitBreaker(std::string name, SharedCircuitBreakerOptions options,
                         Clock& clock = default_clock())
        : name_(normalize(std::move(name))),
          source_(std::make_shared<const std::string>(name_)),
          options_((options.validate(), options)),
          clock_(&clock),
          size_(detail::shared_breaker_block_size(options_.window_size)) {
        map_block();
    }

    SharedCircuitBreaker(const SharedCircuitBreaker&) = delete;
    SharedCircuitBreaker& operator=(const SharedCircuitBreaker&) = delete;
    ~SharedCircuitBreaker() { ::munmap(block_, size_); }

    // Removes the name: processes attached keep their mapping; the next constructor creates a
    // fresh block. False if there was none. Throws std::system_error for other errors.
    static bool unlink(const std::string& name) {
        const std::string n = normalize(name);
        if (::shm_unlink(n.c_str()) == 0) {
            return true;
        }
        if (errno == ENOENT) {
            return false;
        }
        throw std::system_error(errno, std::generic_category(),
                                "bulwark::SharedCircuitBreaker::unlink(\"" + n + "\")");
    }

    const std::string& name() const noexcept { return name_; }
    const SharedCircuitBreakerOptions& options() const noexcept { return options_; }
    // True if this object created the block (false: it attached to an existing one).
    bool created() const noexcept { return created_; }

    // The current state. An open breaker whose break is over reports half_open; the transition
    // happens at the next call.
    CircuitState state() const noexcept {
        const std::uint64_t w = block_->state.load(std::memory_order_acquire);
        const CircuitState s = state_of(w);
        if (s == CircuitState::open && now_ns() >= deadline_ns(w)) {
            return CircuitState::half_open;
        }
        return s;
    }

    // Asks to make one call. Never throws or blocks; allocates nothing.
    Permit try_acquire() noexcept {
        // acquire: pairs with the release of the transition CAS (a closed state's period starts
        // with the reset of the consecutive count made before it).
        const std::uint64_t w = block_->state.load(std::memory_order_acquire);
        if (BULWARK_LIKELY(state_of(w) == CircuitState::closed)) {
            return admit(w, false);
        }
        return acquire_slow(w);
    }

    // Runs f() if admitted and records its result (any exception is a failure and propagates);
    // throws CircuitOpenError when rejected.
    template <class F>
    auto execute(F&& f) -> decltype(f()) {
        Permit permit = try_acquire();
        if (!permit) {
            throw CircuitOpenError(source_, "circuit breaker \"" + name_ + "\" is open",
                                   permit.retry_after());
        }
        if constexpr (std::is_void<decltype(f())>::value) {
            f();  // an exception leaves the permit pending: its destructor records a failure
            permit.record_success();
        } else {
            auto result = f();
            permit.record_success();
            return result;
        }
    }

    // Opens it now for break_duration, for every process.
    void trip() {
        std::uint64_t w = block_->state.load(std::memory_order_acquire);
        while (!transition(w, CircuitState::open)) {
        }
    }

    // Closes it now with an empty window, for every process.
    void reset() {
        std::uint64_t w = block_->state.load(std::memory_order_acquire);
        while (!transition(w, CircuitState::closed)) {
        }
    }

    SharedCircuitBreakerStats stats() const noexcept {
        SharedCircuitBreakerStats s;
        const std::uint64_t w = block_->state.load(std::memory_order_acquire);
        s.state = state();
        s.generation = gen_of(w);
        s.calls = block_->position.load(std::memory_order_relaxed);
        s.failures = block_->failures.load(std::memory_order_relaxed);
        s.rejected = block_->rejected.load(std::memory_order_relaxed);
        s.opened = block_->opened.load(std::memory_order_relaxed);
        s.expired_probes = block_->expired_probes.load(std::memory_order_relaxed);
        if (state_of(w) == CircuitState::closed) {
            count_window(w, s.window_calls, s.window_failures);
        }
        return s;
    }

private:
    static std::string normalize(std::string name) {
        if (!name.empty() && name.front() != '/') {
            name.insert(name.begin(), '/');
        }
        if (name.size() < 2 || name.size() > 255 || name.find('/', 1) != std::string::npos) {
            detail::throw_invalid_argument(
                "bulwark::SharedCircuitBreaker: the name must be 1 to 254 characters without '/' "
                "after the leading one, got \"" +
                name + "\"");
        }
        return name;
    }

    static CircuitState state_of(std::uint64_t w) noexcept {
        switch (w & 3U) {
            case 0:
                return CircuitState::closed;
            case 1:
                return CircuitState::open;
            default:
                return CircuitState::half_open;
        }
    }
    static std::uint64_t code_of(CircuitState s) noexcept {
        return s == CircuitState::closed ? 0U : (s == CircuitState::open ? 1U : 2U);
    }
    static constexpr std::uint64_t gen_mask = (std::uint64_t{1} << 22U) - 1U;
    static constexpr std::uint64_t max_deadline_ms = (std::uint64_t{1} << 40U) - 1U;
    // The generation, modulo 2^22 (a wrap needs four million transitions).
    static std::uint32_t gen_of(std::uint64_t w) noexcept {
        return static_cast<std::uint32_t>((w >> 2U) & gen_mask);
    }
    std::int64_t deadline_ns(std::uint64_t w) const noexcept {
        return block_->epoch_ns + static_cast<std::int64_t>(w >> 24U) * 1000000;
    }
    // The word for state `to`, generation `gen` and a deadline rounded up to the millisecond
    // (so a break is never shorter than asked), clamped to 40 bits (34 years).
    std::uint64_t encode(CircuitState to, std::uint64_t gen, std::int64_t deadline) const noexcept {
        std::uint64_t ms = 0;
        if (deadline > block_->epoch_ns) {
            ms = static_cast<std::uint64_t>((deadline - block_->epoch_ns + 999999) / 1000000);
            ms = ms > max_deadline_ms ? max_deadline_ms : ms;
        }
        return (ms << 24U) | ((gen & gen_mask) << 2U) | code_of(to);
    }
    // A slot names the closed period it belongs to, so closing empties the window without
    // touching the slots (and without racing the processes recording into it). Never 0 for a
    // recorded call: a fresh block's zeroed slots are empty.
    static std::uint32_t tag_of(std::uint64_t w) noexcept {
        return ((gen_of(w) + 1U) & 0x7fffffffU) << 1U;
    }

    std::atomic<std::uint32_t>* slots() const noexcept {
        // The slots follow the header in the block; std::launder because they were
        // placement-new'd (possibly by another process).
        return std::launder(reinterpret_cast<std::atomic<std::uint32_t>*>(
            reinterpret_cast<unsigned char*>(block_) + sizeof(detail::SharedBreakerHeader)));
    }

    std::int64_t now_ns() const noexcept { return clock_->now().time_since_epoch().count(); }

    Permit admit(std::uint64_t w, bool probe) noexcept {
        Permit p;
        p.breaker_ = this;
        p.word_ = w;
        p.admitted_ = true;
        p.pending_ = true;
        p.probe_ = probe;
        return p;
    }

    Permit reject(Duration retry_after) noexcept {
        block_->rejected.fetch_add(1, std::memory_order_relaxed);
        Permit p;
        p.breaker_ = this;
        p.retry_after_ = retry_after;
        return p;
    }

    BULWARK_NOINLINE Permit acquire_slow(std::uint64_t w) noexcept {
        const std::int64_t now = now_ns();
        for (;;) {
            switch (state_of(w)) {
                case CircuitState::closed:
                    return admit(w, false);
                case CircuitState::open: {
                    const std::int64_t until = deadline_ns(w);
                    if (now < until) {
                        return reject(Duration(until - now));
                    }
                    transition(w, CircuitState::half_open);  // or another process did
                    break;
                }
                default: {
                    std::uint64_t h = block_->half.load(std::memory_order_acquire);
                    if (static_cast<std::uint32_t>(h) != gen_of(w)) {
                        // The half-open period is being set up by the process that began it.
                        const std::uint64_t again = block_->state.load(std::memory_order_acquire);
                        if (again == w) {
                            return reject(Duration::zero());
                        }
                        w = again;
                        continue;
                    }
                    const std::uint64_t admitted = (h >> 48U) & 0xffffU;
                    if (admitted < options_.half_open_calls) {
                        if (block_->half.compare_exchange_weak(h, h + (std::uint64_t{1} << 48U),
                                                               std::memory_order_acq_rel,
                                                               std::memory_order_acquire)) {
                            // The period may have ended between the two loads (a probe
                            // failed): then the slot belongs to a dead period; do not call.
                            if (block_->state.load(std::memory_order_acquire) != w) {
                                return reject(Duration::zero());
                            }
                            return admit(w, true);
                        }
                        continue;  // h was reloaded; w is unchanged unless the state moved
                    }
                    // Every probe is out. Past the lease, one of them is presumed lost (its
                    // process crashed or hung): reopen, so that the next break admits new probes.
                    if (now < deadline_ns(w)) {
                        return reject(Duration::zero());
                    }
                    if (transition(w, CircuitState::open)) {
                        block_->expired_probes.fetch_add(1, std::memory_order_relaxed);
                    }
                    break;
                }
            }
            w = block_->state.load(std::memory_order_acquire);
        }
    }

    // One CAS from `w` to `to` with generation + 1 and the new state's deadline. False (and
    // `w` reloaded) if another process moved the state meanwhile.
    bool transition(std::uint64_t& w, CircuitState to) {
        const std::int64_t now = now_ns();
        std::int64_t deadline = 0;
        if (to == CircuitState::open) {
            deadline = now + options_.break_duration.count();
        } else if (to == CircuitState::half_open) {
            deadline = now + options_.probe_lease.count();
        }
        const std::uint64_t next = encode(to, std::uint64_t{gen_of(w)} + 1U, deadline);
        if (!block_->state.compare_exchange_strong(w, next, std::memory_order_acq_rel,
                                                   std::memory_order_acquire)) {
            return false;
        }
        if (to == CircuitState::half_open) {
            // A process that sees half-open before this store finds the old generation here and
            // rejects (transiently); stale probes of the old period no longer match.
            block_->half.store(gen_of(next), std::memory_order_release);
        } else if (to == CircuitState::open) {
            block_->opened.fetch_add(1, std::memory_order_relaxed);
        } else {
            block_->consecutive_failures.store(0, std::memory_order_relaxed);
        }
        w = next;
        return true;
    }

    void on_result(std::uint64_t w, bool probe, bool success) {
        if (!success) {
            block_->failures.fetch_add(1, std::memory_order_relaxed);
        }
        if (probe) {
            on_probe_result(w, success);
            return;
        }
        // A result from an earlier closed period (the breaker opened meanwhile) is stale.
        if (block_->state.load(std::memory_order_relaxed) != w) {
            return;
        }
        // relaxed: the slot and counters are statistics for decisions that tolerate a call's
        // worth of skew; transitions are decided by the CAS on `state`.
        const std::uint64_t pos = block_->position.fetch_add(1, std::memory_order_relaxed);
        slots()[pos % options_.window_size].store(tag_of(w) | (success ? 0U : 1U),
                                                  std::memory_order_relaxed);
        if (success) {
            if (block_->consecutive_failures.load(std::memory_order_relaxed) != 0) {
                block_->consecutive_failures.store(0, std::memory_order_relaxed);
            }
            return;
        }
        const std::uint64_t consecutive =
            block_->consecutive_failures.fetch_add(1, std::memory_order_relaxed) + 1;
        if (options_.failure_threshold != 0 && consecutive >= options_.failure_threshold) {
            transition(w, CircuitState::open);
            return;
        }
        if (options_.failure_ratio > 0.0) {
            std::uint32_t calls = 0;
            std::uint32_t failures = 0;
            count_window(w, calls, failures);
            if (calls >= options_.minimum_calls &&
                static_cast<double>(failures) >=
                    options_.failure_ratio * static_cast<double>(calls)) {
                transition(w, CircuitState::open);
            }
        }
    }

    void on_probe_result(std::uint64_t w, bool success) {
        std::uint64_t h = block_->half.load(std::memory_order_acquire);
        for (;;) {
            if (static_cast<std::uint32_t>(h) != gen_of(w)) {
                return;  // a probe of an earlier half-open period (it expired)
            }
            if (!success) {
                transition(w, CircuitState::open);
                return;
            }
            const std::uint64_t next = h + (std::uint64_t{1} << 32U);
            if (block_->half.compare_exchange_weak(h, next, std::memory_order_acq_rel,
                                                   std::memory_order_acquire)) {
                if (((next >> 32U) & 0xffffU) >= options_.half_open_calls) {
                    transition(w, CircuitState::closed);
                }
                return;
            }
        }
    }

    void count_window(std::uint64_t w, std::uint32_t& calls, std::uint32_t& failures) const {
        const std::uint32_t tag = tag_of(w);
        const std::atomic<std::uint32_t>* s = slots();
        for (std::uint32_t i = 0; i < options_.window_size; ++i) {
            const std::uint32_t v = s[i].load(std::memory_order_relaxed);
            if ((v & ~1U) == tag) {
                ++calls;
                failures += v & 1U;
            }
        }
    }

    [[noreturn]] void fail_block(const std::string& why) const {
        throw SharedBlockError("bulwark::SharedCircuitBreaker: shared block \"" + name_ + "\" " +
                               why);
    }

    void map_block() {
        int fd = -1;
        for (int attempt = 0; attempt < 8 && fd < 0; ++attempt) {
            fd = ::shm_open(name_.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
            if (fd >= 0) {
                created_ = true;
                break;
            }
            if (errno != EEXIST) {
                throw std::system_error(
                    errno, std::generic_category(),
                    "bulwark::SharedCircuitBreaker: shm_open(\"" + name_ + "\")");
            }
            fd = ::shm_open(name_.c_str(), O_RDWR, 0600);
            if (fd < 0 && errno != ENOENT) {  // ENOENT: unlinked meanwhile; create it then
                throw std::system_error(
                    errno, std::generic_category(),
                    "bulwark::SharedCircuitBreaker: shm_open(\"" + name_ + "\")");
            }
        }
        if (fd < 0) {
            fail_block("could neither be created nor opened (created and unlinked repeatedly)");
        }
        struct Closer {
            int fd;
            ~Closer() { ::close(fd); }
        } closer{fd};
        if (created_) {
            if (::ftruncate(fd, static_cast<off_t>(size_)) != 0) {
                const int e = errno;
                ::shm_unlink(name_.c_str());
                throw std::system_error(
                    e, std::generic_category(),
                    "bulwark::SharedCircuitBreaker: ftruncate(\"" + name_ + "\")");
            }
        } else {
            wait_for_size(fd);
        }
        void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            throw std::system_error(errno, std::generic_category(),
                                    "bulwark::SharedCircuitBreaker: mmap(\"" + name_ + "\")");
        }
        if (created_) {
            block_ = initialize(p);
        } else {
            block_ = std::launder(static_cast<detail::SharedBreakerHeader*>(p));
            try {
                check_block();
            } catch (...) {
                ::munmap(p, size_);
                throw;
            }
        }
    }

    // The creator truncates right after creating; an attacher that comes in between waits a
    // bounded number of yields (no clock: it must not depend on a test's ManualClock).
    void wait_for_size(int fd) const {
        struct stat st {};
        for (int spin = 0; spin < 1000000; ++spin) {
            if (::fstat(fd, &st) != 0) {
                throw std::system_error(errno, std::generic_category(),
                                        "bulwark::SharedCircuitBreaker: fstat(\"" + name_ + "\")");
            }
            if (st.st_size != 0) {
                break;
            }
            ::sched_yield();
        }
        if (static_cast<std::uint64_t>(st.st_size) != size_) {
            fail_block("has " + std::to_string(st.st_size) + " bytes, expected " +
                       std::to_string(size_) + " for window_size " +
                       std::to_string(options_.window_size) +
                       ": it was created with other options or by another version of bulwark, "
                       "or is not a breaker block (unlink it if no process uses it)");
        }
    }

    detail::SharedBreakerHeader* initialize(void* p) const {
        // ftruncate zero-fills; the objects are still constructed, as C++ requires.
        auto* h = ::new (p) detail::SharedBreakerHeader();
        h->version = detail::shared_breaker_version;
        h->header_size = static_cast<std::uint32_t>(sizeof(detail::SharedBreakerHeader));
        h->block_size = size_;
        h->failure_threshold = options_.failure_threshold;
        h->minimum_calls = options_.minimum_calls;
        h->window_size = options_.window_size;
        h->half_open_calls = options_.half_open_calls;
        std::memcpy(&h->failure_ratio_bits, &options_.failure_ratio, sizeof(double));
        h->break_ns = options_.break_duration.count();
        h->lease_ns = options_.probe_lease.count();
        h->epoch_ns = now_ns();
        auto* s = static_cast<unsigned char*>(p) + sizeof(detail::SharedBreakerHeader);
        for (std::uint32_t i = 0; i < options_.window_size; ++i) {
            ::new (s + i * sizeof(std::atomic<std::uint32_t>)) std::atomic<std::uint32_t>(0U);
        }
        // release: an attacher that reads the magic (acquire) sees everything above.
        h->magic.store(detail::shared_breaker_magic, std::memory_order_release);
        return h;
    }

    void check_block() const {
        std::uint64_t magic = 0;
        for (int spin = 0; spin < 1000000; ++spin) {
            magic = block_->magic.load(std::memory_order_acquire);
            if (magic != 0) {
                break;
            }
            ::sched_yield();
        }
        if (magic == 0) {
            fail_block("was never initialised (its creator died while creating it?): unlink it");
        }
        if (magic != detail::shared_breaker_magic) {
            fail_block("has a bad magic number: it is corrupt or not a breaker block");
        }
        if (block_->version != detail::shared_breaker_version ||
            block_->header_size != sizeof(detail::SharedBreakerHeader) ||
            block_->block_size != size_) {
            fail_block("has layout version " + std::to_string(block_->version) +
                       ", this code uses " + std::to_string(detail::shared_breaker_version) +
                       ": every process must run the same bulwark version");
        }
        auto mismatch = [this](const char* field, const std::string& here,
                               const std::string& there) {
            fail_block("was created with SharedCircuitBreakerOptions." + std::string(field) +
                       " = " + there + ", this process passes " + here +
                       ": every process must pass the same options");
        };
        if (block_->failure_threshold != options_.failure_threshold) {
            mismatch("failure_threshold", std::to_string(options_.failure_threshold),
                     std::to_string(block_->failure_threshold));
        }
        if (block_->minimum_calls != options_.minimum_calls) {
            mismatch("minimum_calls", std::to_string(options_.minimum_calls),
                     std::to_string(block_->minimum_calls));
        }
        if (block_->window_size != options_.window_size) {
            mismatch("window_size", std::to_string(options_.window_size),
                     std::to_string(block_->window_size));
        }
        if (block_->half_open_calls != options_.half_open_calls) {
            mismatch("half_open_calls", std::to_string(options_.half_open_calls),
                     std::to_string(block_->half_open_calls));
        }
        double ratio = 0.0;
        std::memcpy(&ratio, &block_->failure_ratio_bits, sizeof(double));
        if (ratio != options_.failure_ratio) {
            mismatch("failure_ratio", detail::format_number(options_.failure_ratio),
                     detail::format_number(ratio));
        }
        if (block_->break_ns != options_.break_duration.count()) {
            mismatch("break_duration", detail::format_duration(options_.break_duration),
                     detail::format_duration(Duration(block_->break_ns)));
        }
        if (block_->lease_ns != options_.probe_lease.count()) {
            mismatch("probe_lease", detail::format_duration(options_.probe_lease),
                     detail::format_duration(Duration(block_->lease_ns)));
        }
    }

    std::string name_;
    std::shared_ptr<const std::string> source_;
    SharedCircuitBreakerOptions options_;
    Clock* clock_;
    std::size_t size_;
    detail::SharedBreakerHeader* block_ = nullptr;
    bool created_ = false;
};

}  // namespace bulwark

#endif  // BULWARK_SHARED_CIRCUIT_BREAKER_HPP

// Timeout: a cooperative deadline on the context; late results fail with TimeoutError.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_TIMEOUT_HPP
#define BULWARK_TIMEOUT_HPP

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <bulwark/clock.hpp>
#include <bulwark/context.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/errors.hpp>
#include <bulwark/events.hpp>
#include <bulwark/outcome.hpp>
#include <bulwark/policy.hpp>

namespace bulwark {

// A result that arrived after its Timeout's deadline (and was replaced by a TimeoutError).
struct LateResult {
    std::string_view operation;  // the context's operation name
    Duration timeout{0};         // the Timeout's duration
    Duration elapsed{0};         // how long the call really took
    bool succeeded = false;      // the late outcome held a value
    std::exception_ptr error;    // or the error it held
    // It missed a tighter deadline the caller set on the context, not the Timeout's own.
    bool caller_deadline = false;
};

struct TimeoutStats {
    std::uint64_t timeouts = 0;  // results replaced by a TimeoutError
};

// A cooperative timeout: sets ctx.deadline() (the tighter of an outer deadline and its own) so
// that the call can pass it on — to a socket, a query, an inner Retry — and ctx.cancelled()
// turns true once the deadline passes, for calls that poll. A result that arrives after the
// deadline fails with TimeoutError (optionally handed to on_late_result listeners), and so does
// one after a tighter deadline the caller set on the context without a clock.
//   bulwark::Timeout timeout(2s);
//   bulwark::Timeout db_timeout("db", 2s);   // named: its TimeoutErrors' source()
//   timeout.execute([](bulwark::Context& ctx) { return db.query(sql, ctx.deadline()); });
// It never spawns a thread and cannot stop a call that ignores its deadline: it bounds what the
// caller waits for only together with a call that honours ctx. Outside a Retry it bounds all
// attempts together; inside, each attempt.
// Thread-safe. Reads the clock's coarse time twice per call (Clock::coarse_now_fast): it may
// fire up to one clock tick early or late (a few ms on SteadyClock; on a TickingClock, one
// resolution plus however late its thread runs). Does not allocate on the success path.
// Timeout is BasicTimeout<>: a class template only so that a translation unit compiles only the
// members it uses (the Tag is never used).
template <class Tag = void>
class BasicTimeout : public PolicyBase<BasicTimeout<Tag>> {
public:
    // Throws std::invalid_argument unless timeout > 0. The clock must outlive the Timeout.
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    explicit BasicTimeout(Duration timeout, Clock& clock = default_clock())
        : BasicTimeout(std::string(), timeout, clock) {}

    // A named BasicTimeout: its TimeoutErrors say the name in their message and in
    // RejectedError::source().
    BasicTimeout(std::string name, Duration timeout, Clock& clock = default_clock())
        : name_(std::make_shared<const std::string>(std::move(name))),
          timeout_(timeout),
          clock_(&clock) {
        if (timeout <= Duration::zero()) {
            detail::throw_invalid_option("Timeout.timeout", "must be > 0",
                                         detail::format_duration(timeout));
        }
    }

    // A copy has the same name, timeout and clock, and no listeners or stats.
    BasicTimeout(const BasicTimeout& other)
        : name_(other.name_), timeout_(other.timeout_), clock_(other.clock_) {}
    BasicTimeout& operator=(const BasicTimeout&) = delete;

    Duration timeout() const noexcept { return timeout_; }
    // Empty when unnamed.
    const std::string& name() const noexcept { return *name_; }

    // Called for every result that arrived after its deadline (before it is replaced by a
    // TimeoutError). Returns the id that remove_listener() takes; throws std::invalid_argument
    // for an empty listener.
    ListenerId on_late_result(std::function<void(const LateResult&)> listener) {
        return late_.add(std::move(listener));
    }
    // Stops calling a listener; false if the id is unknown here or already removed.
    bool remove_listener(ListenerId id) noexcept { return late_.remove(id); }

    TimeoutStats stats() const noexcept {
        return TimeoutStats{timeouts_.load(std::memory_order_relaxed)};
    }

    template <class Next>
    auto apply(Context& ctx, Next&& next) {
        using O = std::invoke_result_t<Next&, Context&>;
        const TimePoint start = clock_->coarse_now_fast();
        // Saturates: a timeout too long to represent is no deadline (TimePoint::max()).
        const TimePoint deadline = detail::saturating_add(start, timeout_);
        // Restores the caller's deadline on every exit, so an outer policy (a Retry) sees its
        // own again.
        struct Restore {
            Context& ctx;
            TimePoint deadline;  // TimePoint::max(): none
            const Clock* clock = nullptr;
            ~Restore() { ctx.set_deadline(deadline, clock); }
        } restore{ctx, ctx.deadline_or(TimePoint::max()), ctx.deadline_clock()};
        // A tighter outer deadline that came without a clock (a caller's ctx.set_deadline(t))
        // is taken over: this Timeout enforces it, and hands it on with its clock, so that
        // ctx.cancelled() fires at it and inner Timeouts leave it to this one. A tighter one set
        // with a clock belongs to a policy that checks it itself (an outer Timeout): enforcing
        // it here too would make an attempt that answered within its own timeout a failure of
        // the dependency for a breaker in between, when only the caller's total ran out.
        const bool take_over = restore.clock == nullptr && restore.deadline < deadline;
        const TimePoint effective = take_over ? restore.deadline : deadline;
        if (take_over) {
            ctx.set_deadline(effective, clock_);
        } else {
            ctx.tighten_deadline(deadline, clock_);
        }
        // One named result, the only thing returned (NRVO): a late one is replaced in place.
        O outcome = next(ctx);
        const TimePoint end = clock_->coarse_now_fast();
        if (BULWARK_UNLIKELY(end > effective)) {
            late(outcome, ctx, end - start, end <= deadline);
        }
        return outcome;
    }

private:
    template <class O>
    BULWARK_NOINLINE void late(O& outcome, const Context& ctx, Duration elapsed,
                               bool caller_deadline) {
        // relaxed: a statistic.
        timeouts_.fetch_add(1, std::memory_order_relaxed);
        late_.emit_with([&] {
            return LateResult{ctx.operation(),     timeout_,        elapsed,
                              outcome.has_value(), outcome.error(), caller_deadline};
        });
        std::string what = caller_deadline
                               ? "missed the caller's deadline after " +
                                     detail::format_duration(elapsed) + " (its own timeout is " +
                                     detail::format_duration(timeout_) + ")"
                               : "timed out after " + detail::format_duration(timeout_);
        if (!ctx.operation().empty()) {
            what = "operation '" + std::string(ctx.operation()) + "' " + what;
        }
        if (!name_->empty()) {
            what = detail::component_label("timeout", *name_) + ": " + what;
        }
        outcome.replace_with_error(std::make_exception_ptr(TimeoutError(name_, what)));
    }

    const std::shared_ptr<const std::string> name_;
    const Duration timeout_;
    Clock* const clock_;
    std::atomic<std::uint64_t> timeouts_{0};
    Listeners<LateResult> late_;
};

using Timeout = BasicTimeout<>;

}  // namespace bulwark

#endif  // BULWARK_TIMEOUT_HPP

// Context: what one execution carries through a pipeline (attempt, deadline, cancellation).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_CONTEXT_HPP
#define BULWARK_CONTEXT_HPP

#include <atomic>
#include <cstdint>
#include <optional>
#include <string_view>

#include <bulwark/clock.hpp>
#include <bulwark/config.hpp>

namespace bulwark {

// How important a call is. Load shedding drops lower priorities first.
enum class Priority : std::uint8_t { low, normal, high, critical };

// The state of one execution as it passes through a pipeline: which attempt this is, the
// operation's name, its deadline, its priority and whether it was cancelled.
//   bulwark::Context ctx("send-sms");
//   policy.execute([](bulwark::Context& c) { return call(c.deadline()); }, ctx);
// A Context lives on the caller's stack for one execution and allocates nothing. The operation
// name is a view: the string must outlive the execution.
// Thread-safety: cancel() may be called from any thread. cancelled() reads the cancel flags of
// the context and its parents (safe from any thread) and this context's deadline, which the
// policies of the executing thread write: call it from that thread, or from the thread of a
// child context (a hedged attempt polls its own context). The other members belong to the
// executing thread.
class Context {
public:
    Context() noexcept = default;
    explicit Context(std::string_view operation) noexcept : operation_(operation) {}

    // A child execution (for example a hedged attempt): it inherits the parent's operation,
    // deadline and priority, and is cancelled whenever the parent is. The parent must outlive it.
    static Context child_of(const Context& parent) noexcept {
        Context child(parent.operation_);
        child.parent_ = &parent;
        child.deadline_ = parent.deadline_;
        child.deadline_clock_ = parent.deadline_clock_;
        child.priority_ = parent.priority_;
        child.attempt_ = parent.attempt_;
        child.caller_attempt_ = parent.caller_attempt_;
        child.caller_retries_ = parent.caller_retries_;
        return child;
    }

    Context(const Context&) = delete;
    Context& operator=(const Context&) = delete;
    Context(Context&& other) noexcept
        : operation_(other.operation_),
          parent_(other.parent_),
          deadline_(other.deadline_),
          deadline_clock_(other.deadline_clock_),
          attempt_(other.attempt_),
          caller_attempt_(other.caller_attempt_),
          priority_(other.priority_),
          caller_retries_(other.caller_retries_),
          stale_(other.stale_),
          cancelled_(other.cancelled_.load(std::memory_order_acquire)) {}
    Context& operator=(Context&&) = delete;
    ~Context() = default;

    // 0 for the first attempt; a retry policy increments it before each retry.
    std::uint32_t attempt() const noexcept { return attempt_; }
    void set_attempt(std::uint32_t attempt) noexcept { attempt_ = attempt; }

    std::string_view operation() const noexcept { return operation_; }
    void set_operation(std::string_view operation) noexcept { operation_ = operation; }

    // The time by which the execution should finish, if any policy or the caller set one.
    // TimePoint::max() is no deadline.
    std::optional<TimePoint> deadline() const noexcept {
        return has_deadline() ? std::optional<TimePoint>(deadline_) : std::nullopt;
    }
    bool has_deadline() const noexcept { return deadline_ != TimePoint::max(); }
    // The deadline, or `none` without one: deadline_or(TimePoint::max()) for comparisons.
    TimePoint deadline_or(TimePoint none) const noexcept {
        return has_deadline() ? deadline_ : none;
    }
    // The clock the deadline is on, if the policy that set it said (a Timeout does); with it,
    // cancelled() turns true once the deadline has passed.
    const Clock* deadline_clock() const noexcept { return deadline_clock_; }
    // Replaces the deadline (nullopt, or TimePoint::max(), removes it). Policies that scope a
    // deadline restore the old one when they return.
    void set_deadline(std::optional<TimePoint> deadline, const Clock* clock = nullptr) noexcept {
        deadline_ = deadline ? *deadline : TimePoint::max();
        deadline_clock_ = has_deadline() ? clock : nullptr;
    }
    // Sets the deadline to `t` unless an earlier one is already set.
    void tighten_deadline(TimePoint t, const Clock* clock = nullptr) noexcept {
        if (t < deadline_) {
            deadline_ = t;
            deadline_clock_ = clock;
        }
    }
    // Time left until the deadline on `clock` (negative once passed); nullopt without a deadline.
    std::optional<Duration> remaining(const Clock& clock) const noexcept {
        if (!has_deadline()) {
            return std::nullopt;
        }
        return deadline_ - clock.now();
    }

    // What the calling service said about this request (retry_header.hpp reads it from a
    // header): its own attempt number (0 for its first), and whether it will retry this request
    // if it fails. A RetryPolicy does not retry when caller_retries() is set, so that retries do
    // not multiply across the layers of services: the outermost retrier alone retries.
    std::uint32_t caller_attempt() const noexcept { return caller_attempt_; }
    void set_caller_attempt(std::uint32_t attempt) noexcept { caller_attempt_ = attempt; }
    bool caller_retries() const noexcept { return caller_retries_; }
    void set_caller_retries(bool retries) noexcept { caller_retries_ = retries; }

    Priority priority() const noexcept { return priority_; }
    void set_priority(Priority priority) noexcept { priority_ = priority; }

    // True once cancel() was called on this context or on any of its parents, or once a
    // deadline set with its clock (by a Timeout) has passed. Callables that run long should poll
    // it and stop early; policies stop retrying once it is set.
    bool cancelled() const noexcept {
        for (const Context* c = this; c != nullptr; c = c->parent_) {
            // acquire: pairs with cancel()'s release, so that what the cancelling thread wrote
            // before cancelling is visible to the thread that sees the flag.
            if (c->cancelled_.load(std::memory_order_acquire)) {
                return true;
            }
        }
        return deadline_passed();
    }

    // True if a deadline set with its clock has passed.
    bool deadline_passed() const noexcept {
        // A clock is only ever set together with a deadline.
        return deadline_clock_ != nullptr && deadline_clock_->coarse_now_fast() >= deadline_;
    }

    // Set by a CacheFallback that answered with a cached value instead of a fresh one.
    bool stale() const noexcept { return stale_; }
    void set_stale(bool stale) noexcept { stale_ = stale; }

    // Requests cancellation. Thread-safe; idempotent; cannot be undone.
    void cancel() noexcept { cancelled_.store(true, std::memory_order_release); }

    const Context* parent() const noexcept { return parent_; }

private:
    std::string_view operation_;
    const Context* parent_ = nullptr;
    // A plain word with TimePoint::max() for none: policies save and restore it with 8-byte
    // moves. (A std::optional is copied as 16 bytes, which the CPU cannot forward from the two
    // narrower stores that wrote it: ~5 ns per copy on a success path.)
    TimePoint deadline_ = TimePoint::max();
    const Clock* deadline_clock_ = nullptr;
    std::uint32_t attempt_ = 0;
    std::uint32_t caller_attempt_ = 0;
    Priority priority_ = Priority::normal;
    bool caller_retries_ = false;
    bool stale_ = false;
    std::atomic<bool> cancelled_{false};
};

}  // namespace bulwark

#endif  // BULWARK_CONTEXT_HPP

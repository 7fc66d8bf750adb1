// Bulkhead: a concurrency limit with a bounded, timed waiting queue.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_BULKHEAD_HPP
#define BULWARK_BULKHEAD_HPP

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include <bulwark/clock.hpp>
#include <bulwark/context.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/striped_counter.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/errors.hpp>
#include <bulwark/events.hpp>
#include <bulwark/outcome.hpp>
#include <bulwark/policy.hpp>

namespace bulwark {

struct BulkheadOptions {
    // Calls allowed inside at once. >= 1.
    std::uint32_t max_concurrent = 10;
    // Calls allowed to wait (first in, first out) for a slot; beyond that a call is rejected at
    // once. 0 = no queue (default).
    std::uint32_t max_queue = 0;
    // The longest a queued call waits for a slot (also bounded by the context's deadline and
    // cancellation). > 0 with a queue; without one (max_queue = 0) it is never used, and >= 0.
    Duration queue_timeout = std::chrono::seconds(1);
    // Shadow mode: the bulkhead decides, queues, counts and reports exactly as it would, but
    // a call it would have rejected goes ahead without a slot (it takes none, so it never
    // delays another call's admission) and is counted in rejected and in shadow_rejections.
    // A call that queues still waits in the queue; one whose context is cancelled while it waits
    // is refused as usual (its caller gave it up). Switch at run time with set_shadow(). false
    // by default.
    bool shadow = false;

    // Throws std::invalid_argument naming the field and the value.
    void validate() const {
        if (max_concurrent == 0) {
            detail::throw_invalid_option("BulkheadOptions.max_concurrent", "must be >= 1", "0");
        }
        if (queue_timeout < Duration::zero()) {
            detail::throw_invalid_option("BulkheadOptions.queue_timeout", "must be >= 0",
                                         detail::format_duration(queue_timeout));
        }
        if (max_queue > 0 && queue_timeout == Duration::zero()) {
            detail::throw_invalid_option(
                "BulkheadOptions.queue_timeout",
                "must be > 0 when max_queue > 0 (" + std::to_string(max_queue) + ")",
                detail::format_duration(queue_timeout));
        }
    }
};

enum class BulkheadRejection : std::uint8_t {
    full,           // no slot and no room in the queue
    queue_timeout,  // waited queue_timeout (or the context's deadline) without getting a slot
    cancelled,      // the context was cancelled while waiting
};

struct BulkheadEvent {
    BulkheadRejection reason = BulkheadRejection::full;
    std::uint32_t in_flight = 0;
    std::uint32_t queued = 0;
    // The call was let through anyway, without a slot, because the bulkhead is in shadow mode.
    bool shadow = false;
};

struct BulkheadStats {
    std::uint32_t max_concurrent = 0;
    std::uint32_t max_queue = 0;
    std::uint32_t in_flight = 0;       // calls inside now
    std::uint32_t queued = 0;          // calls waiting now
    std::uint64_t admitted = 0;        // calls that got a slot
    std::uint64_t rejected = 0;        // rejected for any reason
    std::uint64_t queue_timeouts = 0;  // of those, how many timed out in the queue
    // of the rejected, how many were let through (without a slot) in shadow mode
    std::uint64_t shadow_rejections = 0;
};

// Caps how many calls run at once, so that one slow dependency cannot take every thread.
//   bulwark::Bulkhead bulkhead(/*max_concurrent*/ 8, /*max_queue*/ 16);
//   bulwark::Bulkhead db("db", {8, 16});                // named: its rejections' source()
//   bulkhead.execute([&] { return db.query(sql); });   // BulkheadFullError when full
//   if (auto permit = bulkhead.try_acquire()) { ... }   // two-step; released with the permit
// Invariant: never more than max_concurrent calls inside. Up to max_queue callers wait, first
// in first out, for at most queue_timeout (or their context's deadline, or until it is
// cancelled: a waiter looks at its context at least every 10 ms, since cancel() notifies no one).
// Thread-safe. An uncontended acquire and release is two atomic read-modify-writes; waiting and
// handing a slot to a waiter take a mutex. Does not allocate.
// Bulkhead is BasicBulkhead<>: a class template only so that a translation unit compiles only the
// members it uses (the Tag is never used).
template <class Tag = void>
class BasicBulkhead : public PolicyBase<BasicBulkhead<Tag>> {
public:
    // A slot inside the bulkhead; released when destroyed. Movable.
    class [[nodiscard]] Permit {
    public:
        Permit() noexcept = default;
        Permit(Permit&& other) noexcept
            : bulkhead_(std::exchange(other.bulkhead_, nullptr)),
              reason_(other.reason_),
              shadow_(std::exchange(other.shadow_, false)) {}
        Permit& operator=(Permit&& other) noexcept {
            if (this != &other) {
                release();
                bulkhead_ = std::exchange(other.bulkhead_, nullptr);
                reason_ = other.reason_;
                shadow_ = std::exchange(other.shadow_, false);
            }
            return *this;
        }
        Permit(const Permit&) = delete;
        Permit& operator=(const Permit&) = delete;
        ~Permit() { release(); }

        // True if the call may go ahead: it holds a slot, or it was refused but let through in
        // shadow mode.
        explicit operator bool() const noexcept { return bulkhead_ != nullptr || shadow_; }
        // True if the bulkhead refused the call and let it through without a slot, because it
        // is in shadow mode (see BulkheadOptions::shadow); rejection() says why it was refused.
        bool shadowed() const noexcept { return shadow_; }
        // Why it was refused (meaningful only for a refused or shadowed permit).
        BulkheadRejection rejection() const noexcept { return reason_; }

        // Gives the slot back before the permit is destroyed.
        void release() noexcept {
            if (bulkhead_ != nullptr) {
                std::exchange(bulkhead_, nullptr)->release_slot();
            }
        }

    private:
        friend class BasicBulkhead;
        explicit Permit(BasicBulkhead* bulkhead) noexcept : bulkhead_(bulkhead) {}
        Permit(BulkheadRejection reason, bool shadow) noexcept : reason_(reason), shadow_(shadow) {}

        BasicBulkhead* bulkhead_ = nullptr;
        BulkheadRejection reason_ = BulkheadRejection::full;
        bool shadow_ = false;  // refused, let through without a slot
    };

    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    explicit BasicBulkhead(std::uint32_t max_concurrent, std::uint32_t max_queue = 0,
                           Duration queue_timeout = std::chrono::seconds(1),
                           Clock& clock = default_clock())
        : BasicBulkhead(BulkheadOptions{max_concurrent, max_queue, queue_timeout, false}, clock) {}

    // Throws std::invalid_argument for invalid options. The clock must outlive the bulkhead.
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    explicit BasicBulkhead(BulkheadOptions options, Clock& clock = default_clock())
        : BasicBulkhead(std::string(), options, clock) {}

    // A named bulkhead: its rejections say the name in their message and in
    // RejectedError::source().
    BasicBulkhead(std::string name, BulkheadOptions options, Clock& clock = default_clock())
        : name_(std::make_shared<const std::string>(std::move(name))),
          options_((options.validate(), options)),
          clock_(&clock),
          shadow_(options_.shadow),
          full_error_(error(
              " is full: " + std::to_string(options_.max_concurrent) + " calls in flight" +
              (options_.max_queue > 0 ? " and " + std::to_string(options_.max_queue) + " queued"
                                      : std::string()))),
          timeout_error_(error(": no slot within the queue timeout of " +
                               detail::format_duration(options_.queue_timeout))),
          cancelled_error_(error(": the call was cancelled while queued")) {}

    BasicBulkhead(const BasicBulkhead&) = delete;
    BasicBulkhead& operator=(const BasicBulkhead&) = delete;

    const BulkheadOptions& options() const noexcept { return options_; }
    // Empty when unnamed.
    const std::string& name() const noexcept { return *name_; }

    // A slot if one is free right now (never waits, never queues). Does not allocate.
    Permit try_acquire() noexcept {
        if (BULWARK_LIKELY(try_take_fast())) {
            admitted_.add();
            return Permit(this);
        }
        return Permit(BulkheadRejection::full, reject(BulkheadRejection::full));
    }

    // A slot, waiting in the queue if there is room (up to queue_timeout, the context's deadline
    // or its cancellation).
    Permit acquire(const Context* ctx = nullptr) {
        if (BULWARK_LIKELY(try_take_fast())) {
            admitted_.add();
            return Permit(this);
        }
        return acquire_slow(ctx);
    }

    template <class Next>
    auto apply(Context& ctx, Next&& next) {
        using O = std::invoke_result_t<Next&, Context&>;
        Permit permit = acquire(&ctx);
        if (BULWARK_UNLIKELY(!permit)) {
            return O::from_error(permit.rejection() == BulkheadRejection::full ? full_error_
                                 : permit.rejection() == BulkheadRejection::cancelled
                                     ? cancelled_error_
                                     : timeout_error_);
        }
        return next(ctx);
    }

    // Shadow mode on or off, at run time (see BulkheadOptions::shadow); applies to the next
    // rejection.
    void set_shadow(bool on) noexcept {
        // relaxed: an independent switch; nothing else is published with it.
        shadow_.store(on, std::memory_order_relaxed);
    }
    bool shadow() const noexcept { return shadow_.load(std::memory_order_relaxed); }

    // Called on every rejection (in shadow mode too, with BulkheadEvent::shadow), with its reason.
    // Returns the id that remove_listener() takes; throws std::invalid_argument for an empty
    // listener.
    ListenerId on_rejected(std::function<void(const BulkheadEvent&)> listener) {
        return rejected_listeners_.add(std::move(listener));
    }
    // Stops calling a listener; false if the id is unknown here or already removed.
    bool remove_listener(ListenerId id) noexcept { return rejected_listeners_.remove(id); }

    BulkheadStats stats() const {
        BulkheadStats s;
        s.max_concurrent = options_.max_concurrent;
        s.max_queue = options_.max_queue;
        s.in_flight = static_cast<std::uint32_t>(
            std::max<std::int64_t>(0, in_flight_.load(std::memory_order_relaxed)));
        {
            detail::LockGuard lock(mutex_);
            s.queued = queued_;
        }
        s.admitted = admitted_.sum();
        s.rejected = rejected_.load(std::memory_order_relaxed);
        s.queue_timeouts = queue_timeouts_.load(std::memory_order_relaxed);
        s.shadow_rejections = shadow_rejections_.load(std::memory_order_relaxed);
        return s;
    }

private:
    // A caller waiting for a slot; lives on its stack, linked into the queue under mutex_.
    struct Waiter {
        std::condition_variable cv;
        bool granted = false;
        Waiter* next = nullptr;
        Waiter* prev = nullptr;
    };

    // Memory ordering: waiting_ and in_flight_ form a Dekker pair. A releaser decrements
    // in_flight_ then reads waiting_; a waiter increments waiting_ then (dispatching) reads
    // in_flight_. With seq_cst on both sides at least one of them sees the other, so a freed
    // slot is never left unclaimed while someone waits.
    bool try_take_fast() noexcept {
        if (waiting_.load(std::memory_order_seq_cst) != 0) {
            return false;  // first in, first out: do not overtake the queue
        }
        return take_slot();
    }

    // seq_cst, the load and the failed CAS too: this read is the waiter's side of the Dekker
    // pair; a relaxed one after the seq_cst increment of waiting_ may see a slot taken that a
    // releaser has freed while the releaser sees no waiter (free on x86, LDAR on ARM).
    bool take_slot() noexcept {
        std::int64_t current = in_flight_.load(std::memory_order_seq_cst);
        while (current < static_cast<std::int64_t>(options_.max_concurrent)) {
            if (in_flight_.compare_exchange_weak(current, current + 1, std::memory_order_seq_cst,
                                                 std::memory_order_seq_cst)) {
                return true;
            }
        }
        return false;
    }

    void release_slot() noexcept {
        in_flight_.fetch_sub(1, std::memory_order_seq_cst);
        if (waiting_.load(std::memory_order_seq_cst) != 0) {
            detail::LockGuard lock(mutex_);
            dispatch_locked();
        }
    }

    // Under mutex_: hands free slots to the queue's head, in order.
    void dispatch_locked() noexcept BULWARK_REQUIRES(mutex_) {
        while (head_ != nullptr && take_slot()) {
            Waiter* w = head_;
            unlink(w);
            w->granted = true;
            w->cv.notify_one();
        }
    }

    void unlink(Waiter* w) noexcept BULWARK_REQUIRES(mutex_) {
        (w->prev != nullptr ? w->prev->next : head_) = w->next;
        (w->next != nullptr ? w->next->prev : tail_) = w->prev;
        w->next = w->prev = nullptr;
        --queued_;
        waiting_.fetch_sub(1, std::memory_order_seq_cst);
    }

    BULWARK_NOINLINE Permit acquire_slow(const Context* ctx) {
        detail::UniqueLock lock(mutex_);
        if (head_ == nullptr && take_slot()) {
            admitted_.add();
            return Permit(this);
        }
        if (queued_ >= options_.max_queue) {
            lock.unlock();
            return Permit(BulkheadRejection::full, reject(BulkheadRejection::full));
        }
        TimePoint deadline = detail::saturating_add(clock_->now(), options_.queue_timeout);
        if (ctx != nullptr && ctx->deadline() && *ctx->deadline() < deadline) {
            deadline = *ctx->deadline();
        }
        Waiter w;
        w.prev = tail_;
        (tail_ != nullptr ? tail_->next : head_) = &w;
        tail_ = &w;
        ++queued_;
        waiting_.fetch_add(1, std::memory_order_seq_cst);
        dispatch_locked();  // a slot may have been freed before we were visible
        BulkheadRejection reason = BulkheadRejection::queue_timeout;
        while (!w.granted) {
            if (ctx != nullptr && ctx->cancelled()) {
                reason = BulkheadRejection::cancelled;
                break;
            }
            if (clock_->now() >= deadline) {
                break;
            }
            // Cancellation notifies nobody, so a waiter with a context wakes at least every
            // cancel_poll to look at it.
            TimePoint wake = deadline;
            if (ctx != nullptr) {
                wake = std::min(deadline, clock_->now() + cancel_poll);
            }
            clock_->wait_until(w.cv, lock.native(), wake);
        }
        if (w.granted) {
            admitted_.add();
            return Permit(this);
        }
        unlink(&w);
        lock.unlock();
        if (reason == BulkheadRejection::queue_timeout) {
            queue_timeouts_.fetch_add(1, std::memory_order_relaxed);
        }
        return Permit(reason, reject(reason));
    }

    // Counts and reports a rejection; returns true if the call is to be let through anyway
    // (shadow mode). The switch is read only here, never on the admit path. A call cancelled
    // while queued is refused in shadow mode too: its caller gave it up, not the bulkhead.
    bool reject(BulkheadRejection reason) noexcept {
        const bool shadow =
            reason != BulkheadRejection::cancelled && shadow_.load(std::memory_order_relaxed);
        // relaxed: statistics.
        rejected_.fetch_add(1, std::memory_order_relaxed);
        if (shadow) {
            shadow_rejections_.fetch_add(1, std::memory_order_relaxed);
        }
        rejected_listeners_.emit_with([&] {
            return BulkheadEvent{
                reason,
                static_cast<std::uint32_t>(
                    std::max<std::int64_t>(0, in_flight_.load(std::memory_order_relaxed))),
                static_cast<std::uint32_t>(waiting_.load(std::memory_order_relaxed)), shadow};
        });
        return shadow;
    }

    // How often a queued waiter with a context looks at its cancellation.
    static constexpr Duration cancel_poll = std::chrono::milliseconds(10);

    // A rejection error, built once: "bulkhead 'name'" followed by `rest`.
    std::exception_ptr error(const std::string& rest) const {
        return std::make_exception_ptr(
            BulkheadFullError(name_, detail::component_label("bulkhead", *name_) + rest));
    }

    const std::shared_ptr<const std::string> name_;
    const BulkheadOptions options_;
    Clock* const clock_;
    std::atomic<bool> shadow_;  // read only on the reject path
    const std::exception_ptr full_error_;
    const std::exception_ptr timeout_error_;
    const std::exception_ptr cancelled_error_;

    alignas(detail::cache_line_size) std::atomic<std::int64_t> in_flight_{0};
    alignas(detail::cache_line_size) std::atomic<std::int64_t> waiting_{0};

    mutable detail::Mutex mutex_;
    Waiter* head_ BULWARK_GUARDED_BY(mutex_) = nullptr;
    Waiter* tail_ BULWARK_GUARDED_BY(mutex_) = nullptr;
    std::uint32_t queued_ BULWARK_GUARDED_BY(mutex_) = 0;

    detail::StripedCounter admitted_;
    std::atomic<std::uint64_t> rejected_{0};
    std::atomic<std::uint64_t> queue_timeouts_{0};
    std::atomic<std::uint64_t> shadow_rejections_{0};
    Listeners<BulkheadEvent> rejected_listeners_;
};

using Bulkhead = BasicBulkhead<>;

}  // namespace bulwark

#endif  // BULWARK_BULKHEAD_HPP

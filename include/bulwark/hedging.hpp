// Hedging: extra attempts started after a delay, first result wins.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_HEDGING_HPP
#define BULWARK_HEDGING_HPP

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <bulwark/classify.hpp>
#include <bulwark/clock.hpp>
#include <bulwark/config.hpp>
#include <bulwark/context.hpp>
#include <bulwark/detail/hedging_pool.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/events.hpp>
#include <bulwark/outcome.hpp>
#include <bulwark/policy.hpp>

namespace bulwark {

// Where hedged attempts run: called with each attempt as a task (see HedgingOptions::executor).
using HedgingExecutor = std::function<void(std::function<void()>)>;

// Why a hedged attempt was started.
enum class HedgeReason : std::uint8_t {
    delay,    // no accepted result within the delay (with delay 0: every hedge starts at once)
    failure,  // an attempt failed, so the next one starts at once
};

// A hedged attempt is about to be handed to the executor.
struct HedgeEvent {
    std::string_view operation;  // the context's operation name
    std::uint32_t attempt = 0;   // the hedge's number: 1 for the first hedge
    HedgeReason reason = HedgeReason::delay;
};

struct HedgingStats {
    std::uint64_t calls = 0;         // calls through the policy
    std::uint64_t hedges = 0;        // hedged attempts started (handed to the executor)
    std::uint64_t primary_wins = 0;  // calls answered by the primary attempt
    std::uint64_t hedge_wins = 0;    // calls answered by a hedged attempt
    std::uint64_t exhausted = 0;     // calls whose every attempt failed (the last failure returned)
};

// Options of a Hedging policy. Every field has a default; validate() throws
// std::invalid_argument naming the field.
struct HedgingOptions {
    static constexpr std::uint32_t max_extra_attempts_limit = 16;
    // A delay that never elapses: hedges start only when an attempt fails.
    static constexpr Duration only_on_failure = Duration::max();

    // How long an attempt may run without an accepted result before the next hedge starts,
    // measured on the policy's clock from the previous start. 0 starts every hedge at once;
    // only_on_failure never starts one on time. >= 0.
    Duration delay = std::chrono::seconds(2);
    // Hedged attempts in addition to the primary one. In [1, 16].
    std::uint32_t max_extra_attempts = 1;
    // Where hedged attempts run. It is given each hedged attempt as a task and must run it once,
    // on a thread of its choosing, or destroy it unrun (the attempt then counts as failed, so a
    // pool that shuts down loses nothing). It is called from the calling thread, the policy's
    // timer thread and the attempts' threads, possibly concurrently: it must be thread-safe, and
    // should neither block nor run the task inline (that serialises the attempts). If it
    // throws, the attempt counts as failed with that error. What it refers to must accept tasks
    // for as long as the Hedging lives; tasks it still holds after that are harmless (they own
    // what they touch).
    //   o.executor = [&pool](std::function<void()> task) { pool.submit(std::move(task)); };
    // Empty (the default): an internal pool of at most max_extra_attempts threads, started as
    // hedges need them and joined by the Hedging's destructor.
    HedgingExecutor executor{};
    // Which outcomes are failures (by default every exception, no value). A failure loses and
    // starts the next hedge at once; anything else — a value, or an exception outside
    // handle<E>() — is accepted and ends the race.
    Classifier classifier{};
    // Listeners added by on_hedge(), handed to the policy when it is built.
    std::vector<std::function<void(const HedgeEvent&)>> hedge_listeners{};

    template <class E>
    HedgingOptions& handle() {
        classifier.handle<E>();
        return *this;
    }
    HedgingOptions& handle_if(std::function<bool(const std::exception_ptr&)> predicate) {
        classifier.handle_if(std::move(predicate));
        return *this;
    }
    template <class T = void, class Pred>
    HedgingOptions& handle_result(Pred predicate) {
        classifier.handle_result<T>(std::move(predicate));
        return *this;
    }
    // Called before every hedged attempt starts, on the thread that starts it.
    HedgingOptions& on_hedge(std::function<void(const HedgeEvent&)> listener) {
        detail::add_option_listener(hedge_listeners, std::move(listener),
                                    "HedgingOptions.on_hedge");
        return *this;
    }

    void validate() const {
        if (delay < Duration::zero()) {
            detail::throw_invalid_option("HedgingOptions.delay", "must be >= 0",
                                         detail::format_duration(delay));
        }
        if (max_extra_attempts < 1 || max_extra_attempts > max_extra_attempts_limit) {
            detail::throw_invalid_option("HedgingOptions.max_extra_attempts", "must be in [1, 16]",
                                         std::to_string(max_extra_attempts));
        }
    }
};

// Hedging: when an attempt has not produced a result after `delay`, starts another attempt of the
// same call alongside it (up to max_extra_attempts), returns the first accepted result and
// cancels the others through their contexts.
//   bulwark::Hedging hedge(/*delay*/ 50ms, /*max_extra*/ 1);          // optional clock last
//   auto r = hedge.execute([&](bulwark::Context& ctx) { return replica(ctx.attempt()).get(ctx); });
// - The primary attempt runs on the calling thread; hedges run on HedgingOptions::executor, or
//   on an internal pool of at most max_extra_attempts threads. A timer thread of the policy's
//   own, started by the first timed call, waits out the delays on the policy's clock.
// - A failed attempt (per the classifier) starts the next hedge at once, without waiting for the
//   delay. An accepted outcome — a value, or an exception outside handle<E>() — wins at once. If
//   every attempt fails, the last failure is returned.
// - Each attempt gets its own child Context (ctx.attempt() is 0 for the primary and n for the
//   n-th hedge), which sees the caller's deadline and cancellation; once an attempt wins, the
//   others see ctx.cancelled() turn true. No hedge starts once the caller's context is cancelled.
// Safety rule: a call returns only after every attempt that started has returned. Attempts
// borrow the callable, the policies inside the hedge and the caller's context by reference, so a
// loser left running after the call returned would dangle. A hedge the executor had not started
// when the call ended never runs: it touches only the call's state, which it co-owns
// (shared_ptr). So a win saves latency only when the losers honour ctx.cancelled() promptly; a
// loser that ignores it holds the call until it finishes.
// The callable, and the policies inside the hedge, run concurrently on several threads: they must
// be thread-safe, and the call should be idempotent.
// Thread-safe: one Hedging serves many concurrent calls. Destroy it only when no call is in
// progress; the destructor joins its threads. Costs one heap allocation per call (the state the
// attempts share) and, for a timed call, one clock read and two lock round trips on the timer's
// mutex; each hedge adds a task (two allocations) and a thread hop.
// Hedging is BasicHedging<>: a class template only so that a translation unit that does not use
// it does not compile its threads and timer (the Tag is never used).
template <class Tag = void>
class BasicHedging : public PolicyBase<BasicHedging<Tag>> {
public:
    // Throws std::invalid_argument for invalid options. The clock must outlive the Hedging.
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    explicit BasicHedging(Duration delay, std::uint32_t max_extra_attempts = 1,
                          Clock& clock = default_clock())
        : BasicHedging(make_options(delay, max_extra_attempts), clock) {}

    explicit BasicHedging(HedgingOptions options, Clock& clock = default_clock())
        : options_((options.validate(), std::move(options))), clock_(&clock) {
        for (auto& listener : options_.hedge_listeners) {
            listeners_.add(std::move(listener));
        }
        options_.hedge_listeners.clear();
    }

    BasicHedging(const BasicHedging&) = delete;
    BasicHedging& operator=(const BasicHedging&) = delete;

    ~BasicHedging() {
        std::thread timer;
        {
            detail::LockGuard lock(timer_mutex_);
            timer_stop_ = true;
            timer = std::move(timer_);
        }
        timer_cv_.notify_all();
        if (timer.joinable()) {
            timer.join();
        }
        // The internal pool, declared last, is destroyed (and joined) first.
    }

    const HedgingOptions& options() const noexcept { return options_; }

    // Called before every hedged attempt starts, on the thread that starts it. Returns the id
    // that remove_listener() takes; throws std::invalid_argument for an empty listener.
    ListenerId on_hedge(std::function<void(const HedgeEvent&)> listener) {
        return listeners_.add(std::move(listener));
    }
    // Stops calling a listener; false if the id is unknown here or already removed.
    bool remove_listener(ListenerId id) noexcept { return listeners_.remove(id); }

    HedgingStats stats() const noexcept {
        HedgingStats s;
        // relaxed: statistics.
        s.calls = calls_.load(std::memory_order_relaxed);
        s.hedges = hedges_.load(std::memory_order_relaxed);
        s.primary_wins = primary_wins_.load(std::memory_order_relaxed);
        s.hedge_wins = hedge_wins_.load(std::memory_order_relaxed);
        s.exhausted = exhausted_.load(std::memory_order_relaxed);
        return s;
    }

    template <class Next>
    auto apply(Context& ctx, Next&& next) {
        using O = std::invoke_result_t<Next&, Context&>;
        using Race = Call<O, std::remove_reference_t<Next>>;
        calls_.fetch_add(1, std::memory_order_relaxed);
        Context race = Context::child_of(ctx);  // cancelled when an attempt wins
        const std::shared_ptr<Race> call = std::make_shared<Race>(*this, race, next);
        // Ends the race on every exit, an exception's included, and waits for the attempts that
        // started: none outlives this frame.
        struct Conclude {
            BasicHedging& self;
            CallBase& call;
            bool done = false;
            void operator()(bool wait_for_result) {
                done = true;
                call.conclude(wait_for_result);
                if (call.timer_scheduled) {
                    self.unschedule(call);
                }
            }
            ~Conclude() {
                if (!done) {
                    (*this)(false);
                }
            }
        } conclude{*this, *call};
        if (options_.delay == Duration::zero()) {
            for (std::uint32_t i = 0; i < options_.max_extra_attempts; ++i) {
                call->start_next(HedgeReason::delay);
            }
        } else if (options_.delay != HedgingOptions::only_on_failure) {
            schedule(*call);
        }
        call->finish(0, call->attempt(0));  // the primary, on this thread
        conclude(true);
        const std::uint32_t winner = call->final_winner();
        if (winner == 0) {
            primary_wins_.fetch_add(1, std::memory_order_relaxed);
        } else if (winner != no_winner) {
            hedge_wins_.fetch_add(1, std::memory_order_relaxed);
        } else {
            exhausted_.fetch_add(1, std::memory_order_relaxed);
        }
        O outcome = call->take_answer();
        return outcome;
    }

private:
    static constexpr std::uint32_t no_winner = ~std::uint32_t{0};

    static HedgingOptions make_options(Duration delay, std::uint32_t max_extra_attempts) {
        HedgingOptions o;
        o.delay = delay;
        o.max_extra_attempts = max_extra_attempts;
        return o;
    }

    // The state one call shares with its hedged attempts, the executor's tasks and the timer.
    // Owned by shared_ptr: a task that outlives the call touches only this.
    class CallBase : public std::enable_shared_from_this<CallBase> {
    public:
        enum class Slot : std::uint8_t { idle, reserved, running, done };

        CallBase(BasicHedging& owner, Context& race)
            : owner_(&owner),
              race_(&race),
              operation_(race.operation()),
              max_extra_(owner.options_.max_extra_attempts),
              delay_(owner.options_.delay) {
            slots_[0] = Slot::running;  // the primary
        }
        CallBase(const CallBase&) = delete;
        CallBase& operator=(const CallBase&) = delete;
        virtual ~CallBase() = default;

        // Runs hedged attempt `index` on this thread, if the race is still open.
        virtual void run(std::uint32_t index) = 0;
        // Hedge `index` will never run (its task was destroyed unrun, or could not be posted).
        virtual void fail_unstarted(std::uint32_t index, std::exception_ptr error) noexcept = 0;

        // Caller thread: waits for the race's result (or, on an exceptional exit, ends the race),
        // cancels the losers and waits until every attempt that started has returned.
        void conclude(bool wait_for_result) {
            detail::UniqueLock lock(mutex_);
            if (wait_for_result) {
                while (!closed_) {
                    cv_.wait(lock.native());
                }
            } else if (!closed_) {
                close_locked();
            }
            if (running_ != 0) {
                race_->cancel();
                while (running_ != 0) {
                    cv_.wait(lock.native());
                }
            }
        }

        // Starts the next hedge, if one may start.
        void start_next(HedgeReason reason) {
            std::uint32_t index = 0;
            {
                detail::LockGuard lock(mutex_);
                index = reserve_locked(timed() ? owner_->clock_->now() : TimePoint{});
            }
            if (index != 0) {
                start_hedge(index, reason);
            }
        }

        // Timer thread: the call's deadline passed at `now`. Returns when to come back
        // (TimePoint::max(): never).
        TimePoint on_timer(TimePoint now) {
            std::uint32_t index = 0;
            TimePoint again = TimePoint::max();
            {
                detail::LockGuard lock(mutex_);
                if (closed_ || launched_ >= max_extra_) {
                    return TimePoint::max();
                }
                const TimePoint due = detail::saturating_add(last_start, delay_);
                if (now < due) {
                    return due;  // a failure started a hedge meanwhile: a full delay from that
                }
                index = reserve_locked(now);
                if (index == 0) {
                    return TimePoint::max();
                }
                if (launched_ < max_extra_) {
                    again = detail::saturating_add(now, delay_);
                }
            }
            start_hedge(index, HedgeReason::delay);
            return again;
        }

        // Written by the caller thread before the call is visible to the timer; then guarded by
        // mutex_.
        TimePoint last_start{};
        // Caller thread only.
        bool timer_scheduled = false;
        // Guarded by BasicHedging::timer_mutex_.
        CallBase* timer_prev = nullptr;
        CallBase* timer_next = nullptr;
        TimePoint timer_deadline{};
        bool timer_linked = false;
        bool timer_done = false;  // the call is over: never link it again
        // The attempt whose outcome was accepted.
        std::uint32_t winner BULWARK_GUARDED_BY(mutex_) = no_winner;

        // Caller thread, once the race is over: as take_answer(), no other thread writes winner
        // any more and conclude()'s wait ordered their writes before this read.
        std::uint32_t final_winner() const BULWARK_NO_THREAD_SAFETY_ANALYSIS { return winner; }

    protected:
        bool timed() const noexcept {
            return delay_ > Duration::zero() && delay_ != HedgingOptions::only_on_failure;
        }

        // Under mutex_: claims the next hedge if the race is open, hedges remain and the caller's
        // context is not cancelled. Returns its index, or 0.
        std::uint32_t reserve_locked(TimePoint now) BULWARK_REQUIRES(mutex_) {
            // The caller's frame (race_) is alive: the race is open, so the caller is waiting.
            if (closed_ || launched_ >= max_extra_ || race_->cancelled()) {
                return 0;
            }
            const std::uint32_t index = ++launched_;
            slots_[index] = Slot::reserved;
            ++outstanding_;
            last_start = now;
            return index;
        }

        void close_locked() BULWARK_REQUIRES(mutex_) {
            closed_ = true;
            cv_.notify_all();
        }

        // Hands hedge `index` (reserved) to the executor. Called by a thread that keeps the
        // caller waiting (the caller, an attempt still counted as running, or the timer).
        void start_hedge(std::uint32_t index, HedgeReason reason) {
            BasicHedging& owner = *owner_;
            owner.hedges_.fetch_add(1, std::memory_order_relaxed);
            owner.listeners_.emit_with([&] { return HedgeEvent{operation_, index, reason}; });
            // Outside the try: if the executor dropped the task already, releasing this last
            // reference reports the attempt as failed, after the catch below had its say.
            std::shared_ptr<Ticket> ticket;
            try {
                ticket = std::make_shared<Ticket>(this->shared_from_this(), index);
                owner.post([ticket] { ticket->call->run(ticket->index); });
            } catch (...) {
                fail_unstarted(index, std::current_exception());
            }
        }

        // Attempt `index` may run (under mutex_): marks it running, or done if the race is over.
        bool begin(std::uint32_t index) {
            detail::LockGuard lock(mutex_);
            if (slots_[index] != Slot::reserved) {
                return false;  // ran already (an executor that ran a copy of the task twice)
            }
            if (closed_) {
                slots_[index] = Slot::done;
                --outstanding_;
                return false;
            }
            slots_[index] = Slot::running;
            ++running_;
            return true;
        }

        // A hedged attempt is done with the caller's frame and the policy.
        void leave() {
            detail::LockGuard lock(mutex_);
            if (--running_ == 0) {
                cv_.notify_all();
            }
        }

        BasicHedging* const owner_;  // used only while the caller waits
        Context* const race_;        // on the caller's frame: used only while the caller waits
        const std::string_view operation_;
        const std::uint32_t max_extra_;
        const Duration delay_;

        detail::Mutex mutex_;
        std::condition_variable cv_;  // the caller waits on it
        std::array<Slot, HedgingOptions::max_extra_attempts_limit + 1> slots_
            BULWARK_GUARDED_BY(mutex_){};
        std::uint32_t launched_ BULWARK_GUARDED_BY(mutex_) = 0;  // hedges reserved
        // Reserved attempts not yet done.
        std::uint32_t outstanding_ BULWARK_GUARDED_BY(mutex_) = 1;
        std::uint32_t running_ BULWARK_GUARDED_BY(mutex_) = 0;  // hedges running the call now
        bool closed_ BULWARK_GUARDED_BY(mutex_) = false;        // the race is over
    };

    // A hedged attempt handed to the executor. Destroyed unrun, it reports the attempt failed.
    struct Ticket {
        Ticket(std::shared_ptr<CallBase> c, std::uint32_t i) noexcept
            : call(std::move(c)), index(i) {}
        Ticket(const Ticket&) = delete;
        Ticket& operator=(const Ticket&) = delete;
        ~Ticket() { call->fail_unstarted(index, std::exception_ptr()); }

        std::shared_ptr<CallBase> call;
        std::uint32_t index;
    };

    // The typed part of a call: the borrowed rest of the pipeline and the answer so far.
    template <class O, class N>
    class Call final : public CallBase {
        // CallBase is a dependent base (a member of the class template): name what Call uses.
        using Slot = typename CallBase::Slot;
        using CallBase::begin;
        using CallBase::close_locked;
        using CallBase::closed_;
        using CallBase::leave;
        using CallBase::mutex_;
        using CallBase::outstanding_;
        using CallBase::owner_;
        using CallBase::race_;
        using CallBase::reserve_locked;
        using CallBase::slots_;
        using CallBase::start_hedge;
        using CallBase::timed;

    public:
        using CallBase::winner;

        Call(BasicHedging& owner, Context& race, N& next) : CallBase(owner, race), next_(&next) {}

        // Runs attempt `index` on this thread and returns what it produced.
        O attempt(std::uint32_t index) {
            Context ctx = Context::child_of(*race_);
            ctx.set_attempt(index);
            try {
                return (*next_)(ctx);
            } catch (...) {
                return O::from_error(std::current_exception());
            }
        }

        void run(std::uint32_t index) override {
            if (begin(index)) {
                finish(index, attempt(index));
                leave();
            }
        }

        // Records attempt `index`'s outcome: it wins if accepted, else it is the latest failure
        // and the next hedge starts at once. The thread still keeps the caller waiting.
        void finish(std::uint32_t index, O outcome) {
            bool failure = true;
            std::exception_ptr predicate_error;  // a classifier predicate threw: a failure
            try {
                failure = owner_->options_.classifier.is_failure(outcome);
            } catch (...) {
                predicate_error = std::current_exception();
            }
            bool won = false;
            std::uint32_t next_hedge = 0;
            {
                detail::LockGuard lock(mutex_);
                slots_[index] = Slot::done;
                --outstanding_;
                if (!closed_) {
                    if (predicate_error) {
                        answer_.emplace(O::from_error(std::move(predicate_error)));
                    } else {
                        answer_.emplace(std::move(outcome));
                    }
                    if (!failure) {
                        winner = index;
                        won = true;
                        close_locked();
                    } else {
                        next_hedge = reserve_locked(timed() ? owner_->clock_->now() : TimePoint{});
                        if (next_hedge == 0 && outstanding_ == 0) {
                            close_locked();  // every attempt failed
                        }
                    }
                }
            }
            if (won) {
                race_->cancel();  // the losers stop
            }
            if (next_hedge != 0) {
                start_hedge(next_hedge, HedgeReason::failure);
            }
        }

        void fail_unstarted(std::uint32_t index, std::exception_ptr error) noexcept override {
            detail::LockGuard lock(mutex_);
            if (slots_[index] != Slot::reserved) {
                return;
            }
            slots_[index] = Slot::done;
            --outstanding_;
            if (closed_) {
                return;
            }
            if (!answer_) {  // an attempt's own failure says more than the executor's
                try {
                    if (!error) {
                        error = std::make_exception_ptr(std::runtime_error(
                            "bulwark::Hedging: the executor destroyed a hedged attempt unrun"));
                    }
                    answer_.emplace(O::from_error(std::move(error)));
                } catch (...) {
                    answer_.emplace(O::from_error(std::current_exception()));
                }
            }
            if (outstanding_ == 0) {
                close_locked();
            }
        }

        // Caller thread, once the race is over and no attempt runs (so no other thread touches
        // answer_ any more: conclude()'s wait ordered their writes before this read).
        O take_answer() BULWARK_NO_THREAD_SAFETY_ANALYSIS {
            if (BULWARK_UNLIKELY(!answer_)) {
                return O::from_error(std::make_exception_ptr(
                    std::logic_error("bulwark::Hedging: the race ended without an outcome")));
            }
            return std::move(*answer_);
        }

    private:
        N* const next_;  // on the caller's frame: used only while the caller waits
        // The winner's outcome, or the latest failure.
        std::optional<O> answer_ BULWARK_GUARDED_BY(mutex_);
    };

    // The internal pool or the user's executor.
    void post(std::function<void()> task) {
        if (options_.executor) {
            options_.executor(std::move(task));
            return;
        }
        detail::HedgingPool* pool = nullptr;
        {
            detail::LockGuard lock(pool_mutex_);
            if (!pool_) {
                pool_ = std::make_unique<detail::HedgingPool>(options_.max_extra_attempts);
            }
            pool = pool_.get();
        }
        pool->post(std::move(task));
    }

    // The timer: one thread per policy, started by the first timed call, waiting on the clock for
    // the earliest deadline of an intrusive list sorted by deadline. While it waits for
    // timer_wake_, a call whose deadline is not earlier needs no wake-up; after a quiet period of
    // one delay it sleeps until a call wakes it.
    void schedule(CallBase& call) {
        detail::UniqueLock lock(timer_mutex_);
        // Read under the lock, so a deadline is never earlier than the timer_wake_ of a quiet
        // period that began before it.
        const TimePoint now = clock_->now();
        call.last_start = now;
        const TimePoint deadline = detail::saturating_add(now, options_.delay);
        if (deadline == TimePoint::max()) {
            return;
        }
        if (!timer_.joinable()) {
            timer_ = std::thread([this] { timer_loop(); });
        }
        call.timer_scheduled = true;
        link_locked(call, deadline);
        if (deadline < timer_wake_) {
            lock.unlock();
            timer_cv_.notify_one();
        }
    }

    void unschedule(CallBase& call) {
        detail::LockGuard lock(timer_mutex_);
        call.timer_done = true;
        if (call.timer_linked) {
            unlink_locked(call);
        }
    }

    void link_locked(CallBase& call, TimePoint deadline) noexcept BULWARK_REQUIRES(timer_mutex_) {
        call.timer_deadline = deadline;
        CallBase* before = timer_tail_;  // deadlines mostly arrive in order: search from the end
        while (before != nullptr && before->timer_deadline > deadline) {
            before = before->timer_prev;
        }
        call.timer_prev = before;
        call.timer_next = before != nullptr ? before->timer_next : timer_head_;
        (call.timer_next != nullptr ? call.timer_next->timer_prev : timer_tail_) = &call;
        (before != nullptr ? before->timer_next : timer_head_) = &call;
        call.timer_linked = true;
    }

    void unlink_locked(CallBase& call) noexcept BULWARK_REQUIRES(timer_mutex_) {
        (call.timer_prev != nullptr ? call.timer_prev->timer_next : timer_head_) = call.timer_next;
        (call.timer_next != nullptr ? call.timer_next->timer_prev : timer_tail_) = call.timer_prev;
        call.timer_prev = nullptr;
        call.timer_next = nullptr;
        call.timer_linked = false;
    }

    void timer_loop() {
        detail::UniqueLock lock(timer_mutex_);
        while (!timer_stop_) {
            const TimePoint now = clock_->now();
            CallBase* head = timer_head_;
            if (head == nullptr) {
                if (timer_wake_ == TimePoint::max()) {
                    timer_cv_.wait(lock.native());
                } else if (now >= timer_wake_) {
                    timer_wake_ = TimePoint::max();  // a quiet period passed: sleep until woken
                } else {
                    clock_->wait_until(timer_cv_, lock.native(), timer_wake_);
                }
                continue;
            }
            if (now < head->timer_deadline) {
                timer_wake_ = head->timer_deadline;
                clock_->wait_until(timer_cv_, lock.native(), timer_wake_);
                continue;
            }
            unlink_locked(*head);
            // The caller unlinks its call under this lock before it lets go of it, so the call
            // is alive here; `keep` holds it while the lock is released.
            std::shared_ptr<CallBase> keep = head->shared_from_this();
            if (timer_head_ == nullptr) {
                timer_wake_ = detail::saturating_add(now, options_.delay);
            }
            lock.unlock();
            const TimePoint again = keep->on_timer(now);
            lock.lock();
            if (again != TimePoint::max() && !keep->timer_done) {
                link_locked(*keep, again);
            }
            lock.unlock();
            keep.reset();  // may be the last owner: not under the lock
            lock.lock();
        }
    }

    HedgingOptions options_;
    Clock* const clock_;
    Listeners<HedgeEvent> listeners_;
    std::atomic<std::uint64_t> calls_{0};
    std::atomic<std::uint64_t> hedges_{0};
    std::atomic<std::uint64_t> primary_wins_{0};
    std::atomic<std::uint64_t> hedge_wins_{0};
    std::atomic<std::uint64_t> exhausted_{0};

    detail::Mutex timer_mutex_;
    std::condition_variable timer_cv_;
    std::thread timer_ BULWARK_GUARDED_BY(timer_mutex_);
    CallBase* timer_head_ BULWARK_GUARDED_BY(timer_mutex_) = nullptr;
    CallBase* timer_tail_ BULWARK_GUARDED_BY(timer_mutex_) = nullptr;
    TimePoint timer_wake_ BULWARK_GUARDED_BY(timer_mutex_) = TimePoint::max();
    bool timer_stop_ BULWARK_GUARDED_BY(timer_mutex_) = false;

    detail::Mutex pool_mutex_;
    std::unique_ptr<detail::HedgingPool> pool_ BULWARK_GUARDED_BY(pool_mutex_);  // declared last
};

using Hedging = BasicHedging<>;

}  // namespace bulwark

#endif  // BULWARK_HEDGING_HPP

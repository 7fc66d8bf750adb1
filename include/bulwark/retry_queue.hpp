// RetryQueue: messages handled, retried on a schedule and dead-lettered when they cannot be.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_RETRY_QUEUE_HPP
#define BULWARK_RETRY_QUEUE_HPP

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <bulwark/clock.hpp>
#include <bulwark/dead_letter_store.hpp>
#include <bulwark/delivery_error.hpp>
#include <bulwark/detail/dead_letter_index.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/random.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/errors.hpp>
#include <bulwark/queue_store.hpp>
#include <bulwark/retry.hpp>
#include <bulwark/time.hpp>

namespace bulwark {

// enqueue() on a RetryQueue that has been stopped.
class QueueStoppedError : public std::logic_error {
public:
    using std::logic_error::logic_error;
};

// What stop() does with the messages still queued.
enum class StopMode : std::uint8_t {
    drain,    // go on handling what is due (retries included) until none is left or the timeout
    persist,  // only let the attempts in flight finish
};

// A RetryQueue's options; validate() throws std::invalid_argument naming the field.
struct RetryQueueOptions {
    // The most messages held, waiting or being handled; enqueue() beyond it throws
    // QueueFullError. In [1, 100000000].
    std::size_t max_size = 100000;
    // Background threads that handle due messages; 0 (the default): none, call run_due().
    // At most 256.
    std::size_t workers = 0;
    // The queue's name: source() of its errors, the channel of the attempts it records.
    std::string name = "retry-queue";
    // DeadLetter::type of the messages it dead-letters. Not empty.
    std::string type = "message";
    // What a failure means: a DeliveryError's kind by default (permanent and bounced are not
    // retried; rate_limited waits its retry_after); rules for the adapter's own exceptions.
    DeliveryClassifier classifier{};

    void validate() const {
        if (max_size < 1 || max_size > 100000000) {
            detail::throw_invalid_option("RetryQueueOptions.max_size", "must be in [1, 100000000]",
                                         std::to_string(max_size));
        }
        if (workers > 256) {
            detail::throw_invalid_option("RetryQueueOptions.workers", "must be <= 256",
                                         std::to_string(workers));
        }
        if (type.empty()) {
            detail::throw_invalid_option("RetryQueueOptions.type", "must not be empty", "\"\"");
        }
    }
};

// What a RetryQueue did so far.
struct RetryQueueStats {
    std::size_t queued = 0;                  // held now: waiting, or being handled
    std::size_t in_flight = 0;               // being handled now
    std::uint64_t enqueued = 0;              // accepted by enqueue()
    std::uint64_t rejected_full = 0;         // refused by enqueue(): the queue was full
    std::uint64_t attempts = 0;              // handler calls
    std::uint64_t delivered = 0;             // handled without an error
    std::uint64_t retries = 0;               // failed attempts scheduled again
    std::uint64_t dead_lettered = 0;         // added to the dead-letter store
    std::uint64_t dead_letter_failures = 0;  // store.add() failed: kept, tried again later
    // Refused by the store for good (too large for it, invalid): held off the schedule until
    // stop() hands them back.
    std::uint64_t parked = 0;
    std::uint64_t returned = 0;  // handed back by stop()
};

// A queue of messages that a handler delivers: a message whose handler call throws is tried
// again after the RetryOptions' backoff (or the error's retry_after(), when later), and one that
// cannot be delivered — retries exhausted, max_elapsed passed, or an error the options'
// classifier does not count as retryable — goes to the DeadLetterStore with its whole history
// (every attempt: time, queue name, error). Nothing is dropped: a full queue refuses enqueue()
// (QueueFullError), a dead-letter store that refuses an add keeps the message here to try
// again, and stop() hands back what is left.
//   bulwark::RetryQueue<std::string> queue(send, store, retry_options, /*workers*/ 2);
//   queue.enqueue(msg);  queue.enqueue_at(msg, when);  queue.run_due();  queue.stop();
// Driven by worker threads (RetryQueueOptions::workers) or by run_due() from the caller's loop
// (and tests, on a ManualClock). The handler is called with no lock held, once per message at a
// time. A Message that is not a string needs an encoder for its dead-letter payload.
// Thread-safe.
template <class Message>
class RetryQueue {
public:
    using Handler = std::function<void(const Message&)>;
    // The bytes a dead letter carries for a message.
    using Encoder = std::function<std::string(const Message&)>;

    // `store` and `clock` must outlive the queue. Throws std::invalid_argument for invalid
    // options, an empty handler, or a non-string Message without an encoder.
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    RetryQueue(Handler handler, DeadLetterStore& store, RetryOptions retry = {},
               std::size_t workers = 0)
        : RetryQueue(std::move(handler), store, std::move(retry), with_workers(workers)) {}

    RetryQueue(Handler handler, DeadLetterStore& store, RetryOptions retry,
               RetryQueueOptions options, Clock& clock = default_clock(), Encoder encode = {})
        : handler_(std::move(handler)),
          store_(store),
          retry_(std::move(retry)),
          options_(std::move(options)),
          clock_(clock),
          encode_(std::move(encode)),
          seed_(detail::fresh_seed()) {
        retry_.validate();
        options_.validate();
        if (retry_.budget) {
            detail::throw_invalid_argument(
                "bulwark::RetryQueue: RetryOptions.budget is not supported (a queue's retries do "
                "not run in the caller's path); leave it empty");
        }
        if (!retry_.retry_listeners.empty()) {
            detail::throw_invalid_argument(
                "bulwark::RetryQueue: RetryOptions.on_retry listeners are not supported; read "
                "stats() instead");
        }
        if (!handler_) {
            detail::throw_invalid_argument("bulwark::RetryQueue: empty handler");
        }
        if (!encode_) {
            if constexpr (std::is_convertible<const Message&, std::string_view>::value) {
                encode_ = [](const Message& m) {
                    return std::string(std::string_view(m));
                };
            } else {
                detail::throw_invalid_argument(
                    "bulwark::RetryQueue: a Message that is not a string needs an encoder for its "
                    "dead-letter payload");
            }
        }
        workers_.reserve(options_.workers);
        try {
            for (std::size_t i = 0; i < options_.workers; ++i) {
                workers_.emplace_back([this] { work(); });
            }
        } catch (...) {
            shut_down_workers();
            throw;
        }
    }

    RetryQueue(const RetryQueue&) = delete;
    RetryQueue& operator=(const RetryQueue&) = delete;

    // Stops the workers after their current attempt. Messages still queued are dropped with the
    // queue: call stop() first to get them back.
    ~RetryQueue() { shut_down_workers(); }

    // Queues `message` for an attempt now; returns its id. Throws QueueFullError when the queue
    // holds max_size messages, QueueStoppedError after stop().
    std::string enqueue(Message message) { return enqueue_at(std::move(message), clock_.now()); }

    // Queues `message` for its first attempt at `when` (on the queue's clock).
    std::string enqueue_at(Message message, TimePoint when) {
        detail::LockGuard lock(mutex_);
        if (stopped_) {
            throw QueueStoppedError("bulwark::RetryQueue '" + options_.name +
                                    "': enqueue() after stop()");
        }
        if (entries_.size() >= options_.max_size) {
            ++stats_.rejected_full;
            throw QueueFullError(std::make_shared<const std::string>(options_.name),
                                 "retry queue '" + options_.name + "' is full (max_size " +
                                     std::to_string(options_.max_size) + ")");
        }
        const std::uint64_t seq = next_seq_++;
        Entry entry{detail::format_dead_letter_id(detail::SplitMix64::at(seed_, seq)),
                    std::move(message)};
        entry.first_try = when;
        entry.next_at = when;
        entry.enqueued = clock_.wall_now();
        std::string id = entry.id;
        const auto it = entries_.emplace(seq, std::move(entry)).first;
        try {
            due_.emplace(when, seq);
        } catch (...) {
            entries_.erase(it);
            throw;
        }
        ++stats_.enqueued;
        wake_.notify_one();
        return id;
    }

    // Handles the messages due when it is called (a retry that falls due meanwhile waits for the
    // next call); returns how many turns it took. With workers running, they may take some first.
    std::size_t run_due() {
        // The messages due at the call, by their place on the schedule: a retry rescheduled for
        // the same instant (a zero backoff on a clock that has not moved) has a new place and
        // waits for the next call, so it can neither repeat here nor crowd out another message.
        std::vector<std::pair<TimePoint, std::uint64_t>> due;
        {
            detail::LockGuard lock(mutex_);
            const TimePoint now = clock_.now();
            for (auto it = due_.begin(); it != due_.end() && it->first <= now; ++it) {
                due.push_back(*it);
            }
        }
        std::size_t done = 0;
        for (const auto& slot : due) {
            {
                detail::LockGuard lock(mutex_);
                const auto it = due_.find(slot);
                if (!claiming_ || it == due_.end()) {
                    continue;  // a worker took it (and it may be waiting again, elsewhere)
                }
                due_.erase(it);
                ++in_flight_;
            }
            handle(slot.second);
            ++done;
        }
        return done;
    }

    // Messages held now (waiting or being handled).
    std::size_t size() const {
        detail::LockGuard lock(mutex_);
        return entries_.size();
    }

    // When the earliest waiting message falls due; nullopt when none is waiting.
    std::optional<TimePoint> next_due() const {
        detail::LockGuard lock(mutex_);
        if (due_.empty()) {
            return std::nullopt;
        }
        return due_.begin()->first;
    }

    RetryQueueStats stats() const {
        detail::LockGuard lock(mutex_);
        RetryQueueStats s = stats_;
        s.queued = entries_.size();
        s.in_flight = in_flight_;
        return s;
    }

    // Refuses further enqueue()s and, with StopMode::drain, goes on handling what falls due
    // (on the workers, or here when there are none) until nothing is left or `timeout` on the
    // queue's clock has passed; then waits for the attempts in flight and stops the workers.
    // Returns the messages neither delivered nor dead-lettered, in the order of their next
    // attempt: nothing is dropped. Call it once; later calls return nothing.
    std::vector<Message> stop(StopMode mode = StopMode::drain,
                              Duration timeout = std::chrono::seconds(30)) {
        const TimePoint deadline = detail::saturating_add(clock_.now(), timeout);
        {
            detail::UniqueLock lock(mutex_);
            if (stopped_) {
                // Another stop() runs or ran: return once it has, so that the caller may destroy
                // the queue.
                idle_.wait(lock.native(), [this]() BULWARK_NO_THREAD_SAFETY_ANALYSIS {
                    return stop_done_;  // (mutex_ is held while the predicate runs)
                });
                return {};
            }
            stopped_ = true;
            claiming_ = mode == StopMode::drain;
        }
        if (mode == StopMode::drain) {
            drain_until(deadline);
        }
        {
            // Together: a worker that may no longer claim has nothing left to wait for.
            detail::LockGuard lock(mutex_);
            claiming_ = false;  // run_due() calls from other threads too
            quit_ = true;
            wake_.notify_all();
        }
        shut_down_workers();
        detail::UniqueLock lock(mutex_);
        // The attempts in flight (a caller's run_due()) end first: their messages are theirs.
        idle_.wait(lock.native(), [this]() BULWARK_NO_THREAD_SAFETY_ANALYSIS {
            return in_flight_ == 0;  // (mutex_ is held while the predicate runs)
        });
        // Every message held (one whose rescheduling ran out of memory is not on the schedule).
        std::vector<std::pair<TimePoint, std::uint64_t>> order;
        order.reserve(entries_.size());
        for (const auto& held : entries_) {
            order.emplace_back(held.second.next_at, held.first);
        }
        std::sort(order.begin(), order.end());
        std::vector<Message> left;
        left.reserve(order.size());
        for (const auto& slot : order) {
            left.push_back(std::move(entries_.at(slot.second).message));
        }
        stats_.returned += left.size();
        due_.clear();
        entries_.clear();
        stop_done_ = true;
        idle_.notify_all();
        return left;
    }

private:
    struct Entry {
        Entry(std::string i, Message m) : id(std::move(i)), message(std::move(m)) {}

        std::string id;
        Message message;
        std::uint32_t attempts = 0;  // handler calls so far
        TimePoint first_try{};       // max_elapsed counts from it
        TimePoint next_at{};
        WallTime enqueued{};
        Duration previous{0};    // the last backoff (decorrelated jitter)
        Duration store_wait{0};  // the last wait after the dead-letter store refused
        std::vector<DeadLetterAttempt> history;
        // Set once the message is to be dead-lettered: later turns only retry the store.
        bool dead = false;
        DeadLetterReason reason = DeadLetterReason::retries_exhausted;
        std::string error;
    };

    static RetryQueueOptions with_workers(std::size_t workers) {
        RetryQueueOptions o;
        o.workers = workers;
        return o;
    }

    // Takes the earliest message due at `now` off the schedule, marking it in flight.
    bool claim_due(TimePoint now, std::uint64_t& seq) BULWARK_REQUIRES(mutex_) {
        if (!claiming_ || due_.empty() || due_.begin()->first > now) {
            return false;
        }
        seq = due_.begin()->second;
        due_.erase(due_.begin());
        ++in_flight_;
        return true;
    }

    // One turn of the message `seq`, claimed: a handler call (or, for one already bound for the
    // dead-letter store, another add), then its fate, under the lock.
    void handle(std::uint64_t seq) {
        Entry* entry = nullptr;
        {
            detail::LockGuard lock(mutex_);
            entry = &entries_.at(seq);  // stable: only its claimer erases or moves it
        }
        try {
            turn(*entry, seq);
        } catch (...) {
            // Out of memory in the bookkeeping (finish() cannot throw, so the message is still
            // held): it stays held — stop() returns it — and is tried again if the schedule can
            // take it.
            detail::LockGuard lock(mutex_);
            release(*entry, seq);
            throw;
        }
    }

    void turn(Entry& claimed, std::uint64_t seq) {
        Entry* const entry = &claimed;
        if (!entry->dead) {
            const TimePoint started = clock_.now();
            std::exception_ptr error;
            try {
                handler_(entry->message);
            } catch (...) {
                error = std::current_exception();
            }
            // The classifiers are user code too: run without the lock (one may read the queue).
            Verdict verdict;
            if (error) {
                verdict = classify(error);
            }
            detail::LockGuard lock(mutex_);
            ++stats_.attempts;
            if (entry->attempts++ == 0) {
                entry->first_try = started;  // max_elapsed counts from the first attempt
            }
            if (!error) {
                if (const auto* adaptive =
                        std::get_if<std::shared_ptr<AdaptiveBackoff>>(&retry_.backoff)) {
                    (*adaptive)->record_success();
                }
                ++stats_.delivered;
                finish(seq);
                return;
            }
            if (schedule_retry(*entry, seq, error, verdict)) {
                return;
            }
        }
        dead_letter(*entry, seq);
    }

    // After a failed attempt: records it and schedules the next one, or marks the message for
    // the dead-letter store (returns false).
    // What the classifiers say of a failure.
    struct Verdict {
        DeliveryFailure failure;
        bool retry_failure = true;     // RetryOptions::classifier counts it as a failure
        std::string classifier_error;  // the classification threw: why
    };

    Verdict classify(const std::exception_ptr& error) const {
        Verdict v;
        try {
            // User predicates: one that throws decides for itself (not retried), never leaves
            // the message undecided.
            v.failure = options_.classifier.classify(error);
            v.retry_failure = retry_.classifier.is_failure(error);
        } catch (...) {
            v.classifier_error =
                " (its classification threw: " + describe(std::current_exception()) + ")";
            v.failure.kind = DeliveryErrorKind::permanent;
        }
        return v;
    }

    bool schedule_retry(Entry& entry, std::uint64_t seq, const std::exception_ptr& error,
                        const Verdict& verdict) BULWARK_REQUIRES(mutex_) {
        const TimePoint now = clock_.now();
        const DeliveryFailure& failure = verdict.failure;
        const bool retry_failure = verdict.retry_failure;
        const std::string& classifier_error = verdict.classifier_error;
        entry.error = detail::clip_text(describe(error), max_error_bytes);
        if (!failure.code.empty()) {
            entry.error += " (code " + detail::clip_text(failure.code, 64) + ")";
        }
        entry.error += classifier_error;
        DeadLetterAttempt attempt;
        attempt.at = clock_.wall_now();
        attempt.channel = options_.name;
        attempt.error = detail::clip_text(entry.error, max_attempt_error_bytes);
        // Bounded: the store keeps at most its max_attempts newest anyway.
        const std::size_t keep = std::max<std::size_t>(store_.limits().max_attempts, 1);
        if (entry.history.size() >= keep) {
            entry.history.erase(entry.history.begin(),
                                entry.history.begin() +
                                    static_cast<std::ptrdiff_t>(entry.history.size() - keep + 1));
        }
        entry.history.push_back(std::move(attempt));
        if (failure.kind == DeliveryErrorKind::bounced) {
            return mark_dead(entry, DeadLetterReason::rejected);
        }
        if (!retryable(failure.kind) || !retry_failure) {
            return mark_dead(entry, DeadLetterReason::not_retryable);
        }
        // attempts counts the first call: retry n follows attempt n.
        if (entry.attempts > static_cast<std::uint32_t>(retry_.max_retries)) {
            return mark_dead(entry, DeadLetterReason::retries_exhausted);
        }
        Duration wait = backoff(entry, seq);
        wait = std::max({wait, detail::rejection_wait(error, now), failure.retry_after});
        if (retry_.max_elapsed > Duration::zero() &&
            detail::saturating_add(now - entry.first_try, wait) > retry_.max_elapsed) {
            return mark_dead(entry, DeadLetterReason::retries_exhausted);
        }
        entry.previous = wait;
        entry.next_at = detail::saturating_add(now, wait);
        reschedule(entry, seq);
        ++stats_.retries;
        return true;
    }

    static bool mark_dead(Entry& entry, DeadLetterReason reason) noexcept {
        entry.dead = true;
        entry.reason = reason;
        return false;
    }

    Duration backoff(const Entry& entry, std::uint64_t seq) const {
        if (const auto* adaptive = std::get_if<std::shared_ptr<AdaptiveBackoff>>(&retry_.backoff)) {
            (*adaptive)->record_failure();
            return (*adaptive)->current_delay();
        }
        // Each message on a jitter stream of its own, so that retries of messages that failed
        // together spread out.
        return std::get<Backoff>(retry_.backoff).stream(seq).delay(entry.attempts, entry.previous);
    }

    // The error text kept per message and per attempt: a store bounds a record's text, and a
    // message failing for days must not grow without bound.
    static constexpr std::size_t max_error_bytes = 1024;
    static constexpr std::size_t max_attempt_error_bytes = 256;

    static std::string describe(const std::exception_ptr& error) {
        try {
            std::rethrow_exception(error);
        } catch (const std::exception& e) {
            return e.what();
        } catch (...) {
            return "unknown exception";
        }
    }

    // Hands the message, bound for the store, to it with the lock released (a durable store
    // syncs). If the store refuses, the message stays here and is tried again after the backoff.
    void dead_letter(Entry& entry, std::uint64_t seq) {
        DeadLetter letter;
        {
            detail::LockGuard lock(mutex_);
            letter.id = entry.id;  // a retried add of the same message is a no-op
            letter.type = options_.type;
            letter.error = entry.error;
            letter.reason = entry.reason;
            letter.attempts = entry.history;
            letter.created = clock_.wall_now();
        }
        std::exception_ptr failed;
        bool permanent = false;
        try {
            letter.payload = encode_(entry.message);
            detail::fit_letter(letter, store_.limits());
            store_.add(std::move(letter));
        } catch (const DeadLetterTooLargeError&) {
            failed = std::current_exception();
            permanent = true;  // the same letter would be refused again
        } catch (const std::invalid_argument&) {
            failed = std::current_exception();
            permanent = true;
        } catch (...) {
            failed = std::current_exception();
        }
        detail::LockGuard lock(mutex_);
        if (!failed) {
            ++stats_.dead_lettered;
            finish(seq);
            return;
        }
        ++stats_.dead_letter_failures;
        if (permanent) {
            // Held, off the schedule: stop() hands it back. Retrying could not help.
            ++stats_.parked;
            --in_flight_;
            idle_.notify_all();
            return;
        }
        // A store that refuses for now (full, poisoned, an I/O error): again later, waiting
        // longer each time, up to 5 minutes (not the retry backoff: this is the store's state,
        // not the message's).
        const Duration wait =
            std::min<Duration>(std::max<Duration>(2 * entry.store_wait, std::chrono::seconds(1)),
                               std::chrono::minutes(5));
        entry.store_wait = wait;
        entry.next_at = detail::saturating_add(clock_.now(), wait);
        reschedule(entry, seq);
    }

    // A claimed message whose turn failed: no longer in flight, back on the schedule if it fits.
    void release(Entry& entry, std::uint64_t seq) noexcept BULWARK_REQUIRES(mutex_) {
        --in_flight_;
        try {
            entry.next_at = detail::saturating_add(
                clock_.now(), std::max<Duration>(entry.previous, std::chrono::seconds(1)));
            due_.emplace(entry.next_at, seq);
        } catch (...) {  // NOLINT(bugprone-empty-catch): held all the same; stop() returns it
        }
        wake_.notify_one();
        idle_.notify_all();
    }

    void reschedule(const Entry& entry, std::uint64_t seq) BULWARK_REQUIRES(mutex_) {
        due_.emplace(entry.next_at, seq);
        --in_flight_;
        wake_.notify_one();
        idle_.notify_all();
    }

    void finish(std::uint64_t seq) BULWARK_REQUIRES(mutex_) {
        entries_.erase(seq);
        --in_flight_;
        idle_.notify_all();
    }

    // A worker: handles what is due, waits for the next due time (or an enqueue) otherwise.
    void work() {
        for (;;) {
            std::uint64_t seq = 0;
            {
                detail::UniqueLock lock(mutex_);
                for (;;) {
                    if (quit_) {
                        return;
                    }
                    const TimePoint now = clock_.now();
                    if (claim_due(now, seq)) {
                        break;
                    }
                    if (!claiming_) {
                        wake_.wait(lock.native());  // until quit_: stop() is handing back the rest
                        continue;
                    }
                    const TimePoint next = due_.empty() ? TimePoint::max() : due_.begin()->first;
                    clock_.wait_until(wake_, lock.native(), next);
                }
            }
            try {
                handle(seq);
            } catch (...) {  // NOLINT(bugprone-empty-catch): out of memory; the message is held
            }
        }
    }

    // drain: handles what falls due until nothing is held or the deadline passes.
    void drain_until(TimePoint deadline) {
        for (;;) {
            if (workers_.empty()) {
                run_due();
            }
            detail::UniqueLock lock(mutex_);
            // Done when nothing is scheduled or in flight (parked messages wait for stop()).
            if ((due_.empty() && in_flight_ == 0) || clock_.now() >= deadline) {
                break;
            }
            if (!workers_.empty()) {
                // The workers notify idle_ at the end of every turn.
                clock_.wait_until(idle_, lock.native(), deadline);
                continue;
            }
            const TimePoint next =
                due_.empty() ? deadline : std::min(deadline, due_.begin()->first);
            if (next > clock_.now()) {
                clock_.wait_until(idle_, lock.native(), next);
            }
        }
    }

    void shut_down_workers() noexcept {
        {
            detail::LockGuard lock(mutex_);
            quit_ = true;
            wake_.notify_all();
        }
        for (std::thread& w : workers_) {
            if (w.joinable()) {
                w.join();
            }
        }
        workers_.clear();
    }

    const Handler handler_;
    DeadLetterStore& store_;
    RetryOptions retry_;
    const RetryQueueOptions options_;
    Clock& clock_;
    Encoder encode_;
    const std::uint64_t seed_;

    mutable detail::Mutex mutex_;
    std::condition_variable wake_;  // a message was queued or rescheduled; or quit
    std::condition_variable idle_;  // a message left, or an attempt ended
    // Every message held, by sequence; an entry is erased or moved only by the thread that
    // claimed it, so a claimer may use its entry without the lock while it is in flight.
    std::map<std::uint64_t, Entry> entries_ BULWARK_GUARDED_BY(mutex_);
    // The schedule: (next attempt, sequence) of every message waiting (not in flight).
    std::set<std::pair<TimePoint, std::uint64_t>> due_ BULWARK_GUARDED_BY(mutex_);
    std::uint64_t next_seq_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::size_t in_flight_ BULWARK_GUARDED_BY(mutex_) = 0;
    bool stopped_ BULWARK_GUARDED_BY(mutex_) = false;
    bool claiming_ BULWARK_GUARDED_BY(mutex_) = true;  // false once stop() keeps what is left
    bool quit_ BULWARK_GUARDED_BY(mutex_) = false;
    bool stop_done_ BULWARK_GUARDED_BY(mutex_) = false;
    RetryQueueStats stats_ BULWARK_GUARDED_BY(mutex_);
    std::vector<std::thread> workers_;
};

}  // namespace bulwark

#endif  // BULWARK_RETRY_QUEUE_HPP

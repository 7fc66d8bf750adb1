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
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include <bulwark/classify.hpp>
#include <bulwark/clock.hpp>
#include <bulwark/dead_letter_store.hpp>
#include <bulwark/delivery_error.hpp>
#include <bulwark/detail/dead_letter_index.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/random.hpp>
#include <bulwark/detail/retry_queue_state.hpp>
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
    // Durable mode (a QueueStore): how long a claimed message stays leased to this queue. A
    // worker or process that dies holding it gives it back when the lease runs out, so choose
    // it longer than the longest attempt (and dead-letter add): an attempt that outlasts it may
    // be delivered twice. In [1 ms, 24 h]; unused in memory.
    Duration lease = std::chrono::seconds(30);

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
        if (lease < std::chrono::milliseconds(1) || lease > std::chrono::hours(24)) {
            detail::throw_invalid_option("RetryQueueOptions.lease", "must be in [1ms, 24h]",
                                         detail::format_duration(lease));
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
    // Durable mode: payloads that could not be read (not this queue's encoding, a version it
    // does not know, truncated, or the Decoder threw), each dead-lettered as such when seen.
    std::uint64_t corrupt = 0;
    // Durable mode: a turn ended after its lease had run out (complete or release refused): the
    // message was, or will be, claimed again — a duplicate delivery, never a loss.
    std::uint64_t lost_leases = 0;
    // Durable mode: a QueueStore call that threw (the message stays in the store; a lease that
    // was not ended runs out and the message comes back).
    std::uint64_t store_failures = 0;
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
//
// Durable when given a QueueStore: the messages and their retry state (attempts, history,
// backoff) live in the store, not in the queue. A turn claims a due message with a lease
// (RetryQueueOptions::lease), handles it, then completes it (delivered, or dead-lettered: the
// add comes first) or releases it with its next due time and new state. A worker or process that
// dies mid-turn loses nothing: its lease runs out and the message is handled again (at least
// once). A queue made on a store that already holds messages (a previous process's) takes them
// up when due, or when their old lease runs out. stop() then leaves what is left in the store.
//   bulwark::RetryQueue<std::string> queue(send, dead_letters, queue_store, retry, options);
// Thread-safe.
template <class Message>
class RetryQueue {
public:
    using Handler = std::function<void(const Message&)>;
    // The bytes a dead letter (and, in durable mode, the queue store) carries for a message.
    using Encoder = std::function<std::string(const Message&)>;
    // Durable mode: a message back from the encoder's bytes. It may throw: the message is then
    // dead-lettered as corrupt (stats().corrupt), with its bytes.
    using Decoder = std::function<Message(const std::string&)>;

    // `store` and `clock` must outlive the queue. Throws std::invalid_argument for invalid
    // options, an empty handler, or a non-string Message without an encoder.
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    RetryQueue(Handler handler, DeadLetterStore& store, RetryOptions retry = {},
               std::size_t workers = 0)
        : RetryQueue(std::move(handler), store, std::move(retry), with_workers(workers)) {}

    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    RetryQueue(Handler handler, DeadLetterStore& store, RetryOptions retry,
               RetryQueueOptions options, Clock& clock = default_clock(), Encoder encode = {})
        : RetryQueue(std::move(handler), store, nullptr, std::move(retry), std::move(options),
                     clock, std::move(encode), {}) {}

    // Durable: `queue_store` holds the messages (see above); it, `store` and `clock` must
    // outlive the queue, and no other queue may use `queue_store` at the same time (a later
    // one, after this one has stopped, picks up what it left). Store times are the clock's
    // wall_now(). A Message that is not a string needs an encoder and a decoder.
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    RetryQueue(Handler handler, DeadLetterStore& store, QueueStore& queue_store,
               RetryOptions retry = {}, std::size_t workers = 0)
        : RetryQueue(std::move(handler), store, &queue_store, std::move(retry),
                     with_workers(workers), default_clock(), {}, {}) {}

    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    RetryQueue(Handler handler, DeadLetterStore& store, QueueStore& queue_store, RetryOptions retry,
               RetryQueueOptions options, Clock& clock = default_clock(), Encoder encode = {},
               Decoder decode = {})
        : RetryQueue(std::move(handler), store, &queue_store, std::move(retry), std::move(options),
                     clock, std::move(encode), std::move(decode)) {}

private:
    RetryQueue(Handler handler, DeadLetterStore& store, QueueStore* queue_store, RetryOptions retry,
               RetryQueueOptions options, Clock& clock, Encoder encode, Decoder decode)
        : handler_(std::move(handler)),
          store_(store),
          queue_store_(queue_store),
          retry_(std::move(retry)),
          options_(std::move(options)),
          clock_(clock),
          encode_(std::move(encode)),
          decode_(std::move(decode)),
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
        if (queue_store_ != nullptr && !decode_) {
            if constexpr (std::is_constructible<Message, const std::string&>::value) {
                decode_ = [](const std::string& bytes) {
                    return Message(bytes);
                };
            } else {
                detail::throw_invalid_argument(
                    "bulwark::RetryQueue: a Message that is not a string needs a decoder to be "
                    "read back from its queue store");
            }
        }
        workers_.reserve(options_.workers);
        try {
            for (std::size_t i = 0; i < options_.workers; ++i) {
                if (queue_store_ != nullptr) {
                    workers_.emplace_back([this] { work_durable(); });
                } else {
                    workers_.emplace_back([this] { work(); });
                }
            }
        } catch (...) {
            shut_down_workers();
            throw;
        }
    }

public:
    RetryQueue(const RetryQueue&) = delete;
    RetryQueue& operator=(const RetryQueue&) = delete;

    // Stops the workers after their current attempt. Messages still queued are dropped with the
    // queue (call stop() first to get them back); in durable mode they stay in the store.
    ~RetryQueue() { shut_down_workers(); }

    // Queues `message` for an attempt now; returns its id. Throws QueueFullError when the queue
    // holds max_size messages, QueueStoppedError after stop().
    std::string enqueue(Message message) { return enqueue_at(std::move(message), clock_.now()); }

    // Queues `message` for its first attempt at `when` (on the queue's clock). In durable mode it
    // returns once the store holds the message; max_size is then checked against the store's
    // size (enqueues racing each other may pass it by a few; the store's own bound is exact),
    // and the store's QueueFullError is counted in rejected_full and rethrown as the queue's.
    std::string enqueue_at(Message message, TimePoint when) {
        if (queue_store_ != nullptr) {
            return enqueue_durable(message, when);
        }
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
        if (queue_store_ != nullptr) {
            return run_due_durable();
        }
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

    // Messages held now (waiting or being handled); in durable mode the store's size (parked
    // messages and those a dead process still leases included).
    std::size_t size() const {
        if (queue_store_ != nullptr) {
            return queue_store_->size();
        }
        detail::LockGuard lock(mutex_);
        return entries_.size();
    }

    // When the earliest waiting message falls due; nullopt when none is waiting. In durable mode
    // the store's next_ready() on the queue's clock (a lease's end counts: its message is
    // claimable again then).
    std::optional<TimePoint> next_due() const {
        if (queue_store_ != nullptr) {
            const std::optional<WallTime> next = queue_store_->next_ready();
            if (!next || *next == WallTime::max()) {
                return std::nullopt;  // empty, or only parked messages
            }
            return to_steady(*next);
        }
        detail::LockGuard lock(mutex_);
        if (due_.empty()) {
            return std::nullopt;
        }
        return due_.begin()->first;
    }

    RetryQueueStats stats() const {
        const std::size_t stored = queue_store_ != nullptr ? queue_store_->size() : 0;
        detail::LockGuard lock(mutex_);
        RetryQueueStats s = stats_;
        s.queued = queue_store_ != nullptr ? stored : entries_.size();
        s.in_flight = in_flight_;
        return s;
    }

    // Refuses further enqueue()s and, with StopMode::drain, goes on handling what falls due
    // (on the workers, or here when there are none) until nothing is left or `timeout` on the
    // queue's clock has passed; then waits for the attempts in flight and stops the workers.
    // Returns the messages neither delivered nor dead-lettered, in the order of their next
    // attempt: nothing is dropped. Call it once; later calls return nothing.
    // In durable mode it returns nothing: what is left stays in the store, where a queue made
    // on it later picks it up.
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
            return in_flight_ == 0 && busy_ == 0;  // (mutex_ is held while the predicate runs)
        });
        if (queue_store_ != nullptr) {
            stop_done_ = true;
            idle_.notify_all();
            return {};
        }
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
            static_cast<void>(turn(*entry, seq));
        } catch (...) {
            // Out of memory in the bookkeeping (finish() cannot throw, so the message is still
            // held): it stays held — stop() returns it — and is tried again if the schedule can
            // take it.
            detail::LockGuard lock(mutex_);
            release(*entry, seq);
            throw;
        }
    }

    // How a turn ended.
    enum class Fate : std::uint8_t {
        delivered,
        retry,          // next_at set
        dead_lettered,  // in the dead-letter store
        store_refused,  // the dead-letter store refused for now: again at next_at
        parked,         // the dead-letter store can never take it
    };

    // A turn of `claimed`: the handler (unless it is bound for the dead-letter store), the
    // classification, the stats. In memory, also its bookkeeping under the lock; a durable
    // caller does its store steps from the Fate. `seq` is its jitter stream (and, in memory, its
    // key).
    Fate turn(Entry& claimed, std::uint64_t seq) {
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
                if (queue_store_ == nullptr) {
                    finish(seq);
                }
                return Fate::delivered;
            }
            if (schedule_retry(*entry, seq, error, verdict)) {
                if (queue_store_ == nullptr) {
                    reschedule(*entry, seq);
                }
                return Fate::retry;
            }
        }
        return dead_letter(*entry, seq);
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
            v.classifier_error = " (its classification threw: " +
                                 detail::describe_exception(std::current_exception()) + ")";
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
        entry.error = detail::clip_text(detail::describe_exception(error), max_error_bytes);
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

    // Hands the message, bound for the store, to it with the lock released (a durable store
    // syncs). If the store refuses, the message stays here and is tried again after the backoff.
    Fate dead_letter(Entry& entry, std::uint64_t seq) {
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
            if (queue_store_ == nullptr) {
                finish(seq);
            }
            return Fate::dead_lettered;
        }
        ++stats_.dead_letter_failures;
        if (permanent) {
            // Held, off the schedule: stop() hands it back (durable: it stays in the store).
            // Retrying could not help.
            ++stats_.parked;
            if (queue_store_ == nullptr) {
                --in_flight_;
                idle_.notify_all();
            }
            return Fate::parked;
        }
        // A store that refuses for now (full, poisoned, an I/O error): again later, waiting
        // longer each time, up to 5 minutes (not the retry backoff: this is the store's state,
        // not the message's).
        const Duration wait =
            std::min<Duration>(std::max<Duration>(2 * entry.store_wait, std::chrono::seconds(1)),
                               std::chrono::minutes(5));
        entry.store_wait = wait;
        entry.next_at = detail::saturating_add(clock_.now(), wait);
        if (queue_store_ == nullptr) {
            reschedule(entry, seq);
        }
        return Fate::store_refused;
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

    // Durable mode. Invariants: the queue holds no message itself, only the store does; a claimed
    // message is the claiming thread's until its complete() or release() (or its lease runs
    // out); busy_ counts the threads between deciding to claim and the end of the turn, so that
    // stop() and the drain can wait for them.

    // The wall time of `t` on the queue's clock, and back: store times outlive the process.
    WallTime to_wall(TimePoint t) const noexcept {
        const Duration ahead =
            detail::saturating_sub(t.time_since_epoch(), clock_.now().time_since_epoch());
        return WallTime{detail::saturating_add(clock_.wall_now().time_since_epoch(), ahead)};
    }

    TimePoint to_steady(WallTime w) const noexcept {
        const Duration ahead =
            detail::saturating_sub(w.time_since_epoch(), clock_.wall_now().time_since_epoch());
        return detail::saturating_add(clock_.now(), ahead);
    }

    std::string enqueue_durable(const Message& message, TimePoint when) {
        std::uint64_t seq = 0;
        {
            detail::LockGuard lock(mutex_);
            if (stopped_) {
                throw QueueStoppedError("bulwark::RetryQueue '" + options_.name +
                                        "': enqueue() after stop()");
            }
            seq = next_seq_++;
        }
        if (queue_store_->size() >= options_.max_size) {
            full("retry queue '" + options_.name + "' is full (max_size " +
                 std::to_string(options_.max_size) + ")");
        }
        // The id's bits are drawn from the queue's random seed, so a later process on the same
        // store does not reuse an id (nor a jitter stream).
        const std::uint64_t bits = detail::SplitMix64::at(seed_, seq);
        detail::RetryQueueState state;
        state.stream = bits;
        QueuedMessage queued;
        queued.id = detail::format_dead_letter_id(bits);
        queued.payload = detail::encode_retry_queue_state(state, encode_(message));
        queued.due = to_wall(when);
        queued.enqueued = clock_.wall_now();
        try {
            queue_store_->push(queued);
        } catch (const QueueFullError& e) {
            full(e.what());
        }
        detail::LockGuard lock(mutex_);
        ++stats_.enqueued;
        ++changes_;
        wake_.notify_one();
        return std::move(queued.id);
    }

    [[noreturn]] BULWARK_NOINLINE void full(const std::string& why) {
        {
            detail::LockGuard lock(mutex_);
            ++stats_.rejected_full;
        }
        throw QueueFullError(std::make_shared<const std::string>(options_.name), why);
    }

    // Claims one message ready now, or none (then busy_ is already released). Claiming one at
    // a time keeps every lease fresh: nothing waits leased behind a slow attempt.
    std::optional<QueuedMessage> claim_one() {
        {
            detail::LockGuard lock(mutex_);
            if (!claiming_) {
                return std::nullopt;
            }
            ++busy_;
        }
        std::vector<QueuedMessage> batch;
        try {
            batch = queue_store_->claim(clock_.wall_now(), 1, options_.lease);
        } catch (...) {
            detail::LockGuard lock(mutex_);
            ++stats_.store_failures;
            not_busy();
            throw;
        }
        if (batch.empty()) {
            detail::LockGuard lock(mutex_);
            not_busy();
            return std::nullopt;
        }
        return std::move(batch.front());
    }

    void not_busy() BULWARK_REQUIRES(mutex_) {
        --busy_;
        ++changes_;
        wake_.notify_one();
        idle_.notify_all();
    }

    // As run_due(): the messages ready when it is called. One that became due after the call,
    // or that this call already handled (a zero-backoff retry), goes back unchanged and ends it.
    std::size_t run_due_durable() {
        const WallTime call = clock_.wall_now();
        std::unordered_set<std::string> seen;
        std::size_t done = 0;
        for (;;) {
            std::optional<QueuedMessage> claimed = claim_one();
            if (!claimed) {
                return done;
            }
            if (claimed->due > call || !seen.insert(claimed->id).second) {
                give_back(*claimed);
                return done;
            }
            handle_durable(std::move(*claimed));
            ++done;
        }
    }

    // Ends a lease without a turn: the message is as it was, ready at its due time.
    void give_back(const QueuedMessage& claimed) noexcept {
        bool failed = false;
        try {
            static_cast<void>(queue_store_->release(claimed));
        } catch (...) {
            failed = true;  // its lease runs out instead
        }
        detail::LockGuard lock(mutex_);
        stats_.store_failures += failed ? 1 : 0;
        not_busy();
    }

    // One turn of a claimed message (busy_ counted by the claimer, released here), then its store
    // step: the dead-letter add before complete(), so a crash between them leaves the message
    // in the store (handled again: the add is repeated, a no-op while the dead-letter store holds
    // the id), never lost.
    void handle_durable(QueuedMessage claimed) {
        struct Done {
            RetryQueue* self;
            ~Done() {
                detail::LockGuard lock(self->mutex_);
                self->not_busy();
            }
        } done{this};
        detail::RetryQueueState state;
        std::string bytes;
        if (const char* why = detail::decode_retry_queue_state(claimed.payload, state, bytes)) {
            corrupt(claimed, claimed.payload, why);
            return;
        }
        std::optional<Message> message;
        try {
            message.emplace(decode_(bytes));
        } catch (...) {
            corrupt(claimed, bytes,
                    "the decoder threw: " + detail::describe_exception(std::current_exception()));
            return;
        }
        Entry entry(claimed.id, std::move(*message));
        entry.attempts = state.attempts;
        entry.first_try = state.attempts == 0 ? clock_.now() : to_steady(state.first_try);
        entry.previous = state.previous;
        entry.store_wait = state.store_wait;
        entry.history = std::move(state.history);
        entry.dead = state.dead || state.parked;  // a parked one tries the add once more
        entry.reason = state.reason;
        entry.error = std::move(state.error);
        {
            detail::LockGuard lock(mutex_);
            ++in_flight_;
        }
        Fate fate = Fate::retry;
        try {
            fate = turn(entry, state.stream);
        } catch (...) {
            // Out of memory in the bookkeeping: the lease is not ended, so the message comes
            // back when it runs out.
            detail::LockGuard lock(mutex_);
            --in_flight_;
            throw;
        }
        {
            detail::LockGuard lock(mutex_);
            --in_flight_;
        }
        bool current = true;
        try {
            if (fate == Fate::delivered || fate == Fate::dead_lettered) {
                current = queue_store_->complete(claimed.id, claimed.lease);
            } else {
                state.attempts = entry.attempts;
                state.first_try = to_wall(entry.first_try);
                state.previous = entry.previous;
                state.store_wait = entry.store_wait;
                state.dead = entry.dead;
                state.parked = fate == Fate::parked;
                state.reason = entry.reason;
                state.error = std::move(entry.error);
                state.history = std::move(entry.history);
                claimed.payload = detail::encode_retry_queue_state(state, bytes);
                // Parked: off the schedule (claim() never reaches the end of time); it stays
                // in the store for an operator (list(), remove()).
                claimed.due = state.parked ? WallTime::max() : to_wall(entry.next_at);
                claimed.attempts = entry.attempts;
                current = queue_store_->release(claimed);
            }
        } catch (...) {
            detail::LockGuard lock(mutex_);
            ++stats_.store_failures;
            return;
        }
        if (!current) {
            detail::LockGuard lock(mutex_);
            ++stats_.lost_leases;
        }
    }

    // A payload this queue cannot read: dead-lettered as it is (the message's own bytes when
    // only the decoder failed), so that nothing is skipped silently. If the dead-letter store
    // refuses, it goes back to the queue store: in a minute, or parked for good.
    void corrupt(QueuedMessage& claimed, const std::string& payload, const std::string& why) {
        DeadLetter letter;
        letter.id = claimed.id;
        letter.type = options_.type;
        letter.payload = payload;
        letter.error = detail::clip_text("corrupt queue payload: " + why, max_error_bytes);
        letter.reason = DeadLetterReason::not_retryable;
        letter.created = clock_.wall_now();
        {
            detail::LockGuard lock(mutex_);
            ++stats_.corrupt;
        }
        bool permanent = false;
        bool added = false;
        try {
            store_.add(std::move(letter));
            added = true;
        } catch (const DeadLetterTooLargeError&) {
            permanent = true;
        } catch (const std::invalid_argument&) {
            permanent = true;
        } catch (...) {  // NOLINT(bugprone-empty-catch): it goes back to the store, below
        }
        bool current = true;
        try {
            if (added) {
                current = queue_store_->complete(claimed.id, claimed.lease);
            } else {
                claimed.due =
                    permanent
                        ? WallTime::max()
                        : to_wall(detail::saturating_add(clock_.now(), std::chrono::minutes(1)));
                current = queue_store_->release(claimed);
            }
        } catch (...) {
            detail::LockGuard lock(mutex_);
            ++stats_.store_failures;
            return;
        }
        detail::LockGuard lock(mutex_);
        stats_.dead_lettered += added ? 1 : 0;
        stats_.dead_letter_failures += added ? 0 : 1;
        stats_.parked += permanent ? 1 : 0;
        stats_.lost_leases += current ? 0 : 1;
    }

    // A durable worker: claims what is ready, waits for the store's next ready time (or an
    // enqueue, a release) otherwise.
    void work_durable() {
        for (;;) {
            std::uint64_t seen = 0;
            {
                detail::UniqueLock lock(mutex_);
                for (;;) {
                    if (quit_) {
                        return;
                    }
                    if (claiming_) {
                        break;
                    }
                    wake_.wait(lock.native());  // until quit_: stop() is ending
                }
                seen = changes_;
            }
            std::optional<WallTime> next;
            try {
                std::optional<QueuedMessage> claimed = claim_one();
                if (claimed) {
                    handle_durable(std::move(*claimed));
                    continue;
                }
                try {
                    next = queue_store_->next_ready();
                } catch (...) {
                    detail::LockGuard lock(mutex_);
                    ++stats_.store_failures;
                    throw;
                }
            } catch (...) {
                // A store that fails (counted where it failed), or out of memory: the message, if
                // any, stays in the store. Wait a second before asking it again.
                detail::UniqueLock lock(mutex_);
                if (!quit_) {
                    clock_.wait_until(
                        wake_, lock.native(),
                        detail::saturating_add(clock_.now(), std::chrono::seconds(1)));
                }
                continue;
            }
            detail::UniqueLock lock(mutex_);
            if (quit_ || changes_ != seen) {
                continue;  // something changed since the claim: look again
            }
            const TimePoint until =
                !next || *next == WallTime::max() ? TimePoint::max() : to_steady(*next);
            clock_.wait_until(wake_, lock.native(), until);
        }
    }

    // drain: handles what falls due until nothing is held or the deadline passes.
    void drain_until(TimePoint deadline) {
        for (;;) {
            if (workers_.empty()) {
                run_due();
            }
            std::uint64_t seen = 0;
            {
                detail::LockGuard lock(mutex_);
                seen = changes_;
            }
            // Durable: what the store holds next, read without the lock (the store has its own);
            // changes_ tells whether a turn ended meanwhile. The end of time: nothing, or only
            // parked messages.
            WallTime ready = WallTime::max();
            if (queue_store_ != nullptr) {
                ready = queue_store_->next_ready().value_or(WallTime::max());
            }
            detail::UniqueLock lock(mutex_);
            // Done when nothing is scheduled or in flight (parked messages wait for stop()).
            const bool scheduled =
                queue_store_ != nullptr ? ready != WallTime::max() : !due_.empty();
            if ((!scheduled && in_flight_ == 0 && busy_ == 0) || clock_.now() >= deadline) {
                break;
            }
            if (changes_ != seen) {
                continue;
            }
            if (!workers_.empty()) {
                // The workers notify idle_ at the end of every turn.
                clock_.wait_until(idle_, lock.native(), deadline);
                continue;
            }
            TimePoint next = deadline;
            if (queue_store_ != nullptr) {
                next = std::min(deadline, to_steady(ready));
            } else if (!due_.empty()) {
                next = std::min(deadline, due_.begin()->first);
            }
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
    QueueStore* const queue_store_;  // durable mode when set
    RetryOptions retry_;
    const RetryQueueOptions options_;
    Clock& clock_;
    Encoder encode_;
    Decoder decode_;
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
    // Durable mode: threads claiming or in a turn (see above).
    std::size_t busy_ BULWARK_GUARDED_BY(mutex_) = 0;
    // Bumped whenever the store may hold something newly ready (an enqueue, the end of a turn),
    // so that a thread about to wait knows whether what it read is stale.
    std::uint64_t changes_ BULWARK_GUARDED_BY(mutex_) = 0;
    bool stopped_ BULWARK_GUARDED_BY(mutex_) = false;
    bool claiming_ BULWARK_GUARDED_BY(mutex_) = true;  // false once stop() keeps what is left
    bool quit_ BULWARK_GUARDED_BY(mutex_) = false;
    bool stop_done_ BULWARK_GUARDED_BY(mutex_) = false;
    RetryQueueStats stats_ BULWARK_GUARDED_BY(mutex_);
    std::vector<std::thread> workers_;
};

}  // namespace bulwark

#endif  // BULWARK_RETRY_QUEUE_HPP

// Multi-channel delivery: Receipt, MessageStatus, DeliveryAttempt, DeliveryStats, DeliveryEngine.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DELIVERY_HPP
#define BULWARK_DELIVERY_HPP

#include <algorithm>
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
#include <unordered_map>
#include <utility>
#include <vector>

#include <bulwark/backoff.hpp>
#include <bulwark/classify.hpp>
#include <bulwark/clock.hpp>
#include <bulwark/config.hpp>
#include <bulwark/context.hpp>
#include <bulwark/dead_letter_store.hpp>
#include <bulwark/delivery_error.hpp>
#include <bulwark/delivery_stats.hpp>
#include <bulwark/detail/dead_letter_index.hpp>
#include <bulwark/detail/journal.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/random.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/detail/traits.hpp>
#include <bulwark/errors.hpp>
#include <bulwark/events.hpp>
#include <bulwark/fallback_chain.hpp>
#include <bulwark/in_memory_queue_store.hpp>
#include <bulwark/inline_vector.hpp>
#include <bulwark/message_status.hpp>
#include <bulwark/metrics_writer.hpp>
#include <bulwark/queue_store.hpp>
#include <bulwark/retry_queue.hpp>
#include <bulwark/time.hpp>

namespace bulwark {

namespace detail {

template <class T, class M, class = void>
struct has_send : std::false_type {};
template <class T, class M>
struct has_send<T, M, std::void_t<decltype(std::declval<T&>().send(std::declval<const M&>()))>>
    : std::true_type {};

template <class T, class M, class = void>
struct has_send_with_context : std::false_type {};
template <class T, class M>
struct has_send_with_context<T, M,
                             std::void_t<decltype(std::declval<T&>().send(
                                 std::declval<const M&>(), std::declval<Context&>()))>>
    : std::true_type {};

}  // namespace detail

// What a channel adapter returns for a message it accepted.
struct Receipt {
    std::string provider;     // who took it (a channel may front several providers)
    std::string external_id;  // the provider's id for it: confirm() finds the message by it
    double cost = 0.0;        // what the send cost; 0 = the channel's ChannelOptions::cost
    bool delivered = false;   // already delivered (no delivery receipt will follow)
};

// One channel considered for a message: an adapter call, or a channel passed over.
struct DeliveryAttempt {
    std::uint32_t number = 0;  // 1-based over the message's attempts (since submit or redrive)
    std::uint32_t pass = 0;    // the queue pass: 1 for the first, + 1 per retry
    std::string channel;
    std::string provider;       // from the receipt (empty unless it delivered)
    WallTime at{};              // when it started
    Duration response_time{0};  // the adapter call's duration; 0 when not called
    bool ok = false;            // the channel accepted the message
    // Not called, and why (breaker open, rate limited, cost, quality); none when called.
    FallbackReason skipped = FallbackReason::none;
    // Why the channel before it in the same pass did not deliver; none for a pass's first.
    FallbackReason fallback_reason = FallbackReason::none;
    DeliveryErrorKind kind = DeliveryErrorKind::unknown;  // the failure's kind (when it failed)
    std::string external_id;                              // from the receipt
    std::string error;                                    // the failure, as text
    std::string code;                                     // the provider's error code
    double cost = 0.0;                                    // what it cost
};

// A message moved from one status to another. The views are valid during the listener call.
struct StatusChange {
    std::string_view id;
    MessageStatus from = MessageStatus::queued;
    MessageStatus to = MessageStatus::queued;
    WallTime at{};
    std::string_view channel;  // the channel that sent it (sent and later); empty otherwise
};

// What the engine knows of one message.
struct MessageInfo {
    std::string id;
    MessageStatus status = MessageStatus::queued;
    // When it last entered each status (indexed by MessageStatus); zero = never.
    std::array<WallTime, message_status_count> since{};
    std::vector<std::string> channels;  // as submitted (or forced by a redrive)
    std::string channel;                // the channel that sent it
    std::string external_id;            // the provider's id for it
    std::string error;                  // the last failure
    std::string dead_letter_id;         // set once dead-lettered
    std::uint32_t passes = 0;           // queue passes made
};

// A message stop() handed back (the engine's own in-memory queue only).
template <class Message>
struct PendingDelivery {
    std::string id;
    Message message;
    std::vector<std::string> channels;
    WallTime due{};
};

// A DeliveryEngine's options; validate() throws std::invalid_argument naming the field.
//   bulwark::DeliveryEngineOptions o;  o.workers = 4;  o.max_passes = 8;
struct DeliveryEngineOptions {
    // Names the engine in its errors, metrics, dead letters' tags. Not empty. Default "delivery".
    std::string name = "delivery";
    // Background workers, started by the first submit() or by start(); 0 = none: drive the
    // engine with run_due() (tests on a ManualClock do). <= 256. Default 2.
    std::size_t workers = 2;
    // Messages a worker leases per pass over the queue. In [1, 10000]. Default 50.
    std::size_t batch_size = 50;
    // The visibility timeout: a leased message whose worker has not finished it by then is
    // handed out again (a worker or a process died). Longer than the slowest attempt (all its
    // channels and their retries). > 0. Default 5 minutes.
    Duration lease = std::chrono::minutes(5);
    // Queue passes per message (each tries its route once); after the last one fails it is
    // dead-lettered. >= 1. Default 5.
    std::uint32_t max_passes = 5;
    // The wait before pass n + 1 (Backoff::delay(n, previous)); a channel's retry_after (rate
    // limited) or an open breaker's wait lengthens it. Default exponential from 1 s, at most
    // 5 minutes.
    Backoff backoff =
        Backoff::exponential(std::chrono::seconds(1)).max_delay(std::chrono::minutes(5));
    // A message first tried longer ago than this is dead-lettered rather than retried. 0 = no
    // limit. >= 0. Default 24 hours.
    Duration max_elapsed = std::chrono::hours(24);
    // The engine keeps the status and attempts of finished messages (sent and later) for
    // track_for, at most max_tracked of them (the oldest finished are forgotten first); a
    // message still queued or sending is always kept. max_tracked >= 1, track_for > 0.
    std::size_t max_tracked = 100000;
    Duration track_for = std::chrono::hours(24);
    // Attempts kept per message for attempts() (the newest). >= 1. Default 64.
    std::size_t max_attempts_kept = 64;
    // Redriven dead letters are released at most this many per second, so that a bulk redrive
    // cannot flood a provider that just recovered. > 0. Default 10.
    double redrive_rate = 10.0;
    // stats(from, to) reaches back this far, in one-minute buckets. In [1 minute, 7 days].
    // Default 1 hour.
    Duration stats_window = std::chrono::hours(1);
    // Idle workers look at the queue store at least this often (another process may share it).
    // > 0. Default 1 second.
    Duration poll_interval = std::chrono::seconds(1);
    // Error texts (an adapter's exception, a route that could not run) pass through it before
    // the engine records them: in attempts() and dead letters. Empty = recorded
    // as thrown. Payloads are kept as they are, since a redrive resends them: redact them where
    // they are shown (AdminOptions::redact). redact_defaults() masks e-mail addresses and long
    // numbers.
    Redactor redact;
    // How the routing chain orders channels a rule does not order, and its thresholds.
    Selection selection = Selection::priority;
    ChainOptions chain;

    void validate() const {
        if (name.empty()) {
            detail::throw_invalid_option("DeliveryEngineOptions.name", "must not be empty", "\"\"");
        }
        if (workers > 256) {
            detail::throw_invalid_option("DeliveryEngineOptions.workers", "must be <= 256",
                                         std::to_string(workers));
        }
        if (batch_size < 1 || batch_size > 10000) {
            detail::throw_invalid_option("DeliveryEngineOptions.batch_size",
                                         "must be in [1, 10000]", std::to_string(batch_size));
        }
        positive(lease, "DeliveryEngineOptions.lease");
        if (max_passes < 1) {
            detail::throw_invalid_option("DeliveryEngineOptions.max_passes", "must be >= 1", "0");
        }
        if (max_elapsed < Duration::zero()) {
            detail::throw_invalid_option("DeliveryEngineOptions.max_elapsed", "must be >= 0",
                                         detail::format_duration(max_elapsed));
        }
        if (max_tracked < 1) {
            detail::throw_invalid_option("DeliveryEngineOptions.max_tracked", "must be >= 1", "0");
        }
        positive(track_for, "DeliveryEngineOptions.track_for");
        if (max_attempts_kept < 1) {
            detail::throw_invalid_option("DeliveryEngineOptions.max_attempts_kept", "must be >= 1",
                                         "0");
        }
        if (!(redrive_rate >= 1.0 / 86400.0 && redrive_rate <= 1e9)) {
            detail::throw_invalid_option("DeliveryEngineOptions.redrive_rate",
                                         "must be in [1/86400 (one a day), 1e9] per second",
                                         detail::format_number(redrive_rate));
        }
        if (stats_window < std::chrono::minutes(1) || stats_window > std::chrono::hours(24 * 7)) {
            detail::throw_invalid_option("DeliveryEngineOptions.stats_window",
                                         "must be in [1 minute, 7 days]",
                                         detail::format_duration(stats_window));
        }
        positive(poll_interval, "DeliveryEngineOptions.poll_interval");
        detail::check_enumerator(selection, Selection::least_cost,
                                 "DeliveryEngineOptions.selection", "Selection");
        chain.validate();
    }

private:
    static void positive(Duration d, const char* field) {
        if (d <= Duration::zero()) {
            detail::throw_invalid_option(field, "must be > 0", detail::format_duration(d));
        }
    }
};

// What a DeliveryEngine has done, as counters since it was made.
struct DeliveryEngineCounters {
    std::uint64_t submitted = 0;              // messages accepted by submit()/submit_at()
    std::uint64_t redriven = 0;               // dead letters put back in the queue
    std::uint64_t retries = 0;                // passes rescheduled after a failure
    std::uint64_t duplicates_suppressed = 0;  // leased again after being sent: not resent
    std::uint64_t lease_lost = 0;             // a pass finished after its lease had been taken over
    std::uint64_t dead_letter_failures = 0;   // the dead-letter store refused a letter (retried)
    std::uint64_t undecodable = 0;  // queued bytes that could not be read (dead-lettered raw)
    std::array<std::uint64_t, message_status_count> entered{};  // moves into each status
};

// Delivers messages over channels, with fallback, retries, tracking and dead-lettering.
//   bulwark::DeliveryEngine<Notification> engine(rules, dead_letters);
//   engine.add_channel("email", email_adapter);        // Receipt send(const Notification&)
//   std::string id = engine.submit(notification, {"email"});
//   engine.status(id);  engine.attempts(id);  engine.stats();
// Each message is stored in a QueueStore (the engine's own in-memory one unless given one),
// leased by a worker for a pass over its route (its primary channel and that channel's
// FallbackRule, or an explicit list of channels) through a FallbackChain with each channel's
// breaker, retry and rate limiter; a pass that fails is retried after a backoff, a message that
// cannot be delivered goes to the DeadLetterStore with its history. See docs/delivery.md.
// Thread-safe: every member may be called from any thread.
template <class Message>
class DeliveryEngine {
public:
    // Turns a message into the bytes the queue and dead-letter stores keep, and back. A string
    // Message needs neither.
    using Encoder = std::function<std::string(const Message&)>;
    using Decoder = std::function<Message(std::string_view)>;
    using Adapter = std::function<Receipt(const Message&, Context&)>;

    // The engine's own in-memory queue. `rules` may name channels added later; `dead_letters`
    // and `clock` must outlive the engine.
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    DeliveryEngine(FallbackRules rules, DeadLetterStore& dead_letters,
                   DeliveryEngineOptions options = {}, Clock& clock = default_clock())
        : DeliveryEngine(std::move(rules), dead_letters, nullptr, std::move(options), clock) {}

    // Messages are kept in `queue` (a FileQueueStore makes them survive a crash; other
    // processes may share it); it must outlive the engine.
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    DeliveryEngine(FallbackRules rules, DeadLetterStore& dead_letters, QueueStore& queue,
                   DeliveryEngineOptions options = {}, Clock& clock = default_clock())
        : DeliveryEngine(std::move(rules), dead_letters, &queue, std::move(options), clock) {}

    DeliveryEngine(const DeliveryEngine&) = delete;
    DeliveryEngine& operator=(const DeliveryEngine&) = delete;

    // Stops the workers after their current message; queued messages stay in the queue store
    // (and are lost with the engine's own in-memory one: call stop() first to get them back).
    ~DeliveryEngine() { shut_down(); }

    // Sets how messages become bytes (required before the first submit when Message is not a
    // string). Throws std::invalid_argument for an empty function.
    DeliveryEngine& codec(Encoder encode, Decoder decode) {
        if (!encode || !decode) {
            detail::throw_invalid_argument(
                "bulwark::DeliveryEngine::codec: empty encoder or decoder");
        }
        detail::LockGuard lock(config_mutex_);
        if (started_) {
            throw std::logic_error("bulwark::DeliveryEngine '" + options_.name +
                                   "': codec() after start");
        }
        encode_ = std::move(encode);
        decode_ = std::move(decode);
        plain_codec_ = false;
        return *this;
    }

    // Adds a channel. `adapter` is a callable or an object with a send member, taking the message
    // (and optionally a Context&: its operation() is the message id, an idempotency key) and
    // returning a Receipt; failures are exceptions, classified by `classifier` (DeliveryError
    // says its own kind). It is called from every worker at once. An object with a send member
    // passed as an lvalue is used by reference and must outlive the engine; a callable, or an
    // rvalue, is copied or moved in. Throws std::invalid_argument for an empty or duplicate name,
    // a name with ',', or invalid options. May be called while the engine runs.
    template <class A>
    DeliveryEngine& add_channel(std::string name, A&& adapter, ChannelOptions options = {},
                                DeliveryClassifier classifier = {}) {
        if (name.empty() || name.find(',') != std::string::npos) {
            detail::throw_invalid_option("DeliveryEngine.add_channel: name",
                                         "must be non-empty and without ','", "\"" + name + "\"");
        }
        auto slot = std::make_shared<Slot>();
        // Moved through references of known types: clang-tidy cannot see a move through the
        // dependent `slot->` and would ask for const reference parameters.
        std::string& slot_name = slot->name;
        slot_name = std::move(name);
        DeliveryClassifier& slot_classifier = slot->classifier;
        slot_classifier = std::move(classifier);
        slot->adapter = make_adapter(std::forward<A>(adapter));
        slot->options = options;
        slot->stats = std::make_unique<detail::ChannelStatsCell>(window_buckets());
        detail::LockGuard lock(config_mutex_);
        for (const auto& s : slots_) {
            if (s->name == slot->name) {
                detail::throw_invalid_option("DeliveryEngine.add_channel: name", "must be unique",
                                             "\"" + slot->name + "\" (already added)");
            }
        }
        auto next = slots_;
        next.push_back(slot);
        install(next, rules_, started_);
        slots_ = std::move(next);
        return *this;
    }

    // Replaces the fallback rules; messages being sent finish on the rules they started with.
    // Throws std::invalid_argument (and keeps the old rules) for a rule the chain refuses, or,
    // once the engine has started, one that names a channel not added.
    void set_rules(FallbackRules rules) {
        detail::LockGuard lock(config_mutex_);
        install(slots_, rules, started_);
        rules_ = std::move(rules);
    }

    // Removes the rule for `primary` (its messages then use the global order); false if none.
    bool remove_rule(std::string_view primary) {
        detail::LockGuard lock(config_mutex_);
        FallbackRules next;
        bool found = false;
        for (const auto& [p, rule] : rules_.rules()) {
            if (p == primary) {
                found = true;
            } else {
                next.set(p, rule);
            }
        }
        next.set_global(rules_.global());
        if (found) {
            install(slots_, next, started_);
            rules_ = std::move(next);
        }
        return found;
    }

    FallbackRules rules() const {
        detail::LockGuard lock(config_mutex_);
        return rules_;
    }

    // Enables or disables a channel for the messages sent from now on. Throws
    // std::invalid_argument for an unknown name.
    void set_enabled(std::string_view channel, bool enabled) {
        detail::LockGuard lock(config_mutex_);
        bool found = false;
        for (const auto& s : slots_) {
            if (s->name == channel) {
                s->options.enabled = enabled;
                found = true;
            }
        }
        if (!found) {
            unknown_channel(channel);
        }
        install(slots_, rules_, started_);
    }

    std::vector<std::string> channels() const {
        detail::LockGuard lock(config_mutex_);
        std::vector<std::string> names;
        for (const auto& s : slots_) {
            names.push_back(s->name);
        }
        return names;
    }

    // Checks the rules against the channels and starts the workers (once); the first submit()
    // calls it. Call it to resume the messages a durable queue holds without submitting.
    // Throws std::invalid_argument for a rule naming a channel not added, QueueStoppedError
    // after stop().
    void start() {
        // acquire: pairs with the release below; the codec and the routing are set by then.
        if (live_.load(std::memory_order_acquire)) {
            return;  // stop() clears it first
        }
        {
            detail::LockGuard lock(config_mutex_);
            if (!started_) {
                install(slots_, rules_, true);
                if (!encode_) {
                    default_codec();
                }
                started_ = true;
            }
        }
        detail::LockGuard lock(mutex_);
        if (stopped_) {
            throw QueueStoppedError("bulwark::DeliveryEngine '" + options_.name +
                                    "': start() after stop()");
        }
        if (running_) {
            return;
        }
        running_ = true;
        workers_.reserve(options_.workers);
        try {
            for (std::size_t i = 0; i < options_.workers; ++i) {
                workers_.emplace_back([this] { work(); });
            }
        } catch (...) {
            quit_ = true;
            wake_.notify_all();
            throw;
        }
        live_.store(true, std::memory_order_release);
    }

    // Queues `message` for delivery now over `channels`: one channel = that primary and its
    // FallbackRule (or the global order); several = exactly those, in order; none = the global
    // order (or every channel in the engine's selection order). Returns its id. Throws
    // std::invalid_argument for an unknown channel, QueueFullError when the queue store is full,
    // QueueStoppedError after stop().
    std::string submit(Message message, std::vector<std::string> channels = {}) {
        start();
        check_route(channels);
        const WallTime now = clock_.wall_now();  // one clock read: due now
        return submit_one(message, now, now, channels);
    }

    // As submit(), for its first attempt at `when` (wall time: a scheduled send outlives a
    // restart with a durable queue).
    std::string submit_at(Message message, WallTime when, std::vector<std::string> channels = {}) {
        start();
        check_route(channels);
        return submit_one(message, when, clock_.wall_now(), channels);
    }

    // As submit_at(), with `when` on the engine's clock.
    std::string submit_at(Message message, TimePoint when, std::vector<std::string> channels = {}) {
        return submit_at(std::move(message), to_wall(when), std::move(channels));
    }

    // Queues every message, in one step of the queue store (one durable write for a file
    // store): all of them or, on a throw, none that push_all() did not store.
    std::vector<std::string> submit_batch(std::vector<Message> messages, WallTime when,
                                          std::vector<std::string> channels = {}) {
        start();
        check_route(channels);
        const WallTime now = clock_.wall_now();
        std::vector<QueuedMessage> batch;
        batch.reserve(messages.size());
        for (const Message& m : messages) {
            batch.push_back(make_queued(m, channels, when, now));
        }
        enqueue(batch.data(), batch.size(), channels, now, [&] { queue_->push_all(batch); });
        std::vector<std::string> ids;
        ids.reserve(batch.size());
        for (QueuedMessage& q : batch) {
            ids.push_back(std::move(q.id));
        }
        return ids;
    }

    // Makes one pass over the messages ready now (up to batch_size at a time, until none is
    // ready); returns how many passes it made. For a loop of the caller's own and for tests on
    // a ManualClock; workers may take some messages first. Each claim reads the clock afresh:
    // its lease runs options.lease from then (a pass over a long queue on a real clock would
    // otherwise lease its later batches from the pass's start, already run out, and skip
    // them), so a message that becomes ready during the pass is taken too.
    std::size_t run_due() {
        start();  // throws QueueStoppedError after stop()
        std::size_t done = 0;
        for (;;) {
            std::vector<QueuedMessage> batch =
                queue_->claim(clock_.wall_now(), options_.batch_size, options_.lease);
            if (batch.empty()) {
                return done;
            }
            done += handle_batch(batch);
        }
    }

    // The status of a message the engine still tracks (see DeliveryEngineOptions::max_tracked).
    std::optional<MessageStatus> status(std::string_view id) const {
        detail::LockGuard lock(mutex_);
        const auto it = records_.find(std::string(id));
        if (it == records_.end()) {
            return std::nullopt;
        }
        return it->second.status;
    }

    std::optional<MessageInfo> info(std::string_view id) const {
        detail::LockGuard lock(mutex_);
        const auto it = records_.find(std::string(id));
        if (it == records_.end()) {
            return std::nullopt;
        }
        const Record& r = it->second;
        MessageInfo m;
        m.id = it->first;
        m.status = r.status;
        m.since = r.since;
        if (r.route != nullptr) {
            m.channels = *r.route;
        }
        m.channel = r.channel;
        m.external_id = r.external_id;
        m.error = r.error;
        m.dead_letter_id = r.dead_letter_id;
        m.passes = r.passes;
        return m;
    }

    // The audit trail: every channel considered for the message, oldest first (the newest
    // max_attempts_kept).
    std::vector<DeliveryAttempt> attempts(std::string_view id) const {
        detail::LockGuard lock(mutex_);
        const auto it = records_.find(std::string(id));
        if (it == records_.end()) {
            return {};
        }
        return {it->second.attempts.begin(), it->second.attempts.end()};
    }

    // A provider's delivery receipt: moves the message sent with `external_id` to `status`
    // (delivered, failed or bounced). False when no tracked message has that id, or it is not
    // sent (or delivered, for a late bounce). Throws std::invalid_argument for another status.
    bool confirm(std::string_view external_id, MessageStatus status) {
        if (status != MessageStatus::delivered && status != MessageStatus::failed &&
            status != MessageStatus::bounced) {
            detail::throw_invalid_option("DeliveryEngine.confirm: status",
                                         "must be delivered, failed or bounced", to_string(status));
        }
        StatusChange change;
        std::string id;
        std::string channel;
        {
            detail::LockGuard lock(mutex_);
            const auto e = external_ids_.find(std::string(external_id));
            if (e == external_ids_.end()) {
                return false;
            }
            const auto it = records_.find(e->second);
            if (it == records_.end()) {
                return false;
            }
            Record& r = it->second;
            const bool late_bounce =
                r.status == MessageStatus::delivered && status == MessageStatus::bounced;
            if (r.status != MessageStatus::sent && !late_bounce) {
                return false;
            }
            const WallTime now = clock_.wall_now();
            change.from = r.status;
            change.to = status;
            change.at = now;
            enter(r, status, now);
            id = it->first;
            channel = r.channel;
        }
        change.id = id;
        change.channel = channel;
        listeners_.emit(change);
        return true;
    }

    // Called on every status change, on the thread that made it (a worker, or the caller of
    // submit/confirm/run_due), outside the engine's locks. Returns the id remove_listener()
    // takes; throws std::invalid_argument for an empty listener.
    ListenerId on_status(std::function<void(const StatusChange&)> listener) {
        return listeners_.add(std::move(listener));
    }
    bool remove_listener(ListenerId id) noexcept { return listeners_.remove(id); }

    // Puts a pending dead letter back in the queue, over `force_channels` if given (else its
    // original route). The message keeps its id, its origin and its history; it starts a fresh
    // count of passes. It is released at the redrive rate. False when the letter is not
    // pending or was not made by a DeliveryEngine.
    bool reprocess_dead_letter(const std::string& dead_letter_id,
                               std::vector<std::string> force_channels = {}) {
        return reprocess_dead_letters(DeadLetterQuery{}.id(dead_letter_id),
                                      std::move(force_channels))
                   .resent == 1;
    }

    // reprocess_dead_letter() with the message replaced by `payload`, in the form the engine
    // stores it (DeadLetter::payload's: the bytes a fixer edits). The message keeps its id, its
    // origin and its history; the letter keeps the payload it failed with. Throws
    // std::invalid_argument, and changes nothing, when the codec cannot decode `payload` or it
    // is larger than the dead-letter store takes.
    bool reprocess_dead_letter_with(const std::string& dead_letter_id, std::string payload,
                                    std::vector<std::string> force_channels = {}) {
        start();
        check_route(force_channels);
        check_fits(payload.size());
        if (!plain_codec_) {
            try {
                static_cast<void>(decode_(payload));
            } catch (...) {
                detail::throw_invalid_option("DeliveryEngine.reprocess_dead_letter_with: payload",
                                             "must be a message the codec decodes",
                                             detail::describe_exception(std::current_exception()));
            }
        }
        ReprocessOptions ro;
        ro.channel = "redrive:" + options_.name;
        const DeadLetterQuery ours =
            DeadLetterQuery{}.id(dead_letter_id).tag("engine:" + options_.name);
        return dead_letters_
                   .reprocess(
                       ours,
                       [&](const DeadLetter& d) { return redrive(d, force_channels, &payload); },
                       ro)
                   .resent == 1;
    }

    // reprocess_dead_letter() for every pending match of `query` (oldest first), released at
    // most redrive_rate per second: the i-th is due i / redrive_rate seconds after the
    // previous redrive's last one (or now).
    ReprocessResult reprocess_dead_letters(const DeadLetterQuery& query,
                                           std::vector<std::string> force_channels = {}) {
        start();
        check_route(force_channels);
        ReprocessOptions ro;
        ro.channel = "redrive:" + options_.name;
        // Only this engine's letters: another consumer's are not touched (a handler refusing
        // them would still count a redrive against them).
        DeadLetterQuery ours = query;
        ours.tag("engine:" + options_.name);
        return dead_letters_.reprocess(
            ours, [&](const DeadLetter& d) { return redrive(d, force_channels); }, ro);
    }

    // Waits until the queue store holds nothing (no message queued, scheduled or being sent),
    // or `timeout` passes on the engine's clock; true when it emptied. Without workers it makes
    // the passes itself (and sleeps on the clock until the next message is due).
    bool drain(Duration timeout) {
        start();  // throws QueueStoppedError after stop()
        const TimePoint deadline = detail::saturating_add(clock_.now(), timeout);
        for (;;) {
            if (options_.workers == 0) {
                run_due();
            }
            {
                detail::UniqueLock lock(mutex_);
                // submitting_ first, with acquire: a submit that has decremented it has stored
                // its messages, so the size read after it counts them (a submit cannot start its
                // increment, under mutex_, while this check holds it).
                if (submitting_.load(std::memory_order_acquire) == 0 && in_flight_ == 0 &&
                    queue_->size() == 0) {
                    return true;
                }
                if (clock_.now() >= deadline) {
                    return false;
                }
                if (options_.workers != 0) {
                    ++draining_;
                    clock_.wait_until(idle_, lock.native(),
                                      std::min(deadline, clock_.now() + options_.poll_interval));
                    --draining_;
                    continue;
                }
            }
            const std::optional<WallTime> next = queue_->next_ready();
            const WallTime now = clock_.wall_now();
            Duration wait = next ? *next - now : options_.poll_interval;
            wait = std::min(wait, deadline - clock_.now());
            if (wait > Duration::zero()) {
                clock_.sleep_for(wait);
            }
        }
    }

    // Stops the engine; nothing is lost. StopMode::drain first drains (up to `timeout`);
    // persist only lets the passes in flight finish. Then the workers stop, and the messages
    // left stay in the queue store given to the engine, or (with the engine's own in-memory
    // store) are handed back. A second call returns nothing.
    std::vector<PendingDelivery<Message>> stop(StopMode mode = StopMode::persist,
                                               Duration timeout = std::chrono::seconds(30)) {
        if (mode == StopMode::drain) {
            drain(timeout);
        }
        bool started = false;
        {
            detail::UniqueLock lock(mutex_);
            for (const std::thread& t : workers_) {
                if (t.get_id() == std::this_thread::get_id()) {
                    throw std::logic_error("bulwark::DeliveryEngine '" + options_.name +
                                           "': stop() from a worker (a listener or an adapter) "
                                           "would wait for itself");
                }
            }
            if (stopped_) {
                return {};
            }
            stopped_ = true;
            started = live_.exchange(false, std::memory_order_acq_rel);
            // A submit or redrive past its check finishes its push first: what it stores is
            // then handed back below or left in the store, never stranded. A submit ends
            // without the lock (and without a notify): re-check every millisecond; a push is
            // short.
            while (submitting_.load(std::memory_order_acquire) != 0) {
                idle_.wait_for(lock.native(), std::chrono::milliseconds(1));
            }
        }
        shut_down();
        std::vector<PendingDelivery<Message>> left;
        if (own_queue_ == nullptr || !started) {
            return left;
        }
        QueueStore& own = *own_queue_;
        for (QueuedMessage& q : own.list()) {
            Envelope env;
            std::optional<Message> message;
            if (decode_envelope(q.payload, env)) {
                try {
                    message.emplace(decode_(env.body));
                } catch (...) {  // NOLINT(bugprone-empty-catch): buried raw below
                }
            }
            if (message) {
                left.push_back(PendingDelivery<Message>{q.id, std::move(*message),
                                                        std::move(env.route), q.due});
                own.remove(q.id);
                continue;
            }
            // Unreadable: it cannot be handed back as a Message, so it goes to the dead-letter
            // store raw rather than die with the engine.
            DeadLetter d;
            d.type = options_.name;
            d.payload = q.payload;
            d.error = "the queued bytes could not be decoded at stop()";
            d.reason = DeadLetterReason::rejected;
            d.tags = {"undecodable:" + options_.name, "message:" + q.id};
            if (store_letter(d, q.id)) {
                own.remove(q.id);
            }
        }
        return left;
    }

    // Statistics per channel and overall for [from, to) (wall time, whole minutes, at most
    // stats_window back), with the queue's current state.
    DeliveryStats stats(WallTime from, WallTime to) const {
        DeliveryStats s;
        s.from = from;
        s.to = to;
        std::vector<std::shared_ptr<Slot>> slots;
        {
            detail::LockGuard lock(config_mutex_);
            slots = slots_;
        }
        detail::DeliveryCounts all;
        for (const auto& slot : slots) {
            const detail::DeliveryCounts c = slot->stats->range(from, to);
            all.merge(c);
            s.channels.push_back(c.finish(slot->name));
        }
        s.overall = all.finish("");
        const QueueStoreStats q = queue_->stats();
        s.queued = q.size;
        s.in_flight = q.leased;
        {
            detail::LockGuard lock(mutex_);
            for (const auto& [id, r] : records_) {
                ++s.by_status[static_cast<std::size_t>(r.status)];
            }
            s.entered = counters_.entered;
        }
        return s;
    }

    // stats() over the whole stats_window up to now.
    DeliveryStats stats() const {
        const WallTime now = clock_.wall_now();
        return stats(now - options_.stats_window, now + std::chrono::minutes(1));
    }

    DeliveryEngineCounters counters() const {
        detail::LockGuard lock(mutex_);
        DeliveryEngineCounters c = counters_;
        c.submitted = submitted_.load(std::memory_order_relaxed);
        return c;
    }

    // The queue store in use (the engine's own unless one was given).
    QueueStore& queue() const noexcept { return *queue_; }
    const DeliveryEngineOptions& options() const noexcept { return options_; }
    Clock& clock() const noexcept { return clock_; }

    // Adds the engine's series to `w` (what to_prometheus(engine) renders): queue depth, in
    // flight, messages per status, attempts, successes, fallbacks, cost and a response-time
    // histogram per channel.
    void write_metrics(MetricsWriter& w, std::string_view name) const {
        std::vector<std::shared_ptr<Slot>> slots;
        {
            detail::LockGuard lock(config_mutex_);
            slots = slots_;
        }
        const QueueStoreStats q = queue_->stats();
        const MetricLabels l{{"engine", name}};
        w.add_gauge("bulwark_delivery_queue_depth", "Messages in the queue store.", l, q.size);
        w.add_gauge("bulwark_delivery_in_flight", "Messages leased by a worker.", l, q.leased);
        const DeliveryEngineCounters c = counters();
        for (std::size_t i = 0; i < message_status_count; ++i) {
            w.add_counter("bulwark_delivery_status_total", "Moves of a message into each status.",
                          {{"engine", name}, {"status", to_string(static_cast<MessageStatus>(i))}},
                          c.entered[i]);
        }
        w.add_counter("bulwark_delivery_retries_total", "Passes rescheduled after a failure.", l,
                      c.retries);
        w.add_counter("bulwark_delivery_redriven_total", "Dead letters put back in the queue.", l,
                      c.redriven);
        w.add_counter("bulwark_delivery_submitted_total", "Messages accepted by submit.", l,
                      c.submitted);
        w.add_counter("bulwark_delivery_lease_lost_total",
                      "Passes that ended after their lease had run out.", l, c.lease_lost);
        w.add_counter("bulwark_delivery_dead_letter_failures_total",
                      "Adds the dead-letter store refused (retried).", l, c.dead_letter_failures);
        w.add_counter("bulwark_delivery_undecodable_total",
                      "Queued messages that could not be read (dead-lettered raw).", l,
                      c.undecodable);
        w.add_counter("bulwark_delivery_duplicates_suppressed_total",
                      "Messages leased again after they were sent, not resent.", l,
                      c.duplicates_suppressed);
        for (const auto& slot : slots) {
            slot->stats->write(w, name, slot->name);
        }
    }

private:
    struct Slot {
        std::string name;
        Adapter adapter;
        ChannelOptions options;
        DeliveryClassifier classifier;
        std::unique_ptr<detail::ChannelStatsCell> stats;
    };

    // One adapter call, as the chain's channel function saw it.
    struct Call {
        const Slot* slot = nullptr;
        WallTime at{};
        TimePoint begun{};
        Duration elapsed{0};
        bool ok = false;
        Receipt receipt;
        DeliveryFailure failure;
        std::string error;
    };

    // What one pass hands the chain's channel functions (the chain's only argument).
    struct Turn {
        const Message* message = nullptr;
        Context* ctx = nullptr;
        bool fallback_on_permanent = false;
        // Inline: a pass usually calls one or two adapters, and allocates nothing for them.
        InlineVector<Call, 2> calls;
    };

    using Chain = FallbackChain<Receipt(Turn&)>;

    // An immutable routing: the chain of every channel with the rules. Replaced whole when a
    // channel or a rule changes; a pass keeps the one it started with (shared_ptr).
    struct Routing {
        Routing(Selection selection, const ChainOptions& options, Clock& clock)
            : chain(selection, options, clock) {}
        Chain chain;
        FallbackRules rules;
    };

    // What the queue store keeps of a message (its payload), besides the store's own fields.
    struct Envelope {
        std::vector<std::string> route;
        std::uint32_t generation = 0;            // redrives so far
        std::string origin;                      // the dead letter it was redriven from, if any
        WallTime first_try{};                    // zero until the first pass
        Duration previous{0};                    // the last backoff
        std::vector<DeadLetterAttempt> history;  // bounded
        // Set once the message is bound for the dead-letter store and the store refused it:
        // later passes only retry the add (the route is not tried again).
        bool burying = false;
        DeadLetterReason bury_reason = DeadLetterReason::retries_exhausted;
        std::string bury_error;
        Duration store_wait{0};  // the last wait after the store refused
        // The encoded message: a view into the bytes the envelope was decoded from (or the
        // letter it is redriven from), which outlive it.
        std::string_view body;
    };

    struct Record {
        MessageStatus status = MessageStatus::queued;
        std::array<WallTime, message_status_count> since{};
        // As submitted (shared with the records of the same route); null for none.
        std::shared_ptr<const std::vector<std::string>> route;
        // The newest max_attempts_kept, oldest first. A vector: no allocation until the first
        // attempt (a deque allocates on construction), and overflow is rare.
        std::vector<DeliveryAttempt> attempts;
        std::uint32_t numbered = 0;  // attempts numbered so far
        std::uint32_t passes = 0;
        std::string channel;
        std::string external_id;
        std::string error;
        std::string dead_letter_id;
        bool busy = false;  // a worker of this engine is on it
        // The redrive generation of the copy the status is about: a final status holds back
        // copies of that generation or older (the ledger), never a newer (redriven) one.
        std::uint32_t generation = 0;
        std::uint64_t finish_seq = 0;  // its entry in finished_ (0: none)
    };

    // A send a worker made, for its record (see sent()).
    struct Sent {
        Record* record = nullptr;  // held busy by the worker until entered
        std::string id;
        std::vector<DeliveryAttempt> made;
        std::string channel;
        std::string external_id;
        WallTime at{};
        std::uint32_t passes = 0;
        bool delivered = false;
        bool kept = false;  // the queue store still held the lease
    };
    using Records = std::unordered_map<std::string, Record>;
    // What a worker's batch has to enter into the records, and what it let go from them.
    struct Sends {
        std::vector<Sent> list;
        std::vector<typename Records::node_type> forgotten;
    };

    static constexpr std::uint8_t envelope_version = 1;
    static constexpr std::size_t history_kept = 32;
    static constexpr std::size_t max_error_bytes = 1024;

    // A failure as the engine records it: described, redacted, cut to max_error_bytes. A
    // redactor that throws withholds the text rather than let it through unredacted.
    std::string error_text(const std::exception_ptr& error) const {
        std::string text = detail::describe_exception(error);
        if (options_.redact) {
            try {
                text = options_.redact(text);
            } catch (...) {
                text = "(error text withheld: the redactor threw " +
                       detail::describe_exception(std::current_exception()) + ")";
            }
        }
        return detail::clip_text(text, max_error_bytes);
    }

    DeliveryEngine(FallbackRules rules, DeadLetterStore& dead_letters, QueueStore* queue,
                   DeliveryEngineOptions options, Clock& clock)
        : options_((options.validate(), std::move(options))),
          clock_(clock),
          dead_letters_(dead_letters),
          own_queue_(queue == nullptr ? std::make_unique<InMemoryQueueStore>() : nullptr),
          queue_(queue == nullptr ? own_queue_.get() : queue),
          seed_(detail::fresh_seed()) {
        // Up front, so that keeping a spare never allocates (nor throws) later.
        spare_records_.reserve(max_spare_records);
        detail::LockGuard lock(config_mutex_);
        install(slots_, rules, false);
        rules_ = std::move(rules);
    }

    std::size_t window_buckets() const {
        return static_cast<std::size_t>(options_.stats_window / std::chrono::minutes(1)) + 1;
    }

    template <class A>
    Adapter make_adapter(A&& adapter) {
        using T = std::remove_cv_t<std::remove_reference_t<A>>;
        if constexpr (std::is_invocable_r<Receipt, T&, const Message&, Context&>::value) {
            if (detail::is_null_callable(adapter)) {
                detail::throw_invalid_argument(
                    "bulwark::DeliveryEngine::add_channel: null adapter");
            }
            return Adapter(std::forward<A>(adapter));
        } else if constexpr (std::is_invocable_r<Receipt, T&, const Message&>::value) {
            if (detail::is_null_callable(adapter)) {
                detail::throw_invalid_argument(
                    "bulwark::DeliveryEngine::add_channel: null adapter");
            }
            return [f = std::decay_t<A>(std::forward<A>(adapter))](const Message& m,
                                                                   Context&) mutable {
                return f(m);
            };
        } else if constexpr (detail::has_send_with_context<T, Message>::value ||
                             detail::has_send<T, Message>::value) {
            auto holder = hold(std::forward<A>(adapter));
            return [holder](const Message& m, Context& ctx) {
                if constexpr (detail::has_send_with_context<T, Message>::value) {
                    return Receipt(holder->send(m, ctx));
                } else {
                    (void)ctx;
                    return Receipt(holder->send(m));
                }
            };
        } else {
            static_assert(detail::always_false_v<T>,
                          "bulwark::DeliveryEngine::add_channel: the adapter must be callable as "
                          "Receipt(const Message&) or Receipt(const Message&, Context&), or have a "
                          "send member of either form");
            return {};
        }
    }

    // An lvalue object is used by reference (it must outlive the engine); an rvalue is moved
    // into a shared holder.
    template <class A>
    static std::shared_ptr<std::remove_reference_t<A>> hold(A&& adapter) {
        using T = std::remove_reference_t<A>;
        if constexpr (std::is_lvalue_reference<A>::value) {
            return std::shared_ptr<T>(std::shared_ptr<T>(), &adapter);
        } else {
            return std::make_shared<T>(std::forward<A>(adapter));
        }
    }

    void default_codec() BULWARK_REQUIRES(config_mutex_) {
        if constexpr (std::is_convertible<const Message&, std::string_view>::value &&
                      std::is_constructible<Message, std::string_view>::value) {
            encode_ = [](const Message& m) {
                return std::string(std::string_view(m));
            };
            decode_ = [](std::string_view bytes) {
                return Message(bytes);
            };
            plain_codec_ = true;
        } else {
            detail::throw_invalid_argument(
                "bulwark::DeliveryEngine '" + options_.name +
                "': a Message that is not a string needs codec(encode, decode) before start");
        }
    }

    [[noreturn]] BULWARK_NOINLINE static void unknown_channel(std::string_view name) {
        detail::throw_invalid_option("DeliveryEngine: channel", "must be one added to the engine",
                                     "\"" + std::string(name) + "\"");
    }

    void check_route(const std::vector<std::string>& route) const {
        detail::LockGuard lock(config_mutex_);
        for (auto it = route.begin(); it != route.end(); ++it) {
            const bool known = std::any_of(slots_.begin(), slots_.end(),
                                           [&](const auto& s) { return s->name == *it; });
            if (!known) {
                unknown_channel(*it);
            }
            if (std::find(route.begin(), it, *it) != it) {
                detail::throw_invalid_option("DeliveryEngine: channels", "must be distinct",
                                             "\"" + *it + "\" twice");
            }
        }
    }

    // Builds the routing for `slots` and `rules` and makes it current. strict: a rule naming a
    // channel not added is an error; otherwise such names wait for their channel.
    void install(const std::vector<std::shared_ptr<Slot>>& slots, const FallbackRules& rules,
                 bool strict) BULWARK_REQUIRES(config_mutex_) {
        auto known = [&](const std::string& name) {
            return std::any_of(slots.begin(), slots.end(),
                               [&](const auto& s) { return s->name == name; });
        };
        FallbackRules usable;
        std::vector<std::string> missing;
        for (const auto& [primary, rule] : rules.rules()) {
            if (!known(primary)) {
                missing.push_back(primary);
                continue;
            }
            FallbackRule r = rule;
            r.fallbacks.clear();
            for (const std::string& f : rule.fallbacks) {
                if (known(f)) {
                    r.fallbacks.push_back(f);
                } else {
                    missing.push_back(f);
                }
            }
            usable.set(primary, std::move(r));
        }
        std::vector<std::string> global;
        for (const std::string& g : rules.global()) {
            if (known(g)) {
                global.push_back(g);
            } else {
                missing.push_back(g);
            }
        }
        usable.set_global(std::move(global));
        if (strict && !missing.empty()) {
            detail::throw_invalid_option("DeliveryEngine: rules",
                                         "must name channels added to the engine",
                                         "unknown \"" + missing.front() + "\"");
        }
        auto routing = std::make_shared<Routing>(options_.selection, options_.chain, clock_);
        for (const auto& slot : slots) {
            const Slot* s = slot.get();
            routing->chain.add(
                slot->name, [this, s](Turn& turn) { return call(*s, turn); }, slot->options);
        }
        routing->chain.rules(usable);
        routing->rules = std::move(usable);
        detail::LockGuard lock(routing_mutex_);
        routing_ = std::move(routing);
    }

    std::shared_ptr<Routing> routing() const {
        detail::LockGuard lock(routing_mutex_);
        return routing_;
    }

    // The chain's function for one channel: calls the adapter and notes what happened.
    Receipt call(const Slot& slot, Turn& turn) {
        Call c;
        c.slot = &slot;
        c.at = clock_.wall_now();
        const TimePoint started = clock_.now();
        c.begun = started;
        try {
            Receipt r = slot.adapter(*turn.message, *turn.ctx);
            c.elapsed = clock_.now() - started;
            c.ok = true;
            c.receipt = r;
            turn.calls.push_back(std::move(c));
            return r;
        } catch (...) {
            c.elapsed = clock_.now() - started;
            const std::exception_ptr error = std::current_exception();
            c.error = error_text(error);
            try {
                c.failure = slot.classifier.classify(error);
            } catch (...) {
                c.failure.kind = DeliveryErrorKind::permanent;
                c.error += " (its classification threw: " +
                           detail::describe_exception(std::current_exception()) + ")";
            }
            const bool stop_here = !retryable(c.failure.kind) && !turn.fallback_on_permanent;
            turn.calls.push_back(std::move(c));
            if (stop_here) {
                // A permanent failure the rule does not fall back on: the chain stops before
                // the next channel (and a channel retry stops retrying).
                turn.ctx->cancel();
            }
            throw;
        }
    }

    // One message: push() rather than push_all(), and no vectors of messages or ids.
    std::string submit_one(const Message& message, WallTime when, WallTime now,
                           const std::vector<std::string>& channels) {
        QueuedMessage q = make_queued(message, channels, when, now);
        enqueue(&q, 1, channels, now, [&] {
            if (own_queue_ != nullptr) {
                // The engine's own store takes the bytes rather than a copy of them.
                QueuedMessage taken;
                std::swap(taken, q);
                q.id = taken.id;
                own_queue_->push(std::move(taken));
            } else {
                queue_->push(q);
            }
        });
        return std::move(q.id);
    }

    // A message as submitted, encoded for the queue store.
    QueuedMessage make_queued(const Message& m, const std::vector<std::string>& route,
                              WallTime when, WallTime now) {
        QueuedMessage q;
        q.id = next_id();
        q.due = when;
        q.enqueued = now;
        if constexpr (std::is_convertible<const Message&, std::string_view>::value) {
            if (plain_codec_) {
                // The default codec's bytes are the string itself: no copy of it on the way.
                check_fits(std::string_view(m).size());
                q.payload =
                    encode_envelope(route, 0, {}, WallTime{}, Duration{0}, {}, std::string_view(m));
                return q;
            }
        }
        const std::string body = encode_(m);
        check_fits(body.size());
        q.payload = encode_envelope(route, 0, {}, WallTime{}, Duration{0}, {}, body);
        return q;
    }

    // A message that could never be dead-lettered is refused now, not lost later.
    void check_fits(std::size_t bytes) const {
        const std::size_t limit = max_letter_payload_;
        if (limit != 0 && bytes > limit) {
            detail::throw_invalid_option("DeliveryEngine.submit: message",
                                         "must fit the dead-letter store's max_payload_bytes (" +
                                             std::to_string(limit) + ")",
                                         std::to_string(bytes) + " bytes encoded");
        }
    }

    // Tracks the messages [first, first + n), stores them (`push` hands them to the queue store;
    // on a throw, those it did not store are forgotten again) and announces them.
    template <class Push>
    void enqueue(QueuedMessage* first, std::size_t n, const std::vector<std::string>& channels,
                 WallTime now, Push&& push) {
        // One message's record is made before the lock, so that the lock is held only for the
        // table's own work (submitters and workers wait on each other less).
        // (Unless a forgotten record's node is at hand: see spare_records_.)
        typename Records::node_type made;
        if (n == 1 && spare_records_count_.load(std::memory_order_relaxed) == 0) {
            Records one;
            made = one.extract(one.try_emplace(first->id).first);
        }
        // The records first: a worker may take a message as soon as it is pushed.
        {
            detail::LockGuard lock(mutex_);
            if (stopped_) {
                throw QueueStoppedError("bulwark::DeliveryEngine '" + options_.name +
                                        "': submit after stop()");
            }
            const std::shared_ptr<const std::vector<std::string>> route = intern(channels);
            for (std::size_t i = 0; i < n; ++i) {
                // An id is new (ids are unique), so the node goes in; were it held, the held
                // record would be used, as records_[id] does.
                Record& r = !made.empty() ? records_.insert(std::move(made)).position->second
                            : spare_records_.empty() ? records_[first[i].id]
                                                     : reuse_record(first[i].id);
                r.route = route;
                enter(r, MessageStatus::queued, now);
            }
            submitting_.fetch_add(1, std::memory_order_relaxed);
        }
        try {
            push();
        } catch (...) {
            detail::LockGuard lock(mutex_);
            submitting_.fetch_sub(1, std::memory_order_release);
            for (std::size_t i = 0; i < n; ++i) {
                // push_all() may have stored some: those stay tracked.
                const auto it = records_.find(first[i].id);
                if (it != records_.end() && it->second.status == MessageStatus::queued &&
                    !it->second.busy && !queue_->get(first[i].id)) {
                    records_.erase(it);
                    --counters_.entered[static_cast<std::size_t>(MessageStatus::queued)];
                }
            }
            notify_idle();
            throw;
        }
        // No lock after the push: the counts are atomics, and a sleeping worker is woken
        // through notify_workers() (most of the time none is asleep).
        submitted_.fetch_add(n, std::memory_order_relaxed);
        submitting_.fetch_sub(1, std::memory_order_release);
        notify_workers(n);
        for (std::size_t i = 0; i < n; ++i) {
            listeners_.emit_with([&] {
                return StatusChange{
                    first[i].id, MessageStatus::queued, MessageStatus::queued, now, {}};
            });
        }
    }

    // Messages were queued: a sleeping worker (if any) looks at the queue again. One message
    // needs one worker; the ones awake find it anyway. Called without mutex_.
    // seq_cst, a Dekker pair with work(): this thread increments pushes_ then reads sleeping_; a
    // worker about to sleep increments sleeping_ then reads pushes_. One of the two sees the
    // other: the worker does not sleep, or it is woken here (under mutex_, which it holds until
    // it waits, so the notify cannot come between its check and its wait).
    void notify_workers(std::size_t messages) BULWARK_EXCLUDES(mutex_) {
        pushes_.fetch_add(1, std::memory_order_seq_cst);
        if (sleeping_.load(std::memory_order_seq_cst) == 0) {
            return;
        }
        detail::LockGuard lock(mutex_);
        if (messages == 1) {
            wake_.notify_one();
        } else {
            wake_.notify_all();
        }
    }

    // A pass ended, or a submit gave up: drain() re-checks (a syscall only when it waits).
    void notify_idle() BULWARK_REQUIRES(mutex_) {
        if (draining_ != 0) {
            idle_.notify_all();
        }
    }

    // The shared copy of `route` for the records: the last one made is reused while submits
    // name the same channels (most do), so a record costs no vector of its own. Null for none.
    std::shared_ptr<const std::vector<std::string>> intern(const std::vector<std::string>& route)
        BULWARK_REQUIRES(mutex_) {
        if (route.empty()) {
            return nullptr;
        }
        if (last_route_ == nullptr || *last_route_ != route) {
            last_route_ = std::make_shared<const std::vector<std::string>>(route);
        }
        return last_route_;
    }

    std::string next_id() {
        // relaxed: only needs to be unique.
        const std::uint64_t n = next_seq_.fetch_add(1, std::memory_order_relaxed);
        return detail::format_short_id("msg-", detail::SplitMix64::at(seed_, n));
    }

    WallTime to_wall(TimePoint when) const { return clock_.wall_now() + (when - clock_.now()); }

    static std::string encode_envelope(const Envelope& env) {
        return encode_envelope(env.route, env.generation, env.origin, env.first_try, env.previous,
                               env.history, env.body, env.burying, env.bury_reason, env.bury_error,
                               env.store_wait);
    }

    static std::string encode_envelope(
        const std::vector<std::string>& route, std::uint32_t generation, std::string_view origin,
        WallTime first_try, Duration previous, const std::vector<DeadLetterAttempt>& history,
        std::string_view body, bool burying = false,
        DeadLetterReason bury_reason = DeadLetterReason::retries_exhausted,
        std::string_view bury_error = {}, Duration store_wait = Duration{0}) {
        // Sized up front: one allocation.
        std::size_t size = 1 + 4 + 4 + 4 + origin.size() + 8 + 8 + 4 + 1 + 1 + 4 +
                           bury_error.size() + 8 + 4 + body.size();
        for (const std::string& r : route) {
            size += 4 + r.size();
        }
        for (const DeadLetterAttempt& a : history) {
            size += 8 + 4 + a.channel.size() + 4 + a.error.size();
        }
        std::string out;
        out.reserve(size);
        detail::journal::Writer w(out);
        w.u8(envelope_version);
        w.strs(route);
        w.u32(generation);
        w.str(origin);
        w.time(first_try);
        w.i64(static_cast<std::int64_t>(previous.count()));
        w.u32(static_cast<std::uint32_t>(history.size()));
        for (const DeadLetterAttempt& a : history) {
            w.time(a.at);
            w.str(a.channel);
            w.str(a.error);
        }
        w.u8(burying ? 1 : 0);
        w.u8(static_cast<std::uint8_t>(bury_reason));
        w.str(bury_error);
        w.i64(static_cast<std::int64_t>(store_wait.count()));
        w.str(body);
        return out;
    }

    static bool decode_envelope(std::string_view bytes, Envelope& env) {
        detail::journal::Reader r(bytes);
        if (r.u8() != envelope_version) {
            return false;
        }
        env.route = r.strs();
        env.generation = r.u32();
        env.origin = r.str();
        env.first_try = r.time();
        env.previous = Duration(r.i64());
        const std::uint32_t n = r.u32();
        if (!r.need_count(n, 16)) {
            return false;
        }
        env.history.resize(n);
        for (DeadLetterAttempt& a : env.history) {
            a.at = r.time();
            a.channel = r.str();
            a.error = r.str();
        }
        const std::uint8_t burying = r.u8();
        const std::uint8_t reason = r.u8();
        env.burying = burying == 1;
        env.bury_reason = static_cast<DeadLetterReason>(reason);
        env.bury_error = r.str();
        env.store_wait = Duration(r.i64());
        env.body = r.view();
        return r.ok() && r.at_end() && env.previous >= Duration::zero() && burying <= 1 &&
               reason < dead_letter_reason_count && env.store_wait >= Duration::zero();
    }

    void enter(Record& r, MessageStatus status, WallTime at) BULWARK_REQUIRES(mutex_) {
        r.status = status;
        r.since[static_cast<std::size_t>(status)] = at;
        ++counters_.entered[static_cast<std::size_t>(status)];
    }

    // A finished message joins the retention list; the oldest finished beyond the limits are
    // forgotten.
    // `forgotten`, if given, takes the records let go, to be freed after the lock is released.
    void finished(Record& r, const std::string& id, WallTime at,
                  std::vector<typename Records::node_type>* forgotten = nullptr)
        BULWARK_REQUIRES(mutex_) {
        r.finish_seq = ++finish_seq_;
        finished_.push_back(Finished{at, r.finish_seq, id});
        while (!finished_.empty() && (finished_.size() > options_.max_tracked ||
                                      at - finished_.front().at > options_.track_for)) {
            const auto it = records_.find(finished_.front().id);
            // Only the record's latest finish counts (a redriven message finishes again), and
            // only a final record is forgotten.
            if (it != records_.end() && it->second.finish_seq == finished_.front().seq &&
                is_final(it->second.status) && !it->second.busy) {
                if (!it->second.external_id.empty()) {
                    external_ids_.erase(it->second.external_id);
                }
                if (spare_records_.size() < spare_records_.capacity()) {
                    spare_records_.push_back(records_.extract(it));
                    spare_records_count_.store(spare_records_.size(), std::memory_order_relaxed);
                } else if (forgotten != nullptr) {
                    forgotten->push_back(records_.extract(it));
                } else {
                    records_.erase(it);
                }
            }
            finished_.pop_front();
        }
    }

    // The record of `id` (new) in a forgotten record's node, reset.
    Record& reuse_record(const std::string& id) BULWARK_REQUIRES(mutex_) {
        typename Records::node_type node = std::move(spare_records_.back());
        spare_records_.pop_back();
        spare_records_count_.store(spare_records_.size(), std::memory_order_relaxed);
        Record& r = node.mapped();
        // The attempts' buffer is kept: a worker's first pass replaces it (and frees it there).
        std::vector<DeliveryAttempt> attempts = std::move(r.attempts);
        attempts.clear();
        r = Record{};
        r.attempts = std::move(attempts);
        node.key() = id;
        // Were the id held, the held record would be used (as records_[id] does).
        return records_.insert(std::move(node)).position->second;
    }

    void add_attempts(Record& r, std::vector<DeliveryAttempt>& made) BULWARK_REQUIRES(mutex_) {
        if (r.attempts.empty() && made.size() <= options_.max_attempts_kept) {
            // A message's first pass (the usual case): its vector becomes the record's.
            for (DeliveryAttempt& a : made) {
                a.number = ++r.numbered;
            }
            r.attempts = std::move(made);
            made.clear();
            return;
        }
        for (DeliveryAttempt& a : made) {
            a.number = ++r.numbered;
            if (r.attempts.size() >= options_.max_attempts_kept) {
                r.attempts.erase(r.attempts.begin());
            }
            r.attempts.push_back(std::move(a));
        }
    }

    std::size_t handle_batch(std::vector<QueuedMessage>& batch) {
        const std::shared_ptr<Routing> routing = this->routing();
        std::size_t done = 0;
        Sends sends;
        try {
            // So that sent() appends without allocating (a failure there would abandon a
            // message the store has completed).
            sends.list.reserve(batch.size());
        } catch (...) {  // NOLINT(bugprone-empty-catch): then it allocates as it goes
        }
        for (std::size_t i = 0; i < batch.size(); ++i) {
            if (quitting()) {
                // Stopping: hand the rest back at once, untouched.
                for (std::size_t j = i; j < batch.size(); ++j) {
                    give_back(batch[j], batch[j].due);
                }
                break;
            }
            try {
                pass(batch[i], *routing, sends);
                ++done;
            } catch (...) {  // NOLINT(bugprone-empty-catch): the lease runs out; it comes back
            }
        }
        {
            detail::LockGuard lock(mutex_);
            enter_sends(sends);
            notify_idle();
        }
        emit_sends(sends);
        return done;
    }

    // relaxed: a late view only hands the rest of a batch back one message later.
    bool quitting() const noexcept { return quitting_.load(std::memory_order_relaxed); }

    void give_back(const QueuedMessage& q, WallTime due) noexcept {
        try {
            QueuedMessage back = q;
            back.due = due;
            queue_->release(back);
        } catch (...) {  // NOLINT(bugprone-empty-catch): the lease runs out; it comes back
        }
    }

    // One pass of one leased message over its route.
    void pass(QueuedMessage& q, Routing& routing, Sends& sends) {
        const WallTime now = clock_.wall_now();
        // A batch is worked through in turn: a message whose lease ran out meanwhile may be
        // another worker's now; one whose lease is half gone gets a fresh one first.
        if (q.lease_until <= now) {
            return;
        }
        if (q.lease_until - now < options_.lease / 2) {
            if (!queue_->extend(q.id, q.lease, now + options_.lease)) {
                return;
            }
            q.lease_until = now + options_.lease;
        }
        Envelope env;
        std::optional<Message> message;
        std::string unreadable;
        if (!decode_envelope(q.payload, env)) {
            unreadable = "the queued bytes are not a delivery envelope";
        } else {
            try {
                message.emplace(decode_(env.body));
            } catch (...) {
                unreadable =
                    "the message could not be decoded: " + error_text(std::current_exception());
            }
        }
        if (!unreadable.empty()) {
            {
                detail::LockGuard lock(mutex_);
                ++counters_.undecodable;
            }
            bury_raw(q, unreadable);
            return;
        }

        // The ledger: a copy of a message this engine has finished (sent, or dead-lettered
        // and not redriven since) is not tried again, nor one a worker of this engine is still
        // on (its lease ran out meanwhile).
        enum class Turnout { fresh, finished_already, busy };
        Turnout turnout = Turnout::fresh;
        MessageStatus from = MessageStatus::queued;
        Record* record = nullptr;
        {
            detail::LockGuard lock(mutex_);
            enter_sends(sends);
            Record& r = records_[q.id];
            record = &r;
            if (r.route == nullptr && !env.route.empty()) {
                r.route = intern(env.route);
            }
            if (is_final(r.status) && env.generation <= r.generation) {
                turnout = Turnout::finished_already;
                ++counters_.duplicates_suppressed;
            } else if (r.busy) {
                turnout = Turnout::busy;
            } else {
                r.busy = true;
                r.generation = env.generation;
                ++in_flight_;
                from = r.status;
                enter(r, MessageStatus::sending, now);
            }
        }
        emit_sends(sends);
        if (turnout == Turnout::finished_already) {
            queue_->complete(q.id, q.lease);
            return;
        }
        if (turnout == Turnout::busy) {
            give_back(q, now + options_.lease);
            return;
        }
        listeners_.emit_with([&] {
            return StatusChange{q.id, from, MessageStatus::sending, now, {}};
        });
        try {
            attempt(q, routing, env, *message, now, *record, sends);
        } catch (...) {
            // A store failed (release, complete): the message stays leased and comes back when
            // the lease runs out; it must not stay "sending" in the ledger meanwhile.
            abandon(q.id);
            throw;
        }
    }

    void abandon(const std::string& id) noexcept {
        detail::LockGuard lock(mutex_);
        const auto it = records_.find(id);
        if (it != records_.end() && it->second.busy) {
            it->second.busy = false;
            --in_flight_;
            it->second.status = MessageStatus::queued;
        }
        idle_.notify_all();
    }

    // `record` is q's, which this worker holds busy (a busy record is never erased).
    void attempt(QueuedMessage& q, Routing& routing, Envelope& env, const Message& message,
                 WallTime now, Record& record, Sends& sends) {
        std::vector<DeliveryAttempt> made;
        if (env.burying) {
            // Bound for the dead-letter store, which refused it last time: only the add again.
            bury_message(q, env, made, env.bury_reason, env.bury_error);
            return;
        }
        if (env.first_try == WallTime{}) {
            env.first_try = now;
        }
        const std::uint32_t pass_number = q.attempts + 1;
        // The operation is the message id: an adapter's idempotency key.
        Context ctx(q.id);
        Turn turn;
        turn.message = &message;
        turn.ctx = &ctx;
        turn.fallback_on_permanent = fallback_on_permanent(routing, env.route);
        const TimePoint started = clock_.now();
        std::optional<ChainResult<Receipt>> result;
        std::string route_error;
        try {
            result.emplace(run_route(routing, ctx, env.route, turn));
        } catch (...) {
            route_error = error_text(std::current_exception());
        }
        if (result) {
            made = audit(*result, turn, pass_number, now, started);
        }

        if (result && result->ok()) {
            sent(q, made, std::move(*result).value(), record, sends);
            return;
        }
        // Failed: how, and what that means for the message.
        DeliveryFailure failure;
        std::string error = route_error;
        if (!route_error.empty()) {
            failure.kind = DeliveryErrorKind::permanent;  // a channel no longer added
        } else {
            verdict(*result, turn, failure, error);
        }
        for (const DeliveryAttempt& a : made) {
            if (!a.ok) {
                DeadLetterAttempt h;
                h.at = a.at;
                h.channel = a.channel;
                h.error = detail::clip_text(a.error.empty() ? to_string(a.skipped) : a.error, 256);
                env.history.push_back(std::move(h));
            }
        }
        if (env.history.size() > history_kept) {
            env.history.erase(env.history.begin(),
                              env.history.end() - static_cast<std::ptrdiff_t>(history_kept));
        }
        DeadLetterReason reason = DeadLetterReason::retries_exhausted;
        bool bury = false;
        if (failure.kind == DeliveryErrorKind::bounced) {
            bury = true;
            reason = DeadLetterReason::rejected;
        } else if (!retryable(failure.kind)) {
            bury = true;
            reason = DeadLetterReason::not_retryable;
        } else if (pass_number >= options_.max_passes) {
            bury = true;
        }
        Duration wait{0};
        if (!bury) {
            wait = options_.backoff.stream(std::hash<std::string>{}(q.id))
                       .delay(pass_number, env.previous);
            wait = std::max(wait, failure.retry_after);
            if (options_.max_elapsed > Duration::zero() &&
                (now - env.first_try) + wait > options_.max_elapsed) {
                bury = true;
            }
        }
        if (bury) {
            bury_message(q, env, made, reason, error);
            return;
        }
        env.previous = wait;
        QueuedMessage back = q;
        back.attempts = pass_number;
        back.due = now + wait;
        const bool kept = release_with(back, env);
        finish_pass(q.id, made, MessageStatus::queued, error, pass_number, kept);
    }

    // Releases `back` with `env` as its payload; a store that finds it too large gets it
    // without its history (the history is what grows).
    bool release_with(QueuedMessage& back, Envelope& env) {
        back.payload = encode_envelope(env);
        try {
            return queue_->release(back);
        } catch (const std::length_error&) {
            env.history.clear();
            back.payload = encode_envelope(env);
            return queue_->release(back);
        }
    }

    ChainResult<Receipt> run_route(Routing& routing, Context& ctx,
                                   const std::vector<std::string>& route, Turn& turn) {
        if (route.size() > 1) {
            return routing.chain.execute_route(ctx, route, turn);
        }
        if (route.size() == 1) {
            if (routing.rules.find(route.front()) != nullptr) {
                return routing.chain.execute_for(ctx, route.front(), turn);
            }
            // No rule: the global order after it, and no other channel (a channel the rules do
            // not name may need another address).
            if (routing.rules.global().empty()) {
                return routing.chain.execute_route(ctx, route, turn);
            }
            std::vector<std::string> order{route.front()};
            for (const std::string& g : routing.rules.global()) {
                if (g != route.front()) {
                    order.push_back(g);
                }
            }
            return routing.chain.execute_route(ctx, order, turn);
        }
        if (!routing.rules.global().empty()) {
            return routing.chain.execute_route(ctx, routing.rules.global(), turn);
        }
        return routing.chain.execute(ctx, turn);
    }

    static bool fallback_on_permanent(const Routing& routing,
                                      const std::vector<std::string>& route) {
        const std::string_view primary =
            route.empty() ? (routing.rules.global().empty()
                                 ? std::string_view()
                                 : std::string_view(routing.rules.global().front()))
                          : std::string_view(route.front());
        const FallbackRule* rule = routing.rules.find(primary);
        return rule != nullptr && rule->fallback_on_permanent;
    }

    // The pass's attempts for the audit trail: each adapter call, and each channel passed over.
    std::vector<DeliveryAttempt> audit(const ChainResult<Receipt>& result, const Turn& turn,
                                       std::uint32_t pass_number, WallTime wall_start,
                                       TimePoint started) const {
        // Channels passed over are not attempts in the statistics; each adapter call is.
        std::vector<DeliveryAttempt> made;
        made.reserve(result.attempts().size());
        std::size_t next_call = 0;
        FallbackReason previous = FallbackReason::none;
        for (const Attempt& a : result.attempts()) {
            if (!a.called()) {
                DeliveryAttempt d;
                d.pass = pass_number;
                d.channel = std::string(a.channel);
                d.at = wall_start + (a.started - started);
                d.skipped = a.reason;
                d.fallback_reason = previous;
                if (a.error) {
                    d.error = error_text(a.error);
                    d.kind = DeliveryErrorKind::transient;
                }
                made.push_back(std::move(d));
                previous = a.reason;
                continue;
            }
            while (next_call < turn.calls.size() && turn.calls[next_call].slot->name == a.channel) {
                const Call& c = turn.calls[next_call++];
                DeliveryAttempt d;
                d.pass = pass_number;
                d.channel = c.slot->name;
                d.at = c.at;
                d.response_time = c.elapsed;
                d.ok = c.ok;
                d.fallback_reason = previous;
                if (c.ok) {
                    d.provider = c.receipt.provider;
                    d.external_id = c.receipt.external_id;
                    d.cost = c.receipt.cost > 0.0 ? c.receipt.cost : c.slot->options.cost;
                } else {
                    d.kind = c.failure.kind;
                    d.code = c.failure.code;
                    d.error = c.error;
                    d.cost = c.slot->options.cost;
                }
                c.slot->stats->record(d.at, c.begun + c.elapsed, d.ok, d.response_time, d.cost,
                                      previous != FallbackReason::none);
                made.push_back(std::move(d));
            }
            previous = a.reason;
        }
        return made;
    }

    // Why a pass that delivered nothing failed: the last called channel's failure, or a
    // transient one with the longest wait the skips asked for when nothing was called.
    void verdict(const ChainResult<Receipt>& result, const Turn& turn, DeliveryFailure& failure,
                 std::string& error) const {
        Duration retry_after{0};
        for (const Call& c : turn.calls) {
            if (!c.ok) {
                retry_after = std::max(retry_after, c.failure.retry_after);
            }
        }
        if (!turn.calls.empty()) {
            // Described by the last call; permanent only when no channel of the pass might do
            // better later (each called one failed permanently, none was passed over): a
            // fallback's "no phone number" must not bury a message whose primary is down.
            const Call& last = turn.calls.back();
            failure = last.failure;
            error = last.error;
            if (!failure.code.empty()) {
                error += " (code " + detail::clip_text(failure.code, 64) + ")";
            }
            bool skipped = false;
            for (const Attempt& a : result.attempts()) {
                skipped = skipped || !a.called();
            }
            const Call* retryable_call = nullptr;
            for (const Call& c : turn.calls) {
                if (!c.ok && retryable(c.failure.kind)) {
                    retryable_call = &c;
                }
            }
            if (retryable_call != nullptr) {
                failure.kind = retryable_call->failure.kind;
            } else if (skipped) {
                failure.kind = DeliveryErrorKind::transient;
            } else {
                failure.kind = turn.calls[0].failure.kind;  // the primary's: bounced or not
            }
        } else {
            failure.kind = DeliveryErrorKind::transient;
            error = result.error() ? error_text(result.error()) : "no channel was available";
        }
        const TimePoint now = clock_.now();
        for (const Attempt& a : result.attempts()) {
            if (a.error && !a.called()) {
                retry_after = std::max(retry_after, detail::rejection_wait(a.error, now));
            }
        }
        failure.retry_after = std::max(failure.retry_after, retry_after);
    }

    // A message sent: out of the queue now, into its record at this worker's next lock (the next
    // message's ledger check, or the end of the batch), so that a send costs no lock of its own.
    void sent(const QueuedMessage& q, std::vector<DeliveryAttempt>& made, Receipt&& receipt,
              Record& record, Sends& sends) {
        bool kept = false;
        try {
            kept = queue_->complete(q.id, q.lease);
        } catch (
            ...) {  // NOLINT(bugprone-empty-catch): leased again later, the ledger stops a resend
        }
        Sent s;
        s.record = &record;
        s.id = q.id;
        s.at = clock_.wall_now();
        for (auto it = made.rbegin(); it != made.rend(); ++it) {
            if (it->ok) {
                s.channel = it->channel;
                break;
            }
        }
        s.made = std::move(made);
        s.external_id = std::move(receipt.external_id);
        s.passes = q.attempts + 1;
        s.delivered = receipt.delivered;
        s.kept = kept;
        sends.list.push_back(std::move(s));
    }

    // Enters each send not entered yet (the list is cleared only by emit_sends(), so a throw
    // between the two leaves them to the next call, which skips those entered). Cannot throw:
    // the status, the busy flag and the in-flight count change first and cannot fail; what
    // allocates after them (the audit trail, the external id, the retention entry) is left out
    // of the record if memory runs out, never the status.
    void enter_sends(Sends& sends) noexcept BULWARK_REQUIRES(mutex_) {
        for (Sent& s : sends.list) {
            if (s.record == nullptr) {
                continue;
            }
            Record& r = *s.record;
            s.record = nullptr;  // entered; may be forgotten from now on
            if (!s.kept) {
                ++counters_.lease_lost;
            }
            r.passes = s.passes;
            r.error.clear();
            enter(r, MessageStatus::sent, s.at);
            if (s.delivered) {
                enter(r, MessageStatus::delivered, s.at);
            }
            r.busy = false;
            --in_flight_;
            try {
                add_attempts(r, s.made);
                r.channel = s.channel;
                if (!r.external_id.empty()) {
                    external_ids_.erase(r.external_id);
                }
                r.external_id = s.external_id;
                if (!s.external_id.empty()) {
                    external_ids_[s.external_id] = s.id;
                }
                finished(r, s.id, s.at, &sends.forgotten);
            } catch (...) {  // NOLINT(bugprone-empty-catch): out of memory; the status stands
            }
        }
        if (!sends.list.empty()) {
            notify_idle();
        }
    }

    // After enter_sends(), outside the lock: the listeners hear of the sends, in order.
    void emit_sends(Sends& sends) {
        for (const Sent& s : sends.list) {
            listeners_.emit_with([&] {
                return StatusChange{s.id, MessageStatus::sending, MessageStatus::sent, s.at,
                                    s.channel};
            });
            if (s.delivered) {
                listeners_.emit_with([&] {
                    return StatusChange{s.id, MessageStatus::sent, MessageStatus::delivered, s.at,
                                        s.channel};
                });
            }
        }
        sends.list.clear();
        sends.forgotten.clear();
    }

    // The end of a pass that did not send: back in the queue (queued) or dead-lettered.
    void finish_pass(const std::string& id, std::vector<DeliveryAttempt>& made, MessageStatus to,
                     const std::string& error, std::uint32_t passes, bool kept,
                     const std::string& dead_letter_id = {}) {
        const WallTime now = clock_.wall_now();
        StatusChange change{id, MessageStatus::sending, to, now, {}};
        {
            detail::LockGuard lock(mutex_);
            if (!kept) {
                ++counters_.lease_lost;
            }
            Record& r = records_[id];
            add_attempts(r, made);
            r.passes = passes;
            r.error = error;
            change.from = r.busy ? MessageStatus::sending : r.status;
            if (to == MessageStatus::queued) {
                ++counters_.retries;
            } else {
                r.dead_letter_id = dead_letter_id;
            }
            enter(r, to, now);
            if (r.busy) {
                r.busy = false;
                --in_flight_;
            }
            if (is_final(to)) {
                finished(r, id, now);
            }
            notify_idle();
        }
        listeners_.emit(change);
    }

    static std::string join(const std::vector<std::string>& names) {
        std::string out;
        for (const std::string& n : names) {
            if (!out.empty()) {
                out += ',';
            }
            out += n;
        }
        return out;
    }

    // Hands the message to the dead-letter store, then takes it out of the queue: a crash
    // between the two repeats the add of a still pending letter with the same id (a no-op),
    // never a loss.
    void bury_message(QueuedMessage& q, Envelope& env, std::vector<DeliveryAttempt>& made,
                      DeadLetterReason reason, const std::string& error) {
        DeadLetter d;
        std::string base = q.id;
        if (env.generation > 0) {
            base += "~" + std::to_string(env.generation);
        }
        d.type = env.route.empty() ? options_.name : env.route.front();
        d.payload = env.body;
        d.error = error;
        d.reason = reason;
        d.tags = {"engine:" + options_.name, "message:" + q.id, "route:" + join(env.route),
                  "generation:" + std::to_string(env.generation)};
        if (!env.origin.empty()) {
            d.tags.push_back("origin:" + env.origin);
        }
        d.attempts = env.history;
        const std::uint32_t passes = env.burying ? q.attempts : q.attempts + 1;
        if (!store_letter(d, base)) {
            // The store refused (full, an I/O error): the message stays queued, bound for the
            // store; later passes retry only the add, waiting longer each time (1 s doubling
            // to 5 minutes), and call no adapter.
            env.burying = true;
            env.bury_reason = reason;
            env.bury_error = error;
            env.store_wait =
                std::min<Duration>(std::max<Duration>(2 * env.store_wait, std::chrono::seconds(1)),
                                   std::chrono::minutes(5));
            QueuedMessage back = q;
            back.attempts = passes;
            back.due = clock_.wall_now() + env.store_wait;
            const bool kept = release_with(back, env);
            finish_pass(q.id, made, MessageStatus::queued, error, passes, kept);
            return;
        }
        bool kept = false;
        try {
            kept = queue_->complete(q.id, q.lease);
        } catch (
            ...) {  // NOLINT(bugprone-empty-catch): leased again later, the ledger completes it
        }
        finish_pass(q.id, made, MessageStatus::dead_lettered, error, passes, kept, d.id);
    }

    // A message the engine cannot read: its raw bytes go to the dead-letter store.
    void bury_raw(const QueuedMessage& q, const std::string& why) {
        DeadLetter d;
        d.type = options_.name;
        d.payload = q.payload;
        d.error = why;
        d.reason = DeadLetterReason::rejected;
        // Not "engine:<name>": a redrive of this engine's letters leaves it alone.
        d.tags = {"undecodable:" + options_.name, "message:" + q.id};
        if (!store_letter(d, q.id)) {
            give_back(q, clock_.wall_now() + std::chrono::seconds(30));
            return;
        }
        const bool kept = queue_->complete(q.id, q.lease);
        std::vector<DeliveryAttempt> none;
        finish_pass(q.id, none, MessageStatus::dead_lettered, why, q.attempts, kept, d.id);
    }

    // Adds `d` under `base`, or under base~2, base~3... when a letter that is no longer pending
    // holds the id (a message dead-lettered again after a redrive): a pending letter with the
    // id is this same letter, added before a crash (the add is then a no-op).
    bool store_letter(DeadLetter& d, const std::string& base) {
        try {
            d.id = base;
            for (int n = 2; n < 1000; ++n) {
                const std::optional<DeadLetter> held = dead_letters_.get(d.id);
                if (!held || held->status == DeadLetterStatus::pending) {
                    break;
                }
                d.id = base + "~" + std::to_string(n);
            }
            detail::fit_letter(d, dead_letters_.limits());
            dead_letters_.add(d);
            return true;
        } catch (...) {
            detail::LockGuard lock(mutex_);
            ++counters_.dead_letter_failures;
            return false;
        }
    }

    // The reprocess handler: the letter's message back in the queue.
    // Queues a dead letter's message again; `replacement` (when not null) stands for its payload.
    bool redrive(const DeadLetter& d, const std::vector<std::string>& force_channels,
                 const std::string* replacement = nullptr) {
        std::string id;
        std::vector<std::string> route;
        std::uint32_t generation = 0;
        bool ours = false;
        for (const std::string& tag : d.tags) {
            if (tag == "engine:" + options_.name) {
                ours = true;
            } else if (tag.rfind("message:", 0) == 0) {
                id = tag.substr(8);
            } else if (tag.rfind("route:", 0) == 0) {
                route = split(tag.substr(6));
            } else if (tag.rfind("generation:", 0) == 0) {
                generation =
                    static_cast<std::uint32_t>(std::strtoul(tag.c_str() + 11, nullptr, 10));
            }
        }
        if (!ours || id.empty()) {
            return false;
        }
        Envelope env;
        env.route = force_channels.empty() ? route : force_channels;
        env.generation = generation + 1;
        env.origin = d.id;
        env.history = d.attempts;
        env.body = replacement != nullptr ? *replacement : d.payload;
        const WallTime now = clock_.wall_now();
        QueuedMessage q;
        q.id = id;
        q.payload = encode_envelope(env);
        q.enqueued = now;
        const auto spacing = std::chrono::duration_cast<Duration>(
            std::chrono::duration<double>(1.0 / options_.redrive_rate));
        StatusChange change{};
        std::optional<Record> before;
        {
            detail::LockGuard lock(mutex_);
            if (stopped_) {
                throw QueueStoppedError("bulwark::DeliveryEngine '" + options_.name +
                                        "': redrive after stop()");
            }
            q.due = std::max(next_redrive_, now);
            const auto it = records_.find(id);
            if (it != records_.end()) {
                before = it->second;
            }
            Record& r = records_[id];
            change.from = r.status;
            r.route = env.route.empty()
                          ? nullptr
                          : std::make_shared<const std::vector<std::string>>(env.route);
            r.passes = 0;
            r.numbered = 0;
            r.error.clear();
            r.generation = env.generation;
            enter(r, MessageStatus::queued, now);
            ++submitting_;
        }
        try {
            queue_->push(q);
        } catch (...) {
            detail::LockGuard lock(mutex_);
            --submitting_;
            --counters_.entered[static_cast<std::size_t>(MessageStatus::queued)];
            const auto it = records_.find(id);
            if (it != records_.end() && !it->second.busy) {
                if (before) {
                    it->second = std::move(*before);
                } else {
                    records_.erase(it);
                }
            }
            idle_.notify_all();
            throw;
        }
        {
            detail::LockGuard lock(mutex_);
            --submitting_;
            // The next redrive's slot, once this one is in the queue.
            next_redrive_ = std::max(next_redrive_, q.due + spacing);
            ++counters_.redriven;
        }
        notify_workers(1);
        change.id = id;
        change.to = MessageStatus::queued;
        change.at = now;
        listeners_.emit(change);
        return true;
    }

    static std::vector<std::string> split(const std::string& list) {
        std::vector<std::string> out;
        std::size_t from = 0;
        while (from < list.size()) {
            const std::size_t comma = std::min(list.find(',', from), list.size());
            out.push_back(list.substr(from, comma - from));
            from = comma + 1;
        }
        return out;
    }

    void work() {
        for (;;) {
            std::uint64_t seen = 0;
            {
                detail::LockGuard lock(mutex_);
                if (quit_) {
                    return;
                }
                seen = pushes_.load(std::memory_order_seq_cst);
            }
            std::vector<QueuedMessage> batch;
            try {
                batch = queue_->claim(clock_.wall_now(), options_.batch_size, options_.lease);
            } catch (...) {  // NOLINT(bugprone-empty-catch): the store failed; wait and retry
            }
            if (!batch.empty()) {
                handle_batch(batch);
                continue;
            }
            std::optional<WallTime> next;
            try {
                next = queue_->next_ready();
            } catch (...) {  // NOLINT(bugprone-empty-catch): poll again
            }
            detail::UniqueLock lock(mutex_);
            if (quit_) {
                return;
            }
            sleeping_.fetch_add(1, std::memory_order_seq_cst);
            if (pushes_.load(std::memory_order_seq_cst) != seen) {
                // A message came in after the claim: its notify may have found no one.
                sleeping_.fetch_sub(1, std::memory_order_seq_cst);
                continue;
            }
            Duration wait = options_.poll_interval;
            if (next) {
                wait = std::min(wait, *next - clock_.wall_now());
            }
            if (wait > Duration::zero()) {
                clock_.wait_until(wake_, lock.native(), clock_.now() + wait);
            }
            sleeping_.fetch_sub(1, std::memory_order_seq_cst);
        }
    }

    void shut_down() noexcept {
        {
            detail::LockGuard lock(mutex_);
            quit_ = true;
            quitting_.store(true, std::memory_order_relaxed);
            wake_.notify_all();
        }
        for (std::thread& t : workers_) {
            if (!t.joinable()) {
                continue;
            }
            t.join();
        }
        workers_.clear();
    }

    const DeliveryEngineOptions options_;
    Clock& clock_;
    DeadLetterStore& dead_letters_;
    const std::unique_ptr<InMemoryQueueStore> own_queue_;
    QueueStore* const queue_;
    const std::uint64_t seed_;
    std::atomic<std::uint64_t> next_seq_{0};
    Listeners<StatusChange> listeners_;

    // Configuration: channels, rules, codec. Never held while calling out.
    mutable detail::Mutex config_mutex_;
    std::vector<std::shared_ptr<Slot>> slots_ BULWARK_GUARDED_BY(config_mutex_);
    FallbackRules rules_ BULWARK_GUARDED_BY(config_mutex_);
    // Set only before start() (under config_mutex_); read without it afterwards, by threads
    // that passed start(), whose lock (or live_'s acquire) orders the write before them.
    Encoder encode_;
    Decoder decode_;
    bool plain_codec_ = false;  // encode_ is the default one: a string's bytes are itself
    bool started_ BULWARK_GUARDED_BY(config_mutex_) = false;

    mutable detail::Mutex routing_mutex_;
    std::shared_ptr<Routing> routing_ BULWARK_GUARDED_BY(routing_mutex_);

    // Message records and the workers' state.
    mutable detail::Mutex mutex_;
    std::condition_variable wake_;  // a message may be ready, or quit_
    std::condition_variable idle_;  // a pass ended
    Records records_ BULWARK_GUARDED_BY(mutex_);
    // Nodes of forgotten records, reused by the next submits: records are made on the
    // submitting thread and forgotten on a worker, and a node freed on one thread and allocated
    // on another makes the two contend for the allocator's lock. The count is read without the
    // lock, only to decide whether to make a node before taking it.
    static constexpr std::size_t max_spare_records = 256;
    std::vector<typename Records::node_type> spare_records_ BULWARK_GUARDED_BY(mutex_);
    std::atomic<std::size_t> spare_records_count_{0};
    std::unordered_map<std::string, std::string> external_ids_ BULWARK_GUARDED_BY(mutex_);
    struct Finished {
        WallTime at{};
        std::uint64_t seq = 0;
        std::string id;
    };
    std::deque<Finished> finished_ BULWARK_GUARDED_BY(mutex_);
    std::uint64_t finish_seq_ BULWARK_GUARDED_BY(mutex_) = 0;
    DeliveryEngineCounters counters_ BULWARK_GUARDED_BY(mutex_);
    std::size_t in_flight_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::atomic<std::uint64_t> pushes_{0};     // submits and redrives so far
    std::atomic<std::size_t> sleeping_{0};     // workers waiting on wake_ (or about to)
    std::atomic<std::uint64_t> submitted_{0};  // counters_.submitted, kept apart: no lock
    std::size_t draining_ BULWARK_GUARDED_BY(mutex_) = 0;  // drain() calls waiting on idle_
    std::shared_ptr<const std::vector<std::string>> last_route_ BULWARK_GUARDED_BY(mutex_);
    // submits between their records and the end of their push (drain() waits for them).
    std::atomic<std::size_t> submitting_{0};
    // The dead-letter store's payload limit, read once (0: none): a message above it is
    // refused by submit.
    const std::size_t max_letter_payload_ = dead_letters_.limits().max_payload_bytes;
    WallTime next_redrive_ BULWARK_GUARDED_BY(mutex_){};
    bool running_ BULWARK_GUARDED_BY(mutex_) = false;
    bool stopped_ BULWARK_GUARDED_BY(mutex_) = false;
    bool quit_ BULWARK_GUARDED_BY(mutex_) = false;
    // quit_, for the check between two messages of a batch without the lock (set with it).
    std::atomic<bool> quitting_{false};
    std::atomic<bool> live_{false};  // start() has run to the end
    std::vector<std::thread> workers_;
};

}  // namespace bulwark

#endif  // BULWARK_DELIVERY_HPP

// Durable-queue vocabulary: QueuedMessage, leases, QueueFullError and the QueueStore interface.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_QUEUE_STORE_HPP
#define BULWARK_QUEUE_STORE_HPP

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <bulwark/config.hpp>
#include <bulwark/errors.hpp>
#include <bulwark/time.hpp>

namespace bulwark {

// A queue (or its store) is at its capacity: a rejection, nothing was queued; retry_after() is
// zero. source(): the queue's name when a queue raised it.
class QueueFullError : public RejectedError {
public:
    using RejectedError::RejectedError;
};

// A store refused a message larger than one of its limits; limit_name() says which (a file
// store's max_payload_bytes or max_id_bytes), size() and limit() the numbers. No byte of the
// message is in what().
class QueueMessageTooLargeError : public std::length_error {
public:
    QueueMessageTooLargeError(const std::string& what, const char* limit_name, std::size_t size,
                              std::size_t limit)
        : std::length_error(what), limit_name_(limit_name), size_(size), limit_(limit) {}

    const char* limit_name() const noexcept { return limit_name_; }
    std::size_t size() const noexcept { return size_; }
    std::size_t limit() const noexcept { return limit_; }

private:
    const char* limit_name_;
    std::size_t size_;
    std::size_t limit_;
};

// One message as a QueueStore keeps it: opaque bytes plus what the queue needs to schedule it.
// The store never reads the payload; the queue or engine that owns the store encodes its own
// state (the message, its channels, its attempt history) into it.
struct QueuedMessage {
    std::string id;       // unique within the store; not empty; chosen by the owner
    std::string payload;  // opaque bytes
    WallTime due{};       // claim() does not hand it out before this
    WallTime enqueued{};  // when it was first pushed (kept across releases)
    // The owner's count of attempts made; the store only keeps what release() gives it.
    std::uint32_t attempts = 0;
    // How many times claim() has leased it out (SQS's receive count). A message whose claims
    // outrun its attempts was leased by a worker that died before reporting.
    std::uint32_t claims = 0;
    // Set by claim(): the token that complete(), release() and extend() must carry. 0: not
    // leased. A store never hands out the same token twice, across restarts included.
    std::uint64_t lease = 0;
    WallTime lease_until{};  // when the lease runs out (meaningful while lease != 0)
};

// What a QueueStore holds, at one moment.
struct QueueStoreStats {
    std::size_t size = 0;    // messages held, leased or not
    std::size_t leased = 0;  // of which under a lease that has not been ended (may have run out)
};

// Where a durable queue keeps its messages. A message is pushed, then leased out by claim() to
// one worker at a time for a visibility timeout; the worker ends the lease with complete() (the
// message is done: it leaves the store) or release() (try again at a new due time, with its new
// state). A lease that runs out without either makes the message claimable again, so a worker or
// process that dies loses nothing: the message is delivered again (at least once).
//
// Rules every implementation follows (tests/queue_store_conformance.hpp checks them):
//   - push() returns only once the message is stored (durably, for a durable store); a message
//     with an empty or already held id is refused with std::invalid_argument naming it.
//   - claim(now, max, lease_for) leases up to `max` messages that are ready at `now`: not leased
//     and due <= now, or leased with lease_until <= now. They come in the order they became
//     ready (due, or the end of the lease), ties in push order (the order of the push() calls,
//     whatever was released or re-leased since). Each gets a fresh token, lease_until = now +
//     lease_for and claims + 1. A lease_for <= 0 is refused with std::invalid_argument.
//   - complete/release/extend act only while `lease` is the message's current token and return
//     false otherwise (the lease ran out and another claim took the message, or it is gone):
//     the caller's view is stale and it must not assume the message is done.
//   - Times are wall times (they outlive the process); the store never reads a clock itself.
//   - Every member is thread-safe.
//
// Usage: InMemoryQueueStore store; store.push({"m-1", bytes, now}); auto batch = store.claim(now,
// 50, 30s); ... store.complete(batch[0].id, batch[0].lease);
class QueueStore {
public:
    virtual ~QueueStore() = default;

    // Stores `message` (its claims and lease fields are ignored and start at zero). Throws
    // std::invalid_argument for an empty or duplicate id, QueueFullError when the store is full,
    // QueueMessageTooLargeError when it is over a limit of the store.
    virtual void push(const QueuedMessage& message) = 0;

    // Stores every message, as push() one by one; a store may write them as one durable step.
    // On a throw, the messages before the one that failed are stored.
    virtual void push_all(const std::vector<QueuedMessage>& messages) {
        for (const QueuedMessage& m : messages) {
            push(m);
        }
    }

    // Leases up to `max` ready messages (see the rules above) and returns copies of them.
    virtual std::vector<QueuedMessage> claim(WallTime now, std::size_t max, Duration lease_for) = 0;

    // The message leased under `lease` is done: removes it. false when `lease` is not current.
    virtual bool complete(std::string_view id, std::uint64_t lease) = 0;

    // Ends the lease on `message.id` (which must be `message.lease`) and stores its new payload,
    // due time and attempts; it is claimable again at `due`. false when the lease is not current.
    virtual bool release(const QueuedMessage& message) = 0;

    // Moves the end of a current lease to `until` (a heartbeat for a long attempt).
    virtual bool extend(std::string_view id, std::uint64_t lease, WallTime until) = 0;

    // Removes a message whatever its lease (an operator's cancel). false when it is not held.
    virtual bool remove(std::string_view id) = 0;

    virtual std::optional<QueuedMessage> get(std::string_view id) const = 0;

    virtual std::size_t size() const = 0;

    // The earliest time claim() could return a message: the least due time of the messages not
    // leased and the least lease end of those leased. nullopt when the store is empty.
    virtual std::optional<WallTime> next_ready() const = 0;

    // Up to `limit` messages, in the order claim() would consider them.
    virtual std::vector<QueuedMessage> list(
        std::size_t limit = std::numeric_limits<std::size_t>::max()) const = 0;

    virtual QueueStoreStats stats() const = 0;
};

}  // namespace bulwark

#endif  // BULWARK_QUEUE_STORE_HPP

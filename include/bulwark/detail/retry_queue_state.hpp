// The retry state a durable RetryQueue keeps in a QueuedMessage's payload, and its encoding
// (private).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_RETRY_QUEUE_STATE_HPP
#define BULWARK_DETAIL_RETRY_QUEUE_STATE_HPP

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <bulwark/dead_letter_store.hpp>
#include <bulwark/time.hpp>

namespace bulwark {
namespace detail {

// What a RetryQueue needs of a message between two attempts, in a form that outlives the
// process: wall times, not the steady clock's. A plain value.
struct RetryQueueState {
    std::uint32_t attempts = 0;  // handler calls so far
    WallTime first_try{};        // the first attempt (max_elapsed counts from it); 0 before it
    Duration previous{0};        // the last backoff (decorrelated jitter)
    Duration store_wait{0};      // the last wait after the dead-letter store refused
    std::uint64_t stream = 0;    // the message's jitter stream
    bool dead = false;           // bound for the dead-letter store: only the add is tried again
    bool parked = false;         // the dead-letter store can never take it: off the schedule
    DeadLetterReason reason = DeadLetterReason::retries_exhausted;
    std::string error;  // the last error
    std::vector<DeadLetterAttempt> history;
};

// Version 1, little-endian, every field fixed in place:
//   "bRQ" 0x01 | u32 attempts | i64 first_try ns | i64 previous ns | i64 store_wait ns |
//   u64 stream | u8 flags (1 dead, 2 parked) | u8 reason | str error | u32 history count |
//   count x (i64 at ns | str channel | str error) | str message
// where str is a u32 length and that many bytes. Nothing follows the message. A reader refuses
// any other version, flag or reason it does not know, and any length past the end: a payload
// it cannot read whole is corrupt, never half-read.
// a - b, clamped to Duration's range (times from a wall clock that was set can be far apart).
constexpr Duration saturating_sub(Duration a, Duration b) noexcept {
    if (b > Duration::zero() && a < Duration::min() + b) {
        return Duration::min();
    }
    if (b < Duration::zero() && a > Duration::max() + b) {
        return Duration::max();
    }
    return a - b;
}

inline constexpr char retry_queue_state_magic[4] = {'b', 'R', 'Q', '\x01'};

namespace retry_state_codec {

inline void put_u32(std::string& out, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) {
        out.push_back(static_cast<char>((v >> (8 * i)) & 0xFFU));
    }
}

inline void put_u64(std::string& out, std::uint64_t v) {
    for (int i = 0; i < 8; ++i) {
        out.push_back(static_cast<char>((v >> (8 * i)) & 0xFFU));
    }
}

inline void put_i64(std::string& out, std::int64_t v) {
    put_u64(out, static_cast<std::uint64_t>(v));
}

// Text longer than a u32 can count does not occur (the queue clips its errors; a message of
// 4 GiB is refused by the encoder's caller), but is clipped rather than written wrong.
inline void put_str(std::string& out, std::string_view s) {
    const std::size_t n =
        std::min<std::size_t>(s.size(), std::numeric_limits<std::uint32_t>::max());
    put_u32(out, static_cast<std::uint32_t>(n));
    out.append(s.data(), n);
}

// A bounds-checked reader: every get returns false, and reads nothing, past the end.
class Reader {
public:
    explicit Reader(std::string_view bytes) noexcept : bytes_(bytes) {}

    bool u8(std::uint8_t& v) noexcept {
        if (bytes_.size() - pos_ < 1) {
            return false;
        }
        v = static_cast<std::uint8_t>(bytes_[pos_++]);
        return true;
    }

    bool u32(std::uint32_t& v) noexcept {
        std::uint64_t wide = 0;
        if (!fixed(4, wide)) {
            return false;
        }
        v = static_cast<std::uint32_t>(wide);
        return true;
    }

    bool u64(std::uint64_t& v) noexcept { return fixed(8, v); }

    bool i64(std::int64_t& v) noexcept {
        std::uint64_t u = 0;
        if (!fixed(8, u)) {
            return false;
        }
        v = static_cast<std::int64_t>(u);
        return true;
    }

    bool str(std::string& s) {
        std::uint32_t n = 0;
        if (!u32(n) || bytes_.size() - pos_ < n) {
            return false;
        }
        s.assign(bytes_.data() + pos_, n);
        pos_ += n;
        return true;
    }

    std::size_t left() const noexcept { return bytes_.size() - pos_; }

private:
    bool fixed(std::size_t n, std::uint64_t& v) noexcept {
        if (bytes_.size() - pos_ < n) {
            return false;
        }
        v = 0;
        for (std::size_t i = 0; i < n; ++i) {
            v |= static_cast<std::uint64_t>(static_cast<unsigned char>(bytes_[pos_ + i]))
                 << (8 * i);
        }
        pos_ += n;
        return true;
    }

    std::string_view bytes_;
    std::size_t pos_ = 0;  // invariant: pos_ <= bytes_.size()
};

}  // namespace retry_state_codec

inline std::string encode_retry_queue_state(const RetryQueueState& state,
                                            std::string_view message) {
    namespace c = retry_state_codec;
    std::size_t size = 4 + 4 + 8 * 4 + 2 + 4 + state.error.size() + 4 + 4 + message.size();
    for (const DeadLetterAttempt& a : state.history) {
        size += 8 + 8 + a.channel.size() + a.error.size();
    }
    std::string out;
    out.reserve(size);
    out.append(retry_queue_state_magic, sizeof retry_queue_state_magic);
    c::put_u32(out, state.attempts);
    c::put_i64(out, state.first_try.time_since_epoch().count());
    c::put_i64(out, state.previous.count());
    c::put_i64(out, state.store_wait.count());
    c::put_u64(out, state.stream);
    out.push_back(static_cast<char>((state.dead ? 1U : 0U) | (state.parked ? 2U : 0U)));
    out.push_back(static_cast<char>(state.reason));
    c::put_str(out, state.error);
    c::put_u32(out, static_cast<std::uint32_t>(state.history.size()));
    for (const DeadLetterAttempt& a : state.history) {
        c::put_i64(out, a.at.time_since_epoch().count());
        c::put_str(out, a.channel);
        c::put_str(out, a.error);
    }
    c::put_str(out, message);
    return out;
}

// Reads a payload written by encode_retry_queue_state into `state` and `message`. Returns
// nullptr, or why the payload cannot be read (then `state` and `message` are unspecified).
// Never throws on malformed input (only std::bad_alloc).
inline const char* decode_retry_queue_state(std::string_view payload, RetryQueueState& state,
                                            std::string& message) {
    namespace c = retry_state_codec;
    if (payload.size() < 4 ||
        payload.substr(0, 3) != std::string_view(retry_queue_state_magic, 3)) {
        return "not a retry queue payload";
    }
    if (payload[3] != retry_queue_state_magic[3]) {
        return "unknown retry queue payload version";
    }
    c::Reader in(payload.substr(4));
    std::int64_t first_try = 0;
    std::int64_t previous = 0;
    std::int64_t store_wait = 0;
    std::uint8_t flags = 0;
    std::uint8_t reason = 0;
    std::uint32_t count = 0;
    if (!in.u32(state.attempts) || !in.i64(first_try) || !in.i64(previous) || !in.i64(store_wait) ||
        !in.u64(state.stream) || !in.u8(flags) || !in.u8(reason) || !in.str(state.error) ||
        !in.u32(count)) {
        return "truncated retry queue payload";
    }
    if ((flags & ~3U) != 0 || reason >= dead_letter_reason_count || previous < 0 ||
        store_wait < 0) {
        return "invalid retry queue state";
    }
    // Each attempt takes at least 16 bytes: a count the bytes cannot hold is refused before
    // anything is reserved for it.
    if (count > in.left() / 16) {
        return "truncated retry queue payload";
    }
    state.first_try = WallTime{Duration{first_try}};
    state.previous = Duration{previous};
    state.store_wait = Duration{store_wait};
    state.dead = (flags & 1U) != 0;
    state.parked = (flags & 2U) != 0;
    state.reason = static_cast<DeadLetterReason>(reason);
    state.history.clear();
    state.history.reserve(count);
    for (std::uint32_t i = 0; i < count; ++i) {
        DeadLetterAttempt a;
        std::int64_t at = 0;
        if (!in.i64(at) || !in.str(a.channel) || !in.str(a.error)) {
            return "truncated retry queue payload";
        }
        a.at = WallTime{Duration{at}};
        state.history.push_back(std::move(a));
    }
    if (!in.str(message)) {
        return "truncated retry queue payload";
    }
    if (in.left() != 0) {
        return "trailing bytes in retry queue payload";
    }
    return nullptr;
}

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_RETRY_QUEUE_STATE_HPP

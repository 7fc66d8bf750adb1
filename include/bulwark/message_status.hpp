// MessageStatus: where a message a DeliveryEngine handles is in its life.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_MESSAGE_STATUS_HPP
#define BULWARK_MESSAGE_STATUS_HPP

#include <cstddef>
#include <cstdint>

namespace bulwark {

// queued -> sending -> sent -> delivered | failed | bounced, or dead_lettered when the engine
// gave up. A retry goes from sending back to queued; a redrive from dead_lettered to queued.
enum class MessageStatus : std::uint8_t {
    queued,         // waiting for its (next) attempt
    sending,        // a worker is trying its channels
    sent,           // a channel accepted it; a delivery receipt may follow (confirm())
    delivered,      // the provider confirmed delivery (or the receipt said so)
    failed,         // the provider reported it undeliverable after accepting it
    bounced,        // the provider reported a bounce after accepting it
    dead_lettered,  // in the dead-letter store: retries exhausted or a permanent failure
};

inline constexpr std::size_t message_status_count = 7;

inline const char* to_string(MessageStatus status) noexcept {
    switch (status) {
        case MessageStatus::queued:
            return "queued";
        case MessageStatus::sending:
            return "sending";
        case MessageStatus::sent:
            return "sent";
        case MessageStatus::delivered:
            return "delivered";
        case MessageStatus::failed:
            return "failed";
        case MessageStatus::bounced:
            return "bounced";
        case MessageStatus::dead_lettered:
            return "dead_lettered";
    }
    return "unknown";
}

// The engine is done with a message in this status: only confirm() or a redrive moves it on.
inline constexpr bool is_final(MessageStatus status) noexcept {
    return status >= MessageStatus::sent;
}

}  // namespace bulwark

#endif  // BULWARK_MESSAGE_STATUS_HPP

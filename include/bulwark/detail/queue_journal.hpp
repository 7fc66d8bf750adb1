// The queue journal's records: their encoding and the codec FileQueueStore's journal uses
// (private). SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_QUEUE_JOURNAL_HPP
#define BULWARK_DETAIL_QUEUE_JOURNAL_HPP

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <bulwark/detail/journal.hpp>
#include <bulwark/queue_store.hpp>

// FileQueueStore's journal is the dead-letter journal's file format (header, salted CRC-32C
// frames with sequence numbers, batches, torn-tail detection) with its own magic, BWQUEJNL, and
// its own records. No I/O here. See docs/queue_store.md for the layout.

namespace bulwark {
namespace detail {
namespace queue_journal {

inline constexpr std::array<char, 8> magic = {'B', 'W', 'Q', 'U', 'E', 'J', 'N', 'L'};

enum class RecordType : std::uint8_t {
    message = 1,   // a whole QueuedMessage: a push (unleased), or a snapshot written by compaction
    claim = 2,     // id, lease token, lease_until: the message is leased, claims + 1
    complete = 3,  // id, lease: the message is done and leaves the store
    release = 4,   // id, lease, payload, due, attempts: the lease ends, ready again at due
    extend = 5,    // id, lease, lease_until
    remove = 6,    // id
    tokens = 7,    // lease tokens up to this value may have been handed out: start above it
    batch = 8,     // the records of one call (push_all, a claim of several): all or none
};

// One record; `message` carries what the type uses of it (the id always).
struct Record {
    RecordType type = RecordType::message;
    QueuedMessage message;
    std::uint64_t tokens = 0;       // tokens
    std::vector<Record> batch;      // batch to encode: the records, none a batch
    std::string_view batch_frames;  // batch as decoded: its inner frames (see journal.hpp)
};

inline void encode_body(const Record& r, std::string& out) {
    journal::Writer w(out);
    w.u8(static_cast<std::uint8_t>(r.type));
    const QueuedMessage& m = r.message;
    switch (r.type) {
        case RecordType::message:
            w.str(m.id);
            w.str(m.payload);
            w.time(m.due);
            w.time(m.enqueued);
            w.u32(m.attempts);
            w.u32(m.claims);
            w.u64(m.lease);
            w.time(m.lease_until);
            break;
        case RecordType::claim:
        case RecordType::extend:
            w.str(m.id);
            w.u64(m.lease);
            w.time(m.lease_until);
            break;
        case RecordType::complete:
            w.str(m.id);
            w.u64(m.lease);
            break;
        case RecordType::release:
            w.str(m.id);
            w.u64(m.lease);
            w.str(m.payload);
            w.time(m.due);
            w.u32(m.attempts);
            break;
        case RecordType::remove:
            w.str(m.id);
            break;
        case RecordType::tokens:
            w.u64(r.tokens);
            break;
        case RecordType::batch:
            journal::encode_inner(
                r.batch, out, [](const Record& inner, std::string& to) { encode_body(inner, to); });
            break;
    }
}

inline bool decode_record(std::string_view body, Record& out, bool allow_batch = true);

template <class F>
bool for_each_in_batch(const Record& batch, F&& f) {
    Record inner;
    return journal::for_each_inner(
        batch.batch_frames, inner,
        [](std::string_view body, Record& r) { return decode_record(body, r, false); },
        std::forward<F>(f));
}

// Decodes type+payload; false for anything that is not exactly one well-formed record: an empty
// id, a lease record without a lease, a batch in a batch or an empty batch.
inline bool decode_record(std::string_view body, Record& out, bool allow_batch) {
    journal::Reader r(body);
    const std::uint8_t type = r.u8();
    out = Record{};
    QueuedMessage& m = out.message;
    switch (type) {
        case static_cast<std::uint8_t>(RecordType::message):
            m.id = r.str();
            m.payload = r.str();
            m.due = r.time();
            m.enqueued = r.time();
            m.attempts = r.u32();
            m.claims = r.u32();
            m.lease = r.u64();
            m.lease_until = r.time();
            break;
        case static_cast<std::uint8_t>(RecordType::claim):
        case static_cast<std::uint8_t>(RecordType::extend):
            m.id = r.str();
            m.lease = r.u64();
            m.lease_until = r.time();
            break;
        case static_cast<std::uint8_t>(RecordType::complete):
            m.id = r.str();
            m.lease = r.u64();
            break;
        case static_cast<std::uint8_t>(RecordType::release):
            m.id = r.str();
            m.lease = r.u64();
            m.payload = r.str();
            m.due = r.time();
            m.attempts = r.u32();
            break;
        case static_cast<std::uint8_t>(RecordType::remove):
            m.id = r.str();
            break;
        case static_cast<std::uint8_t>(RecordType::tokens):
            out.type = RecordType::tokens;
            out.tokens = r.u64();
            return r.ok() && r.at_end();
        case static_cast<std::uint8_t>(RecordType::batch): {
            out.type = RecordType::batch;
            if (!allow_batch) {
                return false;
            }
            out.batch_frames = body.substr(1);
            std::size_t count = 0;
            return for_each_in_batch(out, [&count](Record&) { ++count; }) && count > 0;
        }
        default:
            return false;
    }
    out.type = static_cast<RecordType>(type);
    const bool needs_lease = out.type == RecordType::claim || out.type == RecordType::extend ||
                             out.type == RecordType::complete || out.type == RecordType::release;
    return r.ok() && r.at_end() && !m.id.empty() && (!needs_lease || m.lease != 0);
}

// The size of the message record compaction writes for `m`, without encoding it.
inline std::uint64_t snapshot_frame_size(const QueuedMessage& m) noexcept {
    return journal::frame_overhead + 4 + m.id.size() + 4 + m.payload.size() + 8 + 8 + 4 + 4 + 8 + 8;
}

// The size of a compacted journal that holds no message: the header and the tokens record.
inline std::uint64_t snapshot_base_size() noexcept {
    return journal::header_size + journal::frame_overhead + 8;
}

// What BasicJournalFile needs of FileQueueStore's records (see journal::DeadLetterCodec). The
// queue journal starts at version 3, the frame layout it shares with the dead-letter journal.
struct Codec {
    using Record = queue_journal::Record;
    static constexpr const char* store_name = "bulwark::FileQueueStore";
    static constexpr const char* journal_kind = "bulwark queue journal";
    static constexpr std::array<char, 8> file_magic = magic;
    static constexpr std::uint32_t version = journal::format_version;
    static constexpr std::uint32_t oldest_version = journal::format_version;
    static constexpr unsigned char max_type = static_cast<unsigned char>(RecordType::batch);

    static void encode_body(const Record& r, std::string& out) {
        queue_journal::encode_body(r, out);
    }
    static bool decode(std::string_view body, Record& out) { return decode_record(body, out); }
    static bool is_batch(const Record& r) noexcept { return r.type == RecordType::batch; }
    template <class F>
    static bool for_each_in_batch(const Record& batch, F&& f) {
        return queue_journal::for_each_in_batch(batch, std::forward<F>(f));
    }
    static Record batch_of(const Record* first, const Record* last) {
        Record batch;
        batch.type = RecordType::batch;
        batch.batch.assign(first, last);
        return batch;
    }
    static std::uint64_t frame_estimate(const Record& r) noexcept {
        return snapshot_frame_size(r.message) + 8;
    }
    [[noreturn]] static void too_large(std::size_t size, std::size_t limit) {
        throw QueueMessageTooLargeError(
            "bulwark::FileQueueStore: journal record of " + std::to_string(size) +
                " bytes exceeds the journal's frame limit (" + std::to_string(limit) + ")",
            "the journal's frame limit", size, limit);
    }
};

}  // namespace queue_journal
}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_QUEUE_JOURNAL_HPP

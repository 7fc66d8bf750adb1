// The journal format: frames, CRC-32C, the dead-letter records and recovery scans (private).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_JOURNAL_HPP
#define BULWARK_DETAIL_JOURNAL_HPP

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <bulwark/clock.hpp>
#include <bulwark/dead_letter_store.hpp>
#include <bulwark/detail/dead_letter_index.hpp>
#include <bulwark/detail/file_system.hpp>
#include <bulwark/detail/random.hpp>

// The dead-letter journal's on-disk format: CRC-32C, little-endian fixed-width integers,
// length-prefixed strings, salted record framing, and the encoding of each record type. No I/O
// here: the store reads the whole file and hands the bytes to check_frame(). See
// docs/file_dead_letter_store.md for the layout.

namespace bulwark {
namespace detail {
namespace journal {

// "BWDLQJNL", the format version (u32), the file's salt (u64, random, new for every file
// written) and the CRC-32C of the 20 bytes before it (u32).
inline constexpr std::array<char, 8> magic = {'B', 'W', 'D', 'L', 'Q', 'J', 'N', 'L'};
inline constexpr std::uint32_t format_version = 3;
// Version 2 journals (bulwark 0.x, frames without a sequence) are read and rewritten as version 3
// on open.
inline constexpr std::uint32_t oldest_readable_version = 2;
inline constexpr std::size_t header_size = 24;
// Version 3: [u32 length of type+payload][u32 header check][u32 body CRC][u64 sequence][u8 type]
// [payload]
//   header check = CRC-32C of (salt; length, sequence, type); body CRC = CRC-32C of (salt;
//   payload).
// The sequence is 1 for a file's first frame and one more for each frame after it, so a frame
// that is duplicated, replayed or moved (a sector written twice, a stale block) does not fit
// where it is found. The salt (new for every file) keeps a frame of another file from checking.
// Version 2 had no sequence: [u32 length][u32 header check over (length, type)][u32 body CRC]
// [u8 type][payload].
inline constexpr std::size_t frame_overhead = 21;
// The largest type+payload a frame may declare: a reader refuses longer frames before looking
// at them, so no allocation or CRC is ever sized by an unchecked length.
inline constexpr std::uint32_t max_frame_bytes = std::uint32_t{256} << 20U;

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as in iSCSI, ext4 and LevelDB.
// The journal's byte order, whatever the platform's: little-endian fixed-width unsigned integers.
template <class U>
void put_le(char* out, U v) noexcept {
    for (unsigned i = 0; i < sizeof(U); ++i) {
        out[i] = static_cast<char>((v >> (8U * i)) & 0xFFU);
    }
}

template <class U>
U get_le(const char* in) noexcept {
    U v = 0;
    for (unsigned i = 0; i < sizeof(U); ++i) {
        v |= static_cast<U>(static_cast<U>(static_cast<unsigned char>(in[i])) << (8U * i));
    }
    return v;
}

// Slicing-by-8 tables: table[0] is the bytewise table; table[k][b] is the CRC of byte b followed
// by k zero bytes, so that 8 bytes are folded with 8 lookups and no dependency between them.
inline const std::array<std::array<std::uint32_t, 256>, 8>& crc32c_tables() noexcept {
    static const std::array<std::array<std::uint32_t, 256>, 8> tables = [] {
        std::array<std::array<std::uint32_t, 256>, 8> t{};
        for (std::uint32_t i = 0; i < 256; ++i) {
            std::uint32_t c = i;
            for (int k = 0; k < 8; ++k) {
                c = (c & 1U) != 0 ? (c >> 1U) ^ 0x82F63B78U : c >> 1U;
            }
            t[0][i] = c;
        }
        for (std::uint32_t i = 0; i < 256; ++i) {
            for (std::size_t k = 1; k < 8; ++k) {
                t[k][i] = (t[k - 1][i] >> 8U) ^ t[0][t[k - 1][i] & 0xFFU];
            }
        }
        return t;
    }();
    return tables;
}

inline std::uint32_t crc32c(std::string_view bytes, std::uint32_t crc = 0) noexcept {
    const std::array<std::array<std::uint32_t, 256>, 8>& t = crc32c_tables();
    crc = ~crc;
    const char* p = bytes.data();
    std::size_t n = bytes.size();
    for (; n >= 8; p += 8, n -= 8) {
        const std::uint32_t lo = crc ^ get_le<std::uint32_t>(p);
        const auto hi = get_le<std::uint32_t>(p + 4);
        crc = t[7][lo & 0xFFU] ^ t[6][(lo >> 8U) & 0xFFU] ^ t[5][(lo >> 16U) & 0xFFU] ^
              t[4][lo >> 24U] ^ t[3][hi & 0xFFU] ^ t[2][(hi >> 8U) & 0xFFU] ^
              t[1][(hi >> 16U) & 0xFFU] ^ t[0][hi >> 24U];
    }
    for (; n > 0; ++p, --n) {
        crc = t[0][(crc ^ static_cast<unsigned char>(*p)) & 0xFFU] ^ (crc >> 8U);
    }
    return ~crc;
}

// The CRC seed of a file: the CRC-32C of its salt (8 bytes, little-endian). Every check of a
// frame starts from it, so a frame encoded for another file (or by someone who cannot read this
// one) does not check here.
inline std::uint32_t salt_seed(std::uint64_t salt) noexcept {
    std::array<char, 8> bytes{};
    put_le(bytes.data(), salt);
    return crc32c(std::string_view(bytes.data(), bytes.size()));
}

// How the frames of one file are checked: its salt_seed() and its format version.
struct Framing {
    std::uint32_t seed = 0;
    std::uint32_t version = format_version;

    // The bytes before a frame's type: length, header check, body CRC (and sequence, version 3).
    std::size_t head_size() const noexcept { return version >= 3 ? 20 : 12; }
    std::size_t overhead() const noexcept { return head_size() + 1; }
};

// The header check of a frame: covers its length, sequence (version 3) and type.
inline std::uint32_t header_check(const Framing& f, std::uint32_t length, std::uint64_t sequence,
                                  unsigned char type) noexcept {
    std::array<char, 13> bytes{};
    put_le(bytes.data(), length);
    std::size_t n = 4;
    if (f.version >= 3) {
        put_le(bytes.data() + n, sequence);
        n += 8;
    }
    bytes[n++] = static_cast<char>(type);
    return crc32c(std::string_view(bytes.data(), n), f.seed);
}

// Up to `size` bytes from the operating system's random source (/dev/urandom); false when it
// cannot be read. The journal is POSIX-only, so this needs neither <random> nor a libc extension.
inline bool os_random_bytes(void* out, std::size_t size) noexcept {
    int fd = -1;
    do {
        fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        return false;
    }
    auto* bytes = static_cast<unsigned char*>(out);
    std::size_t got = 0;
    while (got < size) {
        const ssize_t n = ::read(fd, bytes + got, size - got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        got += static_cast<std::size_t>(n);
    }
    ::close(fd);
    return got == size;
}

// A fresh random salt (the system's random source, mixed with the time and an address in case
// it cannot be read).
inline std::uint64_t new_salt() {
    std::uint64_t salt =
        static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    std::uint64_t entropy = 0;
    if (os_random_bytes(&entropy, sizeof entropy)) {
        salt ^= entropy;
    }
    static int anchor = 0;
    salt ^= static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(&anchor));
    // One SplitMix64 step spreads every input bit over the whole salt.
    return SplitMix64(salt).next();
}

enum class RecordType : std::uint8_t {
    add = 1,         // a whole DeadLetter: a new add, or a snapshot written by compaction
    dismiss = 2,     // id, note
    outcome = 3,     // id, the appended attempt, resent or not (redrives + 1)
    categorize = 4,  // id, category, tags to add when missing
    remove = 5,      // id, cause (purge or eviction)
    counters = 6,    // the cumulative counters, first record of a compacted journal
    batch = 7,       // the frames of one mutation that changes several records: all or none
};

enum class RemoveCause : std::uint8_t { purge = 0, evict = 1 };

// The counters a journal carries across compaction (the rest of DeadLetterStats is either
// recomputed from the records or counts events since open).
using Counters = DeadLetterCounters;

// One decoded record; which fields mean something depends on `type`.
struct Record {
    RecordType type = RecordType::add;
    DeadLetter letter;                       // add
    bool snapshot = false;                   // add: written by compaction, does not count as an add
    std::string id;                          // dismiss, outcome, categorize, remove
    std::string text;                        // dismiss: note; categorize: category
    std::vector<std::string> tags;           // categorize
    DeadLetterAttempt attempt;               // outcome
    bool resent = false;                     // outcome
    RemoveCause cause = RemoveCause::purge;  // remove
    Counters counters;                       // counters
    std::vector<Record> batch;               // batch to encode: the records, none a batch
    // batch as decoded: its inner frames, a view into the bytes decoded (valid while they are;
    // for_each_in_batch() decodes them one at a time). `batch` stays empty: a batch of a million
    // records is never held decoded whole.
    std::string_view batch_frames;
};

inline std::uint32_t load_u32(std::string_view bytes, std::size_t at) noexcept {
    return get_le<std::uint32_t>(bytes.data() + at);
}

inline std::uint64_t load_u64(std::string_view bytes, std::size_t at) noexcept {
    return get_le<std::uint64_t>(bytes.data() + at);
}

class Writer {
public:
    explicit Writer(std::string& out) noexcept : out_(out) {}

    void u8(std::uint8_t v) { out_.push_back(static_cast<char>(v)); }
    void u32(std::uint32_t v) { le(v); }
    void u64(std::uint64_t v) { le(v); }
    void i64(std::int64_t v) { u64(static_cast<std::uint64_t>(v)); }
    void time(WallTime t) { i64(static_cast<std::int64_t>(t.time_since_epoch().count())); }
    void str(std::string_view s) {
        u32(static_cast<std::uint32_t>(s.size()));
        out_.append(s.data(), s.size());
    }
    void strs(const std::vector<std::string>& v) {
        u32(static_cast<std::uint32_t>(v.size()));
        for (const std::string& s : v) {
            str(s);
        }
    }

private:
    template <class U>
    void le(U v) {
        char bytes[sizeof(U)];
        put_le(bytes, v);
        out_.append(bytes, sizeof(U));
    }

    std::string& out_;
};

// Reads what Writer wrote; every read is bounds-checked and a failed read turns ok() false (and
// every later read returns zero or empty).
class Reader {
public:
    explicit Reader(std::string_view bytes) noexcept : bytes_(bytes) {}

    bool ok() const noexcept { return ok_; }
    bool at_end() const noexcept { return pos_ == bytes_.size(); }

    std::uint8_t u8() noexcept {
        if (!need(1)) {
            return 0;
        }
        return static_cast<std::uint8_t>(bytes_[pos_++]);
    }
    std::uint32_t u32() noexcept { return le<std::uint32_t>(); }
    std::uint64_t u64() noexcept { return le<std::uint64_t>(); }
    std::int64_t i64() noexcept { return static_cast<std::int64_t>(u64()); }
    WallTime time() noexcept { return WallTime{Duration{i64()}}; }
    // The length is checked against the bytes left before anything is allocated.
    std::string str() {
        const std::uint32_t n = u32();
        if (!need(n)) {
            return {};
        }
        std::string s(bytes_.substr(pos_, n));
        pos_ += n;
        return s;
    }
    // As str(), without the copy: a view into the bytes being read (valid while they are).
    std::string_view view() noexcept {
        const std::uint32_t n = u32();
        if (!need(n)) {
            return {};
        }
        const std::string_view s = bytes_.substr(pos_, n);
        pos_ += n;
        return s;
    }
    std::vector<std::string> strs() {
        const std::uint32_t n = u32();
        std::vector<std::string> v;
        // Each string takes at least its 4-byte length: a count that cannot fit fails here.
        if (!need_count(n, 4)) {
            return v;
        }
        for (std::uint32_t i = 0; i < n && ok_; ++i) {
            v.push_back(str());
        }
        return v;
    }
    bool need_count(std::uint32_t n, std::size_t min_size) noexcept {
        if (ok_ && n > (bytes_.size() - pos_) / min_size) {
            ok_ = false;
        }
        return ok_;
    }

private:
    bool need(std::size_t n) noexcept {
        if (ok_ && n > bytes_.size() - pos_) {
            ok_ = false;
        }
        return ok_;
    }

    template <class U>
    U le() noexcept {
        if (!need(sizeof(U))) {
            return 0;
        }
        const U v = get_le<U>(bytes_.data() + pos_);
        pos_ += sizeof(U);
        return v;
    }

    std::string_view bytes_;
    std::size_t pos_ = 0;
    bool ok_ = true;
};

// The body of a batch record, for every store's records: each inner record as a u32 length,
// then its type+payload (encode(record, out) appends those); the batch frame's checks cover
// them all.
template <class Record, class Encode>
void encode_inner(const std::vector<Record>& records, std::string& out, const Encode& encode) {
    for (const Record& inner : records) {
        const std::size_t at = out.size();
        out.append(4, '\0');
        encode(inner, out);
        put_le(&out[at], static_cast<std::uint32_t>(out.size() - at - 4));
    }
}

// Decodes the inner records of a batch's body (`frames`) one at a time into `scratch` with
// decode(body, Record&) and calls f(Record&) with each (f may move from it); false, stopping
// there, at the first that does not decode or does not fit.
template <class Record, class Decode, class F>
bool for_each_inner(std::string_view frames, Record& scratch, const Decode& decode, F&& f) {
    std::size_t at = 0;
    while (at < frames.size()) {
        if (frames.size() - at < 4) {
            return false;
        }
        const std::uint32_t length = load_u32(frames, at);
        if (length == 0 || length > frames.size() - at - 4) {
            return false;
        }
        if (!decode(frames.substr(at + 4, length), scratch)) {
            return false;
        }
        f(scratch);
        at += 4 + std::size_t{length};
    }
    return true;
}

inline void encode_letter(Writer& w, const DeadLetter& d) {
    w.str(d.id);
    w.str(d.type);
    w.str(d.payload);
    w.str(d.error);
    w.u8(static_cast<std::uint8_t>(d.reason));
    w.str(d.category);
    w.strs(d.tags);
    w.u32(static_cast<std::uint32_t>(d.attempts.size()));
    for (const DeadLetterAttempt& a : d.attempts) {
        w.time(a.at);
        w.str(a.channel);
        w.str(a.error);
    }
    w.time(d.created);
    w.time(d.last_attempt);
    w.u8(static_cast<std::uint8_t>(d.status));
    w.u32(d.redrives);
    w.str(d.note);
}

// The size of an add record's frame for `d`, without encoding it: what compaction would write.
inline std::uint64_t snapshot_frame_size(const DeadLetter& d) noexcept {
    std::uint64_t n = frame_overhead + 1;  // + the snapshot flag
    n += 4 + d.id.size() + 4 + d.type.size() + 4 + d.payload.size() + 4 + d.error.size() + 1;
    n += 4 + d.category.size() + 4;
    for (const std::string& t : d.tags) {
        n += 4 + t.size();
    }
    n += 4;
    for (const DeadLetterAttempt& a : d.attempts) {
        n += 8 + 4 + a.channel.size() + 4 + a.error.size();
    }
    n += 8 + 8 + 1 + 4 + 4 + d.note.size();
    return n;
}

// Appends the type and payload of `r` to `out` (a frame without its head).
inline void encode_body(const Record& r, std::string& out) {
    Writer w(out);
    w.u8(static_cast<std::uint8_t>(r.type));
    switch (r.type) {
        case RecordType::add:
            w.u8(r.snapshot ? 1 : 0);
            encode_letter(w, r.letter);
            break;
        case RecordType::dismiss:
            w.str(r.id);
            w.str(r.text);
            break;
        case RecordType::outcome:
            w.str(r.id);
            w.time(r.attempt.at);
            w.str(r.attempt.channel);
            w.str(r.attempt.error);
            w.u8(r.resent ? 1 : 0);
            break;
        case RecordType::categorize:
            w.str(r.id);
            w.str(r.text);
            w.strs(r.tags);
            break;
        case RecordType::remove:
            w.str(r.id);
            w.u8(static_cast<std::uint8_t>(r.cause));
            break;
        case RecordType::counters:
            w.u64(r.counters.added);
            w.u64(r.counters.evicted);
            w.u64(r.counters.purged);
            w.u64(r.counters.resent);
            w.u64(r.counters.redrive_failures);
            break;
        case RecordType::batch:
            encode_inner(r.batch, out,
                         [](const Record& inner, std::string& to) { encode_body(inner, to); });
            break;
    }
}

inline bool decode_letter(Reader& r, DeadLetter& d) {
    d.id = r.str();
    d.type = r.str();
    d.payload = r.str();
    d.error = r.str();
    const std::uint8_t reason = r.u8();
    d.category = r.str();
    d.tags = r.strs();
    const std::uint32_t attempts = r.u32();
    // Each attempt takes at least 16 bytes.
    if (!r.need_count(attempts, 16)) {
        return false;
    }
    for (std::uint32_t i = 0; i < attempts && r.ok(); ++i) {
        DeadLetterAttempt a;
        a.at = r.time();
        a.channel = r.str();
        a.error = r.str();
        d.attempts.push_back(std::move(a));
    }
    d.created = r.time();
    d.last_attempt = r.time();
    const std::uint8_t status = r.u8();
    d.redrives = r.u32();
    d.note = r.str();
    if (!r.ok() || d.id.empty() || reason >= dead_letter_reason_count ||
        status >= dead_letter_status_count) {
        return false;
    }
    d.reason = static_cast<DeadLetterReason>(reason);
    d.status = static_cast<DeadLetterStatus>(status);
    return true;
}

inline bool flag(std::uint8_t v, bool& out) noexcept {
    out = v == 1;
    return v <= 1;
}

// Bounds the CRC work of a resynchronising scan over hostile bytes (defence in depth: a scan
// checks each candidate's body once and then skips it, so it is linear in the file anyway).
struct ScanBudget {
    std::uint64_t bytes_left = 0;
    bool exhausted = false;
};

inline bool decode_record(std::string_view body, Record& out, bool allow_batch = true);

// Decodes the inner records of a decoded batch one at a time into a scratch record and calls
// f(Record&) with each (f may move from it); false, stopping there, at the first that does not
// decode. decode_record() has checked them all before it accepted the batch.
template <class F>
bool for_each_in_batch(const Record& batch, F&& f) {
    Record inner;
    return for_each_inner(
        batch.batch_frames, inner,
        [](std::string_view body, Record& out) { return decode_record(body, out, false); },
        std::forward<F>(f));
}

// Decodes type+payload; false for anything that is not exactly one well-formed record.
// A batch may not contain a batch (so that hostile bytes cannot nest frames deeply).
inline bool decode_record(std::string_view body, Record& out, bool allow_batch) {
    Reader r(body);
    const std::uint8_t type = r.u8();
    out = Record{};
    bool good = true;
    switch (type) {
        case static_cast<std::uint8_t>(RecordType::add):
            out.type = RecordType::add;
            good = flag(r.u8(), out.snapshot) && decode_letter(r, out.letter);
            break;
        case static_cast<std::uint8_t>(RecordType::dismiss):
            out.type = RecordType::dismiss;
            out.id = r.str();
            out.text = r.str();
            break;
        case static_cast<std::uint8_t>(RecordType::outcome):
            out.type = RecordType::outcome;
            out.id = r.str();
            out.attempt.at = r.time();
            out.attempt.channel = r.str();
            out.attempt.error = r.str();
            good = flag(r.u8(), out.resent);
            break;
        case static_cast<std::uint8_t>(RecordType::categorize):
            out.type = RecordType::categorize;
            out.id = r.str();
            out.text = r.str();
            out.tags = r.strs();
            break;
        case static_cast<std::uint8_t>(RecordType::remove): {
            out.type = RecordType::remove;
            out.id = r.str();
            const std::uint8_t cause = r.u8();
            good = cause <= 1;
            out.cause = static_cast<RemoveCause>(cause);
            break;
        }
        case static_cast<std::uint8_t>(RecordType::counters):
            out.type = RecordType::counters;
            out.counters.added = r.u64();
            out.counters.evicted = r.u64();
            out.counters.purged = r.u64();
            out.counters.resent = r.u64();
            out.counters.redrive_failures = r.u64();
            break;
        case static_cast<std::uint8_t>(RecordType::batch): {
            out.type = RecordType::batch;
            // The inner frames fill the payload exactly; the outer CRC already covered them.
            // Every one is decoded here (into one scratch record, in turn) so that a batch is
            // accepted or refused whole, but none is kept.
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
    // An outcome without an id is one for a record removed while its handler ran: it only counts.
    if ((out.type == RecordType::dismiss || out.type == RecordType::categorize ||
         out.type == RecordType::remove) &&
        out.id.empty()) {
        return false;
    }
    return good && r.ok() && r.at_end();
}

// What the journal file needs to know of one store's records (the frames, checks, recovery and
// compaction are the same for every store): DeadLetterCodec for FileDeadLetterStore,
// queue_journal::Codec for FileQueueStore. Record types are 1..max_type; a batch record holds the
// records of one mutation (all or none) and never another batch.
struct DeadLetterCodec {
    using Record = journal::Record;
    static constexpr const char* store_name = "bulwark::FileDeadLetterStore";
    static constexpr const char* journal_kind = "bulwark dead-letter journal";
    static constexpr std::array<char, 8> file_magic = magic;
    static constexpr std::uint32_t version = format_version;
    static constexpr std::uint32_t oldest_version = oldest_readable_version;
    static constexpr unsigned char max_type = static_cast<unsigned char>(RecordType::batch);

    static void encode_body(const Record& r, std::string& out) { journal::encode_body(r, out); }
    static bool decode(std::string_view body, Record& out) { return decode_record(body, out); }
    static bool is_batch(const Record& r) noexcept { return r.type == RecordType::batch; }
    template <class F>
    static bool for_each_in_batch(const Record& batch, F&& f) {
        return journal::for_each_in_batch(batch, std::forward<F>(f));
    }
    static Record batch_of(const Record* first, const Record* last) {
        Record batch;
        batch.type = RecordType::batch;
        batch.batch.assign(first, last);
        return batch;
    }
    // An upper bound of the frame `r` encodes to (a batch's share of one, for a batch's records).
    static std::uint64_t frame_estimate(const Record& r) noexcept {
        if (r.type == RecordType::add) {
            return snapshot_frame_size(r.letter);
        }
        std::uint64_t n = frame_overhead + 24 + r.id.size() + r.text.size() +
                          r.attempt.channel.size() + r.attempt.error.size();
        for (const std::string& t : r.tags) {
            n += 4 + t.size();
        }
        return n;
    }
    [[noreturn]] static void too_large(std::size_t size, std::size_t limit) {
        throw_too_large("journal record", "the journal's frame limit", size, limit);
    }
};

// Appends the frame of `r` (a Codec::Record) to `out`, with sequence number `sequence`, as `f`
// frames them. Throws Codec::too_large()'s error (a std::length_error), appending nothing, for a
// frame over `limit` (tests lower it).
template <class Codec = DeadLetterCodec>
void encode_record(const typename Codec::Record& r, std::string& out, const Framing& f,
                   std::uint64_t sequence, std::size_t limit = max_frame_bytes) {
    const std::size_t start = out.size();
    const std::size_t head = f.head_size();
    out.append(head, '\0');  // filled in below, once the length is known
    Codec::encode_body(r, out);
    const std::string_view type_and_payload(out.data() + start + head, out.size() - start - head);
    if (type_and_payload.size() > limit) {
        // A reader refuses such a frame: never write (and so never acknowledge) one. Callers
        // bound what they store far below this; this is the last line.
        const std::size_t size = type_and_payload.size();
        out.resize(start);
        Codec::too_large(size, limit);
    }
    const auto length = static_cast<std::uint32_t>(type_and_payload.size());
    char* const at = &out[start];
    put_le(at, length);
    put_le(at + 4,
           header_check(f, length, sequence, static_cast<unsigned char>(type_and_payload[0])));
    put_le(at + 8, crc32c(type_and_payload.substr(1), f.seed));
    if (f.version >= 3) {
        put_le(at + 12, sequence);
    }
}

// What is at an offset of a journal.
enum class FrameStatus : std::uint8_t {
    good,        // a whole frame: both checks pass and the payload decodes
    torn,        // fewer bytes left than a frame head, or a head that checks but whose frame
                 // extends past the end of the file: an incomplete write
    bad_body,    // the head checks (so the frame's extent is known) but the body CRC does not,
                 // or the payload does not decode
    bad_header,  // the head does not check: not the start of a frame of this file
};

// Checks the frame at `offset` of `bytes` for the file framed as `f`: `size` is set to the frame's
// size whenever its head checks (good, bad_body and a torn frame past the end), `sequence` to its
// sequence number (version 3; 0 before), `record` is filled when good. Never reads outside
// `bytes`; allocates only for decoded strings, each bounded by the frame. With a budget, the body
// CRC is charged to it first (exhausted: returns bad_header).
template <class Codec = DeadLetterCodec>
FrameStatus check_frame(std::string_view bytes, std::size_t offset, const Framing& f,
                        typename Codec::Record& record, std::size_t& size, std::uint64_t& sequence,
                        ScanBudget* budget = nullptr) {
    const std::size_t head = f.head_size();
    if (offset > bytes.size() || bytes.size() - offset < head + 1) {
        return FrameStatus::torn;
    }
    const std::uint32_t length = load_u32(bytes, offset);
    const auto type = static_cast<unsigned char>(bytes[offset + head]);
    sequence = f.version >= 3 ? load_u64(bytes, offset + 12) : 0;
    // Version 3 numbers frames from 1; 0 and the largest value (after which the next would wrap
    // to 0) are never written.
    const bool bad_sequence = f.version >= 3 && (sequence == 0 || sequence == ~std::uint64_t{0});
    if (bad_sequence || length == 0 || length > max_frame_bytes || type < 1 ||
        type > Codec::max_type ||
        header_check(f, length, sequence, type) != load_u32(bytes, offset + 4)) {
        return FrameStatus::bad_header;
    }
    size = head + std::size_t{length};
    if (length > bytes.size() - offset - head) {
        return FrameStatus::torn;
    }
    if (budget != nullptr) {
        if (budget->bytes_left < length) {
            budget->exhausted = true;
            return FrameStatus::bad_header;
        }
        budget->bytes_left -= length;
    }
    const std::string_view body = bytes.substr(offset + head, length);
    if (crc32c(body.substr(1), f.seed) != load_u32(bytes, offset + 8) ||
        !Codec::decode(body, record)) {
        return FrameStatus::bad_body;
    }
    return FrameStatus::good;
}

// Whether the bytes from `offset` to the end of the file are one whole frame whose head is
// damaged: its body CRC matches exactly the rest of the file. (A torn write cannot produce
// that; bit rot in a synced frame's length, header check or type can.)
inline bool whole_frame_with_bad_head(std::string_view bytes, std::size_t offset,
                                      const Framing& f) noexcept {
    const std::size_t head = f.head_size();
    return offset <= bytes.size() && bytes.size() - offset > head &&
           bytes.size() - offset - head <= max_frame_bytes &&
           crc32c(bytes.substr(offset + head + 1), f.seed) == load_u32(bytes, offset + 8);
}

inline std::string encode_header(std::uint64_t salt, std::uint32_t version = format_version,
                                 const std::array<char, 8>& file_magic = magic) {
    std::string out(file_magic.data(), file_magic.size());
    Writer w(out);
    w.u32(version);
    w.u64(salt);
    w.u32(crc32c(out));
    return out;
}

}  // namespace journal
}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_JOURNAL_HPP

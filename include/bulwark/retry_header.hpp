// RetryHeader: attempt, remaining deadline and "the caller retries" in one header value.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_RETRY_HEADER_HPP
#define BULWARK_RETRY_HEADER_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include <bulwark/clock.hpp>
#include <bulwark/context.hpp>

namespace bulwark {

// The header (HTTP) or metadata key (gRPC, lowercase as gRPC requires) bulwark suggests for a
// RetryHeader. Any name works: the codec only reads and writes the value.
inline constexpr std::string_view retry_header_name = "x-bulwark-retry";

// The longest value parse() accepts, in bytes: a peer cannot make a service parse megabytes.
inline constexpr std::size_t retry_header_max_length = 256;

// What a service tells the service it calls about one request, so that retries and deadlines
// hold across the boundary: its attempt number, the time left before it gives up, and whether it
// will retry this request itself if it fails (then the callee should not: retries at every layer
// multiply). One header value, plain text, order-independent:
//   attempt=2; deadline-ms=1500; caller-retries=1
// Grammar (RFC 5234 ABNF; OWS is optional spaces and tabs):
//   value   = OWS item *( OWS ";" OWS item ) OWS          ; at most 256 bytes
//   item    = key "=" token
//   key     = ALPHA *( ALPHA / DIGIT / "-" )              ; case-insensitive
//   token   = 1*( any VCHAR but ";" "=" "," )
//   attempt        = "0" / %x31-39 *9DIGIT   ; 0 to 4294967295, the caller's attempt (0: first)
//   deadline-ms    = "0" / %x31-39 *11DIGIT  ; 0 to 999999999999 ms left when it was sent
//   caller-retries = "0" / "1"
// Every key is optional (absent: attempt 0, no deadline, the caller does not retry); a key this
// version does not know is skipped, so newer peers can add keys; a known key twice, an empty
// item, a sign, a leading zero, a number too large or a value too long is an error.
//   // the caller, inside its RetryPolicy's callable:
//   request.headers[bulwark::retry_header_name] =
//       bulwark::RetryHeader::from(ctx, clock, /*caller_retries*/ ctx.attempt() < 3).to_string();
//   // the callee:
//   bulwark::RetryHeader::parse(request.headers["x-bulwark-retry"]).apply_to(ctx, clock);
// A value type; parse() and to_string() are pure, thread-safe functions.
struct RetryHeader {
    // The caller's attempt number: 0 for its first, 1 for its first retry.
    std::uint32_t attempt = 0;
    // The time the caller had left when it sent the request; none: no deadline. Whole
    // milliseconds, at most 999999999999.
    std::optional<std::chrono::milliseconds> deadline{};
    // The caller will retry this request if it fails.
    bool caller_retries = false;

    static constexpr std::int64_t max_deadline_ms = 999999999999;

    // What an outgoing request carries: ctx's attempt, the time left before ctx's deadline on
    // `clock` (rounded down to whole milliseconds, 0 once passed, capped at max_deadline_ms),
    // and whether this caller will retry it.
    static RetryHeader from(const Context& ctx, const Clock& clock, bool caller_retries) {
        RetryHeader h;
        h.attempt = ctx.attempt();
        h.caller_retries = caller_retries;
        if (const std::optional<Duration> left = ctx.remaining(clock)) {
            const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(*left).count();
            h.deadline = std::chrono::milliseconds(
                ms < 0 ? 0 : (ms > max_deadline_ms ? max_deadline_ms : ms));
        }
        return h;
    }

    // The value in canonical form: "attempt=2; deadline-ms=1500; caller-retries=1" (no
    // deadline-ms without a deadline). Throws std::invalid_argument for a deadline outside
    // [0, max_deadline_ms].
    std::string to_string() const {
        std::string out = "attempt=" + std::to_string(attempt);
        if (deadline) {
            if (deadline->count() < 0 || deadline->count() > max_deadline_ms) {
                throw std::invalid_argument(
                    "RetryHeader.deadline must be in [0ms, 999999999999ms], got " +
                    std::to_string(deadline->count()) + "ms");
            }
            out += "; deadline-ms=" + std::to_string(deadline->count());
        }
        out += caller_retries ? "; caller-retries=1" : "; caller-retries=0";
        return out;
    }

    // Reads a value written by to_string() or by hand (see the grammar). Throws
    // std::invalid_argument naming what is wrong, the key and the value:
    //   retry header: deadline-ms must be an integer in [0, 999999999999] (no sign, no
    //   leading zero), got "-5"
    static RetryHeader parse(std::string_view text);

    // Hands the header to the callee's execution: ctx's caller_attempt() and caller_retries()
    // (a RetryPolicy then leaves the retrying to the caller), and a deadline of now + deadline on
    // `clock` unless ctx already has an earlier one. The deadline is set without a clock, as a
    // caller's deadline is: a Timeout in the pipeline takes it over and enforces it (a result
    // after it fails with TimeoutError), and a RetryPolicy starts no wait that would end past it.
    void apply_to(Context& ctx, const Clock& clock) const {
        ctx.set_caller_attempt(attempt);
        ctx.set_caller_retries(caller_retries);
        if (deadline) {
            ctx.tighten_deadline(clock.now() + *deadline);
        }
    }

    friend bool operator==(const RetryHeader& a, const RetryHeader& b) noexcept {
        return a.attempt == b.attempt && a.deadline == b.deadline &&
               a.caller_retries == b.caller_retries;
    }
    friend bool operator!=(const RetryHeader& a, const RetryHeader& b) noexcept {
        return !(a == b);
    }
};

// parse()'s answer without an exception: the header, or the message parse() would throw.
//   auto r = bulwark::try_parse_retry_header(value);
//   if (!r) { log(r.error); } else { r.header->apply_to(ctx, clock); }
struct RetryHeaderParse {
    std::optional<RetryHeader> header;
    std::string error;  // empty when header is set
    explicit operator bool() const noexcept { return header.has_value(); }
};

namespace detail {

inline bool retry_header_ows(char c) noexcept {
    return c == ' ' || c == '\t';
}

inline std::string_view retry_header_trim(std::string_view s) noexcept {
    while (!s.empty() && retry_header_ows(s.front())) {
        s.remove_prefix(1);
    }
    while (!s.empty() && retry_header_ows(s.back())) {
        s.remove_suffix(1);
    }
    return s;
}

// The text quoted in an error message: printable ASCII as is, the rest as \xNN.
template <class Tag = void>
std::string retry_header_quote(std::string_view s) {
    static constexpr char hex[] = "0123456789abcdef";
    std::string out = "\"";
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            out += ch;
        } else {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 0xf];
        }
    }
    out += '"';
    return out;
}

inline bool retry_header_key_equals(std::string_view key, std::string_view lower) noexcept {
    if (key.size() != lower.size()) {
        return false;
    }
    for (std::size_t i = 0; i < key.size(); ++i) {
        char c = key[i];
        if (c >= 'A' && c <= 'Z') {
            c = static_cast<char>(c - 'A' + 'a');
        }
        if (c != lower[i]) {
            return false;
        }
    }
    return true;
}

// A strict decimal: digits only, no sign, no leading zero (but "0"), at most `max`.
inline bool retry_header_number(std::string_view s, std::uint64_t max,
                                std::uint64_t& out) noexcept {
    if (s.empty() || s.size() > 19 || (s.size() > 1 && s[0] == '0')) {
        return false;
    }
    std::uint64_t v = 0;
    for (const char c : s) {
        if (c < '0' || c > '9') {
            return false;
        }
        v = v * 10 + static_cast<std::uint64_t>(c - '0');  // 19 digits cannot overflow 2^64
    }
    if (v > max) {
        return false;
    }
    out = v;
    return true;
}

// The parser behind parse() and try_parse_retry_header(): the error message, or empty. A
// template only so that a translation unit that never parses a header does not compile it.
template <class Tag = void>
std::string parse_retry_header(std::string_view text, RetryHeader& out) {
    const std::string prefix = "retry header: ";
    if (text.size() > retry_header_max_length) {
        return prefix + "the value is " + std::to_string(text.size()) + " bytes, more than " +
               std::to_string(retry_header_max_length);
    }
    if (retry_header_trim(text).empty()) {
        return prefix + "the value is empty";
    }
    RetryHeader h;
    bool seen_attempt = false;
    bool seen_deadline = false;
    bool seen_retries = false;
    std::size_t start = 0;
    while (start <= text.size()) {
        std::size_t end = text.find(';', start);
        if (end == std::string_view::npos) {
            end = text.size();
        }
        const std::string_view item = retry_header_trim(text.substr(start, end - start));
        start = end + 1;
        if (item.empty()) {
            return prefix + "empty item (two ';' in a row, or one at an end) in " +
                   retry_header_quote(text);
        }
        const std::size_t eq = item.find('=');
        if (eq == std::string_view::npos) {
            return prefix + "item " + retry_header_quote(item) + " is not key=value";
        }
        const std::string_view key = item.substr(0, eq);
        const std::string_view value = item.substr(eq + 1);
        bool key_ok =
            !key.empty() && ((key[0] >= 'a' && key[0] <= 'z') || (key[0] >= 'A' && key[0] <= 'Z'));
        for (const char c : key) {
            key_ok = key_ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                                (c >= '0' && c <= '9') || c == '-');
        }
        if (!key_ok) {
            return prefix + "key " + retry_header_quote(key) +
                   " must be a letter then letters, digits or '-'";
        }
        bool value_ok = !value.empty();
        for (const char c : value) {
            value_ok = value_ok && c > 0x20 && c < 0x7f && c != '=' && c != ',';
        }
        if (!value_ok) {
            return prefix + "the value of " + std::string(key) + " must be 1 or more visible " +
                   "characters other than ';' '=' ',', got " + retry_header_quote(value);
        }
        std::uint64_t number = 0;
        auto duplicate = [&](bool& seen) {
            const bool again = seen;
            seen = true;
            return again;
        };
        if (retry_header_key_equals(key, "attempt")) {
            if (duplicate(seen_attempt)) {
                return prefix + "attempt appears twice, the second time as " +
                       retry_header_quote(value);
            }
            if (!retry_header_number(value, 4294967295ULL, number)) {
                return prefix +
                       "attempt must be an integer in [0, 4294967295] (no sign, no leading "
                       "zero), got " +
                       retry_header_quote(value);
            }
            h.attempt = static_cast<std::uint32_t>(number);
        } else if (retry_header_key_equals(key, "deadline-ms")) {
            if (duplicate(seen_deadline)) {
                return prefix + "deadline-ms appears twice, the second time as " +
                       retry_header_quote(value);
            }
            if (!retry_header_number(value, RetryHeader::max_deadline_ms, number)) {
                return prefix +
                       "deadline-ms must be an integer in [0, 999999999999] (no sign, no "
                       "leading zero), got " +
                       retry_header_quote(value);
            }
            h.deadline = std::chrono::milliseconds(static_cast<std::int64_t>(number));
        } else if (retry_header_key_equals(key, "caller-retries")) {
            if (duplicate(seen_retries)) {
                return prefix + "caller-retries appears twice, the second time as " +
                       retry_header_quote(value);
            }
            if (value != "0" && value != "1") {
                return prefix + "caller-retries must be 0 or 1, got " + retry_header_quote(value);
            }
            h.caller_retries = value == "1";
        }
        // Any other key: a newer peer's, skipped.
        if (end == text.size()) {
            break;
        }
    }
    out = h;
    return {};
}

}  // namespace detail

inline RetryHeader RetryHeader::parse(std::string_view text) {
    RetryHeader h;
    const std::string error = detail::parse_retry_header(text, h);
    if (!error.empty()) {
        throw std::invalid_argument(error);
    }
    return h;
}

// parse() without an exception (it still allocates the message of a malformed value).
inline RetryHeaderParse try_parse_retry_header(std::string_view text) {
    RetryHeaderParse r;
    RetryHeader h;
    r.error = detail::parse_retry_header(text, h);
    if (r.error.empty()) {
        r.header = h;
    }
    return r;
}

}  // namespace bulwark

#endif  // BULWARK_RETRY_HEADER_HPP

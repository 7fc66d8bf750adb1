// JsonValue and read_json: a small, bounded JSON reader for request bodies (private).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_JSON_READ_HPP
#define BULWARK_DETAIL_JSON_READ_HPP

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <bulwark/detail/utf8.hpp>

namespace bulwark {
namespace detail {

// One parsed JSON value. Objects keep their members in document order; a key given twice keeps
// both and find() returns the first. A plain value (thread-compatible).
struct JsonValue {
    enum class Kind : std::uint8_t { null, boolean, number, string, array, object };

    Kind kind = Kind::null;
    bool boolean = false;
    double number = 0.0;
    std::string text;                                        // Kind::string
    std::vector<JsonValue> items;                            // Kind::array
    std::vector<std::pair<std::string, JsonValue>> members;  // Kind::object

    // Declared here, defaulted below the class: clang 14 with libstdc++ 12 in C++20 would
    // otherwise define the implicit destructor while std::pair<std::string, JsonValue> is being
    // instantiated (its default-constructor check asks whether JsonValue is destructible), and
    // that destructor needs the pair complete.
    JsonValue() noexcept;
    JsonValue(const JsonValue&);
    JsonValue(JsonValue&&) noexcept;
    JsonValue& operator=(const JsonValue&);
    JsonValue& operator=(JsonValue&&) noexcept;
    ~JsonValue();

    bool is(Kind k) const noexcept { return kind == k; }

    // The member named `name` of an object, or nullptr (also for a non-object).
    const JsonValue* find(std::string_view name) const noexcept {
        if (kind != Kind::object) {
            return nullptr;
        }
        for (const auto& m : members) {
            if (m.first == name) {
                return &m.second;
            }
        }
        return nullptr;
    }
};

inline JsonValue::JsonValue() noexcept = default;
inline JsonValue::JsonValue(const JsonValue&) = default;
inline JsonValue::JsonValue(JsonValue&&) noexcept = default;
inline JsonValue& JsonValue::operator=(const JsonValue&) = default;
inline JsonValue& JsonValue::operator=(JsonValue&&) noexcept = default;
inline JsonValue::~JsonValue() = default;

// Reads one JSON document (RFC 8259) that fills all of `text` (whitespace around it aside).
// Strings must be UTF-8 and are decoded (escapes, surrogate pairs); nesting deeper than
// `max_depth` is refused so that a hostile body cannot exhaust the stack. Returns false with a
// message naming the byte offset of the problem in `error`; never throws but for bad_alloc.
class JsonReader {
public:
    JsonReader(std::string_view text, std::size_t max_depth) : text_(text), max_depth_(max_depth) {}

    bool read(JsonValue& out, std::string& error) {
        skip_space();
        if (!value(out, 0)) {
            error = error_ + " at byte " + std::to_string(at_);
            return false;
        }
        skip_space();
        if (at_ != text_.size()) {
            error = "unexpected text after the document at byte " + std::to_string(at_);
            return false;
        }
        return true;
    }

private:
    bool fail(const char* why) {
        error_ = why;
        return false;
    }

    void skip_space() noexcept {
        while (at_ < text_.size() && (text_[at_] == ' ' || text_[at_] == '\t' ||
                                      text_[at_] == '\n' || text_[at_] == '\r')) {
            ++at_;
        }
    }

    bool literal(std::string_view word) noexcept {
        if (text_.substr(at_, word.size()) != word) {
            return false;
        }
        at_ += word.size();
        return true;
    }

    bool value(JsonValue& out, std::size_t depth) {
        if (at_ >= text_.size()) {
            return fail("unexpected end of the document");
        }
        const char c = text_[at_];
        if (c == '{' || c == '[') {
            if (depth >= max_depth_) {
                return fail("nesting too deep");
            }
            return c == '{' ? object(out, depth + 1) : array(out, depth + 1);
        }
        if (c == '"') {
            out.kind = JsonValue::Kind::string;
            return string(out.text);
        }
        if (literal("true") || literal("false")) {
            out.kind = JsonValue::Kind::boolean;
            out.boolean = c == 't';
            return true;
        }
        if (literal("null")) {
            out.kind = JsonValue::Kind::null;
            return true;
        }
        return number(out);
    }

    bool object(JsonValue& out, std::size_t depth) {
        out.kind = JsonValue::Kind::object;
        ++at_;
        skip_space();
        if (at_ < text_.size() && text_[at_] == '}') {
            ++at_;
            return true;
        }
        for (;;) {
            skip_space();
            if (at_ >= text_.size() || text_[at_] != '"') {
                return fail("expected a member name in double quotes");
            }
            std::pair<std::string, JsonValue> member;
            if (!string(member.first)) {
                return false;
            }
            skip_space();
            if (at_ >= text_.size() || text_[at_] != ':') {
                return fail("expected ':' after a member name");
            }
            ++at_;
            skip_space();
            if (!value(member.second, depth)) {
                return false;
            }
            out.members.push_back(std::move(member));
            skip_space();
            if (at_ < text_.size() && text_[at_] == ',') {
                ++at_;
                continue;
            }
            if (at_ < text_.size() && text_[at_] == '}') {
                ++at_;
                return true;
            }
            return fail("expected ',' or '}' in an object");
        }
    }

    bool array(JsonValue& out, std::size_t depth) {
        out.kind = JsonValue::Kind::array;
        ++at_;
        skip_space();
        if (at_ < text_.size() && text_[at_] == ']') {
            ++at_;
            return true;
        }
        for (;;) {
            skip_space();
            out.items.emplace_back();
            if (!value(out.items.back(), depth)) {
                return false;
            }
            skip_space();
            if (at_ < text_.size() && text_[at_] == ',') {
                ++at_;
                continue;
            }
            if (at_ < text_.size() && text_[at_] == ']') {
                ++at_;
                return true;
            }
            return fail("expected ',' or ']' in an array");
        }
    }

    bool hex4(std::uint32_t& code) noexcept {
        if (text_.size() - at_ < 4) {
            return false;
        }
        code = 0;
        for (std::size_t i = 0; i < 4; ++i) {
            const char h = text_[at_ + i];
            std::uint32_t digit = 0;
            if (h >= '0' && h <= '9') {
                digit = static_cast<std::uint32_t>(h - '0');
            } else if (h >= 'a' && h <= 'f') {
                digit = static_cast<std::uint32_t>(h - 'a' + 10);
            } else if (h >= 'A' && h <= 'F') {
                digit = static_cast<std::uint32_t>(h - 'A' + 10);
            } else {
                return false;
            }
            code = code * 16 + digit;
        }
        at_ += 4;
        return true;
    }

    static void append_utf8(std::string& out, std::uint32_t code) {
        if (code < 0x80) {
            out.push_back(static_cast<char>(code));
        } else if (code < 0x800) {
            out.push_back(static_cast<char>(0xC0 | (code >> 6)));
            out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
        } else if (code < 0x10000) {
            out.push_back(static_cast<char>(0xE0 | (code >> 12)));
            out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
            out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
        } else {
            out.push_back(static_cast<char>(0xF0 | (code >> 18)));
            out.push_back(static_cast<char>(0x80 | ((code >> 12) & 0x3F)));
            out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
            out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
        }
    }

    bool escape(std::string& out) {
        if (at_ >= text_.size()) {
            return fail("unterminated string");
        }
        const char e = text_[at_++];
        switch (e) {
            case '"':
            case '\\':
            case '/':
                out.push_back(e);
                return true;
            case 'b':
                out.push_back('\b');
                return true;
            case 'f':
                out.push_back('\f');
                return true;
            case 'n':
                out.push_back('\n');
                return true;
            case 'r':
                out.push_back('\r');
                return true;
            case 't':
                out.push_back('\t');
                return true;
            case 'u':
                break;
            default:
                return fail("invalid escape in a string");
        }
        std::uint32_t code = 0;
        if (!hex4(code)) {
            return fail("invalid \\u escape");
        }
        if (code >= 0xD800 && code <= 0xDBFF) {
            std::uint32_t low = 0;
            if (!literal("\\u") || !hex4(low) || low < 0xDC00 || low > 0xDFFF) {
                return fail("unpaired surrogate in a \\u escape");
            }
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
        } else if (code >= 0xDC00 && code <= 0xDFFF) {
            return fail("unpaired surrogate in a \\u escape");
        }
        append_utf8(out, code);
        return true;
    }

    bool string(std::string& out) {
        ++at_;  // the opening quote
        for (;;) {
            if (at_ >= text_.size()) {
                return fail("unterminated string");
            }
            const char c = text_[at_];
            if (c == '"') {
                ++at_;
                return true;
            }
            if (c == '\\') {
                ++at_;
                if (!escape(out)) {
                    return false;
                }
                continue;
            }
            if (static_cast<unsigned char>(c) < 0x20) {
                return fail("control character in a string");
            }
            const std::size_t n = utf8_sequence_length(text_, at_);
            if (n == 0) {
                return fail("invalid UTF-8 in a string");
            }
            out.append(text_.data() + at_, n);
            at_ += n;
        }
    }

    bool number(JsonValue& out) {
        const std::size_t start = at_;
        const auto digits = [&] {
            const std::size_t from = at_;
            while (at_ < text_.size() && text_[at_] >= '0' && text_[at_] <= '9') {
                ++at_;
            }
            return at_ - from;
        };
        if (at_ < text_.size() && text_[at_] == '-') {
            ++at_;
        }
        const std::size_t first = at_;
        const std::size_t whole = digits();
        if (whole == 0 || (whole > 1 && text_[first] == '0')) {
            return fail("invalid value");
        }
        if (at_ < text_.size() && text_[at_] == '.') {
            ++at_;
            if (digits() == 0) {
                return fail("invalid number");
            }
        }
        if (at_ < text_.size() && (text_[at_] == 'e' || text_[at_] == 'E')) {
            ++at_;
            if (at_ < text_.size() && (text_[at_] == '+' || text_[at_] == '-')) {
                ++at_;
            }
            if (digits() == 0) {
                return fail("invalid number");
            }
        }
        // from_chars reads the C format whatever the global locale is, and rounds correctly; a
        // value a double cannot hold (1e999, 1e-999) is refused rather than guessed.
        double value = 0.0;
        const std::from_chars_result r =
            std::from_chars(text_.data() + start, text_.data() + at_, value);
        if (r.ec != std::errc() || r.ptr != text_.data() + at_) {
            return fail("number out of range");
        }
        out.kind = JsonValue::Kind::number;
        out.number = value;
        return true;
    }

    std::string_view text_;
    std::size_t max_depth_;
    std::size_t at_ = 0;
    std::string error_;
};

// read_json(text, out, error): JsonReader(text, max_depth).read(out, error).
inline bool read_json(std::string_view text, JsonValue& out, std::string& error,
                      std::size_t max_depth = 16) {
    return JsonReader(text, max_depth).read(out, error);
}

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_JSON_READ_HPP

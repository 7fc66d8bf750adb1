// JsonWriter and its escaping and number helpers: the JSON the reports write (private).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_JSON_HPP
#define BULWARK_DETAIL_JSON_HPP

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>

#include <bulwark/detail/math.hpp>
#include <bulwark/detail/number.hpp>
#include <bulwark/detail/utf8.hpp>

namespace bulwark {
namespace detail {

// Appends `text` as a JSON string literal. Control characters (CR and LF among them) become
// escapes, so a message from a failing dependency can never break the document or a log line;
// bytes that are not UTF-8 (JSON must be) become U+FFFD.
inline void json_string(std::string& out, std::string_view text) {
    out.push_back('"');
    append_utf8(out, text, [](std::string& o, char c) {
        switch (c) {
            case '"':
                o += "\\\"";
                break;
            case '\\':
                o += "\\\\";
                break;
            case '\n':
                o += "\\n";
                break;
            case '\r':
                o += "\\r";
                break;
            case '\t':
                o += "\\t";
                break;
            default:
                if (static_cast<unsigned char>(c) < 0x20 || c == '\x7f') {
                    char buffer[8];
                    std::snprintf(buffer, sizeof buffer, "\\u%04x",
                                  static_cast<unsigned>(static_cast<unsigned char>(c)));
                    o += buffer;
                } else {
                    o.push_back(c);
                }
        }
    });
    out.push_back('"');
}

// Appends a number; NaN and infinities (which JSON cannot express) become null.
inline void json_number(std::string& out, double value) {
    if (!detail::is_finite(value)) {
        out += "null";
        return;
    }
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%.15g", value);
    out += with_decimal_point(buffer);  // a decimal-comma locale must not break the document
}

inline void json_number(std::string& out, std::uint64_t value) {
    out += std::to_string(value);
}

// Writes one JSON document, compact (no whitespace): objects and arrays are opened and closed in
// order and the writer puts the commas and colons. Keys and strings are escaped (json_string),
// numbers written as json_number writes them.
//   JsonWriter w;
//   w.begin_object().field("status", "up").key("checks").begin_array();
//   w.begin_object().field("name", name).field("runs", runs).end_object();
//   w.end_array().end_object();
//   std::string json = w.take();
// A value goes where a value may stand: after key(), as an array element, or as the document.
// Nothing checks that scopes are closed in order: the callers are the library's report types.
// Not thread-safe (a local value).
class JsonWriter {
public:
    JsonWriter& begin_object() {
        separate();
        out_.push_back('{');
        first_ = true;
        return *this;
    }
    JsonWriter& end_object() {
        out_.push_back('}');
        first_ = false;  // the enclosing scope now holds this object
        return *this;
    }
    JsonWriter& begin_array() {
        separate();
        out_.push_back('[');
        first_ = true;
        return *this;
    }
    JsonWriter& end_array() {
        out_.push_back(']');
        first_ = false;
        return *this;
    }

    // An object member's name; its value comes next.
    JsonWriter& key(std::string_view name) {
        separate();
        json_string(out_, name);
        out_.push_back(':');
        after_key_ = true;
        return *this;
    }

    JsonWriter& value(std::string_view text) {
        separate();
        json_string(out_, text);
        return *this;
    }
    JsonWriter& value(const char* text) { return value(std::string_view(text)); }
    JsonWriter& value(const std::string& text) { return value(std::string_view(text)); }
    // NaN and infinities are written null.
    JsonWriter& value(double number) {
        separate();
        json_number(out_, number);
        return *this;
    }
    JsonWriter& value(std::uint64_t number) {
        separate();
        json_number(out_, number);
        return *this;
    }
    JsonWriter& value(bool flag) {
        separate();
        out_ += flag ? "true" : "false";
        return *this;
    }
    JsonWriter& null() {
        separate();
        out_ += "null";
        return *this;
    }

    // A value that is already a JSON document (a report's to_json()), written as it is.
    JsonWriter& raw(std::string_view json) {
        separate();
        out_ += json;
        return *this;
    }

    // key(name).value(v).
    template <class T>
    JsonWriter& field(std::string_view name, const T& v) {
        return key(name).value(v);
    }

    const std::string& str() const noexcept { return out_; }
    std::string take() noexcept { return std::move(out_); }

private:
    // Before a key or a value: a comma unless it is the first in its scope or a key's value.
    void separate() {
        if (after_key_) {
            after_key_ = false;
            return;
        }
        if (!first_) {
            out_.push_back(',');
        }
        first_ = false;
    }

    std::string out_;
    bool first_ = true;       // nothing written yet in the innermost open scope
    bool after_key_ = false;  // the next value is a member's
};

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_JSON_HPP

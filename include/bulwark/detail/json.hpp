// A minimal JSON writer for reports (private).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_JSON_HPP
#define BULWARK_DETAIL_JSON_HPP

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include <bulwark/detail/math.hpp>
#include <bulwark/detail/number.hpp>

namespace bulwark {
namespace detail {

// Appends `text` as a JSON string literal. Control characters (CR and LF among them) become
// escapes, so a message from a failing dependency can never break the document or a log line.
inline void json_string(std::string& out, std::string_view text) {
    out.push_back('"');
    for (char c : text) {
        switch (c) {
            case '"':
                out += "\\\"";
                break;
            case '\\':
                out += "\\\\";
                break;
            case '\n':
                out += "\\n";
                break;
            case '\r':
                out += "\\r";
                break;
            case '\t':
                out += "\\t";
                break;
            default:
                if (static_cast<unsigned char>(c) < 0x20 || c == '\x7f') {
                    char buffer[8];
                    std::snprintf(buffer, sizeof buffer, "\\u%04x",
                                  static_cast<unsigned>(static_cast<unsigned char>(c)));
                    out += buffer;
                } else {
                    out.push_back(c);
                }
        }
    }
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

// Appends `"key":` (with a leading comma unless `first`), for hand-built objects.
inline void json_key(std::string& out, std::string_view key, bool& first) {
    if (!first) {
        out.push_back(',');
    }
    first = false;
    json_string(out, key);
    out.push_back(':');
}

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_JSON_HPP

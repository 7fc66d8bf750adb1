// UTF-8 validation: text from message data made safe for formats that require UTF-8 (private).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_UTF8_HPP
#define BULWARK_DETAIL_UTF8_HPP

#include <cstddef>
#include <string>
#include <string_view>

namespace bulwark {
namespace detail {

// The length of the well-formed UTF-8 sequence that starts at text[at] (1 to 4), or 0 when the
// bytes there are not one (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF).
inline std::size_t utf8_sequence_length(std::string_view text, std::size_t at) noexcept {
    const auto byte = [&](std::size_t i) {
        return static_cast<unsigned char>(text[at + i]);
    };
    const unsigned char lead = byte(0);
    if (lead < 0x80) {
        return 1;
    }
    std::size_t length = 0;
    unsigned char low = 0x80;   // the range of the second byte, which rules out overlong forms,
    unsigned char high = 0xBF;  // surrogates and code points above U+10FFFF
    if (lead >= 0xC2 && lead <= 0xDF) {
        length = 2;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
        length = 3;
        low = lead == 0xE0 ? 0xA0 : 0x80;
        high = lead == 0xED ? 0x9F : 0xBF;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
        length = 4;
        low = lead == 0xF0 ? 0x90 : 0x80;
        high = lead == 0xF4 ? 0x8F : 0xBF;
    } else {
        return 0;
    }
    if (text.size() - at < length || byte(1) < low || byte(1) > high) {
        return 0;
    }
    for (std::size_t i = 2; i < length; ++i) {
        if (byte(i) < 0x80 || byte(i) > 0xBF) {
            return 0;
        }
    }
    return length;
}

// Appends `text` with each byte that does not start a well-formed sequence replaced by U+FFFD,
// calling escape(out, c) for each ASCII character so the caller can escape it.
template <class Escape>
void append_utf8(std::string& out, std::string_view text, Escape&& escape) {
    for (std::size_t at = 0; at < text.size();) {
        const std::size_t length = utf8_sequence_length(text, at);
        if (length == 0) {
            out += "\xEF\xBF\xBD";
            ++at;
        } else if (length == 1) {
            escape(out, text[at]);
            ++at;
        } else {
            out.append(text, at, length);
            at += length;
        }
    }
}

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_UTF8_HPP

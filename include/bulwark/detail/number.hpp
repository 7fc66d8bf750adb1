// Locale-independent number formatting (private).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_NUMBER_HPP
#define BULWARK_DETAIL_NUMBER_HPP

#include <string>

namespace bulwark {
namespace detail {

// `printed` as printf("%g") wrote it under the C locale in force, with its decimal separator (a
// ',' or a multi-byte one) replaced by '.': machine-read formats (JSON, Prometheus) need the
// point whatever locale the service runs under.
inline std::string with_decimal_point(const char* printed) {
    std::string out;
    bool in_separator = false;
    for (const char* c = printed; *c != '\0'; ++c) {
        const bool numeric = (*c >= '0' && *c <= '9') || *c == '-' || *c == '+' || *c == 'e';
        if (numeric) {
            out.push_back(*c);
            in_separator = false;
        } else if (!in_separator) {
            out.push_back('.');
            in_separator = true;
        }
    }
    return out;
}

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_NUMBER_HPP

// The operator's console page (HTML, script and style) that AdminHandler serves.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_ADMIN_CONSOLE_PAGE_HPP
#define BULWARK_ADMIN_CONSOLE_PAGE_HPP

#include <string_view>

namespace bulwark {

inline std::string_view admin_console_html() noexcept {
    return R"(<!doctype html><html><head><meta charset="utf-8"><title>bulwark console</title>
<link rel="stylesheet" href="console.css"></head><body><main id="app"></main>
<script src="console.js"></script></body></html>)";
}

inline std::string_view admin_console_js() noexcept {
    return "'use strict';\n";
}

inline std::string_view admin_console_css() noexcept {
    return "body{font-family:sans-serif}\n";
}

}  // namespace bulwark

#endif  // BULWARK_ADMIN_CONSOLE_PAGE_HPP

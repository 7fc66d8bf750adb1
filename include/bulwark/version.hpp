// The library version macros.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_VERSION_HPP
#define BULWARK_VERSION_HPP

// The one place the version lives: CMake parses these lines, and the single header and the
// pkg-config file take it from CMake.
#define BULWARK_VERSION_MAJOR 0
#define BULWARK_VERSION_MINOR 1
#define BULWARK_VERSION_PATCH 0

#define BULWARK_VERSION \
    (BULWARK_VERSION_MAJOR * 10000 + BULWARK_VERSION_MINOR * 100 + BULWARK_VERSION_PATCH)
#define BULWARK_VERSION_STRING "0.1.0"

#endif  // BULWARK_VERSION_HPP

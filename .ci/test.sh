#!/usr/bin/env bash
# Runs bulwark's whole test suite on a fresh machine: clang-tidy, then four configurations:
#   tidy      clang-tidy 14 over the umbrella header, warnings as errors (~20 s)
#   ci-gcc    g++, C++17, -Werror (+ packaging, consumer, compile-fail and format checks)
#   ci-clang  clang++, C++20, -Werror
#   ci-asan   AddressSanitizer + UndefinedBehaviorSanitizer (clang++, C++17)
#   ci-tsan   ThreadSanitizer (g++, C++20)
# Usage: bash .ci/test.sh [preset...]     (default: all five)
# Installs what is missing from the system package manager (Debian: catch2, clang-tidy; for the
# admin console's example and its browser test: libcpp-httplib-dev, chromium, chromium-driver,
# python3-selenium), or stops with a clear message. Never downloads anything else.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

presets=("$@")
if [ ${#presets[@]} -eq 0 ]; then
  presets=(tidy ci-gcc ci-clang ci-asan ci-tsan)
fi

say() { printf '\n== %s\n' "$*"; }

have_catch2() {
  local prefix dir
  local prefixes=(/usr /usr/local)
  if [ -n "${CMAKE_PREFIX_PATH:-}" ]; then
    IFS=: read -r -a extra <<<"$CMAKE_PREFIX_PATH"
    prefixes=("${extra[@]}" "${prefixes[@]}")
  fi
  for prefix in "${prefixes[@]}"; do
    for dir in "$prefix"/lib/cmake/Catch2 "$prefix"/lib64/cmake/Catch2 "$prefix"/share/cmake/Catch2 \
               "$prefix"/lib/*/cmake/Catch2; do
      if [ -f "$dir/Catch2Config.cmake" ] || [ -f "$dir/catch2-config.cmake" ]; then
        return 0
      fi
    done
  done
  return 1
}

# Debian package names for what the suite needs; only the missing ones are installed.
missing=()
have_catch2 || missing+=(catch2)
command -v cmake >/dev/null || missing+=(cmake)
command -v ninja >/dev/null || missing+=(ninja-build)
command -v g++ >/dev/null || missing+=(g++)
command -v clang++ >/dev/null || missing+=(clang)
command -v clang-tidy-14 >/dev/null || command -v clang-tidy >/dev/null || missing+=(clang-tidy)
command -v python3 >/dev/null || missing+=(python3)
command -v pkg-config >/dev/null || missing+=(pkg-config)
# The SQLite stores (bulwark::sqlite) and their sqlite.* tests.
{ pkg-config --exists sqlite3 2>/dev/null || [ -f /usr/include/sqlite3.h ]; } ||
  missing+=(libsqlite3-dev)
# The admin console example (cpp-httplib) and its browser test (headless Chromium driven by
# Selenium, which the system's Python must have: a pyenv or venv python3 on PATH may not).
{ pkg-config --exists cpp-httplib 2>/dev/null || [ -f /usr/include/httplib.h ] ||
  [ -f /usr/local/include/httplib.h ]; } || missing+=(libcpp-httplib-dev)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
/usr/bin/python3 -c 'import selenium' >/dev/null 2>&1 || missing+=(python3-selenium)
if [ -n "${CI:-}" ] && ! command -v ccache >/dev/null; then
  missing+=(ccache)  # optional speed-up for repeated CI runs
fi

if [ ${#missing[@]} -gt 0 ]; then
  say "installing missing packages: ${missing[*]}"
  if command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ]; then
    apt_get=(apt-get)
  elif command -v apt-get >/dev/null && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    apt_get=(sudo apt-get)
  else
    echo "error: bulwark's tests need: ${missing[*]}" >&2
    echo "       install them with your package manager (Debian/Ubuntu: apt-get install -y ${missing[*]})" >&2
    echo "       and run this command again." >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! "${apt_get[@]}" install -y --no-install-recommends "${missing[@]}"; then
    "${apt_get[@]}" update
    "${apt_get[@]}" install -y --no-install-recommends "${missing[@]}"
  fi
  if ! have_catch2; then
    echo "error: Catch2 is still missing after installing it; install Catch2 v2.13+ or v3" >&2
    exit 1
  fi
fi

cmake_version=$(cmake --version | sed -n 's/^cmake version \([0-9]*\.[0-9]*\).*/\1/p')
if [ "$(printf '%s\n' 3.25 "$cmake_version" | sort -V | head -n1)" != 3.25 ]; then
  echo "error: the test workflow needs CMake 3.25 or newer (found $cmake_version)" >&2
  exit 1
fi

if command -v ccache >/dev/null; then
  export CMAKE_CXX_COMPILER_LAUNCHER=ccache
fi

start=$SECONDS
for preset in "${presets[@]}"; do
  say "preset $preset"
  t0=$SECONDS
  cmake --workflow --preset "$preset"
  echo "preset $preset passed in $((SECONDS - t0)) s"
done
elapsed=$((SECONDS - start))

# What including bulwark costs a user's compile (g++ -std=c++17 -O0, CPU time): a report for a
# person to read, not a gate, so figures over target do not fail the run; a translation unit that
# does not compile does.
if command -v g++ >/dev/null; then
  say "compile-time report (CPU, medians of 5)"
  python3 cmake/compile_time.py --compiler g++ --runs 5
else
  say "compile-time report skipped: g++ not found"
fi

say "all ${#presets[@]} configurations passed in ${elapsed} s: ${presets[*]}"

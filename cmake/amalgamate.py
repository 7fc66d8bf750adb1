#!/usr/bin/env python3
"""Generates single_include/bulwark/bulwark.hpp from include/.

Inlines every `#include <bulwark/...>` once, depth-first from the full umbrella header (which
includes every public header), and leaves system includes as they are. Each file keeps its first
line (what it holds) and its include guard, so the single header reads as the headers do and can
meet the modular headers in one translation unit. The output is deterministic: no dates, LF line
endings, a stable order.

    python3 cmake/amalgamate.py           # writes the single header
    python3 cmake/amalgamate.py --check   # exits 1 if the committed single header is stale
"""
import argparse
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
INCLUDE_DIR = ROOT / "include"
UMBRELLA = "bulwark/bulwark.hpp"
OUTPUT = ROOT / "single_include" / "bulwark" / "bulwark.hpp"

INCLUDE_RE = re.compile(r'^\s*#\s*include\s*<(bulwark/[^>]+)>\s*$')
LICENCE_RE = re.compile(r"^// SPDX-License-Identifier: .*$")
VERSION_RE = {part: re.compile(r"#define BULWARK_VERSION_%s (\d+)" % part)
              for part in ("MAJOR", "MINOR", "PATCH")}


def read_version():
    text = (INCLUDE_DIR / "bulwark" / "version.hpp").read_text(encoding="utf-8")
    parts = []
    for part in ("MAJOR", "MINOR", "PATCH"):
        match = VERSION_RE[part].search(text)
        if not match:
            sys.exit("amalgamate.py: cannot read BULWARK_VERSION_%s from version.hpp" % part)
        parts.append(match.group(1))
    return ".".join(parts)


def expand(name, seen, out):
    if name in seen:
        out.append("// #include <%s> (already included above)\n" % name)
        return
    seen.add(name)
    path = INCLUDE_DIR / name
    if not path.is_file():
        sys.exit("amalgamate.py: include/%s does not exist" % name)
    out.append("// #include <%s>\n" % name)
    for line in path.read_text(encoding="utf-8").splitlines():
        if LICENCE_RE.match(line):
            continue
        match = INCLUDE_RE.match(line)
        if match:
            expand(match.group(1), seen, out)
        else:
            out.append(line + "\n")


def generate():
    version = read_version()
    out = [
        "// bulwark %s — single-header edition.\n" % version,
        "// Generated from include/ by cmake/amalgamate.py — do not edit; edit include/ and rerun it.\n",
        "// SPDX-License-Identifier: MIT\n",
        "// Copyright (c) the bulwark authors. Permission is granted to use, copy, modify and\n",
        "// distribute this file under the terms of the MIT License; see LICENSE in the bulwark\n",
        "// repository for the full text.\n",
        "#ifndef BULWARK_SINGLE_INCLUDE_HPP\n",
        "#define BULWARK_SINGLE_INCLUDE_HPP\n",
    ]
    seen = set()
    expand(UMBRELLA, seen, out)
    out.append("#endif  // BULWARK_SINGLE_INCLUDE_HPP\n")
    return "".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed file instead of writing it")
    args = parser.parse_args()
    text = generate()
    if args.check:
        current = OUTPUT.read_bytes().decode("utf-8") if OUTPUT.is_file() else None
        if current != text:
            print("single_include/bulwark/bulwark.hpp is stale: run python3 cmake/amalgamate.py "
                  "(or build the bulwark_amalgamate target) and commit the result.")
            return 1
        print("single_include/bulwark/bulwark.hpp is up to date.")
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUTPUT, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

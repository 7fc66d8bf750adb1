#!/usr/bin/env python3
"""Checks that README.md shows exactly the marked usage example of examples/00_readme.cpp."""
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main():
    example = (ROOT / "examples" / "00_readme.cpp").read_text(encoding="utf-8")
    begin = example.index("// README-BEGIN\n") + len("// README-BEGIN\n")
    end = example.index("// README-END")
    snippet = example[begin:end]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    if "```cpp\n" + snippet + "```\n" not in readme:
        print("README.md does not show the usage example of examples/00_readme.cpp verbatim; "
              "copy the lines between the README-BEGIN/README-END markers into README.md.")
        return 1
    lines = snippet.count("\n")
    print("README usage example matches examples/00_readme.cpp (%d lines)." % lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

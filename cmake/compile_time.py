#!/usr/bin/env python3
"""Measures how long a translation unit that includes <bulwark/bulwark.hpp> takes to compile.

Best of three runs at -O0 (compile only), so that a busy moment does not count against the
header. Prints the figure; exits 1 if the best run is over the budget.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compiler", required=True)
    parser.add_argument("--std", default="-std=c++17")
    parser.add_argument("--include", required=True)
    parser.add_argument("--budget", type=float, default=2.0, help="seconds")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "umbrella.cpp")
        with open(source, "w", encoding="utf-8") as f:
            f.write("#include <bulwark/bulwark.hpp>\nint main() { return 0; }\n")
        command = [args.compiler, args.std, "-O0", "-c", "-I", args.include, source,
                   "-o", os.path.join(tmp, "umbrella.o")]
        timings = []
        for _ in range(args.runs):
            start = time.perf_counter()
            result = subprocess.run(command, capture_output=True, text=True)
            timings.append(time.perf_counter() - start)
            if result.returncode != 0:
                sys.stderr.write(result.stderr)
                return 1
    best = min(timings)
    print("umbrella header compile time (%s %s -O0): best %.2f s of %s; budget %.1f s"
          % (os.path.basename(args.compiler), args.std, best,
             ", ".join("%.2f" % t for t in timings), args.budget))
    return 0 if best <= args.budget else 1


if __name__ == "__main__":
    sys.exit(main())

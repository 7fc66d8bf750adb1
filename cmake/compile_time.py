#!/usr/bin/env python3
"""Reports what including bulwark costs a user's compile, as CPU time of the compiler.

Three figures, each the median (and min) of --runs runs (default 5) of g++ -std=c++17 -O0:

  light umbrella   #include <bulwark/policies.hpp>, -fsyntax-only          target < 1.0 s
  full umbrella    #include <bulwark/bulwark.hpp>, -fsyntax-only           target < 2.0 s
  typical user TU  cmake/compile_time_typical.cpp against the single       target < 1.5 s
                   header: a pipeline(fallback, timeout, retry, breaker)
                   and a wrap of a free function, called; -c (an object)

The time is the compiler's user + system CPU time (getrusage(RUSAGE_CHILDREN) before and after
each run, which includes cc1plus and as), not wall time: on a shared machine wall time swings by
half from run to run while CPU time moves by a few percent. Still a report, not a test: it exits
0 whatever the figures (1 only when a translation unit does not compile, or with --strict when a
figure is over its target), and says so when the compiler or a header is missing. CI prints it
(.ci/test.sh); read it on a quiet machine before trusting a tenth of a second.
"""
import argparse
import os
import pathlib
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def cpu_seconds(command):
    """Runs `command` and returns (user + system CPU seconds of it and its children, result)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(command, capture_output=True, text=True, cwd=str(ROOT))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return spent, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compiler", default="g++")
    parser.add_argument("--std", default="-std=c++17")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when a figure is over its target (for a quiet machine)")
    args = parser.parse_args()

    compiler = shutil.which(args.compiler)
    if compiler is None:
        print("compile-time report skipped: %s not found" % args.compiler)
        return 0
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True)
    print("compiler: %s (%s %s -O0), CPU seconds (user+sys), median of %d runs"
          % (version.stdout.splitlines()[0] if version.stdout else compiler, args.compiler,
             args.std, args.runs))

    include = ROOT / "include"
    single = ROOT / "single_include"
    typical = ROOT / "cmake" / "compile_time_typical.cpp"
    failed = False
    over = False
    with tempfile.TemporaryDirectory() as tmp:
        # (name, what is compiled, target in s, header that must exist, -I, source, mode)
        figures = [
            ("light umbrella", "<bulwark/policies.hpp>", 1.0,
             include / "bulwark" / "policies.hpp", include, None, "-fsyntax-only"),
            ("full umbrella", "<bulwark/bulwark.hpp>", 2.0,
             include / "bulwark" / "bulwark.hpp", include, None, "-fsyntax-only"),
            ("typical user TU", "cmake/compile_time_typical.cpp", 1.5,
             single / "bulwark" / "bulwark.hpp", single, typical, "-c"),
        ]
        width = max(len(figure[0]) for figure in figures)
        for name, what, target, header, include_dir, source, mode in figures:
            if not header.is_file():
                print("%-*s  skipped: %s not found" % (width, name, what if source is None
                                                      else header.relative_to(ROOT)))
                continue
            if source is None:
                source = pathlib.Path(tmp) / (name.replace(" ", "_") + ".cpp")
                source.write_text("#include %s\n" % what, encoding="utf-8")
            command = [compiler, args.std, "-O0", mode, "-I", str(include_dir), str(source)]
            if mode == "-c":
                command += ["-o", os.path.join(tmp, "typical.o")]
            runs = []
            for _ in range(args.runs):
                spent, result = cpu_seconds(command)
                if result.returncode != 0:
                    print("%-*s  FAILED to compile: %s\n%s%s"
                          % (width, name, " ".join(command), result.stdout, result.stderr))
                    failed = True
                    break
                runs.append(spent)
            else:
                median = statistics.median(runs)
                verdict = "ok" if median < target else "OVER"
                over = over or verdict == "OVER"
                print("%-*s  median %.2f s  min %.2f s  runs %s  target < %.1f s  %s  (%s, %s)"
                      % (width, name, median, min(runs), " ".join("%.2f" % r for r in runs),
                         target, verdict, what, mode))
    if failed:
        return 1
    return 1 if (args.strict and over) else 0


if __name__ == "__main__":
    sys.exit(main())

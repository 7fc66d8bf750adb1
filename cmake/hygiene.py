#!/usr/bin/env python3
"""Greps for what the project promises never to contain.

- No real sleeps in the unit tests: time is injected, tests run on a ManualClock.
- No std::atomic_thread_fence in the headers: TSan does not model fences (and g++ warns under
  -fsanitize=thread); put the ordering on the atomic operation instead.
- No <iostream> in the headers: it costs compile time and a static initialiser per TU.
- No unnamed namespaces in the headers: an ODR hazard in a header-only library.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

RULES = [
    ("tests", "*.cpp", re.compile(r"this_thread::sleep_(for|until)|\busleep\s*\(|\bnanosleep\s*\("),
     "a unit test sleeps for real; use a ManualClock"),
    ("include", "*.hpp", re.compile(r"atomic_thread_fence"),
     "a header uses std::atomic_thread_fence; order the atomic operation itself"),
    ("include", "*.hpp", re.compile(r"#\s*include\s*<iostream>"),
     "a header includes <iostream>"),
    ("include", "*.hpp", re.compile(r"^\s*namespace\s*\{"),
     "a header opens an unnamed namespace"),
]


def main():
    problems = []
    for folder, pattern, regex, message in RULES:
        for path in sorted((ROOT / folder).rglob(pattern)):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if regex.search(line):
                    problems.append("%s:%d: %s" % (path.relative_to(ROOT), number, message))
    for problem in problems:
        print(problem)
    print("hygiene: %d problem(s)" % len(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

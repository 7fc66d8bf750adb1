#!/usr/bin/env python3
"""Greps for what the project promises never to contain.

- No real sleeps in the unit tests: time is injected, tests run on a ManualClock.
- No std::atomic_thread_fence in the headers: TSan does not model fences (and g++ warns under
  -fsanitize=thread); put the ordering on the atomic operation instead.
- No <iostream> in the headers: it costs compile time and a static initialiser per TU.
- No unnamed namespaces in the headers: an ODR hazard in a header-only library.
- Layers: every header under include/ belongs to one layer of the table in docs/development.md
  (the table is the single source: this script reads it), includes only headers of its own layer
  or the layers below, and the includes form no cycle. Every header's first line says what it
  holds (a `// ` comment that is not the same in two files).

`hygiene.py --self-test` feeds the layer check an upward include and a cycle and fails unless
both are reported, so the check itself cannot silently pass everything.
"""
import argparse
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


INCLUDE_RE = re.compile(r'^\s*#\s*include\s*<(bulwark/[^>]+)>', re.M)
LAYER_ROW_RE = re.compile(r'^\|\s*(\d+)\s*\|\s*([a-z &/]+?)\s*\|(.*)\|\s*$')


def read_layers(doc):
    """{header: (rank, layer name)} from the layer table of docs/development.md.

    A row is `| rank | name | headers |`, where headers are `a.hpp` names relative to
    include/bulwark/, separated by spaces or commas, each in backquotes.
    """
    layers = {}
    in_table = False
    for line in doc.splitlines():
        if line.startswith("<!-- layers -->"):
            in_table = True
            continue
        if line.startswith("<!-- /layers -->"):
            break
        match = LAYER_ROW_RE.match(line) if in_table else None
        if match:
            rank, name = int(match.group(1)), match.group(2)
            for header in re.findall(r"`([^`]+\.hpp)`", match.group(3)):
                layers["bulwark/" + header] = (rank, name)
    return layers


def include_graph(include_dir):
    graph = {}
    for path in sorted(include_dir.rglob("*.hpp")):
        name = str(path.relative_to(include_dir))
        graph[name] = INCLUDE_RE.findall(path.read_text(encoding="utf-8"))
    return graph


def check_layers(graph, layers):
    problems = []
    for header in sorted(graph):
        if header not in layers:
            problems.append("%s: not in the layer table of docs/development.md" % header)
    for header in sorted(layers):
        if header not in graph:
            problems.append("docs/development.md: the layer table names %s, which does not exist"
                            % header)
    for header, includes in sorted(graph.items()):
        if header not in layers:
            continue
        rank, name = layers[header]
        for target in includes:
            if target not in layers:
                continue
            target_rank, target_name = layers[target]
            if target_rank > rank:
                problems.append("%s (%s) includes %s (%s): an include that points up a layer"
                                % (header, name, target, target_name))
    # Cycles: depth-first search, reporting each cycle once by its path.
    state = {}
    stack = []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in graph.get(node, []):
            if state.get(target) == "open":
                cycle = stack[stack.index(target):] + [target]
                problems.append("include cycle: %s" % " -> ".join(cycle))
            elif target in graph and target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return problems


def check_first_lines(include_dir):
    problems = []
    seen = {}
    for path in sorted(include_dir.rglob("*.hpp")):
        name = str(path.relative_to(include_dir))
        first = path.read_text(encoding="utf-8").split("\n", 1)[0]
        if not first.startswith("// ") or first.startswith("// SPDX"):
            problems.append("%s:1: the first line must be a comment saying what the header holds"
                            % name)
        elif first in seen:
            problems.append("%s:1: the same first line as %s; say what this header holds"
                            % (name, seen[first]))
        else:
            seen[first] = name
    return problems


def self_test():
    """The layer check must report an upward include and a cycle fed to it."""
    graph = include_graph(ROOT / "include")
    layers = read_layers((ROOT / "docs" / "development.md").read_text(encoding="utf-8"))
    if check_layers(graph, layers):
        print("self-test: the real tree must pass first")
        return 1
    lowest = min(layers, key=lambda h: (layers[h][0], h))
    highest = max(layers, key=lambda h: (layers[h][0], h))
    upward = {k: list(v) for k, v in graph.items()}
    upward[lowest].append(highest)
    found_up = [p for p in check_layers(upward, layers) if "points up" in p]
    a, b = sorted(h for h in layers if layers[h][0] == layers[lowest][0])[:2]
    cyclic = {k: list(v) for k, v in graph.items()}
    cyclic[a].append(b)
    cyclic[b].append(a)
    found_cycle = [p for p in check_layers(cyclic, layers) if "cycle" in p]
    unlisted = dict(graph)
    unlisted["bulwark/not_in_the_table.hpp"] = []
    found_unlisted = [p for p in check_layers(unlisted, layers) if "not in the layer table" in p]
    print("self-test: upward include %s -> %s reported: %s" % (lowest, highest, bool(found_up)))
    print("self-test: cycle %s <-> %s reported: %s" % (a, b, bool(found_cycle)))
    print("self-test: a header missing from the table reported: %s" % bool(found_unlisted))
    return 0 if found_up and found_cycle and found_unlisted else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--self-test", action="store_true",
                        help="check that the layer check reports injected violations")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    problems = []
    for folder, pattern, regex, message in RULES:
        for path in sorted((ROOT / folder).rglob(pattern)):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if regex.search(line):
                    problems.append("%s:%d: %s" % (path.relative_to(ROOT), number, message))
    layers = read_layers((ROOT / "docs" / "development.md").read_text(encoding="utf-8"))
    if not layers:
        problems.append("docs/development.md: no layer table (between <!-- layers --> markers)")
    problems += check_layers(include_graph(ROOT / "include"), layers)
    problems += check_first_lines(ROOT / "include")
    for problem in problems:
        print(problem)
    print("hygiene: %d problem(s)" % len(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Compiles every ```cpp block of README.md and docs/*.md against the single header.

The convention (docs/development.md, "Code in the documentation"):

- A block that has an `#include` line or an `int main(` is a whole translation unit and is
  compiled on its own, exactly as written.
- Any other block is a fragment. All fragments are compiled together in one translation unit
  (the single header is parsed once): the common standard headers (STD_HEADERS),
  `#include <bulwark/bulwark.hpp>`, `using namespace std::chrono_literals;`, then per document a namespace of its own (so that a
  prelude's `clock` or `log` hides the C library's and documents do not collide) holding the
  document's prelude and each fragment as the body of a function in a namespace of its own, so
  that two fragments may declare the same names.
- The prelude declares what the fragments use but do not define (`call()`, `Receipt`, a
  `breaker`...). It lives in the document as an HTML comment, invisible when rendered:
      <!-- snippet-prelude
      struct Receipt { std::string id; };
      -->
  A document may hold several; they are joined in order, before any fragment.
- A comment on the line(s) just before a block's fence changes how it is compiled:
      <!-- snippet: file-scope -->             declarations (a class, a template): compiled at
                                               namespace scope instead of in a function body
      <!-- snippet: skip (the reason) -->      not compiled; the reason is required and printed
  Keep skips rare: a skipped block can rot.

Errors are reported at the block's line in the Markdown file (the generated code carries #line
directives). Flags: -fsyntax-only -Wall -Wextra -Werror, minus the unused-* warnings that
fragments cause by nature. Exits 1 when a block does not compile or a marker is malformed.
"""
import argparse
import concurrent.futures
import os
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent

WARNINGS = ["-Wall", "-Wextra", "-Werror", "-Wno-unused", "-Wno-unused-parameter",
            "-Wno-unused-variable", "-Wno-unused-but-set-variable", "-Wno-unused-value",
            "-Wno-unused-result", "-Wno-unused-function", "-Wno-unused-local-typedefs"]

# What a reader's program would include anyway; fragments do not depend on the single header
# happening to include them.
STD_HEADERS = ["chrono", "cstdint", "deque", "exception", "functional", "memory", "optional",
               "stdexcept", "string", "string_view", "system_error", "utility", "vector"]

FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*snippet:\s*(.*?)\s*-->\s*$")
PRELUDE_OPEN = re.compile(r"^\s*<!--\s*snippet-prelude\s*$")
FULL_TU = re.compile(r"^\s*#\s*include\b|\bint\s+main\s*\(", re.MULTILINE)


class MarkdownError(Exception):
    pass


class Block:
    def __init__(self, path, line, code, mode, reason=None):
        self.path = path  # relative to ROOT, as printed
        self.line = line  # 1-based line of the block's first code line
        self.code = code
        self.mode = mode  # "tu", "body", "file-scope" or "skip"
        self.reason = reason


class Document:
    def __init__(self, path):
        self.path = path
        self.preludes = []  # (first line, text)
        self.blocks = []


def parse(path, shown):
    """Reads one Markdown file into its preludes and cpp blocks."""
    doc = Document(shown)
    lines = path.read_text(encoding="utf-8").splitlines()
    pending = None  # (line, marker text) waiting for the next fence
    i = 0
    while i < len(lines):
        line = lines[i]
        if PRELUDE_OPEN.match(line):
            end = i + 1
            while end < len(lines) and lines[end].strip() != "-->":
                end += 1
            if end == len(lines):
                raise MarkdownError("%s:%d: snippet-prelude is not closed by a '-->' line"
                                    % (shown, i + 1))
            doc.preludes.append((i + 2, "\n".join(lines[i + 1:end])))
            i = end + 1
            continue
        marker = MARKER.match(line)
        if marker:
            if pending:
                raise MarkdownError("%s:%d: two snippet markers for one block" % (shown, i + 1))
            pending = (i + 1, marker.group(1))
            i += 1
            continue
        fence = FENCE.match(line)
        if fence:
            end = i + 1
            while end < len(lines) and not re.match(r"^\s*```\s*$", lines[end]):
                end += 1
            if end == len(lines):
                raise MarkdownError("%s:%d: code block is not closed" % (shown, i + 1))
            if fence.group(2) == "cpp":
                code = "\n".join(lines[i + 1:end]) + "\n"
                doc.blocks.append(make_block(shown, i + 2, code, pending))
                pending = None
            elif pending:
                raise MarkdownError("%s:%d: a snippet marker applies only to a cpp block"
                                    % (shown, pending[0]))
            i = end + 1
            continue
        if pending and line.strip():
            raise MarkdownError("%s:%d: a snippet marker must come just before a cpp block"
                                % (shown, pending[0]))
        i += 1
    if pending:
        raise MarkdownError("%s:%d: a snippet marker with no cpp block after it"
                            % (shown, pending[0]))
    return doc


def make_block(shown, line, code, pending):
    full = bool(FULL_TU.search(code))
    if pending is None:
        return Block(shown, line, code, "tu" if full else "body")
    where, text = pending
    skip = re.match(r"^skip\s*\((.+)\)$", text)
    if skip:
        return Block(shown, line, code, "skip", skip.group(1).strip())
    if text == "file-scope" and not full:
        return Block(shown, line, code, "file-scope")
    raise MarkdownError("%s:%d: unknown snippet marker '%s' (want 'skip (reason)' or "
                        "'file-scope', the latter only on a fragment)" % (shown, where, text))


def line_directive(line, shown):
    return '#line %d "%s"\n' % (line, shown)


def fragment_unit(documents):
    """One translation unit holding every fragment of every document: the single header is
    parsed once, and each document's prelude and fragments live in a namespace of its own."""
    parts = ["// Generated by cmake/check_docs.py.\n"]
    parts += ["#include <%s>\n" % h for h in STD_HEADERS]
    parts += ["#include <bulwark/bulwark.hpp>\n", "using namespace std::chrono_literals;\n"]
    for doc in documents:
        if not any(b.mode in ("body", "file-scope") for b in doc.blocks):
            continue
        space = "snippets_" + re.sub(r"[^A-Za-z0-9]+", "_", doc.path)
        parts.append("namespace %s {\n" % space)
        for first, text in doc.preludes:
            parts.append(line_directive(first, doc.path) + text + "\n")
        for n, block in enumerate(doc.blocks):
            if block.mode == "body":
                parts.append("namespace snippet_%d {\n[[maybe_unused]] void snippet() {\n" % n)
                parts.append(line_directive(block.line, doc.path) + block.code)
                parts.append("}\n}  // namespace snippet_%d\n" % n)
            elif block.mode == "file-scope":
                parts.append("namespace snippet_%d {\n" % n)
                parts.append(line_directive(block.line, doc.path) + block.code)
                parts.append("}  // namespace snippet_%d\n" % n)
        parts.append("}  // namespace %s\n" % space)
    return "".join(parts)


def compile_unit(command, source_text, source_path, label):
    with open(source_path, "w", encoding="utf-8") as f:
        f.write(source_text)
    result = subprocess.run(command + [source_path], capture_output=True, text=True,
                            cwd=str(ROOT))
    return label, result.returncode, result.stdout + result.stderr


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compiler", default=os.environ.get("CXX", "g++"))
    parser.add_argument("--std", default="-std=c++17")
    parser.add_argument("--include", default=str(ROOT / "single_include"),
                        help="directory holding bulwark/bulwark.hpp (default: the single header)")
    parser.add_argument("--jobs", type=int, default=min(os.cpu_count() or 1, 4))
    parser.add_argument("--keep", help="write the generated sources to this directory")
    parser.add_argument("files", nargs="*",
                        help="Markdown files (default: README.md and docs/*.md)")
    args = parser.parse_args()

    if args.files:
        paths = [pathlib.Path(p).resolve() for p in args.files]
    else:
        paths = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))

    documents = []
    try:
        for path in paths:
            try:
                shown = str(path.relative_to(ROOT))
            except ValueError:
                shown = str(path)
            documents.append(parse(path, shown))
    except MarkdownError as e:
        print("error: %s" % e)
        return 1

    command = [args.compiler, args.std, "-fsyntax-only"] + WARNINGS + ["-I", args.include]
    work = tempfile.TemporaryDirectory() if not args.keep else None
    out_dir = pathlib.Path(args.keep if args.keep else work.name)
    out_dir.mkdir(parents=True, exist_ok=True)

    jobs = []  # (source text, file name, label)
    skipped = []
    counts = {"tu": 0, "body": 0, "file-scope": 0}
    for doc in documents:
        for block in doc.blocks:
            if block.mode == "skip":
                skipped.append(block)
                continue
            counts[block.mode] += 1
            if block.mode == "tu":
                name = "%s_line%d.cpp" % (re.sub(r"[^A-Za-z0-9]+", "_", doc.path), block.line)
                jobs.append((line_directive(block.line, doc.path) + block.code, name,
                             "%s:%d" % (doc.path, block.line)))
    if counts["body"] or counts["file-scope"]:
        jobs.append((fragment_unit(documents), "fragments.cpp", "the fragments"))

    failures = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(compile_unit, command, text, str(out_dir / name), label)
                   for text, name, label in jobs]
        for future in futures:
            label, code, output = future.result()
            if code != 0:
                failures += 1
                print("FAILED: %s\n%s" % (label, output))
    if work:
        work.cleanup()

    for block in skipped:
        print("skipped: %s:%d (%s)" % (block.path, block.line, block.reason))
    total = counts["tu"] + counts["body"] + counts["file-scope"]
    print("docs snippets: %d of %d translation unit(s) failed; %d block(s) from %d file(s): "
          "%d whole, %d fragment(s), %d at file scope, %d skipped (%s %s)"
          % (failures, len(jobs), total, len(documents), counts["tu"], counts["body"],
             counts["file-scope"], len(skipped), os.path.basename(args.compiler), args.std))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# Fails when library code returns `Result<_, String>` (issue 11: errors are
# typed enums, never bare strings). Library code is every crates/*/src/**.rs
# except main.rs files, bin/ directories and test code (tests.rs files,
# tests/ directories, `#[cfg(test)] mod x { ... }` blocks and
# `#[cfg(test)] mod x;` files).
#
# Files that still have such results are listed, one path a line, in
# .ci/typed-errors-allow.txt; every entry there is debt to remove, and an
# entry for a file that no longer needs it is an error too, so the list only
# shrinks.
#
# Reads the generic arguments of each `Result<...>` (nested `<>`, `()`, `[]`
# and multi-line signatures included), so `Result<HashMap<String, String>, E>`
# is not a hit and a signature rustfmt split over lines is.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 - "$@" <<'PY'
import os
import re
import sys

ALLOW_FILE = ".ci/typed-errors-allow.txt"


def allow_list():
    entries = set()
    if os.path.exists(ALLOW_FILE):
        with open(ALLOW_FILE, encoding="utf-8") as f:
            for line in f:
                line = line.split("#", 1)[0].strip()
                if line:
                    entries.add(line)
    return entries


def test_module_files(path, text):
    """Files declared by `#[cfg(test)] mod name;` in `path`."""
    out = set()
    base = os.path.dirname(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    if stem not in ("mod", "lib", "main"):
        base = os.path.join(base, stem)
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", text):
        name = m.group(1)
        out.add(os.path.join(base, name + ".rs"))
        out.add(os.path.join(base, name))
    return out


CHAR_LITERAL = re.compile(r"'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^\\'\n])'")
RAW_STRING = re.compile(r'b?r(#*)"')


def blank(s):
    return re.sub(r"[^\n]", " ", s)


def strip_comments(text):
    """Blanks comments and string and char literals (keeping line breaks) so
    none of them is read as code."""
    out = []
    i, n = 0, len(text)
    while i < n:
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
        elif (m := RAW_STRING.match(text, i)) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            close = '"' + m.group(1)
            j = text.find(close, m.end())
            j = n if j < 0 else j + len(close)
        elif text[i] == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
        elif m := CHAR_LITERAL.match(text, i):
            j = m.end()
        else:
            out.append(text[i])
            i += 1
            continue
        out.append(blank(text[i:j]))
        i = j
    return "".join(out)


def without_test_blocks(text):
    """Blanks every `#[cfg(test)] mod x { ... }` block, keeping line breaks."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{", text)
        if not m:
            return text
        depth, j = 1, m.end()
        while j < len(text) and depth:
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
            j += 1
        text = text[:m.start()] + blank(text[m.start():j]) + text[j:]


def string_results(text):
    """Line numbers of `Result<T, String>` in `text`."""
    hits = []
    for m in re.finditer(r"\bResult\s*<", text):
        depth, j, args, start = 1, m.end(), [], m.end()
        while j < len(text) and depth:
            c = text[j]
            if text.startswith("->", j):
                j += 2
                continue
            if c in "<([":
                depth += 1
            elif c in ">)]":
                depth -= 1
                if depth == 0:
                    args.append(text[start:j])
            elif c == "," and depth == 1:
                args.append(text[start:j])
                start = j + 1
            elif c in ";{":
                break
            j += 1
        args = [a.strip() for a in args if a.strip()]
        if len(args) == 2 and re.fullmatch(r"(?:(?:std|alloc)::string::)?String", args[1]):
            hits.append(text.count("\n", 0, m.start()) + 1)
    return hits


def main():
    allowed = allow_list()
    files = []
    for crate in sorted(os.listdir("crates")):
        src = os.path.join("crates", crate, "src")
        for root, dirs, names in os.walk(src):
            dirs[:] = sorted(d for d in dirs if d not in ("bin", "tests"))
            for name in sorted(names):
                if name.endswith(".rs") and name not in ("main.rs", "tests.rs"):
                    files.append(os.path.join(root, name))
    texts = {}
    test_files = set()
    for path in files:
        with open(path, encoding="utf-8") as f:
            texts[path] = f.read()
        test_files |= test_module_files(path, texts[path])

    def is_test_file(path):
        return any(path == t or path.startswith(t + os.sep) for t in test_files)

    offenders = {}
    for path in files:
        if is_test_file(path):
            continue
        lines = string_results(without_test_blocks(strip_comments(texts[path])))
        if lines:
            offenders[path] = lines

    failed = False
    for path, lines in sorted(offenders.items()):
        if path not in allowed:
            failed = True
            for line in lines:
                print(f"{path}:{line}: Result<_, String> in library code; return a typed error (thiserror enum)", file=sys.stderr)
    for path in sorted(allowed - offenders.keys()):
        failed = True
        print(f"{ALLOW_FILE}: {path} has no Result<_, String> left (or is gone); remove it from the list", file=sys.stderr)
    if failed:
        print("check-typed-errors: FAILED", file=sys.stderr)
        return 1
    print(f"check-typed-errors: ok ({len(files)} files, {sum(map(len, offenders.values()))} allowed hits in {len(offenders)} allow-listed files)")
    return 0


sys.exit(main())
PY

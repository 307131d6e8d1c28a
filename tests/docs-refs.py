#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""References to the project's documents lead somewhere.

  docs-refs.py SRCDIR

Checks, over the sources, scripts, build files and documents of the tree:
  - no reference to a document the tree does not hold (DESIGN.md,
    STYLE.md, notes/..., ../shared/...);
  - every "docs/NAME.md" exists, and every "docs/NAME.md §N" names a
    section "## §N" of it;
  - every "R<n>" cited with docs/rules.md, and every test tag "/* R<n> */"
    in tests/api, is a rule of docs/rules.md;
  - every test a rule lists exists (START_TEST in tests/api) and carries
    that rule's tag on the line above it, and every tag is listed back.
Prints one line per problem; exits 1 if there is any.
"""
import os
import re
import sys

SUFFIXES = (".c", ".h", ".cpp", ".py", ".sh", ".md", ".build", ".txt", ".map")
SCRIPTS = {"run", "setup"}
OUTSIDE = re.compile(r"\b(?:DESIGN|STYLE)\.md\b|\bnotes/[\w.-]+|\.\./shared\b")
DOC_REF = re.compile(r"\bdocs/([\w-]+\.md)(?:\s+(§\d+|R\d+(?:[-–]R\d+)?))?")

problems = []


def problem(where, what):
    problems.append("%s: %s" % (where, what))


def tree_files(srcdir):
    for root, dirs, files in os.walk(srcdir):
        rel = os.path.relpath(root, srcdir)
        dirs[:] = [d for d in dirs if not d.startswith((".", "build"))
                   and d != "__pycache__"]
        for f in files:
            if f.endswith(SUFFIXES) or f in SCRIPTS:
                yield os.path.normpath(os.path.join(rel, f))


def rule_numbers(spec):
    """'R12' -> [12]; 'R12-R15' -> [12..15]."""
    nums = [int(n) for n in re.findall(r"R(\d+)", spec)]
    return list(range(nums[0], nums[-1] + 1))


def main():
    srcdir = sys.argv[1]
    docs = os.path.join(srcdir, "docs")
    rules_text = open(os.path.join(docs, "rules.md")).read()
    rules = {}  # number -> tests it lists
    for m in re.finditer(r"^\*\*R(\d+) .*?(?=^\*\*R\d+ |^## |\Z)", rules_text,
                         re.S | re.M):
        block = m.group(0)
        tests = block.split("Tests:", 1)[1] if "Tests:" in block else ""
        rules[int(m.group(1))] = re.findall(r"`([a-z0-9_]+)`", tests)
        if not rules[int(m.group(1))]:
            problem("docs/rules.md", "R%s lists no test" % m.group(1))
    if not rules:
        problem("docs/rules.md", "no rule found")

    for rel in tree_files(srcdir):
        if rel == os.path.join("tests", "docs-refs.py"):
            continue  # its docstring names what it looks for
        try:
            text = open(os.path.join(srcdir, rel), encoding="utf-8").read()
        except (UnicodeDecodeError, OSError):
            continue
        for n, line in enumerate(text.splitlines(), 1):
            for m in OUTSIDE.finditer(line):
                problem("%s:%d" % (rel, n),
                        "'%s' is not in the tree (point at docs/)" % m.group(0))
            for m in DOC_REF.finditer(line):
                doc, ref = m.group(1), m.group(2)
                path = os.path.join(docs, doc)
                if not os.path.isfile(path):
                    problem("%s:%d" % (rel, n), "docs/%s does not exist" % doc)
                elif ref and ref.startswith("§"):
                    if not re.search(r"^## %s\b" % ref, open(path).read(), re.M):
                        problem("%s:%d" % (rel, n), "docs/%s has no %s" % (doc, ref))
                elif ref:
                    for r in rule_numbers(ref):
                        if r not in rules:
                            problem("%s:%d" % (rel, n), "docs/rules.md has no R%d" % r)

    # Test tags against the rules' lists.
    tagged = {}  # test -> rules on its tag line
    apidir = os.path.join(srcdir, "tests", "api")
    for f in sorted(os.listdir(apidir)):
        if not f.endswith(".c"):
            continue
        prev = ""
        for n, line in enumerate(open(os.path.join(apidir, f)), 1):
            m = re.match(r"START_TEST\((\w+)\)", line)
            tag = re.match(r"/\* (R\d+(?:, R\d+)*) \*/$", prev.strip())
            if m:
                tagged[m.group(1)] = [int(x) for x in re.findall(r"\d+", tag.group(1))] \
                    if tag else []
            elif tag and not line.strip().startswith("START_TEST"):
                problem("tests/api/%s:%d" % (f, n - 1), "a rule tag not above a test")
            prev = line
    for r, tests in sorted(rules.items()):
        for t in tests:
            if t not in tagged:
                problem("docs/rules.md", "R%d lists %s, which is not a test in tests/api" % (r, t))
            elif r not in tagged[t]:
                problem("tests/api", "%s enforces R%d but its tag does not say so" % (t, r))
    for t, rs in sorted(tagged.items()):
        for r in rs:
            if r not in rules:
                problem("tests/api", "%s is tagged R%d, which docs/rules.md does not have" % (t, r))
            elif t not in rules[r]:
                problem("docs/rules.md", "R%d does not list %s, which is tagged with it" % (r, t))

    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

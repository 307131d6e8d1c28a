#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The man pages are complete and render cleanly.

  man-pages.py pages SRCDIR          every page renders without a warning
                                      (groff -ww, man --warnings), .so links
                                      resolve, function pages have the
                                      sections of the house style, every
                                      BC_API function of lib/blockcopy.h has
                                      a page that names it, every BC_* name
                                      the pages use exists, every page is
                                      installed, every EXAMPLE compiles
  man-pages.py tool SRCDIR BLOCKCOPY  blockcopy.1 has a section for every
                                      command that `blockcopy help` lists,
                                      with an entry (.TP) for every option
                                      its `COMMAND --help` prints

Prints one line per problem and exits 1 if there is any; `pages` exits 77
(skip) when groff is not installed.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

FUNC_SECTIONS = ["NAME", "SYNOPSIS", "DESCRIPTION", "RETURN VALUE", "ERRORS",
                 "THREADS", "EVENTS", "EXAMPLE", "SEE ALSO"]
# Wraps an EXAMPLE that is a fragment: it sees `engine` and `disk`.
PRELUDE = """#include <blockcopy.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
"""

problems = []


def problem(where, what):
    problems.append("%s: %s" % (where, what))


def pages(mandir):
    out = []
    for sect in sorted(os.listdir(mandir)):
        d = os.path.join(mandir, sect)
        if sect.startswith("man") and os.path.isdir(d):
            out += [os.path.join(d, f) for f in sorted(os.listdir(d))]
    return out


def so_target(text):
    lines = [l for l in text.splitlines() if l and not l.startswith('.\\"')]
    if len(lines) == 1 and lines[0].startswith(".so "):
        return lines[0][4:].strip()
    return None


def sections(text):
    """{name: body} of the .SH sections of a page."""
    out, cur = {}, None
    for line in text.splitlines():
        m = re.match(r'\.SH\s+"?([^"]*)"?\s*$', line)
        if m:
            cur = m.group(1).strip()
            out[cur] = []
        elif cur:
            out[cur].append(line)
    return {k: "\n".join(v) for k, v in out.items()}


def render_warnings(path):
    """groff's and man's warnings for @path (empty when clean)."""
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", path],
                       capture_output=True, text=True, env=env)
    out = r.stderr.strip()
    if r.returncode:
        out += " (groff exit %d)" % r.returncode
    if shutil.which("man"):
        r = subprocess.run(["man", "--warnings=all", "-l", path],
                           capture_output=True, text=True, env=env)
        out += r.stderr.strip()
        if r.returncode:
            out += " (man exit %d)" % r.returncode
    return out


def unroff(code):
    code = code.replace("\\e", "\\").replace("\\-", "-").replace("\\&", "")
    return code.replace("\\(em", "--")


def example_program(body):
    """The EXAMPLE section's code as one C file."""
    blocks = re.findall(r"^\.EX\n(.*?)^\.EE$", body, re.S | re.M)
    top, inner = [], []
    for b in blocks:
        b = unroff(b)
        # A block that defines functions or includes headers is file scope.
        if re.search(r"^#include|^\{$", b, re.M):
            top.append(b)
        else:
            inner.append(b)
    if any("main(" in b for b in top):
        return "\n".join(top)
    src = PRELUDE + "\n".join(top)
    src += "\nint example(bc_engine *engine, bc_disk *disk);\n"
    src += "int example(bc_engine *engine, bc_disk *disk)\n{\n"
    src += "(void)engine; (void)disk;\n{\n" + "\n".join(inner) + "\n}\nreturn 0;\n}\n"
    return src


def compile_example(page, src, srcdir, cc):
    with tempfile.NamedTemporaryFile("w", suffix=".c", delete=False) as f:
        f.write(src)
        name = f.name
    try:
        r = subprocess.run([cc, "-std=gnu11", "-Wall", "-Wextra", "-Werror",
                            "-fsyntax-only", "-I", os.path.join(srcdir, "lib"),
                            name], capture_output=True, text=True)
        if r.returncode:
            problem(page, "EXAMPLE does not compile:\n" + r.stderr.strip())
    finally:
        os.unlink(name)


def check_pages(srcdir):
    mandir = os.path.join(srcdir, "man")
    header = open(os.path.join(srcdir, "lib", "blockcopy.h")).read()
    funcs = re.findall(r"^BC_API\s[^;(]*?\b(bc_\w+)\s*\(", header, re.M)
    names = set(re.findall(r"\b(BC_\w+)\b", header))
    meson = open(os.path.join(mandir, "meson.build")).read()
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    resolved = {}  # page path -> text of the page it shows

    for path in pages(mandir):
        rel = os.path.relpath(path, mandir)
        text = open(path).read()
        if os.path.basename(path) not in meson:
            problem(rel, "not installed (missing from man/meson.build)")
        target = so_target(text)
        if target:
            tpath = os.path.join(mandir, target)
            if not os.path.isfile(tpath) or so_target(open(tpath).read()):
                problem(rel, ".so %s: no such page" % target)
                continue
            resolved[path] = open(tpath).read()
            continue
        resolved[path] = text
        warn = render_warnings(path)
        if warn:
            problem(rel, "renders with warnings:\n" + warn)
        secs = sections(text)
        if rel.startswith("man3/"):
            want = FUNC_SECTIONS if rel != "man3/blockcopy.3" else \
                [s for s in FUNC_SECTIONS if s != "EVENTS"]
            for s in want:
                if s not in secs:
                    problem(rel, "no %s section" % s)
            if "EXAMPLE" in secs and cc:
                compile_example(rel, example_program(secs["EXAMPLE"]),
                                srcdir, cc)
        for n in sorted(set(re.findall(r"\b(BC_[A-Z0-9_]+)\b", text)) - names):
            problem(rel, "%s is not in lib/blockcopy.h" % n)

    for fn in funcs:
        path = os.path.join(mandir, "man3", fn + ".3")
        if path not in resolved:
            problem("lib/blockcopy.h", "%s has no man page (man/man3/%s.3)" % (fn, fn))
            continue
        secs = sections(resolved[path])
        if not re.search(r"\b%s\b" % fn, secs.get("NAME", "")):
            problem("man/man3/%s.3" % fn, "its page does not name %s" % fn)
        if not re.search(r"\b%s\(" % fn, unroff(secs.get("SYNOPSIS", "")).replace('"', "")):
            problem("man/man3/%s.3" % fn, "its SYNOPSIS does not declare %s" % fn)
    if not funcs:
        problem("lib/blockcopy.h", "no BC_API function found")


def help_options(text):
    """Options a help text lists: long ones, and short ones at a line's start."""
    longs = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text))
    shorts = set(re.findall(r"^\s+(-[a-zA-Z])\b", text, re.M))
    return longs | shorts


def check_tool(srcdir, tool):
    page = open(os.path.join(srcdir, "man", "man1", "blockcopy.1")).read()
    page = re.sub(r"\\f[BIRP]", "", unroff(page))
    # Per command (.SS), the tags of its .TP entries: the options it documents.
    subsecs, cur, tag_next = {}, None, False
    for line in page.splitlines():
        m = re.match(r"\.S[SH]\s+(\S+)", line)
        if m:
            cur = m.group(1) if line.startswith(".SS") else None
            if cur:
                subsecs[cur] = ""
        elif cur and tag_next:
            subsecs[cur] += re.sub(r"^\.[A-Z]+\s+", "", line) + "\n"
        tag_next = line.startswith(".TP")
    top = subprocess.run([tool, "help"], capture_output=True, text=True).stdout
    cmds = re.findall(r"^  ([a-z][a-z-]*)\s{2,}\S", top.split("Commands:")[-1], re.M)
    if not cmds:
        problem(tool, "`blockcopy help` lists no command")
    for cmd in cmds:
        if cmd not in subsecs:
            problem("man/man1/blockcopy.1", "no section for command '%s'" % cmd)
            continue
        text = subprocess.run([tool, cmd, "--help"], capture_output=True,
                              text=True).stdout
        for opt in sorted(help_options(text)):
            if not re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(opt), subsecs[cmd]):
                problem("man/man1/blockcopy.1",
                        "command '%s': option %s is not documented" % (cmd, opt))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "pages":
        if not shutil.which("groff"):
            print("groff not installed: skipped")
            return 77
        check_pages(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "tool":
        check_tool(sys.argv[2], sys.argv[3])
    else:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

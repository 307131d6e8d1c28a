#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The layers depend one way (docs/design.md §1).

  layers.py SRCDIR

Resolves every quoted #include of the C sources and headers in lib/common/,
formats/, engine/, lib/ and tools/ as the compiler does (the including
file's folder, then the tree's root, then lib/: the build's include path)
and checks that no file includes a header of a layer above its own:

  lib/common  <  formats  <  engine  <  lib  <  tools

so nothing below lib/ sees lib/blockcopy.h, even through another header;
and that below its own layer a file includes (lib/common apart) only the
interface headers (INTERFACES) of the layer right below it, or of formats
for the offline subcommands of tools (BELOW). A layer without any C file
is a problem too: a wrong SRCDIR must not pass by checking nothing.
Prints one line per problem; exits 1 if there is any. Before looking at
the tree it checks itself on a scratch tree that breaks each rule.
"""
import os
import re
import sys
import tempfile

# Folder → rank; a file may include headers of its rank or below.
LAYERS = [("lib/common", 0, "common"), ("formats", 1, "formats"),
          ("engine", 2, "engine"), ("lib", 3, "lib"), ("tools", 4, "tools")]
# The headers a layer offers the layers above it.
INTERFACES = {
    "formats": {"formats/fmt.h"},
    "engine": {"engine/engine.h", "engine/queue.h"},
    "lib": {"lib/blockcopy.h"},
}
# The layers each layer may include from, lib/common apart.
BELOW = {
    "formats": set(),
    "engine": {"formats"},
    "lib": {"engine"},
    "tools": {"lib", "formats"},
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def layer_of(rel):
    for folder, rank, name in LAYERS:
        if rel.startswith(folder + "/"):
            return rank, name
    return None


def resolve(srcdir, rel, target):
    for base in (os.path.dirname(rel), "", "lib"):
        cand = os.path.normpath(os.path.join(base, target))
        if os.path.isfile(os.path.join(srcdir, cand)):
            return cand
    return None


def sources(srcdir):
    seen = set()
    for folder, _, _ in LAYERS:
        for root, _, files in os.walk(os.path.join(srcdir, folder)):
            for f in files:
                if f.endswith((".c", ".h")):
                    seen.add(os.path.relpath(os.path.join(root, f), srcdir))
    return sorted(seen)


def problems_in(srcdir):
    found = []
    srcs = sources(srcdir)
    # A wrong SRCDIR (or a moved folder) would otherwise pass, checking nothing.
    missing = sorted({name for _, _, name in LAYERS} -
                     {layer_of(rel)[1] for rel in srcs})
    if missing:
        found.append("%s: no C sources in layer(s) %s" % (srcdir, ", ".join(missing)))
    for rel in srcs:
        own = layer_of(rel)
        with open(os.path.join(srcdir, rel), encoding="utf-8") as fh:
            text = fh.read()
        for target in INCLUDE.findall(text):
            hdr = resolve(srcdir, rel, target)
            if hdr is None:
                continue  # not a file of the tree: not ours to judge
            theirs = layer_of(hdr)
            if not theirs:
                continue
            if theirs[0] > own[0]:
                found.append("%s: includes %s (%s), a layer above %s"
                             % (rel, hdr, theirs[1], own[1]))
            elif theirs[0] < own[0] and theirs[1] != "common":
                if theirs[1] not in BELOW[own[1]]:
                    found.append("%s: includes %s: %s does not use %s directly"
                                 % (rel, hdr, own[1], theirs[1]))
                elif hdr not in INTERFACES[theirs[1]]:
                    found.append("%s: includes %s, not an interface header of %s (%s)"
                                 % (rel, hdr, theirs[1],
                                    ", ".join(sorted(INTERFACES[theirs[1]]))))
    return found


def self_test():
    with tempfile.TemporaryDirectory() as d:
        files = {
            "lib/blockcopy.h": "",
            "lib/common/error.h": '#include "../blockcopy.h"\n',
            "engine/engine.h": '#include "lib/common/error.h"\n',
            "engine/disk.c": '#include "blockcopy.h"\n#include "engine/engine.h"\n',
            "formats/fmt.h": '#include "lib/common/error.h"\n',
            "formats/qcow2.h": '#include "fmt.h"\n',
            "tools/x.c": '#include "lib/blockcopy.h"\n#include "formats/fmt.h"\n',
            "lib/api-x.c": '#include "engine/engine.h"\n#include "formats/fmt.h"\n',
            "engine/job.c": '#include "formats/qcow2.h"\n',
        }
        for rel, text in files.items():
            os.makedirs(os.path.dirname(os.path.join(d, rel)), exist_ok=True)
            with open(os.path.join(d, rel), "w", encoding="utf-8") as fh:
                fh.write(text)
        got = sorted(p.split(":")[0] for p in problems_in(d))
        want = ["engine/disk.c", "engine/job.c", "lib/api-x.c",
                "lib/common/error.h"]
        if got != want:
            print("layers.py self-test: found %s, expected %s" % (got, want))
            sys.exit(1)
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(os.path.join(d, "engine"))
        with open(os.path.join(d, "engine", "job.c"), "w", encoding="utf-8") as fh:
            fh.write("")
        got = problems_in(d)
        want = ["%s: no C sources in layer(s) common, formats, lib, tools" % d]
        if got != want:
            print("layers.py self-test: found %s, expected %s" % (got, want))
            sys.exit(1)


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[2].strip())
        return 2
    self_test()
    found = problems_in(sys.argv[1])
    for p in found:
        print(p)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

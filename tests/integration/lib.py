#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Normalisers for the integration scripts (python3 stdlib only).

  lib.py firstdiff A B   first differing byte offset of two files, the
                         shorter one read as zero-extended ("same" if none)
  lib.py map QEMU BC IMG compare `qemu-img map --output=json` with
                         `blockcopy map --json`
  lib.py info QEMU BC IMG compare `qemu-img info --output=json` with
                         `blockcopy info --json` (either one object or,
                         with --backing-chain, a list of them)

qemu-img 7.2 rounds a raw file's size up to a whole sector; blockcopy may
report the file's exact size instead (IMG is the image, to read its size).
Exit 0 when they agree; otherwise 1 with one line per difference on stdout.
"""

import json
import os
import sys

MAP_KEYS = ("depth", "present", "zero", "data")


def firstdiff(a, b):
    bs = 1 << 20
    off = 0
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x = fa.read(bs)
            y = fb.read(bs)
            if not x and not y:
                return "same"
            n = max(len(x), len(y))
            x = x.ljust(n, b"\0")
            y = y.ljust(n, b"\0")
            if x != y:
                for i in range(n):
                    if x[i] != y[i]:
                        return str(off + i)
            off += n


def load_json(path, what):
    with open(path) as f:
        text = f.read()
    try:
        return json.loads(text)
    except ValueError as e:
        raise SystemExit("%s is not JSON (%s): %r" % (what, e, text[:300]))


def extents(doc, what):
    """The list of extents, whether bare (qemu-img) or wrapped in an object."""
    if isinstance(doc, dict):
        for k in ("map", "extents"):
            if isinstance(doc.get(k), list):
                doc = doc[k]
                break
    if not isinstance(doc, list):
        raise SystemExit("%s: expected a list of extents, got %r" % (what, doc))
    out = []
    for e in doc:
        missing = [k for k in ("start", "length") + MAP_KEYS if k not in e]
        if missing:
            raise SystemExit("%s: extent %r lacks %s" % (what, e, ", ".join(missing)))
        out.append(e)
    return sorted(out, key=lambda e: e["start"])


def key_of(e):
    # qemu-img sets "zero" on a data extent when the host file under it is
    # a hole (preallocation=metadata), a fact of the file system below the
    # format, not of the image; compare "zero" only where there is no data.
    return (e["depth"], bool(e["present"]),
            None if e["data"] else bool(e["zero"]), bool(e["data"]))


def merge(ents, what):
    runs = []
    pos = 0
    for e in ents:
        if e["length"] == 0:
            # qemu-img maps an empty image as one empty extent.
            continue
        if e["start"] != pos:
            raise SystemExit("%s: extents not contiguous at %d (next starts at %d)"
                             % (what, pos, e["start"]))
        if e["length"] < 0:
            raise SystemExit("%s: empty extent %r" % (what, e))
        k = key_of(e)
        if runs and runs[-1][2] == k:
            runs[-1][1] += e["length"]
        else:
            runs.append([e["start"], e["length"], k])
        pos = e["start"] + e["length"]
    return runs, pos


def fmt_run(r):
    d, p, z, dat = r[2]
    return "[%d,+%d) depth=%d present=%s zero=%s data=%s" % (r[0], r[1], d, p, z, dat)


def raw_size(img, qsize):
    """The exact size blockcopy may report for a raw image qemu-img sizes
    as qsize (its size rounded up to 512), else None."""
    if img is None or not os.path.isfile(img):
        return None
    n = os.path.getsize(img)
    if n % 512 and qsize == (n + 511) // 512 * 512:
        return n
    return None


def cmp_map(qpath, bpath, img=None):
    q = extents(load_json(qpath, "qemu-img map"), "qemu-img map")
    b = extents(load_json(bpath, "blockcopy map --json"), "blockcopy map --json")
    qr, qend = merge(q, "qemu-img map")
    br, bend = merge(b, "blockcopy map --json")
    errs = []
    exact = raw_size(img, qend)
    if exact is not None and bend == exact and qr and qr[-1][2][3] is False:
        # Cut qemu-img's sector padding (a zero, non-data tail).
        qend = exact
        qr[-1][1] = exact - qr[-1][0]
        if qr[-1][1] <= 0:
            qr.pop()
    if qend != bend:
        errs.append("covers %d bytes, qemu-img %d" % (bend, qend))
    for i in range(max(len(qr), len(br))):
        x = qr[i] if i < len(qr) else None
        y = br[i] if i < len(br) else None
        if x != y:
            errs.append("first differing run: qemu-img %s, blockcopy %s"
                        % (fmt_run(x) if x else "none", fmt_run(y) if y else "none"))
            break
    # Host offsets of data, where both report one.
    for e in q:
        if not e["data"] or "offset" not in e:
            continue
        for f in b:
            if not f["data"] or f.get("offset") is None:
                continue
            lo = max(e["start"], f["start"])
            hi = min(e["start"] + e["length"], f["start"] + f["length"])
            if lo >= hi:
                continue
            qo = e["offset"] + lo - e["start"]
            bo = f["offset"] + lo - f["start"]
            if qo != bo and f.get("depth") == e["depth"]:
                errs.append("guest offset %d (depth %d): host offset %d, qemu-img %d"
                            % (lo, e["depth"], bo, qo))
                break
        if len(errs) > 3:
            break
    if errs:
        print("; ".join(errs))
        return 1
    return 0


INFO_KEYS = ("virtual-size", "format", "cluster-size", "backing-filename",
             "backing-filename-format")
# Compared only when blockcopy reports them.
INFO_EXTRA = ("dirty-flag",)
QCOW2_EXTRA = ("compat", "lazy-refcounts", "refcount-bits", "corrupt", "extended-l2")


def cmp_one_info(q, b, where, img=None):
    errs = []
    if not isinstance(b, dict):
        return ["%s: expected an object, got %r" % (where, b)]
    if q.get("format") == "raw" and where == "":
        exact = raw_size(img, q.get("virtual-size"))
        if exact is not None and b.get("virtual-size") == exact:
            q = dict(q, **{"virtual-size": exact})
    for k in INFO_KEYS:
        if q.get(k) != b.get(k):
            errs.append("%s%s: %r, qemu-img %r" % (where, k, b.get(k, "<absent>"), q.get(k, "<absent>")))
    # Where the backing file is: compare resolved paths (qemu-img keeps
    # the spelling it was given; any spelling of the same file will do).
    qf = q.get("full-backing-filename")
    bf = b.get("full-backing-filename")
    if (qf is None) != (bf is None) or (qf is not None and os.path.realpath(qf) != os.path.realpath(bf)):
        errs.append("%sfull-backing-filename: %r, qemu-img %r" % (where, bf, qf))
    for k in INFO_EXTRA:
        if k in b and b[k] != q.get(k):
            errs.append("%s%s: %r, qemu-img %r" % (where, k, b[k], q.get(k)))
    qd = q.get("format-specific", {}).get("data", {})
    bd = b.get("format-specific", {})
    if isinstance(bd, dict):
        bd = bd.get("data", bd)
        for k in QCOW2_EXTRA:
            if k in bd and bd[k] != qd.get(k):
                errs.append("%sformat-specific %s: %r, qemu-img %r" % (where, k, bd[k], qd.get(k)))
    return errs


def cmp_info(qpath, bpath, img=None):
    q = load_json(qpath, "qemu-img info")
    b = load_json(bpath, "blockcopy info --json")
    errs = []
    if isinstance(q, list):
        if isinstance(b, dict):
            for k in ("chain", "backing-chain", "images"):
                if isinstance(b.get(k), list):
                    b = b[k]
                    break
        if not isinstance(b, list):
            print("--backing-chain: expected a list of images, got %r" % (b,))
            return 1
        if len(b) != len(q):
            errs.append("chain has %d images, qemu-img %d" % (len(b), len(q)))
        for i, (x, y) in enumerate(zip(q, b)):
            errs += cmp_one_info(x, y, "image %d: " % i)
    else:
        errs = cmp_one_info(q, b, "", img)
    if errs:
        print("; ".join(errs))
        return 1
    return 0


def main(argv):
    if len(argv) not in (4, 5):
        raise SystemExit(__doc__)
    cmd, a, b = argv[1:4]
    img = argv[4] if len(argv) == 5 else None
    if cmd == "firstdiff":
        print(firstdiff(a, b))
        return 0
    if cmd == "map":
        return cmp_map(a, b, img)
    if cmd == "info":
        return cmp_info(a, b, img)
    raise SystemExit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv))

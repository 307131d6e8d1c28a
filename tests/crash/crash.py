#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Crash points: SIGKILL a block job at random instants and check the images.

    crash.py SCENARIO [--seconds S] [--seed N] [--max-kills K]
    crash.py --self-test      the oracle against hand-made logs and images

SCENARIO is one of: copy-full, copy-shallow, copy-reuse, copy-raw (the
blockcopy tool's copy), copy-resume (the copy run again with --resume
while its journal exists: kill, resume, kill, resume...; the journal
must be gone once a run completes), pull, pull-base (its pull), mirror (a live mirror
with a guest writing, tests/crash/crash-guest.c), snapshot (snapshots
taken under a guest writing, same program), create (the tool's create,
qcow2 or raw, with and without preallocation and a backing file). Each round makes a fresh
qcow2 chain base <- mid <- top (8 MiB, data at every depth, a zero
cluster in the top hiding backing data), starts the job in a child
process, kills it with SIGKILL at a random instant and checks:

- every layer the job must not write is byte-identical (sha256);
- image creation is atomic: every image under its name (destination,
  snapshot overlay) is complete, and no temporary file is left where the
  filesystem has O_TMPFILE (formats/fmt-newfile.c);
- qemu-img check finds no corruption in any image (exit 0, or 3: leaks);
- pull: the guest-visible content is unchanged and the backing pointer
  is the old or the new one (qemu-img info --output=json), never torn;
- mirror, snapshot: the disk the guest was on holds, block by block, a
  generation at least as new as the last one acknowledged before the
  last acknowledged flush, and no newer than the last one issued, whole
  (check_guest below);
- the job run again completes, and its result qemu-img compares equal.

Rounds go on until --seconds (BC_CRASH_SECONDS in the environment wins)
have passed, or --max-kills. The seed is
printed first; a failure prints the seed, the round and the kill
instant, and exits 1. Environment: BLOCKCOPY (the tool), CRASH_GUEST
(the guest program). Needs qemu-img and qemu-io (exit 77 without).
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SIZE = 8 << 20
BLOCK = 4096
REC = 24  # crash-guest.c struct rec

BLOCKCOPY = os.environ.get("BLOCKCOPY", "")
GUEST = os.environ.get("CRASH_GUEST", "")


class Failure(Exception):
    pass


class Interrupted(BaseException):
    """SIGTERM (meson's timeout) or SIGINT: unwinds main() so that the
    children are gone and the scratch directory removed (a BaseException:
    subprocess.run() kills its child on any exception and re-raises)."""


CHILDREN = set()  # the Popen children of spawn() still running


def on_signal(signum, frame):
    for p in list(CHILDREN):
        if p.poll() is None:
            p.kill()
    raise Interrupted(signum)


def spawn(argv):
    """A job in a child process, killed with the script (on_signal)."""
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    CHILDREN.add(p)
    return p


def reaped(p):
    CHILDREN.discard(p)


def run(*argv, ok=(0,), timeout=60):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout)
    if r.returncode not in ok:
        raise Failure("%s: exit %d: %s" % (" ".join(argv), r.returncode,
                                           r.stdout.decode(errors="replace").strip()[-600:]))
    return r


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_template(d):
    """The chain every round starts from, and its guest content."""
    def qio(img, *cmds):
        argv = ["qemu-io", "-f", "qcow2"]
        for c in cmds:
            argv += ["-c", c]
        run(*argv, img)
    os.chdir(d)
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", "base.qcow2", "8M")
    qio("base.qcow2", "write -P 0x11 0 3M", "write -P 0x12 6M 1M", "write -P 0x13 8128k 64k")
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "mid.qcow2")
    qio("mid.qcow2", "write -P 0x21 2M 2M", "write -P 0x22 100000 5000")
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096",
        "-b", "mid.qcow2", "-F", "qcow2", "top.qcow2")
    qio("top.qcow2", "write -P 0x31 5M 1M", "write -z 6M 128k", "write -P 0x32 12345 777")
    run("qemu-img", "convert", "-O", "raw", "top.qcow2", "ref.raw")
    run("qemu-img", "create", "-q", "-f", "raw", "src.raw", "8M")
    run("qemu-io", "-f", "raw", "-c", "write -P 0x44 1M 3M", "-c", "write -P 0x45 7M 4k", "src.raw")


def qcheck(path, what):
    """qemu-img check: 0 clean, 3 leaks only; anything else fails (1: it
    could not check, e.g. a half-written header; 2: corruption)."""
    r = subprocess.run(["qemu-img", "check", "--output=json", path],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode not in (0, 3):
        raise Failure("qemu-img check %s (%s): exit %d: %s" % (
            path, what, r.returncode, r.stdout.decode(errors="replace").strip()[-600:]))
    return r.returncode


def info(path):
    r = run("qemu-img", "info", "--output=json", "-U", path)
    return json.loads(r.stdout)


def compare(a, b, what):
    r = subprocess.run(["qemu-img", "compare", "-U", a, b],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise Failure("%s: qemu-img compare %s %s: exit %d: %s" % (
            what, a, b, r.returncode, r.stdout.decode(errors="replace").strip()))


# --- the guest's log (crash-guest.c) ------------------------------------

CYCLE = bytes(i & 0xFF for i in range(BLOCK + 512))


def block_fill(blk, gen):
    start = (blk * 131 + gen * 7) & 0xFF
    head = b"BCCRASH1" + blk.to_bytes(8, "little") + gen.to_bytes(8, "little")
    return head + CYCLE[start + 24:start + BLOCK]


def read_log(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []  # killed before the guest started
    recs = []
    for i in range(0, len(data) - len(data) % REC, REC):
        t = data[i]
        a = int.from_bytes(data[i + 8:i + 16], "little")
        b = int.from_bytes(data[i + 16:i + 24], "little")
        recs.append((chr(t), a, b))
    return recs


def guest_bounds(recs):
    """Per block: (floor, newest issued). floor = newest generation
    acknowledged before the start of the last acknowledged flush."""
    started = {}
    last_done = None
    for i, (t, a, _) in enumerate(recs):
        if t == "f":
            started[a] = i
        elif t == "F":
            last_done = started[a]
    floor, top = {}, {}
    for i, (t, a, b) in enumerate(recs):
        if t == "I":
            top[a] = max(top.get(a, 0), b)
        elif t == "A" and last_done is not None and i < last_done:
            floor[a] = max(floor.get(a, 0), b)
    return floor, top


def check_guest(image, ref, floor, top, tmp):
    """None when @image holds what the guest may read, else the reason."""
    raw = os.path.join(tmp, "guest.raw")
    r = subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", image, raw],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        return "qemu-img convert: %s" % r.stdout.decode(errors="replace").strip()
    with open(raw, "rb") as f:
        got = f.read()
    os.unlink(raw)
    for blk in range(SIZE // BLOCK):
        data = got[blk * BLOCK:(blk + 1) * BLOCK]
        if data[:8] == b"BCCRASH1" and int.from_bytes(data[8:16], "little") == blk:
            gen = int.from_bytes(data[16:24], "little")
            if data != block_fill(blk, gen):
                return "block %d: generation %d torn" % (blk, gen)
        elif data == ref[blk * BLOCK:(blk + 1) * BLOCK]:
            gen = 0
        else:
            return "block %d (offset %d): neither the initial content nor a guest write" % (blk, blk * BLOCK)
        lo, hi = floor.get(blk, 0), top.get(blk, 0)
        if gen < lo:
            return ("block %d (offset %d): generation %d, but %d was acknowledged "
                    "before the last completed flush" % (blk, blk * BLOCK, gen, lo))
        if gen > hi:
            return "block %d: generation %d was never written (newest %d)" % (blk, gen, hi)
    return None


# --- scenarios -----------------------------------------------------------

class Round:
    def __init__(self, scen, rng, work, tmpl_sha):
        self.scen, self.rng, self.work, self.tmpl_sha = scen, rng, work, tmpl_sha
        self.argv = None
        self.bw = None
        self.strays = 0  # hidden temporaries a kill left (no_strays)
        self.tmpfile = True  # set by main() from has_tmpfile()

    def path(self, name):
        return os.path.join(self.work, name)


def copy_argv(rd):
    s = rd.scen
    argv = [BLOCKCOPY, "copy", "-q"]
    if rd.bw:
        argv += ["--bandwidth", rd.bw]
    if s == "copy-shallow" or (s in ("copy-reuse", "copy-resume") and rd.shallow):
        argv.append("--shallow")
    if s == "copy-reuse":
        argv.append("--reuse-external")
    if rd.direct:
        argv.append("--direct")
    src = rd.path("src.raw") if s == "copy-raw" else rd.path("top.qcow2")
    return argv + [src, rd.path("dst")]


def choose(rd):
    """The round's random settings; rd.key names the ones that change how
    long the job runs (one calibration run per key)."""
    s, rng = rd.scen, rd.rng
    rd.direct = rng.random() < 0.3
    rd.shallow = rng.random() < 0.5
    rd.reuse = s == "copy-reuse" or (s == "mirror" and rng.random() < 0.3)
    if s.startswith("copy"):
        rd.bw = rng.choice([None, "64M", "160M"])
    elif s.startswith("pull"):
        rd.bw = rng.choice([None, "16M", "32M", "48M"])
    elif s == "mirror":
        rd.bw = str(rng.choice([0, 32 << 20, 64 << 20]))
        # The unpaced guest outruns a background copy: converge by
        # write-blocking, from the start or once progress stalls.
        rd.mode = rng.choice(["sync", "auto"])
    elif s == "create":
        rd.fmt = rng.choice(["qcow2", "raw"])
        rd.prealloc = rng.choice(["off", "full"] + (["metadata"] if rd.fmt == "qcow2" else []))
    rd.seed = rng.randrange(1 << 30)
    if s == "mirror":
        rd.key = (rd.bw, rd.mode)
    elif s == "create":
        rd.key = (rd.fmt, rd.prealloc)
    else:
        rd.key = (rd.bw, rd.direct, rd.shallow and rd.reuse)


def prepare(rd):
    """Files and command line of the round (on a fresh work directory)."""
    s = rd.scen
    if rd.reuse:
        opts = ["-o", "cluster_size=4096"]
        if rd.shallow:
            opts += ["-b", "mid.qcow2", "-F", "qcow2"]
        run("qemu-img", "create", "-q", "-f", "qcow2", *opts, rd.path("dst"), "8M")
    if s.startswith("copy"):
        rd.argv = copy_argv(rd)
    elif s == "create":
        rd.argv = [BLOCKCOPY, "create", "-f", rd.fmt, "-o", "preallocation=" + rd.prealloc]
        if rd.fmt == "qcow2" and rd.shallow:
            rd.argv += ["-b", "top.qcow2", "-F", "qcow2"]
        rd.argv += [rd.path("dst"), str(CREATE_SIZE)]
    elif s.startswith("pull"):
        rd.argv = [BLOCKCOPY, "pull", "-q"] + (["--bandwidth", rd.bw] if rd.bw else [])
        if s == "pull-base":
            rd.argv += ["--base", rd.path("base.qcow2")]
        rd.argv.append(rd.path("top.qcow2"))
    elif s == "mirror":
        extra = (["shallow"] if rd.shallow else []) + (["reuse"] if rd.reuse else []) + [rd.mode]
        rd.argv = [GUEST, "mirror", rd.path("top.qcow2"), rd.path("dst"),
                   rd.path("guest.log"), str(rd.seed)] + extra + ["bw=" + rd.bw]
    elif s == "snapshot":
        rd.argv = [GUEST, "snapshot", rd.path("top.qcow2"), rd.path("guest.log"),
                   str(rd.seed)]


def without_bandwidth(argv):
    """The command run again, unthrottled: the rerun only has to complete."""
    out = []
    for a in argv:
        if out and out[-1] == "--bandwidth":
            out.pop()
            continue
        out.append(a)
    return out


def unchanged(rd, names):
    for n in names:
        if sha(rd.path(n)) != rd.tmpl_sha[n]:
            raise Failure("%s changed, and the job must not write it" % n)


def copy_src(rd):
    return rd.path("src.raw") if rd.scen == "copy-raw" else rd.path("top.qcow2")


def has_tmpfile(d):
    """Whether @d's filesystem has O_TMPFILE: then image creation
    (formats/fmt-newfile.c) never leaves a name behind, not even a hidden
    temporary one; without it a kill may leave '.NAME.XXXXXX'."""
    try:
        os.close(os.open(d, os.O_TMPFILE | os.O_RDWR, 0o600))
        return True
    except OSError:
        return False


def no_strays(rd):
    """Image creation is atomic: a kill leaves the image complete under
    its name or absent. Hidden temporaries ('.NAME.XXXXXX') may only be
    left where the filesystem has no O_TMPFILE; they are counted, and
    removed as a user would."""
    strays = sorted(n for n in os.listdir(rd.work) if n.startswith("."))
    if strays and rd.tmpfile:
        raise Failure("temporary file(s) left by the kill: %s" % ", ".join(strays))
    for n in strays:
        os.unlink(rd.path(n))
    rd.strays += len(strays)


def complete(path, fmt, size, what):
    """An image a kill left under its name is complete: a raw one has its
    full size (a half-created one would be empty or short), a qcow2 one
    passes qemu-img check and has its virtual size."""
    if fmt == "raw":
        if os.path.getsize(path) != size:
            raise Failure("%s: raw image left with %d bytes, want %d" % (
                what, os.path.getsize(path), size))
        return
    qcheck(path, "%s (%d bytes)" % (what, os.path.getsize(path)))
    got = info(path).get("virtual-size")
    if got != size:
        raise Failure("%s: virtual size %r, want %d" % (what, got, size))


def after_kill_copy(rd):
    layers = ["src.raw"] if rd.scen == "copy-raw" else ["base.qcow2", "mid.qcow2", "top.qcow2"]
    unchanged(rd, layers)  # byte-identical to the template, which is clean
    no_strays(rd)
    if os.path.exists(rd.path("dst")):
        complete(rd.path("dst"), "raw" if rd.scen == "copy-raw" else "qcow2", SIZE, "destination")


def next_copy(rd):
    """The copy again: into the destination the killed run left, as a
    pre-created image (the tool refuses to overwrite it otherwise);
    copy-resume: with --resume while the killed run's journal exists (a
    kill before the journal was published leaves none: start over)."""
    argv = [a for a in rd.argv if a != "--resume"]
    journal = rd.path("dst") + ".bcjournal"
    if rd.scen == "copy-resume" and os.path.exists(journal):
        argv.insert(2, "--resume")
        rd.resumes = getattr(rd, "resumes", 0) + 1
    elif os.path.exists(rd.path("dst")) and "--reuse-external" not in argv:
        argv.insert(2, "--reuse-external")
    return argv


def final_copy(rd):
    run(*without_bandwidth(next_copy(rd)), timeout=120)
    if rd.scen != "copy-raw":
        qcheck(rd.path("dst"), "destination after the rerun")
    compare(copy_src(rd), rd.path("dst"), "rerun")
    if os.path.exists(rd.path("dst") + ".bcjournal"):
        raise Failure("the journal is left after a completed copy")


CREATE_SIZE = 32 << 20  # large enough that full preallocation takes a while


def after_kill_create(rd):
    """The image is complete under its name, or absent. A complete one is
    removed so that the next attempt is killed while creating again."""
    unchanged(rd, ["base.qcow2", "mid.qcow2", "top.qcow2"])
    no_strays(rd)
    dst = rd.path("dst")
    if os.path.exists(dst):
        complete(dst, rd.fmt, CREATE_SIZE, "created image")
        os.unlink(dst)


def final_create(rd):
    run(*rd.argv, timeout=120)
    after_kill_create(rd)


def pull_new_backing(rd):
    return rd.path("base.qcow2") if rd.scen == "pull-base" else None


def after_kill_pull(rd):
    unchanged(rd, ["base.qcow2", "mid.qcow2"])
    top = rd.path("top.qcow2")
    qcheck(top, "pulled image")
    new = pull_new_backing(rd)
    b = info(top).get("backing-filename")
    if b not in ("mid.qcow2", new):
        raise Failure("backing pointer after the kill: %r; want 'mid.qcow2' or %r" % (b, new))
    compare(top, rd.ref, "guest content after the kill")


def final_pull(rd):
    top = rd.path("top.qcow2")
    run(*without_bandwidth(rd.argv), timeout=120)
    b = info(top).get("backing-filename")
    if b != pull_new_backing(rd):
        raise Failure("backing pointer after the rerun: %r, want %r" % (b, pull_new_backing(rd)))
    qcheck(top, "pulled image after the rerun")
    compare(top, rd.ref, "guest content after the rerun")


def check_live(rd, tmp):
    unchanged(rd, ["base.qcow2", "mid.qcow2"])
    recs = read_log(rd.path("guest.log"))
    kinds = [t for t, _, _ in recs]
    no_strays(rd)
    # Every image under its name is complete, whenever the kill came.
    for n in sorted(os.listdir(rd.work)):
        if n.endswith(".qcow2") or n == "dst" or ".snap" in n:
            qcheck(rd.path(n), "after the kill")
    if "E" in kinds:
        raise Failure("the job ended before MIRRORING (see the log)")
    top = rd.path("top.qcow2")
    if rd.scen == "mirror":
        if "P" in kinds:
            cands = [rd.path("dst")]
        elif "p" in kinds:
            cands = [top, rd.path("dst")]
        else:
            cands = [top]
    else:
        done = [a for t, a, _ in recs if t == "S"]
        started = [a for t, a, _ in recs if t == "s"]
        cur = "%s.snap%d" % (top, done[-1]) if done else top
        cands = [cur]
        if started and (not done or started[-1] > done[-1]):
            nxt = "%s.snap%d" % (top, started[-1])
            if os.path.exists(nxt):  # complete: checked above
                cands.append(nxt)
    floor, newest = guest_bounds(recs)
    with open(rd.ref, "rb") as f:
        ref = f.read()
    why = []
    visible = None
    for c in cands:
        w = check_guest(c, ref, floor, newest, tmp)
        if w is None:
            visible = c
            break
        why.append("%s: %s" % (os.path.basename(c), w))
    if visible is None:
        raise Failure("guest-visible content wrong (%d log records, %d flushes done): %s" % (
            len(recs), kinds.count("F"), "; ".join(why)))
    rd.stats = (kinds.count("A"), kinds.count("F"), kinds.count("P") + kinds.count("S"))
    # Run again: the chain the guest was on copies whole and equal.
    again = rd.path("rerun.qcow2")
    run(BLOCKCOPY, "copy", "-q", visible, again, timeout=120)
    qcheck(again, "rerun copy")
    compare(visible, again, "rerun copy")


# Per scenario: the checks after a kill, the command to run next (the
# job again, killed again), the final unkilled run and its checks. The
# live scenarios are killed once per round.
TOOL = {"copy": (after_kill_copy, next_copy, final_copy),
        "pull": (after_kill_pull, lambda rd: rd.argv, final_pull),
        "create": (after_kill_create, lambda rd: rd.argv, final_create)}
SCENARIOS = ["copy-full", "copy-shallow", "copy-reuse", "copy-raw", "copy-resume",
             "pull", "pull-base", "mirror", "snapshot", "create"]


def fresh(tmpl, work, scen):
    """A work directory with a copy of the images @scen uses (the guest
    content reference stays in the template: nothing writes it)."""
    if os.path.exists(work):
        shutil.rmtree(work)
    os.mkdir(work)
    names = ["src.raw"] if scen == "copy-raw" else ["base.qcow2", "mid.qcow2", "top.qcow2"]
    for n in names:
        shutil.copyfile(os.path.join(tmpl, n), os.path.join(work, n))


def live_length(rd):
    """How long the job runs unkilled: until it exits, or for the live
    scenarios until the pivot (mirror) or the third snapshot."""
    t0 = time.monotonic()
    p = spawn(rd.argv)
    if rd.scen in ("mirror", "snapshot"):
        want = b"P" if rd.scen == "mirror" else b"S"
        need = 1 if rd.scen == "mirror" else 3
        logp = rd.path("guest.log")
        while time.monotonic() - t0 < 20:
            if p.poll() is not None:
                raise Failure("crash-guest exited %d: %s" % (p.returncode, p.stderr.read().decode()))
            try:
                with open(logp, "rb") as f:
                    d = f.read()
                if sum(1 for i in range(0, len(d) - REC + 1, REC) if d[i:i + 1] == want) >= need:
                    break
            except FileNotFoundError:
                pass
            time.sleep(0.01)
        else:
            p.kill()
            p.wait()
            reaped(p)
            raise Failure("calibration: no %s within 20 s" % want.decode())
        length = time.monotonic() - t0
        p.kill()
        p.wait()
        reaped(p)
        return length
    try:
        _, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise Failure("calibration run still running after 120 s")
    finally:
        reaped(p)
    if p.returncode != 0:
        raise Failure("calibration run failed (exit %d): %s" % (p.returncode, err.decode()))
    return time.monotonic() - t0


def self_test():
    """check_guest and guest_bounds on hand-made logs and images: the
    oracle accepts what a crash may leave and rejects the rest."""
    d = tempfile.mkdtemp(prefix="bc-crash-selftest-", dir=os.environ.get("BC_TEST_TMPDIR") or None)
    try:
        ref = bytes([0x5A]) * SIZE
        recs = [("I", 5, 1), ("A", 5, 1), ("f", 0, 0), ("I", 5, 2), ("A", 5, 2), ("F", 0, 0),
                ("I", 5, 3), ("A", 5, 3), ("f", 1, 0), ("I", 7, 1), ("A", 7, 1), ("I", 9, 1)]
        floor, newest = guest_bounds(recs)
        assert floor == {5: 1}, floor
        assert newest == {5: 3, 7: 1, 9: 1}, newest

        def image(blocks, torn=None):
            data = bytearray(ref)
            for blk, gen in blocks.items():
                data[blk * BLOCK:(blk + 1) * BLOCK] = block_fill(blk, gen) if gen else ref[:BLOCK]
            if torn is not None:
                data[torn * BLOCK + 2048] ^= 0xFF
            p = os.path.join(d, "img.raw")
            with open(p, "wb") as f:
                f.write(data)
            return check_guest(p, ref, floor, newest, d)
        good = [{5: 1}, {5: 2}, {5: 3, 7: 1, 9: 1}, {5: 1, 7: 0, 9: 1}]
        bad = [({5: 0}, "was acknowledged"), ({5: 4}, "never written"), ({5: 1, 7: 2}, "never written"),
               ({5: 2, 11: 1}, "never written")]
        for g in good:
            w = image(g)
            assert w is None, "%s rejected: %s" % (g, w)
        for b, why in bad:
            w = image(b)
            assert w and why in w, "%s: %r" % (b, w)
        w = image({5: 2}, torn=5)
        assert w and "torn" in w, w
        w = image({5: 2}, torn=6)
        assert w and "neither the initial content" in w, w
        print("crash self-test: %d accepted, %d rejected as they must be" % (len(good), len(bad) + 2))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return 0


def main():
    if sys.argv[1:] == ["--self-test"]:
        if not shutil.which("qemu-img"):
            print("qemu-img not installed: skipping")
            return 77
        return self_test()
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=SCENARIOS)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--max-kills", type=int, default=0)
    a = ap.parse_args()
    if os.environ.get("BC_CRASH_SECONDS"):
        a.seconds = float(os.environ["BC_CRASH_SECONDS"])
    for t in ("qemu-img", "qemu-io"):
        if not shutil.which(t):
            print("%s not installed: skipping" % t)
            return 77
    if not BLOCKCOPY or not GUEST:
        print("BLOCKCOPY and CRASH_GUEST must name the tool and tests/crash/crash-guest")
        return 99
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 31)
    print("crash %s: seed %d (rerun: crash.py %s --seed %d)" % (a.scenario, seed, a.scenario, seed))
    sys.stdout.flush()
    rng = random.Random(seed)
    base = tempfile.mkdtemp(prefix="bc-crash-", dir=os.environ.get("BC_TEST_TMPDIR") or None)
    code = 0
    try:
        tmpl = os.path.join(base, "tmpl")
        os.mkdir(tmpl)
        make_template(tmpl)
        tmpl_sha = {n: sha(os.path.join(tmpl, n)) for n in os.listdir(tmpl)}
        for n in ("base.qcow2", "mid.qcow2", "top.qcow2"):
            if qcheck(os.path.join(tmpl, n), "template") != 0:
                raise Failure("template %s has leaks" % n)
        work = os.path.join(base, "work")
        tmpfile = has_tmpfile(base)
        # Calibrate: one unkilled run per bandwidth choice gives the span
        # the kill instants are drawn from.
        spans = {}
        kills = finished = strays = resumes = 0
        counts = [0, 0, 0]
        t_end = time.monotonic() + a.seconds
        rnd = 0
        while time.monotonic() < t_end and (not a.max_kills or kills < a.max_kills):
            rnd += 1
            rd = Round(a.scenario, rng, work, tmpl_sha)
            rd.ref = os.path.join(tmpl, "ref.raw")
            rd.tmpfile = tmpfile
            choose(rd)
            if rd.key not in spans:
                fresh(tmpl, work, a.scenario)
                prepare(rd)
                spans[rd.key] = live_length(rd)
            fresh(tmpl, work, a.scenario)
            prepare(rd)
            tool = TOOL.get(a.scenario.split("-")[0])
            argv = rd.argv
            for attempt in range(rng.randint(1, 4) if tool else 1):
                # A live mirror runs on after its pivot: a third of the
                # kills land there.
                stretch = 1.5 if a.scenario == "mirror" else 1.0
                instant = rng.uniform(0, spans[rd.key] * stretch)
                p = spawn(argv)
                time.sleep(instant)
                killed = p.poll() is None
                if killed:
                    p.send_signal(signal.SIGKILL)
                    kills += 1
                else:
                    finished += 1
                _, err = p.communicate()
                reaped(p)
                where = "round %d, attempt %d (kill at %.4f s of %s)" % (
                    rnd, attempt + 1, instant, " ".join(argv))
                if p.returncode not in (0, -signal.SIGKILL):
                    raise Failure("%s: exited %d before the kill: %s" % (
                        where, p.returncode, err.decode(errors="replace").strip()))
                try:
                    if tool:
                        tool[0](rd)
                        argv = tool[1](rd)
                    else:
                        check_live(rd, base)
                except Failure as e:
                    raise Failure("%s: %s" % (where, e))
                if not killed:
                    break
            if tool:
                try:
                    tool[2](rd)
                except Failure as e:
                    raise Failure("round %d, the final run: %s" % (rnd, e))
            strays += rd.strays
            resumes += getattr(rd, "resumes", 0)
            st = getattr(rd, "stats", None)
            if st:
                counts = [c + x for c, x in zip(counts, st)]
        extra = ""
        if a.scenario in ("mirror", "snapshot"):
            extra = ", guest: %d acknowledged writes, %d flushes, %d %s" % (
                counts[0], counts[1], counts[2], "pivots" if a.scenario == "mirror" else "snapshots")
        if a.scenario == "copy-resume":
            # Without a journal the scenario is copy-reuse: it would test
            # nothing of resume and still pass.
            if kills >= 5 and not resumes:
                raise Failure("%d kills and not one run resumed from a journal" % kills)
            extra += ", %d runs resumed from a journal" % resumes
        if strays:
            extra += ("; %d hidden temporary file(s) left by kills during image creation "
                      "(this filesystem has no O_TMPFILE)" % strays)
        print("crash %s: %d rounds, %d killed, %d finished before the kill%s: all checks passed" % (
            a.scenario, rnd, kills, finished, extra))
    except Failure as e:
        print("FAIL crash %s (seed %d): %s" % (a.scenario, seed, e))
        code = 1
    except Interrupted as e:
        print("crash %s (seed %d): stopped by signal %d, children killed" % (
            a.scenario, seed, e.args[0]))
        code = 128 + e.args[0]
    finally:
        os.chdir("/")
        if code == 0 or not os.environ.get("BC_CRASH_KEEP"):
            shutil.rmtree(base, ignore_errors=True)
        else:
            print("kept for inspection: %s" % base)
    return code


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sys.exit(main())

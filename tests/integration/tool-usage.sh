#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The blockcopy tool's offline subcommands: usage errors, size parsing,
# create's refusal to overwrite, and info/map/compare/check output and
# exit codes, checked against qemu-img on the same files; what a user of
# copy/pull meets: usage errors (exit 2), messages in the tool's words,
# JSON error objects with --json, the progress line (plain, and on a pty).
#
# Env: BLOCKCOPY = the tool. The part needing qemu-img/qemu-io runs last;
# without them the test exits 77 (skip) after the tool-only part.
set -euo pipefail

BC=${BLOCKCOPY:?BLOCKCOPY must name the blockcopy tool}
T=$(mktemp -d /tmp/bc-tool-usage.XXXXXX)
trap 'rm -rf "$T"' EXIT
cd "$T"

fails=0
fail() {
	echo "FAIL: $*" >&2
	fails=$((fails + 1))
}

# run CMD...: runs, keeping stdout in out, stderr in err, status in rc.
run() {
	set +e
	"$@" >out 2>err
	rc=$?
	set -e
}

# expect_rc N WHAT: the last run exited N.
expect_rc() {
	if [ "$rc" != "$1" ]; then
		fail "$2: exit $rc, expected $1; stderr: $(cat err)"
	fi
}

# expect_one_line WHAT: stderr of the last run is exactly one line starting
# with "blockcopy: ".
expect_one_line() {
	if [ "$(wc -l <err)" != 1 ] || ! grep -q '^blockcopy: ' err; then
		fail "$1: stderr is not one 'blockcopy: ' line: $(cat err)"
	fi
}

# expect_usage ARGS...: bad usage: exit 2, one line with a hint, no stdout.
expect_usage() {
	run "$BC" "$@"
	expect_rc 2 "usage: $*"
	expect_one_line "usage: $*"
	if ! grep -q "(try 'blockcopy" err; then
		fail "usage: $*: no hint in: $(cat err)"
	fi
	if [ -s out ]; then
		fail "usage: $*: printed on stdout: $(cat out)"
	fi
}

# expect_err N MESSAGE ARGS...: exit N, stderr exactly "blockcopy: MESSAGE".
expect_err() {
	local code=$1 msg=$2
	shift 2
	run "$BC" "$@"
	expect_rc "$code" "$*"
	if [ "$(cat err)" != "blockcopy: $msg" ]; then
		fail "$*: stderr '$(cat err)', expected 'blockcopy: $msg'"
	fi
}

# expect_out FILE WHAT: stdout of the last run equals FILE.
expect_out() {
	if ! diff -u "$1" out >&2; then
		fail "$2: stdout differs (above)"
	fi
}

vsize() {
	"$BC" info "$1" | sed -n 's/^virtual size: .* (\([0-9]*\) bytes)$/\1/p'
}

sha() {
	sha256sum "$@"
}

########## usage errors (exit 2, one line, hint)
expect_usage
expect_usage frobnicate
grep -q "^blockcopy: unknown command 'frobnicate'" err ||
	fail "unknown command message: $(cat err)"
expect_usage --frobnicate
expect_usage help frobnicate
expect_usage create
expect_usage create a.qcow2
expect_usage create a.qcow2 1M extra
expect_usage create --frobnicate a.qcow2 1M
grep -q "unknown option '--frobnicate'" err || fail "long option message: $(cat err)"
expect_usage create -x a.qcow2 1M
grep -q "unknown option '-x'" err || fail "short option message: $(cat err)"
expect_usage create -f
grep -q "option '-f' needs an argument" err || fail "missing argument: $(cat err)"
expect_usage create -f vmdk a.img 1M
expect_usage create -o bogus=1 a.qcow2 1M
expect_usage create -o cluster_size a.qcow2 1M
expect_usage create -o compat=2.0 a.qcow2 1M
expect_usage create -o lazy_refcounts=maybe a.qcow2 1M
expect_usage create -f raw -o cluster_size=4K a.raw 1M
expect_usage create -f raw -o preallocation=metadata a.raw 1M
expect_usage create -f raw -b base.raw a.raw
expect_usage create -F raw a.qcow2 1M
expect_usage create a.qcow2 12Q
expect_usage create a.qcow2 1.5       # a fraction of a byte
expect_usage create a.qcow2 0.1K      # 102.4 bytes
expect_usage create a.qcow2 -- -1M
expect_usage create a.qcow2 16777216T # 2^64
expect_usage create a.qcow2 1MB
expect_usage info
expect_usage info a b
expect_usage info -f vmdk a
expect_usage map
expect_usage map --output=xml a
expect_usage compare a
expect_usage compare a b c
expect_usage check
expect_usage check a b
[ ! -e a.qcow2 ] && [ ! -e a.raw ] || fail "a usage error created a file"

########## help and version
run "$BC" --help
expect_rc 0 "--help"
grep -q '^  create ' out || fail "--help lists no create"
run "$BC" --version
expect_rc 0 "--version"
grep -Eq '^blockcopy [0-9]+\.[0-9]+\.[0-9]+$' out || fail "--version: $(cat out)"
for cmd in create info map compare check; do
	run "$BC" help "$cmd"
	expect_rc 0 "help $cmd"
	cp out help.txt
	grep -q "^Usage: blockcopy $cmd " help.txt || fail "help $cmd: $(head -1 help.txt)"
	run "$BC" "$cmd" --help
	expect_rc 0 "$cmd --help"
	expect_out help.txt "$cmd --help"
done
"$BC" help create | grep -q 'qcow2 (default)' || fail "create help names no default format"

########## sizes
"$BC" create -f raw r15.raw 1.5M
[ "$(stat -c %s r15.raw)" = 1572864 ] || fail "raw 1.5M: $(stat -c %s r15.raw)"
"$BC" create -f raw r1.raw 1k
[ "$(stat -c %s r1.raw)" = 1024 ] || fail "raw 1k: $(stat -c %s r1.raw)"
"$BC" create -f raw r2.raw 4096
[ "$(stat -c %s r2.raw)" = 4096 ] || fail "raw 4096: $(stat -c %s r2.raw)"
run "$BC" create q15.qcow2 1.5M
expect_rc 0 "create qcow2 1.5M"
[ ! -s out ] && [ ! -s err ] || fail "create is not quiet: $(cat out err)"
[ "$(vsize q15.qcow2)" = 1572864 ] || fail "qcow2 1.5M: $(vsize q15.qcow2)"
"$BC" create q2t.qcow2 2T
[ "$(vsize q2t.qcow2)" = 2199023255552 ] || fail "qcow2 2T: $(vsize q2t.qcow2)"
"$BC" create q1g.qcow2 0.25G
[ "$(vsize q1g.qcow2)" = 268435456 ] || fail "qcow2 0.25G: $(vsize q1g.qcow2)"

########## create never overwrites
printf 'precious data\n' >precious.qcow2
before=$(sha precious.qcow2)
expect_err 1 "precious.qcow2: file exists" create precious.qcow2 1M
expect_err 1 "precious.qcow2: file exists" create -f raw precious.qcow2 1M
expect_err 1 "q15.qcow2: file exists" create -b r15.raw -F raw q15.qcow2
[ "$(sha precious.qcow2)" = "$before" ] || fail "create changed an existing file"

########## create over a backing file
run "$BC" create -b q15.qcow2 over.qcow2
expect_rc 0 "create -b without -F"
[ "$(cat err)" = "blockcopy: warning: backing format of 'q15.qcow2' probed as qcow2; use -F to declare it" ] ||
	fail "probe warning: $(cat err)"
[ "$(vsize over.qcow2)" = 1572864 ] || fail "size from backing: $(vsize over.qcow2)"
"$BC" info over.qcow2 | grep -qx 'backing file format: qcow2' ||
	fail "probed backing format not recorded"
run "$BC" create -b r15.raw -F raw over2.qcow2 64K
expect_rc 0 "create -b -F"
[ ! -s err ] || fail "create -b -F warned: $(cat err)"
[ "$(vsize over2.qcow2)" = 65536 ] || fail "explicit size over backing"
run "$BC" create -b missing.qcow2 -F qcow2 over3.qcow2
expect_rc 1 "create over a missing backing"
expect_one_line "create over a missing backing"
grep -q 'missing.qcow2' err || fail "missing backing not named: $(cat err)"
[ ! -e over3.qcow2 ] || fail "create over a missing backing left a file"

########## failures on missing files: one line naming the file
for cmd in info map check; do
	run "$BC" "$cmd" nosuch.qcow2
	expect_rc 1 "$cmd nosuch"
	expect_one_line "$cmd nosuch"
	grep -q 'nosuch.qcow2' err || fail "$cmd nosuch: $(cat err)"
	[ ! -s out ] || fail "$cmd nosuch printed: $(cat out)"
done
run "$BC" compare q15.qcow2 nosuch.qcow2
expect_rc 2 "compare nosuch"
expect_one_line "compare nosuch"
grep -q 'nosuch.qcow2' err || fail "compare nosuch: $(cat err)"
[ ! -e nosuch.qcow2 ] || fail "a read-only command created a file"

########## copy and pull: usage, tool wording, JSON error objects, progress
expect_usage copy --granularity 3000 q15.qcow2 c.qcow2
grep -qx "blockcopy: invalid granularity '3000' (a power of two, 4K..64M) (try 'blockcopy help copy')" err ||
	fail "granularity message: $(cat err)"
expect_usage copy --granularity 128M q15.qcow2 c.qcow2
expect_usage copy --buf-size 1 q15.qcow2 c.qcow2
grep -qx "blockcopy: invalid buffer size '1' (from the granularity, 64K by default, to 1G) (try 'blockcopy help copy')" err ||
	fail "buf-size message: $(cat err)"
expect_usage copy --granularity 1M --buf-size 512K q15.qcow2 c.qcow2
expect_usage copy --buf-size 2G q15.qcow2 c.qcow2
expect_usage copy -f vmdk q15.qcow2 c.qcow2
expect_usage copy --bandwidth 1Q q15.qcow2 c.qcow2
expect_usage copy q15.qcow2
expect_usage copy --json --progress --quiet q15.qcow2 c.qcow2
expect_usage pull -f vmdk q15.qcow2
expect_usage pull --relative q15.qcow2
[ ! -e c.qcow2 ] || fail "a copy usage error created its destination"

# An existing destination: the message names the tool's option.
"$BC" create dst-exists.qcow2 1M
before=$(sha dst-exists.qcow2)
expect_err 1 "destination file 'dst-exists.qcow2' already exists; use --reuse-external to write into it" \
	copy q15.qcow2 dst-exists.qcow2
[ ! -s out ] || fail "copy failure printed on stdout without --json: $(cat out)"
# With --json: the same line on stderr, and a JSON error object on stdout.
expect_err 1 "destination file 'dst-exists.qcow2' already exists; use --reuse-external to write into it" \
	copy --json q15.qcow2 dst-exists.qcow2
printf '%s\n' '{"error": {"code": "exists", "message": "destination file '"'"'dst-exists.qcow2'"'"' already exists; use --reuse-external to write into it"}}' >want
expect_out want "copy --json onto an existing destination"
expect_err 1 "destination 'absent.qcow2' must exist with --reuse-external" \
	copy --reuse-external q15.qcow2 absent.qcow2
[ "$(sha dst-exists.qcow2)" = "$before" ] || fail "a refused copy changed the destination"
[ ! -e absent.qcow2 ] || fail "a refused copy created absent.qcow2"

# --json failures of the other commands: one object, the code in words.
for cmd in info map check; do
	expect_err 1 "nosuch.qcow2: No such file or directory" "$cmd" --json nosuch.qcow2
	printf '%s\n' '{"error": {"code": "no-such-file", "message": "nosuch.qcow2: No such file or directory"}}' >want
	expect_out want "$cmd --json on a missing file"
done
expect_err 1 "nosuch.qcow2: No such file or directory" pull --json nosuch.qcow2
expect_out want "pull --json on a missing file"
expect_err 1 "nosuch.qcow2: No such file or directory" copy --json nosuch.qcow2 c.qcow2
expect_out want "copy --json on a missing source"

# Progress off a terminal: a plain line per second naming the phase, the
# last one "done ... in N s", no control characters, no ETA at 100 %.
# 16 MiB at 8 MiB/s: about 2 s, so a line comes before the pivot.
"$BC" create -f raw prog.raw 16M
python3 -c 'import sys; f=open(sys.argv[1],"r+b"); f.write(b"\x5a"*(16<<20))' prog.raw
run "$BC" copy --progress --bandwidth 8M prog.raw prog-copy.raw
expect_rc 0 "copy --progress"
grep -Eq '^progress: copying [0-9.]+% ' err || fail "progress: no copying line: $(cat err)"
grep -Eqx 'progress: done 100\.0% 16 MiB/16 MiB [0-9.]+ [KMG]?i?B/s in [0-9.]+ s' err ||
	fail "progress: no final line: $(cat err)"
grep -q "$(printf '\r\|\033')" err && fail "progress off a terminal has control characters"
grep '100\.0%' err | grep -q ETA && fail "progress shows an ETA at 100 %: $(cat err)"
grep -q -- '--:--' err && fail "progress shows --:--: $(cat err)"
grep -Eqx 'Copied prog.raw to prog-copy.raw: 16 MiB in [0-9.]+ s \([0-9.]+ [KMG]?i?B/s, [a-z_+-]+\)' out ||
	fail "copy result line: $(cat out)"

# On a terminal (script gives a pty): one line redrawn with \r, each
# frame cleared to its end (ESC [K), the phase first, then "done".
if command -v script >/dev/null; then
	rm -f prog-copy.raw
	script -qfc "'$BC' copy --progress --bandwidth 8M prog.raw prog-copy.raw" /dev/null >pty.out </dev/null ||
		fail "copy --progress on a pty failed: $(cat -v pty.out)"
	python3 - pty.out <<'EOF' || fail "progress on a terminal: $(cat -v pty.out)"
import re, sys
s = open(sys.argv[1], "rb").read().decode()
frames = [f for f in s.split("\r") if f.strip()]
draws = [f for f in frames if f.endswith("\x1b[K") or "\x1b[K\n" in f]
assert draws, "no frame ends with ESC [K"
phases = [re.match(r"(\w+) +\[", f).group(1) for f in draws]
assert phases[0] == "copying", phases
assert "pivoting" in phases, phases
assert phases[-1] == "done", phases
for f in draws:
    assert "--:--" not in f, f
    if "100.0%" in f:
        assert "ETA" not in f, f
assert re.search(r"done +\[#{30}\] 100\.0% 16 MiB/16 MiB .* in [0-9.]+ s\x1b\[K", s), "final frame"
EOF
fi

########## check on raw
run "$BC" check r15.raw
expect_rc 0 "check raw"
[ "$(cat out)" = "blockcopy: r15.raw: raw images have no metadata to check" ] ||
	fail "check raw: $(cat out)"

########## compare on tool-made images (no writes needed)
run "$BC" compare q15.qcow2 r15.raw
expect_rc 0 "compare empty qcow2/raw"
[ "$(cat out)" = "Images are identical." ] || fail "compare identical: $(cat out)"
run "$BC" compare -f raw -F qcow2 r1.raw q15.qcow2
expect_rc 0 "compare sizes"
printf 'Warning: Image size mismatch!\nImages are identical.\n' >want
expect_out want "compare size mismatch"
printf '\001' | dd of=r2.raw bs=1 seek=3000 conv=notrunc status=none
run "$BC" compare r2.raw r1.raw
expect_rc 1 "compare tail data"
printf 'Warning: Image size mismatch!\nContent mismatch at offset 3000!\n' >want
expect_out want "compare tail data"
printf '\002' | dd of=r1.raw bs=1 seek=1000 conv=notrunc status=none
run "$BC" compare r1.raw r2.raw
expect_rc 1 "compare differ"
[ "$(cat out)" = "Content mismatch at offset 1000!" ] || fail "compare differ: $(cat out)"

########## everything below cross-checks with qemu-img
if ! command -v qemu-img >/dev/null || ! command -v qemu-io >/dev/null ||
	! command -v python3 >/dev/null; then
	echo "qemu-img, qemu-io or python3 not found: skipping the cross-checks" >&2
	[ "$fails" = 0 ] || exit 1
	exit 77
fi

qio() {
	qemu-io -f "$1" "${@:3}" "$2" >/dev/null
}

# same_as_qemu WHAT BC_ARGS -- QEMU_ARGS: identical stdout and exit status.
same_as_qemu() {
	local what=$1 i
	shift
	local bc_args=() q_args=()
	while [ "$1" != -- ]; do
		bc_args+=("$1")
		shift
	done
	shift
	q_args=("$@")
	set +e
	qemu-img "${q_args[@]}" >want 2>/dev/null
	local qrc=$?
	set -e
	run "$BC" "${bc_args[@]}"
	expect_rc "$qrc" "$what"
	expect_out want "$what"
}

# same_json WHAT BC_ARGS -- QEMU_ARGS: equal JSON values (key order aside)
# and exit status.
same_json() {
	local what=$1
	shift
	local bc_args=()
	while [ "$1" != -- ]; do
		bc_args+=("$1")
		shift
	done
	shift
	set +e
	qemu-img "$@" >want.json 2>/dev/null
	local qrc=$?
	set -e
	run "$BC" "${bc_args[@]}"
	expect_rc "$qrc" "$what"
	if ! python3 -c 'import json,sys
a = json.load(open(sys.argv[1])); b = json.load(open(sys.argv[2]))
sys.exit(a != b)' want.json out; then
		fail "$what: JSON differs: $(cat out) vs $(cat want.json)"
	fi
}

# Images: a sparse raw with data, a qcow2 with data and zero clusters, and
# a 3-layer chain base <- mid <- top with data at every depth.
qemu-img create -f raw sparse.raw 4M >/dev/null
qio raw sparse.raw -c 'write -P 0x11 64k 128k' -c 'write -P 0x22 3M 4k'
qemu-img create -f qcow2 zero.qcow2 4M >/dev/null
qio qcow2 zero.qcow2 -c 'write -P 0x33 0 64k' -c 'write -z 64k 128k' \
	-c 'write -P 0x44 1M 192k' -c 'write -z -u 2M 64k'
"$BC" create base.qcow2 8M
qio qcow2 base.qcow2 -c 'write -P 1 0 1M' -c 'write -P 5 6M 64k'
"$BC" create -b base.qcow2 -F qcow2 mid.qcow2
qio qcow2 mid.qcow2 -c 'write -P 2 256k 128k' -c 'write -z 512k 64k'
qemu-img create -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 >/dev/null
qio qcow2 top.qcow2 -c 'write -P 3 64k 64k' -c 'write -P 4 7M 4k'
"$BC" create -o compat=0.10,cluster_size=4K v2.qcow2 100M
"$BC" create -o refcount_bits=8 rc8.qcow2 100M
"$BC" create -o extended_l2=on,lazy_refcounts=on,cluster_size=32K ext.qcow2 1G
qemu-img create -f qcow2 comp.qcow2 1M >/dev/null
qio qcow2 comp.qcow2 -c 'write -c -P 6 0 64k'
: >empty.raw
mkdir sub
"$BC" create -b ../top.qcow2 -F qcow2 sub/rel.qcow2
imgs="comp.qcow2 empty.raw rc8.qcow2 sparse.raw zero.qcow2 base.qcow2 mid.qcow2 top.qcow2 v2.qcow2 ext.qcow2 sub/rel.qcow2 r15.raw"
sha $imgs >sums

########## info
for i in $imgs; do
	same_as_qemu "info $i" info "$i" -- info "$i"
	same_json "info --json $i" info --json "$i" -- info --output=json "$i"
done
same_as_qemu "info chain" info --backing-chain sub/rel.qcow2 -- info --backing-chain sub/rel.qcow2
same_json "info --json chain" info --backing-chain --json sub/rel.qcow2 -- \
	info --backing-chain --output=json sub/rel.qcow2
same_as_qemu "info abs path" info "$T/top.qcow2" -- info "$T/top.qcow2"
"$BC" info top.qcow2 | grep -qx 'backing file: mid.qcow2' || fail "info backing line"
"$BC" info sub/rel.qcow2 | grep -qx 'backing file: ../top.qcow2 (actual path: sub/../top.qcow2)' ||
	fail "info actual path line"
# info opens the top alone: works without the backing file.
mv mid.qcow2 mid.away
run "$BC" info top.qcow2
expect_rc 0 "info without backing file"
run "$BC" info --backing-chain top.qcow2
expect_rc 1 "info --backing-chain without backing file"
expect_one_line "info --backing-chain without backing file"
grep -q 'mid.qcow2' err || fail "missing backing not named: $(cat err)"
mv mid.away mid.qcow2

########## map: exact qemu-img lines, JSON and human
for i in $imgs; do
	same_as_qemu "map --json $i" map --json "$i" -- map --output=json "$i"
	same_as_qemu "map $i" map "$i" -- map "$i"
done
# The exact text for one image, so a mistake shared with qemu-img's
# reading cannot hide (qemu-img 7.2 wrote this image).
cat >want <<'EOF'
[{ "start": 0, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true, "offset": 327680},
{ "start": 65536, "length": 131072, "depth": 0, "present": true, "zero": true, "data": false},
{ "start": 196608, "length": 851968, "depth": 0, "present": false, "zero": true, "data": false},
{ "start": 1048576, "length": 196608, "depth": 0, "present": true, "zero": false, "data": true, "offset": 393216},
{ "start": 1245184, "length": 851968, "depth": 0, "present": false, "zero": true, "data": false},
{ "start": 2097152, "length": 65536, "depth": 0, "present": true, "zero": true, "data": false},
{ "start": 2162688, "length": 2031616, "depth": 0, "present": false, "zero": true, "data": false}]
EOF
run "$BC" map --json zero.qcow2
expect_rc 0 "map --json zero.qcow2"
expect_out want "map --json zero.qcow2 exact"
cat >want <<'EOF'
Offset          Length          Mapped to       File
0               0x10000         0x50000         zero.qcow2
0x100000        0x30000         0x60000         zero.qcow2
EOF
run "$BC" map zero.qcow2
expect_out want "map zero.qcow2 exact"
"$BC" map --json top.qcow2 | tail -1 | grep -q '"depth": 2, "present": false, "zero": true, "data": false}]$' ||
	fail "map --json last line: $("$BC" map --json top.qcow2 | tail -1)"

########## compare
cp top.qcow2 top-copy.qcow2
same_as_qemu "compare same" compare top.qcow2 top-copy.qcow2 -- compare top.qcow2 top-copy.qcow2
qemu-img convert -O raw top.qcow2 flat.raw
run "$BC" compare top.qcow2 flat.raw
expect_rc 0 "compare chain/flat"
[ "$(cat out)" = "Images are identical." ] || fail "compare chain/flat: $(cat out)"
qio raw flat.raw -c 'write -P 9 6291556 1'   # 6M + 100: in base's data
run "$BC" compare top.qcow2 flat.raw
expect_rc 1 "compare differ in base data"
[ "$(cat out)" = "Content mismatch at offset 6291556!" ] || fail "compare: $(cat out)"
qio raw flat.raw -c 'write -P 0 6291556 1' -c 'write -P 7 5000000 1'  # in a hole
run "$BC" compare top.qcow2 flat.raw
expect_rc 1 "compare differ in a hole"
[ "$(cat out)" = "Content mismatch at offset 5000000!" ] || fail "compare hole: $(cat out)"
run "$BC" compare -f qcow2 -F raw top.qcow2 flat.raw
expect_rc 1 "compare with formats"
run "$BC" compare -f raw top.qcow2 flat.raw
expect_rc 1 "compare qcow2 read as raw"

########## check: clean, leaks, corruption (exit 0, 3, 2) as qemu-img
for i in zero.qcow2 top.qcow2 v2.qcow2 ext.qcow2 comp.qcow2; do
	same_as_qemu "check $i" check "$i" -- check "$i"
done
same_json "check --json" check --json zero.qcow2 -- check --output=json zero.qcow2
# A leak: clear the L2 entry of guest cluster 0, its data cluster keeps
# refcount 1 with no reference. A corruption: refcount 0 for a used cluster.
cp zero.qcow2 leak.qcow2
cp zero.qcow2 corrupt.qcow2
python3 - <<'EOF'
import struct
def be64(f, off):
    f.seek(off); return struct.unpack('>Q', f.read(8))[0]
with open('leak.qcow2', 'r+b') as f:
    l1 = be64(f, 40)
    l2 = be64(f, l1) & 0x00fffffffffffe00
    f.seek(l2); f.write(b'\0' * 8)
with open('corrupt.qcow2', 'r+b') as f:
    f.seek(20); cbits = struct.unpack('>I', f.read(4))[0]
    l1 = be64(f, 40)
    l2 = be64(f, l1) & 0x00fffffffffffe00
    data = be64(f, l2) & 0x00fffffffffffe00
    rt = be64(f, 48)
    rb = be64(f, rt)
    f.seek(rb + 2 * (data >> cbits)); f.write(b'\0\0')
EOF
sha leak.qcow2 corrupt.qcow2 >>sums
same_as_qemu "check leak" check leak.qcow2 -- check leak.qcow2
expect_rc 3 "check leak"
grep -qx '1 leaked clusters were found on the image.' out || fail "check leak: $(cat out)"
same_json "check --json leak" check --json leak.qcow2 -- check --output=json leak.qcow2
same_as_qemu "check corrupt" check corrupt.qcow2 -- check corrupt.qcow2
expect_rc 2 "check corrupt"
grep -Eqx '[0-9]+ errors were found on the image.' out || fail "check corrupt: $(cat out)"
# What it found, on stderr as qemu-img prints it, in its order.
for i in leak corrupt; do
	run "$BC" check "$i.qcow2"
	qemu-img check "$i.qcow2" 2>want.err >/dev/null || true
	diff -u want.err err >&2 || fail "check $i: findings differ from qemu-img's (above)"
done
run "$BC" check leak.qcow2
[ "$(cat err)" = "Leaked cluster 5 refcount=1 reference=0" ] || fail "check leak finding: $(cat err)"
run "$BC" check corrupt.qcow2
printf 'ERROR cluster 5 refcount=0 reference=1\nERROR OFLAG_COPIED data cluster: l2_entry=8000000000050000 refcount=0\n' >want
diff -u want err >&2 || fail "check corrupt findings (above)"
run "$BC" check --json leak.qcow2
[ "$(cat err)" = "Leaked cluster 5 refcount=1 reference=0" ] || fail "check --json leak finding: $(cat err)"

########## read-only commands wrote nothing
sha -c --quiet sums >&2 || fail "a read-only command changed an input"

if [ "$fails" != 0 ]; then
	echo "$fails failure(s)" >&2
	exit 1
fi
echo "tool-usage: all passed"

#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# NBD exports as copy destinations and sources, against real servers on
# unix sockets: qemu-nbd serving qcow2 and raw, nbdkit's memory and file
# plugins, and nbdkit's error and delay filters for server errors and a
# server killed mid-copy. Content is checked with qemu-img compare once
# the server has stopped; holes must stay holes.
# Skips (77) without qemu-img/qemu-nbd/nbdkit, or with a blockcopy built
# without libnbd.

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
require_qemu_img
for t in qemu-nbd nbdkit nbdinfo; do
	command -v $t >/dev/null 2>&1 || { echo "$t not installed: skipping"; exit 77; }
done

D=$T/img
mkdir -p "$D"
SERVER_PID=

# serve SOCK CMD...: start a server on a unix socket, wait until it answers.
serve() {
	local sock=$1 i
	shift
	rm -f "$sock"
	"$@" &
	SERVER_PID=$!
	for i in $(seq 100); do
		[ -S "$sock" ] && nbdinfo --size "nbd+unix:///?socket=$sock" >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	die "server did not start: $*"
}

stop() {
	[ -n "$SERVER_PID" ] || return 0
	kill "$SERVER_PID" 2>/dev/null
	wait "$SERVER_PID" 2>/dev/null
	SERVER_PID=
}
trap 'stop; rm -rf "$T"' EXIT

uri() {
	echo "nbd+unix:///?socket=$1"
}

# Source: data, a zero range written as zeros, holes; 64 MiB virtual.
qimg create -q -f qcow2 "$D/src.qcow2" 64M
qio -f qcow2 -c "write -P 0xab 0 3M" -c "write -P 0xcd 32M 1M" \
    -c "write -z 40M 1M" -c "write -P 0xef 63M 1M" "$D/src.qcow2"
SRC_SHA=$(sha "$D/src.qcow2")

# A build without libnbd says so: skip, nothing else here can pass.
qimg create -q -f raw "$D/probe.raw" 1M
serve "$D/p.sock" qemu-nbd -t -f raw -k "$D/p.sock" "$D/probe.raw"
bc info "$(uri "$D/p.sock")"
stop
if grep -q "built without libnbd" "$T/err"; then
	echo "blockcopy built without libnbd: skipping"
	exit 77
fi
assert_rc 0 "info of an NBD export"

# --- qemu-nbd serving qcow2 as the destination ----------------------------
qimg create -q -f qcow2 "$D/dst.qcow2" 64M
serve "$D/q.sock" qemu-nbd -t -f qcow2 -k "$D/q.sock" "$D/dst.qcow2"
U=$(uri "$D/q.sock")
bc copy "$D/src.qcow2" "$U"
assert_rc 1 "copy to an NBD export without --reuse-external"
[ "$(wc -l <"$T/err")" -eq 1 ] || fail "refusal is not one line: $(bc_said)"
grep -qF "destination '$U' is an NBD export: it must exist, use --reuse-external" "$T/err" ||
	fail "refusal message: $(bc_said)"
bc copy --reuse-external "$D/src.qcow2" "$U"
assert_rc 0 "copy to qemu-nbd (qcow2)"
bc compare "$D/src.qcow2" "$U"
assert_rc 0 "blockcopy compare reads the export back identical"
stop
if qemu-img compare -q -f qcow2 -F qcow2 "$D/src.qcow2" "$D/dst.qcow2"; then
	ok "qcow2 behind qemu-nbd holds the source"
else
	fail "qcow2 behind qemu-nbd differs from the source"
fi
qemu-img check -q "$D/dst.qcow2" || fail "qemu-img check of the served qcow2"
# 3 + 1 + 1 MiB of data: the zero range and the holes were not written as data.
alloc=$(qemu-img map --output=json "$D/dst.qcow2" |
	python3 -c 'import json,sys; print(sum(e["length"] for e in json.load(sys.stdin) if e["data"]))')
[ "$alloc" -eq $((5 << 20)) ] && ok "holes stayed holes" ||
	fail "destination has $alloc bytes of data, want $((5 << 20))"

# --- qemu-nbd serving raw, through the rebase entry point (--raw) ---------
truncate -s 64M "$D/dst.raw"
serve "$D/r.sock" qemu-nbd -t -f raw -k "$D/r.sock" "$D/dst.raw"
bc copy --raw --reuse-external "$D/src.qcow2" "$(uri "$D/r.sock")"
assert_rc 0 "copy --raw (bc_block_rebase COPY) to qemu-nbd (raw)"
stop
qemu-img compare -q -f qcow2 -F raw "$D/src.qcow2" "$D/dst.raw" &&
	ok "raw behind qemu-nbd holds the source" ||
	fail "raw behind qemu-nbd differs from the source"

# --- shallow: the remote image's backing belongs to its server ------------
qimg create -q -f qcow2 "$D/base.qcow2" 64M
qio -f qcow2 -c "write -P 0x11 0 8M" "$D/base.qcow2"
qimg create -q -f qcow2 -b "$D/base.qcow2" -F qcow2 "$D/top.qcow2"
qio -f qcow2 -c "write -P 0x22 4M 1M" "$D/top.qcow2"
qimg create -q -f qcow2 -b "$D/base.qcow2" -F qcow2 "$D/stop.qcow2"
serve "$D/s.sock" qemu-nbd -t -f qcow2 -k "$D/s.sock" "$D/stop.qcow2"
bc copy --shallow --reuse-external "$D/top.qcow2" "$(uri "$D/s.sock")"
assert_rc 0 "shallow copy to an export whose image has the same backing"
stop
qemu-img compare -q "$D/top.qcow2" "$D/stop.qcow2" &&
	ok "shallow copy over NBD: same guest view" || fail "shallow copy over NBD differs"
[ "$(qemu-img info --output=json "$D/stop.qcow2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["backing-filename"])')" = "$D/base.qcow2" ] &&
	ok "remote backing untouched" || fail "remote image's backing changed"
top_data=$(qemu-img map --output=json "$D/stop.qcow2" |
	python3 -c 'import json,sys; print(sum(e["length"] for e in json.load(sys.stdin) if e["data"] and e["depth"]==0))')
[ "$top_data" -eq $((1 << 20)) ] && ok "shallow wrote only the top's data" ||
	fail "shallow copy wrote $top_data bytes into the remote top, want 1 MiB"

# --- blockcopy mirror: a live guest mirrored into an NBD export, pivot ------
cp "$D/src.qcow2" "$D/live.qcow2"
qimg create -q -f qcow2 "$D/mdst.qcow2" 64M
serve "$D/mm.sock" qemu-nbd -t -f qcow2 -k "$D/mm.sock" "$D/mdst.qcow2"
bc mirror "$D/live.qcow2" "$(uri "$D/mm.sock")"
assert_rc 1 "mirror to an NBD export without --reuse-external"
[ "$(wc -l <"$T/err")" -eq 1 ] && [ ! -s "$T/out" ] &&
	grep -qF "is an NBD export: it must exist, use --reuse-external" "$T/err" ||
	fail "mirror refusal: $(bc_said)"
BC_TIMEOUT=120 bc mirror --reuse-external --duration 2 "$D/live.qcow2" "$(uri "$D/mm.sock")"
assert_rc 0 "mirror with a pivot to qemu-nbd (the tool verifies every guest write)"
stop
qemu-img check -q "$D/mdst.qcow2" || fail "qemu-img check of the mirrored export's image"

# --- qemu-nbd as the source (read-only) -----------------------------------
serve "$D/ro.sock" qemu-nbd -t -r -f qcow2 -k "$D/ro.sock" "$D/src.qcow2"
bc copy "$(uri "$D/ro.sock")" "$D/from-nbd.raw"
assert_rc 0 "copy from qemu-nbd to a new file"
# map of an export: data at its guest offsets, as qemu-img shows it.
if [ "$("$BLOCKCOPY" map --output=json "$(uri "$D/ro.sock")")" = \
     "$(qemu-img map --output=json "$(uri "$D/ro.sock")")" ]; then
	ok "map of an NBD export matches qemu-img map --output=json"
else
	fail "map of an NBD export differs from qemu-img map"
fi
bc map "$(uri "$D/ro.sock")"
assert_rc 0 "human map of an NBD export"
grep -q "^0x2000000 *0x100000 *0x2000000 *nbd" "$T/out" &&
	ok "human map of an NBD export shows the data at its offsets" ||
	fail "human map of an NBD export: $(bc_said)"
stop
qemu-img compare -q -f qcow2 -F raw "$D/src.qcow2" "$D/from-nbd.raw" &&
	ok "copy from NBD holds the source" || fail "copy from NBD differs"
[ "$(qemu-img info --output=json "$D/from-nbd.raw" | python3 -c 'import json,sys; print(json.load(sys.stdin)["format"])')" = raw ] ||
	fail "copy of an NBD source is not raw"
# Data 3+1+1 MiB, plus at most the zero range: holes stayed holes.
[ "$(stat -c %b "$D/from-nbd.raw")" -le $((6 << 11)) ] && ok "copy from NBD is sparse" ||
	fail "copy from NBD allocates $(stat -c %b "$D/from-nbd.raw") sectors"

# --- nbdkit memory and file plugins ---------------------------------------
serve "$D/m.sock" nbdkit -f -U "$D/m.sock" memory 64M
bc copy --reuse-external "$D/src.qcow2" "$(uri "$D/m.sock")"
assert_rc 0 "copy to nbdkit memory"
nbdcopy "$(uri "$D/m.sock")" "$D/mem.raw" || fail "nbdcopy out of nbdkit memory"
stop
qemu-img compare -q -f qcow2 -F raw "$D/src.qcow2" "$D/mem.raw" &&
	ok "nbdkit memory holds the source" || fail "nbdkit memory differs"

truncate -s 64M "$D/kfile.raw"
serve "$D/f.sock" nbdkit -f -U "$D/f.sock" file "$D/kfile.raw"
bc copy --reuse-external "$D/src.qcow2" "$(uri "$D/f.sock")"
assert_rc 0 "copy to nbdkit file"
stop
qemu-img compare -q -f qcow2 -F raw "$D/src.qcow2" "$D/kfile.raw" &&
	ok "nbdkit file holds the source" || fail "nbdkit file differs"

# Size mismatch: refused, naming both sizes.
serve "$D/m2.sock" nbdkit -f -U "$D/m2.sock" memory 32M
bc copy --reuse-external "$D/src.qcow2" "$(uri "$D/m2.sock")"
assert_rc 1 "copy to a smaller export"
grep -qF "size 33554432 differs from source size 67108864" "$T/err" ||
	fail "size mismatch message: $(bc_said)"
stop

# A server that is not there: the URI and libnbd's reason.
bc copy --reuse-external "$D/src.qcow2" "$(uri "$D/none.sock")"
assert_rc 1 "copy to a socket nobody listens on"
grep -qF "$(uri "$D/none.sock"): connect failed: " "$T/err" ||
	fail "connect failure message: $(bc_said)"

# --- server errors: the job fails with the server's reason ----------------
serve "$D/e.sock" nbdkit -f -U "$D/e.sock" --filter=error memory 64M \
	error=EIO error-pwrite-rate=100%
bc copy --reuse-external "$D/src.qcow2" "$(uri "$D/e.sock")"
assert_rc 1 "copy to a server failing every write"
[ "$(wc -l <"$T/err")" -eq 1 ] || fail "write failure is not one line: $(bc_said)"
grep -qF "$(uri "$D/e.sock"): write failed at offset " "$T/err" &&
	grep -qF "Input/output error" "$T/err" ||
	fail "write failure does not name the URI and the server's EIO: $(bc_said)"
stop
[ "$(sha "$D/src.qcow2")" = "$SRC_SHA" ] && ok "source untouched" || fail "source changed"

# The export holds data everywhere, so the source's zero runs must be
# written as zeros (where it already reads zeros the copy writes nothing).
serve "$D/e2.sock" nbdkit -f -U "$D/e2.sock" --filter=error data \
	data='( 0x55 )*67108864' size=64M error=ENOSPC error-zero-rate=100%
bc copy --reuse-external "$D/src.qcow2" "$(uri "$D/e2.sock")"
assert_rc 1 "copy to a server failing write zeroes with ENOSPC"
grep -qF "$(uri "$D/e2.sock"): write zeroes failed at offset " "$T/err" &&
	grep -qF "No space left on device" "$T/err" ||
	fail "write zeroes failure message: $(bc_said)"
stop
serve "$D/e3.sock" nbdkit -f -U "$D/e3.sock" --filter=error memory 64M \
	error=ENOSPC error-zero-rate=100%
bc copy --reuse-external --json "$D/src.qcow2" "$(uri "$D/e3.sock")"
assert_rc 0 "copy to an empty export writes no zeros (its zero writes would fail)"
# 5 MiB of data; the 1 MiB zero run at 40M costs nothing.
python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); sys.exit(j["bytes"] != 5 << 20 or j["bytes-zeroed"] != 0)' "$T/out" &&
	ok "no zeros written where the export reads zeros" ||
	fail "zeros written to an empty export: $(bc_said)"
stop

# --- a server killed mid-copy: FAILED, cleanly, in time -------------------
qimg create -q -f qcow2 "$D/big.qcow2" 256M
qio -f qcow2 -c "write -P 0x5a 0 256M" "$D/big.qcow2"
serve "$D/d.sock" nbdkit -f -U "$D/d.sock" --filter=delay memory 256M wdelay=500ms
KILLED=$SERVER_PID
(sleep 1; kill -9 "$KILLED") &
BC_TIMEOUT=30 bc copy --reuse-external "$D/big.qcow2" "$(uri "$D/d.sock")"
wait
SERVER_PID=
assert_rc 1 "copy to a server killed mid-copy"
grep -qF "$(uri "$D/d.sock"): write failed at offset " "$T/err" ||
	fail "mid-copy disconnect message: $(bc_said)"
qemu-img check -q "$D/big.qcow2" || fail "source damaged by a failed copy"

finish

#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# nbdkit-blockcopy-plugin: a live disk served over NBD, with real NBD
# clients as its guests (qemu-io, fio's nbd engine, nbdcopy, nbdinfo),
# driven through the JSON-lines control socket: a live mirror to an NBD
# export with the guest writing through NBD, pivot, abort, and a failing
# destination (the guest goes on).
# Environment: BLOCKCOPY_PLUGIN (the .so). Skips (77) without nbdkit,
# qemu-nbd, qemu-io, nbdcopy or fio.

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
require_qemu_img
: "${BLOCKCOPY_PLUGIN:?BLOCKCOPY_PLUGIN must name nbdkit-blockcopy-plugin.so}"
for t in qemu-nbd nbdkit nbdinfo nbdcopy fio; do
	command -v $t >/dev/null 2>&1 || { echo "$t not installed: skipping"; exit 77; }
done
fio --enghelp 2>/dev/null | grep -qw nbd || { echo "fio without its nbd engine: skipping"; exit 77; }

D=$T/img
mkdir -p "$D"
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait; rm -rf "$T"' EXIT

ctl() {
	timeout 60 python3 "$INTEG_DIR/nbdctl.py" "$D/ctl.sock" "$@" >"$T/ctl.out" 2>&1
}

uri() {
	echo "nbd+unix:///?socket=$1"
}

wait_socket() {
	local i
	for i in $(seq 100); do
		[ -S "$1" ] && nbdinfo --size "$(uri "$1")" >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	die "no server on $1"
}

# serve_disk IMG: the plugin on $D/g.sock with control on $D/ctl.sock.
serve_disk() {
	rm -f "$D/g.sock" "$D/ctl.sock"
	nbdkit -f -U "$D/g.sock" "$BLOCKCOPY_PLUGIN" disk="$1" control="$D/ctl.sock" &
	GUEST_SERVER=$!
	PIDS+=("$GUEST_SERVER")
	wait_socket "$D/g.sock"
	G=$(uri "$D/g.sock")
}

stop_pid() {
	kill "$1" 2>/dev/null
	wait "$1" 2>/dev/null
}

# qio_nbd URI CMD...: qemu-io on an export, failing on any error.
qio_nbd() {
	local u=$1
	shift
	qio -f raw "$u" "$@"
}

# --- serving: what NBD clients see ------------------------------------------
qimg create -q -f qcow2 "$D/g.qcow2" 64M
qio -f qcow2 -c "write -P 0x31 1M 2M" -c "write -z 8M 1M" "$D/g.qcow2"
serve_disk "$D/g.qcow2"

nbdinfo "$G" >"$T/info" 2>&1 || fail "nbdinfo on the plugin"
for cap in "can_multi_conn: true" "can_flush: true" "can_trim: true" \
	"can_zero: true" "can_fua: true" "export-size: 67108864"; do
	grep -qF "$cap" "$T/info" && ok "plugin offers $cap" || fail "plugin lacks $cap: $(cat "$T/info")"
done
nbdinfo --map --totals "$G" >"$T/map" || fail "nbdinfo --map"
# 2 MiB data; the rest (including the zero cluster) reads as zero.
grep -Eq '^ *2097152 +3\.1% +0 +data$' "$T/map" && grep -Eq '^ *1048576 +1\.6% +2 +zero$' "$T/map" &&
	ok "block status: 2 MiB of data, 1 MiB zero cluster, holes" ||
	fail "block status totals: $(cat "$T/map")"

qio_nbd "$G" -c "write -P 0x41 4M 1M" -c "read -P 0x41 4M 1M" -c "read -P 0x31 1M 2M"
ok "qemu-io writes and reads through the plugin"

fio --name=verify --ioengine=nbd --uri="$G" --rw=randwrite --bs=64k \
	--offset=16M --size=16M --iodepth=8 --verify=crc32c --do_verify=1 --verify_state_save=0 \
	--output="$T/fio.out" >/dev/null 2>&1 &&
	grep -q "err= 0" "$T/fio.out" && ok "fio (nbd engine) writes and verifies" ||
	fail "fio verify through the plugin: $(grep -i err "$T/fio.out")"

nbdcopy "$G" "$D/out.raw" || fail "nbdcopy out of the plugin"
ctl '{"cmd":"info"}' && grep -qF '"job":null' "$T/ctl.out" &&
	grep -qF "\"disk\":\"$D/g.qcow2\"" "$T/ctl.out" && ok "control: info" ||
	fail "control info: $(cat "$T/ctl.out")"
ctl '{"cmd":"pivot"}'
grep -qF '{"ok":false,"error":' "$T/ctl.out" && ok "control: pivot without a job fails" ||
	fail "pivot without a job: $(cat "$T/ctl.out")"
ctl '{"cmd":"copy"}'
grep -qF '{"ok":false,"error":"copy needs \"dest\": a path or an NBD URI"}' "$T/ctl.out" &&
	ok "control: copy without dest" || fail "copy without dest: $(cat "$T/ctl.out")"
ctl 'nonsense'
grep -qF '"error":"a request is one JSON object per line"' "$T/ctl.out" &&
	ok "control: not JSON" || fail "not JSON: $(cat "$T/ctl.out")"
stop_pid "$GUEST_SERVER"
qemu-img compare -q -f qcow2 -F raw "$D/g.qcow2" "$D/out.raw" &&
	ok "nbdcopy read what the disk holds" || fail "nbdcopy output differs from the disk"
qemu-img check -q "$D/g.qcow2" || fail "qemu-img check after serving"

# --- live mirror to qemu-nbd, the guest writing through NBD, pivot ---------
qimg create -q -f qcow2 "$D/d.qcow2" 64M
rm -f "$D/d.sock"
qemu-nbd -t -f qcow2 -k "$D/d.sock" "$D/d.qcow2" &
DEST_SERVER=$!
PIDS+=("$DEST_SERVER")
wait_socket "$D/d.sock"
serve_disk "$D/g.qcow2"
fio --name=guest --ioengine=nbd --uri="$G" --rw=randwrite --bs=64k \
	--offset=32M --size=8M --iodepth=4 --verify=crc32c --do_verify=1 --verify_state_save=0 \
	--rate=8m --loops=12 --output="$T/fio-live.out" >/dev/null 2>&1 &
FIO=$!
ctl "{\"cmd\":\"copy\",\"dest\":\"$(uri "$D/d.sock")\",\"flags\":[\"reuse-external\"],\"bandwidth\":16777216}"
grep -qF '{"ok":true}' "$T/ctl.out" && ok "control: copy started" || fail "copy: $(cat "$T/ctl.out")"
qio_nbd "$G" -c "write -P 0x51 50M 1M"   # during the bulk copy
ctl --wait mirroring --timeout 60
grep -qF '"event":"mirroring"' "$T/ctl.out" && ok "MIRRORING event" || fail "no MIRRORING: $(cat "$T/ctl.out")"
qio_nbd "$G" -c "write -P 0x52 51M 1M"   # while mirroring
ctl '{"cmd":"stats"}'
grep -qF '"ready":true' "$T/ctl.out" && ok "stats: ready" || fail "stats: $(cat "$T/ctl.out")"
ctl '{"cmd":"set-speed","bandwidth":0}' && ok "control: set-speed" || fail "set-speed: $(cat "$T/ctl.out")"
kill -0 "$FIO" 2>/dev/null && ok "the fio guest is still writing at the pivot" ||
	fail "fio ended before the pivot: the test does not pivot under load"
ctl '{"cmd":"pivot"}' && ok "control: pivot" || fail "pivot: $(cat "$T/ctl.out")"
ctl '{"cmd":"info"}'
grep -qF "\"disk\":\"$(uri "$D/d.sock")\"" "$T/ctl.out" && ok "after the pivot the disk lives on the NBD export" ||
	fail "disk after pivot: $(cat "$T/ctl.out")"
qio_nbd "$G" -c "write -P 0x53 52M 1M"   # after the pivot: the remote disk only
wait "$FIO" && grep -q "err= 0" "$T/fio-live.out" && ok "fio guest verified its data across the pivot" ||
	fail "fio guest during the mirror: $(grep -iE 'err|verify' "$T/fio-live.out" | head -3)"
stop_pid "$GUEST_SERVER"
stop_pid "$DEST_SERVER"
qemu-io -f qcow2 -c "read -P 0x51 50M 1M" -c "read -P 0x52 51M 1M" \
	-c "read -P 0x53 52M 1M" -c "read -P 0x41 4M 1M" "$D/d.qcow2" >"$T/qio" 2>&1
grep -q "Pattern verification failed" "$T/qio" && fail "destination misses guest writes: $(cat "$T/qio")" ||
	ok "destination holds every guest write"
qemu-io -f qcow2 -c "read -P 0x52 51M 1M" -c "read -P 0 52M 1M" "$D/g.qcow2" >"$T/qio" 2>&1
grep -q "Pattern verification failed" "$T/qio" && fail "source after pivot: $(cat "$T/qio")" ||
	ok "source holds the pivot point, nothing after"
# Apart from what was written after the pivot (0x53, and fio's region,
# which it kept writing), the two are the same disk.
qemu-io -f qcow2 -c "write -P 0 52M 1M" -c "write -P 0 32M 8M" "$D/d.qcow2" >/dev/null
qemu-io -f qcow2 -c "write -P 0 32M 8M" "$D/g.qcow2" >/dev/null
qemu-img compare -q "$D/g.qcow2" "$D/d.qcow2" && ok "source and destination agree up to the pivot" ||
	fail "source and destination differ: $(qemu-img compare "$D/g.qcow2" "$D/d.qcow2" 2>&1)"
qemu-img check -q "$D/d.qcow2" || fail "qemu-img check of the destination"

# --- abort: the disk stays; the destination is consistent -------------------
serve_disk "$D/g.qcow2"
rm -f "$D/m.sock"
nbdkit -f -U "$D/m.sock" memory 64M &
MEM=$!
PIDS+=("$MEM")
wait_socket "$D/m.sock"
ctl "{\"cmd\":\"copy\",\"dest\":\"$(uri "$D/m.sock")\",\"flags\":[\"reuse-external\"]}" --wait mirroring ||
	fail "copy to nbdkit memory: $(cat "$T/ctl.out")"
ctl '{"cmd":"abort"}' --wait canceled && ok "abort: CANCELED" || fail "abort: $(cat "$T/ctl.out")"
ctl '{"cmd":"info"}'
grep -qF "\"disk\":\"$D/g.qcow2\"" "$T/ctl.out" && ok "after abort the disk stays local" ||
	fail "after abort: $(cat "$T/ctl.out")"
nbdcopy "$(uri "$D/m.sock")" "$D/mem.raw" || fail "nbdcopy from memory"
stop_pid "$MEM"

# --- a failing destination: FAILED with the server's reason, guest goes on --
rm -f "$D/e.sock"
nbdkit -f -U "$D/e.sock" --filter=error memory 64M error=EIO error-pwrite-rate=100% 2>/dev/null &
ERR=$!
PIDS+=("$ERR")
wait_socket "$D/e.sock"
ctl "{\"cmd\":\"copy\",\"dest\":\"$(uri "$D/e.sock")\",\"flags\":[\"reuse-external\"]}" --wait failed
grep -qF '"event":"failed"' "$T/ctl.out" && grep -qF "$(uri "$D/e.sock"): write failed at offset" "$T/ctl.out" &&
	grep -qF "Input/output error" "$T/ctl.out" && ok "FAILED event names the URI and the server's EIO" ||
	fail "failing destination: $(cat "$T/ctl.out")"
stop_pid "$ERR"
qio_nbd "$G" -c "write -P 0x61 60M 1M" -c "read -P 0x61 60M 1M"
ok "the guest goes on after the failed job"
stop_pid "$GUEST_SERVER"
qemu-img compare -q -f qcow2 -F raw "$D/g.qcow2" "$D/mem.raw" 2>/dev/null
# mem.raw is the copy at the abort; 60M was written after it.
qemu-io -f raw -c "read -P 0x52 51M 1M" "$D/mem.raw" 2>&1 | grep -q "Pattern verification failed" &&
	fail "aborted destination misses data" || ok "aborted destination holds the disk at the abort"
qemu-img check -q "$D/g.qcow2" || fail "qemu-img check of the served disk at the end"

finish

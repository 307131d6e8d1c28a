#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# A stand-in for two hosts: two network namespaces joined by a veth pair,
# each end delaying what it sends by 5 ms (tc netem: 10 ms round trip).
# qemu-nbd serves a qcow2 image over TCP in one; from the other,
# blockcopy copies a disk into it (nbd://10.77.0.1:PORT/) and copies the
# export back out. qemu-img compare checks both once the server stopped.
# A kernel without netem (CONFIG_NET_SCH_NETEM) gets the latency from the
# server instead: nbdkit's delay filter, 5 ms per request, in front of
# qemu-nbd (its nbd plugin), on the same TCP address; the script says so.
# Skips (77) where namespaces cannot be made (not root, no CAP_NET_ADMIN,
# no ip/tc), without qemu-img/qemu-nbd/nbdinfo (and nbdkit where netem is
# missing), or with a blockcopy built without libnbd. The namespaces are
# removed whatever happens.

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
require_qemu_img
for t in qemu-nbd nbdinfo ip tc; do
	command -v $t >/dev/null 2>&1 || { echo "$t not installed: skipping"; exit 77; }
done

NS_SRV=bcnbd$$s
NS_CLI=bcnbd$$c
VETH_SRV=bcv$$s
VETH_CLI=bcv$$c
SRV_IP=10.77.0.1
CLI_IP=10.77.0.2
PORT=10809
URI="nbd://$SRV_IP:$PORT/"
SERVER_PID=
PROXY_PID=

cleanup() {
	stop
	# Deleting a namespace deletes the veth end inside it, and its peer.
	ip netns del "$NS_SRV" 2>/dev/null
	ip netns del "$NS_CLI" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT

# skip_unless CMD...: run a setup step; skip (77) saying why if it fails.
skip_unless() {
	local out
	if ! out=$("$@" 2>&1); then
		echo "cannot set up the namespaces ($*: $out): skipping"
		exit 77
	fi
}

skip_unless ip netns add "$NS_SRV"
skip_unless ip netns add "$NS_CLI"
skip_unless ip link add "$VETH_SRV" type veth peer name "$VETH_CLI"
skip_unless ip link set "$VETH_SRV" netns "$NS_SRV"
skip_unless ip link set "$VETH_CLI" netns "$NS_CLI"
skip_unless ip -n "$NS_SRV" addr add "$SRV_IP/24" dev "$VETH_SRV"
skip_unless ip -n "$NS_CLI" addr add "$CLI_IP/24" dev "$VETH_CLI"
for ns in "$NS_SRV" "$NS_CLI"; do
	skip_unless ip -n "$ns" link set lo up
done
skip_unless ip -n "$NS_SRV" link set "$VETH_SRV" up
skip_unless ip -n "$NS_CLI" link set "$VETH_CLI" up
NETEM=1
if ! err=$(tc -n "$NS_SRV" qdisc add dev "$VETH_SRV" root netem delay 5ms 2>&1); then
	command -v nbdkit >/dev/null 2>&1 || {
		echo "no netem ($err) and no nbdkit to delay the server: skipping"
		exit 77
	}
	echo "no netem ($err): the server delays each request 5 ms instead (nbdkit delay filter in front of qemu-nbd)"
	NETEM=
else
	skip_unless tc -n "$NS_CLI" qdisc add dev "$VETH_CLI" root netem delay 5ms
fi

# in_cli CMD...: blockcopy in the client namespace, as bc() runs it.
in_cli() {
	RC=0
	timeout -k 2 "$BC_TIMEOUT" ip netns exec "$NS_CLI" "$BLOCKCOPY" "$@" \
		>"$T/out" 2>"$T/err" || RC=$?
	BC_CMD="ip netns exec $NS_CLI blockcopy $*"
}

# serve IMG [qemu-nbd options]: qemu-nbd in the server namespace on
# SRV_IP:PORT (without netem: on a unix socket, behind nbdkit's delay
# filter on SRV_IP:PORT), reachable from the client namespace, or die.
serve() {
	local img=$1 i sock=$T/qemu-nbd.sock
	shift
	if [ -n "$NETEM" ]; then
		ip netns exec "$NS_SRV" qemu-nbd -t -b "$SRV_IP" -p "$PORT" "$@" "$img" &
		SERVER_PID=$!
	else
		ip netns exec "$NS_SRV" qemu-nbd -t -k "$sock" "$@" "$img" &
		SERVER_PID=$!
		for i in $(seq 100); do
			[ -S "$sock" ] && break
			sleep 0.05
		done
		ip netns exec "$NS_SRV" nbdkit -f -i "$SRV_IP" -p "$PORT" \
			--filter=delay nbd socket="$sock" rdelay=5ms wdelay=5ms &
		PROXY_PID=$!
	fi
	for i in $(seq 100); do
		ip netns exec "$NS_CLI" nbdinfo --size "$URI" >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	die "qemu-nbd did not answer on $URI from $NS_CLI"
}

stop() {
	local p
	for p in $PROXY_PID $SERVER_PID; do
		kill "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	PROXY_PID=
	SERVER_PID=
}

if [ -n "$NETEM" ]; then
	tc -n "$NS_CLI" qdisc show dev "$VETH_CLI" | grep -q "netem.*delay 5ms" &&
		ok "netem delays the client's side of the link" ||
		fail "no netem delay on $VETH_CLI: $(tc -n "$NS_CLI" qdisc show dev "$VETH_CLI")"
fi

# Source: 32 MiB virtual, 6 MiB of data, a zero range and holes.
D=$T/img
mkdir -p "$D"
qimg create -q -f qcow2 "$D/src.qcow2" 32M
qio -f qcow2 -c "write -P 0xab 0 4M" -c "write -P 0xcd 17M 1M" \
    -c "write -z 20M 1M" -c "write -P 0xef 31M 1M" "$D/src.qcow2"
qimg create -q -f qcow2 "$D/dst.qcow2" 32M

serve "$D/dst.qcow2" -f qcow2
in_cli info "$URI"
if grep -q "built without libnbd" "$T/err"; then
	echo "blockcopy built without libnbd: skipping"
	exit 77
fi
assert_rc 0 "info of the export across the link"

start=$(date +%s%N)
in_cli copy --reuse-external "$D/src.qcow2" "$URI"
assert_rc 0 "copy into the export across the delayed link"
ms=$((($(date +%s%N) - start) / 1000000))
[ "$ms" -ge 10 ] && ok "the copy took $ms ms (at least one delayed round trip)" ||
	fail "the copy took $ms ms: less than one 10 ms round trip, nothing delays it"

# Read back across the link: the export as a copy source.
in_cli copy "$URI" "$D/back.raw"
assert_rc 0 "copy out of the export across the delayed link"
stop

qemu-img compare -q -f qcow2 -F qcow2 "$D/src.qcow2" "$D/dst.qcow2" &&
	ok "the served qcow2 holds the source" ||
	fail "the served qcow2 differs from the source"
qemu-img check -q "$D/dst.qcow2" || fail "qemu-img check of the served qcow2"
qemu-img compare -q -f qcow2 -F raw "$D/src.qcow2" "$D/back.raw" &&
	ok "the copy out of the export holds the source" ||
	fail "the copy out of the export differs from the source"

finish

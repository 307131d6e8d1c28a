#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Seed corpus for the fuzz harnesses, made at test time into OUTDIR:
# small valid images from qemu-img (every feature the parser reads, small
# clusters so that inputs stay a few KiB), overlays naming the harness's
# fixed backing ("backing.qcow2", see fuzz-chain.c), and the malformed
# corpus of tests/fixtures/make-malformed.py.
#   make-seeds.sh OUTDIR
# Needs qemu-img, qemu-io and python3; exits 77 without them.
set -eu
out=$1
src=$(cd "$(dirname "$0")/../.." && pwd)
for t in qemu-img qemu-io python3; do
	command -v "$t" >/dev/null || { echo "$t not installed: no seeds"; exit 77; }
done
# The harnesses run in parallel and share the seeds: one maker at a time.
mkdir -p "$(dirname "$out")"
exec 9>"$out.lock"
flock 9
[ -f "$out/.done" ] && exit 0
rm -rf "$out"
mkdir -p "$out"
w=$(mktemp -d "${TMPDIR:-/tmp}/bc-seeds.XXXXXX")
trap 'rm -rf "$w"' EXIT
cd "$w"

img() { # NAME OPTS SIZE [qemu-io commands...]
	local name=$1 opts=$2 size=$3
	shift 3
	qemu-img create -q -f qcow2 -o "$opts" "$name" "$size"
	local args=()
	for c in "$@"; do args+=(-c "$c"); done
	[ $# -eq 0 ] || qemu-io -f qcow2 "${args[@]}" "$name" >/dev/null
	cp "$name" "$out/$name"
}
img c512.qcow2 cluster_size=512 256k 'write -P 0x11 0 1k' 'write -z 8k 1k' 'write -P 0x12 200k 600'
img c4k.qcow2 cluster_size=4096 1M 'write -P 0x21 4k 8k' 'write -P 0x22 1000k 4k'
img v2.qcow2 cluster_size=512,compat=0.10 128k 'write -P 0x31 0 2k'
img refcount1.qcow2 cluster_size=512,refcount_bits=1 128k 'write -P 0x41 0 1k'
img refcount64.qcow2 cluster_size=512,refcount_bits=64 128k 'write -P 0x42 512 1k'
img extl2.qcow2 cluster_size=16384,extended_l2=on 256k 'write -P 0x51 0 2k' 'write -z 8k 2k'
img lazy.qcow2 cluster_size=512,lazy_refcounts=on 128k 'write -P 0x61 0 1k'
img empty.qcow2 cluster_size=512 64k
img bitmaps.qcow2 cluster_size=512 256k 'write -P 0x81 0 1k'
qemu-img bitmap --add bitmaps.qcow2 b0
qemu-img bitmap --add --granularity 4096 --disable bitmaps.qcow2 b1
qemu-io -f qcow2 -c 'write -P 0x82 64k 8k' bitmaps.qcow2 >/dev/null
cp bitmaps.qcow2 "$out/bitmaps.qcow2"
qemu-img create -q -f raw plain.raw 64k
qemu-img convert -c -O qcow2 -o cluster_size=4096 c4k.qcow2 "$out/compressed.qcow2"
# Overlays over the harness's backing: relative name, with and without
# a recorded format; a zero cluster hiding backing data.
qemu-img create -q -f qcow2 -o cluster_size=4096 backing.qcow2 1M
qemu-io -f qcow2 -c 'write -P 0x5a 0 8k' backing.qcow2 >/dev/null
img overlay.qcow2 cluster_size=512,backing_file=backing.qcow2,backing_fmt=qcow2 1M 'write -P 0x71 1k 1k' 'write -z 4k 512'
img overlay-raw.qcow2 cluster_size=512,backing_file=plain.raw,backing_fmt=raw 64k 'write -P 0x73 0 512'
python3 "$src/tests/fixtures/make-malformed.py" "$w/malformed" >/dev/null
for f in "$w"/malformed/*.qcow2; do cp "$f" "$out/malformed-$(basename "$f")"; done
touch "$out/.done"

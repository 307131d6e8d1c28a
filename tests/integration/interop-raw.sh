#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Raw images (sparse, odd-sized, fully allocated, empty) read identically
# in blockcopy and qemu-img: compare, map (holes via SEEK_HOLE) and info
# against qemu-img; compare across raw and qcow2.

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
require_qemu_img

D=$T/img
mkdir -p "$D"

# Sparse, written at unaligned offsets, with a hole in the middle and
# data at the very end.
truncate -s 3M "$D/sparse.raw"
qio -f raw -c "write -P 0x11 1000 5000" -c "write -P 0x22 65535 3" \
    -c "write -P 0x33 1048577 200000" -c "write -P 0x44 $((3145728 - 777)) 777" \
    "$D/sparse.raw"

# Made by qemu-img, explicit zeros written (allocated zeros are data).
qimg create -q -f raw "$D/created.raw" 2M
qio -f raw -c "write -P 0x00 0 8192" -c "write -P 0x55 100000 4097" -c "write -z 1048576 65536" "$D/created.raw"

# Odd sizes: one sector plus one byte, and a size no block divides.
head -c 513 /dev/zero | tr '\0' 'x' >"$D/odd-513.raw"
truncate -s 1000001 "$D/odd-1000001.raw"
qio -f raw -c "write -P 0x66 999000 1001" -c "write -P 0x67 4095 2" "$D/odd-1000001.raw"

# Fully allocated random data, and an empty file.
head -c 262144 /dev/urandom >"$D/full.raw"
: >"$D/empty.raw"
truncate -s 1M "$D/hole.raw"

for img in "$D"/*.raw; do
	sum=$(sha "$img")
	interop "$img" nocheck
	[ "$(sha "$img")" = "$sum" ] || fail "$(basename "$img") changed by read-only subcommands"
done

check_compare_differs "$D/sparse.raw" "$D/created.raw"
check_compare_differs "$D/odd-1000001.raw" "$D/hole.raw"
cp "$D/sparse.raw" "$D/sparse-b.raw"
qio -f raw -c "write -P 0xfe 2000001 1" "$D/sparse-b.raw"
check_compare_differs "$D/sparse.raw" "$D/sparse-b.raw"

# raw against qcow2 holding the same content, both ways, and a one-byte
# difference inside a qcow2 cluster.
qimg convert -f raw -O qcow2 -o cluster_size=4096 "$D/sparse.raw" "$D/sparse.qcow2"
bc compare "$D/sparse.raw" "$D/sparse.qcow2"
assert_rc 0 "compare sparse.raw sparse.qcow2"
bc compare "$D/sparse.qcow2" "$D/sparse.raw"
assert_rc 0 "compare sparse.qcow2 sparse.raw"
qio -c "write -P 0x12 1003 1" "$D/sparse.qcow2"
check_compare_differs "$D/sparse.qcow2" "$D/sparse.raw"

finish

#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# qcow2 images written by qemu-img/qemu-io read identically in blockcopy:
# compare against qemu-img's raw conversion, map/info/check against
# qemu-img's own answers. One fixture per feature of the interop matrix
# (docs/design.md §9); patterns sit at unaligned and cluster-straddling
# offsets so that an off-by-one in the mapping shows in the content.

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
require_qemu_img

D=$T/img
mkdir -p "$D"

# writes IMG CLUSTER SIZE: the common pattern set, relative to the
# cluster size (SIZE >= 10 clusters).
writes() {
	local img=$1 c=$2 vs=$3
	qio -c "write -P 0x11 1000 5000" \
	    -c "write -P 0x22 $((c - c / 4 - 3)) $((c / 2 + 7))" \
	    -c "write -P 0x33 $((3 * c + 1)) $((2 * c))" \
	    -c "write -z $((5 * c)) $c" \
	    -c "write -P 0x44 $((6 * c)) $c" \
	    -c "write -z $((6 * c + 100)) 300" \
	    -c "write -P 0x55 $((8 * c)) $((2 * c))" \
	    -c "discard $((8 * c)) $c" \
	    "$img"
	if [ "$vs" -ge 1200000 ]; then
		qio -c "write -P 0x66 $((1048576 + 3)) 70000" "$img"
	fi
	# The last bytes of the image, unaligned.
	qio -c "write -P 0x77 $((vs - 1234)) 1234" "$img"
}

jfield() {
	qemu-img info --output=json "$1" | sed -n "s/.*\"$2\": \([0-9]*\).*/\1/p"
}

# mk NAME SIZE OPTS: a qcow2 fixture with the pattern set.
mk() {
	local name=$1 size=$2 opts=$3
	qimg create -q -f qcow2 -o "$opts" "$D/$name" "$size"
	writes "$D/$name" "$(jfield "$D/$name" cluster-size)" "$(jfield "$D/$name" virtual-size)"
	echo "$D/$name"
}

fixtures=()
fixtures+=("$(mk v2-64k.qcow2 4M compat=0.10)")
fixtures+=("$(mk v3-512.qcow2 4M cluster_size=512)")
fixtures+=("$(mk v3-4k.qcow2 4M cluster_size=4096)")
fixtures+=("$(mk v3-64k.qcow2 4M cluster_size=65536)")
fixtures+=("$(mk v3-2m.qcow2 24M cluster_size=2M)")
fixtures+=("$(mk v2-512.qcow2 2M compat=0.10,cluster_size=512)")
fixtures+=("$(mk rc1.qcow2 4M cluster_size=4096,refcount_bits=1)")
fixtures+=("$(mk rc64.qcow2 4M refcount_bits=64)")
fixtures+=("$(mk extl2-64k.qcow2 4M extended_l2=on,cluster_size=65536)")
fixtures+=("$(mk extl2-16k.qcow2 4M extended_l2=on,cluster_size=16384)")
fixtures+=("$(mk lazy.qcow2 4M lazy_refcounts=on)")
fixtures+=("$(mk prealloc-metadata.qcow2 2M preallocation=metadata)")
fixtures+=("$(mk prealloc-falloc.qcow2 2M preallocation=falloc,cluster_size=4096)")
fixtures+=("$(mk prealloc-full.qcow2 2M preallocation=full)")
fixtures+=("$(mk odd-1000000.qcow2 1000000 cluster_size=4096)")

# Extended L2 with subclusters partly written, zeroed and discarded
# inside one cluster (64 KiB cluster = 32 x 2 KiB subclusters).
qimg create -q -f qcow2 -o extended_l2=on,cluster_size=65536 "$D/extl2-sub.qcow2" 1M
qio -c "write -P 0x31 3000 2000" -c "write -z 8192 2048" \
    -c "write -P 0x32 12288 6144" -c "discard 14336 2048" \
    -c "write -P 0x33 $((65536 + 65536 - 1)) 2" -c "write -z 262144 65536" \
    "$D/extl2-sub.qcow2"
fixtures+=("$D/extl2-sub.qcow2")

# Smallest qcow2 qemu-img makes: 513 bytes round up to 2 sectors.
qimg create -q -f qcow2 "$D/odd-513.qcow2" 513
qio -c "write -P 0x5a 1 1022" "$D/odd-513.qcow2"
fixtures+=("$D/odd-513.qcow2")

# Compressed clusters (zlib), several cluster sizes, v2 and v3.
qimg convert -c -O qcow2 "$D/v3-64k.qcow2" "$D/compressed-64k.qcow2"
qimg convert -c -O qcow2 -o cluster_size=4096 "$D/v3-4k.qcow2" "$D/compressed-4k.qcow2"
qimg convert -c -O qcow2 -o compat=0.10,cluster_size=512 "$D/v3-512.qcow2" "$D/compressed-v2-512.qcow2"
# Compressed then partly overwritten: compressed and normal clusters mixed.
cp "$D/compressed-64k.qcow2" "$D/compressed-mixed.qcow2"
qio -c "write -P 0x88 70000 1000" -c "write -z 0 65536" "$D/compressed-mixed.qcow2"
fixtures+=("$D/compressed-64k.qcow2" "$D/compressed-4k.qcow2" \
	   "$D/compressed-v2-512.qcow2" "$D/compressed-mixed.qcow2")

# Lazy refcounts left dirty: qemu-io aborts after writing, before the
# refcounts are written back. qemu-img check reports the stale refcounts
# (it opens read-only and does not repair), so check must agree.
qimg create -q -f qcow2 -o lazy_refcounts=on,cluster_size=4096 "$D/lazy-dirty.qcow2" 2M
bash -c "qemu-io -c 'write -P 0x99 5000 100000' -c 'write -z 300000 8192' -c abort '$D/lazy-dirty.qcow2'; true" >/dev/null 2>&1
qemu-img info --output=json "$D/lazy-dirty.qcow2" | grep -q '"dirty-flag": true' ||
	die "lazy-dirty.qcow2 is not dirty"
fixtures+=("$D/lazy-dirty.qcow2")

# An empty image and a fully written one.
qimg create -q -f qcow2 "$D/empty.qcow2" 3M
fixtures+=("$D/empty.qcow2")
qimg create -q -f qcow2 -o cluster_size=4096 "$D/full.qcow2" 1M
qio -c "write -P 0xab 0 1M" "$D/full.qcow2"
fixtures+=("$D/full.qcow2")

for img in "${fixtures[@]}"; do
	[ -f "$img" ] || die "fixture $img was not built"
	sum=$(sha "$img")
	interop "$img"
	[ "$(sha "$img")" = "$sum" ] || fail "$(basename "$img") changed by read-only subcommands"
done

# The dirty image must read as qemu-img reads it, but it must stay dirty
# (no subcommand here writes to a source image).
qemu-img info --output=json "$D/lazy-dirty.qcow2" | grep -q '"dirty-flag": true' ||
	fail "lazy-dirty.qcow2 lost its dirty bit"

# Different content: compare exits 1 and names the first differing byte.
cp "$D/v3-4k.qcow2" "$D/v3-4k-b.qcow2"
qio -c "write -P 0xee 123457 1" "$D/v3-4k-b.qcow2"
check_compare_differs "$D/v3-4k.qcow2" "$D/v3-4k-b.qcow2"
# A difference inside a compressed cluster.
cp "$D/compressed-64k.qcow2" "$D/compressed-64k-b.qcow2"
qio -c "write -P 0x00 200001 3" "$D/compressed-64k-b.qcow2"
check_compare_differs "$D/compressed-64k-b.qcow2" "$D/compressed-64k.qcow2"
# Zero cluster against data of zeros vs data: fixtures with other
# cluster sizes differ where the patterns differ.
check_compare_differs "$D/v3-4k.qcow2" "$D/v3-64k.qcow2"
check_compare_differs "$D/extl2-sub.qcow2" "$D/extl2-64k.qcow2"
# Same content in different layouts compares equal.
bc compare "$D/v3-64k.qcow2" "$D/compressed-64k.qcow2"
assert_rc 0 "compare v3-64k.qcow2 with its compressed copy"
bc compare "$D/v3-4k.qcow2" "$D/rc1.qcow2"
assert_rc 0 "compare v3-4k.qcow2 with rc1.qcow2 (same writes)"

finish

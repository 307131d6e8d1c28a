#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Backing chains three deep, written by qemu-img/qemu-io: relative and
# absolute backing names, opened from another working directory; a raw
# base; extended-L2 and compressed layers; a v2 overlay; an overlay that
# records no backing format (probed). Each top is checked with compare,
# map (depths), info and info --backing-chain against qemu-img.

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
require_qemu_img

C=$T/chain
mkdir -p "$C" "$T/elsewhere"

# base (2 MiB, 4 KiB clusters) <- mid (3 MiB, relative name) <- top
# (4 MiB, absolute name): reads past a backing file's end are zeros.
qimg create -q -f qcow2 -o cluster_size=4096 "$C/base.qcow2" 2M
qio -c "write -P 0x01 0 1M" -c "write -P 0x02 1500001 300000" "$C/base.qcow2"
(cd "$C" && qimg create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2 3M)
qio -c "write -P 0x12 100001 70000" -c "write -z 400000 100000" \
    -c "write -P 0x13 2097000 2000" -c "discard 1048576 65536" "$C/mid.qcow2"
qimg create -q -f qcow2 -b "$C/mid.qcow2" -F qcow2 -o cluster_size=65536 "$C/top.qcow2" 4M
qio -c "write -z 0 65536" -c "write -P 0x23 65537 10" -c "write -P 0x24 2500000 10" \
    -c "discard 131072 65536" -c "write -P 0x25 $((4194304 - 5)) 5" "$C/top.qcow2"

# Extended L2 overlay: subclusters not written read from the backing.
qimg create -q -f qcow2 -b base.qcow2 -F qcow2 -o extended_l2=on,cluster_size=65536 "$C/extl2-top.qcow2"
qio -c "write -P 0x31 3000 2000" -c "write -z 70000 4000" -c "write -P 0x32 1500000 1" "$C/extl2-top.qcow2"

# Compressed base under a v2 overlay (no zero flag in v2: write -z
# allocates zeros as data).
qimg convert -c -O qcow2 -o cluster_size=4096 "$C/base.qcow2" "$C/cbase.qcow2"
qimg create -q -f qcow2 -b cbase.qcow2 -F qcow2 -o compat=0.10 "$C/v2-top.qcow2"
qio -c "write -P 0x41 4095 2" -c "write -z 200000 5000" "$C/v2-top.qcow2"

# Raw base (declared raw) under a qcow2 overlay, relative name.
truncate -s 1M "$C/base.raw"
qio -f raw -c "write -P 0x51 0 4097" -c "write -P 0x52 500000 1000" "$C/base.raw"
qimg create -q -f qcow2 -b base.raw -F raw -o cluster_size=4096 "$C/rawbase-top.qcow2" 1M
qio -c "write -P 0x53 2048 4096" "$C/rawbase-top.qcow2"

# An old overlay that records no backing format: the backing is probed.
# qemu-img 7.2 insists on -F: rename the backing-format header extension
# to an unknown type, which readers skip.
qimg create -q -f qcow2 -b base.qcow2 -F qcow2 "$C/nofmt-top.qcow2" 2M
python3 - "$C/nofmt-top.qcow2" <<'PY' || die "patching nofmt-top.qcow2"
import struct, sys
with open(sys.argv[1], "r+b") as f:
    hdr = f.read(4096)
    i = hdr.index(struct.pack(">I", 0xe2792aca), 104)
    f.seek(i)
    f.write(struct.pack(">I", 0x0badf00d))
PY
qio -c "write -P 0x61 1 1" "$C/nofmt-top.qcow2"

tops=(top.qcow2 mid.qcow2 extl2-top.qcow2 v2-top.qcow2 rawbase-top.qcow2 nofmt-top.qcow2)
declare -A sums
for f in "$C"/*; do sums[$f]=$(sha "$f"); done

for t in "${tops[@]}"; do
	interop "$C/$t"
	check_info "$C/$t" --backing-chain
done

# Opened from another directory, by a relative path: relative backing
# names resolve against the image's directory, not the CWD.
cd "$T/elsewhere" || die "cd"
for t in top.qcow2 rawbase-top.qcow2; do
	ref_raw "$C/$t" "$T/$t.ref"
	bc compare "../chain/$t" "$T/$t.ref"
	assert_rc 0 "compare ../chain/$t from another directory"
	check_map "../chain/$t"
	check_info "../chain/$t" --backing-chain
	rm -f "$T/$t.ref"
done
# A file in the CWD named like the relative backing must not be used.
qimg create -q -f qcow2 base.qcow2 2M
qio -c "write -P 0xee 0 2M" base.qcow2
ref_raw "$C/mid.qcow2" "$T/mid.ref"
bc compare "$C/mid.qcow2" "$T/mid.ref"
assert_rc 0 "compare mid.qcow2 with a decoy base.qcow2 in the CWD"
cd / || die "cd"

# Differences found through the chain, at the right offset.
check_compare_differs "$C/top.qcow2" "$C/mid.qcow2"
check_compare_differs "$C/extl2-top.qcow2" "$C/base.qcow2"
check_compare_differs "$C/v2-top.qcow2" "$C/cbase.qcow2"
bc compare "$C/cbase.qcow2" "$C/base.qcow2"
assert_rc 0 "compare compressed base with base"

for f in "${!sums[@]}"; do
	[ "$(sha "$f")" = "${sums[$f]}" ] || fail "$(basename "$f") changed by read-only subcommands"
done

finish

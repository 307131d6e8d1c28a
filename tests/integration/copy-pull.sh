#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# blockcopy copy / pull judged by qemu-img: full and shallow copies of
# qcow2 chains and raw images, destination backing file and format,
# REUSE_EXT keeping a relative backing name, refusal of an existing
# destination leaving it byte-identical, qemu-img check clean, sparseness
# kept (qemu-img map), pull with and without base.
. "$(dirname "$0")/lib.sh"
require_qemu_img

cd "$T" || die "cd $T"
mkdir sub
# Chain base <- mid <- top, 32 MiB virtual, data at every depth, a zero
# cluster in top hiding base data, relative backing names.
qimg create -q -f qcow2 -o cluster_size=65536 base.qcow2 32M
qio -c 'write -P 0x11 0 6M' -c 'write -P 0x12 20M 1M' -c 'write -P 0x13 31M 1M' base.qcow2
qimg create -q -f qcow2 -b base.qcow2 -F qcow2 sub/../mid.qcow2
qio -c 'write -P 0x21 4M 4M' -c 'write -P 0x22 100000 5000' mid.qcow2
qimg create -q -f qcow2 -o cluster_size=4096 -b mid.qcow2 -F qcow2 top.qcow2
qio -c 'write -P 0x31 7M 2M' -c 'write -z 20M 512k' -c 'write -P 0x32 12345 777' top.qcow2
ref_raw top.qcow2 ref.raw

same_content() { # IMG DESC
	if qemu-img compare -q -F raw "$1" ref.raw; then ok "$2"; else fail "$2: content differs from the source"; fi
}
check_clean() { # IMG
	if qemu-img check -q "$1" >/dev/null 2>&1; then ok "qemu-img check $1"; else fail "qemu-img check $1: $(qemu-img check "$1" 2>&1 | tail -3)"; fi
}
info_field() { # IMG KEY
	qemu-img info --output=json "$1" | python3 -c "import json,sys; v=json.load(sys.stdin).get('$2'); print('' if v is None else v)"
}
allocated() { # IMG: bytes of data qemu-img map reports for the top layer
	qemu-img map --output=json "$1" | python3 -c "import json,sys; print(sum(e['length'] for e in json.load(sys.stdin) if e['data'] and e['depth']==0))"
}

# --- full copy, qcow2 ---------------------------------------------------
bc copy -q top.qcow2 full.qcow2
assert_rc 0 "full copy"
same_content full.qcow2 "full copy content"
check_clean full.qcow2
[ -z "$(info_field full.qcow2 backing-filename)" ] && ok "full copy has no backing" || fail "full copy has a backing file"
[ "$(info_field full.qcow2 cluster-size)" = 4096 ] && ok "full copy keeps the top's cluster size" || fail "cluster size $(info_field full.qcow2 cluster-size), want 4096"
# Sparseness: data allocated close to the data there is (~14 MiB here).
a=$(allocated full.qcow2)
if [ "$a" -le $((16 * 1024 * 1024)) ]; then ok "full copy stays sparse ($a bytes of data)"; else fail "full copy allocates $a bytes of data"; fi

# --- shallow copy --------------------------------------------------------
bc copy -q --shallow top.qcow2 shallow.qcow2
assert_rc 0 "shallow copy"
same_content shallow.qcow2 "shallow copy content"
check_clean shallow.qcow2
[ "$(info_field shallow.qcow2 backing-filename)" = "$T/mid.qcow2" ] && ok "shallow backing is the absolute source backing" || fail "shallow backing '$(info_field shallow.qcow2 backing-filename)'"
[ "$(info_field shallow.qcow2 backing-filename-format)" = qcow2 ] && ok "shallow backing format recorded" || fail "shallow backing format '$(info_field shallow.qcow2 backing-filename-format)'"
a=$(allocated shallow.qcow2)
if [ "$a" -le $((3 * 1024 * 1024)) ]; then ok "shallow copy holds only the top's data ($a)"; else fail "shallow copy allocates $a bytes"; fi

# --- raw destination and raw source --------------------------------------
bc copy -q --raw top.qcow2 full.raw
assert_rc 0 "copy to raw"
same_content full.raw "raw copy content"
[ "$(info_field full.raw format)" = raw ] && ok "raw destination" || fail "destination format $(info_field full.raw format)"
qimg create -q -f raw src.raw 16M
qio -f raw -c 'write -P 0x44 1M 3M' -c 'write -P 0x45 15M 4k' src.raw
bc copy -q --direct src.raw copy.raw
assert_rc 0 "raw to raw copy with --direct"
if qemu-img compare -q -f raw -F raw src.raw copy.raw; then ok "raw copy content"; else fail "raw copy differs"; fi
used=$(du -k copy.raw | cut -f1)
[ "$used" -le 5000 ] && ok "raw copy sparse (${used} KiB)" || fail "raw copy uses ${used} KiB"

# --- existing destination: refused, untouched ----------------------------
printf 'not an image, keep me\n' > keep.qcow2
before=$(sha keep.qcow2)
bc copy top.qcow2 keep.qcow2
assert_rc 1 "copy onto an existing file"
[ "$(wc -l < "$T/err")" -eq 1 ] && grep -q "keep.qcow2" "$T/err" && ok "one-line error naming the file" || fail "error output: $(bc_said)"
[ "$(sha keep.qcow2)" = "$before" ] && ok "existing destination untouched" || fail "existing destination was modified"

# --- REUSE_EXT keeps a relative backing name -----------------------------
qimg create -q -f qcow2 -o cluster_size=4096 -b mid.qcow2 -F qcow2 reuse.qcow2
bc copy -q --shallow --reuse-external top.qcow2 reuse.qcow2
assert_rc 0 "shallow copy into a pre-created destination"
[ "$(info_field reuse.qcow2 backing-filename)" = mid.qcow2 ] && ok "REUSE_EXT keeps the relative backing name" || fail "backing became '$(info_field reuse.qcow2 backing-filename)'"
same_content reuse.qcow2 "REUSE_EXT content"
check_clean reuse.qcow2
bc copy --reuse-external top.qcow2 missing.qcow2
assert_rc 1 "REUSE_EXT without a destination"
[ ! -e missing.qcow2 ] && ok "nothing created" || fail "missing.qcow2 was created"

# --- the source is never written -----------------------------------------
s1=$(sha top.qcow2); s2=$(sha mid.qcow2); s3=$(sha base.qcow2)
bc copy -q top.qcow2 again.qcow2
assert_rc 0 "second full copy"
[ "$(sha top.qcow2)$(sha mid.qcow2)$(sha base.qcow2)" = "$s1$s2$s3" ] && ok "copy leaves the source chain byte-identical" || fail "copy modified the source chain"

# --- pull ----------------------------------------------------------------
cp base.qcow2 pbase.qcow2
qimg create -q -f qcow2 -b pbase.qcow2 -F qcow2 pmid.qcow2
qio -c 'write -P 0x61 2M 1M' pmid.qcow2
qimg create -q -f qcow2 -b pmid.qcow2 -F qcow2 ptop.qcow2
qio -c 'write -P 0x71 2M 64k' ptop.qcow2
ref_raw ptop.qcow2 pref.raw
bc pull -q --base pbase.qcow2 ptop.qcow2
assert_rc 0 "pull to base"
[ "$(info_field ptop.qcow2 backing-filename)" = "$T/pbase.qcow2" ] && ok "pull records base" || fail "backing after pull '$(info_field ptop.qcow2 backing-filename)'"
if qemu-img compare -q -F raw ptop.qcow2 pref.raw; then ok "pull to base content"; else fail "pull to base changed content"; fi
check_clean ptop.qcow2
bc pull -q ptop.qcow2
assert_rc 0 "pull everything"
[ -z "$(info_field ptop.qcow2 backing-filename)" ] && ok "full pull drops the backing" || fail "backing after full pull '$(info_field ptop.qcow2 backing-filename)'"
if qemu-img compare -q -F raw ptop.qcow2 pref.raw; then ok "full pull content"; else fail "full pull changed content"; fi
check_clean ptop.qcow2
bc pull --base top.qcow2 ptop.qcow2
assert_rc 1 "pull with a base outside the chain"

finish

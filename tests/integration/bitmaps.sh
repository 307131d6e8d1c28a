#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# blockcopy bitmap and qcow2 persistent bitmaps, judged by qemu-img (and
# qemu-nbd + nbdinfo for the bits): the verbs give what qemu-img bitmap
# gives, `info` shows bitmaps as qemu-img info does, a copy into an image
# with bitmaps keeps them consistent and records what it wrote, and bad
# usage and bad requests get one line and the right exit status.
. "$(dirname "$0")/lib.sh"
require_qemu_img

cd "$T" || die "cd $T"
BC=$BLOCKCOPY

bitmaps() { # IMG -> name:flags:granularity;...
	qemu-img info --output=json "$1" | python3 -c '
import json, sys
d = json.load(sys.stdin)["format-specific"]["data"]
print(";".join("%s:%s:%d" % (b["name"], "+".join(b["flags"]), b["granularity"]) for b in d.get("bitmaps", [])))'
}
expect() { # DESC WANT GOT
	if [ "$2" = "$3" ]; then ok "$1"; else fail "$1: want '$2', got '$3'"; fi
}
check_clean() {
	if qemu-img check -q "$1" >/dev/null 2>&1; then ok "qemu-img check $1"; else fail "qemu-img check $1: $(qemu-img check "$1" 2>&1 | tail -3)"; fi
}
run() { # WANT_RC DESC CMD... ; sets OUT ERR
	local want=$1 desc=$2; shift 2
	OUT=$("$@" 2>"$T/err"); local rc=$?
	ERR=$(cat "$T/err")
	expect "$desc: exit status" "$want" "$rc"
}

# The verbs, side by side with qemu-img bitmap on twin images.
qimg create -q -f qcow2 ours.qcow2 64M
qimg create -q -f qcow2 theirs.qcow2 64M
for args in "--add a" "--add -g 128K b" "--add --disable c" "--disable a" \
	    "--enable c" "--merge a b" "--clear c" "--remove b"; do
	set -- $args
	name=${!#}
	opts=("${@:1:$#-1}")
	run 0 "bitmap ${opts[*]} $name" timeout "$BC_TIMEOUT" "$BC" bitmap "${opts[@]}" ours.qcow2 "$name"
	qemu-img bitmap "${opts[@]}" theirs.qcow2 "$name" || die "qemu-img bitmap $args"
	expect "after ${opts[*]} $name: same bitmaps as qemu-img" "$(bitmaps theirs.qcow2)" "$(bitmaps ours.qcow2)"
	check_clean ours.qcow2
done
expect "info shows bitmaps as qemu-img info" "$(qemu-img info ours.qcow2 | sed -n '/^Format specific/,$p')" \
	"$("$BC" info ours.qcow2 | sed -n '/^Format specific/,$p')"
expect "info --json bitmaps as qemu-img" \
	"$(qemu-img info --output=json ours.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["format-specific"]["data"]["bitmaps"])')" \
	"$("$BC" info --json ours.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["format-specific"]["data"]["bitmaps"])')"

# Errors: one line naming the file, exit 1; bad usage exit 2.
run 1 "add an existing bitmap" "$BC" bitmap --add ours.qcow2 a
expect "existing bitmap message" "blockcopy: ours.qcow2: bitmap 'a' already exists" "$ERR"
run 1 "remove a missing bitmap" "$BC" bitmap --remove ours.qcow2 nope
expect "missing bitmap message" "blockcopy: ours.qcow2: bitmap 'nope' not found" "$ERR"
run 1 "bad granularity" "$BC" bitmap --add -g 3000 ours.qcow2 z
expect "bad granularity message" "blockcopy: ours.qcow2: bitmap 'z': granularity must be a power of two from 512 bytes to 2 GiB" "$ERR"
run 2 "no operation" "$BC" bitmap ours.qcow2 a
run 2 "-g without --add" "$BC" bitmap --clear -g 64K ours.qcow2 a
run 2 "one argument" "$BC" bitmap --add ours.qcow2
qimg create -q -f raw r.raw 1M
run 1 "bitmap on raw" "$BC" bitmap --add r.raw a
expect "raw message" "blockcopy: r.raw: format 'raw' does not support persistent bitmaps" "$ERR"
qimg create -q -f qcow2 -o compat=0.10 v2.qcow2 1M
run 1 "bitmap on qcow2 v2" "$BC" bitmap --add v2.qcow2 a
expect "v2 message" "blockcopy: v2.qcow2: persistent bitmaps need a qcow2 version 3 image (compat 1.1)" "$ERR"
expect "failed verbs changed nothing" "$(bitmaps theirs.qcow2)" "$(bitmaps ours.qcow2)"

# A pull into an image whose bitmaps qemu-img made: they stay consistent,
# the enabled one records exactly what the pull wrote (and keeps what
# QEMU recorded before), the disabled one nothing. The tool has closed
# the image when it exits (bitmaps stored, not left in use).
qimg create -q -f qcow2 base.qcow2 64M
qio -c 'write -P 0x41 1M 64k' -c 'write -P 0x42 40M 128k' base.qcow2
qimg create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
qimg bitmap --add top.qcow2 track
qimg bitmap --add --disable top.qcow2 frozen
qio -c 'write -P 0x43 8M 4k' top.qcow2
run 0 "pull into an image with bitmaps" timeout 60 "$BC" pull top.qcow2
check_clean top.qcow2
expect "bitmaps kept after the pull" "track:auto:65536;frozen::65536" "$(bitmaps top.qcow2)"
if command -v qemu-nbd >/dev/null && command -v nbdinfo >/dev/null; then
	dirty() { # IMG BITMAP -> dirty extents as start+len,...
		qemu-nbd -r -f qcow2 -B "$2" --socket="$T/nbd.sock" --persistent "$1" &
		local pid=$!
		for _ in $(seq 50); do [ -S "$T/nbd.sock" ] && break; sleep 0.1; done
		nbdinfo --map="qemu:dirty-bitmap:$2" "nbd+unix:///?socket=$T/nbd.sock" |
			awk '$4 == "dirty" {printf "%s%s+%s", sep, $1, $2; sep=","}'
		kill $pid; wait $pid 2>/dev/null; rm -f "$T/nbd.sock"
	}
	expect "QEMU reads the bits the pull set" "1048576+65536,8388608+65536,41943040+131072" "$(dirty top.qcow2 track)"
	expect "the disabled bitmap recorded nothing" "" "$(dirty top.qcow2 frozen)"
else
	echo "qemu-nbd or nbdinfo missing: bits not cross-checked with QEMU"
fi

# A copy into an image with bitmaps (a reused destination) keeps them.
qimg create -q -f qcow2 dst.qcow2 64M
qimg bitmap --add dst.qcow2 track
run 0 "copy --reuse-external into an image with bitmaps" timeout 60 "$BC" copy --quiet --reuse-external top.qcow2 dst.qcow2
check_clean dst.qcow2
expect "bitmap kept and not left in use after the copy" "track:auto:65536" "$(bitmaps dst.qcow2)"
# Incremental copy: a full copy, then QEMU writes to the source (its
# enabled bitmap records them), then `copy --bitmap` into the previous copy
# makes it equal again, writing only the recorded ranges.
qimg create -q -f qcow2 vm.qcow2 64M
qio -c 'write -P 0x51 0 8M' -c 'write -P 0x52 30M 2M' vm.qcow2
run 0 "bitmap --add on the source" "$BC" bitmap --add vm.qcow2 inc
run 0 "full copy" timeout 60 "$BC" copy --quiet vm.qcow2 backup.qcow2
qio -c 'write -P 0x53 2M 64k' -c 'write -z 31M 64k' -c 'write -P 0x54 50M 128k' vm.qcow2
run 0 "incremental copy into the previous copy" timeout 60 "$BC" copy --json --reuse-external --bitmap inc vm.qcow2 backup.qcow2
if qemu-img compare -q vm.qcow2 backup.qcow2; then ok "incremental copy equals the source"; else fail "incremental copy differs from the source"; fi
copied=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["bytes"])' "$OUT" 2>/dev/null)
expect "incremental copy took only the 4 recorded granules (256 KiB, job counter)" 262144 "$copied"
check_clean backup.qcow2
run 0 "incremental copy into a fresh image" timeout 60 "$BC" copy --quiet --bitmap inc vm.qcow2 inc.qcow2
expect "a fresh incremental copy holds only the recorded data" "2097152+65536,52428800+131072" \
	"$(qemu-img map --output=json inc.qcow2 | python3 -c 'import json,sys; print(",".join("%d+%d" % (e["start"], e["length"]) for e in json.load(sys.stdin) if e["data"]))')"
run 1 "--bitmap with a missing bitmap" "$BC" copy --bitmap nope vm.qcow2 nothing.qcow2
expect "missing bitmap message" "blockcopy: vm.qcow2: bitmap 'nope' not found" "$ERR"
expect "no destination left behind" "" "$(ls nothing.qcow2 2>/dev/null)"
run 1 "--bitmap on a raw source" "$BC" copy --bitmap inc r.raw nothing.raw
expect "raw source message" "blockcopy: r.raw: format 'raw' does not support persistent bitmaps" "$ERR"
finish

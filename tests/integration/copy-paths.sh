#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# blockcopy copy's data paths (engine/copy-method.c): the path the engine
# chooses by default, each path forced by an option, the "method" that
# --json reports for each, the content judged by qemu-img compare, the
# refusals (reflink always where the filesystem cannot share extents,
# copy_file_range on a qcow2 source, clashing options), and on every path
# the bandwidth limit (the copy takes at least data / limit) and
# cancellation (SIGINT: exit 1, the destination it created is removed).
# Pull takes its path from copy-method.c too: the method it reports, its
# content against a reference taken before the pull (qemu-img compare),
# qemu-img check, the backing pointer after it, and its bandwidth limit.
. "$(dirname "$0")/lib.sh"
require_qemu_img

cd "$T" || die "cd $T"

# What this filesystem can do decides what the engine may choose.
if python3 -c 'import os; os.close(os.open("probe", os.O_CREAT | os.O_RDWR | os.O_DIRECT))' 2>/dev/null; then
	DEFAULT=direct
else
	DEFAULT=buffered+write-behind
fi
rm -f probe
FSTYPE=$(stat -f -c %T .)

# 24 MiB raw: 10 MiB of data in three runs, holes between (sparse), an
# odd tail; and a qcow2 chain holding the same kind of data at two depths.
qimg create -q -f raw src.raw 24M
qio -f raw -c 'write -P 0x5a 0 4M' -c 'write -P 0xa5 9M 5M' -c 'write -P 0x3c 23M 1M' src.raw
qimg create -q -f qcow2 base.qcow2 24M
qio -c 'write -P 0x11 0 6M' -c 'write -P 0x12 16M 2M' base.qcow2
qimg create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
qio -c 'write -P 0x21 4M 4M' -c 'write -z 16M 1M' top.qcow2

method_of() { # the "method" of the JSON that the last bc printed
	python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["method"])' "$T/out" 2>/dev/null
}
seconds_of() {
	python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["seconds"])' "$T/out" 2>/dev/null
}
took_within() { # MIN MAX DESC: the "seconds" of the last JSON in [MIN, MAX]
	local s
	s=$(seconds_of)
	if python3 -c "import sys; sys.exit(0 if $1 <= float('$s') <= $2 else 1)"; then
		ok "$3 took $s s"
	else
		fail "$3 took $s s (want $1..$2)"
	fi
}
same_as() { # DST SRC DESC
	if qemu-img compare -q "$2" "$1" 2>/dev/null; then ok "$3"; else fail "$3: $1 differs from $2"; fi
}

# copy_with WANT_METHOD SRC DST [OPTIONS...]: copy, check the method and the content.
copy_with() {
	local want=$1 src=$2 dst=$3
	shift 3
	rm -f "$dst"
	bc copy --json "$@" "$src" "$dst"
	assert_rc 0 "copy $* $src" || return
	local got
	got=$(method_of)
	[ "$got" = "$want" ] && ok "copy $* $src: method $got" ||
		fail "copy $* $src: method '$got', want '$want'; $(bc_said)"
	same_as "$dst" "$src" "copy $* $src: content"
}

# --- each path, chosen and forced --------------------------------------------
copy_with "$DEFAULT" src.raw d.raw
copy_with "$DEFAULT" top.qcow2 d.qcow2
[ "$(qemu-img check -q d.qcow2 2>&1)" = "" ] && ok "default qcow2 copy checks clean" || fail "qemu-img check d.qcow2"
copy_with buffered+write-behind src.raw d.raw --buffered
copy_with buffered+write-behind top.qcow2 d.qcow2 --buffered
copy_with buffered+write-behind top.qcow2 d.raw --buffered --granularity 4K
if [ "$DEFAULT" = direct ]; then
	copy_with direct src.raw d.raw --direct
	copy_with direct top.qcow2 d.qcow2 --direct
fi
# reflink never is the default: a copy never shares its source's blocks unasked.
copy_with "$DEFAULT" src.raw d.raw --reflink=never

case $FSTYPE in
ext2/ext3)
	# ext4 cannot share extents: copy_file_range copies, never clones.
	copy_with copy_file_range src.raw d.raw --copy-file-range
	copy_with "$DEFAULT" src.raw d.raw --reflink=auto
	rm -f d.raw
	bc copy --reflink=always src.raw d.raw
	assert_rc 1 "reflink=always on ext4 fails"
	grep -q "cannot reflink 'src.raw' to 'd.raw': ext4 cannot share extents between files" "$T/err" &&
		ok "reflink=always names the files and the reason" ||
		fail "reflink=always message: $(bc_said)"
	[ ! -e d.raw ] && ok "reflink=always failure leaves no destination" || fail "d.raw left behind"
	bc copy --reflink src.raw d.raw
	assert_rc 1 "bare --reflink means always"
	;;
xfs|btrfs)
	copy_with reflink src.raw d.raw --reflink=auto
	copy_with reflink src.raw d.raw --reflink=always
	bc copy --copy-file-range src.raw d.raw
	assert_rc 1 "copy_file_range with reflink never refused where the kernel would share"
	;;
*)
	echo "filesystem $FSTYPE: reflink and copy_file_range cases skipped"
	;;
esac

# --- refusals ------------------------------------------------------------------
rm -f d.raw d.qcow2
bc copy --copy-file-range top.qcow2 d.qcow2
assert_rc 1 "copy_file_range from qcow2 refused"
grep -q "cannot use copy_file_range from 'top.qcow2' to 'd.qcow2': it needs a raw source" "$T/err" &&
	ok "copy_file_range refusal names the reason" || fail "copy_file_range message: $(bc_said)"
[ ! -e d.qcow2 ] && ok "refused copy leaves no destination" || fail "d.qcow2 left behind"
bc copy --reflink=always top.qcow2 d.qcow2
assert_rc 1 "reflink=always from qcow2 refused"
grep -q "reflink needs a raw source" "$T/err" && ok "reflink refusal names the reason" || fail "reflink message: $(bc_said)"
bc copy --reflink=sometimes src.raw d.raw
assert_rc 2 "--reflink=sometimes is bad usage"
grep -q "invalid --reflink 'sometimes'" "$T/err" && ok "bad --reflink named" || fail "bad --reflink message: $(bc_said)"
bc copy --direct --buffered src.raw d.raw
assert_rc 2 "--direct with --buffered is bad usage"
bc copy --buffered --copy-file-range src.raw d.raw
assert_rc 2 "--buffered with --copy-file-range is bad usage"
bc copy --raw --buffered top.qcow2 d.raw
assert_rc 2 "--raw with --buffered is bad usage"
bc copy --help
grep -q "the engine chooses: O_DIRECT" "$T/out" && ok "--help says what the engine chooses" || fail "--help: $(bc_said)"

# --- throttle and cancellation on each path --------------------------------------
PATHS=("" --buffered)
[ "$DEFAULT" = direct ] && PATHS+=(--direct)
[ "$FSTYPE" = ext2/ext3 ] && PATHS+=(--copy-file-range)
for p in "${PATHS[@]}"; do
	name=${p:-default}
	# 10 MiB of data at 5 MiB/s: about 2 s, never much less.
	rm -f d.raw
	bc copy --json --bandwidth 5M $p src.raw d.raw
	assert_rc 0 "$name: throttled copy"
	took_within 1.7 6 "$name: 10 MiB at 5 MiB/s"
	same_as d.raw src.raw "$name: throttled copy content"

	# Cancel half way: SIGINT at ~1 s of a ~5 s copy.
	rm -f d.raw
	RC=0
	timeout -k 2 "$BC_TIMEOUT" "$BLOCKCOPY" copy --bandwidth 2M $p src.raw d.raw >"$T/out" 2>"$T/err" &
	pid=$!
	sleep 1
	kill -INT "$pid"
	wait "$pid" || RC=$?
	BC_CMD="blockcopy copy --bandwidth 2M $p (SIGINT after 1 s)"
	assert_rc 1 "$name: interrupted copy exits 1"
	grep -q "copy interrupted" "$T/err" && ok "$name: says it was interrupted" || fail "$name: $(bc_said)"
	[ ! -e d.raw ] && ok "$name: interrupted copy removed its destination" || fail "$name: d.raw left behind"
done

# --- pull on the same paths (engine/pull.c with copy-method.c) ------------------
# A 3-deep chain with data at every depth, a zero cluster in the top hiding
# backing data, and an odd tail; the reference is its content before the pull.
pull_chain() {
	rm -f pb.qcow2 pm.qcow2 pt.qcow2 ref.raw
	qimg create -q -f qcow2 pb.qcow2 24M
	qio -c 'write -P 0x11 0 6M' -c 'write -P 0x12 16M 2M' -c 'write -P 0x13 23M 1M' pb.qcow2
	qimg create -q -f qcow2 -b pb.qcow2 -F qcow2 pm.qcow2
	qio -c 'write -P 0x21 4M 4M' -c 'write -P 0x22 20M 64k' pm.qcow2
	qimg create -q -f qcow2 -o cluster_size=4096 -b pm.qcow2 -F qcow2 pt.qcow2
	qio -c 'write -P 0x31 5M 1M' -c 'write -z 16M 1M' -c 'write -P 0x32 12345 777' pt.qcow2
	qimg convert -O raw pt.qcow2 ref.raw
}
# pull_with WANT_METHOD BACKING_AFTER [OPTIONS...]
pull_with() {
	local want=$1 after=$2
	shift 2
	pull_chain
	bc pull --json "$@" pt.qcow2
	assert_rc 0 "pull $*" || return
	local got
	got=$(method_of)
	[ "$got" = "$want" ] && ok "pull $*: method $got" ||
		fail "pull $*: method '$got', want '$want'; $(bc_said)"
	same_as pt.qcow2 ref.raw "pull $*: content"
	[ "$(qemu-img check -q pt.qcow2 2>&1)" = "" ] && ok "pull $*: checks clean" ||
		fail "pull $*: qemu-img check pt.qcow2"
	got=$(qemu-img info --output=json pt.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin).get("backing-filename", ""))')
	[ "$got" = "$after" ] && ok "pull $*: backing '$after'" || fail "pull $*: backing '$got', want '$after'"
}
# The tool opens the image buffered: the top is written through its driver
# with write-behind.
pull_with buffered+write-behind ""
pull_with buffered+write-behind "$T/pb.qcow2" --base pb.qcow2
pull_with buffered+write-behind "" --bandwidth 1G
# Throttled: the layers below the top hold 11 MiB where the top holds
# nothing, about 9 MiB of it data (zero writes are not charged): at
# 4 MiB/s about 2.2 s, never much less.
pull_chain
bc pull --json --bandwidth 4M pt.qcow2
assert_rc 0 "throttled pull"
took_within 1.8 8 "pull of ~9 MiB at 4 MiB/s"
same_as pt.qcow2 ref.raw "throttled pull: content"

finish

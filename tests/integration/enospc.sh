#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Real resource exhaustion and vanishing sources, through the tool:
# - a destination on a small ext4 (a sparse file, mkfs.ext4, mount -o loop)
#   that fills up mid-copy, raw and qcow2, buffered and --direct (the
#   backend is BLOCKCOPY_IO, set per run by meson): exit 1, the one line
#   "blockcopy: <dst>: write failed at offset N: No space left on device",
#   a destination the tool created removed, a reused one (--reuse-external)
#   still passing qemu-img check with its metadata kept, the source
#   untouched;
# - a raw or qcow2 source truncated under a running copy: the copy fails
#   naming the source, never copies zeros for what vanished;
# - a source removed (unlinked) while the copy has it open: completes, and
#   the copy equals the source;
# - `ulimit -n` too small at each step of the start-up, and
#   RLIMIT_MEMLOCK 0 (the ring): exit 1 with one clear line, or success.
#
# Needs root (mount) and a loop device: exit 77 with a message otherwise.
. "$(dirname "$0")/lib.sh"
require_qemu_img


if [ "$(id -u)" -ne 0 ]; then
	echo "enospc: not root (mount -o loop needs root): skipping"
	exit 77
fi
for t in mkfs.ext4 mount umount losetup; do
	command -v "$t" >/dev/null || { echo "enospc: $t not installed: skipping"; exit 77; }
done

MNT=$T/mnt
cleanup() {
	if mountpoint -q "$MNT" 2>/dev/null; then
		umount "$MNT" || umount -l "$MNT"
	fi
	# mount -o loop sets autoclear; detach by hand if it was left.
	local dev
	for dev in $(losetup -j "$T/fs.img" 2>/dev/null | cut -d: -f1); do
		losetup -d "$dev" 2>/dev/null
	done
	rm -rf "$T"
}
trap cleanup EXIT

mkdir "$MNT"
truncate -s 32M "$T/fs.img"
mkfs.ext4 -q -F -m 0 "$T/fs.img" >/dev/null 2>&1 || die "mkfs.ext4 failed"
if ! mount -o loop "$T/fs.img" "$MNT" 2>"$T/mount.err"; then
	echo "enospc: cannot loop-mount an ext4 image ($(head -c 200 "$T/mount.err")): skipping"
	exit 77
fi
free=$(($(stat -f -c '%a * %S' "$MNT")))

# Sources (on the scratch directory, not the small file system): 40 MiB
# of random data, more than the small file system holds.
SRC_MB=40
head -c $((SRC_MB << 20)) /dev/urandom >"$T/src.raw"
qimg convert -O qcow2 "$T/src.raw" "$T/src.qcow2"
sum_raw=$(sha "$T/src.raw")
sum_qcow2=$(sha "$T/src.qcow2")
[ "$free" -lt $((SRC_MB << 20)) ] || die "the small file system has $free bytes free"

# one_line DESC: the last run printed exactly one line on stderr.
one_line() {
	if [ "$(wc -l <"$T/err")" -eq 1 ]; then ok "$1: one line"; else fail "$1: stderr is not one line: $(bc_said)"; fi
}

# no_space_line DESC DST: that line is the documented wording with an
# offset inside the source.
no_space_line() {
	local desc=$1 dst=$2 line off
	line=$(cat "$T/err")
	case $line in
	"blockcopy: $dst: write failed at offset "*": No space left on device")
		off=${line#"blockcopy: $dst: write failed at offset "}
		off=${off%%:*}
		if [[ $off =~ ^[0-9]+$ ]] && [ "$off" -lt $((SRC_MB << 20)) ]; then
			ok "$desc: names $dst, offset $off and the reason"
		else
			fail "$desc: offset '$off' is not inside the source: $line"
		fi ;;
	*) fail "$desc: want 'blockcopy: $dst: write failed at offset N: No space left on device', got: $line" ;;
	esac
}

sources_untouched() {
	[ "$(sha "$T/src.raw")" = "$sum_raw" ] && [ "$(sha "$T/src.qcow2")" = "$sum_qcow2" ] &&
		ok "$1: sources untouched" || fail "$1: a source changed"
}

# Every path: the buffered qcow2 one, and the asynchronous one (raw
# destinations, every --direct copy).
full_fs_cases() {
	local fmt direct desc dst
	for fmt in raw qcow2; do
		for direct in "" --direct; do
			desc="full fs: $fmt destination${direct:+ $direct}"
			dst=$MNT/dst.$fmt
			bc copy -q $direct "$T/src.$fmt" "$dst"
			assert_rc 1 "$desc: exit 1"
			one_line "$desc"
			no_space_line "$desc" "$dst"
			[ ! -e "$dst" ] && ok "$desc: created destination removed" ||
				{ fail "$desc: $dst left behind"; rm -f "$dst"; }
			sources_untouched "$desc"

			# A destination the user made is kept, metadata and all, and
			# stays consistent.
			desc="full fs: reused $fmt destination${direct:+ $direct}"
			qimg create -q -f "$fmt" "$dst" ${SRC_MB}M
			bc copy -q --reuse-external $direct "$T/src.$fmt" "$dst"
			assert_rc 1 "$desc: exit 1"
			one_line "$desc"
			grep -q "No space left on device" "$T/err" && ok "$desc: reason" ||
				fail "$desc: no 'No space left on device': $(bc_said)"
			if [ -e "$dst" ]; then
				ok "$desc: kept"
				if [ "$fmt" = qcow2 ]; then
					local rc=0
					qemu-img check -q "$dst" >/dev/null 2>&1 || rc=$?
					case $rc in
					0|3) ok "$desc: qemu-img check $rc" ;;
					*) fail "$desc: qemu-img check exits $rc: $(qemu-img check "$dst" 2>&1 | tail -3)" ;;
					esac
				fi
				local vs
				vs=$(qemu-img info --output=json "$dst" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
				[ "$vs" = $((SRC_MB << 20)) ] && ok "$desc: size kept" || fail "$desc: virtual size now $vs"
			else
				fail "$desc: the reused destination was removed"
			fi
			rm -f "$dst"
			sources_untouched "$desc"
		done
	done
}

# A source truncated under a running copy must fail it, never be copied
# as zeros.
truncated_source_cases() {
	local fmt pid rc
	for fmt in raw qcow2; do
		cp "$T/src.$fmt" "$T/victim.$fmt"
		rm -f "$T/trunc-dst.$fmt"
		timeout -k 2 60 "$BLOCKCOPY" copy -q --bandwidth 16M "$T/victim.$fmt" "$T/trunc-dst.$fmt" \
			>"$T/out" 2>"$T/err" &
		pid=$!
		sleep 0.7
		truncate -s 8M "$T/victim.$fmt"
		rc=0
		wait $pid || rc=$?
		RC=$rc BC_CMD="blockcopy copy --bandwidth 16M victim.$fmt (truncated to 8 MiB at 0.7 s)"
		assert_rc 1 "truncated $fmt source: the copy fails"
		one_line "truncated $fmt source"
		grep -q "victim.$fmt" "$T/err" && ok "truncated $fmt source: names the source" ||
			fail "truncated $fmt source: the error does not name the source: $(bc_said)"
		[ ! -e "$T/trunc-dst.$fmt" ] && ok "truncated $fmt source: destination removed" ||
			fail "truncated $fmt source: destination left behind"
		rm -f "$T/victim.$fmt" "$T/trunc-dst.$fmt"
	done
}

full_fs_cases
truncated_source_cases

# --- a source unlinked while open completes ------------------------------
for fmt in raw qcow2; do
	cp "$T/src.$fmt" "$T/victim.$fmt"
	timeout -k 2 60 "$BLOCKCOPY" copy -q --bandwidth 32M "$T/victim.$fmt" "$T/unl-dst.$fmt" \
		>"$T/out" 2>"$T/err" &
	pid=$!
	sleep 0.4
	rm "$T/victim.$fmt"
	RC=0
	wait $pid || RC=$?
	BC_CMD="blockcopy copy --bandwidth 32M victim.$fmt (unlinked at 0.4 s)"
	if assert_rc 0 "unlinked $fmt source: the copy completes"; then
		if qemu-img compare -q "$T/src.$fmt" "$T/unl-dst.$fmt"; then
			ok "unlinked $fmt source: the copy equals the source"
		else
			fail "unlinked $fmt source: the copy differs from the source"
		fi
	fi
	rm -f "$T/unl-dst.$fmt"
done

# --- too few file descriptors ----------------------------------------------
# 3 cannot even load the shared libraries; from 4 up each start-up step
# (source, destination, ring or AIO context, eventfds) runs out in turn.
nfail=0
for n in 4 5 6 7 8 12; do
	desc="ulimit -n $n"
	rm -f "$T/fd-dst.qcow2"
	RC=0
	(ulimit -n $n && exec timeout -k 2 "$BC_TIMEOUT" "$BLOCKCOPY" copy -q "$T/src.qcow2" "$T/fd-dst.qcow2") \
		>"$T/out" 2>"$T/err" || RC=$?
	BC_CMD="($desc) blockcopy copy src.qcow2 fd-dst.qcow2"
	assert_rc "0|1" "$desc: exit 0 or 1" || continue
	if [ $RC -eq 1 ]; then
		nfail=$((nfail + 1))
		one_line "$desc"
		grep -q "Too many open files" "$T/err" && ok "$desc: says why" ||
			fail "$desc: the reason is not 'Too many open files': $(bc_said)"
		[ ! -e "$T/fd-dst.qcow2" ] && ok "$desc: no destination left" ||
			fail "$desc: destination left behind"
	elif qemu-img compare -q "$T/src.qcow2" "$T/fd-dst.qcow2"; then
		ok "$desc: copied"
	else
		fail "$desc: exit 0 but the copy differs"
	fi
done
[ $nfail -gt 0 ] && ok "some descriptor limit fails ($nfail)" ||
	fail "no descriptor limit made the copy fail: the test tests nothing"
rm -f "$T/fd-dst.qcow2"

# --- RLIMIT_MEMLOCK 0 -----------------------------------------------------
# Kernels since 5.12 charge io_uring rings to the memory cgroup, not to
# RLIMIT_MEMLOCK: success is right there; older ones refuse the ring.
RC=0
(ulimit -l 0 && exec timeout -k 2 "$BC_TIMEOUT" "$BLOCKCOPY" copy -q "$T/src.raw" "$T/ml-dst.raw") \
	>"$T/out" 2>"$T/err" || RC=$?
BC_CMD="(ulimit -l 0) blockcopy copy src.raw ml-dst.raw"
if assert_rc "0|1" "RLIMIT_MEMLOCK 0: exit 0 or 1"; then
	if [ $RC -eq 0 ]; then
		qemu-img compare -q -f raw -F raw "$T/src.raw" "$T/ml-dst.raw" &&
			ok "RLIMIT_MEMLOCK 0: copied" || fail "RLIMIT_MEMLOCK 0: exit 0 but the copy differs"
	else
		one_line "RLIMIT_MEMLOCK 0"
		grep -Eqi "memory|resource" "$T/err" && ok "RLIMIT_MEMLOCK 0: says why" ||
			fail "RLIMIT_MEMLOCK 0: unclear error: $(bc_said)"
	fi
fi
rm -f "$T/ml-dst.raw"

finish

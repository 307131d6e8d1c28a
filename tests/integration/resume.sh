#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Resumable copies through the tool (docs/rules.md R40): a throttled copy of
# a 256 MiB image holding 128 MiB of data, killed with SIGKILL once its
# journal says half is copied, then `copy --resume`: qemu-img compares it
# equal, qemu-img check is clean, and the resumed run copies exactly what
# the journal said was left (--json's bytes-copied). Also: a raw
# destination (--raw comes from the journal), --resume errors, and a
# killed pull that is simply run again. Kills wait for a condition (the
# journal, the top's growth), never a fixed time.
. "$(dirname "$0")/lib.sh"
require_qemu_img

# Stopped (meson's timeout sends SIGTERM; ^C), the script kills what it
# started: the background copies (lib.sh's KIDS, killed on INT/TERM).

cd "$T" || die "cd $T"
MIB=$((1024 * 1024))
RATE_MIB=8 # throttled rate: 128 MiB of data take 16 s; killed at about 8 s

# 256 MiB, 1 MiB of data every 2 MiB (each its own pattern): 128 MiB of data.
args=()
for i in $(seq 0 127); do
	args+=(-c "write -P $((i % 250 + 1)) $((i * 2))M 1M")
done
qimg create -q -f qcow2 src.qcow2 256M
qio "${args[@]}" src.qcow2

json_field() { # FILE KEY
	python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"
}
journal_left() { # JOURNAL: bytes it marks still to copy (docs/design.md §12)
	python3 - "$1" <<'EOF'
import struct, sys
d = open(sys.argv[1], "rb").read()
hs, gb = struct.unpack_from("<II", d, 12)
size, nbits = struct.unpack_from("<QQ", d, 24)
n = sum(bin(b).count("1") for b in d[hs:hs + (nbits + 7) // 8])
print(min(n << gb, size))
EOF
}

# Kill conditions (DST): the journal says half of the data is copied; it
# says a checkpoint cleared something; it exists (the copy has started).
half_copied() {
	[ -e "$1.bcjournal" ] && [ "$(journal_left "$1.bcjournal")" -le $((DATA / 2)) ]
}
checkpointed() {
	[ -e "$1.bcjournal" ] && [ "$(journal_left "$1.bcjournal")" -lt "$DATA" ]
}
has_journal() {
	[ -e "$1.bcjournal" ]
}

# kill_when PID WHAT COND ARGS...: SIGKILL PID once `COND ARGS...`
# succeeds (polled every 50 ms, 60 s at most); fails if PID ends first.
kill_when() {
	local pid=$1 what=$2 end=$((SECONDS + 60))
	shift 2
	until "$@"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			wait "$pid"
			fail "$what ended by itself before '$*' (exit $?): $(bc_said)"
			return 1
		fi
		if [ "$SECONDS" -ge "$end" ]; then
			kill -9 "$pid"
			wait "$pid" 2>/dev/null
			fail "$what: '$*' not true within 60 s"
			return 1
		fi
		sleep 0.05
	done
	kill -9 "$pid"
	wait "$pid" 2>/dev/null
	ok "$what killed once '$*'"
}

# killed_copy DST COND ARGS...: a throttled copy, SIGKILLed once COND DST.
killed_copy() {
	local dst=$1 cond=$2
	shift 2
	"$BLOCKCOPY" copy -q --bandwidth "$RATE_MIB" "$@" src.qcow2 "$dst" \
		>"$T/out" 2>"$T/err" &
	KIDS+=("$!")
	kill_when "$!" "copy to $dst" "$cond" "$dst"
}

# --- the whole data, uninterrupted ------------------------------------------
bc copy --json src.qcow2 ref.qcow2
assert_rc 0 "uninterrupted copy"
DATA=$(json_field "$T/out" bytes-copied)
[ "$DATA" -eq $((128 * MIB)) ] && ok "uninterrupted copy copied 128 MiB" ||
	fail "uninterrupted copy copied $DATA bytes, want $((128 * MIB))"
[ -e ref.qcow2.bcjournal ] && fail "journal left after a completed copy" ||
	ok "no journal after a completed copy"

# --- killed half-way, resumed -------------------------------------------------------
killed_copy dst.qcow2 half_copied
LEFT=0
if [ -e dst.qcow2.bcjournal ]; then
	ok "journal kept after SIGKILL"
	LEFT=$(journal_left dst.qcow2.bcjournal)
	echo "journal: $((LEFT / MIB)) MiB of 256 MiB still to copy"
else
	fail "no journal after SIGKILL"
fi
BC_TIMEOUT=60 bc copy --resume --json src.qcow2 dst.qcow2
assert_rc 0 "copy --resume"
RESUMED=$(json_field "$T/out" bytes-copied)
echo "resumed run copied $((RESUMED / MIB)) MiB of $((DATA / MIB)) MiB of data"
# The journal marks only granules of data (1 MiB runs, 64 KiB granules):
# the resumed run copies each of them, and nothing else.
[ "$RESUMED" -eq "$LEFT" ] && ok "resumed run copied what the journal left" ||
	fail "resumed run copied $RESUMED bytes, the journal left $LEFT"
[ "$LEFT" -gt 0 ] && [ "$LEFT" -le $((DATA / 2)) ] && ok "killed half-way" ||
	fail "the journal left $LEFT bytes of $DATA at the kill"
if qemu-img compare -q src.qcow2 dst.qcow2; then ok "resumed copy equals the source"
else fail "resumed copy differs from the source"; fi
if qemu-img check -q dst.qcow2 >/dev/null 2>&1; then ok "qemu-img check of the resumed copy"
else fail "qemu-img check dst.qcow2: $(qemu-img check dst.qcow2 2>&1 | tail -2)"; fi
[ -e dst.qcow2.bcjournal ] && fail "journal left after the resumed copy" ||
	ok "journal removed after the resumed copy"

# --- raw destination: the journal says raw ----------------------------------------
killed_copy dst.raw checkpointed --raw
bc copy --resume -q src.qcow2 dst.raw
assert_rc 0 "copy --resume into a raw destination"
if qemu-img compare -q -f qcow2 -F raw src.qcow2 dst.raw; then ok "resumed raw copy equals the source"
else fail "resumed raw copy differs from the source"; fi

# --- errors: one line naming the journal -----------------------------------------------
bc copy --resume src.qcow2 none.qcow2
assert_rc 1 "copy --resume without a journal"
[ "$(cat "$T/err")" = "blockcopy: no journal 'none.qcow2.bcjournal' to resume from" ] &&
	ok "missing journal message" || fail "missing journal message: $(bc_said)"
killed_copy other.qcow2 has_journal
bc copy --resume --shallow src.qcow2 other.qcow2
assert_rc 1 "copy --resume --shallow of a full copy"
[ "$(cat "$T/err")" = "blockcopy: journal 'other.qcow2.bcjournal' records a full copy, not a shallow one" ] &&
	ok "shallow mismatch message" || fail "shallow mismatch message: $(bc_said)"
bc copy --resume -q src.qcow2 other.qcow2
assert_rc 0 "copy --resume after the refused one"
if qemu-img compare -q src.qcow2 other.qcow2; then ok "copy resumed after a refusal equals the source"
else fail "copy resumed after a refusal differs"; fi

# --- pull: no journal, a rerun continues -------------------------------------------------
qimg create -q -f qcow2 -b src.qcow2 -F qcow2 top.qcow2
qio -c 'write -P 0xee 3M 2M' top.qcow2
ref_raw top.qcow2 top-ref.raw
# Killed once 16 MiB were pulled (the top grows as clusters are copied).
TOP0=$(stat -c %s top.qcow2)
top_grew() {
	[ "$(stat -c %s top.qcow2)" -ge $((TOP0 + 16 * MIB)) ]
}
"$BLOCKCOPY" pull --bandwidth "$RATE_MIB" top.qcow2 >"$T/out" 2>"$T/err" &
KIDS+=("$!")
kill_when "$!" "pull" top_grew
BC_TIMEOUT=60 bc pull top.qcow2
assert_rc 0 "pull run again"
if qemu-img compare -q -F raw top.qcow2 top-ref.raw; then ok "pulled top equals the chain"
else fail "pulled top differs from the chain"; fi
[ -z "$(qemu-img info --output=json top.qcow2 | python3 -c "import json,sys; print(json.load(sys.stdin).get('backing-filename') or '')")" ] &&
	ok "pulled top has no backing file" || fail "pulled top still has a backing file"
if qemu-img check -q top.qcow2 >/dev/null 2>&1; then ok "qemu-img check of the pulled top"
else fail "qemu-img check top.qcow2: $(qemu-img check top.qcow2 2>&1 | tail -2)"; fi

finish

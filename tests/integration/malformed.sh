#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The malformed corpus (tests/fixtures/make-malformed.py): every
# subcommand fails cleanly on every bad image: the expected exit code, one
# line on stderr naming the file and a reason, no signal, no hang, and the
# image unchanged. Plus one positive case: a declared-raw backing that
# holds a qcow2 header reads as raw.

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
require_qemu_img

M=$T/corpus
python3 "$FIXTURES_DIR/make-malformed.py" "$M" >"$T/cases" || die "make-malformed.py failed"

# Expected exit codes per subcommand, in this order:
#   info  info--backing-chain  map  map--json  compare-with-other  check
# "a|b" accepts either (where docs/qcow2.md leaves it open, e.g. whether
# plain info opens the backing chain).
O="1 1 1 1 2 1"          # refused at open: invalid or unsupported header
# Header fine, backing chain cannot be opened. check: qemu-img check
# opens the chain and exits 1; checking the top image alone (0) is fine.
B="0|1 1 1 1 2 0|1"
# Bad mapping metadata: found when map/compare touch it (or earlier, at
# open); check must open the image and report the corruption (2), as
# qemu-img check does.
L="0|1 0|1 1 1 2 2"
declare -A want culprit
while read -r name exp; do
	[ -n "$name" ] || continue
	want[$name]=$exp
done <<EOF
trunc-50.qcow2 $O
trunc-200.qcow2 $O
version-1.qcow2 $O
version-4.qcow2 $O
cluster-bits-8.qcow2 $O
cluster-bits-22.qcow2 $O
cluster-bits-30.qcow2 $O
header-length-gt-cluster.qcow2 $O
header-length-short.qcow2 $O
header-ext-too-large.qcow2 $O
incompat-unknown.qcow2 $O
crypt-aes.qcow2 $O
crypt-luks.qcow2 $O
crypt-bad.qcow2 $O
external-data-file.qcow2 $O
zstd.qcow2 $O
compression-type-no-bit.qcow2 $O
refcount-order-7.qcow2 $O
v2-size-huge.qcow2 $O
size-huge.qcow2 $O
l1-beyond-eof.qcow2 $O
l1-overlap-header.qcow2 $O
l1-unaligned.qcow2 $O
l1-huge-size.qcow2 $O
l1-too-small.qcow2 $O
reftable-beyond-eof.qcow2 $O
reftable-clusters-0.qcow2 $O
reftable-huge.qcow2 $O
reftable-unaligned.qcow2 $O
too-many-snapshots.qcow2 $O
snapshots-beyond-eof.qcow2 $O
backing-name-too-long.qcow2 $O
backing-offset-beyond-cluster0.qcow2 $O
backing-offset-in-header.qcow2 $B
loop-a.qcow2 $B
loop-b.qcow2 $B
self-loop.qcow2 $B
self-loop-abs.qcow2 $B
missing-backing.qcow2 $B
json-backing.qcow2 $B
protocol-backing.qcow2 $B
empty-qcow2-backing.qcow2 $B
trunc-qcow2-backing.qcow2 $B
l2-entry-beyond-eof.qcow2 $L
l2-entry-unaligned.qcow2 $L
l2-entry-reserved-bits.qcow2 $L
l2-table-beyond-eof.qcow2 $L
l2-table-unaligned.qcow2 $L
l2-table-is-reftable.qcow2 0 0 0|1 0|1 1|2 2
extl2-alloc-and-zero.qcow2 $L
zero-flag-in-v2.qcow2 0|1 0|1 1 1 2 0|2
compressed-beyond-eof.qcow2 0 0 0|1 0|1 2 2
compressed-garbage.qcow2 0 0 0|1 0 2 0|2
EOF
# Besides the image itself, the message may name the file at fault.
culprit[loop-a.qcow2]=loop-b.qcow2
culprit[loop-b.qcow2]=loop-a.qcow2
culprit[missing-backing.qcow2]=does-not-exist.qcow2
culprit[empty-qcow2-backing.qcow2]=empty-backing.img
culprit[trunc-qcow2-backing.qcow2]=trunc-qcow2-backing.img

POSITIVE=raw-backing-with-qcow2-header.qcow2

declare -A sums
for f in "$M"/*; do sums[$f]=$(sha "$f"); done
truncate -s 1M "$T/other.raw"

# clean_error IMG DESC: the last run failed with one stderr line naming
# the image (or its culprit) and a reason.
clean_error() {
	local img=$1 desc=$2 name c lines
	name=$(basename "$img")
	c=${culprit[$name]:-}
	lines=$(wc -l <"$T/err")
	if [ "$lines" -ne 1 ] || [ "$(tail -c1 "$T/err" | od -An -c | tr -d ' ')" != '\n' ]; then
		fail "$desc: stderr has $lines lines, want exactly one: $(bc_said)"
		return
	fi
	if ! grep -qF -- "$name" "$T/err" && { [ -z "$c" ] || ! grep -qF -- "$c" "$T/err"; }; then
		fail "$desc: stderr does not name $name${c:+ or $c}: $(bc_said)"
		return
	fi
	# A reason after the name: "<path>: <reason>".
	if ! grep -qE ': *[[:alpha:]].{3,}' "$T/err"; then
		fail "$desc: stderr gives no reason: $(bc_said)"
		return
	fi
	ok "$desc: clean error"
}

# run_case IMG WANT DESC ARGS...: one subcommand on one image.
run_case() {
	local img=$1 w=$2 desc=$3
	shift 3
	bc "$@"
	assert_rc "$w" "$desc" || return
	# Error exits: 2 from compare (1 = differ), 1 elsewhere (check's 2
	# is a report of what it found).
	case $1:$RC in
	compare:2|info:1|map:1|check:1) clean_error "$img" "$desc" ;;
	esac
}

n=0
while IFS=$'\t' read -r name why; do
	img=$M/$name
	if [ "$name" = "$POSITIVE" ]; then
		continue
	fi
	if [ -z "${want[$name]:-}" ]; then
		fail "$name ($why): no expectation in malformed.sh"
		continue
	fi
	n=$((n + 1))
	read -r w_info w_chain w_map w_mapj w_cmp w_check <<<"${want[$name]}"
	run_case "$img" "$w_info" "info $name ($why)" info "$img"
	run_case "$img" "$w_chain" "info --backing-chain $name ($why)" info --backing-chain "$img"
	run_case "$img" "$w_map" "map $name ($why)" map "$img"
	run_case "$img" "$w_mapj" "map --json $name ($why)" map --json "$img"
	run_case "$img" "$w_cmp" "compare $name other.raw ($why)" compare "$img" "$T/other.raw"
	run_case "$img" "$w_cmp" "compare other.raw $name ($why)" compare "$T/other.raw" "$img"
	run_case "$img" "$w_check" "check $name ($why)" check "$img"
done <"$T/cases"
for name in "${!want[@]}"; do
	grep -q "^$name	" "$T/cases" || fail "$name: expected in the corpus, not generated"
done
[ "$n" -ge 20 ] || fail "corpus has only $n malformed images"

# Positive: the backing was declared raw, so its qcow2-looking header is
# guest data (CVE-2008-2004); its own "backing file" is never followed.
# The reference is a standalone qcow2 copy (a raw file starting with
# the qcow2 magic would itself be probed as qcow2).
img=$M/$POSITIVE
qimg convert -O qcow2 "$img" "$T/positive.ref.qcow2"
qimg convert -O raw "$img" "$T/positive.ref"
head -c 4 "$T/positive.ref" | grep -q 'QFI' || die "$POSITIVE: reference lost the header"
bc compare "$img" "$T/positive.ref.qcow2"
assert_rc 0 "compare $POSITIVE with qemu-img's converted copy"
check_map "$img"
check_info "$img" --backing-chain
bc info --backing-chain --json "$img"
if grep -q secret.raw "$T/out"; then
	fail "info --backing-chain $POSITIVE follows the raw backing's embedded backing name: $(bc_said)"
fi

for f in "${!sums[@]}"; do
	[ "$(sha "$f")" = "${sums[$f]}" ] || fail "$(basename "$f") was modified"
done
echo "malformed corpus: $n images"
finish

# SPDX-License-Identifier: LGPL-2.1-or-later
# Shared helpers for the integration scripts (sourced, bash).
#
# Environment (set by tests/integration/meson.build): BLOCKCOPY (the tool),
# BLOCKCOPY_IO (uring|aio), SRCDIR, TESTS_DIR. Scripts keep going after a
# failed assertion so that one run lists every broken case; finish() turns
# the count into the exit status (0 pass, 1 fail; 77 skip comes from
# require_qemu_img).

set -u
set -o pipefail

: "${BLOCKCOPY:?BLOCKCOPY must name the blockcopy tool}"
export BLOCKCOPY_IO="${BLOCKCOPY_IO:-uring}"
TESTS_DIR="${TESTS_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
if [ -d "$TESTS_DIR/integration" ]; then
	INTEG_DIR="$TESTS_DIR/integration"
	FIXTURES_DIR="$TESTS_DIR/fixtures"
else
	# meson passes tests/integration itself as TESTS_DIR.
	INTEG_DIR="$TESTS_DIR"
	FIXTURES_DIR="$TESTS_DIR/../fixtures"
fi

export INTEG_DIR FIXTURES_DIR

# Per-test scratch directory, removed whatever happens.
T=$(mktemp -d "${TMPDIR:-/tmp}/bc-integ.XXXXXX") || exit 99
trap 'rm -rf "$T"' EXIT
# Processes to kill when the test is (meson's timeout, ^C): each `bc`
# run's timeout(1) with its process group (timeout makes one), and what a
# script starts in the background (it appends the pid).
KIDS=()
kill_kids() {
	local p
	for p in "${KIDS[@]}"; do
		kill -9 -- "-$p" 2>/dev/null || kill -9 "$p" 2>/dev/null
	done
}
trap 'kill_kids; exit 130' INT TERM

NFAIL=0
NCHECK=0
# Per-command time limit: a hang is a failure, not a stuck test run.
BC_TIMEOUT=${BC_TIMEOUT:-10}

fail() {
	NFAIL=$((NFAIL + 1))
	echo "FAIL: $*" >&2
}

ok() {
	NCHECK=$((NCHECK + 1))
	if [ -n "${VERBOSE:-}" ]; then echo "ok: $*"; fi
}

# Abort the script: the fixture itself could not be built (a script bug
# or a broken qemu-img), which is not a blockcopy failure to count.
die() {
	echo "ERROR: $*" >&2
	exit 99
}

finish() {
	echo "$(basename "$0") [$BLOCKCOPY_IO]: $NCHECK checks passed, $NFAIL failed"
	if [ "$NFAIL" -ne 0 ]; then exit 1; fi
	exit 0
}

require_qemu_img() {
	if ! command -v qemu-img >/dev/null 2>&1 ||
	   ! command -v qemu-io >/dev/null 2>&1; then
		echo "qemu-img/qemu-io not installed: skipping"
		exit 77
	fi
	command -v python3 >/dev/null 2>&1 || { echo "no python3: skipping"; exit 77; }
}

# qemu-img / qemu-io helpers; a failure here is a fixture bug.
qimg() {
	qemu-img "$@" || die "qemu-img $*"
}

# qemu-io prints one progress report per command; keep the log quiet.
qio() {
	local out
	out=$(qemu-io "$@" 2>&1) || die "qemu-io $*: $out"
	case $out in
	*"failed"*|*"error"*|*"Error"*) die "qemu-io $*: $out" ;;
	esac
}

# Run blockcopy with a time limit; stdout in $T/out, stderr in $T/err,
# exit status in RC. Never fails by itself.
# Waited for in the background: bash runs a trap only once the foreground
# command ends, but a trapped signal interrupts `wait`.
bc() {
	local pid
	RC=0
	timeout -k 2 "$BC_TIMEOUT" "$BLOCKCOPY" "$@" >"$T/out" 2>"$T/err" &
	pid=$!
	KIDS+=("$pid")
	wait "$pid" || RC=$?
	BC_CMD="blockcopy $*"
}

# What blockcopy printed, for failure messages (first lines only).
bc_said() {
	printf 'stdout: %s | stderr: %s' "$(head -c 400 "$T/out" | tr '\n' ' ')" \
		"$(head -c 400 "$T/err" | tr '\n' ' ')"
}

# assert_rc WANT DESC: the last bc run exited WANT (a '|'-separated
# set such as "0|1" accepts any of them).
assert_rc() {
	local want=$1 desc=$2 w
	if [ "$RC" -ge 124 ]; then
		case $RC in
		124|137) fail "$desc: timed out after ${BC_TIMEOUT}s: $BC_CMD" ;;
		*) fail "$desc: killed by signal $((RC - 128)) (exit $RC): $BC_CMD; $(bc_said)" ;;
		esac
		return 1
	fi
	local IFS='|'
	for w in $want; do
		if [ "$RC" -eq "$w" ]; then ok "$desc"; return 0; fi
	done
	fail "$desc: exit $RC, want $want: $BC_CMD; $(bc_said)"
	return 1
}

sha() {
	sha256sum "$1" | cut -d' ' -f1
}

# ref_raw IMG REF: REF = the guest content of IMG as qemu-img reads it.
ref_raw() {
	qimg convert -O raw "$1" "$2"
}

# The JSON normalisers: one python program, several sub-commands.
pyhelp() {
	python3 "$INTEG_DIR/lib.py" "$@"
}

# check_compare_same IMG REF: blockcopy compare says identical.
check_compare_same() {
	bc compare "$1" "$2"
	assert_rc 0 "compare $(basename "$1") with its qemu-img raw copy"
}

# check_compare_differs A B: blockcopy compare exits 1 and names the
# first differing offset (computed from qemu-img's raw conversions).
check_compare_differs() {
	local a=$1 b=$2 off
	ref_raw "$a" "$T/cmp-a.raw"
	ref_raw "$b" "$T/cmp-b.raw"
	off=$(pyhelp firstdiff "$T/cmp-a.raw" "$T/cmp-b.raw") || die "firstdiff"
	[ "$off" != same ] || die "check_compare_differs: $a and $b are identical"
	bc compare "$a" "$b"
	assert_rc 1 "compare $(basename "$a") $(basename "$b") differ" || return
	# The exact byte, or (as qemu-img compare reports it) its sector.
	if grep -qw -- "$off" "$T/out" "$T/err" ||
	   grep -qw -- "$((off / 512 * 512))" "$T/out" "$T/err"; then
		ok "compare reports offset $off"
	else
		fail "compare $(basename "$a") $(basename "$b"): first difference is at offset $off (sector $((off / 512 * 512))), not named in output: $(bc_said)"
	fi
	rm -f "$T/cmp-a.raw" "$T/cmp-b.raw"
}

# check_map IMG [args for qemu-img map]: blockcopy map --json agrees with
# qemu-img map --output=json after normalisation.
check_map() {
	local img=$1 msg
	shift
	qemu-img map --output=json "$@" "$img" >"$T/qmap.json" 2>"$T/qmap.err" ||
		die "qemu-img map $img: $(cat "$T/qmap.err")"
	bc map --json "$img"
	assert_rc 0 "map --json $(basename "$img")" || return
	cp "$T/out" "$T/bmap.json"
	if msg=$(pyhelp map "$T/qmap.json" "$T/bmap.json" "$img" 2>&1); then
		ok "map $(basename "$img")"
	else
		fail "map --json $img differs from qemu-img map: $msg"
	fi
	# The text map fails where qemu-img's does (compressed clusters
	# have no host offset to print) and succeeds elsewhere.
	local want=0
	qemu-img map "$@" "$img" >/dev/null 2>&1 || want=1
	bc map "$img"
	assert_rc "$want" "map (text) $(basename "$img") (qemu-img map exits $want)"
}

# check_info IMG [--backing-chain]: blockcopy info --json agrees with
# qemu-img info --output=json on the fields the tool must report.
check_info() {
	local img=$1 msg
	shift
	qemu-img info --output=json "$@" "$img" >"$T/qinfo.json" 2>"$T/qinfo.err" ||
		die "qemu-img info $img: $(cat "$T/qinfo.err")"
	bc info --json "$@" "$img"
	assert_rc 0 "info --json $* $(basename "$img")" || return
	cp "$T/out" "$T/binfo.json"
	if msg=$(pyhelp info "$T/qinfo.json" "$T/binfo.json" "$img" 2>&1); then
		ok "info $* $(basename "$img")"
	else
		fail "info --json $* $img differs from qemu-img info: $msg"
	fi
	bc info "$@" "$img"
	assert_rc 0 "info (text) $* $(basename "$img")"
}

# check_check IMG: blockcopy check exits as qemu-img check does.
check_check() {
	local img=$1 want=0
	qemu-img check "$img" >/dev/null 2>&1 || want=$?
	bc check "$img"
	assert_rc "$want" "check $(basename "$img") (qemu-img check exits $want)"
}

# interop IMG [nocheck]: the whole per-fixture matrix against qemu-img
# (nocheck: the format has no metadata to check, e.g. raw).
interop() {
	local img=$1 nocheck=${2:-} name
	name=$(basename "$img")
	ref_raw "$img" "$T/$name.ref.raw"
	check_compare_same "$img" "$T/$name.ref.raw"
	# And the other way round, raw first.
	bc compare "$T/$name.ref.raw" "$img"
	assert_rc 0 "compare raw copy with $name"
	rm -f "$T/$name.ref.raw"
	check_map "$img"
	check_info "$img"
	if [ -z "$nocheck" ]; then check_check "$img"; fi
}

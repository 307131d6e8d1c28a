#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# blockcopy demo and blockcopy mirror: the live mirror under a synthetic
# guest, end to end. The tool checks every byte against the guest's
# shadow itself; here qemu-img judges the images it leaves (check clean,
# backing as specified, source and copy differing the right way round),
# the JSON keys bench/ relies on, the non-converging case and usage errors.
. "$(dirname "$0")/lib.sh"
require_qemu_img

cd "$T" || die "cd $T"
BC_TIMEOUT=40

# json_get KEY...: a field of $T/out (nested keys), printed as Python does.
json_get() {
	python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
for k in sys.argv[2:]:
    d = d[k]
print(d)' "$T/out" "$@" 2>/dev/null || echo "<no json>"
}

check_clean() { # IMG
	if qemu-img check -q "$1" >/dev/null 2>&1; then ok "qemu-img check $1"; else fail "qemu-img check $1: $(qemu-img check "$1" 2>&1 | tail -3)"; fi
}

expect_eq() { # GOT WANT DESC
	if [ "$1" = "$2" ]; then ok "$3"; else fail "$3: got '$1', want '$2' ($(bc_said))"; fi
}

# --- usage errors ---------------------------------------------------------
for args in "demo --mode fast" "demo --size 5M" "demo --size 10M" "demo a b" \
	    "demo --duration -1" "demo --guest-threads 0" "demo --bogus" \
	    "mirror" "mirror a" "mirror --pivot --abort a b" "mirror --mode x a b" \
	    "mirror --guest-threads 65 a b" "mirror --abort --verify a b" \
	    "mirror --duration x a b" "mirror --timeout 0 a b" "mirror --guest-rate 1Q a b"; do
	# shellcheck disable=SC2086
	bc $args
	assert_rc 2 "usage error: blockcopy $args"
done
bc demo --help
assert_rc 0 "demo --help"
grep -q "base <- snap1 <- snap2" "$T/out" && ok "demo --help describes the chain" || fail "demo --help: $(bc_said)"
bc mirror --help
assert_rc 0 "mirror --help"
grep -q "SRC IS MODIFIED" "$T/out" && ok "mirror --help warns that SRC is written" || fail "mirror --help: $(bc_said)"

# --- demo -------------------------------------------------------------------
# Background mode converges only when the copy outruns the guest: on a
# loaded machine 50 MiB/s need not (as for mirror below), so pace it at 10.
bc demo --size 64M --duration 1 --mode background --guest-rate 10M
assert_rc 0 "demo --mode background"
grep -q "^verified: destination matches the guest's [0-9]* writes" "$T/out" &&
	ok "demo --mode background prints verified" || fail "demo --mode background: $(bc_said)"
# The report: its footprint first, the terms explained, what it removed.
grep -q "^uses:   about [0-9.]* MiB of memory (the guest's record of what it wrote, 144 KiB,$" "$T/out" &&
	ok "demo states its memory before it starts" || fail "demo footprint: $(bc_said)"
grep -Eq "^        and up to [0-9.]+ MiB of disk in /tmp/blockcopy-demo\.[A-Za-z0-9]{6}: the chain's 28 MiB of data,$" "$T/out" &&
	ok "demo states its disk use and where" || fail "demo disk footprint: $(bc_said)"
[ "$(head -1 "$T/out" | cut -c1-8)" = "uses:   " ] && ok "the footprint comes first" || fail "footprint not first: $(bc_said)"
grep -q "^        all removed at the end (--keep keeps them)$" "$T/out" &&
	ok "demo says it will remove its files" || fail "demo removal notice: $(bc_said)"
grep -q "^        pivot under load: the guest's requests were held [0-9.]* ms while its disk$" "$T/out" &&
	grep -q "^        switched to the copy (the pivot stall);$" "$T/out" &&
	ok "demo explains the pivot stall" || fail "pivot stall wording: $(bc_said)"
grep -q "^        the source was checked against its content at the pivot: every block the$" "$T/out" &&
	ok "demo says what the switch check compared" || fail "switch check wording: $(bc_said)"
grep -q "skipped\|NOT checked" "$T/out" && fail "demo skipped blocks: $(bc_said)" || ok "demo checked every block"
dir=$(sed -n 's/^removed: \(.*\) ([0-9.]* [KMG]iB on disk)$/\1/p' "$T/out")
[ -n "$dir" ] && [ ! -e "$dir" ] && ok "demo removed $dir and said so" || fail "demo removal: '$dir' $(bc_said)"
bc demo --size 64M --duration 1 --mode write-blocking --verify
assert_rc 0 "demo --mode write-blocking --verify"
grep -q "^verified: destination matches the guest's [0-9]* writes" "$T/out" &&
	ok "demo --mode write-blocking --verify prints verified" || fail "demo --mode write-blocking --verify: $(bc_said)"
grep -q "including the comparison of source and copy" "$T/out" &&
	ok "demo --verify says the stall includes the comparison" || fail "demo --verify: $(bc_said)"
bc demo --size 64M --duration 1 --shallow --json
assert_rc 0 "demo --shallow --json"
expect_eq "$(json_get verified)" True "demo --shallow --json verified"
expect_eq "$(json_get converged)" True "demo --shallow --json converged"
expect_eq "$(json_get kept)" False "demo --json: kept false"
expect_eq "$(json_get switch_check unchecked)" 0 "demo --json: no block left unchecked at the switch"
[ "$(json_get switch_check changed_after)" -gt 0 ] 2>/dev/null && ok "demo --json: blocks changed after the pivot checked" ||
	fail "switch_check.changed_after: $(bc_said)"
expect_eq "$(json_get shadow_bytes)" 147456 "demo --json: the shadow of 64 MiB takes 144 KiB"
[ ! -e "$(json_get dir)" ] && ok "demo --json removed its directory" || fail "demo --json left $(json_get dir)"
# A failure before the run, with --json: the error object on stdout.
mkdir full && : >full/x
bc demo --json --size 64M full
assert_rc 1 "demo --json into a non-empty DIR"
expect_eq "$(cat "$T/out")" '{"error": {"code": "exists", "message": "full: directory is not empty"}}' \
	"demo --json failure prints a JSON error object"

# DIR given: used, kept; a non-empty one is refused and left alone.
bc demo --size 64M --duration 1 --mode auto --shallow kept
assert_rc 0 "demo --mode auto --shallow into DIR"
grep -q "^verified: destination matches the guest's [0-9]* writes" "$T/out" &&
	ok "demo --mode auto --shallow prints verified" || fail "demo --mode auto --shallow: $(bc_said)"
for f in base snap1 snap2 copy; do
	[ -f "kept/$f.qcow2" ] && ok "demo keeps $f.qcow2" || fail "demo DIR: no $f.qcow2"
done
grep -q "^        kept at the end$" "$T/out" && grep -q "^kept:    kept ([0-9.]* MiB on disk)$" "$T/out" &&
	ok "demo into DIR says it kept it and how much" || fail "demo kept DIR: $(bc_said)"
check_clean kept/snap2.qcow2
check_clean kept/copy.qcow2
expect_eq "$(qemu-img info --output=json kept/copy.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["backing-filename"])')" \
	"$T/kept/snap1.qcow2" "shallow demo copy is backed by snap1"
expect_eq "$(qemu-img info --output=json kept/snap2.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["backing-filename"])')" \
	snap1.qcow2 "snap2 is backed by snap1"
# After the pivot the guest wrote to the copy only: the two differ.
qemu-img compare -q kept/snap2.qcow2 kept/copy.qcow2 >/dev/null 2>&1
expect_eq "$?" 1 "after the pivot the copy is newer than the source"
s1=$(sha kept/base.qcow2)
bc demo --size 64M --duration 1 kept
assert_rc 1 "demo refuses a non-empty DIR"
grep -q "not empty" "$T/err" && ok "non-empty DIR message" || fail "non-empty DIR: $(bc_said)"
expect_eq "$(sha kept/base.qcow2)" "$s1" "refused demo left DIR alone"

# --- mirror on a chain made by qemu-img -------------------------------------
mkdir chain
qimg create -q -f qcow2 chain/base.qcow2 64M
qio -c 'write -P 0x11 0 16M' -c 'write -P 0x12 40M 4M' chain/base.qcow2
qimg create -q -f qcow2 -b base.qcow2 -F qcow2 chain/mid.qcow2
qio -c 'write -P 0x21 8M 8M' -c 'write -z 41M 1M' chain/mid.qcow2
qimg create -q -f qcow2 -o cluster_size=16384 -b mid.qcow2 -F qcow2 chain/top.qcow2
qio -c 'write -P 0x31 20M 4M' -c 'write -P 0x32 12345 777' chain/top.qcow2

# fresh NAME: a scratch copy of the chain in NAME/ (the guest writes SRC).
fresh() {
	rm -rf "$1" && cp -r chain "$1" || die "cp chain $1"
}

# mirror_ok NAME DESC ARGS...: runs mirror --json on a fresh chain and
# checks converged, verified, the mode, and that qemu-img finds both
# images clean.
mirror_ok() {
	local name=$1 desc=$2
	shift 2
	fresh "$name"
	bc mirror --json --duration 0.6 "$@" "$name/top.qcow2" "$name/dst.qcow2"
	assert_rc 0 "mirror $desc" || return 1
	expect_eq "$(json_get converged)" True "mirror $desc: converged"
	expect_eq "$(json_get verified)" True "mirror $desc: verified"
	# The keys bench/ reads, all present.
	local missing
	missing=$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
top = ["mode", "mirroring_seconds", "mode_switch_seconds", "pivot_stall_ms",
       "copy_bytes", "copy_mib_s"]
guest = ["before_mib_s", "during_mib_s", "after_mib_s", "p50_ms", "p99_ms",
         "max_ms", "writes"]
miss = [k for k in top if k not in d] + ["guest." + k for k in guest if k not in d["guest"]]
if d["guest"]["writes"] <= 0: miss.append("guest.writes > 0")
print(" ".join(miss))' "$T/out" 2>&1)
	expect_eq "$missing" "" "mirror $desc: JSON keys"
	check_clean "$name/top.qcow2"
	check_clean "$name/dst.qcow2"
	# The guest wrote for 0.3 s after the switch, to DST after a pivot,
	# to SRC after an abort: either way the two must now differ.
	qemu-img compare -q "$name/top.qcow2" "$name/dst.qcow2" >/dev/null 2>&1
	expect_eq "$?" 1 "mirror $desc: source and copy differ after the switch"
}

# Background mode under an unpaced guest need not converge (QEMU's does
# not either): pace the guest there.
for mode in background write-blocking auto; do
	rate=0
	[ "$mode" = background ] && rate=10M
	mirror_ok "m-$mode" "--mode $mode" --mode "$mode" --guest-rate "$rate" --timeout 20 &&
		expect_eq "$(json_get mode)" "$mode" "mirror --mode $mode: mode"
	[ -z "$(qemu-img info --output=json "m-$mode/dst.qcow2" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("backing-filename",""))')" ] &&
		ok "full mirror: no backing" || fail "full mirror has a backing file"
done

mirror_ok m-paced "--guest-rate 10M --verify" --guest-rate 10M --verify
mirror_ok m-abort "--abort" --abort --guest-rate 20M &&
	expect_eq "$(json_get ended)" abort "mirror --abort ends with an abort"
mirror_ok m-shallow "--shallow" --shallow --guest-rate 20M &&
	expect_eq "$(qemu-img info --output=json m-shallow/dst.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["backing-filename"])')" \
		"$T/m-shallow/mid.qcow2" "shallow mirror: backed by the source's backing"

# --- a disk far larger than the guest's memory ------------------------------
# The shadow is a generation per 4 KiB block, not a copy of the disk: a
# 4 GiB chain mirrors in well under 200 MiB of RSS (it was 4 GiB).
mkdir big
qimg create -q -f qcow2 big/base.qcow2 4G
qio -c 'write -P 0x11 0 8M' -c 'write -P 0x12 3G 8M' big/base.qcow2
qimg create -q -f qcow2 -b base.qcow2 -F qcow2 big/top.qcow2
rss=$(python3 - "$BLOCKCOPY" "$T/out" <<'EOF'
import resource, subprocess, sys
with open(sys.argv[2], "w") as out:
    subprocess.run([sys.argv[1], "mirror", "--json", "--duration", "0.5", "--guest-rate", "20M",
                    "big/top.qcow2", "big/dst.qcow2"], stdout=out, timeout=120)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
EOF
)
expect_eq "$(json_get verified)" True "mirror of a 4 GiB chain verified"
expect_eq "$(json_get shadow_bytes)" $((4 * 1024 * 1024 * 1024 / 4096 * 13)) "the 4 GiB shadow takes 13 bytes per block"
[ "${rss:-999999}" -lt 204800 ] && ok "mirror of a 4 GiB chain: RSS ${rss} KiB" || fail "mirror of 4 GiB: RSS ${rss} KiB"
rm -rf big

# --- the checks can fail: a reused DST over another backing file -----------
# --shallow --reuse-external copies only top's data into DST; DST's own
# backing (0x77 everywhere) then shows through where top has no data, so
# after the pivot the guest reads what it never wrote.
fresh m-wrong
qimg create -q -f qcow2 m-wrong/other.qcow2 64M
qio -c 'write -P 0x77 0 64M' m-wrong/other.qcow2
qimg create -q -f qcow2 -b other.qcow2 -F qcow2 m-wrong/dst.qcow2
bc mirror --json --duration 0.6 --guest-rate 10M --shallow --reuse-external m-wrong/top.qcow2 m-wrong/dst.qcow2
assert_rc 1 "mirror onto a DST with the wrong backing fails"
expect_eq "$(json_get verified)" False "wrong backing: verified false"
# Whichever notices first: a guest read, a discard read back, or the check.
grep -Eq "differs from what|left neither the old data nor zeros" "$T/err" &&
	ok "wrong backing: the message says what differs" || fail "wrong backing: $(bc_said)"

# --- not converging: 1 MiB/s cannot copy 28 MiB within 1 s --------------------
fresh m-slow
bc mirror --json --duration 0.2 --timeout 1 --bandwidth 1 m-slow/top.qcow2 m-slow/dst.qcow2
assert_rc 1 "mirror that does not converge exits 1"
expect_eq "$(json_get converged)" False "not converged: converged false"
expect_eq "$(json_get mirroring_seconds)" None "not converged: mirroring_seconds null"
expect_eq "$(json_get verified)" True "not converged: the source still verified"
grep -q "did not converge" "$T/err" && ok "not converged: message" || fail "not converged: $(bc_said)"
check_clean m-slow/top.qcow2

# --- a missing source -------------------------------------------------------
bc mirror --duration 0.2 nonexistent.qcow2 out.qcow2
assert_rc 1 "mirror of a missing source"
[ ! -e out.qcow2 ] && ok "no destination made for a missing source" || fail "out.qcow2 created"

finish

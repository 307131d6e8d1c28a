#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# One harness, bounded: replay every input of tests/fuzz/regress/ (each
# must run clean), then fuzz for SECONDS from the seed corpus (made into
# the build dir on first use) and a working corpus kept beside it.
#   run-fuzz.sh HARNESS_EXE SECONDS SEED_DIR CORPUS_DIR
# (BC_FUZZ_SECONDS in the environment wins over SECONDS.)
# A crash leaves its input in CORPUS_DIR/../artifacts/ and fails; keep it
# in tests/fuzz/regress/ once fixed. Exit 77 when the seeds cannot be made.
set -u
exe=$1 secs=${BC_FUZZ_SECONDS:-$2} seeds=$3 corpus=$4
here=$(cd "$(dirname "$0")" && pwd)
name=$(basename "$exe")
"$here/make-seeds.sh" "$seeds" || exit $?
mkdir -p "$corpus" "$corpus/../artifacts"
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
regress=()
for f in "$here"/regress/*; do
	case $f in *.md) ;; *) [ -f "$f" ] && regress+=("$f") ;; esac
done
if [ ${#regress[@]} -gt 0 ]; then
	"$exe" -runs=0 "${regress[@]}" >"$corpus/../$name.regress.log" 2>&1 ||
		{ tail -40 "$corpus/../$name.regress.log"; echo "$name: a regression input fails"; exit 1; }
	echo "$name: ${#regress[@]} regression inputs replayed clean"
fi
"$exe" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=131072 \
	-print_final_stats=1 -artifact_prefix="$corpus/../artifacts/$name-" \
	"$corpus" "$seeds" >"$corpus/../$name.log" 2>&1
rc=$?
grep -E '^#[0-9]+.*(DONE|pulse)|stat::number_of_executed_units|stat::average_exec_per_sec' \
	"$corpus/../$name.log" | tail -4
if [ $rc -ne 0 ]; then
	grep -E 'ERROR|SUMMARY|Test unit written' "$corpus/../$name.log" | head -10
	echo "$name: fuzzing found a failure (exit $rc); log: $corpus/../$name.log"
	exit 1
fi
exit 0

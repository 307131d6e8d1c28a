#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# libblockcopy.so exports only bc_* symbols (version script BC_1.0), and
# every function declared BC_API in blockcopy.h is among them; it holds no
# fault-injection code.
set -u
so=$1 header=$2
command -v nm >/dev/null || { echo "nm not installed: skipping"; exit 77; }
bad=$(nm -D --defined-only "$so" | awk '$2 ~ /[TDBRW]/ {print $3}' | sed 's/@.*//' | grep -v '^bc_' | grep -vE '^BC_1\.[0-9]+$' || true)
if [ -n "$bad" ]; then
	echo "exported names not starting with bc_:"; echo "$bad"; exit 1
fi
# Fault injection is test-only: nothing of it in the shipped library
# (its symbol table, not just the exports: iob_fault_*, fault_ops, ...).
faulty=$(nm "$so" 2>/dev/null | grep -E '(^| |_)fault' || true)
if [ -n "$faulty" ]; then
	echo "fault-injection symbols in $so:"; echo "$faulty"; exit 1
fi
fail=0
for f in $(grep -oE 'BC_API [^(]*\(' "$header" | grep -oE 'bc_[a-z_]+ *\(' | tr -d ' ('); do
	if ! nm -D --defined-only "$so" | grep -qE " T $f(@|$)"; then
		echo "declared but not exported: $f"; fail=1
	fi
done
n=$(nm -D --defined-only "$so" | grep -c ' T bc_')
echo "$n bc_* functions exported, nothing else"
exit $fail

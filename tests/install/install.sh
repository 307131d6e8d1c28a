#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# meson install into a scratch prefix, then build programs against the
# installed tree only (pkg-config), as an embedder or packager would:
# shared and static, with -Wall -Wextra -Werror, and run them.
#   install.sh BUILD_DIR SOURCE_DIR [SANITIZERS]
# In a sanitizer build the programs are built with the same sanitizers
# (the library needs their runtime) and the static link is skipped (the
# sanitizers' runtimes cannot be linked statically).
set -u
build=$1 src=$2 san=${3:-none}
mkdir -p "${BC_TEST_TMPDIR:-/tmp}"
tmp=$(mktemp -d "${BC_TEST_TMPDIR:-/tmp}/install.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
fail=0
ok() { echo "ok - $*"; }
bad() { echo "not ok - $*"; fail=1; }

meson install -C "$build" --no-rebuild --destdir "$tmp/dest" >"$tmp/install.log" 2>&1 ||
	{ cat "$tmp/install.log"; echo "meson install failed"; exit 1; }
pc=$(find "$tmp/dest" -name blockcopy.pc | head -1)
[ -n "$pc" ] || { echo "blockcopy.pc not installed"; exit 1; }
export PKG_CONFIG_PATH=$(dirname "$pc") PKG_CONFIG_SYSROOT_DIR=$tmp/dest
libdir=$(dirname "$(dirname "$pc")")
cflags=$(pkg-config --cflags blockcopy) || exit 1
libs=$(pkg-config --libs blockcopy) || exit 1
# The static archive, the libraries under it shared (a fully static
# program would need static builds of libnbd's own dependencies, which
# its .pc file does not list).
slibs=$(pkg-config --static --libs blockcopy | sed 's/-lblockcopy/-Wl,-Bstatic -lblockcopy -Wl,-Bdynamic/') || exit 1
CC=${CC:-cc}
W="-std=c11 -Wall -Wextra -Werror"
[ "$san" != none ] && W="$W -fsanitize=$san"

# The installed header is the only one the programs see.
[ -f "$tmp/dest$(pkg-config --variable=includedir blockcopy | sed "s|^$tmp/dest||")/blockcopy.h" ] &&
	ok "header installed" || bad "header installed"

# Only the public calls are defined by the installed archive.
extra=$(nm -g --defined-only "$libdir/libblockcopy.a" | awk 'NF==3 {print $3}' |
	grep -vxF -f <(grep -oE '^[[:space:]]+bc_[a-z0-9_]+;' "$src/lib/libblockcopy.map" | tr -d ' \t;'))
[ -z "$extra" ] && ok "libblockcopy.a defines only the public calls" ||
	bad "libblockcopy.a defines non-public symbols: $(echo $extra | head -c 300)"

for prog in examples/copy-pivot.c tests/install/clash.c; do
	name=$(basename "$prog" .c)
	if $CC $W $cflags "$src/$prog" -o "$tmp/$name-shared" $libs 2>"$tmp/cc.log"; then
		ok "$name builds against the shared library"
	else
		cat "$tmp/cc.log"; bad "$name builds against the shared library"
	fi
	if [ "$san" != none ]; then
		echo "ok - $name builds against the static archive # SKIP sanitizer build"
	elif $CC $W $cflags "$src/$prog" -o "$tmp/$name-static" $slibs 2>"$tmp/cc.log" &&
	     ! ldd "$tmp/$name-static" | grep -q libblockcopy; then
		ok "$name builds against the static archive"
	else
		cat "$tmp/cc.log"; bad "$name builds against the static archive"
	fi
done

run() { # name, expected output line, command...
	local name=$1 want=$2; shift 2
	local out
	out=$("$@" 2>&1)
	if [ $? -eq 0 ] && grep -qxF "$want" <<<"$out"; then ok "$name"; else echo "$out"; bad "$name"; fi
}
run "clash runs (shared)" "clash: ok" env LD_LIBRARY_PATH="$libdir" "$tmp/clash-shared"
[ "$san" = none ] && run "clash runs (static)" "clash: ok" "$tmp/clash-static"
# The shared program really uses the installed library.
ldd_out=$(LD_LIBRARY_PATH="$libdir" ldd "$tmp/copy-pivot-shared" | grep libblockcopy)
grep -q "$libdir" <<<"$ldd_out" && ok "copy-pivot loads the installed libblockcopy.so" ||
	bad "copy-pivot loads the installed libblockcopy.so: $ldd_out"

kinds="shared static"
[ "$san" != none ] && kinds=shared
for kind in $kinds; do
	img=$tmp/src-$kind.qcow2 dst=$tmp/dst-$kind.qcow2
	"$build/tools/blockcopy" create -f qcow2 "$img" 64M >/dev/null || exit 1
	qemu-io -c "write -P 0x5a 1M 3M" "$img" >/dev/null 2>&1 || { echo "qemu-io missing"; exit 77; }
	run "copy-pivot ($kind) pivots" "the disk now lives on $dst" \
		env LD_LIBRARY_PATH="$libdir" "$tmp/copy-pivot-$kind" "$img" "$dst"
	cmp=$(qemu-img compare "$img" "$dst" 2>&1)
	[ "$cmp" = "Images are identical." ] && ok "copy-pivot ($kind) copy is identical" ||
		bad "copy-pivot ($kind) copy is identical: $cmp"
done

# Man pages, when the tree has them, are installed.
if [ -d "$src/man" ]; then
	n_src=$(find "$src/man" -name '*.[0-9]' | wc -l)
	n_inst=$(find "$tmp/dest" -path '*/man/man*' -name '*.[0-9]*' | wc -l)
	[ "$n_inst" -ge "$n_src" ] && ok "man pages installed ($n_inst)" ||
		bad "man pages installed: $n_inst of $n_src"
fi
exit $fail

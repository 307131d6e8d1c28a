#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Rewrite a static archive so that it defines only the public symbols, the
# ones the version script lists: every object is merged into one
# relocatable object (references between the library's own modules are
# resolved there), then every other global symbol becomes local. A program
# linking libblockcopy.a may then define its own job_ref or disk_open
# without a clash, as it may with libblockcopy.so.
#   localize-archive.sh IN.a OUT.a VERSION-SCRIPT
#   localize-archive.sh --installed LIBDIR/libblockcopy.a VERSION-SCRIPT
#       (meson install script: rewrites the installed archive in place)
set -eu
if [ "$1" = "--installed" ]; then
	case $2 in
	/*) in=${DESTDIR:-}$2 ;;
	*) in=$MESON_INSTALL_DESTDIR_PREFIX/$2 ;;
	esac
	out=$in map=$3
else
	in=$1 out=$2 map=$3
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
grep -oE '^[[:space:]]+bc_[a-z0-9_]+;' "$map" | tr -d ' \t;' >"$tmp/public"
${LD:-ld} -r --whole-archive "$in" -o "$tmp/blockcopy.o"
${OBJCOPY:-objcopy} --keep-global-symbols="$tmp/public" "$tmp/blockcopy.o"
rm -f "$out.tmp"
${AR:-ar} rcD "$out.tmp" "$tmp/blockcopy.o"
mv "$out.tmp" "$out"

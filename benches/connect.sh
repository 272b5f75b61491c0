#!/usr/bin/env bash
# Connects per second with token authentication, against anonymous
# connections in the same run: two fresh brokers (one with an identity, one
# in the development profile), each taking TOTAL connections, PARALLEL at a
# time, from devices/worker-sdk/examples/connect_bench.rs; alternated ROUNDS
# times. The issue's target: at least 2,000 authenticated connects/s.
#
#   benches/connect.sh [TOTAL] [PARALLEL] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
TOTAL=${1:-5000} PARALLEL=${2:-50} ROUNDS=${3:-3}
cargo build --release -q -p swarmq
cargo build --release -q -p swarmq-worker --example connect_bench
BENCH=target/release/examples/connect_bench
pids=() dirs=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "${dirs[@]}"; }
trap cleanup EXIT
start() { # data dir -> prints host:port
  local log="$1/log"
  TOKIO_WORKER_THREADS=${BROKER_THREADS:-2} target/release/swarmq serve --mqtt-listen 127.0.0.1:0 \
    --http-listen 127.0.0.1:0 --data-dir "$1/data" >"$log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 100); do grep -q 'listening' "$log" && break; sleep 0.1; done
  grep -o 'mqtt=[0-9.:]*' "$log" | head -1 | cut -d= -f2
}
open_dir=$(mktemp -d) auth_dir=$(mktemp -d); dirs+=("$open_dir" "$auth_dir")
token=$(target/release/swarmq identity add bench --role device --data-dir "$auth_dir/data" | tail -1)
open=$(start "$open_dir") auth=$(start "$auth_dir")
for r in $(seq "$ROUNDS"); do
  echo "round $r:"
  echo "  open:  $("$BENCH" "$open" "$TOTAL" "$PARALLEL")"
  echo "  token: $("$BENCH" "$auth" "$TOTAL" "$PARALLEL" bench "$token")"
done

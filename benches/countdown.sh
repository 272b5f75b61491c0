#!/usr/bin/env bash
# Countdown lateness and the cost of scheduled tasks, against a fresh broker.
#
#   benches/countdown.sh                 # 100,000 tasks due over 60 s
#   TASKS=20000 SPREAD=10 benches/countdown.sh
#   PARK=1000000 benches/countdown.sh    # also: 1,000,000 tasks due in an hour, RSS
#
# Prints the lateness percentiles of the tasks' starts against their due
# times, the broker's RSS, and (with PARK) its RSS holding PARK scheduled
# tasks, then after kill -9 and a restart.
set -euo pipefail
cd "$(dirname "$0")/.."
TASKS=${TASKS:-100000}
SPREAD=${SPREAD:-60}
PARK=${PARK:-0}
cargo build --release -q -p swarmq
cargo build --release -q -p swarmq-worker --example countdown_bench
BIN=target/release
EX=target/release/examples/countdown_bench
DATA=$(mktemp -d)
LOG=$(mktemp)
broker=""
cleanup() { [ -n "$broker" ] && kill "$broker" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$DATA" "$LOG"; }
trap cleanup EXIT
start() {
  : >"$LOG"
  SWARMQ_LOG=info "$BIN/swarmq" serve --mqtt-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --data-dir "$DATA" >"$LOG" 2>&1 &
  broker=$!
  for _ in $(seq 600); do grep -q 'listening' "$LOG" && break; sleep 0.1; done
  URL="mqtt://$(grep -o 'mqtt=[0-9.:]*' "$LOG" | head -1 | cut -d= -f2)"
}
rss() { awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' "/proc/$broker/status"; }
metric() { # sum of a metric's series
  curl -s "http://$(grep -o 'http=[0-9.:]*' "$LOG" | head -1 | cut -d= -f2)/metrics" | awk -v m="$1" '$1 ~ "^"m {s+=$2} END {print s+0}'
}
start
echo "machine: $(nproc) cores; broker RSS at start $(rss)"
"$EX" "$URL" "$TASKS" "$SPREAD"
echo "broker RSS after: $(rss)"
if [ "$PARK" -gt 0 ]; then
  "$EX" "$URL" "$PARK" 0 park
  sleep 2
  held=$(metric swarmq_queue_scheduled)
  echo "broker RSS holding $held scheduled tasks: $(rss); data dir $(du -sm "$DATA" | cut -f1) MiB"
  kill -9 "$broker"; wait "$broker" 2>/dev/null || true
  t0=$(date +%s.%N); start; t1=$(date +%s.%N)
  echo "after kill -9: restarted in $(awk -v a="$t1" -v b="$t0" 'BEGIN{printf "%.1f", a-b}') s, RSS $(rss), scheduled: $(metric swarmq_queue_scheduled) of $held"
fi

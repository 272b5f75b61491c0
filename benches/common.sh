# Shared by the benchmark scripts: builds the release binaries, starts a fresh
# broker on ephemeral ports with an empty data directory and two word-count
# workers (concurrency $CONCURRENCY, default 64), and cleans everything up on
# exit. Settings reach the broker through SWARMQ__… variables in the caller's
# environment. Sets BIN, DATA, LOG, URL, HTTP, broker, workers and pids.
# BIN=DIR takes the binaries from DIR instead of building them (to compare
# two builds, see benches/ab.sh). Source it; do not run it.

if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p swarmq -p word-count
  BIN=target/release
fi
DATA=$(mktemp -d)
LOG=$(mktemp)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DATA" "$LOG"; }
trap cleanup EXIT

SWARMQ_LOG=info TOKIO_WORKER_THREADS=${BROKER_THREADS:-2} \
  "$BIN/swarmq" serve --mqtt-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --data-dir "$DATA" >"$LOG" 2>&1 &
broker=$!; pids+=("$broker")
for _ in $(seq 100); do grep -q 'listening' "$LOG" && break; sleep 0.1; done
URL="mqtt://$(grep -o 'mqtt=[0-9.:]*' "$LOG" | head -1 | cut -d= -f2)"
HTTP="http://$(grep -o 'http=[0-9.:]*' "$LOG" | head -1 | cut -d= -f2)"
for i in 1 2; do
  "$BIN/word-count" worker --url "$URL" --concurrency "${CONCURRENCY:-64}" --client-id "bench-worker-$i" 2>/dev/null &
  pids+=("$!")
done
workers=("${pids[@]:1}")
# Let both workers subscribe before the first run.
"$BIN/word-count" latency --url "$URL" --tasks 100 >/dev/null

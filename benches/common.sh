# Shared by the benchmark scripts: builds the release binaries, starts a fresh
# broker on ephemeral ports with an empty data directory and two word-count
# workers (concurrency $CONCURRENCY, default 64), and cleans everything up on
# exit. Settings reach the broker through SWARMQ__… variables in the caller's
# environment. Sets BIN, DATA, LOG, URL, HTTP, broker, workers and pids.
# BIN=DIR takes the binaries from DIR instead of building them (to compare
# two builds, see benches/ab.sh). AUTH=1 turns authentication and ACLs on:
# identities `producer` (app) and `worker` (worker, queue word_count) in the
# data directory, three [[auth.acl]] rules the broker checks on every publish
# and subscribe, the workers connecting as `worker` and SWARMQ_USERNAME /
# SWARMQ_PASSWORD exported as `producer` for the caller's own clients (see
# benches/auth.sh). Source it; do not run it.

if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p swarmq -p word-count
  BIN=target/release
fi
DATA=$(mktemp -d)
LOG=$(mktemp)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DATA" "$LOG"; }
trap cleanup EXIT

config=()
worker_env=()
if [ "${AUTH:-0}" = 1 ]; then
  producer_token=$("$BIN/swarmq" identity add producer --role app --data-dir "$DATA" | tail -1)
  worker_token=$("$BIN/swarmq" identity add worker --role worker --queue word_count --data-dir "$DATA" | tail -1)
  cat >"$DATA/auth.toml" <<'TOML'
[[auth.acl]]
permission = "deny"
action = "publish"
topic = "devices/+/config"
role = "device"
[[auth.acl]]
permission = "allow"
action = "all"
topic = "site/%u/#"
[[auth.acl]]
permission = "deny"
action = "subscribe"
topic = "secret/#"
TOML
  config=(--config "$DATA/auth.toml")
  worker_env=(SWARMQ_USERNAME=worker SWARMQ_PASSWORD="$worker_token")
  export SWARMQ_USERNAME=producer SWARMQ_PASSWORD="$producer_token"
fi
SWARMQ_LOG=info TOKIO_WORKER_THREADS=${BROKER_THREADS:-2} \
  "$BIN/swarmq" serve --mqtt-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --data-dir "$DATA" "${config[@]}" >"$LOG" 2>&1 &
broker=$!; pids+=("$broker")
for _ in $(seq 100); do grep -q 'listening' "$LOG" && break; sleep 0.1; done
URL="mqtt://$(grep -o 'mqtt=[0-9.:]*' "$LOG" | head -1 | cut -d= -f2)"
HTTP="http://$(grep -o 'http=[0-9.:]*' "$LOG" | head -1 | cut -d= -f2)"
for i in 1 2; do
  env "${worker_env[@]}" "$BIN/word-count" worker --url "$URL" --concurrency "${CONCURRENCY:-64}" \
    --client-id "${worker_env:+worker:}bench-worker-$i" 2>/dev/null &
  pids+=("$!")
done
workers=("${pids[@]:1}")
# Let both workers subscribe before the first run.
"$BIN/word-count" latency --url "$URL" --tasks 100 >/dev/null

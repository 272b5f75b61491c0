# Shared by the benchmark scripts: builds the release binaries, starts a fresh
# broker on ephemeral ports with an empty data directory and $WORKERS (default
# two) word-count workers (concurrency $CONCURRENCY, default 64), and cleans everything up on
# exit. Settings reach the broker through SWARMQ__… variables in the caller's
# environment. Sets BIN, DATA, LOG, URL, HTTP, broker, workers and pids.
# BIN=DIR takes the binaries from DIR instead of building them (to compare
# two builds, see benches/ab.sh). AUTH=1 turns authentication and ACLs on:
# identities `producer` (app) and `worker` (worker, queue word_count) in the
# data directory, three [[auth.acl]] rules the broker checks on every publish
# and subscribe, the workers connecting as `worker` and SWARMQ_USERNAME /
# SWARMQ_PASSWORD exported as `producer` for the caller's own clients (see
# benches/auth.sh). Source it; do not run it.
#
# Also defines `measure LABEL CMD…` (runs a producer command and prints its
# last line, its top 5 and the CPU seconds of the broker, the workers and the
# producer) and `start_celery` / `stop_celery` (a private redis-server and a
# Celery worker of 2 prefork processes on benches/celery; CELERY_BROKER is
# exported and celery_pids holds both).

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
for i in $(seq "${WORKERS:-2}"); do
  env "${worker_env[@]}" "$BIN/word-count" worker --url "$URL" --concurrency "${CONCURRENCY:-64}" \
    --client-id "${worker_env:+worker:}bench-worker-$i" 2>/dev/null &
  pids+=("$!")
done
workers=("${pids[@]:1}")
# Let both workers subscribe before the first run.
if [ "${WORKERS:-2}" -gt 0 ]; then "$BIN/word-count" latency --url "$URL" --tasks 100 >/dev/null; fi

cpu() { # utime+stime of a pid, in seconds
  awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$1/stat"
}
cpu_all() { local s=0; for p in "$@"; do s=$(awk -v a="$s" -v b="$(cpu "$p")" 'BEGIN{print a+b}'); done; echo "$s"; }

measure() { # label, command...
  local label=$1; shift
  local b0 w0; b0=$(cpu "$broker"); w0=$(cpu_all "${workers[@]}")
  local out t0 t1; t0=$(awk '{print $14+$15+$16+$17}' /proc/$$/stat)
  out=$("$@")
  local b1 w1; b1=$(cpu "$broker"); w1=$(cpu_all "${workers[@]}")
  # The producer is a finished child: its CPU time is in our cutime/cstime.
  t1=$(awk '{print $14+$15+$16+$17}' /proc/$$/stat)
  local p; p=$(awk -v a="$t1" -v b="$t0" -v hz="$(getconf CLK_TCK)" 'BEGIN{print (a-b)/hz}')
  echo "$label: $(echo "$out" | tail -1)"
  echo "    top 5: $(echo "$out" | head -5 | paste -sd, - | sed 's/,/, /g')"
  awk -v b="$(awk -v x="$b1" -v y="$b0" 'BEGIN{print x-y}')" -v w="$(awk -v x="$w1" -v y="$w0" 'BEGIN{print x-y}')" -v p="$p" \
    'BEGIN{printf "    cpu s: broker %.2f, workers %.2f, producer %.2f; broker share %.0f %%\n", b, w, p, 100*b/(b+w+p)}'
}

start_celery() {
  RPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
  redis_pid=$!
  pids+=("$redis_pid")
  export CELERY_BROKER="redis://127.0.0.1:$RPORT/0"
  for _ in $(seq 50); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  (cd benches/celery && exec celery -A tasks worker -c 2 -P prefork --loglevel=warning >/dev/null 2>&1) &
  celery_worker=$!
  pids+=("$celery_worker")
  celery_pids=("$celery_worker" "$redis_pid")
  for _ in $(seq 100); do (cd benches/celery && celery -A tasks inspect ping >/dev/null 2>&1) && break; sleep 0.2; done
}

stop_celery() {
  # Only the Celery worker this script started (it stops its own pool):
  # never anybody else's Celery on the machine.
  kill "$celery_worker" 2>/dev/null || true
  wait "$celery_worker" 2>/dev/null || true
}

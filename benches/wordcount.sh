#!/usr/bin/env bash
# Word-count benchmark against a fresh broker, as the original experiment ran:
# one mapper(word) task per word, 2 workers, results reduced by the producer.
#
#   benches/wordcount.sh            # 2,190 words x3, gulliver.txt x2, 2,000 round trips
#   RUNS=1 benches/wordcount.sh
#
# Prints tasks/s for each run, round-trip p50/p99 (one task at a time), and the
# CPU seconds each process used, so the broker's share of the work is visible.
# Then, when redis-server and celery are installed (apt-get install
# redis-server; pip install celery redis packaging), runs the original Celery
# + Redis setup on the same 2,190 words as the anchor, and prints the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
CONCURRENCY=${CONCURRENCY:-64}
TEXT=devices/word-count/text

# shellcheck source=benches/common.sh
. benches/common.sh

cpu() { # utime+stime of a pid, in seconds
  awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$1/stat"
}
cpu_all() { local s=0; for p in "$@"; do s=$(awk -v a="$s" -v b="$(cpu "$p")" 'BEGIN{print a+b}'); done; echo "$s"; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
echo "swarmq $($BIN/swarmq --version | cut -d' ' -f2), 2 workers x concurrency $CONCURRENCY, broker at $URL"

run() { # label, args...
  local label=$1; shift
  local b0 w0; b0=$(cpu "$broker"); w0=$(cpu_all "${workers[@]}")
  local out t0 t1; t0=$(awk '{print $14+$15+$16+$17}' /proc/$$/stat)
  out=$("$BIN/word-count" "$@")
  local b1 w1; b1=$(cpu "$broker"); w1=$(cpu_all "${workers[@]}")
  # The producer is a finished child: its CPU time is in our cutime/cstime.
  t1=$(awk '{print $14+$15+$16+$17}' /proc/$$/stat)
  local p; p=$(awk -v a="$t1" -v b="$t0" -v hz="$(getconf CLK_TCK)" 'BEGIN{print (a-b)/hz}')
  echo "$label: $(echo "$out" | tail -1)"
  echo "    top 5: $(echo "$out" | head -5 | paste -sd, - | sed 's/,/, /g')"
  awk -v b="$(awk -v x="$b1" -v y="$b0" 'BEGIN{print x-y}')" -v w="$(awk -v x="$w1" -v y="$w0" 'BEGIN{print x-y}')" -v p="$p" \
    'BEGIN{printf "    cpu s: broker %.2f, workers %.2f, producer %.2f\n", b, w, p}' 
}

for i in $(seq "$RUNS"); do
  run "aesop 2190 words, run $i" count --url "$URL" --words 2190 "$TEXT/aesop11.txt"
done
for i in $(seq $(( RUNS > 1 ? 2 : 1 ))); do
  run "gulliver 104110 words, run $i" count --url "$URL" "$TEXT/gulliver.txt"
done
echo "single round trips (one task at a time):"
echo "    $("$BIN/word-count" latency --url "$URL" --tasks 2000)"

# The anchor: the original Celery + Redis pattern, same machine, same run.
if command -v redis-server >/dev/null && python3 -c 'import celery, redis' 2>/dev/null; then
  for p in "${workers[@]}" "$broker"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  RPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
  pids+=("$!")
  export CELERY_BROKER="redis://127.0.0.1:$RPORT/0"
  for _ in $(seq 50); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  (cd benches/celery && exec celery -A tasks worker -c 2 -P prefork --loglevel=warning >/dev/null 2>&1) &
  celery_worker=$!
  pids+=("$celery_worker")
  for _ in $(seq 100); do (cd benches/celery && celery -A tasks inspect ping >/dev/null 2>&1) && break; sleep 0.2; done
  celery_out=$(cd benches/celery && python3 producer.py "../../$TEXT/aesop11.txt" 2190)
  echo "anchor, Celery + Redis (2 prefork processes), 2190 words: $(echo "$celery_out" | tail -1)"
  echo "    top 5: $(echo "$celery_out" | sed -n '1,5p' | paste -sd, - | sed 's/,/, /g')"
  # Only the Celery worker this script started (it stops its own pool):
  # never anybody else's Celery on the machine.
  kill "$celery_worker" 2>/dev/null || true
  wait "$celery_worker" 2>/dev/null || true
else
  echo "anchor skipped: needs redis-server and the Python packages celery, redis, packaging"
fi

#!/usr/bin/env bash
# Workflow benchmark: the Gulliver word count (104,110 words) as one
# workflow the broker runs, against Celery 5 + Redis running the same canvas
# on the same words in the same run.
#
#   benches/workflows.sh                 # chord x RUNS, chunks of 100 x RUNS, then Celery
#   RUNS=1 CELERY_CHORD_TIMEOUT=120 benches/workflows.sh
#   ANCHOR=0 benches/workflows.sh      # swarmq only
#
# swarmq: `word-count count --chord` (one mapper per word as the chord's
# header, the reduce as its body) and `--chunks 100` (chunks of 100 words,
# then the reduce), 2 workers. Prints members/s, the top 5, and the CPU
# seconds of the broker, the workers and the producer (the broker's share).
# A probe (benches/puback_probe.py) times other clients' PUBACKs while one
# chord is submitted.
# Celery: `chord(mapper.s(w) for w in words)(reduce.s())` and
# `chord(mapper.chunks(words, 100).group(), reduce.s())` with 2 prefork
# processes and Redis as broker and result backend, when redis-server and
# the Python packages celery and redis are installed. Celery's chord of
# 104,111 members is given CELERY_CHORD_TIMEOUT seconds (default 600).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
CONCURRENCY=${CONCURRENCY:-64}
TEXT=devices/word-count/text
GULLIVER=$TEXT/gulliver.txt

# shellcheck source=benches/common.sh
. benches/common.sh

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
echo "swarmq $($BIN/swarmq --version | cut -d' ' -f2), 2 workers x concurrency $CONCURRENCY, broker at $URL"

for i in $(seq "$RUNS"); do
  measure "gulliver chord, run $i" "$BIN/word-count" count --url "$URL" --chord "$GULLIVER"
done
# Other clients while a 6 MB chord is read, stored and expanded: PUBACK
# latency of a probe publishing a task every 5 ms to another queue.
hostport=${URL#mqtt://}
python3 benches/puback_probe.py "${hostport%:*}" "${hostport##*:}" 8 &
probe=$!
sleep 1
measure "gulliver chord with the probe running" "$BIN/word-count" count --url "$URL" --chord "$GULLIVER"
wait "$probe"
for i in $(seq "$RUNS"); do
  measure "gulliver chunks of 100, run $i" "$BIN/word-count" count --url "$URL" --chunks 100 "$GULLIVER"
done

if [ "${ANCHOR:-1}" = 1 ] && command -v redis-server >/dev/null && python3 -c 'import celery, redis' 2>/dev/null; then
  for p in "${workers[@]}" "$broker"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  start_celery
  measure_celery() { # label, workflows.py args...
    local label=$1; shift
    local c0 c1 out
    c0=$(cpu_all "${celery_pids[@]}")
    out=$(cd benches/celery && python3 workflows.py "$@")
    c1=$(cpu_all "${celery_pids[@]}")
    echo "$label: $(echo "$out" | tail -1)"
    echo "$out" | grep -q 'did not finish' || echo "    top 5: $(echo "$out" | head -5 | paste -sd, - | sed 's/,/, /g')"
    awk -v a="$c1" -v b="$c0" 'BEGIN{printf "    cpu s: celery workers and redis %.2f\n", a-b}'
  }
  measure_celery "anchor, Celery chunks of 100" chunks "../../$GULLIVER" 100 600
  measure_celery "anchor, Celery chord" chord "../../$GULLIVER" "${CELERY_CHORD_TIMEOUT:-600}"
  stop_celery
else
  echo "anchor skipped: needs redis-server and the Python packages celery, redis, packaging"
fi

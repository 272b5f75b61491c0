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

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
echo "swarmq $($BIN/swarmq --version | cut -d' ' -f2), 2 workers x concurrency $CONCURRENCY, broker at $URL"

run() { measure "$1" "$BIN/word-count" "${@:2}"; }

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
  start_celery
  celery_out=$(cd benches/celery && python3 producer.py "../../$TEXT/aesop11.txt" 2190)
  echo "anchor, Celery + Redis (2 prefork processes), 2190 words: $(echo "$celery_out" | tail -1)"
  echo "    top 5: $(echo "$celery_out" | sed -n '1,5p' | paste -sd, - | sed 's/,/, /g')"
  stop_celery
else
  echo "anchor skipped: needs redis-server and the Python packages celery, redis, packaging"
fi

#!/usr/bin/env bash
# The Python package against Celery, both in Python, on the original word
# count (2,190 words of aesop11.txt, one mapper(word) task each):
# devices/python/examples/word_count (swarmq's tasks.py and the producer,
# which is the Celery one unchanged) against benches/celery (Celery 5 +
# Redis, 2 prefork processes), alternating, in the same run.
#
#   benches/python.sh [ROUNDS] [WORDS]        # default 3 rounds, 2190 words
#
# Needs redis-server and `pip install celery redis paho-mqtt`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
WORDS=${2:-2190}
TEXT=$PWD/devices/word-count/text/aesop11.txt
CONCURRENCY_PY=${CONCURRENCY_PY:-64}
WORKERS=0
. benches/common.sh

example=devices/python/examples/word_count
(cd "$example" && SWARMQ_URL=$URL PYTHONPATH=$PWD/../.. exec python3 -m swarmq worker -A tasks -c "$CONCURRENCY_PY" -P "${POOL:-solo}") &
pyworker=$!; pids+=("$pyworker"); workers=("$pyworker")
for _ in $(seq 100); do curl -fs "$HTTP/api/v1/workers" | grep -q '"online":true' && break; sleep 0.1; done
start_celery
echo "python worker: 1 process, pool ${POOL:-solo}, concurrency $CONCURRENCY_PY; celery: 2 prefork processes; $WORDS words"

rate() { sed -n 's/.*(\([0-9]*\) tasks\/s).*/\1/p' <<<"$1" | tail -1; }
ratios=()
for round in $(seq "$ROUNDS"); do
  py=$(cd "$example" && SWARMQ_URL=$URL PYTHONPATH=$PWD/../.. python3 producer.py "$TEXT" "$WORDS")
  echo "round $round swarmq (python): $(tail -1 <<<"$py")"
  echo "    top 5: $(head -5 <<<"$py" | paste -sd, - | sed 's/,/, /g')"
  ce=$(cd benches/celery && python3 producer.py "$TEXT" "$WORDS")
  echo "round $round celery + redis:  $(tail -1 <<<"$ce")"
  echo "    top 5: $(head -5 <<<"$ce" | paste -sd, - | sed 's/,/, /g')"
  ratios+=("$(awk -v a="$(rate "$py")" -v b="$(rate "$ce")" 'BEGIN{printf "%.1f", a/b}')")
done
stop_celery
echo "swarmq/celery tasks/s per round: ${ratios[*]}"

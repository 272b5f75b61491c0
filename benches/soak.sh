#!/usr/bin/env bash
# Memory soak: 1,000,000+ tasks through one broker with the history on and
# its retention enforced, printing the broker's resident memory as it goes.
#
#   benches/soak.sh                  # 10 x gulliver.txt = 1,041,100 tasks
#   ROUNDS=3 MAX_TASKS=50000 benches/soak.sh
#
# Each round counts all of gulliver.txt (104,110 tasks) with 2 workers; after
# each, one line: tasks so far, RSS and peak RSS of the broker, tasks retained
# in the history, and the size of the data directory. Flat memory means RSS
# stops growing once the history is full and retention removes as much as
# comes in. Needs curl and jq.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-10}
MAX_TASKS=${MAX_TASKS:-100000}
TEXT=devices/word-count/text/gulliver.txt

export SWARMQ__HISTORY__MAX_TASKS=$MAX_TASKS
# shellcheck source=benches/common.sh
. benches/common.sh

kib() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$broker/status"; }
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; history.max_tasks = $MAX_TASKS"
printf "%6s %10s %9s %9s %9s %9s %8s %8s\n" round tasks tasks/s rss_mib peak_mib retained backlog data_mib
printf "%6s %10s %9s %9.1f %9.1f %9s %8s %8s\n" 0 0 - "$(echo "$(kib VmRSS)/1024" | bc -l)" "$(echo "$(kib VmHWM)/1024" | bc -l)" 0 0 "$(du -sm "$DATA" | cut -f1)"
total=0
for r in $(seq "$ROUNDS"); do
  out=$("$BIN/word-count" count --url "$URL" "$TEXT" | tail -1)
  total=$((total + $(echo "$out" | awk '{print $1}')))
  rate=$(echo "$out" | grep -o '([0-9]* tasks/s)' | tr -d '(' | awk '{print $1}')
  # Let the recorder write the round's last batch before reading the figures.
  for _ in $(seq 50); do
    [ "$(curl -s "$HTTP/metrics" | awk '/^swarmq_history_backlog /{print $2}')" = 0 ] && break
    sleep 0.1
  done
  ov=$(curl -s "$HTTP/api/v1/overview")
  printf "%6s %10s %9s %9.1f %9.1f %9s %8s %8s\n" "$r" "$total" "$rate" \
    "$(echo "$(kib VmRSS)/1024" | bc -l)" "$(echo "$(kib VmHWM)/1024" | bc -l)" \
    "$(echo "$ov" | jq .history.retained)" \
    "$(curl -s "$HTTP/metrics" | awk '/^swarmq_history_backlog /{print $2}')" \
    "$(du -sm "$DATA" | cut -f1)"
done

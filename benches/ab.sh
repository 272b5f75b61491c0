#!/usr/bin/env bash
# Compares two builds on the gulliver word count (104,110 tasks, 2 workers),
# alternating them so that the machine's load falls on both alike:
#
#   benches/ab.sh OLD_BIN_DIR NEW_BIN_DIR [ROUNDS]
#
# Each round starts a fresh broker and workers from one build (through
# benches/common.sh), counts gulliver.txt once, and prints its tasks/s;
# then the other build. Ends with the median of each and their ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1 NEW=$2 ROUNDS=${3:-5}
TEXT=devices/word-count/text/gulliver.txt
one() { # bin dir -> tasks/s of one fresh run
  BIN=$1 bash -c '. benches/common.sh; "$BIN/word-count" count --url "$URL" "$0" | tail -1' "$TEXT" |
    sed -n 's/.*(\([0-9.]*\) tasks\/s).*/\1/p'
}
old=() new=()
for r in $(seq "$ROUNDS"); do
  o=$(one "$OLD"); n=$(one "$NEW")
  old+=("$o"); new+=("$n")
  echo "round $r: old $o tasks/s, new $n tasks/s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
mo=$(median "${old[@]}"); mn=$(median "${new[@]}")
echo "median: old $mo, new $mn tasks/s; new/old = $(awk -v a="$mn" -v b="$mo" 'BEGIN{printf "%.3f", a/b}')"

#!/usr/bin/env bash
# The gulliver word count (104,110 tasks, 2 workers) with authentication and
# ACLs on against the same count with them off, alternating fresh brokers so
# the machine's load falls on both alike (benches/common.sh, AUTH=0 and 1).
# Ends with the median of each and their ratio; the issue allows at most
# 10 % slower.
#
#   benches/auth.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
TEXT=devices/word-count/text/gulliver.txt
cargo build --release -q -p swarmq -p word-count
one() { # AUTH -> tasks/s of one fresh run
  AUTH=$1 BIN=target/release bash -c '. benches/common.sh; "$BIN/word-count" count --url "$URL" "$0" | tail -1' "$TEXT" |
    sed -n 's/.*(\([0-9.]*\) tasks\/s).*/\1/p'
}
off=() on=()
for r in $(seq "$ROUNDS"); do
  a=$(one 0); b=$(one 1)
  off+=("$a"); on+=("$b")
  echo "round $r: auth off $a tasks/s, auth on $b tasks/s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
mo=$(median "${off[@]}"); mn=$(median "${on[@]}")
echo "median: off $mo, on $mn tasks/s; on/off = $(awk -v a="$mn" -v b="$mo" 'BEGIN{printf "%.3f", a/b}')"

#!/usr/bin/env bash
# The gulliver word count (104,110 tasks, 2 workers) with authentication and
# ACLs on against the same count with them off, alternating fresh brokers so
# the machine's load falls on both alike (benches/common.sh, AUTH=0 and 1).
# Each run also reports the broker's CPU time (user + system, from /proc),
# which the machine's noise moves far less than the rate. Ends with the
# medians and their ratios; the issue allows at most 10 % slower.
#
#   benches/auth.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
TEXT=devices/word-count/text/gulliver.txt
cargo build --release -q -p swarmq -p word-count
one() { # AUTH -> "tasks/s broker-cpu-seconds" of one fresh run
  AUTH=$1 BIN=target/release bash -c '. benches/common.sh
    cpu() { awk "{print (\$14 + \$15) / $(getconf CLK_TCK)}" /proc/$broker/stat; }
    before=$(cpu)
    rate=$("$BIN/word-count" count --url "$URL" "$0" | tail -1 | sed -n "s/.*(\([0-9.]*\) tasks\/s).*/\1/p")
    echo "$rate $(awk -v a="$(cpu)" -v b="$before" "BEGIN{printf \"%.2f\", a-b}")"' "$TEXT"
}
off=() on=() offc=() onc=()
for r in $(seq "$ROUNDS"); do
  read -r a ac < <(one 0); read -r b bc < <(one 1)
  off+=("$a"); on+=("$b"); offc+=("$ac"); onc+=("$bc")
  echo "round $r: auth off $a tasks/s (broker CPU $ac s), auth on $b tasks/s (broker CPU $bc s)"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
mo=$(median "${off[@]}"); mn=$(median "${on[@]}"); co=$(median "${offc[@]}"); cn=$(median "${onc[@]}")
echo "median: off $mo, on $mn tasks/s; on/off = $(awk -v a="$mn" -v b="$mo" 'BEGIN{printf "%.3f", a/b}')"
echo "median broker CPU: off $co s, on $cn s; on/off = $(awk -v a="$cn" -v b="$co" 'BEGIN{printf "%.3f", a/b}')"

#!/usr/bin/env bash
# Two builds of Tessera through the same benchmark script in one run: A, B, A, B (each round
# alternates, so drift in the machine's load falls on both), with each run's output and the
# CPU time of every process it started (servers, peers and the load generator: the script's
# waited-for descendants, user + system) and that CPU per operation (over the operations the
# output's latency lines count).
#
#   bench/scripts/ab.sh OLD_BIN NEW_BIN SCRIPT [ARGS...]
#   e.g. bench/scripts/ab.sh ../old/target/release target/release bench/scripts/replicated-vs-single.sh
#
# OLD_BIN and NEW_BIN are directories holding tessera and tessera-load (the script reads BIN).
set -euo pipefail
(( $# >= 3 )) || { sed -n '2,11p' "$0"; exit 2; }
old=$1 new=$2 script=$3
shift 3
for round in 1 2; do
  for side in old new; do
    dir=$old; [[ $side == new ]] && dir=$new
    out=$(mktemp)
    # `times` reports the CPU of the shell and of its waited-for children; the second line is
    # the children's: user and system, as NmN.NNNs.
    ( BIN=$dir bash "$script" "$@" > "$out" 2>&1; times ) > "$out.times"
    cpu=$(sed -n 2p "$out.times" | awk '{
      total = 0
      for (i = 1; i <= 2; i++) { split($i, part, "m"); sub("s", "", part[2]); total += part[1] * 60 + part[2] }
      printf "%.1f", total }')
    # Latency lines: NAME count ops/s p50 p90 p99 p99.9 max (tessera-load's format).
    ops=$(awk '$0 ~ /(put|get|all) +[0-9]+ +[0-9]+/ { for (i = 1; i <= NF; i++) if ($i ~ /^(put|get|all)$/) { sum += $(i + 1); break } } END { printf "%d", sum }' "$out")
    echo "== round $round, $side ($dir): CPU ${cpu}s over $ops operations: $(awk -v c="$cpu" -v o="$ops" 'BEGIN { if (o > 0) printf "%.1f us/op", c * 1e6 / o; else print "n/a" }')"
    cat "$out"
    rm -f "$out" "$out.times"
  done
done

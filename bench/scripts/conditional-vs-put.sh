#!/usr/bin/env bash
# Conditional updates against plain puts at one write rate, on one fresh server: prefills 1M
# items of 1 KiB, then runs puts-only and conditional counter updates alternately, twice,
# printing each run's latency line and the server's CPU per operation.
#
#   cargo build --release -p tessera-tools -p tessera-bench
#   bench/scripts/conditional-vs-put.sh 20000
#
# Uses target/release/{tessera,tessera-load}, a data directory under $TMPDIR and port 7420.
set -euo pipefail
rate=${1:?usage: conditional-vs-put.sh WRITES_PER_SECOND}
bin=${BIN:-target/release}
data=${TMPDIR:-/tmp}/tessera-conditional-vs-put
endpoint=127.0.0.1:7420
rm -rf "$data"
"$bin/tessera" serve --data-dir "$data" --listen "$endpoint" --cache-mib 2048 >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$data"' EXIT
sleep 1
"$bin/tessera-load" --endpoint "$endpoint" --create 8 --prefill --rate 5000 --duration 1 | grep prefill
sleep 5
cpu() { awk '{print $14 + $15}' "/proc/$server/stat"; }
ticks=$(getconf CLK_TCK)
for pass in 1 2; do
  for mode in puts updates; do
    flags=(--get-ratio 0)
    [ "$mode" = updates ] && flags+=(--updates)
    before=$(cpu)
    line=$("$bin/tessera-load" --endpoint "$endpoint" --rate "$rate" --duration 15 "${flags[@]}" | tail -1)
    after=$(cpu)
    echo "pass $pass $mode: $line  server CPU $(( (after - before) * 1000000 / ticks / (rate * 15) )) us/op"
    sleep 3
  done
done

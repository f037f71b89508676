#!/usr/bin/env bash
# Replicated durable 1 KiB puts on `tessera cluster local --nodes 3` (1 core each), open loop
# at each RATE given (latency from each put's scheduled time), on one cluster kept warm from
# rate to rate: a table of 8 partitions prefilled with 100k items and 15 s of puts at the
# first rate, unrecorded; then each rate for WARMUP seconds (default 5) unrecorded and
# SECONDS_EACH (default 15) measured. Each line gives the rate, tessera-load's p50 p90 p99
# p99.9 (ms), and how many CPUs the three servers and the load generator kept busy over the
# rate's run, to set the latency beside how full the machine was. Then the servers' reports
# of what stalled them.
#
#   cargo build --release -p tessera-tools -p tessera-bench
#   SECONDS_EACH=15 WARMUP=5 bench/scripts/replicated-rate-curve.sh 3000 8000 14000 22000
#
# Uses target/release/{tessera,tessera-load}, data under $TMPDIR, ports 7800-7802.
set -euo pipefail
(( $# > 0 )) || { echo "usage: $0 RATE..." >&2; exit 2; }
seconds=${SECONDS_EACH:-15}
warmup=${WARMUP:-5}
source "$(dirname "$0")/common.sh"
scratch tessera-replicated-rate-curve
load() {
  "$bin/tessera-load" --keys 100000 --value-bytes 1024 --quiet \
    --cluster 127.0.0.1:7800,127.0.0.1:7801,127.0.0.1:7802 "$@"
}
"$bin/tessera" cluster local --nodes 3 --port 7800 --data-dir "$data/cluster" > "$data/cluster.log" 2>&1 &
pids+=($!)
sleep 2
load --create 8 --prefill --rate 5000 --duration 1 > /dev/null
load --get-ratio 0 --rate "$1" --duration 15 > /dev/null
servers=$(pgrep -P "${pids[0]}" | tr '\n' ' ')
ticks() { for pid in $servers; do cat "/proc/$pid/stat"; done | awk '{ sum += $14 + $15 } END { print sum }'; }
hertz=$(getconf CLK_TCK)
echo "rate/s     p50    p90    p99  p99.9 ms | CPUs busy: servers generator"
for rate in "$@"; do
  before=$(ticks)
  TIMEFORMAT='%R %U %S'
  { time load --get-ratio 0 --rate "$rate" --warmup "$warmup" --duration "$seconds" 2> /dev/null | grep '^put' > "$data/line"; } 2> "$data/time"
  after=$(ticks)
  read -r wall user system < "$data/time"
  awk -v rate="$rate" -v wall="$wall" -v user="$user" -v kernel="$system" -v servers=$((after - before)) -v hertz="$hertz" \
    '{ printf "%6d %7.2f %6.2f %6.2f %6.2f    |            %5.2f   %5.2f\n",
       rate, $4, $5, $6, $7, servers / hertz / wall, (user + kernel) / wall }' "$data/line"
done
grep -E 'WAL flush|ran .* late|no longer leads' "$data/cluster.log" | sed 's/^/reported: /' || true

#!/usr/bin/env bash
# Replicated durable 1 KiB puts on a 3-node cluster against a single node, in one run on one
# machine: a single node (1 core), then `tessera cluster local --nodes 3` (1 core each); each
# gets a table of 8 partitions prefilled with 100k items, then closed-loop puts at 64 and 512
# calls in flight, then open-loop puts at half the higher of those two rates (latency from
# each put's scheduled time), printing tessera-load's latency line (count, ops/s, p50 p90 p99
# p99.9 max ms). Each of those runs is measured after WARMUP seconds (default 10) of the same
# load, unrecorded: a fresh server's memory grows for its first ~20 s under puts, and on a
# virtual machine every first touch of a page is slow. After each setup, the servers' reports
# of what stalled them (WAL flushes of 100 ms or more, cores running 100 ms or more late,
# replicas that stopped leading) are printed.
#
#   cargo build --release -p tessera-tools -p tessera-bench
#   bench/scripts/replicated-vs-single.sh [SECONDS [WARMUP]]
#
# Uses target/release/{tessera,tessera-load}, data under $TMPDIR, ports 7700 and 7800-7802.
set -euo pipefail
seconds=${1:-10}
warmup=${2:-10}
source "$(dirname "$0")/common.sh"
scratch tessera-replicated-vs-single
load() { "$bin/tessera-load" --keys 100000 --value-bytes 1024 "$@"; }
measure() {
  local name=$1; shift
  load "$@" --create 8 --prefill --rate 5000 --duration 1 > /dev/null
  local peak=0 line rate
  for concurrency in 64 512; do
    line=$(load "$@" --get-ratio 0 --concurrency "$concurrency" --warmup "$warmup" --duration "$seconds" | grep '^put')
    echo "$name, $concurrency in flight: $line"
    rate=$(echo "$line" | awk '{printf "%d", $3}')
    if (( rate > peak )); then peak=$rate; fi
  done
  echo "$name, open loop at $((peak / 2))/s (half its peak): $(load "$@" --get-ratio 0 --rate $((peak / 2)) --warmup "$warmup" --duration "$seconds" | grep '^put')"
}
stalls() { grep -E 'WAL flush|ran .* late|no longer leads' "$1" | sed "s/^/$2 reported: /" || true; }
"$bin/tessera" serve --cores 1 --data-dir "$data/single" --listen 127.0.0.1:7700 > "$data/single.log" 2>&1 &
pids+=($!)
sleep 1
measure "single node" --endpoint 127.0.0.1:7700
kill "${pids[@]}"; wait 2>/dev/null || true; pids=()
stalls "$data/single.log" "single node"
"$bin/tessera" cluster local --nodes 3 --port 7800 --data-dir "$data/cluster" > "$data/cluster.log" 2>&1 &
pids+=($!)
sleep 2
measure "3 nodes" --cluster 127.0.0.1:7800,127.0.0.1:7801,127.0.0.1:7802
kill "${pids[@]}"; wait 2>/dev/null || true; pids=()
stalls "$data/cluster.log" "3 nodes"

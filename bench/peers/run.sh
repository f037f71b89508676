#!/usr/bin/env bash
# Tessera against its peers, side by side in one run on this machine, driven by the same load
# client (tessera-load, with a thin Redis adapter: pipelined connections, as Tessera's own
# client). Installs a missing peer from the machine's package registry.
#
#   cargo build --release -p tessera-tools -p tessera-bench
#   bench/peers/run.sh [SECONDS]
#
# Peers so far: Redis 7 with `appendfsync always` (every write fsynced before its answer, as
# Tessera's are) against a single Tessera node on one core, on 50/50 GetItem/PutItem of 1 KiB
# items over 100k keys: closed loop at 64 and 256 calls in flight, then open loop at 3/4 of
# Redis's peak for both. Prints each run's latency line and Tessera's throughput ratio.
# Uses target/release/{tessera,tessera-load}, data under $TMPDIR, ports 7730 and 6391.
set -euo pipefail
seconds=${1:-10}
bin=${BIN:-target/release}
data=${TMPDIR:-/tmp}/tessera-peers
rm -rf "$data"
mkdir -p "$data/redis"
if ! command -v redis-server > /dev/null; then
  apt-get update -qq && apt-get install -y -qq redis-server > /dev/null
fi
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$data"' EXIT
load() { "$bin/tessera-load" --keys 100000 --value-bytes 1024 --get-ratio 0.5 --quiet "$@"; }
rate_of() { awk '/^all/ {printf "%d", $3}'; }

redis-server --port 6391 --dir "$data/redis" --appendonly yes --appendfsync always --save "" \
  > "$data/redis.log" 2>&1 &
pids+=($!)
"$bin/tessera" serve --cores 1 --data-dir "$data/tessera" --listen 127.0.0.1:7730 > "$data/tessera.log" 2>&1 &
pids+=($!)
sleep 2
load --redis 127.0.0.1:6391 --prefill --rate 1000 --duration 1 > /dev/null
load --endpoint 127.0.0.1:7730 --create 8 --prefill --rate 1000 --duration 1 > /dev/null

declare -A peak
for concurrency in 64 256; do
  for peer in redis tessera; do
    target=(--redis 127.0.0.1:6391); [[ $peer == tessera ]] && target=(--endpoint 127.0.0.1:7730)
    out=$(load "${target[@]}" --concurrency "$concurrency" --duration "$seconds")
    echo "$peer, $concurrency in flight: $(echo "$out" | grep '^all')"
    rate=$(echo "$out" | rate_of)
    if (( rate > ${peak[$peer]:-0} )); then peak[$peer]=$rate; fi
  done
done
echo "peak: tessera ${peak[tessera]}/s, redis ${peak[redis]}/s: $(awk -v t="${peak[tessera]}" -v r="${peak[redis]}" 'BEGIN {printf "%.2fx", t / r}')"
open=$(( peak[redis] * 3 / 4 ))
for peer in redis tessera; do
  target=(--redis 127.0.0.1:6391); [[ $peer == tessera ]] && target=(--endpoint 127.0.0.1:7730)
  echo "$peer, open loop at $open/s: $(load "${target[@]}" --rate "$open" --duration "$seconds" | grep '^all')"
done

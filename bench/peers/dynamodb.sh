#!/usr/bin/env bash
# DynamoDB's HTTP API side by side in one run on this machine: Tessera's HTTP endpoint against
# dynalite (a DynamoDB emulator on Node.js, from npm), and against Tessera's own binary
# protocol on the same server, all driven by tessera-load (its --dynamodb adapter: pipelined
# HTTP/1.1 connections, well-formed credentials signed with nothing, which both servers take).
#
#   cargo build --release -p tessera-tools -p tessera-bench
#   bench/peers/dynamodb.sh [SECONDS]
#
# 50/50 GetItem (strongly consistent) and PutItem of 1 KiB items over 20k keys, prefilled;
# closed loop at 64 and 256 calls in flight for each target, then open loop at 3/4 of
# dynalite's peak for both HTTP servers. A single Tessera node on the machine's cores (its
# writes fsynced before they are answered); dynalite with its default in-memory store (nothing
# durable: the comparison favours it). Prints each run's latency line (count, ops/s, p50 p90
# p99 p99.9 max ms) and the ratios.
# Uses target/release/{tessera,tessera-load}, data under $TMPDIR, ports 7760, 8760 and 8761;
# installs dynalite under ~/.cache/tessera-bench when missing (Node.js from apt when missing).
set -euo pipefail
seconds=${1:-10}
bin=${BIN:-target/release}
data=${TMPDIR:-/tmp}/tessera-dynamodb-peers
cache=${XDG_CACHE_HOME:-$HOME/.cache}/tessera-bench
rm -rf "$data"
mkdir -p "$data" "$cache"
if ! command -v npm > /dev/null; then
  apt-get update -qq && apt-get install -y -qq nodejs npm > /dev/null
fi
if [[ ! -x $cache/node_modules/.bin/dynalite ]]; then
  npm install --no-audit --no-fund --silent --prefix "$cache" dynalite@3 > /dev/null
fi
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$data"' EXIT
load() { "$bin/tessera-load" --keys 20000 --value-bytes 1024 --get-ratio 0.5 --quiet "$@"; }
rate_of() { awk '/^all/ {printf "%d", $3}'; }

"$cache/node_modules/.bin/dynalite" --port 8761 --createTableMs 0 > "$data/dynalite.log" 2>&1 &
pids+=($!)
"$bin/tessera" serve --data-dir "$data/tessera" --listen 127.0.0.1:7760 --http-listen 127.0.0.1:8760 \
  --auth none > "$data/tessera.log" 2>&1 &
pids+=($!)
sleep 2
load --dynamodb 127.0.0.1:8761 --connections 8 --create --prefill --rate 100 --duration 1 > /dev/null
load --dynamodb 127.0.0.1:8760 --connections 8 --create --prefill --rate 100 --duration 1 > /dev/null

target() {
  case $1 in
    dynalite) echo --dynamodb 127.0.0.1:8761 --connections "$2" ;;
    tessera-http) echo --dynamodb 127.0.0.1:8760 --connections "$2" ;;
    tessera-binary) echo --endpoint 127.0.0.1:7760 ;;
  esac
}
declare -A peak
for concurrency in 64 256; do
  # HTTP/1.1 answers in order on a connection: spread the calls over 16 of them.
  for who in dynalite tessera-http tessera-binary; do
    out=$(load $(target "$who" 16) --concurrency "$concurrency" --duration "$seconds")
    echo "$who, $concurrency in flight: $(echo "$out" | grep '^all')"
    rate=$(echo "$out" | rate_of)
    if (( rate > ${peak[$who]:-0} )); then peak[$who]=$rate; fi
  done
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1fx", a / b}'; }
echo "peak: tessera-http ${peak[tessera-http]}/s, dynalite ${peak[dynalite]}/s: $(ratio "${peak[tessera-http]}" "${peak[dynalite]}")"
echo "peak: tessera-binary ${peak[tessera-binary]}/s, tessera-http ${peak[tessera-http]}/s: binary/http $(ratio "${peak[tessera-binary]}" "${peak[tessera-http]}")"
open=$(( peak[dynalite] * 3 / 4 ))
for who in dynalite tessera-http; do
  echo "$who, open loop at $open/s: $(load $(target "$who" 16) --rate "$open" --duration "$seconds" | grep '^all')"
done

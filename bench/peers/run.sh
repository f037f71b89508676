#!/usr/bin/env bash
# Tessera against its peers, side by side in one run on this machine, driven by the same load
# client (tessera-load, with a thin Redis adapter: pipelined connections, as Tessera's own
# client). Installs a missing peer from the machine's package registry.
#
#   cargo build --release -p tessera-tools -p tessera-bench
#   bench/peers/run.sh [SECONDS]
#
# Peers so far:
# * Redis 7 with `appendfsync always` (every write fsynced before its answer, as Tessera's
#   are) against a single Tessera node on one core, on 50/50 GetItem/PutItem of 1 KiB items
#   over 100k keys: closed loop at 64 and 256 calls in flight, then open loop at 3/4 of
#   Redis's peak for both, then the highest steady rate each holds with a p99 under 5 ms
#   (tessera-load --max-rate: the throughput at equal p99).
# * etcd 3.4 as three members on loopback against `tessera cluster local --nodes 3`, on
#   durable replicated puts of 1 KiB items over 10k keys, at 64 and 256 calls in flight
#   (etcd through its v3 JSON gateway, whose HTTP/1.1 connections take one call at a time:
#   as many connections as calls in flight, spread over the members), then the highest
#   steady rate each holds with its p99 under 10 ms.
# Prints each run's latency line and Tessera's throughput ratio.
# Uses target/release/{tessera,tessera-load}, data under $TMPDIR, ports 7730, 7740-7742
# (and 7840-7862 for peers), 6391, and 12379-32380.
set -euo pipefail
seconds=${1:-10}
bin=${BIN:-target/release}
data=${TMPDIR:-/tmp}/tessera-peers
rm -rf "$data"
mkdir -p "$data/redis"
for package in redis-server etcd-server; do
  command=${package%-server}; [[ $package == redis-server ]] && command=redis-server
  if ! command -v "$command" > /dev/null; then
    apt-get update -qq && apt-get install -y -qq "$package" > /dev/null
  fi
done
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$data"' EXIT
load() { "$bin/tessera-load" --keys 100000 --value-bytes 1024 --get-ratio 0.5 --quiet "$@"; }
rate_of() { awk '/^all/ {printf "%d", $3}'; }
max_rate_of() { awk '/^max rate/ {sub("/s", "", $NF); print $NF}'; }

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
# At equal p99: the highest steady rate each holds with its p99 under 5 ms (10 s probes).
declare -A held
for peer in redis tessera; do
  target=(--redis 127.0.0.1:6391); [[ $peer == tessera ]] && target=(--endpoint 127.0.0.1:7730)
  held[$peer]=$(load "${target[@]}" --rate 20000 --max-rate 5 --probe-seconds 10 | max_rate_of)
  echo "$peer, highest rate with p99 <= 5 ms: ${held[$peer]:-none}/s"
done
echo "at p99 <= 5 ms: $(awk -v t="${held[tessera]:-0}" -v r="${held[redis]:-0}" 'BEGIN {if (r > 0) printf "%.2fx", t / r; else print "redis held no rate"}')"
kill "${pids[@]}"; wait 2>/dev/null || true; pids=()

# Replicated durable writes: etcd's three members against Tessera's three nodes.
members=e1=http://127.0.0.1:12380,e2=http://127.0.0.1:22380,e3=http://127.0.0.1:32380
for i in 1 2 3; do
  etcd --name e$i --data-dir "$data/etcd-$i" --listen-client-urls http://127.0.0.1:${i}2379 \
    --advertise-client-urls http://127.0.0.1:${i}2379 --listen-peer-urls http://127.0.0.1:${i}2380 \
    --initial-advertise-peer-urls http://127.0.0.1:${i}2380 --initial-cluster "$members" \
    --initial-cluster-state new --initial-cluster-token tessera-peers > "$data/etcd-$i.log" 2>&1 &
  pids+=($!)
done
"$bin/tessera" cluster local --nodes 3 --port 7740 --data-dir "$data/cluster" > "$data/cluster.log" 2>&1 &
pids+=($!)
sleep 3
etcd=(--etcd 127.0.0.1:12379,127.0.0.1:22379,127.0.0.1:32379)
cluster=(--cluster 127.0.0.1:7740,127.0.0.1:7741,127.0.0.1:7742)
writes() { "$bin/tessera-load" --keys 10000 --value-bytes 1024 --get-ratio 0 --quiet "$@"; }
writes "${etcd[@]}" --connections 22 --prefill --rate 100 --duration 1 > /dev/null
writes "${cluster[@]}" --create 8 --prefill --rate 100 --duration 1 > /dev/null
for concurrency in 64 256; do
  per_member=$(( (concurrency + 2) / 3 ))
  e=$(writes "${etcd[@]}" --connections "$per_member" --concurrency $(( per_member * 3 )) --duration "$seconds")
  t=$(writes "${cluster[@]}" --concurrency "$concurrency" --duration "$seconds")
  echo "etcd, $concurrency in flight: $(echo "$e" | grep '^all')"
  echo "tessera, $concurrency in flight: $(echo "$t" | grep '^all')"
  echo "replicated puts at $concurrency in flight: $(awk -v t="$(echo "$t" | rate_of)" -v e="$(echo "$e" | rate_of)" 'BEGIN {printf "%.1fx", t / e}')"
done
# At equal p99: the highest steady rate of puts each holds with its p99 under 10 ms (10 s
# probes; etcd on 86 connections a member, so calls never queue for one).
e=$(writes "${etcd[@]}" --connections 86 --rate 1000 --max-rate 10 --probe-seconds 10 | max_rate_of)
t=$(writes "${cluster[@]}" --rate 5000 --max-rate 10 --probe-seconds 10 | max_rate_of)
echo "etcd, highest rate of puts with p99 <= 10 ms: ${e:-none}/s"
echo "tessera, highest rate of puts with p99 <= 10 ms: ${t:-none}/s"
echo "replicated puts at p99 <= 10 ms: $(awk -v t="${t:-0}" -v e="${e:-0}" 'BEGIN {if (e > 0) printf "%.1fx", t / e; else print "etcd held no rate"}')"

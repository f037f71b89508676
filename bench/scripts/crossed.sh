#!/usr/bin/env bash
# One build's server driven by another build's load generator (to tell a server's change from
# its generator's): a single node on one core, 50/50 GetItem/PutItem of 1 KiB over 100k keys,
# closed-loop runs of 8 seconds at 256, 64 and 256 calls in flight, printing each latency line.
#
#   bench/scripts/crossed.sh SERVER_BIN GENERATOR_BIN
#   e.g. for i in 1 2 3; do bench/scripts/crossed.sh OLD OLD; bench/scripts/crossed.sh NEW OLD; done
#
# SERVER_BIN holds tessera, GENERATOR_BIN tessera-load. Data under $TMPDIR, port 7730.
set -euo pipefail
(( $# == 2 )) || { sed -n '2,9p' "$0"; exit 2; }
server=$1 generator=$2
source "$(dirname "$0")/common.sh"
scratch tessera-crossed
"$server/tessera" serve --cores 1 --data-dir "$data/node" --listen 127.0.0.1:7730 > "$data/node.log" 2>&1 &
pids+=($!)
sleep 2
load() { "$generator/tessera-load" --keys 100000 --value-bytes 1024 --get-ratio 0.5 --quiet --endpoint 127.0.0.1:7730 "$@"; }
load --create 8 --prefill --rate 1000 --duration 1 > /dev/null
for concurrency in 256 64 256; do
  echo "server $server, generator $generator, $concurrency in flight: $(load --concurrency "$concurrency" --duration 8 | grep '^all')"
done

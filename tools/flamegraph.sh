#!/usr/bin/env bash
# A flamegraph of a running Tessera server: samples its threads with `perf` (with DWARF call
# stacks, since release builds keep no frame pointers) for SECONDS and renders an SVG with
# inferno. Run it while a load runs against the server, e.g.:
#
#   tessera serve --cores 1 &
#   tessera-load --workload bench/workloads/prime-day.toml --create --prefill &
#   tools/flamegraph.sh $(pgrep -f 'tessera serve') 20 tessera.svg
#
# FREQUENCY (default 99 Hz) sets the sampling rate: DWARF stacks are copied at each sample, and
# on a small machine a higher rate slows the server it measures.
#
# Installs what is missing: linux-perf (apt) and inferno (cargo install). Where perf may not
# sample (a container without perf_event access: perf_event_paranoid above 2 and no
# CAP_PERFMON), it says so and stops; the server has no in-process profiler.
set -euo pipefail
if (( $# != 3 )); then
  echo "usage: tools/flamegraph.sh PID SECONDS OUT.svg" >&2
  exit 2
fi
pid=$1 seconds=$2 out=$3
kill -0 "$pid" 2>/dev/null || { echo "no process $pid" >&2; exit 1; }
if ! command -v perf > /dev/null; then
  apt-get update -qq && apt-get install -y -qq linux-perf > /dev/null
fi
if ! command -v inferno-flamegraph > /dev/null; then
  cargo install inferno --locked --quiet
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! perf record -F "${FREQUENCY:-99}" --call-graph dwarf,8192 -p "$pid" -o "$work/perf.data" -- sleep "$seconds" \
    2> "$work/record.log"; then
  echo "perf cannot sample process $pid here:" >&2
  cat "$work/record.log" >&2
  echo "(/proc/sys/kernel/perf_event_paranoid is $(cat /proc/sys/kernel/perf_event_paranoid))" >&2
  exit 1
fi
perf script -i "$work/perf.data" 2> /dev/null | inferno-collapse-perf > "$work/folded"
inferno-flamegraph --title "tessera (pid $pid), $seconds s" < "$work/folded" > "$out"
echo "wrote $out ($(wc -l < "$work/folded") distinct stacks)"

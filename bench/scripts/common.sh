# Sourced by the benchmark scripts. `bin` is where the binaries are (BIN, or target/release);
# `scratch NAME` makes `data`, an empty directory $TMPDIR/NAME, and on exit stops every
# process whose pid the script added to `pids` and removes the directory.
bin=${BIN:-target/release}
scratch() {
  data=${TMPDIR:-/tmp}/$1
  rm -rf "$data"
  mkdir -p "$data"
  pids=()
  trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$data"' EXIT
}

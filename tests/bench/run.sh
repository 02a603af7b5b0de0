#!/usr/bin/env bash
# make bench: runs every tests/bench/bench_*.sh in name order and prints their
# figures (each script prints its own lines; figures are ratios measured in the
# same run, or throughputs with the conditions stated).
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
export PERQ_ROOT="$root" PERQ_BIN="${PERQ_BIN:-$root/build/bin}"
export PERQ_SHARED="${PERQ_SHARED:-$root/../shared}"
logs="$root/build/bench-logs"; mkdir -p "$logs"
echo "perq benchmarks on $(nproc) cores, $(uname -m), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
failed=0
for b in "$root"/tests/bench/bench_*.sh; do
  [ -e "$b" ] || continue
  name=$(basename "$b" .sh)
  [ "$name" != bench_common ] || continue   # helpers the others source
  echo "-- $name"
  # Figures go to stdout, progress to the log.
  if bash "$b" 2>"$logs/$name.log" | sed 's/^/   /'; [ "${PIPESTATUS[0]}" -eq 0 ]; then
    :
  else
    failed=$((failed + 1))
    echo "   FAILED; last lines of $logs/$name.log:"
    tail -n 15 "$logs/$name.log" | sed 's/^/     /'
  fi
done
[ "$failed" -eq 0 ]

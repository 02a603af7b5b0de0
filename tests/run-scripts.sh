#!/usr/bin/env bash
# Runs every test script of a folder (tests/reference, tests/integration), each
# in its own temporary folder, with its output kept in build/test-logs/.
# Usage: run-scripts.sh LABEL DIR
set -u
label=$1; dir=$2
root=$(cd "$(dirname "$0")/.." && pwd)
logs="$root/build/test-logs/$label"; mkdir -p "$logs"
export PERQ_ROOT="$root" PERQ_BIN="$root/build/bin"
export PERQ_SHARED="${PERQ_SHARED:-$root/../shared}"
passed=0; failed=0; failed_names=()
for t in "$dir"/*.sh; do
  [ -e "$t" ] || continue
  name=$(basename "$t" .sh)
  [ "$name" = lib ] && continue   # sourced by the tests, not one of them
  start=$(date +%s)
  if bash "$t" >"$logs/$name.log" 2>&1; then
    passed=$((passed + 1)); echo "  ok   $name ($(( $(date +%s) - start ))s)"
  else
    failed=$((failed + 1)); failed_names+=("$name")
    echo "  FAIL $name ($(( $(date +%s) - start ))s), last lines of $logs/$name.log:"
    tail -n 25 "$logs/$name.log" | sed 's/^/       /'
  fi
done
echo "$label: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# Runs each cmocka test binary given; prints one summary line and fails if any failed.
set -u
passed=0; failed=0; failed_names=()
for bin in "$@"; do
  if "$bin"; then passed=$((passed + 1)); else failed=$((failed + 1)); failed_names+=("$(basename "$bin")"); fi
done
echo "unit: $passed passed, $failed failed"
[ "$failed" -eq 0 ] || { echo "failed: ${failed_names[*]}"; exit 1; }

#!/usr/bin/env bash
# Fuzz smoke: each target replays its corpus (tests/fuzz/corpus/NAME) and then,
# when it is a libFuzzer build, explores for PERQ_FUZZ_SECONDS (default 20).
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
secs=${PERQ_FUZZ_SECONDS:-20}
passed=0; failed=0
for bin in "$@"; do
  name=$(basename "$bin")
  corpus="$root/tests/fuzz/corpus/${name#fuzz_}"
  work=$(mktemp -d); [ -d "$corpus" ] && cp -r "$corpus"/. "$work"/ 2>/dev/null
  if "$bin" -help=1 >/dev/null 2>&1; then
    cmd=("$bin" -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=0 "$work")
  else
    cmd=("$bin" "$work")
  fi
  if "${cmd[@]}" >"$work.log" 2>&1; then passed=$((passed + 1)); echo "  ok   $name"
  else failed=$((failed + 1)); echo "  FAIL $name"; tail -n 40 "$work.log"; fi
  rm -rf "$work" "$work.log"
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

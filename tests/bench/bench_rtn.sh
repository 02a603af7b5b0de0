#!/usr/bin/env bash
# RTN quantize + compressed-tensors export throughput of `perq quantize` on a
# synthetic Llama-3.2-1B-shaped checkpoint (4 layers, BF16), per output channel
# and with groups of 128, as GB of weights per second and as a ratio to `cp`
# of the same bytes in the same run.
set -euo pipefail
PERQ_ROOT=${PERQ_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
PERQ_BIN=${PERQ_BIN:-$PERQ_ROOT/build/bin}
. "$(dirname "$0")/bench_common.sh"

MODEL=$(bench_model_dir)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/perq-bench.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
TOTAL=$(safetensors_bytes "$MODEL")
LINEAR=$(linear_weight_bytes "$MODEL")
echo "model: perq synth $BENCH_SYNTH: $(gb "$TOTAL") GB of safetensors, $(gb "$LINEAR") GB of linear weights"

cat "$MODEL"/*.safetensors >/dev/null   # the page cache holds the input for every run
for group in null 128; do
  jq -nc --argjson g $group '{method: "rtn", weights: {bits: 4, group_size: $g, algorithm: "rtn"}}' >"$TMP/spec.json"
  rm -rf "$TMP/out"
  t0=$(now)
  "$PERQ_BIN/perq" quantize --model "$MODEL" --out "$TMP/out" --spec "$TMP/spec.json" >"$TMP/quantize.log" 2>&1 \
    || { cat "$TMP/quantize.log" >&2; exit 1; }
  sync "$TMP/out"/*
  t1=$(now)
  secs=$(elapsed "$t0" "$t1")
  cps=$(cp_seconds "$(ls "$MODEL"/*.safetensors | head -n 1)")
  cp_bytes=$(stat -c %s "$(ls "$MODEL"/*.safetensors | head -n 1)")
  label=$([ "$group" = null ] && echo "per channel" || echo "group $group")
  rate=$(calc "$TOTAL / $secs"); cp_rate=$(calc "$cp_bytes / $cps")
  printf 'RTN quantize+export (%s): %.2f GB of weights/s (%.2f GB in %.2f s; %.2f GB/s of linear weights); %s of cp throughput (cp: %.2f GB/s)\n' \
    "$label" "$(calc "$rate / 1000000000")" "$(calc "$TOTAL / 1000000000")" "$secs" \
    "$(calc "$LINEAR / $secs / 1000000000")" "$(ratio "$rate" "$cp_rate")" "$(calc "$cp_rate / 1000000000")"
done

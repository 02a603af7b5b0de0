#!/usr/bin/env bash
# Export time of each artifact format on the synthetic Llama-3.2-1B-shaped
# checkpoint (4 layers, BF16; bench_common.sh), as a ratio to writing the same
# bytes with a plain file copy in the same run. An rtn job with groups of 128
# (a layout both formats hold) is run once per format with `perq quantize`;
# the export time is the job's own "exporting" stage (manifest.json timings:
# packing, conversion, writing and fsync of the format's files), the bytes
# those of the files the manifest lists for the format, and the copy `cp` of
# exactly those files (page cache warm, synced; best of 3).
set -euo pipefail
PERQ_ROOT=${PERQ_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
PERQ_BIN=${PERQ_BIN:-$PERQ_ROOT/build/bin}
. "$(dirname "$0")/bench_common.sh"
command -v jq >/dev/null || { echo "jq is not installed" >&2; exit 1; }

MODEL=$(bench_model_dir)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/perq-bench-export.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
echo "model: perq synth $BENCH_SYNTH: $(gb "$(safetensors_bytes "$MODEL")") GB of safetensors; rtn, groups of 128"
cat "$MODEL"/*.safetensors >/dev/null

# copy_seconds DIR FILE...: wall seconds of cp of the files into a new folder, synced.
copy_seconds() {
  local from=$1 dst t0 t1 best=""
  shift
  for _ in 1 2 3; do
    dst=$(mktemp -d "$TMP/copy.XXXXXX")
    t0=$(now)
    (cd "$from" && cp -- "$@" "$dst/")
    (cd "$dst" && sync -- "$@")
    t1=$(now)
    rm -rf "$dst"
    s=$(elapsed "$t0" "$t1")
    if [ -z "$best" ] || [ "$(calc "$s < $best")" = 1 ]; then best=$s; fi
  done
  echo "$best"
}

for format in compressed-tensors gguf; do
  out=$TMP/$format
  jq -nc --arg f "$format" '{method: "rtn", weights: {bits: 4, group_size: 128, algorithm: "rtn"}, outputs: [$f]}' \
    >"$TMP/spec.json"
  if ! "$PERQ_BIN/perq" quantize --model "$MODEL" --out "$out" --spec "$TMP/spec.json" >"$TMP/$format.log" 2>&1; then
    echo "$format export: not measured, the job was refused: $(grep -v '^perq quantize: OpenBLAS' "$TMP/$format.log" | tail -n 1)"
    cat "$TMP/$format.log" >&2
    continue
  fi
  secs=$(jq '.timings.exporting' "$out/manifest.json")
  mapfile -t files < <(jq -r --arg f "$format" '.files[] | select(.format == $f) | .name' "$out/manifest.json")
  [ "${#files[@]}" -gt 0 ] || { echo "$format: the manifest lists no $format file" >&2; exit 1; }
  bytes=$(jq --arg f "$format" '[.files[] | select(.format == $f) | .bytes] | add' "$out/manifest.json")
  cps=$(copy_seconds "$out" "${files[@]}")
  printf '%s export: %.3f s for %.3f GB in %d files (%.2f GB/s); %s x the time of cp of the same bytes (cp: %.3f s, %.2f GB/s)\n' \
    "$format" "$secs" "$(calc "$bytes / 1e9")" "${#files[@]}" "$(calc "$bytes / $secs / 1e9")" \
    "$(ratio "$secs" "$cps")" "$cps" "$(calc "$bytes / $cps / 1e9")"
  rm -rf "$out"
done

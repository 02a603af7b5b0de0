#!/usr/bin/env bash
# The main job, end to end: install what is missing, build, start perqd with a
# temporary data dir, upload stories260K and an evaluation text through the
# HTTP API, quantize the model to INT4 (rtn, groups of 32) and measure its
# perplexity before and after, download the artifacts, verify every sha256
# against the manifest, print where they are, stop perqd.
#
# Usage: deploy/quickstart.sh [OUTPUT_DIR]     (default ./perq-output/<job id>)
# Environment: PERQ_SHARED (default ../shared beside the repository),
#              PERQ_MODEL (default $PERQ_SHARED/models/stories260K),
#              PERQ_EVAL_TEXT (default $PERQ_SHARED/data/tinystories_valid_head.txt;
#              empty: no perplexity).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PERQ_SHARED=${PERQ_SHARED:-$ROOT/../shared}
MODEL=${PERQ_MODEL:-$PERQ_SHARED/models/stories260K}
EVAL_TEXT=${PERQ_EVAL_TEXT-$PERQ_SHARED/data/tinystories_valid_head.txt}
OUT_ARG=${1:-}

if [ -t 1 ]; then say() { printf '\033[1m==>\033[0m %s\n' "$*"; }; else say() { printf '==> %s\n' "$*"; }; fi
die() { printf 'quickstart: %s\n' "$*" >&2; exit 1; }

[ -f "$MODEL/config.json" ] || die "no model at $MODEL (set PERQ_SHARED or PERQ_MODEL)"

# ---- dependencies and build -------------------------------------------------
needs_deps=0
for tool in make cc pkg-config curl jq sha256sum; do
  command -v "$tool" >/dev/null || needs_deps=1
done
if [ $needs_deps -eq 0 ]; then
  pkg-config --exists libmicrohttpd jansson libuv sqlite3 openblas libcrypto libpcre2-8 libutf8proc 2>/dev/null || needs_deps=1
fi
if [ $needs_deps -eq 1 ]; then
  say "installing dependencies (deploy/install-deps.sh)"
  "$ROOT/deploy/install-deps.sh"
fi
say "building (make -j2)"
make -C "$ROOT" -j2 all >/dev/null
BIN=$ROOT/build/bin

# ---- the daemon ---------------------------------------------------------------
DATA=$(mktemp -d "${TMPDIR:-/tmp}/perq-quickstart.XXXXXX")
PERQD_PID=""
cleanup() {
  if [ -n "$PERQD_PID" ] && kill -0 "$PERQD_PID" 2>/dev/null; then
    kill -TERM "$PERQD_PID" 2>/dev/null || true
    wait "$PERQD_PID" 2>/dev/null || true
  fi
  rm -rf "$DATA"
}
trap cleanup EXIT

say "starting perqd (data dir $DATA)"
"$BIN/perqd" --listen 127.0.0.1:0 --data-dir "$DATA/store" >"$DATA/perqd.out" 2>"$DATA/perqd.log" </dev/null &
PERQD_PID=$!
BASE=""
for _ in $(seq 1 100); do
  if [ "$(wc -l <"$DATA/perqd.out")" -ge 1 ]; then
    BASE=$(sed -n '1s/^listening on //p' "$DATA/perqd.out"); break
  fi
  kill -0 "$PERQD_PID" 2>/dev/null || { cat "$DATA/perqd.log" >&2; die "perqd did not start"; }
  sleep 0.1
done
[ -n "$BASE" ] || die "perqd did not print its address within 10 s"
echo "    perqd at $BASE"

# api METHOD PATH [curl options]: prints the body; fails with the problem's detail.
api() {
  local method=$1 path=$2; shift 2
  local status
  status=$(curl -sS -o "$DATA/body" -w '%{http_code}' -X "$method" "$@" "$BASE$path") || die "curl $method $path failed"
  if [ "${status:0:1}" != 2 ]; then
    die "$method $path -> $status: $(jq -r '.detail // .' "$DATA/body" 2>/dev/null || cat "$DATA/body")"
  fi
  cat "$DATA/body"
}

# ---- upload ---------------------------------------------------------------------
name=$(basename "$MODEL")
say "uploading $name"
M=$(api POST /v1/models -H 'Content-Type: application/json' -d "$(jq -nc --arg n "$name" '{name: $n}')" | jq -r .id)
for f in "$MODEL"/*; do
  [ -f "$f" ] || continue
  # the checkpoint's own files (not the reference data kept beside them)
  case $(basename "$f") in
    config.json|generation_config.json|tokenizer.json|tokenizer_config.json|tokenizer.model|\
    special_tokens_map.json|*.safetensors|model.safetensors.index.json) ;;
    *) continue ;;
  esac
  sum=$(sha256sum "$f" | cut -d' ' -f1)
  api PUT "/v1/models/$M/files/$(basename "$f")" -T "$f" -H "X-Content-SHA256: $sum" \
    | jq -r '"    \(.name): \(.bytes) bytes, sha256 \(.sha256[0:16])..."'
done
api POST "/v1/models/$M/commit" | jq -r '"    model \(.id) is \(.status)"'

EVAL='null'
if [ -n "$EVAL_TEXT" ]; then
  [ -f "$EVAL_TEXT" ] || die "no evaluation text at $EVAL_TEXT (set PERQ_EVAL_TEXT, or empty for none)"
  say "uploading the evaluation text $(basename "$EVAL_TEXT")"
  api PUT /v1/datasets/eval-text -T "$EVAL_TEXT" -H "X-Content-SHA256: $(sha256sum "$EVAL_TEXT" | cut -d' ' -f1)" \
    | jq -r '"    dataset \(.name): \(.bytes) bytes"'
  EVAL='{"dataset": "eval-text", "ctx": 256, "chunks": 64}'
fi

# ---- the job --------------------------------------------------------------------
say "quantizing to INT4 (rtn, groups of 32)"
SPEC=$(jq -nc --arg m "$M" --argjson eval "$EVAL" \
  '{model: $m, method: "rtn", weights: {bits: 4, group_size: 32, algorithm: "rtn"}} + (if $eval then {eval: $eval} else {} end)')
J=$(api POST /v1/jobs -H 'Content-Type: application/json' -d "$SPEC" | jq -r .id)
echo "    job $J"
last=""
while :; do
  api GET "/v1/jobs/$J" >"$DATA/job.json"
  line=$(jq -r '"    \(.status)\(if .stage then " / " + .stage else "" end) \(.progress.percent // 0 | floor)%\(if .progress.eta_seconds then " (eta \(.progress.eta_seconds | floor) s)" else "" end)"' "$DATA/job.json")
  [ "$line" = "$last" ] || { echo "$line"; last=$line; }
  case $(jq -r .status "$DATA/job.json") in
    succeeded) break ;;
    failed|cancelled) die "job $J: $(jq -c .error "$DATA/job.json")" ;;
  esac
  sleep 0.2
done

# ---- download and verify ----------------------------------------------------------
OUT=${OUT_ARG:-$PWD/perq-output/$J}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
say "downloading the artifacts into $OUT"
api GET "/v1/jobs/$J/artifacts" >"$DATA/artifacts.json"
while IFS=$'\t' read -r name sum; do
  curl -sS -f -o "$OUT/$name" "$BASE/v1/jobs/$J/artifacts/$name" || die "download of $name failed"
  [ "$(sha256sum "$OUT/$name" | cut -d' ' -f1)" = "$sum" ] || die "$name: sha256 differs from the artifact list"
done < <(jq -r '.artifacts[] | [.name, .sha256] | @tsv' "$DATA/artifacts.json")

say "verifying every file against manifest.json"
n=0
while IFS=$'\t' read -r name bytes sum; do
  [ -f "$OUT/$name" ] || die "manifest lists $name, which was not downloaded"
  [ "$(stat -c %s "$OUT/$name")" = "$bytes" ] || die "$name: size differs from the manifest"
  [ "$(sha256sum "$OUT/$name" | cut -d' ' -f1)" = "$sum" ] || die "$name: sha256 differs from the manifest"
  printf '    ok  %-28s %10s bytes  %s\n' "$name" "$bytes" "${sum:0:16}..."
  n=$((n + 1))
done < <(jq -r '.files | if type == "array" then .[] | [(.name // .path), .bytes, .sha256]
                        else to_entries[] | [.key, .value.bytes, .value.sha256] end | @tsv' "$OUT/manifest.json")
[ $n -gt 0 ] || die "manifest.json lists no files"

if jq -e '.eval.ppl_quantized' "$OUT/report.json" >/dev/null 2>&1; then
  say "perplexity ($(jq -r '.eval | "\(.protocol) protocol, ctx \(.ctx), \(.chunks) chunks, \(.tokens_scored) tokens scored"' "$OUT/report.json"))"
  jq -r '.eval | "    float \(.ppl_float * 1000 | round / 1000), INT4 \(.ppl_quantized * 1000 | round / 1000)"' "$OUT/report.json"
fi

say "stopping perqd"
kill -TERM "$PERQD_PID"
rc=0; wait "$PERQD_PID" || rc=$?
PERQD_PID=""
[ $rc -eq 0 ] || die "perqd exited with status $rc"

echo
echo "The INT4 model (compressed-tensors pack-quantized) and its manifest are in:"
echo "  $OUT"

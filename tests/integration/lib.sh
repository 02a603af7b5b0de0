# Helpers for the integration tests: each test sources this file, starts a
# real perqd on 127.0.0.1:0 with a temporary data dir and drives it with curl.
# Everything a test creates lives under $TMP, removed on exit; the daemons it
# started are killed on exit whatever happened.
set -euo pipefail

# tests/run-scripts.sh runs every *.sh of this folder; run on its own, this
# file only checks that what the tests need is installed.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  for tool in curl jq sha256sum python3; do
    command -v "$tool" >/dev/null || { echo "FAIL: $tool is not installed (deploy/install-deps.sh)" >&2; exit 1; }
  done
  echo "lib.sh: helpers for the integration tests; curl, jq, sha256sum and python3 present"
  exit 0
fi

PERQ_ROOT=${PERQ_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
PERQ_BIN=${PERQ_BIN:-$PERQ_ROOT/build/bin}
PERQ_SHARED=${PERQ_SHARED:-$PERQ_ROOT/../shared}
export PERQ_ROOT PERQ_BIN PERQ_SHARED

STORIES=$PERQ_SHARED/models/stories260K
STORIES_BF16=$PERQ_SHARED/models/stories260K-bf16

TMP=$(mktemp -d "${TMPDIR:-/tmp}/perq-it.XXXXXX")
PERQD_PID=""
PERQD_N=0
PERQD_LOG=""
BASE=""

for tool in curl jq sha256sum; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is not installed (deploy/install-deps.sh)" >&2; exit 1; }
done
for prog in perqd perq perq-worker; do
  [ -x "$PERQ_BIN/$prog" ] || { echo "FAIL: $PERQ_BIN/$prog is missing (make all)" >&2; exit 1; }
done

# ---- reporting ---------------------------------------------------------------

step() { echo "== $*"; }

fail() {
  echo "FAIL: $*" >&2
  if [ -n "$PERQD_LOG" ] && [ -s "$PERQD_LOG.err" ]; then
    echo "---- last lines of perqd's stderr ----" >&2
    tail -n 20 "$PERQD_LOG.err" >&2
  fi
  exit 1
}

# ---- the daemon --------------------------------------------------------------

# procs_matching REGEX: pids whose command line (arguments joined by spaces)
# matches the extended regex; read from /proc, so procps is not needed.
procs_matching() {
  local d args
  for d in /proc/[0-9]*; do
    [ "${d#/proc/}" != "$$" ] && [ "${d#/proc/}" != "$BASHPID" ] || continue
    { mapfile -d '' args <"$d/cmdline"; } 2>/dev/null || continue   # it may have ended
    [[ "${args[*]-}" =~ $1 ]] && echo "${d#/proc/}"
  done
  return 0
}

# Workers of ours still alive: processes whose command line names a path
# under $TMP (only the daemons this test started put them there).
our_workers() { procs_matching "perq.*$TMP/"; }

cleanup() {
  local status=$?
  if [ -n "$PERQD_PID" ] && kill -0 "$PERQD_PID" 2>/dev/null; then
    kill -9 "$PERQD_PID" 2>/dev/null || true
    wait "$PERQD_PID" 2>/dev/null || true
  fi
  local pids; pids=$(our_workers)
  # shellcheck disable=SC2086
  [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
  if [ $status -ne 0 ] && [ -n "${KEEP_TMP:-}" ]; then
    echo "kept $TMP" >&2
  else
    rm -rf "$TMP"
  fi
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_perqd [--data-dir DIR] [other perqd options...]
# Starts perqd on a free port; exports BASE, PERQD_PID, DATA (the data dir).
# Without --data-dir a fresh one under $TMP is used.
start_perqd() {
  DATA=""
  local args=()
  while [ $# -gt 0 ]; do
    case $1 in
      --data-dir) DATA=$2; shift 2 ;;
      *) args+=("$1"); shift ;;
    esac
  done
  [ -n "$DATA" ] || DATA=$(mktemp -d "$TMP/data.XXXXXX")
  PERQD_N=$((PERQD_N + 1))
  PERQD_LOG=$TMP/perqd.$PERQD_N
  "$PERQ_BIN/perqd" --listen 127.0.0.1:0 --data-dir "$DATA" "${args[@]+"${args[@]}"}" \
      >"$PERQD_LOG.out" 2>"$PERQD_LOG.err" </dev/null &
  PERQD_PID=$!
  local line="" i
  for i in $(seq 1 100); do
    if [ "$(wc -l <"$PERQD_LOG.out")" -ge 1 ]; then line=$(head -n 1 "$PERQD_LOG.out"); break; fi
    kill -0 "$PERQD_PID" 2>/dev/null || fail "perqd exited before listening (args: ${args[*]+"${args[*]}"})"
    sleep 0.1
  done
  [[ $line =~ ^listening\ on\ (http://127\.0\.0\.1:[0-9]+)$ ]] \
    || fail "perqd's first stdout line is '$line', expected 'listening on http://127.0.0.1:PORT' within 10 s"
  BASE=${BASH_REMATCH[1]}
  export BASE PERQD_PID DATA
  echo "perqd $PERQD_PID on $BASE, data dir $DATA"
}

# Waits up to $2 seconds (default 15) for process $1 to end.
wait_gone() {
  local pid=$1 limit=${2:-15} i
  for i in $(seq 1 $((limit * 10))); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  return 1
}

# SIGTERM, and the daemon must exit 0 within 15 s.
stop_perqd() {
  [ -n "$PERQD_PID" ] || fail "stop_perqd: no daemon running"
  kill -TERM "$PERQD_PID"
  wait_gone "$PERQD_PID" 15 || fail "perqd did not exit within 15 s of SIGTERM"
  local rc=0
  wait "$PERQD_PID" || rc=$?
  [ $rc -eq 0 ] || fail "perqd exited with status $rc after SIGTERM, expected 0"
  PERQD_PID=""
}

# SIGKILL: the daemon dies without a chance to clean up.
kill_perqd() {
  kill -9 "$PERQD_PID"
  wait "$PERQD_PID" 2>/dev/null || true
  PERQD_PID=""
}

# ---- HTTP --------------------------------------------------------------------

# req METHOD PATH [curl options...]: sets STATUS and the files
# $TMP/resp.body and $TMP/resp.headers of the last response.
LAST_REQ=""
req() {
  local method=$1 path=$2; shift 2
  LAST_REQ="$method $path"
  local m=(-X "$method")
  [ "$method" != GET ] || m=()
  rm -f "$TMP/resp.body" "$TMP/resp.headers"
  STATUS=$(curl -sS -o "$TMP/resp.body" -D "$TMP/resp.headers" -w '%{http_code}' \
                "${m[@]+"${m[@]}"}" "$@" "$BASE$path") || fail "curl could not complete $LAST_REQ"
  touch "$TMP/resp.body"   # curl writes no file for an empty body
}
get()       { req GET "$@"; }
delete()    { req DELETE "$@"; }
post()      { req POST "$@"; }
# post_json PATH JSON [curl options...]
post_json() { local p=$1 j=$2; shift 2; req POST "$p" -H 'Content-Type: application/json' --data-binary "$j" "$@"; }
# put_file PATH FILE [curl options...]
put_file()  { local p=$1 f=$2; shift 2; req PUT "$p" -T "$f" "$@"; }

# header NAME: value of a header of the last response ("" when absent).
header() {
  awk -v n="$(echo "$1" | tr 'A-Z' 'a-z')" -F': ' '
    { sub(/\r$/, "") }
    tolower($1) == n { sub(/^[^:]*: */, ""); v = $0 }
    END { print v }' "$TMP/resp.headers"
}

show_last() { printf '%s -> %s\n%s\n' "$LAST_REQ" "${STATUS:-?}" "$(head -c 2000 "$TMP/resp.body")"; }

assert_status() {
  local want=$1
  [ "$STATUS" = "$want" ] || fail "expected status $want; $(show_last)"
}

# assert_json FILTER [what]: the jq filter must be true of the last body.
assert_json() {
  jq -e "$1" "$TMP/resp.body" >/dev/null 2>&1 || fail "${2:-expected $1}; $(show_last)"
}

# json FILTER: the raw value of a jq filter over the last body.
json() { jq -r "$1" "$TMP/resp.body"; }

# A problem+json error with the given status: Content-Type, and type, title,
# status and detail as the contract says.
assert_problem() {
  local want=$1 ct
  assert_status "$want"
  ct=$(header Content-Type)
  [[ $ct == application/problem+json* ]] || fail "Content-Type is '$ct', expected application/problem+json; $(show_last)"
  assert_json "(.type | type == \"string\" and length > 0) and (.title | type == \"string\" and length > 0)
               and .status == $want and (.detail | type == \"string\" and length > 0)" \
              "problem+json must have type, title, status $want and detail"
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# ---- models and jobs ---------------------------------------------------------

# create_model NAME: sets MODEL_ID.
create_model() {
  post_json /v1/models "$(jq -nc --arg n "$1" '{name: $n}')"
  assert_status 201
  assert_json '.status == "uploading" and .files == [] and (.id | type == "string")' "a new model is uploading with no files"
  MODEL_ID=$(json .id)
}

# upload_file MODEL FILE [NAME]: PUT with X-Content-SHA256; asserts 201 {name, bytes, sha256}.
upload_file() {
  local model=$1 file=$2 name=${3:-$(basename "$2")} sum bytes
  sum=$(sha256_of "$file"); bytes=$(stat -c %s "$file")
  put_file "/v1/models/$model/files/$name" "$file" -H "X-Content-SHA256: $sum"
  assert_status 201
  assert_json ".name == \"$name\" and .bytes == $bytes and .sha256 == \"$sum\"" "upload of $name echoes its name, size and sha256"
}

# upload_model DIR [NAME]: creates a model, uploads every file of DIR, commits; sets MODEL_ID.
upload_model() {
  local dir=$1 name=${2:-$(basename "$1")} f
  create_model "$name"
  for f in "$dir"/*; do
    [ -f "$f" ] && upload_file "$MODEL_ID" "$f"
  done
  post "/v1/models/$MODEL_ID/commit"
  assert_status 200
  assert_json '.status == "ready"' "a committed model is ready"
  echo "model $MODEL_ID ($name) ready"
}

# submit_job SPEC_JSON [curl options...]: asserts 202 and Location; sets JOB_ID.
submit_job() {
  post_json /v1/jobs "$@"
  assert_status 202
  JOB_ID=$(json .id)
  [ "$(header Location)" = "/v1/jobs/$JOB_ID" ] || fail "Location is '$(header Location)', expected /v1/jobs/$JOB_ID"
  assert_json '.status == "queued" or .status == "running"' "a new job is queued or running"
}

rtn_spec() { # rtn_spec MODEL GROUP(32|64|128|null)
  jq -nc --arg m "$1" --argjson g "$2" '{model: $m, method: "rtn", weights: {group_size: $g, algorithm: "rtn"}}'
}

job_status() { get "/v1/jobs/$1"; assert_status 200; json .status; }

# poll_job ID [TIMEOUT]: waits for a terminal status; sets JOB_STATUS (and the
# last body is the job object).
poll_job() {
  local id=$1 limit=${2:-60} i
  for i in $(seq 1 $((limit * 5))); do
    get "/v1/jobs/$id"; assert_status 200
    JOB_STATUS=$(json .status)
    case $JOB_STATUS in succeeded|failed|cancelled) return 0 ;; esac
    sleep 0.2
  done
  fail "job $id still '$JOB_STATUS' after ${limit}s"
}

# wait_job_status ID STATUS [TIMEOUT]: waits until the job has this status.
wait_job_status() {
  local id=$1 want=$2 limit=${3:-30} i
  for i in $(seq 1 $((limit * 20))); do
    get "/v1/jobs/$id"; assert_status 200
    JOB_STATUS=$(json .status)
    [ "$JOB_STATUS" = "$want" ] && return 0
    case $JOB_STATUS in succeeded|failed|cancelled) fail "job $id ended '$JOB_STATUS' while waiting for '$want'; $(show_last)" ;; esac
    sleep 0.05
  done
  fail "job $id not '$want' after ${limit}s (is '$JOB_STATUS')"
}

# expect_succeeded ID [TIMEOUT]
expect_succeeded() {
  poll_job "$1" "${2:-60}"
  [ "$JOB_STATUS" = succeeded ] || fail "job $1 ended '$JOB_STATUS', expected succeeded; $(show_last)"
  assert_json '.finished_at != null and .error == null' "a succeeded job has finished_at and no error"
}

# The worker process of a job (pid on stdout, empty when none): perq-worker,
# or `perq worker`, with --job-id ID.
job_worker_pid() { procs_matching "perq[- ]worker .*--job-id $1( |\$)" | head -n 1; }

# download_artifacts ID DIR: every artifact of the listing into DIR, each
# checked against the listing's bytes and sha256 and against manifest.json.
download_artifacts() {
  local id=$1 dir=$2 name
  mkdir -p "$dir"
  get "/v1/jobs/$id/artifacts"; assert_status 200
  assert_json '.artifacts | type == "array" and length >= 3' "a job has at least model, config and manifest artifacts"
  assert_json '[.artifacts[] | (.name|type=="string") and (.bytes|type=="number") and (.sha256|test("^[0-9a-f]{64}$")) and has("format")] | all' \
    "each artifact has name, bytes, sha256 and format"
  assert_json '[.artifacts[].name] | index("manifest.json") != null and index("model.safetensors") != null and index("config.json") != null' \
    "artifacts include manifest.json, model.safetensors and config.json"
  cp "$TMP/resp.body" "$dir/.listing.json"
  while IFS= read -r name; do
    req GET "/v1/jobs/$id/artifacts/$name" ; assert_status 200
    cp "$TMP/resp.body" "$dir/$name"
    local want_sum want_bytes
    want_sum=$(jq -r --arg n "$name" '.artifacts[] | select(.name == $n) | .sha256' "$dir/.listing.json")
    want_bytes=$(jq -r --arg n "$name" '.artifacts[] | select(.name == $n) | .bytes' "$dir/.listing.json")
    [ "$(sha256_of "$dir/$name")" = "$want_sum" ] || fail "artifact $name: sha256 differs from the listing"
    [ "$(stat -c %s "$dir/$name")" = "$want_bytes" ] || fail "artifact $name: size differs from the listing"
  done < <(jq -r '.artifacts[].name' "$dir/.listing.json")
  check_manifest "$dir"
}

# check_manifest DIR: every file manifest.json lists is in DIR with its bytes
# and sha256, and every file of DIR (but the manifest) is listed.
check_manifest() {
  local dir=$1 m=$1/manifest.json name sum bytes
  [ -f "$m" ] || fail "no manifest.json in $dir"
  jq -e '.files | type == "array" and length > 0' "$m" >/dev/null \
    || jq -e '.files | type == "object" and length > 0' "$m" >/dev/null \
    || fail "manifest.json has no files: $(head -c 500 "$m")"
  jq -e '.spec | type == "object"' "$m" >/dev/null || fail "manifest.json has no spec"
  while IFS=$'\t' read -r name bytes sum; do
    [ -f "$dir/$name" ] || fail "manifest lists $name, which is not an artifact"
    [ "$(sha256_of "$dir/$name")" = "$sum" ] || fail "$name: sha256 differs from manifest.json"
    [ "$(stat -c %s "$dir/$name")" = "$bytes" ] || fail "$name: size differs from manifest.json"
  done < <(manifest_entries "$m")
  for f in "$dir"/*; do
    name=$(basename "$f")
    [ "$name" = manifest.json ] && continue
    manifest_entries "$m" | cut -f1 | grep -qxF "$name" || fail "artifact $name is not in manifest.json"
  done
}

# name<TAB>bytes<TAB>sha256 per manifest file; accepts files as an array of
# {name|path, bytes, sha256} or an object keyed by name.
manifest_entries() {
  jq -r '.files | if type == "array" then .[] | [(.name // .path), .bytes, .sha256]
                  else to_entries[] | [.key, .value.bytes, .value.sha256] end | @tsv' "$1"
}

# ---- a job that runs for a few seconds -----------------------------------------

# For tests that act on a running job (kill, cancel, restart): RTN on a
# synthetic checkpoint followed by a perplexity evaluation, so that the job
# lasts seconds even when quantization gets faster. The checkpoint is cached
# under build/test-cache (synth is deterministic per seed). A job the test
# stops anyway evaluates the whole text (SLOW_EVAL_ALL: about 200 chunks, tens
# of seconds), so no machine is fast enough to finish it first; a job that
# must also end evaluates SLOW_EVAL_CHUNKS (a few seconds).
SLOW_SYNTH=${SLOW_SYNTH:-"--preset tiny --layers 24 --seed 7"}
SLOW_EVAL_CHUNKS=${SLOW_EVAL_CHUNKS:-32}
SLOW_EVAL_ALL=100000

slow_model_dir() {
  local key dir
  key=$(echo "$SLOW_SYNTH" | tr -c 'A-Za-z0-9.\n-' '_')
  dir=$PERQ_ROOT/build/test-cache/synth-$key
  if [ ! -f "$dir/config.json" ]; then
    mkdir -p "$PERQ_ROOT/build/test-cache"
    rm -rf "$dir.tmp.$$"
    # shellcheck disable=SC2086
    nice "$PERQ_BIN/perq" synth $SLOW_SYNTH --out "$dir.tmp.$$" >&2 || fail "perq synth $SLOW_SYNTH failed"
    rm -rf "$dir"; mv "$dir.tmp.$$" "$dir"
  fi
  echo "$dir"
}

# upload_slow_model: uploads and commits the checkpoint and the evaluation
# text (dataset "slow-eval"); sets MODEL_ID.
upload_slow_model() {
  local dir; dir=$(slow_model_dir)
  head -c 100000 "$PERQ_SHARED/data/tinystories_valid_head.txt" >"$TMP/slow-eval.txt"
  put_file /v1/datasets/slow-eval "$TMP/slow-eval.txt"; assert_status 201
  upload_model "$dir" slow-synth
}

# slow_spec MODEL [CHUNKS]: the job spec of the slow job.
slow_spec() {
  jq -nc --arg m "$1" --argjson c "${2:-$SLOW_EVAL_CHUNKS}" \
    '{model: $m, method: "rtn", weights: {group_size: null, algorithm: "rtn"}, eval: {dataset: "slow-eval", ctx: 256, chunks: $c}}'
}

# wait_worker JOB [TIMEOUT]: waits until the job runs in a worker; sets WORKER_PID.
wait_worker() {
  local id=$1 limit=${2:-20} i
  WORKER_PID=""
  for i in $(seq 1 $((limit * 20))); do
    WORKER_PID=$(job_worker_pid "$id")
    [ -n "$WORKER_PID" ] && return 0
    get "/v1/jobs/$id"
    case $(json .status) in succeeded|failed|cancelled) fail "job $id ended '$(json .status)' before its worker was seen (too fast? set SLOW_SYNTH)" ;; esac
    sleep 0.05
  done
  fail "no worker process for job $id after ${limit}s"
}

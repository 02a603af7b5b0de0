#!/usr/bin/env bash
# perqd starts and stops cleanly: --listen 127.0.0.1:0 announces its port on
# the first line of stdout, the basic endpoints answer, errors are
# problem+json, a config file is read (the command line wins), SIGTERM exits 0,
# and the data survives a restart. Needs only perqd and curl.
set -euo pipefail
ROOT=${PERQ_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
PERQD=${PERQ_BIN:-$ROOT/build/bin}/perqd
TMP=$(mktemp -d "${TMPDIR:-/tmp}/perqd-smoke.XXXXXX")
PID=""
cleanup() { [ -z "$PID" ] || kill -9 "$PID" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; [ -f "$TMP/err" ] && tail -n 20 "$TMP/err" >&2; exit 1; }

start() { # start ARGS...: sets PID and BASE
  "$PERQD" "$@" >"$TMP/out" 2>"$TMP/err" </dev/null &
  PID=$!
  for _ in $(seq 1 100); do
    [ -s "$TMP/out" ] && break
    kill -0 "$PID" 2>/dev/null || fail "perqd exited at start: $(cat "$TMP/err")"
    sleep 0.1
  done
  local line; line=$(head -n 1 "$TMP/out")
  [[ $line =~ ^listening\ on\ (http://127\.0\.0\.1:[0-9]+)$ ]] || fail "first stdout line is '$line'"
  BASE=${BASH_REMATCH[1]}
}
stop() { # SIGTERM: exit status 0 within 10 s
  kill -TERM "$PID"
  local rc=0
  for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$PID" 2>/dev/null && fail "perqd still running 10 s after SIGTERM"
  wait "$PID" || rc=$?
  [ "$rc" -eq 0 ] || fail "perqd exited with $rc after SIGTERM"
  PID=""
}
# call METHOD PATH [curl args]: sets CODE, and $TMP/body, $TMP/headers
call() {
  local m=$1 p=$2; shift 2
  : >"$TMP/body"
  CODE=$(curl -sS -X "$m" -o "$TMP/body" -D "$TMP/headers" -w '%{http_code}' "$@" "$BASE$p")
}
expect() { [ "$CODE" = "$1" ] || fail "$2: status $CODE, expected $1: $(head -c 300 "$TMP/body")"; }
has() { grep -q -- "$1" "$TMP/body" || fail "$2: body lacks $1: $(head -c 300 "$TMP/body")"; }
problem() { # problem STATUS WHAT
  expect "$1" "$2"
  grep -qi '^content-type: application/problem+json' "$TMP/headers" || fail "$2: not application/problem+json"
  for k in '"type":' '"title":' "\"status\":$1" '"detail":'; do has "$k" "$2"; done
}

"$PERQD" --help | grep -q -- '--data-dir' || fail "--help does not describe --data-dir"
if "$PERQD" --listen 127.0.0.1:0 >/dev/null 2>&1; then fail "perqd ran without --data-dir"; fi
if "$PERQD" --data-dir "$TMP/x" --workers 0 >/dev/null 2>&1; then fail "perqd accepted --workers 0"; fi

echo "== start from a config file; the command line wins"
printf '{"listen": "127.0.0.1:1", "data_dir": "%s", "workers": 2, "kill_grace": 1}\n' "$TMP/data" >"$TMP/perqd.json"
start --config "$TMP/perqd.json" --listen 127.0.0.1:0
call GET /livez; expect 200 "livez"
call GET /readyz; expect 200 "readyz"
call GET /v1/version; expect 200 "version"; has '"version":' "version"
call GET /metrics; expect 200 "metrics"; has 'perq_jobs{status="queued"} 0' "metrics"
[ -f "$TMP/data/perq.db" ] || fail "the store is not in the data dir of the config file"

echo "== errors are problem+json"
call GET /no/such/path; problem 404 "unknown path"
call DELETE /livez; problem 405 "wrong method"
grep -qi '^allow: GET' "$TMP/headers" || fail "405 without Allow"
call POST /v1/models -H 'Content-Type: application/json' --data-binary '{"name": '; problem 400 "malformed JSON"
has 'line 1' "malformed JSON names the line"
call POST /v1/models --data-binary '{"name": "m", "size": 1}'; problem 400 "unknown field"
call GET "/v1/jobs?status=sleeping"; problem 400 "bad status filter"
call GET /v1/jobs/j_nope; problem 404 "unknown job"

echo "== a model made before a restart is there after it"
call POST /v1/models --data-binary '{"name": "kept"}'; expect 201 "create model"
ID=$(sed -n 's/.*"id":"\([^"]*\)".*/\1/p' "$TMP/body")
[ -n "$ID" ] || fail "no id in $(cat "$TMP/body")"
stop
start --listen 127.0.0.1:0 --data-dir "$TMP/data"
call GET "/v1/models/$ID"; expect 200 "model after restart"; has '"name":"kept"' "model after restart"
stop
grep -q 'stopped' "$TMP/err" || fail "perqd did not log its clean stop"
echo "daemon_smoke: ok"

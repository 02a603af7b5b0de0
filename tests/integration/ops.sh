#!/usr/bin/env bash
# Operations endpoints, datasets, idempotent job submission and the events
# endpoint with after=N.
. "$(dirname "$0")/lib.sh"

start_perqd

step "/livez /readyz /v1/version"
get /livez; assert_status 200
get /readyz; assert_status 200
get /v1/version; assert_status 200
[[ $(header Content-Type) == application/json* ]] || fail "/v1/version Content-Type $(header Content-Type)"
assert_json '.version | type == "string" and length > 0' "/v1/version has a version string"

step "unknown paths and methods are problem+json"
get /v1/nothing-here; assert_problem 404
get /; assert_problem 404
req DELETE /v1/version
case $STATUS in 404|405) assert_problem "$STATUS" ;; *) fail "DELETE /v1/version: expected 405; $(show_last)" ;; esac
req PATCH /v1/models
case $STATUS in 404|405) assert_problem "$STATUS" ;; *) fail "PATCH /v1/models: expected 405; $(show_last)" ;; esac

step "datasets"
TEXT=$PERQ_SHARED/data/tinystories_valid_head.txt
head -c 30000 "$TEXT" >"$TMP/small.txt"
put_file /v1/datasets/tiny-stories "$TMP/small.txt"; assert_status 201
assert_json ".name == \"tiny-stories\" and .bytes == 30000 and .sha256 == \"$(sha256_of "$TMP/small.txt")\""
get /v1/datasets; assert_status 200
assert_json "(if type == \"array\" then . else .datasets end) | map(select(.name == \"tiny-stories\" and .bytes == 30000)) | length == 1" \
  "the dataset is listed with its size"

step "a job, submitted twice with the same Idempotency-Key"
upload_model "$STORIES"; M=$MODEL_ID
SPEC=$(rtn_spec "$M" 64)
submit_job "$SPEC" -H 'Idempotency-Key: k-123'; J=$JOB_ID
post_json /v1/jobs "$SPEC" -H 'Idempotency-Key: k-123'
case $STATUS in 200|201|202) ;; *) fail "repeated idempotent submit: $(show_last)" ;; esac
[ "$(json .id)" = "$J" ] || fail "the same Idempotency-Key and body gave job $(json .id), expected $J"
post_json /v1/jobs "$(rtn_spec "$M" 128)" -H 'Idempotency-Key: k-123'
case $STATUS in 400|409|422) assert_problem "$STATUS" ;; *) fail "same Idempotency-Key, different body: expected 409 or 422; $(show_last)" ;; esac
expect_succeeded "$J" 60
post_json /v1/jobs "$SPEC" -H 'Idempotency-Key: k-123'
[ "$(json .id)" = "$J" ] || fail "the key no longer maps to $J once the job finished"
get /v1/jobs; assert_status 200
assert_json '.jobs | length == 1' "idempotent submissions made a single job"
submit_job "$SPEC" -H 'Idempotency-Key: k-456'
[ "$JOB_ID" != "$J" ] || fail "a new key returned the old job"
K=$JOB_ID
submit_job "$SPEC"
[ "$JOB_ID" != "$K" ] || fail "a submit without a key returned an existing job"
expect_succeeded "$K" 60
expect_succeeded "$JOB_ID" 60

step "events with after=N"
get "/v1/jobs/$J/events"; assert_status 200
cp "$TMP/resp.body" "$TMP/all.json"
n=$(jq '.events | length' "$TMP/all.json")
[ "$n" -ge 2 ] || fail "a finished job has $n events; expected at least 2 (started, finished)"
first=$(jq '.events[0].seq' "$TMP/all.json"); last=$(jq '.events[-1].seq' "$TMP/all.json")
get "/v1/jobs/$J/events?after=0"; assert_status 200
jq -e --slurpfile all "$TMP/all.json" '.events == $all[0].events' "$TMP/resp.body" >/dev/null || fail "after=0 differs from all events"
get "/v1/jobs/$J/events?after=$first"; assert_status 200
jq -e --slurpfile all "$TMP/all.json" '.events == $all[0].events[1:]' "$TMP/resp.body" >/dev/null \
  || fail "after=$first is not all events but the first; $(show_last)"
get "/v1/jobs/$J/events?after=$last"; assert_status 200
assert_json '.events == []' "after=last gives no events"
get "/v1/jobs/$J/events?after=banana"; assert_problem 400
get "/v1/jobs/$J/events?after=-1"; assert_problem 400

step "/metrics in the Prometheus text format"
get /metrics; assert_status 200
[[ $(header Content-Type) == text/plain* ]] || fail "/metrics Content-Type '$(header Content-Type)', expected text/plain"
samples=0
while IFS= read -r line; do
  case $line in
    '') ;;
    '# HELP '*) [[ $line =~ ^#\ HELP\ [a-zA-Z_:][a-zA-Z0-9_:]*\ .+ ]] || fail "bad HELP line: $line" ;;
    '# TYPE '*) [[ $line =~ ^#\ TYPE\ [a-zA-Z_:][a-zA-Z0-9_:]*\ (counter|gauge|histogram|summary|untyped)$ ]] || fail "bad TYPE line: $line" ;;
    '#'*) ;;
    *) [[ $line =~ ^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\]|\\.)*\",?)*\})?\ (-?[0-9.]+([eE][-+]?[0-9]+)?|[-+]?Inf|NaN)(\ -?[0-9]+)?$ ]] \
         || fail "not a Prometheus sample line: $line"
       samples=$((samples + 1)) ;;
  esac
done <"$TMP/resp.body"
[ "$samples" -ge 3 ] || fail "/metrics has $samples samples"
grep -E '^[a-z_]*job[a-z_]*(\{[^}]*\})? ' "$TMP/resp.body" | grep -qE ' [1-9][0-9]*(\.0+)?$' \
  || fail "/metrics has no nonzero job metric after three jobs:
$(head -n 30 "$TMP/resp.body")"
echo "  $samples samples, e.g. $(grep -v '^#' "$TMP/resp.body" | head -n 3 | tr '\n' ';')"

stop_perqd
echo "ops: ok"

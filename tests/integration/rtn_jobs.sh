#!/usr/bin/env bash
# The main path: rtn jobs on both stories260K checkpoints (per output channel
# on F32, groups of 32 on BF16), every artifact downloaded and checked against
# the listing and manifest.json, and the INT4 weights checked by an
# independent reader (check_int4.py) against the original weights.
. "$(dirname "$0")/lib.sh"
command -v python3 >/dev/null || fail "python3 is not installed (deploy/install-deps.sh)"

start_perqd --workers 2

upload_model "$STORIES";      F32=$MODEL_ID
upload_model "$STORIES_BF16"; BF16=$MODEL_ID

step "submit: per channel on F32, group 32 on BF16"
submit_job "$(rtn_spec "$F32" null)"; J1=$JOB_ID
assert_json ".model == \"$F32\" and .spec.method == \"rtn\" and .spec.weights.group_size == null" "the job echoes its spec"
assert_json '.spec.weights.bits == 4 and .spec.weights.algorithm == "rtn" and .spec.activations.bits == 16 and .spec.rotation.mode == "none"' \
  "the job's spec has the rtn defaults filled in"
assert_json '.spec.outputs == ["compressed-tensors"] and (.spec | (has("calibration") | not) or .calibration == null)' \
  "outputs default to compressed-tensors; rtn has no calibration"
assert_json '.created_at != null and .finished_at == null and .error == null'
submit_job "$(rtn_spec "$BF16" 32)"; J2=$JOB_ID
[ "$J1" != "$J2" ] || fail "two jobs got the same id"

step "both succeed"
expect_succeeded "$J1" 60
assert_json '.stage == null or (.stage | type == "string")'
assert_json '.progress.done == .progress.total and .progress.percent == 100' "a finished job shows full progress"
assert_json '.started_at != null and .finished_at != null and (.metrics | type == "object")'
expect_succeeded "$J2" 60

step "job list, and the status filter"
get /v1/jobs; assert_status 200
assert_json "[.jobs[].id] | index(\"$J1\") != null and index(\"$J2\") != null" "both jobs listed"
get "/v1/jobs?status=succeeded"; assert_status 200
assert_json '[.jobs[].status] | all(. == "succeeded") and length == 2' "status=succeeded lists the two jobs"
get "/v1/jobs?status=running"; assert_status 200
assert_json '.jobs == []' "no job is running"

step "events of a finished job"
get "/v1/jobs/$J1/events"; assert_status 200
assert_json '.events | length > 0' "a finished job has events"
assert_json '[.events[] | (.seq|type=="number") and has("time") and (.level|IN("debug","info","warn","error")) and (.message|type=="string")] | all' \
  "each event has seq, time, level and message"
assert_json '[.events[].seq] as $s | $s == ($s | sort) and ($s | unique | length) == ($s | length)' "seq strictly increases"

step "download every artifact; sha256 against listing and manifest"
download_artifacts "$J1" "$TMP/out1"
download_artifacts "$J2" "$TMP/out2"
for d in out1 out2; do
  jq -e '.spec.method == "rtn"' "$TMP/$d/manifest.json" >/dev/null || fail "$d/manifest.json does not carry the job spec"
  for f in tokenizer.json; do
    [ -f "$TMP/$d/$f" ] || fail "$d: $f not copied into the artifacts"
  done
done
cmp -s "$TMP/out1/tokenizer.json" "$STORIES/tokenizer.json" || fail "tokenizer.json differs from the model's"
jq -e '.files | if type == "array" then map(.name // .path) else keys end | index("manifest.json") == null' "$TMP/out1/manifest.json" >/dev/null \
  || fail "manifest.json lists itself (its own sha256 cannot be in it)"

step "the INT4 weights dequantize within half a step of the originals"
python3 "$(dirname "$0")/check_int4.py" "$STORIES" "$TMP/out1" channel || fail "check_int4 on the per-channel F32 artifact"
python3 "$(dirname "$0")/check_int4.py" "$STORIES_BF16" "$TMP/out2" 32 || fail "check_int4 on the group-32 BF16 artifact"

step "an unknown artifact is 404"
get "/v1/jobs/$J1/artifacts/no-such-file"; assert_problem 404

stop_perqd
echo "rtn_jobs: ok"

#!/usr/bin/env bash
# A worker killed mid-job fails its job with the reason; the daemon lives on
# and runs the next job.
. "$(dirname "$0")/lib.sh"

start_perqd --workers 1
upload_slow_model; SLOW=$MODEL_ID
upload_model "$STORIES"; M=$MODEL_ID

step "kill -9 the worker of a running job"
submit_job "$(slow_spec "$SLOW" "$SLOW_EVAL_ALL")"; J=$JOB_ID
wait_worker "$J"
wait_job_status "$J" running 10
assert_json '.started_at != null'
kill -9 "$WORKER_PID"
echo "killed worker $WORKER_PID of job $J"

step "the job fails with the reason"
poll_job "$J" 30
[ "$JOB_STATUS" = failed ] || fail "job with a killed worker ended '$JOB_STATUS', expected failed; $(show_last)"
assert_json '.error.type | type == "string" and length > 0' "a failed job has error.type"
assert_json '.error.detail | test("signal|killed"; "i")' "error.detail says the worker was killed"
assert_json '.finished_at != null'
echo "  error: $(jq -c .error "$TMP/resp.body")"
get "/v1/jobs/$J/events"; assert_status 200
assert_json '[.events[] | select(.level == "error")] | length >= 1' "the failure is in the job's event log"
get "/v1/jobs/$J/artifacts"
case $STATUS in
  200) assert_json '[.artifacts[].name] | index("manifest.json") == null' "a failed job has no manifest" ;;
  404|409) assert_problem "$STATUS" ;;
  *) fail "artifacts of a failed job: $(show_last)" ;;
esac

step "the daemon lives"
get /livez; assert_status 200
get /readyz; assert_status 200

step "the next jobs succeed"
submit_job "$(rtn_spec "$M" 32)"; J2=$JOB_ID
expect_succeeded "$J2" 60
download_artifacts "$J2" "$TMP/out"
get "/v1/jobs/$J"; assert_json '.status == "failed"' "a terminal state never changes"

stop_perqd
echo "worker_crash: ok"

#!/usr/bin/env bash
# Cancel: a queued job ends cancelled without running; a running job's worker
# is stopped and the job ends cancelled; terminal jobs stay as they are.
. "$(dirname "$0")/lib.sh"

start_perqd --workers 1
upload_slow_model; SLOW=$MODEL_ID
upload_model "$STORIES"; M=$MODEL_ID

step "one job runs, the next waits (--workers 1)"
submit_job "$(slow_spec "$SLOW" "$SLOW_EVAL_ALL")"; A=$JOB_ID
wait_worker "$A"
submit_job "$(rtn_spec "$M" 32)"; B=$JOB_ID
get "/v1/jobs/$B"; assert_json '.status == "queued" and .started_at == null' "the second job waits for the only worker"

step "a model in use by a job cannot be deleted"
delete "/v1/models/$SLOW"; assert_problem 409
get "/v1/models/$SLOW"; assert_status 200; assert_json '.status == "ready"'

step "cancel the queued job"
post "/v1/jobs/$B/cancel"; assert_status 202
poll_job "$B" 10
[ "$JOB_STATUS" = cancelled ] || fail "a cancelled queued job is '$JOB_STATUS'"
assert_json '.started_at == null and .finished_at != null' "a job cancelled in the queue never started"
get "/v1/jobs/$A"; assert_json '.status == "running"' "cancelling the queued job leaves the running one"

step "cancel the running job: its worker stops"
post "/v1/jobs/$A/cancel"; assert_status 202
poll_job "$A" 15
[ "$JOB_STATUS" = cancelled ] || fail "a cancelled running job is '$JOB_STATUS'; $(show_last)"
wait_gone "$WORKER_PID" 10 || fail "worker $WORKER_PID of the cancelled job is still alive"
get "/v1/jobs/$A/events"; assert_status 200
echo "  last event: $(jq -c '.events[-1]' "$TMP/resp.body")"

step "cancelling a terminal job changes nothing"
post "/v1/jobs/$A/cancel"
case $STATUS in 202|200) ;; 409) assert_problem 409 ;; *) fail "cancel of a cancelled job: $(show_last)" ;; esac
get "/v1/jobs/$A"; assert_json '.status == "cancelled"'
submit_job "$(rtn_spec "$M" 32)"; C=$JOB_ID
expect_succeeded "$C" 60
post "/v1/jobs/$C/cancel"
case $STATUS in 202|200) ;; 409) assert_problem 409 ;; *) fail "cancel of a succeeded job: $(show_last)" ;; esac
get "/v1/jobs/$C"; assert_json '.status == "succeeded"' "a succeeded job stays succeeded after cancel"

step "the status filter"
get "/v1/jobs?status=cancelled"; assert_status 200
assert_json "[.jobs[].id] | sort == ([\"$A\", \"$B\"] | sort)" "status=cancelled lists exactly the two cancelled jobs"

step "the model is free again"
delete "/v1/models/$SLOW"
[ "$STATUS" = 200 ] || [ "$STATUS" = 204 ] || fail "delete of an unused model: $(show_last)"
stop_perqd
echo "cancel: ok"

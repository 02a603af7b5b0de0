#!/usr/bin/env bash
# The daemon's state survives it: after a clean stop (SIGTERM) models, jobs,
# events and artifacts are all there; after a crash (SIGKILL) the job that was
# running is re-queued or failed with a reason, never left running.
. "$(dirname "$0")/lib.sh"

start_perqd --workers 1
upload_model "$STORIES"; M=$MODEL_ID
submit_job "$(rtn_spec "$M" 32)"; J=$JOB_ID
expect_succeeded "$J" 60
create_model half; U=$MODEL_ID
upload_file "$U" "$STORIES/config.json"
put_file /v1/datasets/stories-head "$STORIES/config.json"; assert_status 201

save_state() { # FILE: what must be the same after a restart
  {
    get "/v1/models/$M"; jq -S . "$TMP/resp.body"
    get "/v1/models/$U"; jq -S . "$TMP/resp.body"
    get "/v1/jobs/$J"; jq -S 'del(.progress.eta_seconds)' "$TMP/resp.body"
    get "/v1/jobs/$J/events"; jq -S . "$TMP/resp.body"
    get "/v1/jobs/$J/artifacts"; jq -S . "$TMP/resp.body"
    get /v1/datasets; jq -S . "$TMP/resp.body"
  } >"$1"
}
save_state "$TMP/state1"
download_artifacts "$J" "$TMP/out1"

step "SIGTERM: clean exit, then the same state on the same data dir"
stop_perqd
start_perqd --data-dir "$DATA" --workers 1
save_state "$TMP/state2"
diff -u "$TMP/state1" "$TMP/state2" >"$TMP/diff" || fail "state changed across a restart:
$(head -n 40 "$TMP/diff")"
download_artifacts "$J" "$TMP/out2"
for f in "$TMP/out1"/*; do
  cmp -s "$f" "$TMP/out2/$(basename "$f")" || fail "artifact $(basename "$f") differs after the restart"
done

step "the restarted daemon takes new work"
upload_file "$U" "$STORIES/model.safetensors"
upload_file "$U" "$STORIES/tokenizer.json"
post "/v1/models/$U/commit"; assert_status 200
submit_job "$(rtn_spec "$U" null)"; J2=$JOB_ID
[ "$J2" != "$J" ] || fail "a job id was reused after the restart"
expect_succeeded "$J2" 60

step "SIGKILL while a job runs"
upload_slow_model; SLOW=$MODEL_ID
submit_job "$(slow_spec "$SLOW")"; K=$JOB_ID
wait_worker "$K"
wait_job_status "$K" running 10
kill_perqd
wait_gone "$WORKER_PID" 5 || fail "worker $WORKER_PID outlived its daemon by more than 5 s"
echo "  the orphaned worker $WORKER_PID stopped by itself"

step "after the restart the job is re-queued or failed with a reason"
start_perqd --data-dir "$DATA" --workers 1
get "/v1/jobs/$K"; assert_status 200
first=$(json .status)
echo "  right after the restart: $first"
case $first in
  queued|running) ;;
  failed) assert_json '.error.detail | type == "string" and length > 0' "a job failed by a crash says why" ;;
  *) fail "the interrupted job is '$first' after the restart" ;;
esac
poll_job "$K" 60
echo "  then: $JOB_STATUS"
case $JOB_STATUS in
  succeeded) download_artifacts "$K" "$TMP/out3" ;;
  failed) assert_json '.error.detail | type == "string" and length > 0' "a job failed by a crash says why"
          echo "  failed: $(jq -c .error "$TMP/resp.body")" ;;
  *) fail "the interrupted job ended '$JOB_STATUS'" ;;
esac
get "/v1/jobs?status=running"; assert_json '.jobs == []' "no job is left running"
get "/v1/jobs/$J"; assert_json '.status == "succeeded"'
download_artifacts "$J" "$TMP/out4"

stop_perqd
echo "restart: ok"

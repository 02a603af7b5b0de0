#!/usr/bin/env bash
# Every bad input of the contract gets a 4xx application/problem+json with a
# reason, and nothing already stored is lost or changed by it.
. "$(dirname "$0")/lib.sh"

MAX_BODY=2000000   # above every stories260K file (1,044,992 bytes at most)
start_perqd --max-body $MAX_BODY

upload_model "$STORIES"; M=$MODEL_ID
create_model half-uploaded; U=$MODEL_ID
upload_file "$U" "$STORIES/config.json"
submit_job "$(rtn_spec "$M" null)"; J=$JOB_ID
expect_succeeded "$J" 60

# What must survive every bad request: models with their files and sha256s,
# jobs, datasets, and the files under the data dir (the SQLite store aside).
snapshot() {
  local path
  for path in /v1/models "/v1/models/$M" "/v1/models/$U" /v1/jobs "/v1/jobs/$J/artifacts" /v1/datasets; do
    get "$path"; echo "$path $STATUS"; cat "$TMP/resp.body"; echo
  done >"$1"
  (cd "$DATA" && find . -type f ! -name '*.log' ! -name '*.db' ! -name '*.db-*' ! -name '*.sqlite*' \
     ! -name '*-wal' ! -name '*-shm' ! -name '*-journal' -print0 | sort -z | xargs -0 -r sha256sum) >>"$1"
}
snapshot "$TMP/before"
unchanged() { # after each bad request
  snapshot "$TMP/after"
  diff -u "$TMP/before" "$TMP/after" >"$TMP/diff" || fail "stored data changed after '$1':
$(head -n 40 "$TMP/diff")"
}
# bad DESCRIPTION STATUS: the last response is that problem, and nothing changed.
bad() {
  assert_problem "$2"
  echo "  $2 ${1}: $(json .detail | head -c 300)"
  unchanged "$1"
}
# bad_any DESCRIPTION STATUS...: one of these statuses.
bad_any() {
  local what=$1; shift
  local s
  for s in "$@"; do [ "$STATUS" = "$s" ] && { bad "$what" "$s"; return; }; done
  fail "$what: expected one of $*; $(show_last)"
}

step "malformed JSON"
post_json /v1/models '{"name": '; bad "model create, truncated JSON" 400
post_json /v1/models 'name=x'; bad "model create, not JSON" 400
post_json /v1/models '[]'; bad "model create, not an object" 400
post_json /v1/jobs '{"model": "'$M'", "method": "rtn",'; bad "job, truncated JSON" 400
post_json /v1/jobs '{"model": "'$M'"} trailing'; bad "job, garbage after the object" 400
post_json /v1/jobs ''; bad "job, empty body" 400

step "unknown fields"
post_json /v1/models '{"name": "x", "colour": "red"}'; bad "model create, unknown field" 400
post_json /v1/jobs "$(jq -nc --arg m "$M" '{model: $m, method: "rtn", priority: 9}')"; bad "job, unknown top-level field" 400
post_json /v1/jobs "$(jq -nc --arg m "$M" '{model: $m, method: "rtn", weights: {group_size: 32, algorithm: "rtn", sparsity: 0.5}}')"
bad "job, unknown field in weights" 400
post_json /v1/jobs "$(jq -nc --arg m "$M" '{model: $m, method: "rtn", eval: {dataset: "d", ctx: 256, stride: 1}}')"
bad "job, unknown field in eval" 400

step "wrong types in the job spec"
for spec in \
  '{model: $m, method: 5}' \
  '{model: 42, method: "rtn"}' \
  '{model: $m, method: "rtn", weights: {group_size: "32", algorithm: "rtn"}}' \
  '{model: $m, method: "rtn", weights: {bits: 4.5, algorithm: "rtn"}}' \
  '{model: $m, method: "rtn", weights: "int4"}' \
  '{model: $m, method: "rtn", outputs: "compressed-tensors"}' \
  '{model: $m, method: "rtn", activations: {bits: "16"}}' \
  '{model: $m, method: "rtn", eval: {dataset: "d", ctx: "256"}}'; do
  post_json /v1/jobs "$(jq -nc --arg m "$M" "$spec")"; bad "job $spec" 400
done

step "values out of range"
for spec in \
  '{model: $m, method: "gptq"}' \
  '{model: $m, method: "rtn", weights: {bits: 3, algorithm: "rtn"}}' \
  '{model: $m, method: "rtn", weights: {group_size: 48, algorithm: "rtn"}}' \
  '{model: $m, method: "rtn", weights: {group_size: 0, algorithm: "rtn"}}' \
  '{model: $m, method: "rtn", weights: {algorithm: "awq"}}' \
  '{model: $m, method: "rtn", outputs: ["onnx"]}' \
  '{model: $m, method: "rtn", outputs: []}' \
  '{model: $m, method: "perq", calibration: {dataset: "d", samples: 16, seq_len: 512, seed: 1}, rotation: {mode: "full", permutation: "sorted"}}' \
  '{model: $m, method: "rtn", eval: {dataset: "d", ctx: 0}}'; do
  post_json /v1/jobs "$(jq -nc --arg m "$M" "$spec")"; bad "job $spec" 400
done

step "impossible combinations"
for spec in \
  '{model: $m, method: "rtn", calibration: {dataset: "d", samples: 16, seq_len: 512, seed: 42}}' \
  '{model: $m, method: "perq"}' \
  '{model: $m, method: "rtn", weights: {algorithm: "gptq"}}' \
  '{model: $m, method: "rtn", activations: {bits: 4}}' \
  '{model: $m, method: "rtn", rotation: {mode: "full"}}' \
  '{model: $m, method: "perq", calibration: {dataset: "d"}, rotation: {mode: "none", block_size: 16}}' \
  '{model: $m, method: "perq", calibration: {dataset: "d"}, rotation: {mode: "block"}}'; do
  post_json /v1/jobs "$(jq -nc --arg m "$M" "$spec")"; bad "job $spec" 400
done

step "unknown model or job"
for path in /v1/models/m_nope /v1/jobs/j_nope /v1/jobs/j_nope/events /v1/jobs/j_nope/artifacts \
            /v1/jobs/j_nope/artifacts/manifest.json "/v1/jobs/$J/artifacts/nope.bin"; do
  get "$path"; bad "GET $path" 404
done
post /v1/models/m_nope/commit; bad "commit of an unknown model" 404
post /v1/jobs/j_nope/cancel; bad "cancel of an unknown job" 404
delete /v1/models/m_nope; bad "delete of an unknown model" 404
put_file /v1/models/m_nope/files/config.json "$STORIES/config.json"; bad "upload into an unknown model" 404
post_json /v1/jobs '{"model": "m_nope", "method": "rtn"}'; bad_any "job on an unknown model" 404 422 400
post_json /v1/jobs "$(jq -nc --arg m "$U" '{model: $m, method: "rtn"}')"; bad_any "job on a model not committed" 409 422 400
post_json /v1/jobs "$(jq -nc --arg m "$M" '{model: $m, method: "rtn", eval: {dataset: "no-such-set"}}')"
bad_any "job evaluating on an unknown dataset" 404 422 400

step "file names"
printf 'x' >"$TMP/x"
for name in 'a%2Fb' '..' '%2E%2E' '..%2F..%2Fescape' '.hidden' '.' 'a%20b' 'a%5Cb' 'caf%C3%A9' 'a%00b'; do
  # not curl -T: it appends the local file name to a URL ending in "..".
  req PUT "/v1/models/$U/files/$name" --data-binary @"$TMP/x" --path-as-is; bad "file name '$name'" 400
done
put_file "/v1/models/$U/files/a/b" "$TMP/x"; bad_any "file name with a literal /" 400 404
[ -z "$(find "$TMP" -type f \( -name 'escape*' -o -name '.hidden' -o -name 'b' \))" ] || fail "a file of a rejected name was written"
for name in '..%2Fx' '.hidden' 'a%2Fb'; do
  req PUT "/v1/datasets/$name" --data-binary @"$TMP/x" --path-as-is; bad "dataset name '$name'" 400
done

step "checksum mismatch: 400, and the stored file of that name is unchanged"
printf '{"architectures": ["Other"]}' >"$TMP/config.json"
put_file "/v1/models/$U/files/config.json" "$TMP/config.json" -H "X-Content-SHA256: $(sha256_of "$STORIES/config.json")"
bad "checksum mismatch replacing config.json" 400
put_file "/v1/models/$U/files/tokenizer.json" "$STORIES/tokenizer.json" -H "X-Content-SHA256: $(printf '0%.0s' $(seq 64))"
bad "checksum mismatch on a new file" 400
put_file "/v1/models/$U/files/tokenizer.json" "$STORIES/tokenizer.json" -H "X-Content-SHA256: not-hex"
bad "malformed X-Content-SHA256" 400

step "a body over --max-body"
head -c $((MAX_BODY + 1000000)) /dev/zero >"$TMP/big.bin"
put_file "/v1/models/$U/files/big.bin" "$TMP/big.bin"; bad "upload over the limit" 413
{ printf '{"name": "'; head -c $((MAX_BODY + 1000)) /dev/zero | tr '\0' a; printf '"}'; } >"$TMP/big.json"
req POST /v1/models -H 'Content-Type: application/json' --data-binary @"$TMP/big.json"; bad "model create over the limit" 413
req POST /v1/jobs -H 'Content-Type: application/json' --data-binary @"$TMP/big.json"; bad "job over the limit" 413
put_file "/v1/datasets/huge" "$TMP/big.bin"; bad "dataset over the limit" 413

step "commit of an invalid model: 422 listing each problem, model still uploading"
create_model broken; X=$MODEL_ID
mkdir -p "$TMP/broken"
jq '.architectures = ["GPT2LMHeadModel"] | .model_type = "gpt2"' "$STORIES/config.json" >"$TMP/broken/config.json"
head -c 100000 "$STORIES/model.safetensors" >"$TMP/broken/model.safetensors"
upload_file "$X" "$TMP/broken/config.json"
upload_file "$X" "$TMP/broken/model.safetensors"
upload_file "$X" "$STORIES/tokenizer.json"
snapshot "$TMP/before"
post "/v1/models/$X/commit"; assert_problem 422
all_text=$(jq -r '[.. | strings] | join(" ")' "$TMP/resp.body")
[[ $all_text == *GPT2LMHeadModel* ]] || fail "the 422 does not name the unsupported architecture; $(show_last)"
[[ $all_text == *model.safetensors* ]] || fail "the 422 does not name the truncated model.safetensors; $(show_last)"
echo "  422: ${all_text:0:400}"
unchanged "commit of an invalid model"
get "/v1/models/$X"; assert_json '.status == "uploading"' "a model that failed validation stays uploading"

step "a shape mismatch and a missing tokenizer are each named"
create_model shapes; Y=$MODEL_ID
jq '.hidden_size = 128' "$STORIES/config.json" >"$TMP/broken/config.json"
upload_file "$Y" "$TMP/broken/config.json" config.json
upload_file "$Y" "$STORIES/model.safetensors"
snapshot "$TMP/before"
post "/v1/models/$Y/commit"; assert_problem 422
all_text=$(jq -r '[.. | strings] | join(" ")' "$TMP/resp.body")
[[ $all_text == *tokenizer.json* ]] || fail "the 422 does not name the missing tokenizer.json; $(show_last)"
[[ $all_text =~ (embed_tokens|q_proj|shape) ]] || fail "the 422 does not name a tensor of the wrong shape; $(show_last)"
echo "  422: ${all_text:0:400}"
unchanged "commit with wrong shapes"

step "after the fixes the same model commits"
upload_file "$X" "$STORIES/config.json"
upload_file "$X" "$STORIES/model.safetensors"
post "/v1/models/$X/commit"; assert_status 200; assert_json '.status == "ready"'

step "the earlier job's artifacts are intact"
download_artifacts "$J" "$TMP/out"
stop_perqd
echo "bad_input: ok"

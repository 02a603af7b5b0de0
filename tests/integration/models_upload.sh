#!/usr/bin/env bash
# Uploading the two stories260K checkpoints file by file, committing them, and
# reading them back: every file listed with the sha256 of the original.
. "$(dirname "$0")/lib.sh"

start_perqd

# check_model_files ID DIR: the model object lists exactly the files of DIR,
# each with its size and the sha256 of the original.
check_model_files() {
  local id=$1 dir=$2 f name
  assert_json ".id == \"$id\" and .status == \"ready\"" "model $id is ready"
  local want got
  want=$(cd "$dir" && for f in *; do [ -f "$f" ] && echo "$f"; done | sort)
  got=$(json '.files[].name' | sort)
  [ "$want" = "$got" ] || fail "model $id lists files [$got], expected [$want]"
  for f in "$dir"/*; do
    [ -f "$f" ] || continue
    name=$(basename "$f")
    assert_json ".files[] | select(.name == \"$name\") | .sha256 == \"$(sha256_of "$f")\" and .bytes == $(stat -c %s "$f")" \
      "$name listed with the sha256 and size of the original"
  done
}

step "a new model is empty and uploading"
create_model stories260K
M=$MODEL_ID
get "/v1/models/$M"; assert_status 200
assert_json '.name == "stories260K" and .status == "uploading" and .files == []'

step "uploads are listed before the commit"
upload_file "$M" "$STORIES/config.json"
get "/v1/models/$M"; assert_status 200
assert_json '.status == "uploading" and [.files[].name] == ["config.json"]' "the uploaded file is listed"

step "a file uploaded again replaces the previous one"
printf '{"not": "the config"}' >"$TMP/other.json"
upload_file "$M" "$TMP/other.json" config.json
upload_file "$M" "$STORIES/config.json"

step "the rest of stories260K (every file of the folder)"
for f in "$STORIES"/*; do
  [ "$(basename "$f")" = config.json ] || upload_file "$M" "$f"
done
post "/v1/models/$M/commit"; assert_status 200
assert_json '.status == "ready"'

step "stories260K-bf16, uploaded without checksum headers"
create_model stories260K-bf16
B=$MODEL_ID
for f in "$STORIES_BF16"/*; do
  put_file "/v1/models/$B/files/$(basename "$f")" "$f"
  assert_status 201
  assert_json ".sha256 == \"$(sha256_of "$f")\"" "the daemon computes the sha256 of $(basename "$f")"
done
post "/v1/models/$B/commit"; assert_status 200
assert_json '.status == "ready"'

step "get shows every file with its sha256"
get "/v1/models/$M"; assert_status 200
check_model_files "$M" "$STORIES"
get "/v1/models/$B"; assert_status 200
check_model_files "$B" "$STORIES_BF16"

step "list shows both models"
get /v1/models; assert_status 200
[[ $(header Content-Type) == application/json* ]] || fail "GET /v1/models Content-Type is $(header Content-Type)"
models_json() { if jq -e 'type == "array"' "$TMP/resp.body" >/dev/null; then json '.'; else json '.models'; fi; }
models_json >"$TMP/list.json"
jq -e --arg m "$M" --arg b "$B" '[.[].id] | (index($m) != null) and (index($b) != null) and length == 2' "$TMP/list.json" >/dev/null \
  || fail "GET /v1/models lists $(jq -c '[.[].id]' "$TMP/list.json"), expected $M and $B"
jq -e --arg b "$B" '.[] | select(.id == $b) | .status == "ready" and .name == "stories260K-bf16"' "$TMP/list.json" >/dev/null \
  || fail "the listing does not show $B ready"

step "a committed model takes no more files"
put_file "/v1/models/$M/files/extra.txt" "$STORIES/config.json"
[ "$STATUS" = 409 ] || [ "$STATUS" = 400 ] || fail "upload into a ready model: expected 409; $(show_last)"
assert_problem "$STATUS"
get "/v1/models/$M"; check_model_files "$M" "$STORIES"

step "delete"
create_model scratch
S=$MODEL_ID
upload_file "$S" "$STORIES/config.json"
delete "/v1/models/$S"
[ "$STATUS" = 200 ] || [ "$STATUS" = 204 ] || fail "DELETE model: expected 200 or 204; $(show_last)"
get "/v1/models/$S"; assert_problem 404
get /v1/models; assert_status 200
models_json | jq -e --arg s "$S" '[.[].id] | index($s) == null' >/dev/null || fail "a deleted model is still listed"

stop_perqd
echo "models_upload: ok"

#!/usr/bin/env bash
# Upload and download throughput through perqd on loopback, each as a ratio to
# a plain local `cp` of the same bytes measured in the same run: the synthetic
# 1B-shaped checkpoint's safetensors uploaded with `curl -T`, then the
# model.safetensors artifact of an rtn job on it downloaded with curl.
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/bench_common.sh"

MODEL=$(bench_model_dir)
export TMPDIR=$TMP
start_perqd --workers 1 --max-body 68719476736 >&2

create_model bench >&2
for f in "$MODEL"/*; do
  case $f in *.safetensors) ;; *) upload_file "$MODEL_ID" "$f" >&2 ;; esac
done

up_bytes=0; up_secs=0; cp_secs=0
for f in "$MODEL"/*.safetensors; do
  name=$(basename "$f"); bytes=$(stat -c %s "$f")
  cat "$f" >/dev/null
  t0=$(now)
  put_file "/v1/models/$MODEL_ID/files/$name" "$f"
  t1=$(now)
  assert_status 201
  up_secs=$(calc "$up_secs + $(elapsed "$t0" "$t1")")
  cp_secs=$(calc "$cp_secs + $(cp_seconds "$f")")
  up_bytes=$((up_bytes + bytes))
  [ "$(json .sha256)" = "$(sha256_of "$f")" ] || fail "uploaded $name has another sha256"
done
up_rate=$(calc "$up_bytes / $up_secs"); cp_rate=$(calc "$up_bytes / $cp_secs")
printf 'upload: %s of cp throughput (%.2f GB in %.2f s through perqd with curl -T and X-Content-SHA256 unset, cp %.2f GB/s)\n' \
  "$(ratio "$up_rate" "$cp_rate")" "$(calc "$up_bytes / 1000000000")" "$up_secs" "$(calc "$cp_rate / 1000000000")"

post "/v1/models/$MODEL_ID/commit"; assert_status 200
submit_job "$(rtn_spec "$MODEL_ID" 128)" >&2
expect_succeeded "$JOB_ID" 600 >&2
get "/v1/jobs/$JOB_ID/artifacts"; assert_status 200
bytes=$(json '.artifacts[] | select(.name == "model.safetensors") | .bytes')
sum=$(json '.artifacts[] | select(.name == "model.safetensors") | .sha256')
url=$BASE/v1/jobs/$JOB_ID/artifacts/model.safetensors
curl -sS -o /dev/null "$url"            # warm: the artifact in the page cache, as the cp source is
t0=$(now)
curl -sS -f -o "$TMP/download.safetensors" "$url" || fail "download failed"
sync "$TMP/download.safetensors"
t1=$(now)
dl_secs=$(elapsed "$t0" "$t1")
[ "$(sha256_of "$TMP/download.safetensors")" = "$sum" ] || fail "downloaded artifact has another sha256"
cp_secs=$(cp_seconds "$TMP/download.safetensors")
dl_rate=$(calc "$bytes / $dl_secs"); cp_rate=$(calc "$bytes / $cp_secs")
printf 'download: %s of cp throughput (%.2f GB in %.2f s, cp %.2f GB/s)\n' \
  "$(ratio "$dl_rate" "$cp_rate")" "$(calc "$bytes / 1000000000")" "$dl_secs" "$(calc "$cp_rate / 1000000000")"
stop_perqd >&2

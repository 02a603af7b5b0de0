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

# Best of $ROUNDS for each side, interleaved, so that both meet the same disk:
# perqd fdatasyncs an upload before answering, the copy is synced too.
ROUNDS=${BENCH_ROUNDS:-3}
min() { calc "($1 < $2) ? $1 : $2"; }
up_bytes=0; up_secs=0; cp_secs=0
for f in "$MODEL"/*.safetensors; do
  name=$(basename "$f"); bytes=$(stat -c %s "$f")
  cat "$f" >/dev/null
  best_up=1e9; best_cp=1e9
  for _ in $(seq 1 "$ROUNDS"); do
    t0=$(now)
    put_file "/v1/models/$MODEL_ID/files/$name" "$f"
    t1=$(now)
    assert_status 201
    best_up=$(min "$best_up" "$(elapsed "$t0" "$t1")")
    best_cp=$(min "$best_cp" "$(cp_seconds "$f")")
  done
  [ "$(json .sha256)" = "$(sha256_of "$f")" ] || fail "uploaded $name has another sha256"
  up_secs=$(calc "$up_secs + $best_up"); cp_secs=$(calc "$cp_secs + $best_cp")
  up_bytes=$((up_bytes + bytes))
done
up_rate=$(calc "$up_bytes / $up_secs"); cp_rate=$(calc "$up_bytes / $cp_secs")
printf 'upload: %s of cp throughput (%.2f GB through perqd with curl -T in %.2f s, cp+fsync %.2f s; best of %d)\n' \
  "$(ratio "$up_rate" "$cp_rate")" "$(calc "$up_bytes / 1000000000")" "$up_secs" "$cp_secs" "$ROUNDS"

post "/v1/models/$MODEL_ID/commit"; assert_status 200
submit_job "$(rtn_spec "$MODEL_ID" 128)" >&2
expect_succeeded "$JOB_ID" 600 >&2
get "/v1/jobs/$JOB_ID/artifacts"; assert_status 200
bytes=$(json '.artifacts[] | select(.name == "model.safetensors") | .bytes')
sum=$(json '.artifacts[] | select(.name == "model.safetensors") | .sha256')
url=$BASE/v1/jobs/$JOB_ID/artifacts/model.safetensors
curl -sS -o /dev/null "$url"            # warm: the artifact in the page cache, as the cp source is
best_dl=1e9; best_cp=1e9
for _ in $(seq 1 "$ROUNDS"); do
  rm -f "$TMP/download.safetensors"
  t0=$(now)
  curl -sS -f -o "$TMP/download.safetensors" "$url" || fail "download failed"
  sync "$TMP/download.safetensors"
  t1=$(now)
  best_dl=$(min "$best_dl" "$(elapsed "$t0" "$t1")")
  best_cp=$(min "$best_cp" "$(cp_seconds "$TMP/download.safetensors")")
done
[ "$(sha256_of "$TMP/download.safetensors")" = "$sum" ] || fail "downloaded artifact has another sha256"
dl_rate=$(calc "$bytes / $best_dl"); cp_rate=$(calc "$bytes / $best_cp")
printf 'download: %s of cp throughput (%.2f GB with curl from perqd, synced, in %.2f s, cp+fsync %.2f s; best of %d)\n' \
  "$(ratio "$dl_rate" "$cp_rate")" "$(calc "$bytes / 1000000000")" "$best_dl" "$best_cp" "$ROUNDS"
stop_perqd >&2

#!/usr/bin/env bash
# Artifact downloads speak HTTP caching and ranges: ETag with If-None-Match
# (304), single byte ranges (206 with Content-Range, the exact bytes), and 416
# for a range past the end.
. "$(dirname "$0")/lib.sh"

start_perqd
upload_model "$STORIES"; M=$MODEL_ID
submit_job "$(rtn_spec "$M" 32)"; J=$JOB_ID
expect_succeeded "$J" 60
download_artifacts "$J" "$TMP/out"
A=/v1/jobs/$J/artifacts/model.safetensors
FILE=$TMP/out/model.safetensors
SIZE=$(stat -c %s "$FILE")
[ "$SIZE" -gt 1000 ] || fail "model.safetensors is only $SIZE bytes"

# bytes FROM COUNT of the downloaded file
slice() { dd if="$FILE" bs=1M iflag=skip_bytes,count_bytes skip="$1" count="$2" status=none; }

step "a plain download has an ETag and the full length"
get "$A"; assert_status 200
ETAG=$(header ETag)
[[ $ETAG =~ ^(W/)?\".+\"$ ]] || fail "ETag '$ETAG' is not a quoted entity tag"
[ "$(header Content-Length)" = "$SIZE" ] || fail "Content-Length $(header Content-Length), expected $SIZE"
cmp -s "$TMP/resp.body" "$FILE" || fail "a second download differs from the first"
get "$A"; [ "$(header ETag)" = "$ETAG" ] || fail "the ETag changed between two downloads"
get "/v1/jobs/$J/artifacts/config.json"; assert_status 200
[ "$(header ETag)" != "$ETAG" ] || fail "two different artifacts have the same ETag"

step "If-None-Match"
get "$A" -H "If-None-Match: $ETAG"; assert_status 304
[ ! -s "$TMP/resp.body" ] || fail "a 304 has a body"
[ "$(header ETag)" = "$ETAG" ] || fail "a 304 does not repeat the ETag"
get "$A" -H "If-None-Match: \"something-else\", $ETAG"; assert_status 304
get "$A" -H 'If-None-Match: "something-else"'; assert_status 200
cmp -s "$TMP/resp.body" "$FILE" || fail "the body after a non-matching If-None-Match differs"
get "$A" -H 'If-None-Match: *'; assert_status 304

step "ranges"
check_range() { # RANGE FROM COUNT
  get "$A" -H "Range: bytes=$1"; assert_status 206
  local want="bytes $2-$(($2 + $3 - 1))/$SIZE"
  [ "$(header Content-Range)" = "$want" ] || fail "Range $1: Content-Range '$(header Content-Range)', expected '$want'"
  [ "$(header Content-Length)" = "$3" ] || fail "Range $1: Content-Length $(header Content-Length), expected $3"
  slice "$2" "$3" | cmp -s - "$TMP/resp.body" || fail "Range $1: the bytes differ from dd of the file"
}
check_range 0-99 0 100
check_range 8-8 8 1
check_range 1000- 1000 $((SIZE - 1000))
check_range -77 $((SIZE - 77)) 77
check_range "$((SIZE - 10))-$((SIZE + 5000))" $((SIZE - 10)) 10
check_range "0-$((SIZE - 1))" 0 "$SIZE"
get "$A" -H 'Range: bytes=0-99' -H "If-None-Match: $ETAG"; assert_status 304

step "416 for a range past the end"
get "$A" -H "Range: bytes=$SIZE-"; assert_status 416
[ "$(header Content-Range)" = "bytes */$SIZE" ] || fail "416 Content-Range '$(header Content-Range)', expected 'bytes */$SIZE'"
[[ $(header Content-Type) == application/problem+json* ]] || fail "a 416 is not application/problem+json"
get "$A" -H "Range: bytes=$((SIZE + 100))-$((SIZE + 200))"; assert_status 416

step "a Range the server need not honour is ignored (full 200), never an error page"
get "$A" -H 'Range: items=0-5'; assert_status 200
cmp -s "$TMP/resp.body" "$FILE" || fail "a non-bytes Range did not give the whole file"

step "downloads are the same after a restart (same ETag, same bytes)"
stop_perqd
start_perqd --data-dir "$DATA"
get "$A" -H "If-None-Match: $ETAG"; assert_status 304
check_range 0-99 0 100
stop_perqd
echo "artifacts_http: ok"

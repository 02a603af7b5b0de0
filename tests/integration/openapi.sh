#!/usr/bin/env bash
# proto/openapi.yaml describes the whole HTTP API of the contract: every path
# and method API.md names, every schema reference resolves, the job spec's
# fields and defaults, and the error statuses.
set -euo pipefail
PERQ_ROOT=${PERQ_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
PERQ_SHARED=${PERQ_SHARED:-$PERQ_ROOT/../shared}
DOC=$PERQ_ROOT/proto/openapi.yaml
API=$PERQ_SHARED/API.md
fail() { echo "FAIL: $*" >&2; exit 1; }
[ -f "$DOC" ] || fail "no $DOC"
[ -f "$API" ] || fail "no $API"

! grep -qP '\t' "$DOC" || fail "openapi.yaml has tabs (YAML forbids them in indentation)"
head -n 1 "$DOC" | grep -qE '^openapi: 3\.0\.[0-9]+$' || fail "openapi.yaml does not start with 'openapi: 3.0.x'"

# "PATH METHOD" for every operation of the document: a path is a key at
# indentation 2 under `paths:`, a method a key at indentation 4 below it.
awk '
  /^[^ #]/ { in_paths = ($0 ~ /^paths:/); next }
  in_paths && /^  \/[^ ]*:[ ]*$/ { p = $1; sub(/:$/, "", p); next }
  in_paths && /^    (get|put|post|delete|patch|head):/ { m = $1; sub(/:$/, "", m); print p, toupper(m) }
' "$DOC" | sort -u >"${TMPDIR:-/tmp}/openapi-ops.$$"
trap 'rm -f "${TMPDIR:-/tmp}/openapi-ops.$$"' EXIT
ops=$(cat "${TMPDIR:-/tmp}/openapi-ops.$$")
[ -n "$ops" ] || fail "no operations found in openapi.yaml"

# Every `METHOD /path` of API.md, query strings and optional parts dropped.
missing=0; n=0
while read -r method path; do
  n=$((n + 1))
  if ! grep -qxF "$path $method" <<<"$ops"; then
    echo "missing from openapi.yaml: $method $path" >&2; missing=$((missing + 1))
  fi
done < <(grep -oE '`(GET|POST|PUT|DELETE|PATCH) /[A-Za-z0-9_{}/.-]*' "$API" | tr -d '`' | sort -u)
[ "$n" -ge 15 ] || fail "found only $n operations in API.md; is it the contract?"
[ "$missing" -eq 0 ] || fail "$missing operations of API.md are not in openapi.yaml"
echo "all $n operations of API.md are in openapi.yaml ($(wc -l <<<"$ops") in the document)"

# Every $ref points at a defined component.
while read -r ref; do
  kind=${ref%%/*}; name=${ref#*/}
  awk -v kind="$kind" -v name="$name" '
    /^components:/ { c = 1; next } /^[^ ]/ { c = 0 }
    c && $0 ~ "^  " kind ":" { k = 1; next } c && /^  [^ ]/ { k = 0 }
    k && $0 ~ "^    " name ":" { found = 1 }
    END { exit !found }' "$DOC" || fail "\$ref #/components/$ref is not defined"
done < <(grep -oE '\$ref: "#/components/[A-Za-z]+/[A-Za-z0-9_]+"' "$DOC" | sed -E 's|.*#/components/||; s/"$//' | sort -u)

# The job spec: every field of API.md's example, with the documented defaults.
for field in model method weights bits group_size algorithm activations rotation mode block_size permutation \
             calibration dataset samples seq_len seed outputs eval ctx chunks; do
  grep -qE "^ +$field:" "$DOC" || fail "job spec field '$field' is not in openapi.yaml"
done
for default in 'default: perq' 'default: 128' 'default: 2048' 'default: 42' 'default: 256' 'default: massdiff' \
               'default: \[compressed-tensors\]' 'default: null'; do
  grep -qE "$default" "$DOC" || fail "openapi.yaml lacks '$default'"
done
for v in queued running succeeded failed cancelled loading calibrating permuting rotating quantizing exporting evaluating \
         compressed-tensors massdiff identity zigzag random; do
  grep -qw -- "$v" "$DOC" || fail "'$v' is not in openapi.yaml"
done

# Status codes and the error media type.
for code in 200 201 202 204 206 304 400 404 409 413 416 422 503; do
  grep -qE "^ +\"$code\":" "$DOC" || fail "status $code is not documented"
done
grep -q 'application/problem+json' "$DOC" || fail "no application/problem+json responses"
for f in type title status detail; do
  awk '/^    Problem:/ { p = 1 } p && /required:/ { print; exit }' "$DOC" | grep -qw "$f" || fail "Problem does not require $f"
done
echo "openapi: ok"

# perq synth from the command line: exit codes, the same bytes for the same
# arguments, sharding, and a folder the rest of perq reads (tokenize, eval).
set -euo pipefail
PERQ_BIN=${PERQ_BIN:-$(cd "$(dirname "$0")/../.." && pwd)/build/bin}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/perq-synth.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
perq() { "$PERQ_BIN/perq" "$@"; }

echo "== usage errors exit 2, a bad preset exits 1 naming the presets"
set +e
perq synth --out "$TMP/x" 2>/dev/null; [ $? -eq 2 ] || fail "missing --preset should exit 2"
perq synth --preset tiny --out "$TMP/x" --dtype int8 2>/dev/null; [ $? -eq 2 ] || fail "bad dtype should exit 2"
perq synth --preset tiny --out "$TMP/x" --layers 0 2>/dev/null; [ $? -eq 2 ] || fail "--layers 0 should exit 2"
msg=$(perq synth --preset llama-9 --out "$TMP/x" 2>&1); rc=$?
set -e
[ $rc -eq 1 ] || fail "unknown preset should exit 1, got $rc"
grep -q 'llama-3.2-1b' <<<"$msg" || fail "the error should list the presets: $msg"
[ ! -e "$TMP/x" ] || fail "nothing should be written on a usage error"
perq synth --help | grep -q -- '--preset' || fail "--help should describe the options"

echo "== same arguments, same bytes"
perq synth --preset tiny --seed 5 --out "$TMP/a"
perq synth --preset tiny --seed 5 --out "$TMP/b"
(cd "$TMP/a" && sha256sum -- *) >"$TMP/a.sum"
(cd "$TMP/b" && sha256sum -c --quiet "$TMP/a.sum") || fail "two runs differ"
for f in config.json generation_config.json model.safetensors tokenizer.json tokenizer_config.json synth.json; do
  [ -s "$TMP/a/$f" ] || fail "$f missing"
done

echo "== --layers and --dtype"
perq synth --preset tiny --layers 3 --dtype f16 --out "$TMP/c"
grep -q '"num_hidden_layers": 3' "$TMP/c/config.json" || fail "--layers not in config.json"
grep -q '"torch_dtype": "float16"' "$TMP/c/config.json" || fail "--dtype not in config.json"
grep -q '"F16"' "$TMP/c/model.safetensors" || fail "--dtype not in the safetensors header"

echo "== sharding above --shard-bytes"
perq synth --preset tiny --seed 5 --shard-bytes 1000000 --out "$TMP/s"
[ ! -e "$TMP/s/model.safetensors" ] || fail "a sharded folder has no model.safetensors"
ls "$TMP/s"/model-0000*-of-0000*.safetensors >/dev/null || fail "no shards"
grep -q '"total_size"' "$TMP/s/model.safetensors.index.json" || fail "index without total_size"

echo "== the rest of perq reads it"
printf 'Once upon a time, there was a little girl named Lily.\n' >"$TMP/text.txt"
ids=$(perq tokenize --model "$TMP/a" --text "$TMP/text.txt" --json)
[ "$(jq length <<<"$ids")" -gt 5 ] || fail "tokenize gave $ids"
for i in $(seq 1 40); do cat "$TMP/text.txt"; done >"$TMP/long.txt"
for dir in "$TMP/a" "$TMP/s"; do
  out=$(perq eval --model "$dir" --text "$TMP/long.txt" --ctx 64 --chunks 2 --json)
  jq -e '.ppl > 1 and .ppl < 1e6' <<<"$out" >/dev/null || fail "eval on $dir gave $out"
done
[ "$(perq eval --model "$TMP/a" --text "$TMP/long.txt" --ctx 64 --chunks 2 --json | jq .ppl)" = \
  "$(perq eval --model "$TMP/s" --text "$TMP/long.txt" --ctx 64 --chunks 2 --json | jq .ppl)" ] ||
  fail "the sharded and the single-file checkpoints disagree"
echo "ok"

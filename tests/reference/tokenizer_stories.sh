#!/usr/bin/env bash
# The stories260K tokenizer against llama.cpp (shared/models/stories260K/REFERENCE.md):
# the ids of the first 20,000 bytes of tinystories_valid_head.txt (ref_tokens.json),
# and the token count of the whole file as llama-perplexity reads it (one
# trailing newline dropped, BOS added): 393,018.
set -euo pipefail
model="$PERQ_SHARED/models/stories260K"
text="$PERQ_SHARED/data/tinystories_valid_head.txt"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

[ "$(jq .source_bytes "$model/ref_tokens.json")" = 20000 ]
head -c 20000 "$text" >"$work/head.txt"
jq -c .ids "$model/ref_tokens.json" >"$work/expected.json"
"$PERQ_BIN/perq" tokenize --model "$model" --json --text "$work/head.txt" >"$work/got.json"
if ! cmp -s "$work/expected.json" "$work/got.json"; then
  python3 - "$work/expected.json" "$work/got.json" <<'PY'
import json, sys
e, g = (json.load(open(p)) for p in sys.argv[1:3])
i = next((i for i, (a, b) in enumerate(zip(e, g)) if a != b), min(len(e), len(g)))
print(f"ids differ: expected {len(e)}, got {len(g)}; first difference at {i}: {e[i:i+5]} vs {g[i:i+5]}")
PY
  exit 1
fi
"$PERQ_BIN/perq" tokenize --model "$model" --decode --text "$work/got.json" >"$work/head.decoded"
cmp "$work/head.txt" "$work/head.decoded"
echo "first 20000 bytes: $(jq length "$work/got.json") ids match, and decode to the text"

if [ "$(tail -c 1 "$text" | od -An -c | tr -d ' ')" = '\n' ]; then
  head -c -1 "$text" >"$work/whole.txt"
else
  cp "$text" "$work/whole.txt"
fi
"$PERQ_BIN/perq" tokenize --model "$model" --text "$work/whole.txt" >"$work/whole.ids"
"$PERQ_BIN/perq" tokenize --model "$model" --decode --text "$work/whole.ids" | cmp - "$work/whole.txt"
n=$(wc -w <"$work/whole.ids")
with_bos=$((n + 1))
[ "$with_bos" -eq 393018 ] || { echo "whole file: $with_bos tokens with BOS, expected 393018"; exit 1; }
echo "whole file: $with_bos tokens with BOS, as llama.cpp"

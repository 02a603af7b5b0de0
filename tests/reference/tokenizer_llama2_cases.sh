#!/usr/bin/env bash
# The Llama 2 tokenizer against ids that no one here wrote: every case of
# shared/tokenizers/llama2/cases.jsonl (SentencePiece itself and llama.cpp's
# test vectors, ids without BOS) must come out exactly.
set -euo pipefail
tok="$PERQ_SHARED/tokenizers/llama2"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

jq -c '.text' "$tok/cases.jsonl" >"$work/texts.jsonl"
jq -c '.ids' "$tok/cases.jsonl" >"$work/expected.jsonl"
"$PERQ_BIN/perq" tokenize --model "$tok" --lines --text "$work/texts.jsonl" >"$work/got.jsonl"

total=$(wc -l <"$work/expected.jsonl")
[ "$total" -gt 300 ] || { echo "only $total cases read"; exit 1; }
if ! diff -q "$work/expected.jsonl" "$work/got.jsonl" >/dev/null; then
  paste -d '\n' "$work/texts.jsonl" "$work/expected.jsonl" "$work/got.jsonl" | awk 'NR % 3 == 1 { t = $0 }
    NR % 3 == 2 { e = $0 } NR % 3 == 0 && $0 != e { n++; if (n <= 5) print "text " t "\n  expected " e "\n  got      " $0 }
    END { print n " of " NR / 3 " cases differ" }'
  exit 1
fi
echo "llama2 tokenizer: $total of $total cases match"

# Decoding gives the text back: the whole WikiText-2 test file.
text="$PERQ_SHARED/data/wikitext2_test.txt"
"$PERQ_BIN/perq" tokenize --model "$tok" --text "$text" >"$work/wiki.ids"
"$PERQ_BIN/perq" tokenize --model "$tok" --decode --text "$work/wiki.ids" >"$work/wiki.txt"
cmp "$text" "$work/wiki.txt"
echo "wikitext2_test.txt: $(wc -w <"$work/wiki.ids") ids decode to the same $(wc -c <"$text") bytes"

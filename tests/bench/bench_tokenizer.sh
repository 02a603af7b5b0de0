#!/usr/bin/env bash
# Tokenizer throughput: the Llama 2 tokenizer on the 1.3 MB WikiText-2 test
# file, encode time only (tokenizer.json loaded first), best of 3 runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${PERQ_BIN:-$root/build/bin}
shared=${PERQ_SHARED:-$root/../shared}
text="$shared/data/wikitext2_test.txt"
model="$shared/tokenizers/llama2"

best=0 line=
for run in 1 2 3; do
  stats=$("$bin/perq" tokenize --model "$model" --text "$text" --stats 2>&1 >/dev/null)
  mbs=$(sed -n 's/.*(\([0-9.]*\) MB\/s).*/\1/p' <<<"$stats")
  [ -n "$mbs" ] || { echo "bench_tokenizer: no figure in: $stats" >&2; exit 1; }
  if awk -v a="$mbs" -v b="$best" 'BEGIN { exit !(a > b) }'; then best=$mbs line=$stats; fi
done
echo "tokenizer: $best MB/s on wikitext2_test.txt (llama2 tokenizer)"
echo "  ${line#perq tokenize: }"

#!/usr/bin/env bash
# Perplexity of stories260K (F32 and BF16) on the whole tinystories_valid_head.txt,
# llama.cpp protocol, ctx 256, against shared/models/stories260K/REFERENCE.md:
# 1535 chunks, 194,945 predictions scored, PPL 4.875 (F32; llama.cpp 4.8752,
# NumPy float64 4.875173) and 4.876 (BF16; NumPy 4.875666) to the 3rd decimal.
set -euo pipefail
text="$PERQ_SHARED/data/tinystories_valid_head.txt"

check() { # MODEL_DIR EXPECTED_PPL_3_DECIMALS NUMPY_NLL
  local out ppl nll
  out=$("$PERQ_BIN/perq" eval --model "$1" --text "$text" --ctx 256 --json)
  echo "$(basename "$1"): $out"
  [ "$(jq -r .protocol <<<"$out")" = llama.cpp ]
  [ "$(jq .ctx <<<"$out")" = 256 ]
  [ "$(jq .chunks <<<"$out")" = 1535 ] || { echo "expected 1535 chunks"; return 1; }
  [ "$(jq .tokens_scored <<<"$out")" = 194945 ] || { echo "expected 194945 scored predictions"; return 1; }
  ppl=$(jq -r '.ppl * 1000 | round / 1000 | tostring' <<<"$out")
  nll=$(jq .nll <<<"$out")
  if [ "$ppl" != "$2" ]; then
    echo "ppl rounds to $ppl, expected $2"; return 1
  fi
  echo "  ppl $ppl as expected; mean NLL $nll vs NumPy float64 $3"
}

check "$PERQ_SHARED/models/stories260K" 4.875 1.58415554
check "$PERQ_SHARED/models/stories260K-bf16" 4.876 1.58425666

# The text line names its protocol.
line=$("$PERQ_BIN/perq" eval --model "$PERQ_SHARED/models/stories260K" --text "$text" --chunks 4)
echo "$line"
grep -q '^ppl [0-9.]* (llama.cpp protocol, ctx 256, 4 chunks, 508 tokens scored)$' <<<"$line"
line=$("$PERQ_BIN/perq" eval --model "$PERQ_SHARED/models/stories260K" --text "$text" --chunks 4 --protocol paper)
echo "$line"
grep -q '^ppl [0-9.]* (paper protocol, ctx 256, 4 chunks, 512 tokens scored)$' <<<"$line"

#!/bin/sh
# The paper's table on stories260K (PERQ-NOTES.md section 4, issue 4):
# W4A4, INT4 per-channel MSE-scaled weights, INT4 per-token activations;
# calibration 32 x 256 tokens from the END of tinystories_valid_head.txt (the
# last 120 kB), evaluation on its first 150 chunks (llama.cpp protocol, ctx 256).
# Prints perq's perplexity next to the independent NumPy prototype's figure.
# env: PERQ_ROOT (repo), PERQ_BIN (build/bin), PERQ_SHARED.
set -eu
ROOT=${PERQ_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
BIN=${PERQ_BIN:-$ROOT/build/bin}
SHARED=${PERQ_SHARED:-$ROOT/../shared}
MODEL=$SHARED/models/stories260K
TEXT=$SHARED/data/tinystories_valid_head.txt
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
tail -c 120000 "$TEXT" > "$WORK/calib.txt"

# run NAME WEIGHTS_JSON ACT_BITS ROTATION_JSON -> prints ppl_quantized (and ppl_float to $WORK/float)
run() {
    cat > "$WORK/$1.json" <<SPEC
{"method": "perq", "weights": $2, "activations": {"bits": $3}, "rotation": $4,
 "calibration": {"dataset": "$WORK/calib.txt", "samples": 32, "seq_len": 256, "seed": 42},
 "eval": {"dataset": "$TEXT", "ctx": 256, "chunks": 150}}
SPEC
    "$BIN/perq" quantize --model "$MODEL" --out "$WORK/$1" --spec "$WORK/$1.json" > "$WORK/$1.log" 2>&1 ||
        { echo "experiment: $1 failed:" >&2; tail -5 "$WORK/$1.log" >&2; exit 1; }
    python3 - "$WORK/$1/report.json" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))["eval"]
print("%.4f %.4f" % (e["ppl_float"], e["ppl_quantized"]))
PY
}

GPTQ='{"bits": 4, "group_size": null, "algorithm": "gptq"}'
RTN='{"bits": 4, "group_size": null, "algorithm": "rtn"}'
RTN32='{"bits": 4, "group_size": 32, "algorithm": "rtn"}'
GPTQ32='{"bits": 4, "group_size": 32, "algorithm": "gptq"}'
NONE='{"mode": "none", "permutation": "identity"}'
FULL='{"mode": "full", "block_size": null, "permutation": "identity"}'

printf '%-44s %10s %10s %9s %10s\n' "setting (W4A4 unless said)" "perq ppl" "prototype" "diff" "recovery"
FULL_PPL=""
row() { # label ppl expected
    diff=$(python3 -c "e='$3'; print('%+.1f%%' % (100*($2/float(e)-1)) if e != '-' else '-')")
    rec=$( [ -n "$FULL_PPL" ] && python3 -c "print('%.3f' % ($FULL_PPL/$2))" || echo "-")
    printf '%-44s %10.4f %10s %9s %10s\n' "$1" "$2" "$3" "$diff" "$rec"
}

set -- $(run full "$GPTQ" 4 "$FULL"); FLOAT=$1; FULL_PPL=$2
row "float" "$FLOAT" 3.9165
row "GPTQ, no rotation" "$(run none "$GPTQ" 4 "$NONE" | cut -d' ' -f2)" 5.543
row "GPTQ, R1+R2+R3 full" "$FULL_PPL" 4.841
row "RTN, R1+R2+R3 full" "$(run rtn_full "$RTN" 4 "$FULL" | cut -d' ' -f2)" 5.166
# every power-of-two block size dividing the intermediate width (172 = 4 * 43)
for b in 2 4; do
    for p in identity massdiff; do
        exp=-
        [ "$b.$p" = 4.identity ] && exp=4.896
        [ "$b.$p" = 4.massdiff ] && exp=4.905
        ppl=$(run "b$b$p" "$GPTQ" 4 "{\"mode\": \"full\", \"block_size\": $b, \"permutation\": \"$p\"}" | cut -d' ' -f2)
        row "GPTQ, R1+R2 full, R3 block $b, $p" "$ppl" "$exp"
    done
done
row "W4A16 per-channel RTN, no rotation" "$(run a16_rtn "$RTN" 16 "$NONE" | cut -d' ' -f2)" 4.397
row "W4A16 per-channel GPTQ, R1+R2" "$(run a16_gptq "$GPTQ" 16 "$FULL" | cut -d' ' -f2)" 4.290
row "W4A16 group-32 RTN, no rotation" "$(run a16_rtn32 "$RTN32" 16 "$NONE" | cut -d' ' -f2)" -
row "W4A16 group-32 GPTQ, R1+R2" "$(run a16_gptq32 "$GPTQ32" 16 "$FULL" | cut -d' ' -f2)" -
echo "recovery = PPL(GPTQ, R1+R2+R3 full) / PPL(setting); prototype: independent NumPy (issue 4)"
# Where perq and the prototype differ by more than 3%, the settings differ:
# - no rotation: perq leaves the RMSNorm weights unfolded (only a rotation
#   needs them folded; folded, they widen the per-channel weight ranges), so
#   W4A16 RTN is exactly method rtn. Folding them anyway (perq before
#   c453203) measured 4.530 (W4A16 RTN) and 5.398 (W4A4 GPTQ): the
#   prototype's figures sit between the two choices.
# - rotations: perq's R1/R2/R3 are Hadamard matrices (Sylvester, and
#   Williamson's construction for 172). A probe with seeded random orthogonal
#   R1, R2, R3 instead gave RTN full 4.96 / 5.16 / 5.05 and GPTQ full 4.69 /
#   4.77 / 4.69 over three seeds: RTN with full rotations depends on the
#   rotation far more than GPTQ does, and the prototype's 5.166 is in that range.
echo "notes: no rotation keeps the norms unfolded (W4A16 RTN = method rtn); rotations are Hadamard, not random orthogonal:"
echo "       RTN with full rotations is sensitive to that choice, GPTQ much less (tests/bench/experiment.sh comments)"

# The same table on a synthetic 1B-shaped checkpoint with planted outliers,
# where every R3 block size from 16 to 512 applies (KL from the float model
# instead of perplexity: its weights are random).
echo
"$(dirname "$0")/experiment_synth.sh"

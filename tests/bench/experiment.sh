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

# run NAME WEIGHTS_JSON ACT_BITS ROTATION_JSON [SEED] -> prints ppl_float ppl_quantized
run() {
    cat > "$WORK/$1.json" <<SPEC
{"method": "perq", "weights": $2, "activations": {"bits": $3}, "rotation": $4,
 "calibration": {"dataset": "$WORK/calib.txt", "samples": 32, "seq_len": 256, "seed": ${5:-42}},
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

# seeds NAME WEIGHTS_JSON ACT_BITS ROTATION_JSON -> "mean min max" of ppl_quantized over seeds 1..4
seeds() {
    for s in 1 2 3 4; do run "$1_$s" "$2" "$3" "$4" "$s" | cut -d' ' -f2; done |
        python3 -c "import sys; v=[float(x) for x in sys.stdin]; print('%.4f %.4f %.4f' % (sum(v)/len(v), min(v), max(v)))"
}

GPTQ='{"bits": 4, "group_size": null, "algorithm": "gptq"}'
RTN='{"bits": 4, "group_size": null, "algorithm": "rtn"}'
RTN32='{"bits": 4, "group_size": 32, "algorithm": "rtn"}'
GPTQ32='{"bits": 4, "group_size": 32, "algorithm": "gptq"}'
NONE='{"mode": "none", "permutation": "identity"}'
NONE_FOLDED='{"mode": "none", "permutation": "identity", "fold_norms": true}'
R12='{"mode": "full", "block_size": null, "permutation": "identity", "online": false}'
FULL='{"mode": "full", "block_size": null, "permutation": "identity"}'
FULL_RANDOM='{"mode": "full", "block_size": null, "permutation": "identity", "randomized": true}'

printf '%-50s %10s %10s %9s %10s\n' "setting (W4A4 unless said)" "perq ppl" "prototype" "diff" "recovery"
FULL_PPL=""
row() { # label ppl expected [extra]
    diff=$(python3 -c "e='$3'; print('%+.1f%%' % (100*($2/float(e)-1)) if e != '-' else '-')")
    rec=$( [ -n "$FULL_PPL" ] && python3 -c "print('%.3f' % ($FULL_PPL/$2))" || echo "-")
    printf '%-50s %10.4f %10s %9s %10s %s\n' "$1" "$2" "$3" "$diff" "$rec" "${4:-}"
}
row_seeds() { # label "mean min max" expected
    set -- "$1" $2 "$3"
    row "$1" "$2" "$5" "(seeds 1-4: $3 .. $4)"
}

set -- $(run full "$GPTQ" 4 "$FULL"); FLOAT=$1; FULL_PPL=$2
row "float" "$FLOAT" 3.9165
row "GPTQ, no rotation, norms folded" "$(run none_folded "$GPTQ" 4 "$NONE_FOLDED" | cut -d' ' -f2)" 5.543
row "GPTQ, no rotation, norms kept (perq's default)" "$(run none "$GPTQ" 4 "$NONE" | cut -d' ' -f2)" -
row "GPTQ, R1+R2 (online false)" "$(run r12 "$GPTQ" 4 "$R12" | cut -d' ' -f2)" 5.274
row "GPTQ, R1+R2+R3 full" "$FULL_PPL" 4.841
row_seeds "GPTQ, R1+R2+R3 full, randomized, mean" "$(seeds full_random "$GPTQ" 4 "$FULL_RANDOM")" 4.841
row "RTN, R1+R2+R3 full" "$(run rtn_full "$RTN" 4 "$FULL" | cut -d' ' -f2)" 5.166
row_seeds "RTN, R1+R2+R3 full, randomized, mean" "$(seeds rtn_random "$RTN" 4 "$FULL_RANDOM")" 5.166
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
# Which of perq's settings the prototype's figures correspond to:
# - no rotation: the prototype's W4A4 figure matches perq with the RMSNorm
#   weights folded (rotation.fold_norms true), as a pipeline that always folds
#   them before rotating would do. perq keeps them unfolded by default when it
#   does not rotate: a folded norm widens the per-channel weight ranges, and
#   the activation quantizer then sees x / rms(x) without the norm's scale,
#   which costs accuracy here (norms kept is the better row).
# - rotations: perq's R1/R2/R3 are plain Hadamard matrices by default
#   (Sylvester; Williamson's construction for 172). With rotation.randomized
#   they get seeded random signs (R = D H, D3 folded into up/down so R3 online
#   stays plain). RTN with full rotations depends on that choice far more than
#   GPTQ does; the prototype's RTN figure lies in the randomized range, and the
#   mean over seeds is the comparable figure.
echo "notes: the prototype folds norms even without rotation (rotation.fold_norms true); its rotations behave as randomized"
echo "       Hadamard (rotation.randomized true): RTN is far more sensitive to the rotation than GPTQ (experiment.sh comments)"

# The same table on a synthetic 1B-shaped checkpoint with planted outliers,
# where every R3 block size from 16 to 512 applies (KL from the float model
# instead of perplexity: its weights are random).
echo
"$(dirname "$0")/experiment_synth.sh"

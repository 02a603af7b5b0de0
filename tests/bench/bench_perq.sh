#!/usr/bin/env bash
# A whole perq job (build/bin/perq quantize) on the synthetic checkpoint of
# Llama-3.2-1B's shape, all 16 layers (BENCH_PERQ_SYNTH overrides the perq
# synth arguments): 16 x 512 calibration tokens of wikitext-2,
# W4A4, GPTQ, rotation full with R3 in blocks of 16 and MassDiff, every layer.
# Prints, from the job's metrics (seconds per stage, FLOPs counted by the
# pipeline) and against figures measured in the same run:
#  - each stage's share of the job's wall time;
#  - the GFLOP/s of the GPTQ lazy-batch updates and of calibration (forward
#    passes and Hessian accumulation) as fractions of the sgemm peak (square
#    2048^3 sgemm, the mean of one measurement before and one after the job);
#  - the job's peak RSS (getrusage of the child) against one layer in fp32
#    plus the calibration activations, and against everything the pipeline
#    keeps at once (perq_job_bench.c budget says what and why; the embedding
#    and lm_head are not in it: a job never holds them in fp32).
# env: BENCH_PERQ_SEQS / BENCH_PERQ_SEQ_LEN override 16 / 512.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
PERQ_ROOT=${PERQ_ROOT:-$root}
PERQ_BIN=${PERQ_BIN:-$root/build/bin}
PERQ_SHARED=${PERQ_SHARED:-$root/../shared}
# shellcheck source=bench_common.sh
. "$root/tests/bench/bench_common.sh"

seqs=${BENCH_PERQ_SEQS:-16}
seq_len=${BENCH_PERQ_SEQ_LEN:-512}
text=$PERQ_SHARED/data/wikitext2_test.txt

pkgs="libmicrohttpd jansson libuv sqlite3 openblas libcrypto libpcre2-8 libutf8proc"
make -s -C "$root" build/libperq.a build/bin/perq >&2
bench_bin=$root/build/bench-bin/perq_job_bench
mkdir -p "$(dirname "$bench_bin")"
# shellcheck disable=SC2046
cc -I"$root/include" -I"$root/worker" -D_GNU_SOURCE $(pkg-config --cflags $pkgs) -O2 -g -std=c11 -Wall -Wextra -Werror \
   -pthread -fopenmp "$root/tests/bench/perq_job_bench.c" "$root/build/libperq.a" \
   $(pkg-config --libs $pkgs) -lm -o "$bench_bin"

# Every layer of the Llama-3.2-1B shape (the other benches use its first 4).
BENCH_SYNTH=${BENCH_PERQ_SYNTH:-"--preset llama-3.2-1b --dtype bf16 --seed 1"}
model=$(bench_model_dir)
work=$(mktemp -d "${TMPDIR:-/tmp}/perq-bench-perq.XXXXXX")
trap 'rm -rf "$work"' EXIT
cat > "$work/spec.json" <<SPEC
{"method": "perq", "weights": {"bits": 4, "group_size": null, "algorithm": "gptq"},
 "activations": {"bits": 4},
 "rotation": {"mode": "full", "block_size": 16, "permutation": "massdiff"},
 "calibration": {"dataset": "$text", "samples": $seqs, "seq_len": $seq_len, "seed": 1}}
SPEC

echo "model: perq synth $BENCH_SYNTH"
echo "job: W4A4, GPTQ per channel, rotation full + R3 block 16, MassDiff, every layer; calibration $seqs x $seq_len tokens of $(basename "$text")"
peak_before=$("$bench_bin" peak)
# The job, with the child's peak RSS from wait4 (kB on Linux).
python3 - "$work/rss" "$work/metrics.json" "$work/job.log" "$PERQ_BIN/perq" quantize --model "$model" \
    --out "$work/out" --spec "$work/spec.json" <<'PY'
import os, subprocess, sys
rss_path, metrics, log = sys.argv[1:4]
with open(metrics, "w") as out, open(log, "w") as err:
    child = subprocess.Popen(sys.argv[4:], stdout=out, stderr=err)
    _, status, usage = os.wait4(child.pid, 0)
open(rss_path, "w").write("%d\n" % (usage.ru_maxrss * 1024))
sys.exit(os.waitstatus_to_exitcode(status))
PY
peak_after=$("$bench_bin" peak)
"$bench_bin" budget "$model" "$seqs" "$seq_len" > "$work/budget"

python3 - "$work/metrics.json" "$work/rss" "$work/budget" "$peak_before" "$peak_after" <<'PY'
import json, sys
metrics = json.load(open(sys.argv[1]))
rss = int(open(sys.argv[2]).read())
budget = {k: float(v) for k, v in (line.split() for line in open(sys.argv[3]))}
before, after = sys.argv[4].split(), sys.argv[5].split()
peak = (float(before[0]) + float(after[0])) / 2

sec, comp = metrics["seconds"], metrics["compute"]
total = sec["total"]
order = ["loading", "calibrating", "permuting", "rotating", "quantizing", "exporting", "evaluating"]
shares = ", ".join("%s %.1f%%" % (s, 100 * sec[s] / total) for s in order if s in sec)
print("wall time %.1f s; shares: %s; GPTQ Hessians from %s" % (total, shares, comp["hessians_from"]))
print("  inside quantizing: GPTQ factorisations %.0f%%, GPTQ updates %.0f%%, in-block rounding and scale search %.0f%%, outside the GPTQ calls (Hessians finalised, errors, copies) %.0f%%" % (
    100 * comp["gptq_factor_seconds"] / sec["quantizing"], 100 * comp["gptq_update_seconds"] / sec["quantizing"],
    100 * (comp["gptq_seconds"] - comp["gptq_factor_seconds"] - comp["gptq_update_seconds"]) / sec["quantizing"],
    100 * (sec["quantizing"] - comp["gptq_seconds"]) / sec["quantizing"]))
print("sgemm peak (2048^3, %s kernels, %s threads): %.0f GFLOP/s (%.0f before the job, %.0f after)" % (
    before[1], before[2], peak, float(before[0]), float(after[0])))
upd = comp["gptq_update_gflop"] / comp["gptq_update_seconds"]
cal = comp["calibration_gflop"] / comp["stage_seconds"]["calibrating"]
print("GPTQ updates: %.0f GFLOP at %.0f GFLOP/s = %.2f of peak" % (comp["gptq_update_gflop"], upd, upd / peak))
print("calibration (forward passes + Hessians): %.0f GFLOP at %.0f GFLOP/s = %.2f of peak" % (
    comp["calibration_gflop"], cal, cal / peak))
mb = lambda b: "%.0f MB" % (b / 1e6)
small = budget["layer"] + budget["activations"]
kept = sum(budget.values())
print("peak RSS %s; one layer fp32 %s + calibration activations %s = %s: ratio %.2f" % (
    mb(rss), mb(budget["layer"]), mb(budget["activations"]), mb(small), rss / small))
print("  with what the pipeline keeps besides: Hessians + GPTQ factors or kept down_proj rows %s, "
      "quantized weights (packed + scales) %s, export row block %s = %s: ratio %.2f" % (
    mb(budget["gptq"]), mb(budget["int4"]), mb(budget["export"]), mb(kept), rss / kept))
print("  (embedding and lm_head: never held in fp32, folded block of rows by block of rows as they are written)")
PY

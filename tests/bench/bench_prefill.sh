#!/usr/bin/env bash
# Engine figures on the 1B-shaped synthetic checkpoint (bench_common.sh):
#  - prefill of one 512-token sequence through every decoder layer: tokens/s,
#    GFLOP/s, and that against the sgemm GFLOP/s of the same linear layers
#    measured in the same run (target >= 0.70);
#  - a layer-by-layer calibration pass (16 x 512 tokens): peak RSS against one
#    layer's fp32 size plus the pass's activations (target <= 1.50).
# The C driver is tests/bench/prefill_bench.c, built here against build/libperq.a.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
PERQ_ROOT=${PERQ_ROOT:-$root}
PERQ_BIN=${PERQ_BIN:-$root/build/bin}
# shellcheck source=bench_common.sh
. "$root/tests/bench/bench_common.sh"

pkgs="libmicrohttpd jansson libuv sqlite3 openblas libcrypto libpcre2-8 libutf8proc"
bench_bin=$root/build/bench-bin/prefill_bench
mkdir -p "$(dirname "$bench_bin")"
# shellcheck disable=SC2046
cc -I"$root/include" -I"$root/worker" -D_GNU_SOURCE $(pkg-config --cflags $pkgs) -O2 -g -std=c11 -Wall -Wextra \
   -Werror -pthread -fopenmp "$root/tests/bench/prefill_bench.c" "$root/build/libperq.a" \
   $(pkg-config --libs $pkgs) -lm -o "$bench_bin"

model=$(bench_model_dir)
echo "model: perq synth $BENCH_SYNTH"
"$bench_bin" prefill "$model" 512 5
"$bench_bin" calib "$model" 16 512

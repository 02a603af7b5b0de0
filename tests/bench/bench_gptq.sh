#!/usr/bin/env bash
# GPTQ on Llama-3.2-1B's down_proj (2048 x 8192) and up_proj (8192 x 2048)
# shapes with a random SPD Hessian: GFLOP/s of the lazy-batch sgemm updates and
# of the whole call as fractions of a plain sgemm measured in the same run.
# The C driver is tests/bench/gptq_bench.c, built here against build/libperq.a.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)

pkgs="libmicrohttpd jansson libuv sqlite3 openblas libcrypto libpcre2-8 libutf8proc"
make -s -C "$root" build/libperq.a >&2
bench_bin=$root/build/bench-bin/gptq_bench
mkdir -p "$(dirname "$bench_bin")"
# shellcheck disable=SC2046
cc -I"$root/include" -D_GNU_SOURCE $(pkg-config --cflags $pkgs) -O2 -g -std=c11 -Wall -Wextra -Werror \
   -pthread -fopenmp "$root/tests/bench/gptq_bench.c" "$root/build/libperq.a" \
   $(pkg-config --libs $pkgs) -lm -fopenmp -o "$bench_bin"

"$bench_bin" 2048 8192 8192 2048

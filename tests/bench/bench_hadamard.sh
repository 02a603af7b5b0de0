#!/usr/bin/env bash
# Hadamard rotation figures: x <- x R for the widths real models have, as a
# fraction of memcpy bandwidth on the same buffer and as a speed-up over a
# dense x R at the sgemm peak, both measured in the same run; block-diagonal
# rotations (R3) and the left form W <- R^T W likewise.
# The C driver is tests/bench/hadamard_bench.c, built here against build/libperq.a.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
pkgs="libmicrohttpd jansson libuv sqlite3 openblas libcrypto libpcre2-8 libutf8proc"
bench_bin=$root/build/bench-bin/hadamard_bench
mkdir -p "$(dirname "$bench_bin")"
# shellcheck disable=SC2046
cc -I"$root/include" -D_GNU_SOURCE $(pkg-config --cflags $pkgs) -O2 -g -std=c11 -Wall -Wextra -Werror \
   -pthread -fopenmp "$root/tests/bench/hadamard_bench.c" "$root/build/libperq.a" \
   $(pkg-config --libs $pkgs) -lm -o "$bench_bin"
"$bench_bin"

#!/usr/bin/env bash
# perq eval names the OpenBLAS kernel it runs; a kernel the user chose with
# OPENBLAS_CORETYPE is kept; without one, the kernel belongs to the best family
# the CPU's features allow (AVX-512 -> SkylakeX/Cooperlake, AVX2+FMA -> Haswell/Zen).
set -euo pipefail
model="$PERQ_SHARED/models/stories260K"
text="$PERQ_SHARED/data/tinystories_valid_head.txt"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

kernel_of() { sed -n 's/^perq eval: OpenBLAS kernel \([A-Za-z0-9]*\), [0-9]* threads$/\1/p' "$1"; }

OPENBLAS_CORETYPE=Haswell "$PERQ_BIN/perq" eval --model "$model" --text "$text" --chunks 1 >/dev/null 2>"$work/chosen"
[ "$(kernel_of "$work/chosen")" = Haswell ] || { cat "$work/chosen"; echo "OPENBLAS_CORETYPE=Haswell not kept"; exit 1; }

env -u OPENBLAS_CORETYPE "$PERQ_BIN/perq" eval --model "$model" --text "$text" --chunks 1 >/dev/null 2>"$work/auto"
kernel=$(kernel_of "$work/auto")
flags=$(grep -m1 '^flags' /proc/cpuinfo)
has() { grep -qw "$1" <<<"$flags"; }
if has avx512f && has avx512vl && has avx512bw && has avx512dq; then
  expected="SkylakeX Cooperlake SapphireRapids"
elif has avx2 && has fma; then
  expected="Haswell Zen SkylakeX Cooperlake"
else
  expected=$kernel
fi
echo "CPU flags allow: $expected; in use: $kernel"
grep -qw "$kernel" <<<"$expected" || { echo "kernel $kernel is not of the best family the CPU supports"; exit 1; }

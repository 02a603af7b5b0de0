# Shared by the bench scripts: the 1B-shaped synthetic checkpoint (cached under
# build/bench-cache, synth is deterministic), timing and sizes.
BENCH_SYNTH=${BENCH_SYNTH:-"--preset llama-3.2-1b --layers 4 --dtype bf16 --seed 1"}

now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.17g\\n\", $1 }"; }   # floating-point arithmetic
elapsed() { calc "$2 - $1"; }                  # elapsed START END, seconds
ratio() { printf '%.2f' "$(calc "$1 / $2")"; }
gb() { printf '%.2f' "$(calc "$1 / 1000000000")"; }

bench_model_dir() {
  local key dir
  key=$(echo "$BENCH_SYNTH" | tr -c 'A-Za-z0-9.\n-' '_')
  dir=$PERQ_ROOT/build/bench-cache/synth-$key
  if [ ! -f "$dir/config.json" ]; then
    mkdir -p "$PERQ_ROOT/build/bench-cache"
    rm -rf "$dir.tmp"
    echo "synthesizing $BENCH_SYNTH into $dir" >&2
    # shellcheck disable=SC2086
    "$PERQ_BIN/perq" synth $BENCH_SYNTH --out "$dir.tmp" >&2
    mv "$dir.tmp" "$dir"
  fi
  echo "$dir"
}

# Bytes of every safetensors file of a checkpoint folder.
safetensors_bytes() { cat "$1"/*.safetensors | wc -c; }

# Bytes of the 2-D linear weights of the transformer blocks (what RTN quantizes),
# read from the safetensors headers.
linear_weight_bytes() {
  python3 - "$1" <<'PY'
import json, os, struct, sys
total = 0
for f in sorted(os.listdir(sys.argv[1])):
    if not f.endswith(".safetensors"):
        continue
    with open(os.path.join(sys.argv[1], f), "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(n))
    for name, t in header.items():
        if name != "__metadata__" and name.split(".")[-2:-1] and name.endswith("_proj.weight"):
            b, e = t["data_offsets"]
            total += e - b
print(total)
PY
}

# cp_seconds SRC: wall seconds of a plain copy of SRC (page cache warm), to a
# file on the same filesystem as $TMPDIR, synced like the programs' outputs.
cp_seconds() {
  local src=$1 dst t0 t1
  dst=$(mktemp "${TMPDIR:-/tmp}/perq-bench-cp.XXXXXX")
  cat "$src" >/dev/null
  t0=$(now); cp "$src" "$dst"; sync "$dst"; t1=$(now)
  rm -f "$dst"
  elapsed "$t0" "$t1"
}

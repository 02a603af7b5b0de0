#!/usr/bin/env bash
# A stock llama.cpp loads perq's GGUF export and agrees with perq.
#
# llama.cpp: node-llama-cpp's prebuilt CPU binary from the npm registry
# (tests/gguf-client, installed by `npm ci` when node_modules is missing;
# nothing is built or downloaded at run time). perq's side:
# tests/gguf-client/perq_gguf_ref.c, built here against build/libperq.a.
#
# stories260K and two synthetic models (perq synth --preset tiny, and
# tiny-llama3: the same shapes with Llama 3's byte-level BPE tokenizer and
# rope scaling), RTN INT4 groups of 32 -> model.gguf (Q4_0; down_proj in F16:
# widths 172 and 688 hold no whole Q4_0 blocks). On the first 256 tokens of the
# TinyStories text (1024 for tiny-llama3, where rope scaling shows more):
#   - llama.cpp's tokenization of a text = perq's (SentencePiece: the GGUF's
#     vocabulary, types and scores make llama.cpp's tokenizer merge as HF's
#     BPE; byte-level BPE: "gpt2" with pre-tokenizer "llama-bpe" and the merge
#     list), on the TinyStories text and on one of digits, punctuation, runs of
#     spaces and newlines, contractions and multi-byte UTF-8;
#   - llama.cpp's per-token log-probabilities vs perq's fp32 forward pass over
#     exactly the GGUF's values: the difference is of the size of the effect of
#     llama.cpp's activation rounding (inputs of Q4_0 matmuls to Q8_0, of F16
#     ones to fp16), as perq measures it by simulating that rounding, and far
#     below the effect of quantizing the weights;
#   - perplexity: llama.cpp within 1% of perq on the same weights, and within
#     20% of the float model's;
#   - tiny-llama3: llama.cpp reads the rope_freqs tensor and it is the right
#     one: with it set to ones (no scaling) llama.cpp is clearly farther from
#     perq's forward pass with simulated rounding.
set -euo pipefail
root=${PERQ_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
shared=${PERQ_SHARED:-$root/../shared}
client=$root/tests/gguf-client
tmp=$(mktemp -d "${TMPDIR:-/tmp}/perq-gguf.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

for tool in node npm python3 cc pkg-config; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is not installed (deploy/install-deps.sh)"; exit 1; }
done
[ -f "$root/build/libperq.a" ] || { echo "FAIL: build/libperq.a is missing (make all)"; exit 1; }

# ---- the client: node-llama-cpp with its prebuilt linux-x64 binary ----------
if [ ! -d "$client/node_modules/node-llama-cpp" ]; then
  if ! timeout 20 npm ping >/dev/null 2>&1; then
    echo "SKIP: node_modules is missing and npm cannot reach its registry (run deploy/install-deps.sh online)"
    exit 0
  fi
  # --omit=optional: only the CPU binary listed in package.json, not the CUDA/Vulkan ones;
  # no install scripts: node-llama-cpp's postinstall would look for a build. A lock made
  # against a registry mirror without the macOS/Windows binaries is "out of sync" for
  # npm ci: then the same versions through npm install, the lock file left as it is.
  (cd "$client" && { npm ci --omit=optional --ignore-scripts --no-audit --no-fund ||
                     npm install --omit=optional --ignore-scripts --no-save --no-audit --no-fund; })
fi

# ---- perq: export and reference log-probabilities ----------------------------
pkgs="libmicrohttpd jansson libuv sqlite3 openblas libcrypto libpcre2-8 libutf8proc"
# shellcheck disable=SC2046
cc -I"$root/include" -I"$root/worker" -D_GNU_SOURCE $(pkg-config --cflags $pkgs) -O2 -g -std=c11 -Wall -Wextra \
   -Werror -pthread -fopenmp "$client/perq_gguf_ref.c" "$root/build/libperq.a" $(pkg-config --libs $pkgs) -lm \
   -o "$tmp/perq_gguf_ref"

text=$shared/data/tinystories_valid_head.txt
# A text for the tokenizers: the first 4000 bytes, no trailing newline.
python3 -c 'import sys; d=open(sys.argv[1],"rb").read(4000).decode("utf-8","ignore").rstrip("\n"); open(sys.argv[2],"w").write(d)' \
  "$text" "$tmp/text.txt"
# Where byte-level pre-tokenizers differ: digit runs, punctuation, space runs,
# \r\n, tabs, contractions in both cases, 2-, 3- and 4-byte UTF-8.
printf '%s' $'Numbers 12345 and 1,000,000; symbols #$%&*!? and   three spaces.\n\nTwo newlines\r\nCRLF, tabs\there. It\'s, we\'re, I\'LL, they\'VE; \xc3\xbcn\xc3\xafc\xc3\xb6de \xe2\x9c\x93 \xf0\x9f\x98\x80 \xe4\xb8\xad\xe6\x96\x87  \n   end' \
  >"$tmp/tricky.txt"

check_model() { # NAME MODEL_DIR TENSORS TOKENIZER_MODEL N_TOKENS
  local name=$1 dir=$2 out=$tmp/$1
  mkdir -p "$out"
  echo "== $name"
  "$tmp/perq_gguf_ref" "$dir" "$out/model.gguf" "$text" 32 "$5" >"$out/perq.json"
  "$PERQ_BIN/perq" tokenize --model "$dir" --text "$tmp/text.txt" --json >"$out/perq_tokens.json"
  "$PERQ_BIN/perq" tokenize --model "$dir" --text "$tmp/tricky.txt" --json >"$out/perq_tricky.json"
  node "$client/score.mjs" "$out/model.gguf" "$out/perq.json" "$tmp/text.txt" >"$out/llama.json"
  node "$client/score.mjs" "$out/model.gguf" "$out/perq.json" "$tmp/tricky.txt" >"$out/llama_tricky.json"
  python3 - "$out/perq.json" "$out/llama.json" "$out/perq_tokens.json" "$3" "$(stat -c %s "$out/model.gguf")" \
    "$4" "$out/llama_tricky.json" "$out/perq_tricky.json" <<'EOF'
import json, math, sys
perq, llama, perq_tokens = (json.load(open(p)) for p in sys.argv[1:4])
n_tensors, size, tokenizer_model = int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
llama_tricky, perq_tricky = (json.load(open(p)) for p in sys.argv[7:9])
print(f"exported {size} bytes: {json.dumps(perq['summary']['types'])}, not Q4_0: "
      f"{sorted(set(f['tensor'].split('.', 2)[2] for f in perq['summary']['not_q4_0']))}")
print("llama.cpp:", json.dumps(llama["llama_cpp"]), json.dumps(llama["metadata"]))
assert llama["metadata"]["architecture"] == "llama" and llama["metadata"]["tokenizer_model"] == tokenizer_model
assert llama["metadata"]["n_tensors"] == n_tensors, llama["metadata"]

bos = perq["tokens"][0]
assert llama["text_tokens"] == [bos] + perq_tokens, "llama.cpp tokenizes the text differently from perq"
assert llama_tricky["text_tokens"] == [bos] + perq_tricky, \
    f"llama.cpp tokenizes the hard text differently from perq:\n{llama_tricky['text_tokens']}\n{[bos] + perq_tricky}"
print(f"tokenization: {len(perq_tokens)} tokens, identical; hard text: {len(perq_tricky)} tokens, identical")

def diff(a, b):
    d = [abs(x - y) for x, y in zip(a, b)]
    assert len(a) == len(b) == len(perq["tokens"]) - 1
    return max(d), sum(d) / len(d)
ppl = lambda lp: math.exp(-sum(lp) / len(lp))

lc, pg, pa, pf = llama["logprob"], perq["logprob_gguf"], perq["logprob_gguf_act8"], perq["logprob_float"]
dev_max, dev_mean = diff(lc, pg)
sim_max, sim_mean = diff(lc, pa)
act_max, act_mean = diff(pa, pg)
q_max, q_mean = diff(pf, pg)
print(f"|llama.cpp - perq| per token:               max {dev_max:.4f}  mean {dev_mean:.5f} nats")
print(f"|llama.cpp - perq with simulated rounding|: max {sim_max:.4f}  mean {sim_mean:.5f}")
print(f"activation rounding alone, in perq:         max {act_max:.4f}  mean {act_mean:.5f}")
print(f"weight quantization (float vs INT4):        max {q_max:.4f}  mean {q_mean:.5f}")
print(f"perplexity over {len(lc)} predictions: llama.cpp {ppl(lc):.4f}, perq same weights {ppl(pg):.4f}, "
      f"perq + simulated rounding {ppl(pa):.4f}, float {ppl(pf):.4f}")
s = perq["summary"]["scale_fp16"]
print(f"Q4_0 d in fp16: {s['changed']} of {s['scales']} scales changed, max relative change {s['max_rel_change']:.3g}, "
      f"weights {s['rel_weight_change']:.3g} (relative Frobenius)")

assert dev_mean <= 1.5 * act_mean, "llama.cpp differs from perq by more than activation rounding explains"
assert dev_max <= 1.5 * act_max, "llama.cpp differs from perq by more than activation rounding explains"
assert dev_mean <= 0.1 * q_mean
assert abs(ppl(lc) / ppl(pg) - 1) < 0.01
assert ppl(lc) < 1.2 * ppl(pf)
print("ok")
EOF
}

check_model stories260K "$shared/models/stories260K" 47 llama 256
# A synthetic checkpoint: perq synth --preset tiny (BF16, hidden 256, intermediate 688, GQA 8/2, head_dim 32).
"$PERQ_BIN/perq" synth --preset tiny --out "$tmp/synth-tiny" >/dev/null
check_model synth-tiny "$tmp/synth-tiny" 20 llama 256
# The same shapes with a Llama 3 tokenizer (1280 pieces + 256 special tokens) and
# llama3 rope scaling (factor 32, theta 500000): one more tensor, rope_freqs.
"$PERQ_BIN/perq" synth --preset tiny-llama3 --out "$tmp/synth-tiny-llama3" >/dev/null
check_model synth-tiny-llama3 "$tmp/synth-tiny-llama3" 21 gpt2 1024

out=$tmp/synth-tiny-llama3
echo "rope_freqs: $(python3 "$client/rope_freqs_ones.py" "$out/model.gguf" "$out/rope_ones.gguf")"
node "$client/score.mjs" "$out/rope_ones.gguf" "$out/perq.json" >"$out/llama_rope_ones.json"
python3 - "$out/perq.json" "$out/llama.json" "$out/llama_rope_ones.json" <<'EOF'
import json, sys
perq, scaled, unscaled = (json.load(open(p)) for p in sys.argv[1:4])
ref = perq["logprob_gguf_act8"]
mean = lambda lp: sum(abs(x - y) for x, y in zip(lp, ref)) / len(ref)
with_freqs, with_ones = mean(scaled["logprob"]), mean(unscaled["logprob"])
print(f"|llama.cpp - perq with simulated rounding|: mean {with_freqs:.5f} nats with rope_freqs, "
      f"{with_ones:.5f} with ones in its place")
assert with_freqs < 0.75 * with_ones, "llama.cpp does not rotate as perq's llama3 rope scaling"
print("ok")
EOF

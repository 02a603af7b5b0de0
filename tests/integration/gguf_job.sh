#!/usr/bin/env bash
# GGUF from daemon jobs, loaded and scored by a stock llama.cpp.
#
# stories260K through perqd, evaluation ctx 512 (its context length), 2 chunks:
#   - a W4A4 job asking for gguf: 400 with the reason, nothing queued;
#   - rtn, outputs ["gguf"] alone: model.gguf and report.json are the only
#     artifacts (the evaluation read a scratch folder that is gone), perqd's
#     listing = manifest.json;
#   - perq W4A16 (full rotation, MassDiff, GPTQ), outputs compressed-tensors
#     and gguf: every artifact of the listing against manifest.json, model.gguf
#     as format "gguf";
#   - llama.cpp (node-llama-cpp's prebuilt CPU binary, tests/gguf-client)
#     loads both GGUFs and scores the predictions perq's evaluation scored
#     (llama-perplexity's protocol: chunks of 512 starting with BOS, the last
#     255 predictions of each): its perplexity is within 1% of the job's own
#     figure (report.json eval.ppl_quantized), and perq's is not worse than
#     rtn's.
. "$(dirname "$0")/lib.sh"
command -v python3 >/dev/null || fail "python3 is not installed (deploy/install-deps.sh)"
command -v node >/dev/null || fail "node is not installed (deploy/install-deps.sh)"
TEXT=$PERQ_SHARED/data/tinystories_valid_head.txt
CLIENT=$PERQ_ROOT/tests/gguf-client
CTX=512
CHUNKS=2

# ---- the client: node-llama-cpp with its prebuilt linux-x64 binary, as gguf_llamacpp.sh installs it
if [ ! -d "$CLIENT/node_modules/node-llama-cpp" ]; then
  if ! timeout 20 npm ping >/dev/null 2>&1; then
    echo "SKIP: node_modules is missing and npm cannot reach its registry (run deploy/install-deps.sh online)"
    exit 0
  fi
  (cd "$CLIENT" && { npm ci --omit=optional --ignore-scripts --no-audit --no-fund ||
                     npm install --omit=optional --ignore-scripts --no-save --no-audit --no-fund; })
fi

start_perqd --workers 1
upload_model "$STORIES"; M=$MODEL_ID

step "datasets: evaluation text, and a 100 kB calibration slice from its end"
put_file /v1/datasets/tinystories "$TEXT"; assert_status 201
tail -c 100000 "$TEXT" > "$TMP/calib.txt"
put_file /v1/datasets/tinystories-calib "$TMP/calib.txt"; assert_status 201

EVAL=$(jq -nc --argjson ctx $CTX --argjson chunks $CHUNKS '{dataset: "tinystories", ctx: $ctx, chunks: $chunks}')
CALIB='{"dataset": "tinystories-calib", "samples": 16, "seq_len": 256, "seed": 1}'

step "W4A4 with gguf: refused with its reason before anything is queued"
get /v1/jobs; assert_status 200; assert_json '.jobs | type == "array"' "GET /v1/jobs lists jobs"
jobs_before=$(json '.jobs | length')
post_json /v1/jobs "$(jq -nc --arg m "$M" --argjson c "$CALIB" \
  '{model: $m, method: "perq", activations: {bits: 4}, calibration: $c, outputs: ["compressed-tensors", "gguf"]}')"
assert_problem 400
assert_json '.detail | test("gguf is for weight-only jobs")' "the reason names GGUF and weight-only jobs"
get /v1/jobs; assert_status 200
[ "$(json '.jobs | length')" = "$jobs_before" ] || fail "a refused spec must not create a job"

step "submit: rtn, outputs gguf alone, and perq W4A16 (full rotation, MassDiff, GPTQ), compressed-tensors + gguf"
submit_job "$(jq -nc --arg m "$M" --argjson e "$EVAL" '{model: $m, method: "rtn", outputs: ["gguf"], eval: $e}')"
RTN=$JOB_ID
submit_job "$(jq -nc --arg m "$M" --argjson c "$CALIB" --argjson e "$EVAL" '{model: $m, method: "perq",
  weights: {bits: 4, group_size: null, algorithm: "gptq"}, activations: {bits: 16},
  rotation: {mode: "full", block_size: null, permutation: "massdiff"},
  calibration: $c, outputs: ["compressed-tensors", "gguf"], eval: $e}')"
PERQ=$JOB_ID
expect_succeeded "$RTN" 60
expect_succeeded "$PERQ" 120

# listing_matches_manifest ID DIR: perqd's listing names = manifest.json's files + manifest.json.
listing_matches_manifest() {
  local id=$1 dir=$2
  get "/v1/jobs/$id/artifacts"; assert_status 200
  diff <(jq -r '.artifacts[].name | select(. != "manifest.json")' "$TMP/resp.body" | sort) \
       <(manifest_entries "$dir/manifest.json" | cut -f1 | sort) >/dev/null \
    || fail "perqd lists $(jq -c '[.artifacts[].name]' "$TMP/resp.body"), manifest.json $(manifest_entries "$dir/manifest.json" | cut -f1 | tr '\n' ' ')"
  assert_json '[.artifacts[] | select(.name == "model.gguf") | .format] == ["gguf"]' "model.gguf is listed once, as gguf"
}

step "rtn, gguf alone: model.gguf and the reports, each as perqd lists it and as manifest.json says"
mkdir -p "$TMP/rtn"
get "/v1/jobs/$RTN/artifacts"; assert_status 200
assert_json '[.artifacts[].name] | sort == ["manifest.json", "model.gguf", "report.html", "report.json"]' \
  "the only artifacts: model.gguf, report.json, report.html, manifest.json"
cp "$TMP/resp.body" "$TMP/rtn.listing.json"
while IFS=$'\t' read -r name sum bytes; do
  req GET "/v1/jobs/$RTN/artifacts/$name"; assert_status 200
  cp "$TMP/resp.body" "$TMP/rtn/$name"
  [ "$(sha256_of "$TMP/rtn/$name")" = "$sum" ] || fail "artifact $name: sha256 differs from the listing"
  [ "$(stat -c %s "$TMP/rtn/$name")" = "$bytes" ] || fail "artifact $name: size differs from the listing"
done < <(jq -r '.artifacts[] | [.name, .sha256, .bytes] | @tsv' "$TMP/rtn.listing.json")
check_manifest "$TMP/rtn"
listing_matches_manifest "$RTN" "$TMP/rtn"

step "perq W4A16: every artifact against the listing and manifest.json"
download_artifacts "$PERQ" "$TMP/perq"
listing_matches_manifest "$PERQ" "$TMP/perq"
jq -e '.tie_word_embeddings == false and .quantization_config.transform_config == null' "$TMP/perq/config.json" \
  >/dev/null || fail "config.json: untied head, no online transform for a weight-only job"
for d in rtn perq; do
  jq -e --argjson n $((CHUNKS * (CTX / 2 - 1))) '.gguf.file == "model.gguf" and .gguf.types.Q4_0 == 30
      and .eval.tokens_scored == $n and .eval.ppl_quantized > .eval.ppl_float' "$TMP/$d/report.json" >/dev/null \
    || fail "$d report.json: gguf summary or eval: $(jq -c '{gguf: .gguf.types, eval}' "$TMP/$d/report.json")"
done

step "llama.cpp scores both GGUFs on the predictions perq's evaluation scored"
# The text as the evaluation reads it, cut to what the chunks need.
python3 -c 'import sys; d = open(sys.argv[1], "rb").read(8000).decode("utf-8", "ignore"); open(sys.argv[2], "w").write(d)' \
  "$TEXT" "$TMP/text.txt"
"$PERQ_BIN/perq" tokenize --model "$STORIES" --text "$TMP/text.txt" --json > "$TMP/tokens.json"
bos=$(jq .bos_token_id "$STORIES/config.json")
for d in rtn perq; do
  for c in $(seq 0 $((CHUNKS - 1))); do
    # chunk c: BOS, then the text's tokens c*CTX .. c*CTX + CTX-2 (the whole text tokenized once with BOS)
    jq -c --argjson c "$c" --argjson n $CTX --argjson bos "$bos" '{tokens: ([$bos] + .[$c * $n : $c * $n + $n - 1])}' \
      "$TMP/tokens.json" > "$TMP/chunk$c.json"
    node "$CLIENT/score.mjs" "$TMP/$d/model.gguf" "$TMP/chunk$c.json" > "$TMP/$d.llama$c.json" \
      || fail "llama.cpp could not load or score $d/model.gguf"
  done
done
python3 - "$TMP" $CTX $CHUNKS <<'EOF'
import json, math, sys
tmp, ctx, chunks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ppl = {}
for d in ("rtn", "perq"):
    lp = []
    for c in range(chunks):
        out = json.load(open(f"{tmp}/{d}.llama{c}.json"))
        assert out["metadata"]["architecture"] == "llama", out["metadata"]
        assert len(out["logprob"]) == ctx - 1
        lp += out["logprob"][ctx // 2 : ctx - 1]   # as llama-perplexity scores a chunk
    ev = json.load(open(f"{tmp}/{d}/report.json"))["eval"]
    assert len(lp) == ev["tokens_scored"], (len(lp), ev["tokens_scored"])
    ppl[d] = math.exp(-sum(lp) / len(lp))
    print(f"{d}: llama.cpp {ppl[d]:.4f} on model.gguf, perq {ev['ppl_quantized']:.4f} on the INT4 weights, "
          f"float {ev['ppl_float']:.4f} ({len(lp)} predictions)")
    assert abs(ppl[d] / ev["ppl_quantized"] - 1) < 0.01, f"{d}: llama.cpp and perq differ by more than 1%"
print(f"perq W4A16 vs rtn in llama.cpp: {ppl['perq']:.4f} vs {ppl['rtn']:.4f} ({ppl['perq'] / ppl['rtn'] - 1:+.2%})")
assert ppl["perq"] <= ppl["rtn"], "the perq W4A16 GGUF is worse than rtn's"
EOF

stop_perqd
echo "gguf_job: ok"

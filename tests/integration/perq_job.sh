#!/usr/bin/env bash
# method perq through perqd: stories260K and the TinyStories text uploaded
# (the text's last 100 kB under another name for calibration, so calibration
# and evaluation read different parts), a W4A4 job with R3 in blocks of 4
# after MassDiff, GPTQ, a short evaluation. The job walks through every stage
# of API.md with progress per layer; report.json carries the per-layer
# statistics and the evaluation; every artifact matches the manifest.
. "$(dirname "$0")/lib.sh"
command -v python3 >/dev/null || fail "python3 is not installed (deploy/install-deps.sh)"
TEXT=$PERQ_SHARED/data/tinystories_valid_head.txt

start_perqd --workers 1
upload_model "$STORIES"; M=$MODEL_ID

step "datasets: evaluation text, and a 100 kB calibration slice from its end"
put_file /v1/datasets/tinystories "$TEXT"; assert_status 201
tail -c 100000 "$TEXT" > "$TMP/calib.txt"
put_file /v1/datasets/tinystories-calib "$TMP/calib.txt"; assert_status 201

step "submit: W4A4, GPTQ per channel, R1+R2 full, R3 block 4, MassDiff"
submit_job "$(jq -nc --arg m "$M" '{model: $m, method: "perq",
  weights: {bits: 4, group_size: null, algorithm: "gptq"}, activations: {bits: 4},
  rotation: {mode: "full", block_size: 4, permutation: "massdiff"},
  calibration: {dataset: "tinystories-calib", samples: 8, seq_len: 128, seed: 1},
  eval: {dataset: "tinystories", ctx: 128, chunks: 8}}')"
J=$JOB_ID
assert_json '.spec.method == "perq" and .spec.rotation.block_size == 4 and .spec.rotation.permutation == "massdiff"' \
  "the job echoes its spec"

# While it runs, the stage and per-layer progress as a client sees them.
seen=""
for i in $(seq 1 600); do
  get "/v1/jobs/$J"; assert_status 200
  st=$(json .status)
  case $st in succeeded|failed|cancelled) break ;; esac
  stage=$(json '.stage // empty')
  [ -n "$stage" ] && case " $seen " in *" $stage "*) ;; *) seen="$seen $stage" ;; esac
  if [ "$(json '.progress.total // 0')" = 5 ]; then
    assert_json '.progress.done >= 0 and .progress.done <= 5' "progress counts the 5 layers"
  fi
  sleep 0.05
done
echo "stages polled:$seen"
expect_succeeded "$J" 60
assert_json '.metrics.ppl_float > 0 and .metrics.ppl_quantized > .metrics.ppl_float' "metrics carry both perplexities"
assert_json '[.metrics.seconds | (.calibrating, .permuting, .rotating, .quantizing, .exporting, .evaluating) | . >= 0] | all' \
  "metrics time every stage"

step "events: every stage, in the pipeline's order, and one event per quantized layer"
get "/v1/jobs/$J/events"; assert_status 200
cp "$TMP/resp.body" "$TMP/events.json"
for s in loading calibrating permuting rotating quantizing exporting evaluating; do
  jq -e --arg s "$s" '[.events[] | select(.message == "stage " + $s or .stage == $s)] | length > 0' "$TMP/events.json" \
    >/dev/null || fail "no event of stage $s: $(jq -c '[.events[].message]' "$TMP/events.json" | head -c 1500)"
done
jq -e '[.events[].message | select(startswith("stage ")) | ltrimstr("stage ")] as $s
       | ($s | index("loading")) < ($s | index("calibrating"))
         and ($s | index("permuting")) < ($s | rindex("quantizing"))
         and ($s | rindex("quantizing")) < ($s | index("exporting"))
         and ($s | index("exporting")) < ($s | index("evaluating"))' "$TMP/events.json" >/dev/null \
  || fail "stages out of order: $(jq -c '[.events[].message | select(startswith("stage "))]' "$TMP/events.json")"
jq -e '[.events[] | select(.message | test("^layer [0-4] quantized$"))] | length == 5' "$TMP/events.json" >/dev/null \
  || fail "expected one 'layer N quantized' event per layer"

step "artifacts against the listing and manifest.json"
download_artifacts "$J" "$TMP/out"
R=$TMP/out/report.json
[ -f "$R" ] || fail "no report.json among the artifacts"

step "report.html served by perqd as a page"
req GET "/v1/jobs/$J/artifacts/report.html"
assert_status 200
case "$(header Content-Type)" in text/html*) ;; *) fail "report.html served as '$(header Content-Type)'";; esac
grep -q '<svg' "$TMP/resp.body" || fail "report.html has no chart"
cmp -s "$TMP/resp.body" "$TMP/out/report.html" || fail "report.html differs from the downloaded artifact"

step "report.json: per-layer statistics and the evaluation"
jq -e '.method == "perq" and (.layers | length) == 5' "$R" >/dev/null || fail "report: 5 layers expected"
jq -e '[.layers[].down_proj_input | .block_size == 4 and .permutation == "massdiff"
        and .mass_ratio_after < .mass_ratio_before and .act_error_after < .act_error_before
        and .max_abs_rotated_before > 0 and .max_abs_rotated_after > 0 and .sample_tokens > 0] | all' "$R" >/dev/null \
  || fail "report: per-layer down_proj statistics missing or MassDiff not balancing: $(jq -c '.layers[0]' "$R")"
jq -e '[.layers[].linears | length == 7 and ([.[] | .rel_error > 0 and .rel_error < 0.5] | all)] | all' "$R" >/dev/null \
  || fail "report: seven quantized linears per layer with their errors"
jq -e '.rotations.r3.width == 4 and .rotations.r3.online == true and .rotations.r1.width == 64' "$R" >/dev/null \
  || fail "report: rotations described"
jq -e '.eval | .protocol != null and .ctx == 128 and .chunks == 8 and .tokens_scored == 8 * 63
       and .ppl_float > 3 and .ppl_float < 6 and .ppl_quantized > .ppl_float and .ppl_quantized < 1.6 * .ppl_float' "$R" \
  >/dev/null || fail "report: eval figures: $(jq -c .eval "$R")"
jq -e '.compute.stage_seconds | has("calibrating") and has("quantizing")' "$R" >/dev/null || fail "report: compute"
jq -e '.quantization_config.transform_config != null and .tie_word_embeddings == false' "$TMP/out/config.json" >/dev/null \
  || fail "config.json: the online R3 must be declared, the head untied"
echo "$(jq -r '.eval | "perplexity float \(.ppl_float), W4A4 \(.ppl_quantized)"' "$R")"

stop_perqd
echo "perq_job: ok"

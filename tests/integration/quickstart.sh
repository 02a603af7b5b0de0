#!/usr/bin/env bash
# The README's main command, deploy/quickstart.sh, runs to the end: the
# artifacts land in the folder given, every file of the manifest is there with
# its sha256, and no perqd or worker is left behind.
. "$(dirname "$0")/lib.sh"

OUT=$TMP/quickstart-out
step "deploy/quickstart.sh $OUT"
TMPDIR=$TMP "$PERQ_ROOT/deploy/quickstart.sh" "$OUT" >"$TMP/quickstart.log" 2>&1 \
  || { tail -n 30 "$TMP/quickstart.log" >&2; fail "quickstart.sh failed"; }
cat "$TMP/quickstart.log"
tail -n 1 "$TMP/quickstart.log" | grep -qF "$OUT" || fail "quickstart.sh does not end by printing where the artifacts are"
check_manifest "$OUT"
[ -f "$OUT/model.safetensors" ] && [ -f "$OUT/config.json" ] || fail "no model in $OUT"
jq -e '.quantization_config.config_groups.group_0.weights.group_size == 32' "$OUT/config.json" >/dev/null \
  || fail "the quickstart model is not INT4 with groups of 32"
python3 "$(dirname "$0")/check_int4.py" "$STORIES" "$OUT" 32 || fail "check_int4 on the quickstart's artifact"
if grep -q '^==> perplexity' "$TMP/quickstart.log"; then
  jq -e '.eval.ppl_quantized > .eval.ppl_float and .eval.ppl_quantized < 2 * .eval.ppl_float' "$OUT/report.json" >/dev/null \
    || fail "INT4 perplexity out of range: $(jq -c .eval "$OUT/report.json")"
fi
left=$(procs_matching "perq(d|-worker)? .*perq-quickstart\\.")
[ -z "$left" ] || fail "quickstart left processes behind: $left"
[ -z "$(find "$TMP" -maxdepth 1 -name 'perq-quickstart.*')" ] || fail "quickstart left its temporary data dir"
echo "quickstart: ok"

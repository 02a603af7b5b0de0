# report.html of a real perq job (stories260K, W4A4, R3 in blocks of 4,
# a few calibration samples and evaluation chunks) rendered by headless
# Chromium (Debian's chromium package): a screenshot of the window's size
# that is not blank, a DOM with every chart and one bar per value, and no
# console message at all (the page has no script, so any message is an error:
# a malformed SVG attribute, a blocked resource, ...).
set -euo pipefail
PERQ_ROOT=${PERQ_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
PERQ_BIN=${PERQ_BIN:-$PERQ_ROOT/build/bin}
PERQ_SHARED=${PERQ_SHARED:-$PERQ_ROOT/../shared}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/perq-report-html.XXXXXX")
trap '[ -n "${KEEP:-}" ] || rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
[ -n "$CHROMIUM" ] || fail "chromium is not installed (deploy/install-deps.sh: apt-get install chromium)"
command -v python3 >/dev/null || fail "python3 is not installed"
[ -x "$PERQ_BIN/perq" ] || fail "$PERQ_BIN/perq is missing (make all)"
MODEL=$PERQ_SHARED/models/stories260K
TEXT=$PERQ_SHARED/data/tinystories_valid_head.txt
[ -r "$MODEL/config.json" ] && [ -r "$TEXT" ] || fail "shared data missing under $PERQ_SHARED"

WIDTH=1200 HEIGHT=1600
# render URL_FILE OUT_PREFIX: screenshot, DOM and Chromium's log of one page.
render() {
  local page=$1 out=$2 profile
  profile=$(mktemp -d "$TMP/profile.XXXXXX")
  local flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --no-default-browser-check
               --disable-background-networking --disable-component-update --disable-sync --disable-extensions
               --hide-scrollbars --user-data-dir="$profile" --window-size=$WIDTH,$HEIGHT
               --enable-logging=stderr --v=0)
  timeout 120 "$CHROMIUM" "${flags[@]}" --screenshot="$out.png" "file://$page" >"$out.shot.out" 2>"$out.shot.log" ||
    fail "chromium --screenshot failed: $(tail -n 5 "$out.shot.log")"
  timeout 120 "$CHROMIUM" "${flags[@]}" --dump-dom "file://$page" >"$out.dom" 2>"$out.dom.log" ||
    fail "chromium --dump-dom failed: $(tail -n 5 "$out.dom.log")"
}

echo "== a small perq W4A4 job"
cat >"$TMP/spec.json" <<EOF
{"method": "perq", "activations": {"bits": 4}, "weights": {"algorithm": "rtn"},
 "rotation": {"mode": "full", "block_size": 4, "permutation": "massdiff"},
 "calibration": {"dataset": "$TEXT", "samples": 4, "seq_len": 128, "seed": 3},
 "eval": {"dataset": "$TEXT", "ctx": 128, "chunks": 4}}
EOF
"$PERQ_BIN/perq" quantize --model "$MODEL" --out "$TMP/job" --spec "$TMP/spec.json" >"$TMP/quantize.log" 2>&1 ||
  fail "perq quantize: $(tail -n 5 "$TMP/quantize.log")"
[ -s "$TMP/job/report.json" ] || fail "the job wrote no report.json"

echo "== perq report writes the page (usage errors exit 2)"
set +e
"$PERQ_BIN/perq" report --json "$TMP/job/report.json" 2>/dev/null; rc=$?
set -e
[ $rc -eq 2 ] || fail "perq report without --out should exit 2, got $rc"
"$PERQ_BIN/perq" report --json "$TMP/job/report.json" --out "$TMP/report.html"
[ -s "$TMP/report.html" ] || fail "no report.html"
if grep -Eiq '<script|<link|<img|<iframe|src=|href=|url\(' "$TMP/report.html"; then
  fail "the page is not self-contained: $(grep -Eio '<script|<link|<img|<iframe|src=|href=|url\(' "$TMP/report.html" | head -3)"
fi
if [ -e "$TMP/job/report.html" ]; then
  echo "== the job's own report.html is in its manifest"
  sum=$(sha256sum "$TMP/job/report.html" | cut -d' ' -f1)
  grep -q "$sum" "$TMP/job/manifest.json" || fail "report.html is not listed with its sha256 in manifest.json"
fi

echo "== rendered by $("$CHROMIUM" --version 2>/dev/null | head -n 1)"
render "$TMP/report.html" "$TMP/page"

echo "== the screenshot: a ${WIDTH}x${HEIGHT} PNG that is not blank"
python3 - "$TMP/page.png" "$WIDTH" "$HEIGHT" <<'EOF'
import struct, sys, zlib
path, width, height = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = open(path, 'rb').read()
assert data[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
w, h, depth, color = struct.unpack('>IIBB', data[16:26])
assert (w, h) == (width, height), f'PNG is {w}x{h}, expected {width}x{height}'
idat, pos = b'', 8
while pos < len(data):
    n, kind = struct.unpack('>I4s', data[pos:pos + 8])
    if kind == b'IDAT':
        idat += data[pos + 8:pos + 8 + n]
    pos += 12 + n
raw = zlib.decompress(idat)
channels = {2: 3, 6: 4, 0: 1, 4: 2}[color]
stride = 1 + w * channels * depth // 8
assert len(raw) == stride * h, 'truncated image data'
# Filtered scanlines still differ from one another wherever the page does.
distinct_rows = len({raw[r * stride:(r + 1) * stride] for r in range(h)})
assert distinct_rows > h // 4, f'only {distinct_rows} distinct rows: a blank page?'
print(f'  {w}x{h}, {len(data)} bytes, {distinct_rows} distinct rows')
EOF

echo "== the DOM: every chart, one bar per value, numbers from report.json"
python3 - "$TMP/page.dom" "$TMP/job/report.json" <<'EOF'
import json, re, sys
dom = open(sys.argv[1]).read()
report = json.load(open(sys.argv[2]))
charts = dict((m.group(1), int(m.group(2))) for m in
              re.finditer(r'<svg class="chart" data-chart="([a-z_]+)" data-bars="(\d+)"', dom))
layers = len(report['layers'])
want = {'mass_ratio': 2 * layers, 'max_abs': 2 * layers, 'act_error': 2 * layers, 'perplexity': 2}
for chart, bars in want.items():
    assert charts.get(chart) == bars, f'chart {chart}: {charts.get(chart)} bars, expected {bars}'
assert charts.get('timings', 0) >= 3, f'timings chart: {charts.get("timings")}'
rects = re.findall(r'<rect class="bar"[^>]*data-series="([^"]*)" data-category="([^"]*)" data-value="([^"]*)"', dom)
assert len(rects) == sum(charts.values()), f'{len(rects)} bars in the DOM, charts say {sum(charts.values())}'
for l, layer in enumerate(report['layers']):
    d = layer['down_proj_input']
    for series, key in (('before', 'mass_ratio_before'), ('after', 'mass_ratio_after')):
        assert any(s == series and c == str(layer['index']) and abs(float(v) - d[key]) <= 1e-6 * abs(d[key])
                   for s, c, v in rects), f'layer {l}: no {series} bar of {d[key]}'
q = report['eval']['ppl_quantized']
assert any(c == 'quantized' and abs(float(v) - q) <= 1e-6 * q for _, c, v in rects), 'no quantized perplexity bar'
assert '%.4f' % q in dom, 'the quantized perplexity is not printed'
assert '<script' not in dom
print('  charts:', ', '.join(f'{k} {v}' for k, v in sorted(charts.items())))
EOF

echo "== no console messages"
if grep -h ':CONSOLE' "$TMP/page.shot.log" "$TMP/page.dom.log"; then
  fail "the page logged to the console"
fi

echo "== the check itself sees console errors (a page with a bad SVG attribute)"
printf '<!DOCTYPE html><html><body><svg><rect x="bad"/></svg></body></html>\n' >"$TMP/bad.html"
render "$TMP/bad.html" "$TMP/bad"
grep -q ':CONSOLE' "$TMP/bad.dom.log" || fail "Chromium's log shows no console message for a malformed page"
echo "ok"

#!/usr/bin/env python3
"""An independent check of a compressed-tensors pack-quantized artifact.

Reads the original checkpoint and the artifact with its own safetensors reader
(standard library only), unpacks every INT4 weight and checks that:
  - config.json carries the quantization_config the job asked for;
  - each quantized linear has weight_packed (I32 [out][ceil(in/8)]),
    weight_scale ([out][groups] in the model's float dtype) and weight_shape;
  - every dequantized weight q * scale is within half a step (scale / 2) of the
    original, unless it was clipped (q at -8 or 7 with the original beyond it);
  - every tensor that is not quantized (embeddings, norms, lm_head) is stored
    exactly as in the original;
  - the searched scales do no worse overall than plain absmax scales.

Usage: check_int4.py ORIGINAL_DIR ARTIFACT_DIR GROUP   (GROUP: 32, 64, 128 or channel)
"""
import array
import json
import math
import os
import struct
import sys

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FLOAT_DTYPES = {"F32": 4, "F16": 2, "BF16": 2}
INT_DTYPES = {"I32": 4, "I64": 8}


class CheckError(Exception):
    pass


def fail(msg):
    raise CheckError(msg)


def read_safetensors(path):
    """{name: (dtype, shape, bytes)} after checking the layout of the file."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        fail(f"{path}: shorter than its header length")
    (n,) = struct.unpack_from("<Q", blob, 0)
    if 8 + n > len(blob):
        fail(f"{path}: header length {n} beyond the end of the file")
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = memoryview(blob)[8 + n:]
    tensors, spans = {}, []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        size = {**FLOAT_DTYPES, **INT_DTYPES, "U8": 1, "I8": 1}.get(dtype)
        if size is None:
            fail(f"{path}: {name} has dtype {dtype}")
        if math.prod(shape) * size != end - begin:
            fail(f"{path}: {name} shape {shape} does not match {end - begin} bytes")
        spans.append((begin, end, name))
        tensors[name] = (dtype, shape, bytes(data[begin:end]))
    spans.sort()
    at = 0
    for begin, end, name in spans:
        if begin != at:
            fail(f"{path}: {name} starts at {begin}, expected {at} (hole or overlap)")
        at = end
    if at != len(data):
        fail(f"{path}: data ends at {at}, the file at {len(data)}")
    return tensors


def read_checkpoint(folder):
    index = os.path.join(folder, "model.safetensors.index.json")
    files = ["model.safetensors"]
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    tensors = {}
    for name in files:
        for k, v in read_safetensors(os.path.join(folder, name)).items():
            if k in tensors:
                fail(f"{folder}: tensor {k} stored twice")
            tensors[k] = v
    return tensors


def to_floats(dtype, raw):
    if dtype == "F32":
        a = array.array("f")
        a.frombytes(raw)
    elif dtype == "BF16":
        h = array.array("H")
        h.frombytes(raw)
        if sys.byteorder != "little":
            h.byteswap()
        a = array.array("f")
        a.frombytes(array.array("I", (x << 16 for x in h)).tobytes())
        return a
    elif dtype == "F16":
        return array.array("f", (x[0] for x in struct.iter_unpack("<e", raw)))
    else:
        fail(f"not a float dtype: {dtype}")
    if sys.byteorder != "little":
        a.byteswap()
    return a


def to_ints(dtype, raw):
    a = array.array({"I32": "i", "I64": "q"}[dtype])
    a.frombytes(raw)
    if sys.byteorder != "little":
        a.byteswap()
    return a


def check_config(artifact, group):
    with open(os.path.join(artifact, "config.json")) as f:
        config = json.load(f)
    qc = config.get("quantization_config")
    if not isinstance(qc, dict):
        fail("config.json has no quantization_config")
    if qc.get("quant_method") != "compressed-tensors" or qc.get("format") != "pack-quantized":
        fail(f"quantization_config is not compressed-tensors pack-quantized: {qc}")
    w = qc["config_groups"]["group_0"]["weights"]
    if w.get("num_bits") != 4 or w.get("type") != "int" or w.get("symmetric") is not True:
        fail(f"weights scheme is not 4-bit symmetric int: {w}")
    want_strategy = "channel" if group is None else "group"
    if w.get("strategy") != want_strategy:
        fail(f"strategy is {w.get('strategy')}, expected {want_strategy}")
    if group is not None and w.get("group_size") != group:
        fail(f"group_size is {w.get('group_size')}, expected {group}")
    if "lm_head" not in qc.get("ignore", []):
        fail("quantization_config.ignore does not name lm_head")


def check_linear(name, orig, art, group):
    base = name[: -len(".weight")]
    dtype, shape, raw = orig
    rows, cols = shape
    for suffix in ("weight_packed", "weight_scale", "weight_shape"):
        if f"{base}.{suffix}" not in art:
            fail(f"{base}.{suffix} missing from the artifact")
    if name in art:
        fail(f"{name} is stored unquantized next to its packed form")
    pdt, pshape, praw = art[base + ".weight_packed"]
    words = (cols + 7) // 8
    if pdt != "I32" or pshape != [rows, words]:
        fail(f"{base}.weight_packed is {pdt} {pshape}, expected I32 [{rows}, {words}]")
    sdt, sshape, sraw = art[base + ".weight_scale"]
    g = cols if group is None else group
    ngroups = (cols + g - 1) // g
    if sdt != dtype or sshape != [rows, ngroups]:
        fail(f"{base}.weight_scale is {sdt} {sshape}, expected {dtype} [{rows}, {ngroups}]")
    wdt, wshape, wraw = art[base + ".weight_shape"]
    if wdt not in INT_DTYPES or list(to_ints(wdt, wraw)) != [rows, cols]:
        fail(f"{base}.weight_shape does not hold [{rows}, {cols}]")

    w = to_floats(dtype, raw)
    scales = to_floats(sdt, sraw)
    packed = to_ints("I32", praw)
    clipped = 0
    err_q = err_absmax = 0.0
    for r in range(rows):
        row_w = w[r * cols:(r + 1) * cols]
        q = []
        for word in packed[r * words:(r + 1) * words]:
            u = word & 0xFFFFFFFF
            q.extend(((u >> (4 * k)) & 0xF) - 8 for k in range(8))
        for gi in range(ngroups):
            lo, hi = gi * g, min((gi + 1) * g, cols)
            s = scales[r * ngroups + gi]
            if not (s > 0 and math.isfinite(s)):
                if s == 0 and all(x == 0 for x in row_w[lo:hi]):
                    continue
                fail(f"{base}: row {r} group {gi} has scale {s}")
            tol = s * 0.5 * (1 + 1e-5) + 1e-30
            amax = max(abs(x) for x in row_w[lo:hi])
            s0 = amax / 7 if amax > 0 else 1.0
            for c in range(lo, hi):
                x, qc = row_w[c], q[c]
                d = x - qc * s
                err_q += d * d
                q0 = max(-8, min(7, round(x / s0)))
                err_absmax += (x - q0 * s0) ** 2
                if abs(d) <= tol:
                    continue
                if (qc == 7 and x > 7 * s) or (qc == -8 and x < -8 * s):
                    clipped += 1
                    continue
                fail(f"{base}[{r}][{c}]: original {x!r}, q {qc}, scale {s!r}: "
                     f"error {abs(d)!r} is more than half a step")
    if err_q > err_absmax * 1.01 + 1e-30:
        fail(f"{base}: squared error {err_q:.6g} with the stored scales is worse than "
             f"{err_absmax:.6g} with plain absmax/7 scales")
    return rows * cols, clipped, err_q, err_absmax


def main(argv):
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    original, artifact, g = argv[1], argv[2], argv[3]
    group = None if g == "channel" else int(g)
    try:
        check_config(artifact, group)
        orig = read_checkpoint(original)
        art = read_checkpoint(artifact)
        n_linear = n_weights = n_clipped = n_same = 0
        total_q = total_abs = 0.0
        for name, t in sorted(orig.items()):
            parts = name.split(".")
            if len(parts) >= 2 and parts[-1] == "weight" and parts[-2] in LINEARS and len(t[1]) == 2:
                n, c, eq, ea = check_linear(name, t, art, group)
                n_linear += 1
                n_weights += n
                n_clipped += c
                total_q += eq
                total_abs += ea
            else:
                if name not in art:
                    fail(f"{name} (not quantized) is missing from the artifact")
                if art[name] != t:
                    fail(f"{name} (not quantized) differs from the original")
                n_same += 1
        if n_linear == 0:
            fail("no quantized linear layer found")
        print(f"check_int4: {n_linear} linears, {n_weights} weights within half a step "
              f"({n_clipped} clipped), {n_same} float tensors identical; "
              f"squared error {total_q:.4g} vs {total_abs:.4g} for absmax scales")
        return 0
    except CheckError as e:
        print(f"check_int4: FAIL: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))

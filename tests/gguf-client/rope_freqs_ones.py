"""Copies a GGUF with every value of its rope_freqs.weight tensor set to 1.

  python3 rope_freqs_ones.py IN.gguf OUT.gguf

llama.cpp divides each RoPE frequency by rope_freqs (Llama 3's rope scaling);
with ones it rotates as an unscaled model would. Prints the original values.
Reads the GGUF v3 header (metadata skipped by type, then the tensor table).
"""
import struct
import sys

SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
GGML_F32 = 0


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def read(self, fmt):
        (v,) = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return v

    def string(self):
        n = self.read("Q")
        self.pos += n
        return self.data[self.pos - n:self.pos].decode("utf-8")

    def value(self, vtype):
        if vtype == 8:
            return self.string()
        if vtype == 9:
            etype, n = self.read("I"), self.read("Q")
            for _ in range(n):
                self.value(etype)
            return None
        return self.read(SCALAR[vtype])


def main(src, dst):
    data = bytearray(open(src, "rb").read())
    r = Reader(data)
    if bytes(data[:4]) != b"GGUF":
        sys.exit(f"{src}: not a GGUF file")
    r.pos = 4
    r.read("I")  # version
    n_tensors, n_kv = r.read("Q"), r.read("Q")
    alignment = 32
    for _ in range(n_kv):
        key = r.string()
        value = r.value(r.read("I"))
        if key == "general.alignment":
            alignment = value
    tensors = {}
    for _ in range(n_tensors):
        name = r.string()
        dims = [r.read("Q") for _ in range(r.read("I"))]
        tensors[name] = (dims, r.read("I"), r.read("Q"))
    base = (r.pos + alignment - 1) // alignment * alignment
    if "rope_freqs.weight" not in tensors:
        sys.exit(f"{src}: no rope_freqs.weight tensor")
    dims, ttype, offset = tensors["rope_freqs.weight"]
    if ttype != GGML_F32 or len(dims) != 1:
        sys.exit(f"{src}: rope_freqs.weight is not a 1-D F32 tensor")
    n = dims[0]
    print(" ".join(f"{v:.4g}" for v in struct.unpack_from(f"<{n}f", data, base + offset)))
    struct.pack_into(f"<{n}f", data, base + offset, *([1.0] * n))
    open(dst, "wb").write(data)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: rope_freqs_ones.py IN.gguf OUT.gguf")
    main(sys.argv[1], sys.argv[2])

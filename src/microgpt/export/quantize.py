"""Per-row symmetric weight quantization. Standard library only.

Every weight matrix is stored row by row. `none` keeps float64, `float16` rounds each
weight to IEEE half precision, and the integer modes give each row one scale:

    scale = max |w_row| / qmax        (rounded to float16, the stored scale)
    q     = round(w / scale), clipped to [-qmax, qmax]   (qmax = 127 for int8, 7 for int4)
    w'    = q * scale                 (exact in float64: a <= 8-bit integer times a float16)

Symmetric means no zero point: 0 stays exactly 0 and the dequantization is one multiply.
The scales are float16, as in GGML's Q8_0: a relative error of at most 2**-11 on a row's
scale is far below the rounding of the weights themselves (up to 1/254 of the row's largest),
and it saves 2 bytes per row, which matters when the whole file should fit in 12 KB.
int4 packs two values per byte (low nibble first) as q + 8, so 1..15.

`dequantize()` returns the float64 weights every runtime (the standalone file, the NumPy
engine, the ONNX graph) computes with, so they can be compared exactly.
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass

from ..tensor import Tensor

QUANTIZATIONS = ("none", "float16", "int8", "int4")
QMAX = {"int8": 127, "int4": 7}


class ExportError(Exception):
    """An export that cannot be done; the message says what to do, in one line."""


@dataclass
class Quantized:
    """Weights in a stored form: `data` holds every matrix's packed values in order, `scales`
    one float16 per row (integer modes only)."""

    mode: str
    shapes: dict[str, tuple[int, int]]  # name -> (rows, cols), in the state_dict order
    data: bytes  # packed values of every matrix, row-major, in `shapes` order
    scales: bytes  # little-endian float16, one per row of every matrix (b"" unless int8/int4)

    @property
    def num_values(self) -> int:
        return sum(r * c for r, c in self.shapes.values())

    @property
    def num_rows(self) -> int:
        return sum(r for r, _ in self.shapes.values())

    @property
    def weight_bytes(self) -> int:
        """Bytes of the packed weights and their scales (what a device has to hold)."""
        return len(self.data) + len(self.scales)

    def values(self) -> list[float]:
        """The dequantized weights, flat, in `shapes` order."""
        return dequantize_values(self.mode, self.data, self.scales, self.shapes)

    def dequantize(self) -> dict[str, Tensor]:
        flat, out, i = self.values(), {}, 0
        for name, (rows, cols) in self.shapes.items():
            out[name] = Tensor((rows, cols), array("d", flat[i : i + rows * cols]))
            i += rows * cols
        return out


def quantize(params: dict[str, Tensor], mode: str) -> Quantized:
    """Pack `params` (name -> float64 matrix, in the state_dict order) in `mode`."""
    if mode not in QUANTIZATIONS:
        choices = ", ".join(QUANTIZATIONS)
        raise ExportError(f"unknown quantization {mode!r}; choose one of {choices}")
    shapes = {name: (t.shape[0], t.shape[1]) for name, t in params.items()}
    flat = [x for t in params.values() for x in t.data]
    if mode == "none":
        return Quantized(mode, shapes, struct.pack(f"<{len(flat)}d", *flat), b"")
    if mode == "float16":
        try:
            return Quantized(mode, shapes, struct.pack(f"<{len(flat)}e", *flat), b"")
        except OverflowError:
            raise ExportError(
                "a weight is too large for float16 (|w| > 65504); use --quantize int8 or none"
            ) from None
    qmax = QMAX[mode]
    qs: list[int] = []
    scales: list[float] = []
    for t in params.values():
        for row in t.rows():
            amax = max(abs(x) for x in row)
            # the stored (float16) scale is the one used to round, so q * scale is the
            # closest point to w on this row's grid
            try:
                scale = struct.unpack("<e", struct.pack("<e", amax / qmax))[0]
            except OverflowError:
                raise ExportError(
                    f"a weight of {amax:g} is too large for {mode}'s float16 scales; use none"
                ) from None
            scales.append(scale)
            if scale == 0.0:  # an all-zero row (e.g. the first revision's zero-init matrices)
                qs.extend(0 for _ in row)
            else:
                qs.extend(max(-qmax, min(qmax, round(x / scale))) for x in row)
    packed_scales = struct.pack(f"<{len(scales)}e", *scales)
    if mode == "int8":
        return Quantized(mode, shapes, struct.pack(f"<{len(qs)}b", *qs), packed_scales)
    if len(qs) % 2:
        qs.append(0)
    nibbles = bytes((qs[i] + 8) | ((qs[i + 1] + 8) << 4) for i in range(0, len(qs), 2))
    return Quantized(mode, shapes, nibbles, packed_scales)


def dequantize_values(
    mode: str, data: bytes, scales: bytes, shapes: dict[str, tuple[int, int]]
) -> list[float]:
    """The float64 weights, flat; the same arithmetic the standalone file performs."""
    n = sum(r * c for r, c in shapes.values())
    if mode == "none":
        return list(struct.unpack(f"<{n}d", data))
    if mode == "float16":
        return list(struct.unpack(f"<{n}e", data))
    if mode == "int8":
        qs = struct.unpack(f"<{n}b", data)
    elif mode == "int4":
        qs = [(b >> s & 15) - 8 for b in data for s in (0, 4)][:n]
    else:
        raise ExportError(f"unknown quantization {mode!r}")
    row_scales = struct.unpack(f"<{len(scales) // 2}e", scales)
    out, i, r = [], 0, 0
    for rows, cols in shapes.values():
        for _ in range(rows):
            out.extend(q * row_scales[r] for q in qs[i : i + cols])
            i += cols
            r += 1
    return out

"""A minimal float64 tensor for the standard-library core: a shape and a flat array('d').

Engines convert to and from their own storage (Value rows, NumPy arrays, torch tensors);
the checkpoint writes the array's bytes as they are. NumPy can view one without a copy:
`np.frombuffer(t.data, dtype=np.float64).reshape(t.shape)`.
"""

from __future__ import annotations

import math
import sys
from array import array
from dataclasses import dataclass


@dataclass
class Tensor:
    shape: tuple[int, ...]
    data: array  # typecode 'd', row-major, len == prod(shape)

    def __post_init__(self):
        self.shape = tuple(int(d) for d in self.shape)
        if self.data.typecode != "d":
            raise TypeError("Tensor data must be array('d')")
        if len(self.data) != math.prod(self.shape):
            raise ValueError(f"Tensor data has {len(self.data)} values for shape {self.shape}")

    @classmethod
    def from_rows(cls, rows: list[list[float]]) -> Tensor:
        ncols = len(rows[0]) if rows else 0
        return cls((len(rows), ncols), array("d", (x for row in rows for x in row)))

    @classmethod
    def zeros(cls, shape: tuple[int, ...]) -> Tensor:
        return cls(shape, array("d", bytes(8 * math.prod(shape))))

    def rows(self) -> list[list[float]]:
        """The matrix as a list of rows of Python floats."""
        nrows, ncols = self.shape
        return [self.data[r * ncols : (r + 1) * ncols].tolist() for r in range(nrows)]

    def to_bytes(self) -> bytes:
        """Little-endian float64 bytes, as safetensors stores them."""
        if sys.byteorder == "little":
            return self.data.tobytes()
        swapped = array("d", self.data)
        swapped.byteswap()
        return swapped.tobytes()

    @classmethod
    def from_bytes(cls, shape: tuple[int, ...], blob: bytes) -> Tensor:
        data = array("d")
        data.frombytes(blob)
        if sys.byteorder != "little":
            data.byteswap()
        return cls(shape, data)

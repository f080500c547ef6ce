"""Hashing maps without torch: a matrix whose every row holds exactly one +1 or -1 (OSLSM's
rw1s / rb1s in the trained models), its compact index + sign form, and what storing it that way
saves. The torch modules built from them are in hashing.py."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INDEX_BYTES, SIGN_BYTES = 4, 1  # int32 column index and int8 sign per row


@dataclass(frozen=True)
class HashingMap:
    """A matrix whose every row has exactly one nonzero entry, equal to +1 or -1."""
    index: np.ndarray  # (rows,) int32, column of the nonzero entry
    sign: np.ndarray   # (rows,) int8, +1 or -1

    def to_dense(self, columns: int) -> np.ndarray:
        dense = np.zeros((len(self.index), columns), np.float32)
        dense[np.arange(len(self.index)), self.index] = self.sign
        return dense


def detect_hashing_map(matrix: np.ndarray) -> HashingMap | None:
    """The index/sign form of `matrix` when it is a hashing map, else None."""
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        return None
    nonzero = matrix != 0
    if not np.all(nonzero.sum(axis=1) == 1):
        return None
    index = nonzero.argmax(axis=1)
    values = matrix[np.arange(matrix.shape[0]), index]
    if not np.all((values == 1.0) | (values == -1.0)):
        return None
    return HashingMap(index.astype(np.int32), values.astype(np.int8))


def map_description(hashed: bool, rows: int, columns: int) -> dict:
    """How a map is stored ('hashing': index + sign per row, else 'dense') and the bytes it takes."""
    dense = rows * columns * 4
    stored = rows * (INDEX_BYTES + SIGN_BYTES) if hashed else dense
    return {"form": "hashing" if hashed else "dense", "rows": rows, "columns": columns,
            "dense_bytes": dense, "stored_bytes": stored, "size_ratio": dense / stored}


def describe_maps(rw1s: np.ndarray, rb1s: np.ndarray) -> dict:
    """map_description of rw1s and rb1s as the converter stores them."""
    return {name: map_description(detect_hashing_map(m) is not None, *np.shape(m))
            for name, m in (("rw1s", rw1s), ("rb1s", rb1s))}

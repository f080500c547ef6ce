"""One entry point for Caffe weights in any of our formats, chosen by the file's content
(never its extension): HDF5 signature -> Caffe HDF5 weights; a plausible safetensors
header -> our safetensors ("<layer>/<index>" keys, or the OSLSM module's state when its
metadata says model=oslsm); anything else -> binary caffemodel."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from weights_convert.errors import CaffeFormatError
from weights_convert.formats.caffemodel import read_caffemodel
from weights_convert.formats.hdf5 import HDF5_SIGNATURE, read_caffemodel_h5
from weights_convert.formats.safetensors_io import read_safetensors, safetensors_metadata

# HDF5 looks for its superblock at 0 and at every power of two from 512 on (after a user block).
_HDF5_SUPERBLOCK_OFFSETS = (0, 512, 1024, 2048, 4096)


def sniff_format(path: str | os.PathLike) -> str:
    """"hdf5", "safetensors" or "caffemodel"."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(9)
            for offset in _HDF5_SUPERBLOCK_OFFSETS:
                fh.seek(offset)
                if fh.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                    return "hdf5"
    except OSError as exc:
        raise CaffeFormatError(f"{path}: cannot read weights file: {exc.strerror}") from None
    # A caffemodel starts with a protobuf key byte (0x0a, 0x12, 0xa2, ...), never with a
    # small little-endian length followed by '{'.
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= size - 8:
        return "safetensors"
    return "caffemodel"


def weights_kind(path: str | os.PathLike) -> str:
    """"caffemodel", "hdf5", "graph" (our safetensors, Caffe blobs) or "oslsm" (our safetensors,
    the OSLSM module's state), from the content."""
    kind = sniff_format(path)
    if kind != "safetensors":
        return kind
    return "oslsm" if safetensors_metadata(path).get("model") == "oslsm" else "graph"


@dataclass(frozen=True)
class BlobHandle:
    """A blob whose shape is known and whose values are read on demand."""
    shape: tuple[int, ...]
    read: Callable[[], np.ndarray]


def array_blob(array: np.ndarray) -> BlobHandle:
    """A BlobHandle over an array already in memory."""
    return BlobHandle(tuple(np.shape(array)), lambda: array)


def read_weights(path: str | os.PathLike) -> dict[str, list[np.ndarray | None]]:
    """Layer name -> blobs (float32), in file order, whatever the format. None stands for a blob
    the file leaves out because its layer shares it from another (Caffe's HDF5 does that)."""
    kind = sniff_format(path)
    if kind == "hdf5":
        return read_caffemodel_h5(path)
    if kind == "safetensors":
        return _regroup_safetensors(os.fspath(path))
    return read_caffemodel(path)


def _regroup_safetensors(path: str) -> dict[str, list[np.ndarray]]:
    tensors, _ = read_safetensors(path)
    indexed: dict[str, dict[int, np.ndarray]] = {}
    for key, array in tensors.items():
        # Caffe layer names may contain '/', so the index is what follows the last one.
        layer, sep, index = key.rpartition("/")
        if not sep or not layer or not index.isdigit() or str(int(index)) != index:
            raise CaffeFormatError(f"{path}: tensor key {key!r}; expected '<layer name>/<blob index>'")
        if array.dtype != np.float32:
            raise CaffeFormatError(f"{path}: tensor {key!r} has dtype {array.dtype}; expected float32 Caffe blobs")
        indexed.setdefault(layer, {})[int(index)] = array
    # Gaps (blobs shared from another layer, as in Caffe's HDF5) read as None.
    return {layer: [blobs.get(i) for i in range(max(blobs) + 1)] for layer, blobs in indexed.items()}

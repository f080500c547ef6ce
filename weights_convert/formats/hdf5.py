"""Caffe's HDF5 weights (`.caffemodel.h5`): one group per layer under `data/`,
holding the layer's blobs as datasets named by blob index ("0", "1", ...).

Caffe writes a group for every layer, including layers without blobs, and
stores no creation order, so a Caffe file lists its layers alphabetically;
files written here keep the given (net) order. Like Caffe's loader, float and
integer datasets are accepted and converted to float32.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import h5py
import numpy as np

from weights_convert.files.atomic import atomic_path
from weights_convert.errors import CaffeFormatError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# h5py/HDF5 report damaged files with any of these; all become CaffeFormatError.
_H5_ERRORS = (OSError, RuntimeError, ValueError, KeyError, TypeError, IndexError)


def read_caffemodel_h5(path: str | os.PathLike) -> dict[str, list[np.ndarray | None]]:
    """Layer name -> blobs (float32, the datasets' shapes); layers without blobs are left out, and a
    blob Caffe left out because the layer shares it from another reads as None."""
    path = os.fspath(path)
    try:
        h5 = h5py.File(path, "r")
    except _H5_ERRORS as exc:
        raise CaffeFormatError(f"{path}: cannot open as HDF5 weights: {exc}") from None
    try:
        with h5:
            return _read_layers(path, h5)
    except CaffeFormatError:
        raise
    except _H5_ERRORS as exc:
        raise CaffeFormatError(f"{path}: damaged HDF5 weights: {exc}") from None


def _read_layers(path: str, h5: h5py.File) -> dict[str, list[np.ndarray | None]]:
    data = h5.get("data")
    if not isinstance(data, h5py.Group):
        found = "a dataset" if data is not None else "nothing"
        raise CaffeFormatError(
            f"{path}: HDF5 path 'data' is {found}; expected Caffe's 'data/' group of layer groups "
            f"(top-level members: {sorted(h5.keys())})")
    params: dict[str, list[np.ndarray]] = {}
    for layer_name, layer in data.items():
        if not isinstance(layer, h5py.Group):
            raise CaffeFormatError(
                f"{path}: 'data/{layer_name}' is not a group; expected a group of blob datasets per layer")
        blobs = _read_blobs(path, layer_name, layer)
        if blobs:
            params[layer_name] = blobs
    return params


def _read_blobs(path: str, layer_name: str, layer: h5py.Group) -> list[np.ndarray | None]:
    """Datasets "0".."N-1" in index order. Caffe's Net::ToHDF5 leaves out the blobs a layer shares
    from an earlier one (`param { name }`); such a gap reads as None."""
    indices = {}
    for name in layer.keys():
        if not (name.isdigit() and str(int(name)) == name):
            raise CaffeFormatError(f"{path}: layer group 'data/{layer_name}' has a member {name!r}; "
                                   "expected only blob datasets named 0..N-1")
        indices[int(name)] = name
    return [_read_dataset(f"{path}: dataset 'data/{layer_name}/{i}'", layer[indices[i]]) if i in indices else None
            for i in range(max(indices) + 1 if indices else 0)]


def _read_dataset(where: str, dataset) -> np.ndarray:
    if not isinstance(dataset, h5py.Dataset):
        raise CaffeFormatError(f"{where}: is a group; expected a dataset")
    if dataset.dtype.kind not in "fiu":
        raise CaffeFormatError(f"{where}: dtype {dataset.dtype}; expected a float (or integer) dataset")
    try:  # HDF5 already refuses contiguous datasets larger than their storage; this covers the rest
        out = np.empty(dataset.shape, dtype=np.float32)
    except (MemoryError, ValueError):
        raise CaffeFormatError(f"{where}: shape {dataset.shape} is too large to read") from None
    if out.size:
        dataset.read_direct(out)  # HDF5 converts the stored type to float32 while reading
    return out


def write_caffemodel_h5(path: str | os.PathLike, params: Mapping[str, Sequence[np.ndarray]]) -> None:
    """Write `data/<layer>/<i>` float32 datasets, layer groups in the given order."""
    path = os.fspath(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            data = h5.create_group("data", track_order=True)
            for name, blobs in params.items():
                if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
                    raise CaffeFormatError(
                        f"{path}: layer name {name!r} cannot be an HDF5 group name; expected a non-empty "
                        "string without '/'")
                group = data.create_group(name, track_order=True)
                for i, blob in enumerate(blobs):
                    array = np.asarray(blob)
                    if array.dtype.kind not in "fiub":
                        raise CaffeFormatError(
                            f"{path}: layer {name!r} blob {i}: dtype {array.dtype} cannot be stored as float32")
                    group.create_dataset(str(i), data=np.asarray(array, dtype=np.float32))

"""One forward pass of a Caffe net on arrays, and the .npz files that carry blobs in and out
(shared by `forward` and `verify`)."""
from __future__ import annotations

import os
import zipfile
from typing import Mapping

import numpy as np

from weights_convert.files.atomic import atomic_path
from weights_convert.errors import CaffeFormatError
from weights_convert.formats.prototxt import load_net


def input_names(prototxt: str | os.PathLike) -> list[str]:
    """The tops of the net's Input layers (legacy `input:` nets are upgraded to one)."""
    return [top for layer in load_net(prototxt).layer if layer.type == "Input" for top in layer.top]


def run_graph(prototxt: str | os.PathLike, weights: str | os.PathLike | None,
              arrays: Mapping[str, np.ndarray], source: str = "inputs") -> dict[str, np.ndarray]:
    """Every blob of one forward pass; `arrays` must hold each Input top (extra names are ignored).
    `weights` None: the net must have no learnable blobs (strict loading of nothing checks it)."""
    import torch

    from weights_convert.graph import CaffeNet
    from weights_convert.runtime.numerics import faithful_mode

    names = input_names(prototxt)
    missing = [n for n in names if n not in arrays]
    if missing:
        episodes = sorted({k.split("/", 1)[0] for k in arrays if "/" in k}, key=lambda e: (len(e), e))
        hint = (f"; it holds episodes {', '.join(episodes[:5])}{' ...' if len(episodes) > 5 else ''} "
                "(`reproduce inputs`): pick one with --episode E" if episodes else "")
        raise CaffeFormatError(f"{source}: no array for input(s) {', '.join(missing)} of {os.fspath(prototxt)} "
                               f"(has {', '.join(sorted(arrays)[:8]) or 'nothing'}{hint})")
    net = CaffeNet.from_prototxt(prototxt)
    if weights is None:
        net.refuse_missing_weights()
    else:
        net.load_weights(weights)
    inputs = {n: torch.from_numpy(np.ascontiguousarray(arrays[n], dtype=np.float32)) for n in names}
    with torch.no_grad(), faithful_mode():
        blobs = net.forward(**inputs)
    return {name: _to_numpy(value) for name, value in blobs.items()}


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def split_copies(prototxt: str | os.PathLike) -> set[str]:
    """The tops of the net's Split layers, most of them added by Caffe's insert_splits wherever a
    blob feeds several layers: copies of their bottom, which golden dumps often leave out."""
    from weights_convert.graph import CaffeNet

    net = CaffeNet.from_prototxt(prototxt, device="meta")  # shapes only: no weights allocated
    return {top for layer in net.layers if layer.type == "Split" for top in layer.tops}


def episode_arrays(arrays: Mapping[str, np.ndarray], episode: int, source: str) -> dict[str, np.ndarray]:
    """The arrays of one episode of a `reproduce inputs` file ("{e}/first_img", ...), unprefixed."""
    prefix = f"{episode}/"
    chosen = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
    if not chosen:
        count = len({k.split("/", 1)[0] for k in arrays if "/" in k})
        raise CaffeFormatError(f"{source}: no episode {episode}; the file holds {count} episode(s)"
                               + (f", 0..{count - 1}" if count else " (no '<episode>/<name>' arrays)"))
    return chosen


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # a truncated file: BadZipFile or EOF
        raise CaffeFormatError(f"{os.fspath(path)}: cannot read .npz (is it truncated or not an .npz?): "
                               f"{exc}") from None


def save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """np.savez's format, written atomically, for any blob names (np.savez(**blobs) would take a
    blob named 'file' for its own argument)."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(array), allow_pickle=False)

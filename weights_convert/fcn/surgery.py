"""FCN's net surgery (surgery.py of shelhamer/fcn.berkeleyvision.org), on blobs:

- `transplant`: every layer of the old net that the new one has is copied blob by blob; a blob
  whose shape differs is copied in flat order ("coerced": VGG-16's fc6 InnerProduct of 4096 x 25088
  becomes the 4096 x 512 x 7 x 7 convolution, fc7 a 1 x 1 one); what the new net lacks (fc8) is
  dropped; what the old net lacks (score_fr) keeps its initialisation, Caffe's default constant 0.
- `interp`: a deconvolution of C channels becomes bilinear upsampling, each channel to itself."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from weights_convert.errors import CaffeFormatError


def bilinear_kernel(size: int) -> np.ndarray:
    """(size, size) tent filter, FCN's upsample_filt (factor (size + 1) // 2)."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    ramp = 1 - np.abs(np.arange(size) - center) / factor
    return np.outer(ramp, ramp).astype(np.float32)


def interp(shape: Sequence[int]) -> np.ndarray:
    """A (C, C, k, k) deconvolution weight: the bilinear kernel from each channel to itself, 0 elsewhere."""
    channels, inputs, h, w = shape
    if channels != inputs or h != w:
        raise CaffeFormatError(f"interp needs as many outputs as inputs and a square kernel, got {tuple(shape)}")
    weight = np.zeros(shape, np.float32)
    weight[range(channels), range(channels)] = bilinear_kernel(h)
    return weight


def transplant(old: Mapping[str, Sequence[np.ndarray]], shapes: Mapping[str, Sequence[Sequence[int]]]
               ) -> tuple[dict[str, list[np.ndarray]], dict[str, list[str]]]:
    """The new net's blobs (`shapes`: layer -> blob shapes) filled from `old`, and what was
    copied, coerced, dropped and left at zero (layer names)."""
    out: dict[str, list[np.ndarray]] = {}
    log: dict[str, list[str]] = {"copied": [], "coerced": [], "dropped": [], "zero": []}
    for name, blob_shapes in shapes.items():
        if name not in old:
            out[name] = [np.zeros(s, np.float32) for s in blob_shapes]
            log["zero"].append(name)
            continue
        blobs = []
        for i, shape in enumerate(blob_shapes):
            source = np.asarray(old[name][i], np.float32) if i < len(old[name]) else None
            if source is None or source.size != int(np.prod(shape)):
                got = "nothing" if source is None else f"{source.size} values"
                raise CaffeFormatError(f"layer {name!r} blob {i}: {got} to fill a blob of shape {tuple(shape)}")
            if tuple(source.shape) != tuple(shape):
                log["coerced"].append(f"{name}/{i}")
            blobs.append(source.reshape(shape).copy())
        out[name] = blobs
        log["copied"].append(name)
    log["dropped"] = sorted(set(old) - set(shapes))
    return out, log


def start_from_vgg16(vgg: Mapping[str, Sequence[np.ndarray]], shapes: Mapping[str, Sequence[Sequence[int]]]
                     ) -> tuple[dict[str, list[np.ndarray]], dict[str, list[str]]]:
    """voc-fcn32s's start: VGG-16 transplanted into the net's blobs, `upscore` set by interp."""
    missing = [name for name in shapes if name not in ("score_fr", "upscore") and name not in vgg]
    if missing:
        raise CaffeFormatError(f"the VGG-16 model lacks layer(s) {', '.join(missing)}")
    params, log = transplant(vgg, {name: s for name, s in shapes.items() if name != "upscore"})
    params["upscore"] = [interp(shapes["upscore"][0])]
    return params, log

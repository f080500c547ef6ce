"""OSLSM start models by net surgery, for the train net's learnable layers.

- From the authors' os_pretrained.caffemodel: every layer copied; its rw1s / rb1s (reported to be
  all zeros, which the upstream issue tracker says must be filled by "net surgery") are filled
  with weight-hashing maps when they are all zeros, and kept otherwise.
- From ImageNet VGG-16 (VGG_ILSVRC_16_layers.caffemodel, V1): conv1_1..conv5_3 into both branches
  (..f conditioning, ..s segmentation), fc6/fc7 as InnerProducts into fc6f/fc7f and reshaped into
  the 7x7 / 1x1 convolutions fc6s/fc7s, fc8 into fc8f, FCN's 64x64 bilinear kernel into
  uppred_offset, and weight-hashing maps (one +-1 per row, zero biases) into rw1s / rb1s.
The hashing maps come from numpy's default_rng(seed): the authors' maps are not published, so
the seed is ours and is recorded by the caller."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from weights_convert.errors import CaffeFormatError
from weights_convert.fcn.surgery import bilinear_kernel
from weights_convert.oslsm.layout import VGG_CONVS
from weights_convert.oslsm.random_init import random_hashing_matrix

HASHING_LAYERS = ("rw1s", "rb1s")


def hashing_params(shapes: Mapping[str, Sequence[tuple[int, ...]]], seed: int) -> dict[str, list[np.ndarray]]:
    """rw1s / rb1s as hashing maps of the net's shapes: one +-1 per row, zero biases."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in HASHING_LAYERS:
        weight_shape, bias_shape = shapes[name]
        out[name] = [random_hashing_matrix(*weight_shape, rng), np.zeros(bias_shape, np.float32)]
    return out


def from_os_pretrained(params: Mapping[str, Sequence[np.ndarray]], shapes, seed: int
                       ) -> tuple[dict[str, list[np.ndarray]], list[str]]:
    """The authors' pretrained model with zero hashing maps filled; returns (params, what was filled)."""
    out = {name: [np.asarray(b, np.float32) for b in params[name]] for name in shapes if name in params}
    filled = []
    fresh = hashing_params(shapes, seed)
    for name in HASHING_LAYERS:
        if name not in out or not any(np.any(b) for b in out[name]):
            out[name] = fresh[name]
            filled.append(name)
    return out, filled


def from_vgg16(vgg: Mapping[str, Sequence[np.ndarray]], shapes, seed: int) -> dict[str, list[np.ndarray]]:
    """The OSLSM start model from VGG-16's layers, shaped as the train net wants them."""
    missing = [n for n in (*VGG_CONVS, "fc6", "fc7", "fc8") if n not in vgg]
    if missing:
        raise CaffeFormatError(f"the VGG-16 model lacks layer(s) {', '.join(missing)}")
    out: dict[str, list[np.ndarray]] = {}
    for conv in VGG_CONVS:
        for branch in ("f", "s"):
            out[conv + branch] = [np.array(b, np.float32) for b in vgg[conv]]
    for fc in ("fc6", "fc7"):
        out[fc + "f"] = [np.array(b, np.float32) for b in vgg[fc]]
        weight, bias = vgg[fc]
        conv_shape = shapes[fc + "s"][0]
        if np.size(weight) != int(np.prod(conv_shape)):
            raise CaffeFormatError(f"VGG-16 {fc} has {np.size(weight)} weights; {fc}s needs {conv_shape}")
        out[fc + "s"] = [np.array(weight, np.float32).reshape(conv_shape), np.array(bias, np.float32)]
    out["fc8f"] = [np.array(b, np.float32) for b in vgg["fc8"]]
    out["uppred_offset"] = [bilinear_kernel(shapes["uppred_offset"][0][-1]).reshape(shapes["uppred_offset"][0])]
    out.update(hashing_params(shapes, seed))
    return out


def check_against(params: Mapping[str, Sequence[np.ndarray]], shapes: Mapping[str, Sequence[tuple]],
                  source: str) -> None:
    """Every learnable layer of the net present with its blob shapes (V1 legacy 4-D dims of
    fully connected layers allowed, as Caffe's ShapeEquals does)."""
    for name, wanted in shapes.items():
        if name not in params:
            raise CaffeFormatError(f"{source}: no blobs for layer '{name}' of the train net")
        got = [tuple(np.shape(b)) for b in params[name]]
        if len(got) != len(wanted) or any(int(np.prod(g)) != int(np.prod(w)) for g, w in zip(got, wanted)):
            raise CaffeFormatError(f"{source}: layer '{name}' has blob shapes {got}; the train net needs "
                                   f"{[tuple(w) for w in wanted]}")

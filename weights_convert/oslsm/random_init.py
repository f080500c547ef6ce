"""Random OSLSM weights in Caffe's layout, for demos and tests without the authors' models.

He-scaled convolutions and fully connected layers keep activations at the input's scale
(order one relative to it) through the 16 layers of each branch; rw1s / rb1s are true weight-hashing maps (one +-1 per row)
unless asked otherwise; uppred_offset is FCN's bilinear upsampling kernel.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from weights_convert.formats.caffemodel import write_caffemodel
from weights_convert.fcn.surgery import bilinear_kernel
from weights_convert.oslsm.layout import UPSAMPLE_KERNEL, OSLSMWidths, expected_param_shapes
from weights_convert.oslsm.spec import oslsm_deploy_net


def random_hashing_matrix(rows: int, columns: int, rng: np.random.Generator) -> np.ndarray:
    """A (rows, columns) matrix with exactly one +1 or -1 per row."""
    matrix = np.zeros((rows, columns), np.float32)
    matrix[np.arange(rows), rng.integers(0, columns, rows)] = rng.choice(np.float32([-1, 1]), rows)
    return matrix


def random_oslsm_params(widths: OSLSMWidths = OSLSMWidths.THIN, seed: int = 0,
                        hashing: bool = True) -> dict[str, list[np.ndarray]]:
    """Layer name -> float32 blobs for every learnable layer of the OSLSM deploy net."""
    rng = np.random.default_rng(seed)
    params: dict[str, list[np.ndarray]] = {}
    for name, shapes in expected_param_shapes(widths).items():
        weight_shape = shapes[0]
        if name == "uppred_offset":
            params[name] = [bilinear_kernel(UPSAMPLE_KERNEL).reshape(weight_shape)]
            continue
        if name in ("rw1s", "rb1s"):
            rows, columns = weight_shape
            weight = (random_hashing_matrix(rows, columns, rng) if hashing
                      else rng.standard_normal(weight_shape).astype(np.float32) / np.sqrt(columns))
            params[name] = [weight, np.zeros(shapes[1], np.float32)]
            continue
        fan_in = int(np.prod(weight_shape[1:]))
        # He scaling for layers followed by ReLU; fc8f (no ReLU) gets unit-variance scaling.
        gain = 1.0 if name == "fc8f" else 2.0
        weight = rng.standard_normal(weight_shape) * np.sqrt(gain / fan_in)
        bias = rng.standard_normal(shapes[1]) * 0.01
        params[name] = [weight.astype(np.float32), bias.astype(np.float32)]
    return params


def write_oslsm_caffemodel(path: str | os.PathLike, params: Mapping[str, Sequence[np.ndarray]],
                           net_name: str = "") -> None:
    """OSLSM blobs (layer -> arrays) as a caffemodel whose layers carry the deploy net's types
    (the same for any widths and shot count)."""
    types = {layer.name: layer.type for layer in oslsm_deploy_net(1, OSLSMWidths.THIN).layer}
    write_caffemodel(path, params, {name: types[name] for name in params}, net_name=net_name)

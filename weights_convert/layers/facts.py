"""What a layer type owns, known from its LayerParameter alone: the one table the converter reads
(it runs without torch, so it cannot import the layer classes) and the layer classes' own
param_shapes must agree with (tests/weights_convert/test_graph.py checks every registered type)."""
from __future__ import annotations

from typing import Callable

# Type -> whether a layer of it owns learnable blobs (Caffe's LayerSetUp allocates them).
_OWNS_BLOBS: dict[str, Callable[[object], bool]] = {
    "Convolution": lambda lp: True,
    "Deconvolution": lambda lp: True,
    "InnerProduct": lambda lp: True,
    "BatchNorm": lambda lp: True,   # mean, variance, scale factor: learned by running sums, not by the solver
    "PReLU": lambda lp: True,
    # a second bottom supplies Scale's / Bias's operand: then the layer has no blob of its own
    "Scale": lambda lp: len(lp.bottom) == 1,
    "Bias": lambda lp: len(lp.bottom) == 1,
}


def owns_blobs(lp) -> bool:
    """Whether a layer (a LayerParameter) has learnable blobs of its own."""
    rule = _OWNS_BLOBS.get(lp.type)
    return bool(rule and rule(lp))

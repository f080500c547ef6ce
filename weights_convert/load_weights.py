"""Weights file (.caffemodel, .caffemodel.h5, our .safetensors) -> a CaffeNet's parameters."""
from __future__ import annotations

import os

from weights_convert.errors import CaffeFormatError
from weights_convert.formats.weights_io import read_weights
from weights_convert.graph import CaffeNet


def load_weights_into(net: CaffeNet, weights_path: str | os.PathLike, strict: bool = True) -> CaffeNet:
    """Read every blob of the file and load it with `CaffeNet.load_params`; errors name the file."""
    path = os.fspath(weights_path)
    params = read_weights(path)
    try:
        net.load_params(params, strict=strict)
    except CaffeFormatError as exc:
        raise CaffeFormatError(f"{path}: {exc}") from None
    return net

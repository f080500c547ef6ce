"""Loading OSLSM weights from any file we know: the authors' .caffemodel (checked against a
deploy prototxt), Caffe's HDF5 weights, and our .safetensors in either form. The tensors come
from the one Caffe -> module mapping in state_map.py."""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np
import torch

from weights_convert.errors import CaffeFormatError
from weights_convert.formats.prototxt import load_net
from weights_convert.formats.safetensors_io import read_safetensors
from weights_convert.formats.weights_io import array_blob, read_weights, weights_kind
from weights_convert.oslsm.layout import OSLSMWidths, check_params
from weights_convert.oslsm.model import OSLSM
from weights_convert.oslsm.spec import check_oslsm_net
from weights_convert.oslsm.state_map import caffe_from_state, state_from_caffe, widths_of_state


def read_params(path: str | os.PathLike) -> dict[str, list[np.ndarray | None]]:
    """Layer name -> float32 blobs from any weights file we know: .caffemodel, .caffemodel.h5,
    or our .safetensors in either form (the oslsm form is expanded back to Caffe's layout)."""
    path = os.fspath(path)
    if weights_kind(path) == "oslsm":
        tensors, _ = read_safetensors(path)
        return caffe_from_state(tensors, source=path)
    return read_weights(path)


def skeleton(widths: OSLSMWidths, weight_hashed: bool, bias_hashed: bool) -> OSLSM:
    """A module with shapes but no storage (no 1.1 GB of random init); load with assign=True."""
    with torch.device("meta"):
        return OSLSM(widths, weight_hashed=weight_hashed, bias_hashed=bias_hashed)


def oslsm_from_params(params: Mapping[str, Sequence[np.ndarray]], source: str = "weights",
                      allow_hashing: bool = True) -> OSLSM:
    """Build from Caffe blobs (layer name -> arrays). Strict: a missing or extra layer or a wrong
    blob shape raises CaffeFormatError naming layer, blob index and both shapes."""
    widths = check_params(params, source=source)
    blobs = {name: [array_blob(b) for b in params[name]] for name in params}
    state = state_from_caffe(blobs, widths, allow_hashing)
    model = skeleton(widths, "hashing.weight_map.index" in state, "hashing.bias_map.index" in state)
    model.load_state_dict({k: torch.from_numpy(t.read()) for k, t in state.items()}, strict=True, assign=True)
    return model


def oslsm_from_state(state: Mapping[str, torch.Tensor], source: str = "state") -> OSLSM:
    """Build from our converted state (either hashing form), inferring widths and forms."""
    widths = widths_of_state(state, source)
    model = skeleton(widths, "hashing.weight_map.index" in state, "hashing.bias_map.index" in state)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise CaffeFormatError(f"{source}: OSLSM state mismatch: missing {missing or 'none'}, "
                               f"unexpected {extra or 'none'}")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape) or state[key].dtype != tensor.dtype:
            raise CaffeFormatError(f"{source}: tensor {key!r} is {state[key].dtype} {tuple(state[key].shape)}; "
                                   f"expected {tensor.dtype} {tuple(tensor.shape)}")
    model.load_state_dict(dict(state), strict=True, assign=True)
    return model


def oslsm_from_caffe(prototxt: str | os.PathLike, weights: str | os.PathLike) -> OSLSM:
    """Check that `prototxt` is an OSLSM deploy net and that `weights` match it, then build."""
    _, net_widths, _ = check_oslsm_net(load_net(prototxt), source=os.fspath(prototxt))
    params = read_weights(weights)
    # Strict against the prototxt's widths: names layer, blob index and both shapes.
    check_params(params, net_widths, source=f"{os.fspath(weights)} (for {os.fspath(prototxt)})")
    return oslsm_from_params(params, source=os.fspath(weights))


def caffe_params(model: OSLSM) -> dict[str, list[np.ndarray]]:
    """The model's weights back in Caffe's layout (layer name -> blobs), hashing expanded to dense."""
    return caffe_from_state({k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})


def load_oslsm(weights: str | os.PathLike, prototxt: str | os.PathLike | None = None,
               device: str | torch.device = "cpu",
               memory_format: torch.memory_format = torch.channels_last) -> OSLSM:
    """OSLSM from our converted .safetensors (oslsm or graph form) or a .caffemodel / .caffemodel.h5
    (checked against `prototxt` when given). Convolution weights are channels_last by default:
    about 25% faster on CPU; values differ from the contiguous layout only by float rounding, and
    both layouts are tested against the real Caffe's blobs."""
    path = os.fspath(weights)
    if weights_kind(path) == "oslsm":
        tensors, _ = read_safetensors(path)
        model = oslsm_from_state({k: torch.from_numpy(v) for k, v in tensors.items()}, source=path)
    elif prototxt is not None:
        model = oslsm_from_caffe(prototxt, path)
    else:
        model = oslsm_from_params(read_weights(path), source=path)
    return model.to(device=device, memory_format=memory_format).eval()

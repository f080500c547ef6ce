"""The one mapping between Caffe's OSLSM blobs (layer name -> blobs) and the OSLSM module's
state (key -> array), in both directions and without torch. The eager loader (loading.py) and
the streamed converter (convert.py) both take their tensors from `state_from_caffe`, so the two
paths cannot drift apart; `caffe_from_state` is its inverse (hashing maps expanded to dense)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from weights_convert.errors import CaffeFormatError
from weights_convert.oslsm.hashing_map import HashingMap, detect_hashing_map
from weights_convert.oslsm.layout import OSLSMWidths, conv_layer_shapes, expected_param_shapes

# Caffe's hashing layers and the module paths of the maps that replace them.
HASHING_KEYS = {"rw1s": "hashing.weight_map", "rb1s": "hashing.bias_map"}


@dataclass(frozen=True)
class StateTensor:
    """One state tensor: shape and dtype known up front, values read on demand."""
    shape: tuple[int, ...]
    dtype: type
    read: Callable[[], np.ndarray]


def caffe_to_state_keys(widths: OSLSMWidths) -> dict[str, str]:
    """Caffe layer name -> module path of every learnable layer, in the module's state order."""
    keys = {}
    for branch, suffix in (("conditioning", "f"), ("segmentation", "s")):
        keys.update({name + suffix: f"{branch}.trunk.{name}" for name in conv_layer_shapes(widths)})
        fcs = ("fc6", "fc7", "fc8") if suffix == "f" else ("fc6", "fc7")
        keys.update({fc + suffix: f"{branch}.{fc}" for fc in fcs})
    return {**keys, **HASHING_KEYS, "uppred_offset": "upsample"}


def state_from_caffe(layers: Mapping[str, Sequence], widths: OSLSMWidths,
                     allow_hashing: bool = True) -> dict[str, StateTensor]:
    """Module state (in the module's state_dict order) from blobs that have `.read()` and `.shape`.
    Only rw1s's and rb1s's weights are read here (to tell hashing maps from dense ones)."""
    shapes = expected_param_shapes(widths)
    state: dict[str, StateTensor] = {}
    for caffe_name, key in caffe_to_state_keys(widths).items():
        blobs = [StateTensor(shape, np.float32, _reader(blob, shape))
                 for blob, shape in zip(layers[caffe_name], shapes[caffe_name])]
        hmap = None
        if caffe_name in HASHING_KEYS:
            weight = blobs[0].read()  # read once: it decides the form and may be stored as is
            blobs[0] = StateTensor(weight.shape, np.float32, lambda w=weight: w)
            hmap = detect_hashing_map(weight) if allow_hashing else None
        if hmap is None:
            state.update(zip((key + ".weight", key + ".bias"), blobs))
        else:  # a GatherMap: its parameter (bias) comes before its buffers in state_dict
            rows = blobs[0].shape[0]
            state[key + ".bias"] = blobs[1]
            state[key + ".index"] = StateTensor((rows,), np.int32, lambda h=hmap: h.index)
            state[key + ".sign"] = StateTensor((rows,), np.int8, lambda h=hmap: h.sign)
    return state


def widths_of_state(state: Mapping[str, object], source: str = "state") -> OSLSMWidths:
    """The widths of an OSLSM state (arrays or tensors with `.shape`)."""
    try:
        return OSLSMWidths(*(int(state[f"conditioning.trunk.conv{b}_1.weight"].shape[0]) for b in range(1, 6)),
                           int(state["conditioning.fc6.weight"].shape[0]),
                           int(state["conditioning.fc8.weight"].shape[0]))
    except KeyError as exc:
        raise CaffeFormatError(f"{source}: not an OSLSM state: missing tensor {exc.args[0]!r}") from None


def caffe_from_state(state: Mapping[str, np.ndarray], source: str = "state") -> dict[str, list[np.ndarray]]:
    """Caffe layer name -> float32 blobs (in Caffe's shapes) from an OSLSM state; hashing maps
    stored as index + sign come back as the dense matrices Caffe holds."""
    widths = widths_of_state(state, source)
    shapes = expected_param_shapes(widths)
    params = {}
    for caffe_name, key in caffe_to_state_keys(widths).items():
        if key + ".index" in state:
            columns = shapes[caffe_name][0][1]
            weight = HashingMap(np.asarray(state[key + ".index"]), np.asarray(state[key + ".sign"])).to_dense(columns)
        else:
            weight = state[key + ".weight"]
        blobs = [weight] + ([state[key + ".bias"]] if key + ".bias" in state else [])
        params[caffe_name] = [np.asarray(b, np.float32).reshape(s) for b, s in zip(blobs, shapes[caffe_name])]
    return {name: params[name] for name in shapes}  # the deploy net's layer order


def _reader(blob, shape: tuple[int, ...]) -> Callable[[], np.ndarray]:
    return lambda: np.ascontiguousarray(blob.read(), dtype=np.float32).reshape(shape)

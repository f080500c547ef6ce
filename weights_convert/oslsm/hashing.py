"""OSLSM's weight hashing: the fixed maps rw1s / rb1s from the 1000-d fc8f vector to the
segmentation classifier's weights w and bias b.

In the trained models each row of these InnerProduct matrices holds exactly one +1 or -1,
so `y = W v + c` is the same as `y = sign * v[index] + c`. For such rows Caffe's gemm sums
exact zeros and one exact product, so the gather below gives bit-identical float32 results
while storing 5 bytes per row instead of 4 * len(v).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from weights_convert.oslsm.hashing_map import HashingMap, detect_hashing_map, map_description

__all__ = ["GatherMap", "HashingMap", "WeightHashing", "detect_hashing_map", "make_map"]


class GatherMap(nn.Module):
    """y = sign * v[:, index] + bias: an InnerProduct whose weight is a hashing map."""

    def __init__(self, rows: int, columns: int):
        super().__init__()
        self.columns = columns
        self.register_buffer("index", torch.zeros(rows, dtype=torch.int32))
        self.register_buffer("sign", torch.ones(rows, dtype=torch.int8))
        self.bias = nn.Parameter(torch.zeros(rows), requires_grad=False)

    @classmethod
    def from_map(cls, hmap: HashingMap, columns: int, bias: np.ndarray) -> "GatherMap":
        module = cls(len(hmap.index), columns)
        module.index.copy_(torch.from_numpy(hmap.index))
        module.sign.copy_(torch.from_numpy(hmap.sign))
        module.bias.data.copy_(torch.from_numpy(np.asarray(bias, np.float32).reshape(-1)))
        return module

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        # Multiplying by +-1 is exact; the bias add is the same single float op Caffe does.
        return v.index_select(1, self.index) * self.sign.to(v.dtype) + self.bias

    def dense_weight(self) -> torch.Tensor:
        w = torch.zeros(len(self.index), self.columns, dtype=self.bias.dtype, device=self.bias.device)
        w[torch.arange(len(self.index), device=w.device), self.index.long()] = self.sign.to(w.dtype)
        return w


def _dense(weight: np.ndarray, bias: np.ndarray) -> nn.Linear:
    rows, columns = weight.shape
    linear = nn.Linear(columns, rows)
    linear.weight.data.copy_(torch.from_numpy(np.asarray(weight, np.float32)))
    linear.bias.data.copy_(torch.from_numpy(np.asarray(bias, np.float32).reshape(-1)))
    linear.requires_grad_(False)
    return linear


def make_map(weight: np.ndarray, bias: np.ndarray, allow_hashing: bool = True) -> nn.Module:
    """GatherMap when `weight` is a hashing map (and allowed), else a dense nn.Linear."""
    hmap = detect_hashing_map(weight) if allow_hashing else None
    if hmap is None:
        return _dense(weight, bias)
    return GatherMap.from_map(hmap, weight.shape[1], bias)


class WeightHashing(nn.Module):
    """fc8f vector (k, E) -> classifier weights w (k, C) (Caffe's rw1s) and bias b (k,) (rb1s)."""

    def __init__(self, weight_map: nn.Module, bias_map: nn.Module):
        super().__init__()
        self.weight_map = weight_map
        self.bias_map = bias_map

    @classmethod
    def from_caffe(cls, rw1s_w: np.ndarray, rw1s_b: np.ndarray, rb1s_w: np.ndarray,
                   rb1s_b: np.ndarray, allow_hashing: bool = True) -> "WeightHashing":
        return cls(make_map(rw1s_w, rw1s_b, allow_hashing), make_map(rb1s_w, rb1s_b, allow_hashing))

    @classmethod
    def empty(cls, width: int, embed: int, weight_hashed: bool, bias_hashed: bool) -> "WeightHashing":
        """Shapes only (to be filled by load_state_dict)."""
        def one(rows: int, hashed: bool) -> nn.Module:
            return GatherMap(rows, embed) if hashed else nn.Linear(embed, rows).requires_grad_(False)
        return cls(one(width, weight_hashed), one(1, bias_hashed))

    def forward(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.weight_map(v), self.bias_map(v).reshape(-1)

    def describe(self) -> dict:
        """Which map is stored how, and bytes stored against the dense float32 matrix."""
        out = {}
        for caffe_name, module in (("rw1s", self.weight_map), ("rb1s", self.bias_map)):
            if isinstance(module, GatherMap):
                out[caffe_name] = map_description(True, len(module.index), module.columns)
            else:
                out[caffe_name] = map_description(False, *module.weight.shape)
        return out

    def dense_matrices(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """(weight, bias) of rw1s and rb1s in Caffe's dense layout (for export back)."""
        out = {}
        for caffe_name, module in (("rw1s", self.weight_map), ("rb1s", self.bias_map)):
            weight = module.dense_weight() if isinstance(module, GatherMap) else module.weight
            out[caffe_name] = (weight.detach(), module.bias.detach())
        return out

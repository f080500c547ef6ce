"""Caffe's SGDSolver update, step for step (sgd_solver.cpp ApplyUpdate).

For every learnable blob, in Caffe's learnable-param order and in float32:
  diff = sum of the iter_size backward passes (autograd accumulates .grad the same way)
  ClipGradients: if clip_gradients >= 0 and the global L2 norm of all diffs exceeds it,
                 every diff is scaled by clip_gradients / norm (before the division below)
  Normalize:     diff *= float32(1 / iter_size)
  Regularize:    diff += weight_decay * decay_mult * w        (L2; L1 adds the sign of w)
  Update value:  h = momentum * h + (rate * lr_mult) * diff   (h is the momentum history)
  Update:        w -= h
The history holds updates already scaled by the rate of their iteration, so when the policy
lowers the rate the old history keeps its old scale; torch.optim.SGD keeps an unscaled buffer
and applies the new rate to all of it. The momentum step is one fused multiply-add
(OpenBLAS's saxpby: fma(local_rate, diff, momentum * h)), as torch's add with alpha is."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from weights_convert.errors import CaffeFormatError
from weights_convert.formats.schema import pb
from weights_convert.graph import CaffeNet
from weights_convert.train.learning_rate import learning_rate


@dataclass
class LearnableParam:
    """One blob the solver updates: its owner (layer, blob index), tensor and multipliers."""
    layer: str
    index: int
    tensor: nn.Parameter
    lr_mult: float
    decay_mult: float

    @property
    def key(self) -> str:
        return f"{self.layer}/{self.index}"


def learnable_params(net: CaffeNet) -> list[LearnableParam]:
    """Caffe's Net::learnable_params(), in its order (layer by layer, owners only), with the
    multipliers Net::AppendParam settles: a sharing layer's explicit lr_mult / decay_mult must
    equal an explicit one of the owner, and fills it in where the owner left it to its default."""
    found: dict[tuple[str, int], LearnableParam] = {}
    explicit: dict[tuple[str, int], tuple[bool, bool]] = {}
    order: list[LearnableParam] = []
    for layer, lp in zip(net.layers, net.layer_params):
        for i in range(len(layer.blobs)):
            spec = lp.param[i] if i < len(lp.param) else pb.ParamSpec()
            has_lr, has_decay = spec.HasField("lr_mult"), spec.HasField("decay_mult")
            lr = float(spec.lr_mult) if has_lr else (0.0 if i in layer.frozen else 1.0)
            owner = net.sharing.get((layer.name, i))
            if owner is None:
                entry = LearnableParam(layer.name, i, layer.blobs[i], lr, float(spec.decay_mult))
                found[(layer.name, i)] = entry
                explicit[(layer.name, i)] = (has_lr, has_decay)
                order.append(entry)
                continue
            entry = found[owner]
            owner_lr, owner_decay = explicit[owner]
            if has_lr:
                if owner_lr and entry.lr_mult != lr:
                    raise CaffeFormatError(f"shared param '{spec.name}' has mismatched lr_mult: layer "
                                           f"'{owner[0]}' {entry.lr_mult}, layer '{layer.name}' {lr}")
                entry.lr_mult, owner_lr = lr, True
            if has_decay:
                if owner_decay and entry.decay_mult != float(spec.decay_mult):
                    raise CaffeFormatError(f"shared param '{spec.name}' has mismatched decay_mult: layer "
                                           f"'{owner[0]}' {entry.decay_mult}, layer '{layer.name}' "
                                           f"{float(spec.decay_mult)}")
                entry.decay_mult, owner_decay = float(spec.decay_mult), True
            explicit[owner] = (owner_lr, owner_decay)
    return order


class CaffeSGD:
    """The SGD solver's update and its state (iteration, step counter, momentum history)."""

    def __init__(self, param: pb.SolverParameter, params: list[LearnableParam]):
        if param.regularization_type not in ("L1", "L2"):
            raise CaffeFormatError(f"regularization_type {param.regularization_type!r} is unknown; "
                                   "Caffe knows L1 and L2")
        self.param = param
        self.params = params
        self.iter_size = int(param.iter_size)
        self.momentum = float(np.float32(param.momentum))
        self.history = [torch.zeros_like(p.tensor, memory_format=torch.contiguous_format) for p in params]
        self.iteration = 0
        self.current_step = 0

    def rate(self) -> np.float32:
        """The rate the next update will use (does not advance multistep's counter)."""
        return learning_rate(self.param, self.iteration, self.current_step)[0]

    @torch.no_grad()
    def apply_update(self) -> np.float32:
        """Apply one update from the accumulated .grad of every param; returns its rate."""
        rate, self.current_step = learning_rate(self.param, self.iteration, self.current_step)
        diffs = [p.tensor.grad if p.tensor.grad is not None else torch.zeros_like(p.tensor) for p in self.params]
        self._clip(diffs)
        scale = np.float32(1.0) / np.float32(self.iter_size)
        weight_decay = np.float32(self.param.weight_decay)
        for p, diff, history in zip(self.params, diffs, self.history):
            w = p.tensor
            if self.iter_size != 1:
                diff.mul_(float(scale))
            local_decay = weight_decay * np.float32(p.decay_mult)
            if local_decay:
                decay_term = w if self.param.regularization_type == "L2" else torch.sign(w)
                diff.add_(decay_term, alpha=float(local_decay))
            local_rate = rate * np.float32(p.lr_mult)
            history.mul_(self.momentum).add_(diff, alpha=float(local_rate))
            w.sub_(history)
        self.iteration += 1
        return rate

    def _clip(self, diffs: list[torch.Tensor]) -> None:
        clip = float(np.float32(self.param.clip_gradients))
        if clip < 0:
            return
        sumsq = torch.zeros((), dtype=torch.float32, device=diffs[0].device if diffs else "cpu")
        for d in diffs:
            sumsq += (d * d).sum()
        norm = float(torch.sqrt(sumsq))
        if norm > clip:
            factor = float(np.float32(clip) / np.float32(norm))
            for d in diffs:
                d.mul_(factor)

    def load_history(self, arrays: list[np.ndarray], source: str) -> None:
        """History blobs in Caffe's learnable order (a .solverstate's), checked by count and size."""
        if len(arrays) != len(self.history):
            raise CaffeFormatError(f"{source}: holds {len(arrays)} history blobs; the net has "
                                   f"{len(self.history)} learnable blobs (Caffe: incorrect length of history blobs)")
        for p, h, a in zip(self.params, self.history, arrays):
            if a.size != h.numel():
                raise CaffeFormatError(f"{source}: history blob for {p.key} has {a.size} values, shape "
                                       f"{tuple(a.shape)}; the net's blob has shape {tuple(h.shape)}")
            h.copy_(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).reshape(h.shape))

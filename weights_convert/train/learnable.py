"""The blobs a solver updates: Caffe's Net::learnable_params(), with their multipliers."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from weights_convert.errors import CaffeFormatError
from weights_convert.formats.schema import pb
from weights_convert.graph import CaffeNet


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

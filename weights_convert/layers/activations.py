"""Element-wise layers: ReLU, PReLU, ELU, TanH, Sigmoid, AbsVal, Power, BNLL, Threshold."""
from __future__ import annotations

import torch

from weights_convert.formats.schema import pb
from weights_convert.layers.base import CaffeLayer, Shape


class ReLU(CaffeLayer):
    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        self.slope = float(lp.relu_param.negative_slope)

    def forward(self, bottoms):
        x = bottoms[0]
        if self.slope == 0.0:
            return [torch.relu(x)]
        # Caffe: max(x, 0) + slope * min(x, 0)
        return [torch.clamp(x, min=0) + self.slope * torch.clamp(x, max=0)]

    def forward_framed(self, bottoms, frames):
        """A constant stays a constant (and 0 stays 0)."""
        frame = frames[0] and frames[0].after_elementwise(lambda v: self([v])[0])
        return self(bottoms), [frame]


class PReLU(CaffeLayer):
    """Learned negative slopes, one per channel (axis 1) or one shared."""

    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        self.channel_shared = bool(lp.prelu_param.channel_shared)

    def param_shapes(self, bottoms) -> list[Shape]:
        x = bottoms[0]
        if x.dim() < 2:
            raise self.fail(f"needs a bottom with at least 2 axes, got {tuple(x.shape)}")
        return [(1,)] if self.channel_shared else [(int(x.shape[1]),)]

    def forward(self, bottoms):
        x = bottoms[0]
        a = self.blob(0)
        if not self.channel_shared:
            if x.shape[1] != a.shape[0]:
                raise self.fail(f"bottom has {x.shape[1]} channels; the layer has {a.shape[0]} slopes")
            a = a.view(1, -1, *([1] * (x.dim() - 2)))
        return [torch.clamp(x, min=0) + a * torch.clamp(x, max=0)]


class ELU(CaffeLayer):
    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        self.alpha = float(lp.elu_param.alpha)

    def forward(self, bottoms):
        x = bottoms[0]
        # Caffe: x > 0 ? x : alpha * (exp(x) - 1), written with exp, not expm1
        return [torch.where(x > 0, x, self.alpha * (torch.exp(x) - 1))]


class TanH(CaffeLayer):
    def forward(self, bottoms):
        return [torch.tanh(bottoms[0])]


class Sigmoid(CaffeLayer):
    def forward(self, bottoms):
        return [torch.sigmoid(bottoms[0])]


class AbsVal(CaffeLayer):
    def forward(self, bottoms):
        return [torch.abs(bottoms[0])]


class BNLL(CaffeLayer):
    def forward(self, bottoms):
        x = bottoms[0]
        # Caffe's overflow-safe form of log(1 + exp(x))
        return [torch.where(x > 0, x + torch.log1p(torch.exp(-x)), torch.log1p(torch.exp(x)))]


class Threshold(CaffeLayer):
    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        self.threshold = float(lp.threshold_param.threshold)

    def forward(self, bottoms):
        return [(bottoms[0] > self.threshold).to(bottoms[0].dtype)]


class Power(CaffeLayer):
    """(shift + scale * x) ^ power, with Caffe's constant output when power * scale == 0."""

    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        p = lp.power_param
        self.power, self.scale, self.shift = float(p.power), float(p.scale), float(p.shift)

    def forward(self, bottoms):
        x = bottoms[0]
        if self.power * self.scale == 0.0:
            value = 1.0 if self.power == 0.0 else self.shift ** self.power
            return [torch.full_like(x, value)]
        y = x * self.scale if self.scale != 1.0 else x
        if self.shift != 0.0:
            y = y + self.shift
        if self.power != 1.0:
            y = torch.pow(y, self.power)
        return [y]

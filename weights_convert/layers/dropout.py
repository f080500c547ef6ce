"""Dropout: the identity at TEST (Caffe scales by 1/(1-p) at train time instead)."""
from __future__ import annotations

import torch

from weights_convert.formats.schema import pb
from weights_convert.layers.base import CaffeLayer


class Dropout(CaffeLayer):
    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        self.ratio = float(lp.dropout_param.dropout_ratio)
        if not 0.0 <= self.ratio < 1.0:
            raise self.fail(f"dropout_ratio {self.ratio} must be in [0, 1)")

    def forward(self, bottoms):
        x = bottoms[0]
        if self.phase == "TEST":
            return [x]
        keep = torch.rand_like(x) >= self.ratio
        return [x * keep.to(x.dtype) * (1.0 / (1.0 - self.ratio))]

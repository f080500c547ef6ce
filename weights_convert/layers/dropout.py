"""Dropout: the identity at TEST; at TRAIN each unit is kept with probability 1 - p and scaled
by 1/(1-p), as Caffe does. The mask comes from `generator` (the trainer's, so that a resumed run
draws the same masks), or torch's default one."""
from __future__ import annotations

import torch

from weights_convert.formats.schema import pb
from weights_convert.layers.base import CaffeLayer


class Dropout(CaffeLayer):
    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        self.ratio = float(lp.dropout_param.dropout_ratio)
        self.generator: torch.Generator | None = None
        if not 0.0 <= self.ratio < 1.0:
            raise self.fail(f"dropout_ratio {self.ratio} must be in [0, 1)")

    def forward(self, bottoms):
        x = bottoms[0]
        if self.phase == "TEST" or self.shapes_only:
            return [x]
        keep = torch.rand(x.shape, generator=self.generator, device=x.device, dtype=x.dtype) >= self.ratio
        return [x * keep.to(x.dtype) * (1.0 / (1.0 - self.ratio))]

"""Softmax over one axis (Caffe subtracts the max first, as torch does)."""
from __future__ import annotations

import torch

from weights_convert.formats.schema import pb
from weights_convert.layers.base import CaffeLayer


class Softmax(CaffeLayer):
    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        self.axis_param = int(lp.softmax_param.axis)

    def forward(self, bottoms):
        x = bottoms[0]
        return [torch.softmax(x, dim=self.canonical_axis(self.axis_param, x.dim()))]

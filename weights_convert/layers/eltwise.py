"""Eltwise: SUM (with optional coefficients), PROD, MAX over bottoms of one shape.

MAX routes the gradient as Caffe's mask does: between bottoms 0 and 1 a tie goes to bottom 1
(`a > b ? a : b`), a later bottom wins only when strictly greater. torch.maximum would split
a tied gradient in halves."""
from __future__ import annotations

import torch

from weights_convert.formats.schema import pb
from weights_convert.layers.base import CaffeLayer

E = pb.EltwiseParameter


class Eltwise(CaffeLayer):
    bottoms_range = (2, None)

    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        p = lp.eltwise_param
        self.op = p.operation
        self.coeff = [float(c) for c in p.coeff]
        if self.coeff and self.op == E.PROD:  # Caffe refuses them for PROD and ignores them for MAX
            raise self.fail("coeff is only for operation SUM")
        if self.coeff and len(self.coeff) != len(self.bottoms):
            raise self.fail(f"{len(self.coeff)} coefficients for {len(self.bottoms)} bottoms")

    def forward(self, bottoms):
        shape = bottoms[0].shape
        if any(b.shape != shape for b in bottoms):
            raise self.fail(f"bottom shapes differ: {[tuple(b.shape) for b in bottoms]}")
        if self.op == E.SUM:
            coeff = self.coeff or [1.0] * len(bottoms)
            y = bottoms[0] * coeff[0] if coeff[0] != 1.0 else bottoms[0]
            for c, b in zip(coeff[1:], bottoms[1:]):
                y = y + (b * c if c != 1.0 else b)
            return [y]
        if self.op == E.PROD:
            y = bottoms[0]
            for b in bottoms[1:]:
                y = y * b
            return [y]
        a, b = bottoms[0], bottoms[1]
        y = torch.where(a > b, a, b)
        for b in bottoms[2:]:
            y = torch.where(b > y, b, y)
        return [y]

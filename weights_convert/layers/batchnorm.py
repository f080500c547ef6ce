"""BatchNorm: Caffe keeps (sum-weighted mean, variance, scale factor s); the statistics are
blob / s (0 when s == 0). No affine part (Caffe puts that in a following Scale layer)."""
from __future__ import annotations

import torch

from weights_convert.formats.schema import pb
from weights_convert.layers.base import CaffeLayer, Shape


class BatchNorm(CaffeLayer):
    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        p = lp.batch_norm_param
        self.eps = float(p.eps)
        self.use_global_stats = p.use_global_stats if p.HasField("use_global_stats") else self.phase == "TEST"

    def param_shapes(self, bottoms) -> list[Shape]:
        x = bottoms[0]
        if x.dim() < 2:
            raise self.fail(f"needs a bottom with at least 2 axes, got {tuple(x.shape)}")
        c = int(x.shape[1])
        return [(c,), (c,), (1,)]

    def forward(self, bottoms):
        x = bottoms[0]
        view = (1, -1) + (1,) * (x.dim() - 2)
        if self.use_global_stats:
            s = self.blob(2)[0]
            factor = torch.where(s == 0, torch.zeros_like(s), 1.0 / s)
            mean = self.blob(0) * factor
            var = self.blob(1) * factor
        else:  # statistics of this batch: per channel over N and the spatial axes, biased variance
            dims = [0] + list(range(2, x.dim()))
            mean = x.mean(dim=dims)
            var = ((x - mean.view(view)) ** 2).mean(dim=dims)
        std = torch.sqrt(var + self.eps)
        return [(x - mean.view(view)) / std.view(view)]

"""LRN: ACROSS_CHANNELS scale = k + alpha/size * sum of squares over `size` channels;
WITHIN_CHANNEL scale = 1 + alpha * mean of squares over a size x size patch; y = x * scale^-beta."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from weights_convert.formats.schema import pb
from weights_convert.layers.base import CaffeLayer


class LRN(CaffeLayer):
    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        p = lp.lrn_param
        self.size, self.alpha, self.beta, self.k = int(p.local_size), float(p.alpha), float(p.beta), float(p.k)
        self.region = p.norm_region
        if self.size % 2 == 0:
            raise self.fail(f"local_size {self.size} must be odd")

    def forward(self, bottoms):
        x = bottoms[0]
        if x.dim() != 4:
            raise self.fail(f"needs a 4-D bottom, got shape {tuple(x.shape)}")
        sq = x * x
        half = (self.size - 1) // 2
        if self.region == pb.LRNParameter.ACROSS_CHANNELS:
            padded = F.pad(sq, (0, 0, 0, 0, half, half))
            # windowed sum over channels (not avg_pool3d: its CUDA backward has no deterministic kernel)
            sums = padded.unfold(1, self.size, 1).sum(-1)
            scale = self.k + (self.alpha / self.size) * sums
        else:
            # Caffe builds this from AVE pooling (pad half, stride 1: always size*size divisor),
            # then Power(shift 1, scale alpha, power -beta).
            sums = F.avg_pool2d(F.pad(sq, (half, half, half, half)), self.size, stride=1, divisor_override=1)
            scale = 1.0 + self.alpha * (sums / (self.size * self.size))
        return [x * torch.pow(scale, -self.beta)]

"""BatchNorm: Caffe keeps (sum-weighted mean, variance, scale factor s); the statistics are
blob / s (0 when s == 0). No affine part (Caffe puts that in a following Scale layer).

Its three blobs are statistics, never learned: Caffe forces their lr_mult to 0 and refuses
another value. In TRAIN without use_global_stats each forward normalises by the batch's
statistics and folds them into the blobs (moving_average_fraction, unbiased variance)."""
from __future__ import annotations

import torch

from weights_convert.formats.schema import pb
from weights_convert.layers.base import CaffeLayer, Shape


class BatchNorm(CaffeLayer):
    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        p = lp.batch_norm_param
        self.eps = float(p.eps)
        self.moving_average_fraction = float(p.moving_average_fraction)
        self.use_global_stats = p.use_global_stats if p.HasField("use_global_stats") else self.phase == "TEST"
        if any(spec.HasField("lr_mult") and spec.lr_mult != 0 for spec in lp.param):
            raise self.fail("its blobs are statistics, not parameters: Caffe requires lr_mult 0 for them")
        self.frozen = {0, 1, 2}

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
            if self.phase == "TRAIN" and not self.shapes_only:
                self._accumulate(mean.detach(), var.detach(), x.numel() // x.shape[1])
        std = torch.sqrt(var + self.eps)
        return [(x - mean.view(view)) / std.view(view)]

    @torch.no_grad()
    def _accumulate(self, mean: torch.Tensor, var: torch.Tensor, m: int) -> None:
        """Caffe's running sums: s = maf*s + 1, mean_blob = mean + maf*mean_blob, var_blob =
        m/(m-1)*var + maf*var_blob (m values per channel)."""
        maf = self.moving_average_fraction
        self.blobs[2].mul_(maf).add_(1.0)
        self.blobs[0].mul_(maf).add_(mean)
        self.blobs[1].mul_(maf).add_(var * (m / (m - 1) if m > 1 else 1.0))

"""SigmoidCrossEntropyLoss in Caffe's overflow-safe form; normalised by the batch size unless
loss_param says otherwise (what the golden OSLSM-fork Caffe does for a bare deploy layer).

Caffe's Forward_cpu adds the per-pixel terms one after another into a float: at OSLSM's 1e5-1e6
loss over 2.5e5 pixels that drifts up to ~1e-4 from the exact sum, so the value reported here is
that sequential float32 sum. The gradient, (sigmoid(x) - t) / normaliser, does not depend on
how the value was summed and flows through the ordinary sum."""
from __future__ import annotations

import numpy as np
import torch

from weights_convert.formats.schema import pb
from weights_convert.layers.base import CaffeLayer

L = pb.LossParameter


class SigmoidCrossEntropyLoss(CaffeLayer):
    bottoms_range = (2, 2)

    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        p = lp.loss_param
        if p.HasField("normalization"):
            self.normalization = p.normalization
        elif p.HasField("normalize"):
            self.normalization = L.VALID if p.normalize else L.BATCH_SIZE
        else:
            self.normalization = L.BATCH_SIZE
        self.ignore_label = int(p.ignore_label) if p.HasField("ignore_label") else None
        # loss_weight only scales the loss in the net's objective; the top blob is unweighted.

    def forward(self, bottoms):
        x, t = bottoms
        if x.numel() != t.numel():
            raise self.fail(f"scores {tuple(x.shape)} and targets {tuple(t.shape)} differ in count")
        t = t.reshape(x.shape)
        pos = (x >= 0).to(x.dtype)
        terms = x * (t - pos) - torch.log1p(torch.exp(x - 2 * x * pos))
        valid = None
        if self.ignore_label is not None:
            valid = t != self.ignore_label
            terms = torch.where(valid, terms, torch.zeros_like(terms))
        loss = -terms.sum()
        if not self.shapes_only:
            # the last running sum ([-1:] so that an empty blob sums to 0)
            sequential = -np.cumsum(terms.detach().reshape(-1).cpu().numpy(), dtype=np.float32)[-1:].sum()
            # the value is Caffe's; (loss - loss.detach()) is exactly 0 and carries the gradient
            loss = torch.tensor(sequential, dtype=x.dtype, device=x.device) + (loss - loss.detach())
        if self.normalization == L.FULL:
            norm = torch.tensor(float(x.numel()), device=x.device)
        elif self.normalization == L.VALID:
            norm = valid.sum().to(x.dtype) if valid is not None else torch.tensor(float(x.numel()), device=x.device)
        elif self.normalization == L.BATCH_SIZE:
            norm = torch.tensor(float(x.shape[0]), device=x.device)
        else:
            norm = torch.tensor(1.0, device=x.device)
        # Caffe: max(1, normaliser), so an all-ignored batch gives 0, not NaN
        return [loss / torch.clamp(norm, min=1.0)]

"""Losses between two blobs, forward and backward as Caffe computes them: EuclideanLoss and
ContrastiveLoss (the Siamese loss)."""
from __future__ import annotations

import numpy as np
import torch

from weights_convert.formats.schema import pb
from weights_convert.layers.base import CaffeLayer, count
from weights_convert.layers.loss import needs_gradient, running_sum, scalar, with_caffe_gradient


class EuclideanLoss(CaffeLayer):
    """||a - b||^2 / (2 num); diffs (a - b) / num and its negative."""
    bottoms_range = (2, 2)

    def forward(self, bottoms):
        a, b = bottoms
        if count(a.shape, 1) != count(b.shape, 1) or a.shape[0] != b.shape[0]:
            raise self.fail(f"its bottoms {tuple(a.shape)} and {tuple(b.shape)} must have the same dimension")
        if self.shapes_only:
            return [torch.empty((), device="meta")]
        num = np.float32(a.shape[0])
        diff = (a.detach() - b.detach().reshape(a.shape)).reshape(-1)
        top = scalar(np.float32(float(torch.dot(diff, diff))) / num / np.float32(2.0), a)
        if needs_gradient(a, b):
            scaled = diff.reshape(a.shape) / float(num)
            top = with_caffe_gradient(top, [(a, scaled), (b, -scaled.reshape(b.shape))])
        return [top]


class ContrastiveLoss(CaffeLayer):
    """Pairs (a_i, b_i) with a similarity label y_i (read as an int): d_i^2 when similar, else
    max(margin - d_i, 0)^2 (legacy_version: max(margin - d_i^2, 0)); summed in order, over 2 num.
    The diff of a dissimilar pair is Caffe's -(margin - d) / (d + 1e-4) (a - b) / num, not the
    exact derivative (the 1e-4 keeps it finite at d = 0)."""
    bottoms_range = (3, 3)

    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        self.margin = np.float32(lp.contrastive_loss_param.margin)
        self.legacy = bool(lp.contrastive_loss_param.legacy_version)

    def forward(self, bottoms):
        a, b, y = bottoms
        if a.shape != b.shape or a.dim() < 2 or count(a.shape, 2) != 1 or count(y.shape, 1) != 1 or y.shape[0] != a.shape[0]:
            raise self.fail(f"expects a and b of shape (N, C, 1, 1) and y of shape (N, 1, 1, 1); got "
                            f"{tuple(a.shape)}, {tuple(b.shape)}, {tuple(y.shape)}")
        if self.shapes_only:
            return [torch.empty((), device="meta")]
        num = int(a.shape[0])
        diff = (a.detach() - b.detach()).reshape(num, -1)
        dist_sq = (diff * diff).sum(1)
        similar = y.detach().reshape(num).to(torch.int64) != 0
        margin = float(self.margin)
        if self.legacy:
            dissimilar = torch.clamp(margin - dist_sq, min=0)
        else:
            dissimilar = torch.clamp(margin - torch.sqrt(dist_sq), min=0) ** 2
        terms = torch.where(similar, dist_sq, dissimilar)
        top = scalar(running_sum(terms) / np.float32(num) / np.float32(2.0), a)
        if needs_gradient(a, b):
            if self.legacy:
                active, beta = (margin - dist_sq) > 0, torch.full_like(dist_sq, -1.0)
            else:
                dist = torch.sqrt(dist_sq)
                active, beta = (margin - dist) > 0, -(margin - dist) / (dist + np.float32(1e-4))
            factor = torch.where(similar, torch.ones_like(beta), torch.where(active, beta, torch.zeros_like(beta)))
            grad_a = (diff * (factor / float(num)).unsqueeze(1)).reshape(a.shape)
            top = with_caffe_gradient(top, [(a, grad_a), (b, -grad_a)])
        return [top]

"""Accuracy and ArgMax as Caffe computes them. Caffe implements no Backward for either: a
gradient asked through them is an error naming the layer (loss.without_backward)."""
from __future__ import annotations

import numpy as np
import torch

from weights_convert.formats.schema import pb
from weights_convert.layers.base import CaffeLayer, count
from weights_convert.layers.loss import class_labels, without_backward


class Accuracy(CaffeLayer):
    """A position counts as right when fewer than top_k classes score >= the true class (ties
    count against it, as Caffe's `>=` does); the accuracy is right / not ignored (0 when all are
    ignored). A second top holds each class's accuracy over its own positions."""
    bottoms_range = (2, 2)
    tops_range = (1, 2)

    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        p = lp.accuracy_param
        self.top_k = int(p.top_k)
        self.axis_param = int(p.axis)
        self.ignore_label = int(p.ignore_label) if p.HasField("ignore_label") else None

    def forward(self, bottoms):
        x, label = bottoms
        axis = self.canonical_axis(self.axis_param, x.dim())
        outer, classes, inner = count(x.shape, 0, axis), int(x.shape[axis]), count(x.shape, axis + 1)
        if label.numel() and self.top_k > x.numel() // label.numel():
            raise self.fail(f"top_k {self.top_k} must be at most the number of classes ({x.numel() // label.numel()})")
        if outer * inner != label.numel():
            raise self.fail(f"{label.numel()} labels for scores {tuple(x.shape)}: with the class axis {axis} Caffe "
                            f"expects {outer * inner}")
        if self.shapes_only:
            return [torch.empty((), device="meta"), torch.empty(classes, device="meta")][:len(self.tops)]
        scores = x.detach().reshape(outer, classes, inner)
        labels, valid = class_labels(self, label.reshape(outer, inner), classes, self.ignore_label)
        index = torch.where(valid, labels, 0)
        true_score = scores.gather(1, index.unsqueeze(1))
        better = (scores >= true_score).sum(1) - 1   # the true class itself is not better
        right = valid & (better < self.top_k)
        n_valid = int(valid.sum())
        accuracy = np.float32(int(right.sum())) / np.float32(n_valid) if n_valid else np.float32(0.0)
        tops = [without_backward(self, torch.tensor(float(accuracy), dtype=x.dtype, device=x.device), [x])]
        if len(self.tops) == 2:
            seen = torch.bincount(index[valid], minlength=classes).cpu().numpy().astype(np.float32)
            hits = torch.bincount(index[right], minlength=classes).cpu().numpy().astype(np.float32)
            per_class = np.divide(hits, seen, out=np.zeros_like(hits), where=seen > 0)
            tops.append(without_backward(self, torch.from_numpy(per_class).to(device=x.device, dtype=x.dtype), [x]))
        return tops


class ArgMax(CaffeLayer):
    """The top_k largest values' indices (or, with out_max_val, indices and values) over `axis`,
    or over all but the first axis when no axis is given (then the top is (N, 1 or 2, top_k)
    padded to at least 3 axes). Ties go to the larger index, as Caffe's sort of (value, index)
    pairs with std::greater orders them."""

    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        p = lp.argmax_param
        self.top_k = int(p.top_k)
        self.out_max_val = bool(p.out_max_val)
        self.axis_param = int(p.axis) if p.HasField("axis") else None
        if self.top_k < 1:
            raise self.fail("top_k must be at least 1")

    def forward(self, bottoms):
        x = bottoms[0]
        if self.axis_param is not None:
            axis = self.canonical_axis(self.axis_param, x.dim())
            if self.top_k > x.shape[axis]:
                raise self.fail(f"top_k {self.top_k} must be at most the size of axis {axis} ({x.shape[axis]})")
            rows = x.detach().movedim(axis, -1)
        else:
            if self.top_k > count(x.shape, 1):
                raise self.fail(f"top_k {self.top_k} must be at most the number of classes ({count(x.shape, 1)})")
            rows = x.detach().reshape(x.shape[0], -1)
        if self.shapes_only:
            return [torch.empty(self._top_shape(x), device="meta")]
        size = rows.shape[-1]
        # descending by value, the larger index first among equals: a stable sort of the reversed row
        values, order = torch.sort(rows.flip(-1), dim=-1, descending=True, stable=True)
        values, indices = values[..., :self.top_k], (size - 1 - order[..., :self.top_k]).to(x.dtype)
        if self.axis_param is not None:
            top = (values if self.out_max_val else indices).movedim(-1, axis)
        elif self.out_max_val:
            top = torch.stack([indices, values], dim=1).reshape(self._top_shape(x))
        else:
            top = indices.reshape(self._top_shape(x))
        return [without_backward(self, top.contiguous(), [x])]

    def _top_shape(self, x) -> tuple[int, ...]:
        if self.axis_param is not None:
            shape = list(x.shape)
            shape[self.canonical_axis(self.axis_param, x.dim())] = self.top_k
            return tuple(shape)
        shape = [1] * max(x.dim(), 3)
        shape[0], shape[1], shape[2] = int(x.shape[0]), 2 if self.out_max_val else 1, self.top_k
        return tuple(shape)

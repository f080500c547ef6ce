"""Losses over class scores and integer labels, forward and backward as Caffe computes them:
SoftmaxWithLoss, InfogainLoss (the softmax inside, as in Caffe 1.0 and the OSLSM fork),
MultinomialLogisticLoss and HingeLoss.

Scores are seen as (outer, classes, inner) around the class axis; label i*inner + j belongs to
position (i, j), and Caffe adds the positions' terms in that order into a float."""
from __future__ import annotations

import os

import numpy as np
import torch

from weights_convert.errors import CaffeFormatError
from weights_convert.formats.schema import pb
from weights_convert.layers.base import CaffeLayer, count
from weights_convert.layers.loss import (class_labels, ignore_label, needs_gradient, normalization_mode, normalizer,
                                         running_sum, scalar, with_caffe_gradient)

FLT_MIN = float(np.finfo(np.float32).tiny)  # SoftmaxWithLoss's floor under a probability
LOG_THRESHOLD = 1e-20                        # kLOG_THRESHOLD: the other layers' floor


class _ClassAxisLoss(CaffeLayer):
    """Scores with a class axis and one label per (outer, inner) position."""
    bottoms_range = (2, 2)
    tops_range = (1, 2)

    def __init__(self, lp: pb.LayerParameter, axis: int):
        super().__init__(lp)
        self.axis_param = axis
        self.ignore_label = ignore_label(lp)
        self.normalization = normalization_mode(lp)

    def split(self, x: torch.Tensor, label: torch.Tensor) -> tuple[int, int, int]:
        axis = self.canonical_axis(self.axis_param, x.dim())
        outer, classes, inner = count(x.shape, 0, axis), int(x.shape[axis]), count(x.shape, axis + 1)
        if outer * inner != label.numel():
            raise self.fail(f"{label.numel()} labels for scores {tuple(x.shape)}: with the class axis {axis} "
                            f"Caffe expects {outer * inner} (one per position, values 0..{classes - 1})")
        return outer, classes, inner

    def loss_and_scale(self, terms: torch.Tensor, counted: torch.Tensor, valid: torch.Tensor, outer: int,
                       inner: int) -> tuple[np.float32, float]:
        """Caffe's value (the counted terms summed in order, over the normaliser of the valid
        positions) and the diffs' scale, 1 / normaliser."""
        norm = normalizer(self.normalization, outer, inner, int(valid.sum()))
        total = running_sum(torch.where(counted, terms, torch.zeros_like(terms)))
        return np.float32(total / norm), float(np.float32(1.0) / norm)


class SoftmaxWithLoss(_ClassAxisLoss):
    """-log(max(p_label, FLT_MIN)) per valid position; diff prob - onehot, 0 where ignored. An
    optional second top is the softmax itself."""

    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp, int(lp.softmax_param.axis))

    def forward(self, bottoms):
        x, label = bottoms
        outer, classes, inner = self.split(x, label)
        prob = torch.softmax(x.detach(), dim=self.canonical_axis(self.axis_param, x.dim()))
        if self.shapes_only:
            return [torch.empty((), device="meta"), prob][:len(self.tops)]
        p = prob.reshape(outer, classes, inner)
        labels, valid = class_labels(self, label.reshape(outer, inner), classes, self.ignore_label)
        index = torch.where(valid, labels, 0).unsqueeze(1)
        picked = p.gather(1, index).squeeze(1)
        loss, scale = self.loss_and_scale(-torch.log(torch.clamp(picked, min=FLT_MIN)), valid, valid, outer, inner)
        top = scalar(loss, x)
        if needs_gradient(x):
            diff = p.clone()
            diff.scatter_add_(1, index, torch.full_like(picked, -1.0).unsqueeze(1))
            diff = diff * valid.unsqueeze(1) * scale
            top = with_caffe_gradient(top, [(x, diff.reshape(x.shape))])
        return [top, prob][:len(self.tops)]


class InfogainLoss(_ClassAxisLoss):
    """-sum_l H[label, l] log(max(p_l, 1e-20)) per valid position, p the softmax over the axis;
    diff p * rowsum(H)[label] - H[label, :]. H is a third bottom or a BlobProto file (`source`).
    Caffe refuses the legacy `normalize` here; the default normalization is VALID."""
    bottoms_range = (2, 3)

    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp, int(lp.infogain_loss_param.axis))
        if lp.loss_param.HasField("normalize"):
            raise self.fail("loss_param.normalize is deprecated for InfogainLoss (Caffe refuses it); use "
                            "normalization")
        self.matrix = None
        if len(self.bottoms) < 3:
            self.matrix = read_blobproto(lp.infogain_loss_param.source, self)

    def forward(self, bottoms):
        x, label = bottoms[:2]
        outer, classes, inner = self.split(x, label)
        h = bottoms[2] if len(bottoms) == 3 else self.matrix.to(x.device)
        if h.numel() != classes * classes:
            raise self.fail(f"the infogain matrix has {h.numel()} values; {classes} classes need {classes}x{classes}")
        prob = torch.softmax(x.detach(), dim=self.canonical_axis(self.axis_param, x.dim()))
        if self.shapes_only:
            return [torch.empty((), device="meta"), prob][:len(self.tops)]
        h = h.detach().reshape(classes, classes).to(x.dtype)
        p = prob.reshape(outer, classes, inner)
        labels, valid = class_labels(self, label.reshape(outer, inner), classes, self.ignore_label)
        rows = h[torch.where(valid, labels, 0)].permute(0, 2, 1)          # (outer, classes, inner)
        logs = torch.log(torch.clamp(p, min=LOG_THRESHOLD))
        # Caffe subtracts the classes' products one by one inside the position loop
        terms = (-rows * logs).permute(0, 2, 1).reshape(outer, inner * classes)
        loss, scale = self.loss_and_scale(terms, valid.repeat_interleave(classes, dim=1), valid, outer, inner)
        top = scalar(loss, x)
        if needs_gradient(x):
            diff = p * rows.sum(1, keepdim=True) - rows
            diff = diff * valid.unsqueeze(1) * scale
            top = with_caffe_gradient(top, [(x, diff.reshape(x.shape))])
        return [top, prob][:len(self.tops)]


def read_blobproto(path: str, layer: CaffeLayer) -> torch.Tensor:
    """A binary BlobProto file (Caffe's .binaryproto), as InfogainLoss's `source`."""
    if not path:
        raise layer.fail("give the infogain matrix as a third bottom or as infogain_loss_param.source")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise layer.fail(f"cannot read its infogain matrix {path}: {exc.strerror}") from None
    blob = pb.BlobProto()
    try:
        blob.ParseFromString(raw)
    except Exception as exc:  # protobuf's DecodeError has no stable import path across versions
        raise CaffeFormatError(f"{os.fspath(path)}: not a binary BlobProto ({exc})") from None
    values = list(blob.double_data) or list(blob.data)
    return torch.tensor(values, dtype=torch.float32)


def item_labels(layer: CaffeLayer, x: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x as num x dim, one class label per item): the layout of the losses that take Blob::num()."""
    num = int(x.shape[0])
    if label.numel() != num:
        raise layer.fail(f"expects one label per item: {num} items, labels of shape {tuple(label.shape)}")
    rows = x.detach().reshape(num, -1)
    return rows, class_labels(layer, label.reshape(num), rows.shape[1], None)[0]


class MultinomialLogisticLoss(CaffeLayer):
    """-log(max(p[i, label_i], 1e-20)) summed over the batch, over the batch size; the bottom is
    already a probability. Diff -1 / (num * max(p, 1e-20)) at the label, 0 elsewhere."""
    bottoms_range = (2, 2)

    def forward(self, bottoms):
        prob, label = bottoms
        if self.shapes_only:
            return [torch.empty((), device="meta")]
        p, labels = item_labels(self, prob, label)
        num = p.shape[0]
        picked = torch.clamp(p.gather(1, labels.unsqueeze(1)).squeeze(1), min=LOG_THRESHOLD)
        top = scalar(np.float32(running_sum(-torch.log(picked)) / np.float32(num)), prob)
        if needs_gradient(prob):
            diff = torch.zeros_like(p)
            diff.scatter_(1, labels.unsqueeze(1), (np.float32(-1.0) / np.float32(num) / picked).unsqueeze(1))
            top = with_caffe_gradient(top, [(prob, diff.reshape(prob.shape))])
        return [top]


class HingeLoss(CaffeLayer):
    """One-vs-all hinge: margins max(0, 1 + s) with the label's score negated; L1 sums them,
    L2 their squares, over the batch size. Diff: sign (L1) or 2x (L2) of the margins, the label's
    negated back."""
    bottoms_range = (2, 2)

    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        self.norm = lp.hinge_loss_param.norm

    def forward(self, bottoms):
        x, label = bottoms
        if self.shapes_only:
            return [torch.empty((), device="meta")]
        s, labels = item_labels(self, x, label)
        num = s.shape[0]
        flip = torch.ones_like(s).scatter_(1, labels.unsqueeze(1), -1.0)
        margins = torch.clamp(1 + s * flip, min=0)
        l1 = self.norm == pb.HingeLossParameter.L1
        total = torch.sum(margins, dtype=torch.float32) if l1 else torch.dot(margins.reshape(-1), margins.reshape(-1))
        top = scalar(np.float32(float(total)) / np.float32(num), x)
        if needs_gradient(x):
            signed = margins * flip
            diff = torch.sign(signed) / float(num) if l1 else signed * float(np.float32(2.0) / np.float32(num))
            top = with_caffe_gradient(top, [(x, diff.reshape(x.shape))])
        return [top]

"""What Caffe's loss layers share (normalisation, float32 running sums, a backward written as
Caffe writes it), and SigmoidCrossEntropyLoss.

Caffe's loss layers compute their gradient by hand, not by differentiating their forward: the
gradient of SoftmaxWithLoss is `prob - onehot` even where the forward clamps a probability at
FLT_MIN, ContrastiveLoss divides by `dist + 1e-4`. So each layer here computes Caffe's value and
Caffe's bottom diffs (per unit top diff) together, and `with_caffe_gradient` makes autograd hand
those diffs, times the top's diff (its loss_weight), to the bottoms."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from weights_convert.formats.schema import pb
from weights_convert.layers.base import CaffeLayer, count

L = pb.LossParameter


def normalization_mode(lp: pb.LayerParameter, default: int = L.VALID) -> int:
    """loss_param's mode; the legacy `normalize` means VALID (true) or BATCH_SIZE (false)."""
    p = lp.loss_param
    if p.HasField("normalization"):
        return p.normalization
    if p.HasField("normalize"):
        return L.VALID if p.normalize else L.BATCH_SIZE
    return default


def normalizer(mode: int, outer: int, inner: int, valid: int | None) -> np.float32:
    """Caffe's LossLayer::GetNormalizer, at least 1 (an all-ignored batch gives a zero loss)."""
    if mode == L.FULL:
        n = outer * inner
    elif mode == L.VALID:
        n = outer * inner if valid is None else valid
    elif mode == L.BATCH_SIZE:
        n = outer
    else:
        n = 1
    return np.float32(max(1.0, float(n)))


def ignore_label(lp: pb.LayerParameter) -> int | None:
    return int(lp.loss_param.ignore_label) if lp.loss_param.HasField("ignore_label") else None


def running_sum(terms: torch.Tensor) -> np.float32:
    """The terms added one after another into a float, as Caffe's CPU loops do (a pairwise sum
    differs by up to ~1e-4 relative at a million terms)."""
    flat = terms.detach().reshape(-1).float().cpu().numpy()
    return np.cumsum(flat, dtype=np.float32)[-1] if flat.size else np.float32(0.0)


def class_labels(layer: CaffeLayer, label: torch.Tensor, n_classes: int, ignore: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels as ints, which are not ignored). A label Caffe would read as an index (cast to
    int, as static_cast truncates) must lie in [0, n_classes): Caffe's release build reads
    memory out of range instead; here it is an error naming the layer."""
    labels = label.detach().to(torch.long)
    valid = torch.ones_like(labels, dtype=torch.bool) if ignore is None else labels != ignore
    if labels.numel():
        bad = valid & ((labels < 0) | (labels >= n_classes))
        if bool(bad.any()):
            raise layer.fail(f"label {int(labels[bad][0])} is out of range: expected 0..{n_classes - 1}"
                             + (f" or the ignore_label {ignore}" if ignore is not None else ""))
    return labels, valid


def needs_gradient(*inputs: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(x.requires_grad for x in inputs)


class _CaffeBackward(torch.autograd.Function):
    """A loss value whose bottom diffs were computed beside it; backward scales them by the top's
    diff, as Caffe's Backward_cpu scales by top[0]->cpu_diff()[0]."""

    @staticmethod
    def forward(ctx, value, n, *inputs_then_diffs):
        ctx.n = n
        ctx.save_for_backward(*inputs_then_diffs[n:])
        return value.clone()

    @staticmethod
    def backward(ctx, top_diff):
        diffs = [d * top_diff for d in ctx.saved_tensors]
        return (None, None, *diffs, *([None] * ctx.n))


def with_caffe_gradient(value: torch.Tensor, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """`value`, whose gradient with respect to each `input` is `diff` (both per unit top diff)."""
    pairs = [(x, d) for x, d in pairs if x.requires_grad]
    if not pairs or not torch.is_grad_enabled():
        return value
    return _CaffeBackward.apply(value, len(pairs), *[x for x, _ in pairs], *[d.detach() for _, d in pairs])


class _NoBackward(torch.autograd.Function):
    """The top of a layer for which Caffe implements no Backward (NOT_IMPLEMENTED): asking a
    gradient through it is an error naming the layer, never a silent zero."""

    @staticmethod
    def forward(ctx, message, value, *inputs):
        ctx.message = message
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError(ctx.message)


def without_backward(layer: CaffeLayer, value: torch.Tensor, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    if not needs_gradient(*inputs):
        return value
    message = (f"layer '{layer.name}' (type {layer.type}): Caffe implements no backward for this layer, so no "
               "gradient can pass through it; its top must not feed a loss (or set propagate_down: false)")
    return _NoBackward.apply(message, value, *inputs)


def scalar(value: np.float32, like: torch.Tensor) -> torch.Tensor:
    """A loss top: Caffe's shape-() blob, on the bottoms' device."""
    return torch.tensor(float(value), dtype=like.dtype if like.is_floating_point() else torch.float32,
                        device=like.device)


class SigmoidCrossEntropyLoss(CaffeLayer):
    """Caffe's overflow-safe form; normalised by the batch size unless loss_param says otherwise
    (what the golden OSLSM-fork Caffe does for a bare deploy layer). The gradient is
    (sigmoid(x) - t) / normaliser, which autograd of the same terms gives; its value is Caffe's
    running float32 sum (at OSLSM's 1e5-1e6 over 2.5e5 pixels a pairwise sum drifts ~1e-4)."""
    bottoms_range = (2, 2)

    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        self.normalization = normalization_mode(lp, default=L.BATCH_SIZE)
        self.ignore_label = ignore_label(lp)
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
            # the value is Caffe's; (loss - loss.detach()) is exactly 0 and carries the gradient
            loss = scalar(-running_sum(terms), x) + (loss - loss.detach())
        n_valid = None if valid is None or self.shapes_only else int(valid.sum())
        norm = normalizer(self.normalization, int(x.shape[0]), count(x.shape, 1), n_valid)
        return [loss / float(norm)]

"""A convolution's constant frame, computed once per channel instead of pixel by pixel.

A convolution with wide zero padding (OSLSM's conv1_1s pads the query by 121) runs the layers
after it on maps far larger than the image. Far from both the image and the map's outer border
every channel of those maps is one number: the zero input gives the first bias, and each later
layer maps constants to constants. A `Frame` records where a map may differ from its per-channel
constant: a rectangle around the image's reach and a band along each edge (where a layer's own
zero padding enters). A convolution then computes only those places from its input and fills the
rest with its constant (bias + the kernel's sum times the input constant). Values equal the plain
convolution's up to float rounding, gradients too (`_FramedConvolution`); the geometry is exact for
any input size, and a layer whose constant part is small runs the plain convolution.

Each axis is tracked on its own: an output is constant when its window lies, along both axes,
inside the map's interior and, along one of them, outside the image's reach.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

# Below this share of constant outputs a layer runs the plain convolution (slicing would cost more).
MIN_CONSTANT_SHARE = 0.1

Rect = tuple[int, int, int, int]  # rows [y0, y1), columns [x0, x1)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclasses.dataclass(frozen=True)
class AxisFrame:
    """One axis of a map of `size` positions: the image's reach [reach_lo, reach_hi) and the band
    widths at both ends that may differ from the constant."""
    size: int
    reach_lo: int
    reach_hi: int
    band_lo: int = 0
    band_hi: int = 0

    def after_window(self, out_size: int, kernel: int, stride: int, pad: int, pad_is_constant: bool) -> "AxisFrame":
        """The frame of a sliding window's output (convolution or pooling; windows clipped to the
        map, as Caffe's max pooling does, are the case `pad_is_constant=True`). Output o reads
        input [o*stride - pad, o*stride - pad + kernel)."""
        if self.reach_lo < self.reach_hi:
            lo = max(0, (self.reach_lo + pad - kernel) // stride + 1)
            hi = min(out_size, _ceil_div(self.reach_hi + pad, stride))
        else:
            lo = hi = 0
        # Windows that read a band, or padding that differs from the constant.
        low = 0 if (self.band_lo == 0 and pad_is_constant) else _ceil_div(self.band_lo + pad, stride)
        high = 0 if (self.band_hi == 0 and pad_is_constant) else \
            out_size - ((self.size - self.band_hi + pad - kernel) // stride + 1)
        clip = lambda v: min(out_size, max(0, v))  # noqa: E731
        return AxisFrame(out_size, lo, max(lo, hi), clip(low), clip(high))

    def interior(self) -> tuple[int, int, int, int]:
        """The interior [lo, hi) between the two bands, and the reach clipped to it: (lo, reach_lo,
        reach_hi, hi)."""
        lo, hi = self.band_lo, max(self.band_lo, self.size - self.band_hi)
        clip = lambda v: min(hi, max(lo, v))  # noqa: E731
        return lo, clip(self.reach_lo), max(clip(self.reach_lo), clip(self.reach_hi)), hi


@dataclasses.dataclass(frozen=True)
class Frame:
    """Where a (N, C, H, W) map may differ from `value` (per channel; None: zero everywhere outside)."""
    rows: AxisFrame
    cols: AxisFrame
    value: torch.Tensor | None

    @classmethod
    def of_image(cls, height: int, width: int) -> "Frame":
        """Any map seen as an image: all of it is reach; outside it (padding) is zero."""
        return cls(AxisFrame(height, 0, height), AxisFrame(width, 0, width), None)

    def partition(self) -> tuple[list[Rect], list[Rect]]:
        """Disjoint blocks that together cover the map: those that may differ from the constant
        (the four bands, the reach between them) and those that hold it."""
        H, W = self.rows.size, self.cols.size
        top, y0, y1, bottom = self.rows.interior()
        left, x0, x1, right = self.cols.interior()
        computed = [(0, top, 0, W), (bottom, H, 0, W), (top, bottom, 0, left), (top, bottom, right, W),
                    (y0, y1, x0, x1)]
        constant = [(top, y0, left, right), (y1, bottom, left, right), (y0, y1, left, x0), (y0, y1, x1, right)]
        nonempty = lambda rects: [r for r in rects if r[0] < r[1] and r[2] < r[3]]  # noqa: E731
        return nonempty(computed), nonempty(constant)

    def constant_share(self) -> float:
        return sum((y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in self.partition()[1]) / (self.rows.size * self.cols.size)

    def after_elementwise(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "Frame":
        """Through a per-element function that maps 0 to 0 where value is None (ReLU does)."""
        if self.value is None:
            return self
        return dataclasses.replace(self, value=fn(self.value.reshape(1, -1, 1, 1)).reshape(-1))

    def after_max_pool(self, out_hw: tuple[int, int], kernel: Sequence[int], stride: Sequence[int],
                       pad: Sequence[int] = (0, 0)) -> "Frame":
        """Max pooling whose windows are clipped to the map (Caffe's; torch's ceil mode): the max
        of a constant window is that constant."""
        return Frame(self.rows.after_window(out_hw[0], kernel[0], stride[0], pad[0], True),
                     self.cols.after_window(out_hw[1], kernel[1], stride[1], pad[1], True), self.value)


def framed_conv2d(x: torch.Tensor, frame: Frame | None, weight: torch.Tensor, bias: torch.Tensor | None,
                  stride: Sequence[int] = (1, 1), padding: Sequence[int] = (0, 0)) -> tuple[torch.Tensor, Frame]:
    """`F.conv2d(x, weight, bias, stride, padding)` (no dilation or groups) and its output's frame,
    computing from `x` only the outputs that may differ from the constant. `frame` None: any map."""
    frame = frame or Frame.of_image(*x.shape[2:])
    (kh, kw), (sh, sw), (ph, pw) = weight.shape[2:], stride, padding
    out_h, out_w = (x.shape[2] + 2 * ph - kh) // sh + 1, (x.shape[3] + 2 * pw - kw) // sw + 1
    pad_is_constant = frame.value is None
    out_frame = Frame(frame.rows.after_window(out_h, kh, sh, ph, pad_is_constant),
                      frame.cols.after_window(out_w, kw, sw, pw, pad_is_constant),
                      _constant_after_conv(frame.value, weight, bias))
    if out_h < 1 or out_w < 1 or out_frame.constant_share() < MIN_CONSTANT_SHARE:
        return F.conv2d(x, weight, bias, stride, padding), out_frame
    computed, constant = out_frame.partition()
    plan = _Plan((out_h, out_w), tuple(stride), tuple(padding), tuple(weight.shape[2:]), computed, constant)
    return _FramedConvolution.apply(x, weight, bias, out_frame.value, plan), out_frame


@dataclasses.dataclass(frozen=True)
class _Plan:
    out_hw: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    kernel: tuple[int, int]
    computed: list[Rect]
    constant: list[Rect]

    def input_block(self, x: torch.Tensor, rect: Rect) -> tuple[torch.Tensor, tuple[slice, slice], tuple[int, ...]]:
        """What the outputs `rect` read from `x`: the block (zero-padded where it leaves the map),
        where it lies in `x`, and the padding added (left, right, top, bottom)."""
        (y0, y1, x0, x1), (sh, sw), (ph, pw), (kh, kw) = rect, self.stride, self.padding, self.kernel
        rows = _input_span(y0, y1, sh, ph, kh, x.shape[2])
        cols = _input_span(x0, x1, sw, pw, kw, x.shape[3])
        where = (slice(rows[0], rows[1]), slice(cols[0], cols[1]))
        block = x[:, :, where[0], where[1]]
        added = (cols[2], cols[3], rows[2], rows[3])
        return (F.pad(block, added) if any(added) else block), where, added


class _FramedConvolution(torch.autograd.Function):
    """The output map built block by block; its gradient the same way: each computed block's
    convolution backward, and the constant's gradient as the sum over the blocks that hold it."""

    @staticmethod
    def forward(ctx, x, weight, bias, constant, plan: _Plan):
        out = torch.empty((x.shape[0], weight.shape[0], *plan.out_hw), dtype=x.dtype, device=x.device,
                          memory_format=_memory_format(weight))
        fill = constant.reshape(1, -1, 1, 1)
        for y0, y1, x0, x1 in plan.constant:
            out[:, :, y0:y1, x0:x1] = fill
        for rect in plan.computed:
            block = plan.input_block(x, rect)[0]
            y0, y1, x0, x1 = rect
            out[:, :, y0:y1, x0:x1] = F.conv2d(block, weight, bias, plan.stride)
        ctx.plan = plan
        ctx.save_for_backward(x, weight)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        plan = ctx.plan
        need_x, need_w, need_b, need_c = ctx.needs_input_grad[:4]
        gx = torch.zeros_like(x) if need_x else None
        gw = torch.zeros_like(weight) if need_w else None
        gb = weight.new_zeros(weight.shape[0]) if need_b else None
        for rect in plan.computed:
            block, where, (left, right, top, bottom) = plan.input_block(x, rect)
            y0, y1, x0, x1 = rect
            gi, gwi, gbi = torch.ops.aten.convolution_backward(
                grad[:, :, y0:y1, x0:x1], block, weight, [weight.shape[0]] if need_b else None, plan.stride,
                [0, 0], [1, 1], False, [0, 0], 1, [need_x, need_w, need_b])
            if need_x:
                gx[:, :, where[0], where[1]] += gi[:, :, top:gi.shape[2] - bottom, left:gi.shape[3] - right]
            if need_w:
                gw += gwi
            if need_b:
                gb += gbi
        gc = None
        if need_c:
            gc = grad.new_zeros(weight.shape[0])
            for y0, y1, x0, x1 in plan.constant:
                gc += grad[:, :, y0:y1, x0:x1].sum(dim=(0, 2, 3))
        return gx, gw, gb, gc, None


def _input_span(o0: int, o1: int, stride: int, pad: int, kernel: int, size: int) -> tuple[int, int, int, int]:
    """Input [start, stop) that outputs [o0, o1) read, clipped to the map, and the zeros to add
    before and after it."""
    start, stop = o0 * stride - pad, (o1 - 1) * stride - pad + kernel
    return max(0, start), min(size, stop), max(0, -start), max(0, stop - size)


def _constant_after_conv(value: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The output constant: bias + sum over the kernel of weight x the input constant."""
    base = bias if bias is not None else weight.new_zeros(weight.shape[0])
    return base if value is None else base + weight.sum(dim=(2, 3)) @ value


def _memory_format(weight: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if weight.is_contiguous(memory_format=torch.channels_last) \
        and not weight.is_contiguous() else torch.contiguous_format

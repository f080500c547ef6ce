"""The query branch's constant frame, computed once per channel instead of pixel by pixel.

conv1_1s pads the query by 121 pixels of zeros, so conv1-conv4 run on maps far larger than the
image. Far from both the image and the map's outer border every channel of those maps is one
number: the zero input gives conv1_1's bias, and each later layer maps constants to constants.
A `Frame` records where a map may differ from its per-channel constant: a rectangle around the
image's reach and a band along each edge (where a layer's own zero padding enters). A convolution
then computes only those places from the input, and fills the rest with its constant
(bias + the kernel's sum times the input constant). Values equal the plain convolution's up to
float rounding; the geometry is exact for any input size, and a layer whose constant part is
small runs the plain convolution.

Each axis is tracked on its own: an output is constant when its window lies, along both axes,
inside the map's interior and, along one of them, outside the image's reach.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

# Below this share of constant outputs a layer runs the plain convolution (slicing would cost more).
MIN_CONSTANT_SHARE = 0.1


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
        map, as Caffe's pooling does, are the case `pad=0, pad_is_constant=True`). Output o reads
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


@dataclasses.dataclass(frozen=True)
class Frame:
    """Where a (N, C, H, W) map may differ from `value` (per channel; None: zero everywhere outside)."""
    rows: AxisFrame
    cols: AxisFrame
    value: torch.Tensor | None

    @classmethod
    def of_image(cls, height: int, width: int) -> "Frame":
        """An input image: all of it is reach; outside it (padding) is zero."""
        return cls(AxisFrame(height, 0, height), AxisFrame(width, 0, width), None)

    def constant_share(self) -> float:
        """Share of positions that hold the constant (a lower bound: reach and bands may overlap)."""
        r, c = self.rows, self.cols
        reach = (r.reach_hi - r.reach_lo) * (c.reach_hi - c.reach_lo)
        inner = max(0, r.size - r.band_lo - r.band_hi) * max(0, c.size - c.band_lo - c.band_hi)
        return max(0, inner - reach) / (r.size * c.size)

    def regions(self) -> list[tuple[int, int, int, int]]:
        """(y0, y1, x0, x1) blocks covering every position that may differ from the constant: the
        four bands and the reach (which may overlap them)."""
        r, c = self.rows, self.cols
        top, bottom = r.band_lo, r.size - r.band_hi
        blocks = [(0, top, 0, c.size), (bottom, r.size, 0, c.size), (top, bottom, 0, c.band_lo),
                  (top, bottom, c.size - c.band_hi, c.size), (r.reach_lo, r.reach_hi, c.reach_lo, c.reach_hi)]
        return [b for b in blocks if b[0] < b[1] and b[2] < b[3]]

    def around_reach(self) -> list[tuple[int, int, int, int]]:
        """(y0, y1, x0, x1) blocks covering every position outside the reach."""
        r, c = self.rows, self.cols
        blocks = [(0, r.reach_lo, 0, c.size), (r.reach_hi, r.size, 0, c.size),
                  (r.reach_lo, r.reach_hi, 0, c.reach_lo), (r.reach_lo, r.reach_hi, c.reach_hi, c.size)]
        return [b for b in blocks if b[0] < b[1] and b[2] < b[3]]

    def after_relu(self) -> "Frame":
        return dataclasses.replace(self, value=None if self.value is None else F.relu(self.value))

    def after_max_pool(self, out_hw: tuple[int, int], kernel: int, stride: int) -> "Frame":
        """Unpadded max pooling with windows clipped to the map (Caffe's ceil rounding): the max of
        a constant window is that constant."""
        return Frame(self.rows.after_window(out_hw[0], kernel, stride, 0, True),
                     self.cols.after_window(out_hw[1], kernel, stride, 0, True), self.value)


def framed_conv2d(x: torch.Tensor, frame: Frame, conv: torch.nn.Conv2d) -> tuple[torch.Tensor, Frame]:
    """`conv(x)` (a 2-D convolution with zero padding) and its output's frame, computing from `x`
    only the outputs that may differ from the constant."""
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    if conv.dilation != (1, 1) or conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(ph, str):
        raise ValueError("framed_conv2d handles plain convolutions (no dilation or groups, zero padding)")
    height, width = x.shape[2:]
    out_h, out_w = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
    pad_is_constant = frame.value is None
    out_frame = Frame(frame.rows.after_window(out_h, kh, sh, ph, pad_is_constant),
                      frame.cols.after_window(out_w, kw, sw, pw, pad_is_constant),
                      _constant_after_conv(frame.value, conv))
    if out_frame.constant_share() < MIN_CONSTANT_SHARE:
        return conv(x), out_frame
    out = torch.empty((x.shape[0], conv.out_channels, out_h, out_w), dtype=x.dtype, device=x.device,
                      memory_format=_memory_format(conv.weight))
    constant = out_frame.value.reshape(1, -1, 1, 1)
    for y0, y1, x0, x1 in out_frame.around_reach():
        out[:, :, y0:y1, x0:x1] = constant
    for y0, y1, x0, x1 in out_frame.regions():
        rows = _input_span(y0, y1, sh, ph, kh, height)
        cols = _input_span(x0, x1, sw, pw, kw, width)
        block = x[:, :, rows[0]:rows[1], cols[0]:cols[1]]
        if rows[2] or rows[3] or cols[2] or cols[3]:
            block = F.pad(block, (cols[2], cols[3], rows[2], rows[3]))
        out[:, :, y0:y1, x0:x1] = F.conv2d(block, conv.weight, conv.bias, (sh, sw))
    return out, out_frame


def _input_span(o0: int, o1: int, stride: int, pad: int, kernel: int, size: int) -> tuple[int, int, int, int]:
    """Input [start, stop) that outputs [o0, o1) read, clipped to the map, and the zeros to add
    before and after it."""
    start, stop = o0 * stride - pad, (o1 - 1) * stride - pad + kernel
    return max(0, start), min(size, stop), max(0, -start), max(0, stop - size)


def _constant_after_conv(value: torch.Tensor | None, conv: torch.nn.Conv2d) -> torch.Tensor:
    """The output constant: bias + sum over the kernel of weight x the input constant."""
    bias = conv.bias if conv.bias is not None else conv.weight.new_zeros(conv.out_channels)
    if value is None:
        return bias.detach().clone()
    return bias + conv.weight.sum(dim=(2, 3)) @ value


def _memory_format(weight: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if weight.is_contiguous(memory_format=torch.channels_last) \
        and not weight.is_contiguous() else torch.contiguous_format

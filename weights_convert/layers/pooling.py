"""Pooling with Caffe's output size (ceil, then drop a window that starts in the padding) and
Caffe's average divisor (window clipped to [-pad, size + pad), not to the image)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from weights_convert.formats.schema import pb
from weights_convert.layers.base import CaffeLayer, traced

P = pb.PoolingParameter


def pooled_sizes(hw: tuple[int, int], kernel: tuple[int, int], pad: tuple[int, int], stride: tuple[int, int],
                 ceil: bool = True) -> tuple[int, int]:
    """Caffe's PoolingLayer::Reshape output (height, width): ceil (or floor) rounding, then, when
    the layer has any padding, each axis drops a last window that would start in its padding.
    The rule looks at both pads together: pad_w alone can drop a row."""
    out = []
    for size, k, p, s in zip(hw, kernel, pad, stride):
        span = size + 2 * p - k  # integer ceil/floor division: exact, and valid on traced sizes
        out.append((-(-span // s) if ceil else span // s) + 1)
    if any(pad):
        out = [o - 1 if (o - 1) * s >= size + p else o for o, s, size, p in zip(out, stride, hw, pad)]
    return out[0], out[1]


def _window_sizes(out: int, size: int, kernel: int, pad: int, stride: int) -> torch.Tensor:
    """Caffe AVE divisor along one axis: window end clipped to size + pad, start not clipped."""
    starts = torch.arange(out, dtype=torch.int64) * stride - pad
    ends = torch.clamp(starts + kernel, max=size + pad)
    return (ends - starts).to(torch.float32)


def _max_pool(x: torch.Tensor, kernel, stride, pad, out, ceil: bool) -> torch.Tensor:
    """Caffe's max over windows clipped to the map: torch's own padded pooling where it gives
    Caffe's output size (it saves copying the map into -inf padding), else that copy."""
    hw = tuple(x.shape[2:])
    # Without padding and with a stride no larger than the kernel, torch's size is Caffe's (no window
    # can start past the map): decided without comparing sizes, so traced sizes stay symbols.
    same = not any(pad) and all(s <= k for s, k in zip(stride, kernel))
    if same and ceil and traced(*hw):
        # torch's ceil_mode settles its last window by a branch on the size (a traced size would be
        # fixed by it): pad stride - 1 at the end instead, the floor count then being Caffe's ceil one
        padded = F.pad(x, (0, stride[1] - 1, 0, stride[0] - 1), value=float("-inf"))
        return F.max_pool2d(padded, kernel, stride)
    if same or (all(2 * p <= k for p, k in zip(pad, kernel))
                and _torch_pooled_sizes(hw, kernel, pad, stride, ceil) == out):
        return F.max_pool2d(x, kernel, stride, pad, ceil_mode=ceil)
    padded = F.pad(x, _padding(out, stride, kernel, hw, pad), value=float("-inf"))
    return F.max_pool2d(padded, kernel, stride)[:, :, :out[0], :out[1]]


def _padding(out, stride, kernel, hw, pad) -> tuple:
    """F.pad's spec so that every one of the `out` windows lies inside; the extra right padding
    only ever covers positions Caffe clips away (max: -inf; sums: 0)."""
    right = [max(0, (o - 1) * st + k - s - p) for o, st, k, s, p in zip(out, stride, kernel, hw, pad)]
    return (pad[1], right[1], pad[0], right[0])


def _torch_pooled_sizes(hw, kernel, pad, stride, ceil: bool) -> tuple[int, int]:
    """torch's pooled size: Caffe's, except that with ceil rounding torch drops a last window
    starting past the map even without padding."""
    out = []
    for size, k, p, s in zip(hw, kernel, pad, stride):
        n = (math.ceil if ceil else math.floor)((size + 2 * p - k) / s) + 1
        out.append(n - 1 if ceil and (n - 1) * s >= size + p else n)
    return out[0], out[1]


class Pooling(CaffeLayer):
    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        p = lp.pooling_param
        self.method = p.pool
        self.global_pooling = p.global_pooling
        self.ceil = p.round_mode == P.CEIL
        if len(self.tops) > 1:
            raise self.fail("a second top (the max-pooling mask) is not supported")
        # Caffe's LayerSetUp checks: each of kernel, pad and stride is given as one value or
        # as both its _h and _w halves.
        if self.global_pooling:
            if p.HasField("kernel_size") or p.HasField("kernel_h") or p.HasField("kernel_w"):
                raise self.fail("with global_pooling the kernel size may not be given")
        elif p.HasField("kernel_size") == (p.HasField("kernel_h") or p.HasField("kernel_w")):
            raise self.fail("give either kernel_size or both kernel_h and kernel_w")
        for field in ("kernel", "pad", "stride"):
            h, w = p.HasField(f"{field}_h"), p.HasField(f"{field}_w")
            if h != w:
                raise self.fail(f"give both {field}_h and {field}_w, or neither")
            single = "kernel_size" if field == "kernel" else field
            if h and p.HasField(single):
                raise self.fail(f"give either {single} or {field}_h/{field}_w, not both")
        self.kernel = (p.kernel_h, p.kernel_w) if p.HasField("kernel_h") else (p.kernel_size,) * 2
        self.pad = (p.pad_h, p.pad_w) if p.HasField("pad_h") else (p.pad,) * 2
        self.stride = (p.stride_h, p.stride_w) if p.HasField("stride_h") else (p.stride,) * 2
        if self.global_pooling and (any(self.pad) or self.stride != (1, 1)):
            raise self.fail("global pooling needs pad 0 and stride 1")
        if not self.global_pooling:
            if min(self.kernel) < 1 or min(self.stride) < 1:
                raise self.fail(f"kernel {self.kernel} and stride {self.stride} must be >= 1")
            if self.pad[0] >= self.kernel[0] or self.pad[1] >= self.kernel[1]:
                raise self.fail(f"pad {self.pad} must be smaller than the kernel {self.kernel}")
        if self.method not in (P.MAX, P.AVE, P.STOCHASTIC):
            raise self.fail(f"unknown pooling method {self.method}")

    def forward_framed(self, bottoms, frames):
        """The max of a window of constants (Caffe clips windows to the map) is that constant."""
        tops = self(bottoms)
        # (A window past the map, possible only with a stride over the kernel, gives -FLT_MAX.)
        if frames[0] is None or self.method != P.MAX or self.global_pooling or \
                any(s > k for s, k in zip(self.stride, self.kernel)):
            return tops, [None]
        return tops, [frames[0].after_max_pool(tuple(tops[0].shape[2:]), self.kernel, self.stride, self.pad)]

    def forward(self, bottoms):
        x = bottoms[0]
        if x.dim() != 4:
            raise self.fail(f"needs a 4-D bottom, got shape {tuple(x.shape)}")
        H, W = x.shape[2], x.shape[3]
        if self.global_pooling:
            kernel, pad, stride = (H, W), (0, 0), (1, 1)
        else:
            kernel, pad, stride = self.kernel, self.pad, self.stride
        out = pooled_sizes((H, W), kernel, pad, stride, self.ceil)
        if not traced(H, W) and min(out) < 1:
            raise self.fail(f"input {H}x{W} is smaller than the kernel {kernel}")
        if self.method == P.MAX:
            y = _max_pool(x, kernel, stride, pad, out, self.ceil)
            # Caffe starts each max at -FLT_MAX: -inf inputs and empty windows (stride > kernel
            # with ceil rounding) give -FLT_MAX
            return [torch.clamp(y, min=-torch.finfo(torch.float32).max)]
        padded = F.pad(x, _padding(out, stride, kernel, (H, W), pad), value=0.0)
        if self.method == P.AVE:
            sums = F.avg_pool2d(padded, kernel, stride, divisor_override=1)[:, :, :out[0], :out[1]]
            rows = _window_sizes(out[0], H, kernel[0], pad[0], stride[0]).to(x.device)
            cols = _window_sizes(out[1], W, kernel[1], pad[1], stride[1]).to(x.device)
            return [sums / (rows[:, None] * cols[None, :])]
        if self.phase == "TRAIN":
            raise self.fail("stochastic pooling samples at train time; only its TEST form is supported")
        if any(pad):
            raise self.fail("Caffe's stochastic pooling ignores pad; give pad 0")
        # Caffe's TEST-time stochastic pooling: sum(x^2) / (FLT_MIN + sum(x)) over the window.
        sq = F.avg_pool2d(padded * padded, kernel, stride, divisor_override=1)[:, :, :out[0], :out[1]]
        s = F.avg_pool2d(padded, kernel, stride, divisor_override=1)[:, :, :out[0], :out[1]]
        return [sq / (s + torch.finfo(torch.float32).tiny)]

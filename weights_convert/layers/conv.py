"""Convolution and Deconvolution (Caffe's im2col + gemm maths, computed by torch's convolutions)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from weights_convert.formats.schema import pb
from weights_convert.layers.base import CaffeLayer, Shape, traced
from weights_convert.layers.frame import framed_conv2d

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_DECONV = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _per_axis(layer: CaffeLayer, field: str, values, h, w, has_hw: bool, n: int, default: int) -> list[int]:
    """Caffe's rule for repeated kernel/pad/stride/dilation: the _h/_w pair (2-D only), or one
    value for every spatial axis, or one per axis."""
    if has_hw:
        if n != 2:
            raise layer.fail(f"{field}_h/{field}_w are for 2-D convolutions only ({n} spatial axes)")
        if len(values):
            raise layer.fail(f"give either {field} or {field}_h/{field}_w, not both")
        return [int(h), int(w)]
    if not len(values):
        return [default] * n
    if len(values) == 1:
        return [int(values[0])] * n
    if len(values) != n:
        raise layer.fail(f"{field} has {len(values)} values; expected 1 or {n} (one per spatial axis)")
    return [int(v) for v in values]


class Convolution(CaffeLayer):
    transposed = False

    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        p = lp.convolution_param
        self.p = p
        if not p.HasField("num_output") or p.num_output == 0:
            raise self.fail("convolution_param.num_output must be given and > 0")
        self.num_output = int(p.num_output)
        self.group = int(p.group)
        if self.group < 1 or self.num_output % self.group:
            raise self.fail(f"num_output {self.num_output} is not a multiple of group {self.group}")
        self.bias_term = bool(p.bias_term)

    def _geometry(self, x: torch.Tensor) -> None:
        p = self.p
        self.axis = self.canonical_axis(p.axis, x.dim())
        n = x.dim() - self.axis - 1
        if n not in _CONV:
            raise self.fail(f"{n} spatial axes; supported are 1, 2 or 3")
        if self.axis != 1:
            raise self.fail(f"convolution axis {p.axis} is not supported (only the channel axis 1)")
        if not (p.HasField("kernel_h") or p.HasField("kernel_w")) and not len(p.kernel_size):
            raise self.fail("no kernel_size (or kernel_h/kernel_w) given")
        self.kernel = _per_axis(self, "kernel", p.kernel_size, p.kernel_h, p.kernel_w,
                                p.HasField("kernel_h") or p.HasField("kernel_w"), n, 1)
        self.pad = _per_axis(self, "pad", p.pad, p.pad_h, p.pad_w,
                             p.HasField("pad_h") or p.HasField("pad_w"), n, 0)
        self.stride = _per_axis(self, "stride", p.stride, p.stride_h, p.stride_w,
                                p.HasField("stride_h") or p.HasField("stride_w"), n, 1)
        self.dilation = _per_axis(self, "dilation", p.dilation, 0, 0, False, n, 1)
        if min(self.kernel) < 1 or min(self.stride) < 1 or min(self.dilation) < 1:
            raise self.fail(f"kernel {self.kernel}, stride {self.stride} and dilation {self.dilation} must be >= 1")
        self.channels = int(x.shape[1])
        if self.channels % self.group:
            raise self.fail(f"input channels {self.channels} is not a multiple of group {self.group}")

    def param_shapes(self, bottoms) -> list[Shape]:
        self._geometry(bottoms[0])
        if self.transposed:  # Caffe stores deconvolution weights as (in, out/group, k...)
            weight = (self.channels, self.num_output // self.group, *self.kernel)
        else:
            weight = (self.num_output, self.channels // self.group, *self.kernel)
        return [weight, (self.num_output,)] if self.bias_term else [weight]

    def forward(self, bottoms):
        x = self._checked_bottom(bottoms)
        bias = self.blob(1) if self.bias_term else None
        n = len(self.kernel)
        if self.transposed:
            y = _DECONV[n](x, self.blob(0), bias, stride=self.stride, padding=self.pad,
                           groups=self.group, dilation=self.dilation)
        else:
            y = _CONV[n](x, self.blob(0), bias, stride=self.stride, padding=self.pad,
                         dilation=self.dilation, groups=self.group)
        return [self._checked_top(x, y)]

    def forward_framed(self, bottoms, frames):
        """A 2-D convolution computes only where its output may differ from its constant."""
        if self.transposed or len(self.kernel) != 2 or self.group != 1 or self.dilation != [1, 1]:
            return super().forward_framed(bottoms, frames)
        x = self._checked_bottom(bottoms)
        y, frame = framed_conv2d(x, frames[0], self.blob(0), self.blob(1) if self.bias_term else None,
                                 self.stride, self.pad)
        return [self._checked_top(x, y)], [frame]

    def _checked_bottom(self, bottoms) -> torch.Tensor:
        x = bottoms[0]
        if x.dim() - 2 != len(self.kernel) or x.shape[1] != self.channels:
            raise self.fail(f"bottom shape {tuple(x.shape)} does not fit the layer set up for "
                            f"{self.channels} channels and {len(self.kernel)} spatial axes")
        return x

    def _checked_top(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not traced(*y.shape[2:]) and any(d < 1 for d in y.shape[2:]):
            raise self.fail(f"output {tuple(y.shape)} is empty for input {tuple(x.shape)}")
        return y


class Deconvolution(Convolution):
    """Output = stride*(in-1) + dilation*(k-1) + 1 - 2*pad: exactly torch's transposed convolution
    without output_padding; the weight layout (in, out/group, k...) is torch's too."""
    transposed = True

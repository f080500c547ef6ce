"""Scale and Bias: a factor / offset broadcast over bottom[0] from `axis`, taken from a learned
blob (shape = bottom[0].shape[axis : axis + num_axes]) or from a second bottom (its whole shape)."""
from __future__ import annotations

import torch

from weights_convert.formats.schema import pb
from weights_convert.layers.base import CaffeLayer, Shape


def broadcast_shape(layer: CaffeLayer, x: torch.Tensor, factor_shape: Shape, axis: int) -> Shape:
    """The view that lines `factor_shape` up with x's axes [axis, axis + len(factor_shape))."""
    n = len(factor_shape)
    if tuple(x.shape[axis:axis + n]) != tuple(factor_shape):
        raise layer.fail(f"shape {tuple(factor_shape)} does not match bottom {tuple(x.shape)} "
                         f"at axes {axis}..{axis + n - 1}")
    return (1,) * axis + tuple(factor_shape) + (1,) * (x.dim() - axis - n)


class _Broadcast(CaffeLayer):
    bottoms_range = (1, 2)

    def _setup_axes(self, axis: int, num_axes: int) -> None:
        self.axis_param, self.num_axes = axis, num_axes
        if num_axes < -1:
            raise self.fail(f"num_axes {num_axes} must be >= -1")

    def _axis(self, x: torch.Tensor, factor_ndim: int | None) -> int:
        # A scalar factor (0 axes) ignores `axis`, as in Caffe.
        if factor_ndim == 0:
            return 0
        return self.canonical_axis(self.axis_param, x.dim()) if x.dim() else 0

    def _learned_shape(self, x: torch.Tensor) -> Shape:
        axis = self._axis(x, None)
        end = x.dim() if self.num_axes == -1 else axis + self.num_axes
        if end > x.dim():
            raise self.fail(f"axis {axis} + num_axes {self.num_axes} exceeds the bottom's {x.dim()} axes")
        return tuple(int(d) for d in x.shape[axis:end])

    def _factor(self, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        axis = self._axis(x, factor.dim())
        return factor.reshape(broadcast_shape(self, x, tuple(factor.shape), axis))


class Scale(_Broadcast):
    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        p = lp.scale_param
        self._setup_axes(int(p.axis), int(p.num_axes))
        self.bias_term = bool(p.bias_term)

    def param_shapes(self, bottoms) -> list[Shape]:
        if len(bottoms) == 2:  # the factor is bottom[1]; a bias (if any) has its shape
            shape = tuple(int(d) for d in bottoms[1].shape)
            self._factor(bottoms[0], bottoms[1])  # shape check now, like Caffe's Reshape
            return [shape] if self.bias_term else []
        shape = self._learned_shape(bottoms[0])
        return [shape, shape] if self.bias_term else [shape]

    def forward(self, bottoms):
        x = bottoms[0]
        two = len(bottoms) == 2
        factor = bottoms[1] if two else self.blob(0)
        y = x * self._factor(x, factor)
        if self.bias_term:
            y = y + self._factor(x, self.blob(0 if two else 1))
        return [y]


class Bias(_Broadcast):
    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        p = lp.bias_param
        self._setup_axes(int(p.axis), int(p.num_axes))

    def param_shapes(self, bottoms) -> list[Shape]:
        if len(bottoms) == 2:
            self._factor(bottoms[0], bottoms[1])
            return []
        return [self._learned_shape(bottoms[0])]

    def forward(self, bottoms):
        x = bottoms[0]
        offset = bottoms[1] if len(bottoms) == 2 else self.blob(0)
        return [x + self._factor(x, offset)]

"""InnerProduct: flatten from `axis`, multiply by the (N, K) weight (or (K, N) with transpose)."""
from __future__ import annotations

import torch

from weights_convert.formats.schema import pb
from weights_convert.layers.base import CaffeLayer, Shape, count


class InnerProduct(CaffeLayer):
    def __init__(self, lp: pb.LayerParameter):
        super().__init__(lp)
        p = lp.inner_product_param
        if not p.HasField("num_output") or p.num_output == 0:
            raise self.fail("inner_product_param.num_output must be given and > 0")
        self.num_output = int(p.num_output)
        self.bias_term = bool(p.bias_term)
        self.transpose = bool(p.transpose)
        self.axis_param = int(p.axis)

    def setup(self, bottoms) -> None:
        x = bottoms[0]
        self.axis = self.canonical_axis(self.axis_param, x.dim())
        self.k = count(x.shape[self.axis:])  # inputs per row, fixed from here on (as Caffe's K_)

    def param_shapes(self, bottoms) -> list[Shape]:
        weight = (self.k, self.num_output) if self.transpose else (self.num_output, self.k)
        return [weight, (self.num_output,)] if self.bias_term else [weight]

    def forward(self, bottoms):
        x = bottoms[0]
        lead = tuple(x.shape[:self.axis])
        k = count(x.shape[self.axis:])
        if k != self.k:
            raise self.fail(f"bottom shape {tuple(x.shape)} gives {k} inputs per row from axis {self.axis}; "
                            f"the layer was set up for {self.k}")
        flat = x.reshape(count(lead), k)
        w = self.blob(0)
        w = w if self.transpose else w.t()
        y = torch.addmm(self.blob(1), flat, w) if self.bias_term else flat @ w
        return [y.reshape(*lead, self.num_output)]

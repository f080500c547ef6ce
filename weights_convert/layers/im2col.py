"""A convolution computed as Caffe computes every convolution: im2col, then one matrix product.
For a large kernel on a small map (OSLSM's fc6s, a 7x7 convolution over pool5) this is 0.85x the
time of torch's direct convolution on a 2-core AMD EPYC (bench/RESULTS.md, "Query forward").
The training graph keeps torch's convolution: there the changed order of sums moved two
data-parallel ranks past their 1e-6 agreement with one process (tests/weights_convert/train/test_data_parallel.py)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def conv2d_im2col(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: Sequence[int] = (1, 1),
                  padding: Sequence[int] = (0, 0), dilation: Sequence[int] = (1, 1)) -> torch.Tensor:
    """`F.conv2d` of one image (1, C, H, W), as weight (O, C*kh*kw) x im2col(x) (C*kh*kw, positions)."""
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"conv2d_im2col takes one image (1, C, H, W); got {tuple(x.shape)}")
    kh, kw = weight.shape[2:]
    out_h = (x.shape[2] + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (x.shape[3] + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    columns = F.unfold(x, (kh, kw), dilation=tuple(dilation), padding=tuple(padding), stride=tuple(stride))[0]
    if weight.is_contiguous() or not weight.is_contiguous(memory_format=torch.channels_last):
        flat = weight.reshape(weight.shape[0], -1)
    else:  # weights in (O, kh, kw, C) order: flatten them as stored, reorder the small columns instead
        flat = weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)
        columns = columns.reshape(weight.shape[1], kh * kw, -1).transpose(0, 1).reshape(flat.shape[1], -1)
    y = flat @ columns if bias is None else torch.addmm(bias[:, None], flat, columns)
    return y.reshape(1, weight.shape[0], out_h, out_w)

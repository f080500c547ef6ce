"""Where a cell of the base net's fc7 sits in its input, and labels and scores between the two
grids (the first author on upstream issue lzzcd001/OSLSM #11: each fc7 feature describes a 32x32
patch; a support patch is positive when most of its pixels are; bilinear down-sampling of the
mask "should be OK" too).

FCN-32s's geometry (weights_convert/fcn/spec.py) centres cell i on pixel edge coordinate
32 i + 12.5, so its 32x32 patch holds pixel rows 32 i - 4 .. 32 i + 27 (clipped to the image)."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from reproduce.errors import ReproduceError
from weights_convert.fcn.spec import CELL_CENTRE, CROP_OFFSET, STRIDE, UPSCORE_KERNEL
from weights_convert.fcn.surgery import bilinear_kernel

RULES = ("majority", "bilinear")
# cell 0's patch starts at edge coordinate 12.5 - 16 = -3.5: its first pixel (centre p + 0.5) is -4
_FIRST = math.ceil(CELL_CENTRE - STRIDE / 2 - 0.5)


def _window_sums(values: np.ndarray, grid_hw: tuple[int, int]) -> np.ndarray:
    """Sum of `values` over each cell's 32x32 patch (clipped to the image)."""
    integral = np.zeros((values.shape[0] + 1, values.shape[1] + 1), np.float64)
    integral[1:, 1:] = values.astype(np.float64).cumsum(0).cumsum(1)

    def edges(n_cells: int, size: int):
        first = _FIRST + STRIDE * np.arange(n_cells)
        return np.clip(first, 0, size), np.clip(first + STRIDE, 0, size)

    (r0, r1), (c0, c1) = edges(grid_hw[0], values.shape[0]), edges(grid_hw[1], values.shape[1])
    return (integral[r1][:, c1] - integral[r0][:, c1] - integral[r1][:, c0] + integral[r0][:, c0])


def patch_labels(foreground: np.ndarray, ignored: np.ndarray, grid_hw: tuple[int, int],
                 rule: str = "majority") -> tuple[np.ndarray, np.ndarray]:
    """(labels in {0, 1}, usable) per fc7 cell of a support. `majority`: positive when more than
    half of the patch's counted pixels (ignored ones left out) are foreground; `bilinear`: the mask
    bilinearly sampled at the cell's centre over counted pixels, thresholded at 0.5. A cell with no
    counted pixel (patch or centre off the image, or all ignored) is not usable."""
    if rule not in RULES:
        raise ReproduceError(f"unknown patch-label rule {rule!r}; expected one of {', '.join(RULES)}")
    counted = ~np.asarray(ignored, bool)
    positive = np.asarray(foreground, bool) & counted
    if rule == "majority":
        pos, total = _window_sums(positive, grid_hw), _window_sums(counted, grid_hw)
        return (2 * pos > total).astype(np.uint8), total > 0
    pos, total = _bilinear_at_centres(positive, grid_hw), _bilinear_at_centres(counted, grid_hw)
    usable = total > 1e-6
    return (np.where(usable, pos / np.maximum(total, 1e-12), 0) > 0.5).astype(np.uint8), usable


def _bilinear_at_centres(values: np.ndarray, grid_hw: tuple[int, int]) -> np.ndarray:
    """`values` bilinearly interpolated at each cell's centre (pixel index 32 i + 12); 0 off the image."""
    def axis(n_cells: int, size: int):
        pos = STRIDE * np.arange(n_cells) + CELL_CENTRE - 0.5
        lo = np.floor(pos).astype(int)
        frac = pos - lo
        weights = np.zeros((n_cells, size))
        for offset, w in ((0, 1 - frac), (1, frac)):
            idx = lo + offset
            inside = (idx >= 0) & (idx < size)
            weights[np.arange(n_cells)[inside], idx[inside]] += w[inside]
        return weights

    rows, cols = axis(grid_hw[0], values.shape[0]), axis(grid_hw[1], values.shape[1])
    return rows @ values.astype(np.float64) @ cols.T


def cells_to_grid(scores: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Cell scores (h', w') brought to the input's grid as FCN brings its scores (the fixed 64x64
    bilinear deconvolution of stride 32, cropped at 19), divided by the same upsampling of ones so
    that a constant stays that constant up to the borders (FCN's own upscore fades there): float32."""
    kernel = torch.from_numpy(bilinear_kernel(UPSCORE_KERNEL))[None, None].double()
    grid = torch.from_numpy(np.asarray(scores, np.float64))[None, None]
    h, w = out_hw

    def up(x):
        out = F.conv_transpose2d(x, kernel, stride=STRIDE)[0, 0, CROP_OFFSET:CROP_OFFSET + h, CROP_OFFSET:CROP_OFFSET + w]
        if out.shape != (h, w):
            raise ReproduceError(f"a {tuple(scores.shape)} cell grid does not cover a {h}x{w} image")
        return out

    return (up(grid) / up(torch.ones_like(grid))).numpy().astype(np.float32)

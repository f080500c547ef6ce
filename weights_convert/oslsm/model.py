"""OSLSM (Shaban et al., BMVC 2017) as an idiomatic PyTorch module that computes what the
authors' Caffe deploy nets compute.

    first_input = first_img * first_label                        (Scale, axis 0)
    conditioning VGG-16 -> fc6f, fc7f (ReLU) -> fc8f (E)         (one vector per shot)
    w, b = hashing(fc8f)                                         (rw1s, rb1s)
    fc7s = segmentation VGG-16 (conv1_1 pad 121) -> fc6s 7x7, fc7s 1x1 (ReLU)
    pred[i] = w[i] . fc7s + b[i]                                 (MatMult + Bias)
    pre_score = crop(deconv64/32(pred), offset 40)               (per shot)
    pre_score2 = max over shots; score = sigmoid(pre_score2)

The architecture only; building it from weights files is in loading.py.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from weights_convert.layers.frame import Frame, framed_conv2d
from weights_convert.layers.im2col import conv2d_im2col
from weights_convert.oslsm.hashing import WeightHashing
from weights_convert.oslsm.layout import (CONDITIONING_INPUT_HW, CROP_OFFSET, FC6_KERNEL, QUERY_PAD,
                                          UPSAMPLE_KERNEL, UPSAMPLE_STRIDE, VGG_BLOCKS, OSLSMWidths, conv_layer_shapes)
from weights_convert.oslsm.upsample import HalfOverlapDeconv

Taps = dict  # Caffe blob name -> tensor, filled when asked for


class VGGTrunk(nn.Module):
    """VGG-16's 13 convolutions (3x3, ReLU) and 5 max pools (2/2, Caffe's ceil rounding).
    With `skip_constant_frame`, each convolution computes only where its output may differ from
    one value per channel (layers/frame.py: the query branch's padding of 121)."""

    def __init__(self, widths: OSLSMWidths, first_pad: int = 1, skip_constant_frame: bool = False):
        super().__init__()
        self.skip_constant_frame = skip_constant_frame
        for name, (out_ch, in_ch) in conv_layer_shapes(widths).items():
            pad = first_pad if name == "conv1_1" else 1
            self.add_module(name, nn.Conv2d(in_ch, out_ch, 3, padding=pad))

    def forward(self, x: torch.Tensor, taps: Taps | None = None, suffix: str = "") -> torch.Tensor:
        frame = Frame.of_image(*x.shape[2:]) if self.skip_constant_frame else None
        for block, n in VGG_BLOCKS:
            for i in range(1, n + 1):
                name = f"conv{block}_{i}"
                # In place: a fresh activation of this size is a fresh mapping to fault in.
                if frame is None:
                    x = F.relu(getattr(self, name)(x), inplace=True)
                else:
                    conv = getattr(self, name)
                    x, frame = framed_conv2d(x, frame, conv.weight, conv.bias, conv.stride, conv.padding)
                    x, frame = F.relu(x, inplace=True), frame.after_elementwise(F.relu)
                _tap(taps, name + suffix, x)
            # Caffe rounds pooled sizes up (no padding here, so ceil_mode matches it exactly).
            x = F.max_pool2d(x, 2, 2, ceil_mode=True)
            if frame is not None:
                frame = frame.after_max_pool(tuple(x.shape[2:]), (2, 2), (2, 2))
            _tap(taps, f"pool{block}{suffix}", x)
        return x


class ConditioningBranch(nn.Module):
    """Masked support image -> fc8f (the 'f' layers of the deploy net)."""

    def __init__(self, widths: OSLSMWidths):
        super().__init__()
        self.trunk = VGGTrunk(widths)
        self.fc6 = nn.Linear(widths.conv5 * FC6_KERNEL * FC6_KERNEL, widths.fc)
        self.fc7 = nn.Linear(widths.fc, widths.fc)
        self.fc8 = nn.Linear(widths.fc, widths.embed)

    def forward(self, first_input: torch.Tensor, taps: Taps | None = None) -> torch.Tensor:
        x = self.trunk(first_input, taps, "f")
        if x.shape[2:] != (FC6_KERNEL, FC6_KERNEL):
            raise ValueError(f"conditioning input must be {CONDITIONING_INPUT_HW[0]}x{CONDITIONING_INPUT_HW[1]} "
                             f"(pool5f {FC6_KERNEL}x{FC6_KERNEL} feeds fc6f); pool5f is {tuple(x.shape[2:])}")
        x = F.relu(self.fc6(x.flatten(1)))
        _tap(taps, "fc6f", x)
        x = F.relu(self.fc7(x))
        _tap(taps, "fc7f", x)
        x = self.fc8(x)
        _tap(taps, "fc8f", x)
        return x


class SegmentationBranch(nn.Module):
    """Query image -> fc7s features (the 's' layers: VGG-16 with conv1_1 pad 121, fc6/fc7 as convs)."""

    def __init__(self, widths: OSLSMWidths):
        super().__init__()
        self.trunk = VGGTrunk(widths, first_pad=QUERY_PAD, skip_constant_frame=True)
        self.fc6 = nn.Conv2d(widths.conv5, widths.fc, FC6_KERNEL)
        self.fc7 = nn.Conv2d(widths.fc, widths.fc, 1)

    def forward(self, second_img: torch.Tensor, taps: Taps | None = None,
                cells: tuple[int, int] | None = None) -> torch.Tensor:
        """fc7s; with `cells` (rows, columns), only its first cells (fc6s reads no more of pool5)."""
        x = self.trunk(second_img, taps, "s")
        if cells is not None:
            x = x[:, :, :cells[0] + FC6_KERNEL - 1, :cells[1] + FC6_KERNEL - 1]
        x = F.relu(conv2d_im2col(x, self.fc6.weight, self.fc6.bias), inplace=True)  # faster than conv2d here
        _tap(taps, "fc6s", x)
        x = F.relu(self.fc7(x))
        _tap(taps, "fc7s", x)
        # Standard layout whatever the weights' layout: the head's matrix product rounds by the
        # strides it is given, and cached features come back from disk contiguous.
        return x.contiguous()


class OSLSM(nn.Module):
    def __init__(self, widths: OSLSMWidths = OSLSMWidths.FULL, *, weight_hashed: bool = True,
                 bias_hashed: bool = True):
        super().__init__()
        self.widths = widths
        self.conditioning = ConditioningBranch(widths)
        self.segmentation = SegmentationBranch(widths)
        self.hashing = WeightHashing.empty(widths.fc, widths.embed, weight_hashed, bias_hashed)
        self.upsample = HalfOverlapDeconv(UPSAMPLE_KERNEL)  # uppred_offset, Caffe's sums bit for bit
        self.requires_grad_(False)

    # ---------------------------------------------------------------- inference
    def condition(self, first_img: torch.Tensor, first_label: torch.Tensor,
                  taps: Taps | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Support images (k,3,224,224) and masks (k,1,224,224) -> w (k, C7), b (k,)."""
        if first_img.dim() != 4 or first_label.dim() != 4 or first_img.shape[0] != first_label.shape[0] \
                or first_label.shape[1] != 1 or first_img.shape[2:] != first_label.shape[2:]:
            raise ValueError(f"expected first_img (k,3,H,W) and first_label (k,1,H,W); got "
                             f"{tuple(first_img.shape)} and {tuple(first_label.shape)}")
        first_input = first_img * first_label  # Caffe: Scale by the label tiled to 3 channels
        _tap(taps, "first_input", first_input)
        v = self.conditioning(first_input, taps)
        w, b = self.hashing(v)
        _tap(taps, "rw1s", w)
        _tap(taps, "rb1s", b.reshape(-1, 1))
        return w, b

    def query_features(self, second_img: torch.Tensor, taps: Taps | None = None, *,
                       head_cells_only: bool = False) -> torch.Tensor:
        """Query image (1,3,H,W) -> fc7s after ReLU (1, C7, h, w). With `head_cells_only`, only the
        cells whose upsampled prediction reaches the H x W crop (the last row and column of a
        500x500 query's 18x18 never do): `head` gives bit for bit the same logits from them."""
        if second_img.dim() != 4 or second_img.shape[0] != 1:
            raise ValueError(f"expected second_img (1,3,H,W); got {tuple(second_img.shape)}")
        cells = tuple(cells_reaching_crop(n) for n in second_img.shape[2:]) if head_cells_only else None
        return self.segmentation(second_img, taps, cells)

    def head(self, features: torch.Tensor, w: torch.Tensor, b: torch.Tensor, out_hw: tuple[int, int],
             taps: Taps | None = None) -> torch.Tensor:
        """fc7s (1,C,h,w), per-shot classifiers w (k,C), b (k,) -> pre_score2 logits (1,1,H,W)."""
        _, channels, h, wd = features.shape
        k = w.shape[0]
        xs = features.reshape(1, channels, h * wd).expand(k, channels, h * wd)
        w1s_xs = torch.bmm(w.reshape(k, 1, channels), xs)  # MatMult: one (1xC)(Cxhw) product per shot
        _tap(taps, "w1sXs", w1s_xs)
        rpred = w1s_xs + b.reshape(k, 1, 1)
        _tap(taps, "rpred", rpred)
        pred = rpred.reshape(k, 1, h, wd)
        _tap(taps, "pred", pred)
        up = self.upsample(pred)
        _tap(taps, "uppred_offset", up)
        height, width = out_hw
        if up.shape[2] < CROP_OFFSET + height or up.shape[3] < CROP_OFFSET + width:
            raise ValueError(f"cannot crop {height}x{width} at offset {CROP_OFFSET} from the upsampled "
                             f"{up.shape[2]}x{up.shape[3]} prediction")
        pre_score = up[:, :, CROP_OFFSET:CROP_OFFSET + height, CROP_OFFSET:CROP_OFFSET + width]
        _tap(taps, "pre_score", pre_score)
        pre_score2 = pre_score.amax(dim=0, keepdim=True)  # the OR over shots (Caffe: max pool (k,1))
        _tap(taps, "pre_score2", pre_score2)
        return pre_score2

    def forward(self, first_img: torch.Tensor, first_label: torch.Tensor,
                second_img: torch.Tensor) -> torch.Tensor:
        """score = sigmoid(pre_score2), (1,1,H,W)."""
        w, b = self.condition(first_img, first_label)
        logits = self.head(self.query_features(second_img), w, b, tuple(second_img.shape[2:]))
        return torch.sigmoid(logits)

    def forward_blobs(self, first_img: torch.Tensor, first_label: torch.Tensor,
                      second_img: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every intermediate this module computes, under the deploy net's blob names."""
        taps: Taps = {}
        w, b = self.condition(first_img, first_label, taps)
        logits = self.head(self.query_features(second_img, taps), w, b, tuple(second_img.shape[2:]), taps)
        taps["score"] = torch.sigmoid(logits)
        return taps


def cells_reaching_crop(size: int) -> int:
    """fc7s cells along an axis whose upsampling (cell i covers [stride*i, stride*i + kernel)) reaches
    the crop [CROP_OFFSET, CROP_OFFSET + size)."""
    return -(-(CROP_OFFSET + size) // UPSAMPLE_STRIDE)


def _tap(taps: Taps | None, name: str, value: torch.Tensor) -> None:
    if taps is not None:
        taps[name] = value

"""OSLSM (Shaban et al., BMVC 2017) as an idiomatic PyTorch module that computes what the
authors' Caffe deploy nets compute.

    first_input = first_img * first_label                        (Scale, axis 0)
    conditioning VGG-16 -> fc6f, fc7f (ReLU) -> fc8f (E)         (one vector per shot)
    w, b = hashing(fc8f)                                         (rw1s, rb1s)
    fc7s = segmentation VGG-16 (conv1_1 pad 121) -> fc6s 7x7, fc7s 1x1 (ReLU)
    pred[i] = w[i] . fc7s + b[i]                                 (MatMult + Bias)
    pre_score = crop(deconv64/32(pred), offset 40)               (per shot)
    pre_score2 = max over shots; score = sigmoid(pre_score2)
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from weights_convert.errors import CaffeFormatError
from weights_convert.oslsm.hashing import GatherMap, WeightHashing
from weights_convert.oslsm.layout import (CONDITIONING_INPUT_HW, CROP_OFFSET, FC6_KERNEL, QUERY_PAD,
                                          UPSAMPLE_KERNEL, UPSAMPLE_STRIDE, VGG_BLOCKS, OSLSMWidths,
                                          check_params, conv_layer_shapes, expected_param_shapes)

Taps = dict  # Caffe blob name -> tensor, filled when asked for


class VGGTrunk(nn.Module):
    """VGG-16's 13 convolutions (3x3, ReLU) and 5 max pools (2/2, Caffe's ceil rounding)."""

    def __init__(self, widths: OSLSMWidths, first_pad: int = 1):
        super().__init__()
        for name, (out_ch, in_ch) in conv_layer_shapes(widths).items():
            pad = first_pad if name == "conv1_1" else 1
            self.add_module(name, nn.Conv2d(in_ch, out_ch, 3, padding=pad))

    def forward(self, x: torch.Tensor, taps: Taps | None = None, suffix: str = "") -> torch.Tensor:
        for block, n in VGG_BLOCKS:
            for i in range(1, n + 1):
                name = f"conv{block}_{i}"
                x = F.relu(getattr(self, name)(x))
                _tap(taps, name + suffix, x)
            # Caffe rounds pooled sizes up (no padding here, so ceil_mode matches it exactly).
            x = F.max_pool2d(x, 2, 2, ceil_mode=True)
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
        self.trunk = VGGTrunk(widths, first_pad=QUERY_PAD)
        self.fc6 = nn.Conv2d(widths.conv5, widths.fc, FC6_KERNEL)
        self.fc7 = nn.Conv2d(widths.fc, widths.fc, 1)

    def forward(self, second_img: torch.Tensor, taps: Taps | None = None) -> torch.Tensor:
        x = self.trunk(second_img, taps, "s")
        x = F.relu(self.fc6(x))
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
        self.upsample = nn.ConvTranspose2d(1, 1, UPSAMPLE_KERNEL, stride=UPSAMPLE_STRIDE, bias=False)
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

    def query_features(self, second_img: torch.Tensor, taps: Taps | None = None) -> torch.Tensor:
        """Query image (1,3,H,W) -> fc7s after ReLU (1, C7, h, w)."""
        if second_img.dim() != 4 or second_img.shape[0] != 1:
            raise ValueError(f"expected second_img (1,3,H,W); got {tuple(second_img.shape)}")
        return self.segmentation(second_img, taps)

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

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_params(cls, params: Mapping[str, Sequence[np.ndarray]], source: str = "weights",
                    allow_hashing: bool = True) -> "OSLSM":
        """Build from Caffe blobs (layer name -> list of arrays). Strict: a missing or extra layer
        or a wrong blob shape raises CaffeFormatError naming layer, blob index and both shapes."""
        widths = check_params(params, source=source)
        shapes = expected_param_shapes(widths)
        hash_blobs = [b.reshape(s) for name in ("rw1s", "rb1s") for b, s in zip(_blobs(params, name), shapes[name])]
        hashing = WeightHashing.from_caffe(*hash_blobs, allow_hashing=allow_hashing)
        model = cls._skeleton(widths, isinstance(hashing.weight_map, GatherMap), isinstance(hashing.bias_map, GatherMap))
        state = {}
        for caffe_name, key in caffe_to_state_keys(widths).items():
            weight, *bias = _blobs(params, caffe_name)
            state[key + ".weight"] = torch.from_numpy(weight.reshape(model.get_parameter(key + ".weight").shape))
            if bias:
                state[key + ".bias"] = torch.from_numpy(bias[0].reshape(-1))
        state.update({f"hashing.{k}": v for k, v in hashing.state_dict().items()})
        model.load_state_dict(state, strict=True, assign=True)
        return model

    @classmethod
    def _skeleton(cls, widths: OSLSMWidths, weight_hashed: bool, bias_hashed: bool) -> "OSLSM":
        """A module with shapes but no storage (no 1.1 GB random init); load with assign=True."""
        with torch.device("meta"):
            return cls(widths, weight_hashed=weight_hashed, bias_hashed=bias_hashed)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor], source: str = "state") -> "OSLSM":
        """Build from our converted state (either hashing form), inferring widths and forms."""
        try:
            widths = OSLSMWidths(*(int(state[f"conditioning.trunk.conv{b}_1.weight"].shape[0]) for b in range(1, 6)),
                                 int(state["conditioning.fc6.weight"].shape[0]),
                                 int(state["conditioning.fc8.weight"].shape[0]))
        except KeyError as exc:
            raise CaffeFormatError(f"{source}: not an OSLSM state: missing tensor {exc.args[0]!r}") from None
        model = cls._skeleton(widths, "hashing.weight_map.index" in state, "hashing.bias_map.index" in state)
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        extra = sorted(set(state) - set(expected))
        if missing or extra:
            raise CaffeFormatError(f"{source}: OSLSM state mismatch: missing {missing or 'none'}, "
                                   f"unexpected {extra or 'none'}")
        for key, tensor in expected.items():
            if tuple(state[key].shape) != tuple(tensor.shape) or state[key].dtype != tensor.dtype:
                raise CaffeFormatError(f"{source}: tensor {key!r} is {state[key].dtype} {tuple(state[key].shape)}; "
                                       f"expected {tensor.dtype} {tuple(tensor.shape)}")
        model.load_state_dict(dict(state), strict=True, assign=True)
        return model

    @classmethod
    def from_caffe(cls, prototxt: str | os.PathLike, weights: str | os.PathLike) -> "OSLSM":
        """Check that `prototxt` is an OSLSM deploy net and that `weights` match it, then build."""
        from weights_convert.formats.prototxt import load_net
        from weights_convert.formats.weights_io import read_weights
        from weights_convert.oslsm.spec import check_oslsm_net

        _, net_widths, _ = check_oslsm_net(load_net(prototxt), source=os.fspath(prototxt))
        params = read_weights(weights)
        # Strict against the prototxt's widths: names layer, blob index and both shapes.
        check_params(params, net_widths, source=f"{os.fspath(weights)} (for {os.fspath(prototxt)})")
        model = cls.from_params(params, source=os.fspath(weights))
        return model

    def caffe_params(self) -> dict[str, list[np.ndarray]]:
        """The weights back in Caffe's layout (layer name -> blobs), hashing expanded to dense."""
        state = {k: v.detach().cpu().numpy() for k, v in self.state_dict().items()}
        out = {}
        for caffe_name, key in caffe_to_state_keys(self.widths).items():
            blobs = [state[key + ".weight"]]
            if key + ".bias" in state:
                blobs.append(state[key + ".bias"])
            out[caffe_name] = blobs
        for caffe_name, (weight, bias) in self.hashing.dense_matrices().items():
            out[caffe_name] = [weight.cpu().numpy(), bias.cpu().numpy()]
        shapes = expected_param_shapes(self.widths)
        return {name: [b.reshape(s) for b, s in zip(out[name], shapes[name])] for name in shapes}


def caffe_to_state_keys(widths: OSLSMWidths) -> dict[str, str]:
    """Caffe layer name -> module path of every layer except the hashing maps."""
    keys = {}
    for name in conv_layer_shapes(widths):
        keys[name + "f"] = f"conditioning.trunk.{name}"
        keys[name + "s"] = f"segmentation.trunk.{name}"
    keys.update({"fc6f": "conditioning.fc6", "fc7f": "conditioning.fc7", "fc8f": "conditioning.fc8",
                 "fc6s": "segmentation.fc6", "fc7s": "segmentation.fc7", "uppred_offset": "upsample"})
    return keys


def load_oslsm(weights: str | os.PathLike, prototxt: str | os.PathLike | None = None,
               device: str | torch.device = "cpu",
               memory_format: torch.memory_format = torch.channels_last) -> OSLSM:
    """OSLSM from our converted .safetensors (oslsm or graph form) or a .caffemodel / .caffemodel.h5
    (checked against `prototxt` when given). Convolution weights are channels_last by default:
    about 25% faster on CPU; values differ from the contiguous layout only by float rounding, and
    both layouts are tested against the real Caffe's blobs."""
    from weights_convert.convert import safetensors_metadata
    from weights_convert.formats.weights_io import sniff_format

    path = os.fspath(weights)
    if sniff_format(path) == "safetensors" and safetensors_metadata(path).get("model") == "oslsm":
        from weights_convert.formats.safetensors_io import read_safetensors
        tensors, _ = read_safetensors(path)
        model = OSLSM.from_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, source=path)
    elif prototxt is not None:
        model = OSLSM.from_caffe(prototxt, path)
    else:
        from weights_convert.formats.weights_io import read_weights

        model = OSLSM.from_params(read_weights(path), source=path)
    return model.to(device=device, memory_format=memory_format).eval()


def _blobs(params: Mapping[str, Sequence[np.ndarray]], name: str) -> list[np.ndarray]:
    return [np.ascontiguousarray(np.asarray(b, np.float32)) for b in params[name]]


def _tap(taps: Taps | None, name: str, value: torch.Tensor) -> None:
    if taps is not None:
        taps[name] = value

"""The OSLSM net's parameter layout: layer names, channel widths and the blob shapes they imply.

One place for facts that the model, the net-spec writer, the converter and the random
initialiser all need.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping, Sequence

from weights_convert.errors import CaffeFormatError
from weights_convert.formats.blob_shape import shapes_match

# VGG-16: (block, convolutions in the block).
VGG_BLOCKS = ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
VGG_CONVS = tuple(f"conv{b}_{i}" for b, n in VGG_BLOCKS for i in range(1, n + 1))
CONDITIONING_INPUT_HW = (224, 224)  # fc6f is an InnerProduct over pool5f of 7x7
FC6_KERNEL = 7
UPSAMPLE_KERNEL, UPSAMPLE_STRIDE, CROP_OFFSET = 64, 32, 40
QUERY_PAD = 121  # conv1_1s


@dataclass(frozen=True)
class OSLSMWidths:
    """Channel widths: conv blocks 1-5, fc6/fc7 (also the classifier width), fc8 (hash input)."""
    conv1: int
    conv2: int
    conv3: int
    conv4: int
    conv5: int
    fc: int
    embed: int

    # Set below the class: the authors' VGG-16 widths and the thin golden test widths.
    FULL: ClassVar["OSLSMWidths"]
    THIN: ClassVar["OSLSMWidths"]

    @property
    def conv(self) -> tuple[int, int, int, int, int]:
        return (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5)

    def as_tuple(self) -> tuple[int, ...]:
        return (*self.conv, self.fc, self.embed)

    @classmethod
    def from_params(cls, params: Mapping[str, Sequence]) -> "OSLSMWidths":
        """Infer widths from Caffe blobs (layer name -> blobs, arrays or shapes)."""
        missing = [n for n in ("conv1_1f", "conv2_1f", "conv3_1f", "conv4_1f", "conv5_1f", "fc6f", "fc8f")
                   if n not in params or not len(params[n])]
        if missing:
            raise CaffeFormatError(
                f"cannot infer OSLSM widths: missing layer(s) {', '.join(missing)} "
                f"(is this an OSLSM model? it has {len(params)} layers, e.g. {', '.join(list(params)[:6])})")
        rows = [int(_shape(params[f"conv{b}_1f"][0])[0]) for b in range(1, 6)]
        return cls(*rows, int(_shape(params["fc6f"][0])[0]), int(_shape(params["fc8f"][0])[0]))


OSLSMWidths.FULL = OSLSMWidths(64, 128, 256, 512, 512, 4096, 1000)
OSLSMWidths.THIN = OSLSMWidths(4, 6, 8, 8, 8, 16, 10)


def _shape(blob) -> tuple[int, ...]:
    return tuple(int(d) for d in (blob.shape if hasattr(blob, "shape") else blob))


def conv_layer_shapes(widths: OSLSMWidths) -> dict[str, tuple[int, int]]:
    """VGG conv name -> (out, in) channels."""
    out, previous = {}, 3
    for (block, n), width in zip(VGG_BLOCKS, widths.conv):
        for i in range(1, n + 1):
            out[f"conv{block}_{i}"] = (width, previous)
            previous = width
    return out


def expected_param_shapes(widths: OSLSMWidths) -> dict[str, list[tuple[int, ...]]]:
    """Caffe layer name -> shapes of its blobs, in the deploy net's layer order."""
    shapes: dict[str, list[tuple[int, ...]]] = {}
    convs = conv_layer_shapes(widths)
    for suffix in ("f", "s"):
        for name, (o, i) in convs.items():
            shapes[name + suffix] = [(o, i, 3, 3), (o,)]
    fc, c5, embed = widths.fc, widths.conv5, widths.embed
    shapes["fc6s"] = [(fc, c5, FC6_KERNEL, FC6_KERNEL), (fc,)]
    shapes["fc6f"] = [(fc, c5 * FC6_KERNEL * FC6_KERNEL), (fc,)]
    shapes["fc7f"] = [(fc, fc), (fc,)]
    shapes["fc7s"] = [(fc, fc, 1, 1), (fc,)]
    shapes["fc8f"] = [(embed, fc), (embed,)]
    shapes["rw1s"] = [(fc, embed), (fc,)]
    shapes["rb1s"] = [(1, embed), (1,)]
    shapes["uppred_offset"] = [(1, 1, UPSAMPLE_KERNEL, UPSAMPLE_KERNEL)]
    return shapes


def check_params(params: Mapping[str, Sequence], widths: OSLSMWidths | None = None,
                 source: str = "weights") -> OSLSMWidths:
    """Strict check of OSLSM weights: every layer present, no extra layer, every blob shape right.
    Raises CaffeFormatError naming layer, blob index and both shapes."""
    expected_names = set(expected_param_shapes(OSLSMWidths.FULL))
    with_blobs = {name for name, blobs in params.items() if len(blobs)}
    missing = sorted(expected_names - with_blobs, key=_layer_order)
    if missing:
        present = len(expected_names & with_blobs)
        raise CaffeFormatError(
            f"{source}: not an OSLSM model: {len(missing)} of the {len(expected_names)} OSLSM layers "
            f"with weights are missing: {', '.join(missing)}"
            + (f" (found {present} OSLSM layers; layers present: {', '.join(sorted(with_blobs)[:12])}"
               f"{' ...' if len(with_blobs) > 12 else ''})" if with_blobs else " (the file has no weights)"))
    extra = sorted(with_blobs - expected_names)
    if extra:
        raise CaffeFormatError(
            f"{source}: layer(s) {', '.join(extra)} carry weights but the OSLSM net has no such "
            "learnable layers; expected exactly the deploy net's layers")
    for name in sorted(expected_names, key=_layer_order):
        gaps = [i for i, blob in enumerate(params[name]) if blob is None]
        if gaps:
            raise CaffeFormatError(f"{source}: layer {name!r} lacks blob(s) {gaps}; OSLSM layers share no "
                                   "blobs, so every layer needs all of its own")
    widths = widths or OSLSMWidths.from_params(params)
    for name, shapes in expected_param_shapes(widths).items():
        blobs = params[name]
        if len(blobs) != len(shapes):
            raise CaffeFormatError(
                f"{source}: layer {name!r} has {len(blobs)} blob(s); expected {len(shapes)} "
                f"with shapes {', '.join(str(s) for s in shapes)}")
        for index, (blob, shape) in enumerate(zip(blobs, shapes)):
            if not shapes_match(shape, _shape(blob)):
                raise CaffeFormatError(
                    f"{source}: layer {name!r} blob {index} has shape {_shape(blob)}; expected {shape} "
                    f"(OSLSM widths {widths.as_tuple()})")
    return widths


def _layer_order(name: str) -> int:
    order = list(expected_param_shapes(OSLSMWidths.FULL))
    return order.index(name) if name in order else len(order)

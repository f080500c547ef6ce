"""FCN-32s's nets, written with our net-spec builders, layer for layer as voc-fcn32s/net.py writes
them (its Python data layer replaced by Input tops `data` and `label`); the channel widths are
parameters so that thin test nets come from the same code.

Geometry (what the baselines need to map a cell of fc7 to the image): conv1_1 pads by 100, five
2x2 poolings make a stride of 32, fc6 is 7x7, `upscore` is a 64x64 deconvolution of stride 32 and
`score` crops it at offset 19, so fc7 cell i is centred on image row 32 i + 12.5 (pixel edges
counted from 0): the centre of its kernel, 31.5, less the crop."""
from __future__ import annotations

from dataclasses import dataclass

from weights_convert import netspec as ns
from weights_convert.formats.schema import pb
from weights_convert.oslsm.layout import FC6_KERNEL, VGG_BLOCKS  # VGG-16's, which both nets are built on

FIRST_PAD = 100
STRIDE, UPSCORE_KERNEL, CROP_OFFSET = 32, 64, 19
CELL_CENTRE = (UPSCORE_KERNEL - 1) / 2 - CROP_OFFSET  # 12.5: fc7 cell i's centre is at STRIDE * i + this
MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)  # voc_layers.py's mean, subtracted from BGR 0..255
_LEARNED = (ns.param_spec(1, 1), ns.param_spec(2, 0))


@dataclass(frozen=True)
class FCNWidths:
    conv: tuple[int, int, int, int, int] = (64, 128, 256, 512, 512)  # blocks 1-5
    fc: int = 4096                                                    # fc6 and fc7


FULL = FCNWidths()
THIN = FCNWidths((4, 6, 8, 8, 8), 16)  # tests/golden_std/fcn32s_thin's widths


def fcn32s_trunk(bottom: str, widths: FCNWidths = FULL, dropout: float = 0.5) -> list[pb.LayerParameter]:
    """conv1_1 .. drop7: VGG-16's convolutions and its fc6/fc7 as convolutions."""
    layers = []
    for (block, n), width in zip(VGG_BLOCKS, widths.conv):
        for i in range(1, n + 1):
            name = f"conv{block}_{i}"
            layers += [ns.convolution(name, bottom, width, 3, pad=FIRST_PAD if name == "conv1_1" else 1, stride=1,
                                      params=_LEARNED), ns.relu(f"relu{block}_{i}", name)]
            bottom = name
        layers.append(ns.max_pool(f"pool{block}", bottom, kernel_size=2, stride=2))
        bottom = f"pool{block}"
    return layers + fcn32s_fc(bottom, widths.fc, dropout)


def fcn32s_fc(bottom: str, width: int, dropout: float | None = 0.5) -> list[pb.LayerParameter]:
    """fc6 and fc7 as convolutions, each with its ReLU and (unless `dropout` is None) its dropout."""
    layers = []
    for fc, kernel in (("fc6", FC6_KERNEL), ("fc7", 1)):
        layers += [ns.convolution(fc, bottom, width, kernel, pad=0, stride=1, params=_LEARNED),
                   ns.relu(f"relu{fc[2:]}", fc)]
        if dropout is not None:
            layers.append(ns.layer(f"drop{fc[2:]}", "Dropout", [fc], [fc], dropout_param={"dropout_ratio": dropout}))
        bottom = fc
    return layers


def fcn32s_head(n_classes: int, bottom: str = "fc7", score: str = "score_fr", upscore: str = "upscore",
                out: str = "score", like: str = "data") -> list[pb.LayerParameter]:
    """The classifier, its fixed bilinear upsampling and the crop to `like`'s size."""
    return [ns.convolution(score, bottom, n_classes, 1, pad=0, params=_LEARNED),
            ns.deconvolution(upscore, score, n_classes, UPSCORE_KERNEL, stride=STRIDE, bias_term=False,
                             params=[ns.param_spec(0)]),
            ns.layer(out, "Crop", [upscore, like], crop_param={"axis": 2, "offset": [CROP_OFFSET]})]


def fcn32s_net(n_classes: int, widths: FCNWidths = FULL, *, train: bool = True, input_hw=(500, 500),
               dropout: float = 0.5, name: str = "fcn32s") -> pb.NetParameter:
    """voc-fcn32s's train net (with `label` and FCN's loss: unnormalised, 255 ignored) or its
    deploy form (no label, no loss)."""
    h, w = input_hw
    layers = [ns.input_layer("data", ["data"], [(1, 3, h, w)])]
    if train:
        layers.append(ns.input_layer("label", ["label"], [(1, 1, h, w)]))
    layers += fcn32s_trunk("data", widths, dropout) + fcn32s_head(n_classes)
    if train:
        layers.append(ns.layer("loss", "SoftmaxWithLoss", ["score", "label"],
                               loss_param={"normalize": False, "ignore_label": 255}))
    return ns.net(layers, name=name)


def widths_of(shapes: dict) -> tuple[FCNWidths, int]:
    """(widths, classes) of FCN-32s blobs (layer -> blob shapes)."""
    conv = tuple(int(shapes[f"conv{b}_1"][0][0]) for b, _ in VGG_BLOCKS)
    return FCNWidths(conv, int(shapes["fc6"][0][0])), int(shapes["score_fr"][0][0])


def blob_shapes(widths: FCNWidths, n_classes: int) -> dict[str, list[tuple[int, ...]]]:
    """Layer -> shapes of its learnable blobs (Caffe's: a deconvolution's weight is in x out x k x k)."""
    shapes: dict[str, list[tuple[int, ...]]] = {}
    previous = 3
    for (block, n), width in zip(VGG_BLOCKS, widths.conv):
        for i in range(1, n + 1):
            shapes[f"conv{block}_{i}"] = [(width, previous, 3, 3), (width,)]
            previous = width
    shapes["fc6"] = [(widths.fc, previous, FC6_KERNEL, FC6_KERNEL), (widths.fc,)]
    shapes["fc7"] = [(widths.fc, widths.fc, 1, 1), (widths.fc,)]
    shapes["score_fr"] = [(n_classes, widths.fc, 1, 1), (n_classes,)]
    shapes["upscore"] = [(n_classes, n_classes, UPSCORE_KERNEL, UPSCORE_KERNEL)]
    return shapes


def layer_types(shapes) -> dict[str, str]:
    return {name: "Deconvolution" if name == "upscore" else "Convolution" for name in shapes}

"""The demo's OSLSM that can learn on a CPU in seconds: fixed colour-preserving trunk weights stand
in for the ImageNet VGG-16 start, and only fc8f's weights are trained (a demo choice, not the
authors').

Trunk, both branches: conv1_1 splits each mean-subtracted channel into its positive and negative
parts (scaled by 1/64); conv1_2 and conv2_1 turn a constant channel into an indicator of non-zero
pixels (the image, or the support's masked object); every other convolution passes its input
through (identity centre taps), so pool5 holds the largest colour parts of each 32x32 cell. fc6s
takes the cell under its 7x7 window's centre (aligned with the output pixel by pad 121 and crop
40), fc6f averages the masked support over pool5f's 7x7 cells, and fc7 passes through. So fc7s is
local query colour and fc7f the support object's colour times its area (the indicator's average).
With the weight-hashing maps made one-to-one and fc8f's bias held at zero, the score
w . fc7s + b is a bilinear form of the two with fc8f's weights as its matrix, proportional to the
support's area (so its sign is not): a problem SGD solves in a few hundred steps.
"""
from __future__ import annotations

import numpy as np

from weights_convert.oslsm.layout import FC6_KERNEL, OSLSMWidths, conv_layer_shapes, expected_param_shapes
from weights_convert.fcn.surgery import bilinear_kernel

COLOUR_PARTS = 6                 # + and - of 3 channels
INDICATOR = COLOUR_PARTS         # the channel that marks non-zero pixels
FEATURES = COLOUR_PARTS + 1
INPUT_SCALE = 1 / 64             # colour parts of about one after max pooling: SGD is well conditioned
# Off the VGG mean's fractional values, a pixel's parts sum to >= 0.66 / 64: this gain makes that >= 1.
INDICATOR_GAIN = 128.0
DEMO_WIDTHS = OSLSMWidths(*[FEATURES] * 6, FEATURES + 1)


def demo_params(seed: int, widths: OSLSMWidths = DEMO_WIDTHS) -> dict[str, list[np.ndarray]]:
    """Layer -> float32 blobs: the fixed trunk above and a random fc8f (std 1/sqrt(fan-in), bias 0)."""
    fc, embed = widths.fc, widths.embed
    expected = expected_param_shapes(widths)
    trunk = {name: _colour_split() if name == "conv1_1" else _pass_through(out, inp)
             for name, (out, inp) in conv_layer_shapes(widths).items()}
    # conv1_2: t = relu(1 - gain * sum of parts), 1 on zero pixels; conv2_1: relu(1 - t), the indicator.
    trunk["conv1_2"][0][INDICATOR, :COLOUR_PARTS, 1, 1] = -INDICATOR_GAIN
    trunk["conv2_1"][0][INDICATOR, INDICATOR, 1, 1] = -1
    trunk["conv2_1"][1][INDICATOR] = 1
    params = {name + suffix: [blob.copy() for blob in blobs] for suffix in ("f", "s") for name, blobs in trunk.items()}
    fc6s = np.zeros((fc, FEATURES, FC6_KERNEL, FC6_KERNEL), np.float32)
    fc6s[np.arange(fc), np.arange(fc), FC6_KERNEL // 2, FC6_KERNEL // 2] = 1
    fc6f = np.zeros((fc, FEATURES, FC6_KERNEL * FC6_KERNEL), np.float32)
    fc6f[np.arange(fc), np.arange(fc), :] = 1 / FC6_KERNEL ** 2
    identity, zeros = np.eye(fc, dtype=np.float32), np.zeros(fc, np.float32)
    params["fc6s"] = [fc6s, zeros]
    params["fc6f"] = [fc6f.reshape(fc, -1), zeros]
    params["fc7s"] = [identity.reshape(fc, fc, 1, 1), zeros.copy()]
    params["fc7f"] = [identity.copy(), zeros.copy()]
    rng = np.random.default_rng(seed)
    params["fc8f"] = [(rng.standard_normal((embed, fc)) / np.sqrt(fc)).astype(np.float32),
                      np.zeros(embed, np.float32)]
    # Hashing maps with one +-1 per row as the authors', but no two rows share a column.
    columns, signs = rng.permutation(embed), rng.choice(np.float32([-1, 1]), embed)
    rw1s = np.zeros((fc, embed), np.float32)
    rw1s[np.arange(fc), columns[:fc]] = signs[:fc]
    rb1s = np.zeros((1, embed), np.float32)
    rb1s[0, columns[fc]] = signs[fc]
    params["rw1s"] = [rw1s, zeros.copy()]
    params["rb1s"] = [rb1s, np.zeros(1, np.float32)]
    params["uppred_offset"] = [bilinear_kernel(expected["uppred_offset"][0][-1]).reshape(expected["uppred_offset"][0])]
    assert {k: [b.shape for b in v] for k, v in params.items()} == {k: [tuple(s) for s in v] for k, v in expected.items()}
    return params


def _colour_split() -> list[np.ndarray]:
    weight = np.zeros((FEATURES, 3, 3, 3), np.float32)
    for channel in range(3):
        weight[2 * channel, channel, 1, 1] = INPUT_SCALE
        weight[2 * channel + 1, channel, 1, 1] = -INPUT_SCALE
    bias = np.zeros(FEATURES, np.float32)
    bias[COLOUR_PARTS] = 1.0
    return [weight, bias]


def _pass_through(out: int, inp: int) -> list[np.ndarray]:
    weight = np.zeros((out, inp, 3, 3), np.float32)
    weight[np.arange(out), np.arange(out), 1, 1] = 1
    return [weight, np.zeros(out, np.float32)]


def demo_train_net(widths: OSLSMWidths = DEMO_WIDTHS, dropout: float = 0.0):
    """The authors' train net (reproduce/recipes) at `widths`, with every parameter frozen
    (lr_mult 0) but fc8f's weights, the loss averaged over the query's pixels (normalization
    VALID) so that a learning rate near one works, and `dropout` (0: a 7-feature net cannot lose half)."""
    from reproduce.training.recipe import TRAIN_PROTOTXT
    from weights_convert.formats.prototxt import load_net
    from weights_convert.formats.schema import pb

    net = load_net(TRAIN_PROTOTXT)
    outputs = {"fc6s": widths.fc, "fc6f": widths.fc, "fc7s": widths.fc, "fc7f": widths.fc,
               "fc8f": widths.embed, "rw1s": widths.fc}
    for layer in net.layer:
        if layer.name.startswith("conv"):
            layer.convolution_param.num_output = widths.conv[int(layer.name[4]) - 1]
        elif layer.name in outputs:
            which = layer.inner_product_param if layer.type == "InnerProduct" else layer.convolution_param
            which.num_output = outputs[layer.name]
        if layer.name == "w1s":
            layer.reshape_param.shape.dim[2] = widths.fc
        for index, param in enumerate(layer.param):
            if layer.name != "fc8f" or index == 1:
                param.lr_mult, param.decay_mult = 0, 0
        if layer.type == "SigmoidCrossEntropyLoss":
            layer.loss_param.normalization = pb.LossParameter.VALID
        if layer.type == "Dropout":
            layer.dropout_param.dropout_ratio = dropout
    return net


def demo_solver_text(train_net: str, iterations: int) -> str:
    """The demo's solver (ours, not the authors'): Caffe SGD on fc8f alone, one snapshot at the end."""
    return "\n".join([
        "# oslsm-repro demo solver: not the authors' (solver_ss_os_fc.prototxt); see reproduce/training/demo_model.py",
        f'train_net: "{train_net}"',
        "base_lr: 1.0            # x fc8f's lr_mult 0.1",
        'lr_policy: "step"',
        "gamma: 0.1",
        f"stepsize: {max(1, round(0.7 * iterations))}",
        "momentum: 0.9",
        "weight_decay: 0",
        "iter_size: 2            # two episodes per update: one is too noisy a gradient",
        f"max_iter: {iterations}",
        f"snapshot: {iterations}",
        'snapshot_prefix: "demo"',
        "display: 20",
    ]) + "\n"


def demo_base_params(widths, n_classes: int, seed: int) -> dict[str, list[np.ndarray]]:
    """A thin FCN-32s start model for the demo's base nets (no VGG-16 here): He-scaled random
    convolutions, score_fr at zero as FCN's surgery leaves it, upscore bilinear."""
    from weights_convert.fcn.spec import blob_shapes
    from weights_convert.fcn.surgery import interp

    rng = np.random.default_rng(seed)
    params = {}
    for name, shapes in blob_shapes(widths, n_classes).items():
        if name == "upscore":
            params[name] = [interp(shapes[0])]
        elif name == "score_fr":
            params[name] = [np.zeros(s, np.float32) for s in shapes]
        else:
            fan_in = int(np.prod(shapes[0][1:]))
            params[name] = [(rng.standard_normal(shapes[0]) * np.sqrt(2.0 / fan_in)).astype(np.float32),
                            np.zeros(shapes[1], np.float32)]
    return params

"""Caffe layer type string -> implementation, and the factory that builds one from its LayerParameter."""
from __future__ import annotations

from weights_convert.errors import CaffeFormatError
from weights_convert.formats.schema import pb
from weights_convert.layers import (activations, batchnorm, conv, dropout, eltwise, inner_product, input,
                                    label_losses, loss, lrn, matmult, metrics, pair_losses, pooling, scale_bias,
                                    shape_ops, softmax)
from weights_convert.layers.base import CaffeLayer

LAYER_TYPES: dict[str, type[CaffeLayer]] = {
    "Input": input.Input,
    "Convolution": conv.Convolution,
    "Deconvolution": conv.Deconvolution,
    "Pooling": pooling.Pooling,
    "InnerProduct": inner_product.InnerProduct,
    "ReLU": activations.ReLU,
    "PReLU": activations.PReLU,
    "ELU": activations.ELU,
    "TanH": activations.TanH,
    "Sigmoid": activations.Sigmoid,
    "AbsVal": activations.AbsVal,
    "BNLL": activations.BNLL,
    "Threshold": activations.Threshold,
    "Power": activations.Power,
    "Scale": scale_bias.Scale,
    "Bias": scale_bias.Bias,
    "BatchNorm": batchnorm.BatchNorm,
    "LRN": lrn.LRN,
    "Reshape": shape_ops.Reshape,
    "ReshapeLike": shape_ops.ReshapeLike,
    "Flatten": shape_ops.Flatten,
    "Tile": shape_ops.Tile,
    "Crop": shape_ops.Crop,
    "Concat": shape_ops.Concat,
    "Slice": shape_ops.Slice,
    "Split": shape_ops.Split,
    "Silence": shape_ops.Silence,
    "Eltwise": eltwise.Eltwise,
    "Softmax": softmax.Softmax,
    "MatMult": matmult.MatMult,
    "SigmoidCrossEntropyLoss": loss.SigmoidCrossEntropyLoss,
    "SoftmaxWithLoss": label_losses.SoftmaxWithLoss,
    "InfogainLoss": label_losses.InfogainLoss,
    "MultinomialLogisticLoss": label_losses.MultinomialLogisticLoss,
    "HingeLoss": label_losses.HingeLoss,
    "EuclideanLoss": pair_losses.EuclideanLoss,
    "ContrastiveLoss": pair_losses.ContrastiveLoss,
    "Accuracy": metrics.Accuracy,
    "ArgMax": metrics.ArgMax,
    "Dropout": dropout.Dropout,
}


def build_layer(layer_param: pb.LayerParameter) -> CaffeLayer:
    """The runnable layer for one (upgraded, V2) LayerParameter; its `phase` field picks TRAIN/TEST
    behaviour (the net sets it, as Caffe's Net::Init does)."""
    kind = layer_param.type
    if kind == "Python":
        module = layer_param.python_param.module or "?"
        cls = layer_param.python_param.layer or "?"
        raise CaffeFormatError(
            f"layer '{layer_param.name}' is a Python layer ({module}.{cls}): its code is not part of the net "
            "and cannot be run here; use a deploy net whose inputs are an Input layer")
    impl = LAYER_TYPES.get(kind)
    if impl is None:
        raise CaffeFormatError(
            f"layer '{layer_param.name}' has type '{kind}', which is not supported; supported types: "
            f"{', '.join(sorted(LAYER_TYPES))}")
    return impl(layer_param)

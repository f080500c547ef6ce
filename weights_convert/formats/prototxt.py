"""Text prototxt -> NetParameter, with V1 and legacy-input nets upgraded to the V2 form.

After `load_net`, every net has only `layer` entries (no `layers`, no `input:`),
so the rest of the code sees one shape of net.
"""
from __future__ import annotations

import os
import re

from google.protobuf import text_format

from weights_convert.errors import CaffeFormatError
from weights_convert.formats.schema import pb

# V1LayerParameter.LayerType enum name -> V2 type string (as Caffe's upgrade does).
V1_TYPE_NAMES = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DATA": "Data", "DECONVOLUTION": "Deconvolution", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}

_V1_PARAM_FIELDS = [f.name for f in pb.V1LayerParameter.DESCRIPTOR.fields if f.name.endswith("_param")]


def v1_type_name(enum_value: int) -> str:
    """V2 type string for a V1 LayerType enum number."""
    name = pb.V1LayerParameter.LayerType.Name(enum_value)
    return V1_TYPE_NAMES[name]


def parse_net_text(text: str, source: str = "<string>") -> pb.NetParameter:
    """Parse prototxt text into an upgraded NetParameter; errors name `source`, line and column."""
    net = pb.NetParameter()
    try:
        text_format.Parse(text, net)
    except text_format.ParseError as exc:
        raise CaffeFormatError(f"{source}:{_where(exc)}: {_message(exc)}") from None
    return upgrade_net(net, source)


def _read_text(path: str, what: str) -> str:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise CaffeFormatError(f"{path}: cannot read {what}: {exc.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CaffeFormatError(
            f"{path}: byte {exc.start}: not a text prototxt (invalid UTF-8); "
            f"was a binary .caffemodel given where a {what} was expected?") from None


def load_net(path: str | os.PathLike) -> pb.NetParameter:
    """Read and parse a net prototxt file."""
    path = os.fspath(path)
    return parse_net_text(_read_text(path, "net prototxt"), path)


# Caffe's UpgradeSolverType: the deprecated enum becomes the `type` string.
_SOLVER_TYPE_NAMES = {pb.SolverParameter.SGD: "SGD", pb.SolverParameter.NESTEROV: "Nesterov",
                      pb.SolverParameter.ADAGRAD: "AdaGrad", pb.SolverParameter.RMSPROP: "RMSProp",
                      pb.SolverParameter.ADADELTA: "AdaDelta", pb.SolverParameter.ADAM: "Adam"}


def load_solver(path: str | os.PathLike) -> pb.SolverParameter:
    """Read and parse a solver prototxt, upgraded as Caffe's UpgradeSolverAsNeeded does."""
    path = os.fspath(path)
    solver = pb.SolverParameter()
    try:
        text_format.Parse(_read_text(path, "solver prototxt"), solver)
    except text_format.ParseError as exc:
        raise CaffeFormatError(f"{path}:{_where(exc)}: {_message(exc)}") from None
    if solver.HasField("solver_type"):
        if solver.HasField("type"):
            raise CaffeFormatError(f"{path}: give `type` or the deprecated `solver_type`, not both")
        solver.type = _SOLVER_TYPE_NAMES[solver.solver_type]
        solver.ClearField("solver_type")
    return solver


def upgrade_net(net: pb.NetParameter, source: str = "<net>") -> pb.NetParameter:
    """Return a copy of `net` in V2 form: V1 `layers` -> `layer`, legacy inputs -> an Input layer."""
    if net.layer and net.layers:
        raise CaffeFormatError(
            f"{source}: net mixes V2 'layer' and V1 'layers' entries; expected one kind only")
    out = pb.NetParameter()
    out.CopyFrom(net)
    if net.layers:
        del out.layers[:]
        for v1 in net.layers:
            out.layer.append(upgrade_v1_layer(v1, source))
    if net.input:
        del out.input[:], out.input_dim[:], out.input_shape[:]
        layers = list(out.layer)
        del out.layer[:]
        out.layer.append(_legacy_input_layer(net, source))
        out.layer.extend(layers)
    return out


def upgrade_v1_layer(v1: pb.V1LayerParameter, source: str = "<net>") -> pb.LayerParameter:
    """One V1 layer in V2 form: type enum -> string, param names / blobs_lr / weight_decay -> ParamSpec."""
    layer = pb.LayerParameter(name=v1.name, type=v1_type_name(v1.type))
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    layer.include.extend(v1.include)
    layer.exclude.extend(v1.exclude)
    layer.blobs.extend(v1.blobs)
    layer.loss_weight.extend(v1.loss_weight)
    n_params = max(len(v1.param), len(v1.blobs_lr), len(v1.weight_decay))
    for i in range(n_params):
        spec = layer.param.add()
        if i < len(v1.param):
            spec.name = v1.param[i]
        if i < len(v1.blobs_lr):
            spec.lr_mult = v1.blobs_lr[i]
        if i < len(v1.weight_decay):
            spec.decay_mult = v1.weight_decay[i]
    for field in _V1_PARAM_FIELDS:
        if v1.HasField(field):
            getattr(layer, field).CopyFrom(getattr(v1, field))
    return layer


def _legacy_input_layer(net: pb.NetParameter, source: str) -> pb.LayerParameter:
    layer = pb.LayerParameter(name="input", type="Input")
    layer.top.extend(net.input)
    if net.input_shape:
        if len(net.input_shape) != len(net.input):
            raise CaffeFormatError(
                f"{source}: {len(net.input)} 'input' names but {len(net.input_shape)} 'input_shape' "
                "entries; expected one shape per input")
        layer.input_param.shape.extend(net.input_shape)
    elif net.input_dim:
        if len(net.input_dim) != 4 * len(net.input):
            raise CaffeFormatError(
                f"{source}: {len(net.input)} 'input' names need {4 * len(net.input)} 'input_dim' "
                f"values (4 per input), found {len(net.input_dim)}")
        for i in range(len(net.input)):
            layer.input_param.shape.add(dim=net.input_dim[4 * i:4 * i + 4])
    else:
        raise CaffeFormatError(f"{source}: 'input' given without 'input_dim' or 'input_shape'")
    return layer


def _where(exc: text_format.ParseError) -> str:
    line, col = exc.GetLine(), exc.GetColumn()
    if line is None:
        match = re.match(r"(\d+):(\d+)", str(exc))
        return f"{match.group(1)}:{match.group(2)}" if match else "?"
    return f"{line}:{col}"


def _message(exc: text_format.ParseError) -> str:
    msg = str(exc)
    msg = re.sub(r"^\d+:\d+\s*:\s*", "", msg)
    return msg.replace("oslsm_caffe.", "")

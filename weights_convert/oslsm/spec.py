"""The OSLSM deploy net (deploy_1shot / deploy_5shot.prototxt) written with our net-spec
builders, and a check that a given net is that topology.

The upstream files differ only in the number of shots k (Xs_tiled tiles, rpre_score's
reshape, rpre_score2's kernel_h, and the support inputs' batch); channel widths and the
query size are parameters so that thin test nets come from the same code.
"""
from __future__ import annotations

from weights_convert import netspec as ns
from weights_convert.errors import CaffeFormatError
from weights_convert.formats.schema import pb
from weights_convert.oslsm.layout import (CONDITIONING_INPUT_HW, CROP_OFFSET, FC6_KERNEL, QUERY_PAD,
                                          UPSAMPLE_KERNEL, UPSAMPLE_STRIDE, VGG_BLOCKS, OSLSMWidths)

# Learning-rate settings of the deploy files (kept so the text matches upstream field for field).
_CONDITIONING_PARAMS = (ns.param_spec(0.1, 1), ns.param_spec(0.2, 0))
_SEGMENTATION_PARAMS = (ns.param_spec(1.0, 1), ns.param_spec(2.0, 0))
_FIXED_PARAMS = (ns.param_spec(0.0, 0), ns.param_spec(0.0, 0))


def _vgg(suffix: str, bottom: str, widths: OSLSMWidths) -> list[pb.LayerParameter]:
    layers = []
    for (block, n), width in zip(VGG_BLOCKS, widths.conv):
        for i in range(1, n + 1):
            name = f"conv{block}_{i}"
            if suffix == "s":  # the query branch's params are named (shareable with a VGG-16)
                params = (ns.param_spec(1.0, 1, f"{name}_w"), ns.param_spec(2.0, 0, f"{name}_b"))
                pad = QUERY_PAD if name == "conv1_1" else 1
            else:
                params, pad = _CONDITIONING_PARAMS, 1
            layers.append(ns.convolution(name + suffix, bottom, width, 3, pad=pad, engine="CUDNN", params=params))
            layers.append(ns.relu(f"relu{block}_{i}{suffix}", name + suffix))
            bottom = name + suffix
        layers.append(ns.max_pool(f"pool{block}{suffix}", bottom, kernel_size=2, stride=2))
        bottom = f"pool{block}{suffix}"
    return layers


def oslsm_deploy_net(shots: int, widths: OSLSMWidths = OSLSMWidths.FULL,
                     query_hw: tuple[int, int] = (500, 500)) -> pb.NetParameter:
    """The k-shot OSLSM deploy net, layer for layer as the authors' deploy_{k}shot.prototxt."""
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    k, (qh, qw), (sh, sw) = shots, query_hw, CONDITIONING_INPUT_HW
    fc = widths.fc
    layers = [
        ns.input_layer("first_img", ["first_img", "second_img", "first_label", "second_label"],
                       [(k, 3, sh, sw), (1, 3, qh, qw), (k, 1, sh, sw), (1, 1, qh, qw)]),
        ns.tile("tiled_first_label", "first_label", axis=1, tiles=3),
        ns.layer("first_input", "Scale", ["first_img", "tiled_first_label"], scale_param={"axis": 0}),
    ]
    layers += _vgg("f", "first_input", widths)
    layers += _vgg("s", "second_img", widths)
    layers += [
        ns.convolution("fc6s", "pool5s", fc, FC6_KERNEL, engine="CUDNN", params=_SEGMENTATION_PARAMS),
        ns.relu("relu6s", "fc6s"),
        ns.inner_product("fc6f", "pool5f", fc, _CONDITIONING_PARAMS),
        ns.relu("relu6f", "fc6f"),
        ns.inner_product("fc7f", "fc6f", fc, _CONDITIONING_PARAMS),
        ns.relu("relu7f", "fc7f"),
        ns.convolution("fc7s", "fc6s", fc, 1, engine="CUDNN", params=_SEGMENTATION_PARAMS),
        ns.relu("relu7s", "fc7s"),
        ns.inner_product("fc8f", "fc7f", widths.embed, _CONDITIONING_PARAMS),
        # The weight hashing: fixed maps, values only in the caffemodel.
        ns.inner_product("rw1s", "fc8f", fc, _FIXED_PARAMS),
        ns.inner_product("rb1s", "fc8f", 1, _FIXED_PARAMS),
        ns.reshape("w1s", ["rw1s"], [-1, 1, fc]),
        ns.reshape("b1s", ["rb1s"], [-1, 1]),
        ns.reshape("Xs", ["fc7s"], [0, 0, -1]),
        ns.tile("Xs_tiled", "Xs", axis=0, tiles=k),
        ns.layer("w1sXs", "MatMult", ["w1s", "Xs_tiled"]),
        ns.layer("rpred", "Bias", ["w1sXs", "b1s"], bias_param={"axis": 0}),
        ns.reshape("pred", ["rpred", "fc7s"], [-1, 1, 0, 0], type="ReshapeLike"),
        ns.deconvolution("uppred_offset", "pred", 1, UPSAMPLE_KERNEL, bias_term=False, stride=UPSAMPLE_STRIDE,
                         params=[ns.param_spec(0, 0)]),
        ns.layer("pre_score", "Crop", ["uppred_offset", "second_img"],
                 crop_param={"axis": 2, "offset": [CROP_OFFSET]}),
        # The OR over shots: a max pool of kernel (k, 1) over the shots stacked on one axis.
        ns.reshape("rpre_score", ["pre_score"], [1, 1, k, -1]),
        ns.max_pool("rpre_score2", "rpre_score", kernel_h=k, kernel_w=1),
        ns.reshape("pre_score2", ["rpre_score2", "second_img"], [-1, 1, 0, 0], type="ReshapeLike"),
        ns.layer("score", "Sigmoid", ["pre_score2"]),
        ns.layer("loss", "SigmoidCrossEntropyLoss", ["pre_score2", "second_label"]),
    ]
    return ns.net(layers)


# ---------------------------------------------------------------- checking a given net

_OPTIONAL_LAYERS = {"loss"}  # a net without the training loss still computes score


def _layers_by_name(net: pb.NetParameter) -> dict[str, pb.LayerParameter]:
    return {layer.name: layer for layer in net.layer}


def net_widths(net: pb.NetParameter, source: str = "<net>") -> OSLSMWidths:
    """Channel widths read from the num_output of the deploy net's layers."""
    layers = _layers_by_name(net)
    names = [f"conv{b}_1f" for b in range(1, 6)] + ["fc6f", "fc8f"]
    missing = [n for n in names if n not in layers]
    if missing:
        raise CaffeFormatError(f"{source}: not an OSLSM deploy net: no layer(s) {', '.join(missing)}")
    values = [layers[n].convolution_param.num_output for n in names[:5]]
    values += [layers[n].inner_product_param.num_output for n in names[5:]]
    return OSLSMWidths(*values)


def net_shots_and_query(net: pb.NetParameter, source: str = "<net>") -> tuple[int, tuple[int, int]]:
    """k (the support batch) and the query size from the Input layer's shapes."""
    inputs = [layer for layer in net.layer if layer.type == "Input"]
    if len(inputs) != 1 or len(inputs[0].top) != 4 or len(inputs[0].input_param.shape) != 4:
        raise CaffeFormatError(
            f"{source}: not an OSLSM deploy net: expected one Input layer with tops first_img, second_img, "
            "first_label, second_label and four shapes")
    shapes = {top: list(shape.dim) for top, shape in zip(inputs[0].top, inputs[0].input_param.shape)}
    if set(shapes) != {"first_img", "second_img", "first_label", "second_label"} \
            or any(len(s) != 4 for s in shapes.values()):
        raise CaffeFormatError(f"{source}: OSLSM Input layer must give 4-d first_img, second_img, first_label, "
                               f"second_label; found {shapes}")
    return int(shapes["first_img"][0]), (int(shapes["second_img"][2]), int(shapes["second_img"][3]))


def check_oslsm_net(net: pb.NetParameter, source: str = "<net>") -> tuple[int, OSLSMWidths, tuple[int, int]]:
    """Raise CaffeFormatError unless `net` is the OSLSM deploy topology (any k, widths and query
    size); returns (shots, widths, query_hw). Learning rates and engine choices are not compared."""
    widths = net_widths(net, source)
    shots, query_hw = net_shots_and_query(net, source)
    expected = oslsm_deploy_net(shots, widths, query_hw)
    actual = _layers_by_name(net)
    missing = [layer.name for layer in expected.layer
               if layer.name not in actual and layer.name not in _OPTIONAL_LAYERS]
    if missing:
        raise CaffeFormatError(f"{source}: not an OSLSM deploy net: missing layer(s) {', '.join(missing)}")
    expected_names = {layer.name for layer in expected.layer}
    extra = [name for name in actual if name not in expected_names]
    if extra:
        raise CaffeFormatError(f"{source}: layer(s) {', '.join(extra)} are not part of the OSLSM deploy net")
    for want in expected.layer:
        have = actual.get(want.name)
        if have is None:
            continue
        for field in ("type", "bottom", "top"):
            if list(_as_list(getattr(have, field))) != list(_as_list(getattr(want, field))):
                raise CaffeFormatError(
                    f"{source}: layer {want.name!r} has {field} {_show(getattr(have, field))}; "
                    f"the OSLSM deploy net has {_show(getattr(want, field))}")
        for field, _ in want.ListFields():
            if not field.name.endswith("_param") or field.name == "param":
                continue
            have_p, want_p = _without_engine(getattr(have, field.name)), _without_engine(getattr(want, field.name))
            if have_p != want_p:
                raise CaffeFormatError(
                    f"{source}: layer {want.name!r} {field.name} is {{{_compact(have_p)}}}; "
                    f"the OSLSM deploy net has {{{_compact(want_p)}}}")
    return shots, widths, query_hw


def _without_engine(message):
    copy = type(message)()
    copy.CopyFrom(message)
    if "engine" in copy.DESCRIPTOR.fields_by_name:
        copy.ClearField("engine")
    return copy


def _as_list(value):
    return [value] if isinstance(value, str) else value


def _show(value) -> str:
    return repr(value) if isinstance(value, str) else repr(list(value))


def _compact(message) -> str:
    from google.protobuf import text_format
    return text_format.MessageToString(message, as_one_line=True)

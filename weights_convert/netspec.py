"""Build Caffe NetParameter messages in Python and write them as prototxt text.

Small and general: `layer(...)` fills any LayerParameter from plain Python values
(nested dicts for sub-messages, lists for repeated fields, enum names as strings), and a
few builders cover the layer kinds that nets like OSLSM use. Only the fields passed are
set, so the result can be compared field-for-field with a hand-written prototxt.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Sequence

from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor

from weights_convert.files.atomic import atomic_write_text
from weights_convert.formats.schema import pb


def fill_message(message, values: Mapping[str, Any]):
    """Set the fields named in `values` on `message` (recursively); returns `message`."""
    for field_name, value in values.items():
        field = message.DESCRIPTOR.fields_by_name.get(field_name)
        if field is None:
            raise KeyError(f"{message.DESCRIPTOR.full_name} has no field {field_name!r}")
        is_message = field.type == FieldDescriptor.TYPE_MESSAGE
        if field.is_repeated:
            items = value if isinstance(value, (list, tuple)) else [value]
            container = getattr(message, field_name)
            for item in items:
                if is_message:
                    fill_message(container.add(), item)
                else:
                    container.append(_scalar(field, item))
        elif is_message:
            fill_message(getattr(message, field_name), value)
        else:
            setattr(message, field_name, _scalar(field, value))
    return message


def _scalar(field: FieldDescriptor, value: Any):
    if field.type == FieldDescriptor.TYPE_ENUM and isinstance(value, str):
        return field.enum_type.values_by_name[value].number
    return value


def param_spec(lr_mult: float | None = None, decay_mult: float | None = None,
               name: str | None = None) -> dict:
    """A ParamSpec as a dict for `layer(param=[...])`; only given fields are set."""
    spec = {}
    if name is not None:
        spec["name"] = name
    if lr_mult is not None:
        spec["lr_mult"] = lr_mult
    if decay_mult is not None:
        spec["decay_mult"] = decay_mult
    return spec


def layer(name: str, type: str, bottom: Sequence[str] = (), top: Sequence[str] | None = None,
          **fields: Any) -> pb.LayerParameter:
    """A LayerParameter; `top` defaults to the layer's name, `fields` are LayerParameter fields."""
    msg = pb.LayerParameter(name=name, type=type)
    msg.bottom.extend(bottom)
    msg.top.extend([name] if top is None else top)
    return fill_message(msg, fields)


def input_layer(name: str, tops: Sequence[str], shapes: Sequence[Sequence[int]]) -> pb.LayerParameter:
    return layer(name, "Input", top=tops, input_param={"shape": [{"dim": list(s)} for s in shapes]})


def convolution(name: str, bottom: str, num_output: int, kernel_size: int, *, pad: int | None = None,
                stride: int | None = None, bias_term: bool | None = None, engine: str | None = None,
                params: Iterable[dict] = (), type: str = "Convolution", top: str | None = None) -> pb.LayerParameter:
    conv: dict[str, Any] = {"num_output": num_output}
    if bias_term is not None:
        conv["bias_term"] = bias_term
    if pad is not None:
        conv["pad"] = [pad]
    conv["kernel_size"] = [kernel_size]
    if stride is not None:
        conv["stride"] = [stride]
    if engine is not None:
        conv["engine"] = engine
    return layer(name, type, [bottom], [top or name], param=list(params), convolution_param=conv)


def deconvolution(name: str, bottom: str, num_output: int, kernel_size: int, **kw) -> pb.LayerParameter:
    return convolution(name, bottom, num_output, kernel_size, type="Deconvolution", **kw)


def inner_product(name: str, bottom: str, num_output: int, params: Iterable[dict] = ()) -> pb.LayerParameter:
    return layer(name, "InnerProduct", [bottom], param=list(params),
                 inner_product_param={"num_output": num_output})


def relu(name: str, blob: str) -> pb.LayerParameter:
    """In-place ReLU (bottom == top), as VGG nets write it."""
    return layer(name, "ReLU", [blob], [blob])


def max_pool(name: str, bottom: str, *, kernel_size: int | None = None, stride: int | None = None,
             kernel_h: int | None = None, kernel_w: int | None = None) -> pb.LayerParameter:
    pool: dict[str, Any] = {"pool": "MAX"}
    for key, value in (("kernel_size", kernel_size), ("stride", stride),
                       ("kernel_h", kernel_h), ("kernel_w", kernel_w)):
        if value is not None:
            pool[key] = value
    return layer(name, "Pooling", [bottom], pooling_param=pool)


def reshape(name: str, bottom: Sequence[str], dims: Sequence[int], type: str = "Reshape") -> pb.LayerParameter:
    """Reshape (one bottom) or the OSLSM fork's ReshapeLike (second bottom gives the 0 dims)."""
    return layer(name, type, list(bottom), reshape_param={"shape": {"dim": list(dims)}})


def tile(name: str, bottom: str, axis: int, tiles: int) -> pb.LayerParameter:
    return layer(name, "Tile", [bottom], tile_param={"axis": axis, "tiles": tiles})


def net(layers: Iterable[pb.LayerParameter], name: str | None = None) -> pb.NetParameter:
    msg = pb.NetParameter()
    if name is not None:
        msg.name = name
    msg.layer.extend(layers)
    return msg


def net_to_text(net_param: pb.NetParameter) -> str:
    return text_format.MessageToString(net_param)


def write_net(net_param: pb.NetParameter, path: str | os.PathLike) -> None:
    atomic_write_text(path, net_to_text(net_param))

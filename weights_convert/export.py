"""A Caffe net as an artifact that runs without this kit: a `torch.export` program (.pt2, loaded by
`torch.export.load`) and ONNX (through torch's exporter, run by onnxruntime). The program is the
graph's own TEST-phase forward traced once, so Caffe's semantics (ceil pooling and its clipped
windows, Crop offsets, Caffe's padding, the fork's MatMult) are in it as the ops that compute them.

Height and width of every 4-D input are left to torch.export to keep symbolic: they stay so where
the net computes for any size (a fully convolutional net), and are fixed to the example's size
where it cannot (an InnerProduct over a spatial map). The artifact records which, with its input
and output names, in `ARTIFACT_META` (artifacts.py reads it)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from torch import nn

from weights_convert.artifacts import ARTIFACT_FORMAT, META_NAME
from weights_convert.files.atomic import atomic_path
from weights_convert.errors import CaffeFormatError, first_line
from weights_convert.graph import CaffeNet
from weights_convert.files.provenance import sha256_file

ONNX_OPSET = 18  # the torch exporter's default in torch 2.13, stated rather than implied


class _NetProgram(nn.Module):
    """The layers `outputs` depend on, with positional inputs (those they read) and a tuple of
    named blobs out: what torch.export traces."""

    def __init__(self, net: CaffeNet, outputs: Sequence[str]):
        super().__init__()
        self.net, self.outputs = net, list(outputs)
        self.layers, self.inputs = net.needed_for(self.outputs)

    def forward(self, *inputs):
        blobs = self.net.forward(dict(zip(self.inputs, inputs)), only=self.layers)
        return tuple(blobs[name] for name in self.outputs)


@dataclass
class ExportRecord:
    inputs: dict[str, list[int]]           # name -> the example shape the program was traced with
    dynamic: dict[str, bool]               # name -> whether its height and width stayed symbolic
    outputs: list[str]
    written: list[str] = field(default_factory=list)

    def meta(self, prototxt: str, weights: str | None) -> dict:
        return {"format": ARTIFACT_FORMAT, "inputs": list(self.inputs), "input_shapes": self.inputs,
                "dynamic_hw": self.dynamic,
                "outputs": self.outputs, "prototxt": os.path.basename(prototxt),
                "prototxt_sha256": sha256_file(prototxt),
                "weights_sha256": sha256_file(weights) if weights else None}


def build_program(prototxt: str | os.PathLike, weights: str | os.PathLike | None,
                  outputs: Sequence[str] | None = None) -> _NetProgram:
    net = CaffeNet.from_prototxt(prototxt, phase="TEST", skip_constant_frame=False)
    if weights is not None:
        net.load_weights(weights)
    else:
        net.refuse_missing_weights()
    # By default the net's outputs but its losses: a deployed artifact has no labels to score
    outputs = list(outputs) if outputs else [name for name in net.output_names if name not in net.loss_weights]
    unknown = [name for name in outputs if name not in net.blob_shapes]
    if unknown:
        raise CaffeFormatError(f"{prototxt}: no blob named {', '.join(unknown)} (--outputs)")
    return _NetProgram(net.eval(), outputs)


def export_program(prototxt: str | os.PathLike, weights: str | os.PathLike | None,
                   input_shapes: Mapping[str, Sequence[int]], out: str | os.PathLike,
                   onnx_out: str | os.PathLike | None = None, outputs: Sequence[str] | None = None) -> ExportRecord:
    """Write `out` (.pt2) and, when asked, `onnx_out`; each atomically."""
    prototxt = os.fspath(prototxt)
    program = build_program(prototxt, weights, outputs)
    shapes = {name: list(input_shapes.get(name, program.net.blob_shapes[name])) for name in program.inputs}
    unknown = sorted(set(input_shapes) - set(program.inputs))
    if unknown:
        raise CaffeFormatError(f"{prototxt}: --input-shape names {', '.join(unknown)}, not inputs that the outputs "
                               f"{', '.join(program.outputs)} read ({', '.join(program.inputs)})")
    example = tuple(torch.rand(shape) * 255 for shape in shapes.values())
    dims = tuple({2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO} if len(s) == 4 else None for s in shapes.values())
    exported = _traced(program, example, dims)
    record = ExportRecord(shapes, _dynamic_inputs(exported, list(shapes)), program.outputs)
    meta = json.dumps(record.meta(prototxt, os.fspath(weights) if weights else None), sort_keys=True)
    with atomic_path(out) as tmp:
        torch.export.save(exported, tmp, extra_files={META_NAME: meta})
    record.written.append(os.fspath(out))
    if onnx_out is not None:
        _write_onnx(exported, example, list(shapes), program.outputs, meta, onnx_out)
        record.written.append(os.fspath(onnx_out))
    return record


def _traced(program: _NetProgram, example, dims) -> torch.export.ExportedProgram:
    """torch.export of the program; a layer it cannot trace is named in one line."""
    entered: list[str] = []
    hooks = [layer.register_forward_pre_hook(lambda m, _: entered.append(m.name)) for layer in program.net.layers]
    try:
        with torch.no_grad():
            return torch.export.export(program, example, dynamic_shapes=(dims,))  # one entry: *inputs
    except Exception as exc:  # torch's tracing errors have no common base class
        where = f"layer '{entered[-1]}' (type {program.net.layer_by_name[entered[-1]].type})" if entered else "the net"
        why = first_line(exc)
        if isinstance(exc, CaffeFormatError):  # the graph's own message names the layer and the file
            why = why.split(" failed: ", 1)[-1]
        raise CaffeFormatError(f"{where} cannot be exported: {why}") from None
    finally:
        for hook in hooks:
            hook.remove()


def _dynamic_inputs(exported: torch.export.ExportedProgram, names: list[str]) -> dict[str, bool]:
    """Which inputs kept a symbolic height and width."""
    by_name = {n.name: n for n in exported.graph.nodes if n.op == "placeholder"}
    user = exported.graph_signature.user_inputs
    found = {}
    for name, node_name in zip(names, user):
        shape = by_name[node_name].meta["val"].shape
        found[name] = len(shape) == 4 and all(_symbolic(exported, d) for d in shape[2:])
    return found


def _symbolic(exported, size) -> bool:
    """A size the program computes for any value (a symbol with a range), not one fixed by a guard."""
    if not isinstance(size, torch.SymInt) or size.node.expr.is_number:
        return False
    bounds = exported.range_constraints.get(size.node.expr)
    return bounds is None or bounds.lower != bounds.upper


def _write_onnx(exported, example, inputs: list[str], outputs: list[str], meta: str, path) -> None:
    import logging

    import onnx

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # notes about optional packages (torchvision)
    exported = exported.run_decompositions({torch.ops.aten.avg_pool2d.default: _sum_pool})
    try:
        program = torch.onnx.export(exported, example, dynamo=True, opset_version=ONNX_OPSET,
                                    input_names=inputs, output_names=outputs, verbose=False)
    except Exception as exc:  # the exporter's own errors
        raise CaffeFormatError(f"ONNX export failed: {first_line(exc)}") from None
    model = program.model_proto
    entry = model.metadata_props.add()
    entry.key, entry.value = META_NAME, meta
    with atomic_path(path) as tmp:
        onnx.save_model(model, tmp)


def _sum_pool(x, kernel_size, stride=(), padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
    """The kit's window sums (avg_pool2d with divisor_override=1: Caffe's AVE pooling and LRN) as a
    per-channel convolution with ones. torch's ONNX exporter writes an AveragePool that divides by
    the window's area instead, silently (GoogLeNet's pool5 came out 49x too small)."""
    if divisor_override is None or ceil_mode or any(p != 0 for p in ([padding] if isinstance(padding, int) else padding)):
        raise CaffeFormatError("ONNX export: an average pooling other than the graph's window sums (divisor_override, "
                               "no padding, floor rounding) has no faithful ONNX form here")
    kernel = list(kernel_size) * (2 // len(kernel_size))
    ones = torch.ones(x.shape[1], 1, *kernel, dtype=x.dtype, device=x.device)
    return torch.nn.functional.conv2d(x, ones, stride=list(stride) or kernel, groups=x.shape[1]) / divisor_override


def parse_input_shapes(values: Sequence[str]) -> dict[str, list[int]]:
    """`name=1,3,H,W` options."""
    shapes = {}
    for value in values:
        name, _, dims = value.partition("=")
        try:
            shape = [int(d) for d in dims.split(",")]
        except ValueError:
            shape = []
        if not name or not shape or min(shape) < 1:
            raise CaffeFormatError(f"--input-shape {value!r}: expected NAME=D0,D1,... with positive integers")
        shapes[name] = shape
    return shapes

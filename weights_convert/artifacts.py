"""Running an exported net (.pt2 or .onnx, written by `export`) without the kit's graph: this
module imports neither the graph nor the layers, only torch (for .pt2) or onnxruntime (for
.onnx), so what it computes is what a user's own program would compute from the file."""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from weights_convert.errors import CaffeFormatError, first_line

ARTIFACT_FORMAT = "oslsm-repro-export/1"
META_NAME = "oslsm_repro.json"   # an extra file of the .pt2, a metadata_props key of the .onnx
ARTIFACT_SUFFIXES = (".pt2", ".onnx")


def is_export(path: str | os.PathLike) -> bool:
    """A .pt2 or .onnx written by `export` (its metadata names this kit's export format)."""
    if os.fspath(path).lower().endswith(".onnx"):
        try:
            import onnx

            model = onnx.load_model(os.fspath(path), load_external_data=False)
        except Exception:  # not ONNX at all
            return False
        return any(p.key == META_NAME for p in model.metadata_props)
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/" + META_NAME) or name == META_NAME for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


@dataclass
class Artifact:
    path: str
    meta: dict        # ExportRecord.meta(): inputs (in the program's order), input_shapes, dynamic_hw, outputs
    run: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]

    @property
    def inputs(self) -> list[str]:
        return list(self.meta["inputs"])

    @property
    def outputs(self) -> list[str]:
        return list(self.meta["outputs"])


def is_artifact(path: str | os.PathLike) -> bool:
    return os.fspath(path).lower().endswith(ARTIFACT_SUFFIXES)


def load_artifact(path: str | os.PathLike) -> Artifact:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CaffeFormatError(f"{path}: no such file")
    loader = _load_onnx if path.lower().endswith(".onnx") else _load_pt2
    return loader(path)


def _checked_meta(path: str, text: str | None) -> dict:
    try:
        meta = json.loads(text) if text else None
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != ARTIFACT_FORMAT:
        raise CaffeFormatError(f"{path}: not an export of this kit (no {META_NAME} of format {ARTIFACT_FORMAT}); "
                               "write it with `python -m weights_convert export`")
    return meta


def _inputs_in_order(path: str, meta: dict, arrays: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    missing = [n for n in meta["inputs"] if n not in arrays]
    if missing:
        raise CaffeFormatError(f"{path}: no array for input(s) {', '.join(missing)}")
    values = []
    for name in meta["inputs"]:
        shape = meta["input_shapes"][name]
        value = np.ascontiguousarray(arrays[name], dtype=np.float32)
        fixed = shape if not meta["dynamic_hw"].get(name) else shape[:2] + list(value.shape[2:])
        if list(value.shape) != list(fixed):
            raise CaffeFormatError(f"{path}: input {name} has shape {tuple(value.shape)}; this program was exported "
                                   f"for {tuple(fixed)}" + ("" if meta["dynamic_hw"].get(name) else
                                                            " (a fixed size: the net cannot compute for others)"))
        values.append(value)
    return values


def _load_pt2(path: str) -> Artifact:
    import torch

    extra = {META_NAME: ""}
    try:
        program = torch.export.load(path, extra_files=extra)
    except Exception as exc:  # a damaged or foreign archive
        raise CaffeFormatError(f"{path}: not a readable torch.export program ({first_line(exc, 200)})") from None
    meta = _checked_meta(path, extra[META_NAME])
    module = program.module()

    def run(arrays):
        values = [torch.from_numpy(v) for v in _inputs_in_order(path, meta, arrays)]
        try:
            with torch.no_grad():
                outs = module(*values)
        except Exception as exc:  # the program's own checks (its guards) on what it was given
            raise CaffeFormatError(f"{path}: the program refused its inputs: {first_line(exc)}") from None
        return {name: out.numpy() for name, out in zip(meta["outputs"], outs)}
    return Artifact(path, meta, run)


def _load_onnx(path: str) -> Artifact:
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own errors
        raise CaffeFormatError(f"{path}: not a readable ONNX model ({first_line(exc, 200)})") from None
    meta = _checked_meta(path, session.get_modelmeta().custom_metadata_map.get(META_NAME))

    def run(arrays):
        values = _inputs_in_order(path, meta, arrays)
        try:
            outs = session.run(meta["outputs"], dict(zip(meta["inputs"], values)))
        except Exception as exc:  # onnxruntime's checks on what it was given
            raise CaffeFormatError(f"{path}: onnxruntime refused its inputs: {first_line(exc)}") from None
        return dict(zip(meta["outputs"], outs))
    return Artifact(path, meta, run)

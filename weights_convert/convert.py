"""Caffe weights -> our .safetensors, in one of two forms, with a JSON report.

- graph: every blob of the net's learnable layers as "<layer>/<index>" (Caffe shapes), for
  the general graph interpreter;
- oslsm: the state of weights_convert.oslsm.OSLSM (hashing maps stored as index + sign
  when they are hashing maps, dense otherwise).

Everything is validated against the prototxt from blob headers before a single payload is
decoded or any output written; a .caffemodel's payloads are then streamed one tensor at a
time, so a 1.1 GB model never sits in memory twice.
"""
from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from weights_convert.files.atomic import atomic_write_text
from weights_convert.errors import CaffeFormatError
from weights_convert.formats.prototxt import load_net
from weights_convert.formats.safetensors_io import (LateValue, TensorEntry, caffemodel_to_safetensors, inspected,
                                                    safetensors_metadata, write_safetensors_streaming)
from weights_convert.formats.schema import pb
from weights_convert.formats.weights_io import BlobHandle, sniff_format
from weights_convert.layers.facts import owns_blobs
from weights_convert.files.provenance import sha256_file

FORMAT_NAME, FORMAT_VERSION = "oslsm-repro-weights", "1"
MODEL_FORMS = ("graph", "oslsm")
# Layer types that own learnable blobs (Scale/Bias only with one bottom).
class WeightSource:
    """Layer name -> blob handles of a weights file (.caffemodel streamed; others read whole)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._closer = None
        self.kind = sniff_format(self.path)
        if self.kind == "caffemodel":
            from weights_convert.formats.caffemodel import CaffeModelFile
            model = CaffeModelFile(self.path)
            self._closer = model.close
            self.types: dict[str, str] = {}
            self.layers: dict[str, list[BlobHandle]] = {}
            try:
                for record in model.layers():
                    if not record.blobs:
                        continue
                    if record.name in self.layers:
                        raise CaffeFormatError(f"{self.path}: layer {record.name!r} carries blobs more than once; "
                                               "expected unique names for layers with parameters")
                    self.types[record.name] = record.type
                    self.layers[record.name] = [BlobHandle(tuple(b.shape), b.read) for b in record.blobs]
            except BaseException:
                model.close()  # __exit__ never runs when the constructor fails
                raise
        else:
            from weights_convert.oslsm.loading import read_params  # the oslsm form expands to Caffe's blobs
            params = read_params(self.path)
            self.types = {}
            # None: a blob the file leaves out because its layer shares it (Caffe's HDF5)
            self.layers = {name: [None if a is None else BlobHandle(tuple(a.shape), (lambda a=a: a)) for a in blobs]
                           for name, blobs in params.items()}

    def close(self) -> None:
        if self._closer is not None:
            self._closer()

    def __enter__(self) -> "WeightSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------- validation


def check_graph_weights(net: pb.NetParameter, layers: Mapping[str, Sequence[BlobHandle]],
                        prototxt: str, weights: str) -> None:
    """Every learnable net layer has blobs and every blob-carrying layer is in the net;
    an OSLSM net is further checked blob shape by blob shape."""
    net_layers = {layer.name: layer for layer in net.layer}
    extra = [name for name in layers if name not in net_layers]
    if extra:
        raise CaffeFormatError(f"{weights}: layer(s) {', '.join(extra)} carry weights but {prototxt} has no "
                               "layer of that name; is this the right prototxt for these weights?")
    missing = [layer.name for layer in net.layer if owns_blobs(layer) and layer.name not in layers]
    if missing:
        raise CaffeFormatError(f"{weights}: no weights for layer(s) {', '.join(missing)} of {prototxt}")
    if _looks_like_oslsm(net):
        from weights_convert.oslsm.layout import check_params
        from weights_convert.oslsm.spec import check_oslsm_net
        _, widths, _ = check_oslsm_net(net, prototxt)
        check_params(layers, widths, source=f"{weights} (for {prototxt})")
    else:
        _check_shapes_with_graph(net, layers, prototxt, weights)


def _check_shapes_with_graph(net: pb.NetParameter, layers: Mapping[str, Sequence[BlobHandle]],
                             prototxt: str, weights: str) -> None:
    """Blob counts and shapes as the graph interpreter's shape inference sets them up
    (Caffe's ShapeEquals, legacy 4-d shapes included)."""
    from weights_convert.graph import CaffeNet

    graph = CaffeNet(net, source=prototxt, device="meta")
    for layer in graph.param_layers():
        try:
            graph.checked_blobs(layer, layers.get(layer.name, ()))
        except CaffeFormatError as exc:
            raise CaffeFormatError(f"{weights}: {exc} (checked against {prototxt})") from None


def _looks_like_oslsm(net: pb.NetParameter) -> bool:
    names = {layer.name for layer in net.layer}
    return {"rw1s", "rb1s", "fc8f", "fc7s", "uppred_offset"} <= names


# ---------------------------------------------------------------- conversion


def refuse_foreign_output(out: str) -> None:
    """An existing file at `out` that is not a .safetensors this converter wrote (a caffemodel, a
    prototxt, anything else) is the user's: refused, naming what it is."""
    if not os.path.exists(out):
        return
    if os.path.isdir(out):
        raise CaffeFormatError(f"{out} is a folder; --out expects a .safetensors file path")
    try:
        ours = sniff_format(out) == "safetensors" and safetensors_metadata(out).get("format") == FORMAT_NAME
    except CaffeFormatError:
        ours = False
    if not ours:
        raise CaffeFormatError(f"--out {out} exists and is not a conversion written by this kit; it is left "
                               "alone: name another file, or pass --force to replace it")


def convert(prototxt: str | os.PathLike, weights: str | os.PathLike, out: str | os.PathLike,
            model: str = "graph", labels: Mapping[str, str] | None = None, report: str | os.PathLike | None = None,
            source_sha256: str | None = None, force: bool = False) -> dict:
    """Convert `weights` (checked against `prototxt`) to `out`; returns the report (also written
    to `report` when given). `source_sha256` may be passed when the caller already hashed it.
    Non-finite values (NaN, infinity) are counted per tensor on the way and listed in the report.
    `labels` (e.g. the caller's {"fold": "2"}) go into the file's metadata and the report as given.
    An existing `out` is replaced only when it is a conversion of ours, or with `force`."""
    if model not in MODEL_FORMS:
        raise ValueError(f"model must be one of {MODEL_FORMS}, got {model!r}")
    prototxt, weights, out = os.fspath(prototxt), os.fspath(weights), os.fspath(out)
    if not force:
        refuse_foreign_output(out)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    net = load_net(prototxt)

    def timed_sha256() -> str:
        t0 = time.perf_counter()
        digest = source_sha256 or sha256_file(weights)
        timings["sha256_s"] = time.perf_counter() - t0  # overlaps validate_s and write_s
        return digest

    # The source is hashed in a second thread while it is checked and copied (hashlib and file
    # reads release the GIL); the digest is filled into the header before the rename.
    with ThreadPoolExecutor(1) as pool, WeightSource(weights) as source:
        hashed = pool.submit(timed_sha256)
        timings["scan_s"] = time.perf_counter() - start
        entries, hashing_info, extra_meta = _planned_entries(net, source, model, prototxt, weights)
        timings["validate_s"] = time.perf_counter() - start - timings["scan_s"]
        metadata = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "model": model,
                    "source": Path(weights).name, "source_sha256": LateValue(64, hashed.result),
                    "prototxt": Path(prototxt).name, "shots": "any", **extra_meta}
        labels = _checked_labels(labels, metadata)
        metadata.update(labels)
        if hashing_info is not None:
            metadata["hashing"] = ",".join(f"{k}:{v['form']}" for k, v in hashing_info.items())
        t = time.perf_counter()
        nonfinite = NonFiniteCount()
        if model == "graph" and source.kind == "caffemodel":
            # Same tensors as `entries`, but packed payloads are copied file to file undecoded.
            caffemodel_to_safetensors(weights, out, metadata, inspect=nonfinite)
        else:  # atomic (temporary file + rename)
            write_safetensors_streaming(out, [inspected(e, nonfinite) for e in entries], metadata)
        timings["write_s"] = time.perf_counter() - t
        result = _report(net, source, model, prototxt, labels, out, hashed.result(), entries, hashing_info)
    result["nonfinite"] = nonfinite.by_key
    result["timings"] = {**timings, "total_s": time.perf_counter() - start}
    if report is not None:
        atomic_write_text(report, json.dumps(result, indent=2) + "\n")
    return result


def warn_nonfinite(report: dict) -> None:
    """A warning on stderr when the conversion met NaN or infinite values."""
    bad = report.get("nonfinite") or {}
    if bad:
        listed = ", ".join(f"{key} ({n})" for key, n in bad.items())
        print(f"WARNING: {report['source']}: NaN or infinite values in {listed}; converted as they are, "
              "but `evaluate` refuses such weights unless --allow-nonfinite", file=sys.stderr)


class NonFiniteCount:
    """NaN and infinite values per float tensor, counted as the tensors stream by."""

    def __init__(self):
        self.by_key: dict[str, int] = {}

    def __call__(self, key: str, values: np.ndarray) -> None:
        if values.dtype.kind == "f":
            bad = int(values.size - np.count_nonzero(np.isfinite(values)))
            if bad:
                self.by_key[key] = self.by_key.get(key, 0) + bad


def _planned_entries(net: pb.NetParameter, source: WeightSource, model: str, prototxt: str, weights: str):
    """The checked tensors to write (read on demand), the hashing maps' description, extra metadata."""
    if model == "oslsm":
        return _oslsm_entries(net, source, prototxt, weights)
    check_graph_weights(net, source.layers, prototxt, weights)
    entries = [TensorEntry(f"{name}/{i}", blob.shape, "F32", _as_f32(blob))
               for name, blobs in source.layers.items() for i, blob in enumerate(blobs) if blob is not None]
    hashing_info = _detect_hashing(source.layers) if {"rw1s", "rb1s"} <= set(source.layers) else None
    return entries, hashing_info, {}


def _checked_labels(labels: Mapping[str, str] | None, metadata: Mapping[str, object]) -> dict[str, str]:
    labels = {str(k): str(v) for k, v in (labels or {}).items()}
    taken = sorted(set(labels) & set(metadata))
    if taken:
        raise CaffeFormatError(f"label(s) {', '.join(taken)} would replace what the converter records; use other names")
    return labels


def _report(net, source: WeightSource, model: str, prototxt: str, labels: dict[str, str], out: str, sha: str,
            entries: Sequence[TensorEntry], hashing_info: dict | None) -> dict:
    layers = source.layers
    return {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "model": model,
        "source": source.path, "source_sha256": sha, "source_bytes": os.path.getsize(source.path),
        "prototxt": prototxt, "labels": labels, "output": out, "output_bytes": os.path.getsize(out),
        "layers": [{"name": name, "type": source.types.get(name, _net_type(net, name)),
                    "blobs": [None if b is None else list(b.shape) for b in blobs]} for name, blobs in layers.items()],
        "param_count": int(sum(int(np.prod(b.shape)) for blobs in layers.values() for b in blobs if b is not None)),
        "tensors_written": len(entries),
        "hashing": {"found": bool(hashing_info) and any(v["form"] == "hashing" for v in hashing_info.values()),
                    "layers": hashing_info or {}},
    }


def _as_f32(blob: BlobHandle) -> Callable[[], np.ndarray]:
    return lambda: np.ascontiguousarray(blob.read(), dtype=np.float32)


def _net_type(net: pb.NetParameter, name: str) -> str:
    return next((layer.type for layer in net.layer if layer.name == name), "")


def _detect_hashing(layers: Mapping[str, Sequence[BlobHandle]]) -> dict:
    from weights_convert.oslsm.hashing_map import describe_maps

    weights = [layers[name][0].read() for name in ("rw1s", "rb1s")]
    return describe_maps(*(w.reshape(w.shape[-2:]) for w in weights))


def _oslsm_entries(net, source: WeightSource, prototxt: str, weights: str):
    """Validated OSLSM state entries (streamed from the one Caffe -> module mapping), hashing
    description and metadata."""
    from weights_convert.oslsm.hashing_map import map_description
    from weights_convert.oslsm.layout import check_params
    from weights_convert.oslsm.spec import check_oslsm_net
    from weights_convert.oslsm.state_map import HASHING_KEYS, state_from_caffe

    _, widths, _ = check_oslsm_net(net, prototxt)
    check_params(source.layers, widths, source=f"{weights} (for {prototxt})")
    state = state_from_caffe(source.layers, widths)
    dtypes = {np.float32: "F32", np.int32: "I32", np.int8: "I8"}
    entries = [TensorEntry(key, t.shape, dtypes[t.dtype], t.read) for key, t in state.items()]
    hashing = {name: map_description(key + ".index" in state, *state[key + ".bias"].shape, widths.embed)
               for name, key in HASHING_KEYS.items()}
    meta = {"widths": ",".join(str(w) for w in widths.as_tuple())}
    return entries, hashing, meta

"""Binary .caffemodel (a serialized NetParameter) reader and streaming writer.

The reader memory-maps the file and walks the protobuf wire format itself
(weights_convert.formats.wire): layer names, types and blob shapes are read
from the small headers, while each blob's packed payload is only located
(offset, count). Payloads are decoded on demand with positional reads into a
fresh array, so the mapping's payload pages are never touched and the 2 GB
protobuf message limit never applies. Both the V2 `layer` (field 100) and the
V1 `layers` (field 2, enum types, legacy 4-D blob dims) forms are read.

Shape rules follow Caffe's Blob::FromProto/ShapeEquals: if any legacy dim
(num/channels/height/width) is present the shape is those four numbers,
otherwise BlobShape.dim; `double_data` wins over `data` when both are present.
"""
from __future__ import annotations

import math
import mmap
import os
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from weights_convert.files.atomic import atomic_write
from weights_convert.errors import CaffeFormatError
from weights_convert.formats import wire
from weights_convert.formats.prototxt import V1_TYPE_NAMES, v1_type_name
from weights_convert.formats.schema import pb

# NetParameter / LayerParameter / V1LayerParameter / BlobProto / BlobShape field numbers
NET_NAME, NET_LAYER, NET_LAYERS_V1 = 1, 100, 2
LAYER_NAME, LAYER_TYPE, LAYER_BLOBS = 1, 2, 7
V1_LAYER_V0, V1_NAME, V1_TYPE, V1_BLOBS = 1, 4, 5, 6
BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH = 1, 2, 3, 4
BLOB_DATA, BLOB_DOUBLE_DATA, BLOB_SHAPE = 5, 8, 7
SHAPE_DIM = 1

MAX_BLOB_AXES = 32           # Caffe's kMaxBlobAxes
MAX_BLOB_COUNT = 2**31 - 1   # Caffe stores counts in int
_ENCODINGS = {"float32": np.dtype("<f4"), "float64": np.dtype("<f8")}
_READ_CHUNK = 1 << 30        # stay below Linux's ~2 GB per-read cap


class MappedFile:
    """An open weights file: descriptor for positional reads, mmap for header scanning."""

    def __init__(self, path: str, what: str = "a binary Caffe NetParameter"):
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise CaffeFormatError(f"{path}: cannot open weights file: {exc.strerror}") from None
        self.mm = None
        try:
            stat = os.fstat(self.fd)
            self.size = stat.st_size
            self.identity = _identity(stat)
            if self.size == 0:
                raise CaffeFormatError(f"{path}: byte 0: empty file; expected {what}")
            self.mm = mmap.mmap(self.fd, 0, access=mmap.ACCESS_READ)
            if hasattr(self.mm, "madvise") and hasattr(mmap, "MADV_RANDOM"):
                # Only headers are read through the map: no read-ahead into the payloads.
                self.mm.madvise(mmap.MADV_RANDOM)
        except BaseException:
            self.close()
            raise

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def close(self) -> None:
        if self.mm is not None:
            self.mm.close()
            self.mm = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def read_into(self, dest: memoryview, offset: int, where: str) -> None:
        """Fill `dest` (a byte view) from file position `offset`, without touching the mmap.
        After close (e.g. records from scan_caffemodel) the file is reopened for the read,
        provided it is still the same, unmodified file."""
        if not self.closed:
            self._pread_into(self.fd, dest, offset, where)
            return
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise CaffeFormatError(f"{where}: cannot reopen the file to read the blob: {exc.strerror}") from None
        try:
            if _identity(os.fstat(fd)) != self.identity:
                raise CaffeFormatError(
                    f"{where}: the file was replaced or modified after it was scanned; scan it again")
            self._pread_into(fd, dest, offset, where)
        finally:
            os.close(fd)

    @staticmethod
    def _pread_into(fd: int, dest: memoryview, offset: int, where: str) -> None:
        done = 0
        total = len(dest)
        while done < total:
            chunk = dest[done:done + _READ_CHUNK]
            got = os.preadv(fd, [chunk], offset + done)
            if got <= 0:
                raise CaffeFormatError(
                    f"{where}: byte {offset + done}: file ended while reading blob data "
                    f"({total - done} bytes missing); was the file changed while open?")
            done += got


def _identity(stat: os.stat_result) -> tuple[int, ...]:
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


@dataclass(frozen=True)
class BlobRecord:
    """One blob of a layer, located in the file but not yet decoded.

    `segments` lists where the values lie as (offset, count, stride) runs: a
    single run with stride = item size for the usual packed encoding, more runs
    for repeated fields that were split or written unpacked (one key per value).
    """
    shape: tuple[int, ...]
    encoding: str
    offset: int
    count: int
    segments: tuple[tuple[int, int, int], ...] = field(default=(), repr=False)
    source: MappedFile | None = field(default=None, repr=False, compare=False)
    where: str = field(default="", repr=False, compare=False)

    @property
    def itemsize(self) -> int:
        return _ENCODINGS[self.encoding].itemsize

    @property
    def is_contiguous(self) -> bool:
        """True when the payload is one packed run of `count` values starting at `offset`."""
        return self.count == 0 or (len(self.segments) == 1 and self.segments[0][2] == self.itemsize)

    def read(self) -> np.ndarray:
        """The blob as a new C-contiguous float32 array of `shape` (doubles rounded as Caffe's cast does)."""
        values = np.empty(self.count, dtype=_ENCODINGS[self.encoding])
        pos = 0
        for offset, count, stride in self.segments:
            if stride == self.itemsize:
                self.source.read_into(memoryview(values[pos:pos + count]).cast("B"), offset, self.where)
            else:
                # Unpacked repeated values: one value every `stride` bytes (slow path, rare).
                span = (count - 1) * stride + self.itemsize
                raw = bytearray(span)
                self.source.read_into(memoryview(raw), offset, self.where)
                values[pos:pos + count] = np.ndarray((count,), dtype=values.dtype, buffer=raw,
                                                     strides=(stride,))
            pos += count
        with np.errstate(over="ignore"):  # doubles beyond float range become +-inf, as in Caffe's cast
            return values.astype(np.float32, copy=False).reshape(self.shape)


@dataclass(frozen=True)
class LayerRecord:
    name: str
    type: str
    blobs: list[BlobRecord]


class CaffeModelFile:
    """A .caffemodel opened for reading; `layers()` scans it once (headers only)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._source = MappedFile(self.path)
        self._layers: list[LayerRecord] | None = None

    def layers(self) -> list[LayerRecord]:
        if self._source.closed:
            raise CaffeFormatError(f"{self.path}: CaffeModelFile is closed")
        if self._layers is None:
            self._layers = _scan_net(self._source)
        return list(self._layers)

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> "CaffeModelFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def scan_caffemodel(path: str | os.PathLike) -> list[LayerRecord]:
    """Layer records of a file, which is closed again: each BlobRecord.read() then reopens
    it (checking that it is unchanged). For many reads keep a CaffeModelFile open instead."""
    with CaffeModelFile(path) as model:
        return model.layers()


def read_caffemodel(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """Layer name -> its blobs as float32 arrays in Caffe's shapes, in file order;
    layers without blobs are left out. The whole file is validated before any blob is decoded."""
    with CaffeModelFile(path) as model:
        layers = [layer for layer in model.layers() if layer.blobs]
        _reject_duplicate_names(model.path, layers)
        return {layer.name: [blob.read() for blob in layer.blobs] for layer in layers}


def _reject_duplicate_names(path: str, layers: Sequence[LayerRecord]) -> None:
    seen: set[str] = set()
    for layer in layers:
        if layer.name in seen:
            raise CaffeFormatError(
                f"{path}: layer {layer.name!r} carries blobs more than once; "
                "expected unique names for layers with parameters")
        seen.add(layer.name)


# ---------------------------------------------------------------- scanning


def _scan_net(source: MappedFile) -> list[LayerRecord]:
    buf, path = source.mm, source.path
    layers: list[LayerRecord] = []
    forms: set[str] = set()
    for f in wire.iter_fields(buf, 0, source.size, path):
        if f.wire_type != wire.LENGTH_DELIMITED:
            continue  # protobuf treats a known field with another wire type as unknown
        if f.number == NET_LAYER:
            forms.add("V2 'layer'")
            layers.append(_scan_layer(source, f, len(layers), v1=False))
        elif f.number == NET_LAYERS_V1:
            forms.add("V1 'layers'")
            layers.append(_scan_layer(source, f, len(layers), v1=True))
    if len(forms) > 1:
        raise CaffeFormatError(
            f"{path}: holds both V2 'layer' and V1 'layers' entries; expected one form "
            "(Caffe refuses to upgrade such a net)")
    if not layers:
        raise CaffeFormatError(
            f"{path}: no layers found in {source.size} bytes; expected a binary Caffe NetParameter "
            "with 'layer' (field 100) or V1 'layers' (field 2) entries")
    return layers


def _scan_layer(source: MappedFile, layer_field: wire.Field, index: int, v1: bool) -> LayerRecord:
    buf, path = source.mm, source.path
    name_no, type_no, blobs_no = (V1_NAME, V1_TYPE, V1_BLOBS) if v1 else (LAYER_NAME, LAYER_TYPE, LAYER_BLOBS)
    name, type_name = "", ""
    blob_fields: list[wire.Field] = []

    def context() -> str:
        return f"layer #{index} {name!r} (message at byte {layer_field.key_offset})"

    try:
        for f in wire.iter_fields(buf, layer_field.start, layer_field.end, path):
            if f.number == name_no and f.wire_type == wire.LENGTH_DELIMITED:
                name = wire.decode_utf8(buf, f, path, "layer name")
            elif f.number == type_no and v1 and f.wire_type == wire.VARINT:
                type_name = _v1_type(f, path)
            elif f.number == type_no and not v1 and f.wire_type == wire.LENGTH_DELIMITED:
                type_name = wire.decode_utf8(buf, f, path, "layer type")
            elif f.number == blobs_no and f.wire_type == wire.LENGTH_DELIMITED:
                blob_fields.append(f)
            elif v1 and f.number == V1_LAYER_V0 and f.wire_type == wire.LENGTH_DELIMITED:
                raise CaffeFormatError(
                    f"{path}: byte {f.key_offset}: V1 layer wraps a V0 (pre-2014) layer definition; "
                    "this oldest format is not supported, upgrade the file with Caffe's upgrade_net_proto_binary")
    except CaffeFormatError as exc:
        raise CaffeFormatError(f"{exc} [in {context()}]") from None
    blobs = [scan_blob(source, f, f"{context()}: blob {i}") for i, f in enumerate(blob_fields)]
    return LayerRecord(name=name, type=type_name, blobs=blobs)


def _v1_type(f: wire.Field, path: str) -> str:
    value = wire.to_int64(f.value)
    try:
        return v1_type_name(value)
    except (ValueError, KeyError):
        raise CaffeFormatError(
            f"{path}: byte {f.start}: V1 layer type {value} is not a known V1LayerParameter.LayerType") from None


class _Runs:
    """Collects where a repeated fixed-width field's values lie, merging unpacked values into strided runs."""

    def __init__(self, itemsize: int):
        self.itemsize = itemsize
        self.runs: list[list[int]] = []  # [offset, count, stride, packed]

    def add_packed(self, start: int, end: int, path: str) -> None:
        length = end - start
        if length % self.itemsize:
            raise CaffeFormatError(
                f"{path}: byte {start}: packed payload of {length} bytes is not a multiple of "
                f"{self.itemsize} bytes per value")
        if length:
            self.runs.append([start, length // self.itemsize, self.itemsize, 1])

    def add_single(self, offset: int) -> None:
        last = self.runs[-1] if self.runs else None
        if last is not None and not last[3]:
            if last[1] == 1 and offset > last[0]:
                last[1], last[2] = 2, offset - last[0]
                return
            if offset == last[0] + last[1] * last[2]:
                last[1] += 1
                return
        self.runs.append([offset, 1, self.itemsize, 0])

    @property
    def count(self) -> int:
        return sum(run[1] for run in self.runs)

    def segments(self) -> tuple[tuple[int, int, int], ...]:
        return tuple((off, n, stride) for off, n, stride, _ in self.runs)


def scan_blob(source: MappedFile, blob_field: wire.Field, context: str) -> BlobRecord:
    buf, path = source.mm, source.path
    where = f"{path}: {context}"
    legacy: dict[int, int] = {}
    dims: list[int] = []
    floats, doubles = _Runs(4), _Runs(8)
    try:
        for f in wire.iter_fields(buf, blob_field.start, blob_field.end, path):
            n, wt = f.number, f.wire_type
            if n in (BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH) and wt == wire.VARINT:
                legacy[n] = wire.to_int64(f.value)
            elif n == BLOB_SHAPE and wt == wire.LENGTH_DELIMITED:
                dims.extend(_scan_shape(buf, f, path))
            elif n == BLOB_DATA and wt == wire.LENGTH_DELIMITED:
                floats.add_packed(f.start, f.end, path)
            elif n == BLOB_DATA and wt == wire.FIXED32:
                floats.add_single(f.start)
            elif n == BLOB_DOUBLE_DATA and wt == wire.LENGTH_DELIMITED:
                doubles.add_packed(f.start, f.end, path)
            elif n == BLOB_DOUBLE_DATA and wt == wire.FIXED64:
                doubles.add_single(f.start)
    except CaffeFormatError as exc:
        raise CaffeFormatError(f"{exc} [in {context}]") from None

    if legacy:
        shape = tuple(legacy.get(k, 0) for k in (BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH))
        shape_from = "legacy num/channels/height/width"
    else:
        shape = tuple(wire.to_int64(d) for d in dims)
        shape_from = "shape.dim"
    if len(shape) > MAX_BLOB_AXES:
        raise CaffeFormatError(f"{where}: {len(shape)} axes in {shape_from}; Caffe allows at most {MAX_BLOB_AXES}")
    if any(d < 0 for d in shape):
        raise CaffeFormatError(f"{where}: negative dimension in {shape_from} {shape}")
    if any(d > MAX_BLOB_COUNT for d in shape):
        raise CaffeFormatError(f"{where}: dimension over {MAX_BLOB_COUNT} in {shape_from} {shape}; Caffe stores dims as int")
    count = math.prod(shape)
    runs, encoding, field_name = (doubles, "float64", "double_data") if doubles.count else (floats, "float32", "data")
    if runs.count != count:
        raise CaffeFormatError(
            f"{where}: {field_name} holds {runs.count} values but its {shape_from} {shape} "
            f"needs {count}; expected equal element counts")
    if count > MAX_BLOB_COUNT:
        raise CaffeFormatError(f"{where}: {count} elements exceed Caffe's limit of {MAX_BLOB_COUNT}")
    segments = runs.segments()
    offset = segments[0][0] if segments else blob_field.start
    return BlobRecord(shape=shape, encoding=encoding, offset=offset, count=count,
                      segments=segments, source=source, where=where)


def _scan_shape(buf, shape_field: wire.Field, path: str) -> list[int]:
    dims: list[int] = []
    for f in wire.iter_fields(buf, shape_field.start, shape_field.end, path):
        if f.number == SHAPE_DIM and f.wire_type == wire.LENGTH_DELIMITED:
            dims.extend(wire.read_packed_varints(buf, f.start, f.end, path))
        elif f.number == SHAPE_DIM and f.wire_type == wire.VARINT:
            dims.append(f.value)
    return dims


# ---------------------------------------------------------------- writing

_V1_ENUM_BY_TYPE = {type_name: pb.V1LayerParameter.LayerType.Value(enum_name)
                    for enum_name, type_name in V1_TYPE_NAMES.items()}


def write_caffemodel(path: str | os.PathLike, params: Mapping[str, Sequence[np.ndarray]],
                     types: Mapping[str, str] | None = None, net_name: str = "") -> None:
    """Write a V2 NetParameter (`layer` entries with name, type and float32 blobs with
    shape.dim), layer by layer: only one layer's float32 arrays are held at a time.
    Fields are emitted in field-number order, as protobuf serializes them."""
    types = types or {}
    with atomic_write(path) as fh:
        if net_name:
            fh.write(wire.encode_bytes_field(NET_NAME, net_name.encode("utf-8")))
        for name, blobs in params.items():
            head = wire.encode_bytes_field(LAYER_NAME, _layer_name_bytes(name))
            if name in types:
                head += wire.encode_bytes_field(LAYER_TYPE, str(types[name]).encode("utf-8"))
            arrays = [_as_float32(path, name, i, b) for i, b in enumerate(blobs)]
            pieces = [(a, shape_field(a.shape)) for a in arrays]
            _write_layer(fh, NET_LAYER, head, LAYER_BLOBS, pieces, legacy=False)


def write_caffemodel_v1(path: str | os.PathLike, params: Mapping[str, Sequence[np.ndarray]],
                        types: Mapping[str, str]) -> None:
    """Write the V1 form (`layers` entries, enum types, legacy num/channels/height/width),
    as Caffe did before 2015. Blobs have at most 4 axes; fewer are padded with leading 1s."""
    with atomic_write(path) as fh:
        for name, blobs in params.items():
            type_name = types.get(name)
            if type_name not in _V1_ENUM_BY_TYPE:
                raise CaffeFormatError(
                    f"{path}: layer {name!r}: type {type_name!r} has no V1 LayerType enum value; "
                    f"expected one of {sorted(t for t in _V1_ENUM_BY_TYPE if t)}")
            head = (wire.encode_bytes_field(V1_NAME, _layer_name_bytes(name))
                    + wire.encode_varint_field(V1_TYPE, _V1_ENUM_BY_TYPE[type_name]))
            arrays = [_as_float32(path, name, i, b) for i, b in enumerate(blobs)]
            pieces = []
            for i, a in enumerate(arrays):
                if a.ndim > 4:
                    raise CaffeFormatError(
                        f"{path}: layer {name!r} blob {i}: {a.ndim}-D shape {a.shape} cannot be written "
                        "with legacy 4-D dims; expected at most 4 axes")
                legacy = (1,) * (4 - a.ndim) + a.shape
                dims = b"".join(wire.encode_varint_field(number, d) for number, d in
                                zip((BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH), legacy))
                pieces.append((a, dims))
            _write_layer(fh, NET_LAYERS_V1, head, V1_BLOBS, pieces, legacy=True)


def _write_layer(fh, layer_number: int, head: bytes, blobs_number: int, pieces, legacy: bool) -> None:
    """One layer message: its length is known from the blobs' sizes, so the prefix is written
    first and each payload is streamed from its array without building the message."""
    blob_parts = [blob_message(blobs_number, array, dims, legacy) for array, dims in pieces]
    layer_size = len(head) + sum(len(b) + a.nbytes + len(c) for b, a, c in blob_parts)
    fh.write(wire.encode_length_prefix(layer_number, layer_size))
    fh.write(head)
    write_parts(fh, blob_parts)


def blob_message(number: int, array: np.ndarray, dims: bytes, legacy: bool = False) -> tuple[bytes, np.ndarray, bytes]:
    """A BlobProto as field `number`: (bytes before the payload, the float32 payload, bytes
    after it), so that the payload is streamed from the array. Field-number order: legacy dims
    (1-4) come before data (5), shape (7) after it."""
    data_prefix = wire.encode_length_prefix(BLOB_DATA, array.nbytes) if array.size else b""
    before, after = (dims + data_prefix, b"") if legacy else (data_prefix, dims)
    size = len(before) + array.nbytes + len(after)
    return wire.encode_length_prefix(number, size) + before, array, after


def shape_field(shape: Sequence[int]) -> bytes:
    """BlobProto.shape (field 7) for `shape`."""
    return wire.encode_bytes_field(BLOB_SHAPE, wire.encode_packed_varints(SHAPE_DIM, shape))


def write_parts(fh, parts: Sequence[tuple[bytes, np.ndarray, bytes]]) -> None:
    for before, array, after in parts:
        fh.write(before)
        if array.size:
            fh.write(array.reshape(-1).view(np.uint8))
        fh.write(after)


def _layer_name_bytes(name) -> bytes:
    if not isinstance(name, str):
        raise CaffeFormatError(f"layer name {name!r} is not a string")
    return name.encode("utf-8")


def _as_float32(path, name: str, index: int, blob) -> np.ndarray:
    array = np.asarray(blob)
    if array.dtype.kind not in "fiub":
        raise CaffeFormatError(
            f"{path}: layer {name!r} blob {index}: dtype {array.dtype} cannot be stored as Caffe float32")
    # not np.ascontiguousarray: it turns 0-d blobs into 1-d ones
    with np.errstate(over="ignore"):
        return np.asarray(array, dtype="<f4", order="C")

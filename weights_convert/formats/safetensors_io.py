"""safetensors files written as a stream and read with full validation.

Layout (the safetensors spec): an 8-byte little-endian header length N, N bytes
of JSON ({key: {"dtype", "shape", "data_offsets": [begin, end]}, optional
"__metadata__": {str: str}}), then the tensors' little-endian bytes, offsets
relative to the end of the header, packed without gaps. Because the header
only needs shapes, the writer emits it first and then produces each tensor on
demand, so peak memory is about one tensor.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, replace
from typing import IO, Callable, Mapping, Sequence

import numpy as np
import xxhash

from weights_convert.files.atomic import atomic_write
from weights_convert.errors import CaffeFormatError

DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
          "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}
_DTYPE_BY_NUMPY = {np.dtype(v).newbyteorder("<"): k for k, v in DTYPES.items()}
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the reference implementation's limit
METADATA_KEY = "__metadata__"
# Our files record a checksum, checked on every read: XXH3-128 (at memory speed: a sha256 of a
# 1.1 GB model costs more than the conversion's own work; the source's sha256 stays, as the identity
# users compare) of the header, its own value blanked, and the data section, so that a damaged
# tensor name or shape is caught as well as damaged values. Files written before carry a sha256 of
# the data section alone, still checked.
DATA_DIGEST_KEY = "data_xxh3_128"
LEGACY_DATA_DIGEST_KEY = "data_sha256"
_DATA_DIGESTS = {DATA_DIGEST_KEY: xxhash.xxh3_128, LEGACY_DATA_DIGEST_KEY: hashlib.sha256}
_COPY_CHUNK = 4 * 1024 * 1024


@dataclass
class TensorEntry:
    """One tensor to write: `read()` produces it when its turn comes. `copy_to`, if given,
    writes exactly the tensor's little-endian bytes to a file instead (a zero-decode path)."""
    key: str
    shape: tuple[int, ...]
    dtype: str
    read: Callable[[], np.ndarray]
    copy_to: Callable[[IO[bytes]], None] | None = None

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(DTYPES[self.dtype]).itemsize


@dataclass(frozen=True)
class LateValue:
    """A metadata value known only once the tensors are written (the source's sha256, hashed in
    another thread meanwhile): `width` characters are reserved in the header and filled in
    before the file is renamed into place."""
    width: int
    compute: Callable[[], str]

    def placeholder(self, key: str) -> str:
        return f"<late {key}>".ljust(self.width, "#")[:self.width]


class _HashingWriter:
    """A file whose written bytes are hashed on the way (the data section's checksum)."""

    def __init__(self, fh: IO[bytes]):
        self.fh, self.digest = fh, _DATA_DIGESTS[DATA_DIGEST_KEY]()

    def write(self, data) -> int:
        self.digest.update(data)
        return self.fh.write(data)

    def tell(self) -> int:
        return self.fh.tell()


def write_safetensors_streaming(path: str | os.PathLike, entries: Sequence[TensorEntry],
                                metadata: Mapping[str, str | LateValue] | None) -> None:
    """Header first, then each entry's bytes in order; written atomically. The metadata records
    the checksum of the header and data (DATA_DIGEST_KEY), which every read checks."""
    path = os.fspath(path)
    data = None
    metadata = {**(metadata or {}), DATA_DIGEST_KEY: LateValue(32, lambda: file_checksum(final, data.digest))}
    late = {k: v for k, v in metadata.items() if isinstance(v, LateValue)}  # the checksum last
    header = _build_header(path, entries, {k: v.placeholder(k) if k in late else v for k, v in metadata.items()})
    final = header  # the header as it will read, but for the checksum's own placeholder
    with atomic_write(path) as raw:
        raw.write(len(header).to_bytes(8, "little"))
        raw.write(header)
        fh = data = _HashingWriter(raw)
        for entry in entries:
            start = fh.tell()
            if entry.copy_to is not None:
                entry.copy_to(fh)
            else:
                fh.write(_entry_bytes(path, entry))
            written = fh.tell() - start
            if written != entry.nbytes:
                raise CaffeFormatError(
                    f"{path}: tensor {entry.key!r} produced {written} bytes; expected {entry.nbytes}")
        for key, value in late.items():
            text = value.compute()
            if len(text) != value.width or not text.isalnum():
                raise ValueError(f"late metadata {key!r}: {text!r} is not {value.width} letters and digits")
            raw.seek(8 + header.index(value.placeholder(key).encode()))
            raw.write(text.encode())
            final = final.replace(value.placeholder(key).encode(), text.encode(), 1)


def file_checksum(header: bytes, data_digest) -> str:
    """XXH3-128 of the header (its checksum's placeholder in place) and of the data section's own
    XXH3-128 (computed as the data are written or read)."""
    return xxhash.xxh3_128(header + data_digest.digest()).hexdigest()


def _build_header(path: str, entries: Sequence[TensorEntry], metadata: Mapping[str, str]) -> bytes:
    header: dict = {}
    if metadata:
        bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise CaffeFormatError(f"{path}: metadata entries {bad!r} are not str -> str")
        header[METADATA_KEY] = dict(metadata)
    offset = 0
    for entry in entries:
        if entry.dtype not in DTYPES:
            raise CaffeFormatError(f"{path}: tensor {entry.key!r}: dtype {entry.dtype!r}; expected one of {sorted(DTYPES)}")
        if entry.key in header or entry.key == METADATA_KEY:
            raise CaffeFormatError(f"{path}: tensor key {entry.key!r} is used twice (or reserved)")
        shape = [int(d) for d in entry.shape]
        if any(d < 0 for d in shape):
            raise CaffeFormatError(f"{path}: tensor {entry.key!r}: negative dimension in {shape}")
        header[entry.key] = {"dtype": entry.dtype, "shape": shape,
                             "data_offsets": [offset, offset + entry.nbytes]}
        offset += entry.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # Pad with spaces so the data starts 8-byte aligned, as the reference writer does.
    return raw + b" " * (-(len(raw) + 8) % 8)


def _entry_bytes(path: str, entry: TensorEntry) -> memoryview:
    array = np.asarray(entry.read())
    if tuple(array.shape) != tuple(entry.shape):
        raise CaffeFormatError(
            f"{path}: tensor {entry.key!r}: produced shape {array.shape}; the header says {tuple(entry.shape)}")
    array = np.asarray(array, dtype=np.dtype(DTYPES[entry.dtype]), order="C")
    return memoryview(array.reshape(-1).view(np.uint8))


def entry_for_array(key: str, array: np.ndarray) -> TensorEntry:
    """A TensorEntry for an array already in memory."""
    array = np.asarray(array)
    try:
        dtype = _DTYPE_BY_NUMPY[array.dtype.newbyteorder("<")]
    except KeyError:
        raise CaffeFormatError(f"tensor {key!r}: numpy dtype {array.dtype} has no safetensors dtype") from None
    return TensorEntry(key=key, shape=tuple(array.shape), dtype=dtype, read=lambda: array)


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class _HeaderEntry:
    key: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All tensors (in data order) and the metadata; any deviation from the format raises
    CaffeFormatError naming the file and the byte offset or tensor."""
    path = os.fspath(path)
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise CaffeFormatError(f"{path}: cannot open safetensors file: {exc.strerror}") from None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        entries, metadata, data_start = read_safetensors_header(path, fh, size)
        written_key = next((k for k in _DATA_DIGESTS if k in metadata), None)
        data = _DATA_DIGESTS[written_key]() if written_key else None
        if written_key == DATA_DIGEST_KEY:  # the header as written, its checksum's placeholder back in place
            fh.seek(8)
            value = metadata[written_key].encode()
            header = fh.read(data_start - 8).replace(value, LateValue(len(value), str).placeholder(written_key).encode(), 1)
        tensors = {}
        for e in sorted(entries, key=lambda e: e.begin):
            array = np.empty(e.shape, dtype=np.dtype(DTYPES[e.dtype]))
            fh.seek(data_start + e.begin)
            view = memoryview(array.reshape(-1).view(np.uint8))
            if fh.readinto(view) != e.end - e.begin:
                raise CaffeFormatError(f"{path}: byte {data_start + e.begin}: file ended inside tensor {e.key!r}")
            if data is not None:
                data.update(view)
            tensors[e.key] = array.astype(array.dtype.newbyteorder("="), copy=False)
    if data is not None:
        found = file_checksum(header, data) if written_key == DATA_DIGEST_KEY else data.hexdigest()
        if found != metadata[written_key]:
            raise CaffeFormatError(f"{path}: damaged: its tensor bytes are not the ones written (their checksum is in "
                                   "its header); convert the model again")
    metadata = {k: v for k, v in metadata.items() if k not in _DATA_DIGESTS}  # the file's own record
    return {e.key: tensors[e.key] for e in entries}, metadata


def safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The `__metadata__` of a .safetensors file, read (and validated) without touching the tensors."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            _, metadata, _ = read_safetensors_header(path, fh, os.fstat(fh.fileno()).st_size)
    except OSError as exc:
        raise CaffeFormatError(f"{path}: cannot read: {exc.strerror}") from None
    return {k: v for k, v in metadata.items() if k not in _DATA_DIGESTS}


def read_safetensors_header(path: str, fh, size: int) -> tuple[list[_HeaderEntry], dict[str, str], int]:
    """Validated header entries sorted by offset, metadata and the data section's start."""
    if size < 8:
        raise CaffeFormatError(f"{path}: byte 0: file of {size} bytes is too short for a safetensors header length")
    fh.seek(0)
    n = int.from_bytes(fh.read(8), "little")
    if n > size - 8 or n > MAX_HEADER_BYTES:
        raise CaffeFormatError(
            f"{path}: byte 0: header length {n} runs past the end of the file ({size} bytes) "
            f"or over {MAX_HEADER_BYTES}; expected a safetensors file")
    raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CaffeFormatError(f"{path}: byte 8: safetensors header is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict):
        raise CaffeFormatError(f"{path}: byte 8: safetensors header is {type(header).__name__}; expected a JSON object")
    metadata = header.pop(METADATA_KEY, {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CaffeFormatError(f"{path}: byte 8: '{METADATA_KEY}' must map strings to strings")
    entries = sorted((_header_entry(path, key, value) for key, value in header.items()),
                     key=lambda e: (e.begin, e.end))
    data_size = size - 8 - n
    expected = 0
    for e in entries:
        if e.begin != expected:
            raise CaffeFormatError(
                f"{path}: tensor {e.key!r}: data_offsets start at {e.begin}; expected {expected} "
                "(tensors must be packed without gaps or overlaps)")
        expected = e.end
    if expected != data_size:
        raise CaffeFormatError(
            f"{path}: byte {8 + n}: tensors cover {expected} bytes but the data section holds {data_size}; "
            "file truncated or padded")
    return entries, metadata, 8 + n


def _header_entry(path: str, key: str, value) -> _HeaderEntry:
    where = f"{path}: tensor {key!r}"
    if not isinstance(value, dict) or set(value) - {"dtype", "shape", "data_offsets"} \
            or not {"dtype", "shape", "data_offsets"} <= set(value):
        raise CaffeFormatError(f"{where}: header entry {value!r}; expected {{dtype, shape, data_offsets}}")
    dtype, shape, offsets = value["dtype"], value["shape"], value["data_offsets"]
    if dtype not in DTYPES:
        raise CaffeFormatError(f"{where}: dtype {dtype!r} is not supported; expected one of {sorted(DTYPES)}")
    if not isinstance(shape, list) or not all(_is_count(d) and d < 2**62 for d in shape):
        raise CaffeFormatError(f"{where}: shape {shape!r}; expected a list of non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets) \
            or offsets[0] > offsets[1]:
        raise CaffeFormatError(f"{where}: data_offsets {offsets!r}; expected [begin, end] with 0 <= begin <= end")
    nbytes = math.prod(shape) * np.dtype(DTYPES[dtype]).itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise CaffeFormatError(
            f"{where}: data_offsets {offsets} span {offsets[1] - offsets[0]} bytes; shape {shape} of {dtype} "
            f"needs {nbytes}")
    return _HeaderEntry(key, dtype, tuple(shape), offsets[0], offsets[1])


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError(f"duplicate keys {sorted({k for k in keys if keys.count(k) > 1})}")
    return dict(pairs)


# ---------------------------------------------------------------- caffemodel -> safetensors


def caffemodel_to_safetensors(src: str | os.PathLike, dst: str | os.PathLike,
                              metadata: Mapping[str, str | LateValue] | None = None,
                              inspect: Callable[[str, np.ndarray], None] | None = None) -> None:
    """Convert blob by blob: keys "<layer>/<index>" (float32, Caffe shapes), in file order.
    Packed float32 payloads are copied file-to-file through one reusable buffer, so neither
    the arrays nor the source's mapped pages accumulate in memory. `inspect(key, values)`, when
    given, sees every tensor's values on the way (in pieces for copied payloads)."""
    from weights_convert.formats.caffemodel import CaffeModelFile

    src = os.fspath(src)
    with CaffeModelFile(src) as model:
        layers = [layer for layer in model.layers() if layer.blobs]
        names = [layer.name for layer in layers]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise CaffeFormatError(f"{src}: layers {dup} carry blobs more than once; expected unique names")
        buffer = bytearray(_COPY_CHUNK)
        entries = [_blob_entry(f"{layer.name}/{i}", blob, buffer, inspect)
                   for layer in layers for i, blob in enumerate(layer.blobs)]
        info = {"format": "caffe-blobs", "source": os.path.basename(src),
                "layer_types": json.dumps({layer.name: layer.type for layer in layers})}
        info.update(metadata or {})
        write_safetensors_streaming(dst, entries, info)


def _blob_entry(key: str, blob, buffer: bytearray, inspect: Callable[[str, np.ndarray], None] | None) -> TensorEntry:
    copy_to = _raw_copier(key, blob, buffer, inspect) if blob.encoding == "float32" and blob.is_contiguous else None
    entry = TensorEntry(key=key, shape=blob.shape, dtype="F32", read=blob.read, copy_to=copy_to)
    return entry if inspect is None or copy_to is not None else inspected(entry, inspect)


def inspected(entry: TensorEntry, inspect: Callable[[str, np.ndarray], None]) -> TensorEntry:
    """`entry`, its values shown to `inspect(key, values)` when read."""
    def read() -> np.ndarray:
        values = entry.read()
        inspect(entry.key, np.asarray(values))
        return values
    return replace(entry, read=read)


def _raw_copier(key: str, blob, buffer: bytearray,
                inspect: Callable[[str, np.ndarray], None] | None) -> Callable[[IO[bytes]], None]:
    def copy_to(fh: IO[bytes]) -> None:
        remaining, offset = blob.count * 4, blob.offset
        view = memoryview(buffer)
        while remaining:
            chunk = view[:min(remaining, len(buffer))]
            blob.source.read_into(chunk, offset, blob.where)
            if inspect is not None:  # chunks start at multiples of 4 bytes from the payload's start
                inspect(key, np.frombuffer(chunk, "<f4"))
            fh.write(chunk)
            offset += len(chunk)
            remaining -= len(chunk)
    return copy_to

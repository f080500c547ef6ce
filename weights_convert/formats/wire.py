"""Minimal protobuf wire-format scanner and encoder.

Reads fields straight out of a buffer (bytes or an mmap) without materialising
messages, so that a 1 GB caffemodel never goes through protobuf (whose 2 GB
message limit and copies we avoid). Every read is bounds-checked against the
enclosing message; errors name the source file and the byte offset.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from weights_convert.errors import CaffeFormatError

VARINT, FIXED64, LENGTH_DELIMITED, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5
WIRE_TYPE_NAMES = {VARINT: "varint", FIXED64: "fixed64", LENGTH_DELIMITED: "length-delimited",
                   START_GROUP: "start-group", END_GROUP: "end-group", FIXED32: "fixed32"}

_MAX_VARINT_BYTES = 10
_MAX_FIELD_NUMBER = (1 << 29) - 1


@dataclass(frozen=True)
class Field:
    """One field occurrence: for VARINT `value` is the decoded number; for the other
    wire types the payload is buf[start:end] (`value` is its length)."""
    number: int
    wire_type: int
    key_offset: int
    start: int
    end: int
    value: int


def read_varint(buf, pos: int, end: int, source: str) -> tuple[int, int]:
    """Decode one unsigned varint at `pos`; returns (value, position after it)."""
    result = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise CaffeFormatError(
                f"{source}: byte {start}: varint runs past the end of its message at byte {end}; "
                "expected a terminating byte (high bit clear): file truncated or corrupt")
        byte = buf[pos]
        pos += 1
        if pos - start == _MAX_VARINT_BYTES and byte > 1:
            raise CaffeFormatError(
                f"{source}: byte {start}: varint longer than 64 bits; expected at most 10 bytes")
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def to_int64(value: int) -> int:
    """Reinterpret a decoded varint as a two's-complement int64 (how int32/int64 fields store negatives)."""
    return value - (1 << 64) if value >= (1 << 63) else value


def iter_fields(buf, start: int, end: int, source: str) -> Iterator[Field]:
    """Yield the fields of the message occupying buf[start:end]."""
    pos = start
    while pos < end:
        key_offset = pos
        key, pos = read_varint(buf, pos, end, source)
        number, wire_type = key >> 3, key & 7
        if number == 0 or number > _MAX_FIELD_NUMBER:
            raise CaffeFormatError(
                f"{source}: byte {key_offset}: invalid field number {number}; "
                f"expected 1..{_MAX_FIELD_NUMBER} (corrupt data or not a protobuf file)")
        if wire_type == VARINT:
            value_start = pos
            value, pos = read_varint(buf, pos, end, source)
            yield Field(number, wire_type, key_offset, value_start, pos, value)
            continue
        if wire_type == LENGTH_DELIMITED:
            length, pos = read_varint(buf, pos, end, source)
            size = length
        elif wire_type == FIXED64:
            size = 8
        elif wire_type == FIXED32:
            size = 4
        elif wire_type in (START_GROUP, END_GROUP):
            raise CaffeFormatError(
                f"{source}: byte {key_offset}: field {number} uses the deprecated group wire type "
                f"({WIRE_TYPE_NAMES[wire_type]}), which no Caffe message contains; "
                "expected varint, fixed32, fixed64 or length-delimited (corrupt data?)")
        else:
            raise CaffeFormatError(
                f"{source}: byte {key_offset}: field {number} has invalid wire type {wire_type}; "
                "expected 0, 1, 2 or 5 (corrupt data or not a protobuf file)")
        if size > end - pos:
            raise CaffeFormatError(
                f"{source}: byte {key_offset}: field {number} "
                f"({WIRE_TYPE_NAMES[wire_type]}) needs {size} bytes from byte {pos}, "
                f"but its enclosing message ends at byte {end}: file truncated or corrupt")
        yield Field(number, wire_type, key_offset, pos, pos + size, size)
        pos += size


def read_packed_varints(buf, start: int, end: int, source: str) -> list[int]:
    """Values of a packed repeated varint field whose payload is buf[start:end]."""
    values = []
    pos = start
    while pos < end:
        value, pos = read_varint(buf, pos, end, source)
        values.append(value)
    return values


def decode_utf8(buf, field: Field, source: str, what: str) -> str:
    try:
        return bytes(buf[field.start:field.end]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CaffeFormatError(
            f"{source}: byte {field.start + exc.start}: {what} is not valid UTF-8") from None


# ---------------------------------------------------------------- encoding


def encode_varint(value: int) -> bytes:
    """Varint bytes of a non-negative integer, or of a negative int64 as its two's complement."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_key(number: int, wire_type: int) -> bytes:
    return encode_varint((number << 3) | wire_type)


def encode_length_prefix(number: int, length: int) -> bytes:
    """Key and length of a length-delimited field whose payload (of `length` bytes) follows."""
    return encode_key(number, LENGTH_DELIMITED) + encode_varint(length)


def encode_bytes_field(number: int, payload: bytes) -> bytes:
    return encode_length_prefix(number, len(payload)) + payload


def encode_varint_field(number: int, value: int) -> bytes:
    return encode_key(number, VARINT) + encode_varint(value)


def encode_packed_varints(number: int, values) -> bytes:
    """A packed repeated varint field; protobuf omits it entirely when empty."""
    if len(values) == 0:
        return b""
    return encode_bytes_field(number, b"".join(encode_varint(int(v)) for v in values))

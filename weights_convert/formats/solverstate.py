"""Caffe's binary .solverstate (a serialized SolverState): iteration, learning-rate step,
the snapshot's weights file and the momentum history, one BlobProto per learnable blob in the
net's learnable-param order. Read from the wire bytes like a .caffemodel (no 2 GB limit),
written streaming and atomically."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from weights_convert.files.atomic import atomic_write
from weights_convert.errors import CaffeFormatError
from weights_convert.formats import wire
from weights_convert.formats.caffemodel import MappedFile, blob_message, scan_blob, shape_field, write_parts

STATE_ITER, STATE_LEARNED_NET, STATE_HISTORY, STATE_CURRENT_STEP = 1, 2, 3, 4


@dataclass
class SolverState:
    iteration: int
    current_step: int
    learned_net: str           # as written: Caffe stores the snapshot's path as it named it
    history: list[np.ndarray]

    def learned_net_path(self, state_path: str | os.PathLike) -> str:
        """The weights file: as written if it exists, else beside the state file (Caffe
        writes paths relative to its working directory)."""
        if not self.learned_net:
            raise CaffeFormatError(f"{state_path}: names no weights file (learned_net is empty)")
        if os.path.isabs(self.learned_net) and os.path.exists(self.learned_net):
            return self.learned_net
        beside = os.path.join(os.path.dirname(os.fspath(state_path)), os.path.basename(self.learned_net))
        if os.path.exists(beside):
            return beside
        if os.path.exists(self.learned_net):
            return self.learned_net
        raise CaffeFormatError(f"{state_path}: its weights file {self.learned_net!r} is neither where it "
                               f"says nor beside the state file ({beside})")


def read_solverstate(path: str | os.PathLike) -> SolverState:
    path = os.fspath(path)
    source = MappedFile(path, "a binary Caffe SolverState")
    try:
        iteration, current_step, learned_net, records = 0, 0, "", []
        for f in wire.iter_fields(source.mm, 0, source.size, path):
            if f.number == STATE_ITER and f.wire_type == wire.VARINT:
                iteration = wire.to_int64(f.value)
            elif f.number == STATE_CURRENT_STEP and f.wire_type == wire.VARINT:
                current_step = wire.to_int64(f.value)
            elif f.number == STATE_LEARNED_NET and f.wire_type == wire.LENGTH_DELIMITED:
                learned_net = wire.decode_utf8(source.mm, f, path, "learned_net")
            elif f.number == STATE_HISTORY and f.wire_type == wire.LENGTH_DELIMITED:
                records.append(scan_blob(source, f, f"history blob #{len(records)}"))
        history = [record.read() for record in records]
    finally:
        source.close()
    if iteration < 0 or current_step < 0:
        raise CaffeFormatError(f"{path}: iter {iteration} and current_step {current_step} must not be negative")
    return SolverState(iteration, current_step, learned_net, history)


def write_solverstate(path: str | os.PathLike, iteration: int, current_step: int, learned_net: str,
                      history: Sequence[np.ndarray]) -> None:
    """Fields in number order, as protobuf serializes a SolverState."""
    with atomic_write(path) as fh:
        fh.write(wire.encode_varint_field(STATE_ITER, int(iteration)))
        fh.write(wire.encode_bytes_field(STATE_LEARNED_NET, learned_net.encode("utf-8")))
        parts = []
        for h in history:
            array = np.asarray(h, dtype="<f4", order="C")
            parts.append(blob_message(STATE_HISTORY, array, shape_field(array.shape)))
        write_parts(fh, parts)
        fh.write(wire.encode_varint_field(STATE_CURRENT_STEP, int(current_step)))

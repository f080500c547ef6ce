"""Truncated and bit-flipped weight files: every outcome is either CaffeFormatError or a
consistent result, never another exception and never a hang.

For caffemodels the reader is checked differentially against protobuf's own parser
plus Caffe's rules (Blob::FromProto): when both accept a file they must agree exactly.
"""
import contextlib
import math
import signal
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import GOLDEN
from weights_convert.errors import CaffeFormatError
from weights_convert.formats import wire
from weights_convert.formats.caffemodel import CaffeModelFile
from weights_convert.formats.hdf5 import read_caffemodel_h5
from weights_convert.formats.prototxt import v1_type_name
from weights_convert.formats.safetensors_io import caffemodel_to_safetensors
from weights_convert.formats.schema import pb
from weights_convert.formats.weights_io import read_weights

SMALL = sorted(p for p in GOLDEN.glob("*/weights*.caffemodel") if p.stat().st_size < 4000)
LARGE = GOLDEN / "oslsm_thin_1shot_120x200" / "weights.caffemodel"
FUZZ_FILES = SMALL + [GOLDEN / "deconv_oslsm" / "weights.caffemodel", LARGE]
HARD_TIMEOUT_S = 10
FUZZ = settings(max_examples=250, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


class Hang(Exception):
    pass


@contextlib.contextmanager
def hard_timeout(seconds=HARD_TIMEOUT_S):
    """Interrupt a call that loops forever (hypothesis' deadline only reports slow calls that end)."""
    def on_alarm(signum, frame):
        raise Hang(f"no result after {seconds} s")
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------- the two readers


def ours(path):
    """[(name, type, [(shape, float32 array)])] via our reader, or the CaffeFormatError raised."""
    try:
        with hard_timeout(), CaffeModelFile(path) as model:
            return [(l.name, l.type, [(b.shape, b.read()) for b in l.blobs]) for l in model.layers()]
    except CaffeFormatError as exc:
        return exc


def reference(raw: bytes):
    """The same view computed with protobuf + Caffe's rules; None when protobuf rejects the bytes,
    "error" when protobuf accepts them but Caffe would refuse the blobs."""
    try:
        net = pb.NetParameter.FromString(raw)
    except Exception:  # protobuf's DecodeError and friends
        return None
    if (len(net.layer) and len(net.layers)) or not (len(net.layer) or len(net.layers)):
        return "error"
    layers = []
    for layer in net.layers or net.layer:
        if net.layers:
            type_name = v1_type_name(layer.type) if layer.HasField("type") else ""
        else:
            type_name = layer.type
        blobs = [caffe_blob(blob) for blob in layer.blobs]
        if "error" in blobs:
            return "error"
        layers.append((layer.name, type_name, blobs))
    return layers


def caffe_blob(blob):
    """(shape, float32 values) as Caffe's Blob::FromProto makes them, or "error"."""
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = tuple(blob.shape.dim)
    values = np.array(blob.double_data if len(blob.double_data) else blob.data, dtype=np.float64)
    if len(shape) > 32 or any(d < 0 for d in shape) or values.size != math.prod(shape):
        return "error"
    with np.errstate(over="ignore"):
        return shape, values.astype(np.float32).reshape(shape)


def blobwise_reference(raw: bytes):
    """When protobuf rejects the whole file because of fields we never parse, each blob
    message on its own must still decode with protobuf exactly as we decoded it."""
    blobs = []
    for top in wire.iter_fields(raw, 0, len(raw), "mutant"):
        if top.number in (2, 100) and top.wire_type == wire.LENGTH_DELIMITED:
            blob_field = 6 if top.number == 2 else 7
            for f in wire.iter_fields(raw, top.start, top.end, "mutant"):
                if f.number == blob_field and f.wire_type == wire.LENGTH_DELIMITED:
                    blobs.append(caffe_blob(pb.BlobProto.FromString(raw[f.start:f.end])))
    return blobs


def assert_consistent(result):
    for name, type_name, blobs in result:
        assert isinstance(name, str) and isinstance(type_name, str)
        for shape, array in blobs:
            assert array.dtype == np.float32 and array.shape == shape and array.size == math.prod(shape)


def assert_same(got, want):
    assert [(n, t, [s for s, _ in b]) for n, t, b in got] == [(n, t, [s for s, _ in b]) for n, t, b in want]
    for (_, _, gb), (_, _, wb) in zip(got, want):
        for (_, g), (_, w) in zip(gb, wb):
            np.testing.assert_array_equal(g.view(np.uint32), w.view(np.uint32))


def check_mutant(path, raw: bytes, truncation_only: bool):
    path.write_bytes(raw)
    got = ours(path)
    want = reference(raw)
    if isinstance(got, CaffeFormatError):
        assert str(path) in str(got)
        if truncation_only:
            # truncations create nothing we are stricter about than protobuf + Caffe
            assert want is None or want == "error", f"rejected a file protobuf and Caffe accept: {got}"
        return got
    assert_consistent(got)
    if want is not None:
        assert want != "error", "accepted blobs Caffe would refuse"
        assert_same(got, want)
    else:  # protobuf rejects parts we never parse (e.g. a damaged convolution_param)
        blobs = blobwise_reference(raw)
        assert [s for _, _, b in got for s, _ in b] == [s for s, _ in blobs]
        for (_, g), (_, w) in zip([x for _, _, b in got for x in b], blobs):
            np.testing.assert_array_equal(g.view(np.uint32), w.view(np.uint32))
    return got


def test_the_reference_agrees_with_us_on_every_intact_golden_file(tmp_path):
    for path in FUZZ_FILES:
        raw = path.read_bytes()
        got, want = ours(path), reference(raw)
        assert not isinstance(got, Exception) and want not in (None, "error")
        assert_same(got, want)


# ---------------------------------------------------------------- truncations


@pytest.mark.parametrize("path", SMALL, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_truncation_of_small_golden_files(tmp_path, path):
    raw = path.read_bytes()
    accepted = 0
    for n in range(len(raw)):
        result = check_mutant(tmp_path / "t.caffemodel", raw[:n], truncation_only=True)
        accepted += not isinstance(result, Exception)
    # only cuts exactly between top-level fields parse (a net with fewer layers): there are few
    assert accepted <= 8


@lru_cache(maxsize=None)
def structural_offsets(path) -> tuple[int, ...]:
    """Byte offsets of every field key (not payload bytes): where damage changes the structure."""
    raw = path.read_bytes()
    offsets = []

    def walk(start, end, depth):
        for f in wire.iter_fields(raw, start, end, str(path)):
            offsets.extend(range(f.key_offset, f.start))
            if f.wire_type == wire.LENGTH_DELIMITED and depth < 4 and f.end - f.start < 2000:
                with contextlib.suppress(CaffeFormatError):
                    walk(f.start, f.end, depth + 1)
            elif f.wire_type == wire.LENGTH_DELIMITED and depth < 4:
                with contextlib.suppress(CaffeFormatError):  # big blob: walk its header fields only
                    walk_headers(f.start, f.end, depth + 1)

    def walk_headers(start, end, depth):
        for f in wire.iter_fields(raw, start, end, str(path)):
            offsets.extend(range(f.key_offset, f.start))
            if f.number in (7, 100, 2) and f.wire_type == wire.LENGTH_DELIMITED:
                walk(f.start, f.end, depth + 1)

    walk(0, len(raw), 0)
    return tuple(sorted(set(offsets)))


def test_dense_truncations_of_the_thin_oslsm_model(tmp_path):
    raw = LARGE.read_bytes()
    keys = structural_offsets(LARGE)
    assert len(keys) > 300
    cuts = sorted({k + d for k in keys for d in (-1, 0, 1, 2) if 0 <= k + d < len(raw)})
    rng = np.random.default_rng(20171)
    cuts += rng.integers(0, len(raw), size=200).tolist()
    for n in cuts:
        check_mutant(tmp_path / "t.caffemodel", raw[:n], truncation_only=True)


@FUZZ
@given(data=st.data())
def test_hypothesis_truncations(tmp_path_factory, data):
    path = data.draw(st.sampled_from(FUZZ_FILES), label="file")
    raw = path.read_bytes()
    n = data.draw(st.integers(0, len(raw) - 1), label="length")
    check_mutant(tmp_path_factory.mktemp("trunc") / "t.caffemodel", raw[:n], truncation_only=True)


# ---------------------------------------------------------------- bit flips


@FUZZ
@given(data=st.data())
def test_hypothesis_bit_flips(tmp_path_factory, data):
    path = data.draw(st.sampled_from(FUZZ_FILES), label="file")
    raw = bytearray(path.read_bytes())
    keys = structural_offsets(path)
    for _ in range(data.draw(st.integers(1, 4), label="flips")):
        # mostly hit the structure (keys, lengths); payload flips only change values
        position = data.draw(st.one_of(st.sampled_from(keys), st.integers(0, len(raw) - 1)), label="byte")
        raw[position] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    check_mutant(tmp_path_factory.mktemp("flip") / "f.caffemodel", bytes(raw), truncation_only=False)


def test_seeded_random_byte_overwrites_reach_every_outcome(tmp_path):
    """Without hypothesis: a fixed sample of heavier damage, checking that both outcomes occur."""
    rng = np.random.default_rng(7)
    outcomes = set()
    for i in range(300):
        path = FUZZ_FILES[i % len(FUZZ_FILES)]
        raw = bytearray(path.read_bytes())
        keys = structural_offsets(path)
        for _ in range(int(rng.integers(1, 6))):
            raw[keys[int(rng.integers(len(keys)))]] = int(rng.integers(256))
        result = check_mutant(tmp_path / "o.caffemodel", bytes(raw), truncation_only=False)
        outcomes.add(isinstance(result, Exception))
    assert outcomes == {True, False}


# ---------------------------------------------------------------- the other formats


def load_any(path):
    try:
        with hard_timeout():
            params = read_weights(path)
    except CaffeFormatError as exc:
        assert str(path) in str(exc)
        return exc
    for name, blobs in params.items():
        assert isinstance(name, str)
        for array in blobs:
            assert isinstance(array, np.ndarray) and array.dtype == np.float32
    return params


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    dst = tmp_path_factory.mktemp("conv") / "w.safetensors"
    caffemodel_to_safetensors(GOLDEN / "conv_basic" / "weights.caffemodel", dst)
    return dst.read_bytes()


@FUZZ
@given(data=st.data())
def test_safetensors_damage(tmp_path_factory, converted, data):
    raw = bytearray(converted)
    header_end = 8 + int.from_bytes(raw[:8], "little")
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[:data.draw(st.integers(0, len(raw) - 1), label="length")]
    else:
        for _ in range(data.draw(st.integers(1, 3), label="flips")):
            position = data.draw(st.integers(0, header_end - 1), label="byte")  # data bytes have no structure
            raw[position] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    path = tmp_path_factory.mktemp("st") / "w.safetensors"
    path.write_bytes(bytes(raw))
    load_any(path)


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_hdf5_damage(tmp_path_factory, data):
    raw = bytearray((GOLDEN / "conv_basic" / "weights.caffemodel.h5").read_bytes())
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[:data.draw(st.integers(0, len(raw) - 1), label="length")]
        expect_error = True
    else:
        position = data.draw(st.integers(0, len(raw) - 1), label="byte")
        raw[position] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        expect_error = False
    path = tmp_path_factory.mktemp("h5") / "w.caffemodel.h5"
    path.write_bytes(bytes(raw))
    result = load_any(path)
    if expect_error:
        assert isinstance(result, CaffeFormatError)
    elif not isinstance(result, Exception):
        assert list(result) == ["c"] and [b.shape for b in result["c"]] == [(5, 3, 3, 3), (5,)]


def test_hdf5_reader_is_what_read_weights_uses_for_hdf5():
    path = GOLDEN / "conv_basic" / "weights.caffemodel.h5"
    a, b = read_caffemodel_h5(path), read_weights(path)
    assert list(a) == list(b) == ["c"]

"""Streaming safetensors writer/reader and the caffemodel -> safetensors conversion."""
import json
import struct

import numpy as np
import pytest
import safetensors.numpy

from helpers import GOLDEN
from weights_convert.errors import CaffeFormatError
from weights_convert.formats.caffemodel import read_caffemodel, write_caffemodel
from weights_convert.formats.safetensors_io import (TensorEntry, caffemodel_to_safetensors, entry_for_array,
                                                    read_safetensors, write_safetensors_streaming)
from weights_convert.formats.schema import pb
from weights_convert.formats.weights_io import read_weights, sniff_format

OSLSM = GOLDEN / "oslsm_thin_1shot_500x500" / "weights.caffemodel"


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def test_streaming_writer_round_trip_all_dtypes(tmp_path):
    rng = np.random.default_rng(5)
    arrays = {
        "f32/4d": rng.standard_normal((2, 3, 4, 5)).astype(np.float32),
        "scalar": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0, 7), dtype=np.float32),
        "f64": rng.standard_normal(5),
        "i32": np.arange(-3, 3, dtype=np.int32),
        "i8": np.array([-128, 127], dtype=np.int8),
        "u8": np.array([[0, 255]], dtype=np.uint8),
        "bool": np.array([True, False, True]),
        "f16": np.array([1.5, -2.0], dtype=np.float16),
    }
    path = tmp_path / "t.safetensors"
    write_safetensors_streaming(path, [entry_for_array(k, v) for k, v in arrays.items()], {"who": "test"})
    tensors, metadata = read_safetensors(path)
    assert metadata == {"who": "test"} and list(tensors) == list(arrays)
    for key, want in arrays.items():
        assert tensors[key].dtype == want.dtype and tensors[key].shape == want.shape
        np.testing.assert_array_equal(tensors[key], want)
    # the reference implementation reads our file identically, and the data section is 8-byte aligned
    theirs = safetensors.numpy.load_file(path)
    for key, want in arrays.items():
        np.testing.assert_array_equal(theirs[key], want)
    header_len = struct.unpack("<Q", path.read_bytes()[:8])[0]
    assert header_len % 8 == 0


def test_writer_produces_tensors_one_at_a_time_in_order(tmp_path):
    produced = []

    def producer(i):
        def read():
            produced.append(i)
            assert produced == list(range(i + 1))  # earlier tensors already written, later not yet made
            return np.full((i + 1, 2), i, dtype=np.float32)
        return read

    entries = [TensorEntry(f"t{i}", (i + 1, 2), "F32", producer(i)) for i in range(4)]
    write_safetensors_streaming(tmp_path / "s.safetensors", entries, {})
    tensors, metadata = read_safetensors(tmp_path / "s.safetensors")
    assert metadata == {} and [t[0, 0] for t in tensors.values()] == [0, 1, 2, 3]


def test_writer_checks_what_entries_produce_and_leaves_no_file(tmp_path):
    bad = [TensorEntry("a", (2, 2), "F32", lambda: np.zeros((2, 3), np.float32))]
    with pytest.raises(CaffeFormatError, match=r"tensor 'a': produced shape \(2, 3\); the header says \(2, 2\)"):
        write_safetensors_streaming(tmp_path / "x.safetensors", bad, {})
    with pytest.raises(CaffeFormatError, match="used twice"):
        write_safetensors_streaming(tmp_path / "x.safetensors", [entry_for_array("a", np.zeros(1))] * 2, {})
    with pytest.raises(CaffeFormatError, match="metadata"):
        write_safetensors_streaming(tmp_path / "x.safetensors", [], {"n": 1})
    assert list(tmp_path.iterdir()) == []


def test_reading_files_of_the_reference_writer(tmp_path):
    rng = np.random.default_rng(9)
    arrays = {"b": rng.standard_normal((3, 3)).astype(np.float32), "a": np.arange(4, dtype=np.int64)}
    safetensors.numpy.save_file(arrays, tmp_path / "r.safetensors", metadata={"k": "v"})
    tensors, metadata = read_safetensors(tmp_path / "r.safetensors")
    assert metadata == {"k": "v"} and sorted(tensors) == ["a", "b"]
    for key in arrays:
        np.testing.assert_array_equal(tensors[key], arrays[key])


@pytest.mark.parametrize("case", ["oslsm_thin_1shot_500x500", "conv_basic", "batchnorm_global"])
def test_caffemodel_to_safetensors_equals_golden_params(case, tmp_path):
    dst = tmp_path / "w.safetensors"
    caffemodel_to_safetensors(GOLDEN / case / "weights.caffemodel", dst, {"fold": "0"})
    tensors, metadata = read_safetensors(dst)
    with np.load(GOLDEN / case / "params.npz") as npz:
        assert list(tensors) == list(npz.files)
        for key in npz.files:
            assert tensors[key].shape == npz[key].shape
            np.testing.assert_array_equal(bits(tensors[key]), bits(npz[key]))
    assert metadata["fold"] == "0" and metadata["source"] == "weights.caffemodel"
    types = json.loads(metadata["layer_types"])
    assert all(types[key.rsplit("/", 1)[0]] for key in tensors)
    # read_weights regroups "<layer>/<index>" into the caffemodel's own structure
    assert sniff_format(dst) == "safetensors"
    regrouped, original = read_weights(dst), read_caffemodel(GOLDEN / case / "weights.caffemodel")
    assert list(regrouped) == list(original)
    for name in original:
        for a, b in zip(regrouped[name], original[name], strict=True):
            np.testing.assert_array_equal(bits(a), bits(b))


def test_conversion_of_double_data_unpacked_and_slashed_names(tmp_path):
    net = pb.NetParameter()
    layer = net.layer.add(name="inception_3a/1x1", type="Convolution")
    layer.blobs.add(shape=pb.BlobShape(dim=[2, 2]), double_data=[0.1, 0.2, 0.3, 1e300])
    layer.blobs.add(num=1, channels=1, height=1, width=2, data=[5.0, 6.0])
    (tmp_path / "d.caffemodel").write_bytes(net.SerializeToString())
    caffemodel_to_safetensors(tmp_path / "d.caffemodel", tmp_path / "d.safetensors")
    got = read_weights(tmp_path / "d.safetensors")
    with np.errstate(over="ignore"):
        want = np.array([0.1, 0.2, 0.3, 1e300]).astype(np.float32).reshape(2, 2)
    np.testing.assert_array_equal(bits(got["inception_3a/1x1"][0]), bits(want))
    assert got["inception_3a/1x1"][1].shape == (1, 1, 1, 2)


def test_round_trip_through_our_caffemodel_writer(tmp_path):
    rng = np.random.default_rng(1)
    params = {"a": [rng.standard_normal((5, 4, 3, 3)).astype(np.float32)], "b": [np.array(1.0, np.float32)],
              "c": [np.zeros((0,), np.float32), rng.standard_normal(3).astype(np.float32)]}
    write_caffemodel(tmp_path / "m.caffemodel", params)
    caffemodel_to_safetensors(tmp_path / "m.caffemodel", tmp_path / "m.safetensors")
    got = read_weights(tmp_path / "m.safetensors")
    assert list(got) == list(params)
    for name in params:
        for a, b in zip(got[name], params[name], strict=True):
            assert a.shape == b.shape
            np.testing.assert_array_equal(bits(a), bits(b))


def test_a_bad_caffemodel_leaves_no_safetensors_file(tmp_path):
    net = pb.NetParameter()
    net.layer.add(name="x").blobs.add(shape=pb.BlobShape(dim=[3]), data=[1.0])
    (tmp_path / "bad.caffemodel").write_bytes(net.SerializeToString())
    with pytest.raises(CaffeFormatError, match="'x'.*blob 0.*1 values.*needs 3"):
        caffemodel_to_safetensors(tmp_path / "bad.caffemodel", tmp_path / "out.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.caffemodel"]


# ---------------------------------------------------------------- malformed files


def safetensors_bytes(header, data=b"") -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


GOOD_ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize("raw, pattern", [
    (b"", r"byte 0: file of 0 bytes is too short"),
    (b"\x05\x00\x00", r"byte 0: file of 3 bytes"),
    (struct.pack("<Q", 1000) + b"{}", r"byte 0: header length 1000 runs past the end"),
    (struct.pack("<Q", 2**64 - 1) + b"{}", r"byte 0: header length 18446744073709551615"),
    (safetensors_bytes(b"{not json"), r"byte 8: safetensors header is not valid UTF-8 JSON"),
    (safetensors_bytes(b"\xff\xfe"), r"byte 8: .*not valid UTF-8"),
    (safetensors_bytes(b"[1, 2]"), r"header is list; expected a JSON object"),
    (safetensors_bytes(b'{"a": 1, "a": 2}'), r"duplicate keys \['a'\]"),
    (safetensors_bytes({"__metadata__": {"k": 1}}), r"'__metadata__' must map strings to strings"),
    (safetensors_bytes({"t": {"dtype": "F32", "shape": [2]}}, b"\0" * 8), r"tensor 't': header entry"),
    (safetensors_bytes({"t": dict(GOOD_ENTRY, dtype="Q7")}, b"\0" * 8), r"dtype 'Q7' is not supported"),
    (safetensors_bytes({"t": dict(GOOD_ENTRY, shape=[-2])}, b"\0" * 8), r"shape \[-2\]"),
    (safetensors_bytes({"t": dict(GOOD_ENTRY, shape=[2.0])}, b"\0" * 8), r"shape \[2.0\]"),
    (safetensors_bytes({"t": dict(GOOD_ENTRY, data_offsets=[8, 0])}, b"\0" * 8), r"data_offsets \[8, 0\]"),
    (safetensors_bytes({"t": dict(GOOD_ENTRY, shape=[3])}, b"\0" * 8), r"span 8 bytes; shape \[3\] of F32 needs 12"),
    (safetensors_bytes({"t": GOOD_ENTRY}, b"\0" * 7), r"tensors cover 8 bytes but the data section holds 7"),
    (safetensors_bytes({"t": GOOD_ENTRY}, b"\0" * 9), r"tensors cover 8 bytes but the data section holds 9"),
    (safetensors_bytes({"t": GOOD_ENTRY, "u": GOOD_ENTRY}, b"\0" * 8), r"start at 0; expected 8"),
    (safetensors_bytes({"t": dict(GOOD_ENTRY, data_offsets=[4, 12])}, b"\0" * 12), r"start at 4; expected 0"),
])
def test_malformed_safetensors(tmp_path, raw, pattern):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(raw)
    with pytest.raises(CaffeFormatError, match=pattern) as err:
        read_safetensors(path)
    assert str(path) in str(err.value)


def test_every_truncation_of_a_converted_file_is_rejected(tmp_path):
    caffemodel_to_safetensors(GOLDEN / "conv_basic" / "weights.caffemodel", tmp_path / "w.safetensors")
    raw = (tmp_path / "w.safetensors").read_bytes()
    for n in range(len(raw)):
        (tmp_path / "t.safetensors").write_bytes(raw[:n])
        with pytest.raises(CaffeFormatError, match="t.safetensors"):
            read_safetensors(tmp_path / "t.safetensors")


def test_read_weights_rejects_foreign_safetensors_keys(tmp_path):
    write_safetensors_streaming(tmp_path / "k.safetensors", [entry_for_array("conv1.weight", np.zeros(2, np.float32))], {})
    with pytest.raises(CaffeFormatError, match=r"tensor key 'conv1.weight'; expected '<layer name>/<blob index>'"):
        read_weights(tmp_path / "k.safetensors")
    # A blob left out for sharing (as Caffe's HDF5 does) is a gap, not an error here.
    write_safetensors_streaming(tmp_path / "g.safetensors", [entry_for_array("l/1", np.ones(2, np.float32))], {})
    gap = read_weights(tmp_path / "g.safetensors")["l"]
    assert gap[0] is None and np.array_equal(gap[1], np.ones(2, np.float32))
    write_safetensors_streaming(tmp_path / "i.safetensors", [entry_for_array("l/0", np.zeros(2, np.int32))], {})
    with pytest.raises(CaffeFormatError, match="dtype int32; expected float32"):
        read_weights(tmp_path / "i.safetensors")


def test_read_weights_dispatches_on_content_not_extension(tmp_path):
    caffemodel_to_safetensors(OSLSM, tmp_path / "model.caffemodel")  # safetensors despite the name
    (tmp_path / "model.safetensors").write_bytes(OSLSM.read_bytes())  # a caffemodel despite the name
    assert sniff_format(tmp_path / "model.caffemodel") == "safetensors"
    assert sniff_format(tmp_path / "model.safetensors") == "caffemodel"
    a, b = read_weights(tmp_path / "model.caffemodel"), read_weights(tmp_path / "model.safetensors")
    assert list(a) == list(b) and all(np.array_equal(x, y) for n in a for x, y in zip(a[n], b[n], strict=True))


def test_late_metadata_is_filled_before_the_rename(tmp_path):
    from weights_convert.formats.safetensors_io import LateValue, entry_for_array, write_safetensors_streaming

    entries = [entry_for_array("a", np.arange(6, dtype=np.float32).reshape(2, 3))]
    out = tmp_path / "late.safetensors"
    write_safetensors_streaming(out, entries, {"sha": LateValue(64, lambda: "ab" * 32), "plain": "x"})
    tensors, meta = read_safetensors(out)
    assert meta == {"sha": "ab" * 32, "plain": "x"} and tensors["a"].tolist() == [[0, 1, 2], [3, 4, 5]]
    bad = tmp_path / "bad.safetensors"
    with pytest.raises(ValueError, match="not 64 letters and digits"):
        write_safetensors_streaming(bad, entries, {"sha": LateValue(64, lambda: "a" * 63)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late.safetensors"]

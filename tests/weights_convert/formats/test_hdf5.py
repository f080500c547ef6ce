"""Caffe HDF5 weights (.caffemodel.h5) against real-Caffe golden files."""
import struct

import h5py
import numpy as np
import pytest

from helpers import GOLDEN, MANIFEST
from weights_convert.errors import CaffeFormatError
from weights_convert.formats.caffemodel import read_caffemodel
from weights_convert.formats.hdf5 import read_caffemodel_h5, write_caffemodel_h5
from weights_convert.formats.weights_io import read_weights, sniff_format

H5_CASES = sorted(c for c in MANIFEST if not c.startswith("_") and MANIFEST[c]["has_hdf5_weights"])


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def test_there_are_golden_hdf5_files():
    assert H5_CASES == ["batchnorm_global", "conv_basic", "oslsm_thin_1shot_500x500"]


@pytest.mark.parametrize("case", H5_CASES)
def test_golden_hdf5_equals_params_npz(case):
    got = read_caffemodel_h5(GOLDEN / case / "weights.caffemodel.h5")
    with np.load(GOLDEN / case / "params.npz") as npz:
        want = {k: npz[k] for k in npz.files}
    flat = {f"{layer}/{i}": b for layer, blobs in got.items() for i, b in enumerate(blobs)}
    # Caffe stores no creation order: its layer groups list alphabetically
    assert list(got) == sorted(got)
    assert sorted(flat) == sorted(want)
    for key, w in want.items():
        assert flat[key].dtype == np.float32 and flat[key].shape == w.shape
        np.testing.assert_array_equal(bits(flat[key]), bits(w))


@pytest.mark.parametrize("case", H5_CASES)
def test_golden_hdf5_equals_the_caffemodel_of_the_same_net(case):
    h5 = read_weights(GOLDEN / case / "weights.caffemodel.h5")
    pbuf = read_weights(GOLDEN / case / "weights.caffemodel")
    assert sniff_format(GOLDEN / case / "weights.caffemodel.h5") == "hdf5"
    assert sorted(h5) == sorted(pbuf)
    for name in pbuf:
        for a, b in zip(h5[name], pbuf[name], strict=True):
            np.testing.assert_array_equal(bits(a), bits(b))


def test_round_trip_keeps_order_shapes_and_bits(tmp_path):
    rng = np.random.default_rng(11)
    params = {
        "zeta": [rng.standard_normal((3, 2, 5, 5)).astype(np.float32), rng.standard_normal(3).astype(np.float32)],
        "alpha": [np.array(7.25, dtype=np.float32)],
        "specials": [np.array([np.nan, np.inf, -0.0, 1e-45], dtype=np.float32)],
        "empty": [np.zeros((0, 3), dtype=np.float32)],
        "many": [np.full(1, i, dtype=np.float32) for i in range(12)],  # "10" sorts before "2"
        "no_blobs": [],
    }
    path = tmp_path / "w.caffemodel.h5"
    write_caffemodel_h5(path, params)
    got = read_caffemodel_h5(path)
    assert list(got) == [k for k, v in params.items() if v]
    for name, blobs in got.items():
        assert len(blobs) == len(params[name])
        for g, w in zip(blobs, params[name]):
            assert g.shape == w.shape and g.dtype == np.float32
            np.testing.assert_array_equal(bits(g), bits(w))
    with h5py.File(path, "r") as h5:
        assert list(h5["data"]) == list(params)  # the empty layer still has its group, as Caffe writes
        assert h5["data/zeta/0"].dtype == np.float32


def test_caffemodel_to_hdf5_and_back(tmp_path):
    params = read_caffemodel(GOLDEN / "oslsm_thin_1shot_120x200" / "weights.caffemodel")
    write_caffemodel_h5(tmp_path / "w.h5", params)
    got = read_weights(tmp_path / "w.h5")
    assert list(got) == list(params)
    for name in params:
        for a, b in zip(got[name], params[name], strict=True):
            np.testing.assert_array_equal(bits(a), bits(b))


def test_double_and_integer_datasets_convert_to_float32_like_caffe(tmp_path):
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("data/l/0", data=np.array([0.1, 1 / 3], dtype=np.float64))
        h5.create_dataset("data/l/1", data=np.array([[1, -2]], dtype=np.int16))
    got = read_caffemodel_h5(path)["l"]
    np.testing.assert_array_equal(bits(got[0]), bits(np.array([0.1, 1 / 3]).astype(np.float32)))
    np.testing.assert_array_equal(got[1], [[1.0, -2.0]])


def make_h5(path, build):
    with h5py.File(path, "w") as h5:
        build(h5)
    return path


@pytest.mark.parametrize("build, pattern", [
    (lambda h5: h5.create_dataset("weights/l/0", data=[1.0]), r"'data' is nothing.*\['weights'\]"),
    (lambda h5: h5.create_dataset("data", data=[1.0]), r"'data' is a dataset"),
    (lambda h5: h5.create_dataset("data/l", data=[1.0]), r"'data/l' is not a group"),
    (lambda h5: h5.create_dataset("data/l/w", data=[1.0]), r"'data/l' has a member 'w'; expected only blob datasets"),
    (lambda h5: h5.create_dataset("data/l/01", data=[1.0]), r"'data/l' has a member '01'"),
    (lambda h5: h5.create_group("data/l/0"), r"dataset 'data/l/0': is a group"),
    (lambda h5: h5.create_dataset("data/l/0", data=np.array([b"ab"])), r"'data/l/0': dtype \|S2"),
])
def test_malformed_hdf5_weights(tmp_path, build, pattern):
    path = make_h5(tmp_path / "bad.h5", build)
    with pytest.raises(CaffeFormatError, match=pattern) as err:
        read_caffemodel_h5(path)
    assert str(path) in str(err.value)


def test_non_hdf5_and_truncated_files(tmp_path):
    with pytest.raises(CaffeFormatError, match="cannot open as HDF5"):
        read_caffemodel_h5(GOLDEN / "conv_basic" / "weights.caffemodel")
    raw = (GOLDEN / "conv_basic" / "weights.caffemodel.h5").read_bytes()
    for n in range(0, len(raw), 97):
        (tmp_path / "t.h5").write_bytes(raw[:n])
        with pytest.raises(CaffeFormatError, match="t.h5"):
            read_weights(tmp_path / "t.h5")


def test_damaged_dataset_dims_are_rejected(tmp_path):
    raw = (GOLDEN / "conv_basic" / "weights.caffemodel.h5").read_bytes()
    dims = struct.pack("<4Q", 5, 3, 3, 3)
    assert raw.count(dims) == 2  # the dataspace's dims and max dims of data/c/0
    for bad in (struct.pack("<4Q", 5, 3, 3, 300), struct.pack("<4Q", 5, 3, 3, 2**40)):
        (tmp_path / "d.h5").write_bytes(raw.replace(dims, bad))
        with pytest.raises(CaffeFormatError, match=r"d.h5: damaged HDF5 weights: .*dataset size"):
            read_caffemodel_h5(tmp_path / "d.h5")


def test_writer_rejects_names_hdf5_cannot_hold(tmp_path):
    with pytest.raises(CaffeFormatError, match="'a/b' cannot be an HDF5 group name"):
        write_caffemodel_h5(tmp_path / "x.h5", {"a/b": [np.ones(1)]})
    assert list(tmp_path.iterdir()) == []


def test_blobs_caffe_leaves_out_for_sharing_read_as_gaps(tmp_path):
    """Net::ToHDF5 writes only the blobs a layer owns: a layer sharing its weight from another
    has dataset "1" (its bias) but no "0"."""
    path = make_h5(tmp_path / "shared.h5", lambda h5: (h5.create_dataset("data/a/0", data=np.ones((2, 3))),
                                                       h5.create_dataset("data/a/1", data=np.zeros(2)),
                                                       h5.create_dataset("data/b/1", data=np.full(2, 5.0))))
    params = read_caffemodel_h5(path)
    assert params["b"][0] is None and np.array_equal(params["b"][1], np.full(2, 5.0, np.float32))
    assert [b.shape for b in params["a"]] == [(2, 3), (2,)]

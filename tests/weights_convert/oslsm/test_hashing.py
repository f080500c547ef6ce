"""Weight hashing (rw1s / rb1s): detection, exact gather path, dense fallback, storage."""
import numpy as np
import pytest
import torch
from torch import nn

from helpers import GOLDEN
from weights_convert.oslsm.hashing import GatherMap, WeightHashing, detect_hashing_map
from weights_convert.oslsm.layout import OSLSMWidths
from weights_convert.oslsm.random_init import random_hashing_matrix

CASES = ["oslsm_thin_1shot_120x200", "oslsm_thin_1shot_500x500", "oslsm_thin_5shot_500x500"]


def load(case):
    with np.load(GOLDEN / case / "params.npz") as p, np.load(GOLDEN / case / "blobs.npz") as b:
        return ({k: p[k] for k in ("rw1s/0", "rw1s/1", "rb1s/0", "rb1s/1")},
                {k: b[k] for k in ("fc8f", "rw1s", "rb1s")})


@pytest.mark.parametrize("case", CASES)
def test_golden_maps_are_detected_and_bit_exact_against_caffe(case):
    params, blobs = load(case)
    for name in ("rw1s/0", "rb1s/0"):
        hmap = detect_hashing_map(params[name])
        assert hmap is not None, name
        assert hmap.index.dtype == np.int32 and hmap.sign.dtype == np.int8
        assert np.array_equal(hmap.to_dense(params[name].shape[1]), params[name])
    hashing = WeightHashing.from_caffe(params["rw1s/0"], params["rw1s/1"], params["rb1s/0"], params["rb1s/1"])
    assert isinstance(hashing.weight_map, GatherMap) and isinstance(hashing.bias_map, GatherMap)
    # Fed Caffe's own fc8f, the gather reproduces Caffe's InnerProduct outputs bit for bit.
    w, b = hashing(torch.from_numpy(blobs["fc8f"]))
    assert np.array_equal(w.numpy(), blobs["rw1s"])
    assert np.array_equal(b.numpy(), blobs["rb1s"].reshape(-1))


@pytest.mark.parametrize("case", CASES)
def test_gather_equals_dense_matmul_exactly(case):
    params, blobs = load(case)
    hashed = WeightHashing.from_caffe(params["rw1s/0"], params["rw1s/1"], params["rb1s/0"], params["rb1s/1"])
    dense = WeightHashing.from_caffe(params["rw1s/0"], params["rw1s/1"], params["rb1s/0"], params["rb1s/1"],
                                     allow_hashing=False)
    assert isinstance(dense.weight_map, nn.Linear)
    v = torch.from_numpy(blobs["fc8f"]) * 1.37  # arbitrary inputs, not only the golden ones
    for got, want in zip(hashed(v), dense(v)):
        assert torch.equal(got, want)


def test_nonzero_bias_is_added_after_the_gather():
    rng = np.random.default_rng(0)
    matrix = random_hashing_matrix(64, 20, rng)
    bias = rng.standard_normal(64).astype(np.float32)
    module = GatherMap.from_map(detect_hashing_map(matrix), 20, bias)
    v = rng.standard_normal((3, 20)).astype(np.float32)
    expected = (v @ matrix.T).astype(np.float32) + bias  # one exact product per row, then one add
    assert np.array_equal(module(torch.from_numpy(v)).numpy(), expected)


def test_dense_random_matrix_is_not_hashing_and_stays_correct():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((16, 10)).astype(np.float32)
    wb = rng.standard_normal(16).astype(np.float32)
    rb = rng.standard_normal((1, 10)).astype(np.float32)
    rbb = rng.standard_normal(1).astype(np.float32)
    assert detect_hashing_map(w) is None
    hashing = WeightHashing.from_caffe(w, wb, rb, rbb)
    info = hashing.describe()
    assert info["rw1s"]["form"] == "dense" and info["rb1s"]["form"] == "dense"
    assert info["rw1s"]["size_ratio"] == 1.0
    v = rng.standard_normal((5, 10)).astype(np.float32)
    got_w, got_b = hashing(torch.from_numpy(v))
    ref_w = v.astype(np.float64) @ w.T.astype(np.float64) + wb
    ref_b = (v.astype(np.float64) @ rb.T.astype(np.float64) + rbb).reshape(-1)
    assert np.abs(got_w.numpy() - ref_w).max() < 1e-5
    assert np.abs(got_b.numpy() - ref_b).max() < 1e-5


@pytest.mark.parametrize("bad", [
    lambda m: m.__setitem__((0, (int(np.flatnonzero(m[0])[0]) + 1) % m.shape[1]), 1.0),  # two nonzeros in a row
    lambda m: m.__setitem__(3, 0.0),                                                       # an empty row
    lambda m: m.__setitem__((2, int(np.flatnonzero(m[2])[0])), 2.0),                      # a value that is not +-1
    lambda m: m.__setitem__((2, int(np.flatnonzero(m[2])[0])), 1.0000001),                 # not exactly 1
])
def test_near_misses_are_not_hashing_maps(bad):
    matrix = random_hashing_matrix(8, 6, np.random.default_rng(2))
    assert detect_hashing_map(matrix) is not None
    bad(matrix)
    assert detect_hashing_map(matrix) is None
    assert isinstance(WeightHashing.from_caffe(matrix, np.zeros(8, np.float32), matrix[:1], np.zeros(1, np.float32))
                      .weight_map, nn.Linear)


def test_index_sign_storage_round_trips_through_state_dict():
    rng = np.random.default_rng(3)
    w, rb = random_hashing_matrix(16, 10, rng), random_hashing_matrix(1, 10, rng)
    hashing = WeightHashing.from_caffe(w, np.zeros(16, np.float32), rb, np.zeros(1, np.float32))
    state = hashing.state_dict()
    assert state["weight_map.index"].dtype == torch.int32 and state["weight_map.sign"].dtype == torch.int8
    fresh = WeightHashing.empty(16, 10, weight_hashed=True, bias_hashed=True)
    fresh.load_state_dict(state)
    dense = fresh.dense_matrices()
    assert np.array_equal(dense["rw1s"][0].numpy(), w)
    assert np.array_equal(dense["rb1s"][0].numpy(), rb)


def test_size_ratio_for_full_width_maps():
    rng = np.random.default_rng(4)
    full = OSLSMWidths.FULL
    hashing = WeightHashing.from_caffe(random_hashing_matrix(full.fc, full.embed, rng), np.zeros(full.fc, np.float32),
                                       random_hashing_matrix(1, full.embed, rng), np.zeros(1, np.float32))
    info = hashing.describe()["rw1s"]
    # 4096 x 1000 float32 (16.4 MB) against 4096 x (int32 index + int8 sign) (20 KB).
    assert info["dense_bytes"] == 4096 * 1000 * 4 and info["stored_bytes"] == 4096 * 5
    assert info["size_ratio"] == pytest.approx(800.0)

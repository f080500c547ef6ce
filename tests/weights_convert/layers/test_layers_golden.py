"""Every golden case (real OSLSM-fork Caffe, CPU) through CaffeNet: each stored blob must match."""
import itertools
import math

import numpy as np
import pytest
import torch

from helpers import CASES, GOLDEN, MANIFEST
from weights_convert.formats.schema import pb
from weights_convert.graph import CaffeNet
from weights_convert.layers.pooling import pooled_sizes

TOL = 5e-5  # per blob, times max(1, max|ref|)
SCALAR_RTOL = 2e-4  # scalar losses


def params_from_npz(path) -> dict[str, list[np.ndarray]]:
    """params.npz ("<layer>/<index>") regrouped as read_weights returns it: layer -> blobs in order."""
    grouped: dict[str, dict[int, np.ndarray]] = {}
    with np.load(path) as data:
        for key in data.files:
            layer, _, index = key.rpartition("/")
            grouped.setdefault(layer, {})[int(index)] = data[key]
    return {layer: [blobs[i] for i in range(len(blobs))] for layer, blobs in grouped.items()}


def run_case(case: str, params=None, device: str = "cpu") -> tuple[dict, dict]:
    case_dir = GOLDEN / case
    net = CaffeNet.from_prototxt(case_dir / "net.prototxt", phase=MANIFEST[case]["phase"], device=device)
    if params is not None:
        net.load_params(params)
    golden = dict(np.load(case_dir / "blobs.npz"))
    with torch.no_grad():
        blobs = net(**{name: torch.from_numpy(golden[name]).to(device) for name in MANIFEST[case]["inputs"]})
    return {k: v.cpu().numpy() for k, v in blobs.items()}, golden


def assert_blobs_match(blobs: dict, golden: dict) -> float:
    """Every golden blob computed, same shape, within tolerance; returns the worst diff / tolerance."""
    worst = 0.0
    missing = sorted(set(golden) - set(blobs))
    assert not missing, f"blobs not computed: {missing}"
    for name, ref in golden.items():
        got = blobs[name]
        assert got.shape == ref.shape, f"{name}: shape {got.shape}, Caffe {ref.shape}"
        assert got.dtype == np.float32, f"{name}: dtype {got.dtype}"
        if not ref.size:
            continue
        diff = float(np.abs(got.astype(np.float64) - ref.astype(np.float64)).max())
        limit = (SCALAR_RTOL if ref.ndim == 0 else TOL) * max(1.0, float(np.abs(ref).max()))
        assert diff <= limit, f"{name}: max |diff| {diff:.3g} > {limit:.3g}"
        worst = max(worst, diff / limit)
    return worst


def case_params(case: str):
    return params_from_npz(GOLDEN / case / "params.npz") if MANIFEST[case]["has_weights"] else None


@pytest.mark.parametrize("case", CASES)
def test_every_blob_matches_caffe(case, device):
    blobs, golden = run_case(case, case_params(case), device)
    assert_blobs_match(blobs, golden)
    # the inputs are returned unchanged and nothing Caffe computes is missing or extra
    for name in MANIFEST[case]["inputs"]:
        assert np.array_equal(blobs[name], golden[name])
    if not case.startswith("oslsm_thin"):  # the oslsm cases store only some blobs
        assert set(blobs) == set(golden)


@pytest.mark.parametrize("case", [c for c in CASES if c.startswith("oslsm_thin")])
def test_oslsm_binary_mask_identical(case, device):
    blobs, golden = run_case(case, case_params(case), device)
    ref = golden["pre_score2"]
    decided = np.abs(ref) > 1e-4
    assert decided.mean() > 0.5  # the comparison covers most pixels
    np.testing.assert_array_equal((blobs["score"] > 0.5)[decided], (golden["score"] > 0.5)[decided])
    np.testing.assert_array_equal((blobs["pre_score2"] > 0)[decided], (ref > 0)[decided])


WEIGHT_FILES = [(case, name) for case in CASES for name, flag in
                (("weights.caffemodel", "has_weights"), ("weights_v1.caffemodel", "has_v1_weights"),
                 ("weights.caffemodel.h5", "has_hdf5_weights")) if MANIFEST[case][flag]]


@pytest.mark.parametrize("case,name", WEIGHT_FILES)
def test_weight_files_give_the_same_blobs(case, name):
    """.caffemodel (V2 and V1 with legacy 4-D shapes) and .caffemodel.h5 load through read_weights."""
    case_dir = GOLDEN / case
    net = CaffeNet.from_prototxt(case_dir / "net.prototxt")
    net.load_weights(case_dir / name)
    ref = params_from_npz(case_dir / "params.npz")
    loaded = net.params_to_numpy()
    assert loaded.keys() == ref.keys()
    for layer, blobs in ref.items():
        assert all(np.array_equal(a, b) for a, b in zip(loaded[layer], blobs, strict=True)), layer
    golden = dict(np.load(case_dir / "blobs.npz"))
    with torch.no_grad():
        out = net(**{n: golden[n] for n in MANIFEST[case]["inputs"]})
    assert_blobs_match({k: v.numpy() for k, v in out.items()}, golden)


def test_every_layer_type_of_the_cases_is_exercised():
    """The golden cases cover every layer type the OSLSM nets use."""
    from weights_convert.formats.prototxt import load_net
    used = {lp.type for case in CASES for lp in load_net(GOLDEN / case / "net.prototxt").layer}
    assert {"MatMult", "ReshapeLike", "Crop", "Deconvolution", "Tile", "Bias", "Scale", "Pooling",
            "SigmoidCrossEntropyLoss", "InnerProduct", "Reshape", "Sigmoid"} <= used


# ------------------------------------------------------------------ pooling against Caffe's loops
def caffe_pool_loops(x: np.ndarray, method: str, k, s, p) -> np.ndarray:
    """A direct transcription of Caffe's CPU pooling loops (reference for random geometries)."""
    n, c, h, w = x.shape
    # PoolingLayer::Reshape, written out independently of the code under test.
    oh = int(math.ceil((h + 2 * p[0] - k[0]) / s[0])) + 1
    ow = int(math.ceil((w + 2 * p[1] - k[1]) / s[1])) + 1
    if p[0] or p[1]:
        if (oh - 1) * s[0] >= h + p[0]:
            oh -= 1
        if (ow - 1) * s[1] >= w + p[1]:
            ow -= 1
    y = np.zeros((n, c, oh, ow), np.float32)
    for ph, pw in itertools.product(range(oh), range(ow)):
        hs, ws = ph * s[0] - p[0], pw * s[1] - p[1]
        he, we = min(hs + k[0], h + p[0]), min(ws + k[1], w + p[1])
        size = (he - hs) * (we - ws)
        hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
        win = x[:, :, hs:he, ws:we]
        if method == "MAX":  # Caffe's running max starts at -FLT_MAX (kept for an empty window)
            y[:, :, ph, pw] = np.maximum(win.max(axis=(2, 3), initial=-np.inf), -np.finfo(np.float32).max)
        else:  # an empty window divides 0 by 0, as in Caffe
            with np.errstate(invalid="ignore"):
                y[:, :, ph, pw] = win.sum(axis=(2, 3), dtype=np.float32) / np.float32(size)
    return y


def test_pooled_size_rule():
    assert pooled_sizes((7, 7), (2, 2), (0, 0), (2, 2)) == (4, 4)  # ceil, not floor
    assert pooled_sizes((7, 7), (2, 2), (0, 0), (2, 2), ceil=False) == (3, 3)
    assert pooled_sizes((5, 5), (2, 2), (1, 1), (2, 2)) == (3, 3)  # a window starting in the padding is dropped
    assert pooled_sizes((2, 2), (1, 1), (0, 0), (2, 2)) == (2, 2)  # without pad nothing is dropped, even an empty window
    # Caffe tests `pad_h || pad_w`: a width pad makes the unpadded height drop its empty last window.
    assert pooled_sizes((5, 5), (1, 2), (0, 1), (3, 2)) == (2, 3)
    assert pooled_sizes((5, 5), (1, 2), (0, 0), (3, 2)) == (3, 3)
    assert [pooled_sizes((n, n), (2, 2), (0, 0), (2, 2))[0] for n in (740, 185, 47)] == [370, 93, 24]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_pooling_matches_caffe_loops_on_random_geometries(method):
    rng = np.random.default_rng(7)
    checked = 0
    for trial in range(80):
        k = tuple(int(v) for v in rng.integers(1, 5, 2))
        s = tuple(int(v) for v in rng.integers(1, 4, 2))
        p = tuple(int(rng.integers(0, kk)) for kk in k)
        if trial < 10:  # include the layouts where only one axis is padded, stride > kernel
            k, s, p = (1, k[1] + 1), (3, 2), (0, k[1])
        h, w = (int(v) for v in rng.integers(max(k), 12, 2))
        x = rng.standard_normal((1, 2, h, w)).astype(np.float32)
        lp = pb.LayerParameter(name="p", type="Pooling", bottom=["x"], top=["y"])
        lp.pooling_param.pool = getattr(pb.PoolingParameter, method)
        lp.pooling_param.kernel_h, lp.pooling_param.kernel_w = k
        lp.pooling_param.stride_h, lp.pooling_param.stride_w = s
        lp.pooling_param.pad_h, lp.pooling_param.pad_w = p
        net_param = pb.NetParameter()
        inp = net_param.layer.add(name="in", type="Input", top=["x"])
        inp.input_param.shape.add(dim=list(x.shape))
        net_param.layer.add().CopyFrom(lp)
        got = CaffeNet(net_param)(x=x)["y"].numpy()
        ref = caffe_pool_loops(x, method, k, s, p)
        assert got.shape == ref.shape, (k, s, p, h, w)
        # equal_nan: an empty AVE window is 0/0 in both
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6, equal_nan=True, err_msg=str((k, s, p, h, w)))
        checked += math.prod(ref.shape)
    assert checked > 1000

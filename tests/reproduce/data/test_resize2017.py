"""The 2017 scikit-image resize, checked without scikit-image: a scalar transcription of
`_warp_fast`, the properties the old code had, and the x.5 ties of a 32x downscale."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reproduce.errors import ReproduceError
from reproduce.data.resize2017 import (_plan, _resize_matrix, _source_coords, estimate_affine_2017,
                                  resize_2017, round_half_away)


def c_round(x: float) -> int:
    """C round() for one Python float (IEEE double, like the C code)."""
    whole = math.trunc(x)
    return whole + (int(math.copysign(1, x)) if abs(x - whole) >= 0.5 else 0)


def scalar_warp(img: np.ndarray, h: np.ndarray, out_shape, order: int, clip: bool = True) -> np.ndarray:
    """skimage 0.13 `_warp_fast` + `bilinear_interpolation` / nearest, one pixel at a time."""
    rows, cols = img.shape
    hl = [float(v) for v in h.ravel()]

    def pixel(r, c):
        return 0.0 if (r < 0 or r >= rows or c < 0 or c >= cols) else float(img[r, c])

    out = np.zeros(out_shape)
    for tr in range(out_shape[0]):
        for tc in range(out_shape[1]):
            x, y = float(tc), float(tr)
            xx = hl[0] * x + hl[1] * y + hl[2]
            yy = hl[3] * x + hl[4] * y + hl[5]
            zz = hl[6] * x + hl[7] * y + hl[8]
            c, r = xx / zz, yy / zz
            if order == 0:
                out[tr, tc] = pixel(c_round(r), c_round(c))
            else:
                minr, minc, maxr, maxc = math.floor(r), math.floor(c), math.ceil(r), math.ceil(c)
                dr, dc = r - minr, c - minc
                top = (1 - dc) * pixel(minr, minc) + dc * pixel(minr, maxc)
                bottom = (1 - dc) * pixel(maxr, minc) + dc * pixel(maxr, maxc)
                out[tr, tc] = (1 - dr) * top + dr * bottom
    if order > 0 and clip:
        out = np.clip(out, img.min(), img.max())
    return out


def test_round_half_away_from_zero():
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49999999999999994, -0.49999999999999994, 3.2, -3.7])
    assert round_half_away(x).tolist() == [-3, -2, -1, 1, 2, 3, 0, 0, 3, -4]
    assert [c_round(v) for v in x] == round_half_away(x).tolist()


@pytest.mark.parametrize("in_shape,out_shape", [((7, 9), (4, 13)), ((13, 5), (20, 3)), ((30, 41), (11, 17))])
@pytest.mark.parametrize("order", [0, 1])
def test_vectorised_equals_scalar_warp_bit_for_bit(in_shape, out_shape, order):
    rng = np.random.default_rng(sum(in_shape) + order)
    img = rng.uniform(-0.9, 0.9, size=in_shape)
    expected = scalar_warp(img, _resize_matrix(in_shape, out_shape), out_shape, order)
    got = resize_2017(img, out_shape, order=order, preserve_range=False)
    assert got.dtype == np.float64
    assert np.array_equal(got, expected)


def test_colour_is_warped_per_channel():
    rng = np.random.default_rng(5)
    img = rng.uniform(-0.5, 0.5, size=(9, 11, 3))
    got = resize_2017(img, (5, 6), order=1, preserve_range=False)
    assert got.shape == (5, 6, 3)
    for ch in range(3):
        # clip uses the whole image's range (skimage clipped after stacking the channels)
        raw = scalar_warp(img[..., ch], _resize_matrix((9, 11), (5, 6)), (5, 6), 1)
        assert np.array_equal(got[..., ch], np.clip(raw, img.min(), img.max()))


def test_ties_of_a_32x_downscale_follow_the_estimated_matrix():
    # (64, 224) -> (2, 7): every source coordinate is an x.5 tie in exact arithmetic; the
    # estimated matrix's last bits push some just below (rounded down) and some above.
    h = _resize_matrix((64, 224), (2, 7))
    r, c = _source_coords(h, 2, 7)
    exact_r = 32 * np.arange(2)[:, None] + 15.5
    exact_c = 32 * np.arange(7)[None, :] + 15.5
    assert np.allclose(r, exact_r, atol=1e-9) and np.allclose(c, exact_c, atol=1e-9)
    picked = np.concatenate([(round_half_away(r) - np.floor(np.broadcast_to(exact_r, r.shape))).ravel(),
                             (round_half_away(c) - np.floor(np.broadcast_to(exact_c, c.shape))).ravel()])
    assert set(picked.tolist()) == {0.0, 1.0}  # both directions occur
    assert int((picked == 0).sum()) == 16
    img = np.arange(64 * 224, dtype=np.float64).reshape(64, 224)
    got = resize_2017(img, (2, 7), order=0, preserve_range=True)
    assert np.array_equal(got, scalar_warp(img, h, (2, 7), 0))
    naive = img[16::32, 16::32]  # "round every tie up", what a plain scale gives
    assert not np.array_equal(got, naive)


def test_same_shape_is_identity_up_to_the_matrix_last_bits():
    rng = np.random.default_rng(1)
    img = rng.uniform(-0.5, 0.5, size=(37, 53, 3))
    assert np.array_equal(resize_2017(img, (37, 53), order=0, preserve_range=False), img)
    assert np.abs(resize_2017(img, (37, 53), order=1, preserve_range=False) - img).max() < 1e-12
    # the estimated matrix is not exactly the identity: why the original skipped this resize
    assert not np.array_equal(_resize_matrix((37, 53), (37, 53)), np.eye(3))


@pytest.mark.parametrize("out_shape", [(5, 7), (40, 50), (224, 224)])
def test_constant_image_stays_constant(out_shape):
    img = np.full((17, 23, 3), -0.375)
    out = resize_2017(img, out_shape, order=1, preserve_range=False)
    assert np.array_equal(out, np.full(out_shape + (3,), -0.375))


def test_clip_to_the_input_range_and_constant_border():
    img = np.array([[0.2, 0.8], [0.8, 0.2]])
    up = resize_2017(img, (8, 8), order=1, preserve_range=False)
    assert up.min() >= 0.2 and up.max() <= 0.8
    # the corner samples at (-0.375, -0.375): unclipped it would mix in the zero border
    raw = scalar_warp(img, _resize_matrix((2, 2), (8, 8)), (8, 8), 1, clip=False)
    assert up[0, 0] == 0.2 and raw[0, 0] == pytest.approx(0.2 * 0.625 * 0.625)
    h = _resize_matrix((2, 2), (8, 8))
    r, c = _source_coords(h, 8, 8)
    assert r[0, 0] < 0 and c[0, 0] < 0  # the corner samples outside the image


def test_preserve_range_and_img_as_float_rules():
    u8 = np.array([[0, 255], [51, 102]], dtype=np.uint8)
    out = resize_2017(u8, (2, 2), order=0, preserve_range=False)
    assert np.array_equal(out, u8 * (1.0 / 255))
    assert np.array_equal(resize_2017(u8, (2, 2), order=0, preserve_range=True), u8.astype(float))
    with pytest.raises(ReproduceError, match=r"\[-1, 1\]"):
        resize_2017(np.array([[0.0, 2.0]]), (3, 3), order=1, preserve_range=False)
    with pytest.raises(ReproduceError, match="order 3"):
        resize_2017(np.zeros((4, 4)), (2, 2), order=3, preserve_range=False)
    with pytest.raises(ReproduceError, match="1x1"):
        resize_2017(np.zeros((40, 40)), (1, 1), order=0, preserve_range=True)


def test_estimated_matrix_maps_the_corners():
    src = np.array([[0, 0], [0, 6], [9, 6]])
    dst = np.array([[0.5, -0.25], [0.5, 20.75], [31.0, 20.75]])
    h = estimate_affine_2017(src, dst)
    pts = np.c_[src, np.ones(3)] @ h.T
    assert np.allclose(pts[:, :2], dst, atol=1e-12)
    assert h[2].tolist() == [0.0, 0.0, 1.0]


def test_plans_are_cached_per_shape_and_order():
    img = np.zeros((50, 60))
    resize_2017(img, (20, 30), order=1, preserve_range=True)
    before = _plan.cache_info().hits
    resize_2017(img + 0.5, (20, 30), order=1, preserve_range=True)
    assert _plan.cache_info().hits == before + 1


@settings(max_examples=60, deadline=None)
@given(in_h=st.integers(2, 12), in_w=st.integers(2, 12), out_h=st.integers(2, 12),
       out_w=st.integers(2, 12), order=st.sampled_from([0, 1]), seed=st.integers(0, 2**32 - 1))
def test_random_shapes_equal_the_scalar_warp(in_h, in_w, out_h, out_w, order, seed):
    img = np.random.default_rng(seed).uniform(-1, 1, size=(in_h, in_w))
    h = _resize_matrix((in_h, in_w), (out_h, out_w))
    assert np.array_equal(resize_2017(img, (out_h, out_w), order=order, preserve_range=False),
                          scalar_warp(img, h, (out_h, out_w), order))


def test_other_blas_bits_are_refused_not_used(tmp_path):
    """With BLAS kernels that round the SVD differently (here the generic Prescott ones), resizing
    stops with a message naming the cause and the remedy instead of filtering other objects."""
    import os
    import subprocess
    import sys

    code = ("import numpy as np\nfrom reproduce.data.resize2017 import resize_2017\n"
            "resize_2017(np.zeros((64, 224)), (2, 7), order=0, preserve_range=True)\n")
    env = dict(os.environ, OPENBLAS_CORETYPE="Prescott")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "OPENBLAS_CORETYPE=Haswell" in result.stderr and "other last bits" in result.stderr

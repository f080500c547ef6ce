"""scikit-image 0.12/0.13 `transform.resize`, re-implemented in numpy (protocol §3, §7).

The old resize estimated an AffineTransform from three corner pairs (SVD least squares on
normalised points) and warped with `_warp_fast`. The last bits of that estimated matrix decide
how x.5 ties round in nearest-neighbour sampling, which decides the small-object filter, so the
matrix arithmetic is transcribed operation for operation. The warp itself is planned once per
(input shape, output shape, order): the source indices and weights are cached and each call is
a gather plus the same weighted sums, in the same order, as the Cython code.
"""
from __future__ import annotations

import functools
import hashlib
import math
import os

import numpy as np

from reproduce.errors import ReproduceError

_CVAL = 0.0  # mode 'constant' with cval 0: a neighbour outside the image reads 0


def _center_and_normalize(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """skimage 0.13 `_center_and_normalize_points`: centroid to the origin, mean distance sqrt(2)."""
    centroid = np.mean(points, axis=0)
    rms = math.sqrt(np.sum((points - centroid) ** 2) / points.shape[0])
    if rms == 0:
        # skimage 0.13 gave up here (NaN matrix, undefined warp): a 1x1 output
        raise ReproduceError("resize_2017: cannot estimate the resize transform for a 1x1 output "
                             "(all corner points coincide)")
    norm_factor = math.sqrt(2) / rms
    matrix = np.array([[norm_factor, 0, -norm_factor * centroid[0]],
                       [0, norm_factor, -norm_factor * centroid[1]],
                       [0, 0, 1]])
    pointsh = np.vstack([points.T, np.ones((points.shape[0],))])
    new_pointsh = np.dot(matrix, pointsh).T
    new_points = new_pointsh[:, :2]
    new_points[:, 0] /= new_pointsh[:, 2]
    new_points[:, 1] /= new_pointsh[:, 2]
    return matrix, new_points


def estimate_affine_2017(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """skimage 0.13 `AffineTransform.estimate(src, dst)`: the 3x3 matrix mapping src (x, y) to dst."""
    src_matrix, src_n = _center_and_normalize(np.asarray(src))
    dst_matrix, dst_n = _center_and_normalize(np.asarray(dst))
    xs, ys = src_n[:, 0], src_n[:, 1]
    xd, yd = dst_n[:, 0], dst_n[:, 1]
    n = src_n.shape[0]
    # The projective design matrix, then only the affine columns (0..5) and the target (8).
    a = np.zeros((n * 2, 9))
    a[:n, 0] = xs
    a[:n, 1] = ys
    a[:n, 2] = 1
    a[:n, 6] = -xd * xs
    a[:n, 7] = -xd * ys
    a[n:, 3] = xs
    a[n:, 4] = ys
    a[n:, 5] = 1
    a[n:, 6] = -yd * xs
    a[n:, 7] = -yd * ys
    a[:n, 8] = xd
    a[n:, 8] = yd
    columns = [0, 1, 2, 3, 4, 5, 8]
    a = a[:, columns]
    _, _, v = np.linalg.svd(a)
    h = np.zeros((3, 3))
    h.flat[columns] = -v[-1, :-1] / v[-1, -1]
    h[2, 2] = 1
    # This association order, not (inv(dst) @ h) @ src: the last bits matter (§7).
    return np.dot(np.linalg.inv(dst_matrix), np.dot(h, src_matrix))


def _resize_matrix(in_shape: tuple[int, int], out_shape: tuple[int, int]) -> np.ndarray:
    """The matrix skimage 0.13 `resize` estimated: output pixel (col, row) -> input (col, row)."""
    rows, cols = int(out_shape[0]), int(out_shape[1])
    in_rows, in_cols = int(in_shape[0]), int(in_shape[1])
    row_scale = float(in_rows) / rows
    col_scale = float(in_cols) / cols
    src_corners = np.array([[1, 1], [1, rows], [cols, rows]]) - 1
    dst_corners = np.zeros(src_corners.shape, dtype=np.double)
    # pixel centres sit at +0.5
    dst_corners[:, 0] = col_scale * (src_corners[:, 0] + 0.5) - 0.5
    dst_corners[:, 1] = row_scale * (src_corners[:, 1] + 0.5) - 0.5
    return estimate_affine_2017(src_corners, dst_corners)


def round_half_away(x: np.ndarray) -> np.ndarray:
    """C `round()`: halves go away from zero (numpy's round goes to even)."""
    whole = np.trunc(x)
    frac = x - whole  # exact for doubles
    return whole + np.where(np.abs(frac) >= 0.5, np.sign(x), 0.0)


def _source_coords(h: np.ndarray, out_rows: int, out_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """`_matrix_transform(tc, tr)` for every output pixel, as the C code evaluates it."""
    tr, tc = np.meshgrid(np.arange(out_rows, dtype=np.float64),
                         np.arange(out_cols, dtype=np.float64), indexing="ij")
    xx = h[0, 0] * tc + h[0, 1] * tr + h[0, 2]
    yy = h[1, 0] * tc + h[1, 1] * tr + h[1, 2]
    zz = h[2, 0] * tc + h[2, 1] * tr + h[2, 2]
    return yy / zz, xx / zz


def _flat_index(r: np.ndarray, c: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Index into the image flattened with one extra cval element at the end (for outside)."""
    r = r.astype(np.int64)
    c = c.astype(np.int64)
    inside = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
    return np.where(inside, r * cols + c, rows * cols).ravel()


# A 500x500 bilinear plan is about 15 MB; a few shapes recur (the 224 and 500 outputs of VOC's
# common image sizes), so a small cache keeps the memory bounded.
# The matrices of four resizes, as estimated with the BLAS kernels that reproduce the original's
# episode lists (OpenBLAS's Haswell and Zen kernels). numpy's OpenBLAS picks kernels by CPU when
# it loads: other kernels (SkylakeX on recent Intel CPUs, the generic ones) round the SVD's last
# bits differently, which changes how x.5 ties round and so which objects the filter drops.
_REFERENCE_SHAPES = (((64, 224), (2, 7)), ((500, 375), (224, 224)), ((333, 500), (21, 32)), ((281, 500), (9, 16)))
_REFERENCE_DIGEST = "e7f3b68f67c232078f005bf6afdffc8471df8768ea91b685fa834bdf318b0728"


@functools.lru_cache(maxsize=1)
def check_matrix_bits() -> None:
    """Refuse to run when this process's LAPACK gives other last bits than the reference."""
    digest = hashlib.sha256()
    for in_shape, out_shape in _REFERENCE_SHAPES:
        digest.update(_resize_matrix(in_shape, out_shape).tobytes())
    if digest.hexdigest() != _REFERENCE_DIGEST:
        raise ReproduceError(
            "resize_2017: numpy's LAPACK estimates the resize matrix with other last bits than the "
            "reference, so the small-object filter would not be the original's. OPENBLAS_CORETYPE is "
            f"{os.environ.get('OPENBLAS_CORETYPE', 'unset')!r} now, but it counts only if set before numpy "
            "loaded: start Python with OPENBLAS_CORETYPE=Haswell in the environment (the Makefile does; "
            "`import reproduce` before numpy does too), on an x86-64 CPU with AVX2")


@functools.lru_cache(maxsize=8)
def _plan(in_shape: tuple[int, int], out_shape: tuple[int, int], order: int):
    rows, cols = in_shape
    check_matrix_bits()
    h = _resize_matrix(in_shape, out_shape)
    r, c = _source_coords(h, *out_shape)
    if order == 0:
        return (_flat_index(round_half_away(r), round_half_away(c), rows, cols),)
    minr, minc = np.floor(r), np.floor(c)
    maxr, maxc = np.ceil(r), np.ceil(c)
    dr = (r - minr).ravel()[:, None]
    dc = (c - minc).ravel()[:, None]
    return (_flat_index(minr, minc, rows, cols), _flat_index(minr, maxc, rows, cols),
            _flat_index(maxr, minc, rows, cols), _flat_index(maxr, maxc, rows, cols),
            dr, dc, 1 - dr, 1 - dc)


def _as_float(img: np.ndarray, preserve_range: bool) -> np.ndarray:
    """skimage 0.13 `_convert_warp_input`: astype(double), or img_as_float (which range-checks)."""
    if preserve_range:
        return img.astype(np.float64)
    if img.dtype == np.bool_:
        return img.astype(np.float64)
    if img.dtype.kind == "f":
        if img.size and (img.min() < -1.0 or img.max() > 1.0):
            raise ReproduceError("resize_2017: float images must lie in [-1, 1] when "
                                 "preserve_range=False (as skimage 0.13 img_as_float required)")
        return img.astype(np.float64)
    if img.dtype.kind == "u":
        return np.multiply(img, 1.0 / np.iinfo(img.dtype).max, dtype=np.float64)
    raise ReproduceError(f"resize_2017: unsupported dtype {img.dtype} with preserve_range=False")


def resize_2017(img: np.ndarray, out_shape: tuple[int, int], order: int = 1,
                preserve_range: bool = False) -> np.ndarray:
    """skimage 0.13 `resize(img, out_shape, order, mode='constant', cval=0, clip=True,
    preserve_range)` for a 2-D or HxWxC array; returns float64 like skimage."""
    if order not in (0, 1):
        raise ReproduceError(f"resize_2017: order {order} not supported (only 0 nearest, 1 bilinear)")
    if img.ndim not in (2, 3):
        raise ReproduceError(f"resize_2017: expected a 2-D or HxWxC array, got shape {img.shape}")
    out_shape = (int(out_shape[0]), int(out_shape[1]))
    if min(out_shape) < 1 or min(img.shape[:2]) < 1:
        raise ReproduceError(f"resize_2017: cannot resize shape {img.shape} to {out_shape}")
    image = _as_float(img, preserve_range)
    in_shape = (image.shape[0], image.shape[1])
    channels = image.shape[2] if image.ndim == 3 else 1
    flat = np.empty((in_shape[0] * in_shape[1] + 1, channels))
    flat[:-1] = image.reshape(in_shape[0] * in_shape[1], channels)
    flat[-1] = _CVAL
    plan = _plan(in_shape, out_shape, order)
    if order == 0:
        out = flat[plan[0]]
    else:
        i00, i01, i10, i11, dr, dc, one_dr, one_dc = plan
        # bilinear_interpolation of skimage 0.13, term for term
        top = one_dc * flat[i00] + dc * flat[i01]
        bottom = one_dc * flat[i10] + dc * flat[i11]
        out = one_dr * top + dr * bottom
        _clip_like_2017(image, out)
    out = out.reshape(out_shape + ((channels,) if image.ndim == 3 else ()))
    return out


def _clip_like_2017(image: np.ndarray, out: np.ndarray) -> None:
    """`_clip_warp_output`: clip to the input's range, keeping cval where cval is outside it."""
    lo, hi = image.min(), image.max()
    keep_cval = not (lo <= _CVAL <= hi)
    cval_mask = out == _CVAL if keep_cval else None
    np.clip(out, lo, hi, out=out)
    if keep_cval:
        out[cval_mask] = _CVAL

"""FCN's surgery on blobs (surgery.py of shelhamer/fcn.berkeleyvision.org): the bilinear kernel,
interp, and transplant's copy / coerce / drop / zero, on a thin VGG-16 written out by hand."""
import numpy as np
import pytest

from weights_convert.errors import CaffeFormatError
from weights_convert.fcn.spec import THIN, blob_shapes, widths_of
from weights_convert.fcn.surgery import bilinear_kernel, interp, start_from_vgg16


def test_the_bilinear_kernel_is_fcns_upsample_filt():
    # size 4: factor 2, centre 1.5, so each axis is 1 - |i - 1.5| / 2
    ramp = np.array([0.25, 0.75, 0.75, 0.25])
    assert np.array_equal(bilinear_kernel(4), np.outer(ramp, ramp).astype(np.float32))
    # odd size 3: factor 2, centre 1
    assert np.array_equal(bilinear_kernel(3)[1], np.float32([0.5, 1.0, 0.5]))
    weight = interp((3, 3, 4, 4))
    assert all(np.array_equal(weight[i, i], bilinear_kernel(4)) for i in range(3))
    assert not weight[0, 1].any() and not weight[2, 0].any()
    with pytest.raises(CaffeFormatError, match="as many outputs as inputs"):
        interp((3, 2, 4, 4))


def _thin_vgg16(rng) -> dict:
    """VGG-16 at THIN widths as ImageNet's file holds it: fc6/fc7/fc8 InnerProducts."""
    shapes = blob_shapes(THIN, 16)
    vgg = {name: [rng.standard_normal(s).astype(np.float32) for s in blobs]
           for name, blobs in shapes.items() if name.startswith("conv")}
    vgg["fc6"] = [rng.standard_normal((16, 8 * 7 * 7)).astype(np.float32), rng.standard_normal(16).astype(np.float32)]
    vgg["fc7"] = [rng.standard_normal((16, 16)).astype(np.float32), rng.standard_normal(16).astype(np.float32)]
    vgg["fc8"] = [rng.standard_normal((1000, 16)).astype(np.float32), rng.standard_normal(1000).astype(np.float32)]
    return vgg


def test_transplant_copies_coerces_drops_and_leaves_the_new_score_layer_at_zero():
    vgg = _thin_vgg16(np.random.default_rng(0))
    shapes = blob_shapes(THIN, 16)
    params, log = start_from_vgg16(vgg, shapes)
    assert widths_of({n: [b.shape for b in blobs] for n, blobs in params.items()}) == (THIN, 16)
    assert np.array_equal(params["conv3_2"][0], vgg["conv3_2"][0])
    # the InnerProduct's rows become the 7x7 convolution's filters, in flat (C, H, W) order
    assert np.array_equal(params["fc6"][0][5, 3, 2, 6], vgg["fc6"][0][5, 3 * 49 + 2 * 7 + 6])
    assert params["fc7"][0].shape == (16, 16, 1, 1) and np.array_equal(params["fc7"][0][:, :, 0, 0], vgg["fc7"][0])
    assert log["coerced"] == ["fc6/0", "fc7/0"] and log["dropped"] == ["fc8"] and log["zero"] == ["score_fr"]
    assert not any(b.any() for b in params["score_fr"])
    assert np.array_equal(params["upscore"][0], interp(shapes["upscore"][0]))
    del vgg["conv2_1"]
    with pytest.raises(CaffeFormatError, match="lacks layer.*conv2_1"):
        start_from_vgg16(vgg, shapes)

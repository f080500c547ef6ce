"""The query branch computes only what reaches the output: its constant frame once per channel
(frame.py) and only the fc7s cells the crop reads. Checked against the plain computation, which
the golden tests check against the real Caffe, and on full-size models against the graph."""
import numpy as np
import pytest
import torch

from weights_convert.graph import CaffeNet
from weights_convert.oslsm import OSLSMWidths
from weights_convert.oslsm.frame import AxisFrame, Frame, framed_conv2d
from weights_convert.oslsm.loading import oslsm_from_params
from weights_convert.oslsm.model import VGGTrunk, cells_reaching_crop
from weights_convert.oslsm.random_init import random_oslsm_params
from weights_convert.oslsm.spec import oslsm_deploy_net

TOL = 5e-5  # the golden tolerance: x max(1, max|reference|)


def _close(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """Worst difference in units of the golden tolerance."""
    return float((ours - ref).abs().max()) / (TOL * max(1.0, float(ref.abs().max())))


def _trunk(first_pad: int, skip: bool, seed: int = 0) -> VGGTrunk:
    torch.manual_seed(seed)
    trunk = VGGTrunk(OSLSMWidths.THIN, first_pad=first_pad, skip_constant_frame=skip)
    for conv in trunk.children():
        conv.weight.data.normal_(0, 0.4)
        conv.bias.data.normal_(0, 1.0)  # biases decide the frame's constants: make them matter
    return trunk.eval()


@pytest.mark.parametrize("hw", [(500, 500), (375, 500), (333, 500), (61, 37), (1, 1)])
@pytest.mark.parametrize("first_pad", [121, 100])
def test_trunk_with_frame_equals_the_plain_trunk(hw, first_pad):
    """Every tapped map, at the query's own sizes (square, VOC's, odd, tiny), and another padding."""
    torch.manual_seed(1)
    x = torch.randn(1, 3, *hw) * 50
    plain, framed = {}, {}
    with torch.inference_mode():
        _trunk(first_pad, False)(x, plain)
        _trunk(first_pad, True)(x, framed)
    assert plain.keys() == framed.keys()
    worst = {name: _close(framed[name], plain[name]) for name in plain}
    assert max(worst.values()) <= 1.0, worst


def test_without_a_frame_the_plain_convolutions_run_bit_for_bit():
    """A conditioning-like trunk (pad 1: no constant part worth skipping) falls back everywhere."""
    x = torch.randn(1, 3, 224, 224) * 50
    with torch.inference_mode():
        assert torch.equal(_trunk(1, True)(x), _trunk(1, False)(x))


def test_the_frame_marks_only_constants():
    """Outside the regions a framed convolution names, the plain convolution's output holds the
    frame's constant; the regions cover less than the map (something is skipped)."""
    torch.manual_seed(2)
    conv = torch.nn.Conv2d(4, 5, 3, padding=1)
    value = torch.randn(4)
    x = value.reshape(1, 4, 1, 1).repeat(1, 1, 40, 60)
    x[:, :, 10:20, 25:33] = torch.randn(1, 4, 10, 8)   # the reach
    x[:, :, :2] = torch.randn(1, 4, 2, 60)              # a band at the top edge
    frame = Frame(AxisFrame(40, 10, 20, 2, 0), AxisFrame(60, 25, 33, 0, 0), value)
    with torch.inference_mode():
        out, out_frame = framed_conv2d(x, frame, conv)
        reference = conv(x)
    computed = torch.zeros(40, 60, dtype=torch.bool)
    for y0, y1, x0, x1 in out_frame.regions():
        computed[y0:y1, x0:x1] = True
    assert 0.5 < (~computed).float().mean() < 1.0
    constant = out_frame.value.reshape(5, 1)
    assert float((reference[0][:, ~computed] - constant).abs().max()) < 1e-5
    assert _close(out, reference) <= 1.0
    assert out_frame.rows == AxisFrame(40, 9, 21, 3, 1)   # the reach grows by the kernel's half
    assert out_frame.cols == AxisFrame(60, 24, 34, 1, 1)  # padding (0) differs from the constant


def test_strided_and_pooled_geometry():
    """Sizes and reaches through a strided padded convolution and a ceil-mode pool, by brute force
    on one axis: an output is in the reach exactly when its window meets the input's reach."""
    axis = AxisFrame(23, 7, 12, 1, 2)
    for kernel, stride, pad in [(3, 2, 1), (2, 2, 0), (5, 3, 2), (7, 1, 0)]:
        out_size = (23 + 2 * pad - kernel) // stride + 1
        got = axis.after_window(out_size, kernel, stride, pad, pad_is_constant=False)
        meets = [o for o in range(out_size) if o * stride - pad < 12 and o * stride - pad + kernel > 7]
        assert (got.reach_lo, got.reach_hi) == (meets[0], meets[-1] + 1)
        low = [o for o in range(out_size) if o * stride - pad < 1]
        high = [o for o in range(out_size) if o * stride - pad + kernel > 23 - 2]
        assert (got.band_lo, got.band_hi) == (len(low), len(high))


@pytest.mark.parametrize("hw", [(500, 500), (375, 500), (120, 200), (1, 1)])
def test_head_cells_only_gives_the_same_logits_bit_for_bit(hw):
    model = oslsm_from_params(random_oslsm_params(OSLSMWidths.THIN, seed=3, hashing=True))
    torch.manual_seed(4)
    query, support, mask = torch.randn(1, 3, *hw) * 50, torch.randn(2, 3, 224, 224) * 50, torch.ones(2, 1, 224, 224)
    with torch.inference_mode():
        w, b = model.condition(support, mask)
        full = model.query_features(query)
        cells = model.query_features(query, head_cells_only=True)
        assert cells.shape[2:] == tuple(min(cells_reaching_crop(n), m) for n, m in zip(hw, full.shape[2:]))
        assert torch.equal(cells, full[:, :, :cells.shape[2], :cells.shape[3]])
        assert torch.equal(model.head(cells, w, b, hw), model.head(full, w, b, hw))
    if hw == (500, 500):
        assert full.shape[2:] == (18, 18) and cells.shape[2:] == (17, 17)


@pytest.fixture(scope="module")
def full_size_params():
    return random_oslsm_params(OSLSMWidths.FULL, seed=5, hashing=True)


@pytest.mark.slow
@pytest.mark.parametrize("hw", [(500, 500), (375, 500)])
def test_full_size_module_with_skipping_agrees_with_the_graph(full_size_params, hw):
    """The held-out check: a full-size random model, the module (frame on, channels_last, as the
    evaluation loads it) against the Caffe graph interpreter on the same weights."""
    torch.manual_seed(6)
    support = torch.randn(1, 3, 224, 224) * 50
    mask = (torch.rand(1, 1, 224, 224) > 0.5).float()
    query = torch.randn(1, 3, *hw) * 50
    model = oslsm_from_params(full_size_params).to(memory_format=torch.channels_last).eval()
    assert model.segmentation.trunk.skip_constant_frame
    with torch.inference_mode():
        ours = model.forward_blobs(support, mask, query)
        features = model.query_features(query, head_cells_only=True)
        logits = model.head(features, *model.condition(support, mask), hw)
    del model
    net = CaffeNet(oslsm_deploy_net(1, OSLSMWidths.FULL, hw))
    net.load_params(full_size_params)
    with torch.inference_mode():
        ref = net.forward(first_img=support, first_label=mask, second_img=query,
                          second_label=torch.zeros(1, 1, *hw))
    worst = {name: _close(ours[name], ref[name]) for name in ("conv1_2s", "conv3_3s", "conv4_3s", "pool5s",
                                                              "fc7s", "pre_score2")}
    assert max(worst.values()) <= 1.0, worst
    assert torch.equal(logits, ours["pre_score2"])
    # Random full-size logits reach 1e6, so the sigmoid is compared as the binary mask it gives.
    clear = ref["pre_score2"].abs() > 1e-4
    assert float(clear.float().mean()) > 0.99
    assert torch.equal((ours["score"] > 0.5)[clear], (ref["score"] > 0.5)[clear])
    assert np.unique((ref["score"] > 0.5).numpy()).size == 2  # both classes occur

"""The query branch computes only what reaches the output: its constant frame once per channel
(layers/frame.py), in the module and in the graph, forward and backward, and only the fc7s cells
the crop reads. Checked against the plain computation, which the golden tests check against the
real Caffe, and on full-size models against the graph."""
import numpy as np
import pytest
import torch

from weights_convert.formats.prototxt import parse_net_text
from weights_convert import graph
from weights_convert.graph import CaffeNet
from weights_convert.oslsm import OSLSMWidths
from weights_convert.layers.frame import AxisFrame, Frame, framed_conv2d
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
        out, out_frame = framed_conv2d(x, frame, conv.weight, conv.bias, conv.stride, conv.padding)
        reference = conv(x)
    computed = torch.zeros(40, 60, dtype=torch.bool)
    for y0, y1, x0, x1 in out_frame.partition()[0]:
        computed[y0:y1, x0:x1] = True
    assert 0.5 < (~computed).float().mean() < 1.0
    constant = out_frame.value.reshape(5, 1)
    assert float((reference[0][:, ~computed] - constant).abs().max()) < 1e-5
    assert _close(out, reference) <= 1.0
    assert out_frame.rows == AxisFrame(40, 9, 21, 3, 1)   # the reach grows by the kernel's half
    assert out_frame.cols == AxisFrame(60, 24, 34, 1, 1)  # padding (0) differs from the constant


@pytest.mark.parametrize("hw", [(40, 52), (9, 5)])
def test_a_framed_map_is_written_everywhere(hw):
    """Deterministic mode with its NaN fill of new memory (faithful_mode turns the fill off):
    the blocks a framed convolution writes cover its output, through every layer of the net."""
    previous = torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        assert torch.isnan(torch.empty(4)).all()  # the fill is on
        with torch.no_grad():
            blobs = _framed_net(hw, True).forward(data=torch.randn(1, 2, *hw))
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.utils.deterministic.fill_uninitialized_memory = previous[1]
    assert all(not torch.isnan(blob).any() for blob in blobs.values())


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
    net = CaffeNet(oslsm_deploy_net(1, OSLSMWidths.FULL, hw), skip_constant_frame=False)
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


# ---------------------------------------------------------------------------- the graph
# A padded net through every layer that carries a frame: Convolution (strided too), ReLU with a
# negative slope, Caffe's padded max pooling, a Split; and one that does not (average pooling).
FRAMED_NET = """
input: "data" input_shape { dim: 1 dim: 2 dim: %d dim: %d }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1" convolution_param { num_output: 3 kernel_size: 3 pad: 30 } }
layer { name: "r1" type: "ReLU" bottom: "c1" top: "c1" relu_param { negative_slope: 0.1 } }
layer { name: "c2" type: "Convolution" bottom: "c1" top: "c2" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "p1" type: "Pooling" bottom: "c2" top: "p1" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "c3" type: "Convolution" bottom: "p1" top: "c3" convolution_param { num_output: 3 kernel_size: 3 stride: 2 pad: 2 } }
layer { name: "c4" type: "Convolution" bottom: "c3" top: "c4" convolution_param { num_output: 3 kernel_size: 3 pad: 1 } }
layer { name: "p2" type: "Pooling" bottom: "c4" top: "p2" pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "c5" type: "Convolution" bottom: "p2" top: "c5" convolution_param { num_output: 2 kernel_size: 3 pad: 1 } }
"""


def _framed_net(hw, skip: bool, dtype=torch.float32) -> CaffeNet:
    net = CaffeNet(parse_net_text(FRAMED_NET % hw), skip_constant_frame=skip)
    torch.manual_seed(7)
    for layer in net.param_layers():
        layer.blobs[0].data.normal_(0, 0.5)
        layer.blobs[1].data.normal_(0, 1.0)
    return net.to(dtype)


@pytest.mark.parametrize("hw", [(40, 52), (9, 5)])
def test_the_graph_with_frames_equals_the_plain_graph_forward_and_backward(hw, monkeypatch):
    """Every blob, and every param's gradient, in float64 (where float32 rounding's near-ties
    cannot send a max pool's gradient elsewhere: tests/weights_convert/train/test_train_golden.py)."""
    monkeypatch.setattr(graph, "_input_on", lambda value, device: torch.as_tensor(value).to(device))
    x = torch.randn(1, 2, *hw, dtype=torch.float64) * 5
    results = {}
    for skip in (False, True):
        net = _framed_net(hw, skip, torch.float64)
        blobs = net.forward(data=x)
        blobs["c5"].square().sum().backward()
        blobs = {n: v.detach() for n, v in blobs.items()}
        results[skip] = blobs, {f"{l.name}/{i}": b.grad.clone() for l in net.param_layers() for i, b in enumerate(l.blobs)}
    (plain, plain_grads), (framed, framed_grads) = results[False], results[True]
    assert max(float((framed[n] - plain[n]).abs().max() / plain[n].abs().max()) for n in plain if n != "data") < 1e-12
    assert max(float((framed_grads[k] - g).abs().max() / g.abs().max()) for k, g in plain_grads.items()) < 1e-12
    assert all(g.abs().max() > 0 for g in plain_grads.values())


def test_the_graph_skips_the_frame_where_it_can():
    """The frames the graph carries: c1's constant is its bias, ReLU maps it (negative slope),
    the padded max pool keeps it, average pooling drops it (its padding counts as zeros)."""
    net = _framed_net((40, 52), True)
    seen = {}
    for layer in net.layers:
        original = layer.forward_framed

        def spy(bottoms, frames, original=original, name=layer.name):
            tops, top_frames = original(bottoms, frames)
            seen[name] = top_frames[0] if top_frames else None
            return tops, top_frames
        layer.forward_framed = spy
    with torch.no_grad():
        net.forward(data=torch.randn(1, 2, 40, 52))
    bias = net.layer_by_name["c1"].blobs[1].detach()
    assert torch.equal(seen["c1"].value, bias)
    assert torch.allclose(seen["r1"].value, torch.where(bias > 0, bias, 0.1 * bias))
    assert seen["p1"].value is seen["c2"].value and seen["p2"] is None
    assert seen["c1"].constant_share() > 0.5 and seen["c3"].constant_share() > 0.1


def test_a_max_pool_with_windows_past_the_map_carries_no_frame():
    """Stride 3 over kernel 1, ceil rounding: Caffe's last window starts past the map and gives
    -FLT_MAX, not the constant; the next convolution must read it."""
    text = """
input: "data" input_shape { dim: 1 dim: 1 dim: 5 dim: 5 }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1" convolution_param { num_output: 2 kernel_size: 1 pad: 6 } }
layer { name: "p1" type: "Pooling" bottom: "c1" top: "p1" pooling_param { pool: MAX kernel_size: 1 stride: 3 } }
layer { name: "c2" type: "Convolution" bottom: "p1" top: "c2" convolution_param { num_output: 2 kernel_size: 3 pad: 1 } }
"""
    outputs = []
    for skip in (False, True):
        net = CaffeNet(parse_net_text(text), skip_constant_frame=skip)
        for layer in net.param_layers():
            layer.blobs[0].data.fill_(1e-30)
            layer.blobs[1].data.fill_(1.0)
        with torch.no_grad():
            blobs = net.forward(data=torch.ones(1, 1, 5, 5))
        assert float(blobs["p1"].min()) == -torch.finfo(torch.float32).max  # the empty window
        outputs.append(blobs["c2"])
    assert torch.equal(outputs[0], outputs[1])


def test_a_bottom_without_propagate_down_passes_no_gradient_through_its_constant():
    text = FRAMED_NET % (12, 14)
    text = text.replace('top: "c2" convolution_param', 'top: "c2" propagate_down: false convolution_param')
    for skip in (False, True):
        net = CaffeNet(parse_net_text(text), skip_constant_frame=skip)
        for layer in net.param_layers():
            layer.blobs[1].data.fill_(1.0)
            layer.blobs[0].data.fill_(0.1)
        net.forward(data=torch.randn(1, 2, 12, 14))["c5"].sum().backward()
        assert net.layer_by_name["c1"].blobs[1].grad is None
        assert net.layer_by_name["c2"].blobs[1].grad is not None

"""The idiomatic OSLSM module against the real Caffe's outputs on the thin OSLSM nets."""
import numpy as np
import pytest
import torch

from helpers import GOLDEN, UPSTREAM
from weights_convert.errors import CaffeFormatError
from weights_convert.formats.weights_io import read_weights
from weights_convert.oslsm import OSLSM, OSLSMWidths, load_oslsm
from weights_convert.oslsm.layout import expected_param_shapes
from weights_convert.oslsm.loading import caffe_params, oslsm_from_caffe, oslsm_from_params
from weights_convert.oslsm.random_init import random_oslsm_params

OSLSM_CASES = ["oslsm_thin_1shot_120x200", "oslsm_thin_1shot_500x500", "oslsm_thin_5shot_500x500"]
TOL = 5e-5


def golden_blobs(case):
    with np.load(GOLDEN / case / "blobs.npz") as data:
        return {k: data[k] for k in data.files}


def inputs(blobs, device="cpu"):
    return [torch.from_numpy(blobs[n]).to(device) for n in ("first_img", "first_label", "second_img")]


@pytest.fixture(scope="module")
def thin_params():
    return read_weights(GOLDEN / "oslsm_thin_5shot_500x500" / "weights.caffemodel")


@pytest.fixture(scope="module", params=[(case, layout) for case in OSLSM_CASES for layout in ("plain", "channels_last")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def case_run(request, device):
    """The golden case through oslsm_from_caffe (contiguous weights) and through load_oslsm, the
    evaluation's loader (channels_last weights: other kernels, other rounding); on --device."""
    case, layout = request.param
    if layout == "plain":
        model = oslsm_from_caffe(GOLDEN / case / "net.prototxt", GOLDEN / case / "weights.caffemodel").to(device)
    else:
        model = load_oslsm(GOLDEN / case / "weights.caffemodel", GOLDEN / case / "net.prototxt", device=device)
        assert model.segmentation.trunk.conv1_1.weight.is_contiguous(memory_format=torch.channels_last)
    blobs = golden_blobs(case)
    with torch.no_grad():
        ours = {k: v.cpu().numpy() for k, v in model.forward_blobs(*inputs(blobs, device)).items()}
    return case, model, blobs, ours


def test_every_exposed_blob_matches_caffe(case_run):
    case, _, golden, ours = case_run
    compared = sorted(set(ours) & set(golden))
    must = {"fc8f", "rw1s", "rb1s", "fc7s", "rpred", "pred", "pre_score2", "score"}
    assert must <= set(compared), must - set(compared)
    if case == "oslsm_thin_1shot_120x200":  # the small case stores the big head blobs too
        assert {"pre_score", "uppred_offset", "w1sXs", "first_input"} <= set(compared)
    worst = {}
    for name in compared:
        ref = golden[name]
        assert ours[name].shape == ref.shape, name
        diff = float(np.abs(ours[name] - ref).max())
        worst[name] = diff / (TOL * max(1.0, float(np.abs(ref).max())))
    assert max(worst.values()) <= 1.0, {k: round(v, 3) for k, v in worst.items() if v > 1.0}


def test_binary_mask_identical_where_logit_is_clear(case_run):
    _, _, golden, ours = case_run
    clear = np.abs(golden["pre_score2"]) > 1e-4
    assert clear.mean() > 0.99
    assert np.array_equal((ours["score"] > 0.5)[clear], (golden["score"] > 0.5)[clear])
    # Both classes occur, so the comparison is not trivially all-background.
    assert 0 < (golden["score"] > 0.5).mean() < 1


def test_public_api_composes_to_forward(case_run):
    _, model, golden, ours = case_run
    device = next(model.parameters()).device
    first_img, first_label, second_img = inputs(golden, device)
    with torch.no_grad():
        w, b = model.condition(first_img, first_label)
        feats = model.query_features(second_img)
        logits = model.head(feats, w, b, tuple(second_img.shape[2:]))
        score = model(first_img, first_label, second_img)
    k = first_img.shape[0]
    assert w.shape == (k, model.widths.fc) and b.shape == (k,)
    assert feats.shape == golden["fc7s"].shape
    assert torch.equal(logits.cpu(), torch.from_numpy(ours["pre_score2"]))
    assert torch.equal(score, torch.sigmoid(logits))


def test_five_identical_shots_equal_one_shot(thin_params):
    model = oslsm_from_params(thin_params)
    blobs = golden_blobs("oslsm_thin_1shot_120x200")
    img, label, query = inputs(blobs)
    with torch.no_grad():
        one = model(img, label, query)
        five = model(img.repeat(5, 1, 1, 1), label.repeat(5, 1, 1, 1), query)
    # Batched convolutions may round differently from single ones (Caffe loops over images).
    assert float((one - five).abs().max()) <= TOL


def test_k_shot_is_max_over_shots(thin_params):
    model = oslsm_from_params(thin_params)
    blobs = golden_blobs("oslsm_thin_5shot_500x500")
    img, label, query = inputs(blobs)
    with torch.no_grad():
        feats = model.query_features(query)
        w, b = model.condition(img, label)
        per_shot = [model.head(feats, w[i:i + 1], b[i:i + 1], (500, 500)) for i in range(5)]
        joint = model.head(feats, w, b, (500, 500))
    assert torch.equal(joint, torch.stack(per_shot).amax(0))


def test_widths_from_params(thin_params):
    assert OSLSMWidths.from_params(thin_params) == OSLSMWidths.THIN
    assert OSLSMWidths.THIN.as_tuple() == (4, 6, 8, 8, 8, 16, 10)
    assert OSLSMWidths.FULL.as_tuple() == (64, 128, 256, 512, 512, 4096, 1000)


def test_missing_layer_is_named(thin_params):
    params = dict(thin_params)
    del params["fc7s"]
    with pytest.raises(CaffeFormatError, match=r"missing: fc7s"):
        oslsm_from_params(params)


def test_wrong_shape_names_layer_index_and_both_shapes(thin_params):
    params = dict(thin_params)
    params["fc6s"] = [params["fc6s"][0][:, :4], params["fc6s"][1]]
    with pytest.raises(CaffeFormatError, match=r"'fc6s' blob 0 has shape \(16, 4, 7, 7\); expected \(16, 8, 7, 7\)"):
        oslsm_from_params(params)


def test_extra_layer_rejected(thin_params):
    params = dict(thin_params, fc9f=[np.zeros((2, 2), np.float32)])
    with pytest.raises(CaffeFormatError, match="fc9f"):
        oslsm_from_params(params)


def test_vgg16_model_says_which_oslsm_layers_are_missing():
    vgg = {f"conv{b}_{i}": [np.zeros((4, 3, 3, 3), np.float32), np.zeros(4, np.float32)]
           for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for i in range(1, n + 1)}
    vgg.update(fc6=[np.zeros((16, 392), np.float32)], fc7=[np.zeros((16, 16), np.float32)],
               fc8=[np.zeros((10, 16), np.float32)])
    with pytest.raises(CaffeFormatError) as info:
        oslsm_from_params(vgg, source="vgg16.caffemodel")
    message = str(info.value)
    assert "vgg16.caffemodel: not an OSLSM model" in message
    for name in ("conv1_1f", "conv5_3s", "fc6f", "fc8f", "rw1s", "rb1s", "uppred_offset"):
        assert name in message


def test_from_caffe_checks_the_prototxt():
    case = GOLDEN / "oslsm_thin_1shot_500x500"
    # The full-width upstream deploy net with thin weights: the mismatch names layer and shapes.
    with pytest.raises(CaffeFormatError, match=r"'conv1_1f' blob 0 has shape \(4, 3, 3, 3\); expected \(64, 3, 3, 3\)"):
        oslsm_from_caffe(UPSTREAM / "deploy_1shot.prototxt", case / "weights.caffemodel")
    with pytest.raises(CaffeFormatError, match="not an OSLSM deploy net"):
        oslsm_from_caffe(GOLDEN / "conv_basic" / "net.prototxt", case / "weights.caffemodel")


def test_load_oslsm_all_weight_forms_agree(tmp_path):
    from weights_convert.convert import convert
    case = GOLDEN / "oslsm_thin_1shot_500x500"
    proto = case / "net.prototxt"
    convert(proto, case / "weights.caffemodel", tmp_path / "o.safetensors", model="oslsm")
    convert(proto, case / "weights.caffemodel", tmp_path / "g.safetensors", model="graph")
    blobs = golden_blobs("oslsm_thin_1shot_500x500")
    models = [load_oslsm(case / "weights.caffemodel", proto), load_oslsm(case / "weights.caffemodel.h5"),
              load_oslsm(tmp_path / "o.safetensors"), load_oslsm(tmp_path / "g.safetensors")]
    with torch.no_grad():
        outs = [m(*inputs(blobs)) for m in models]
    for out in outs[1:]:
        assert torch.equal(out, outs[0])
    ref = blobs["score"]
    assert np.abs(outs[0].numpy() - ref).max() <= TOL


def test_caffe_params_round_trip(thin_params):
    back = caffe_params(oslsm_from_params(thin_params))
    assert set(back) == set(thin_params)
    for name, blobs in thin_params.items():
        for a, b in zip(back[name], blobs):
            assert np.array_equal(a, b), name


def test_full_size_model_builds_with_vgg16_shapes():
    with torch.device("meta"):
        model = OSLSM(OSLSMWidths.FULL)
    state = model.state_dict()
    shapes = expected_param_shapes(OSLSMWidths.FULL)
    assert tuple(state["conditioning.fc6.weight"].shape) == shapes["fc6f"][0] == (4096, 25088)
    assert tuple(state["segmentation.fc6.weight"].shape) == shapes["fc6s"][0] == (4096, 512, 7, 7)
    assert tuple(state["hashing.weight_map.index"].shape) == (4096,)
    dense = sum(int(np.prod(s)) for blobs in shapes.values() for s in blobs)
    # conditioning 138,357,544 (VGG-16) + segmentation 134,260,544 (no fc8) + rw1s 4,100,096
    # + rb1s 1,001 + deconv 4,096: 1.107e9 bytes in float32, the authors' ~1.1 GB files.
    assert dense == 276_723_281


def test_random_params_build_a_working_model():
    params = random_oslsm_params(OSLSMWidths.THIN, seed=3)
    model = oslsm_from_params(params)
    assert model.hashing.describe()["rw1s"]["form"] == "hashing"
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        taps = model.forward_blobs(torch.randn(2, 3, 224, 224, generator=gen),
                                   (torch.rand(2, 1, 224, 224, generator=gen) > 0.5).float(),
                                   torch.randn(1, 3, 100, 130, generator=gen))
    assert taps["score"].shape == (1, 1, 100, 130)
    for name in ("pool5s", "fc7f", "fc8f", "fc7s"):
        assert 0.05 < float(taps[name].std()) < 20, name
    dense = random_oslsm_params(OSLSMWidths.THIN, seed=3, hashing=False)
    assert oslsm_from_params(dense).hashing.describe()["rw1s"]["form"] == "dense"


def test_equals_the_caffe_graph_interpreter(case_run):
    """The idiomatic module and the layer-by-layer CaffeNet agree on every blob both compute
    (bit for bit today with contiguous weights; channels_last weights round differently)."""
    from weights_convert.graph import CaffeNet

    case, _, golden, ours = case_run
    net = CaffeNet.from_prototxt(GOLDEN / case / "net.prototxt")
    net.load_params(read_weights(GOLDEN / case / "weights.caffemodel"))
    with torch.no_grad():
        graph = net.forward(**{k: torch.from_numpy(golden[k])
                               for k in ("first_img", "second_img", "first_label", "second_label")})
    common = sorted(set(ours) & set(graph))
    assert len(common) >= 50 and "score" in common and "fc8f" in common
    for name in common:
        ref = graph[name].numpy()
        assert np.abs(ours[name] - ref).max() <= TOL * max(1.0, float(np.abs(ref).max())), name
    assert np.array_equal(ours["score"] > 0.5, graph["score"].numpy() > 0.5)


def test_query_features_are_contiguous_in_every_layout(thin_params):
    """Features cached on disk come back contiguous; the head must see the same strides from
    memory, or its matrix product may round differently (cache on/off would then differ)."""
    model = oslsm_from_params(thin_params).eval().to(memory_format=torch.channels_last)
    assert model.segmentation.fc6.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        features = model.query_features(torch.randn(1, 3, 120, 150) * 50)
    assert features.is_contiguous()


@pytest.mark.parametrize("allow_hashing", [True, False])
def test_one_mapping_gives_the_modules_state_in_its_order(thin_params, allow_hashing):
    """The converter writes state_from_caffe's tensors in its order; the loader builds the module
    from the same tensors: keys, order, shapes and dtypes are the module's own."""
    from weights_convert.formats.weights_io import array_blob
    from weights_convert.oslsm.loading import skeleton
    from weights_convert.oslsm.state_map import caffe_from_state, state_from_caffe

    blobs = {name: [array_blob(b) for b in arrays] for name, arrays in thin_params.items()}
    state = state_from_caffe(blobs, OSLSMWidths.THIN, allow_hashing)
    module = skeleton(OSLSMWidths.THIN, "hashing.weight_map.index" in state, "hashing.bias_map.index" in state)
    expected = module.state_dict()
    assert list(state) == list(expected)
    assert ("hashing.weight_map.index" in state) == allow_hashing
    dtypes = {np.float32: torch.float32, np.int32: torch.int32, np.int8: torch.int8}
    for key, tensor in state.items():
        assert tensor.shape == tuple(expected[key].shape) and dtypes[tensor.dtype] == expected[key].dtype, key
    back = caffe_from_state({k: t.read() for k, t in state.items()})
    for name, arrays in thin_params.items():
        for got, want in zip(back[name], arrays):
            assert np.array_equal(got, np.asarray(want).reshape(got.shape)), name


def test_upsampling_adds_caffes_products_in_caffes_order():
    """uppred_offset from Caffe's own `pred`: bit for bit equal to the real Caffe's blob, and equal
    to a general transposed convolution on other inputs up to float rounding."""
    from weights_convert.oslsm.upsample import HalfOverlapDeconv

    case = "oslsm_thin_1shot_120x200"
    blobs = golden_blobs(case)
    up = HalfOverlapDeconv(64)
    with torch.no_grad():
        up.weight.copy_(torch.from_numpy(np.asarray(read_weights(GOLDEN / case / "weights.caffemodel")["uppred_offset"][0])))
        ours = up(torch.from_numpy(blobs["pred"])).numpy()
        reference = blobs["uppred_offset"]
        assert ours.shape == reference.shape == (1, 1, 224, 288)
        assert np.array_equal(ours.view(np.uint32), reference.view(np.uint32))
        x = torch.randn(5, 1, 18, 18, generator=torch.Generator().manual_seed(0))
        general = torch.nn.functional.conv_transpose2d(x, up.weight, stride=32)
        assert torch.allclose(up(x), general, rtol=0, atol=1e-6 * float(general.abs().max()))
        with pytest.raises(ValueError, match=r"expected \(n, 1, h, w\)"):
            up(torch.zeros(1, 2, 3, 3))

"""CaffeNet construction, sharing, in-place blobs, state rules, strict loading and error messages."""
import numpy as np
import pytest
import torch

from helpers import GOLDEN
from weights_convert.errors import CaffeFormatError
from weights_convert.formats.prototxt import parse_net_text
from weights_convert.graph import CaffeNet, insert_splits, shapes_match
from weights_convert.layers import LAYER_TYPES, build_layer
from weights_convert.runtime.numerics import faithful_mode

INPUT = 'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }\n'


def run(net: CaffeNet, **inputs) -> dict[str, np.ndarray]:
    with torch.no_grad():
        return {k: v.numpy() for k, v in net(**inputs).items()}


def net_of(text: str, **kwargs) -> CaffeNet:
    return CaffeNet(parse_net_text(INPUT + text, "t.prototxt"), **kwargs)


def ip(name, bottom="x", top=None, n=4, params=""):
    return (f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{top or name}" {params} '
            f'inner_product_param {{ num_output: {n} }} }}\n')


X = np.arange(6, dtype=np.float32).reshape(2, 3) / 7 - 0.3


# ------------------------------------------------------------------ parameter sharing
SHARED = ip("a", params='param { name: "w" } param { name: "b" }') + ip("b", params='param { name: "w" }')


def test_named_params_share_one_tensor():
    net = net_of(SHARED)
    a, b = net.layer_by_name["a"], net.layer_by_name["b"]
    assert a.blobs[0] is b.blobs[0] and a.blobs[1] is not b.blobs[1]
    assert len(list(net.parameters())) == 3  # w, a's bias, b's bias
    w = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    net.load_params({"a": [w, np.ones(4, np.float32)], "b": [w, np.zeros(4, np.float32)]})
    out = run(net, x=X)
    np.testing.assert_allclose(out["a"], X @ w.T + 1, atol=1e-6)
    np.testing.assert_allclose(out["b"], X @ w.T, atol=1e-6)
    # Caffe copies layer by layer in the file's order: the later layer's value of the one shared
    # tensor wins, whatever the net order.
    net.load_params({"a": [w, np.ones(4, np.float32)], "b": [2 * w, np.zeros(4, np.float32)]})
    np.testing.assert_allclose(run(net, x=X)["a"], X @ (2 * w).T + 1, atol=1e-6)
    net.load_params({"b": [2 * w, np.zeros(4, np.float32)], "a": [w, np.ones(4, np.float32)]})
    np.testing.assert_allclose(run(net, x=X)["b"], X @ w.T, atol=1e-6)
    saved = net.params_to_numpy()
    assert np.array_equal(saved["a"][0], saved["b"][0])


def test_blobs_left_out_for_sharing_come_from_the_owner(tmp_path):
    """A Caffe HDF5 file holds only owned blobs: 'b' has its bias ("1") but not the shared "0"."""
    import h5py

    from weights_convert.formats.weights_io import read_weights

    w = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    with h5py.File(tmp_path / "shared.caffemodel.h5", "w") as h5:
        h5["data/a/0"], h5["data/a/1"], h5["data/b/1"] = w, np.ones(4, np.float32), np.zeros(4, np.float32)
    net = net_of(SHARED)
    net.load_params(read_weights(tmp_path / "shared.caffemodel.h5"))
    out = run(net, x=X)
    np.testing.assert_allclose(out["b"], X @ w.T, atol=1e-6)
    np.testing.assert_allclose(out["a"], X @ w.T + 1, atol=1e-6)
    # A gap where nothing is shared is refused, naming layer and blob.
    with pytest.raises(CaffeFormatError, match="layer 'a' .* blob 1: the weights leave it out"):
        net.load_params({"a": [w, None], "b": [None, np.zeros(4, np.float32)]})


def test_sharing_with_a_different_shape_is_an_error():
    with pytest.raises(CaffeFormatError) as err:
        net_of(ip("a", params='param { name: "w" }') + ip("b", n=5, params='param { name: "w" }'))
    msg = str(err.value)
    assert "'b'" in msg and "'w'" in msg and "'a'" in msg and "(4, 3)" in msg and "(5, 3)" in msg


def test_permissive_sharing_needs_only_equal_counts():
    reshape = 'layer { name: "r" type: "Reshape" bottom: "x" top: "x6" reshape_param { shape { dim: 1 dim: 6 } } }\n'
    # a (2, 6) and b (3, 4): 12 values each, different shapes
    a = ip("a", bottom="x6", n=2, params='param { name: "w" }')
    b = ip("b", bottom="a", n=3, params='param { name: "w" share_mode: PERMISSIVE }')
    net = net_of(reshape + a + ip("e", bottom="a", n=4) + ip("b", bottom="e", n=3,
                                                             params='param { name: "w" share_mode: PERMISSIVE }'))
    la, lb = net.layer_by_name["a"], net.layer_by_name["b"]
    assert la.blobs[0] is lb.blobs[0] and lb.blob_shapes[0] == (3, 4) and lb.blob(0).shape == (3, 4)
    with pytest.raises(CaffeFormatError, match="counts disagree"):
        net_of(reshape + a + b)  # (3, 2): 6 values, not 12
    with pytest.raises(CaffeFormatError, match="shapes disagree"):
        net_of(reshape + a + ip("e", bottom="a", n=4) + ip("b", bottom="e", n=3, params='param { name: "w" }'))


def test_loading_a_sharing_layer_checks_its_shape():
    net = net_of(SHARED)
    good = np.zeros((4, 3), np.float32)
    with pytest.raises(CaffeFormatError) as err:
        net.load_params({"a": [good, np.zeros(4, np.float32)], "b": [np.zeros((3, 4), np.float32), np.zeros(4, np.float32)]})
    msg = str(err.value)
    assert "'b'" in msg and "blob 0" in msg and "shared with layer 'a'" in msg and "(3, 4)" in msg and "(4, 3)" in msg


# ------------------------------------------------------------------ in-place and splits
INPLACE = (ip("f") + 'layer { name: "r" type: "ReLU" bottom: "f" top: "f" }\n'
           'layer { name: "t" type: "TanH" bottom: "f" top: "f" }\n')


def test_in_place_blob_holds_the_last_value():
    net = net_of(INPLACE)
    w = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    net.load_params({"f": [w, np.full(4, -0.1, np.float32)]})
    out = net(x=X)
    assert set(out) == {"x", "f"} and out.output_names == ["f"]
    out = run(net, x=X)
    np.testing.assert_allclose(out["f"], np.tanh(np.maximum(X @ w.T - 0.1, 0)), atol=1e-6)


def test_split_after_an_in_place_layer_feeds_every_reader():
    """f is read once (by the in-place ReLU), the ReLU's f twice: Caffe's InsertSplits splits the
    ReLU's output, so both readers see rectified values."""
    net = net_of(ip("f") + 'layer { name: "r" type: "ReLU" bottom: "f" top: "f" }\n'
                 'layer { name: "s" type: "Sigmoid" bottom: "f" top: "s" }\n'
                 'layer { name: "n" type: "Power" bottom: "f" top: "n" power_param { scale: -1 } }\n')
    assert [layer.type for layer in net.layers] == ["Input", "InnerProduct", "ReLU", "Split", "Sigmoid", "Power"]
    w = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    net.load_params({"f": [w, np.zeros(4, np.float32)]})
    out = run(net, x=X)
    pre = X @ w.T
    assert (pre < 0).any()
    # the ReLU reads f straight (f has one reader: ReLU); its in-place output f is read twice
    np.testing.assert_allclose(out["f"], np.maximum(pre, 0), atol=1e-6)
    np.testing.assert_allclose(out["f_r_0_split_0"], np.maximum(pre, 0), atol=1e-6)
    np.testing.assert_allclose(out["s"], 1 / (1 + np.exp(-np.maximum(pre, 0))), atol=1e-6)
    np.testing.assert_allclose(out["n"], -np.maximum(pre, 0), atol=1e-6)
    # A reader before the in-place layer makes f a split blob, so the ReLU's top f is no longer
    # in place: Caffe refuses it ("Top blob 'f' produced by multiple sources"), and so do we.
    with pytest.raises(CaffeFormatError, match="top 'f' of layer 'r' is produced by more than one layer"):
        net_of(ip("f") + 'layer { name: "s" type: "Sigmoid" bottom: "f" top: "s" }\n'
               'layer { name: "r" type: "ReLU" bottom: "f" top: "f" }\n')


def test_split_names_follow_caffe():
    """Same names as the golden Caffe blobs (e.g. eltwise_prod_max's a_input_0_split_0)."""
    net = parse_net_text((GOLDEN / "eltwise_prod_max" / "net.prototxt").read_text())
    layers = insert_splits(list(net.layer))
    splits = [lp for lp in layers if lp.type == "Split"]
    assert [lp.name for lp in splits] == ["a_input_0_split", "b_input_1_split"]
    assert list(splits[0].top) == ["a_input_0_split_0", "a_input_0_split_1"]
    golden = set(np.load(GOLDEN / "eltwise_prod_max" / "blobs.npz").files)
    assert {t for lp in layers for t in lp.top} == golden


def test_in_place_after_another_reader_is_refused_like_caffe():
    """A blob read by a layer and then rewritten in place: InsertSplits renames the in-place
    layer's bottom, so its top collides with the producer's (Caffe: 'produced by multiple sources')."""
    net = net_of(ip("f") + 'layer { name: "r" type: "ReLU" bottom: "f" top: "f" }\n'
                 'layer { name: "n" type: "Power" bottom: "f" top: "n" }\n')
    assert "Split" not in [layer.type for layer in net.layers]  # f has one reader before and one after
    with pytest.raises(CaffeFormatError, match="top 'f' of layer 'r' is produced by more than one layer"):
        net_of(ip("f") + 'layer { name: "s" type: "Sigmoid" bottom: "f" top: "s" }\n'
               'layer { name: "r" type: "ReLU" bottom: "f" top: "f" }\n')


def test_relu_inplace_golden_earlier_blob_not_corrupted():
    net = CaffeNet.from_prototxt(GOLDEN / "relu_inplace_chain" / "net.prototxt")
    from test_layers_golden import params_from_npz
    net.load_params(params_from_npz(GOLDEN / "relu_inplace_chain" / "params.npz"))
    golden = dict(np.load(GOLDEN / "relu_inplace_chain" / "blobs.npz"))
    x = torch.from_numpy(golden["x"].copy())
    out = run(net, x=x)
    assert torch.equal(x, torch.from_numpy(golden["x"]))  # the caller's input is not written
    for name, ref in golden.items():
        assert np.abs(out[name] - ref).max() <= 5e-5 * max(1, np.abs(ref).max())


# ------------------------------------------------------------------ include / exclude
def rule_net(rules: str, **kwargs) -> CaffeNet:
    return net_of(f'layer {{ name: "s" type: "Sigmoid" bottom: "x" top: "s" {rules} }}\n', **kwargs)


@pytest.mark.parametrize("rules,kwargs,kept", [
    ("include { phase: TRAIN }", {}, False),
    ("include { phase: TRAIN }", {"phase": "TRAIN"}, True),
    ("exclude { phase: TEST }", {}, False),
    ("exclude { phase: TRAIN }", {}, True),
    ("include { phase: TRAIN } include { stage: 'deploy' }", {"stages": ["deploy"]}, True),  # any include
    ("include { phase: TEST stage: 'deploy' }", {}, False),  # all parts of one rule
    ("include { min_level: 1 }", {}, False),
    ("include { min_level: 1 }", {"level": 1}, True),
    ("include { max_level: 1 }", {"level": 2}, False),
    ("include { not_stage: 'x' }", {"stages": ["x"]}, False),
    ("include { not_stage: 'x' }", {"stages": ["y"]}, True),
    ("exclude { stage: 'a' } exclude { stage: 'b' }", {"stages": ["b"]}, False),  # any exclude
    ("exclude { stage: 'a' stage: 'b' }", {"stages": ["b"]}, True),
])
def test_state_rules(rules, kwargs, kept):
    net = rule_net(rules, **kwargs)
    assert ("s" in net.layer_by_name) == kept
    assert ("s" in net(x=X)) == kept


def test_net_state_from_the_prototxt():
    text = ('state { level: 3 stage: "deploy" }\n' + INPUT +
            'layer { name: "s" type: "Sigmoid" bottom: "x" top: "s" include { min_level: 3 stage: "deploy" } }\n')
    assert "s" in CaffeNet(parse_net_text(text)).layer_by_name
    assert "s" not in CaffeNet(parse_net_text(text), level=2).layer_by_name


def test_include_and_exclude_together_is_an_error():
    with pytest.raises(CaffeFormatError, match="include rules or exclude rules"):
        rule_net("include { phase: TEST } exclude { phase: TRAIN }")


def test_phase_reaches_the_layers():
    text = 'layer { name: "d" type: "Dropout" bottom: "x" top: "d" dropout_param { dropout_ratio: 0.5 } }\n'
    x = torch.ones(2, 3)
    assert torch.equal(net_of(text)(x=x)["d"], x)
    torch.manual_seed(0)
    y = net_of(text, phase="TRAIN")(x=torch.ones(200, 3))["d"]
    assert set(y.unique().tolist()) == {0.0, 2.0}  # Caffe scales kept values by 1/(1-p) at train time


# ------------------------------------------------------------------ strict loading
def ip_net():
    return net_of(ip("a") + ip("b", bottom="a", n=2))


def good_params():
    return {"a": [np.ones((4, 3), np.float32), np.zeros(4, np.float32)],
            "b": [np.ones((2, 4), np.float32), np.zeros(2, np.float32)]}


def test_load_rejects_a_wrong_shape_naming_layer_blob_and_shapes():
    params = good_params()
    params["b"][0] = np.ones((4, 2), np.float32)
    net = ip_net()
    with pytest.raises(CaffeFormatError) as err:
        net.load_params(params)
    assert "'b'" in str(err.value) and "blob 0" in str(err.value) and "(4, 2)" in str(err.value) \
        and "(2, 4)" in str(err.value)
    # nothing was copied: the check precedes every write
    assert not net.layer_by_name["a"].blobs[0].detach().any()


def test_load_rejects_a_wrong_blob_count():
    params = good_params()
    params["a"] = params["a"][:1]
    with pytest.raises(CaffeFormatError, match=r"'a'.*1 blob\(s\).*expects 2"):
        ip_net().load_params(params)


def test_load_missing_layer_strict_and_not_strict():
    params = good_params()
    del params["b"]
    with pytest.raises(CaffeFormatError, match=r"no blobs for layer\(s\) 'b' \(InnerProduct"):
        ip_net().load_params(params)
    net = ip_net()
    net.load_params(params, strict=False)
    assert net.layer_by_name["a"].blobs[0].detach().eq(1).all()


def test_load_extra_layers_strict_and_not_strict():
    params = good_params()
    params["old1"] = [np.zeros(3, np.float32)]
    params["old2"] = [np.zeros(3, np.float32)]
    params["data"] = []  # a training net's data layer: no blobs, nothing to load
    with pytest.raises(CaffeFormatError, match="not in the net.*old1, old2"):
        ip_net().load_params(params)
    ip_net().load_params(params, strict=False)


def test_load_accepts_legacy_4d_shapes_like_caffe():
    params = good_params()
    params["a"] = [np.ones((1, 1, 4, 3), np.float32), np.zeros((1, 1, 1, 4), np.float32)]
    net = ip_net()
    net.load_params(params)
    assert net.params_to_numpy()["a"][0].shape == (4, 3)
    assert shapes_match((4, 3), (1, 1, 4, 3)) and not shapes_match((4, 3), (1, 4, 3))
    assert not shapes_match((4, 3), (1, 1, 3, 4)) and not shapes_match((4, 3), (12,))


def test_load_rejects_blobs_for_a_paramless_layer():
    net = net_of('layer { name: "s" type: "Sigmoid" bottom: "x" top: "s" }\n')
    with pytest.raises(CaffeFormatError, match="'s'.*no learnable blobs"):
        net.load_params({"s": [np.zeros(1, np.float32)]})


def test_params_to_numpy_round_trip():
    net = ip_net()
    rng = np.random.default_rng(1)
    params = {k: [rng.standard_normal(a.shape).astype(np.float32) for a in v] for k, v in good_params().items()}
    net.load_params(params)
    back = net.params_to_numpy()
    assert back.keys() == params.keys()
    assert all(np.array_equal(a, b) for k in params for a, b in zip(params[k], back[k], strict=True))


def test_load_weights_names_the_file(tmp_path):
    net = CaffeNet.from_prototxt(GOLDEN / "conv_basic" / "net.prototxt")
    path = GOLDEN / "ip_axis1" / "weights.caffemodel"
    with pytest.raises(CaffeFormatError) as err:
        net.load_weights(path)
    assert str(path) in str(err.value) and "'c'" in str(err.value)


# ------------------------------------------------------------------ errors
def test_unsupported_type_lists_supported_types():
    with pytest.raises(CaffeFormatError) as err:
        net_of('layer { name: "rnn" type: "LSTM" bottom: "x" bottom: "x" top: "a" }\n')
    msg = str(err.value)
    assert "'rnn'" in msg and "'LSTM'" in msg and "MatMult" in msg and "ReshapeLike" in msg
    assert set(LAYER_TYPES) >= {"Convolution", "Deconvolution", "Pooling", "InnerProduct", "ReLU", "PReLU", "ELU",
                                "TanH", "Sigmoid", "AbsVal", "Power", "Scale", "Bias", "BatchNorm", "LRN", "Reshape",
                                "ReshapeLike", "Flatten", "Tile", "Crop", "Concat", "Slice", "Split", "Silence",
                                "Eltwise", "Softmax", "MatMult", "SigmoidCrossEntropyLoss", "Dropout", "Input"}


def test_python_layer_is_refused_clearly():
    text = ('layer { name: "data" type: "Python" top: "x" python_param { module: "ss_datalayer" '
            'layer: "SSDataLayer" } }\n')
    with pytest.raises(CaffeFormatError, match="'data' is a Python layer \\(ss_datalayer.SSDataLayer\\).*Input"):
        CaffeNet(parse_net_text(text))


def test_upstream_train_net_python_layer_is_refused():
    from helpers import UPSTREAM
    trains = [p for p in UPSTREAM.rglob("*.prototxt") if "Python" in p.read_text()]
    assert trains
    with pytest.raises(CaffeFormatError, match="Python layer"):
        CaffeNet.from_prototxt(trains[0], phase="TRAIN")


def test_unknown_bottom_and_duplicate_top():
    with pytest.raises(CaffeFormatError, match="'s'.*bottom 'nope'"):
        net_of('layer { name: "s" type: "Sigmoid" bottom: "nope" top: "s" }\n')
    with pytest.raises(CaffeFormatError, match="top 'x' of layer 't'.*more than one"):
        net_of('layer { name: "s" type: "Sigmoid" bottom: "x" top: "y" }\n'
               'layer { name: "t" type: "TanH" bottom: "y" top: "x" }\n')
    with pytest.raises(CaffeFormatError, match="two layers are named 's'"):
        net_of('layer { name: "s" type: "Sigmoid" bottom: "x" top: "y" }\n'
               'layer { name: "s" type: "TanH" bottom: "y" top: "z" }\n')


def test_layer_arity_and_parameter_errors_name_the_layer():
    with pytest.raises(CaffeFormatError, match="'m'.*1 bottom"):
        net_of('layer { name: "m" type: "MatMult" bottom: "x" top: "y" }\n')
    with pytest.raises(CaffeFormatError, match="'c'.*num_output"):
        net_of('layer { name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { kernel_size: 1 } }\n')
    with pytest.raises(CaffeFormatError, match="'r'.*cannot reshape"):
        net_of('layer { name: "r" type: "Reshape" bottom: "x" top: "y" reshape_param { shape { dim: 4 } } }\n')


def test_forward_input_errors():
    net = net_of(ip("a"))
    with pytest.raises(CaffeFormatError, match="inputs are x; missing x"):
        net()
    with pytest.raises(CaffeFormatError, match="unknown y"):
        net(x=X, y=X)
    out = net({"x": X})  # a mapping works as well as keywords
    assert out.outputs.keys() == {"a"} and net.input_names == ["x"]


def test_build_layer_uses_the_layer_phase():
    lp = parse_net_text('layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" phase: TRAIN }').layer[0]
    assert build_layer(lp).use_global_stats is False
    lp.phase = 1  # TEST
    assert build_layer(lp).use_global_stats is True


def _numerics():
    from weights_convert.runtime.numerics import _fp32_backends
    return ([be.fp32_precision for be in _fp32_backends()], torch.backends.cudnn.benchmark,
            torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory)


FAITHFUL = (["ieee"] * 6, False, True, False)


def test_faithful_mode_sets_and_restores():
    # Start from fast settings a user may have chosen; they must come back afterwards.
    from weights_convert.runtime.numerics import _fp32_backends
    saved = _numerics()
    for be in _fp32_backends():
        be.fp32_precision = "tf32"
    torch.backends.cudnn.benchmark = True
    try:
        before = _numerics()
        with faithful_mode():
            assert _numerics() == FAITHFUL
            net = CaffeNet.from_prototxt(GOLDEN / "deconv_oslsm" / "net.prototxt")
            net(x=np.load(GOLDEN / "deconv_oslsm" / "blobs.npz")["x"])
        assert _numerics() == before

        @faithful_mode()
        def decorated():
            return _numerics()

        assert decorated() == FAITHFUL
        assert _numerics() == before
    finally:
        for be, precision in zip(_fp32_backends(), saved[0]):
            be.fp32_precision = precision
        torch.backends.cudnn.benchmark = saved[1]


def test_net_moves_with_to_and_keeps_float32():
    net = CaffeNet.from_prototxt(GOLDEN / "conv_basic" / "net.prototxt")
    assert net.device.type == "cpu"
    out = net(x=np.load(GOLDEN / "conv_basic" / "blobs.npz")["x"].astype(np.float64))
    assert all(v.dtype == torch.float32 for v in out.values())
    net.to("meta")
    assert net.device.type == "meta" and all(p.device.type == "meta" for p in net.parameters())
    assert net(x=torch.empty(1, 3, 6, 7, device="meta"))["y"].device.type == "meta"


# ------------------------------------------------------------------ layer forms without a golden case
def single(layer: str, shapes, arrays, blobs=None, phase="TEST"):
    """Run one layer on inputs named in0, in1, ...; returns its tops as numpy arrays."""
    tops = [f'top: "in{i}"' for i in range(len(shapes))]
    dims = " ".join("shape { " + " ".join(f"dim: {d}" for d in s) + " }" for s in shapes)
    text = f'layer {{ name: "in" type: "Input" {" ".join(tops)} input_param {{ {dims} }} }}\n{layer}\n'
    net = CaffeNet(parse_net_text(text), phase=phase)
    if blobs is not None:
        net.load_params(blobs)
    return run(net, **{f"in{i}": a for i, a in enumerate(arrays)})


RNG = np.random.default_rng(3)


def test_lrn_within_channel():
    x = RNG.standard_normal((1, 2, 5, 6)).astype(np.float32)
    y = single('layer { name: "l" type: "LRN" bottom: "in0" top: "y" '
               'lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL } }', [x.shape], [x])["y"]
    padded = np.pad(x * x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    sums = sum(padded[:, :, i:i + 5, j:j + 6] for i in range(3) for j in range(3))
    np.testing.assert_allclose(y, x * (1 + 0.5 * sums / 9) ** -0.75, rtol=1e-5, atol=1e-6)


def test_batchnorm_zero_scale_factor_and_batch_statistics():
    x = RNG.standard_normal((3, 2, 4)).astype(np.float32)
    blobs = {"bn": [np.array([5, 7], np.float32), np.array([2, 3], np.float32), np.array([0], np.float32)]}
    y = single('layer { name: "bn" type: "BatchNorm" bottom: "in0" top: "y" }', [x.shape], [x], blobs)["y"]
    np.testing.assert_allclose(y, x / np.sqrt(1e-5), rtol=1e-5)  # s == 0: mean and variance 0
    y = single('layer { name: "bn" type: "BatchNorm" bottom: "in0" top: "y" batch_norm_param { '
               'use_global_stats: false eps: 0.01 } }', [x.shape], [x], blobs)["y"]
    mean, var = x.mean(axis=(0, 2), keepdims=True), x.var(axis=(0, 2), keepdims=True)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 0.01), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True)])
def test_matmult_diagonal_b_and_transposes(ta, tb):
    a = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    d = RNG.standard_normal((2, 3, 4 if ta else 5)).astype(np.float32)
    flags = f"transpose_a: {str(ta).lower()} transpose_b: {str(tb).lower()}"
    y = single(f'layer {{ name: "m" type: "MatMult" bottom: "in0" bottom: "in1" top: "y" matmult_param {{ '
               f'diagonal_input: false diagonal_input: true {flags} }} }}', [a.shape, d.shape], [a, d])["y"]
    op_a = a.swapaxes(-1, -2) if ta else a
    np.testing.assert_allclose(y, op_a * d[:, :, None, :], rtol=1e-6)
    assert y.shape == (2, 3) + op_a.shape[-2:]


def test_matmult_rejects_mismatched_batches():
    with pytest.raises(CaffeFormatError, match="'m'.*different numbers of matrices"):
        single('layer { name: "m" type: "MatMult" bottom: "in0" bottom: "in1" top: "y" }',
               [(2, 3, 4), (3, 4, 5)], [np.zeros((2, 3, 4), np.float32), np.zeros((3, 4, 5), np.float32)])


@pytest.mark.parametrize("param,norm", [("", 2.0), ("loss_param { normalization: FULL }", 12.0),
                                        ("loss_param { normalize: true }", 12.0),
                                        ("loss_param { normalization: NONE }", 1.0),
                                        ("loss_param { ignore_label: -1 normalization: VALID }", 9.0)])
def test_sigmoid_cross_entropy_normalisation(param, norm):
    x = RNG.standard_normal((2, 6)).astype(np.float32) * 4
    t = (RNG.random((2, 6)) > 0.5).astype(np.float32)
    if "ignore_label" in param:
        t.flat[[1, 4, 7]] = -1
    loss = single(f'layer {{ name: "l" type: "SigmoidCrossEntropyLoss" bottom: "in0" bottom: "in1" top: "loss" '
                  f'{param} }}', [x.shape, t.shape], [x, t])["loss"]
    xd = x.astype(np.float64)
    terms = -(t * np.log(1 / (1 + np.exp(-xd))) + (1 - t) * np.log(1 - 1 / (1 + np.exp(-xd))))
    terms[t == -1] = 0
    assert loss.shape == () and abs(float(loss) - terms.sum() / norm) <= 2e-6 * max(1, abs(terms.sum()))


def test_slice_even_concat_dim_flatten_power_constant():
    x = RNG.standard_normal((2, 6, 3)).astype(np.float32)
    out = single('layer { name: "s" type: "Slice" bottom: "in0" top: "a" top: "b" top: "c" }\n'
                 'layer { name: "k" type: "Concat" bottom: "c" bottom: "a" top: "ca" concat_param { concat_dim: 1 } }\n'
                 'layer { name: "f" type: "Flatten" bottom: "ca" top: "f" flatten_param { axis: 0 end_axis: 1 } }\n'
                 'layer { name: "p" type: "Power" bottom: "b" top: "p" power_param { power: 2 scale: 0 shift: 3 } }',
                 [x.shape], [x])
    assert np.array_equal(out["a"], x[:, :2]) and np.array_equal(out["c"], x[:, 4:])
    assert np.array_equal(out["ca"], np.concatenate([x[:, 4:], x[:, :2]], axis=1))
    assert out["f"].shape == (8, 3) and np.array_equal(out["p"], np.full((2, 2, 3), 9, np.float32))


def test_scale_two_bottoms_with_learned_bias_and_bias_layer():
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    s = RNG.standard_normal((3,)).astype(np.float32)
    bias = np.array([1, 2, 3], np.float32)
    out = single('layer { name: "sc" type: "Scale" bottom: "in0" bottom: "in1" top: "y" '
                 'scale_param { axis: 1 bias_term: true } }\n'
                 'layer { name: "bi" type: "Bias" bottom: "y" top: "z" bias_param { axis: -2 num_axes: 1 } }',
                 [x.shape, s.shape], [x, s], {"sc": [bias], "bi": [bias * 10]})
    np.testing.assert_allclose(out["y"], x * s[:, None] + bias[:, None], rtol=1e-6)
    np.testing.assert_allclose(out["z"], out["y"] + 10 * bias[:, None], rtol=1e-6)


def test_elementwise_activations():
    x = np.array([[-30.0, -1.0, -0.0, 0.5, 40.0]], np.float32)
    out = single('layer { name: "b" type: "BNLL" bottom: "in0" top: "b" }\n'
                 'layer { name: "t" type: "Threshold" bottom: "in0" top: "t" threshold_param { threshold: 0.4 } }\n'
                 'layer { name: "e" type: "ELU" bottom: "in0" top: "e" elu_param { alpha: 2 } }\n'
                 'layer { name: "m" type: "Softmax" bottom: "in0" top: "m" }\n'
                 'layer { name: "x" type: "Eltwise" bottom: "in0" bottom: "t" top: "x" eltwise_param { operation: MAX } }',
                 [x.shape], [x])
    np.testing.assert_allclose(out["b"], np.logaddexp(0, x.astype(np.float64)), rtol=1e-6)
    assert np.array_equal(out["t"], [[0, 0, 0, 1, 1]])
    np.testing.assert_allclose(out["e"], np.where(x > 0, x, 2 * np.expm1(x)), rtol=1e-6)
    e = np.exp(x.astype(np.float64) - x.max())
    np.testing.assert_allclose(out["m"], e / e.sum(), rtol=1e-5, atol=1e-30)
    assert np.array_equal(out["x"], np.maximum(x, out["t"]))


# ------------------------------------------------------------------ the upstream OSLSM deploy nets
@pytest.mark.parametrize("name,k", [("deploy_1shot.prototxt", 1), ("deploy_5shot.prototxt", 5)])
def test_upstream_deploy_nets_shapes(name, k):
    """Built on the meta device (no 1.1 GB of weights): the shapes of protocol section 4."""
    from helpers import UPSTREAM
    net = CaffeNet.from_prototxt(UPSTREAM / name, device="meta")
    shapes = net.blob_shapes
    assert shapes["second_img"] == (1, 3, 500, 500) and shapes["first_img"][0] == k
    assert shapes["conv1_1s"][2:] == (740, 740)
    assert [shapes[f"pool{i}s"][2] for i in range(1, 6)] == [370, 185, 93, 47, 24]
    assert shapes["fc7s"] == (1, 4096, 18, 18) and shapes["Xs_tiled"] == (k, 4096, 324)
    assert shapes["w1sXs"] == (k, 1, 324) and shapes["pred"] == (k, 1, 18, 18)
    assert shapes["uppred_offset"] == (k, 1, 608, 608) and shapes["pre_score"] == (k, 1, 500, 500)
    assert shapes["pre_score2"] == (1, 1, 500, 500) and shapes["score"] == (1, 1, 500, 500)
    fc6f = net.layer_by_name["fc6f"]
    assert fc6f.blob_shapes == [(4096, 25088), (4096,)] and fc6f.blobs[0].device.type == "meta"
    assert net.layer_by_name["uppred_offset"].blob_shapes == [(1, 1, 64, 64)]
    assert net.input_names == ["first_img", "second_img", "first_label", "second_label"]
    assert net.output_names == ["score", "loss"]
    assert sum(int(np.prod(s)) for layer in net.param_layers() for s in layer.blob_shapes) > 250_000_000


def test_pooling_parameter_errors():
    x = np.zeros((1, 1, 4, 4), np.float32)
    for param, message in [("kernel_size: 2 kernel_h: 2 kernel_w: 1", "either kernel_size or both"),
                           ("kernel_size: 2 pad: 2", "smaller than the kernel"),
                           ("kernel_size: 2 pad: 1 pad_h: 1 pad_w: 1", "either pad or pad_h/pad_w"),
                           ("kernel_size: 2 pad_h: 1", "both pad_h and pad_w"),
                           ("kernel_size: 2 stride_w: 2", "both stride_h and stride_w"),
                           ("global_pooling: true kernel_size: 2", "global_pooling"),
                           ("kernel_h: 2", "both kernel_h and kernel_w")]:
        with pytest.raises(CaffeFormatError, match=f"'p'.*{message}"):
            single(f'layer {{ name: "p" type: "Pooling" bottom: "in0" top: "y" pooling_param {{ {param} }} }}',
                   [x.shape], [x])


def test_construction_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_text(INPUT + 'layer { name: "acc" type: "Accuracy" bottom: "x" bottom: "x" top: "a" }\n')
    with pytest.raises(CaffeFormatError, match=f"^{path}: layer 'acc'"):
        CaffeNet.from_prototxt(path)
    path.write_text(INPUT + ip("a", params='param { name: "w" } param { } param { }'))
    with pytest.raises(CaffeFormatError, match=f"^{path}: layer 'a' .*3 param specs but has 2"):
        CaffeNet.from_prototxt(path)


def test_eltwise_coeff_rules_follow_caffe():
    a, b = RNG.standard_normal((2, 3)).astype(np.float32), RNG.standard_normal((2, 3)).astype(np.float32)
    # MAX ignores coefficients (Caffe accepts them); PROD refuses them.
    out = single('layer { name: "e" type: "Eltwise" bottom: "in0" bottom: "in1" top: "y" '
                 'eltwise_param { operation: MAX coeff: 2 coeff: -1 } }', [a.shape, b.shape], [a, b])
    np.testing.assert_array_equal(out["y"], np.maximum(a, b))
    with pytest.raises(CaffeFormatError, match="'e'.*coeff is only for operation SUM"):
        single('layer { name: "e" type: "Eltwise" bottom: "in0" bottom: "in1" top: "y" '
               'eltwise_param { operation: PROD coeff: 2 coeff: 1 } }', [a.shape, b.shape], [a, b])


@pytest.mark.parametrize("points", ["slice_point: 2 slice_point: 2", "slice_point: 0 slice_point: 2",
                                    "slice_point: 3 slice_point: 2", "slice_point: 2 slice_point: 7"])
def test_slice_points_must_increase_strictly(points):
    x = np.zeros((1, 6), np.float32)
    with pytest.raises(CaffeFormatError, match="'s'.*must increase strictly"):
        single(f'layer {{ name: "s" type: "Slice" bottom: "in0" top: "a" top: "b" top: "c" '
               f'slice_param {{ axis: 1 {points} }} }}', [x.shape], [x])


@pytest.mark.parametrize("layer", ['type: "Concat" bottom: "in0" bottom: "in0" top: "y" concat_param { axis: 1 concat_dim: 1 }',
                                   'type: "Slice" bottom: "in0" top: "a" top: "b" slice_param { axis: 1 slice_dim: 1 }'])
def test_axis_and_its_legacy_field_together_are_refused(layer):
    x = np.zeros((1, 4), np.float32)
    with pytest.raises(CaffeFormatError, match=r"'l'.*give either axis or (concat|slice)_dim, not both"):
        single(f'layer {{ name: "l" {layer} }}', [x.shape], [x])


def test_the_converters_blob_facts_agree_with_every_layer_class():
    """layers/facts.py (torch-free, read by the converter) says which layers own blobs; each
    registered class's own param_shapes must say the same for a typical use of it."""
    from weights_convert.layers.facts import owns_blobs

    owning = {"Convolution": 'convolution_param { num_output: 2 kernel_size: 1 }',
              "Deconvolution": 'convolution_param { num_output: 2 kernel_size: 1 }',
              "InnerProduct": 'inner_product_param { num_output: 2 }', "BatchNorm": "", "PReLU": "",
              "Scale": "", "Bias": ""}
    image = 'layer { name: "i" type: "Input" top: "m" input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }\n'
    for kind, params in owning.items():
        net = net_of(image + f'layer {{ name: "l" type: "{kind}" bottom: "m" top: "y" {params} }}\n')
        lp = net.layer_params[-1]
        assert owns_blobs(lp) and [layer.name for layer in net.param_layers()] == ["l"], kind
    two = net_of(image + 'layer { name: "l" type: "Scale" bottom: "m" bottom: "m" top: "y" scale_param { axis: 0 } }\n')
    assert not owns_blobs(two.layer_params[-1]) and not two.param_layers()
    assert set(owning) <= set(LAYER_TYPES)

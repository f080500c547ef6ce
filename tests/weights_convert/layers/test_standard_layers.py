"""Caffe's standard losses and metrics against the real Caffe (tests/golden_std/layers: every
blob after forward, every diff after backward with force_backward), plus the layers without a
golden case (InfogainLoss, MultinomialLogisticLoss) held to Caffe's SoftmaxWithLoss outputs
and to their definitions written out as loops."""
import numpy as np
import pytest
import torch

from helpers import GOLDEN_STD
from weights_convert.cli import main
from weights_convert.errors import CaffeFormatError
from weights_convert.graph import CaffeNet
from weights_convert.formats.prototxt import parse_net_text
from weights_convert.train.passes import forward_backward

LAYERS = GOLDEN_STD / "layers"
CASES = sorted(p.name for p in LAYERS.iterdir())
TOL = 1e-5  # per blob and diff, times max(1, max|ref|)


def within(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, Caffe {ref.shape}"
    limit = TOL * max(1.0, float(np.abs(ref).max()) if ref.size else 1.0)
    assert float(np.abs(got.astype(np.float64) - ref).max(initial=0.0)) <= limit, what


def run(net: CaffeNet, inputs: dict, backward: bool):
    if backward:
        result = forward_backward(net, inputs, blob_diffs=True)
        return ({k: v.detach().cpu().numpy() for k, v in result.blobs.items()},
                {k: v.detach().cpu().numpy() for k, v in result.blob_diffs.items()})
    with torch.no_grad():
        return {k: v.cpu().numpy() for k, v in net(**inputs).items()}, {}


@pytest.mark.parametrize("case", CASES)
def test_forward_and_backward_match_caffe(case, device):
    net = CaffeNet.from_prototxt(LAYERS / case / "net.prototxt", phase="TRAIN", device=device,
                                 skip_constant_frame=False)
    golden = dict(np.load(LAYERS / case / "blobs.npz"))
    has_backward = (LAYERS / case / "diffs.npz").is_file()
    blobs, diffs = run(net, {n: golden[n] for n in net.input_names}, has_backward)
    assert set(blobs) == set(golden)
    for name, ref in golden.items():
        within(blobs[name], ref, name)
    if has_backward:
        golden_diffs = dict(np.load(LAYERS / case / "diffs.npz"))
        assert set(diffs) == set(golden_diffs)
        for name, ref in golden_diffs.items():  # labels get none (Caffe refuses them), the loss its weight
            within(diffs[name], ref, f"diff of {name}")


def test_gradients_command_writes_the_inputs_diffs_of_a_net_without_weights(tmp_path):
    """A net without learnable layers needs no --weights; force_backward gives the inputs' diffs."""
    case = LAYERS / "contrastive_loss_legacy_false"
    golden = dict(np.load(case / "blobs.npz"))
    np.savez(tmp_path / "in.npz", **{f"0/{k}": golden[k] for k in ("a", "b", "y")})
    assert main(["gradients", "--prototxt", str(case / "net.prototxt"), "--inputs", str(tmp_path / "in.npz"),
                 "--blob-diffs", "--out", str(tmp_path / "g.npz")]) == 0
    out = np.load(tmp_path / "g.npz")
    diffs = np.load(case / "diffs.npz")
    assert float(out["loss"]) == pytest.approx(float(golden["loss"]), rel=1e-6)
    within(out["diff:a"], diffs["a"], "a")
    within(out["diff:b"], diffs["b"], "b")


NET = """
layer { name: "s" type: "Input" top: "score" input_param { shape { dim: 2 dim: 5 dim: 6 dim: 7 } } }
layer { name: "l" type: "Input" top: "label" input_param { shape { dim: 2 dim: 1 dim: 6 dim: 7 } } }
"""


def one_layer(text: str, **kwargs) -> CaffeNet:
    return CaffeNet(parse_net_text(NET + text), phase="TRAIN", skip_constant_frame=False, **kwargs)


def golden_case(case: str) -> tuple[dict, dict]:
    return dict(np.load(LAYERS / case / "blobs.npz")), dict(np.load(LAYERS / case / "diffs.npz"))


@pytest.mark.parametrize("case, loss_param", [
    ("softmax_loss_valid", "loss_param { ignore_label: 255 normalization: VALID }"),
    ("softmax_loss_full", "loss_param { ignore_label: 255 normalization: FULL }"),
    ("softmax_loss_batch_size", "loss_param { ignore_label: 255 normalization: BATCH_SIZE }"),
    ("softmax_loss_none", "loss_param { ignore_label: 255 normalization: NONE }"),
])
def test_infogain_loss_with_the_identity_is_caffes_softmax_loss(case, loss_param, tmp_path):
    """With H = I the infogain loss is -log p_label and its diff p - onehot: Caffe's own
    SoftmaxWithLoss numbers, for H given as a third bottom and as a BlobProto file."""
    golden, diffs = golden_case(case)
    from weights_convert.formats.schema import pb
    blob = pb.BlobProto()
    blob.shape.dim.extend([1, 1, 5, 5])
    blob.data.extend(np.eye(5, dtype=np.float32).ravel().tolist())
    (tmp_path / "H.binaryproto").write_bytes(blob.SerializeToString())
    as_file = one_layer(f'layer {{ name: "loss" type: "InfogainLoss" bottom: "score" bottom: "label" top: "loss" '
                        f'{loss_param} infogain_loss_param {{ source: "{tmp_path / "H.binaryproto"}" }} }}')
    as_bottom = one_layer('layer { name: "h" type: "Input" top: "H" input_param { shape { dim: 5 dim: 5 } } }\n'
                          f'layer {{ name: "loss" type: "InfogainLoss" bottom: "score" bottom: "label" bottom: "H" '
                          f'top: "loss" {loss_param} }}')
    for net, extra in ((as_file, {}), (as_bottom, {"H": np.eye(5, dtype=np.float32)})):
        score = torch.from_numpy(golden["score"]).requires_grad_()
        blobs = net.forward({"score": score, "label": golden["label"], **extra})
        net.objective(blobs).backward()
        assert float(blobs["loss"].detach()) == pytest.approx(float(golden["loss"]), rel=1e-6)
        within(score.grad.numpy(), diffs["score"], "diff of score")


def infogain_by_loops(x: np.ndarray, label: np.ndarray, h: np.ndarray, ignore: int) -> tuple[float, np.ndarray]:
    """Caffe 1.0's InfogainLossLayer written out in float64 (normalization VALID)."""
    n, c, hh, ww = x.shape
    e = np.exp(x - x.max(1, keepdims=True))
    p = e / e.sum(1, keepdims=True)
    loss, valid, diff = 0.0, 0, np.zeros_like(p)
    for i in range(n):
        for y in range(hh):
            for z in range(ww):
                lab = int(label[i, 0, y, z])
                if lab == ignore:
                    continue
                for k in range(c):
                    loss -= h[lab, k] * np.log(max(p[i, k, y, z], 1e-20))
                    diff[i, k, y, z] = p[i, k, y, z] * h[lab].sum() - h[lab, k]
                valid += 1
    return loss / max(valid, 1), diff / max(valid, 1)


def test_infogain_loss_with_a_full_matrix_follows_its_definition():
    golden, _ = golden_case("softmax_loss_valid")
    rng = np.random.default_rng(0)
    h = rng.uniform(0, 1, (5, 5)).astype(np.float32)
    net = one_layer('layer { name: "h" type: "Input" top: "H" input_param { shape { dim: 5 dim: 5 } } }\n'
                    'layer { name: "loss" type: "InfogainLoss" bottom: "score" bottom: "label" bottom: "H" top: "loss" '
                    'top: "prob" loss_weight: 3 loss_weight: 0 loss_param { ignore_label: 255 } }')
    score = torch.from_numpy(golden["score"]).requires_grad_()
    blobs = net.forward({"score": score, "label": golden["label"], "H": h})
    net.objective(blobs).backward()
    loss, diff = infogain_by_loops(golden["score"].astype(np.float64), golden["label"], h.astype(np.float64), 255)
    assert float(blobs["loss"].detach()) == pytest.approx(loss, rel=1e-5)
    np.testing.assert_allclose(score.grad.numpy(), 3 * diff, atol=1e-6)
    np.testing.assert_allclose(blobs["prob"].detach().numpy().sum(1), 1.0, rtol=1e-6)


def test_multinomial_logistic_loss_on_caffes_softmax():
    """On the softmax of the golden 2-D case it is Caffe's SoftmaxWithLoss value; its diff is
    -1 / (num p) at the label (its definition: the bottom is a probability)."""
    golden, _ = golden_case("softmax_loss_2d")
    prob = torch.softmax(torch.from_numpy(golden["score"]), 1).requires_grad_()
    net = CaffeNet(parse_net_text(
        'layer { name: "p" type: "Input" top: "prob" input_param { shape { dim: 4 dim: 10 } } }\n'
        'layer { name: "l" type: "Input" top: "label" input_param { shape { dim: 4 } } }\n'
        'layer { name: "loss" type: "MultinomialLogisticLoss" bottom: "prob" bottom: "label" top: "loss" }'),
        phase="TRAIN")
    blobs = net.forward({"prob": prob, "label": golden["label"]})
    net.objective(blobs).backward()
    assert float(blobs["loss"].detach()) == pytest.approx(float(golden["loss"]), rel=1e-6)
    expected = np.zeros((4, 10), np.float32)
    for i, lab in enumerate(golden["label"].astype(int)):
        expected[i, lab] = -1.0 / (4 * float(prob[i, lab].detach()))
    np.testing.assert_allclose(prob.grad.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("layer", [
    'layer { name: "acc" type: "Accuracy" bottom: "score" bottom: "label" top: "acc" loss_weight: 1 accuracy_param { ignore_label: 255 } }',
    'layer { name: "am" type: "ArgMax" bottom: "score" top: "am" argmax_param { axis: 1 } }\n'
    'layer { name: "loss" type: "EuclideanLoss" bottom: "am" bottom: "label" top: "loss" }',
])
def test_a_gradient_through_a_layer_without_backward_is_refused_in_words(layer):
    golden, _ = golden_case("softmax_loss_valid")
    net = one_layer(layer)
    score = torch.from_numpy(golden["score"]).requires_grad_()
    objective = net.objective(net.forward({"score": score, "label": golden["label"]}))
    with pytest.raises(RuntimeError, match=r"Caffe implements no backward for this layer") as info:
        objective.backward()
    assert "'acc' (type Accuracy)" in str(info.value) or "'am' (type ArgMax)" in str(info.value)


@pytest.mark.parametrize("layer, message", [
    ('layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }',
     "layer 'loss' (type SoftmaxWithLoss): label 7 is out of range: expected 0..4"),
    ('layer { name: "acc" type: "Accuracy" bottom: "score" bottom: "label" top: "acc" accuracy_param { top_k: 6 } }',
     "top_k 6 must be at most the number of classes (5)"),
    ('layer { name: "loss" type: "InfogainLoss" bottom: "score" bottom: "label" top: "loss" }',
     "give the infogain matrix as a third bottom or as infogain_loss_param.source"),
    ('layer { name: "loss" type: "InfogainLoss" bottom: "score" bottom: "label" top: "loss" '
     'infogain_loss_param { source: "/nonexistent/H.binaryproto" } }', "cannot read its infogain matrix"),
])
def test_bad_labels_and_parameters_name_the_layer(layer, message):
    labels = np.zeros((2, 1, 6, 7), np.float32)
    labels[1, 0, 3, 3] = 7
    with pytest.raises(CaffeFormatError, match=message.replace("(", r"\(").replace(")", r"\)")):
        net = one_layer(layer)
        with torch.no_grad():
            net.forward({"score": np.zeros((2, 5, 6, 7), np.float32), "label": labels})


def test_argmax_breaks_ties_toward_the_larger_index_as_caffe():
    net = CaffeNet(parse_net_text(
        'layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 5 } } }\n'
        'layer { name: "am" type: "ArgMax" bottom: "x" top: "am" argmax_param { top_k: 3 out_max_val: true } }'))
    with torch.no_grad():
        am = net.forward({"x": np.array([[1, 3, 3, 0, 3]], np.float32)})["am"].numpy()
    assert am.shape == (1, 2, 3)
    assert am[0, 0].tolist() == [4, 2, 1] and am[0, 1].tolist() == [3, 3, 3]


@pytest.mark.parametrize("legacy", [False, True])
def test_contrastive_loss_of_close_dissimilar_pairs_follows_caffes_formula(legacy):
    """The golden pairs that are dissimilar all lie beyond the margin (zero diff), so the active
    branch is held to Caffe's formula here: -(m - d) / (d + 1e-4) (a - b) / num (legacy: -(a - b) / num)."""
    rng = np.random.default_rng(1)
    a = rng.normal(0, 0.2, (4, 3, 1, 1)).astype(np.float32)
    b = (a + rng.normal(0, 0.05, a.shape)).astype(np.float32)
    y = np.array([0, 0, 1, 0], np.float32).reshape(4, 1, 1, 1)
    net = CaffeNet(parse_net_text(
        'layer { name: "i" type: "Input" top: "a" top: "b" top: "y" input_param { shape { dim: 4 dim: 3 dim: 1 dim: 1 } '
        'shape { dim: 4 dim: 3 dim: 1 dim: 1 } shape { dim: 4 dim: 1 dim: 1 dim: 1 } } }\n'
        'layer { name: "loss" type: "ContrastiveLoss" bottom: "a" bottom: "b" bottom: "y" top: "loss" '
        f'contrastive_loss_param {{ margin: 1.3 legacy_version: {str(legacy).lower()} }} }}'), phase="TRAIN")
    ta = torch.from_numpy(a).requires_grad_()
    blobs = net.forward({"a": ta, "b": b, "y": y})
    net.objective(blobs).backward()
    diff = (a - b).reshape(4, 3).astype(np.float64)
    d2 = (diff ** 2).sum(1)
    d = np.sqrt(d2)
    dissimilar = (1.3 - d2).clip(0) if legacy else (1.3 - d).clip(0) ** 2
    loss = np.where(y.ravel() != 0, d2, dissimilar).sum() / 4 / 2
    beta = np.full(4, -1.0) if legacy else -(1.3 - d) / (d + 1e-4)
    expected = np.where((y.ravel() != 0)[:, None], diff, beta[:, None] * diff) / 4
    assert float(blobs["loss"].detach()) == pytest.approx(loss, rel=1e-6)
    np.testing.assert_allclose(ta.grad.numpy().reshape(4, 3), expected, rtol=1e-5)

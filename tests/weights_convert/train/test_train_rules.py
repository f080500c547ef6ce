"""Caffe's training rules one at a time, each against Caffe's formula or source written out:
learning-rate policies, the update (clipping, L1/L2, iter_size), gradient routing where Caffe's
backward is not plain autograd (max-pool and Eltwise MAX ties), per-layer lr_mult 0,
propagate_down, loss weights, Dropout and BatchNorm at train time, and the input checks."""
import math

import numpy as np
import pytest
import torch

from weights_convert.errors import CaffeFormatError
from weights_convert.formats.prototxt import parse_net_text
from weights_convert.formats.schema import pb
from weights_convert.graph import CaffeNet
from weights_convert.train.data import EpisodeInputs
from weights_convert.train.learning_rate import learning_rate
from weights_convert.train.passes import forward_backward
from weights_convert.train.learnable import LearnableParam, learnable_params
from weights_convert.train.solvers import SGDSolver
from weights_convert.train.solver_file import read_solver


def solver(**fields) -> pb.SolverParameter:
    p = pb.SolverParameter()
    for k, v in fields.items():
        if isinstance(v, list):
            getattr(p, k).extend(v)
        else:
            setattr(p, k, v)
    return p


def net(text: str, **shapes) -> CaffeNet:
    return CaffeNet(parse_net_text(text), phase="TRAIN", data_shapes=shapes)


DATA = 'layer { name: "data" type: "Python" top: "x" top: "t" }\n'


# ---------------------------------------------------------------------------- learning rates
@pytest.mark.parametrize("policy, fields, formula", [
    ("fixed", {}, lambda it: 0.01),
    ("step", {"gamma": 0.1, "stepsize": 3}, lambda it: 0.01 * 0.1 ** (it // 3)),
    ("exp", {"gamma": 0.9}, lambda it: 0.01 * 0.9 ** it),
    ("inv", {"gamma": 0.5, "power": 0.75}, lambda it: 0.01 * (1 + 0.5 * it) ** -0.75),
    ("poly", {"power": 2.0, "max_iter": 10}, lambda it: 0.01 * (1 - it / 10) ** 2),
    ("sigmoid", {"gamma": 0.5, "stepsize": 4}, lambda it: 0.01 / (1 + math.exp(-0.5 * (it - 4)))),
])
def test_policies_follow_caffes_formulas(policy, fields, formula):
    p = solver(base_lr=0.01, lr_policy=policy, **fields)
    f32 = lambda v: float(np.float32(v))  # solver fields are floats in Caffe
    for it in range(10):
        rate, _ = learning_rate(p, it)
        # the formula in double from the float fields, rounded once to float
        base, gamma, power = f32(0.01), f32(fields.get("gamma", 0)), f32(fields.get("power", 0))
        expected = {"fixed": base, "step": base * gamma ** (it // fields.get("stepsize", 1)),
                    "exp": base * gamma ** it, "inv": base * (1 + gamma * it) ** -power,
                    "poly": base * (1 - it / fields.get("max_iter", 1)) ** power,
                    "sigmoid": base / (1 + math.exp(-gamma * (it - fields.get("stepsize", 0))))}[policy]
        assert rate == np.float32(expected)
        assert float(rate) == pytest.approx(formula(it), rel=1e-6)


def test_multistep_advances_one_step_per_call_as_caffe():
    p = solver(base_lr=1.0, lr_policy="multistep", gamma=0.5, stepvalue=[2, 3, 3, 10])
    rates, step = [], 0
    for it in range(6):
        rate, step = learning_rate(p, it, step)
        rates.append(float(rate))
    # Caffe's `if` (not `while`): the repeated stepvalue 3 is taken one iteration late
    assert rates == [1.0, 1.0, 0.5, 0.25, 0.125, 0.125]
    assert step == 3


# ---------------------------------------------------------------------------- the update
def one_param(values, grad, **mults) -> LearnableParam:
    t = torch.nn.Parameter(torch.tensor(values, dtype=torch.float32))
    t.grad = torch.tensor(grad, dtype=torch.float32)
    return LearnableParam("l", 0, t, mults.get("lr_mult", 1.0), mults.get("decay_mult", 1.0))


def test_update_order_clip_normalize_regularize_momentum():
    """Caffe: clip the summed diffs by their global norm, divide by iter_size, add decay, then
    h = m h + rate lr_mult diff and w -= h."""
    p = solver(base_lr=0.5, lr_policy="fixed", momentum=0.9, weight_decay=0.1, iter_size=2, clip_gradients=1.0)
    a = one_param([1.0, -2.0], [3.0, 4.0], lr_mult=2.0)
    sgd = SGDSolver(p, [a])
    sgd.history[0] = torch.tensor([0.5, 0.5])
    sgd.apply_update()
    f = np.float32
    g = np.array([3.0, 4.0], f) * f(1.0 / 5.0)          # clipped to norm 1
    g = g * (f(1) / f(2)) + f(0.1) * np.array([1.0, -2.0], f)
    h = f(0.9) * np.array([0.5, 0.5], f) + f(0.5) * f(2.0) * g
    assert np.allclose(sgd.history[0].numpy(), h, rtol=1e-6)
    assert np.allclose(a.tensor.detach().numpy(), np.array([1.0, -2.0], f) - h, rtol=1e-6)


def test_l1_regularization_adds_the_sign():
    p = solver(base_lr=1.0, lr_policy="fixed", weight_decay=0.5, regularization_type="L1")
    a = one_param([2.0, -3.0, 0.0], [0.0, 0.0, 0.0])
    SGDSolver(p, [a]).apply_update()
    assert a.tensor.detach().tolist() == [1.5, -2.5, 0.0]


def test_lr_mult_zero_keeps_the_blob_bitwise():
    p = solver(base_lr=1.0, lr_policy="fixed", momentum=0.9, weight_decay=0.5)
    a = one_param([0.3, 0.7], [1.0, 1.0], lr_mult=0.0)
    sgd = SGDSolver(p, [a])
    for _ in range(3):
        sgd.apply_update()
    assert a.tensor.detach().tolist() == [np.float32(0.3), np.float32(0.7)]


# ---------------------------------------------------------------------------- backward rules
def test_max_pool_tie_sends_the_gradient_to_the_first_max_as_caffe():
    """Caffe's MaxPool keeps the first strictly greater value in row-major window order."""
    n = net(DATA + 'layer { name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: MAX '
            'kernel_size: 2 stride: 2 } }', x=(1, 1, 2, 4), t=(1,))
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.tensor([[[[5.0, 5.0, 1.0, 7.0], [5.0, 2.0, 7.0, 7.0]]]]).to(memory_format=layout)
        x.requires_grad_(True)
        y = n.forward({"x": x, "t": torch.zeros(1)})["y"]
        y.sum().backward()
        assert x.grad.tolist() == [[[[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]]]], layout


def test_eltwise_max_ties_follow_caffes_mask():
    """a > b ? a : b for bottoms 0 and 1 (a tie goes to bottom 1); a later bottom only when greater."""
    n = net(DATA + 'layer { name: "d2" type: "Python" top: "u" }\n'
            'layer { name: "e" type: "Eltwise" bottom: "x" bottom: "t" bottom: "u" top: "y" '
            'eltwise_param { operation: MAX } }', x=(3,), t=(3,), u=(3,))
    x, t, u = (torch.tensor(v, requires_grad=True) for v in ([1.0, 2.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]))
    n.forward({"x": x, "t": t, "u": u})["y"].sum().backward()
    assert (x.grad.tolist(), t.grad.tolist(), u.grad.tolist()) == ([0, 1, 0], [1, 0, 1], [0, 0, 0])


SHARED = DATA + '''
layer { name: "a" type: "InnerProduct" bottom: "x" top: "ya" param { name: "w" lr_mult: 0 }
        inner_product_param { num_output: 1 bias_term: false } }
layer { name: "b" type: "InnerProduct" bottom: "x" top: "yb" param { name: "w" }
        inner_product_param { num_output: 1 bias_term: false } }
layer { name: "s" type: "Eltwise" bottom: "ya" bottom: "yb" top: "y" }
'''


def test_per_layer_lr_mult_zero_on_a_shared_blob():
    """Caffe's param_propagate_down is per layer: layer a (lr_mult 0) adds nothing to the shared
    diff, layer b does; the owner's explicit 0 is the blob's lr_mult for the solver."""
    n = net(SHARED, x=(1, 2), t=(1,))
    with torch.no_grad():
        n.layer_by_name["a"].blobs[0].copy_(torch.tensor([[1.0, 1.0]]))
    x = torch.tensor([[2.0, 3.0]])
    n.forward({"x": x, "t": torch.zeros(1)})["y"].sum().backward()
    assert n.layer_by_name["a"].blobs[0].grad.tolist() == [[2.0, 3.0]]  # from b alone, not doubled
    (p,) = learnable_params(n)
    assert (p.key, p.lr_mult) == ("a/0", 0.0)


def test_mismatched_lr_mult_of_a_shared_blob_is_refused():
    text = SHARED.replace('param { name: "w" }', 'param { name: "w" lr_mult: 2 }')
    with pytest.raises(CaffeFormatError, match="mismatched lr_mult"):
        learnable_params(net(text, x=(1, 2), t=(1,)))


LOSS_NET = DATA + '''
layer { name: "fc" type: "InnerProduct" bottom: "x" top: "z" inner_product_param { num_output: 4 } }
layer { name: "loss" type: "SigmoidCrossEntropyLoss" bottom: "z" bottom: "t" top: "loss" WEIGHT }
'''


def test_loss_weight_scales_the_objective_and_its_gradient():
    batch = {"x": np.ones((2, 3), np.float32), "t": np.array([[1, 0, 1, 0], [0, 0, 1, 1]], np.float32)}
    grads = []
    for weight, factor in (("", 1.0), ("loss_weight: 2.5", 2.5)):
        n = net(LOSS_NET.replace("WEIGHT", weight), x=(2, 3), t=(2, 4))
        with torch.no_grad():
            n.layer_by_name["fc"].blobs[0].copy_(torch.linspace(-1, 1, 12).reshape(4, 3))
        result = forward_backward(n, batch)
        assert result.loss == pytest.approx(factor * float(result.blobs["loss"].detach()), rel=1e-6)
        grads.append(n.layer_by_name["fc"].blobs[0].grad.clone())
    assert torch.allclose(grads[1], 2.5 * grads[0], rtol=1e-6)
    # Caffe's gradient: (sigmoid(z) - t) / N with N = the batch size (normalization BATCH_SIZE)
    z = torch.linspace(-1, 1, 12).reshape(4, 3) @ torch.ones(3, 2)
    dz = (torch.sigmoid(z.T) - torch.from_numpy(batch["t"])) / 2
    assert torch.allclose(grads[0], dz.T @ torch.ones(2, 3), rtol=1e-5)


def test_propagate_down_false_stops_the_gradient_at_that_bottom():
    text = LOSS_NET.replace("WEIGHT", "propagate_down: false propagate_down: false")
    n = net(text, x=(2, 3), t=(2, 4))
    result = forward_backward(n, {"x": np.ones((2, 3), np.float32), "t": np.zeros((2, 4), np.float32)})
    assert np.isfinite(result.loss)
    assert n.layer_by_name["fc"].blobs[0].grad is None


def test_wrong_number_of_loss_weights_is_refused():
    with pytest.raises(CaffeFormatError, match="loss_weight"):
        net(LOSS_NET.replace("WEIGHT", "loss_weight: 1 loss_weight: 2"), x=(2, 3), t=(2, 4))


def test_dropout_at_train_time_keeps_1_minus_p_scaled_and_follows_its_generator():
    n = net(DATA + 'layer { name: "d" type: "Dropout" bottom: "x" top: "y" dropout_param { dropout_ratio: 0.25 } }',
            x=(1, 40000), t=(1,))
    layer = n.layer_by_name["d"]
    outputs = []
    for _ in range(2):
        layer.generator = torch.Generator().manual_seed(3)
        outputs.append(n.forward({"x": torch.ones(1, 40000), "t": torch.zeros(1)})["y"])
    assert torch.equal(outputs[0], outputs[1])
    kept = outputs[0][outputs[0] != 0]
    assert torch.all(kept == np.float32(1 / 0.75))
    assert kept.numel() / 40000 == pytest.approx(0.75, abs=0.01)


def test_batchnorm_at_train_time_accumulates_caffes_running_sums():
    n = net(DATA + 'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" '
            'batch_norm_param { moving_average_fraction: 0.5 } }', x=(2, 2, 1, 3), t=(1,))
    x = torch.arange(12, dtype=torch.float32).reshape(2, 2, 1, 3)
    for _ in range(2):
        y = n.forward({"x": x, "t": torch.zeros(1)})["y"]
    mean = x.mean(dim=(0, 2, 3))
    var = x.var(dim=(0, 2, 3), unbiased=False)
    m = 6
    blobs = n.layer_by_name["bn"].blobs
    assert float(blobs[2][0].detach()) == 0.5 * 1 + 1
    assert torch.allclose(blobs[0], mean + 0.5 * mean)
    assert torch.allclose(blobs[1], var * m / (m - 1) * 1.5)
    assert torch.allclose(y, (x - mean.view(1, 2, 1, 1)) / torch.sqrt(var.view(1, 2, 1, 1) + 1e-5), atol=1e-6)
    assert [p.lr_mult for p in learnable_params(n)] == [0.0, 0.0, 0.0]


# ---------------------------------------------------------------------------- input checks
def write(path, text):
    path.write_text(text)
    return path


def test_solver_file_errors_name_the_file_and_field(tmp_path):
    write(tmp_path / "net.prototxt", LOSS_NET.replace("WEIGHT", ""))
    cases = {
        'train_net: "net.prototxt" lr_policy: "cosine"': "lr_policy 'cosine' is unknown",
        'train_net: "net.prototxt" lr_policy: "step"': "needs stepsize > 0",
        'train_net: "net.prototxt" lr_policy: "fixed" type: "adam"': "solver type 'adam' is unknown",
        'train_net: "net.prototxt" lr_policy: "fixed" type: "AdaGrad" momentum: 0.9': "momentum cannot be used with AdaGrad",
        'train_net: "net.prototxt" lr_policy: "fixed" type: "RMSProp" momentum: 0.9': "momentum cannot be used with RMSProp",
        'train_net: "net.prototxt" lr_policy: "fixed" type: "RMSProp" rms_decay: 1': "rms_decay must lie in [0, 1)",
        'train_net: "missing.prototxt" lr_policy: "fixed"': "is not a file",
        'lr_policy: "fixed"': "exactly one of net, net_param, train_net, train_net_param",
        'train_net: "net.prototxt" lr_policy: "fixed" iter_size: 0': "iter_size must be >= 1",
        'train_net: "net.prototxt" lr_polcy: "fixed"': "lr_polcy",
    }
    for text, message in cases.items():
        path = write(tmp_path / "solver.prototxt", text)
        with pytest.raises(CaffeFormatError) as info:
            read_solver(path)
        assert message in str(info.value) and str(path) in str(info.value), text


def test_deprecated_solver_type_enum_is_upgraded(tmp_path):
    write(tmp_path / "net.prototxt", LOSS_NET.replace("WEIGHT", ""))
    path = write(tmp_path / "s.prototxt", 'net: "net.prototxt" lr_policy: "fixed" solver_type: SGD')
    assert read_solver(path).param.type == "SGD"
    path = write(tmp_path / "s.prototxt", 'net: "net.prototxt" lr_policy: "fixed" solver_type: ADADELTA')
    assert read_solver(path).param.type == "AdaDelta"


def test_episode_inputs_errors(tmp_path):
    np.savez(tmp_path / "gap.npz", **{"0/x": np.zeros(1), "2/x": np.zeros(1)})
    np.savez(tmp_path / "tops.npz", **{"0/x": np.zeros(1), "1/y": np.zeros(1)})
    np.savez(tmp_path / "key.npz", x=np.zeros(1))
    (tmp_path / "text.npz").write_text("not a zip")
    for name, message in (("gap", "numbered 0..1"), ("tops", "episode 1 has tops"), ("key", "'<episode>/<top>'"),
                          ("text", "cannot read episodes")):
        with pytest.raises(CaffeFormatError, match=message):
            EpisodeInputs(tmp_path / f"{name}.npz")
    np.savez(tmp_path / "two.npz", **{"0/x": np.zeros(1), "1/x": np.ones(1)})
    data = EpisodeInputs(tmp_path / "two.npz")
    assert [float(data.batch(i)["x"][0]) for i in range(5)] == [0, 1, 0, 1, 0]


def test_data_layer_without_fed_values_names_the_missing_tops():
    with pytest.raises(CaffeFormatError, match="give no values for t"):
        net(LOSS_NET.replace("WEIGHT", ""), x=(2, 3))
    with pytest.raises(CaffeFormatError, match="Python layer"):
        CaffeNet(parse_net_text(LOSS_NET.replace("WEIGHT", "")), phase="TRAIN")


def test_what_caffe_would_do_and_the_kit_does_not_is_said(tmp_path):
    write(tmp_path / "net.prototxt", LOSS_NET.replace("WEIGHT", ""))
    path = write(tmp_path / "s.prototxt", 'net: "net.prototxt" lr_policy: "fixed" test_interval: 100 test_iter: 5 '
                                          'snapshot_format: HDF5 solver_mode: CPU')
    notes = " | ".join(read_solver(path).notes())
    assert "test nets are not run" in notes and "not HDF5" in notes and "--device" in notes
    assert read_solver(write(tmp_path / "plain.prototxt", 'net: "net.prototxt" lr_policy: "fixed"')).notes() == []


def test_smoothed_loss_is_caffes_running_mean_of_the_last_average_loss():
    from weights_convert.train.trainer import LossSmoother

    smoother = LossSmoother(average_loss=3)
    losses = [4.0, 8.0, 6.0, 10.0, 1.0]
    got = [float(smoother.update(np.float32(v), it)) for it, v in enumerate(losses)]
    # the mean of up to the last 3 losses: Caffe's ring of average_loss entries
    assert got == pytest.approx([4.0, 6.0, 6.0, 8.0, 17.0 / 3], rel=1e-6)

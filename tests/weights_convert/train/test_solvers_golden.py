"""Every Caffe solver type against the real Caffe (tests/golden_std/solvers: 4 steps of a small
net per case, the params after each, Caffe's .solverstate after the last), and FCN-32s's own
train net trained with FCN's recipe on inputs of four sizes (tests/golden_std/fcn32s_thin),
all through the `train` command as a user runs it."""
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import GOLDEN_STD
from weights_convert.cli import main
from weights_convert.fcn.spec import THIN, fcn32s_net
from weights_convert.formats.prototxt import load_net
from weights_convert.netspec import write_net
from weights_convert.formats.caffemodel import read_caffemodel
from weights_convert.formats.solverstate import read_solverstate
from weights_convert.train.solvers import SOLVER_TYPES

SOLVER_CASES = sorted(p.name for p in (GOLDEN_STD / "solvers").iterdir())
STEPS = 4
PARAM_TOL = 1e-4  # params after each step, times max|Caffe's|
HISTORY_TOL = 1e-4


def case_dir(case: str) -> Path:
    return GOLDEN_STD / "solvers" / case if case != "fcn32s_thin" else GOLDEN_STD / case


def iter_size(case: str) -> int:
    from weights_convert.train.solver_file import read_solver
    return int(read_solver(case_dir(case) / "solver.prototxt").param.iter_size)


def write_inputs(case: str, path: Path, steps: int = STEPS) -> Path:
    """Caffe's inputs of each step, once per pass of the step (iter_size passes read the same)."""
    golden = np.load(case_dir(case) / "steps.npz")
    passes = iter_size(case)
    arrays = {f"{i * passes + k}/{top}": golden[f"{i % STEPS}/{top}"]
              for i in range(steps) for k in range(passes) for top in ("data", "label")}
    np.savez(path, **arrays)
    return path


def train(case: str, out: Path, iters: int, device: str = "cpu", resume: Path | None = None,
          inputs: Path | None = None) -> Path:
    inputs = inputs or write_inputs(case, out.parent / f"{out.name}_inputs.npz")
    start = ["--resume", str(resume)] if resume else ["--weights", str(case_dir(case) / "init.caffemodel")]
    assert main(["train", "--solver", str(case_dir(case) / "solver.prototxt"), *start, "--inputs", str(inputs),
                 "--iters", str(iters), "--snapshot-every", "1", "--no-progress", "--device", device,
                 "--out", str(out)]) == 0
    return out


def assert_params_follow_caffe(case: str, run: Path, steps=range(STEPS)) -> None:
    golden = np.load(case_dir(case) / "steps.npz")
    initial = read_caffemodel(case_dir(case) / "init.caffemodel")
    for step in steps:
        ours = read_caffemodel(run / f"snapshot_iter_{step + 1}.caffemodel")
        keys = [k for k in golden.files if k.startswith(f"{step}/") and k.count("/") == 2]
        assert keys
        for key in keys:
            _, layer, index = key.split("/")
            ref = golden[key]
            assert np.abs(ref - initial[layer][int(index)].reshape(ref.shape)).max() > 0, key  # the step moved it
            got = ours[layer][int(index)].reshape(ref.shape)
            assert np.abs(got - ref).max() <= PARAM_TOL * np.abs(ref).max(), key


def losses(run: Path) -> list[float]:
    lines = (run / "losses.csv").read_text().splitlines()
    column = lines[0].split(",").index("loss")
    return [float(line.split(",")[column]) for line in lines[1:]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, device):
    root = tmp_path_factory.mktemp("solvers")
    return {case: train(case, root / case, STEPS, device) for case in SOLVER_CASES + ["fcn32s_thin"]}


def test_every_solver_type_has_a_golden_case():
    from weights_convert.train.solver_file import read_solver
    types = {read_solver(case_dir(c) / "solver.prototxt").param.type for c in SOLVER_CASES}
    assert types == set(SOLVER_TYPES)


@pytest.mark.parametrize("case", SOLVER_CASES + ["fcn32s_thin"])
def test_params_after_every_step_and_losses_match_caffe(case, runs):
    assert_params_follow_caffe(case, runs[case])
    golden = np.load(case_dir(case) / "steps.npz")
    assert losses(runs[case]) == pytest.approx([float(golden[f"{i}/loss"]) for i in range(STEPS)], rel=1e-5)


@pytest.mark.parametrize("case", SOLVER_CASES + ["fcn32s_thin"])
def test_our_solverstate_equals_caffes_field_by_field(case, runs):
    """iter, current_step and every history blob (AdaDelta and Adam: two sets) as Caffe's; the
    weights file it names is our snapshot's own (Caffe names its snapshot_prefix's)."""
    ours = read_solverstate(runs[case] / f"snapshot_iter_{STEPS}.solverstate")
    caffe = read_solverstate(case_dir(case) / f"snap_iter_{STEPS}.solverstate")
    assert (ours.iteration, ours.current_step) == (caffe.iteration, caffe.current_step)
    assert (ours.learned_net, caffe.learned_net) == (f"snapshot_iter_{STEPS}.caffemodel", f"snap_iter_{STEPS}.caffemodel")
    assert len(ours.history) == len(caffe.history)
    for i, (h, ref) in enumerate(zip(ours.history, caffe.history)):
        assert h.shape == ref.shape, i
        assert np.abs(h - ref).max() <= HISTORY_TOL * np.abs(ref).max(), i


@pytest.mark.parametrize("case", SOLVER_CASES)
def test_caffes_solverstate_resumes_here(case, tmp_path):
    """Continued from Caffe's own step-4 state: its weights and history blobs are read in place
    (written back unchanged), and a fifth step from there lands where our own uninterrupted run
    lands. A history read into the wrong slots (Adam's m for v) would not."""
    state = case_dir(case) / f"snap_iter_{STEPS}.solverstate"
    inputs = write_inputs(case, tmp_path / "inputs.npz", steps=STEPS + 1)
    loaded = train(case, tmp_path / "loaded", STEPS, resume=state, inputs=inputs)
    written = read_solverstate(loaded / f"snapshot_iter_{STEPS}.solverstate")
    caffe = read_solverstate(state)
    assert len(written.history) == len(caffe.history)
    assert all(np.array_equal(a, b) for a, b in zip(written.history, caffe.history))
    resumed = train(case, tmp_path / "resumed", STEPS + 1, resume=state, inputs=inputs)
    whole = train(case, tmp_path / "whole", STEPS + 1, inputs=inputs)
    ours, theirs = read_caffemodel(whole / "snapshot_iter_5.caffemodel"), read_caffemodel(resumed / "snapshot_iter_5.caffemodel")
    for layer, blobs in ours.items():
        for a, b in zip(blobs, theirs[layer]):
            assert np.abs(a - b).max() <= PARAM_TOL * np.abs(a).max(), layer


@pytest.mark.parametrize("case", ["adam", "adadelta", "nesterov"])
def test_a_run_stopped_at_step_2_resumes_to_caffes_steps_3_and_4(case, tmp_path):
    inputs = write_inputs(case, tmp_path / "inputs.npz")
    run = train(case, tmp_path / "run", 2, inputs=inputs)
    train(case, run, STEPS, inputs=inputs)
    assert_params_follow_caffe(case, run, steps=[2, 3])


def test_a_state_of_another_solver_type_is_refused(tmp_path, capsys):
    """SGD's state has one history blob per param; Adam needs two."""
    state = case_dir("sgd_l1_clip") / f"snap_iter_{STEPS}.solverstate"
    inputs = write_inputs("adam", tmp_path / "inputs.npz")
    assert main(["train", "--solver", str(case_dir("adam") / "solver.prototxt"), "--resume", str(state),
                 "--inputs", str(inputs), "--iters", "5", "--no-progress", "--out", str(tmp_path / "run")]) == 2
    assert f"{state}: holds 4 history blobs; solver type Adam keeps 8 for this net" in capsys.readouterr().err


def test_the_kits_fcn32s_spec_is_the_net_caffe_trained(tmp_path):
    """The baselines' base net comes from weights_convert/fcn/spec.py: at the golden widths it is
    the golden FCN-32s train net layer for layer (its MSRA fillers aside: a start model sets every
    blob), and trained from the same start on the same inputs it takes Caffe's 4 steps."""
    golden_net = load_net(case_dir("fcn32s_thin") / "net.prototxt")
    ours = fcn32s_net(16, THIN, dropout=0.0, input_hw=(97, 131), name=golden_net.name)
    for net in (golden_net, ours):
        for layer in net.layer:
            layer.convolution_param.ClearField("weight_filler")
            layer.convolution_param.ClearField("bias_filler")
    assert [layer.name for layer in ours.layer] == [layer.name for layer in golden_net.layer]
    assert ours == golden_net
    case = tmp_path / "spec"
    case.mkdir()
    write_net(fcn32s_net(16, THIN, dropout=0.0, input_hw=(97, 131)), case / "net.prototxt")
    shutil.copy(case_dir("fcn32s_thin") / "solver.prototxt", case / "solver.prototxt")
    inputs = write_inputs("fcn32s_thin", tmp_path / "inputs.npz")
    assert main(["train", "--solver", str(case / "solver.prototxt"), "--weights",
                 str(case_dir("fcn32s_thin") / "init.caffemodel"), "--inputs", str(inputs), "--iters", str(STEPS),
                 "--snapshot-every", "1", "--no-progress", "--out", str(tmp_path / "run")]) == 0
    assert_params_follow_caffe("fcn32s_thin", tmp_path / "run")

"""Data-parallel training as users launch it (`torchrun`, gloo on the CPU): two ranks share the
golden visible case's 3 passes per iteration unevenly, follow Caffe's trajectory, equal one
process but for the order of float sums, and resume after one rank is killed."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from weights_convert.formats.caffemodel import read_caffemodel
from weights_convert.checks.golden import _solver_checks
from helpers import GOLDEN_TRAIN, ROOT

CASE = "train_steps_visible"  # iter_size 3: shares of 2 and 1 passes
ITERATIONS = 5


def train_args(out: Path) -> list[str]:
    return ["-m", "weights_convert", "train", "--solver", str(GOLDEN_TRAIN / CASE / "solver.prototxt"),
            "--weights", str(GOLDEN_TRAIN / "weights.caffemodel"), "--inputs", str(GOLDEN_TRAIN / "inputs.npz"),
            "--iters", str(ITERATIONS), "--snapshot-every", "1", "--no-progress", "--out", str(out)]


def torchrun(out: Path, ranks: int = 2, **popen) -> subprocess.Popen:
    # One thread per process, as torchrun sets it: the 1-process reference below runs the same way.
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                             str(ranks), *train_args(out)], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **popen)


def finished(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return out


def files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name not in ("train.json", ".train.lock")}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ranks2") / "run"
    printed = finished(torchrun(out))
    assert printed.count("trained to iteration 5") == 1  # rank 0 speaks for the job
    return out


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ranks1") / "run"
    done = subprocess.run([sys.executable, *train_args(out)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.slow
def test_two_ranks_follow_caffes_trajectory(two_ranks):
    """The same bounds as one process (golden_checks, the self-check's): params after every
    iteration, the losses, the final momentum history."""
    checks = _solver_checks(GOLDEN_TRAIN, CASE, ITERATIONS, 3e-5, two_ranks)
    assert len(checks) == 3 and all(c.passed for c in checks), [(c.name, c.ratio) for c in checks]


@pytest.mark.slow
def test_two_ranks_equal_one_process_but_for_the_order_of_sums(two_ranks, one_process):
    """Params within 1e-6 of max|w| after every iteration (measured 5.9e-7). The losses within
    3e-6 relative (measured 1.4e-6): this case's loss moves 1e-5 for 1-2 ulp of fc8f
    (tests/weights_convert/train/test_train_golden.py), so a summation order shows in it more than in the weights."""
    for t in range(1, ITERATIONS + 1):
        ours, ref = (read_caffemodel(run / f"snapshot_iter_{t}.caffemodel") for run in (two_ranks, one_process))
        for layer, blobs in ref.items():
            for a, b in zip(ours[layer], blobs):
                assert np.abs(a - b).max() <= 1e-6 * max(np.abs(b).max(), 1e-30), (t, layer)
    rows = [np.loadtxt(run / "losses.csv", delimiter=",", skiprows=1) for run in (two_ranks, one_process)]
    assert np.array_equal(rows[0][:, 3], rows[1][:, 3])  # the rates
    assert np.abs(rows[0][:, 2] - rows[1][:, 2]).max() <= 3e-6 * np.abs(rows[1][:, 2]).max()


@pytest.mark.slow
def test_a_killed_rank_stops_the_job_and_the_same_command_resumes(tmp_path, two_ranks):
    out = tmp_path / "run"
    proc = torchrun(out)
    deadline = time.time() + 300
    while not (out / "snapshot_iter_2.trainstate.json").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    workers = subprocess.run(["pgrep", "-f", "-P", str(proc.pid), "weights_convert"], capture_output=True,
                             text=True).stdout.split()
    agent_children = workers or subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                               text=True).stdout.split()
    assert agent_children, "no rank processes found under torchrun"
    os.kill(int(agent_children[-1]), signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert not (out / f"snapshot_iter_{ITERATIONS}.caffemodel").exists()
    finished(torchrun(out))
    assert files(out) == files(two_ranks)


@pytest.mark.slow
def test_a_run_resumes_with_another_number_of_ranks(tmp_path, two_ranks):
    """Stopped at iteration 3 under two ranks, finished by one process: the trajectory is the
    pass's, not the rank's, so it ends where the two-rank run ends (but for the order of sums)."""
    out = tmp_path / "run"
    args = train_args(out)
    args[args.index("--iters") + 1] = "3"
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             *args], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finished(proc)
    done = subprocess.run([sys.executable, *train_args(out)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    ours, ref = (read_caffemodel(run / f"snapshot_iter_{ITERATIONS}.caffemodel") for run in (out, two_ranks))
    for layer, blobs in ref.items():
        for a, b in zip(ours[layer], blobs):
            assert np.abs(a - b).max() <= 1e-6 * max(np.abs(b).max(), 1e-30), layer


@pytest.mark.slow
def test_oslsm_retraining_under_two_ranks_draws_the_one_process_episodes(tmp_path):
    """`reproduce train` under torchrun on the original's training episodes (a seeded stream that
    each rank advances past the passes it leaves to the other): the same episodes and losses'
    rates, weights within 1e-6 of one process's, and one loss curve written by rank 0."""
    from test_retraining import DATA, thin_solver

    solver = thin_solver(tmp_path)
    common = ["-m", "reproduce", "train", "--voc", str(DATA / "pascal"), "--sbd", str(DATA / "sbd"), "--fold", "1",
              "--seed", "7", "--init", str(GOLDEN_TRAIN / "weights.caffemodel"), "--solver", str(solver),
              "--allow-val-images", "--no-progress", "--no-cache"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ranked, single = tmp_path / "ranked", tmp_path / "single"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *common, "--out", str(ranked)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("last snapshot") == 1 and (ranked / "loss_curve.png").is_file()
    done = subprocess.run([sys.executable, *common, "--out", str(single)], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    state = [json.loads((run / "snapshot_iter_4.trainstate.json").read_text()) for run in (ranked, single)]
    assert state[0]["data"] == state[1]["data"] and state[0]["passes"] == state[1]["passes"] == 8
    ours, ref = (read_caffemodel(run / "snapshot_iter_4.caffemodel") for run in (ranked, single))
    for layer, blobs in ref.items():
        for a, b in zip(ours[layer], blobs):
            assert np.abs(a - b).max() <= 1e-6 * max(np.abs(b).max(), 1e-30), layer


@pytest.mark.slow
def test_two_ranks_train_with_adam_as_the_real_caffe(tmp_path):
    """The adaptive solvers under torchrun: Adam with iter_size 2 (one pass per rank), against
    the real Caffe's params after each of its 4 steps and its final .solverstate."""
    from test_solvers_golden import HISTORY_TOL, assert_params_follow_caffe, case_dir, write_inputs
    from weights_convert.formats.solverstate import read_solverstate

    case = "adam_iter_size2"
    inputs = write_inputs(case, tmp_path / "inputs.npz")
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "weights_convert", "train", "--solver", str(case_dir(case) / "solver.prototxt"),
                           "--weights", str(case_dir(case) / "init.caffemodel"), "--inputs", str(inputs),
                           "--iters", "4", "--snapshot-every", "1", "--no-progress", "--out", str(out)],
                          cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_params_follow_caffe(case, out)
    ours, caffe = read_solverstate(out / "snapshot_iter_4.solverstate"), read_solverstate(
        case_dir(case) / "snap_iter_4.solverstate")
    assert len(ours.history) == len(caffe.history) == 8
    for h, ref in zip(ours.history, caffe.history):
        assert np.abs(h - ref).max() <= HISTORY_TOL * np.abs(ref).max()

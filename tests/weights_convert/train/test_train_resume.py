"""A training run resumes to identical files after SIGKILL or Ctrl-C, refuses a changed run or a
second process in its folder, and its snapshots are Caffe weights the other commands read."""
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from weights_convert.cli import main
from helpers import GOLDEN, GOLDEN_TRAIN, ROOT

CASE = GOLDEN_TRAIN / "train_steps_visible"


def train_args(out: Path, iters: int = 4, *extra: str) -> list[str]:
    return ["train", "--solver", str(CASE / "solver.prototxt"), "--weights", str(GOLDEN_TRAIN / "weights.caffemodel"),
            "--inputs", str(GOLDEN_TRAIN / "inputs.npz"), "--iters", str(iters), "--snapshot-every", "2",
            "--no-progress", "--out", str(out), *extra]


def run_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name not in ("train.json", ".train.lock")}


def train_process(out: Path, iters: int = 4) -> None:
    """The command as a user runs it, in its own process: the byte comparisons below are about what
    separate runs of a command write (a long test session's process is not a fresh one)."""
    done = subprocess.run([sys.executable, "-m", "weights_convert", *train_args(out, iters)], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("whole") / "run"
    train_process(out)
    return run_files(out)


def start(out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "weights_convert", *train_args(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.05)


def test_sigkill_then_same_command_gives_identical_files(tmp_path, uninterrupted):
    out = tmp_path / "run"
    proc = start(out)
    wait_for(out / "snapshot_iter_2.trainstate.json", proc)
    time.sleep(0.4)  # into iteration 3
    proc.kill()
    proc.wait()
    assert not (out / "snapshot_iter_4.caffemodel").exists()
    train_process(out)
    assert run_files(out) == uninterrupted


@pytest.mark.parametrize("stop,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_a_stop_request_snapshots_last_iteration_and_resumes_identically(tmp_path, uninterrupted, stop, status):
    """Ctrl-C, and SIGTERM as `timeout`, SLURM and Kubernetes send it, alike but for the exit status."""
    out = tmp_path / "run"
    proc = start(out)
    wait_for(out / "snapshot_iter_2.trainstate.json", proc)
    time.sleep(0.4)
    proc.send_signal(stop)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err
    assert "run the same command again to resume" in err and "Traceback" not in err
    train_process(out)
    files = run_files(out)
    # Stopped after iteration 3 finished (the signal's timing decides), the run also snapshotted
    # iteration 3; everything else is the uninterrupted run's.
    extra = {name for name in files if name.startswith("snapshot_iter_3.")}
    assert extra in (set(), {f"snapshot_iter_3.{ext}" for ext in ("caffemodel", "solverstate", "trainstate.json")})
    assert {k: v for k, v in files.items() if k not in extra} == uninterrupted


def test_extending_a_finished_run_continues_it(tmp_path, uninterrupted):
    out = tmp_path / "run"
    train_process(out, 2)
    train_process(out, 4)
    assert run_files(out) == uninterrupted


def test_changed_run_and_foreign_folder_are_refused(tmp_path, capsys, monkeypatch):
    import torch

    out = tmp_path / "run"
    assert main(train_args(out, 1)) == 0
    assert main(train_args(out, 1, "--seed", "5")) == 2
    assert "changed: seed" in capsys.readouterr().err
    # another thread count sums in another order: not the same run
    with monkeypatch.context() as patch:
        patch.setattr(torch, "get_num_threads", lambda: 97)
        assert main(train_args(out, 2)) == 2
    err = capsys.readouterr().err
    assert "changed: hardware" in err and "threads=97" in err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "results.csv").write_text("mine")
    assert main(train_args(foreign, 1)) == 2
    assert "holds files this tool did not write (results.csv)" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["results.csv"]  # not even a lock is left in it


def test_second_process_in_the_same_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    proc = start(out)
    try:
        wait_for(out / "train.json", proc)
        assert main(train_args(out)) == 2
        assert f"pid {proc.pid}" in capsys.readouterr().err
    finally:
        proc.kill()
        proc.wait()


def test_no_start_weights_is_a_clear_error(tmp_path, capsys):
    args = [a for a in train_args(tmp_path / "run", 1)]
    i = args.index("--weights")
    del args[i:i + 2]
    assert main(args) == 2
    assert "--weights" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_snapshot_converts_forwards_and_evaluates(tmp_path, uninterrupted):
    """A snapshot is a plain Caffe .caffemodel of the train net: `convert`, `forward` and
    `evaluate` take it with the deploy net of the same widths."""
    from reproduce.cli import main as reproduce_main
    from weights_convert.netspec import write_net
    from weights_convert.oslsm import OSLSMWidths
    from weights_convert.oslsm.spec import oslsm_deploy_net

    snapshot = tmp_path / "snapshot_iter_2.caffemodel"
    snapshot.write_bytes(uninterrupted["snapshot_iter_2.caffemodel"])
    deploy = tmp_path / "deploy_1shot.prototxt"
    write_net(oslsm_deploy_net(1, OSLSMWidths(4, 6, 8, 8, 8, 16, 10)), deploy)
    converted = tmp_path / "fold0.safetensors"
    assert main(["convert", "--prototxt", str(deploy), "--caffemodel", str(snapshot), "--model", "oslsm",
                 "--label", "fold=0", "--out", str(converted)]) == 0

    # Iteration 2 trained on episodes 1, 2, 3 with exactly these weights: the deploy net run by
    # `forward` gives the same loss as the train net logged (dropout ratio 0 in this net).
    episodes = np.load(GOLDEN_TRAIN / "inputs.npz")
    losses = []
    for e in (1, 2, 3):
        inputs = tmp_path / f"episode{e}.npz"
        np.savez(inputs, **{top: episodes[f"{e}/{top}"] for top in ("first_img", "second_img", "first_label",
                                                                    "second_label")})
        blobs = tmp_path / f"blobs{e}.npz"
        assert main(["forward", "--prototxt", str(deploy), "--weights", str(snapshot), "--inputs", str(inputs),
                     "--out", str(blobs)]) == 0
        losses.append(np.float32(np.load(blobs)["loss"]))
    logged = uninterrupted["losses.csv"].decode().splitlines()[3].split(",")
    assert logged[0] == "2"
    assert float((losses[0] + losses[1] + losses[2]) / np.float32(3)) == pytest.approx(float(logged[2]), rel=1e-6)

    voc = GOLDEN / "episodes" / "VOC2012"
    run = tmp_path / "eval"
    assert reproduce_main(["evaluate", "--voc", str(voc), "--weights", str(converted), "--fold", "0",
                           "--shots", "1", "--episodes", "2", "--no-progress", "--out", str(run)]) == 0
    summary = (run / "summary.json").read_text()
    assert '"n_episodes": 2' in summary


def test_a_damaged_snapshot_is_refused_naming_it(tmp_path, capsys):
    out = tmp_path / "run"
    train_process(out, 2)
    model = out / "snapshot_iter_2.caffemodel"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    assert main(train_args(out, 4)) == 2
    err = capsys.readouterr().err
    assert f"{model} is damaged" in err and "Delete snapshot_iter_2.*" in err


def test_iters_below_a_finished_run_says_so(tmp_path, capsys):
    out = tmp_path / "run"
    train_process(out, 4)
    before = run_files(out)
    assert main(train_args(out, 2)) == 2
    err = capsys.readouterr().err
    assert "already at iteration 4, past --iters 2" in err and str(out / "snapshot_iter_2.caffemodel") in err
    assert run_files(out) == before

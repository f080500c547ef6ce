"""`train-all` as users run it: two folds side by side on the CPU, each fold's folder what `train`
writes, a SIGTERM stopping both and the same command resuming them, the models named by fold."""
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import GOLDEN_TRAIN, ROOT, TRAINING_DATA as DATA, thin_solver
from reproduce.training.demo_model import demo_base_params
from reproduce.workflows.all_folds import device_slots
from reproduce.workflows.fold_models import find_fold_models
from weights_convert.fcn.spec import THIN, layer_types
from weights_convert.formats.caffemodel import read_caffemodel, write_caffemodel


def command(tmp_path: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "reproduce", "train-all", "--voc", str(DATA / "pascal"), "--sbd", str(DATA / "sbd"),
            "--init", str(GOLDEN_TRAIN / "weights.caffemodel"), "--solver", str(thin_solver(tmp_path)), "--folds", "0,1",
            "--devices", "cpu,cpu", "--seed", "7", "--allow-val-images", "--out", str(out)]


def run_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix != ".lock" and p.name != "train.json"}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("all")
    out = tmp / "train"
    done = subprocess.run(command(tmp, out), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fold 0: started on cpu" in done.stderr and "fold 1: started on cpu" in done.stderr
    return out


@pytest.mark.slow
def test_both_folds_train_as_train_does_and_their_models_are_named_by_fold(uninterrupted, tmp_path):
    for fold in (0, 1):
        assert (uninterrupted / f"fold{fold}" / "snapshot_iter_4.caffemodel").is_file()
        assert (uninterrupted / f"fold{fold}" / "loss_curve.png").is_file()
    models = find_fold_models(uninterrupted / "models", {}, folds=(0, 1))
    assert {f: p.name for f, p in models.items()} == {0: "oslsm_fold0_iter_4.caffemodel",
                                                     1: "oslsm_fold1_iter_4.caffemodel"}
    assert models[1].read_bytes() == (uninterrupted / "fold1" / "snapshot_iter_4.caffemodel").read_bytes()
    # Fold 1 is what `train --fold 1 --seed 8` writes by itself.
    alone = tmp_path / "alone"
    done = subprocess.run([sys.executable, "-m", "reproduce", "train", "--voc", str(DATA / "pascal"), "--sbd",
                           str(DATA / "sbd"), "--fold", "1", "--seed", "8", "--init", str(GOLDEN_TRAIN / "weights.caffemodel"),
                           "--solver", str(thin_solver(tmp_path)), "--allow-val-images", "--no-progress", "--out",
                           str(alone)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert run_files(alone) == run_files(uninterrupted / "fold1")


@pytest.mark.slow
def test_sigterm_stops_every_fold_and_the_same_command_resumes(uninterrupted, tmp_path):
    out = tmp_path / "train"
    proc = subprocess.Popen(command(tmp_path, out), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 300
    while not (out / "fold0" / "snapshot_iter_2.trainstate.json").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-2000:]
    assert not (out / "models").exists()
    done = subprocess.run(command(tmp_path, out), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    for fold in (0, 1):
        files, whole = run_files(out / f"fold{fold}"), run_files(uninterrupted / f"fold{fold}")
        # A fold stops after its last finished iteration and snapshots it (as `train` does on a stop):
        # that extra snapshot aside, every file is the uninterrupted run's.
        extra = {name for name in set(files) - set(whole) if name.startswith("snapshot_iter_")}
        assert len({name.split(".")[0] for name in extra}) <= 1, extra
        assert {k: v for k, v in files.items() if k not in extra} == whole, fold


def _fold_processes(out: Path) -> list[int]:
    """Pids of the `reproduce train` processes writing under `out`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"train" in argv and any(str(out).encode() in a for a in argv) and b"train-all" not in argv:
            pids.append(int(proc.name))
    return pids


@pytest.mark.slow
def test_a_killed_train_all_takes_its_folds_with_it_and_the_same_command_resumes(uninterrupted, tmp_path):
    out = tmp_path / "train"
    proc = subprocess.Popen(command(tmp_path, out), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(_fold_processes(out)) < 2 or not (out / "fold0" / "train.json").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 120
    while _fold_processes(out):  # each fold got SIGTERM from the kernel: it snapshots and exits
        assert time.time() < deadline, "fold processes outlived the killed train-all"
        time.sleep(0.1)
    assert "interrupted after" in (out / "logs" / "fold0.log").read_text()  # stopped, not left to finish
    done = subprocess.run(command(tmp_path, out), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    for fold in (0, 1):
        files, whole = run_files(out / f"fold{fold}"), run_files(uninterrupted / f"fold{fold}")
        extra = {name for name in set(files) - set(whole) if name.startswith("snapshot_iter_")}
        assert {k: v for k, v in files.items() if k not in extra} == whole, fold


def test_devices_split_into_slots_of_ranks_per_fold():
    assert device_slots(["cuda:0", "cuda:1", "cuda:2", "cuda:3"], 2) == [["cuda:0", "cuda:1"], ["cuda:2", "cuda:3"]]
    assert device_slots(["cpu"], 1) == [["cpu"]]
    with pytest.raises(Exception, match="do not split into groups"):
        device_slots(["cuda:0", "cuda:1", "cuda:2"], 2)


def test_bad_folds_and_devices_are_refused_together(tmp_path):
    done = subprocess.run([sys.executable, "-m", "reproduce", "train-all", "--voc", "v", "--sbd", "s", "--folds", "0,7",
                           "--devices", "cpu,cuda:5", "--out", str(tmp_path / "o")], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 2 and "7 is not a PASCAL-5i fold" in done.stderr and "'cuda:5'" in done.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_the_published_models_feed_table_run_and_say_how_they_were_trained(uninterrupted, tmp_path, capsys):
    """train-all's models/ is what `make reproduce-tables MODELS=...` reads; each model's training
    record travels through the conversion and the evaluation into the table's notes."""
    import json

    from reproduce.cli import main
    from weights_convert.netspec import write_net
    from weights_convert.oslsm import OSLSMWidths
    from weights_convert.oslsm.spec import oslsm_deploy_net

    record = json.loads((uninterrupted / "models" / "oslsm_fold1_iter_4.caffemodel.json").read_text())
    assert (record["fold"], record["iteration"], record["seed"], record["start_weights"]) == \
        (1, 4, 8, "weights.caffemodel")
    deploy = tmp_path / "deploy_1shot_golden.prototxt"
    write_net(oslsm_deploy_net(1, OSLSMWidths(4, 6, 8, 8, 8, 16, 10)), deploy)
    out = tmp_path / "results"
    assert main(["table-run", "--table", "1", "--voc", str(DATA / "pascal"), "--models", str(uninterrupted / "models"),
                 "--prototxt", str(deploy), "--folds", "0", "1", "--episodes", "2", "--out", str(out),
                 "--no-progress"]) == 0
    summary = json.loads((out / "runs" / "table1_fold1" / "summary.json").read_text())
    assert summary["weights_training"] == record
    notes = (out / "table1_1shot.md").read_text()
    assert "re-trained by oslsm-repro: fold 0, iteration 4, episode seed 7, from weights.caffemodel" in notes
    assert "re-trained by oslsm-repro: fold 1, iteration 4, episode seed 8, from weights.caffemodel" in notes


def test_a_model_whose_record_names_another_fold_is_refused(uninterrupted, tmp_path, capsys):
    """A fold-0 model with its record, copied under a fold-1 name, is not fold 1's model."""
    import shutil

    from reproduce.cli import main

    models = tmp_path / "models"
    models.mkdir()
    source = uninterrupted / "models" / "oslsm_fold0_iter_4.caffemodel"
    shutil.copy(source, models / "oslsm_fold1_iter_4.caffemodel")
    shutil.copy(source.with_name(source.name + ".json"), models / "oslsm_fold1_iter_4.caffemodel.json")
    out = tmp_path / "results"
    assert main(["table-run", "--table", "1", "--voc", str(DATA / "pascal"), "--models", str(models),
                 "--folds", "1", "--episodes", "2", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "oslsm_fold1_iter_4.caffemodel is used as fold 1's model, but its training record" in err
    assert "says it was trained for fold 0" in err and not out.exists()


def test_base_nets_train_as_train_base_and_are_published_for_table_run(tmp_path):
    start = demo_base_params(THIN, 16, seed=1)
    write_caffemodel(tmp_path / "start.caffemodel", start, layer_types(start))
    out = tmp_path / "all"
    base = [sys.executable, "-m", "reproduce", "train-all", "--voc", str(DATA / "pascal"), "--sbd", str(DATA / "sbd"),
            "--folds", "1", "--allow-val-images", "--out", str(out)]
    done = subprocess.run([*base, "--base-nets", "--init", str(tmp_path / "start.caffemodel"), "--iters", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    published = out / "base_models" / "fcn32s_base_fold1_iter_2.caffemodel"
    assert published.read_bytes() == (out / "base" / "fold1" / "run" / "snapshot_iter_2.caffemodel").read_bytes()
    assert find_fold_models(out / "base_models", {}, [1]) == {1: published}
    assert set(read_caffemodel(published)) == set(start)
    # the options of the other kind of training are refused
    done = subprocess.run([*base, "--base-nets", "--solver", "s.prototxt"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "--solver: not an option of --base-nets" in done.stderr
    done = subprocess.run([*base, "--vgg16", "v.caffemodel"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "--vgg16 is read with --base-nets only" in done.stderr

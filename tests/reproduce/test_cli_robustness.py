"""What every command of both tools does with careless input, found as a class, not case by case:
device names, outputs that are inputs, foreign files at --out, truncated files, nameless OS errors."""
import argparse
import errno
import shutil
import subprocess
import sys
import time

import pytest

from helpers import GOLDEN
from reproduce.cli import build_parser as reproduce_parser
from reproduce.cli import main as reproduce_main
from weights_convert.files.atomic import atomic_path, atomic_write, naming_os_errors
from weights_convert.cli import build_parser as convert_parser
from weights_convert.cli import main as convert_main
from weights_convert.cli_frame import describe_os_error
from weights_convert.runtime.devices import DeviceError, checked_device

TOOLS = {"weights_convert": (convert_parser, convert_main), "reproduce": (reproduce_parser, reproduce_main)}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _argv_with(sub: argparse.ArgumentParser, tmp_path, **given) -> list[str]:
    """Every required option of a subcommand filled with a harmless value, then `given`."""
    argv = []
    for action in sub._actions:
        if not action.option_strings or not action.required:
            continue
        name = action.dest
        value = action.choices[0] if action.choices else ("0" if action.type is int else str(tmp_path / name))
        argv += [action.option_strings[-1], str(value)]
    for option, value in given.items():
        argv += [f"--{option}", value]
    return argv


def _commands_with(option: str):
    for tool, (build, main) in TOOLS.items():
        for name, sub in _subparsers(build()).items():
            if any(f"--{option}" in a.option_strings for a in sub._actions):
                yield pytest.param(tool, name, id=f"{tool}-{name}")


@pytest.mark.parametrize("tool,command", list(_commands_with("device")))
@pytest.mark.parametrize("device", ["gpu", "cuda:7", "mps", ""])
def test_every_command_refuses_a_bad_device_up_front(tool, command, device, tmp_path, capsys):
    build, main = TOOLS[tool]
    sub = _subparsers(build())[command]
    out = tmp_path / "out"
    argv = [command, *_argv_with(sub, tmp_path, device=device)]
    if any("--out" in a.option_strings for a in sub._actions):
        argv += ["--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    if sub.get_default("_own_device_check"):  # checked with the other arguments, all reported at once
        assert f"--device {device!r}" in err, err
    else:
        assert err.startswith("error: --device ") and repr(device) in err and len(err.splitlines()) == 1, err
    assert not out.exists()  # refused before anything was created


def test_device_names_are_canonical():
    assert checked_device("cpu") == checked_device("cpu:0") == "cpu"
    with pytest.raises(DeviceError, match=r"'cuda:7'.*no usable CUDA device"):
        checked_device("cuda:7")
    with pytest.raises(DeviceError, match=r"'mps': only cpu and cuda\[:N\]"):
        checked_device("mps")


def test_convert_never_replaces_its_own_input(tmp_path, capsys):
    case = GOLDEN / "conv_basic"
    weights = tmp_path / "weights.caffemodel"
    shutil.copy(case / "weights.caffemodel", weights)
    before = weights.read_bytes()
    argv = ["convert", "--prototxt", str(case / "net.prototxt"), "--caffemodel", str(weights)]
    assert convert_main([*argv, "--out", str(weights)]) == 2
    assert "is the file given as --caffemodel" in capsys.readouterr().err
    assert convert_main([*argv, "--out", str(tmp_path / "r.safetensors"), "--report", str(weights)]) == 2
    assert weights.read_bytes() == before


def test_convert_refuses_a_foreign_file_at_out_unless_forced(tmp_path, capsys):
    case = GOLDEN / "conv_basic"
    foreign = tmp_path / "other_fold.caffemodel"
    shutil.copy(case / "weights.caffemodel", foreign)
    argv = ["convert", "--prototxt", str(case / "net.prototxt"), "--caffemodel", str(case / "weights.caffemodel")]
    assert convert_main([*argv, "--out", str(foreign)]) == 2
    assert "is not a conversion written by this kit" in capsys.readouterr().err
    assert foreign.read_bytes() == (case / "weights.caffemodel").read_bytes()
    ours = tmp_path / "ours.safetensors"
    assert convert_main([*argv, "--out", str(ours)]) == 0
    assert convert_main([*argv, "--out", str(ours)]) == 0  # our own conversion is replaced
    assert convert_main([*argv, "--out", str(foreign), "--force"]) == 0


@pytest.mark.parametrize("command", ["forward", "verify"])
def test_a_truncated_npz_is_one_line_naming_it(command, tmp_path, capsys):
    case = GOLDEN / "conv_basic"
    whole = (case / "blobs.npz").read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(whole[: len(whole) // 2])
    inputs_option = "--golden" if command == "verify" else "--inputs"
    argv = [command, "--prototxt", str(case / "net.prototxt"), "--weights", str(case / "weights.caffemodel"),
            inputs_option, str(cut)]
    argv += ["--out", str(tmp_path / "o.npz")] if command == "forward" else []
    assert convert_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert str(cut) in err and "cannot read .npz" in err and "Traceback" not in err


def test_nameless_os_errors_name_the_file(tmp_path):
    """A full disk's write error carries no file name; the message must still say which file."""
    target = tmp_path / "out.bin"
    for writer in (atomic_write, atomic_path):
        with pytest.raises(OSError) as info:
            with writer(target):
                raise OSError(errno.ENOSPC, "No space left on device")
        assert describe_os_error(info.value) == f"{target}: No space left on device"
        assert list(tmp_path.iterdir()) == []  # nothing half-written
    with pytest.raises(OSError) as info:
        with naming_os_errors(target):
            raise OSError(errno.EIO, "Input/output error")
    assert describe_os_error(info.value) == f"{target}: Input/output error"


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_help_starts_without_loading_torch(tool):
    """`--help` and the commands' parsers load no torch (1.3 s of a 2 s start before)."""
    code = (f"import sys; from {tool}.cli import build_parser; build_parser(); "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def _commands_writing_one_file():
    for tool, (build, _) in TOOLS.items():
        for name, sub in _subparsers(build()).items():
            if sub.get_default("_is_own_output") is not None:
                yield pytest.param(tool, name, id=f"{tool}-{name}")


@pytest.mark.parametrize("tool,command", list(_commands_writing_one_file()))
def test_no_command_overwrites_a_file_of_another_kind(tool, command, tmp_path, capsys):
    """--out naming a finished run's summary.json (or any file the command did not write) is refused
    before the command runs, and left as it was; --force is the way to replace it."""
    build, main = TOOLS[tool]
    sub = _subparsers(build())[command]
    summary = tmp_path / "summary.json"
    summary.write_text('{"miou": 0.5}\n')
    argv = [command, *_argv_with(sub, tmp_path, out=str(summary))]
    if command == "make-init":  # one of two sources is required
        argv += ["--vgg16", str(tmp_path / "vgg16.caffemodel")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is not a file of the kind this command writes" in err and "--force" in err
    assert summary.read_text() == '{"miou": 0.5}\n'
    assert any("--force" in a.option_strings for a in sub._actions)


def test_a_command_replaces_its_own_earlier_output(tmp_path):
    case = GOLDEN / "conv_basic"
    out = tmp_path / "blobs.npz"
    argv = ["forward", "--prototxt", str(case / "net.prototxt"), "--weights", str(case / "weights.caffemodel"),
            "--inputs", str(case / "blobs.npz"), "--out", str(out)]
    assert convert_main(argv) == 0
    assert convert_main(argv) == 0


# ---------------------------------------------------------------------------- numbers that are not sane
BAD_NUMBERS = {"episodes": ["0", "1000000000000"], "workers": ["0"], "iters": ["-5", "0"], "snapshot_every": ["0"],
               "ranks_per_fold": ["0"], "images": ["-1"], "train_images": ["-1"], "train_iters": ["0"],
               "hsnet_size": ["0", "100000"], "cache_max_gb": ["nan", "inf", "1e400", "-1"],
               "base_lr": ["0", "-1", "nan", "inf"]}


def _numeric_cases():
    from reproduce.numeric_options import CHECKS
    assert set(BAD_NUMBERS) == set(CHECKS)
    for name, sub in _subparsers(reproduce_parser()).items():
        for action in sub._actions:
            for value in (BAD_NUMBERS.get(action.dest, []) if action.type in (int, float) else []):
                yield name, action.option_strings[-1], value


@pytest.mark.parametrize("command, option, value", list(_numeric_cases()))
def test_every_numeric_option_is_checked_before_anything_is_written(command, option, value, tmp_path, capsys):
    sub = _subparsers(reproduce_parser())[command]
    argv = [command, *_argv_with(sub, tmp_path), option, value]
    if command in ("table-run", "evaluate") and option == "--hsnet-size":
        argv += ["--protocol", "hsnet"]
    before = sorted(tmp_path.rglob("*"))
    assert reproduce_main(argv) == 2
    err = capsys.readouterr().err
    assert option in err and "Traceback" not in err, err
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("argv, message", [
    (["table-run", "--table", "1", "--cache-max-gb", "nan"], "--cache-max-gb must be a finite size in GB >= 0, got nan"),
    (["train-all", "--voc", "v", "--sbd", "s", "--devices="], "--devices '': expected one or more comma-separated"),
    (["train-all", "--voc", "v", "--sbd", "s", "--folds", ""], "--folds '': expected one or more comma-separated"),
])
def test_insane_numbers_and_empty_lists_in_a_fresh_process(argv, message, tmp_path):
    done = subprocess.run([sys.executable, "-m", "reproduce", *argv, "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv", [["selfcheck", "--quick"], ["train", "--solver", "s.prototxt", "--inputs", "i.npz"]])
def test_an_unusable_out_folder_is_refused_before_the_work(argv, tmp_path):
    """A file where the folder should be, or a tree that cannot be written: refused at once (the
    self-check used to find out after minutes of work)."""
    (tmp_path / "file").write_text("mine")
    for out, message in ((tmp_path / "file", "is a file; expected a folder"), ("/proc/no/such", "cannot be written")):
        started = time.time()
        done = subprocess.run([sys.executable, "-m", "weights_convert", *argv, "--out", str(out)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert time.time() - started < 60
    assert (tmp_path / "file").read_text() == "mine"


def test_train_leaves_no_lock_in_a_foreign_folder(tmp_path, capsys):
    from helpers import GOLDEN_STD
    import numpy as np

    case = GOLDEN_STD / "solvers" / "adam"
    steps = np.load(case / "steps.npz")
    np.savez(tmp_path / "in.npz", **{"0/data": steps["0/data"], "0/label": steps["0/label"]})
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own")
    assert convert_main(["train", "--solver", str(case / "solver.prototxt"), "--weights", str(case / "init.caffemodel"),
                         "--inputs", str(tmp_path / "in.npz"), "--iters", "1", "--no-progress", "--out", str(out)]) == 2
    assert "holds files this tool did not write (notes.txt)" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_sbd_to_voc_never_writes_inside_the_voc_folder(tmp_path, capsys):
    """(An --out inside SBD itself: tests/reproduce/training/test_retraining.py.)"""
    from helpers import copy_golden_voc

    voc = copy_golden_voc(tmp_path)
    sbd = tmp_path / "sbd"
    sbd.mkdir()
    for out in (voc / "ImageSets" / "Segmentation" / "new", voc / "JPEGImages" / "x"):
        assert reproduce_main(["sbd-to-voc", "--sbd", str(sbd), "--voc", str(voc), "--out", str(out)]) == 2
        assert "lies inside the data set folder" in capsys.readouterr().err
        assert not out.exists()


def test_evaluate_names_a_folder_given_as_weights(tmp_path, capsys):
    assert reproduce_main(["evaluate", "--voc", str(GOLDEN / "episodes" / "VOC2012"), "--weights", str(tmp_path),
                           "--fold", "0", "--shots", "1", "--out", str(tmp_path / "out")]) == 2
    assert f"weights {tmp_path} is a folder; expected a weights file" in capsys.readouterr().err


@pytest.mark.parametrize("tool", ["reproduce", "weights_convert"])
def test_a_ctrl_c_while_the_modules_load_is_a_stop_not_a_traceback(tool):
    """SIGINT once the kit's own modules have begun to load (seen in -X importtime's lines)."""
    import signal

    proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", tool, "--help"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if f" {tool}." in line:  # one of the kit's modules has been imported
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()
    proc.wait(timeout=120)
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest, rest[-2000:]
    assert proc.returncode in (0, 130)  # 0: --help had already been printed


def test_export_leaves_a_foreign_file_at_onnx_alone(tmp_path, capsys):
    """--onnx goes through the same output-file check as --out."""
    mine = tmp_path / "mine.onnx"
    mine.write_text("the user's own")
    case = GOLDEN / "conv_basic"
    assert convert_main(["export", "--prototxt", str(case / "net.prototxt"), "--weights", str(case / "weights.caffemodel"),
                         "--out", str(tmp_path / "net.pt2"), "--onnx", str(mine)]) == 2
    assert f"--onnx {mine} exists and is not a file of the kind this command writes" in capsys.readouterr().err
    assert mine.read_text() == "the user's own" and not (tmp_path / "net.pt2").exists()

"""Operating-system errors and interruptions end every command with one line and a clear exit
code (2: bad input or OS error, 130: interrupted), no traceback and nothing half-written."""
import signal
import subprocess
import sys
import time

import pytest

from helpers import GOLDEN
from reproduce.cli import main as reproduce_main
from weights_convert.cli import main as convert_main

CASE = GOLDEN / "oslsm_thin_1shot_120x200"


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_output_that_is_a_folder_or_under_a_file(capsys, tmp_path):
    args = ["convert", "--prototxt", str(CASE / "net.prototxt"), "--caffemodel", str(CASE / "weights.caffemodel")]
    folder = tmp_path / "a_folder"
    folder.mkdir()
    assert convert_main([*args, "--out", str(folder)]) == 2
    assert _error_line(capsys).startswith(f"error: {folder}") and list(folder.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_folder"]  # no temporary file left
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert convert_main([*args, "--out", str(a_file / "model.safetensors")]) == 2
    assert "Not a directory" in _error_line(capsys)


def test_unreadable_input_is_one_line(capsys, tmp_path):
    assert convert_main(["convert", "--prototxt", str(tmp_path / "none.prototxt"), "--caffemodel",
                         str(CASE / "weights.caffemodel"), "--out", str(tmp_path / "o.safetensors")]) == 2
    assert "none.prototxt" in _error_line(capsys)
    assert not (tmp_path / "o.safetensors").exists()


def test_reproduce_outputs_under_a_file(capsys, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    voc = GOLDEN / "episodes" / "VOC2012"
    code = reproduce_main(["episodes", "--voc", str(voc), "--fold", "0", "--shots", "1", "--episodes", "2",
                           "--no-cache", "--out", str(a_file / "episodes.json")])
    assert code == 2 and "Not a directory" in _error_line(capsys)


def test_ctrl_c_of_a_conversion_is_one_line(tmp_path):
    """Interrupted while it works: exit 130, a message, no traceback, no output file."""
    # a suite started in the background inherits an ignored SIGINT; a user's terminal does not
    script = ("import signal, time, weights_convert.convert as c\n"
              "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
              "real = c.sha256_file\n"
              "def slow(p, *a):\n    time.sleep(8)\n    return real(p)\n"
              "c.sha256_file = slow\n"
              "from weights_convert.cli import main\nimport sys\nsys.exit(main(sys.argv[1:]))\n")
    out = tmp_path / "o.safetensors"
    proc = subprocess.Popen([sys.executable, "-c", script, "convert", "--prototxt", str(CASE / "net.prototxt"),
                             "--caffemodel", str(CASE / "weights.caffemodel"), "--out", str(out)],
                            stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []


def test_unknown_device_is_refused_in_words(capsys, tmp_path):
    voc = GOLDEN / "episodes" / "VOC2012"
    code = reproduce_main(["evaluate", "--voc", str(voc), "--weights", str(CASE / "weights.caffemodel"),
                           "--prototxt", str(CASE / "net.prototxt"), "--fold", "0", "--shots", "1",
                           "--device", "gpu7", "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 2
    assert "--device 'gpu7' is not a device name" in _error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_version_quiet_and_verbose(capsys, tmp_path):
    for main in (reproduce_main, convert_main):
        with pytest.raises(SystemExit) as done:
            main(["--version"])
        assert done.value.code == 0 and "0.1.0" in capsys.readouterr().out
    args = ["evaluate", "--voc", str(tmp_path), "--weights", str(tmp_path / "none"), "--fold", "0", "--shots", "1",
            "--out", str(tmp_path / "run")]
    assert reproduce_main(args) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert reproduce_main(["--verbose", *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("  - ")  # the message comes last
    with pytest.raises(SystemExit):
        reproduce_main(["--quiet", "--verbose", *args])

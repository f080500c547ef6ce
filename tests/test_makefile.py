"""The Makefile passes any path through to the commands: spaces, both quote characters, unicode."""
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ODD = "/tmp/odd dir/it's a \"test\" ü"


def _command(target: str, **variables) -> list[str]:
    """The argv of the target's python command, as the shell would split `make -n`'s line."""
    if shutil.which("make") is None:
        pytest.fail("make is not installed; the Makefile is the documented entry point")
    out = subprocess.run(["make", "-n", "-C", str(ROOT), target, *(f"{k}={v}" for k, v in variables.items())],
                         capture_output=True, text=True, check=True).stdout
    script = out.replace("\\\n", " ")
    line = next(x for x in script.splitlines() if " -m reproduce " in x or " -m weights_convert " in x)
    return shlex.split(line)


def _value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_table_targets_pass_odd_paths_verbatim():
    for target in ("reproduce-table1", "reproduce-table2", "reproduce-tables"):
        argv = _command(target, VOC=ODD + "/VOC", MODELS=ODD + "/m", PROTOTXT=ODD + "/p.prototxt",
                        RESULTS=ODD + "/r", EPISODES="7", DEVICE="cuda:1")
        assert (_value(argv, "--voc"), _value(argv, "--models"), _value(argv, "--prototxt"),
                _value(argv, "--out")) == (ODD + "/VOC", ODD + "/m", ODD + "/p.prototxt", ODD + "/r")
        assert (_value(argv, "--episodes"), _value(argv, "--device")) == ("7", "cuda:1")


def test_convert_honours_prototxt_and_odd_paths():
    argv = _command("convert", MODELS=ODD, FOLD2=ODD + "/f2.caffemodel", PROTOTXT=ODD + "/p.prototxt",
                    RESULTS=ODD)
    assert _value(argv, "--models") == ODD and _value(argv, "--fold2") == ODD + "/f2.caffemodel"
    assert _value(argv, "--prototxt") == ODD + "/p.prototxt" and _value(argv, "--out") == ODD + "/models"
    assert "--prototxt" not in _command("convert")  # default: the command's own (the project's prototxt)


def test_demo_check_voc_and_train_pass_odd_paths():
    assert _value(_command("demo", RESULTS=ODD), "--out") == ODD + "/demo"
    assert _value(_command("check-voc", VOC=ODD), "--voc") == ODD
    argv = _command("train", VOC=ODD + "/v", SBD=ODD + "/s", INIT=ODD + "/i.caffemodel", RESULTS=ODD, FOLD="2",
                    ITERS="5")
    assert [_value(argv, f) for f in ("--voc", "--sbd", "--init", "--out", "--fold", "--iters")] == \
        [ODD + "/v", ODD + "/s", ODD + "/i.caffemodel", ODD + "/train/fold2", "2", "5"]


def test_a_dollar_in_a_value_is_passed_as_written():
    odd = "out/we$ird dir/$(shell echo x)/res"
    assert _value(_command("reproduce-table1", RESULTS=odd), "--out") == odd
    assert _value(_command("train", RESULTS=odd, FOLD="1"), "--out") == odd + "/train/fold1"
    assert _value(_command("convert", PROTOTXT="$p.prototxt"), "--prototxt") == "$p.prototxt"


@pytest.mark.parametrize("target, variable", [("demo", "RESULTS"), ("reproduce-table1", "RESULTS"),
                                              ("reproduce-tables", "VOC"), ("train-all", "DEVICE"),
                                              ("train-all", "FOLDS"), ("convert", "MODELS")])
def test_an_empty_required_variable_stops_make_naming_it(target, variable):
    done = subprocess.run(["make", "-n", "-C", str(ROOT), target, f"{variable}="], capture_output=True, text=True)
    assert done.returncode != 0 and f"{variable} is empty" in done.stderr
    assert " -m reproduce " not in done.stdout


def test_the_baseline_targets_pass_odd_paths_and_share_the_base_models_folder():
    argv = _command("train-base", VOC=ODD + "/v", SBD=ODD + "/s", VGG16=ODD + "/vgg.caffemodel", RESULTS=ODD, FOLD="3")
    assert [_value(argv, f) for f in ("--voc", "--sbd", "--vgg16", "--out", "--publish", "--fold")] == \
        [ODD + "/v", ODD + "/s", ODD + "/vgg.caffemodel", ODD + "/train/base/fold3", ODD + "/train/base_models", "3"]
    argv = _command("reproduce-baselines", RESULTS=ODD, BASELINES="1nn")
    assert argv[argv.index("--table") + 1:argv.index("--table") + 3] == ["1", "2"]
    assert (_value(argv, "--baselines"), _value(argv, "--base-models")) == ("1nn", ODD + "/train/base_models")
    assert _value(_command("reproduce-baselines", BASE_MODELS=ODD), "--base-models") == ODD

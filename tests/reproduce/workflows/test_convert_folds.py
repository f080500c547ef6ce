"""`python -m reproduce convert-folds`: the authors' four fold models found by name, converted,
labelled with their fold, and skipped when already converted from the same source."""
import json
import shutil

import pytest

from helpers import GOLDEN
from reproduce.cli import main
from weights_convert.formats.caffemodel import write_caffemodel
from weights_convert.formats.safetensors_io import safetensors_metadata
from weights_convert.formats.weights_io import read_weights

CASE = GOLDEN / "oslsm_thin_1shot_120x200"


@pytest.fixture
def fold_dir(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for fold in range(4):
        shutil.copy(CASE / "weights.caffemodel", models / f"oslsm_fold{fold}_trained.caffemodel")
    (models / "notes.txt").write_text("not a model")
    return models


def folds_args(models, out, *extra):
    return ["convert-folds", "--models", str(models), "--out", str(out),
            "--prototxt", str(CASE / "net.prototxt"), *extra]


def test_convert_folds_converts_and_resumes(tmp_path, fold_dir, capsys):
    out = tmp_path / "results" / "models"
    assert main(folds_args(fold_dir, out)) == 0
    for fold in range(4):
        meta = safetensors_metadata(out / f"fold{fold}.safetensors")
        assert meta["model"] == "oslsm" and meta["fold"] == str(fold)
        assert json.loads((out / f"fold{fold}.report.json").read_text())["labels"] == {"fold": str(fold)}
    capsys.readouterr()
    assert main(folds_args(fold_dir, out)) == 0
    assert capsys.readouterr().out.count("skipped") == 4
    # A changed source (different sha256) is converted again.
    params = read_weights(fold_dir / "oslsm_fold1_trained.caffemodel")
    params["fc8f"][1] = params["fc8f"][1] + 1
    write_caffemodel(fold_dir / "oslsm_fold1_trained.caffemodel", params)
    assert main(folds_args(fold_dir, out)) == 0
    assert capsys.readouterr().out.count("skipped") == 3


def test_convert_folds_missing_fold_lists_files_and_says_where_models_come_from(tmp_path, fold_dir, capsys):
    (fold_dir / "oslsm_fold3_trained.caffemodel").unlink()
    assert main(folds_args(fold_dir, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "fold 3: no file with 'fold3' in its name" in err
    assert "oslsm_fold0_trained.caffemodel" in err and "lzzcd001/OSLSM" in err and "data/models" in err
    assert not (tmp_path / "out").exists()
    # An explicit --fold3 fills the gap.
    extra = fold_dir.parent / "other.caffemodel"
    shutil.copy(CASE / "weights.caffemodel", extra)
    assert main(folds_args(fold_dir, tmp_path / "out", "--fold3", str(extra))) == 0


def test_convert_folds_ambiguity_is_an_error(tmp_path, fold_dir, capsys):
    shutil.copy(CASE / "weights.caffemodel", fold_dir / "fold2_copy.caffemodel")
    assert main(folds_args(fold_dir, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "fold 2: 2 candidates (fold2_copy.caffemodel, oslsm_fold2_trained.caffemodel)" in err


def test_convert_folds_without_models_dir(tmp_path, capsys):
    assert main(["convert-folds", "--models", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "lzzcd001/OSLSM" in err

"""What keys cached features and run records: the files the feature and run code import, found
in the source. Edited on a copy of the packages: every file on the feature path moves the cache
key, every file on the scoring path moves the run record, and a file off both moves neither."""
import shutil
from pathlib import Path

import pytest

from helpers import ROOT
from reproduce.evaluation.provenance import (FEATURE_CODE, RUN_CODE, code_record, code_version, describe_changes,
                                             record_digest, source_digests)



@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    for package in ("weights_convert", "reproduce"):
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def keys(root: Path) -> tuple[str, str]:
    return code_version("cpu", root=root), record_digest(code_record("cpu", root=root))


def edited(root: Path, relative: str):
    """Both keys while `relative` carries one more comment line."""
    path = root / relative
    original = path.read_bytes()
    path.write_bytes(original + b"\n# edited\n")
    try:
        return keys(root)
    finally:
        path.write_bytes(original)


def test_the_paths_hold_the_modules_that_moved_out_of_the_old_lists(copy):
    feature, run = source_digests(FEATURE_CODE, copy), source_digests(RUN_CODE, copy)
    assert {"weights_convert/layers/frame.py", "weights_convert/layers/im2col.py", "weights_convert/oslsm/model.py",
            "reproduce/data/resize2017.py", "reproduce/__init__.py"} <= set(feature)
    assert {"reproduce/evaluation/protocols/hsnet.py", "reproduce/evaluation/protocols/modern.py", "reproduce/evaluation/hsnet_scoring.py", "reproduce/data/hsnet.py",
            "reproduce/evaluation/scoring.py"} <= set(run) - set(feature)
    assert set(feature) <= set(run)


def test_every_file_on_the_feature_path_changes_the_cache_key(copy):
    base = keys(copy)
    for relative in source_digests(FEATURE_CODE, copy):
        feature, run = edited(copy, relative)
        assert feature != base[0] and run != base[1], relative
    assert keys(copy) == base


def test_scoring_files_change_the_run_record_but_not_the_cache_key(copy):
    base = keys(copy)
    scoring = sorted(set(source_digests(RUN_CODE, copy)) - set(source_digests(FEATURE_CODE, copy)))
    assert scoring
    for relative in scoring:
        feature, run = edited(copy, relative)
        assert feature == base[0] and run != base[1], relative


@pytest.mark.parametrize("relative", ["reproduce/presentation/tables.py", "weights_convert/train/trainer.py",
                                      "reproduce/commands/demo.py", "weights_convert/oslsm/surgery.py"])
def test_files_off_both_paths_change_nothing(copy, relative):
    assert edited(copy, relative) == keys(copy)


def test_a_new_module_imported_on_the_path_joins_the_key(copy):
    base = keys(copy)
    helper = copy / "weights_convert" / "layers" / "new_helper.py"
    frame = copy / "weights_convert" / "layers" / "frame.py"
    original = frame.read_bytes()
    helper.write_text("VALUE = 1\n")
    frame.write_bytes(original + b"\nfrom weights_convert.layers import new_helper  # noqa\n")
    try:
        assert "weights_convert/layers/new_helper.py" in source_digests(FEATURE_CODE, copy)
        with_helper = keys(copy)
        helper.write_text("VALUE = 2\n")
        assert keys(copy)[0] not in (base[0], with_helper[0])
    finally:
        frame.write_bytes(original)
        helper.unlink()


def test_a_record_made_under_the_old_list_is_refused_in_words(copy):
    """A run folder written with the hand-kept list lacked frame.py: the new record names it."""
    new = code_record("cpu", root=copy)
    old = dict(new, sources={k: v for k, v in new["sources"].items() if not k.startswith("weights_convert/layers/")})
    changes = describe_changes(old, new)
    assert any(c.startswith("source files added: ") and "weights_convert/layers/frame.py" in c for c in changes)

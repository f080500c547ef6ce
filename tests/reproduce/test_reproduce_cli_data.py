"""`python -m reproduce episodes` / `inputs` on the golden set, and bad data sets."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reproduce.cli import main
from reproduce.data.synthetic_voc import make_synthetic_voc

from helpers import GOLDEN

EPISODES = GOLDEN / "episodes"
VOC = EPISODES / "VOC2012"
GOLDEN_LISTS = json.loads((EPISODES / "episodes.json").read_text())["episodes"]


def snapshot(root: Path) -> dict:
    out = {".": root.stat().st_mtime_ns}
    for p in root.rglob("*"):
        st = p.stat()
        out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cli-cache"))


@pytest.fixture(scope="module")
def small_voc(tmp_path_factory):
    """A valid synthetic set to break in copies."""
    root = tmp_path_factory.mktemp("small") / "VOC2012"
    make_synthetic_voc(root, n_images=40, seed=11)
    return root


def broken_copy(small_voc, tmp_path):
    root = tmp_path / "VOC2012"
    shutil.copytree(small_voc, root)
    return root


def first_query(capsys, root, tmp_path, episodes):
    """A fold-0 1-shot episode file of the (intact) set, and its first query, to break next."""
    efile = tmp_path / "e.json"
    assert run_cli(capsys, "episodes", "--voc", root, "--fold", 0, "--shots", 1, "--episodes", episodes,
                   "--out", efile, "--no-cache")[0] == 0
    return efile, json.loads(efile.read_text())["episodes"][0]["query"]


def run_cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("fold,shots", [(2, 1), (3, 5)])
def test_episodes_command_writes_the_original_list(capsys, tmp_path, cache, fold, shots):
    before = snapshot(VOC)
    out = tmp_path / "e.json"
    rc, stdout, _ = run_cli(capsys, "episodes", "--voc", VOC, "--fold", fold, "--shots", shots,
                            "--out", out, "--cache-dir", cache)
    assert rc == 0
    doc = json.loads(out.read_text())
    golden = GOLDEN_LISTS[f"fold{fold}_{shots}shot"]
    assert doc["episodes"] == golden["list"] and doc["n_items"] == golden["n_items"]
    assert (doc["fold"], doc["shots"]) == (fold, shots)
    assert f"n_items {golden['n_items']}" in stdout and f"sha256 {doc['sha256']}" in stdout
    assert snapshot(VOC) == before


def test_inputs_command_equals_golden_with_and_without_episode_file(capsys, tmp_path, cache):
    before = snapshot(VOC)
    out = tmp_path / "in.npz"
    rc, _, _ = run_cli(capsys, "inputs", "--voc", VOC, "--fold", 0, "--shots", 1, "--episodes", 2,
                       "--out", out, "--cache-dir", cache)
    assert rc == 0
    golden = np.load(EPISODES / "inputs_fold0_1shot.npz")
    got = np.load(out)
    assert sorted(got.files) == sorted(golden.files)
    assert max(float(np.abs(got[k] - golden[k]).max()) for k in golden.files) == 0.0

    efile = tmp_path / "e.json"
    assert run_cli(capsys, "episodes", "--voc", VOC, "--fold", 1, "--shots", 5, "--out", efile,
                   "--cache-dir", cache)[0] == 0
    rc, _, _ = run_cli(capsys, "inputs", "--voc", VOC, "--fold", 1, "--shots", 5, "--episodes", 1,
                       "--episode-file", efile, "--out", tmp_path / "in5")
    assert rc == 0
    golden = np.load(EPISODES / "inputs_fold1_5shot.npz")
    got = np.load(tmp_path / "in5")  # no .npz appended: written through a file handle
    assert all(np.array_equal(got[k], golden[k]) for k in golden.files)
    assert snapshot(VOC) == before
    assert not list(tmp_path.glob(".*tmp*"))

    rc, _, err = run_cli(capsys, "inputs", "--voc", VOC, "--fold", 2, "--shots", 5, "--episodes", 1,
                         "--episode-file", efile, "--out", tmp_path / "x.npz")
    assert rc == 2 and "fold 1 5-shot" in err and not (tmp_path / "x.npz").exists()


def test_module_entry_point(tmp_path, cache):
    out = tmp_path / "e.json"
    proc = subprocess.run([sys.executable, "-m", "reproduce", "episodes", "--voc", str(VOC),
                           "--fold", "0", "--shots", "1", "--episodes", "10", "--out", str(out),
                           "--cache-dir", cache], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["episodes"] == GOLDEN_LISTS["fold0_1shot"]["list"][:10]


def test_wrong_layout(capsys, tmp_path):
    (tmp_path / "VOC2012" / "JPEGImages").mkdir(parents=True)
    rc, _, err = run_cli(capsys, "episodes", "--voc", tmp_path / "VOC2012", "--fold", 0,
                         "--shots", 1, "--out", tmp_path / "e.json", "--no-cache")
    assert rc == 2
    assert "SegmentationClass" in err and "expected" in err and "val.txt" in err
    assert not (tmp_path / "e.json").exists()
    # Pointed at the unpacked archive instead of the VOC2012 folder inside it: a hint.
    devkit = tmp_path / "VOCtrainval" / "VOCdevkit" / "VOC2012" / "JPEGImages"
    devkit.mkdir(parents=True)
    rc, _, err = run_cli(capsys, "episodes", "--voc", tmp_path / "VOCtrainval", "--fold", 0,
                         "--shots", 1, "--out", tmp_path / "e.json", "--no-cache")
    assert rc == 2 and f"did you mean {tmp_path / 'VOCtrainval' / 'VOCdevkit' / 'VOC2012'}?" in err


def test_missing_jpeg_names_the_file(capsys, small_voc, tmp_path, cache):
    root = broken_copy(small_voc, tmp_path)
    efile, query = first_query(capsys, root, tmp_path, 3)
    (root / "JPEGImages" / f"{query}.jpg").unlink()
    rc, _, err = run_cli(capsys, "inputs", "--voc", root, "--fold", 0, "--shots", 1, "--episodes", 1,
                         "--episode-file", efile, "--out", tmp_path / "in.npz")
    assert rc == 2 and f"{query}.jpg" in err and "missing" in err


def test_mask_value_outside_voc_range(capsys, small_voc, tmp_path):
    root = broken_copy(small_voc, tmp_path)
    name = (root / "ImageSets/Segmentation/val.txt").read_text().split()[5]
    path = root / "SegmentationClass" / f"{name}.png"
    with Image.open(path) as im:
        arr = np.array(im)
        palette = im.getpalette()
    arr[0, 0] = 7  # a valid class: fine
    png = Image.frombytes("P", (arr.shape[1], arr.shape[0]), arr.tobytes())
    png.putpalette(palette)
    png.save(path)
    assert run_cli(capsys, "episodes", "--voc", root, "--fold", 1, "--shots", 1, "--episodes", 3,
                   "--out", tmp_path / "ok.json", "--no-cache")[0] == 0
    arr[0, 0] = 42
    png = Image.frombytes("P", (arr.shape[1], arr.shape[0]), arr.tobytes())
    png.putpalette(palette)
    png.save(path)
    rc, _, err = run_cli(capsys, "episodes", "--voc", root, "--fold", 1, "--shots", 1,
                         "--out", tmp_path / "e.json", "--no-cache")
    assert rc == 2 and f"{name}.png" in err and "42" in err and "0..20 and 255" in err


@pytest.mark.parametrize("kind", ["jpg", "png"])
def test_corrupt_files_are_named(capsys, small_voc, tmp_path, kind):
    root = broken_copy(small_voc, tmp_path)
    efile, query = first_query(capsys, root, tmp_path, 2)
    folder = "JPEGImages" if kind == "jpg" else "SegmentationClass"
    path = root / folder / f"{query}.{kind}"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # truncated: the header parses, the data does not
    rc, _, err = run_cli(capsys, "inputs", "--voc", root, "--fold", 0, "--shots", 1, "--episodes", 1,
                         "--episode-file", efile, "--out", tmp_path / "in.npz")
    assert rc == 2 and str(path) in err
    path.write_bytes(b"not an image at all")
    rc, _, err = run_cli(capsys, "inputs", "--voc", root, "--fold", 0, "--shots", 1, "--episodes", 1,
                         "--episode-file", efile, "--out", tmp_path / "in.npz")
    assert rc == 2 and str(path) in err and "unreadable" in err
    assert not (tmp_path / "in.npz").exists()


def test_class_with_too_few_images_for_five_shots(capsys, small_voc, tmp_path):
    # 40 images: each class has two large objects, a few a third
    rc, _, err = run_cli(capsys, "episodes", "--voc", small_voc, "--fold", 0, "--shots", 5,
                         "--out", tmp_path / "e.json", "--no-cache")
    assert rc == 2 and "5-shot episodes need at least 6" in err
    assert re.search(r"class [1-5] \((aeroplane|bicycle|bird|boat|bottle)\) has only [1-5] usable", err)


def test_data_set_never_written_by_a_full_run(capsys, small_voc, tmp_path, monkeypatch):
    import reproduce.data.items

    before = snapshot(small_voc)
    env_cache = tmp_path / "c"
    monkeypatch.setenv("OSLSM_CACHE", str(env_cache))
    monkeypatch.setattr(reproduce.data.items, "_MEMO", {})  # an earlier test may have scanned this set
    assert run_cli(capsys, "inputs", "--voc", small_voc, "--fold", 3, "--shots", 1,
                   "--episodes", 2, "--out", tmp_path / "in.npz")[0] == 0
    assert snapshot(small_voc) == before
    assert list(env_cache.glob("items-*.json"))


@pytest.mark.parametrize("command", ["episodes", "inputs"])
def test_outputs_inside_the_data_set_and_zero_episodes_are_refused(capsys, small_voc, command):
    before = snapshot(small_voc)
    base = [command, "--voc", small_voc, "--fold", 0, "--shots", 1, "--no-cache"]
    rc, _, err = run_cli(capsys, *base, "--episodes", 1, "--out", small_voc / "x.out")
    assert rc == 2 and "output " in err and "lies inside the data set folder" in err
    rc, _, err = run_cli(capsys, *base, "--episodes", 0, "--out", small_voc.parent / "x.out")
    assert rc == 2 and "--episodes must be >= 1, got 0" in err
    assert snapshot(small_voc) == before and not (small_voc.parent / "x.out").exists()
    # Both problems at once, and nothing written.
    rc, _, err = run_cli(capsys, *base, "--episodes", -5, "--out", small_voc / "y.out")
    assert rc == 2 and "2 problems" in err and "got -5" in err and "lies inside the data set folder" in err
    assert snapshot(small_voc) == before

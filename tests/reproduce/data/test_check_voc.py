"""A user's VOC against the episode lists the ORIGINAL printed on the real VOC 2012 val set:
the shipped reference, a set built to hold exactly the reference's items (all 8 lists identical
through the `episodes` command), a tampered mask, a missing file, and the reference status that
every run records."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from helpers import REFERENCE, tree_digest
from reproduce.cli import main
from reproduce.data.episodes import Episode, load_episodes
from reproduce.data.reference_episodes import (VOC2012_VAL_IMAGES, first_difference, reference_episodes,
                                          reference_items, reference_status)
from reproduce.data.synthetic_voc import make_reference_voc
from reproduce.data.voc import VOCDataset

# A copy of ../shared/reference/real-voc-episodes (the original's print, provenance inside).
ORIGINAL = REFERENCE / "original-real-voc-episodes.json"


@pytest.fixture(scope="module")
def reference_voc(tmp_path_factory):
    root = make_reference_voc(tmp_path_factory.mktemp("refvoc") / "VOC2012")
    return root, tree_digest(root)


def test_shipped_reference_is_the_originals_print():
    original = json.loads(ORIGINAL.read_text())["episodes"]
    assert len(original) == 8
    for key, eps in original.items():
        fold, shots = int(key[4]), int(key.split("_")[1][0])
        assert [Episode(e["query"], e["cls"], e["supports"]) for e in eps] == list(reference_episodes(fold, shots))
    assert [len(reference_items(f)) for f in range(4)] == [347, 450, 725, 345]
    assert [len({n for n, _ in reference_items(f)}) for f in range(4)] == [346, 432, 587, 326]


def test_a_set_with_the_references_items_gives_all_8_lists_through_episodes(reference_voc, tmp_path):
    root, digest = reference_voc
    assert len(VOCDataset(root).names) == VOC2012_VAL_IMAGES
    for fold in range(4):
        for shots in (1, 5):
            out = tmp_path / f"f{fold}k{shots}.json"
            assert main(["episodes", "--voc", str(root), "--fold", str(fold), "--shots", str(shots),
                         "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]) == 0
            ours = load_episodes(out)
            assert ours.episodes == list(reference_episodes(fold, shots))
            assert ours.n_items == len(reference_items(fold))
    assert tree_digest(root) == digest


def test_check_voc_on_the_good_set(reference_voc, tmp_path, capsys):
    root, digest = reference_voc
    assert main(["check-voc", "--voc", str(root), "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:8] == [f"fold {f} {k}-shot: identical" for f in range(4) for k in (1, 5)]
    assert out[8] == "all 8 lists are the original's"
    assert tree_digest(root) == digest


def test_check_voc_names_the_item_a_changed_mask_moves(reference_voc, tmp_path, capsys):
    root = tmp_path / "VOC2012"
    shutil.copytree(reference_voc[0], root)
    # Shrink the fold-1 object of one image to a few pixels: the filter now drops that item.
    name, cls = sorted(reference_items(1))[5]
    path = root / "SegmentationClass" / f"{name}.png"
    with Image.open(path) as im:
        palette, mask = im.getpalette(), np.array(im)
    mask[mask == cls] = 0
    mask[20:23, 20:23] = cls
    png = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())
    png.putpalette(palette)
    png.save(path)
    # And give a background-only image an object of class 3 (fold 0) that the original never saw.
    extra = sorted(VOCDataset(root).names)[-1]
    path = root / "SegmentationClass" / f"{extra}.png"
    with Image.open(path) as im:
        mask = np.array(im)
    mask[10:100, 10:80] = 3
    png = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())
    png.putpalette(palette)
    png.save(path)

    assert main(["check-voc", "--voc", str(root), "--cache-dir", str(tmp_path / "cache")]) == 1
    out = capsys.readouterr().out
    for fold in (0, 1):
        assert f"fold {fold} 1-shot: differs at episode" in out and f"fold {fold} 5-shot: differs at episode" in out
    assert "fold 2 1-shot: identical" in out and "fold 3 5-shot: identical" in out
    assert f"fold 1: kept by the original, dropped here by the small-object filter: {name} class {cls}" in out
    assert f"fold 0: kept here, dropped by the original (or not in its masks): {extra} class 3 (bird)" in out
    assert "another VOC release" in out and "does not give the original's episodes" in out


def test_check_voc_lists_every_layout_problem(reference_voc, tmp_path, capsys):
    root = tmp_path / "VOC2012"
    shutil.copytree(reference_voc[0], root)
    names = VOCDataset(root).names
    (root / "JPEGImages" / f"{names[3]}.jpg").unlink()
    Image.new("RGB", (10, 10)).save(root / "SegmentationClass" / f"{names[7]}.png")
    Image.new("L", (5, 5)).save(root / "SegmentationClass" / f"{names[9]}.png")
    assert main(["check-voc", "--voc", str(root), "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert "3 problem(s)" in err
    assert f"missing: {root / 'JPEGImages' / names[3]}.jpg" in err
    assert f"{names[7]}.png: expected a palette" in err
    assert f"{names[9]}.png is 5x5 but" in err


def test_reference_status_and_first_difference():
    ref = list(reference_episodes(2, 5))
    assert reference_status(ref[:10], 2, 5, VOC2012_VAL_IMAGES) == "identical"
    assert reference_status(ref + ref[:3], 2, 5, VOC2012_VAL_IMAGES) == "identical"  # re-seeded after 1000
    changed = ref[:4] + [Episode(ref[4].query, ref[4].cls, list(reversed(ref[4].supports)))]
    assert first_difference(changed, 2, 5) == 4
    assert reference_status(changed, 2, 5, VOC2012_VAL_IMAGES) == "differs at episode 4"
    assert reference_status(ref, 2, 5, 300) == "not applicable (300 val images, VOC 2012 has 1449)"
    assert reference_status(ref, 2, 3, VOC2012_VAL_IMAGES).startswith("not applicable")


def test_every_run_records_whether_its_episodes_are_the_originals(reference_voc, tmp_path, capsys):
    from reproduce.data.episodes import episodes_to_json
    from reproduce.evaluation.evaluate import evaluate
    from reproduce.presentation.tables import build_table, table_markdown
    from weights_convert.netspec import write_net
    from weights_convert.oslsm import OSLSMWidths
    from weights_convert.oslsm.random_init import random_oslsm_params, write_oslsm_caffemodel
    from weights_convert.oslsm.spec import oslsm_deploy_net

    root = reference_voc[0]
    net = oslsm_deploy_net(1, OSLSMWidths.THIN)
    write_net(net, tmp_path / "deploy.prototxt")
    params = random_oslsm_params(OSLSMWidths.THIN, seed=1)
    write_oslsm_caffemodel(tmp_path / "m.caffemodel", params)
    common = dict(voc=root, weights=tmp_path / "m.caffemodel", prototxt=tmp_path / "deploy.prototxt", shots=1,
                  n_episodes=3, progress=False, cache_dir=tmp_path / "cache")
    evaluate(fold=0, out_dir=tmp_path / "same", **common)
    err = capsys.readouterr().err
    assert "not the ones the original printed" not in err
    # 3 episodes leave some of the fold's 5 test classes untested: said, with their names.
    assert "WARNING: fold 0: no episode tests class(es)" in err and "their IoU counts as 0" in err
    ref = list(reference_episodes(1, 1))
    swapped = [ref[1], ref[0], ref[2]]
    episodes_to_json(tmp_path / "swapped.json", swapped, 1, 1, len(reference_items(1)))
    evaluate(fold=1, out_dir=tmp_path / "swapped", episodes_file=tmp_path / "swapped.json", **common)
    assert "not the ones the original printed on VOC 2012 val (differs at episode 0)" in capsys.readouterr().err
    for run, status in (("same", "identical"), ("swapped", "differs at episode 0")):
        for name in ("manifest.json", "summary.json"):
            assert json.loads((tmp_path / run / name).read_text())["reference"] == status
    t = build_table(1, [tmp_path / "same", tmp_path / "swapped"])
    md = table_markdown(t)
    assert "fold0:" in md and "VOC 2012: identical)" in md and "VOC 2012: differs at episode 0)" in md

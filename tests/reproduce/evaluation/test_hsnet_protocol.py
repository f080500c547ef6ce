"""HSNet's PASCAL-5i protocol, first part: its test episodes drawn from its split files exactly as
its own code draws them (golden: HSNet's data/pascal.py run unmodified, fold 0), through the CLI,
and which items its fold lists and the original's differ by."""
import json

import pytest

from reproduce.cli import main
from reproduce.data.hsnet import hsnet_items, item_differences
from helpers import REFERENCE

GOLDEN = json.loads((REFERENCE / "hsnet" / "hsnet_test_episodes_fold0.json").read_text())


@pytest.mark.parametrize("shots", [1, 5])
def test_the_cli_draws_hsnets_own_fold0_episodes(shots, tmp_path, capsys):
    out = tmp_path / "episodes.json"
    assert main(["episodes", "--protocol", "hsnet", "--fold", "0", "--shots", str(shots), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert (doc["fold"], doc["shots"], doc["n_items"]) == (0, shots, 346)
    assert doc["episodes"] == GOLDEN["episodes"][f"fold0_{shots}shot"]  # all 1000, in order
    assert "sha256" in capsys.readouterr().out


def test_split_files_are_hsnets():
    assert [len(hsnet_items(f)) for f in range(4)] == [346, 451, 725, 346]
    assert hsnet_items(0)[:2] == [("2007_000033", 1), ("2007_000061", 4)]


def test_the_two_protocols_fold_lists_differ_by_five_items():
    """Computed from the two references (HSNet's split files, the original's lists on VOC 2012)."""
    assert [item_differences(f) for f in range(4)] == [
        {"only_oslsm": [("2010_001246", 2), ("2010_002792", 2)], "only_hsnet": [("2009_004509", 3)]},
        {"only_oslsm": [], "only_hsnet": [("2011_002509", 9)]},
        {"only_oslsm": [], "only_hsnet": []},
        {"only_oslsm": [], "only_hsnet": [("2009_002571", 16)]},
    ]


def test_the_original_protocol_still_needs_a_voc_folder(tmp_path, capsys):
    assert main(["episodes", "--fold", "0", "--shots", "1", "--out", str(tmp_path / "e.json")]) == 2
    assert "--voc is needed" in capsys.readouterr().err


# ---------------------------------------------------------------- evaluation under HSNet's protocol
N_EPISODES = 6  # fold 0's and fold 2's then hold episodes predicted partly foreground


@pytest.fixture(scope="module")
def hsnet_setup(tmp_path_factory):
    """The golden synthetic VOC set, its masks as a SegmentationClassAug outside it (grey PNGs, with
    more pixels set to 255 to ignore), HSNet-style split files of it, and four thin fold models."""
    from PIL import Image

    from helpers import copy_golden_voc, tree_digest, write_mixed_thin_caffemodel
    from reproduce.data.hsnet import write_split_files
    from reproduce.data.voc import VOCDataset
    from weights_convert.netspec import write_net
    from weights_convert.oslsm import OSLSMWidths
    from weights_convert.oslsm.spec import oslsm_deploy_net

    tmp = tmp_path_factory.mktemp("hsnet")
    voc = copy_golden_voc(tmp)
    aug = tmp / "SegmentationClassAug"
    aug.mkdir()
    dataset = VOCDataset(voc)
    for i, name in enumerate(dataset.names):
        mask = dataset.read_mask(name).copy()
        mask[i % 7::9, :] = 255  # stripes of ignored pixels across objects and background
        Image.fromarray(mask).save(aug / f"{name}.png")
    splits = write_split_files(VOCDataset(voc, masks=aug), tmp / "splits")
    prototxt = tmp / "deploy_1shot_thin.prototxt"
    write_net(oslsm_deploy_net(1, OSLSMWidths.THIN), prototxt)
    models = tmp / "models"
    for fold in range(4):
        write_mixed_thin_caffemodel(models / f"OSLSM_fold{fold}_iter_20000.caffemodel", seed=100 + fold)
    return {"tmp": tmp, "voc": voc, "aug": aug, "splits": splits, "prototxt": prototxt, "models": models,
            "digest": tree_digest(voc)}


def _hsnet_table_run(s, out, *extra):
    return main(["table-run", "--table", "1", "2", "--protocol", "hsnet", "--voc", str(s["voc"]),
                 "--masks", str(s["aug"]), "--hsnet-splits", str(s["splits"]), "--models", str(s["models"]),
                 "--prototxt", str(s["prototxt"]), "--episodes", str(N_EPISODES), "--out", str(out),
                 "--no-progress", *extra])


def _hsnet_reference_rows(s, run, model):
    """Each episode again, outside the pipeline: the module's forward on the pre-processed inputs,
    then HSNet's own areas (test_hsnet_scoring.hsnet_areas); and HSNet's AverageMeter over them."""
    import numpy as np
    import torch

    from reproduce.data.dataset_inputs import DatasetInputs
    from reproduce.data.voc import VOCDataset
    from test_hsnet_scoring import hsnet_areas

    summary = json.loads((run / "summary.json").read_text())
    episodes = json.loads((run / "episodes.json").read_text())["episodes"]
    inputs = DatasetInputs(VOCDataset(s["voc"], masks=s["aug"]))
    inter_buf, union_buf = torch.zeros(2, 20), torch.zeros(2, 20)
    rows = []
    for e in episodes:
        pairs = [inputs.support_pair(name, e["cls"]) for name in e["supports"]]
        with torch.inference_mode():
            w, b = model.condition(torch.from_numpy(np.stack([p[0] for p in pairs])),
                                   torch.from_numpy(np.stack([p[1] for p in pairs])))
            logits = model.head(model.query_features(torch.from_numpy(inputs.query_image(e["query"]))), w, b,
                                (500, 500))
        score = torch.sigmoid(logits)[0, 0].numpy()
        inter, union = hsnet_areas(score, inputs.dataset.read_mask(e["query"]), e["cls"], summary.get("hsnet_size"))
        rows.append((int(inter[1]), int(inter[0]), int(union[1]), int(union[0])))
        inter_buf.index_add_(1, torch.tensor([e["cls"] - 1]), torch.tensor(inter).float()[:, None])
        union_buf.index_add_(1, torch.tensor([e["cls"] - 1]), torch.tensor(union).float()[:, None])
    interest = torch.tensor(summary["test_classes"]) - 1
    iou = inter_buf / torch.max(torch.stack([union_buf, torch.ones_like(union_buf)]), dim=0)[0]
    miou = iou.index_select(1, interest)[1].mean()
    fb_iou = (inter_buf.index_select(1, interest).sum(dim=1) / union_buf.index_select(1, interest).sum(dim=1)).mean()
    return rows, float(miou), float(fb_iou)


def test_table_run_under_hsnets_protocol_scores_as_hsnet(hsnet_setup, capsys):
    import csv

    from reproduce.data.hsnet import hsnet_episodes
    from weights_convert.oslsm import load_oslsm

    s = hsnet_setup
    out = s["tmp"] / "results"
    assert _hsnet_table_run(s, out) == 0
    printed = capsys.readouterr().out
    assert "under HSNet's protocol" in printed and "OSLSM paper (its own protocol)" in printed
    for table, shots in ((1, 1), (2, 5)):
        stem = f"table{table}_{shots}shot_hsnet"
        markdown = (out / f"{stem}.md").read_text()
        assert "ours - paper" not in markdown and "| OSLSM paper (its own protocol) |" in markdown
        header = next(csv.reader((out / f"{stem}.csv").open()))
        assert "difference" not in header and "paper_own_protocol_miou" in header
        assert (out / f"{stem}_report" / "index.html").is_file()
        scored = []
        for fold in range(4):
            run = out / "runs_hsnet" / f"table{table}_fold{fold}"
            summary = json.loads((run / "summary.json").read_text())
            manifest = json.loads((run / "manifest.json").read_text())
            assert summary["protocol"] == manifest["protocol"] == "hsnet"
            assert manifest["hsnet_size"] is None and "not HSNet's" in manifest["reference"]
            assert not (run / "iou_results.txt").exists()  # test.py's file belongs to test.py's scoring
            ran = json.loads((run / "episodes.json").read_text())["episodes"]
            assert ran == [e.as_dict() for e in hsnet_episodes(fold, shots, N_EPISODES, s["splits"])]
            model = load_oslsm(out / "models" / f"fold{fold}.safetensors")
            want, miou, fb_iou = _hsnet_reference_rows(s, run, model)
            got = [[int(v) for v in line.split(",")[3:7]] for line in (run / "all_results.csv").read_text().splitlines()]
            assert [(tp, tn, tp + fp + fn, tn + fn + fp) for tp, tn, fp, fn in got] == want
            assert summary["miou"] == pytest.approx(miou, rel=1e-6) and summary["fb_iou"] == pytest.approx(fb_iou, rel=1e-6)
            scored += got
        assert min(sum(counts) for counts in zip(*scored)) > 0  # tp, tn, fp and fn all occur: the check has teeth
    from helpers import tree_digest

    assert tree_digest(s["voc"]) == s["digest"]


def test_hsnets_400_grid_is_its_own_measure(hsnet_setup, capsys):
    s = hsnet_setup
    out = s["tmp"] / "results400"
    assert _hsnet_table_run(s, out, "--hsnet-size", "40", "--folds", "0") == 0
    run = out / "runs_hsnet40" / "table1_fold0"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["hsnet_size"] == 40
    from weights_convert.oslsm import load_oslsm

    want, miou, _ = _hsnet_reference_rows(s, run, load_oslsm(out / "models" / "fold0.safetensors"))
    got = [[int(v) for v in line.split(",")[3:7]] for line in (run / "all_results.csv").read_text().splitlines()]
    assert [(tp, tn, tp + fp + fn, tn + fn + fp) for tp, tn, fp, fn in got] == want
    assert all(tp + tn + fp + fn <= 40 * 40 for tp, tn, fp, fn in got)
    assert "scored at 40x40" in (out / "table1_1shot_hsnet40.md").read_text()
    # One table never mixes the two grids.
    from reproduce.errors import ReproduceError
    from reproduce.presentation.tables import build_table

    with pytest.raises(ReproduceError, match="mix scoring protocols"):
        build_table(1, [run, s["tmp"] / "results" / "runs_hsnet" / "table1_fold1"])


def test_hsnet_options_are_refused_elsewhere_and_missing_masks_named(hsnet_setup, tmp_path, capsys):
    s = hsnet_setup
    base = ["table-run", "--table", "1", "--voc", str(s["voc"]), "--models", str(s["models"]),
            "--prototxt", str(s["prototxt"]), "--out", str(tmp_path / "r"), "--no-progress"]
    assert main([*base, "--hsnet-size", "400"]) == 2
    assert "hsnet only" in capsys.readouterr().err
    assert main([*base, "--protocol", "hsnet"]) == 2  # the golden set has no SegmentationClassAug
    err = capsys.readouterr().err
    assert "SegmentationClassAug" in err and "no such folder" in err
    assert not (tmp_path / "r").exists()  # refused before any conversion
    assert main(["check-voc", "--voc", str(s["voc"]), "--masks", str(s["aug"])]) == 2
    assert "--masks: option(s) of --protocol hsnet only" in capsys.readouterr().err


def test_check_voc_under_hsnets_protocol(hsnet_setup, tmp_path, capsys):
    from PIL import Image

    s = hsnet_setup
    assert main(["check-voc", "--protocol", "hsnet", "--voc", str(s["voc"]), "--masks", str(s["aug"]),
                 "--hsnet-splits", str(s["splits"])]) == 0
    printed = capsys.readouterr().out
    assert "fold 0: 101 items (aeroplane" in printed and "has its image and its mask" in printed
    # A listed item whose mask lacks the class, and one whose mask is missing: both named.
    import shutil

    import numpy as np

    broken = tmp_path / "aug"
    shutil.copytree(s["aug"], broken)
    name, cls = (s["splits"] / "fold0.txt").read_text().split()[0].rsplit("__", 1)
    mask = np.array(Image.open(broken / f"{name}.png"))
    Image.fromarray(np.where(mask == int(cls), 0, mask).astype(np.uint8)).save(broken / f"{name}.png")
    second = next(line.rsplit("__", 1)[0] for line in (s["splits"] / "fold1.txt").read_text().split()
                  if not line.startswith(name))
    (broken / f"{second}.png").unlink()
    assert main(["check-voc", "--protocol", "hsnet", "--voc", str(s["voc"]), "--masks", str(broken),
                 "--hsnet-splits", str(s["splits"])]) == 2
    err = capsys.readouterr().err
    assert f"{name}.png holds no pixel of class {int(cls)}" in err and f"{second}.png" in err

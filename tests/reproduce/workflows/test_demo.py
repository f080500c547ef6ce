"""The demo as `make demo` runs it: synthetic VOC (test and training splits), four thin OSLSM start
models, conversion, 1- and 5-shot evaluation of all folds, training of fc8f with the kit's Caffe
SGD, the same evaluation of the trained models, and both tables with the start beside the trained."""
import csv
import json

import numpy as np
import pytest
from PIL import Image
import torch

from reproduce.cli import main
from reproduce.training.demo_model import DEMO_WIDTHS, demo_params
from weights_convert.formats.caffemodel import read_caffemodel
from weights_convert.formats.prototxt import load_net
from weights_convert.oslsm.loading import oslsm_from_params
from weights_convert.oslsm.spec import check_oslsm_net

TABLES = ((1, "table1_1shot", 1), (2, "table2_5shot", 5))
MIN_GAIN = 10.0  # mIoU points the trained model must gain over its start on every fold


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The default demo, exactly what `make demo` runs (about 100 s on 2 cores)."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    assert main(["demo", "--out", str(out), "--no-progress"]) == 0
    return out


def _summary(run_dir) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_the_trained_models_beat_their_start_on_every_fold(demo):
    for table, stem, shots in TABLES:
        rows = list(csv.DictReader((demo / f"{stem}.csv").open()))
        for fold in range(4):
            trained = _summary(demo / "runs" / f"table{table}_fold{fold}")
            start = _summary(demo / "runs_before_training" / f"table{table}_fold{fold}")
            assert (trained["fold"], trained["shots"], trained["n_episodes"]) == (fold, shots, 100)
            assert float(rows[fold]["ours_miou"]) == pytest.approx(100 * trained["miou"], abs=1e-4)
            assert float(rows[fold]["baseline_miou"]) == pytest.approx(100 * start["miou"], abs=1e-4)
            assert 100 * (trained["miou"] - start["miou"]) >= MIN_GAIN, (stem, fold, trained["miou"], start["miou"])
        markdown = (demo / f"{stem}.md").read_text()
        assert "| before training |" in markdown and "DEMO" in markdown


def test_training_changed_fc8f_alone_and_lowered_the_loss(demo):
    for fold in range(4):
        start = read_caffemodel(demo / "work" / "caffemodels" / f"oslsm_demo_fold{fold}.caffemodel")
        trained = read_caffemodel(demo / "train" / f"fold{fold}" / "snapshot_iter_200.caffemodel")
        changed = {name for name, blobs in start.items()
                   if not all(np.array_equal(a, b) for a, b in zip(blobs, trained[name]))}
        assert changed == {"fc8f"}, fold
        assert np.array_equal(start["fc8f"][1], trained["fc8f"][1])  # its bias is frozen too
        losses = [float(r["loss"]) for r in csv.DictReader((demo / "train" / f"fold{fold}" / "losses.csv").open())]
        assert len(losses) == 200
        assert np.mean(losses[-50:]) < 0.8 * np.mean(losses[:50]), fold
        assert (demo / "train" / f"fold{fold}" / "loss_curve.png").is_file()
    learnable = {(layer.name, i) for layer in load_net(demo / "work" / "train_demo.prototxt").layer
                 for i, p in enumerate(layer.param) if p.lr_mult != 0}
    assert learnable == {("fc8f", 0)}


def test_demo_outputs(demo):
    work = demo / "work"
    # The start models have the full upstream topology at the demo's widths.
    shots, widths, query_hw = check_oslsm_net(load_net(work / "deploy_1shot_demo.prototxt"))
    assert (shots, widths, query_hw) == (1, DEMO_WIDTHS, (500, 500))
    for table, stem, _ in TABLES:
        for ext in ("md", "csv", "png"):
            assert (demo / f"{stem}.{ext}").is_file()
        index = (demo / f"{stem}_report" / "index.html").read_text()
        assert all(f"table{table}_fold{fold}.html" in index for fold in range(4)) and "DEMO" in index
        assert (demo / f"{stem}_report" / f"table{table}_fold3" / "worst.png").is_file()
    # The 1- and 5-shot runs of a fold go in one pass: each distinct query image is computed once,
    # before training; the trained model (the same query branch) reads them back from the cache.
    queries = {e["query"] for e in json.loads((demo / "runs" / "table2_fold0" / "episodes.json").read_text())["episodes"]}
    start, trained = (json.loads((demo / d / "table1_fold0" / "timings.json").read_text())
                      for d in ("runs_before_training", "runs"))
    assert start["runs_in_pass"] == trained["runs_in_pass"] == 2
    assert start["forwards"]["query"] == len(queries) and trained["forwards"]["query"] == 0
    assert trained["cache_stats"]["query_disk_hits"] == len(queries)


def test_the_demo_runs_hsnets_protocol_once(demo):
    """Table 1 of the trained models again under protocol hsnet: HSNet's episode draw on split files
    of the synthetic set, its SegmentationClassAug masks, its table labelled as such."""
    from reproduce.data.hsnet import hsnet_episodes

    markdown = (demo / "table1_1shot_hsnet.md").read_text()
    assert "under HSNet's protocol" in markdown and "| OSLSM paper (its own protocol) |" in markdown
    assert "ours - paper" not in markdown
    for fold in range(4):
        run = demo / "runs_hsnet" / f"table1_fold{fold}"
        summary = _summary(run)
        assert summary["protocol"] == "hsnet" and summary["n_episodes"] == 100
        episodes = json.loads((run / "episodes.json").read_text())["episodes"]
        assert episodes == [e.as_dict() for e in hsnet_episodes(fold, 1, 100, demo / "work" / "hsnet_splits")]
        sources = json.loads((run / "sources.json").read_text())
        assert sources["masks"].endswith("VOC2012/SegmentationClassAug")
        # Scored at the image's size: an episode's counts cover its image's pixels but the ignored (255) ones.
        voc = demo / "work" / "VOC2012"
        scored = [int(np.prod(Image.open(voc / "JPEGImages" / f"{e['query']}.jpg").size)) -
                  int((np.array(Image.open(voc / "SegmentationClassAug" / f"{e['query']}.png")) == 255).sum())
                  for e in episodes]
        rows = [line.split(",") for line in (run / "all_results.csv").read_text().splitlines()]
        assert [sum(int(v) for v in row[3:7]) for row in rows] == scored
    assert (demo / "table1_1shot_hsnet_report" / "index.html").is_file()


def test_the_demo_shows_the_papers_baselines_on_table_1(demo):
    """Thin base nets trained for a few iterations (their loss falls), each baseline a row of Table 1
    on OSLSM's very episodes, the claims measured below it; Table 2 has no baseline rows."""
    rows = list(csv.DictReader((demo / "table1_1shot.csv").open()))
    for fold in range(4):
        losses = [float(line.split(",")[1]) for line in
                  (demo / "base" / f"fold{fold}" / "run" / "losses.csv").read_text().splitlines()[1:]]
        assert len(losses) == 40 and np.mean(losses[-10:]) < np.mean(losses[:10])
        oslsm = _summary(demo / "runs" / f"table1_fold{fold}")
        for method, column in (("1nn", "1_nn_miou"), ("logreg", "logreg_miou"), ("finetune", "fine_tuning_miou")):
            summary = _summary(demo / "runs" / method / f"table1_fold{fold}")
            assert summary["episodes_sha256"] == oslsm["episodes_sha256"] and summary["n_episodes"] == 100
            assert float(rows[fold][column]) == pytest.approx(100 * summary["miou"], abs=1e-4)
        assert _summary(demo / "runs" / "finetune" / f"table1_fold{fold}")["baseline"]["iterations"] == 5
    markdown = (demo / "table1_1shot.md").read_text()
    assert "| LogReg (re-implemented from the paper's description) |" in markdown
    assert "## The abstract's claims, measured on these episodes" in markdown and "x OSLSM's)" in markdown
    assert "re-implemented" not in (demo / "table2_5shot.md").read_text()


def test_another_recipe_in_the_same_folder_starts_afresh(tmp_path):
    out = tmp_path / "demo"
    small = ["demo", "--out", str(out), "--images", "120", "--train-images", "40", "--no-progress"]
    assert main(small + ["--episodes", "4", "--train-iters", "2"]) == 0
    assert main(small + ["--episodes", "3", "--train-iters", "3"]) == 0
    assert _summary(out / "runs" / "table1_fold0")["n_episodes"] == 3
    assert _summary(out / "runs_before_training" / "table2_fold3")["n_episodes"] == 3
    assert sorted(p.name for p in (out / "train" / "fold0").glob("*.caffemodel")) == ["snapshot_iter_3.caffemodel"]


def test_the_demo_trunk_carries_colour_to_fc7():
    """fc7s: the query's colour parts where the image is, zero past it (the last row and column of
    cells lie in conv1_1s's padding of 121); fc7f: the masked
    support's colour parts times the share of cells its object covers."""
    model = oslsm_from_params(demo_params(seed=0))
    colour = torch.tensor([32.0, -16.0, 8.0]).reshape(1, 3, 1, 1)  # after mean subtraction
    parts = torch.tensor([0.5, 0, 0, 0.25, 0.125, 0, 1])            # +/- of each channel / 64, indicator
    with torch.no_grad():
        fc7s = model.query_features(colour.expand(1, 3, 200, 200).contiguous())[0]
        h, w = fc7s.shape[1:]
        assert (h, w) == (8, 8)
        assert all(torch.equal(fc7s[:, y, x], parts) for y in range(7) for x in range(7))
        assert not fc7s[:, 7, :].any() and not fc7s[:, :, 7].any()
        image = colour.expand(2, 3, 224, 224).contiguous()
        mask = torch.ones(2, 1, 224, 224)
        mask[1, :, :, 112:] = 0
        taps = {}
        model.condition(image, mask, taps)
        full, half = taps["fc7f"]
    assert torch.allclose(full, parts, atol=1e-6)
    assert 0.3 < float(half[6]) < 0.7 and torch.allclose(half, half[6] * parts, atol=1e-6)


def test_demo_states_its_minimum_and_reports_every_problem(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--images", "10", "--train-images", "3", "--episodes", "0",
                 "--train-iters", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "4 problems" in err and "--images must be >= 120" in err and "episodes must be >= 1, got 0" in err
    assert "--train-images must be >= 40" in err and "--train-iters must be >= 1, got 0" in err
    assert not out.exists()


def test_demo_never_touches_a_folder_it_did_not_make(tmp_path):
    """A real process pointed at a folder of real results: refused, every file unchanged."""
    import subprocess
    import sys

    from helpers import tree_digest

    out = tmp_path / "results"
    (out / "runs" / "table1_fold0").mkdir(parents=True)
    (out / "runs" / "table1_fold0" / "summary.json").write_text('{"miou": 0.41}')
    (out / "table1_1shot.md").write_text("my real table\n")
    before = tree_digest(out)
    done = subprocess.run([sys.executable, "-m", "reproduce", "demo", "--out", str(out), "--no-progress"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "holds files the demo did not make (runs, table1_1shot.md)" in done.stderr
    assert tree_digest(out) == before

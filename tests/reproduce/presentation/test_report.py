"""Looking at results: episode panels from saved or recomputed predictions (checked against the
run's own counts), the HTML report (every linked page and image exists, the numbers are the
run's), refusals, and the loss curve's style."""
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import GOLDEN, ROOT, copy_golden_voc, tree_digest, write_mixed_thin_caffemodel
from reproduce.cli import main
from reproduce.data.episodes import Episode, episodes_to_json
from reproduce.errors import ReproduceError
from reproduce.evaluation.evaluate import evaluate
from reproduce.presentation.figure import recompute_scores, saved_score
from reproduce.presentation.finished_run import episode_indices, open_run
from reproduce.data.voc import VOCDataset
from weights_convert.netspec import write_net
from weights_convert.oslsm import OSLSMWidths
from weights_convert.oslsm.spec import oslsm_deploy_net

EPISODES = GOLDEN / "episodes"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One fold-0 1-shot run of 8 golden episodes by a thin random caffemodel, with and without
    saved masks."""
    tmp = tmp_path_factory.mktemp("report")
    voc = copy_golden_voc(tmp)
    net = oslsm_deploy_net(1, OSLSMWidths.THIN)
    prototxt = tmp / "deploy.prototxt"
    write_net(net, prototxt)
    weights = tmp / "fold0.caffemodel"
    write_mixed_thin_caffemodel(weights, seed=13)
    golden = json.loads((EPISODES / "episodes.json").read_text())["episodes"]["fold0_1shot"]
    episodes = [Episode(e["query"], e["cls"], e["supports"]) for e in golden["list"][:8]]
    episodes_to_json(tmp / "episodes.json", episodes, 0, 1, golden["n_items"])
    common = dict(voc=voc, weights=weights, fold=0, shots=1, n_episodes=8, episodes_file=tmp / "episodes.json",
                  prototxt=prototxt, progress=False)
    evaluate(out_dir=tmp / "saved", save_masks=True, **common)
    evaluate(out_dir=tmp / "plain", **common)
    return {"tmp": tmp, "voc": voc, "weights": weights, "prototxt": prototxt, "digest": tree_digest(voc)}


def test_recomputed_predictions_are_the_runs_own(runs, capsys):
    saved, plain = open_run(runs["tmp"] / "saved"), open_run(runs["tmp"] / "plain")
    assert plain.sources == {"voc": str(runs["voc"].resolve()), "weights": str(runs["weights"].resolve()),
                             "prototxt": str(runs["prototxt"].resolve())}
    scores = recompute_scores(plain, list(range(8)), VOCDataset(runs["voc"]))
    assert "warning" not in capsys.readouterr().err  # every recomputed mask scores as the run did
    for i, score in scores.items():
        assert score.shape == (500, 500)
        assert np.array_equal(np.rint(score * 255) / 255.0, saved_score(saved, i).astype(np.float64)), i
    assert saved_score(plain, 0) is None


def test_picks_follow_the_per_episode_iou(runs):
    run = open_run(runs["tmp"] / "plain")
    ious = [float(line.split(",")[7]) for line in (run.path / "all_results.csv").read_text().splitlines()]
    assert len(set(ious)) > 2
    order = sorted(range(len(ious)), key=lambda i: (ious[i], i))
    assert run.pick("best") == ious.index(max(ious))
    assert run.pick("worst") == ious.index(min(ious))
    assert run.pick("median") == order[(len(ious) - 1) // 2]
    assert episode_indices(run, "3,1", "worst,best") == list(dict.fromkeys([3, 1, order[0], ious.index(max(ious))]))
    for bad in (("9", None), ("x", None), (None, "middle"), (None, None)):
        with pytest.raises(ReproduceError):
            episode_indices(run, *bad)


def test_figure_command_from_saved_and_recomputed_masks(runs, capsys):
    for name in ("saved", "plain"):
        out = runs["tmp"] / f"{name}.png"
        assert main(["figure", "--run", str(runs["tmp"] / name), "--pick", "best,median,worst", "--score",
                     "--out", str(out)]) == 0
        with Image.open(out) as im:
            assert im.size == (4 * 240, 3 * 280)  # 3 rows of support, truth, prediction and score
    assert "warning" not in capsys.readouterr().err
    assert tree_digest(runs["voc"]) == runs["digest"]
    assert not list(runs["tmp"].glob(".*.tmp*"))


def test_figure_refuses_another_model_and_a_moved_data_set(runs, tmp_path, capsys):
    other = tmp_path / "other.caffemodel"
    other.write_bytes(runs["weights"].read_bytes()[:-1] + b"\0")
    args = ["figure", "--run", str(runs["tmp"] / "plain"), "--episodes", "0", "--out", str(tmp_path / "f.png")]
    assert main(args + ["--weights", str(other)]) == 2
    assert "is not the model of" in capsys.readouterr().err
    assert main(args + ["--voc", str(tmp_path / "gone")]) == 2
    assert "is not there any more; pass --voc" in capsys.readouterr().err
    assert not (tmp_path / "f.png").exists()


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.links, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "a":
            self.links.append(attrs["href"])

    def handle_data(self, data):
        self.text.append(data)


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text())
    return parser


def test_report_pages_link_what_exists_and_show_the_runs_numbers(runs):
    out = runs["tmp"] / "report"
    assert main(["report", "--run", str(runs["tmp"] / "saved"), str(runs["tmp"] / "plain"),
                 "--out", str(out)]) == 0
    index = _parse(out / "index.html")
    assert index.links == ["saved.html", "plain.html"]
    summary = json.loads((runs["tmp"] / "plain" / "summary.json").read_text())
    paper = json.loads((ROOT / "results/paper/table1_1shot.json").read_text())["OSLSM"]["fold0"]
    for page in index.links:
        parsed = _parse(out / page)
        text = " ".join(parsed.text)
        assert f"{summary['miou_x100']:.1f}" in text and f"{paper:.1f}" in text
        assert f"{summary['miou_x100'] - paper:+.1f}" in text
        assert summary["model_sha256"] in text
        assert len(parsed.images) == 5 and "index.html" in parsed.links
        for src in parsed.images:
            with Image.open(out / src) as im:
                assert im.format == "PNG" and im.size[0] > 300
    assert not list(out.rglob(".*.tmp*"))


def test_loss_curve_has_loss_and_learning_rate(tmp_path):
    from reproduce.presentation.loss_curve import write_loss_curve

    csv = tmp_path / "losses.csv"
    csv.write_text("iteration,smoothed_loss,loss,lr\n")
    assert write_loss_curve(csv, tmp_path / "c.png") is False and not (tmp_path / "c.png").exists()
    csv.write_text("iteration,smoothed_loss,loss,lr\n0,2.0,2.0,0.01\n1,1.5,1.0,0.001\n")
    assert write_loss_curve(csv, tmp_path / "c.png", "t") is True
    with Image.open(tmp_path / "c.png") as im:
        assert im.size == (700, 500)

"""`table-run` (what `make reproduce-table1/2` call) end to end on the golden synthetic VOC set
with four fold caffemodels written by our writer: conversion, the original's episode lists,
the table files, a re-run that converts nothing and ends identical; and the message users get
when the data or the models are missing."""
import csv
import json
import shutil
from dataclasses import dataclass

import numpy as np
import pytest

from reproduce.cli import main
from reproduce.errors import ReproduceError
from reproduce.presentation.tables import build_table
from reproduce.training.demo_model import demo_base_params
from weights_convert.fcn.spec import THIN, layer_types
from weights_convert.files.provenance import cpu_name
from weights_convert.formats.caffemodel import write_caffemodel
from reproduce.evaluation import protocols
from reproduce.evaluation.protocols import SCORING, Option, Protocol
from reproduce.evaluation.scoring import episode_counts
from helpers import GOLDEN, copy_golden_voc, tree_digest, write_mixed_thin_caffemodel
from weights_convert.netspec import write_net
from weights_convert.oslsm import OSLSMWidths
from weights_convert.oslsm.spec import oslsm_deploy_net

EPISODES = GOLDEN / "episodes"
N_EPISODES = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("table_run")
    voc = copy_golden_voc(tmp)
    net = oslsm_deploy_net(1, OSLSMWidths.THIN)
    prototxt = tmp / "deploy_1shot_thin.prototxt"
    write_net(net, prototxt)
    models = tmp / "models"
    for fold in range(4):
        write_mixed_thin_caffemodel(models / f"OSLSM_fold{fold}_iter_20000.caffemodel", seed=100 + fold)
    return {"tmp": tmp, "voc": voc, "models": models, "prototxt": prototxt, "digest": tree_digest(voc)}


def _table_run(setup, out, table=1):
    return main(["table-run", "--table", str(table), "--voc", str(setup["voc"]), "--models", str(setup["models"]),
                 "--prototxt", str(setup["prototxt"]), "--episodes", str(N_EPISODES), "--out", str(out),
                 "--no-progress"])


def test_table1_end_to_end_on_the_golden_data_set(setup, capsys):
    out = setup["tmp"] / "results"
    assert _table_run(setup, out) == 0
    printed = capsys.readouterr().out
    assert "| mean |" in printed and "wrote " in printed
    for fold in range(4):
        report = json.loads((out / "models" / f"fold{fold}.report.json").read_text())
        assert report["source"].endswith(f"OSLSM_fold{fold}_iter_20000.caffemodel")
    golden = json.loads((EPISODES / "episodes.json").read_text())["episodes"]
    rows = list(csv.DictReader((out / "table1_1shot.csv").open()))
    ours = []
    for fold in range(4):
        run = out / "runs" / f"table1_fold{fold}"
        summary = json.loads((run / "summary.json").read_text())
        assert (summary["fold"], summary["shots"], summary["n_episodes"]) == (fold, 1, N_EPISODES)
        # The episodes evaluated are the original data layer's first episodes of this fold.
        ran = json.loads((run / "episodes.json").read_text())["episodes"]
        want = golden[f"fold{fold}_1shot"]["list"][:N_EPISODES]
        assert [(e["query"], e["cls"], e["supports"]) for e in ran] == \
               [(e["query"], e["cls"], e["supports"]) for e in want]
        assert float(rows[fold]["ours_miou"]) == pytest.approx(100 * summary["miou"], abs=1e-4)
        ours.append(100 * summary["miou"])
    assert rows[4]["fold"] == "mean"
    assert float(rows[4]["ours_miou"]) == pytest.approx(np.mean(ours), abs=1e-4)
    assert (out / "table1_1shot.png").stat().st_size > 10_000
    assert tree_digest(setup["voc"]) == setup["digest"]

    # Again: nothing is converted twice, and every output ends byte-identical.
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.suffix in (".csv", ".md", ".safetensors")}
    assert _table_run(setup, out) == 0
    assert "up to date" in capsys.readouterr().out
    after = {p: p.read_bytes() for p in before}
    assert after == before


def test_missing_data_says_what_to_download_and_where(tmp_path, capsys):
    assert main(["table-run", "--table", "2", "--voc", str(tmp_path / "nothing"), "--models",
                 str(tmp_path / "none"), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no PASCAL VOC 2012 at" in err and "VOCtrainval_11-May-2012.tar" in err
    assert "github.com/lzzcd001/OSLSM" in err and "fold(s) 0, 1, 2, 3" in err
    assert not (tmp_path / "out").exists()


def test_bad_arguments_are_refused_before_any_conversion(setup, tmp_path, capsys):
    """--episodes -5, an unknown device, a cache folder that is a file and an output inside the data
    set: all four reported at once, and nothing converted or written (a conversion is a write)."""
    out = setup["voc"] / "results"
    a_file = tmp_path / "cache"
    a_file.write_text("not a folder")
    code = main(["table-run", "--table", "1", "--voc", str(setup["voc"]), "--models", str(setup["models"]),
                 "--prototxt", str(setup["prototxt"]), "--episodes", "-5", "--device", "tpu", "--out", str(out),
                 "--cache-dir", str(a_file), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot run the table" in err
    for expected in ("episodes must be >= 1, got -5", "--device 'tpu'", "lies inside the data set folder",
                     f"--cache-dir {a_file} is a file; expected a folder"):
        assert expected in err
    assert not out.exists() and tree_digest(setup["voc"]) == setup["digest"]


def test_both_tables_in_one_pass_equal_two_separate_runs(setup, tmp_path, capsys):
    """`--table 1 2` computes each query once per fold and writes exactly the files that
    `--table 1` and then `--table 2` write."""
    apart, together = tmp_path / "apart", tmp_path / "together"
    assert _table_run(setup, apart, table=1) == 0 and _table_run(setup, apart, table=2) == 0
    base = ["table-run", "--voc", str(setup["voc"]), "--models", str(setup["models"]), "--prototxt",
            str(setup["prototxt"]), "--episodes", str(N_EPISODES), "--out", str(together), "--no-progress"]
    assert main([*base, "--table", "1", "2"]) == 0
    capsys.readouterr()
    compared = 0
    # The run folders' results and the tables (timings, locks and the HTML reports' images aside).
    results = [*(apart / "runs").rglob("*"), *apart.glob("table*.md"), *apart.glob("table*.csv")]
    for path in sorted(results):
        if path.is_file() and path.name not in ("timings.json", "sources.json", ".run.lock"):
            other = together / path.relative_to(apart)
            text = path.read_bytes().replace(str(apart).encode(), str(together).encode())
            assert other.read_bytes() == text, path.relative_to(apart)
            compared += 1
    assert compared >= 8 * 5 + 4  # 8 runs x 5 result files, the tables' md and csv
    for fold in range(4):
        one, five = (json.loads((together / "runs" / f"table{t}_fold{fold}" / "timings.json").read_text())
                     for t in (1, 2))
        queries = {e["query"] for e in json.loads((together / "runs" / f"table2_fold{fold}" /
                                                   "episodes.json").read_text())["episodes"]}
        assert one["runs_in_pass"] == 2 and one["forwards"]["query"] == len(queries)
    assert not (together / "cache" / "features").exists()  # no disk feature cache unless asked


def test_a_second_table_run_into_the_same_results_folder_is_refused(setup, tmp_path, capsys):
    """Two table-runs of different folds into one folder would each rewrite the tables and reports
    (the last writer winning): the second is refused in words, naming the first, and writes nothing."""
    import subprocess
    import sys

    out = tmp_path / "results"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from weights_convert.files.folder_lock import folder_lock\n"
        f"with folder_lock({str(out)!r}, '.table-run.lock', 'table-run', RuntimeError, owns=lambda _: True, clean=False):\n"
        "    print('held', flush=True); time.sleep(60)")], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        assert _table_run(setup, out) == 2
        assert f"another table-run process (pid {holder.pid}) is writing" in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == [".table-run.lock"]
    finally:
        holder.kill()
        holder.wait()


@dataclass(frozen=True)
class CentreOnly(Protocol):
    """A toy protocol, all of it in this one class: the original's episodes and truth, scored on
    the query grid's centre only, with an option of its own."""
    name = "toy"
    summary = "the original's episodes, scored on the query grid less a margin"
    comparable_with_paper = False
    writes_test_py_file = False
    options = (Option("--toy-margin", "margin", "pixels left out at each edge", int, frozenset({SCORING})),)
    margin: int = 200

    @classmethod
    def from_record(cls, record):
        return cls(record["toy_margin"])

    def record(self):
        return {"protocol": self.name, "toy_margin": self.margin}

    def problems(self, folds):
        return [] if 0 <= self.margin < 250 else [f"--toy-margin must be 0..249, got {self.margin}"]

    def counts(self, score, truth):
        label, _ = truth
        inner = (slice(self.margin, -self.margin),) * 2
        return episode_counts(score[inner], label[inner])


def test_a_protocol_is_one_class_and_one_registry_line(setup, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(protocols, "REGISTRY", dict(protocols.REGISTRY))
    protocols.register(CentreOnly)
    out = tmp_path / "results"
    base = ["table-run", "--table", "1", "--voc", str(setup["voc"]), "--models", str(setup["models"]),
            "--prototxt", str(setup["prototxt"]), "--episodes", str(N_EPISODES), "--out", str(out), "--no-progress"]
    # its option is refused elsewhere and checked by its own rule, like any protocol's
    assert main([*base, "--toy-margin", "10"]) == 2
    assert "--toy-margin: option(s) of --protocol toy only" in capsys.readouterr().err
    assert main([*base, "--protocol", "toy", "--toy-margin", "300"]) == 2
    assert "--toy-margin must be 0..249, got 300" in capsys.readouterr().err and not out.exists()

    assert main([*base, "--protocol", "toy", "--toy-margin", "200"]) == 0
    capsys.readouterr()
    for fold in range(4):
        run = out / "runs_toy" / f"table1_fold{fold}"
        summary = json.loads((run / "summary.json").read_text())
        assert (summary["protocol"], summary["toy_margin"]) == ("toy", 200)
        rows = [line.split(",") for line in (run / "all_results.csv").read_text().splitlines()]
        assert len(rows) == N_EPISODES and all(sum(map(int, r[3:7])) == 100 * 100 for r in rows)
        assert not (run / "iou_results.txt").exists()
    table = (out / "table1_1shot_toy.md").read_text()
    assert "protocol toy" in table and "| ours (toy) |" in table and "ours - paper" not in table
    assert "toy" in next(csv.reader(open(out / "table1_1shot_toy.csv").readlines()[1:2]))[-1]


def test_the_papers_baselines_are_rows_on_oslsms_episodes_with_the_claims_measured(setup, tmp_path, capsys):
    base = tmp_path / "base"
    for fold in range(4):
        params = demo_base_params(THIN, 16, seed=fold)
        write_caffemodel(base / f"fcn32s_base_fold{fold}_iter_40.caffemodel", params, layer_types(params))
    out = tmp_path / "results"
    argv = ["table-run", "--table", "1", "--voc", str(setup["voc"]), "--models", str(setup["models"]), "--prototxt",
            str(setup["prototxt"]), "--episodes", str(N_EPISODES), "--out", str(out), "--no-progress"]
    assert main([*argv, "--baselines", "1nn,logreg", "--base-models", str(base)]) == 0
    capsys.readouterr()
    rows = list(csv.DictReader((out / "table1_1shot.csv").open()))
    means = {}
    for method, column in (("1nn", "1_nn_miou"), ("logreg", "logreg_miou")):
        mious = []
        for fold in range(4):
            run = out / "runs" / method / f"table1_fold{fold}"
            summary = json.loads((run / "summary.json").read_text())
            oslsm = json.loads((out / "runs" / f"table1_fold{fold}" / "summary.json").read_text())
            assert summary["baseline"]["method"] == method and summary["n_episodes"] == N_EPISODES
            assert summary["episodes_sha256"] == oslsm["episodes_sha256"]  # the very same episodes
            assert float(rows[fold][column]) == pytest.approx(100 * summary["miou"], abs=1e-4)
            assert json.loads((run / "timings.json").read_text())["seconds_per_episode"] > 0
            mious.append(100 * summary["miou"])
        means[method] = float(np.mean(mious))
        assert float(rows[4][column]) == pytest.approx(means[method], abs=1e-4)
    table = (out / "table1_1shot.md").read_text()
    assert "| 1-NN (re-implemented from the paper's description) |" in table
    assert "| Siamese (published only, not re-run) |" in table and "no published baseline row" in table
    ours = float(rows[4]["ours_miou"])
    best = max(means, key=means.get)
    if means[best] > 0:
        gain = 100 * (ours - means[best]) / means[best]
        assert f"best re-run baseline ({'1-NN' if best == '1nn' else 'LogReg'}, {means[best]:.1f})" in table
        assert f"{gain:+.1f}% (OSLSM {ours:.1f}); the paper: 25% for one-shot" in table
    assert f"Seconds per episode, measured here (cpu, {cpu_name()}, " in table and "x OSLSM's)" in table

    # a baseline run of other episodes is refused by the table
    other = tmp_path / "other"
    shutil.copytree(out / "runs" / "1nn" / "table1_fold0", other)
    summary = json.loads((other / "summary.json").read_text())
    summary["episodes_sha256"] = "0" * 64
    (other / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ReproduceError, match="ran other episodes than OSLSM's fold-0 run"):
        build_table(1, [out / "runs" / f"table1_fold{f}" for f in range(4)], methods=[("1-NN", [other])])

    # and what is missing or unknown is said before anything runs
    assert main([*argv, "--baselines", "1nn"]) == 2
    assert "--baselines needs --base-models" in capsys.readouterr().err
    assert main([*argv, "--baselines", "1nn,knn", "--base-models", str(base)]) == 2
    assert "unknown method(s) knn" in capsys.readouterr().err
    assert main([*argv, "--base-models", str(base)]) == 2
    assert "--base-models is read with --baselines only" in capsys.readouterr().err

    # the author's other patch-label rule is its own row and its own run folders
    assert main([*argv, "--baselines", "1nn", "--base-models", str(base), "--patch-labels", "bilinear"]) == 0
    assert (out / "runs" / "1nn_bilinear" / "table1_fold3" / "summary.json").is_file()
    assert "| 1-NN (bilinear patch labels) (re-implemented" in (out / "table1_1shot.md").read_text()

"""A reduced `demo` end to end: synthetic VOC, four random thin caffemodels of the upstream
topology, conversion, 1-shot and 5-shot runs of all folds, both tables."""
import csv
import json

import pytest

from reproduce.cli import main
from weights_convert.formats.caffemodel import read_caffemodel
from weights_convert.formats.prototxt import load_net
from weights_convert.oslsm.spec import check_oslsm_net


def test_reduced_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--images", "120", "--episodes", "4", "--no-progress"]) == 0
    assert "demo finished" in capsys.readouterr().out
    work = out / "work"
    # The random models have the full upstream topology: their layers are exactly the learnable
    # layers of the deploy net that the project's net spec checks against the authors' prototxt.
    shots, widths, query_hw = check_oslsm_net(load_net(work / "deploy_1shot_thin.prototxt"))
    assert (shots, query_hw) == (1, (500, 500))
    params = read_caffemodel(work / "caffemodels" / "oslsm_thin_fold2.caffemodel")
    assert {"conv1_1f", "conv5_3s", "fc6s", "fc7s", "fc8f", "rw1s", "rb1s", "uppred_offset"} <= set(params)
    for table, stem, shots in ((1, "table1_1shot", 1), (2, "table2_5shot", 5)):
        for ext in ("md", "csv", "png"):
            assert (out / f"{stem}.{ext}").is_file()
        rows = list(csv.DictReader((out / f"{stem}.csv").open()))
        ours = []
        for fold in range(4):
            s = json.loads((out / "runs" / f"table{table}_fold{fold}" / "summary.json").read_text())
            assert (s["fold"], s["shots"], s["n_episodes"]) == (fold, shots, 4)
            assert float(rows[fold]["ours_miou"]) == pytest.approx(100 * s["miou"], abs=1e-4)
            ours.append(100 * s["miou"])
        assert float(rows[4]["ours_miou"]) == pytest.approx(sum(ours) / 4, abs=1e-4)
        assert "DEMO" in (out / f"{stem}.md").read_text()
        index = (out / f"{stem}_report" / "index.html").read_text()
        assert all(f"table{table}_fold{fold}.html" in index for fold in range(4)) and "DEMO" in index
        assert (out / f"{stem}_report" / f"table{table}_fold3" / "worst.png").is_file()
    # The 1- and 5-shot runs of a fold go in one pass: each distinct query image is computed once.
    one, five = (json.loads((out / "runs" / f"table{t}_fold0" / "timings.json").read_text()) for t in (1, 2))
    queries = {e["query"] for e in json.loads((out / "runs" / "table2_fold0" / "episodes.json").read_text())["episodes"]}
    assert one["runs_in_pass"] == five["runs_in_pass"] == 2
    assert one["forwards"] == five["forwards"] and five["forwards"]["query"] == len(queries)
    assert not (out / "work" / "cache").exists() and (out / "cache" / "items").is_dir()

    # Another recipe in the same folder starts afresh (a run of 4 episodes would otherwise clash).
    assert main(["demo", "--out", str(out), "--images", "120", "--episodes", "3", "--no-progress"]) == 0
    s = json.loads((out / "runs" / "table1_fold0" / "summary.json").read_text())
    assert s["n_episodes"] == 3


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


def test_demo_states_its_minimum_and_reports_every_problem(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--images", "10", "--episodes", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "2 problems" in err and "--images must be >= 120" in err and "episodes must be >= 1, got 0" in err
    assert not out.exists()

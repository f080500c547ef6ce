"""Table files: the paper's numbers (results/paper, from the published tables) beside our runs."""
import csv
import json
from pathlib import Path

import pytest

from reproduce.errors import ReproduceError
from reproduce.presentation.tables import PAPER_DIR, build_table, load_paper, load_run, write_table

REFERENCE = {"table1_1shot": {"fold0": 33.6, "fold1": 55.3, "fold2": 40.9, "fold3": 33.5, "mean": 40.8},
             "table2_5shot": {"fold0": 35.9, "fold1": 58.1, "fold2": 42.7, "fold3": 39.1, "mean": 43.9}}


def _run(tmp: Path, fold: int, shots: int, miou: float, fb: float, protocol: str = "original") -> Path:
    d = tmp / f"run_f{fold}_k{shots}"
    d.mkdir()
    (d / "summary.json").write_text(json.dumps({
        "fold": fold, "shots": shots, "miou": miou, "fb_iou": fb, "n_episodes": 1000, "protocol": protocol,
        "model_sha256": "ab" * 32, "episodes_sha256": "cd" * 32}))
    return d


def test_paper_files_hold_the_published_numbers():
    for stem, numbers in REFERENCE.items():
        data = json.loads((PAPER_DIR / f"{stem}.json").read_text())
        assert data["OSLSM"] == numbers
    p = load_paper(2)
    assert p["folds"] == {0: 35.9, 1: 58.1, 2: 42.7, 3: 39.1} and p["mean"] == 43.9


def test_table1_numbers_md_csv_png(tmp_path):
    ours = [0.30, 0.50, 0.45, 0.35]
    runs = [_run(tmp_path, f, 1, m, 0.6 + 0.01 * f) for f, m in enumerate(ours)]
    paths = write_table(1, runs[::-1], tmp_path / "out")
    assert sorted(p.name for p in paths.values()) == ["table1_1shot.csv", "table1_1shot.md", "table1_1shot.png"]
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [r["fold"] for r in rows] == ["fold0", "fold1", "fold2", "fold3", "mean"]
    assert [float(r["paper_miou"]) for r in rows] == [33.6, 55.3, 40.9, 33.5, 40.8]
    assert [float(r["ours_miou"]) for r in rows] == pytest.approx([30.0, 50.0, 45.0, 35.0, 40.0])
    assert [float(r["difference"]) for r in rows] == pytest.approx([-3.6, -5.3, 4.1, 1.5, -0.8])
    assert float(rows[4]["ours_fb_iou"]) == pytest.approx(61.5)
    md = paths["md"].read_text()
    assert "| paper | 33.6 | 55.3 | 40.9 | 33.5 | 40.8 |" in md
    assert "| ours | 30.0 | 50.0 | 45.0 | 35.0 | 40.0 |" in md
    assert "| ours - paper | -3.6 | -5.3 | +4.1 | +1.5 | -0.8 |" in md
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_fold_gives_no_mean(tmp_path):
    t = build_table(2, [_run(tmp_path, 1, 5, 0.581, 0.7)])
    assert t["rows"][1]["difference"] == pytest.approx(0.0, abs=1e-9)
    assert t["rows"][0]["ours_miou"] is None and t["rows"][4]["ours_miou"] is None
    assert t["rows"][4]["paper_miou"] == 43.9


def test_wrong_runs_are_refused(tmp_path):
    with pytest.raises(ReproduceError, match="1-shot run; table 2 is 5-shot"):
        build_table(2, [_run(tmp_path, 0, 1, 0.3, 0.6)])
    a, b = _run(tmp_path, 2, 1, 0.3, 0.6), tmp_path / "dup"
    b.mkdir()
    (b / "summary.json").write_text((a / "summary.json").read_text())
    with pytest.raises(ReproduceError, match="two runs for fold 2"):
        build_table(1, [a, b])
    with pytest.raises(ReproduceError, match="mix scoring protocols"):
        build_table(1, [a, _run(tmp_path, 3, 1, 0.3, 0.6, "modern")])
    with pytest.raises(ReproduceError, match="no summary"):
        build_table(1, [tmp_path / "nothing"])
    with pytest.raises(ReproduceError, match="--table must be 1"):
        build_table(3, [a])


def test_a_summary_older_than_its_rows_is_refused(tmp_path):
    """A finished run extended to more episodes and stopped: the summary is the shorter run's."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"fold": 0, "shots": 1, "miou": 0.5, "fb_iou": 0.5,
                                                  "n_episodes": 2, "protocol": "original"}))
    (run / "all_results.csv").write_text("0,0,0,1,1,1,1,0.5\n1,0,1,1,1,1,1,0.5\n")
    assert load_run(run)["n_episodes"] == 2
    with open(run / "all_results.csv", "a") as fh:
        fh.write("2,0,2,1,1,1,1,0.5\n")
    with pytest.raises(ReproduceError, match=r"counts 2 episodes but all_results.csv holds 3"):
        load_run(run)


def test_the_released_model_rerun_is_its_own_row(tmp_path):
    """A user who gets 34.6 on fold 0 with the released model sees that number beside the paper's:
    the third-party run of the original code on it (fold 0 only), in its own row, source named."""
    assert load_paper(1)["rerun"]["folds"] == {0: 34.6} and load_paper(2)["rerun"]["folds"] == {0: 39.9}
    runs = [_run(tmp_path, f, 1, 0.4, 0.6) for f in range(4)]
    paths = write_table(1, runs, tmp_path / "out")
    md = paths["md"].read_text()
    assert "| original code, released model, third-party run | 34.6 | - | - | - | - |" in md
    assert "dongzhuoyao/OSLSM" in md and "#9" in md
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [r["rerun_miou"] for r in rows] == ["34.6000", "", "", "", ""]

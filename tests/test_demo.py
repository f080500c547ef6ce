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
    # 5-shot runs reuse the 1-shot runs' query features from the disk cache.
    t = json.loads((out / "runs" / "table2_fold0" / "timings.json").read_text())
    assert t["forwards"]["query"] == 0 and t["cache_stats"]["query_disk_hits"] > 0

    # Another recipe in the same folder starts afresh (a run of 4 episodes would otherwise clash).
    assert main(["demo", "--out", str(out), "--images", "120", "--episodes", "3", "--no-progress"]) == 0
    s = json.loads((out / "runs" / "table1_fold0" / "summary.json").read_text())
    assert s["n_episodes"] == 3

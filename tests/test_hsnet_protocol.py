"""HSNet's PASCAL-5i protocol, first part: its test episodes drawn from its split files exactly as
its own code draws them (golden: HSNet's data/pascal.py run unmodified, fold 0), through the CLI,
and which items its fold lists and the original's differ by."""
import json
from pathlib import Path

import pytest

from reproduce.cli import main
from reproduce.data.hsnet import hsnet_items, item_differences

GOLDEN = json.loads((Path(__file__).parent / "reference" / "hsnet" / "hsnet_test_episodes_fold0.json").read_text())


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

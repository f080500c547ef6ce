"""The original training data layer (golden_train/episodes): items, filter removals, 700 episodes
per fold and the exact network inputs, reproduced; the episode stream's saved state."""
import json

import numpy as np
import pytest

from reproduce.cli import main
from reproduce.training.episodes import (TrainingData, TrainingEpisodes, build_training_items, open_training_sets,
                                training_classes)
from helpers import GOLDEN_TRAIN

EPISODES = GOLDEN_TRAIN / "episodes"
DOC = json.loads((EPISODES / "episodes.json").read_text())
SEED = DOC["seed"]


@pytest.fixture(scope="module")
def sets():
    return open_training_sets(EPISODES / "data" / "sbd", EPISODES / "data" / "pascal")


@pytest.mark.parametrize("fold", range(4))
def test_items_and_filter_removals_are_the_originals(sets, fold):
    golden = DOC["folds"][f"fold{fold}"]
    items = build_training_items(sets, fold, use_cache=False)
    assert [[s, n, c] for (s, n), c in items.items] == golden["items"]
    assert items.n_items == golden["n_items"]
    for set_name in ("sbd", "pascal"):
        removed = golden["small_object_filter"][f"{set_name}_training"]["removed"]
        assert [[s, n, c] for (s, n), c in items.dropped if s == set_name] == removed
    assert {c for _, c in items.items} <= set(training_classes(fold))


@pytest.mark.parametrize("fold", range(4))
def test_700_training_episodes_are_the_originals(sets, fold):
    golden = DOC["folds"][f"fold{fold}"]["episodes"]
    stream = TrainingEpisodes(build_training_items(sets, fold), 1, SEED)
    fields = ("query", "query_set", "cls", "supports", "support_sets")
    ours = [stream.next().as_dict() for _ in golden]
    assert ours == [{k: e[k] for k in fields} for e in golden]


@pytest.mark.parametrize("fold", range(4))
def test_network_inputs_are_bit_exact(sets, fold):
    golden = np.load(EPISODES / f"inputs_fold{fold}.npz")
    data = TrainingData(sets, build_training_items(sets, fold), 1, SEED)
    for e in range(4):
        ours = data.batch(e)
        for top in ("first_img", "first_label", "second_img", "second_label"):
            ref = golden[f"{e}/{top}"]
            assert ours[top].dtype == ref.dtype and np.array_equal(ours[top], ref), (fold, e, top)
    # the query keeps its own size (no resize in training)
    assert data.batch(0)["second_img"].shape[2:] == data.batch(0)["second_label"].shape[2:]


def test_train_episodes_command_writes_the_original_list(tmp_path, sets):
    out = tmp_path / "train_episodes.json"
    assert main(["train-episodes", "--voc", str(EPISODES / "data" / "pascal"), "--sbd", str(EPISODES / "data" / "sbd"),
                 "--fold", "2", "--seed", str(SEED), "--episodes", "50", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    golden = DOC["folds"]["fold2"]
    assert (doc["fold"], doc["shots"], doc["seed"], doc["n_items"]) == (2, 1, SEED, golden["n_items"])
    assert [e["query"] for e in doc["episodes"]] == [e["query"] for e in golden["episodes"][:50]]
    assert len(doc["sha256"]) == 64


def test_stream_state_restores_the_same_continuation(sets):
    items = build_training_items(sets, 1)
    whole = TrainingData(sets, items, 1, SEED)
    expected = [whole.episode(i) for i in range(40)]
    first = TrainingData(sets, items, 1, SEED)
    for i in range(23):
        first.episode(i)
    state = json.loads(json.dumps(first.state(20)))  # a state from inside the last passes, via JSON
    resumed = TrainingData(sets, items, 1, seed=999)
    resumed.restore(state)
    assert [resumed.episode(i) for i in range(20, 40)] == expected[20:]


def test_unseeded_streams_differ_and_record_their_seed(tmp_path):
    seeds = []
    for k in range(2):
        out = tmp_path / f"e{k}.json"
        assert main(["train-episodes", "--voc", str(EPISODES / "data" / "pascal"), "--sbd",
                     str(EPISODES / "data" / "sbd"), "--fold", "0", "--episodes", "5", "--out", str(out)]) == 0
        seeds.append(json.loads(out.read_text())["seed"])
    assert seeds[0] != seeds[1]


def test_train_episodes_reports_every_problem_and_writes_nothing(tmp_path, capsys):
    inside = EPISODES / "data" / "pascal" / "episodes.json"
    assert main(["train-episodes", "--voc", str(EPISODES / "data" / "pascal"), "--sbd", str(EPISODES / "data" / "sbd"),
                 "--fold", "0", "--episodes", "0", "--out", str(inside)]) == 2
    err = capsys.readouterr().err
    assert "2 problems" in err and "--episodes must be >= 1, got 0" in err and "lies inside the data set" in err
    assert not inside.exists()

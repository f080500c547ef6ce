"""The baselines' base net: its 16-way labels, FCN's image stream (voc_layers.py), and `train-base`
on the golden training folders (synthetic SBD + VOC): training steps, resume to identical
weights, and refusals."""
import random

import numpy as np
import pytest

from helpers import TRAINING_DATA
from reproduce.cli import main
from reproduce.training.base_net import BaseTrainingData, base_images, base_label_map, fcn_input
from reproduce.training.demo_model import demo_base_params
from reproduce.training.episodes import build_training_items, open_training_sets
from weights_convert.fcn.spec import MEAN_BGR, THIN, layer_types
from weights_convert.formats.caffemodel import read_caffemodel, write_caffemodel


def test_labels_train_classes_1_to_15_and_ignore_the_test_classes():
    table = base_label_map(1)  # fold 1 tests classes 6..10
    assert table[0] == 0 and table[255] == 255
    assert [int(table[c]) for c in range(1, 21)] == [1, 2, 3, 4, 5, 255, 255, 255, 255, 255] + list(range(6, 16))


def test_fcn_input_is_bgr_minus_fcns_mean():
    image = np.zeros((2, 3, 3), np.uint8)
    image[0, 0] = (10, 20, 30)  # RGB
    x = fcn_input(image)
    assert x.shape == (1, 3, 2, 3) and x.dtype == np.float32
    assert x[0, :, 0, 0] == pytest.approx([30 - MEAN_BGR[0], 20 - MEAN_BGR[1], 10 - MEAN_BGR[2]], abs=1e-5)


@pytest.fixture(scope="module")
def sets():
    return open_training_sets(TRAINING_DATA / "sbd", TRAINING_DATA / "pascal")


def test_the_image_stream_is_voc_layers_and_replays_after_a_restore(sets):
    images = base_images(build_training_items(sets, 0, use_cache=False))
    assert len(images) == len(set(images)) and {s for s, _ in images} == {"sbd", "pascal"}
    data = BaseTrainingData(sets, images, 0, seed=1337)
    rng = random.Random(1337)  # voc_layers.py: seeded once, one randint per forward pass
    assert [data.draw(i) for i in range(30)] == [rng.randint(0, len(images) - 1) for _ in range(30)]
    later = [data.draw(i) for i in range(30, 40)]
    fresh = BaseTrainingData(sets, images, 0, seed=1337)
    fresh.restore(data.state(30))
    assert [fresh.draw(i) for i in range(30, 40)] == later
    batch = data.batch(3)
    set_name, name = images[data.draw(3)]
    mask = sets[set_name].read_mask(name)
    assert batch["data"].shape[2:] == batch["label"].shape[2:] == mask.shape
    assert np.array_equal(batch["label"][0, 0], base_label_map(0)[mask].astype(np.float32))


def _train_base(tmp_path, out, iters, *extra):
    return main(["train-base", "--voc", str(TRAINING_DATA / "pascal"), "--sbd", str(TRAINING_DATA / "sbd"), "--fold",
                 "0", "--iters", str(iters), "--base-lr", "1e-7", "--allow-val-images", "--no-progress",
                 "--out", str(out), *extra])


def test_train_base_trains_and_resumes_to_identical_weights(tmp_path, capsys):
    start = demo_base_params(THIN, 16, seed=5)
    write_caffemodel(tmp_path / "start.caffemodel", start, layer_types(start))
    init = ["--init", str(tmp_path / "start.caffemodel")]
    assert _train_base(tmp_path, tmp_path / "straight", 4, *init) == 0
    assert _train_base(tmp_path, tmp_path / "cut", 2, *init) == 0
    assert _train_base(tmp_path, tmp_path / "cut", 4) == 0  # resumed without naming the start again
    straight = (tmp_path / "straight" / "run" / "snapshot_iter_4.caffemodel").read_bytes()
    assert (tmp_path / "cut" / "run" / "snapshot_iter_4.caffemodel").read_bytes() == straight
    trained = read_caffemodel(tmp_path / "straight" / "run" / "snapshot_iter_4.caffemodel")
    assert not np.array_equal(trained["score_fr"][0], start["score_fr"][0])  # the new classifier learned
    assert np.array_equal(trained["upscore"][0], start["upscore"][0])        # lr_mult 0: FCN's fixed upsampling
    losses = [float(line.split(",")[1]) for line in
              (tmp_path / "straight" / "run" / "losses.csv").read_text().splitlines()[1:]]
    assert len(losses) == 4 and all(np.isfinite(losses))
    solver = (tmp_path / "straight" / "recipe" / "solver.prototxt").read_text()
    assert "momentum: 0.99" in solver and "weight_decay: 0.0005" in solver and 'lr_policy: "fixed"' in solver


def test_train_base_refusals(tmp_path, capsys):
    assert _train_base(tmp_path, tmp_path / "new", 2) == 2
    assert "give --vgg16 (ImageNet VGG-16) or --init" in capsys.readouterr().err
    wrong = {"conv1_1": [np.zeros((4, 3, 3, 3), np.float32)]}
    write_caffemodel(tmp_path / "other.caffemodel", wrong, {"conv1_1": "Convolution"})
    assert _train_base(tmp_path, tmp_path / "new2", 2, "--init", str(tmp_path / "other.caffemodel")) == 2
    assert "not an FCN-32s model" in capsys.readouterr().err
    assert _train_base(tmp_path, tmp_path / "new3", 2, "--base-lr", "-1") == 2
    assert "--base-lr must be a finite rate > 0, got -1.0" in capsys.readouterr().err

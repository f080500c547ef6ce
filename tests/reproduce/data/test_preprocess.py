"""Network inputs against the exact arrays the original code built (tests/golden/episodes)."""
import json

import numpy as np
import pytest

from reproduce.data.episodes import Episode
from reproduce.errors import ReproduceError
from reproduce.data.preprocess import (MEAN_BGR, binary_mask, episode_inputs, prep_query,
                                  prep_support)
from reproduce.data.voc import VOCDataset

from helpers import GOLDEN

EPISODES = GOLDEN / "episodes"
GOLDEN_LISTS = json.loads((EPISODES / "episodes.json").read_text())["episodes"]
SHAPES = {"first_img": (3, 224, 224), "first_label": (1, 224, 224),
          "second_img": (1, 3, 500, 500), "second_label": (1, 1, 500, 500)}


@pytest.fixture(scope="module")
def dataset():
    return VOCDataset(EPISODES / "VOC2012")


@pytest.mark.parametrize("fold,shots,index", [(0, 1, 0), (0, 1, 1), (1, 5, 0)])
def test_inputs_equal_the_original(dataset, fold, shots, index):
    golden = np.load(EPISODES / f"inputs_fold{fold}_{shots}shot.npz")
    e = GOLDEN_LISTS[f"fold{fold}_{shots}shot"]["list"][index]
    got = episode_inputs(dataset, Episode(e["query"], e["cls"], e["supports"]))
    assert sorted(got) == sorted(SHAPES)
    for key, value in got.items():
        want = golden[f"{index}/{key}"]
        assert value.dtype == np.float32 and value.shape == want.shape
        assert np.abs(value.astype(np.float64) - want).max() <= 1e-5
        assert np.array_equal(value, want), f"{key}: not bit-exact"  # measured: max diff 0.0


def test_golden_episodes_cover_resize_and_no_resize(dataset):
    # the golden inputs include a 500x500 query (no resize), an upscale and downscales
    shapes = set()
    for fold, shots, index in [(0, 1, 0), (0, 1, 1), (1, 5, 0)]:
        e = GOLDEN_LISTS[f"fold{fold}_{shots}shot"]["list"][index]
        shapes |= {dataset.read_image(n).shape[:2] for n in e["supports"] + [e["query"]]}
    assert (500, 500) in shapes and (213, 320) in shapes and (366, 500) in shapes


def test_binary_mask_treats_void_as_background():
    mask = np.array([[0, 3, 255], [3, 7, 3]], dtype=np.uint8)
    out = binary_mask(mask, 3)
    assert out.dtype == np.float32
    assert out.tolist() == [[0, 1, 0], [1, 0, 1]]


def test_mean_in_rgb_order_bgr_output_and_no_resize_at_target_shape():
    rgb = np.empty((500, 500, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 30
    mask = np.zeros((500, 500), dtype=np.float32)
    mask[10:20, 30:40] = 1
    img, label = prep_query(rgb, mask)
    assert img.shape == (1, 3, 500, 500) and label.shape == (1, 1, 500, 500)
    b, g, r = MEAN_BGR
    for ch, (value, mean) in enumerate([(30, b), (100, g), (200, r)]):
        expect = np.float32((np.float64(np.float32(value) / np.float32(255.0)) - mean) * 255)
        assert np.all(img[0, ch] == expect)
    assert np.array_equal(label[0, 0], mask)


def test_support_resize_shapes_and_label_stays_binary():
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, size=(137, 91, 3), dtype=np.uint8)
    mask = (rng.random((137, 91)) > 0.7).astype(np.float32)
    img, label = prep_support(rgb, mask)
    assert img.shape == (3, 224, 224) and label.shape == (1, 224, 224)
    assert img.dtype == label.dtype == np.float32
    assert set(np.unique(label).tolist()) <= {0.0, 1.0}


def test_bad_arrays_are_refused():
    with pytest.raises(ReproduceError, match="uint8 HxWx3"):
        prep_support(np.zeros((10, 10), dtype=np.uint8), np.zeros((10, 10)))
    with pytest.raises(ReproduceError, match="mask shape"):
        prep_support(np.zeros((10, 10, 3), dtype=np.uint8), np.zeros((10, 11)))

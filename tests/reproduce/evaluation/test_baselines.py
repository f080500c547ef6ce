"""The paper's baselines on hand-built data: support patch labels (both of the author's rules),
1-NN and logistic regression, scores brought back to the image, k-shot pooling, fine-tuning through
the kit's Caffe SGD, and a baseline run on the golden VOC set beside an OSLSM run of the same
episodes."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers import GOLDEN
from reproduce.data.episodes import Episode
from reproduce.evaluation.baselines.classifiers import logistic_regression, nearest_neighbour
from reproduce.evaluation.baselines.finetune import fine_tuned_scores
from reproduce.evaluation.baselines.methods import FineTune, LogReg, NearestNeighbour, methods_named
from reproduce.evaluation.baselines.patches import cells_to_grid, patch_labels
from reproduce.errors import ReproduceError
from reproduce.training.demo_model import demo_base_params
from weights_convert.fcn.spec import THIN, layer_types
from weights_convert.formats.caffemodel import write_caffemodel


def test_majority_labels_count_a_patch_s_pixels_ignored_ones_left_out():
    # 64x64 image, 2x2 cells: cell i's patch is rows/cols 32 i - 4 .. 32 i + 27, clipped: 0..27 and 28..59
    fg, ignored = np.zeros((64, 64), bool), np.zeros((64, 64), bool)
    fg[0:28, 0:15] = True      # cell (0, 0): 28 x 15 = 420 of 784 -> positive
    fg[0:28, 28:42] = True     # cell (0, 1): 28 x 14 = 392 of 896 -> negative
    fg[28:60, 0:14] = True     # cell (1, 0): 32 x 14 = 448 of 896, exactly half -> negative ...
    ignored[28:60, 20:28] = True   # ... until 256 background pixels are ignored: 448 of 640
    labels, usable = patch_labels(fg, ignored, (2, 2))
    assert labels.tolist() == [[1, 0], [1, 0]] and usable.all()
    ignored[28:60, 28:60] = True   # cell (1, 1): nothing counted
    labels, usable = patch_labels(fg, ignored, (2, 2))
    assert usable.tolist() == [[True, True], [True, False]]
    # a grid wider than the image: cell 2's patch keeps rows 60..63, cell 3's lies outside it
    usable = patch_labels(fg, ignored, (4, 4))[1]
    assert usable[2].tolist() == [True, True, True, False] and usable[3].tolist() == [False] * 4


def test_bilinear_labels_sample_the_mask_at_each_cell_s_centre():
    fg, ignored = np.zeros((64, 64), bool), np.zeros((64, 64), bool)
    fg[12, 12] = fg[44, 12] = True   # centres: pixel 32 i + 12 (edge coordinate 32 i + 12.5)
    ignored[44, 44] = True
    labels, usable = patch_labels(fg, ignored, (2, 2), rule="bilinear")
    assert labels.tolist() == [[1, 0], [1, 0]] and usable.tolist() == [[True, True], [True, False]]
    with pytest.raises(ReproduceError, match="unknown patch-label rule"):
        patch_labels(fg, ignored, (2, 2), rule="nearest")


def test_one_nearest_neighbour_by_l2_and_logistic_regression():
    support, labels = np.array([[0.0, 0.0], [10.0, 0.0]]), np.array([0, 1])
    query = np.array([[1.0, 0.0], [9.0, 0.0], [5.5, 3.0], [4.0, -2.0]])
    assert nearest_neighbour(support, labels, query).tolist() == [0.0, 1.0, 1.0, 0.0]
    assert nearest_neighbour(support[:0], labels[:0], query).tolist() == [0.0] * 4
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-2, 1, (50, 3)), rng.normal(2, 1, (50, 3))])
    y = np.repeat([0, 1], 50)
    p = logistic_regression(x, y, np.array([[-3.0] * 3, [0.0] * 3, [3.0] * 3]))
    assert p[0] < 0.05 < 0.95 < p[2] and abs(p[1] - 0.5) < 0.2
    assert logistic_regression(x, np.ones(100, int), x[:2]).tolist() == [1.0, 1.0]  # one class: that class


def test_cell_scores_come_back_to_the_image_by_fcns_bilinear_upsampling():
    assert np.array_equal(cells_to_grid(np.full((16, 16), 0.3), (500, 500)), np.full((500, 500), 0.3, np.float32))
    hot = np.zeros((16, 16))
    hot[5, 7] = 1.0
    grid = cells_to_grid(hot, (500, 500))
    # cell (5, 7) is centred at edge coordinates (172.5, 236.5): pixels 172/173 and 236/237 peak
    peak = np.unravel_index(np.argmax(grid), grid.shape)
    assert peak[0] in (172, 173) and peak[1] in (236, 237)
    # pixel 172 is tap 31 of cell 5's 64-tap kernel (1 - 0.5 / 32) and tap 63 of cell 4's (0 here)
    assert grid[172, 236] == pytest.approx((1 - 0.5 / 32) ** 2, abs=1e-6)
    assert grid[172 + 32, 236] == pytest.approx(0.5 / 32 * (1 - 0.5 / 32), abs=1e-6)  # its last tap
    assert grid[172 + 33, 236] == 0.0 and grid[172 - 33, 236] == 0.0


class FakeBase:
    """Features given by hand: fc7 of 2 channels on the 16x16 grid of a 500x500 image; the top-left
    2x2 cells as given, every other cell (100, 100)."""
    def __init__(self, corner: dict):
        self.fc7 = {}
        for name, cells in corner.items():
            fc7 = np.full((2, 16, 16), 100.0)
            fc7[:, :2, :2] = cells
            self.fc7[name] = torch.tensor(fc7, dtype=torch.float32)[None]

    def features(self, inputs, name):
        return {"fc7": self.fc7[name]}


class FakeInputs:
    def __init__(self, labels: dict):
        self.labels = labels

    def query_label(self, name, cls, with_void):
        return self.labels[name].astype(np.float32), np.zeros(self.labels[name].shape, bool)


def test_k_supports_are_pooled_into_one_training_set():
    # image a: its left column of corner cells is foreground; image b: the right one, other features
    a, b = np.zeros((500, 500)), np.zeros((500, 500))
    a[:60, :28] = 1
    b[:60, 28:60] = 1
    base = FakeBase({"a": [[[1, 0], [1, 0]], [[0, 0], [0, 0]]],   # (1, 0) left (fg), (0, 0) right (bg)
                     "b": [[[0, 0], [0, 0]], [[0, 5], [0, 5]]],   # (0, 0) left (bg), (0, 5) right (fg)
                     "q": [[[1, 0], [0, 0]], [[0, 5], [0, 0]]]})  # (1, 0), (0, 5), then (0, 0) twice
    inputs = FakeInputs({"a": a, "b": b, "q": np.zeros((500, 500))})
    one = NearestNeighbour().score(base, inputs, Episode("q", 1, ("a",)))
    two = NearestNeighbour().score(base, inputs, Episode("q", 1, ("a", "b")))
    # 1-shot: (0, 5) is nearer a's background (0, 0) than its foreground (1, 0); 2-shot: b's foreground
    assert one.shape == (500, 500)
    # at a cell's centre pixel: 63/64 of its own score and 1/64 of the cell before it (the first
    # cell of a row has none, and the upsampled ones divide it out)
    cell = lambda grid, i, j: grid[32 * i + 12, 32 * j + 12]  # noqa: E731
    assert [cell(one, 0, 0), cell(one, 0, 1), cell(one, 1, 0)] == pytest.approx([1.0, 1 / 64, 1 / 64], abs=1e-6)
    assert [cell(two, 0, 0), cell(two, 0, 1), cell(two, 1, 0)] == pytest.approx([1.0, 1.0, 1 / 64], abs=1e-6)


def test_fine_tuning_steps_are_caffes_sgd(tmp_path):
    """Zero-initialised, the new score layer says 0.5 everywhere; one iteration moves it by
    Caffe's SGD rule (v = momentum v + rate (grad + decay w), w -= v) and towards the support."""
    rng = np.random.default_rng(1)
    base = {"fc6": [rng.standard_normal((4, 3, 7, 7)).astype(np.float32) * 0.2, np.full(4, 0.1, np.float32)],
            "fc7": [rng.standard_normal((4, 4, 1, 1)).astype(np.float32), np.full(4, 0.1, np.float32)]}
    pool5 = torch.tensor(rng.random((1, 3, 10, 10)), dtype=torch.float32)
    label = np.ones((100, 100), np.uint8)
    label[:, :30] = 0
    label[0:5] = 255
    untouched = fine_tuned_scores(base, [(pool5, label)], pool5, iterations=0, base_lr=0.1, momentum=0.9,
                                  weight_decay=5e-4, device=torch.device("cpu"))
    assert np.array_equal(untouched, np.full((100, 100), 0.5, np.float32))
    once = fine_tuned_scores(base, [(pool5, label)], pool5, iterations=1, base_lr=0.1, momentum=0.9,
                             weight_decay=5e-4, device=torch.device("cpu"))
    # by hand: the loss over the counted pixels, its gradient at zero score weights, one SGD step
    from weights_convert.fcn.surgery import interp
    import torch.nn.functional as F
    fc7 = F.relu(F.conv2d(F.relu(F.conv2d(pool5, torch.tensor(base["fc6"][0]), torch.tensor(base["fc6"][1]))),
                          torch.tensor(base["fc7"][0]), torch.tensor(base["fc7"][1])))
    w = torch.zeros(2, 4, 1, 1, requires_grad=True)
    b = torch.zeros(2, requires_grad=True)
    up = lambda score: F.conv_transpose2d(score, torch.tensor(interp((2, 2, 64, 64))), stride=32)[  # noqa: E731
        :, :, 19:119, 19:119]
    target = torch.tensor(label.astype(np.int64))[None]
    F.cross_entropy(up(F.conv2d(fc7, w, b)), target, ignore_index=255).backward()
    with torch.no_grad():
        w_new, b_new = -0.1 * w.grad, -0.1 * 2 * b.grad   # bias: lr_mult 2, decay 0; zero weights: no decay
        expected = torch.softmax(up(F.conv2d(fc7, w_new, b_new)), dim=1)[0, 1].numpy()
    assert once == pytest.approx(expected, abs=1e-5)
    assert once[50, 80] > once[50, 10]  # the support's foreground side scores higher


def test_methods_by_name():
    assert [type(m) for m in methods_named(["logreg", "1nn", "logreg"])] == [LogReg, NearestNeighbour]
    assert FineTune().record() == {"method": "finetune", "iterations": 20, "base_lr": 1e-3, "momentum": 0.9,
                                   "weight_decay": 5e-4}
    with pytest.raises(ReproduceError, match="unknown method.*knn"):
        methods_named(["knn"])

"""HSNet's scoring on hand-built masks and scores: the ignore rule, the grids (nearest-resized
mask, bilinear score), the per-class float32 accumulation, mIoU and FB-IoU; checked against
HSNet's own formulation (common/evaluation.py, common/logger.py) written out here with torch."""
import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reproduce.errors import ReproduceError
from reproduce.evaluation.hsnet_scoring import hsnet_counts, hsnet_fold_summary, hsnet_truth, score_on_grid
from reproduce.evaluation.protocols import add_protocol_arguments, protocol_from_args, protocol_named, protocol_of
from reproduce.evaluation.protocols.hsnet import HSNet


def hsnet_areas(score500: np.ndarray, mask: np.ndarray, cls: int, size: int | None):
    """HSNet's path, op for op: the mask's ignore index (floor(mask / 255)), the class made 1 and the
    rest 0, the logits brought to the mask's grid, ignored pixels set to 255 in the prediction, and
    torch.histc of the intersection, prediction and truth over [0, 1]."""
    query_mask = torch.tensor(mask).float()
    if size is not None:
        query_mask = F.interpolate(query_mask[None, None], (size, size), mode="nearest").squeeze()
    ignore = (query_mask / 255).floor()
    query_mask[query_mask != cls] = 0
    query_mask[query_mask == cls] = 1
    score = F.interpolate(torch.tensor(score500)[None, None], tuple(query_mask.shape), mode="bilinear",
                          align_corners=True)[0, 0]
    pred = (score > 0.5).float()
    gt = query_mask + ignore * 255
    pred[gt == 255] = 255
    inter = pred[pred == gt]
    area_inter = torch.histc(inter, bins=2, min=0, max=1)
    area_union = torch.histc(pred, bins=2, min=0, max=1) + torch.histc(gt, bins=2, min=0, max=1) - area_inter
    return area_inter.numpy(), area_union.numpy()


def _row(i, cls, c):
    return [i, 0, cls - 1, c.tp, c.tn, c.fp, c.fn, 0.0]


def test_ignored_pixels_count_nowhere():
    mask = np.array([[0, 3, 3], [255, 3, 0], [7, 255, 0]], np.uint8)
    score = np.array([[0.9, 0.9, 0.1], [0.9, 0.2, 0.9], [0.9, 0.9, 0.4]], np.float32)
    c = hsnet_counts(score, hsnet_truth(mask, 3))
    # not ignored: (0,0) bg/p, (0,1) fg/p, (0,2) fg/n, (1,1) fg/n, (1,2) bg/p, (2,0) other class = bg/p, (2,2) bg/n
    assert (c.tp, c.tn, c.fp, c.fn) == (1, 1, 3, 2)


@pytest.mark.parametrize("size", [None, 7, 400])
def test_counts_are_hsnets_areas_on_random_maps(size):
    rng = np.random.default_rng(size or 1)
    for _ in range(5):
        h, w = rng.integers(20, 90, 2)
        mask = rng.choice(np.array([0, 4, 4, 9, 255], np.uint8), (h, w))
        score = rng.random((500, 500)).astype(np.float32)
        score = F.avg_pool2d(torch.tensor(score)[None, None], 25, 1, 12, count_include_pad=False)[0, 0].numpy()
        score = (score - score.mean()) * 20 + 0.5  # smooth, and on both sides of 0.5
        c = hsnet_counts(score, hsnet_truth(mask, 4, size))
        inter, union = hsnet_areas(score, mask, 4, size)
        assert (c.tn, c.tp) == tuple(inter.astype(int))
        assert (c.tn + c.fp + c.fn, c.tp + c.fp + c.fn) == tuple(union.astype(int))
        assert c.tp > 0 and c.tn > 0  # both classes present: the comparison has teeth


def test_the_mask_is_nearest_resized_and_the_score_bilinear_with_corners_aligned():
    mask = np.arange(12, dtype=np.uint8).reshape(3, 4)
    foreground, ignored = hsnet_truth(mask, 5, size=6)
    # torch's nearest: source index floor(i * in / out): rows 0,0,1,1,2,2; columns 0,0,1,2,2,3
    assert foreground.shape == (6, 6) and not ignored.any()
    assert np.argwhere(foreground).tolist() == [[2, 2], [3, 2]]  # value 5 is row 1, column 1
    ramp = np.tile(np.linspace(0, 1, 500, dtype=np.float32), (500, 1))
    grid = score_on_grid(ramp, (3, 5))
    assert np.allclose(grid[0], [0, 0.25, 0.5, 0.75, 1.0], atol=1e-6)  # corners map to corners
    assert np.array_equal(score_on_grid(ramp, (500, 500)), ramp)


def test_fold_numbers_accumulate_per_class_as_hsnet():
    rows = [[0, 0, 0, 30, 50, 10, 10, 0.0],   # class 1: I_fg 30, U_fg 50; I_bg 50, U_bg 70
            [1, 0, 1, 0, 90, 0, 0, 0.0],      # class 2: nothing predicted, nothing there: U_fg 0
            [2, 0, 0, 10, 40, 0, 30, 0.0]]    # class 1 again: I_fg 10, U_fg 40; I_bg 40, U_bg 70
    s = hsnet_fold_summary([1, 2, 3, 4, 5], rows)
    assert s["per_class"]["1"]["iou"] == pytest.approx(40 / 90)
    assert s["per_class"]["2"]["iou"] == 0.0 and s["per_class"]["3"]["iou"] == 0.0  # I / max(U, 1)
    assert s["miou"] == pytest.approx((40 / 90) / 5)
    # FB-IoU: over the fold's classes, sum I / sum U for background and foreground, then their mean
    assert s["fb_iou"] == pytest.approx(0.5 * ((50 + 90 + 40) / (70 + 90 + 70) + 40 / 90))
    assert s["per_class"]["1"]["tp"] == 40 and s["episodes"] == 3
    with pytest.raises(ReproduceError, match="not a test class"):
        hsnet_fold_summary([1, 2, 3, 4, 5], [[0, 0, 7, 1, 1, 1, 1, 0.0]])


def test_sums_are_float32_as_hsnets_buffers():
    """Past 2^24 a float32 sum rounds: HSNet's numbers carry that rounding, and so do ours."""
    big = 1 << 24
    rows = [[0, 0, 0, big, 0, 0, 0, 0.0], [1, 0, 0, 1, 0, 2, 0, 0.0]]
    s = hsnet_fold_summary([1, 2, 3, 4, 5], rows)
    # I = 2^24 + 1 rounds to 2^24; U = 2^24 + 3 rounds (to even) to 2^24 + 4
    assert s["per_class"]["1"]["iou"] == pytest.approx(big / (big + 4), abs=0, rel=1e-12)
    assert s["per_class"]["1"]["iou"] != pytest.approx((big + 1) / (big + 3), abs=0, rel=1e-9)
    assert s["per_class"]["1"]["tp"] == big + 1  # the integer counts stay exact


def test_protocol_labels_records_and_refusals():
    hsnet, hsnet400 = HSNet(), HSNet(size=400)
    assert hsnet.label == "hsnet (scored at the image's size)"
    assert hsnet400.label == "hsnet (scored at 400x400)"
    assert (hsnet.table_suffix, hsnet400.table_suffix, protocol_named("original").table_suffix,
            protocol_named("modern").table_suffix) == ("_hsnet", "_hsnet400", "", "")
    assert protocol_named("original").record() == {"protocol": "original"}
    assert hsnet400.record() == {"protocol": "hsnet", "hsnet_size": 400}
    assert protocol_of(hsnet400.record()) == hsnet400 and protocol_of({"protocol": "modern"}) == protocol_named("modern")
    # the options of one protocol, given with another, are refused by name; its own are checked
    parser = argparse.ArgumentParser()
    add_protocol_arguments(parser)
    protocol, problems = protocol_from_args(parser.parse_args(["--hsnet-size", "400"]))
    assert protocol is None and problems[0].startswith("--hsnet-size: option(s) of --protocol hsnet only")
    protocol, problems = protocol_from_args(parser.parse_args(["--protocol", "hsnet", "--hsnet-size", "0"]))
    assert protocol == HSNet(size=0) and len(problems) == 1 and "--hsnet-size" in problems[0]
    protocol, problems = protocol_from_args(parser.parse_args(["--protocol", "hsnet", "--masks", "m"]), folds=[0])
    assert protocol == HSNet(masks=Path("m")) and problems == []
    with pytest.raises(ReproduceError, match="unknown scoring protocol 'pfenet'"):
        protocol_named("pfenet")

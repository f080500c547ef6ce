"""HSNet's PASCAL-5i scoring (github juhongm999/hsnet at 6b1bc12: data/pascal.py, common/evaluation.py,
common/logger.py), applied to OSLSM's own prediction.

- Truth: the query's `SegmentationClassAug` mask at the image's size: 1 where it holds the episode's
  class, 0 elsewhere, its 255 pixels ignored. With a scoring size S (HSNet's default, 400), the mask
  is first brought to SxS by torch's nearest interpolation, as HSNet's dataset does.
- Prediction: OSLSM's score (the sigmoid on its 500x500 query grid) brought to the scoring grid by
  bilinear interpolation with align_corners=True (as HSNet brings its logits to the image's size),
  then score > 0.5, test.py's threshold.
- Per episode, the intersection and union of background and of foreground over the pixels not
  ignored: from tp, tn, fp, fn, I_fg = tp, U_fg = tp + fp + fn, I_bg = tn, U_bg = tn + fn + fp.
- Per fold, HSNet's AverageMeter: the four areas summed per class in float32, episode after
  episode (its buffers are float32; sums past 2^24 round as they did there); mIoU = mean over the
  fold's classes of I_fg / max(U_fg, 1); FB-IoU = mean over {bg, fg} of (sum of I) / (sum of U)
  over the fold's classes.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from reproduce.data.voc import VOID
from reproduce.errors import ReproduceError
from reproduce.evaluation.scoring import THRESHOLD, Counts


def hsnet_truth(mask: np.ndarray, cls: int, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(foreground, ignored) boolean grids of a class-index mask, at its size or nearest-resized
    to size x size."""
    mask = np.asarray(mask)
    if size is not None:
        grid = F.interpolate(torch.from_numpy(mask.astype(np.float32))[None, None], size=(size, size), mode="nearest")
        mask = grid[0, 0].numpy()
    return mask == cls, mask == VOID


def score_on_grid(score: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """The 500x500 score map brought to an (H, W) grid: bilinear, align_corners=True."""
    grid = torch.from_numpy(np.ascontiguousarray(score, dtype=np.float32))[None, None]
    if tuple(grid.shape[2:]) == tuple(hw):
        return grid[0, 0].numpy()
    return F.interpolate(grid, size=tuple(hw), mode="bilinear", align_corners=True)[0, 0].numpy()


def hsnet_counts(score: np.ndarray, truth: tuple[np.ndarray, np.ndarray]) -> Counts:
    """tp, tn, fp, fn of one episode over the pixels HSNet does not ignore."""
    foreground, ignored = truth
    predicted = score_on_grid(score, foreground.shape) > THRESHOLD
    keep = ~ignored
    y, p = foreground[keep], predicted[keep]
    return Counts(tp=int(np.count_nonzero(y & p)), tn=int(np.count_nonzero(~y & ~p)),
                  fp=int(np.count_nonzero(~y & p)), fn=int(np.count_nonzero(y & ~p)))


def hsnet_fold_summary(test_classes: Sequence[int], rows: Iterable[Sequence]) -> dict:
    """The fold's numbers from the journal's rows ([iter, 0, class_index0, tp, tn, fp, fn, iou]), in
    the shape of scoring.summary_block: per class the integer counts and HSNet's IoU, mIoU, FB-IoU."""
    classes = [int(c) for c in test_classes]
    # areas[c] = [I_bg, I_fg, U_bg, U_fg], float32 sums in episode order as HSNet's buffers
    areas = {c: np.zeros(4, np.float32) for c in classes}
    totals = {c: np.zeros(4, np.int64) for c in classes}
    episodes = 0
    for row in rows:
        cls = int(row[2]) + 1
        if cls not in areas:
            raise ReproduceError(f"episode class {cls} is not a test class of this fold {classes}")
        tp, tn, fp, fn = (int(v) for v in row[3:7])
        areas[cls] += np.array([tn, tp, tn + fn + fp, tp + fp + fn], np.float32)
        totals[cls] += (tp, tn, fp, fn)
        episodes += 1
    class_iou = {c: float(areas[c][1] / max(areas[c][3], np.float32(1))) for c in classes}
    summed = np.sum([areas[c] for c in classes], axis=0, dtype=np.float32)
    fb_iou = 0.5 * (float(summed[0] / summed[2]) + float(summed[1] / summed[3])) if summed[2] and summed[3] else 0.0
    per_class = {str(c): {"tp": int(totals[c][0]), "tn": int(totals[c][1]), "fp": int(totals[c][2]),
                          "fn": int(totals[c][3]), "iou": class_iou[c]} for c in classes}
    return {"per_class": per_class, "miou": float(np.mean(list(class_iou.values()))), "fb_iou": fb_iou,
            "episodes": episodes, "accumulation": "float32 per class in episode order (HSNet's AverageMeter)"}

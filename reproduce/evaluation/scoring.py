"""Scoring of the original OSLSM `test.py`: per-episode confusion counts on the query grid,
per-class IoU summed over a fold's episodes, the fold mIoU, FB-IoU, and the original result files.

The paper's numbers: y = label > 0.5, p = score > 0.5 on the 500x500 query grid, every pixel
counted; void (255) is already background (0) in the binary label. Given the query's void mask,
those pixels are left out of every count (protocol `modern`, for comparison only).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Iterable, Sequence

import numpy as np

from reproduce.errors import ReproduceError
from weights_convert.files.atomic import atomic_write_text
from reproduce.data.pascal5i import N_CLASSES

THRESHOLD = 0.5


@dataclasses.dataclass(frozen=True)
class Counts:
    tp: int
    tn: int
    fp: int
    fn: int

    @property
    def iou(self) -> float:
        """test.py's per-image IoU: tp / max(tp + fp + fn, 1)."""
        return iou(self.tp, self.fp, self.fn)


def _as_grid(array, name: str) -> np.ndarray:
    a = np.asarray(array)
    # Accept (H,W), (1,H,W), (1,1,H,W): the net's blobs carry leading singleton axes.
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ReproduceError(f"{name}: expected a 2-D grid (or leading singleton axes), got shape {np.shape(array)}")
    return a


def episode_counts(score, label, void=None) -> Counts:
    """tp/tn/fp/fn of one episode. `score` is the sigmoid output (p = score > 0.5, as test.py);
    `label` the resized binary query label (y = label > 0.5); `void` (bool, same grid, or None):
    pixels left out of every count."""
    s = _as_grid(score, "score")
    y_in = _as_grid(label, "label")
    if s.shape != y_in.shape:
        raise ReproduceError(f"score grid {s.shape} and label grid {y_in.shape} differ")
    y = y_in > THRESHOLD
    p = s > THRESHOLD
    if void is not None:
        v = _as_grid(void, "void").astype(bool)
        if v.shape != s.shape:
            raise ReproduceError(f"void grid {v.shape} and score grid {s.shape} differ")
        y, p = y[~v], p[~v]
    return Counts(
        tp=int(np.count_nonzero(y & p)),
        tn=int(np.count_nonzero(~y & ~p)),
        fp=int(np.count_nonzero(~y & p)),
        fn=int(np.count_nonzero(y & ~p)),
    )


def iou(tp: int, fp: int, fn: int) -> float:
    return tp / float(max(tp + fp + fn, 1))


class FoldScore:
    """Sums of one fold's episodes per class (1..20), as test.py's tp_list/fp_list/fn_list,
    plus tn so that FB-IoU can be pooled too."""

    def __init__(self, test_classes: Sequence[int]):
        self.test_classes = [int(c) for c in test_classes]
        for c in self.test_classes:
            if not 1 <= c <= N_CLASSES:
                raise ReproduceError(f"class id {c} outside 1..{N_CLASSES}")
        self.tp = [0] * N_CLASSES
        self.tn = [0] * N_CLASSES
        self.fp = [0] * N_CLASSES
        self.fn = [0] * N_CLASSES
        self.episodes = 0

    def add(self, cls: int, counts: Counts) -> None:
        if cls not in self.test_classes:
            raise ReproduceError(f"episode class {cls} is not a test class of this fold {self.test_classes}")
        i = cls - 1
        self.tp[i] += counts.tp
        self.tn[i] += counts.tn
        self.fp[i] += counts.fp
        self.fn[i] += counts.fn
        self.episodes += 1

    def class_iou(self, cls: int) -> float:
        i = cls - 1
        return iou(self.tp[i], self.fp[i], self.fn[i])

    def iou_all(self) -> list[float]:
        """IoU of all 20 classes; non-test classes are the 0.0 placeholders of test.py."""
        return [iou(self.tp[i], self.fp[i], self.fn[i]) for i in range(N_CLASSES)]

    def miou(self) -> float:
        """Mean IoU over the fold's test classes (a fraction; the tables show x100)."""
        return float(np.mean([self.class_iou(c) for c in self.test_classes]))

    def fb_iou(self) -> float:
        """FB-IoU as later papers: the mean of foreground IoU and background IoU, each pooled over
        all of the fold's episodes (background's tp is the foreground's tn, its fp/fn swap)."""
        tp, tn, fp, fn = (sum(v) for v in (self.tp, self.tn, self.fp, self.fn))
        return 0.5 * (iou(tp, fp, fn) + iou(tn, fn, fp))

    def per_class(self) -> dict[str, dict]:
        out = {}
        for c in self.test_classes:
            i = c - 1
            out[str(c)] = {"tp": self.tp[i], "tn": self.tn[i], "fp": self.fp[i], "fn": self.fn[i],
                           "iou": self.class_iou(c)}
        return out


def fold_score_from_rows(test_classes: Sequence[int], rows: Iterable[Sequence]) -> FoldScore:
    """Rebuild the sums from per-episode CSV rows (`[iter, 0, class_index0, tp, tn, fp, fn, iou]`)."""
    fs = FoldScore(test_classes)
    for row in rows:
        fs.add(int(row[2]) + 1, Counts(int(row[3]), int(row[4]), int(row[5]), int(row[6])))
    return fs


def py2_str(x) -> str:
    """Python 2.7's str() of a number, which test.py used for iou_results.txt: ints as is,
    floats with 12 significant digits and a '.0' when they look integral."""
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return str(int(x))
    x = float(x)
    s = "%.12g" % x
    if not any(ch in s for ch in ".ein"):
        s += ".0"
    return s


def iou_results_text(fs: FoldScore) -> str:
    """The layout of test.py's iou_results.txt: all 20 classes per line, then the mean over
    the test classes. (test.py rewrote this file only when iter % 10 == 0, so its copy lacked
    the last 9 of 1000 episodes; ours holds all of them, like the mean it printed at the end.)"""
    ious = fs.iou_all()
    lines = [
        "tp: " + " ".join(py2_str(v) for v in fs.tp),
        "fp: " + " ".join(py2_str(v) for v in fs.fp),
        "fn: " + " ".join(py2_str(v) for v in fs.fn),
        "iou (all categories): " + " ".join(py2_str(v) for v in ious),
        "mean_iou (only test categories): " + py2_str(fs.miou()),
    ]
    return "\n".join(lines) + "\n"


def write_iou_results_txt(path: str | os.PathLike, fs: FoldScore) -> None:
    atomic_write_text(path, iou_results_text(fs))


def csv_row(iteration: int, cls: int, counts: Counts) -> list:
    """test.py's all_results.csv row: [iter, 0, class_index0, tp, tn, fp, fn, iou_img]."""
    return [int(iteration), 0, int(cls) - 1, counts.tp, counts.tn, counts.fp, counts.fn, counts.iou]


def format_csv_row(row: Sequence) -> str:
    # Floats as repr (what the csv module writes), ints plain.
    return ",".join(repr(float(v)) if isinstance(v, float) else str(int(v)) for v in row) + "\n"


def parse_csv_line(line: str, source: str, lineno: int) -> list:
    parts = line.rstrip("\n").split(",")
    if len(parts) != 8:
        raise ReproduceError(f"{source}:{lineno}: expected 8 comma-separated fields "
                             f"[iter,0,class_index0,tp,tn,fp,fn,iou], got {len(parts)}")
    try:
        ints = [int(p) for p in parts[:7]]
        val = float(parts[7])
    except ValueError as exc:
        raise ReproduceError(f"{source}:{lineno}: malformed number ({exc})") from None
    return ints + [val]


def summary_block(fs: FoldScore) -> dict:
    """The deterministic numbers of a fold, for summary.json."""
    return {
        "per_class": fs.per_class(),
        "miou": fs.miou(),
        "fb_iou": fs.fb_iou(),
        "episodes": fs.episodes,
    }


"""The kit's scoring protocols side by side: what an episode's score map is compared with, on which
grid, and how a fold's per-episode counts become its mIoU and FB-IoU.

- original: OSLSM's test.py on its 500x500 query grid, void counted as background (the paper's).
- modern: the same grid with void pixels ignored (for comparison only).
- hsnet: HSNet's PASCAL-5i scoring at the image's size, or at size x size (hsnet_scoring.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from reproduce.errors import ReproduceError
from reproduce.evaluation.scoring import Counts, episode_counts, fold_score_from_rows, summary_block

PROTOCOLS = ("original", "modern", "hsnet")


@dataclass(frozen=True)
class Protocol:
    name: str = "original"
    size: int | None = None   # hsnet only: score at size x size (HSNet's default 400) instead of the image's size

    def __post_init__(self):
        if self.name not in PROTOCOLS:
            raise ReproduceError(f"unknown scoring protocol {self.name!r}; expected one of {', '.join(PROTOCOLS)}")
        if self.size is not None and (self.name != "hsnet" or self.size < 1):
            raise ReproduceError(f"a scoring size ({self.size}) is an option of protocol hsnet only, and >= 1")

    @classmethod
    def of(cls, record: dict) -> "Protocol":
        """The protocol a run's manifest or summary records."""
        return cls(record["protocol"], record.get("hsnet_size"))

    @property
    def label(self) -> str:
        """How tables and reports name it: one label per measure."""
        if self.name != "hsnet":
            return self.name
        return "hsnet (scored at the image's size)" if self.size is None else f"hsnet (scored at {self.size}x{self.size})"

    @property
    def table_suffix(self) -> str:
        """Table files of another protocol than the paper's get their own names."""
        return "" if self.name != "hsnet" else "_hsnet" if self.size is None else f"_hsnet{self.size}"

    def record(self) -> dict:
        """The fields a manifest and a summary carry (hsnet_size only where it applies, so that the
        runs made before it existed still resume)."""
        return {"protocol": self.name, **({"hsnet_size": self.size} if self.name == "hsnet" else {})}

    def truth(self, inputs, name: str, cls: int):
        """What the episode's score map is compared with (computed in the feature provider's workers)."""
        if self.name == "hsnet":
            from reproduce.evaluation import hsnet_scoring  # torch: loaded only where hsnet scores

            return hsnet_scoring.hsnet_truth(inputs.query_mask(name), cls, self.size)
        return inputs.query_label(name, cls, self.name == "modern")

    def counts(self, score: np.ndarray, truth) -> Counts:
        if self.name == "hsnet":
            from reproduce.evaluation import hsnet_scoring

            return hsnet_scoring.hsnet_counts(score, truth)
        label, void = truth
        return episode_counts(score, label, void, protocol=self.name)

    def fold_summary(self, test_classes: Sequence[int], rows: Iterable[Sequence]) -> dict:
        """per_class, miou, fb_iou (fractions) and episodes of a fold, from its journal's rows."""
        if self.name == "hsnet":
            from reproduce.evaluation import hsnet_scoring

            return hsnet_scoring.hsnet_fold_summary(test_classes, rows)
        return summary_block(fold_score_from_rows(test_classes, rows))

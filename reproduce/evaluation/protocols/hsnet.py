"""Protocol `hsnet`: HSNet's PASCAL-5i test (its split files and episodes, SegmentationClassAug
masks with 255 ignored, its mIoU and FB-IoU; hsnet_scoring.py, data/hsnet.py), optionally at
size x size. Its numbers are never set against the paper's: they measure something else."""
from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Iterable, Sequence

import numpy as np

from reproduce.data.hsnet import MASKS, SPLITS, hsnet_episodes, hsnet_items, split_file, splits_status
from reproduce.errors import collect
from reproduce.evaluation.protocols.base import DATA, SCORING, Option, Protocol
from reproduce.evaluation.scoring import Counts
from reproduce.numeric_options import numeric_problems


@dataclass(frozen=True)
class HSNet(Protocol):
    name = "hsnet"
    summary = "HSNet's episodes, SegmentationClassAug masks and scoring (docs/protocols.md)"
    comparable_with_paper = False
    writes_test_py_file = False
    needs_data_for_episodes = False
    options = (
        Option("--hsnet-splits", "splits", "a folder of fold0.txt .. fold3.txt split files (default: HSNet's own, "
               "packaged)", Path),
        Option("--masks", "masks", "the SegmentationClassAug folder (default: VOC/SegmentationClassAug)", Path,
               frozenset({SCORING, DATA})),
        Option("--hsnet-size", "size", "score at SIZE x SIZE, the mask nearest-resized, as HSNet's default 400 "
               "(default: at the image's own size)", int, frozenset({SCORING})),
    )

    splits: Path | None = None  # None: HSNet's own split files
    masks: Path | None = None   # None: SegmentationClassAug beside JPEGImages
    size: int | None = None     # None: scored at the image's size

    @classmethod
    def from_record(cls, record: dict) -> "HSNet":
        return cls(size=record.get("hsnet_size"))

    def record(self) -> dict:
        return {"protocol": self.name, "hsnet_size": self.size}

    @property
    def label(self) -> str:
        return "hsnet (scored at the image's size)" if self.size is None else f"hsnet (scored at {self.size}x{self.size})"

    @property
    def table_suffix(self) -> str:
        return "_hsnet" if self.size is None else f"_hsnet{self.size}"

    @property
    def split_folder(self) -> Path:
        return self.splits or SPLITS

    def problems(self, folds: Iterable[int]) -> list[str]:
        problems = numeric_problems(SimpleNamespace(hsnet_size=self.size))
        for fold in folds:
            collect(problems, split_file, fold, self.split_folder)
        return problems

    def mask_dir(self, voc) -> Path | None:
        if self.masks is not None or hasattr(voc, "read_image"):
            return self.masks
        return Path(voc) / MASKS

    def episodes(self, dataset, fold: int, shots: int, n: int, *, episodes_file=None, scan_dir=None,
                 use_cache: bool = True) -> tuple[list, int]:
        if episodes_file is not None:
            return super().episodes(dataset, fold, shots, n, episodes_file=episodes_file, scan_dir=scan_dir,
                                    use_cache=use_cache)
        return hsnet_episodes(fold, shots, n, self.split_folder), len(hsnet_items(fold, self.split_folder))

    def reference(self, episodes: Sequence, dataset, fold: int, shots: int, from_file: bool) -> str:
        return ("not applicable (hsnet, episodes from a file)" if from_file else
                f"not applicable (hsnet: {splits_status(self.split_folder)})")

    def sources(self, dataset) -> dict:
        root = getattr(dataset, "root", None)
        return {"masks": str(Path(dataset.mask_dir).resolve())} if root else {}

    def check_data(self, voc, cache_dir=None) -> tuple[list[str], bool]:
        from reproduce.data.check_voc import check_hsnet

        return check_hsnet(voc, self.masks, self.splits), True  # check_hsnet raises on what is missing

    def truth(self, inputs, name: str, cls: int):
        from reproduce.evaluation import hsnet_scoring  # torch: loaded only where hsnet scores

        return hsnet_scoring.hsnet_truth(inputs.query_mask(name), cls, self.size)

    def counts(self, score: np.ndarray, truth) -> Counts:
        from reproduce.evaluation import hsnet_scoring

        return hsnet_scoring.hsnet_counts(score, truth)

    def fold_summary(self, test_classes: Sequence[int], rows: Iterable[Sequence]) -> dict:
        from reproduce.evaluation import hsnet_scoring

        return hsnet_scoring.hsnet_fold_summary(test_classes, rows)

    def table_heading(self, table: int, shots: int) -> str:
        return f"Table {table}: OSLSM {shots}-shot mIoU (%) on PASCAL-5i under HSNet's protocol, {self.label}"

    def table_note(self) -> str:
        return ("**Protocol `hsnet`:** HSNet's test episodes, `SegmentationClassAug` masks, 255 ignored, its mIoU "
                "and FB-IoU (docs/protocols.md). The paper's numbers are of OSLSM's own protocol, shown for "
                "orientation only: no row subtracts one from the other.")

    def report_note(self) -> str:
        return (f"Protocol <code>{html.escape(self.label)}</code>: HSNet's episodes, SegmentationClassAug masks "
                "with 255 ignored, HSNet's mIoU and FB-IoU. The paper's number is of OSLSM's own protocol and is "
                "not subtracted from this one.")

    def run_masks(self, sources: dict, voc_root: Path) -> Path | None:
        recorded = sources.get("masks")
        return Path(recorded) if recorded and Path(recorded).is_dir() else Path(voc_root) / MASKS

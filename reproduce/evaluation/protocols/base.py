"""What a scoring protocol is: the episodes it tests on, what a score map is compared with, how a
fold's rows become its numbers, its own command-line options and their checks, the fields its
runs record, and how tables and reports name it. One module per protocol subclasses `Protocol`;
the registry (protocols/__init__.py) lists them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Iterable, Sequence

import numpy as np

from reproduce.evaluation.scoring import Counts, episode_counts, fold_score_from_rows, summary_block

SCORING, EPISODES, DATA = "scoring", "episodes", "data"  # the kinds of command that take a protocol


@dataclass(frozen=True)
class Option:
    """One command-line option of a protocol: `--flag VALUE` sets the protocol's field `field`."""
    flag: str
    field: str
    help: str
    type: Callable = str
    commands: frozenset = frozenset({SCORING, EPISODES, DATA})  # the kinds of command that take it

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Protocol:
    """The paper's own scoring is the default every method falls back on; a protocol overrides what
    it does differently. Instances are frozen: equal options, equal protocols."""
    name: ClassVar[str]
    summary: ClassVar[str]                    # one line: what it measures (help texts, refusals)
    options: ClassVar[tuple[Option, ...]] = ()
    papers_own: ClassVar[bool] = False           # the paper's numbers are of this protocol
    comparable_with_paper: ClassVar[bool] = True  # may a difference with the paper's number be printed
    writes_test_py_file: ClassVar[bool] = True    # iou_results.txt, test.py's own file of its sums
    needs_data_for_episodes: ClassVar[bool] = True

    # -- identity and records --
    @classmethod
    def from_record(cls, record: dict) -> "Protocol":
        """The protocol a run's manifest or summary records (the fields of `record()`)."""
        return cls()

    def record(self) -> dict:
        """The fields a manifest and a summary carry."""
        return {"protocol": self.name}

    @property
    def label(self) -> str:
        """How tables and reports name it: one label per measure."""
        return self.name

    @property
    def table_suffix(self) -> str:
        """Table files and run folders of another protocol than the paper's get their own names."""
        return "" if self.papers_own else f"_{self.name}"

    def problems(self, folds: Iterable[int]) -> list[str]:
        """What is wrong with its options for these folds (before anything is read or written)."""
        return []

    # -- data and episodes --
    def mask_dir(self, voc) -> Path | None:
        """The mask folder its data set reads (None: VOC's SegmentationClass); `voc` is a folder
        or a data set object."""
        return None

    def episodes(self, dataset, fold: int, shots: int, n: int, *, episodes_file=None, scan_dir=None,
                 use_cache: bool = True) -> tuple[list, int]:
        """The episodes a run tests on and the fold's item count: the original data layer's, or a file's."""
        from reproduce.data.episodes import resolve_episodes

        return resolve_episodes(dataset, fold, shots, n, episodes_file, scan_dir, use_cache=use_cache)

    def reference(self, episodes: Sequence, dataset, fold: int, shots: int, from_file: bool) -> str:
        """How the episode list compares with the original's on the real VOC 2012 (a run records it)."""
        from reproduce.data.reference_episodes import reference_status

        return reference_status(episodes, fold, shots, len(getattr(dataset, "names", ())))

    def sources(self, dataset) -> dict:
        """Files beside the data set a run read, recorded in its sources.json."""
        return {}

    def check_data(self, voc, cache_dir=None) -> tuple[list[str], bool]:
        """`check-voc`: the lines to print, and whether the data set gives this protocol's episodes."""
        from reproduce.data.check_voc import check_voc

        result = check_voc(voc, cache_dir=cache_dir)
        lines = [check.line() for check in result.lists] + list(result.diagnosis)
        lines.append("all 8 lists are the original's" if result.identical else
                     "this data set does not give the original's episodes (see above)")
        return lines, result.identical

    # -- scoring --
    def truth(self, inputs, name: str, cls: int):
        """What the episode's score map is compared with (computed in the feature provider's workers)."""
        return inputs.query_label(name, cls, False)

    def counts(self, score: np.ndarray, truth) -> Counts:
        label, _ = truth
        return episode_counts(score, label)

    def fold_summary(self, test_classes: Sequence[int], rows: Iterable[Sequence]) -> dict:
        """per_class, miou, fb_iou (fractions) and episodes of a fold, from its journal's rows."""
        return summary_block(fold_score_from_rows(test_classes, rows))

    # -- presentation --
    def table_heading(self, table: int, shots: int) -> str:
        return f"Table {table}: OSLSM {shots}-shot mIoU (%) on PASCAL-5i, protocol {self.label}"

    def table_note(self) -> str:
        """A paragraph under a table's heading (Markdown; "" for none)."""
        return ""

    def report_note(self) -> str:
        """A paragraph on a run's report page (HTML; "" for none)."""
        return ""

    @property
    def ours_label(self) -> str:
        return "ours" if self.papers_own else f"ours ({self.name})"

    def run_masks(self, sources: dict, voc_root: Path) -> Path | None:
        """The masks a finished run's figures read: those it recorded where they still are."""
        return None

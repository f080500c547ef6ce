"""Protocol `modern`: the original's episodes and grid with the query's void pixels left out of
every count (offered for comparison only: the paper counts them as background)."""
from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np

from reproduce.evaluation.protocols.base import Protocol
from reproduce.evaluation.scoring import Counts, episode_counts


@dataclass(frozen=True)
class Modern(Protocol):
    name = "modern"
    summary = "the same grid with void pixels ignored (for comparison only)"
    table_suffix = ""  # its tables and runs keep the original's names, as they always had

    def truth(self, inputs, name: str, cls: int):
        return inputs.query_label(name, cls, True)

    def counts(self, score: np.ndarray, truth) -> Counts:
        label, void = truth
        return episode_counts(score, label, void)

    def table_note(self) -> str:
        return (f"**Not the paper's scoring:** ours use protocol `{self.name}` (void pixels ignored); the paper's "
                "numbers count void as background (protocol `original`), so the difference row compares two "
                "different measures.")

    def report_note(self) -> str:
        return (f"Scored with protocol <code>{html.escape(self.label)}</code>; the paper's numbers use the original test.py scoring, so the "
                "difference is not like for like.")

"""Protocol `original`: OSLSM's test.py on its 500x500 query grid, void counted as background, on
the original data layer's episodes: the paper's numbers (the defaults of base.Protocol)."""
from __future__ import annotations

from dataclasses import dataclass

from reproduce.evaluation.protocols.base import Protocol


@dataclass(frozen=True)
class Original(Protocol):
    name = "original"
    summary = "test.py's scoring on the 500x500 query grid, void counted as background (the paper's)"
    papers_own = True

    def table_heading(self, table: int, shots: int) -> str:
        return f"Table {table}: OSLSM {shots}-shot mIoU (%) on PASCAL-5i, paper vs this reproduction"

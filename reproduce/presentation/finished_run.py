"""A finished `evaluate` run folder read back for looking at it: its summary, episode list,
per-episode rows, and where its data set and model were (sources.json)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from reproduce.data.episodes import Episode, load_episodes
from reproduce.errors import ReproduceError
from reproduce.evaluation.run_folder import CSV_NAME, SOURCES_NAME, read_done_rows
from reproduce.presentation.tables import load_run

PICKS = ("best", "median", "worst")


@dataclass
class FinishedRun:
    path: Path
    summary: dict
    episodes: list[Episode]
    rows: list[list]          # test.py's rows: [iter, 0, class_index0, tp, tn, fp, fn, iou_img]
    sources: dict             # voc, weights, prototxt as the run saw them (may be missing)

    @property
    def name(self) -> str:
        return self.path.name

    def iou(self, index: int) -> float:
        return float(self.rows[index][7])

    def counts(self, index: int) -> tuple[int, int, int, int]:
        """(tp, tn, fp, fn) of episode `index` as the run scored it."""
        return tuple(int(v) for v in self.rows[index][3:7])

    def pick(self, which: str) -> int:
        """The episode with the highest, median or lowest per-episode IoU (ties: the first one)."""
        order = sorted(range(len(self.rows)), key=lambda i: (self.iou(i), i))
        if which == "best":
            return max(range(len(self.rows)), key=lambda i: (self.iou(i), -i))
        if which == "worst":
            return order[0]
        if which == "median":
            return order[(len(order) - 1) // 2]
        raise ReproduceError(f"--pick takes {', '.join(PICKS)}; got {which!r}")


def open_run(run_dir: str | os.PathLike) -> FinishedRun:
    path = Path(run_dir)
    summary = load_run(path)
    episodes = load_episodes(path / "episodes.json").episodes[:int(summary["n_episodes"])]
    rows = read_done_rows(path / CSV_NAME, episodes)
    if len(rows) != len(episodes):
        raise ReproduceError(f"{path / CSV_NAME}: {len(rows)} rows for {len(episodes)} episodes; "
                             "finish the run first (the same evaluate command resumes it)")
    sources_path = path / SOURCES_NAME
    try:
        sources = json.loads(sources_path.read_text()) if sources_path.exists() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReproduceError(f"{sources_path}: unreadable ({exc})") from None
    return FinishedRun(path, summary, episodes, rows, sources if isinstance(sources, dict) else {})


def episode_indices(run: FinishedRun, episodes: str | None, picks: str | None) -> list[int]:
    """Indices from '--episodes 3,17' and/or '--pick best,median,worst' (in that order, no repeats)."""
    chosen: list[int] = []
    for token in (episodes or "").split(","):
        if token.strip():
            try:
                index = int(token)
            except ValueError:
                raise ReproduceError(f"--episodes: {token!r} is not an episode number") from None
            if not 0 <= index < len(run.episodes):
                raise ReproduceError(f"--episodes: {index} is outside 0..{len(run.episodes) - 1} ({run.path})")
            chosen.append(index)
    for token in (picks or "").split(","):
        if token.strip():
            chosen.append(run.pick(token.strip()))
    if not chosen:
        raise ReproduceError("give --episodes i,j,... or --pick best,median,worst")
    return list(dict.fromkeys(chosen))

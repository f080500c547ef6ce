"""Where a training net's data layers get their values: any object with `tops` and
`batch(index)`, the index counting every forward pass of the run from 0 (so that a resumed run
asks for exactly the batches the uninterrupted one would have)."""
from __future__ import annotations

import os
import re
import zipfile
from typing import Mapping, Protocol

import numpy as np

from weights_convert.errors import CaffeFormatError

_KEY = re.compile(r"^(\d+)/(.+)$")


class DataSource(Protocol):
    """`batch(i)` is asked for i = 0, 1, 2, ... in order, except that after an interruption
    the passes of the unfinished iteration are asked again. A source whose batches depend on
    its own history (a seeded stream) may also have `state(i) -> dict` (JSON-able: its state
    before batch i) and `restore(state)`, which snapshots save and resumes restore."""
    tops: list[str]

    def batch(self, index: int) -> Mapping[str, np.ndarray]:
        ...


class EpisodeInputs:
    """Episodes from an .npz with keys '<e>/<top>' (e = 0..n-1; an optional scalar 'n_episodes'),
    as the `inputs` command writes them: forward pass i gets episode i mod n, so the episodes
    are used in order and cycle, as the golden Caffe data layer does."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        try:
            self._npz = np.load(self.path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise CaffeFormatError(f"{self.path}: cannot read episodes .npz: {exc}") from None
        episodes: dict[int, set[str]] = {}
        for key in self._npz.files:
            match = _KEY.match(key)
            if match:
                episodes.setdefault(int(match.group(1)), set()).add(match.group(2))
            elif key != "n_episodes":
                raise CaffeFormatError(f"{self.path}: key {key!r} is not '<episode>/<top>' (e.g. '0/first_img')")
        n = len(episodes)
        if n == 0:
            raise CaffeFormatError(f"{self.path}: holds no episodes (keys '<episode>/<top>')")
        if sorted(episodes) != list(range(n)):
            raise CaffeFormatError(f"{self.path}: episodes must be numbered 0..{n - 1}; found "
                                   f"{sorted(episodes)[:10]}")
        if "n_episodes" in self._npz.files and int(self._npz["n_episodes"]) != n:
            raise CaffeFormatError(f"{self.path}: n_episodes says {int(self._npz['n_episodes'])} but it holds {n}")
        self.tops = sorted(episodes[0])
        for e, tops in episodes.items():
            if tops != set(self.tops):
                raise CaffeFormatError(f"{self.path}: episode {e} has tops {sorted(tops)}; episode 0 has {self.tops}")
        self.n_episodes = n

    def __len__(self) -> int:
        return self.n_episodes

    def batch(self, index: int) -> dict[str, np.ndarray]:
        e = index % self.n_episodes
        return {top: np.asarray(self._npz[f"{e}/{top}"], dtype=np.float32) for top in self.tops}

    def close(self) -> None:
        self._npz.close()

"""HSNet's PASCAL-5i test protocol (github juhongm999/hsnet at 6b1bc12), the second protocol of
the kit, beside the original's: its split files (reference/hsnet/) and its episodes, drawn as its
`DatasetPASCAL.sample_episode` draws them when its `test.py` runs.

Facts of HSNet's code: numpy's global legacy RandomState is seeded 0 right before a shuffle-free,
worker-free DataLoader of batch 1 is iterated, so episode i is `sample_episode(i)` on one stream.
The query is entry i mod N of the fold file with its listed class; each support is
`np.random.choice(pool, 1, replace=False)[0]` over the fold file's images of that class in file
order, drawn again while it equals the query (shots may repeat one another)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from reproduce.data.episodes import Episode
from reproduce.data.pascal5i import FOLDS
from reproduce.errors import ReproduceError

SPLITS = Path(__file__).parent / "reference" / "hsnet"
SEED = 0  # HSNet's test.py: utils.fix_randseed(0)


def hsnet_items(fold: int) -> list[tuple[str, int]]:
    """The fold file's (image, 1-based VOC class) items, in file order."""
    if fold not in FOLDS:
        raise ReproduceError(f"fold {fold} is not a PASCAL-5i fold ({FOLDS})")
    path = SPLITS / f"fold{fold}.txt"
    items = []
    for n, line in enumerate(path.read_text().split(), 1):
        name, sep, cls = line.rpartition("__")
        if not sep or not cls.isdigit():
            raise ReproduceError(f"{path}:{n}: expected '<image>__<class>', got {line!r}")
        items.append((name, int(cls)))
    return items


def hsnet_episodes(fold: int, shots: int, n_episodes: int = 1000) -> list[Episode]:
    """HSNet's test episodes 0..n_episodes-1 of a fold, draw for draw."""
    if shots < 1:
        raise ReproduceError(f"shots must be >= 1, got {shots}")
    items = hsnet_items(fold)
    pools: dict[int, list[str]] = {}
    for name, cls in items:
        pools.setdefault(cls, []).append(name)
    rng = np.random.RandomState(SEED)
    episodes = []
    for index in range(n_episodes):
        query, cls = items[index % len(items)]
        if len(pools[cls]) < 2:
            raise ReproduceError(f"fold {fold}: class {cls} has one image; a support other than the query "
                                 "cannot be drawn")
        supports: list[str] = []
        while len(supports) < shots:
            drawn = str(rng.choice(pools[cls], 1, replace=False)[0])
            if drawn != query:
                supports.append(drawn)
        episodes.append(Episode(query, cls, supports))
    return episodes


def item_differences(fold: int) -> dict[str, list[tuple[str, int]]]:
    """(image, class) items in only one of the two protocols' fold lists: HSNet's split file
    against the items the original OSLSM code kept on the real VOC 2012 (reference_episodes)."""
    from reproduce.data.reference_episodes import reference_items

    oslsm, hsnet = reference_items(fold), set(hsnet_items(fold))
    return {"only_oslsm": sorted(oslsm - hsnet), "only_hsnet": sorted(hsnet - oslsm)}

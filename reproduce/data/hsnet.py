"""HSNet's PASCAL-5i test protocol (github juhongm999/hsnet at 6b1bc12), the second protocol of
the kit, beside the original's: its split files (reference/hsnet/) and its episodes, drawn as its
`DatasetPASCAL.sample_episode` draws them when its `test.py` runs.

Facts of HSNet's code: numpy's global legacy RandomState is seeded 0 right before a shuffle-free,
worker-free DataLoader of batch 1 is iterated, so episode i is `sample_episode(i)` on one stream.
The query is entry i mod N of the fold file with its listed class; each support is
`np.random.choice(pool, 1, replace=False)[0]` over the fold file's images of that class in file
order, drawn again while it equals the query (shots may repeat one another). Its masks are
`SegmentationClassAug/<image>.png` (grey class indices, 255 ignored)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from reproduce.data.episodes import Episode
from reproduce.data.pascal5i import FOLDS
from reproduce.data.voc import fold_classes
from reproduce.errors import ReproduceError
from weights_convert.files.atomic import atomic_write_text

SPLITS = Path(__file__).parent / "reference" / "hsnet"
SEED = 0  # HSNet's test.py: utils.fix_randseed(0)
MASKS = "SegmentationClassAug"  # the mask folder HSNet reads, beside JPEGImages


def split_file(fold: int, splits: str | Path = SPLITS) -> Path:
    if fold not in FOLDS:
        raise ReproduceError(f"fold {fold} is not a PASCAL-5i fold ({FOLDS})")
    path = Path(splits) / f"fold{fold}.txt"
    if not path.is_file():
        raise ReproduceError(f"{path}: no split file (a folder of HSNet-style split files holds fold0.txt .. "
                             "fold3.txt, one '<image>__<class, 2 digits>' per line)")
    return path


def hsnet_items(fold: int, splits: str | Path = SPLITS) -> list[tuple[str, int]]:
    """The fold file's (image, 1-based VOC class) items, in file order."""
    path = split_file(fold, splits)
    allowed = fold_classes(fold)
    items = []
    for n, line in enumerate(path.read_text().split(), 1):
        name, sep, cls = line.rpartition("__")
        if not sep or not cls.isdigit() or not name:
            raise ReproduceError(f"{path}:{n}: expected '<image>__<class>', got {line!r}")
        if int(cls) not in allowed:
            raise ReproduceError(f"{path}:{n}: class {int(cls)} is not a test class of fold {fold} {allowed}")
        items.append((name, int(cls)))
    if not items:
        raise ReproduceError(f"{path}: no items")
    return items


def hsnet_episodes(fold: int, shots: int, n_episodes: int = 1000, splits: str | Path = SPLITS) -> list[Episode]:
    """HSNet's test episodes 0..n_episodes-1 of a fold, draw for draw."""
    if shots < 1:
        raise ReproduceError(f"shots must be >= 1, got {shots}")
    items = hsnet_items(fold, splits)
    pools: dict[int, list[str]] = {}
    for name, cls in items:
        pools.setdefault(cls, []).append(name)
    rng = np.random.RandomState(SEED)
    episodes = []
    for index in range(n_episodes):
        query, cls = items[index % len(items)]
        if set(pools[cls]) == {query}:
            raise ReproduceError(f"fold {fold}: class {cls} lists only {query}; a support other than the query "
                                 "cannot be drawn")
        supports: list[str] = []
        while len(supports) < shots:
            drawn = str(rng.choice(pools[cls], 1, replace=False)[0])
            if drawn != query:
                supports.append(drawn)
        episodes.append(Episode(query, cls, supports))
    return episodes


def splits_status(splits: str | Path) -> str:
    """Whether a split folder holds HSNet's own four files (by content), for manifests and tables."""
    same = all((Path(splits) / f"fold{f}.txt").is_file() and
               (Path(splits) / f"fold{f}.txt").read_bytes() == (SPLITS / f"fold{f}.txt").read_bytes() for f in FOLDS)
    return "HSNet's split files" if same else f"split files of {Path(splits).resolve()} (not HSNet's)"


def write_split_files(dataset, out: str | Path) -> Path:
    """HSNet-style fold files for a data set of our own (the demo's synthetic one): every
    (image, class) of its val list whose mask holds a test class of the fold, in list order."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    present = {name: set(np.unique(dataset.read_mask(name)).tolist()) for name in dataset.names}
    for fold in FOLDS:
        lines = [f"{name}__{cls:02d}\n" for name in dataset.names for cls in fold_classes(fold)
                 if cls in present[name]]
        atomic_write_text(out / f"fold{fold}.txt", "".join(lines))
    return out


def item_differences(fold: int) -> dict[str, list[tuple[str, int]]]:
    """(image, class) items in only one of the two protocols' fold lists: HSNet's split file
    against the items the original OSLSM code kept on the real VOC 2012 (reference_episodes)."""
    from reproduce.data.reference_episodes import reference_items

    oslsm, hsnet = reference_items(fold), set(hsnet_items(fold))
    return {"only_oslsm": sorted(oslsm - hsnet), "only_hsnet": sorted(hsnet - oslsm)}

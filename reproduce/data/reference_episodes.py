"""The episode lists that the ORIGINAL data layer printed on the REAL PASCAL VOC 2012 val set
(all 4 folds, k = 1 and 5, 1000 episodes each; provenance in the file's "about"), and how a list
of ours compares with them.

Every kept item of a fold is a query in its list (the original drew 1000 episodes from a
shuffled pass over at most 725 items), so the lists also give the original's item sets."""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Sequence

from reproduce.data.episodes import DB_CYCLE, Episode, episodes_sha256
from reproduce.errors import ReproduceError

REFERENCE_FILE = Path(__file__).parent / "reference" / "real_voc_episodes.json"
VOC2012_VAL_IMAGES = 1449
SHOTS = (1, 5)


def list_key(fold: int, shots: int) -> str:
    return f"fold{fold}_{shots}shot"


@functools.lru_cache(maxsize=1)
def _document() -> dict:
    try:
        return json.loads(REFERENCE_FILE.read_text())
    except (OSError, ValueError) as exc:
        raise ReproduceError(f"{REFERENCE_FILE}: the reference episode lists are unreadable ({exc}); "
                             "they are part of the package") from None


@functools.lru_cache(maxsize=16)
def reference_episodes(fold: int, shots: int) -> tuple[Episode, ...]:
    """The original's list for (fold, shots) on the real VOC 2012 val set, checked by its sha256."""
    entry = _document()["lists"].get(list_key(fold, shots))
    if entry is None:
        raise ReproduceError(f"no reference list for fold {fold}, {shots}-shot (there are k = 1 and 5, folds 0-3)")
    episodes = tuple(Episode(query, cls, list(supports)) for query, cls, supports in entry["episodes"])
    if episodes_sha256(list(episodes)) != entry["sha256"]:
        raise ReproduceError(f"{REFERENCE_FILE}: list {list_key(fold, shots)} does not match its sha256")
    return episodes


def reference_items(fold: int) -> set[tuple[str, int]]:
    """The (image, class) items the original kept for `fold` on the real VOC 2012 val set."""
    return {(e.query, e.cls) for e in reference_episodes(fold, SHOTS[0])}


def first_difference(episodes: Sequence[Episode], fold: int, shots: int) -> int | None:
    """Index of the first episode that is not the original's (None: all equal). Past 1000 the
    original re-seeded and started over, so episode i is compared with reference i mod 1000."""
    reference = reference_episodes(fold, shots)
    for i, episode in enumerate(episodes):
        if episode != reference[i % DB_CYCLE]:
            return i
    return None


def reference_status(episodes: Sequence[Episode], fold: int, shots: int, n_val_images: int) -> str:
    """'identical', 'differs at episode N' or 'not applicable (why)'."""
    if n_val_images != VOC2012_VAL_IMAGES:
        return f"not applicable ({n_val_images} val images, VOC 2012 has {VOC2012_VAL_IMAGES})"
    if shots not in SHOTS:
        return f"not applicable (the original printed lists for k = 1 and 5, not {shots})"
    index = first_difference(episodes, fold, shots)
    return "identical" if index is None else f"differs at episode {index}"

"""The original data layer's episode order in deterministic mode (protocol §2), and episode files."""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from reproduce.errors import ReproduceError
from reproduce.data.items import FoldItems
from reproduce.data.voc import class_name, fold_classes
from weights_convert.files.atomic import atomic_write_text
from reproduce.data.pascal5i import N_CLASSES, N_FOLDS

SEED = 1385       # the original's fixed seed for deterministic mode
DB_CYCLE = 1000   # episodes after which the original re-seeded and restarted


@dataclass(frozen=True)
class Episode:
    query: str
    cls: int
    supports: list[str]

    def as_dict(self) -> dict:
        return {"query": self.query, "cls": self.cls, "supports": list(self.supports)}


def py2_shuffle(x: list, rng: random.Random) -> None:
    """Python 2.7's random.shuffle, in place (Python 3's draws differently from the same seed)."""
    for i in range(len(x) - 1, 0, -1):
        j = int(rng.random() * (i + 1))
        x[i], x[j] = x[j], x[i]


class EpisodeSampler:
    """DBInterface.next_pair of the original: a shuffled pass over the items, reshuffled on wrap."""

    def __init__(self, items: FoldItems, shots: int, seed: int = SEED, db_cycle: int = DB_CYCLE):
        if shots < 1:
            raise ReproduceError(f"shots must be >= 1, got {shots}")
        if not items.db_items:
            raise ReproduceError(f"fold {items.fold}: no items survive the small-object filter")
        for cls, members in sorted(items.class_sets.items()):
            if len(members) <= shots:
                raise ReproduceError(
                    f"class {cls} ({class_name(cls)}) has only {len(members)} usable image(s) in "
                    f"fold {items.fold}; {shots}-shot episodes need at least {shots + 1}")
        self.items = items
        self.shots = shots
        self.seed = seed
        self.db_cycle = db_cycle
        self._restart()

    def _restart(self) -> None:
        self.rng = random.Random(self.seed)
        self.order = list(self.items.db_items)
        self.pointer = len(self.order)  # past the end: the first episode shuffles
        self.cycle = 0

    def next(self) -> Episode:
        if self.db_cycle and self.cycle >= self.db_cycle:
            self._restart()
        self.cycle += 1
        self.pointer += 1
        if self.pointer >= len(self.order):
            self.order = list(self.items.db_items)
            py2_shuffle(self.order, self.rng)
            self.pointer = 0
        cls, query_index = self.order[self.pointer]
        members = self.items.class_sets[cls]
        candidates = [i for i in range(len(members)) if i != query_index]
        py2_shuffle(candidates, self.rng)
        return Episode(members[query_index], cls, [members[i] for i in candidates[:self.shots]])


def make_episodes(dataset_items: FoldItems, fold: int, shots: int, n_episodes: int = 1000,
                  seed: int = SEED) -> list[Episode]:
    if dataset_items.fold != fold:
        raise ReproduceError(f"items are of fold {dataset_items.fold}, episodes asked for fold {fold}")
    sampler = EpisodeSampler(dataset_items, shots, seed)
    return [sampler.next() for _ in range(n_episodes)]


def canonical_json(episodes: list[Episode]) -> str:
    return json.dumps([e.as_dict() for e in episodes], sort_keys=True, separators=(",", ":"))


def episodes_sha256(episodes: list[Episode]) -> str:
    return hashlib.sha256(canonical_json(episodes).encode()).hexdigest()


@dataclass
class EpisodeFile:
    fold: int
    shots: int
    n_items: int
    episodes: list[Episode]
    sha256: str


def episodes_to_json(path: str | Path, episodes: list[Episode], fold: int, shots: int,
                     n_items: int) -> str:
    """Write an episode file atomically; returns the sha256 of the episode list."""
    digest = episodes_sha256(episodes)
    doc = {"fold": fold, "shots": shots, "n_items": n_items,
           "episodes": [e.as_dict() for e in episodes], "sha256": digest}
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return digest


def load_episodes(path: str | Path) -> EpisodeFile:
    path = Path(path)

    def bad(where: str, expected: str) -> ReproduceError:
        return ReproduceError(f"{path}: {where}: expected {expected}")

    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ReproduceError(f"{path}: episode file is missing") from exc
    except (OSError, ValueError) as exc:
        raise ReproduceError(f"{path}: not a JSON episode file ({exc})") from exc
    if not isinstance(doc, dict):
        raise bad("top level", "an object")
    # A hand-made file needs fold, shots and episodes; n_items (0: not recorded) and sha256 (checked
    # when present) are what `episodes` adds.
    for key in ("fold", "shots", "episodes"):
        if key not in doc:
            raise bad(f"field {key!r}", "present")
    fold, shots, n_items = doc["fold"], doc["shots"], doc.get("n_items", 0)
    if not isinstance(fold, int) or fold not in range(N_FOLDS):
        raise bad("field 'fold'", f"an integer 0..{N_FOLDS - 1}")
    if not isinstance(shots, int) or shots < 1:
        raise bad("field 'shots'", "a positive integer")
    if not isinstance(n_items, int) or n_items < 0:
        raise bad("field 'n_items'", "a non-negative integer")
    if not isinstance(doc["episodes"], list):
        raise bad("field 'episodes'", "a list")
    allowed = set(fold_classes(fold))
    episodes = []
    for i, e in enumerate(doc["episodes"]):
        where = f"episodes[{i}]"
        if not isinstance(e, dict):
            raise bad(where, "an object")
        for key in ("query", "cls", "supports"):
            if key not in e:
                raise bad(f"{where}.{key}", "present")
        if not isinstance(e["query"], str) or not e["query"]:
            raise bad(f"{where}.query", "an image name")
        if not isinstance(e["cls"], int) or not 1 <= e["cls"] <= N_CLASSES:
            raise bad(f"{where}.cls", f"a class id 1..{N_CLASSES}")
        if e["cls"] not in allowed:
            raise bad(f"{where}.cls", f"a class of fold {fold} ({sorted(allowed)}), got {e['cls']}")
        sup = e["supports"]
        if not isinstance(sup, list) or not all(isinstance(s, str) and s for s in sup):
            raise bad(f"{where}.supports", "a list of image names")
        if len(sup) != shots:
            raise bad(f"{where}.supports", f"{shots} names (shots), got {len(sup)}")
        episodes.append(Episode(e["query"], e["cls"], list(sup)))
    digest = episodes_sha256(episodes)
    if doc.get("sha256", digest) != digest:
        raise bad("field 'sha256'", f"{digest} (the sha256 of the episode list), got {doc['sha256']}")
    return EpisodeFile(fold, shots, n_items, episodes, digest)


def resolve_episodes(dataset, fold: int, shots: int, n_episodes: int, episodes_file=None,
                     items_cache_dir=None, use_cache: bool = True) -> tuple[list[Episode], int]:
    """The first `n_episodes` episodes and the fold's item count: from an episode file (checked
    against fold and shots), or generated as the original data layer did (seed 1385)."""
    if episodes_file is not None:
        ef = load_episodes(episodes_file)
        if ef.fold != fold or ef.shots != shots:
            raise ReproduceError(f"{episodes_file} holds fold {ef.fold} {ef.shots}-shot episodes; "
                                 f"this run is fold {fold} {shots}-shot")
        if len(ef.episodes) < n_episodes:
            raise ReproduceError(f"{episodes_file}: holds {len(ef.episodes)} episodes; {n_episodes} were asked for")
        return list(ef.episodes[:n_episodes]), ef.n_items
    from reproduce.data.items import build_items

    items = build_items(dataset, fold, cache_dir=items_cache_dir, use_cache=use_cache)
    return make_episodes(items, fold, shots, n_episodes=n_episodes, seed=SEED), items.n_items

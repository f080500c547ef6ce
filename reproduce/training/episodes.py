"""PASCAL-5i training episodes exactly as the original data layer built them in its training
configuration (profile fold{F}_train of ss_datalayer.py / util.py; golden_train/episodes):

- two sets, SBD (converted to the VOC layout) then PASCAL VOC, each read as split `train`;
- per set, items (image, class) in train.txt order then ascending class, only the fold's 15
  training classes (an image that also shows test classes keeps its training classes), through
  the same small-object filter as the test items; all SBD items first, then PASCAL's; the same
  image name in both sets gives two items;
- one random.Random (seeded once, never re-seeded: no db_cycle), a shuffled pass over the merged
  items, reshuffled at each pass end; supports: the other members of the query's class set
  shuffled, the first k; classes need more than k items;
- query at its own size (no resize), supports 224x224, labels {0,1} with void as background.
The sampler and filter are the test episodes' own (episodes.EpisodeSampler, items.scan_dataset)."""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from reproduce.data.episodes import EpisodeSampler
from reproduce.errors import ReproduceError
from reproduce.data.items import FoldItems, filter_items, fold_items, scan_dataset
from reproduce.data.preprocess import binary_mask, prep_support, prep_training_query
from reproduce.data.voc import CLASS_NAMES, VOCDataset, fold_classes

TRAINING_SETS = ("sbd", "pascal")   # the original's order: sbd_training, then pascal_training
TOPS = ("first_img", "second_img", "first_label", "second_label")  # the train net's data tops


def training_classes(fold: int) -> list[int]:
    test = set(fold_classes(fold))
    return [c for c in range(1, len(CLASS_NAMES) + 1) if c not in test]


@dataclass(frozen=True)
class TrainingEpisode:
    query: str
    query_set: str
    cls: int
    supports: list[str]
    support_sets: list[str]

    def as_dict(self) -> dict:
        return {"query": self.query, "query_set": self.query_set, "cls": self.cls,
                "supports": list(self.supports), "support_sets": list(self.support_sets)}


def open_training_sets(sbd: str | Path, voc: str | Path) -> dict[str, VOCDataset]:
    """The two sets, each read as split `train` (ImageSets/Segmentation/train.txt)."""
    return {"sbd": VOCDataset(sbd, split="train"), "pascal": VOCDataset(voc, split="train")}


def build_training_items(sets: Mapping[str, VOCDataset], fold: int, cache_dir=None,
                         use_cache: bool = True) -> FoldItems:
    """The merged training items of `fold`; an item's name is the pair (set, image name)."""
    wanted = set(training_classes(fold))
    kept, dropped = [], []
    for set_name in TRAINING_SETS:
        k, d = filter_items(scan_dataset(sets[set_name], cache_dir, use_cache), wanted, tag=set_name)
        kept += k
        dropped += d
    return fold_items(fold, kept, dropped)


class TrainingEpisodes:
    """The original's training episode stream for one fold and seed, episode by episode; its
    state (random generator, pass order, position) can be saved and restored."""

    def __init__(self, items: FoldItems, shots: int, seed: int):
        self.sampler = EpisodeSampler(items, shots, seed=seed, db_cycle=0)

    def next(self) -> TrainingEpisode:
        e = self.sampler.next()
        (query_set, query), supports = e.query, e.supports
        return TrainingEpisode(query, query_set, e.cls, [n for _, n in supports], [s for s, _ in supports])

    def state(self) -> dict:
        version, internal, gauss = self.sampler.rng.getstate()
        return {"rng": [version, list(internal), gauss], "order": [list(i) for i in self.sampler.order],
                "pointer": self.sampler.pointer}

    def restore(self, state: Mapping) -> None:
        version, internal, gauss = state["rng"]
        self.sampler.rng.setstate((version, tuple(internal), gauss))
        self.sampler.order = [tuple(i) for i in state["order"]]
        self.sampler.pointer = int(state["pointer"])


def system_seed() -> int:
    """A fresh seed, as the original's unseeded random.Random drew from the system (recorded)."""
    return random.SystemRandom().randrange(2**32)


def training_inputs(sets: Mapping[str, VOCDataset], episode: TrainingEpisode) -> dict[str, np.ndarray]:
    """The train net's four float32 data tops for one episode."""
    def pair(set_name, name):
        dataset = sets[set_name]
        return dataset.read_image(name), binary_mask(dataset.read_mask(name), episode.cls)

    supports = [prep_support(*pair(s, n)) for s, n in zip(episode.support_sets, episode.supports)]
    second_img, second_label = prep_training_query(*pair(episode.query_set, episode.query))
    return {"first_img": np.stack([s[0] for s in supports]), "first_label": np.stack([s[1] for s in supports]),
            "second_img": second_img, "second_label": second_label}


class TrainingData:
    """A trainer DataSource: forward pass i gets episode i of the stream. Episodes are drawn in
    order; the stream's state before each of the last few passes is kept, so that `state(i)` can
    describe any pass of the unfinished iteration and a resumed run continues identically."""
    tops = list(TOPS)
    _KEEP = 256  # passes whose start state is kept (more than one iteration's iter_size)

    def __init__(self, sets: Mapping[str, VOCDataset], items: FoldItems, shots: int, seed: int):
        self.sets = sets
        self.stream = TrainingEpisodes(items, shots, seed)
        self.cursor = 0                                  # index of the next episode to draw
        self._recent: dict[int, tuple[dict, TrainingEpisode]] = {}

    def episode(self, index: int) -> TrainingEpisode:
        if index in self._recent:
            return self._recent[index][1]
        if index < self.cursor:
            raise ReproduceError(f"training episode {index} is no longer at hand (the stream is at {self.cursor})")
        while self.cursor <= index:
            before = self.stream.state()
            self._recent[self.cursor] = (before, self.stream.next())
            self._recent.pop(self.cursor - self._KEEP, None)
            self.cursor += 1
        return self._recent[index][1]

    def batch(self, index: int) -> dict[str, np.ndarray]:
        return training_inputs(self.sets, self.episode(index))

    def state(self, index: int) -> dict:
        """The stream's state before episode `index` (the next one a resumed run asks for). A rank
        of a data-parallel run that computed none of the last passes draws up to it first."""
        if index > self.cursor:
            self.episode(index - 1)
        if index == self.cursor:
            return {"index": index, **self.stream.state()}
        if index in self._recent:
            return {"index": index, **self._recent[index][0]}
        raise ReproduceError(f"no stream state for episode {index} (the stream is at {self.cursor})")

    def restore(self, state: Mapping) -> None:
        self.stream.restore(state)
        self.cursor = int(state["index"])
        self._recent.clear()


def check_no_test_images(sets, voc: str) -> None:
    """The query images of PASCAL-5i are VOC 2012 val images: none may be a training image."""
    val = set(VOCDataset(voc, split="val").names)
    overlap = sorted((name, set_name) for set_name, d in sets.items() for name in d.names if name in val)
    if overlap:
        raise ReproduceError(f"{len(overlap)} training image(s) are VOC 2012 val (test) images, e.g. "
                             f"{overlap[0][0]} in the {overlap[0][1]} set: convert SBD with `sbd-to-voc --voc`, "
                             "or pass --allow-val-images knowingly")

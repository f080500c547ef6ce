"""A VOC-layout data set as the net's pre-processed inputs, per image, plus the content
digests that key the feature cache."""
from __future__ import annotations

import numpy as np

from reproduce.data import preprocess
from reproduce.data.resize2017 import resize_2017
from reproduce.data.voc import VOID
from weights_convert.files.provenance import sha256_file


class DatasetInputs:
    """Pre-processed net inputs of a VOC-layout data set, as the original data layer built them,
    split per image (the query image alone, the query label alone, each support pair) so that the
    feature cache can compute each once; plus the content digests that key the cache."""

    def __init__(self, dataset):
        self.dataset = dataset
        self._digests: dict[tuple[str, str], str] = {}

    def _digest(self, kind: str, name: str) -> str:
        key = (kind, name)
        if key not in self._digests:
            path = self.dataset.image_path(name) if kind == "image" else self.dataset.mask_path(name)
            self._digests[key] = sha256_file(path)
        return self._digests[key]

    def image_digest(self, name: str) -> str:
        return self._digest("image", name)

    def mask_digest(self, name: str) -> str:
        return self._digest("mask", name)

    def query_image(self, name: str) -> np.ndarray:
        image = self.dataset.read_image(name)
        # The image half of prep_query; its label half (on an empty mask here) is cheap and unused.
        img, _ = preprocess.prep_query(image, np.zeros(image.shape[:2], np.float32))
        return img

    def support_pair(self, name: str, cls: int) -> tuple[np.ndarray, np.ndarray]:
        mask = preprocess.binary_mask(self.dataset.read_mask(name), cls)
        return preprocess.prep_support(self.dataset.read_image(name), mask)

    def query_mask(self, name: str) -> np.ndarray:
        """The query's class-index mask at its image's size. Scored without the image, so its size
        is checked here as prep_query would check it."""
        index = self.dataset.read_mask(name)
        self.dataset.check_mask_size(name, index.shape)
        return index

    def query_label(self, name: str, cls: int, with_void: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """The query's binary label on the 500x500 grid (void is background, as the original), and
        for protocol 'modern' its void mask resized the same way."""
        index = self.query_mask(name)
        label = query_label_grid(preprocess.binary_mask(index, cls))
        void = query_label_grid((index == VOID).astype(np.float32)) > 0.5 if with_void else None
        return label, void


def query_label_grid(mask_bin: np.ndarray) -> np.ndarray:
    """The label half of prep_query alone: order-0 resize with preserve_range, skipped when the
    mask already has the query shape (the image half is not needed to score an episode)."""
    label = mask_bin.astype(np.float32)
    if label.shape != tuple(preprocess.QUERY_SHAPE):
        label = resize_2017(label, preprocess.QUERY_SHAPE, order=0, preserve_range=True)
    return label.astype(np.float32)

"""The paper's base network for its baselines (section 6): FCN-32s trained for 16-way
segmentation of a fold, its 15 training classes and background, as FCN's voc-fcn32s trains:

- images: every image of the fold's training items (the SBD + VOC train items OSLSM trains on,
  training/episodes.py), in item order, each (set, image) once;
- labels: training classes 1..15 in ascending VOC order, background 0; the fold's test classes
  and VOC's void (255) are ignored (255). The paper does not say what its base net saw of the test
  classes; ignoring them keeps the test classes unseen as labels (their pixels still pass through
  the net as context);
- order: voc_layers.py's, one `random.Random(seed)` (FCN's seed 1337) drawing an image index with
  replacement per forward pass; each image at its own size, RGB to BGR, FCN's mean subtracted;
- solver: voc-fcn32s/solver.prototxt (SGD, fixed rate 1e-10 for the unnormalised loss, momentum
  0.99, weight decay 5e-4, batch 1), 100,000 iterations (solve.py: 25 x 4000)."""
from __future__ import annotations

import random
from typing import Mapping, Sequence

import numpy as np

from reproduce.data.items import FoldItems
from reproduce.data.voc import VOID, VOCDataset
from reproduce.training.episodes import training_classes
from weights_convert.fcn.spec import MEAN_BGR

N_BASE_CLASSES = 16
BASE_SEED = 1337          # voc-fcn32s/net.py's data layer seed
BASE_ITERATIONS = 100_000  # voc-fcn32s/solve.py: 25 x solver.step(4000); its max_iter
TOPS = ("data", "label")


def base_label_map(fold: int) -> np.ndarray:
    """A lookup table: VOC class index -> the base net's label (0, 1..15, or 255 ignored)."""
    table = np.full(256, VOID, np.uint8)
    table[0] = 0
    for label, cls in enumerate(training_classes(fold), start=1):
        table[cls] = label
    return table


def base_images(items: FoldItems) -> list[tuple[str, str]]:
    """(set, image) of every training item, each once, in item order."""
    return list(dict.fromkeys(name for name, _ in items.items))


def fcn_input(image_rgb: np.ndarray) -> np.ndarray:
    """(1, 3, H, W) float32: BGR, 0..255, FCN's mean subtracted (voc_layers.py's load_image)."""
    bgr = image_rgb[:, :, ::-1].astype(np.float64) - np.asarray(MEAN_BGR)
    return bgr.astype(np.float32).transpose(2, 0, 1)[None].copy()


def fcn_solver_text(train_net: str, base_lr: float = 1e-10, max_iter: int = BASE_ITERATIONS,
                    snapshot: int = 4000) -> str:
    """voc-fcn32s/solver.prototxt without its test net (the kit's trainer runs none)."""
    return (f'train_net: "{train_net}"\ndisplay: 20\naverage_loss: 20\nlr_policy: "fixed"\nbase_lr: {base_lr!r}\n'
            f'momentum: 0.99\niter_size: 1\nmax_iter: {max_iter}\nweight_decay: 0.0005\nsnapshot: {snapshot}\n'
            'snapshot_prefix: "snapshot/train"\n')


class BaseTrainingData:
    """A trainer DataSource: forward pass i reads the image of the i-th draw of FCN's stream.
    The draws are a function of the seed and the pass alone, so a resumed run replays the stream
    up to where it stopped."""
    tops = list(TOPS)

    def __init__(self, sets: Mapping[str, VOCDataset], images: Sequence[tuple[str, str]], fold: int,
                 seed: int = BASE_SEED):
        self.sets, self.images, self.seed = sets, list(images), seed
        self.labels = base_label_map(fold)
        self._restart()

    def _restart(self) -> None:
        self._rng, self._cursor, self._last = random.Random(self.seed), 0, None

    def draw(self, index: int) -> int:
        """The image index pass `index` reads."""
        if self._last is not None and index == self._cursor - 1:
            return self._last
        if index < self._cursor:
            self._restart()
        while self._cursor <= index:
            self._last = self._rng.randint(0, len(self.images) - 1)
            self._cursor += 1
        return self._last

    def batch(self, index: int) -> dict[str, np.ndarray]:
        set_name, name = self.images[self.draw(index)]
        dataset = self.sets[set_name]
        label = self.labels[dataset.read_mask(name)].astype(np.float32)
        return {"data": fcn_input(dataset.read_image(name)), "label": label[None, None]}

    def state(self, index: int) -> dict:
        return {"index": index}

    def restore(self, state: Mapping) -> None:
        self._restart()
        if int(state["index"]) > 0:
            self.draw(int(state["index"]) - 1)

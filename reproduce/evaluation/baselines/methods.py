"""The re-run baselines by name, each turning an episode into a score map on the query's 500x500
grid (thresholded at 0.5 and scored by the run's protocol, as OSLSM's score)."""
from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar

import numpy as np

from reproduce.errors import ReproduceError
from reproduce.evaluation.baselines.classifiers import LOGREG_C, logistic_regression, nearest_neighbour
from reproduce.evaluation.baselines.patches import RULES, cells_to_grid, patch_labels


@dataclasses.dataclass(frozen=True)
class Method:
    name: ClassVar[str]
    row: ClassVar[str]   # the paper's row name

    @property
    def label(self) -> str:
        return self.row

    @property
    def folder(self) -> str:
        """Its run folders' name under runs/ (settings other than the defaults named)."""
        return self.name

    def record(self) -> dict:
        return {"method": self.name, **dataclasses.asdict(self)}

    def score(self, base, inputs, episode) -> np.ndarray:
        raise NotImplementedError


def _support_label(inputs, name: str, cls: int) -> tuple[np.ndarray, np.ndarray]:
    """(foreground, void) of a support on the query grid (the query label's own resizing)."""
    label, void = inputs.query_label(name, cls, True)
    return label > 0.5, void


@dataclasses.dataclass(frozen=True)
class PatchClassifier(Method):
    """A base classifier over the k supports' fc7 patches, pooled, applied to the query's."""
    rule: str = "majority"  # or "bilinear": how a support patch gets its label (patches.py)
    classify: ClassVar[Callable]

    @property
    def label(self) -> str:
        return self.row if self.rule == "majority" else f"{self.row} ({self.rule} patch labels)"

    @property
    def folder(self) -> str:
        return self.name if self.rule == "majority" else f"{self.name}_{self.rule}"

    def score(self, base, inputs, episode) -> np.ndarray:
        xs, ys = [], []
        for name in episode.supports:
            fc7 = base.features(inputs, name)["fc7"][0]
            foreground, void = _support_label(inputs, name, int(episode.cls))
            labels, usable = patch_labels(foreground, void, tuple(fc7.shape[1:]), self.rule)
            features = fc7.permute(1, 2, 0).double().cpu().numpy()
            xs.append(features[usable])
            ys.append(labels[usable])
        query = base.features(inputs, episode.query)["fc7"][0]
        cells = self.classify(np.concatenate(xs), np.concatenate(ys),
                              query.permute(1, 2, 0).reshape(-1, query.shape[0]).double().cpu().numpy())
        return cells_to_grid(cells.reshape(query.shape[1:]), (500, 500))


@dataclasses.dataclass(frozen=True)
class NearestNeighbour(PatchClassifier):
    name = "1nn"
    row = "1-NN"
    classify = staticmethod(nearest_neighbour)


@dataclasses.dataclass(frozen=True)
class LogReg(PatchClassifier):
    name = "logreg"
    row = "LogReg"
    c: float = LOGREG_C

    def classify(self, support, labels, query):
        return logistic_regression(support, labels, query, self.c)


@dataclasses.dataclass(frozen=True)
class FineTune(Method):
    name = "finetune"
    row = "Fine-tuning"
    iterations: int = 20
    base_lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4

    def score(self, base, inputs, episode) -> np.ndarray:
        from reproduce.evaluation.baselines.finetune import fine_tuned_scores

        supports = []
        for name in episode.supports:
            foreground, void = _support_label(inputs, name, int(episode.cls))
            supports.append((base.features(inputs, name)["pool5"], np.where(void, 255, foreground).astype(np.uint8)))
        return fine_tuned_scores(base.params, supports, base.features(inputs, episode.query)["pool5"],
                                 iterations=self.iterations, base_lr=self.base_lr, momentum=self.momentum,
                                 weight_decay=self.weight_decay, device=base.device)


METHODS = {cls.name: cls for cls in (NearestNeighbour, LogReg, FineTune)}


def methods_named(names, patch_labels: str = "majority") -> list[Method]:
    """The methods by name, in the order given, each once; the patch classifiers with the given
    patch-label rule."""
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ReproduceError(f"--baselines: unknown method(s) {', '.join(unknown)}; expected {', '.join(METHODS)}")
    if patch_labels not in RULES:
        raise ReproduceError(f"--patch-labels: {patch_labels!r} is not one of {', '.join(RULES)}")
    return [METHODS[n](rule=patch_labels) if issubclass(METHODS[n], PatchClassifier) else METHODS[n]()
            for n in dict.fromkeys(names)]

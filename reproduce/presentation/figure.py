"""Episode panels of a finished run: predictions from its saved masks (--save-masks), or
recomputed with the run's own model, checked against the counts the run recorded."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from reproduce.data.dataset_inputs import DatasetInputs
from reproduce.errors import ReproduceError
from reproduce.evaluation.evaluate import score_map
from reproduce.evaluation.feature_cache import FeatureProvider
from reproduce.presentation.finished_run import FinishedRun
from reproduce.presentation.panels import EpisodePanel, draw_panels
from reproduce.evaluation.run_folder import RunFolder, read_saved_mask
from reproduce.evaluation.protocols import protocol_of
from reproduce.data.voc import VOID, VOCDataset, class_name
from weights_convert.runtime.numerics import faithful_mode
from weights_convert.oslsm import load_oslsm
from weights_convert.files.provenance import sha256_file


def saved_score(run: FinishedRun, index: int) -> np.ndarray | None:
    """The run's 8-bit soft mask of episode `index` as a [0, 1] map, if it saved one."""
    pixels = read_saved_mask(RunFolder(run.path).mask_paths(index)["soft"])
    return None if pixels is None else pixels.astype(np.float32) / 255.0


def _source(run: FinishedRun, key: str, given, flag: str) -> Path:
    value = given or run.sources.get(key)
    if not value:
        raise ReproduceError(f"{run.path}: the run does not say where its {key} was; pass {flag}")
    path = Path(value)
    if not path.exists():
        raise ReproduceError(f"{path}: the run's {key} is not there any more; pass {flag}")
    return path


def recompute_scores(run: FinishedRun, indices: Sequence[int], dataset, weights=None, prototxt=None,
                     device: str = "cpu") -> dict[int, np.ndarray]:
    """Score maps of the given episodes, computed as `evaluate` computed them. A model other than
    the run's is refused; a prediction whose counts differ from the run's row is reported."""
    weights = _source(run, "weights", weights, "--weights")
    digest = sha256_file(weights)
    if digest != run.summary.get("model_sha256"):
        raise ReproduceError(f"{weights} (sha256 {digest[:12]}) is not the model of {run.path} "
                             f"(sha256 {str(run.summary.get('model_sha256'))[:12]})")
    prototxt = prototxt or run.sources.get("prototxt")
    dev = torch.device(device)
    scores = {}
    with faithful_mode():
        model = load_oslsm(weights, prototxt=prototxt, device=dev)
        inputs = DatasetInputs(dataset)
        provider = FeatureProvider(model, inputs, model_sha256=digest, device=dev, workers=1)
        scoring = protocol_of(run.summary)
        episodes = [run.episodes[i] for i in indices]
        units = provider.iter_episodes(episodes, extra=lambda _, ep: scoring.truth(inputs, ep.query, ep.cls))
        for j, _, feats, w, b, truth in units:
            index = indices[j]
            scores[index] = score_map(model, feats, w, b)
            c = scoring.counts(scores[index], truth)
            if (c.tp, c.tn, c.fp, c.fn) != run.counts(index):
                print(f"warning: episode {index} of {run.path}: the recomputed prediction scores "
                      f"{(c.tp, c.tn, c.fp, c.fn)} (tp, tn, fp, fn), the run recorded {run.counts(index)} "
                      f"(another device or data set?)", file=sys.stderr)
    return scores


def episode_panels(run: FinishedRun, indices: Sequence[int], voc=None, weights=None, prototxt=None,
                   device: str = "cpu") -> list[EpisodePanel]:
    root = _source(run, "voc", voc, "--voc")
    dataset = VOCDataset(root, masks=protocol_of(run.summary).run_masks(run.sources, root))
    scores = {i: s for i in indices if (s := saved_score(run, i)) is not None}
    missing = [i for i in indices if i not in scores]
    if missing:
        scores.update(recompute_scores(run, missing, dataset, weights, prototxt, device))
    panels = []
    for i in indices:
        ep = run.episodes[i]
        masks = [dataset.read_mask(name) == ep.cls for name in ep.supports]
        truth = dataset.read_mask(ep.query)
        truth = np.where(truth == VOID, VOID, truth == ep.cls).astype(np.uint8)
        panels.append(EpisodePanel(
            title=f"episode {i} - {class_name(ep.cls)} - IoU {run.iou(i):.2f}",
            supports=[dataset.read_image(name) for name in ep.supports], support_masks=masks,
            query=dataset.read_image(ep.query), truth=truth, score=scores[i]))
    return panels


def write_figure(run: FinishedRun, indices: Sequence[int], out_png: str | os.PathLike, *, voc=None,
                 weights=None, prototxt=None, device: str = "cpu", show_score: bool = False) -> Path:
    draw_panels(episode_panels(run, indices, voc, weights, prototxt, device), out_png, show_score)
    return Path(out_png)

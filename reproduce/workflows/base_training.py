"""One fold's base network for the baselines (training/base_net.py), as `train-base` and the demo
run it: FCN-32s's train net and solver written into OUT/recipe, its start model made there from
VGG-16 by FCN's surgery (or given), and Caffe's SGD in OUT/run, resumable like `train`."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Mapping

import numpy as np

from reproduce.errors import ReproduceError
from reproduce.presentation.loss_curve import write_loss_curve
from reproduce.training.base_net import (BASE_SEED, N_BASE_CLASSES, BaseTrainingData, base_images,
                                         fcn_solver_text)
from reproduce.training.episodes import build_training_items
from weights_convert.fcn.spec import FULL, FCNWidths, blob_shapes, fcn32s_net, layer_types, widths_of
from weights_convert.files.atomic import atomic_write_text

RECIPE, RUN = "recipe", "run"  # OUT/recipe: net, solver, start model; OUT/run: the trainer's folder


def write_recipe(folder: Path, widths: FCNWidths, base_lr: float) -> Path:
    """The train net and solver (the same text for the same arguments); returns the solver's path."""
    from weights_convert.netspec import net_to_text

    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "train_net.prototxt", net_to_text(fcn32s_net(N_BASE_CLASSES, widths)))
    atomic_write_text(folder / "solver.prototxt", fcn_solver_text("train_net.prototxt", base_lr))
    return folder / "solver.prototxt"


def start_model(folder: Path, vgg16: str | None, init: str | None) -> tuple[Path | None, FCNWidths]:
    """The start weights and the widths they give the net: `init` as given, or VGG-16 transplanted
    (written once as OUT/recipe/start_from_vgg16.caffemodel, with what the surgery did beside it)."""
    from weights_convert.fcn.surgery import start_from_vgg16
    from weights_convert.formats.caffemodel import write_caffemodel
    from weights_convert.formats.weights_io import read_weights

    if init is not None:
        params = read_weights(init)
        try:
            widths, classes = widths_of({name: [np.shape(b) for b in blobs] for name, blobs in params.items()})
        except KeyError as exc:
            raise ReproduceError(f"--init {init}: not an FCN-32s model (no layer {exc})") from None
        if classes != N_BASE_CLASSES:
            raise ReproduceError(f"--init {init}: score_fr has {classes} outputs; the base net has {N_BASE_CLASSES}")
        return Path(init), widths
    if vgg16 is None:
        return None, FULL  # resuming
    target = folder / "start_from_vgg16.caffemodel"
    if not target.is_file():
        shapes = blob_shapes(FULL, N_BASE_CLASSES)
        params, log = start_from_vgg16(read_weights(vgg16), shapes)
        write_caffemodel(target, params, layer_types(shapes), net_name="fcn32s_base")
        atomic_write_text(folder / "start_from_vgg16.json", json.dumps({"source": str(vgg16), **log}, indent=1) + "\n")
    return target, FULL


def train_base_fold(sets: Mapping, fold: int, *, out: Path, vgg16: str | None = None, init: str | None = None,
                    iterations: int | None = None, base_lr: float = 1e-10, seed: int = BASE_SEED,
                    device: str = "cpu", progress: bool = True, cache_dir=None, use_cache: bool = True) -> Path | None:
    """Train (or resume) fold `fold`'s base net; returns the last snapshot's .solverstate."""
    from weights_convert.train.run import LOSSES, TrainRequest, read_manifest, train
    from weights_convert.train.solver_file import read_solver

    recipe, run = out / RECIPE, out / RUN
    recipe.mkdir(parents=True, exist_ok=True)
    weights, widths = start_model(recipe, vgg16, init)
    if weights is None and (not run.is_dir() or read_manifest(run) is None):
        raise ReproduceError(f"{out}: no base-net run to resume; give --vgg16 (ImageNet VGG-16) or --init")
    if weights is None:  # resuming: the widths of the net the run was started with
        widths = _recorded_widths(recipe)
    solver = write_recipe(recipe, widths, base_lr)
    atomic_write_text(recipe / "widths.json", json.dumps({"conv": list(widths.conv), "fc": widths.fc}) + "\n")
    items = build_training_items(sets, fold, cache_dir, use_cache)
    images = base_images(items)
    data = BaseTrainingData(sets, images, fold, seed)
    digest = hashlib.sha256(json.dumps({"fold": fold, "images": images, "seed": seed, "labels": "base16"},
                                       sort_keys=True).encode()).hexdigest()
    print(f"fold {fold}: base net on {len(images)} training images, image seed {seed}", file=sys.stderr)
    run.mkdir(parents=True, exist_ok=True)
    request = TrainRequest(solver=read_solver(solver), data=data, data_digest=digest, out=run,
                           weights=None if weights is None else str(weights), iterations=iterations, seed=seed,
                           device=device, progress=progress)
    last = train(request)
    if (run / LOSSES).exists():
        write_loss_curve(run / LOSSES, out / "loss_curve.png", f"FCN-32s base net, fold {fold}")
    return last


def _recorded_widths(recipe: Path) -> FCNWidths:
    recorded = json.loads((recipe / "widths.json").read_text())
    return FCNWidths(tuple(recorded["conv"]), int(recorded["fc"]))

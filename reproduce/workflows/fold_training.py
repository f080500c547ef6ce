"""One fold's OSLSM training as `train` and `demo` both run it: the original's training episodes
from the SBD and VOC training sets, a solver and its train net, Caffe's SGD, the loss curve."""
from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from pathlib import Path
from typing import Mapping

from reproduce.presentation.loss_curve import write_loss_curve
from reproduce.training.episodes import TrainingData, build_training_items, system_seed
from weights_convert.train.distributed import lead_process
from weights_convert.train.run import LOSSES, TrainRequest, read_manifest, train
from weights_convert.train.solver_file import read_solver


def train_fold(sets: Mapping, fold: int, *, solver: str | Path, out: Path, init: str | None = None,
               shots: int = 1, seed: int | None = None, iterations: int | None = None,
               snapshot_every: int | None = None, device: str = "cpu", progress: bool = True,
               cache_dir=None, use_cache: bool = True, title: str = "") -> Path | None:
    """Train (or resume, when `out` holds a run) and draw out/loss_curve.png; returns the last
    snapshot's .solverstate. Without `seed`, a resumed run keeps its recorded seed and a new one
    draws a fresh seed from the system, as the original did (recorded either way)."""
    if seed is None:
        previous = read_manifest(out) if out.is_dir() else None
        seed = previous["seed"] if previous else system_seed()
    items = build_training_items(sets, fold, cache_dir, use_cache)
    data = TrainingData(sets, items, shots, seed)
    digest = hashlib.sha256(json.dumps({"fold": fold, "shots": shots, "items": items.items},
                                       sort_keys=True).encode()).hexdigest()
    request = TrainRequest(solver=read_solver(solver), data=data, data_digest=digest, out=out, weights=init,
                           iterations=iterations, snapshot_every=snapshot_every, seed=seed, device=device,
                           progress=progress)
    lead = lead_process()  # under torchrun, rank 0 alone speaks and writes
    if lead:
        print(f"fold {fold}: {items.n_items} training items, episode seed {seed}", file=sys.stderr)
    title = title or f"OSLSM fold {fold} training"
    try:
        last = train(request)
    except BaseException:
        if lead and (out / LOSSES).exists():
            with contextlib.suppress(OSError):  # best effort: the training's own error is the one to report
                write_loss_curve(out / LOSSES, out / "loss_curve.png", title)
        raise
    if lead and (out / LOSSES).exists():
        write_loss_curve(out / LOSSES, out / "loss_curve.png", title)
    return last

"""A training run in its own folder, as `python -m weights_convert train` drives it.

DIR holds train.json (what the run is: solver, net, start weights, data, seed, device), losses.csv,
the snapshots, and a lock while a process trains into it. Running the same command again
continues from the newest complete snapshot and ends with the same files as an uninterrupted
run; a changed solver, net, data, start or device is refused in words. Ctrl-C or SIGTERM stop
at the next pass and snapshot the last finished iteration."""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import os
import re
import secrets
import signal
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from weights_convert.runtime import stop_signals
from weights_convert.files.atomic import atomic_write_text, naming_os_errors
from weights_convert.runtime.devices import checked_device
from weights_convert.errors import CaffeFormatError, Interrupted
from weights_convert.files.folder_lock import folder_lock
from weights_convert.graph import CaffeNet
from weights_convert.runtime.numerics import faithful_mode
from weights_convert.runtime.progress import Progress
from weights_convert.files.provenance import hardware, sha256_file
from weights_convert.train.data import DataSource
from weights_convert.train.distributed import SINGLE, Ranks, any_rank, from_lead, join, leave
from weights_convert.train.solver_file import SolverFile
from weights_convert.train.trainer import IterationRecord, Trainer, load_weights_for_training, snapshot_stem

MANIFEST, LOSSES, LOCK = "train.json", "losses.csv", ".train.lock"
LOSS_COLUMNS = ("iteration", "smoothed_loss", "loss", "lr")
_SNAPSHOT = re.compile(r"^snapshot_iter_(\d+)\.(caffemodel|solverstate|trainstate\.json)$")


class TrainingInterrupted(Interrupted):
    def __init__(self, iteration: int, target: int, snapshot: Path):
        super().__init__(f"interrupted after {iteration}/{target} iterations; saved {snapshot}; "
                         "run the same command again to resume")


@dataclass
class TrainRequest:
    solver: SolverFile
    data: DataSource
    data_digest: str                  # identifies the data (e.g. the inputs file's sha256)
    out: Path
    weights: str | None = None        # start weights (ignored when resuming)
    resume: str | None = None         # a .solverstate to start from
    iterations: int | None = None     # train until this iteration (default: the solver's max_iter)
    snapshot_every: int | None = None  # default: the solver's snapshot
    seed: int | None = None           # dropout stream (default: solver random_seed, else random)
    device: str = "cpu"
    progress: bool = True


def train(request: TrainRequest) -> Path | None:
    """Train as Caffe's `caffe train` would; returns the last snapshot's .solverstate (None if
    the solver asks for none)."""
    param = request.solver.param
    target = param.max_iter if request.iterations is None else request.iterations
    every = param.snapshot if request.snapshot_every is None else request.snapshot_every
    if target < 0 or every < 0:
        raise CaffeFormatError(f"iterations ({target}) and snapshot interval ({every}) must not be negative")
    if request.resume is None and request.weights is None and _latest_snapshot(request.out) is None:
        raise CaffeFormatError("give --weights (the start weights) or --resume (a .solverstate): the kit does "
                               "not reproduce Caffe's random fillers")
    ranks, device = join(str(request.device))
    try:
        return _train_as(ranks, dataclasses.replace(request, device=device), target, every)
    finally:
        leave(ranks)


def _train_as(ranks: Ranks, request: TrainRequest, target: int, every: int) -> Path | None:
    """Rank 0 checks the folder, holds its lock and writes; every rank trains its share."""
    with contextlib.ExitStack() as held:
        start = None
        if ranks.lead:
            for note in request.solver.notes():
                print(f"note: {request.solver.path}: {note}", file=sys.stderr)
            request.out.mkdir(parents=True, exist_ok=True)
            held.enter_context(folder_lock(request.out, LOCK, "training", CaffeFormatError, owns=is_training_folder))
            try:
                start = {"manifest": _manifest(request), "resume": _resume_point(request)}
            except CaffeFormatError as exc:
                from_lead(ranks, {"error": str(exc)})
                raise
        start = from_lead(ranks, start)
        if "error" in start:
            raise CaffeFormatError(start["error"])
        trainer = _trainer(request, start["manifest"]["seed"], start["resume"], target, ranks)
        if ranks.lead:
            atomic_write_text(request.out / MANIFEST, json.dumps(start["manifest"], indent=1, sort_keys=True) + "\n")
        with faithful_mode():
            return _loop(trainer, request, target, every, request.solver.param.snapshot_after_train, ranks)


def _trainer(request: TrainRequest, seed: int, resume: str | None, target: int, ranks: Ranks) -> Trainer:
    first = request.data.batch(0)
    net = CaffeNet(request.solver.net, phase="TRAIN", level=request.solver.level,
                   stages=request.solver.stages, source=request.solver.net_source, device=request.device,
                   data_shapes={k: v.shape for k, v in first.items()})
    trainer = Trainer(request.solver, net, request.data, seed)
    say = print if ranks.lead else (lambda *a, **k: None)
    if resume is not None:
        exact = trainer.restore(resume)
        _refuse_going_back(trainer.iteration, target, request.out)
        say(f"resuming from {resume} (iteration {trainer.iteration})"
            + ("" if exact else "; a Caffe state: data continue at iteration x iter_size, "
               "loss smoothing and dropout streams start afresh"), file=sys.stderr)
    else:
        ignored = load_weights_for_training(net, request.weights)
        if ignored:
            say(f"note: {request.weights}: layers not in the train net are ignored (as Caffe does): "
                f"{', '.join(ignored)}", file=sys.stderr)
    if ranks.world > 1:
        if ranks.world > trainer.iter_size:
            raise CaffeFormatError(f"{ranks.world} ranks for iter_size {trainer.iter_size}: each rank needs at least "
                                   f"one pass of an iteration; use at most {trainer.iter_size} ranks")
        say(f"data-parallel: {ranks.world} ranks share each iteration's {trainer.iter_size} passes", file=sys.stderr)
    return trainer


def _refuse_going_back(iteration: int, target: int, out: Path) -> None:
    """A run already past the asked-for iteration cannot train to it; say where its snapshot is."""
    if iteration <= target:
        return
    earlier = out / f"{snapshot_stem(target)}.caffemodel"
    where = f"; its snapshot at iteration {target} is {earlier}" if earlier.is_file() else ""
    raise CaffeFormatError(f"the run in {out} is already at iteration {iteration}, past --iters {target}: nothing "
                           f"to train{where}. Ask for {iteration} or more to continue it")


def _loop(trainer: Trainer, request: TrainRequest, target: int, every: int, after_train: bool,
          ranks: Ranks = SINGLE) -> Path | None:
    """Solver::Solve: step to `target`, snapshot every `every` iterations and, as Caffe's
    snapshot_after_train, at the end unless that iteration was just snapshotted. Rank 0 alone
    logs and snapshots; a stop request on any rank stops all after the iteration."""
    lead = ranks.lead
    log = _LossLog(request.out / LOSSES, keep_before=trainer.iteration) if lead else contextlib.nullcontext()
    last = None
    with _stop_requests() as stop, log, Progress(target, min(trainer.iteration, target), "training",
                                                 request.progress and lead, unit="iter") as bar:
        while trainer.iteration < target:
            record = trainer.step(should_stop=stop, ranks=ranks)
            if record is not None and lead:
                log.write(record)
                bar.note(f"loss {float(record.smoothed_loss):.6g}, lr {float(record.rate):.3g}")
                bar.update(1)
            just_saved = record is not None and every and trainer.iteration % every == 0
            if just_saved and lead:
                log.flush()
                last = trainer.snapshot(request.out)
            if any_rank(ranks, stop()):
                if lead:
                    log.flush()
                    last = last if just_saved else trainer.snapshot(request.out)
                raise TrainingInterrupted(trainer.iteration, target, last)
    if after_train and lead and not (last is not None and trainer.iteration % every == 0):
        last = trainer.snapshot(request.out)
    return last


def _manifest(request: TrainRequest) -> dict:
    """What the run is; a re-run must match it field by field to continue the same run."""
    solver = request.solver
    previous = read_manifest(request.out)
    if request.resume is not None:
        start = {"resume": os.path.abspath(request.resume), "sha256": sha256_file(request.resume)}
    elif request.weights is not None:
        start = {"weights": os.path.abspath(request.weights), "sha256": sha256_file(request.weights)}
    else:
        start = previous["start"]
    seed = request.seed
    if seed is None and solver.param.random_seed >= 0:
        seed = int(solver.param.random_seed)
    if seed is None:
        seed = previous["seed"] if previous else secrets.randbits(63)
    net_text = str(solver.net).encode("utf-8")
    manifest = {
        "format": "oslsm-repro-train", "version": 1,
        "solver": os.path.abspath(solver.path), "solver_sha256": sha256_file(solver.path),
        "net": solver.net_source, "net_sha256": hashlib.sha256(net_text).hexdigest(),
        "start": start, "data_sha256": request.data_digest, "seed": seed,
        "device": checked_device(str(request.device)), "torch": torch.__version__,
        "dropout_masks": "seeded per pass",  # (runs before this field drew them from one stream)
        # a resume is only byte-identical on the same kernels and thread count
        "hardware": hardware(request.device),
    }
    if previous is not None:
        previous.setdefault("hardware", manifest["hardware"])  # runs from before it was recorded
        if previous.get("device", "").startswith("cpu"):  # written as cpu:0 before names were canonical
            previous["device"] = "cpu"
        changed = [f"{key}: {previous.get(key)!r} -> {manifest[key]!r}" for key in manifest
                   if previous.get(key) != manifest[key]]
        if changed:
            raise CaffeFormatError(f"{request.out} holds another training run ({MANIFEST}); changed: "
                                   f"{'; '.join(changed)}. Use a new --out folder, or the same inputs to resume")
    return manifest


def is_training_folder(out: Path) -> bool:
    """A folder `train` wrote: its train.json says so."""
    try:
        return json.loads((out / MANIFEST).read_text()).get("format") == "oslsm-repro-train"
    except (OSError, ValueError, AttributeError):
        return False


def read_manifest(out: Path) -> dict | None:
    """The run folder's train.json (None for a new or empty folder); a folder holding anything
    else is refused."""
    path = out / MANIFEST
    if not path.exists():
        foreign = [p.name for p in out.iterdir() if p.name != LOCK]
        if foreign:
            raise CaffeFormatError(f"{out} is not empty and holds no training run ({MANIFEST}): "
                                   f"{', '.join(sorted(foreign)[:5])}; train into a new or empty folder")
        return None
    try:
        manifest = json.loads(path.read_text())
        if manifest.get("format") != "oslsm-repro-train":
            raise ValueError("not a training manifest")
        return manifest
    except (OSError, ValueError) as exc:
        raise CaffeFormatError(f"{path}: unreadable ({exc}); remove the folder or train into another") from None


def _latest_snapshot(out: Path) -> Path | None:
    """The .solverstate of the newest complete snapshot (all three files) in `out`."""
    found: dict[int, set[str]] = {}
    for p in out.iterdir() if out.is_dir() else ():
        match = _SNAPSHOT.match(p.name)
        if match:
            found.setdefault(int(match.group(1)), set()).add(match.group(2))
    complete = [n for n, kinds in found.items() if len(kinds) == 3]
    return out / f"{snapshot_stem(max(complete))}.solverstate" if complete else None


def _resume_point(request: TrainRequest) -> str | None:
    """The newest complete snapshot in the folder (this run, continued), else --resume."""
    latest = _latest_snapshot(request.out)
    return str(latest) if latest is not None else request.resume


@contextmanager
def _stop_requests() -> Iterator:
    """Ctrl-C / SIGTERM set a flag that the loop checks between passes (never mid-update)."""
    requested = []

    def handler(signum, frame):
        requested.append(signum)
        stop_signals.note(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(requested)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class _LossLog:
    """losses.csv, one row per iteration, appended; rows from iteration `keep_before` on (left
    by a killed run after its last snapshot) are dropped first, so a resume writes them again."""

    def __init__(self, path: Path, keep_before: int):
        rows = []
        if path.exists():
            with open(path, newline="") as fh:
                for row in csv.reader(fh):
                    if len(row) == len(LOSS_COLUMNS) and row[0].isdigit() and int(row[0]) < keep_before:
                        rows.append(row)
        text = ",".join(LOSS_COLUMNS) + "\n" + "".join(",".join(r) + "\n" for r in rows)
        atomic_write_text(path, text)
        self._fh = open(path, "a", newline="")

    def write(self, r: IterationRecord) -> None:
        with naming_os_errors(self._fh.name):  # a full disk's error names no file
            self._fh.write(f"{r.iteration},{float(r.smoothed_loss)!r},{float(r.loss)!r},{float(r.rate)!r}\n")

    def flush(self) -> None:
        with naming_os_errors(self._fh.name):
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def __enter__(self) -> "_LossLog":
        return self

    def __exit__(self, *exc) -> None:
        self.flush()
        self._fh.close()

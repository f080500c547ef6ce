"""Caffe's Solver::Step on a CaffeNet: per iteration, clear the param diffs, run iter_size
forward/backward passes, average their losses, smooth (average_loss), apply the SGD update.
Snapshots are Caffe's: weights as a .caffemodel and a binary .solverstate (iteration, step,
momentum history), plus a small .trainstate.json with what Caffe does not keep but an identical
resume needs (the data position, the loss-smoothing window)."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from weights_convert.files.atomic import atomic_write_text
from weights_convert.runtime.devices import explained_out_of_memory
from weights_convert.errors import CaffeFormatError
from weights_convert.formats.caffemodel import write_caffemodel
from weights_convert.formats.solverstate import read_solverstate, write_solverstate
from weights_convert.graph import CaffeNet
from weights_convert.layers.dropout import Dropout
from weights_convert.oslsm.loading import read_params
from weights_convert.files.provenance import sha256_file
from weights_convert.train.data import DataSource
from weights_convert.train.distributed import SINGLE, Ranks, gather_pass_losses, sum_gradients
from weights_convert.train.passes import forward_backward
from weights_convert.train.learnable import learnable_params
from weights_convert.train.solvers import make_solver
from weights_convert.train.solver_file import SolverFile

TRAINSTATE_FORMAT = "oslsm-repro-trainstate"


@dataclass
class LossSmoother:
    """Caffe's Solver::UpdateSmoothedLoss, in float32: the mean of the last `average_loss`
    iteration losses, kept as a running value and a ring of losses indexed from start_iter."""
    average_loss: int
    start_iter: int = 0
    losses: list[float] = field(default_factory=list)
    smoothed: float = 0.0

    def update(self, loss: np.float32, iteration: int) -> np.float32:
        smoothed = np.float32(self.smoothed)
        if len(self.losses) < self.average_loss:
            self.losses.append(float(loss))
            size = len(self.losses)
            smoothed = (smoothed * np.float32(size - 1) + loss) / np.float32(size)
        else:
            idx = (iteration - self.start_iter) % self.average_loss
            smoothed = smoothed + (loss - np.float32(self.losses[idx])) / np.float32(self.average_loss)
            self.losses[idx] = float(loss)
        self.smoothed = float(smoothed)
        return np.float32(smoothed)


@dataclass
class IterationRecord:
    iteration: int              # updates done before this one (Caffe's "Iteration N")
    smoothed_loss: np.float32
    loss: np.float32            # mean over the iteration's iter_size passes
    rate: np.float32


def pass_seed(seed: int, index: int) -> int:
    """The dropout seed of forward pass `index` of a run seeded `seed`."""
    digest = hashlib.sha256(f"{int(seed)}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def snapshot_stem(iteration: int) -> str:
    return f"snapshot_iter_{iteration}"


class Trainer:
    def __init__(self, solver: SolverFile, net: CaffeNet, data: DataSource, seed: int):
        self.solver = solver
        self.param = solver.param
        self.net = net
        self.data = data
        self.seed = int(seed)
        self.caffe_solver = make_solver(self.param, learnable_params(net))
        self.iter_size = int(self.param.iter_size)
        self.generator = torch.Generator(device=net.device)
        self.generator.manual_seed(self.seed)
        for layer in net.layers:
            if isinstance(layer, Dropout):
                layer.generator = self.generator
        self.passes = 0                    # forward passes done = index of the next batch
        self.smoother = LossSmoother(int(self.param.average_loss))

    @property
    def iteration(self) -> int:
        return self.caffe_solver.iteration

    def step(self, should_stop=lambda: False, ranks: Ranks = SINGLE) -> IterationRecord | None:
        """One solver iteration; None (and nothing changed) when `should_stop()` turns true
        between its passes. Under several ranks this one runs its share of the passes and the
        gradients and losses are summed over the ranks before the update (stops are then decided
        between iterations, by all ranks together)."""
        for p in self.caffe_solver.params:
            p.tensor.grad = None
        losses = [np.float32(0.0)] * self.iter_size
        for k in ranks.passes(self.iter_size):
            if ranks.world == 1 and should_stop():
                return None  # the abandoned passes are redone on resume: same batches, same masks
            losses[k] = self._pass(self.passes + k)
        losses = gather_pass_losses(ranks, losses)
        sum_gradients(ranks, [p.tensor.grad for p in self.caffe_solver.params if p.tensor.grad is not None])
        self.passes += self.iter_size
        loss = np.float32(0.0)
        for value in losses:  # in pass order, as Caffe adds them
            loss = np.float32(loss + value)
        loss = np.float32(loss / np.float32(self.iter_size))
        iteration = self.iteration
        smoothed = self.smoother.update(loss, iteration)
        rate = self.caffe_solver.apply_update()
        return IterationRecord(iteration, smoothed, loss, rate)

    def _pass(self, index: int) -> np.float32:
        """Forward/backward pass `index` of the run: its batch and its dropout masks are the
        pass's own (seeded by the run's seed and the index), whichever rank computes it."""
        self.generator.manual_seed(pass_seed(self.seed, index))
        batch = self.data.batch(index)
        shapes = ", ".join(f"{name} {tuple(v.shape)}" for name, v in batch.items())
        with explained_out_of_memory(f"training pass {index} (iteration {self.iteration}; {shapes})"):
            return forward_backward(self.net, batch).loss

    # ------------------------------------------------------------------ snapshots
    def snapshot(self, folder: str | os.PathLike) -> Path:
        """Write snapshot_iter_<n>.caffemodel, .solverstate and, last (so that its presence means
        the snapshot is complete), .trainstate.json; returns the .solverstate path."""
        folder = Path(folder)
        stem = snapshot_stem(self.iteration)
        files = [folder / f"{stem}{suffix}" for suffix in (".caffemodel", ".solverstate", ".trainstate.json")]
        new = [path for path in files if not path.exists()]
        try:
            return self._write_snapshot(folder, stem)
        except BaseException:
            # a snapshot is its three files or none: a full disk must not leave a model without its state
            for path in new:
                path.unlink(missing_ok=True)
            raise

    def _write_snapshot(self, folder: Path, stem: str) -> Path:
        model = folder / f"{stem}.caffemodel"
        types = {layer.name: layer.type for layer in self.net.param_layers()}
        write_caffemodel(model, self.net.params_to_numpy(), types, net_name=self.solver.net.name)
        state = folder / f"{stem}.solverstate"
        write_solverstate(state, self.iteration, self.caffe_solver.current_step, model.name,
                          [h.detach().cpu().numpy() for h in self.caffe_solver.history])
        extras = {
            "format": TRAINSTATE_FORMAT, "version": 2, "iteration": self.iteration, "passes": self.passes,
            "seed": self.seed,
            "smoother": {"start_iter": self.smoother.start_iter, "losses": self.smoother.losses,
                         "smoothed": self.smoother.smoothed},
            # a data source with a state (e.g. a seeded episode stream) continues from it on resume
            "data": self.data.state(self.passes) if hasattr(self.data, "state") else None,
            # checked on resume: a damaged snapshot is refused, never trained on
            "sha256": {path.name: sha256_file(path) for path in (model, state)},
        }
        atomic_write_text(folder / f"{stem}.trainstate.json", json.dumps(extras, indent=1) + "\n")
        return state

    def restore(self, state_path: str | os.PathLike) -> bool:
        """Continue from a .solverstate (ours or Caffe's) and the weights it names. Returns True
        when our .trainstate.json was beside it (then the run continues exactly as it would have);
        from Caffe's own state the data continue at iteration x iter_size and the smoothing and
        dropout streams start afresh, as Caffe's own restore does."""
        state_path = os.fspath(state_path)
        extras_path = Path(state_path).with_suffix(".trainstate.json")
        if extras_path.is_file():
            _check_snapshot_digests(extras_path)
        state = read_solverstate(state_path)
        load_weights_for_training(self.net, state.learned_net_path(state_path))
        self.caffe_solver.iteration, self.caffe_solver.current_step = state.iteration, state.current_step
        self.caffe_solver.load_history(state.history, state_path)
        if not extras_path.is_file():
            self.passes = state.iteration * self.iter_size
            self.smoother = LossSmoother(int(self.param.average_loss), start_iter=state.iteration)
            return False
        try:
            extras = json.loads(extras_path.read_text())
            if extras.get("format") != TRAINSTATE_FORMAT or extras["iteration"] != state.iteration:
                raise ValueError(f"expected format {TRAINSTATE_FORMAT} for iteration {state.iteration}")
            self.passes = int(extras["passes"])
            s = extras["smoother"]
            self.smoother = LossSmoother(int(self.param.average_loss), int(s["start_iter"]),
                                         [float(v) for v in s["losses"]], float(s["smoothed"]))
            if extras.get("data") is not None and hasattr(self.data, "restore"):
                self.data.restore(extras["data"])
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise CaffeFormatError(f"{extras_path}: not a usable train state ({exc}); delete it to resume "
                                   "as from a plain Caffe .solverstate") from None
        return True


def _check_snapshot_digests(extras_path: Path) -> None:
    """The snapshot's files are the bytes written with it (digests in its .trainstate.json; states
    from before digests were recorded are taken as they are)."""
    try:
        digests = json.loads(extras_path.read_text()).get("sha256") or {}
    except (OSError, ValueError, AttributeError) as exc:
        raise CaffeFormatError(f"{extras_path}: unreadable train state ({exc}); delete it to resume as from a "
                               "plain Caffe .solverstate") from None
    stem = extras_path.name[:-len(".trainstate.json")]
    for name, digest in digests.items():
        path = extras_path.parent / name
        if not path.is_file() or sha256_file(path) != digest:
            raise CaffeFormatError(f"{path} is {'missing' if not path.is_file() else 'damaged'}: its sha256 is not "
                                   f"the one written with the snapshot ({extras_path.name}). Delete {stem}.* in "
                                   f"{extras_path.parent} to resume from the snapshot before it")


def load_weights_for_training(net: CaffeNet, path: str | os.PathLike) -> list[str]:
    """Copy a weights file into the net as Caffe's CopyTrainedLayersFrom does, by layer name,
    ignoring the file's layers the net lacks (returned). Unlike Caffe, every learnable layer of
    the net must be in the file: the kit does not reproduce Caffe's random fillers."""
    path = os.fspath(path)
    params = read_params(path)
    missing = [layer.name for layer in net.param_layers() if layer.name not in params]
    if missing:
        raise CaffeFormatError(f"{path}: has no weights for learnable layer(s) {', '.join(missing)} of the "
                               f"train net; Caffe would draw them from its fillers, which this kit does not "
                               f"reproduce: start from weights that hold every learnable layer")
    ignored = [name for name in params if name not in net.layer_by_name]
    try:
        net.load_params({k: v for k, v in params.items() if k in net.layer_by_name}, strict=True)
    except CaffeFormatError as exc:
        raise CaffeFormatError(f"{path}: {exc}") from None
    return ignored

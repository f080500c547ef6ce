"""Caffe's solvers, update for update (sgd_solver.cpp, nesterov_solver.cpp, adagrad_solver.cpp,
rmsprop_solver.cpp, adadelta_solver.cpp, adam_solver.cpp), in float32.

Every type shares SGDSolver::ApplyUpdate: take the rate of this iteration (learning_rate.py),
clip the global L2 norm of all diffs to clip_gradients, then per learnable blob, in Caffe's
order: divide the diff by iter_size, add weight_decay * decay_mult * (w, or sign(w) for L1),
turn the diff into the update (each type's own rule, with its history blobs), and finally
w -= update for every blob. Only the rule differs:

  SGD       h = momentum h + lr g;                 update = h
  Nesterov  h' = momentum h + lr g;                update = (1 + momentum) h' - momentum h
  AdaGrad   h += g^2;                              update = lr g / (sqrt(h) + delta)
  RMSProp   h = rms_decay h + (1 - rms_decay) g^2; update = lr g / (sqrt(h) + delta)
  AdaDelta  h = m h + (1 - m) g^2;  u = g sqrt((delta + s) / (delta + h));
            s = m s + (1 - m) u^2;                 update = lr u
  Adam      m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
            update = lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + delta),  t = iteration + 1

(lr is the rate times the blob's lr_mult.) The history holds what Caffe's .solverstate holds:
one blob per learnable blob, and for AdaDelta and Adam a second set after the first. SGD's
history is the update itself, already scaled by its iteration's rate, so a rate change leaves
old momentum at its old scale (torch.optim.SGD rescales it). Each `h = a x + b h` is Caffe's
axpby: scale h by b, then one fused multiply-add of a x (as OpenBLAS's saxpby and torch's add
with alpha compute it)."""
from __future__ import annotations

import math

import numpy as np
import torch

from weights_convert.errors import CaffeFormatError
from weights_convert.formats.schema import pb
from weights_convert.train.learnable import LearnableParam
from weights_convert.train.learning_rate import learning_rate


def _f32(value) -> float:
    """A solver field as Caffe holds it (a float), for use as a Python scalar."""
    return float(np.float32(value))


def _axpby(a: float, x: torch.Tensor, b: float, y: torch.Tensor) -> torch.Tensor:
    return y.mul_(b).add_(x, alpha=a)


class CaffeSolver:
    """The update shared by every solver type and its state (iteration, multistep's step
    counter, the history blobs); subclasses give `compute_update` and how many history sets."""
    type_name = ""
    history_sets = 1

    def __init__(self, param: pb.SolverParameter, params: list[LearnableParam]):
        if param.regularization_type not in ("L1", "L2"):
            raise CaffeFormatError(f"regularization_type {param.regularization_type!r} is unknown; "
                                   "Caffe knows L1 and L2")
        self.param = param
        self.params = params
        self.iter_size = int(param.iter_size)
        self.momentum = _f32(param.momentum)
        self.delta = _f32(param.delta)
        self.history = [torch.zeros_like(p.tensor, memory_format=torch.contiguous_format)
                        for _ in range(self.history_sets) for p in params]
        self.iteration = 0
        self.current_step = 0

    def rate(self) -> np.float32:
        """The rate the next update will use (does not advance multistep's counter)."""
        return learning_rate(self.param, self.iteration, self.current_step)[0]

    @torch.no_grad()
    def apply_update(self) -> np.float32:
        """Apply one update from the accumulated .grad of every param; returns its rate."""
        rate, self.current_step = learning_rate(self.param, self.iteration, self.current_step)
        diffs = [p.tensor.grad if p.tensor.grad is not None else torch.zeros_like(p.tensor) for p in self.params]
        self._clip(diffs)
        scale = float(np.float32(1.0) / np.float32(self.iter_size))
        weight_decay = np.float32(self.param.weight_decay)
        updates = []
        for index, (p, diff) in enumerate(zip(self.params, diffs)):
            if self.iter_size != 1:
                diff.mul_(scale)
            local_decay = weight_decay * np.float32(p.decay_mult)
            if local_decay:
                decay_term = p.tensor if self.param.regularization_type == "L2" else torch.sign(p.tensor)
                diff.add_(decay_term, alpha=float(local_decay))
            updates.append(self.compute_update(index, diff, float(rate * np.float32(p.lr_mult))))
        for p, update in zip(self.params, updates):  # Net::Update, after every blob's update is known
            p.tensor.sub_(update)
        self.iteration += 1
        return rate

    def compute_update(self, index: int, diff: torch.Tensor, local_rate: float) -> torch.Tensor:
        raise NotImplementedError

    def _clip(self, diffs: list[torch.Tensor]) -> None:
        clip = _f32(self.param.clip_gradients)
        if clip < 0:
            return
        sumsq = torch.zeros((), dtype=torch.float32, device=diffs[0].device if diffs else "cpu")
        for d in diffs:
            sumsq += (d * d).sum()
        norm = float(torch.sqrt(sumsq))
        if norm > clip:
            factor = float(np.float32(clip) / np.float32(norm))
            for d in diffs:
                d.mul_(factor)

    def second(self, index: int) -> torch.Tensor:
        """The second history set's blob (AdaDelta's squared updates, Adam's v)."""
        return self.history[len(self.params) + index]

    def load_history(self, arrays: list[np.ndarray], source: str) -> None:
        """History blobs in Caffe's order (a .solverstate's), checked by count and size."""
        if len(arrays) != len(self.history):
            raise CaffeFormatError(
                f"{source}: holds {len(arrays)} history blobs; solver type {self.type_name} keeps "
                f"{len(self.history)} for this net ({self.history_sets} per learnable blob; Caffe: incorrect length "
                "of history blobs). Was it written by another solver type or net?")
        for i, (h, a) in enumerate(zip(self.history, arrays)):
            p = self.params[i % len(self.params)]
            if a.size != h.numel():
                raise CaffeFormatError(f"{source}: history blob #{i} (for {p.key}) has {a.size} values, shape "
                                       f"{tuple(a.shape)}; the net's blob has shape {tuple(h.shape)}")
            h.copy_(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).reshape(h.shape))


class SGDSolver(CaffeSolver):
    type_name = "SGD"

    def compute_update(self, index, diff, local_rate):
        return _axpby(local_rate, diff, self.momentum, self.history[index])


class NesterovSolver(CaffeSolver):
    type_name = "Nesterov"

    def compute_update(self, index, diff, local_rate):
        h = self.history[index]
        previous = h.clone()
        _axpby(local_rate, diff, self.momentum, h)
        return _axpby(_f32(np.float32(self.momentum) + np.float32(1.0)), h, -self.momentum, previous)


class AdaGradSolver(CaffeSolver):
    type_name = "AdaGrad"

    def compute_update(self, index, diff, local_rate):
        h = self.history[index]
        h.add_(diff * diff)
        return (diff / (torch.sqrt(h) + self.delta)).mul_(local_rate)


class RMSPropSolver(CaffeSolver):
    type_name = "RMSProp"

    def compute_update(self, index, diff, local_rate):
        decay = _f32(self.param.rms_decay)
        h = _axpby(_f32(np.float32(1.0) - np.float32(decay)), diff * diff, decay, self.history[index])
        return (diff / (torch.sqrt(h) + self.delta)).mul_(local_rate)


class AdaDeltaSolver(CaffeSolver):
    type_name = "AdaDelta"
    history_sets = 2

    def compute_update(self, index, diff, local_rate):
        keep = _f32(np.float32(1.0) - np.float32(self.momentum))
        gradients, updates = self.history[index], self.second(index)
        _axpby(keep, diff * diff, self.momentum, gradients)
        step = diff * torch.sqrt((updates + self.delta) / (gradients + self.delta))
        _axpby(keep, step * step, self.momentum, updates)
        return step.mul_(local_rate)


class AdamSolver(CaffeSolver):
    type_name = "Adam"
    history_sets = 2

    def compute_update(self, index, diff, local_rate):
        beta1, beta2 = self.momentum, _f32(self.param.momentum2)
        t = self.iteration + 1
        correction = np.float32(math.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t))
        m = _axpby(_f32(np.float32(1.0) - np.float32(beta1)), diff, beta1, self.history[index])
        v = _axpby(_f32(np.float32(1.0) - np.float32(beta2)), diff * diff, beta2, self.second(index))
        return (m / (torch.sqrt(v) + self.delta)).mul_(_f32(np.float32(local_rate) * correction))


SOLVER_TYPES: dict[str, type[CaffeSolver]] = {
    cls.type_name: cls for cls in (SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver, AdaDeltaSolver, AdamSolver)}


def check_solver_type(param: pb.SolverParameter, source: str) -> None:
    """The type is one of Caffe's, with the checks its constructor makes."""
    if param.type not in SOLVER_TYPES:
        raise CaffeFormatError(f"{source}: solver type {param.type!r} is unknown; Caffe's types are "
                               f"{', '.join(SOLVER_TYPES)}")
    if param.type in ("AdaGrad", "RMSProp") and param.momentum != 0:
        raise CaffeFormatError(f"{source}: momentum cannot be used with {param.type} (got {param.momentum}; "
                               "Caffe requires 0)")
    if param.type == "RMSProp" and not 0 <= param.rms_decay < 1:
        raise CaffeFormatError(f"{source}: rms_decay must lie in [0, 1) (got {param.rms_decay})")


def make_solver(param: pb.SolverParameter, params: list[LearnableParam]) -> CaffeSolver:
    check_solver_type(param, "<solver>")
    return SOLVER_TYPES[param.type](param, params)

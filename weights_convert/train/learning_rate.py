"""Caffe's learning-rate policies (SGDSolver::GetLearningRate), every one of them.

Caffe evaluates each formula in C++ from float solver fields, partly in double, and stores
the result as a float; we evaluate in double and round once to float32. `multistep` advances
a step counter that is part of the solver state (SolverState.current_step), so the policy
takes and returns it."""
from __future__ import annotations

import math

import numpy as np

from weights_convert.errors import CaffeFormatError
from weights_convert.formats.schema import pb

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def check_policy(param: pb.SolverParameter, source: str = "<solver>") -> None:
    """The checks Caffe makes (CHECK_GT / CHECK_GE), up front instead of at the first iteration."""
    policy = param.lr_policy
    if policy not in POLICIES:
        raise CaffeFormatError(f"{source}: lr_policy {policy!r} is unknown; Caffe's policies are "
                               f"{', '.join(POLICIES)}")
    if policy in ("step", "sigmoid") and param.stepsize <= 0:
        raise CaffeFormatError(f"{source}: lr_policy {policy!r} needs stepsize > 0 (got {param.stepsize})")
    if policy in ("step", "exp", "inv", "multistep", "sigmoid") and param.gamma < 0:
        raise CaffeFormatError(f"{source}: lr_policy {policy!r} needs gamma >= 0 (got {param.gamma})")
    if policy == "poly" and param.max_iter <= 0:
        raise CaffeFormatError(f"{source}: lr_policy 'poly' needs max_iter > 0 (got {param.max_iter})")


def learning_rate(param: pb.SolverParameter, iteration: int, current_step: int = 0) -> tuple[np.float32, int]:
    """(rate, current_step) for the update that follows `iteration` updates."""
    base, gamma, power = float(param.base_lr), float(param.gamma), float(param.power)
    policy = param.lr_policy
    if policy == "fixed":
        rate = base
    elif policy == "step":
        current_step = iteration // param.stepsize
        rate = base * gamma ** current_step
    elif policy == "exp":
        rate = base * gamma ** iteration
    elif policy == "inv":
        rate = base * (1.0 + gamma * iteration) ** (-power)
    elif policy == "multistep":
        # one step at most per call, as Caffe: stepvalues must be visited in order
        if current_step < len(param.stepvalue) and iteration >= param.stepvalue[current_step]:
            current_step += 1
        rate = base * gamma ** current_step
    elif policy == "poly":
        rate = base * (1.0 - iteration / param.max_iter) ** power
    elif policy == "sigmoid":
        rate = base / (1.0 + math.exp(-gamma * (iteration - param.stepsize)))
    else:
        raise CaffeFormatError(f"lr_policy {policy!r} is unknown; Caffe's policies are {', '.join(POLICIES)}")
    return np.float32(rate), current_step

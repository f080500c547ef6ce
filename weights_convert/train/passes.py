"""One forward/backward pass of a training net (Caffe's Net::ForwardBackward)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch

from weights_convert.graph import Blobs, CaffeNet


@dataclass
class Pass:
    loss: np.float32                      # the objective, as Caffe's ForwardBackward returns it
    blobs: Blobs
    # blob name -> dL/d(the blob's first value), Caffe's blob diff (in-place layers pass the
    # diff back into the producer's output); only when asked for
    blob_diffs: dict[str, torch.Tensor] = field(default_factory=dict)


def forward_backward(net: CaffeNet, batch: Mapping[str, np.ndarray], blob_diffs: bool = False) -> Pass:
    """Forward `batch`, then add the gradient of the objective into every param's .grad (Caffe
    accumulates param diffs across passes the same way; clear them per iteration)."""
    if blob_diffs and net.skip_constant_frame:
        raise ValueError("blob diffs hold every position's gradient: build the net with skip_constant_frame=False "
                         "(a skipped constant frame passes its gradient through the constant)")
    first: dict[str, torch.Tensor] = {}

    def keep_first(name: str, value: torch.Tensor) -> None:
        if name not in first:
            first[name] = value
            if value.requires_grad:
                value.retain_grad()

    if net.force_backward:
        batch = {name: torch.as_tensor(np.asarray(value), dtype=torch.float32, device=net.device).requires_grad_()
                 for name, value in batch.items()}
    blobs = net.forward(batch, on_top=keep_first if blob_diffs else None)
    objective = net.objective(blobs)
    if objective.requires_grad:
        objective.backward()
    loss = np.float32(objective.detach().cpu())
    result = Pass(loss, blobs)
    if blob_diffs:
        result.blob_diffs = {name: value.grad if value.grad is not None else torch.zeros_like(value)
                             for name, value in first.items()}
    return result

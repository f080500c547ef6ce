"""The fine-tuning baseline: the base net's fc6 and fc7 and a new 2-way score layer (zeros, as
FCN's surgery leaves a new score layer) trained on the k supports at test time with the kit's
Caffe SGD (the convolutions frozen: their pool5 is computed once per image), then run on the query.

One iteration is k passes (iter_size k, one support each), Caffe's SoftmaxWithLoss normalised over
the counted pixels (void ignored) on the query grid, no dropout. The defaults (rate 1e-3, momentum
0.9, weight decay 5e-4, 20 iterations) are stated, not searched: a user chooses them on training
classes' episodes (never the test folds) through FineTune's fields."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from weights_convert import netspec as ns
from weights_convert.fcn.spec import UPSCORE_KERNEL, fcn32s_fc, fcn32s_head
from weights_convert.fcn.surgery import interp
from weights_convert.formats.schema import pb
from weights_convert.graph import CaffeNet
from weights_convert.train.solver_file import SolverFile
from weights_convert.train.trainer import Trainer


def head_net(pool5_shape: Sequence[int], fc: int, label_hw: tuple[int, int]) -> pb.NetParameter:
    """pool5 -> fc6 -> fc7 -> score_ft (2) -> upscore_ft (bilinear, fixed) -> crop -> loss."""
    layers = [ns.input_layer("pool5", ["pool5"], [tuple(pool5_shape)]),
              ns.input_layer("label", ["label"], [(1, 1, *label_hw)]),
              *fcn32s_fc("pool5", fc, dropout=None),
              *fcn32s_head(2, bottom="fc7", score="score_ft", upscore="upscore_ft", like="label"),
              ns.layer("loss", "SoftmaxWithLoss", ["score", "label"], loss_param={"ignore_label": 255})]
    return ns.net(layers, name="finetune_head")


def solver_param(iterations: int, base_lr: float, momentum: float, weight_decay: float, shots: int
                 ) -> pb.SolverParameter:
    return pb.SolverParameter(type="SGD", base_lr=base_lr, lr_policy="fixed", momentum=momentum,
                              weight_decay=weight_decay, iter_size=shots, max_iter=iterations)


def fine_tuned_scores(base_params, supports: Sequence[tuple[torch.Tensor, np.ndarray]], query_pool5: torch.Tensor,
                      *, iterations: int, base_lr: float, momentum: float, weight_decay: float,
                      device: torch.device) -> np.ndarray:
    """P(foreground) on the query grid after fine-tuning on `supports` ((pool5, label) pairs:
    label 1 foreground, 0 background, 255 ignored, on the query grid)."""
    label_hw = supports[0][1].shape[-2:]
    fc = int(np.shape(base_params["fc6"][0])[0])
    head = head_net(query_pool5.shape, fc, label_hw)
    net = CaffeNet(head, phase="TRAIN", device=device, source="finetune head")
    net.load_params({"fc6": base_params["fc6"], "fc7": base_params["fc7"],
                     "score_ft": [np.zeros((2, fc, 1, 1), np.float32), np.zeros(2, np.float32)],
                     "upscore_ft": [interp((2, 2, UPSCORE_KERNEL, UPSCORE_KERNEL))]})
    solver = SolverFile("finetune", solver_param(iterations, base_lr, momentum, weight_decay, len(supports)),
                        head, "finetune head")
    trainer = Trainer(solver, net, _Supports(supports), seed=0)  # no dropout in the head: the seed is unused
    for _ in range(iterations):
        trainer.step()
    layers, _ = net.needed_for(["score"])
    with torch.no_grad():
        score = net.forward({"pool5": query_pool5, "label": np.zeros((1, 1, *label_hw), np.float32)}, only=layers)["score"]
    return torch.softmax(score.double(), dim=1)[0, 1].cpu().numpy().astype(np.float32)


class _Supports:
    """The trainer's data: pass i is support i mod k, so an iteration (iter_size k) sees each once."""
    tops = ["pool5", "label"]

    def __init__(self, supports: Sequence[tuple[torch.Tensor, np.ndarray]]):
        self.batches = [{"pool5": pool5, "label": label[None, None].astype(np.float32)} for pool5, label in supports]

    def batch(self, index: int) -> dict:
        return self.batches[index % len(self.batches)]

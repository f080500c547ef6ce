"""A trained base net (FCN-32s, 16-way; training/base_net.py) as the baselines read it: pool5 and
fc7 of an image on the query grid (the query's own pre-processing: 500x500, BGR, 0..255, the
mean subtracted, which is FCN's input scale). One BaseNet serves every method and table of a
fold, so each image is computed once (kept up to a memory bound); the seconds each image took
are kept, so that every method is timed as if it had computed its own."""
from __future__ import annotations

import os
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from reproduce.errors import ReproduceError
from weights_convert.fcn.spec import fcn32s_net, widths_of
from weights_convert.formats.weights_io import read_weights
from weights_convert.graph import CaffeNet

KEPT_BYTES = 2 << 30  # features kept in memory; beyond, the least recently used are recomputed


class BaseNet:
    def __init__(self, weights: str | os.PathLike, device: str = "cpu"):
        self.weights = Path(weights)
        self.params = read_weights(weights)
        try:
            self.widths, self.classes = widths_of({n: [np.shape(b) for b in blobs] for n, blobs in self.params.items()})
        except KeyError as exc:
            raise ReproduceError(f"{weights}: not an FCN-32s base net (no layer {exc}); train one with "
                                 "`reproduce train-base`") from None
        self.device = torch.device(device)
        self.net = CaffeNet(fcn32s_net(self.classes, self.widths, train=False), source=str(weights), device=device)
        self.net.load_params({name: self.params[name] for name in self.net.layer_by_name
                              if name in self.params}, strict=True)
        self._layers, _ = self.net.needed_for(["fc7"])
        self._kept: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self._kept_bytes = 0
        self.seconds: dict[str, float] = {}  # image -> seconds its features took (reading included)
        self.computing_s = 0.0               # seconds spent computing features so far
        self.forwards = 0

    def features(self, inputs, name: str) -> dict[str, torch.Tensor]:
        """{"pool5", "fc7"}: (1, C, h, w) float32 on the device, for image `name` of `inputs`."""
        if name in self._kept:
            self._kept.move_to_end(name)
            return self._kept[name]
        started = time.perf_counter()
        with torch.no_grad():  # not inference_mode: fine-tuning trains on these tensors
            blobs = self.net.forward({"data": inputs.query_image(name)}, only=self._layers)
        kept = {"pool5": blobs["pool5"], "fc7": blobs["fc7"]}
        self.seconds[name] = time.perf_counter() - started
        self.computing_s += self.seconds[name]
        self.forwards += 1
        self._kept[name] = kept
        self._kept_bytes += sum(t.numel() * t.element_size() for t in kept.values())
        while self._kept_bytes > KEPT_BYTES and len(self._kept) > 1:
            _, old = self._kept.popitem(last=False)
            self._kept_bytes -= sum(t.numel() * t.element_size() for t in old.values())
        return kept

"""Numerics as close to Caffe's float32 as torch allows (used by evaluation, the graph
interpreter's checks and training)."""
from __future__ import annotations

import contextlib
import os

import torch


def _fp32_backends() -> list:
    """The backends whose float32 precision torch lets one choose (TF32 on GPUs, bf16 on CPUs)."""
    b = torch.backends
    return [b.cuda.matmul, b.cudnn.conv, b.cudnn.rnn, b.mkldnn.matmul, b.mkldnn.conv, b.mkldnn.rnn]


class faithful_mode(contextlib.ContextDecorator):
    """Numerics as close to Caffe's float32 as torch allows while inside: IEEE float32 in every
    matmul and convolution backend (no TF32 in cuBLAS or cuDNN, which allows it for convolutions
    by default), no cuDNN autotuning, deterministic algorithms. The previous settings come back on
    exit; usable as `with faithful_mode():` or as a decorator. Uses only torch's fp32_precision
    API: mixing it with the legacy allow_tf32 flags makes torch refuse to read either."""

    def __enter__(self):
        backends = _fp32_backends()
        self._saved = ([be.fp32_precision for be in backends], torch.are_deterministic_algorithms_enabled(),
                       torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark)
        # cuBLAS is only deterministic with a fixed workspace; read when CUDA starts.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        for be in backends:
            be.fp32_precision = "ieee"
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=False)
        return self

    def __exit__(self, *exc):
        precisions, det, warn_only, bench = self._saved
        for be, precision in zip(_fp32_backends(), precisions):
            be.fp32_precision = precision
        torch.backends.cudnn.benchmark = bench
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        return False

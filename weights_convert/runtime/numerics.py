"""Numerics as close to Caffe's float32 as torch allows (used by evaluation, the graph
interpreter's checks and training)."""
from __future__ import annotations

import contextlib
import functools
import os

import torch


def _fp32_backends() -> list:
    """The backends whose float32 precision torch lets one choose (TF32 on GPUs, bf16 on CPUs)."""
    b = torch.backends
    backends = [b.cuda.matmul, b.cudnn.conv, b.cudnn.rnn, b.mkldnn.matmul, b.mkldnn.conv, b.mkldnn.rnn]
    if not all(hasattr(be, "fp32_precision") for be in backends):
        raise RuntimeError(f"torch {torch.__version__} has no fp32_precision settings, which keep every float32 "
                           "product exact (no TF32); use torch 2.11 or later")
    return backends


@functools.cache
def _settle_lazy_kernels() -> None:
    """Call each transcendental CPU kernel serially, once per process. The first parallel
    torch.exp of a process (torch 2.13, MKL VML) sometimes leaves the first thread's chunk ~1e-4
    off: the golden training net's first-pass loss came out different in 10 of 280 fresh
    processes, and CI's resume tests failed on it; with this call first, 0 of 120 differed.
    bench/process_determinism.py checks whole training runs across processes."""
    one = torch.ones(1)
    for op in (torch.exp, torch.log, torch.log1p, torch.tanh, torch.sigmoid, torch.sqrt):
        op(one)


DETERMINISTIC_CUBLAS = (":4096:8", ":16:8")  # the workspace settings cuBLAS is deterministic with


def _check_cublas_workspace() -> None:
    """cuBLAS reads CUBLAS_WORKSPACE_CONFIG when it starts (the package sets it on import); with
    another value set by the user, faithful results cannot be had on a GPU in this process."""
    value = os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", DETERMINISTIC_CUBLAS[0])
    if value not in DETERMINISTIC_CUBLAS and torch.cuda.is_available():
        raise RuntimeError(f"CUBLAS_WORKSPACE_CONFIG is {value!r}: cuBLAS is deterministic "
                           f"only with {' or '.join(DETERMINISTIC_CUBLAS)}. Unset it (the kit sets {DETERMINISTIC_CUBLAS[0]}) "
                           "or set one of those before the process starts")


class faithful_mode(contextlib.ContextDecorator):
    """Numerics as close to Caffe's float32 as torch allows while inside: IEEE float32 in every
    matmul and convolution backend (no TF32 in cuBLAS or cuDNN, which allows it for convolutions
    by default), no cuDNN autotuning, deterministic algorithms (without their NaN fill of new
    memory), CPU kernels set up before their first parallel use. The previous settings come back
    on exit; usable as `with faithful_mode():` or as a decorator. Uses only torch's fp32_precision API: mixing it with the legacy allow_tf32
    flags makes torch refuse to read either."""

    def __enter__(self):
        _settle_lazy_kernels()
        backends = _fp32_backends()
        self._saved = ([be.fp32_precision for be in backends], torch.are_deterministic_algorithms_enabled(),
                       torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark,
                       torch.utils.deterministic.fill_uninitialized_memory)
        _check_cublas_workspace()
        for be in backends:
            be.fp32_precision = "ieee"
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=False)
        # Deterministic mode would also fill every new tensor with NaN before use, a debugging aid
        # that costs 2% of a query forward: nothing here reads memory it has not written
        # (tests/weights_convert/layers/test_frame.py checks the one place that builds a map from parts).
        torch.utils.deterministic.fill_uninitialized_memory = False
        return self

    def __exit__(self, *exc):
        precisions, det, warn_only, bench, fill = self._saved
        for be, precision in zip(_fp32_backends(), precisions):
            be.fp32_precision = precision
        torch.backends.cudnn.benchmark = bench
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill
        return False

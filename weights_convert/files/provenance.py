"""What identifies a file and a machine: content digests, the CPU's name, where float32 runs."""
from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it, else what platform knows."""
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine_name(device) -> str:
    """The GPU's name for a CUDA device, else the CPU's."""
    import torch  # here, not at the top: convert uses this module and needs no torch

    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def hardware(device) -> str:
    """Where float32 results are computed: the GPU's name, or the CPU's with torch's thread count
    (kernels and thread count both decide the order of float32 sums)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{machine_name(device)}"
    return f"{device.type}:{machine_name(device)}:threads={torch.get_num_threads()}"

"""The one check of a device name, made by every command before it creates anything."""
from __future__ import annotations

import contextlib
from typing import Iterator


class DeviceError(ValueError):
    """A --device that this machine cannot run: the message names the device as given."""


def checked_device(name: str) -> str:
    """The canonical name of a usable device (`cpu` for cpu and cpu:N; `cuda:N` for cuda and
    cuda:N), or DeviceError saying what is wrong with `name`."""
    import torch  # here: the command-line frame imports this module and must not load torch early

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise DeviceError(f"--device {name!r} is not a device name; expected cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return "cpu"
    if device.type != "cuda":
        raise DeviceError(f"--device {name!r}: only cpu and cuda[:N] are supported")
    if not torch.cuda.is_available():
        raise DeviceError(f"--device {name!r} was asked for, but this torch ({torch.__version__}) has no usable "
                          "CUDA device")
    index = torch.cuda.current_device() if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise DeviceError(f"--device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                          f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return f"cuda:{index}"


@contextlib.contextmanager
def explained_out_of_memory(what: str) -> Iterator[None]:
    """A device out of memory says what was being done and what to try, in one line (MemoryError)."""
    import torch

    try:
        yield
    except torch.cuda.OutOfMemoryError as exc:
        raise MemoryError(f"{what}: the device ran out of memory ({str(exc).splitlines()[0]}); free the GPU "
                          "(other processes), use a GPU with more memory, or run on --device cpu") from None

"""Long-lived tensors in memory of their own, returned to the system when they are freed.

An evaluation keeps hundreds of query feature maps (about 5 MB each at full size) and frees them
in episode order, between the transient activations of forward passes. Left to glibc's malloc,
those maps come from the heap among the activations (its mmap threshold rises to 32 MB after the
first large free), and freed ones stay resident: on the VOC-scale rehearsal a fold's RSS kept
growing after its live features had peaked (5.5 GiB for 1.9 GiB of features).

Fixing the mmap threshold for the whole process bounds that, but maps and unmaps every activation
of 1 MiB or more on each use: on virtual machines, where page faults are dear, that made the demo
1.75x slower (bench/RESULTS.md). So the store's own tensors get a mapping of their own, and after
an episode whose forwards left more than a set amount free on the heap, `trim_when_free_exceeds`
hands those pages back (malloc_trim): activations keep malloc's defaults, and small nets, whose
heap stays small, are never trimmed.

A training process is the other case: every pass needs its peak again (the activations a backward
reads), so it lets malloc keep freed blocks of any size (`keep_freed_blocks`) and reuse them,
instead of mapping each large activation afresh and faulting in (and the kernel zeroing) its pages
on every pass."""
from __future__ import annotations

import ctypes
import functools
import mmap
import platform

import torch

OWN_MAPPING_BYTES = 1 << 20  # below this a tensor stays on the heap (a mapping costs a page fault per page)


def in_own_mapping(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` (a CPU tensor of at least OWN_MAPPING_BYTES) copied into an anonymous mapping that
    is unmapped when the returned tensor is freed; any other tensor is returned as it is."""
    nbytes = tensor.numel() * tensor.element_size()
    if tensor.device.type != "cpu" or nbytes < OWN_MAPPING_BYTES:
        return tensor
    region = mmap.mmap(-1, nbytes)  # torch.frombuffer holds a reference: unmapped with the tensor
    owned = torch.frombuffer(region, dtype=tensor.dtype, count=tensor.numel()).reshape(tensor.shape)
    owned.copy_(tensor)
    return owned


@functools.cache
def _glibc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL(None)
    if hasattr(libc, "mallinfo2"):
        libc.mallinfo2.restype = _MallInfo2
    return libc


def return_free_memory() -> bool:
    """Give the C heap's free pages back to the system (glibc's malloc_trim(0), every arena);
    True when something was returned. Elsewhere nothing is done (False)."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


def free_heap_bytes() -> int:
    """Bytes malloc holds free in its heaps, every arena (glibc's mallinfo2; 0 elsewhere)."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return 0
    return int(libc.mallinfo2().fordblks)


def trim_when_free_exceeds(limit: int) -> bool:
    """return_free_memory() when the heaps hold more than `limit` free bytes: a large forward's
    leftovers go back, while small nets (whose heap stays small) keep theirs and fault nothing."""
    return return_free_memory() if free_heap_bytes() > limit else False


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
KEEP_BYTES = 1 << 30


def keep_freed_blocks() -> bool:
    """For the rest of this process, blocks of any size up to 1 GiB come from malloc's heap and
    freed ones stay there for the next allocation (mmap and trim thresholds at 1 GiB): for processes
    that reach the same peak again and again, a training process. Process-wide and one-way (glibc
    stops adapting its thresholds once one is set), so it belongs to a command's entry, not to a
    library call. True when set; elsewhere than glibc nothing is done (False)."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))

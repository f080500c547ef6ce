"""Give freed feature maps back to the system.

An evaluation holds hundreds of query feature maps (about 5 MB each at full size) and frees them
in episode order, between the transient activations of forward passes. glibc's malloc raises its
mmap threshold each time it frees a mapped block (up to 32 MB), so after the first forward such
blocks come from the heap, interleaved with activations, and freed ones stay resident: on the
VOC-scale rehearsal a fold's RSS kept growing after its live features had peaked (5.5 GiB at the
end for 1.9 GiB of features at their peak). A fixed threshold puts every block of 1 MiB or more in
its own mapping, returned when freed (bench/RESULTS.md, "VOC-scale rehearsal")."""
from __future__ import annotations

import ctypes
import platform

M_MMAP_THRESHOLD = -3   # glibc's mallopt parameter (malloc.h)
THRESHOLD_BYTES = 1 << 20


def map_large_blocks(threshold: int = THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold for this process (stops its dynamic raising); True when set.
    Other C libraries are left as they are (False)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    return ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, int(threshold)) == 1

"""in_own_mapping: feature-sized tensors kept between activations go back to the system when freed,
while malloc's defaults stay in force for everything else."""
import json
import subprocess
import sys

import torch

from weights_convert.runtime.allocator import OWN_MAPPING_BYTES, in_own_mapping

# Fresh process: one freed 8 MB block raises glibc's dynamic mmap threshold above a 5 MB feature
# map; then 5 MB "features" interleaved with kept 5 MB heap tensors are allocated and the features
# freed. "own": each feature is moved into its own mapping, as the feature store does.
SCENARIO = """
import json, sys
import torch
from weights_convert.runtime.allocator import in_own_mapping

def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) << 10

own = sys.argv[1] == "own"
del_me = torch.ones(2 << 20)
del del_me
features, kept = [], []
for _ in range(60):
    feature = torch.ones(5 << 18)   # 5 MiB, pages touched
    features.append(in_own_mapping(feature) if own else feature)
    del feature
    kept.append(torch.ones(5 << 18))
before = rss()
features.clear()
print(json.dumps({"released": before - rss()}))
"""


def _released(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", SCENARIO, mode], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)["released"]


def test_freed_feature_maps_in_own_mappings_are_returned_to_the_system():
    freed = 60 * (5 << 20)
    assert _released("own") >= 0.9 * freed
    # The control: glibc's default keeps heap blocks resident, which is what the mappings are for.
    assert _released("heap") < 0.2 * freed


def test_in_own_mapping_copies_values_and_leaves_small_tensors_alone():
    big = torch.randn(3, OWN_MAPPING_BYTES // 4 // 3 + 1)
    owned = in_own_mapping(big)
    assert owned.data_ptr() != big.data_ptr() and owned.shape == big.shape and owned.dtype == big.dtype
    assert torch.equal(owned, big) and owned.is_contiguous()
    small = torch.randn(16)
    assert in_own_mapping(small) is small
    transposed = torch.randn(600, 700).t()  # non-contiguous input: values kept, layout standard
    assert torch.equal(in_own_mapping(transposed), transposed)


TRIM_SCENARIO = """
import json, sys
import torch
from weights_convert.runtime.allocator import free_heap_bytes, trim_when_free_exceeds

def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) << 10

small = [torch.ones(25_000) for _ in range(2000)]   # 100 kB blocks: heap, not mappings
keep = torch.ones(10)                               # a live block above them
del small
free, before = free_heap_bytes(), rss()
kept = trim_when_free_exceeds(1 << 40)              # a limit far above: nothing done
trimmed = trim_when_free_exceeds(64 << 20)
print(json.dumps({"free": free, "kept": kept, "trimmed": trimmed, "released": before - rss()}))
"""


def test_the_heaps_free_pages_go_back_only_above_the_limit():
    done = subprocess.run([sys.executable, "-c", TRIM_SCENARIO], capture_output=True, text=True, check=True)
    got = json.loads(done.stdout)
    assert got["free"] >= 150 << 20 and got["kept"] is False and got["trimmed"] is True
    assert got["released"] >= 0.8 * got["free"]


# Fresh process: a 64 MiB activation is made and freed, again and again, as a training pass does
# on every pass; the page faults of each time are counted.
KEEP_SCENARIO = """
import json, resource, sys
import torch
from weights_convert.runtime.allocator import free_heap_bytes, keep_freed_blocks

kept = keep_freed_blocks() if sys.argv[1] == "keep" else None
faults = []
for _ in range(16):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(16 << 20)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del x
print(json.dumps({"kept": kept, "free": free_heap_bytes(), "faults": faults}))
"""


def _rounds(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", KEEP_SCENARIO, mode], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_a_training_process_reuses_its_freed_activations():
    default, keep = _rounds("default"), _rounds("keep")
    pages = (64 << 20) // 4096
    assert min(default["faults"]) >= 0.9 * pages  # mapped afresh each time: every page faulted in again
    assert keep["kept"] is True
    # torch's 64-byte aligned blocks leave holes the next one does not fit at first; within a few
    # rounds the heap holds enough and stops growing: no page is faulted in again.
    assert max(keep["faults"][-4:]) < 0.05 * pages
    assert keep["free"] <= 12 * (64 << 20)

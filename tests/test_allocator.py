"""in_own_mapping: feature-sized tensors kept between activations go back to the system when freed,
while malloc's defaults stay in force for everything else."""
import json
import subprocess
import sys

import torch

from weights_convert.allocator import OWN_MAPPING_BYTES, in_own_mapping

# Fresh process: one freed 8 MB block raises glibc's dynamic mmap threshold above a 5 MB feature
# map; then 5 MB "features" interleaved with kept 5 MB heap tensors are allocated and the features
# freed. "own": each feature is moved into its own mapping, as the feature store does.
SCENARIO = """
import json, sys
import torch
from weights_convert.allocator import in_own_mapping

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

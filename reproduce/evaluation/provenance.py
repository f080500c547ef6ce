"""What a cached tensor and a run depend on besides their inputs: the source files that compute
them (the modules their entry points import, read as bytes, never imported), torch's version and the hardware that
runs the kernels (CPUs, GPUs and thread counts may pick kernels that round differently). A
record keeps each part apart, so that a refused resume can say in words what changed."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from weights_convert.files.provenance import hardware
from weights_convert.files.source_graph import source_files

# Bump when the meaning of a cached tensor changes in a way the sources below cannot show.
CACHE_FORMAT = 1
_ROOT = Path(__file__).resolve().parents[2]
_PACKAGES = ("reproduce", "weights_convert")

# The code between an image file and its cached tensor (data reading, pre-processing, the cache,
# the model as loaded), named by its entry modules: the files are what they import, found in the
# source (weights_convert/files/source_graph.py), so a module moved or added on the path is in the key.
FEATURE_CODE = ("reproduce.data.dataset_inputs", "reproduce.evaluation.feature_cache",
                "weights_convert.oslsm.loading", "weights_convert.runtime.numerics")
# ... and the code that turns a run's tensors into its rows and numbers (episodes, protocols, scoring).
RUN_CODE = FEATURE_CODE + ("reproduce.evaluation.evaluate",)


def source_digests(modules: tuple[str, ...], root: Path = _ROOT) -> dict[str, str]:
    """Repository-relative path -> sha256 (16 hex digits) of every file the modules consist of."""
    return {f.relative_to(root).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()[:16]
            for f in source_files(modules, root, _PACKAGES)}


def code_record(device: torch.device | str, modules: tuple[str, ...] = RUN_CODE, root: Path = _ROOT) -> dict:
    return {"cache_format": CACHE_FORMAT, "torch": torch.__version__, "hardware": hardware(device),
            "sources": source_digests(modules, root)}


def record_digest(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def code_version(device: torch.device | str, root: Path = _ROOT) -> str:
    """The digest that keys cached tensors (with the model's and the inputs' digests)."""
    return record_digest(code_record(device, FEATURE_CODE, root))


def describe_changes(old: dict, new: dict) -> list[str]:
    """What differs between two code records, in words."""
    changes = [f"{key.replace('_', ' ')} was {old.get(key)!r}, now {new[key]!r}"
               for key in ("torch", "hardware", "cache_format") if old.get(key) != new[key]]
    old_sources, new_sources = old.get("sources") or {}, new["sources"]
    edited = sorted(f for f in new_sources if f in old_sources and old_sources[f] != new_sources[f])
    added = sorted(set(new_sources) - set(old_sources))
    removed = sorted(set(old_sources) - set(new_sources))
    for label, files in (("source files changed", edited), ("source files added", added),
                         ("source files removed", removed)):
        if files:
            changes.append(f"{label}: {', '.join(files)}")
    return changes

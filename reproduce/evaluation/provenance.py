"""What a cached tensor and a run depend on besides their inputs: the source files that compute
them (listed here by path, read as bytes, never imported), torch's version and the hardware that
runs the kernels (CPUs, GPUs and thread counts may pick kernels that round differently). A
record keeps each part apart, so that a refused resume can say in words what changed."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from weights_convert.provenance import hardware

# Bump when the meaning of a cached tensor changes in a way the sources below cannot show.
CACHE_FORMAT = 1
_ROOT = Path(__file__).resolve().parents[2]

# The code between an image file and its cached tensor: data reading, pre-processing, the model.
FEATURE_SOURCES = ("reproduce/data/voc.py", "reproduce/data/resize2017.py", "reproduce/data/preprocess.py",
                   "reproduce/data/dataset_inputs.py", "reproduce/evaluation/feature_cache.py",
                   "weights_convert/numerics.py", "weights_convert/formats/*.py", "weights_convert/oslsm/*.py")
# ... and the code that turns a run's tensors into its rows and numbers.
RUN_SOURCES = FEATURE_SOURCES + ("reproduce/evaluation/scoring.py", "reproduce/evaluation/evaluate.py",
                                  "reproduce/evaluation/run_folder.py")


def source_digests(patterns: tuple[str, ...]) -> dict[str, str]:
    """Repository-relative path -> sha256 (16 hex digits) of every file the patterns name."""
    files = sorted({f for pattern in patterns for f in _ROOT.glob(pattern)})
    return {f.relative_to(_ROOT).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()[:16] for f in files}


def code_record(device: torch.device | str, sources: tuple[str, ...] = RUN_SOURCES) -> dict:
    return {"cache_format": CACHE_FORMAT, "torch": torch.__version__, "hardware": hardware(device),
            "sources": source_digests(sources)}


def record_digest(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def code_version(device: torch.device | str) -> str:
    """The digest that keys cached tensors (with the model's and the inputs' digests)."""
    return record_digest(code_record(device, FEATURE_SOURCES))


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

"""Items of a fold: (image, class) pairs, the small-object filter and per-class sets (protocol §1).

Scanning the masks is the slow part, so the per-image class lists and filter decisions (for all
20 classes, so every fold reuses them) may be cached on disk: in OUR cache folder
($OSLSM_CACHE or ~/.cache/oslsm-repro), keyed by the split file and the mask files' sizes and
mtimes. The original pickled its annotations into the data set folder; we never write there.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reproduce.errors import ReproduceError
from reproduce.data.resize2017 import resize_2017
from reproduce.data.voc import VOID, VOCDataset, fold_classes, refuse_inside_dataset
from weights_convert.files.atomic import atomic_write_text

MIN_CELLS = 2  # an item is kept when its 1/32 label map sums to MORE than this
CACHE_VERSION = 1


def change_coordinates(mask: np.ndarray, down_scale: float = 32.0, offset: float = 0.0) -> np.ndarray:
    """util.change_coordinates: pad so that label pixels align with the net's output grid, then
    nearest-neighbour resize to the output grid with the 2017 arithmetic (x.5 ties included)."""
    pad = int(-offset + (down_scale - 1) / 2)
    orig_h, orig_w = mask.shape[0], mask.shape[1]
    new_h = int(math.ceil(float(orig_h + 2 * pad) / down_scale))
    new_w = int(math.ceil(float(orig_w + 2 * pad) / down_scale))
    if pad > 0:
        widths = ((0, 0),) * (mask.ndim - 2) + (
            (pad, int(new_h * down_scale - orig_h - pad)),
            (pad, int(new_w * down_scale - orig_w - pad)))
        padded = np.pad(mask, widths, "constant")
    elif pad == 0:
        padded = mask
    else:
        raise ReproduceError(f"change_coordinates: negative padding for offset {offset}")
    if new_h != orig_h or new_w != orig_w:
        return resize_2017(padded, (new_h, new_w), order=0, preserve_range=True)
    return padded.copy()


def keeps_object(binary: np.ndarray) -> bool:
    return float(change_coordinates(binary, 32.0, 0.0).sum()) > MIN_CELLS


def _scan_one(dataset: VOCDataset, name: str) -> dict[int, bool]:
    mask = dataset.read_mask(name)  # its errors name the file already
    try:
        return scan_image(mask)
    except ReproduceError as exc:
        raise ReproduceError(f"{dataset.mask_path(name)}: {exc}") from exc


def scan_image(mask: np.ndarray) -> dict[int, bool]:
    """Class ids present in a mask (ascending, 0 and void excluded) -> kept by the filter."""
    out = {}
    for cls in np.unique(mask).tolist():
        if cls in (0, VOID):
            continue
        out[int(cls)] = keeps_object((mask == cls).astype(np.float32))
    return out


@dataclass
class FoldItems:
    """The kept items of one fold and the structures the original data layer built from them."""
    fold: int
    items: list[tuple[str, int]]                      # kept (name, cls), in item order
    dropped: list[tuple[str, int]]                    # removed by the small-object filter
    class_sets: dict[int, list[str]] = field(default_factory=dict)  # cls -> names, item order
    db_items: list[tuple[int, int]] = field(default_factory=list)   # (cls, index in its set)

    @property
    def n_items(self) -> int:
        return len(self.db_items)


def filter_items(scan: list[tuple[str, dict[int, bool]]], wanted: set[int], tag: str | None = None):
    """(kept, dropped) (name, cls) items of the wanted classes, in scan order then ascending class;
    with `tag`, each name becomes (tag, name), as the training sets name their items."""
    kept, dropped = [], []
    for name, classes in scan:
        for cls in sorted(classes):
            if cls in wanted:
                (kept if classes[cls] else dropped).append(((tag, name) if tag else name, cls))
    return kept, dropped


def fold_items(fold: int, kept: list, dropped: list) -> FoldItems:
    """The per-class sets and (cls, index in its set) items the original built from the kept items."""
    class_sets: dict[int, list] = {}
    db_items = []
    for name, cls in kept:
        members = class_sets.setdefault(cls, [])
        db_items.append((cls, len(members)))
        members.append(name)
    return FoldItems(fold, kept, dropped, class_sets, db_items)


def fold_items_from_scan(scan: list[tuple[str, dict[int, bool]]], fold: int) -> FoldItems:
    return fold_items(fold, *filter_items(scan, set(fold_classes(fold))))


def default_cache_dir() -> Path:
    env = os.environ.get("OSLSM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "oslsm-repro"


def _scan_key(dataset: VOCDataset) -> str:
    digest = hashlib.sha256()
    digest.update(f"items-v{CACHE_VERSION}\n".encode())
    digest.update(dataset.split_file.read_bytes())
    for name in dataset.names:
        path = dataset.mask_path(name)
        try:
            st = path.stat()
        except OSError as exc:
            raise ReproduceError(f"{path}: mask file is missing ({exc})") from exc
        digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


_MEMO: dict[str, list[tuple[str, dict[int, bool]]]] = {}


def scan_dataset(dataset: VOCDataset, cache_dir: str | Path | None = None,
                 use_cache: bool = True) -> list[tuple[str, dict[int, bool]]]:
    """Per image, in split order: {class id: kept by the filter}. Cached in memory and on disk."""
    if not use_cache:
        return [(name, _scan_one(dataset, name)) for name in dataset.names]
    key = _scan_key(dataset)
    if key in _MEMO:
        return _MEMO[key]
    cache_file = Path(cache_dir or default_cache_dir()) / f"items-{key[:32]}.json"
    scan = _read_cache(cache_file, dataset)
    if scan is None:
        scan = [(name, _scan_one(dataset, name)) for name in dataset.names]
        _write_cache(cache_file, dataset, scan)
    _MEMO[key] = scan
    return scan


def _read_cache(path: Path, dataset: VOCDataset):
    try:
        data = json.loads(path.read_text())
        if (data["version"] != CACHE_VERSION or data["names"] != dataset.names
                or len(data["classes"]) != len(data["names"])):
            return None
        return [(name, {int(c): bool(k) for c, k in classes})
                for name, classes in zip(data["names"], data["classes"])]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a missing or stale cache is rebuilt from the masks


def _write_cache(path: Path, dataset: VOCDataset, scan) -> None:
    refuse_inside_dataset(path.parent, dataset.root, "cache folder")
    payload = {"version": CACHE_VERSION, "names": [n for n, _ in scan],
               "classes": [sorted(c.items()) for _, c in scan]}
    try:
        atomic_write_text(path, json.dumps(payload))
    except OSError as exc:  # an unwritable cache folder only costs a rescan next time
        print(f"warning: cannot write the item cache {path} ({exc.strerror}); the masks are rescanned next time",
              file=sys.stderr)


def build_items(dataset: VOCDataset, fold: int, cache_dir: str | Path | None = None,
                use_cache: bool = True) -> FoldItems:
    """The kept items of `fold` (classes 5*fold+1..5*fold+5) in the original item order."""
    fold_classes(fold)  # validates the fold
    return fold_items_from_scan(scan_dataset(dataset, cache_dir, use_cache), fold)

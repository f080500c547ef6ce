"""One evaluation run's folder: its manifest (what the run is; a restart must match it), the
episode journal (one fsync'd CSV row per finished episode), the results and the lock that keeps
a second process out while one writes.

Layout (every file atomic except the journal, which is appended and fsync'd):
    manifest.json     written first: fold, shots, protocol, episodes and model sha256, device,
                      `code` (torch, hardware, a digest per source file); a resume must match it.
                      `reference`: whether the episodes are the ones the original printed on the
                      real VOC 2012 (identical, differs at episode N, not applicable: why)
    episodes.json     the episode list used, with its sha256
    all_results.csv   one row per episode, test.py's [iter, 0, class_index0, tp, tn, fp, fn, iou_img]
    summary.json      per-class tp/tn/fp/fn/IoU, mIoU, FB-IoU, shas: only deterministic numbers, so
                      that resumed, cached and uncached runs give byte-identical files
    timings.json      wall times, forward counts and cache statistics of the last session
    iou_results.txt   test.py's layout
    data.json         sha256 (16 hex digits) of each image and mask file the episodes read, by image
                      name: a resume on changed files is refused, naming them
    sources.json      where the data set, weights and prototxt were (for `figure` and `report`;
                      not part of the manifest, so a moved data set still resumes)
    pred/soft, pred/hard  mask PNGs with --save-masks (test.py's %05d.png names)
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator, Sequence

import numpy as np

from reproduce.data.episodes import episodes_to_json, load_episodes
from reproduce.errors import ReproduceError
from reproduce.evaluation.provenance import describe_changes
from reproduce.evaluation.scoring import format_csv_row, parse_csv_line
from weights_convert.files.atomic import atomic_path, atomic_write_text, naming_os_errors
from weights_convert.files.folder_lock import folder_lock

RUN_FORMAT = "oslsm-repro-run/1"
CSV_NAME = "all_results.csv"
SOURCES_NAME = "sources.json"
DATA_NAME = "data.json"
MASK_DIGEST_KEY = "oslsm-repro-sha256"
LOCK_NAME = ".run.lock"
# Manifest fields that may grow when a finished run is extended to more episodes.
_EXTENSIBLE = ("n_episodes", "episodes_sha256", "reference")


def to_json(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def is_run_folder(path: Path) -> bool:
    """A folder an evaluation of this tool wrote: its manifest says so."""
    try:
        return json.loads((path / "manifest.json").read_text()).get("format") == RUN_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


class RunFolder:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.manifest_path = self.path / "manifest.json"
        self.csv_path = self.path / CSV_NAME

    @contextmanager
    def locked(self) -> Iterator["RunFolder"]:
        """Create the folder and hold its lock: one evaluation at a time writes here."""
        self.path.mkdir(parents=True, exist_ok=True)
        with folder_lock(self.path, LOCK_NAME, "evaluation", ReproduceError, owns=is_run_folder):
            yield self

    def start(self, manifest: dict, episodes: Sequence, fold: int, shots: int, n_items: int,
              data: dict[str, str]) -> None:
        """Write the manifest, the episode list and the data digests of a new run, or check that the
        folder holds this run on the same data (or a shorter run over the same first episodes, which
        this one extends). A folder where no episode was scored yet never blocks another request.
        `data`: image name -> digest of the files an episode reads of it."""
        # (a folder with rows but no manifest of ours never gets here: locked() refuses it)
        scored = self.csv_path.exists() and b"\n" in self.csv_path.read_bytes()
        if scored:
            self._check_manifest(manifest, episodes)
            self._check_data(data)
        atomic_write_text(self.manifest_path, to_json(manifest))
        known = self._read_data() if scored else {}
        atomic_write_text(self.path / DATA_NAME, to_json(known | data))
        if not (self.path / "episodes.json").exists() or not self._episode_file_matches(manifest):
            # The same file format as `python -m reproduce episodes`: usable as --episodes-file.
            episodes_to_json(self.path / "episodes.json", episodes, fold, shots, n_items)

    def _episode_file_matches(self, manifest: dict) -> bool:
        return load_episodes(self.path / "episodes.json").sha256 == manifest["episodes_sha256"]

    def _check_manifest(self, manifest: dict, episodes: Sequence) -> None:
        old = self._read_manifest()
        changes = []
        for key in manifest:
            if old.get(key) == manifest[key] or key in _EXTENSIBLE:
                continue
            if key == "code" and isinstance(old.get(key), dict):
                changes += describe_changes(old[key], manifest[key])
            else:
                changes.append(f"{key} was {old.get(key)!r}, now {manifest[key]!r}")
        if old.get("episodes_sha256") != manifest["episodes_sha256"] and not self._extends(old, episodes):
            changes.append(f"the episodes differ (not the first {old.get('n_episodes')} of this run's "
                           f"{len(episodes)})")
        if changes:
            raise ReproduceError(f"{self.path} holds a different run: {'; '.join(changes)}. Resume with what it "
                                 "was run with, or choose another --out (or delete that folder) to start anew")

    def _read_manifest(self) -> dict:
        try:
            old = json.loads(self.manifest_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ReproduceError(f"{self.manifest_path}: unreadable run manifest ({exc}); "
                                 "remove the run folder to start over") from None
        if not isinstance(old, dict):
            raise ReproduceError(f"{self.manifest_path}: the run manifest is not a JSON object; "
                                 "remove the run folder to start over")
        return old

    def _read_data(self) -> dict[str, str]:
        path = self.path / DATA_NAME
        if not path.exists():
            return {}  # a run from before the data was recorded
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ReproduceError(f"{path}: unreadable data digests ({exc}); remove the run folder to start over") \
                from None
        return data if isinstance(data, dict) else {}

    def _check_data(self, data: dict[str, str]) -> None:
        """The files the scored episodes read must be the ones read now: one run, one data set."""
        old = self._read_data()
        changed = sorted(name for name in data if name in old and old[name] != data[name])
        if changed:
            listed = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
            raise ReproduceError(f"{self.path} was scored on other data: the image or mask of {listed} changed "
                                 f"since (digests in {DATA_NAME}). Resume with the data it was run on, or choose "
                                 "another --out to start anew")

    def _extends(self, old: dict, episodes: Sequence) -> bool:
        """The old run's episodes are the first ones of `episodes`: a longer run continues it."""
        path = self.path / "episodes.json"
        if not path.exists() or not isinstance(old.get("n_episodes"), int) or old["n_episodes"] > len(episodes):
            return False
        previous = load_episodes(path).episodes
        return len(previous) == old["n_episodes"] and list(previous) == list(episodes[:len(previous)])

    # ------------------------------------------------------------------ the journal
    def done_rows(self, episodes: Sequence) -> list[list]:
        return read_done_rows(self.csv_path, episodes)

    @contextmanager
    def journal(self) -> Iterator[IO[bytes]]:
        with open(self.csv_path, "ab") as fh:
            yield fh

    @staticmethod
    def append_row(journal: IO[bytes], row: list) -> None:
        with naming_os_errors(journal.name):  # a full disk's error names no file
            journal.write(format_csv_row(row).encode())
            journal.flush()
            os.fsync(journal.fileno())

    def mask_paths(self, index: int) -> dict[str, Path]:
        return {kind: self.path / "pred" / kind / f"{index:05d}.png" for kind in ("soft", "hard")}

    def save_masks(self, index: int, score: np.ndarray) -> None:
        from PIL import Image
        from PIL.PngImagePlugin import PngInfo

        # For looking at, not scoring: soft = the sigmoid map as 8-bit grey (test.py's skimage imsave
        # wrote 16-bit; 8 bits are our choice), hard = test.py's binarisation (0.5 counts as 1 in
        # the image, while scoring uses > 0.5).
        images = {"soft": np.clip(np.rint(score * 255.0), 0, 255).astype(np.uint8),
                  "hard": np.where(score >= 0.5, 255, 0).astype(np.uint8)}
        for kind, path in self.mask_paths(index).items():
            text = PngInfo()  # the pixels' digest travels with them: a damaged mask is never used
            text.add_text(MASK_DIGEST_KEY, hashlib.sha256(images[kind].tobytes()).hexdigest())
            with atomic_path(path) as tmp:
                Image.fromarray(images[kind]).save(tmp, format="PNG", pnginfo=text)

    def write_json(self, name: str, obj) -> None:
        atomic_write_text(self.path / name, to_json(obj))


def read_saved_mask(path: Path) -> np.ndarray | None:
    """A mask `save_masks` wrote, checked against the digest stored in it; None when it is absent,
    unreadable or not the bytes written (a warning names it: the caller recomputes it)."""
    from PIL import Image

    if not path.is_file():
        return None
    try:
        with Image.open(path) as im:
            pixels, written = np.asarray(im), im.info.get(MASK_DIGEST_KEY)
    except (OSError, ValueError, SyntaxError) as exc:
        return _damaged_mask(path, f"unreadable: {exc}")
    if written is not None and hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest() != written:
        return _damaged_mask(path, "its pixels do not match the digest written with them")
    return pixels


def _damaged_mask(path: Path, why: str) -> None:
    print(f"WARNING: saved mask {path} is damaged ({why}); recomputing the prediction instead", file=sys.stderr)
    return None


def read_done_rows(csv_path: Path, episodes: Sequence) -> list[list]:
    """Rows of finished episodes. A partial last line (a kill during a write) is cut off; every row
    must be the next episode of this run's list."""
    if not csv_path.exists():
        return []
    data = csv_path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with open(csv_path, "r+b") as fh:
            fh.truncate(end)
            fh.flush()
            os.fsync(fh.fileno())
    try:
        text = data[:end].decode()
    except UnicodeDecodeError as exc:
        raise ReproduceError(f"{csv_path}: not a results CSV of this tool ({exc})") from None
    rows = []
    for n, line in enumerate(text.splitlines(True), 1):
        row = parse_csv_line(line, str(csv_path), n)
        i = n - 1
        if i >= len(episodes):
            raise ReproduceError(f"{csv_path}:{n}: more rows than the run's {len(episodes)} episodes")
        if row[0] != i or row[2] != int(episodes[i].cls) - 1:
            raise ReproduceError(f"{csv_path}:{n}: row {row[:3]} does not belong to episode {i} "
                                 f"(class index {int(episodes[i].cls) - 1}); the journal is damaged: delete "
                                 f"this line and every line after it to resume from episode {i}, or delete "
                                 f"{csv_path.parent} to start over")
        rows.append(row)
    return rows

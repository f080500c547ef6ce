"""Run a converted OSLSM model over one fold's test episodes and score it as the original test.py.

RUN_DIR layout (all files atomic except the per-episode journal, which is appended and fsync'd):
    manifest.json     written first: what this run is (fold, shots, protocol, episodes and model
                      sha256, device, code version); a restart must match it to resume. Also
                      `reference`: whether the episodes are the ones the original printed on the
                      real VOC 2012 (identical, differs at episode N, not applicable: why)
    episodes.json     the episode list used, with its sha256
    all_results.csv   one row per episode, test.py's [iter, 0, class_index0, tp, tn, fp, fn, iou_img]
    summary.json      per-class tp/tn/fp/fn/IoU, mIoU, FB-IoU, shas: only deterministic numbers, so
                      that resumed, cached and uncached runs give byte-identical files
    timings.json      wall times, forward counts and cache statistics of the last session
    iou_results.txt   test.py's layout
    sources.json      where the data set, weights and prototxt were (for `figure` and `report`;
                      not part of the manifest, so a moved data set still resumes)
    pred/soft, pred/hard  mask PNGs with --save-masks (test.py's %05d.png names)
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from reproduce import preprocess
from reproduce.episodes import episodes_sha256, episodes_to_json, resolve_episodes
from reproduce.errors import ReproduceError
from reproduce.resize2017 import resize_2017
from reproduce.voc import VOID, VOCDataset, class_name, fold_classes, refuse_inside_dataset
from reproduce.feature_cache import FeatureProvider, code_version, sha256_file
from reproduce.reference_episodes import reference_status
from reproduce.scoring import (check_protocol, csv_row, episode_counts, fold_score_from_rows, format_csv_row,
                               parse_csv_line, summary_block, write_iou_results_txt)
from weights_convert.atomic import atomic_path, atomic_write_text

RUN_FORMAT = "oslsm-repro-run/1"
CSV_NAME = "all_results.csv"
SOURCES_NAME = "sources.json"
QUERY_HW = (500, 500)


# ---------------------------------------------------------------------------- inputs


class DatasetInputs:
    """Pre-processed net inputs of a VOC-layout data set, as the original data layer built them,
    split per image (the query image alone, the query label alone, each support pair) so that the
    feature cache can compute each once; plus the content digests that key the cache."""

    def __init__(self, dataset):
        self.dataset = dataset
        self._digests: dict[tuple[str, str], str] = {}

    def _digest(self, kind: str, name: str) -> str:
        key = (kind, name)
        if key not in self._digests:
            path = self.dataset.image_path(name) if kind == "image" else self.dataset.mask_path(name)
            self._digests[key] = sha256_file(path)
        return self._digests[key]

    def image_digest(self, name: str) -> str:
        return self._digest("image", name)

    def mask_digest(self, name: str) -> str:
        return self._digest("mask", name)

    def query_image(self, name: str) -> np.ndarray:
        image = self.dataset.read_image(name)
        # The image half of prep_query; its label half (on an empty mask here) is cheap and unused.
        img, _ = preprocess.prep_query(image, np.zeros(image.shape[:2], np.float32))
        return img

    def support_pair(self, name: str, cls: int) -> tuple[np.ndarray, np.ndarray]:
        mask = preprocess.binary_mask(self.dataset.read_mask(name), cls)
        return preprocess.prep_support(self.dataset.read_image(name), mask)

    def query_label(self, name: str, cls: int, with_void: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """The query's binary label on the 500x500 grid (void is background, as the original), and
        for protocol 'modern' its void mask resized the same way."""
        index = self.dataset.read_mask(name)
        self._check_same_size(name, index.shape)
        label = query_label_grid(preprocess.binary_mask(index, cls))
        void = query_label_grid((index == VOID).astype(np.float32)) > 0.5 if with_void else None
        return label, void

    def _check_same_size(self, name: str, mask_hw: tuple[int, ...]) -> None:
        """The label is scored without the image, so check here what prep_query checks: the
        mask and the image have one size (read from the image header only)."""
        from PIL import Image

        path = self.dataset.image_path(name)
        try:
            with Image.open(path) as im:
                width, height = im.size
        except OSError as exc:
            raise ReproduceError(f"{path}: cannot read the image header ({exc})") from None
        if (height, width) != tuple(mask_hw[:2]):
            raise ReproduceError(f"{self.dataset.mask_path(name)} is {mask_hw[0]}x{mask_hw[1]} but {path} is "
                                 f"{height}x{width}; a VOC mask has its image's size")


def query_label_grid(mask_bin: np.ndarray) -> np.ndarray:
    """The label half of prep_query alone: order-0 resize with preserve_range, skipped when the
    mask already has the query shape (the image half is not needed to score an episode)."""
    label = mask_bin.astype(np.float32)
    if label.shape != tuple(preprocess.QUERY_SHAPE):
        label = resize_2017(label, preprocess.QUERY_SHAPE, order=0, preserve_range=True)
    return label.astype(np.float32)


# ---------------------------------------------------------------------------- episodes


# ---------------------------------------------------------------------------- model checks


def check_weights_metadata(weights: str | os.PathLike, fold: int, shots: int) -> dict:
    """Fold and shots recorded by the converter must match the run."""
    path = os.fspath(weights)
    if not path.endswith(".safetensors"):
        return {}
    from weights_convert.convert import safetensors_metadata

    meta = safetensors_metadata(path)
    if "fold" in meta and str(meta["fold"]) != str(fold):
        raise ReproduceError(f"{path} was converted from fold {meta['fold']}'s model, but --fold is {fold}; "
                             f"evaluate each fold with its own model")
    declared = meta.get("shots", "any")
    if declared not in ("any", "") and str(declared) != str(shots):
        raise ReproduceError(f"{path} declares a {declared}-shot net, but --shots is {shots}")
    return meta


def check_prototxt_shots(prototxt: str | os.PathLike | None, shots: int) -> None:
    if prototxt is None:
        return
    from weights_convert.formats.prototxt import load_net
    from weights_convert.oslsm.spec import net_shots_and_query

    net_shots, _ = net_shots_and_query(load_net(prototxt), os.fspath(prototxt))
    if net_shots != shots:
        raise ReproduceError(f"{prototxt} is a {net_shots}-shot deploy net (first_img has {net_shots} images), "
                             f"but --shots is {shots}; use deploy_{shots}shot.prototxt")


# ---------------------------------------------------------------------------- run directory


def _json(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def _check_manifest(path: Path, manifest: dict) -> None:
    try:
        old = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReproduceError(f"{path}: unreadable run manifest ({exc}); remove the run directory to start over") from None
    if not isinstance(old, dict):
        raise ReproduceError(f"{path}: the run manifest is not a JSON object; remove the run directory to start over")
    diffs = [f"{k}: {old.get(k)!r} there, {manifest[k]!r} now" for k in manifest if old.get(k) != manifest[k]]
    if diffs:
        raise ReproduceError(f"{path.parent} holds a different run ({'; '.join(diffs)}); "
                             f"choose another --out or delete that directory")


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
    rows = []
    try:
        text = data[:end].decode()
    except UnicodeDecodeError as exc:
        raise ReproduceError(f"{csv_path}: not a results CSV of this tool ({exc})") from None
    for n, line in enumerate(text.splitlines(True), 1):
        row = parse_csv_line(line, str(csv_path), n)
        i = n - 1
        if i >= len(episodes):
            raise ReproduceError(f"{csv_path}:{n}: more rows than the run's {len(episodes)} episodes")
        if row[0] != i or row[2] != int(episodes[i].cls) - 1:
            raise ReproduceError(f"{csv_path}:{n}: row {row[:3]} does not belong to episode {i} "
                                 f"(class index {int(episodes[i].cls) - 1}); the file is not this run's")
        rows.append(row)
    return rows


def score_map(model, features, w, b) -> np.ndarray:
    """test.py's score: the sigmoid of the head's logits on the 500x500 query grid, float32."""
    with torch.inference_mode():
        logits = model.head(features, w, b, QUERY_HW)
        return torch.sigmoid(logits)[0, 0].to("cpu").numpy()


def _save_masks(run_dir: Path, index: int, score: np.ndarray) -> None:
    from PIL import Image

    # For looking at, not scoring: soft = the sigmoid map as 8-bit grey (test.py's skimage imsave
    # wrote 16-bit; 8 bits are our choice), hard = test.py's binarisation (0.5 counts as 1 in
    # the image, while scoring uses > 0.5).
    soft = np.clip(np.rint(score * 255.0), 0, 255).astype(np.uint8)
    hard = np.where(score >= 0.5, 255, 0).astype(np.uint8)
    for kind, img in (("soft", soft), ("hard", hard)):
        path = run_dir / "pred" / kind / f"{index:05d}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(img).save(tmp, format="PNG")


# ---------------------------------------------------------------------------- evaluate


def evaluate(voc, weights, fold: int, shots: int, n_episodes: int = 1000, device: str = "cpu",
             out_dir: str | os.PathLike = "results/run", episodes_file=None, protocol: str = "original",
             cache: bool = True, cache_dir=None, save_masks: bool = False, progress: bool = True,
             prototxt=None, workers: int = 2, memory_bytes: int = 4 << 30) -> dict:
    """Evaluate one fold; returns the summary dict (also in RUN_DIR/summary.json). Resumes a run
    interrupted in `out_dir` when its manifest matches. Runs in faithful_mode (no TF32,
    deterministic algorithms)."""
    from weights_convert.numerics import faithful_mode

    with faithful_mode():
        return _evaluate(voc, weights, fold, shots, n_episodes, device, out_dir, episodes_file, protocol, cache,
                         cache_dir, save_masks, progress, prototxt, workers, memory_bytes)


def _evaluate(voc, weights, fold, shots, n_episodes, device, out_dir, episodes_file, protocol, cache, cache_dir,
              save_masks, progress, prototxt, workers, memory_bytes) -> dict:
    from weights_convert.oslsm import load_oslsm

    started = time.perf_counter()
    check_protocol(protocol)
    classes = fold_classes(fold)
    if n_episodes < 1:
        raise ReproduceError(f"the number of episodes must be >= 1, got {n_episodes}")
    if shots < 1:
        raise ReproduceError(f"shots must be >= 1, got {shots}")
    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"weights {weights}: no such file")
    check_weights_metadata(weights, fold, shots)
    check_prototxt_shots(prototxt, shots)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ReproduceError("--device cuda was asked for, but this torch has no usable CUDA device")

    run_dir = Path(out_dir)
    dataset = voc if hasattr(voc, "read_image") else VOCDataset(voc)
    if getattr(dataset, "root", None) is not None:
        refuse_inside_dataset(run_dir, dataset.root, "run folder")
        if cache_dir is not None:
            refuse_inside_dataset(cache_dir, dataset.root, "cache folder")
    episodes, n_items = resolve_episodes(dataset, fold, shots, n_episodes, episodes_file,
                                         None if cache_dir is None else Path(cache_dir) / "items")
    episodes_sha = episodes_sha256(episodes)
    reference = reference_status(episodes, fold, shots, len(getattr(dataset, "names", ())))
    if reference.startswith("differs"):
        print(f"WARNING: fold {fold} {shots}-shot: these episodes are not the ones the original printed on "
              f"VOC 2012 val ({reference}); `python -m reproduce check-voc --voc DIR` says which items differ",
              file=sys.stderr)
    model_sha = sha256_file(weights)
    version = code_version(dev)
    manifest = {"format": RUN_FORMAT, "fold": fold, "shots": shots, "protocol": protocol,
                "n_episodes": len(episodes), "episodes_sha256": episodes_sha, "reference": reference,
                "model_sha256": model_sha, "device_type": dev.type, "code_version": version}

    manifest_path = run_dir / "manifest.json"
    csv_path = run_dir / CSV_NAME
    if manifest_path.exists():
        _check_manifest(manifest_path, manifest)
    else:
        if csv_path.exists():
            raise ReproduceError(f"{csv_path} exists without a manifest.json; it is not a run of this tool")
        atomic_write_text(manifest_path, _json(manifest))
    sources = {"voc": str(Path(dataset.root).resolve()) if getattr(dataset, "root", None) else None,
               "weights": str(weights.resolve()), "prototxt": str(Path(prototxt).resolve()) if prototxt else None}
    atomic_write_text(run_dir / SOURCES_NAME, _json(sources))
    if not (run_dir / "episodes.json").exists():
        # The same file format as `python -m reproduce episodes`: usable as --episodes-file.
        episodes_to_json(run_dir / "episodes.json", episodes, fold, shots, n_items)
    done = read_done_rows(csv_path, episodes)

    t0 = time.perf_counter()
    model = load_oslsm(weights, prototxt=prototxt, device=dev)
    load_s = time.perf_counter() - t0
    inputs = DatasetInputs(dataset)
    provider = FeatureProvider(model, inputs, model_sha256=model_sha, device=dev, enabled=cache,
                               cache_dir=(Path(cache_dir) / "features") if (cache and cache_dir is not None) else None,
                               workers=workers, memory_bytes=memory_bytes, version=version)
    with_void = protocol == "modern"

    def label_job(i, ep):
        return inputs.query_label(ep.query, int(ep.cls), with_void)

    head_s = score_s = 0.0
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(episodes), initial=len(done), unit="ep", dynamic_ncols=True,
                   desc=f"fold {fold} {shots}-shot")
    loop_start = time.perf_counter()
    new_episodes = 0
    units = provider.iter_episodes(episodes, start=len(done), extra=label_job)
    # closing(): an exception in the loop still shuts the generator's worker pool down
    with open(csv_path, "ab") as journal, contextlib.closing(units):
        for i, ep, feats, w, b, (label, void) in units:
            t = time.perf_counter()
            score = score_map(model, feats, w, b)
            t2 = time.perf_counter()
            head_s += t2 - t
            counts = episode_counts(score, label, void, protocol=protocol)
            if save_masks:  # before the row: a row in the journal means the episode is complete
                _save_masks(run_dir, i, score)
            journal.write(format_csv_row(csv_row(i, int(ep.cls), counts)).encode())
            journal.flush()
            os.fsync(journal.fileno())
            score_s += time.perf_counter() - t2
            new_episodes += 1
            if bar is not None:
                bar.update(1)
    loop_s = time.perf_counter() - loop_start
    if bar is not None:
        bar.close()

    rows = read_done_rows(csv_path, episodes)
    if len(rows) != len(episodes):
        raise ReproduceError(f"{csv_path}: {len(rows)} rows after the run; expected {len(episodes)}")
    fs = fold_score_from_rows(classes, rows)
    summary = {
        "format": RUN_FORMAT, "fold": fold, "shots": shots, "protocol": protocol,
        "test_classes": classes, "class_names": {str(c): class_name(c) for c in classes},
        "n_episodes": len(episodes), "episodes_sha256": episodes_sha, "reference": reference,
        "model_sha256": model_sha, "weights": weights.name,
        **summary_block(fs), "miou_x100": 100.0 * fs.miou(), "fb_iou_x100": 100.0 * fs.fb_iou(),
    }
    atomic_write_text(run_dir / "summary.json", _json(summary))
    write_iou_results_txt(run_dir / "iou_results.txt", fs)
    total_s = time.perf_counter() - started
    timings = {
        "device": str(dev), "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "cache": cache, "resumed_from": len(done),
        "episodes_this_session": new_episodes,
        "episodes_per_s": (new_episodes / loop_s) if loop_s > 0 and new_episodes else None,
        "seconds": {"total": total_s, "model_load": load_s, "episode_loop": loop_s, "head": head_s,
                    "scoring_and_writing": score_s},
        "forwards": {"query": provider.stats.query_forwards, "support": provider.stats.support_forwards},
        "cache_stats": provider.stats.as_dict(),
    }
    atomic_write_text(run_dir / "timings.json", _json(timings))
    return summary

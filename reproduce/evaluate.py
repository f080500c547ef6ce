"""Run a converted OSLSM model over one fold's test episodes and score it as the original test.py:
data set -> episodes -> model -> per-image features -> head -> scores, in a resumable run folder
(run_folder.py says what it holds)."""
from __future__ import annotations

import contextlib
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from reproduce.dataset_inputs import DatasetInputs
from reproduce.episodes import episodes_sha256, resolve_episodes
from reproduce.errors import ReproduceError
from reproduce.eval_config import EvalConfig, open_checked, source_sha256
from reproduce.feature_cache import FeatureProvider
from reproduce.provenance import FEATURE_SOURCES, code_record, record_digest
from reproduce.reference_episodes import reference_status
from reproduce.run_folder import RUN_FORMAT, SOURCES_NAME, RunFolder
from reproduce.scoring import csv_row, episode_counts, fold_score_from_rows, summary_block, write_iou_results_txt
from reproduce.voc import class_name, fold_classes
from weights_convert.errors import Interrupted
from weights_convert.numerics import faithful_mode
from weights_convert.progress import Progress
from weights_convert.provenance import sha256_file

QUERY_HW = (500, 500)
ModelLoader = Callable[..., torch.nn.Module]  # (weights, prototxt=..., device=...) -> OSLSM


def score_map(model, features, w, b) -> np.ndarray:
    """test.py's score: the sigmoid of the head's logits on the 500x500 query grid, float32."""
    with torch.inference_mode():
        logits = model.head(features, w, b, QUERY_HW)
        return torch.sigmoid(logits)[0, 0].to("cpu").numpy()


def evaluate(voc, weights, fold: int, shots: int, *, load_model: ModelLoader | None = None, **options) -> dict:
    """Evaluate one fold (options: the fields of EvalConfig); returns the summary (also in
    RUN_DIR/summary.json). Resumes or extends a run in `out_dir` when its manifest matches."""
    paths = {k: Path(v) for k, v in options.items() if k in ("out_dir", "episodes_file", "cache_dir", "prototxt")
             and v is not None}
    return run_evaluation(EvalConfig(voc, Path(weights), fold, shots, **{**options, **paths}), load_model)


def run_evaluation(config: EvalConfig, load_model: ModelLoader | None = None) -> dict:
    """Runs in faithful_mode (no TF32, deterministic algorithms). Nothing is written before the
    arguments, the data, the episodes and the model have all been checked."""
    if load_model is None:
        from weights_convert.oslsm import load_oslsm as load_model
    started = time.perf_counter()
    with faithful_mode():
        dataset = open_checked(config)
        # Without a cache folder nothing is cached on disk, the mask scan included.
        episodes, n_items = resolve_episodes(dataset, config.fold, config.shots, config.n_episodes,
                                             config.episodes_file,
                                             None if config.cache_dir is None else config.cache_dir / "items",
                                             use_cache=config.cache_dir is not None)
        reference = _reference(episodes, dataset, config)
        _warn_classes_without_episodes(episodes, config)
        t0 = time.perf_counter()
        model = load_model(config.weights, prototxt=config.prototxt, device=config.torch_device)
        load_s = time.perf_counter() - t0
        _refuse_nonfinite(model, config)
        model_sha = sha256_file(config.weights)
        weights_sha = source_sha256(config.weights) or model_sha
        manifest = {"format": RUN_FORMAT, "fold": config.fold, "shots": config.shots, "protocol": config.protocol,
                    "n_episodes": len(episodes), "episodes_sha256": episodes_sha256(episodes),
                    "reference": reference, "model_sha256": model_sha, "device_type": config.torch_device.type,
                    "code": code_record(config.torch_device)}
        run = RunFolder(config.out_dir)
        with run.locked():
            run.start(manifest, episodes, config.fold, config.shots, n_items)
            run.write_json(SOURCES_NAME, _sources(dataset, config))
            inputs = DatasetInputs(dataset)
            provider = FeatureProvider(
                model, inputs, model_sha256=model_sha, device=config.torch_device, enabled=config.cache,
                cache_dir=(config.cache_dir / "features") if (config.cache and config.cache_dir) else None,
                workers=config.workers, memory_bytes=config.memory_bytes,
                version=record_digest(code_record(config.torch_device, FEATURE_SOURCES)))
            done = len(run.done_rows(episodes))
            if config.save_masks:
                _write_missing_masks(run, model, provider, episodes[:done])
            loop = _score_episodes(run, model, provider, inputs, episodes, done, config)
            summary = _finish(run, episodes, manifest, config, weights_sha)
            run.write_json("timings.json", _timings(config, provider, done, loop,
                                                    time.perf_counter() - started, load_s))
    return summary


def _reference(episodes, dataset, config: EvalConfig) -> str:
    reference = reference_status(episodes, config.fold, config.shots, len(getattr(dataset, "names", ())))
    if reference.startswith("differs"):
        print(f"WARNING: fold {config.fold} {config.shots}-shot: these episodes are not the ones the original "
              f"printed on VOC 2012 val ({reference}); `python -m reproduce check-voc --voc DIR` says which items "
              "differ", file=sys.stderr)
    return reference


def _warn_classes_without_episodes(episodes: Sequence, config: EvalConfig) -> None:
    """With few episodes a test class may get none: its IoU is then 0 by test.py's formula and
    pulls the fold's mIoU down without measuring anything."""
    empty = [c for c in fold_classes(config.fold) if not any(int(ep.cls) == c for ep in episodes)]
    if empty:
        print(f"WARNING: fold {config.fold}: no episode tests class(es) {', '.join(map(class_name, empty))} among "
              f"the {len(episodes)} episodes; their IoU counts as 0 in the mIoU (use more --episodes)",
              file=sys.stderr)


def summary_lines(summary: dict) -> list[str]:
    """The end-of-run printout: the fold's scores and each test class's IoU."""
    lines = [f"fold {summary['fold']} {summary['shots']}-shot: mIoU {summary['miou_x100']:.2f}  "
             f"FB-IoU {summary['fb_iou_x100']:.2f}  ({summary['n_episodes']} episodes, protocol "
             f"{summary['protocol']})"]
    for cls, numbers in summary["per_class"].items():
        lines.append(f"  class {int(cls):2d} {summary['class_names'][cls]:<12} IoU {100.0 * numbers['iou']:6.2f}")
    return lines


def _refuse_nonfinite(model: torch.nn.Module, config: EvalConfig) -> None:
    bad = {name: int((~torch.isfinite(t)).sum()) for name, t in model.state_dict().items()
           if t.is_floating_point() and not bool(torch.isfinite(t).all())}
    if not bad:
        return
    listed = ", ".join(f"{name} ({n})" for name, n in bad.items())
    if not config.allow_nonfinite:
        raise ReproduceError(f"{config.weights}: weights hold NaN or infinite values in {listed}; every score "
                             "would be garbage. Pass --allow-nonfinite to evaluate them anyway")
    print(f"WARNING: {config.weights}: NaN or infinite weights in {listed} (--allow-nonfinite)", file=sys.stderr)


def _sources(dataset, config: EvalConfig) -> dict:
    root = getattr(dataset, "root", None)
    return {"voc": str(Path(root).resolve()) if root else None, "weights": str(config.weights.resolve()),
            "prototxt": str(config.prototxt.resolve()) if config.prototxt else None}


def _write_missing_masks(run: RunFolder, model, provider: FeatureProvider, finished: Sequence) -> None:
    """Masks of already scored episodes that an earlier session ran without --save-masks."""
    missing = [i for i in range(len(finished)) if not all(p.exists() for p in run.mask_paths(i).values())]
    if missing:
        units = provider.iter_episodes([finished[i] for i in missing])
        with contextlib.closing(units):
            for j, _, feats, w, b, _ in units:
                run.save_masks(missing[j], score_map(model, feats, w, b))


def _score_episodes(run: RunFolder, model, provider: FeatureProvider, inputs: DatasetInputs,
                    episodes: Sequence, start: int, config: EvalConfig) -> dict:
    """Score episodes[start:] into the journal; a row there means the episode is complete."""
    with_void = config.protocol == "modern"
    progress = Progress(len(episodes), start, f"fold {config.fold} {config.shots}-shot", config.progress)
    seconds = {"head": 0.0, "scoring_and_writing": 0.0}
    done = start
    loop_start = time.perf_counter()
    units = provider.iter_episodes(episodes, start=start,
                                   extra=lambda i, ep: inputs.query_label(ep.query, int(ep.cls), with_void))
    try:
        # closing(): an exception in the loop still shuts the generator's worker pool down
        with run.journal() as journal, contextlib.closing(units), progress:
            for i, ep, feats, w, b, (label, void) in units:
                t = time.perf_counter()
                score = score_map(model, feats, w, b)
                t2 = time.perf_counter()
                counts = episode_counts(score, label, void, protocol=config.protocol)
                if config.save_masks:  # before the row: the row says the episode is complete
                    run.save_masks(i, score)
                run.append_row(journal, csv_row(i, int(ep.cls), counts))
                seconds["head"] += t2 - t
                seconds["scoring_and_writing"] += time.perf_counter() - t2
                done += 1
                progress.update()
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted after {done}/{len(episodes)} episodes; run the same command again "
                          "to resume") from None
    return {"seconds": seconds, "episodes": done - start, "loop_s": time.perf_counter() - loop_start}


def _finish(run: RunFolder, episodes: Sequence, manifest: dict, config: EvalConfig, weights_sha: str) -> dict:
    """summary.json (weights_sha256: the source caffemodel's content, whatever the file is called)
    and iou_results.txt, from the journal."""
    rows = run.done_rows(episodes)
    if len(rows) != len(episodes):
        raise ReproduceError(f"{run.csv_path}: {len(rows)} rows after the run; expected {len(episodes)}")
    classes = fold_classes(config.fold)
    fs = fold_score_from_rows(classes, rows)
    summary = {
        "format": RUN_FORMAT, "fold": config.fold, "shots": config.shots, "protocol": config.protocol,
        "test_classes": classes, "class_names": {str(c): class_name(c) for c in classes},
        "n_episodes": len(episodes), "episodes_sha256": manifest["episodes_sha256"],
        "reference": manifest["reference"], "model_sha256": manifest["model_sha256"],
        "weights_sha256": weights_sha, "weights": config.weights.name,
        **summary_block(fs), "miou_x100": 100.0 * fs.miou(), "fb_iou_x100": 100.0 * fs.fb_iou(),
    }
    run.write_json("summary.json", summary)
    write_iou_results_txt(run.path / "iou_results.txt", fs)
    return summary


def _timings(config: EvalConfig, provider: FeatureProvider, resumed_from: int, loop: dict,
             total_s: float, load_s: float) -> dict:
    return {
        "device": str(config.torch_device), "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cache": config.cache,
        "resumed_from": resumed_from, "episodes_this_session": loop["episodes"],
        "episodes_per_s": loop["episodes"] / loop["loop_s"] if loop["loop_s"] > 0 and loop["episodes"] else None,
        "seconds": {"total": total_s, "model_load": load_s, "episode_loop": loop["loop_s"], **loop["seconds"]},
        "forwards": {"query": provider.stats.query_forwards, "support": provider.stats.support_forwards},
        "cache_stats": provider.stats.as_dict(),
    }

"""Run a converted OSLSM model over one fold's test episodes and score it as the original test.py:
data set -> episodes -> model -> per-image features -> head -> scores, in a resumable run folder
(run_folder.py says what it holds)."""
from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from reproduce.data.dataset_inputs import DatasetInputs
from reproduce.data.episodes import episodes_sha256
from reproduce.errors import ReproduceError
from reproduce.evaluation.eval_config import EvalConfig, open_checked, source_sha256, weights_training
from reproduce.evaluation.feature_cache import FeatureProvider
from reproduce.evaluation.protocols import protocol_of
from reproduce.evaluation.provenance import code_record
from reproduce.evaluation.run_folder import RUN_FORMAT, SOURCES_NAME, RunFolder
from reproduce.evaluation.scoring import csv_row, fold_score_from_rows, write_iou_results_txt
from reproduce.data.voc import class_name, fold_classes
from weights_convert.errors import Interrupted
from weights_convert.runtime.numerics import faithful_mode
from weights_convert.runtime.progress import Progress
from weights_convert.files.provenance import machine_name, sha256_file

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
    paths = {k: Path(v) for k, v in options.items()
             if k in ("out_dir", "episodes_file", "cache_dir", "scan_cache_dir", "prototxt") and v is not None}
    return evaluate_runs([EvalConfig(voc, Path(weights), fold, shots, **{**options, **paths})], load_model)[0]


@dataclasses.dataclass
class PlannedRun:
    """One requested run: its checked request, data set and episodes, and its folder."""
    config: EvalConfig
    dataset: object
    episodes: list
    n_items: int
    reference: str
    folder: RunFolder
    manifest: dict = dataclasses.field(default_factory=dict)
    resumed_from: int = 0   # episodes the folder held when this session began
    scored: int = 0         # episodes scored in this session


def evaluate_runs(configs: Sequence[EvalConfig], load_model: ModelLoader | None = None) -> list[dict]:
    """Evaluate several runs; those of one model and data set whose episode lists nest (the same
    query and class episode by episode, each run's supports the first k of the run with the most
    shots: the original draws the 1- and 5-shot lists of a fold from one seed, so Tables 1 and 2
    do) go in one pass, computing each query's features and each support's vector once for all.
    Every run folder ends byte-identical to a run of its own. Runs in faithful_mode (no TF32,
    deterministic algorithms); nothing is written before the arguments, the data, the episodes and
    the model have all been checked."""
    if load_model is None:
        from weights_convert.oslsm import load_oslsm as load_model
    with faithful_mode():
        runs = [plan_run(config) for config in configs]
        passes = [runs] if len(runs) == 1 or _one_pass_possible(runs) else [[run] for run in runs]
        return [summary for group in passes for summary in _evaluate_pass(group, load_model)]


def _evaluate_pass(runs: Sequence[PlannedRun], load_model: ModelLoader) -> list[dict]:
    """One model, one feature provider and one walk over the lead run's episodes for all `runs`."""
    started = time.perf_counter()
    lead = _lead(runs)
    config = lead.config
    t0 = time.perf_counter()
    model = load_model(config.weights, prototxt=config.prototxt, device=config.torch_device)
    load_s = time.perf_counter() - t0
    _refuse_nonfinite(model, config)
    model_sha = sha256_file(config.weights)
    weights = {"weights_sha256": source_sha256(config.weights) or model_sha}
    training = weights_training(config.weights)
    if training:
        weights["weights_training"] = training
    with contextlib.ExitStack() as held:
        for run in runs:
            held.enter_context(run.folder.locked())
        code = code_record(config.torch_device)  # the same for every run of the pass
        inputs = DatasetInputs(lead.dataset)
        for run in runs:
            start_run(run, model_sha, code, inputs)
        provider = FeatureProvider(
            model, inputs, model_sha256=model_sha, device=config.torch_device,
            enabled=config.cache, workers=config.workers, memory_bytes=config.memory_bytes,
            cache_dir=(config.cache_dir / "features") if (config.cache and config.cache_dir) else None,
            disk_bytes=config.cache_max_bytes)
        for run in runs:
            if run.config.save_masks:
                _write_missing_masks(run.folder, model, provider, run.episodes[:run.resumed_from])
        loop = _score_episodes(runs, model, provider, lead.episodes)
        summaries = [finish_run(run, weights) for run in runs]
        for run in runs:
            if run.scored == 0 and (run.folder.path / "timings.json").exists():
                continue  # a finished run run again: its timings stay those of the session that scored it
            run.folder.write_json("timings.json", _timings(run, provider, loop, time.perf_counter() - started,
                                                           load_s, len(runs)))
    return summaries


def plan_run(config: EvalConfig) -> PlannedRun:
    """The checked request, its data set and episodes, and its folder (nothing written yet)."""
    dataset = open_checked(config)
    episodes, n_items, reference = _episodes(config, dataset)
    _refuse_missing_files(dataset, episodes)
    _warn_classes_without_episodes(episodes, config)
    return PlannedRun(config, dataset, episodes, n_items, reference, RunFolder(config.out_dir))


def _episodes(config: EvalConfig, dataset) -> tuple[list, int, str]:
    """The run's episodes (from a file, or as its protocol draws them), its fold's item count and
    how the list compares with the original's on VOC 2012."""
    # Without a cache folder nothing is cached on disk, the mask scan included.
    scan_dir = config.scan_cache_dir or (config.cache_dir / "items" if config.cache_dir else None)
    episodes, n_items = config.protocol.episodes(dataset, config.fold, config.shots, config.n_episodes,
                                                 episodes_file=config.episodes_file, scan_dir=scan_dir,
                                                 use_cache=scan_dir is not None)
    reference = config.protocol.reference(episodes, dataset, config.fold, config.shots,
                                          config.episodes_file is not None)
    if reference.startswith("differs"):
        print(f"WARNING: fold {config.fold} {config.shots}-shot: these episodes are not the ones the original "
              f"printed on VOC 2012 val ({reference}); `python -m reproduce check-voc --voc DIR` says which items "
              "differ", file=sys.stderr)
    return episodes, n_items, reference


def _one_pass_possible(runs: Sequence[PlannedRun]) -> bool:
    """One model, data set and set-up for all, distinct folders, and episode lists that nest."""
    shared = ("voc", "weights", "fold", "device", "protocol", "cache", "cache_dir", "workers", "memory_bytes")
    first = runs[0].config
    if any(getattr(r.config, f) != getattr(first, f) for r in runs for f in shared):
        return False
    if len({r.folder.path.resolve() for r in runs}) != len(runs):
        return False
    lead = _lead(runs)
    return all(len(r.episodes) <= len(lead.episodes) and all(
        a.query == b.query and a.cls == b.cls and list(b.supports[:len(a.supports)]) == list(a.supports)
        for a, b in zip(r.episodes, lead.episodes)) for r in runs)


def _lead(runs: Sequence[PlannedRun]) -> PlannedRun:
    """The run whose episodes the pass walks: the most shots (its supports include the others')."""
    return max(runs, key=lambda r: (r.config.shots, len(r.episodes)))


def start_run(run: PlannedRun, model_sha: str, code: dict, inputs: DatasetInputs, extra: dict | None = None) -> None:
    """The folder's manifest (with `extra`: what else a run is, e.g. a baseline method), episodes
    and data digests written or checked against a resumed run's; run.resumed_from set."""
    config = run.config
    run.manifest = {"format": RUN_FORMAT, "fold": config.fold, "shots": config.shots, **config.protocol.record(),
                    **(extra or {}),
                    "n_episodes": len(run.episodes), "episodes_sha256": episodes_sha256(run.episodes),
                    "reference": run.reference, "model_sha256": model_sha, "device_type": config.torch_device.type,
                    "code": code}
    # Every file an episode reads, hashed once (the feature cache's keys reuse the digests).
    data = {name: f"{inputs.image_digest(name)[:16]}:{inputs.mask_digest(name)[:16]}"
            for name in sorted(episode_images(run.episodes))}
    run.folder.start(run.manifest, run.episodes, config.fold, config.shots, run.n_items, data)
    run.folder.write_json(SOURCES_NAME, _sources(run.dataset, config))
    run.resumed_from = len(run.folder.done_rows(run.episodes))


def episode_images(episodes: Sequence) -> set[str]:
    return {name for ep in episodes for name in (ep.query, *ep.supports)}


def _refuse_missing_files(dataset, episodes: Sequence) -> None:
    """Every image and mask the episodes read exists, checked before any folder is made."""
    if not hasattr(dataset, "image_path"):
        return
    missing = [str(path) for name in sorted(episode_images(episodes))
               for path in (dataset.image_path(name), dataset.mask_path(name)) if not path.is_file()]
    if missing:
        listed = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ReproduceError(f"the episodes read {len(missing)} file(s) that do not exist: {listed}")


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
             f"{protocol_of(summary).label})"]
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
            "prototxt": str(config.prototxt.resolve()) if config.prototxt else None,
            **config.protocol.sources(dataset)}


def _write_missing_masks(run: RunFolder, model, provider: FeatureProvider, finished: Sequence) -> None:
    """Masks of already scored episodes that an earlier session ran without --save-masks."""
    missing = [i for i in range(len(finished)) if not all(p.exists() for p in run.mask_paths(i).values())]
    if missing:
        units = provider.iter_episodes([finished[i] for i in missing])
        with contextlib.closing(units):
            for j, _, feats, w, b, _ in units:
                run.save_masks(missing[j], score_map(model, feats, w, b))


def _score_episodes(runs: Sequence[PlannedRun], model, provider: FeatureProvider, episodes: Sequence) -> dict:
    """Score each run's unfinished episodes into its journal, in one pass over the lead run's list;
    a row in a journal means its episode is complete."""
    scoring = runs[0].config.protocol
    inputs = provider.source
    start = min(run.resumed_from for run in runs)
    end = max(len(run.episodes) for run in runs)
    config = runs[0].config
    shots = "+".join(str(run.config.shots) for run in runs)
    progress = Progress(end, start, f"fold {config.fold} {shots}-shot", config.progress)
    seconds = {"head": 0.0, "scoring_and_writing": 0.0}
    done = start
    loop_start = time.perf_counter()
    units = provider.iter_episodes(episodes[:end], start=start,
                                   extra=lambda i, ep: scoring.truth(inputs, ep.query, int(ep.cls)))
    try:
        # closing(): an exception in the loop still shuts the generator's worker pool down
        with contextlib.ExitStack() as files, contextlib.closing(units), progress:
            journals = [files.enter_context(run.folder.journal()) for run in runs]
            for i, ep, feats, w, b, truth in units:
                for run, journal in zip(runs, journals):
                    if run.resumed_from <= i < len(run.episodes):
                        _score_one(run, journal, i, model, feats, w, b, truth, seconds)
                done += 1
                progress.update()
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted after {done}/{end} episodes; run the same command again to resume") from None
    return {"seconds": seconds, "loop_s": time.perf_counter() - loop_start}


def _score_one(run: PlannedRun, journal, i: int, model, feats, w, b, truth, seconds: dict) -> None:
    t = time.perf_counter()
    k = run.config.shots  # this run's supports are the first k of the pass's
    score = score_map(model, feats, w[:k], b[:k])
    t2 = time.perf_counter()
    counts = run.config.protocol.counts(score, truth)
    if run.config.save_masks:  # before the row: the row says the episode is complete
        run.folder.save_masks(i, score)
    run.folder.append_row(journal, csv_row(i, int(run.episodes[i].cls), counts))
    seconds["head"] += t2 - t
    seconds["scoring_and_writing"] += time.perf_counter() - t2
    run.scored += 1


def finish_run(run: PlannedRun, weights: dict, extra: dict | None = None) -> dict:
    """summary.json (weights_sha256: the source caffemodel's content, whatever the file is called;
    weights_training: how this kit re-trained it, when it did) and iou_results.txt, from the journal."""
    config, episodes = run.config, run.episodes
    rows = run.folder.done_rows(episodes)
    if len(rows) != len(episodes):
        raise ReproduceError(f"{run.folder.csv_path}: {len(rows)} rows after the run; expected {len(episodes)}")
    classes = fold_classes(config.fold)
    numbers = config.protocol.fold_summary(classes, rows)
    summary = {
        "format": RUN_FORMAT, "fold": config.fold, "shots": config.shots, **config.protocol.record(), **(extra or {}),
        "test_classes": classes, "class_names": {str(c): class_name(c) for c in classes},
        "n_episodes": len(episodes), "episodes_sha256": run.manifest["episodes_sha256"],
        "reference": run.manifest["reference"], "model_sha256": run.manifest["model_sha256"],
        **weights, "weights": config.weights.name,
        **numbers, "miou_x100": 100.0 * numbers["miou"], "fb_iou_x100": 100.0 * numbers["fb_iou"],
    }
    run.folder.write_json("summary.json", summary)
    if config.protocol.writes_test_py_file:
        write_iou_results_txt(run.folder.path / "iou_results.txt", fold_score_from_rows(classes, rows))
    return summary


def _timings(run: PlannedRun, provider: FeatureProvider, loop: dict, total_s: float, load_s: float,
             runs_in_pass: int) -> dict:
    """Wall times and counts of this session; forwards and cache figures are the pass's, shared
    by the `runs_in_pass` runs it scored."""
    config = run.config
    return {
        "device": str(config.torch_device), "machine": machine_name(config.torch_device),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cache": config.cache,
        "resumed_from": run.resumed_from, "episodes_this_session": run.scored, "runs_in_pass": runs_in_pass,
        "episodes_per_s": run.scored / loop["loop_s"] if loop["loop_s"] > 0 and run.scored else None,
        "seconds": {"total": total_s, "model_load": load_s, "episode_loop": loop["loop_s"], **loop["seconds"]},
        "forwards": {"query": provider.stats.query_forwards, "support": provider.stats.support_forwards},
        "cache_stats": provider.stats.as_dict(),
    }

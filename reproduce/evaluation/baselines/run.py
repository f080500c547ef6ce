"""A baseline over one fold's episodes, in a run folder of its own that holds what an OSLSM run's
holds (manifest, journal, summary; run_folder.py), so tables and reports read both alike: the same
episodes, the same protocol's truth and scoring, resumable. Its manifest and summary carry the
method and its settings (`baseline`); timings.json the seconds per episode of this session."""
from __future__ import annotations

import contextlib
import time

import torch

from reproduce.data.dataset_inputs import DatasetInputs
from reproduce.evaluation.baselines.base_model import BaseNet
from reproduce.evaluation.baselines.methods import Method
from reproduce.evaluation.eval_config import EvalConfig
from reproduce.evaluation.evaluate import finish_run, plan_run, start_run
from reproduce.evaluation.provenance import RUN_CODE, code_record
from reproduce.evaluation.scoring import csv_row
from weights_convert.errors import Interrupted
from weights_convert.files.provenance import machine_name, sha256_file
from weights_convert.runtime.numerics import faithful_mode
from weights_convert.runtime.progress import Progress

BASELINE_CODE = RUN_CODE + ("reproduce.evaluation.baselines.run",)


def evaluate_baseline(config: EvalConfig, method: Method, base: BaseNet | None = None) -> dict:
    """Run `method` with the base net `config.weights` (or `base`, loaded from it and shared with
    other methods and tables of the fold) on the fold's episodes; its summary."""
    with faithful_mode():
        run = plan_run(config)
        base = base or BaseNet(config.weights, config.device)
        model_sha = sha256_file(config.weights)
        extra = {"baseline": method.record()}
        with run.folder.locked():
            inputs = DatasetInputs(run.dataset)
            start_run(run, model_sha, code_record(config.torch_device, BASELINE_CODE), inputs, extra)
            seconds = _score_episodes(run, base, method, inputs)
            summary = finish_run(run, {"weights_sha256": model_sha}, extra)
            if run.scored:
                run.folder.write_json("timings.json", {
                    "device": str(config.torch_device), "machine": machine_name(config.torch_device),
                    "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "episodes_this_session": run.scored, "seconds_per_episode": seconds / run.scored,
                    "base_net_forwards": base.forwards})
    return summary


def _score_episodes(run, base: BaseNet, method: Method, inputs: DatasetInputs) -> float:
    """Score the unfinished episodes into the journal; the seconds they took, each episode's image
    features counted at what they cost to compute, whether computed now or earlier in the pass."""
    config, protocol = run.config, run.config.protocol
    progress = Progress(len(run.episodes), run.resumed_from, f"fold {config.fold} {config.shots}-shot {method.name}",
                        config.progress)
    spent = 0.0
    try:
        with contextlib.ExitStack() as stack, progress:
            journal = stack.enter_context(run.folder.journal())
            for i in range(run.resumed_from, len(run.episodes)):
                episode = run.episodes[i]
                started, computing = time.perf_counter(), base.computing_s
                score = method.score(base, inputs, episode)
                spent += (time.perf_counter() - started) - (base.computing_s - computing) \
                    + sum(base.seconds[name] for name in {episode.query, *episode.supports})
                counts = protocol.counts(score, protocol.truth(inputs, episode.query, int(episode.cls)))
                run.folder.append_row(journal, csv_row(i, int(episode.cls), counts))
                run.scored += 1
                progress.update()
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted after {run.resumed_from + run.scored}/{len(run.episodes)} episodes; run the "
                          "same command again to resume") from None
    return spent

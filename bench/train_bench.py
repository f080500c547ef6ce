"""Training benchmark: seconds per solver iteration of the OSLSM train net (upstream solver
values: iter_size 10, 1-shot) on a thin net (the golden training net and weights) and on the
full-size upstream train net (random VGG-width weights, dropout 0.5 active), each on the five
golden training episodes (queries 281x500 to 500x500). Writes the "## Training" section of
bench/RESULTS.md.

    python bench/train_bench.py [--iterations N] [--full-iterations N] [--device cpu|cuda] [--no-write]
"""
from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval_bench import machine, sync, write_section  # noqa: E402
from weights_convert.formats.caffemodel import write_caffemodel  # noqa: E402
from weights_convert.graph import CaffeNet  # noqa: E402
from weights_convert.numerics import faithful_mode  # noqa: E402
from weights_convert.oslsm import OSLSMWidths  # noqa: E402
from weights_convert.oslsm.random_init import random_oslsm_params  # noqa: E402
from weights_convert.train.data import EpisodeInputs  # noqa: E402
from weights_convert.train.solver_file import read_solver  # noqa: E402
from weights_convert.train.trainer import Trainer, load_weights_for_training  # noqa: E402

GOLDEN = ROOT / "tests" / "golden_train"
UPSTREAM = ROOT / "tests" / "upstream"
SECTION = "## Training"


def time_iterations(solver_path: Path, net_path: Path | None, weights: Path, iterations: int,
                    device: torch.device) -> dict:
    solver = read_solver(solver_path)
    if net_path is not None:  # the thin golden net under the upstream solver values
        from weights_convert.formats.prototxt import load_net
        solver.net, solver.net_source = load_net(net_path), str(net_path)
    data = EpisodeInputs(GOLDEN / "inputs.npz")
    net = CaffeNet(solver.net, phase="TRAIN", source=solver.net_source, device=device,
                   data_shapes={k: v.shape for k, v in data.batch(0).items()})
    load_weights_for_training(net, weights)
    trainer = Trainer(solver, net, data, seed=1)
    times = []
    with faithful_mode():
        for _ in range(iterations + 1):  # the first one warms up
            sync(device)
            start = time.perf_counter()
            record = trainer.step()
            sync(device)
            times.append(time.perf_counter() - start)
    return {"seconds": min(times[1:]), "all": times, "loss": float(record.loss), "passes": solver.param.iter_size}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=3, help="timed iterations of the thin net")
    ap.add_argument("--full-iterations", type=int, default=1, help="timed iterations of the full-size net")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    ap.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    solver = UPSTREAM / "solver_ss_os_fc.prototxt"
    thin = time_iterations(solver, GOLDEN / "net.prototxt", GOLDEN / "weights.caffemodel", args.iterations, device)
    print(f"thin: {thin['seconds']:.2f} s/iteration ({thin['all']})", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "full.caffemodel"
        params = random_oslsm_params(OSLSMWidths.FULL, seed=0)
        train_net = CaffeNet(read_solver(solver).net, phase="TRAIN", device="meta",
                             data_shapes={k: v.shape for k, v in EpisodeInputs(GOLDEN / "inputs.npz").batch(0).items()})
        write_caffemodel(weights, params, {n: train_net.layer_by_name[n].type for n in params})
        del params
        full = time_iterations(solver, None, weights, args.full_iterations, device)
    print(f"full: {full['seconds']:.2f} s/iteration ({full['all']})", flush=True)
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join([
        SECTION, "",
        f"Measured {when} by `bench/train_bench.py` on: {machine()} ({platform.platform()}), device `{device}`.",
        "",
        "Seconds per solver iteration (the best of the timed ones, after one warm-up iteration) under the "
        "upstream solver values (`solver_ss_os_fc.prototxt`: iter_size 10, so 10 forward/backward passes and one "
        "Caffe SGD update per iteration), 1-shot, cycling the five golden training episodes (queries 375x500, "
        "333x500, 500x375, 281x500, 500x500; supports 224x224), inside `faithful_mode` (IEEE float32).",
        "",
        "| net | widths | s / iteration | s / pass | timed iterations |",
        "|---|---|---:|---:|---:|",
        f"| thin golden train net | {tuple(OSLSMWidths(4, 6, 8, 8, 8, 16, 10).as_tuple())} | {thin['seconds']:.2f} | "
        f"{thin['seconds'] / thin['passes']:.3f} | {args.iterations} |",
        f"| upstream `train_ss_os_fc.prototxt` (dropout 0.5) | VGG-16 {tuple(OSLSMWidths.FULL.as_tuple())} | "
        f"{full['seconds']:.1f} | {full['seconds'] / full['passes']:.2f} | {args.full_iterations} |",
        "",
        f"At this speed the upstream solver's max_iter (1,000,000 iterations of iter_size 10) would take "
        f"{full['seconds'] * 1e6 / 86400 / 365:.1f} years on this CPU: re-training the full model needs a GPU.",
    ])
    print(text)
    if not args.no_write:
        write_section(Path(args.results), text, SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

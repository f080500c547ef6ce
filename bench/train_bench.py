"""Training benchmark: seconds per solver iteration of the OSLSM train net (upstream solver
values: iter_size 10, 1-shot) on a thin net (the golden training net and weights) and on the
full-size upstream train net (random VGG-width weights, dropout 0.5 active), each on the five
golden training episodes (queries 281x500 to 500x500); as ratios measured in the same run: a
full-size training pass against the deploy forward of the same episode, two torchrun ranks
against one process, and the time 60,000 iterations take here and, from FLOPs, on a device of a
given float32 throughput. Writes the "## Training" section of bench/RESULTS.md.

    python bench/train_bench.py [--iterations N] [--full-iterations N] [--device cpu|cuda]
                                [--gpu-tflops 51] [--no-write]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval_bench import machine, sync, write_section  # noqa: E402
from weights_convert.runtime.allocator import keep_freed_blocks  # noqa: E402
from weights_convert.formats.caffemodel import write_caffemodel  # noqa: E402
from weights_convert.graph import CaffeNet  # noqa: E402
from weights_convert.runtime.numerics import faithful_mode  # noqa: E402
from weights_convert.oslsm import OSLSMWidths  # noqa: E402
from weights_convert.oslsm.random_init import random_oslsm_params  # noqa: E402
from weights_convert.train.data import EpisodeInputs  # noqa: E402
from weights_convert.train.solver_file import read_solver  # noqa: E402
from weights_convert.train.trainer import Trainer, load_weights_for_training  # noqa: E402

GOLDEN = ROOT / "tests" / "golden_train"
# The deploy forward of a 375x500 query and one 224x224 support (segmentation branch plus
# conditioning branch), by eval_bench.segmentation_flops and the conditioning branch's FLOPs.
PASS_FORWARD_GFLOP = 340.2 + 31.0
PASS_FORWARD_NOTE = "340.2 GFLOP of query branch and about 31 GFLOP of support branch"
UPSTREAM = ROOT / "tests" / "upstream"
SECTION = "## Training"


def full_size_weights(folder: Path, solver, shapes: dict) -> Path:
    """A full-width random OSLSM (VGG-16 widths) as a caffemodel of the upstream train net's layers."""
    params = random_oslsm_params(OSLSMWidths.FULL, seed=0)
    meta = CaffeNet(solver.net, phase="TRAIN", device="meta", data_shapes=shapes)
    path = folder / "full.caffemodel"
    write_caffemodel(path, params, {n: meta.layer_by_name[n].type for n in params})
    return path


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


def pass_against_forward(weights: Path, device: torch.device, reps: int = 5) -> dict:
    """One forward/backward of the full-size upstream train net on golden episode 0 (375x500)
    against the OSLSM module's deploy forward of the same episode (support and query), with and
    without the constant frame skipped, and against the train net's own forward; the four
    alternated rep by rep (this machine's speed drifts), medians after a warm-up round."""
    from weights_convert.oslsm.loading import oslsm_from_params
    from weights_convert.train.passes import forward_backward

    batch = EpisodeInputs(GOLDEN / "inputs.npz").batch(0)
    solver = read_solver(UPSTREAM / "solver_ss_os_fc.prototxt")
    net = CaffeNet(solver.net, phase="TRAIN", source=solver.net_source, device=device,
                   data_shapes={k: v.shape for k, v in batch.items()})
    load_weights_for_training(net, weights)
    model = oslsm_from_params(random_oslsm_params(OSLSMWidths.FULL, seed=0)).to(
        device=device, memory_format=torch.channels_last).eval()
    x = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}

    def deploy_forward(skip: bool):
        model.segmentation.trunk.skip_constant_frame = skip
        with torch.inference_mode():
            return model(x["first_img"], x["first_label"], x["second_img"])

    def graph_forward():
        with torch.no_grad():
            return net.forward(batch)

    runs = {"train_pass_s": lambda: forward_backward(net, batch), "deploy_forward_s": lambda: deploy_forward(True),
            "plain_forward_s": lambda: deploy_forward(False), "graph_forward_s": graph_forward}
    times: dict[str, list[float]] = {name: [] for name in runs}
    with faithful_mode():
        for _ in range(reps + 1):
            for name, run in runs.items():
                sync(device)
                start = time.perf_counter()
                run()
                sync(device)
                times[name].append(time.perf_counter() - start)
    result = {name: statistics.median(values[1:]) for name, values in times.items()}
    return {**result, "query_hw": list(batch["second_img"].shape[2:]), "reps": reps}


def ranks_speedup(iterations: int = 4) -> dict:
    """Seconds per iteration of the thin golden visible case (iter_size 3): one process, and two
    torchrun ranks (gloo), in separate processes of this machine."""
    import subprocess

    def timed(prefix: list[str], out: Path) -> float:
        start = time.perf_counter()
        subprocess.run([*prefix, "-m", "weights_convert", "train", "--solver",
                        str(GOLDEN / "train_steps_visible" / "solver.prototxt"), "--weights",
                        str(GOLDEN / "weights.caffemodel"), "--inputs", str(GOLDEN / "inputs.npz"), "--iters",
                        str(iterations), "--snapshot-every", "0", "--no-progress", "--out", str(out)],
                       cwd=ROOT, check=True, capture_output=True)
        return (time.perf_counter() - start) / iterations

    with tempfile.TemporaryDirectory() as tmp:
        one = timed([sys.executable], Path(tmp) / "one")
        two = timed([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
                    Path(tmp) / "two")
    return {"one_process_s": one, "two_ranks_s": two}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=3, help="timed iterations of the thin net")
    ap.add_argument("--full-iterations", type=int, default=1, help="timed iterations of the full-size net")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gpu-tflops", type=float, default=51.0,
                    help="a device's float32 throughput for the projection (default 51: an H100 SXM's FP32 peak, "
                         "no TF32; `selfcheck` measures yours)")
    ap.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    ap.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = ap.parse_args(argv)
    keep_freed_blocks()  # as the train command does (bench/train_allocator_bench.py measures it)
    device = torch.device(args.device)
    solver = UPSTREAM / "solver_ss_os_fc.prototxt"
    thin = time_iterations(solver, GOLDEN / "net.prototxt", GOLDEN / "weights.caffemodel", args.iterations, device)
    print(f"thin: {thin['seconds']:.2f} s/iteration ({thin['all']})", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        shapes = {k: v.shape for k, v in EpisodeInputs(GOLDEN / "inputs.npz").batch(0).items()}
        weights = full_size_weights(Path(tmp), read_solver(solver), shapes)
        full = time_iterations(solver, None, weights, args.full_iterations, device)
        ratio = pass_against_forward(weights, device)
    ranks = ranks_speedup()
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
        f"{full['seconds'] * 1e6 / 86400 / 365:.1f} years on this CPU, and the released snapshots' 60,000 "
        f"iterations {full['seconds'] * 6e4 / 86400:.0f} days: re-training the full model needs GPUs.",
        "",
        f"Ratios, same run: a full-size training pass ({ratio['query_hw'][0]}x{ratio['query_hw'][1]} query, "
        f"dropout on) takes {ratio['train_pass_s']:.2f} s against {ratio['deploy_forward_s']:.2f} s for the "
        f"OSLSM module's deploy forward of the same episode: **{ratio['train_pass_s'] / ratio['deploy_forward_s']:.2f}x** "
        "(a pass is about 3 forwards in FLOPs; both skip the query branch's constant frame, the pass in the "
        "graph interpreter's convolutions, forward and backward); against the deploy forward "
        f"computing every position ({ratio['plain_forward_s']:.2f} s): "
        f"**{ratio['train_pass_s'] / ratio['plain_forward_s']:.2f}x**; against the train net's own forward "
        f"(no gradient, {ratio['graph_forward_s']:.2f} s): **{ratio['train_pass_s'] / ratio['graph_forward_s']:.2f}x**. "
        f"Medians of {ratio['reps']} rounds, the four alternated, in this process, which keeps its freed blocks as "
        "the train command's does. "
        "Two torchrun ranks on the "
        f"thin golden case (iter_size 3): {ranks['two_ranks_s']:.2f} s per iteration against "
        f"{ranks['one_process_s']:.2f} s in one process: **{ranks['one_process_s'] / ranks['two_ranks_s']:.2f}x** "
        f"(this machine has {os.cpu_count()} cores; one process already uses both).",
        "",
        f"60,000 iterations on a device of F float32 TFLOP/s, from FLOPs: 60,000 x 10 passes x 3 x "
        f"{PASS_FORWARD_GFLOP:.0f} GFLOP (a 375x500 query forward, {PASS_FORWARD_NOTE}) / (F x 1e12 x u), u the "
        f"share of peak reached (0.6 on this CPU's convolutions). For F = {args.gpu_tflops:g} and u = 0.6: "
        f"{6e5 * 3 * PASS_FORWARD_GFLOP * 1e9 / (args.gpu_tflops * 1e12 * 0.6) / 3600:.1f} hours per fold on one "
        "device, divided by the ranks of `torchrun`.",
    ])
    print(text)
    if not args.no_write:
        write_section(Path(args.results), text, SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Evaluation benchmark: episodes/s with the feature cache off and on (same data, same model, results
checked byte-identical), forward counts, and the full-width 500x500 query forward's FLOP/s against
this machine's measured convolution throughput. Writes the "## Evaluation" section of
bench/RESULTS.md (other sections are left as they are).

    python bench/eval_bench.py [--widths thin|mid] [--images N] [--episodes N] [--device cpu|cuda]
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")  # before numpy loads: see reproduce/__init__.py

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import platform
import re
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from weights_convert.files.atomic import atomic_write_text  # noqa: E402
from weights_convert.oslsm.layout import (FC6_KERNEL, QUERY_PAD,  # noqa: E402
                                          VGG_BLOCKS, OSLSMWidths, conv_layer_shapes)

WIDTHS = {"thin": OSLSMWidths.THIN, "mid": OSLSMWidths(16, 32, 64, 128, 128, 512, 100)}
SECTION = "## Evaluation"


def sync(device: torch.device) -> None:
    from weights_convert.checks.device_timing import synchronize

    synchronize(device)


def machine() -> str:
    from weights_convert.files.provenance import cpu_name

    cpu = cpu_name()
    mem = ""
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = f", {kb / 2**20:.1f} GiB RAM"
    except (OSError, AttributeError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}; torch {torch.__version__}, {torch.get_num_threads()} threads"


# ---------------------------------------------------------------------------- FLOP/s


def conv_reference(device: torch.device, reps: int = 5) -> dict:
    """The yardstick for the model's forward: the package's float32 convolution throughput (the
    self-check measures the same)."""
    from weights_convert.checks.device_timing import conv_throughput

    return conv_throughput(device, reps)


def segmentation_flops(widths: OSLSMWidths, hw: tuple[int, int]) -> int:
    """Multiply-adds x 2 of the segmentation branch (13 convs, fc6s 7x7, fc7s 1x1) on an HxW query."""
    h, w = hw[0] + 2 * QUERY_PAD - 2, hw[1] + 2 * QUERY_PAD - 2  # conv1_1s, pad 121
    total = 0
    shapes = conv_layer_shapes(widths)
    for block, n in VGG_BLOCKS:
        for i in range(1, n + 1):
            out_ch, in_ch = shapes[f"conv{block}_{i}"]
            total += 2 * in_ch * out_ch * 9 * h * w  # later 3x3 convs have pad 1: size kept
        h, w = -(-h // 2), -(-w // 2)  # ceil pooling
    h6, w6 = h - FC6_KERNEL + 1, w - FC6_KERNEL + 1
    total += 2 * widths.conv5 * widths.fc * FC6_KERNEL * FC6_KERNEL * h6 * w6
    total += 2 * widths.fc * widths.fc * h6 * w6
    return total


def full_query_forward(device: torch.device, reps: int = 3) -> dict:
    from weights_convert.oslsm.model import SegmentationBranch

    # The layout load_oslsm gives the evaluation.
    branch = SegmentationBranch(OSLSMWidths.FULL).to(device=device, memory_format=torch.channels_last).eval()
    x = torch.randn(1, 3, 500, 500, device=device) * 50
    flops = segmentation_flops(OSLSMWidths.FULL, (500, 500))
    times = []
    with torch.inference_mode():
        branch(x)  # warm-up (allocator, oneDNN/cuDNN primitive creation)
        sync(device)
        for _ in range(reps):
            t = time.perf_counter()
            out = branch(x)
            sync(device)
            times.append(time.perf_counter() - t)
    return {"flops": flops, "seconds": min(times), "flops_per_s": flops / min(times),
            "output_shape": list(out.shape)}


# ---------------------------------------------------------------------------- episodes/s


def prepare(work: Path, widths: OSLSMWidths, images: int, fold: int, seed: int) -> tuple[Path, Path]:
    from reproduce.data.synthetic_voc import make_synthetic_voc
    from weights_convert.convert import convert
    from weights_convert.netspec import write_net
    from weights_convert.oslsm.random_init import random_oslsm_params, write_oslsm_caffemodel
    from weights_convert.oslsm.spec import oslsm_deploy_net

    recipe = {"images": images, "seed": seed, "widths": list(widths.as_tuple()), "fold": fold}
    voc, weights = work / "VOC2012", work / f"fold{fold}.safetensors"
    stamp = work / "recipe.json"
    prototxt, caffemodel = work / "deploy_1shot.prototxt", work / f"fold{fold}.caffemodel"
    if stamp.is_file() and json.loads(stamp.read_text()) == recipe and weights.is_file():
        return voc, weights
    # Another recipe, or what a killed run left: rebuild this benchmark's own inputs from scratch.
    for leftover in (stamp, voc, weights, caffemodel, prototxt):
        if leftover.is_dir():
            shutil.rmtree(leftover)
        else:
            leftover.unlink(missing_ok=True)
    make_synthetic_voc(voc, images, seed)
    net = oslsm_deploy_net(1, widths)
    write_net(net, prototxt)
    params = random_oslsm_params(widths, seed=seed, hashing=True)
    write_oslsm_caffemodel(caffemodel, params)
    convert(prototxt, caffemodel, weights, model="oslsm", labels={"fold": fold})
    atomic_write_text(stamp, json.dumps(recipe) + "\n")
    return voc, weights


def timed_eval(voc, weights, fold, shots, episodes, device, out: Path, cache: bool, cache_dir=None) -> dict:
    from reproduce.evaluation.evaluate import evaluate

    if out.exists():
        shutil.rmtree(out)
    t = time.perf_counter()
    summary = evaluate(voc, weights, fold, shots, n_episodes=episodes, device=device, out_dir=out,
                       cache=cache, cache_dir=cache_dir, progress=False)
    wall = time.perf_counter() - t
    timings = json.loads((out / "timings.json").read_text())
    eps = json.loads((out / "episodes.json").read_text())["episodes"]
    return {"wall_s": wall, "loop_s": timings["seconds"]["episode_loop"],
            "episodes_per_s": timings["episodes_per_s"], "forwards": timings["forwards"],
            "distinct_queries": len({e["query"] for e in eps}),
            "distinct_supports": len({(s, e["cls"]) for e in eps for s in e["supports"]}),
            "prep_s": timings["cache_stats"]["seconds"].get("prep_worker", 0.0) if cache else None,
            "miou": summary["miou"], "csv": (out / "all_results.csv").read_bytes(),
            "summary": (out / "summary.json").read_bytes()}


# ---------------------------------------------------------------------------- report


def write_section(results_md: Path, text: str, section: str = SECTION) -> None:
    """Replace (or append) one "## ..." section of RESULTS.md, leaving the others as they are."""
    old = results_md.read_text() if results_md.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    body = text.rstrip("\n") + "\n\n"
    new = pattern.sub(lambda _: body, old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + body
    atomic_write_text(results_md, new.rstrip("\n") + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", choices=sorted(WIDTHS), default="mid")
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--work", default=None, help="scratch folder (default bench/out/eval_<widths>)")
    ap.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    ap.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    work = Path(args.work or ROOT / "bench" / "out" / f"eval_{args.widths}")
    widths = WIDTHS[args.widths]
    voc, weights = prepare(work, widths, args.images, args.fold, args.seed)
    off = timed_eval(voc, weights, args.fold, args.shots, args.episodes, args.device, work / "run_cache_off", False)
    on = timed_eval(voc, weights, args.fold, args.shots, args.episodes, args.device, work / "run_cache_on", True)
    # The table-run order: the 1-shot run fills the disk cache, the 5-shot run (same queries) reuses it.
    disk = work / "disk_cache"
    if disk.exists():
        shutil.rmtree(disk)
    one = timed_eval(voc, weights, args.fold, 1, args.episodes, args.device, work / "run_1shot_disk", True, disk)
    five = timed_eval(voc, weights, args.fold, args.shots, args.episodes, args.device, work / "run_after_1shot", True, disk)
    identical = (off["csv"] == on["csv"] == five["csv"]) and (off["summary"] == on["summary"] == five["summary"])
    from weights_convert.runtime.numerics import faithful_mode
    with faithful_mode():  # the evaluation's numerics
        ref = conv_reference(device)
        full = full_query_forward(device)
    pct = 100.0 * full["flops_per_s"] / ref["flops_per_s"]

    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        SECTION, "",
        f"Measured {when} by `bench/eval_bench.py` on: {machine()} ({platform.platform()}), device `{device}`.",
        "",
        f"Episodes/s, one run each on the same data: synthetic VOC set ({args.images} images), fold {args.fold}, "
        f"{args.shots}-shot, {args.episodes} episodes, {args.widths} random OSLSM (widths {widths.as_tuple()}), "
        "500x500 queries, pre-processing in 2 worker threads. Cache on = in-memory feature cache, no disk "
        "cache (every distinct image computed once in the run).",
        "",
        "| cache | episodes/s | episode loop (s) | query forwards | support forwards |",
        "|---|---:|---:|---:|---:|",
        f"| off | {off['episodes_per_s']:.2f} | {off['loop_s']:.1f} | {off['forwards']['query']} | {off['forwards']['support']} |",
        f"| on | {on['episodes_per_s']:.2f} | {on['loop_s']:.1f} | {on['forwards']['query']} | {on['forwards']['support']} |",
        f"| on, disk cache filled by a 1-shot run of the same fold | {five['episodes_per_s']:.2f} | {five['loop_s']:.1f} "
        f"| {five['forwards']['query']} | {five['forwards']['support']} |",
        "",
        f"(The 1-shot run that filled the disk cache: {one['episodes_per_s']:.2f} episodes/s, "
        f"{one['forwards']['query']} query and {one['forwards']['support']} support forwards.)",
        "",
        f"Speed-up {on['episodes_per_s'] / off['episodes_per_s']:.1f}x. With the cache on, query forwards = "
        f"{on['forwards']['query']} = distinct query images ({on['distinct_queries']}), support forwards = "
        f"{on['forwards']['support']} = distinct (support image, class) pairs ({on['distinct_supports']}). "
        f"all_results.csv and summary.json of the three {args.shots}-shot runs byte-identical: "
        f"{'yes' if identical else 'NO'}. Over 1000 episodes a fold has at most as many distinct queries as "
        "items, so the saving grows with the episode count. Pre-processing (PIL decode and the exact 2017 "
        f"resize) took {on['prep_s']:.1f} s of worker time in the cache-on run "
        f"({1000 * on['prep_s'] / (on['forwards']['query'] + on['forwards']['support']):.0f} ms per image), "
        "overlapped with the forwards by the worker threads.",
        "",
        f"Full-width (VGG-16) segmentation branch, one 500x500 query forward (conv1_1s pad 121 -> fc7s "
        f"{full['output_shape'][2]}x{full['output_shape'][3]}): {full['flops'] / 1e9:.1f} GFLOP in "
        f"{full['seconds']:.2f} s = {full['flops_per_s'] / 1e9:.1f} GFLOP/s, {pct:.0f}% of this machine's "
        f"measured conv throughput ({ref['flops_per_s'] / 1e9:.1f} GFLOP/s on one F.conv2d, {ref['shape']}).",
        "",
        "GPU timing of Tables 1+2 (8 x 1000 episodes with the authors' full-size models) could not be "
        "measured in this session: no GPU here. The script takes `--device cuda` for that.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not identical:
        print("ERROR: cache on and off gave different results", file=sys.stderr)
    if not args.no_write:
        write_section(Path(args.results), text)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())

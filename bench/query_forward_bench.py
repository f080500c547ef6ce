"""The full-size query forward with and without the work that never reaches the output (the
constant frame of conv1-conv4, the fc6s/fc7s cells the crop never reads), A/B in one run on this
machine, and what it means for the tables. Writes the "## Query forward" section of
bench/RESULTS.md.

    python bench/query_forward_bench.py [--reps 4] [--demo] [--no-write]

--demo also times `python -m reproduce demo` in a child process (wall, user and system time).
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")  # before numpy loads: see reproduce/__init__.py

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval_bench import conv_reference, machine, segmentation_flops, write_section  # noqa: E402
from weights_convert.layers.frame import MIN_CONSTANT_SHARE, Frame  # noqa: E402
from weights_convert.oslsm.layout import (FC6_KERNEL, QUERY_PAD, VGG_BLOCKS, OSLSMWidths,  # noqa: E402
                                          conv_layer_shapes)
from weights_convert.oslsm.model import cells_reaching_crop  # noqa: E402

SECTION = "## Query forward"
# What Tables 1 and 2 compute on the real VOC 2012 (bench/RESULTS.md, "VOC-scale rehearsal").
TABLE_QUERIES, TABLE_SUPPORTS = 1691, 1867


def executed_flops(widths: OSLSMWidths, hw: tuple[int, int]) -> int:
    """Multiply-adds x 2 that the skipping branch runs: each convolution's computed regions (the
    frame's geometry, as VGGTrunk walks it), fc6s/fc7s on the cells the crop reads."""
    shapes = conv_layer_shapes(widths)
    frame = Frame.of_image(*hw)
    marker = torch.ones(1)  # a non-zero constant: padding then differs from it
    total = 0
    for block, n in VGG_BLOCKS:
        for i in range(1, n + 1):
            out_ch, in_ch = shapes[f"conv{block}_{i}"]
            pad = QUERY_PAD if (block, i) == (1, 1) else 1
            size = [s + 2 * pad - 2 for s in (frame.rows.size, frame.cols.size)]
            frame = Frame(frame.rows.after_window(size[0], 3, 1, pad, frame.value is None),
                          frame.cols.after_window(size[1], 3, 1, pad, frame.value is None), marker)
            if frame.constant_share() < MIN_CONSTANT_SHARE:
                area = size[0] * size[1]
            else:
                area = sum((y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in frame.partition()[0])
            total += 2 * in_ch * out_ch * 9 * area
        pooled = [-(-s // 2) for s in (frame.rows.size, frame.cols.size)]
        frame = frame.after_max_pool(tuple(pooled), (2, 2), (2, 2))
    cells = [min(cells_reaching_crop(n), s - FC6_KERNEL + 1) for n, s in zip(hw, (frame.rows.size, frame.cols.size))]
    total += 2 * widths.conv5 * widths.fc * FC6_KERNEL * FC6_KERNEL * cells[0] * cells[1]
    total += 2 * widths.fc * widths.fc * cells[0] * cells[1]
    return total


def previous_forward(branch, x: torch.Tensor) -> torch.Tensor:
    """The segmentation branch as the code before the skipping computed it (commit 53b48e5): every
    convolution on the whole map, a new tensor for each ReLU, all fc7s cells."""
    import torch.nn.functional as F

    from weights_convert.oslsm.layout import VGG_BLOCKS

    for block, n in VGG_BLOCKS:
        for i in range(1, n + 1):
            x = F.relu(getattr(branch.trunk, f"conv{block}_{i}")(x))
        x = F.max_pool2d(x, 2, 2, ceil_mode=True)
    return F.relu(branch.fc7(F.relu(branch.fc6(x)))).contiguous()


def ab_query_forward(hw: tuple[int, int], reps: int) -> dict:
    """Median seconds of the previous code's forward, today's with the skipping off and with it
    on, alternated in one process on one model."""
    from weights_convert.runtime.numerics import faithful_mode
    from weights_convert.oslsm.model import OSLSM

    model = OSLSM(OSLSMWidths.FULL).to(memory_format=torch.channels_last).eval()  # load_oslsm's layout
    trunk = model.segmentation.trunk
    x = torch.randn(1, 3, *hw) * 50
    variants = {"previous": lambda: previous_forward(model.segmentation, x),
                "plain": lambda: model.query_features(x),
                "skip": lambda: model.query_features(x, head_cells_only=True)}

    def once(name: str) -> float:
        trunk.skip_constant_frame = name == "skip"
        t = time.perf_counter()
        variants[name]()
        return time.perf_counter() - t

    times = {name: [] for name in variants}
    with faithful_mode(), torch.inference_mode():
        for name in variants:  # warm-up: oneDNN primitives for every shape
            once(name)
        for _ in range(reps):
            for name in variants:
                times[name].append(once(name))
    return {**{f"{name}_s": statistics.median(ts) for name, ts in times.items()},
            "all": {name: [round(v, 3) for v in ts] for name, ts in times.items()}}


def support_forward_seconds(reps: int = 3) -> float:
    from weights_convert.runtime.numerics import faithful_mode
    from weights_convert.oslsm.model import OSLSM

    model = OSLSM(OSLSMWidths.FULL).to(memory_format=torch.channels_last).eval()
    img, mask = torch.randn(1, 3, 224, 224) * 50, torch.ones(1, 1, 224, 224)
    with faithful_mode(), torch.inference_mode():
        model.condition(img, mask)
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            model.condition(img, mask)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def timed_demo() -> dict:
    """`python -m reproduce demo` in a child: wall, and the child's user and system CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "reproduce", "--quiet", "demo", "--out", str(Path(tmp) / "demo")],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": wall, "user_s": after.ru_utime - before.ru_utime, "sys_s": after.ru_stime - before.ru_stime}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--demo", action="store_true", help="also time `make demo`'s command")
    ap.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    from weights_convert.runtime.numerics import faithful_mode

    rows = []
    for hw in ((500, 500), (375, 500)):
        ab = ab_query_forward(hw, args.reps)
        rows.append((hw, ab, segmentation_flops(OSLSMWidths.FULL, hw), executed_flops(OSLSMWidths.FULL, hw)))
    with faithful_mode():
        conv = conv_reference(torch.device("cpu"))
    support_s = support_forward_seconds()
    (_, main_ab, _, main_useful) = rows[0]
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [SECTION, "", f"Measured {when} by `bench/query_forward_bench.py` on: {machine()} "
             f"({platform.platform()}). Full-width random OSLSM, channels_last weights (as `load_oslsm` gives), "
             f"faithful mode; median of {args.reps} alternated runs after a warm-up.", "",
             "| query | previous code (s) | today, skipping off (s) | today, skipping on (s) | on / previous | "
             "on / off | GFLOP all | GFLOP run (useful) | share skipped |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for hw, ab, plain_flops, useful in rows:
        lines.append(f"| {hw[0]}x{hw[1]} | {ab['previous_s']:.2f} | {ab['plain_s']:.2f} | {ab['skip_s']:.2f} | "
                     f"**{ab['skip_s'] / ab['previous_s']:.2f}x** | {ab['skip_s'] / ab['plain_s']:.2f}x | "
                     f"{plain_flops / 1e9:.1f} | {useful / 1e9:.1f} | {100 * (1 - useful / plain_flops):.1f}% |")
    achieved = main_useful / main_ab["skip_s"]
    projected = TABLE_QUERIES * main_ab["skip_s"] + TABLE_SUPPORTS * support_s
    lines += ["", f"Useful throughput of the skipping 500x500 forward: {achieved / 1e9:.0f} GFLOP/s, "
              f"{100 * achieved / conv['flops_per_s']:.0f}% of this machine's measured convolution throughput "
              f"({conv['flops_per_s'] / 1e9:.0f} GFLOP/s, {conv['shape']}).", "",
              f"Tables 1 and 2 at real scale ({TABLE_QUERIES:,} query and {TABLE_SUPPORTS:,} support forwards, "
              f"500x500 queries as the upper bound): {TABLE_QUERIES:,} x {main_ab['skip_s']:.2f} s + "
              f"{TABLE_SUPPORTS:,} x {support_s:.3f} s = {projected / 60:.0f} min of forwards on this machine "
              f"(plain: {(TABLE_QUERIES * main_ab['plain_s'] + TABLE_SUPPORTS * support_s) / 60:.0f} min).",
              "", "Raw seconds (previous / off / on): " + "; ".join(
                  f"{hw[0]}x{hw[1]}: {ab['all']['previous']} / {ab['all']['plain']} / {ab['all']['skip']}"
                  for hw, ab, _, _ in rows),
              "", "\"Previous code\" is the branch as commit 53b48e5 computed it (every convolution on the whole "
              "map, a new tensor per ReLU, all fc7s cells), rebuilt in this script; \"today, skipping off\" keeps "
              "today's in-place ReLUs."]
    if args.demo:
        demo = timed_demo()
        lines += ["", f"`python -m reproduce demo`: {demo['wall_s']:.0f} s wall, {demo['user_s']:.0f} s user, "
                  f"{demo['sys_s']:.0f} s system."]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        write_section(Path(args.results), text, SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())

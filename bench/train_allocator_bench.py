"""A training process with malloc's defaults against one that keeps its freed blocks
(`weights_convert.runtime.allocator.keep_freed_blocks`, what `train` does): seconds per iteration of the
full-size upstream train net (iter_size 10, the five golden training episodes), resident memory
and the heap's free bytes after each iteration, in two child processes on this machine. Writes the
"## Training allocator" section of bench/RESULTS.md.

    python bench/train_allocator_bench.py [--iterations 3] [--no-write]
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")  # before numpy loads: see reproduce/__init__.py

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Training allocator"

CHILD = """
import json, resource, sys, tempfile, time
from pathlib import Path
from weights_convert.runtime.allocator import free_heap_bytes, keep_freed_blocks
kept = keep_freed_blocks() if sys.argv[1] == "keep" else False
sys.path.insert(0, "bench")
from train_bench import GOLDEN, UPSTREAM, full_size_weights
from weights_convert.graph import CaffeNet
from weights_convert.runtime.numerics import faithful_mode
from weights_convert.train.data import EpisodeInputs
from weights_convert.train.solver_file import read_solver
from weights_convert.train.trainer import Trainer, load_weights_for_training

def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) << 10

solver = read_solver(UPSTREAM / "solver_ss_os_fc.prototxt")
data = EpisodeInputs(GOLDEN / "inputs.npz")
shapes = {k: v.shape for k, v in data.batch(0).items()}
with tempfile.TemporaryDirectory() as tmp:
    weights = full_size_weights(Path(tmp), solver, shapes)
    net = CaffeNet(solver.net, phase="TRAIN", source=solver.net_source, data_shapes=shapes)
    load_weights_for_training(net, weights)
trainer = Trainer(solver, net, data, seed=1)
with faithful_mode():
    for _ in range(int(sys.argv[2])):
        start = time.perf_counter()
        trainer.step()
        print(json.dumps({"kept": kept, "seconds": time.perf_counter() - start, "rss": rss(),
                          "free": free_heap_bytes(),
                          "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt}), flush=True)
"""


def run_child(mode: str, iterations: int) -> list[dict]:
    done = subprocess.run([sys.executable, "-c", CHILD, mode, str(iterations)], cwd=ROOT, check=True,
                          capture_output=True, text=True)
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "bench"))
    from eval_bench import machine, write_section

    runs = {mode: run_child(mode, args.iterations) for mode in ("default", "keep")}
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    gib = 1 << 30
    lines = [SECTION, "", f"Measured {when} by `bench/train_allocator_bench.py` on: {machine()} "
             f"({platform.platform()}). Full-size upstream train net, iter_size 10, one child process per "
             "policy, one after the other.", "",
             "| malloc | iteration | s | RSS after (GiB) | heap free (GiB) |", "|---|---:|---:|---:|---:|"]
    for mode, records in runs.items():
        label = "defaults" if mode == "default" else "keep_freed_blocks (what `train` does)"
        lines += [f"| {label} | {i + 1} | {r['seconds']:.1f} | {r['rss'] / gib:.2f} | {r['free'] / gib:.2f} |"
                  for i, r in enumerate(records)]
    steady = {mode: min(r["seconds"] for r in records[1:] or records) for mode, records in runs.items()}
    lines += ["", f"Steady iteration: {steady['keep']:.1f} s against {steady['default']:.1f} s, "
              f"**{steady['keep'] / steady['default']:.2f}x**; resident memory "
              f"{runs['keep'][-1]['rss'] / gib:.2f} GiB against {runs['default'][-1]['rss'] / gib:.2f} GiB."]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        write_section(ROOT / "bench" / "RESULTS.md", text, SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())

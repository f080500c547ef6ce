"""`convert` as users run it, against the naive protobuf parse and a plain read (run on demand).

    .venv/bin/python bench/convert_cli_bench.py [--rounds 5] [--dir DIR] [--no-write]

Writes the full-size OSLSM caffemodel of bench/convert_bench.py (1.1 GB), then alternates, round
by round, each in a process of its own on a warm page cache: (1) `python -m weights_convert
convert --model oslsm` (wall time of the whole command: the source's sha256, the copy, the data
checksum, the reports), (2) the converters' naive `NetParameter.ParseFromString` plus
`np.array(blob.data)` (convert_bench's child), (3) a plain read of the file. Medians and the
ratios (1)/(2) and (1)/(3) replace the "## Convert through the command line" section of
bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from convert_bench import DEPLOY, oslsm_layers  # noqa: E402
from eval_bench import machine, write_section  # noqa: E402

SECTION = "## Convert through the command line"
PLAIN_READ = "import sys\nwith open(sys.argv[1], 'rb') as f:\n    while f.read(1 << 24):\n        pass\n"


def write_model(path: Path) -> None:
    import numpy as np

    from weights_convert.formats.caffemodel import write_caffemodel

    rng = np.random.default_rng(0)
    params, types = {}, {}
    for name, kind, shapes in oslsm_layers():
        params[name] = [rng.standard_normal(shape, dtype=np.float32) for shape in shapes]
        types[name] = kind
    write_caffemodel(path, params, types)


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", help="where to write the ~2.2 GB of files (default: a new temp dir)")
    parser.add_argument("--before", help="a checkout of an earlier version whose `convert` is timed beside, "
                        "e.g. `git worktree add /tmp/before COMMIT`")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        model, out = Path(tmp) / "oslsm_full.caffemodel", Path(tmp) / "oslsm_full.safetensors"
        write_model(model)
        commands = {
            "convert": [sys.executable, "-m", "weights_convert", "convert", "--prototxt", str(DEPLOY), "--caffemodel",
                        str(model), "--out", str(out), "--model", "oslsm", "--report", str(out.with_suffix(".json"))],
            "naive parse": [sys.executable, str(ROOT / "bench" / "convert_bench.py"), "--child", "naive", "--src",
                            str(model), "--dst", str(out.with_suffix(".unused"))],
            "plain read": [sys.executable, "-c", PLAIN_READ, str(model)],
        }
        if args.before:  # the same command run from the earlier checkout's sources
            commands["convert (before)"] = ["env", f"PYTHONPATH={args.before}", *commands["convert"]]
        timed(commands["plain read"])  # warm the page cache
        times = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, command in commands.items():
                out.unlink(missing_ok=True)
                times[name].append(timed(command))
        size = model.stat().st_size
    medians = {name: statistics.median(values) for name, values in times.items()}
    rows = "\n".join(f"| {name} | {medians[name]:.2f} | {', '.join(f'{t:.2f}' for t in times[name])} |"
                     for name in commands)
    text = (f"{SECTION}\n\n`bench/convert_cli_bench.py`: the full-size OSLSM caffemodel ({size / 1e9:.3f} GB), each "
            f"command in its own process on a warm page cache, {args.rounds} rounds alternated; medians. "
            f"Machine: {machine()}.\n\n| command | median (s) | rounds (s) |\n|---|---:|---|\n{rows}\n\n"
            f"`convert` against the naive parse: {medians['naive parse'] / medians['convert']:.2f}x faster; "
            f"against a plain read of the file: {medians['convert'] / medians['plain read']:.2f}x its time"
            + (f"; the earlier version's `convert` ({args.before}): {medians['convert (before)']:.2f} s"
               if args.before else "") + ". "
            "The source's sha256 (the identity users compare) is hashed in a second thread during the copy; "
            "the data section's checksum is XXH3-128, computed as the bytes are written.\n")
    print(text)
    if not args.no_write:
        write_section(ROOT / "bench" / "RESULTS.md", text, SECTION)
    return 0


if __name__ == "__main__":
    main()

"""Determinism across processes: N fresh `weights_convert train` runs (the golden training net,
4 iterations) must write byte-identical snapshots. With --unsettled the processes skip numerics'
one-time serial set-up of torch's CPU transcendental kernels, whose first parallel use can
leave one thread's chunk of an exp ~1e-4 off (seen in 10 of 280 fresh processes of a first
training pass here, and in CI's resume tests). Writes the "## Determinism across processes
(settled|unsettled)" section of bench/RESULTS.md.

    python bench/process_determinism.py [--processes N] [--unsettled] [--no-write]
"""
from __future__ import annotations

import argparse
import collections
import datetime as dt
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden_train"

RUN = """
import sys
from weights_convert.runtime import numerics
if sys.argv[1] == "unsettled":
    numerics._settle_lazy_kernels = lambda: None
from weights_convert.cli import main
sys.exit(main(sys.argv[2:]))
"""


def train_once(mode: str, out: Path) -> str:
    args = ["train", "--solver", str(GOLDEN / "train_steps_visible" / "solver.prototxt"),
            "--weights", str(GOLDEN / "weights.caffemodel"), "--inputs", str(GOLDEN / "inputs.npz"),
            "--iters", "4", "--snapshot-every", "4", "--no-progress", "--out", str(out)]
    subprocess.run([sys.executable, "-c", RUN, mode, *args], cwd=ROOT, capture_output=True, check=True)
    digest = hashlib.sha256()
    for name in ("snapshot_iter_4.caffemodel", "snapshot_iter_4.solverstate", "losses.csv"):
        digest.update((out / name).read_bytes())
    return digest.hexdigest()[:12]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=30)
    ap.add_argument("--unsettled", action="store_true", help="skip the serial kernel set-up")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    mode = "unsettled" if args.unsettled else "settled"
    outcomes: collections.Counter = collections.Counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.processes):
            outcomes[train_once(mode, Path(tmp) / str(i))] += 1
            print(f"\r{i + 1}/{args.processes}: {dict(outcomes)}", end="", flush=True)
    print()
    section = f"## Determinism across processes ({mode})"
    text = (f"{section}\n\n{dt.date.today()}: {args.processes} fresh `train` processes, "
            f"{len(outcomes)} distinct result(s) (snapshot and loss log digests: {dict(outcomes)}).\n")
    print(text)
    if not args.no_write:
        from eval_bench import machine, write_section  # bench/ is on the path of a script run from it
        write_section(ROOT / "bench" / "RESULTS.md", text.replace("\n\n", f"\n\nMachine: {machine()}.\n\n", 1),
                      section)
    return 0 if len(outcomes) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())

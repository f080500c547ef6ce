"""Full-size re-training rehearsal (run on demand; minutes on a CPU): the road a user without the
authors' models takes, at VGG-16 widths, on synthetic data.

    .venv/bin/python bench/train_rehearsal.py [--work DIR] [--folds 0 1] [--no-write]

1. A synthetic VOC-layout set (a val and a train split; the train split stands for SBD too).
2. A full-width random VGG-16 caffemodel in Caffe's V1 format (as VGG_ILSVRC_16_layers is), and
   `make-init --vgg16` from it.
3. `train-all` of the folds for 2 iterations, with a copy of the authors' solver whose
   iter_size is 2 (not 10) and whose max_iter and snapshot are 2: the authors' net, rates and
   update otherwise.
4. `convert` each fold's snapshot and `evaluate` 3 episodes of it.
Each stage runs as its own process; wall time and peak RSS per stage go to bench/RESULTS.md.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")  # before numpy: see reproduce/__init__.py

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eval_bench import machine, write_section  # noqa: E402
from scale_rehearsal import timed_process  # noqa: E402

SECTION = "## Re-training rehearsal"
VGG_CONVS = [f"conv{b}_{i}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for i in range(1, n + 1)]


def write_random_vgg16_v1(path: Path, seed: int = 0) -> None:
    """VGG-16's layers at full width (random values), in Caffe's V1 format with legacy 4-D blobs."""
    import numpy as np

    from weights_convert.formats.caffemodel import write_caffemodel_v1

    rng = np.random.default_rng(seed)
    widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    params, types, inputs = {}, {}, 3
    for name, width in zip(VGG_CONVS, widths):
        params[name] = [rng.normal(0, 0.02, (width, inputs, 3, 3)).astype(np.float32), np.zeros(width, np.float32)]
        types[name], inputs = "Convolution", width
    for name, (rows, cols) in (("fc6", (4096, 25088)), ("fc7", (4096, 4096)), ("fc8", (1000, 4096))):
        params[name] = [rng.normal(0, 0.005, (rows, cols)).astype(np.float32), np.zeros(rows, np.float32)]
        types[name] = "InnerProduct"
    write_caffemodel_v1(path, params, types)


def short_solver(work: Path) -> Path:
    """The authors' solver with iter_size 2, max_iter 2 and a snapshot at 2; their train net."""
    from reproduce.training.recipe import SOLVER_PROTOTXT, TRAIN_PROTOTXT

    shutil.copy(TRAIN_PROTOTXT, work / TRAIN_PROTOTXT.name)
    text = SOLVER_PROTOTXT.read_text()
    for key, value in (("iter_size", 2), ("max_iter", 2), ("snapshot", 2)):
        text, n = re.subn(rf"^{key}:.*$", f"{key}: {value}", text, flags=re.M)
        if not n:
            text += f"\n{key}: {value}\n"
    solver = work / "solver_rehearsal.prototxt"
    solver.write_text(text)
    return solver


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(ROOT / "bench" / "out" / "train_rehearsal"))
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    python = [sys.executable]
    stages = []

    def stage(label: str, command: list[str]) -> None:
        stages.append((label, *timed_process(command, work / f"{len(stages)}.log")))

    stage("synthetic VOC (300 val + 200 train images)",
          [*python, "-c", "import sys; from reproduce.data.synthetic_voc import make_synthetic_voc; "
           f"make_synthetic_voc({str(work / 'VOC2012')!r}, 300, 0, train_images=200)"])
    stage("random full-width VGG-16, V1 format",
          [*python, "-c", "import sys; sys.path.insert(0, 'bench'); from train_rehearsal import write_random_vgg16_v1; "
           f"from pathlib import Path; write_random_vgg16_v1(Path({str(work / 'vgg16_v1.caffemodel')!r}))"])
    stage("make-init --vgg16", [*python, "-m", "reproduce", "make-init", "--vgg16", str(work / "vgg16_v1.caffemodel"),
                                "--seed", "1", "--out", str(work / "init.caffemodel")])
    solver = short_solver(work)
    folds = ",".join(map(str, args.folds))
    stage(f"train-all, folds {folds}, 2 iterations of iter_size 2, side by side",
          [*python, "-m", "reproduce", "train-all", "--voc", str(work / "VOC2012"), "--sbd", str(work / "VOC2012"),
           "--init", str(work / "init.caffemodel"), "--solver", str(solver), "--folds", folds, "--devices",
           ",".join("cpu" for _ in args.folds), "--seed", "7", "--allow-val-images", "--out", str(work / "train")])
    for fold in args.folds:
        model = work / "train" / "models" / f"oslsm_fold{fold}_iter_2.caffemodel"
        converted = work / "models" / f"fold{fold}.safetensors"
        stage(f"convert fold {fold}", [*python, "-m", "weights_convert", "convert", "--prototxt",
                                       str(ROOT / "prototxt" / "deploy_1shot.prototxt"), "--caffemodel", str(model),
                                       "--model", "oslsm", "--label", f"fold={fold}", "--out", str(converted)])
        stage(f"evaluate fold {fold}, 3 episodes", [*python, "-m", "reproduce", "-q", "evaluate", "--voc",
                                                   str(work / "VOC2012"), "--weights", str(converted), "--fold",
                                                   str(fold), "--shots", "1", "--episodes", "3", "--out",
                                                   str(work / "runs" / f"fold{fold}")])
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [SECTION, "", f"Measured {when} by `bench/train_rehearsal.py` on: {machine()} ({platform.platform()}).",
             "", "The road without the authors' models, at VGG-16 widths on synthetic data: each stage its own "
             "process (peak RSS: the largest of the stage's processes, for `train-all` one fold's). The solver is a copy of the authors' with iter_size 2, max_iter 2 and snapshot 2.", "",
             "| stage | wall (s) | peak RSS (GiB) |", "|---|---:|---:|"]
    lines += [f"| {label} | {wall:.1f} | {peak:.2f} |" for label, wall, peak in stages]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        write_section(ROOT / "bench" / "RESULTS.md", text, SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`demo`: the whole pipeline without the authors' data, learning included: a synthetic VOC-layout
data set (a test and a training split), four thin OSLSM start caffemodels of the full upstream
topology (demo_model: a fixed colour trunk, random fc8f), conversion, 1- and 5-shot evaluation of
all folds, training of each fold with the kit's Caffe SGD, the same evaluation of the trained
models, and the two tables with the start models' numbers beside the trained ones'."""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from reproduce.errors import raise_problems
from reproduce.evaluation.protocols import Protocol
from reproduce.data.pascal5i import FOLDS, N_CLASSES

# --device is checked with the other arguments, all problems reported at once (eval_config).
DEVICE_IN_PROBLEMS = True

NAME = "demo"
HELP = "synthetic data, thin OSLSM models trained on CPU, convert, evaluate before and after training, both tables (minutes)"
NOTE = ("DEMO: synthetic images and thin models (a fixed colour trunk, fc8f trained for a few seconds); "
        "'ours' is the trained model, 'before training' its random start. Neither is comparable with the paper.")
NOTE_HSNET = ("DEMO: the trained thin models of the tables above under HSNet's protocol, on split files and a "
              "SegmentationClassAug written for the synthetic set. Not comparable with the paper.")
BASELINE = "before training"
RUNS_BEFORE = "runs_before_training"  # the start models' run folders, beside `runs`
HSNET_SUFFIX = Protocol("hsnet").table_suffix  # protocol hsnet's runs and table, beside the original's
STAMP = ".oslsm-demo"  # marks a folder the demo made: it may delete and rewrite what is in it
# Image i holds class i % 20 + 1, so every class needs a query and 5 other supports (5-shot).
MIN_IMAGES = N_CLASSES * (5 + 1)
MIN_TRAIN_IMAGES = N_CLASSES * 2   # each training class needs more than one item


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="results/demo", help="output folder (default results/demo)")
    parser.add_argument("--episodes", type=int, default=100, help="episodes per fold and shot count (default 100)")
    parser.add_argument("--images", type=int, default=300,
                        help=f"synthetic test images, val.txt (default 300, at least {MIN_IMAGES}: a query and 5 "
                             "supports per class)")
    parser.add_argument("--train-images", type=int, default=200,
                        help=f"synthetic training images, train.txt (default 200, at least {MIN_TRAIN_IMAGES})")
    parser.add_argument("--train-iters", type=int, default=200,
                        help="SGD iterations per fold, two episodes each (default 200)")
    parser.add_argument("--seed", type=int, default=2017)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-progress", action="store_true")


@dataclasses.dataclass(frozen=True)
class DemoInputs:
    voc: Path              # val.txt: the test images; train.txt: the training images
    start_models: Path     # oslsm_demo_fold{F}.caffemodel: each fold's random start
    deploy: Path           # the 1-shot deploy net at the demo's widths
    solver: Path           # the demo solver, beside its train net
    hsnet_splits: Path     # HSNet-style split files of the synthetic val set, for protocol hsnet


def make_demo_inputs(work: Path, args) -> DemoInputs:
    """Synthetic VOC2012, the four start caffemodels and the demo's nets and solver under `work`,
    rebuilt with everything derived from them (conversions, cache, training, the runs beside
    `work`) when the recipe changed."""
    from reproduce.training.demo_model import DEMO_WIDTHS
    from reproduce.evaluation.provenance import source_digests
    from reproduce.presentation.tables import TABLES
    from weights_convert.atomic import atomic_write_text

    inputs = DemoInputs(work / "VOC2012", work / "caffemodels", work / "deploy_1shot_demo.prototxt",
                        work / "solver_demo.prototxt", work / "hsnet_splits")
    recipe = {"images": args.images, "train_images": args.train_images, "seed": args.seed,
              "episodes": args.episodes, "train_iters": args.train_iters, "widths": list(DEMO_WIDTHS.as_tuple()),
              "code": source_digests(("reproduce.training.demo_model", "reproduce.data.synthetic_voc",
                                      "reproduce.data.hsnet"))}
    stamp = work / "recipe.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == recipe:
        return inputs
    # Another recipe, or a build that stopped half-way: start these inputs (and what was derived
    # from them) afresh. Everything here is generated, never user data.
    reports = [work.parent / f"{stem}{suffix}_report" for stem, _ in TABLES.values() for suffix in ("", HSNET_SUFFIX)]
    derived = ("cache", "runs", RUNS_BEFORE, "runs" + HSNET_SUFFIX, "train")
    for derived in (work, *(work.parent / d for d in derived), *reports):
        if derived.is_dir():
            shutil.rmtree(derived)
    _write_demo_inputs(inputs, args)
    atomic_write_text(stamp, json.dumps(recipe) + "\n")
    return inputs


def _write_demo_inputs(inputs: DemoInputs, args) -> None:
    from reproduce.training.demo_model import DEMO_WIDTHS, demo_params, demo_solver_text, demo_train_net
    from reproduce.data.hsnet import MASKS, write_split_files
    from reproduce.data.synthetic_voc import make_synthetic_voc
    from reproduce.data.voc import VOCDataset
    from weights_convert.atomic import atomic_write_text
    from weights_convert.netspec import write_net
    from weights_convert.oslsm.random_init import write_oslsm_caffemodel
    from weights_convert.oslsm.spec import oslsm_deploy_net

    make_synthetic_voc(inputs.voc, args.images, args.seed, train_images=args.train_images)
    write_split_files(VOCDataset(inputs.voc, masks=inputs.voc / MASKS), inputs.hsnet_splits)
    for fold in FOLDS:
        write_oslsm_caffemodel(inputs.start_models / f"oslsm_demo_fold{fold}.caffemodel",
                               demo_params(seed=args.seed + fold), net_name=f"oslsm_demo_fold{fold}")
    write_net(oslsm_deploy_net(1, DEMO_WIDTHS), inputs.deploy)
    write_net(demo_train_net(), inputs.solver.parent / "train_demo.prototxt")
    atomic_write_text(inputs.solver, demo_solver_text("train_demo.prototxt", args.train_iters))


def run(args) -> int:
    from reproduce.workflows.table_pipeline import ensure_converted, evaluate_folds, write_table_and_report
    from reproduce.workflows.fold_models import convert_fold_models

    start = time.perf_counter()
    out = Path(args.out)
    refuse_bad_arguments(args, out)
    out.mkdir(parents=True, exist_ok=True)
    (out / STAMP).write_text("made by `python -m reproduce demo`; it rewrites this folder\n")
    work = out / "work"
    inputs = make_demo_inputs(work, args)
    evaluation = dict(episodes=args.episodes, device=args.device, protocol="original", workers=args.workers,
                      progress=not args.no_progress, cache_dir=out / "cache")
    # The trunk is frozen, so both models share their query features: the on-disk cache computes
    # them once, before training, and the trained model's runs read them back.
    starts = ensure_converted(inputs.start_models, work / "models_before_training", prototxt=inputs.deploy)
    before = evaluate_folds((1, 2), inputs.voc, starts, out, runs_dir=RUNS_BEFORE, **evaluation)
    trained = {fold: _train(args, inputs, out, fold) for fold in FOLDS}
    converted = convert_fold_models(None, trained, inputs.deploy, work / "models")
    runs = evaluate_folds((1, 2), inputs.voc, converted, out, **evaluation)
    for table in (1, 2):
        paths = write_table_and_report(table, runs[table], out, inputs.voc, note=NOTE, device=args.device,
                                       baseline=(BASELINE, before[table]))
        print(paths["md"].read_text())
        print(f"report: {paths['report']}")
    # The second protocol once, end to end: HSNet's episodes, masks and scoring (table 1, 1-shot).
    hsnet = evaluate_folds((1,), inputs.voc, converted, out, runs_dir="runs" + HSNET_SUFFIX,
                           hsnet_splits=inputs.hsnet_splits, **{**evaluation, "protocol": "hsnet"})
    paths = write_table_and_report(1, hsnet[1], out, inputs.voc, note=NOTE_HSNET, device=args.device)
    print(paths["md"].read_text())
    print(f"report: {paths['report']}")
    print(f"loss curves: {', '.join(str(out / 'train' / f'fold{f}' / 'loss_curve.png') for f in FOLDS)}")
    print(f"demo finished in {time.perf_counter() - start:.0f} s; tables in {out}")
    return 0


def _train(args, inputs: DemoInputs, out: Path, fold: int) -> Path:
    """Fold `fold` trained from its start model (resumed if a run was cut); its last caffemodel."""
    from reproduce.workflows.fold_training import train_fold
    from reproduce.training.episodes import open_training_sets

    # The one synthetic training split stands for both SBD and VOC train (so every item is twice
    # in the original's merged list, as VOC train images are that also are in SBD).
    sets = open_training_sets(inputs.voc, inputs.voc)
    state = train_fold(sets, fold, solver=inputs.solver, out=out / "train" / f"fold{fold}",
                       init=str(inputs.start_models / f"oslsm_demo_fold{fold}.caffemodel"), seed=args.seed + fold,
                       device=args.device, progress=not args.no_progress, cache_dir=out / "cache" / "items",
                       title=f"demo fold {fold}: fc8f trained on the synthetic training split")
    return state.with_suffix(".caffemodel")


def refuse_bad_arguments(args, out: Path) -> None:
    """Every problem with the arguments and the output folder, together, before anything is written."""
    from reproduce.evaluation.eval_config import argument_problems

    problems = argument_problems(n_episodes=args.episodes, workers=args.workers, device=args.device,
                                 folders={"--out": out})
    if args.images < MIN_IMAGES:
        problems.append(f"--images must be >= {MIN_IMAGES} (a query and 5 supports for each of the "
                        f"{N_CLASSES} classes), got {args.images}")
    if args.train_images < MIN_TRAIN_IMAGES:
        problems.append(f"--train-images must be >= {MIN_TRAIN_IMAGES} (two items of each of the "
                        f"{N_CLASSES} classes), got {args.train_images}")
    if args.train_iters < 1:
        problems.append(f"--train-iters must be >= 1, got {args.train_iters}")
    if out.is_dir() and not _made_by_demo(out) and any(out.iterdir()):
        found = ", ".join(sorted(p.name for p in out.iterdir())[:5])
        problems.append(f"--out {out} holds files the demo did not make ({found}); the demo deletes and "
                        "rewrites what is in its folder, so it only writes into a new or empty folder or an "
                        "earlier demo's")
    raise_problems(problems)


def _made_by_demo(out: Path) -> bool:
    """The demo's stamp, or the recipe file that demos before the stamp left in work/."""
    return (out / STAMP).is_file() or (out / "work" / "recipe.json").is_file()

"""The whole pipeline without the authors' data, learning included: a synthetic VOC-layout data set
(a test and a training split), four thin OSLSM start caffemodels of the full upstream topology
(demo_model: a fixed colour trunk, random fc8f), conversion, 1- and 5-shot evaluation of all folds,
training of each fold with the kit's Caffe SGD, the same evaluation of the trained models, the two
tables with the start models' numbers beside the trained ones', and HSNet's protocol once."""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from reproduce.data.pascal5i import FOLDS, N_CLASSES
from reproduce.evaluation.protocols.hsnet import HSNet
from reproduce.evaluation.protocols.original import Original

NOTE = ("DEMO: synthetic images and thin models (a fixed colour trunk, fc8f trained for a few seconds); "
        "'ours' is the trained model, 'before training' its random start. Neither is comparable with the paper.")
NOTE_HSNET = ("DEMO: the trained thin models of the tables above under HSNet's protocol, on split files and a "
              "SegmentationClassAug written for the synthetic set. Not comparable with the paper.")
NOTE_BASELINES = ("Rows of the paper's baselines (table 1): thin FCN-32s base nets from a random start, trained "
                  "for {iters} iterations at rate {lr:g}, fine-tuning for {ft} (demo choices; FCN's recipe is 100,000 "
                  "at 1e-10 from VGG-16).")
BASELINE = "before training"
RUNS_BEFORE = "runs_before_training"  # the start models' run folders, beside `runs`
HSNET_SUFFIX = HSNet().table_suffix  # protocol hsnet's runs and table, beside the original's
STAMP = ".oslsm-demo"  # marks a folder the demo made: it may delete and rewrite what is in it
# Image i holds class i % 20 + 1, so every class needs a query and 5 other supports (5-shot).
MIN_IMAGES = N_CLASSES * (5 + 1)
MIN_TRAIN_IMAGES = N_CLASSES * 2   # each training class needs more than one item


@dataclasses.dataclass(frozen=True)
class DemoRecipe:
    """What the demo's inputs and runs are made of (a change rebuilds everything derived)."""
    images: int = 300          # synthetic test images (val.txt)
    train_images: int = 200    # synthetic training images (train.txt)
    train_iters: int = 200     # SGD iterations per fold, two episodes each
    episodes: int = 100        # per fold and shot count
    seed: int = 2017
    base_iters: int = 40       # the baselines' thin base nets (SGD iterations per fold)
    base_lr: float = 1e-7
    finetune_iters: int = 5    # the fine-tuning baseline's iterations per episode (its default: 20)


@dataclasses.dataclass(frozen=True)
class DemoInputs:
    voc: Path              # val.txt: the test images; train.txt: the training images
    start_models: Path     # oslsm_demo_fold{F}.caffemodel: each fold's random start
    deploy: Path           # the 1-shot deploy net at the demo's widths
    solver: Path           # the demo solver, beside its train net
    hsnet_splits: Path     # HSNet-style split files of the synthetic val set, for protocol hsnet
    base_starts: Path      # base_start_fold{F}.caffemodel: the baselines' thin base nets before training


def recipe_problems(recipe: DemoRecipe) -> list[str]:
    problems = []
    if recipe.images < MIN_IMAGES:
        problems.append(f"--images must be >= {MIN_IMAGES} (a query and 5 supports for each of the "
                        f"{N_CLASSES} classes), got {recipe.images}")
    if recipe.train_images < MIN_TRAIN_IMAGES:
        problems.append(f"--train-images must be >= {MIN_TRAIN_IMAGES} (two items of each of the "
                        f"{N_CLASSES} classes), got {recipe.train_images}")
    if recipe.train_iters < 1:
        problems.append(f"--train-iters must be >= 1, got {recipe.train_iters}")
    return problems


def folder_problems(out: Path) -> list[str]:
    """The demo deletes and rewrites what is in its folder: only a new or empty one, or an earlier demo's."""
    if out.is_dir() and not _made_by_demo(out) and any(out.iterdir()):
        found = ", ".join(sorted(p.name for p in out.iterdir())[:5])
        return [f"--out {out} holds files the demo did not make ({found}); the demo deletes and rewrites what is "
                "in its folder, so it only writes into a new or empty folder or an earlier demo's"]
    return []


def _made_by_demo(out: Path) -> bool:
    """The demo's stamp, or the recipe file that demos before the stamp left in work/."""
    return (out / STAMP).is_file() or (out / "work" / "recipe.json").is_file()


def make_demo_inputs(work: Path, recipe: DemoRecipe) -> DemoInputs:
    """Synthetic VOC2012, the four start caffemodels and the demo's nets and solver under `work`,
    rebuilt with everything derived from them (conversions, cache, training, the runs beside
    `work`) when the recipe changed."""
    from reproduce.evaluation.provenance import source_digests
    from reproduce.presentation.tables import TABLES
    from reproduce.training.demo_model import DEMO_WIDTHS
    from weights_convert.files.atomic import atomic_write_text

    inputs = DemoInputs(work / "VOC2012", work / "caffemodels", work / "deploy_1shot_demo.prototxt",
                        work / "solver_demo.prototxt", work / "hsnet_splits", work / "base_starts")
    stamp_fields = {"images": recipe.images, "train_images": recipe.train_images, "seed": recipe.seed,
                    "episodes": recipe.episodes, "train_iters": recipe.train_iters, "base_iters": recipe.base_iters,
                    "base_lr": recipe.base_lr, "finetune_iters": recipe.finetune_iters,
                    "widths": list(DEMO_WIDTHS.as_tuple()),
                    "code": source_digests(("reproduce.training.demo_model", "reproduce.data.synthetic_voc",
                                            "reproduce.data.hsnet"))}
    stamp = work / "recipe.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == stamp_fields:
        return inputs
    # Another recipe, or a build that stopped half-way: start these inputs (and what was derived
    # from them) afresh. Everything here is generated, never user data.
    reports = [work.parent / f"{stem}{suffix}_report" for stem, _ in TABLES.values() for suffix in ("", HSNET_SUFFIX)]
    derived = ("cache", "runs", RUNS_BEFORE, "runs" + HSNET_SUFFIX, "train", "base")
    for folder in (work, *(work.parent / d for d in derived), *reports):
        if folder.is_dir():
            shutil.rmtree(folder)
    _write_demo_inputs(inputs, recipe)
    atomic_write_text(stamp, json.dumps(stamp_fields) + "\n")
    return inputs


def _write_demo_inputs(inputs: DemoInputs, recipe: DemoRecipe) -> None:
    from reproduce.data.hsnet import MASKS, write_split_files
    from reproduce.data.synthetic_voc import make_synthetic_voc
    from reproduce.data.voc import VOCDataset
    from reproduce.training.base_net import N_BASE_CLASSES
    from reproduce.training.demo_model import (DEMO_WIDTHS, demo_base_params, demo_params, demo_solver_text,
                                               demo_train_net)
    from weights_convert.fcn.spec import THIN, layer_types
    from weights_convert.files.atomic import atomic_write_text
    from weights_convert.formats.caffemodel import write_caffemodel
    from weights_convert.netspec import write_net
    from weights_convert.oslsm.random_init import write_oslsm_caffemodel
    from weights_convert.oslsm.spec import oslsm_deploy_net

    make_synthetic_voc(inputs.voc, recipe.images, recipe.seed, train_images=recipe.train_images)
    write_split_files(VOCDataset(inputs.voc, masks=inputs.voc / MASKS), inputs.hsnet_splits)
    for fold in FOLDS:
        write_oslsm_caffemodel(inputs.start_models / f"oslsm_demo_fold{fold}.caffemodel",
                               demo_params(seed=recipe.seed + fold), net_name=f"oslsm_demo_fold{fold}")
        base = demo_base_params(THIN, N_BASE_CLASSES, seed=recipe.seed + fold)
        write_caffemodel(inputs.base_starts / f"base_start_fold{fold}.caffemodel", base, layer_types(base))
    write_net(oslsm_deploy_net(1, DEMO_WIDTHS), inputs.deploy)
    write_net(demo_train_net(), inputs.solver.parent / "train_demo.prototxt")
    atomic_write_text(inputs.solver, demo_solver_text("train_demo.prototxt", recipe.train_iters))


def run_demo(out: Path, recipe: DemoRecipe, *, device: str = "cpu", workers: int = 2, progress: bool = True) -> None:
    """Everything, into `out` (checked by the caller: recipe_problems, folder_problems)."""
    from reproduce.workflows.fold_models import convert_fold_models
    from reproduce.evaluation.baselines.methods import FineTune, LogReg, NearestNeighbour
    from reproduce.workflows.table_pipeline import (ensure_converted, evaluate_baselines, evaluate_folds,
                                                    write_table_and_report)

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    (out / STAMP).write_text("made by `python -m reproduce demo`; it rewrites this folder\n")
    work = out / "work"
    inputs = make_demo_inputs(work, recipe)
    evaluation = dict(episodes=recipe.episodes, device=device, workers=workers, progress=progress,
                      cache_dir=out / "cache")
    # The trunk is frozen, so both models share their query features: the on-disk cache computes
    # them once, before training, and the trained model's runs read them back.
    starts = ensure_converted(inputs.start_models, work / "models_before_training", prototxt=inputs.deploy)
    before = evaluate_folds((1, 2), inputs.voc, starts, out, runs_dir=RUNS_BEFORE, protocol=Original(), **evaluation)
    trained = {fold: _train(inputs, out, fold, recipe.seed + fold, device, progress) for fold in FOLDS}
    converted = convert_fold_models(None, trained, inputs.deploy, work / "models")
    runs = evaluate_folds((1, 2), inputs.voc, converted, out, protocol=Original(), **evaluation)
    # The paper's baselines on table 1's episodes: a thin base net per fold, each method a row.
    base_nets = {fold: _train_base(inputs, out, fold, recipe, device, progress) for fold in FOLDS}
    methods = [NearestNeighbour(), LogReg(), FineTune(iterations=recipe.finetune_iters)]
    compared = evaluate_baselines((1,), inputs.voc, base_nets, out, methods,
                                  episodes=recipe.episodes, device=device, protocol=Original(), progress=progress)
    for table in (1, 2):
        note = NOTE + (" " + NOTE_BASELINES.format(iters=recipe.base_iters, lr=recipe.base_lr, ft=recipe.finetune_iters)
                       if table == 1 else "")
        paths = write_table_and_report(table, runs[table], out, inputs.voc, note=note, device=device,
                                       baseline=(BASELINE, before[table]), methods=compared.get(table, ()))
        print(paths["md"].read_text())
        print(f"report: {paths['report']}")
    # The second protocol once, end to end: HSNet's episodes, masks and scoring (table 1, 1-shot).
    hsnet = evaluate_folds((1,), inputs.voc, converted, out, protocol=HSNet(splits=inputs.hsnet_splits), **evaluation)
    paths = write_table_and_report(1, hsnet[1], out, inputs.voc, note=NOTE_HSNET, device=device)
    print(paths["md"].read_text())
    print(f"report: {paths['report']}")
    print(f"loss curves: {', '.join(str(out / 'train' / f'fold{f}' / 'loss_curve.png') for f in FOLDS)}")
    print(f"demo finished in {time.perf_counter() - start:.0f} s; tables in {out}")


def _train(inputs: DemoInputs, out: Path, fold: int, seed: int, device: str, progress: bool) -> Path:
    """Fold `fold` trained from its start model (resumed if a run was cut); its last caffemodel."""
    from reproduce.training.episodes import open_training_sets
    from reproduce.workflows.fold_training import train_fold

    # The one synthetic training split stands for both SBD and VOC train (so every item is twice
    # in the original's merged list, as VOC train images are that also are in SBD).
    sets = open_training_sets(inputs.voc, inputs.voc)
    state = train_fold(sets, fold, solver=inputs.solver, out=out / "train" / f"fold{fold}",
                       init=str(inputs.start_models / f"oslsm_demo_fold{fold}.caffemodel"), seed=seed,
                       device=device, progress=progress, cache_dir=out / "cache" / "items",
                       title=f"demo fold {fold}: fc8f trained on the synthetic training split")
    return state.with_suffix(".caffemodel")


def _train_base(inputs: DemoInputs, out: Path, fold: int, recipe: DemoRecipe, device: str, progress: bool) -> Path:
    """Fold `fold`'s thin base net (resumed if cut); its last caffemodel."""
    from reproduce.training.episodes import open_training_sets
    from reproduce.workflows.base_training import train_base_fold

    state = train_base_fold(open_training_sets(inputs.voc, inputs.voc), fold, out=out / "base" / f"fold{fold}",
                            init=str(inputs.base_starts / f"base_start_fold{fold}.caffemodel"),
                            iterations=recipe.base_iters, base_lr=recipe.base_lr, device=device, progress=progress,
                            cache_dir=out / "cache" / "items")
    return state.with_suffix(".caffemodel")

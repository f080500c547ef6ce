"""`train-all`: every fold's model re-trained, one process per fold, folds queued on the devices."""
from __future__ import annotations

from pathlib import Path

from reproduce.cli_arguments import add_folds_argument

NAME = "train-all"
HELP = ("re-train the fold models: one `train` process per fold (a torchrun job with --ranks-per-fold R), "
        "queued on --devices; resumable; each fold's newest snapshot copied to OUT/models/")


def add_arguments(parser) -> None:
    parser.add_argument("--voc", required=True, help="VOC2012 folder (train.txt is read)")
    parser.add_argument("--sbd", required=True, help="SBD in the VOC layout (from `sbd-to-voc`)")
    parser.add_argument("--init", help="start model (from `make-init`; with --base-nets an FCN-32s one); not needed "
                        "to resume")
    parser.add_argument("--base-nets", action="store_true",
                        help="train the baselines' base nets instead (`train-base` per fold, in OUT/base/fold{F}; "
                             "published to OUT/base_models for `table-run --base-models`)")
    parser.add_argument("--vgg16", help="with --base-nets: ImageNet VGG-16, the base nets' start by FCN's surgery")
    add_folds_argument(parser)
    parser.add_argument("--devices", default="cpu",
                        help="comma-separated devices, e.g. cuda:0,cuda:1 (a fold at a time on each; repeat cpu "
                             "to run folds side by side on the CPU)")
    parser.add_argument("--ranks-per-fold", type=int, default=1,
                        help="devices per fold: a torchrun job sharing each iteration's passes (default 1)")
    parser.add_argument("--iters", type=int, help="as `train --iters` (default: the released 60,000)")
    parser.add_argument("--solver", help="as `train --solver` (default: the authors')")
    parser.add_argument("--seed", type=int, help="episode seed of fold 0; fold F uses seed + F (default: drawn)")
    parser.add_argument("--allow-val-images", action="store_true")
    parser.add_argument("--out", required=True, help="folder: fold{F}/ (each as `train` writes), logs/, models/")


def run(args) -> int:
    import sys

    from reproduce.cli_arguments import comma_list, selected_folds
    from reproduce.numeric_options import numeric_problems
    from reproduce.errors import raise_problems
    from reproduce.training.base_net import BASE_ITERATIONS
    from reproduce.training.recipe import default_iterations
    from reproduce.workflows.all_folds import FoldJob, device_slots, publish_model, run_all
    from weights_convert.runtime.devices import DeviceError, checked_device

    out = Path(args.out)
    problems = numeric_problems(args, ("iters", "ranks_per_fold"))
    problems += _foreign_options(args)
    folds, devices = selected_folds(args.folds, problems), comma_list(args.devices, "--devices", problems)
    for device in devices:
        try:
            checked_device(device)
        except DeviceError as exc:
            problems.append(str(exc).replace("--device", "--devices entry", 1))
    if out.exists() and not out.is_dir():
        problems.append(f"--out {out} is a file; expected a folder")
    raise_problems(problems, heading="cannot start train-all")
    slots = device_slots(devices, args.ranks_per_fold)
    if args.base_nets:
        jobs = [FoldJob(f, out / "base" / f"fold{f}", _train_arguments(args, f), "train-base") for f in folds]
        target, models, prefix = args.iters or BASE_ITERATIONS, out / "base_models", "fcn32s_base"
    else:
        jobs = [FoldJob(f, out / f"fold{f}", _train_arguments(args, f)) for f in folds]
        target, models, prefix = default_iterations(args.iters, args.solver), out / "models", "oslsm"
    statuses = run_all(jobs, slots, out / "logs", target)
    failed = sorted(f for f, status in statuses.items() if status != 0)
    for job in jobs:
        if job.fold in failed:
            print(f"fold {job.fold}: FAILED (exit {statuses[job.fold]}); see {out / 'logs' / f'fold{job.fold}.log'}")
        else:
            print(f"fold {job.fold}: {publish_model(job.fold, job.trainer_folder, models, prefix)}")
    if not failed:
        print(f"base nets for `table-run --baselines ... --base-models {models}`" if args.base_nets else
              f"models for `make reproduce-tables MODELS={models}` (convert-folds finds them by fold)", file=sys.stderr)
    return 1 if failed else 0


def _foreign_options(args) -> list[str]:
    """Options of the other kind of training than the one asked for."""
    if args.base_nets:
        return ["--solver: not an option of --base-nets (FCN's solver is the base nets' recipe)"] \
            if args.solver is not None else []
    return ["--vgg16 is read with --base-nets only (OSLSM's start model comes from `make-init --vgg16`)"] \
        if args.vgg16 is not None else []


def _train_arguments(args, fold: int) -> list[str]:
    """The fold's `train` (or `train-base`) arguments; fold F's seed is --seed + F."""
    argv = ["--voc", args.voc, "--sbd", args.sbd]
    for flag, value in (("--init", args.init), ("--vgg16", args.vgg16), ("--iters", args.iters),
                        ("--solver", args.solver), ("--seed", None if args.seed is None else args.seed + fold)):
        if value is not None:
            argv += [flag, str(value)]
    return argv + (["--allow-val-images"] if args.allow_val_images else [])

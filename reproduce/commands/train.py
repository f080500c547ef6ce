"""`train`: re-train an OSLSM fold model as the authors did: their train net and solver, the
original's training episodes (SBD + VOC train), Caffe's SGD; resumable; loss curve."""
from __future__ import annotations

from pathlib import Path

from reproduce.cli_arguments import add_training_data_arguments, open_checked_training_sets
from reproduce.training.recipe import RELEASED_ITERATION, SOLVER_PROTOTXT, default_iterations

NAME = "train"
HELP = "re-train one fold's OSLSM model as the authors did (upstream train net and solver, Caffe's SGD)"


def add_arguments(parser) -> None:
    add_training_data_arguments(parser)
    parser.add_argument("--init", help="start model (from `make-init`); not needed to resume")
    parser.add_argument("--solver", default=str(SOLVER_PROTOTXT),
                        help="solver prototxt (default: the authors' solver_ss_os_fc.prototxt and train net)")
    parser.add_argument("--iters", type=int,
                        help=f"train until this iteration (default with the authors' solver {RELEASED_ITERATION:,}: "
                             "their released snapshots, ss_os_fc_iter_60000, not its max_iter of 1,000,000; with "
                             "another --solver, its max_iter)")
    parser.add_argument("--snapshot-every", type=int, help="snapshot interval (default: the solver's, 5000)")
    parser.add_argument("--allow-val-images", action="store_true",
                        help="train even if training images are VOC 2012 val (test) images")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--out", required=True, help="run folder (the same command again resumes it)")


def run(args) -> int:
    from reproduce.training.episodes import check_no_test_images
    from reproduce.workflows.fold_training import train_fold  # here: `--help` starts without loading torch
    from weights_convert.runtime.allocator import keep_freed_blocks
    from weights_convert.train.distributed import lead_process

    keep_freed_blocks()  # a training process needs its peak on every pass: reuse it, do not refault it
    sets = open_checked_training_sets(args)
    if not args.allow_val_images:
        check_no_test_images(sets, args.voc)
    out = Path(args.out)
    last = train_fold(sets, args.fold, solver=args.solver, out=out, init=args.init, shots=args.shots,
                      seed=args.seed, iterations=default_iterations(args.iters, args.solver),
                      snapshot_every=args.snapshot_every,
                      device=args.device, progress=not args.no_progress, cache_dir=args.cache_dir,
                      use_cache=not args.no_cache)
    if lead_process():
        print(f"last snapshot {last}; loss curve {out / 'loss_curve.png'}")
    return 0

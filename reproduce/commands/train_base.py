"""`train-base`: the paper's base network for its baselines, FCN-32s trained for 16-way
segmentation of one fold (reproduce/training/base_net.py says what it sees and how)."""
from __future__ import annotations

from pathlib import Path

from reproduce.cli_arguments import add_training_data_arguments

NAME = "train-base"
HELP = ("train one fold's base net for the baselines: FCN-32s, 16-way (the fold's 15 training classes and "
        "background), FCN's recipe; resumable")


def add_arguments(parser) -> None:
    add_training_data_arguments(parser, shots=False)
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--vgg16", help="ImageNet VGG_ILSVRC_16_layers.caffemodel: the start model by FCN's surgery")
    start.add_argument("--init", help="an FCN-32s start model with 16 outputs (any widths)")
    parser.add_argument("--iters", type=int, help="train until this iteration (default: FCN's 100,000)")
    parser.add_argument("--base-lr", type=float, default=1e-10, help="FCN's fixed rate for its unnormalised loss "
                        "(default 1e-10)")
    parser.add_argument("--allow-val-images", action="store_true",
                        help="train even if training images are VOC 2012 val (test) images")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--out", required=True, help="folder: recipe/ (net, solver, start model), run/ (the "
                        "training, resumed by the same command)")
    parser.add_argument("--publish", help="also copy the newest snapshot to this folder as "
                        "fcn32s_base_fold{F}_iter_{N}.caffemodel (what `table-run --base-models` reads)")


def run(args) -> int:
    from reproduce.cli_arguments import open_checked_training_sets
    from reproduce.training.base_net import BASE_SEED
    from reproduce.training.episodes import check_no_test_images
    from reproduce.workflows.base_training import train_base_fold

    sets = open_checked_training_sets(args)
    if not args.allow_val_images:
        check_no_test_images(sets, args.voc)
    last = train_base_fold(sets, args.fold, out=Path(args.out), vgg16=args.vgg16, init=args.init,
                           iterations=args.iters, base_lr=args.base_lr,
                           seed=BASE_SEED if args.seed is None else args.seed, device=args.device,
                           progress=not args.no_progress, cache_dir=args.cache_dir, use_cache=not args.no_cache)
    print(f"last snapshot {last}; loss curve {Path(args.out) / 'loss_curve.png'}")
    if args.publish:
        from reproduce.workflows.all_folds import publish_model

        print(f"published {publish_model(args.fold, Path(args.out) / 'run', Path(args.publish), 'fcn32s_base')}")
    return 0

"""`evaluate`: one fold's test episodes through a converted OSLSM model, scored as test.py."""
from __future__ import annotations

from reproduce.data.pascal5i import FOLDS
from reproduce.evaluation.protocols import add_protocol_arguments

# --device is checked with the other arguments, all problems reported at once (eval_config).
DEVICE_IN_PROBLEMS = True

NAME = "evaluate"
HELP = "evaluate a converted OSLSM model on one PASCAL-5i fold (resumable; writes RUN_DIR)"


def add_arguments(parser) -> None:
    parser.add_argument("--voc", required=True, help="VOC2012 folder (JPEGImages, SegmentationClass, ImageSets)")
    parser.add_argument("--weights", required=True, help="converted model (fold{F}.safetensors) or a .caffemodel")
    parser.add_argument("--prototxt", help="deploy prototxt (checked against --shots; needed for a .caffemodel)")
    parser.add_argument("--fold", type=int, required=True, choices=FOLDS)
    parser.add_argument("--shots", type=int, required=True, help="k (1 or 5 in the paper)")
    parser.add_argument("--episodes", type=int, default=None,
                        help="test episodes (default: 1000, as the paper; with --episodes-file, all of the file's)")
    parser.add_argument("--episodes-file", help="episode list JSON to use instead of generating it (the format "
                        "`episodes` writes; hand-made lists: see README, 'Episode files')")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--out", required=True, help="RUN_DIR (resumed when it holds the same run)")
    add_protocol_arguments(parser)
    parser.add_argument("--cache-dir", help="on-disk cache of features and the mask scan (default: none; "
                        "nothing is cached outside the run folder)")
    parser.add_argument("--no-cache", action="store_true", help="recompute every image for every episode")
    parser.add_argument("--save-masks", action="store_true", help="write pred/soft and pred/hard PNGs")
    parser.add_argument("--workers", type=int, default=2, help="pre-processing threads (default 2)")
    parser.add_argument("--allow-nonfinite", action="store_true",
                        help="evaluate weights that hold NaN or infinity (refused by default)")
    parser.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    from reproduce.data.episodes import load_episodes
    from reproduce.errors import raise_problems
    from reproduce.evaluation.evaluate import evaluate, summary_lines
    from reproduce.evaluation.protocols import protocol_from_args

    protocol, problems = protocol_from_args(args)
    raise_problems(problems)

    n_episodes = args.episodes
    if n_episodes is None:
        n_episodes = len(load_episodes(args.episodes_file).episodes) if args.episodes_file else 1000
    s = evaluate(args.voc, args.weights, args.fold, args.shots, n_episodes=n_episodes, device=args.device,
                 out_dir=args.out, episodes_file=args.episodes_file, protocol=protocol,
                 cache=not args.no_cache, cache_dir=args.cache_dir, save_masks=args.save_masks,
                 progress=not args.no_progress, prototxt=args.prototxt, workers=args.workers,
                 allow_nonfinite=args.allow_nonfinite)
    print("\n".join(summary_lines(s)))
    print(f"-> {args.out}")
    return 0

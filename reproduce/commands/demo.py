"""`demo`: the whole pipeline on synthetic data with thin models, training included
(reproduce/workflows/demo.py)."""
from __future__ import annotations

from pathlib import Path

from reproduce.workflows.demo import MIN_IMAGES, MIN_TRAIN_IMAGES, DemoRecipe

# --device is checked with the other arguments, all problems reported at once (eval_config).
DEVICE_IN_PROBLEMS = True

NAME = "demo"
HELP = "synthetic data, thin OSLSM models trained on CPU, convert, evaluate before and after training, both tables (minutes)"
DEFAULT = DemoRecipe()


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="results/demo", help="output folder (default results/demo)")
    parser.add_argument("--episodes", type=int, default=DEFAULT.episodes,
                        help=f"episodes per fold and shot count (default {DEFAULT.episodes})")
    parser.add_argument("--images", type=int, default=DEFAULT.images,
                        help=f"synthetic test images, val.txt (default {DEFAULT.images}, at least {MIN_IMAGES}: a "
                             "query and 5 supports per class)")
    parser.add_argument("--train-images", type=int, default=DEFAULT.train_images,
                        help=f"synthetic training images, train.txt (default {DEFAULT.train_images}, at least "
                             f"{MIN_TRAIN_IMAGES})")
    parser.add_argument("--train-iters", type=int, default=DEFAULT.train_iters,
                        help=f"SGD iterations per fold, two episodes each (default {DEFAULT.train_iters})")
    parser.add_argument("--seed", type=int, default=DEFAULT.seed)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    from reproduce.errors import raise_problems
    from reproduce.evaluation.eval_config import argument_problems
    from reproduce.workflows.demo import folder_problems, recipe_problems, run_demo

    out = Path(args.out)
    recipe = DemoRecipe(images=args.images, train_images=args.train_images, train_iters=args.train_iters,
                        episodes=args.episodes, seed=args.seed)
    # Every problem with the arguments and the output folder, together, before anything is written.
    raise_problems(argument_problems(n_episodes=args.episodes, workers=args.workers, device=args.device,
                                     folders={"--out": out}) + recipe_problems(recipe) + folder_problems(out))
    run_demo(out, recipe, device=args.device, workers=args.workers, progress=not args.no_progress)
    return 0

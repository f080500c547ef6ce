"""`figure`: episode panels of a finished run, like the paper's qualitative figure."""
from __future__ import annotations

from weights_convert.files.own_outputs import is_png

is_own_output = is_png

NAME = "figure"
HELP = "panels of chosen episodes of a finished run: supports, query with ground truth, prediction"


def add_arguments(parser) -> None:
    parser.add_argument("--run", required=True, metavar="RUN_DIR", help="a finished evaluate run folder")
    parser.add_argument("--episodes", help="episode numbers, e.g. 0,17,42")
    parser.add_argument("--pick", help="best, median and/or worst by per-episode IoU, e.g. best,worst")
    parser.add_argument("--score", action="store_true", help="add the sigmoid score map to each row")
    parser.add_argument("--voc", help="VOC2012 folder (default: the one the run used)")
    parser.add_argument("--weights", help="the run's model, to recompute predictions it did not save "
                                          "(default: the one the run used; must have the same sha256)")
    parser.add_argument("--prototxt", help="deploy prototxt for a .caffemodel (default: the run's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True, help="PNG to write")


def run(args) -> int:
    from reproduce.presentation.figure import write_figure
    from reproduce.presentation.finished_run import episode_indices, open_run

    run_ = open_run(args.run)
    indices = episode_indices(run_, args.episodes, args.pick)
    path = write_figure(run_, indices, args.out, voc=args.voc, weights=args.weights, prototxt=args.prototxt,
                        device=args.device, show_score=args.score)
    print(f"wrote {path} (episodes {', '.join(map(str, indices))})")
    return 0

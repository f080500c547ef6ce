"""Command-line arguments that several commands share (data set, fold, shots, caches), and the
checks they make before any work."""
from __future__ import annotations

from pathlib import Path

from reproduce.errors import collect, raise_problems
from reproduce.data.voc import VOCDataset, refuse_inside_dataset
from reproduce.data.pascal5i import FOLDS
from reproduce.numeric_options import numeric_problems


def comma_list(text: str, flag: str, problems: list[str]) -> list[str]:
    """A comma-separated option's items; an empty one, or an empty item, is a problem."""
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or not all(items):
        problems.append(f"{flag} {text!r}: expected one or more comma-separated values")
        return []
    return items


def add_folds_argument(parser, help_tail: str = "") -> None:
    parser.add_argument("--folds", nargs="+", default=[",".join(map(str, FOLDS))], metavar="F",
                        help="folds, space- or comma-separated (default: all four)" + help_tail)


def selected_folds(values: list[str], problems: list[str]) -> list[int]:
    """--folds as sorted distinct fold numbers; what is not a PASCAL-5i fold is a problem."""
    folds = set()
    for item in (item for value in values for item in comma_list(value, "--folds", problems)):
        if item.isdigit() and int(item) in FOLDS:
            folds.add(int(item))
        else:
            problems.append(f"--folds: {item} is not a PASCAL-5i fold ({', '.join(map(str, FOLDS))})")
    return sorted(folds)


def add_data_arguments(parser, voc_required: bool = True) -> None:
    parser.add_argument("--voc", required=voc_required,
                        help="VOC2012 folder (ImageSets, JPEGImages, SegmentationClass)")
    parser.add_argument("--fold", type=int, required=True, choices=FOLDS, help="PASCAL-5i fold")
    parser.add_argument("--shots", type=int, required=True, help="support images per episode (1 or 5)")
    parser.add_argument("--cache-dir", default=None,
                        help="where to cache the mask scan (default $OSLSM_CACHE or ~/.cache/oslsm-repro)")
    parser.add_argument("--no-cache", action="store_true", help="rescan the masks, write no cache")


def add_training_data_arguments(parser, shots: bool = True) -> None:
    parser.add_argument("--voc", required=True, help="VOC2012 folder; its ImageSets/Segmentation/train.txt is read")
    parser.add_argument("--sbd", required=True, help="SBD in the VOC layout (from `sbd-to-voc`); train.txt is read")
    parser.add_argument("--fold", type=int, required=True, choices=FOLDS, help="PASCAL-5i fold")
    if shots:
        parser.add_argument("--shots", type=int, default=1, help="support images per episode (the upstream net: 1)")
        parser.add_argument("--seed", type=int, help="seed of the episode stream (default: from the system, as the "
                            "original; always recorded)")
    else:
        parser.add_argument("--seed", type=int, help="seed of the image stream (default: FCN's 1337)")
    parser.add_argument("--cache-dir", default=None, help="where to cache the mask scans")
    parser.add_argument("--no-cache", action="store_true", help="rescan the masks, write no cache")


def open_data(args) -> VOCDataset:
    """The checks `episodes` and `inputs` share before any work, all reported together: the data
    set, the episode count, an output outside the data set and not a folder."""
    problems = numeric_problems(args, ("episodes",))
    dataset = collect(problems, VOCDataset, args.voc)
    if dataset is not None:
        collect(problems, refuse_inside_dataset, args.out, dataset.root)
    if Path(args.out).is_dir():
        problems.append(f"--out {args.out} is a folder; expected a file name")
    raise_problems(problems)
    return dataset


def open_checked_training_sets(args) -> dict:
    """The SBD and VOC training sets once the checks `train` and `train-episodes` share have all
    passed, reported together: the data sets, an output outside both, the counts given."""
    from reproduce.training.episodes import open_training_sets

    problems = numeric_problems(args, ("episodes", "iters", "snapshot_every", "base_lr"))
    sets = collect(problems, open_training_sets, args.sbd, args.voc)
    for dataset in (sets or {}).values():
        collect(problems, refuse_inside_dataset, args.out, dataset.root)
    raise_problems(problems)
    return sets

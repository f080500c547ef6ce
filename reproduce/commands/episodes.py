"""`episodes`: the original data layer's episode list of one fold, as a checked JSON file."""
from __future__ import annotations

from reproduce.episodes import episodes_to_json, resolve_episodes
from reproduce.errors import ReproduceError
from reproduce.voc import N_FOLDS, VOCDataset, refuse_inside_dataset

NAME = "episodes"
HELP = "write the episode list (query, class, supports) the original OSLSM code tests on"


def add_data_arguments(parser) -> None:
    parser.add_argument("--voc", required=True, help="VOC2012 folder (ImageSets, JPEGImages, SegmentationClass)")
    parser.add_argument("--fold", type=int, required=True, choices=range(N_FOLDS), help="PASCAL-5i fold 0..3")
    parser.add_argument("--shots", type=int, required=True, help="support images per episode (1 or 5)")
    parser.add_argument("--cache-dir", default=None,
                        help="where to cache the mask scan (default $OSLSM_CACHE or ~/.cache/oslsm-repro)")
    parser.add_argument("--no-cache", action="store_true", help="rescan the masks, write no cache")


def add_arguments(parser) -> None:
    add_data_arguments(parser)
    parser.add_argument("--episodes", type=int, default=1000, help="number of episodes (default 1000)")
    parser.add_argument("--out", required=True, help="output JSON file")


def open_data(args) -> VOCDataset:
    """The checks `episodes` and `inputs` share before any work: the data set, the episode
    count, an output outside the data set."""
    dataset = VOCDataset(args.voc)
    if args.episodes < 1:
        raise ReproduceError(f"--episodes must be >= 1, got {args.episodes}")
    refuse_inside_dataset(args.out, dataset.root)
    return dataset


def run(args) -> int:
    dataset = open_data(args)
    episodes, n_items = resolve_episodes(dataset, args.fold, args.shots, args.episodes,
                                         items_cache_dir=args.cache_dir, use_cache=not args.no_cache)
    digest = episodes_to_json(args.out, episodes, args.fold, args.shots, n_items)
    print(f"n_items {n_items}")
    print(f"sha256 {digest}")
    print(f"wrote {args.out}")
    return 0

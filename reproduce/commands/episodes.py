"""`episodes`: the episode list of one fold, as a checked JSON file: the original data layer's
(from a VOC copy), or HSNet's (from its split files alone)."""
from __future__ import annotations

from weights_convert.own_outputs import json_with_keys
from reproduce.cli_arguments import add_data_arguments, add_hsnet_arguments, open_data
from reproduce.data.episodes import episodes_to_json, resolve_episodes


def is_own_output(path) -> bool:
    return json_with_keys(path, ("fold", "shots", "n_items", "episodes", "sha256"))


NAME = "episodes"
HELP = ("write the episode list (query, class, supports) the original OSLSM code tests on, or with "
        "--protocol hsnet the one HSNet's code tests on (no data set needed: its split files decide)")


def add_arguments(parser) -> None:
    add_data_arguments(parser, voc_required=False)
    parser.add_argument("--protocol", choices=("original", "hsnet"), default="original",
                        help="original: OSLSM's data layer on --voc (default); hsnet: HSNet's test episodes")
    add_hsnet_arguments(parser, masks=False, size=False)
    parser.add_argument("--episodes", type=int, default=1000, help="number of episodes (default 1000)")
    parser.add_argument("--out", required=True, help="output JSON file")


def run(args) -> int:
    if args.protocol == "hsnet":
        from reproduce.data.hsnet import SPLITS, hsnet_episodes, hsnet_items
        from reproduce.errors import raise_problems
        from reproduce.numeric_options import numeric_problems

        raise_problems(numeric_problems(args, ("episodes",)))
        splits = args.hsnet_splits or SPLITS
        episodes = hsnet_episodes(args.fold, args.shots, args.episodes, splits)
        n_items = len(hsnet_items(args.fold, splits))
    else:
        if args.hsnet_splits is not None:
            from reproduce.errors import ReproduceError

            raise ReproduceError("--hsnet-splits is an option of --protocol hsnet only")
        if args.voc is None:
            from reproduce.errors import raise_problems
            from reproduce.numeric_options import numeric_problems

            raise_problems(numeric_problems(args, ("episodes",))
                           + ["--voc is needed for the original protocol's episodes (the data layer scans it)"])
        dataset = open_data(args)
        episodes, n_items = resolve_episodes(dataset, args.fold, args.shots, args.episodes,
                                             items_cache_dir=args.cache_dir, use_cache=not args.no_cache)
    digest = episodes_to_json(args.out, episodes, args.fold, args.shots, n_items)
    print(f"n_items {n_items}")
    print(f"sha256 {digest}")
    print(f"wrote {args.out}")
    return 0

"""`episodes`: the original data layer's episode list of one fold, as a checked JSON file."""
from __future__ import annotations

from weights_convert.own_outputs import json_with_keys
from reproduce.cli_arguments import add_data_arguments, open_data
from reproduce.data.episodes import episodes_to_json, resolve_episodes

def is_own_output(path) -> bool:
    return json_with_keys(path, ("fold", "shots", "n_items", "episodes", "sha256"))


NAME = "episodes"
HELP = "write the episode list (query, class, supports) the original OSLSM code tests on"


def add_arguments(parser) -> None:
    add_data_arguments(parser)
    parser.add_argument("--episodes", type=int, default=1000, help="number of episodes (default 1000)")
    parser.add_argument("--out", required=True, help="output JSON file")


def run(args) -> int:
    dataset = open_data(args)
    episodes, n_items = resolve_episodes(dataset, args.fold, args.shots, args.episodes,
                                         items_cache_dir=args.cache_dir, use_cache=not args.no_cache)
    digest = episodes_to_json(args.out, episodes, args.fold, args.shots, n_items)
    print(f"n_items {n_items}")
    print(f"sha256 {digest}")
    print(f"wrote {args.out}")
    return 0

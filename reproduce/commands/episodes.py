"""`episodes`: the episode list of one fold, as a checked JSON file: the original data layer's
(from a VOC copy), or HSNet's (from its split files alone)."""
from __future__ import annotations

from weights_convert.files.own_outputs import json_with_keys
from reproduce.cli_arguments import add_data_arguments, open_data
from reproduce.data.episodes import episodes_to_json
from reproduce.evaluation.protocols import EPISODES, add_protocol_arguments


def is_own_output(path) -> bool:
    return json_with_keys(path, ("fold", "shots", "n_items", "episodes", "sha256"))


NAME = "episodes"
HELP = ("write the episode list (query, class, supports) the original OSLSM code tests on, or with "
        "--protocol hsnet the one HSNet's code tests on (no data set needed: its split files decide)")


def add_arguments(parser) -> None:
    add_data_arguments(parser, voc_required=False)
    add_protocol_arguments(parser, EPISODES, extra_help="; original and modern: OSLSM's data layer on --voc")
    parser.add_argument("--episodes", type=int, default=1000, help="number of episodes (default 1000)")
    parser.add_argument("--out", required=True, help="output JSON file")


def run(args) -> int:
    from reproduce.errors import raise_problems
    from reproduce.evaluation.protocols import protocol_from_args
    from reproduce.numeric_options import numeric_problems

    protocol, problems = protocol_from_args(args, EPISODES, folds=[args.fold])
    reads_data = protocol is not None and protocol.needs_data_for_episodes
    if not reads_data or args.voc is None:  # else open_data checks the count with the data set
        problems += numeric_problems(args, ("episodes",))
    if reads_data and args.voc is None:
        problems.append(f"--voc is needed for protocol {protocol.name}'s episodes (the data layer scans it)")
    raise_problems(problems)
    dataset = open_data(args) if reads_data else None
    episodes, n_items = protocol.episodes(dataset, args.fold, args.shots, args.episodes, scan_dir=args.cache_dir,
                                          use_cache=not args.no_cache)
    digest = episodes_to_json(args.out, episodes, args.fold, args.shots, n_items)
    print(f"n_items {n_items}")
    print(f"sha256 {digest}")
    print(f"wrote {args.out}")
    return 0

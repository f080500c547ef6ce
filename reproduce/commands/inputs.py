"""`inputs`: the float32 network inputs of the first N episodes, as the original built them."""
from __future__ import annotations

import numpy as np

from reproduce.cli_arguments import add_data_arguments, open_data
from reproduce.data.episodes import resolve_episodes
from reproduce.data.preprocess import episode_inputs
from weights_convert.files.atomic import atomic_write
from weights_convert.files.own_outputs import is_npz

is_own_output = is_npz

NAME = "inputs"
HELP = "write the network inputs (first_img, first_label, second_img, second_label) of N episodes"


def add_arguments(parser) -> None:
    add_data_arguments(parser)
    parser.add_argument("--episodes", type=int, required=True, help="how many episodes, from the first")
    parser.add_argument("--episodes-file", "--episode-file", dest="episode_file", default=None,
                        help="take the episodes from this JSON file (from `episodes`) instead of sampling")
    parser.add_argument("--out", required=True, help="output .npz: keys '{e}/first_img' ...")


def run(args) -> int:
    dataset = open_data(args)
    episodes, _ = resolve_episodes(dataset, args.fold, args.shots, args.episodes, args.episode_file,
                                   items_cache_dir=args.cache_dir, use_cache=not args.no_cache)
    arrays = {}
    for e, episode in enumerate(episodes):
        for key, value in episode_inputs(dataset, episode).items():
            arrays[f"{e}/{key}"] = value
    with atomic_write(args.out, "wb") as fh:
        np.savez(fh, **arrays)
    print(f"wrote {len(episodes)} episodes to {args.out}")
    return 0

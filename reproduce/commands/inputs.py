"""`inputs`: the float32 network inputs of the first N episodes, as the original built them."""
from __future__ import annotations

import numpy as np

from reproduce.commands.episodes import add_data_arguments
from reproduce.episodes import load_episodes, make_episodes
from reproduce.errors import ReproduceError
from reproduce.items import build_items
from reproduce.preprocess import episode_inputs
from reproduce.voc import VOCDataset, refuse_inside_dataset
from weights_convert.atomic import atomic_write

NAME = "inputs"
HELP = "write the network inputs (first_img, first_label, second_img, second_label) of N episodes"


def add_arguments(parser) -> None:
    add_data_arguments(parser)
    parser.add_argument("--episodes", type=int, required=True, help="how many episodes, from the first")
    parser.add_argument("--episodes-file", "--episode-file", dest="episode_file", default=None,
                        help="take the episodes from this JSON file (from `episodes`) instead of sampling")
    parser.add_argument("--out", required=True, help="output .npz: keys '{e}/first_img' ...")


def run(args) -> int:
    dataset = VOCDataset(args.voc)
    if args.episodes < 1:
        raise ReproduceError(f"--episodes must be >= 1, got {args.episodes}")
    refuse_inside_dataset(args.out, dataset.root)
    if args.episode_file:
        loaded = load_episodes(args.episode_file)
        if (loaded.fold, loaded.shots) != (args.fold, args.shots):
            raise ReproduceError(f"{args.episode_file}: fold {loaded.fold} {loaded.shots}-shot, but "
                                 f"--fold {args.fold} --shots {args.shots} was asked for")
        if len(loaded.episodes) < args.episodes:
            raise ReproduceError(f"{args.episode_file}: holds {len(loaded.episodes)} episodes, "
                                 f"{args.episodes} asked for")
        episodes = loaded.episodes[:args.episodes]
    else:
        items = build_items(dataset, args.fold, cache_dir=args.cache_dir, use_cache=not args.no_cache)
        episodes = make_episodes(items, args.fold, args.shots, n_episodes=args.episodes)
    arrays = {}
    for e, episode in enumerate(episodes):
        for key, value in episode_inputs(dataset, episode).items():
            arrays[f"{e}/{key}"] = value
    with atomic_write(args.out, "wb") as fh:
        np.savez(fh, **arrays)
    print(f"wrote {len(episodes)} episodes to {args.out}")
    return 0

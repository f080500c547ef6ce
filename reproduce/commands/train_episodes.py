"""`train-episodes`: the original data layer's training episodes of one fold (SBD + VOC train)."""
from __future__ import annotations

import json

from reproduce.cli_arguments import add_training_data_arguments, open_checked_training_sets
from reproduce.data.episodes import episodes_sha256
from reproduce.training.episodes import TrainingEpisodes, build_training_items, system_seed
from weights_convert.files.atomic import atomic_write_text
from weights_convert.files.own_outputs import json_with_keys

def is_own_output(path) -> bool:
    return json_with_keys(path, ("fold", "shots", "n_items", "seed", "sets", "episodes", "sha256"))


NAME = "train-episodes"
HELP = "write the training episodes (query, class, supports, sets) the original data layer draws"


def add_arguments(parser) -> None:
    add_training_data_arguments(parser)
    parser.add_argument("--episodes", type=int, required=True, help="number of episodes, from the first")
    parser.add_argument("--out", required=True, help="output JSON file")


def run(args) -> int:
    sets = open_checked_training_sets(args)
    seed = system_seed() if args.seed is None else args.seed
    items = build_training_items(sets, args.fold, args.cache_dir, not args.no_cache)
    stream = TrainingEpisodes(items, args.shots, seed)
    episodes = [stream.next() for _ in range(args.episodes)]
    digest = episodes_sha256(episodes)
    doc = {"fold": args.fold, "shots": args.shots, "n_items": items.n_items, "seed": seed,
           "sets": {name: str(d.root) for name, d in sets.items()},
           "episodes": [e.as_dict() for e in episodes], "sha256": digest}
    atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")
    print(f"seed {seed}\nn_items {items.n_items}\nsha256 {digest}\nwrote {args.out}")
    return 0

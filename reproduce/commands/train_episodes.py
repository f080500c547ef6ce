"""`train-episodes`: the original data layer's training episodes of one fold (SBD + VOC train)."""
from __future__ import annotations

import json

from reproduce.episodes import episodes_sha256
from reproduce.errors import ReproduceError
from reproduce.training import TrainingEpisodes, build_training_items, open_training_sets, system_seed
from reproduce.voc import N_FOLDS, refuse_inside_dataset
from weights_convert.atomic import atomic_write_text

NAME = "train-episodes"
HELP = "write the training episodes (query, class, supports, sets) the original data layer draws"


def add_training_data_arguments(parser) -> None:
    parser.add_argument("--voc", required=True, help="VOC2012 folder; its ImageSets/Segmentation/train.txt is read")
    parser.add_argument("--sbd", required=True, help="SBD in the VOC layout (from `sbd-to-voc`); train.txt is read")
    parser.add_argument("--fold", type=int, required=True, choices=range(N_FOLDS), help="PASCAL-5i fold 0..3")
    parser.add_argument("--shots", type=int, default=1, help="support images per episode (the upstream net: 1)")
    parser.add_argument("--seed", type=int, help="seed of the episode stream (default: from the system, as the "
                        "original; always recorded)")
    parser.add_argument("--cache-dir", default=None, help="where to cache the mask scans")
    parser.add_argument("--no-cache", action="store_true", help="rescan the masks, write no cache")


def add_arguments(parser) -> None:
    add_training_data_arguments(parser)
    parser.add_argument("--episodes", type=int, required=True, help="number of episodes, from the first")
    parser.add_argument("--out", required=True, help="output JSON file")


def run(args) -> int:
    if args.episodes < 1:
        raise ReproduceError(f"--episodes must be >= 1, got {args.episodes}")
    sets = open_training_sets(args.sbd, args.voc)
    for dataset in sets.values():
        refuse_inside_dataset(args.out, dataset.root)
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

"""`table-run`: the paper's Table 1 or 2 end to end: convert the four fold models when needed,
evaluate the four folds, write the table beside the published numbers."""
from __future__ import annotations

from pathlib import Path

from reproduce.cli_arguments import add_folds_argument
from reproduce.evaluation.protocols import add_protocol_arguments

TABLE_LOCK = ".table-run.lock"
# --device is checked with the other arguments, all problems reported at once (eval_config).
DEVICE_IN_PROBLEMS = True

NAME = "table-run"
HELP = "convert the fold models, evaluate the 4 folds (k=1 for table 1, k=5 for table 2), write the table"


def add_arguments(parser) -> None:
    parser.add_argument("--table", type=int, nargs="+", required=True, choices=(1, 2),
                        help="1: 1-shot, 2: 5-shot; `--table 1 2` runs both in one pass over each fold's episodes")
    parser.add_argument("--voc", default="data/VOC2012", help="VOC2012 folder (default data/VOC2012)")
    parser.add_argument("--models", default="data/models", help="folder with the four fold .caffemodels")
    parser.add_argument("--prototxt", default=None,
                        help="deploy prototxt the caffemodels are checked against when converted "
                             "(default: the project's prototxt/deploy_1shot.prototxt)")
    parser.add_argument("--episodes", type=int, default=1000, help="episodes per fold (default 1000)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="results", help="results folder (models/, runs/, tables; cache/items: "
                        "the mask scan)")
    parser.add_argument("--cache-dir", default=None,
                        help="keep computed features on disk here for later runs (default: none, memory only)")
    parser.add_argument("--cache-max-gb", type=float, default=10.0,
                        help="the on-disk feature cache stops growing at this size (default 10)")
    add_protocol_arguments(parser, extra_help="; a protocol's tables and runs carry its suffix "
                           "(e.g. table1_1shot_hsnet.* and OUT/runs_hsnet)")
    add_folds_argument(parser, " (a subset: the table then has no mean)")
    parser.add_argument("--baselines", help="comma-separated re-run baselines of the paper, each a row on the same "
                        "episodes: 1nn, logreg, finetune (needs --base-models)")
    parser.add_argument("--base-models", help="folder of the base nets, one FCN-32s .caffemodel per fold "
                        "('fold{F}' in the name; `train-base`)")
    parser.add_argument("--patch-labels", choices=("majority", "bilinear"), default="majority",
                        help="1nn and logreg: a support patch is positive when most of its pixels are (default), "
                             "or when the mask bilinearly sampled at its centre is > 0.5")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    # Imported here: `--help` and the light commands start without loading torch.
    from reproduce.cli_arguments import selected_folds
    from reproduce.errors import ReproduceError, collect, raise_problems
    from reproduce.data.voc import VOCDataset, refuse_inside_dataset
    from reproduce.evaluation.eval_config import argument_problems
    from reproduce.evaluation.protocols import protocol_from_args
    from reproduce.numeric_options import numeric_problems
    from weights_convert.files.folder_lock import folder_lock
    from reproduce.workflows.table_pipeline import (check_models, ensure_converted, evaluate_baselines,
                                                    evaluate_folds, require_voc, write_table_and_report)

    out = Path(args.out)
    prototxt = Path(args.prototxt) if args.prototxt else None
    # Every refusal before the first write (a conversion is a write).
    problems = argument_problems(n_episodes=args.episodes, workers=args.workers, device=args.device,
                                 folders={"--out": out, "--cache-dir": args.cache_dir})
    problems += numeric_problems(args, ("cache_max_gb",))
    folds = selected_folds(args.folds, problems)
    voc = collect(problems, require_voc, args.voc)
    collect(problems, check_models, args.models, out / "models", folds, prototxt)
    if voc is not None:
        collect(problems, refuse_inside_dataset, out, voc, "--out")
    methods, base_models = collect(problems, _baselines, args, folds) or ([], {})
    protocol, protocol_problems = protocol_from_args(args, folds=folds)
    problems += protocol_problems
    if protocol is not None and voc is not None and protocol.mask_dir(voc) is not None:
        collect(problems, lambda: VOCDataset(voc, masks=protocol.mask_dir(voc)))  # before the first conversion
    raise_problems(problems, heading="cannot run the table")
    out.mkdir(parents=True, exist_ok=True)
    # One table-run at a time per results folder: two would each rewrite the tables and reports of
    # the other's folds (the last writer winning); the second is refused, naming the first.
    with folder_lock(out, TABLE_LOCK, "table-run", ReproduceError, owns=lambda _: True, clean=False):
        converted = ensure_converted(args.models, out / "models", folds, prototxt=prototxt)
        tables = sorted(set(args.table))
        runs = evaluate_folds(tables, voc, converted, out, episodes=args.episodes, device=args.device,
                              protocol=protocol, cache_dir=Path(args.cache_dir) if args.cache_dir else None,
                              cache_max_bytes=int(args.cache_max_gb * (1 << 30)), workers=args.workers,
                              progress=not args.no_progress)
        compared = evaluate_baselines(tables, voc, base_models, out, methods, episodes=args.episodes,
                                      device=args.device, protocol=protocol, progress=not args.no_progress)
        for table in tables:
            paths = write_table_and_report(table, runs[table], out, voc, device=args.device, methods=compared[table])
            print(paths["md"].read_text())
            print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _baselines(args, folds):
    """The methods --baselines names and the base net of each fold (none without --baselines)."""
    from reproduce.cli_arguments import comma_list
    from reproduce.errors import ReproduceError, raise_problems
    from reproduce.evaluation.baselines.methods import methods_named
    from reproduce.workflows.fold_models import find_fold_models
    from reproduce.workflows.table_pipeline import BASE_MODELS_HELP

    if args.baselines is None:
        if args.base_models is not None:
            raise ReproduceError("--base-models is read with --baselines only")
        return [], {}
    problems: list[str] = []
    names = comma_list(args.baselines, "--baselines", problems)
    raise_problems(problems)
    if args.base_models is None:
        raise ReproduceError(f"--baselines needs --base-models: {BASE_MODELS_HELP}")
    return methods_named(names, args.patch_labels), find_fold_models(args.base_models, {}, folds, where_to_get=BASE_MODELS_HELP)

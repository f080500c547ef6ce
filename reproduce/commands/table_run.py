"""`table-run`: the paper's Table 1 or 2 end to end: convert the four fold models when needed,
evaluate the four folds, write the table beside the published numbers."""
from __future__ import annotations

from pathlib import Path

from reproduce.errors import ReproduceError
from reproduce.tables import FOLDS, TABLES

NAME = "table-run"
HELP = "convert the fold models, evaluate the 4 folds (k=1 for table 1, k=5 for table 2), write the table"
VOC_HELP = ("PASCAL VOC 2012 trainval (VOCtrainval_11-May-2012.tar from host.robots.ox.ac.uk/pascal/VOC/voc2012/); "
            "unpack it so that data/VOC2012 holds JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/val.txt, "
            "or pass VOC=/path/to/VOC2012 (--voc)")
MODELS_HELP = ("the authors' four trained models (one .caffemodel per fold, file names containing fold0..fold3), "
               "linked from the upstream OSLSM README (github.com/lzzcd001/OSLSM, 'Download trained models'); "
               "put them in data/models or pass MODELS=/path/to/dir (--models)")


def add_arguments(parser) -> None:
    parser.add_argument("--table", type=int, required=True, choices=(1, 2), help="1: 1-shot, 2: 5-shot")
    parser.add_argument("--voc", default="data/VOC2012", help="VOC2012 folder (default data/VOC2012)")
    parser.add_argument("--models", default="data/models", help="folder with the four fold .caffemodels")
    parser.add_argument("--prototxt", default=None,
                        help="deploy prototxt the caffemodels are checked against when converted "
                             "(default: the project's prototxt/deploy_1shot.prototxt)")
    parser.add_argument("--episodes", type=int, default=1000, help="episodes per fold (default 1000)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="results", help="results folder (models/, runs/, cache/, tables)")
    parser.add_argument("--protocol", choices=("original", "modern"), default="original")
    parser.add_argument("--folds", type=int, nargs="+", default=list(FOLDS), choices=FOLDS,
                        help="a subset of folds (the table then has no mean)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-progress", action="store_true")


def check_voc(voc: str | Path) -> Path:
    root = Path(voc)
    needed = [root / "JPEGImages", root / "SegmentationClass", root / "ImageSets" / "Segmentation" / "val.txt"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise ReproduceError(f"no PASCAL VOC 2012 at {root} (missing {', '.join(missing)}). Download {VOC_HELP}.")
    return root


def ensure_converted(models: str | Path, out_models: Path, folds=FOLDS, prototxt: Path | None = None) -> dict[int, Path]:
    """fold -> converted .safetensors under out_models, converting the caffemodels in `models` when
    needed (convert-folds skips outputs that already match their source's sha256)."""
    from weights_convert.commands import convert_folds

    models = Path(models)
    has_sources = models.is_dir() and any(p.name.lower().endswith(convert_folds.WEIGHT_SUFFIXES)
                                          for p in models.iterdir() if p.is_file())
    if has_sources:
        convert_folds.convert_fold_models(models, {}, prototxt or _deploy_prototxt(out_models), out_models, folds)
    converted = {f: out_models / f"fold{f}.safetensors" for f in folds}
    missing = [f for f, p in converted.items() if not p.is_file()]
    if missing:
        raise ReproduceError(f"no models for fold(s) {', '.join(map(str, missing))}: {models} holds no "
                             f".caffemodel files and {out_models} no converted fold{{F}}.safetensors. "
                             f"Download {MODELS_HELP}.")
    return converted


def _deploy_prototxt(out_models: Path) -> Path:
    """The project's deploy_1shot.prototxt (`make prototxt`), or the same net written by our
    net-spec code next to the converted models."""
    from weights_convert.commands.convert_folds import PROJECT_PROTOTXT

    if PROJECT_PROTOTXT.is_file():
        return PROJECT_PROTOTXT
    from weights_convert.netspec import write_net
    from weights_convert.oslsm.spec import oslsm_deploy_net

    path = out_models / "deploy_1shot.prototxt"
    if not path.is_file():
        write_net(oslsm_deploy_net(1), path)
    return path


def evaluate_folds(table: int, voc, converted: dict[int, Path], out: Path, *, episodes: int, device: str,
                   protocol: str, cache_dir: Path, workers: int = 2, progress: bool = True) -> list[Path]:
    from reproduce.evaluate import evaluate

    shots = TABLES[table][1]
    runs = []
    for fold, weights in sorted(converted.items()):
        run_dir = out / "runs" / f"table{table}_fold{fold}"
        s = evaluate(voc, weights, fold, shots, n_episodes=episodes, device=device, out_dir=run_dir,
                     protocol=protocol, cache=True, cache_dir=cache_dir, progress=progress, workers=workers)
        print(f"fold {fold} {shots}-shot: mIoU {s['miou_x100']:.2f}  FB-IoU {s['fb_iou_x100']:.2f} -> {run_dir}")
        runs.append(run_dir)
    return runs


def write_table_and_report(table: int, runs: list[Path], out: Path, voc, note: str = "", device: str = "cpu") -> dict:
    """The table files beside the published numbers and an HTML report of its runs
    ({stem}_report/index.html); returns the written paths."""
    from reproduce.report import write_report
    from reproduce.tables import table_stem, write_table

    paths = write_table(table, runs, out, note=note)
    stem = table_stem(table)
    paths["report"] = write_report(runs, out / f"{stem}_report", title=f"Table {table}: {stem}", note=note,
                                   voc=voc, device=device)
    return paths


def run(args) -> int:
    out = Path(args.out)
    problems = []
    try:
        voc = check_voc(args.voc)
    except ReproduceError as exc:
        problems.append(str(exc))
    try:
        converted = ensure_converted(args.models, out / "models", args.folds,
                                     prototxt=Path(args.prototxt) if args.prototxt else None)
    except (ReproduceError, FileNotFoundError) as exc:
        problems.append(str(exc))
    if problems:
        raise ReproduceError("cannot run the table:\n  - " + "\n  - ".join(problems))
    runs = evaluate_folds(args.table, voc, converted, out, episodes=args.episodes, device=args.device,
                          protocol=args.protocol, cache_dir=out / "cache", workers=args.workers,
                          progress=not args.no_progress)
    paths = write_table_and_report(args.table, runs, out, voc, device=args.device)
    print(paths["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0

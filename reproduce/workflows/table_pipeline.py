"""A paper table end to end, as `table-run` and `demo` both run it: the fold models converted
when needed, the folds evaluated into RESULTS/runs, the table and its report written."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from reproduce.errors import ReproduceError
from reproduce.evaluation.protocols import Protocol
from reproduce.presentation.tables import TABLES
from reproduce.data.pascal5i import FOLDS

VOC_HELP = ("PASCAL VOC 2012 trainval (VOCtrainval_11-May-2012.tar from host.robots.ox.ac.uk/pascal/VOC/voc2012/); "
            "unpack it so that data/VOC2012 holds JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/val.txt, "
            "or pass VOC=/path/to/VOC2012 (--voc)")
MODELS_HELP = ("the authors' four trained models (one .caffemodel per fold, file names containing fold0..fold3), "
               "linked from the upstream OSLSM README (github.com/lzzcd001/OSLSM, 'Download trained models'); "
               "put them in data/models or pass MODELS=/path/to/dir (--models)")


def require_voc(voc: str | Path) -> Path:
    """The VOC folder, or an error saying where to get it."""
    root = Path(voc)
    needed = [root / "JPEGImages", root / "SegmentationClass", root / "ImageSets" / "Segmentation" / "val.txt"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise ReproduceError(f"no PASCAL VOC 2012 at {root} (missing {', '.join(missing)}). Download {VOC_HELP}.")
    return root


def check_models(models: str | Path, out_models: Path, folds=FOLDS, prototxt: Path | None = None) -> bool:
    """Without writing anything: True when `models` holds one caffemodel per fold to convert, False
    when every fold is already converted in out_models; else an error saying what is missing."""
    from reproduce.training.model_record import check_record_fold
    from reproduce.workflows.fold_models import WEIGHT_SUFFIXES, find_fold_models

    models = Path(models)
    if models.is_dir() and any(p.name.lower().endswith(WEIGHT_SUFFIXES) for p in models.iterdir() if p.is_file()):
        for fold, model in find_fold_models(models, {}, folds).items():  # one file per fold, else what was found
            check_record_fold(model, fold)
        if prototxt is not None and not Path(prototxt).is_file():
            raise FileNotFoundError(f"--prototxt {prototxt}: no such file")
        return True
    missing = [f for f in folds if not (out_models / f"fold{f}.safetensors").is_file()]
    if missing:
        raise ReproduceError(f"no models for fold(s) {', '.join(map(str, missing))}: {models} holds no "
                             f".caffemodel files and {out_models} no converted fold{{F}}.safetensors. "
                             f"Download {MODELS_HELP}.")
    return False


def ensure_converted(models: str | Path, out_models: Path, folds=FOLDS, prototxt: Path | None = None) -> dict[int, Path]:
    """fold -> converted .safetensors under out_models, converting the caffemodels in `models` when
    there are any (convert-folds skips outputs that already match their source's sha256)."""
    from reproduce.workflows.fold_models import convert_fold_models

    if check_models(models, out_models, folds, prototxt):
        convert_fold_models(Path(models), {}, prototxt or _deploy_prototxt(out_models), out_models, folds)
    return {f: out_models / f"fold{f}.safetensors" for f in folds}


def _deploy_prototxt(out_models: Path) -> Path:
    """The project's deploy_1shot.prototxt (`make prototxt`), or the same net written by our
    net-spec code next to the converted models."""
    from reproduce.workflows.fold_models import PROJECT_PROTOTXT

    if PROJECT_PROTOTXT.is_file():
        return PROJECT_PROTOTXT
    from weights_convert.netspec import write_net
    from weights_convert.oslsm.spec import oslsm_deploy_net

    path = out_models / "deploy_1shot.prototxt"
    if not path.is_file():
        write_net(oslsm_deploy_net(1), path)
    return path


def evaluate_folds(tables: Sequence[int], voc, converted: dict[int, Path], out: Path, *, episodes: int,
                   device: str, protocol: Protocol, cache_dir: Path | None = None, cache_max_bytes: int = 10 << 30,
                   workers: int = 2, progress: bool = True, runs_dir: str | None = None) -> dict[int, list[Path]]:
    """table -> its run folders (out/{runs_dir}/table{T}_fold{F}; by default runs plus the
    protocol's suffix). The tables' runs of a fold go in one pass (their episodes share queries),
    so each query's features are computed once for all; the mask scan is cached in out/cache/items
    (small), features on disk only under `cache_dir`."""
    from reproduce.evaluation.eval_config import EvalConfig
    from reproduce.evaluation.evaluate import evaluate_runs, summary_lines

    runs_dir = runs_dir or "runs" + protocol.table_suffix
    runs: dict[int, list[Path]] = {table: [] for table in tables}
    for fold, weights in sorted(converted.items()):
        configs = [EvalConfig(voc, Path(weights), fold, TABLES[table][1], n_episodes=episodes, device=device,
                              out_dir=out / runs_dir / f"table{table}_fold{fold}", protocol=protocol,
                              cache_dir=cache_dir, cache_max_bytes=cache_max_bytes,
                              scan_cache_dir=out / "cache" / "items", workers=workers,
                              progress=progress) for table in tables]
        for table, config, summary in zip(tables, configs, evaluate_runs(configs)):
            print("\n".join(summary_lines(summary)) + f"\n-> {config.out_dir}")
            runs[table].append(config.out_dir)
    return runs


BASE_MODELS_HELP = ("one FCN-32s base net per fold ('fold{F}' in each .caffemodel's name), as `reproduce train-base "
                    "--fold F` trains them (or `train-all --base-nets`, which gathers them in OUT/base_models)")


def evaluate_baselines(tables: Sequence[int], voc, base_models: dict[int, Path], out: Path, methods, *,
                       episodes: int, device: str, protocol: Protocol, progress: bool = True
                       ) -> dict[int, list[tuple[str, list[Path]]]]:
    """table -> (method label, its run folders) for each re-run baseline: out/{runs}/{method}/table{T}_fold{F},
    on the episodes OSLSM's runs of the same table and fold use (the same generator and cache)."""
    from reproduce.evaluation.baselines.base_model import BaseNet
    from reproduce.evaluation.baselines.run import evaluate_baseline
    from reproduce.evaluation.eval_config import EvalConfig
    from reproduce.evaluation.evaluate import summary_lines

    dirs: dict[tuple[int, str], list[Path]] = {}
    for fold, weights in sorted(base_models.items()):
        base = BaseNet(weights, device)  # each image's features once for every method and table of the fold
        for table in tables:
            for method in methods:
                config = EvalConfig(voc, Path(weights), fold, TABLES[table][1], n_episodes=episodes, device=device,
                                    out_dir=out / ("runs" + protocol.table_suffix) / method.folder / f"table{table}_fold{fold}",
                                    protocol=protocol, scan_cache_dir=out / "cache" / "items", progress=progress)
                summary = evaluate_baseline(config, method, base)
                print("\n".join(summary_lines(summary)) + f"\n-> {config.out_dir} ({method.label})")
                dirs.setdefault((table, method.label), []).append(config.out_dir)
    return {table: [(method.label, dirs[table, method.label]) for method in methods] for table in tables}


def write_table_and_report(table: int, runs: list[Path], out: Path, voc, note: str = "", device: str = "cpu",
                           baseline: tuple[str, Sequence[Path]] | None = None,
                           methods: Sequence[tuple[str, Sequence[Path]]] = ()) -> dict:
    """The table files beside the published numbers (and `baseline`'s runs, when given; each
    re-run method's, as rows) and an HTML report of its runs ({stem}_report/index.html); returns
    the written paths."""
    from reproduce.presentation.report import write_report
    from reproduce.presentation.tables import write_table

    paths = write_table(table, runs, out, note=note, baseline=baseline, methods=methods)
    stem = paths["md"].stem  # the protocol's own name for the table
    paths["report"] = write_report(runs, out / f"{stem}_report", title=f"Table {table}: {stem}", note=note,
                                   voc=voc, device=device)
    return paths

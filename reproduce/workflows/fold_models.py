"""The authors' four fold models: found by 'fold{F}' in their file names and converted to the
OSLSM form, skipping a fold whose output already records the same source sha256."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from weights_convert.errors import CaffeFormatError
from reproduce.data.pascal5i import FOLDS

WEIGHT_SUFFIXES = (".caffemodel", ".caffemodel.h5")
PROJECT_PROTOTXT = Path(__file__).resolve().parents[2] / "prototxt" / "deploy_1shot.prototxt"
WHERE_TO_GET = ("The authors' trained models (one .caffemodel per fold) are linked from the upstream OSLSM "
                "README (github.com/lzzcd001/OSLSM); put them in data/models/ or pass MODELS=dir "
                "(or FOLD0=... FOLD3=... to `make convert`).")


def _fold_pattern(fold: int) -> re.Pattern:
    return re.compile(rf"fold[_\-]?{fold}(?!\d)", re.IGNORECASE)


def find_fold_models(models_dir: str | os.PathLike | None, explicit: dict[int, str | None],
                     folds=FOLDS, where_to_get: str = WHERE_TO_GET) -> dict[int, Path]:
    """fold -> model file for `folds`: explicit paths win; the rest are found by 'fold{F}' in file
    names in `models_dir` (exactly one each). Errors list what was found and where models come from."""
    chosen: dict[int, Path] = {}
    for fold, path in explicit.items():
        if path and fold in folds:
            if not Path(path).is_file():
                raise FileNotFoundError(f"--fold{fold} {path}: no such file. {where_to_get}")
            chosen[fold] = Path(path)
    wanted = [f for f in folds if f not in chosen]
    if not wanted:
        return chosen
    if not models_dir or not Path(models_dir).is_dir():
        raise FileNotFoundError(
            f"models directory {models_dir!r} does not exist (needed for fold(s) {', '.join(map(str, wanted))}). "
            + where_to_get)
    candidates = sorted(p for p in Path(models_dir).iterdir()
                        if p.is_file() and p.name.lower().endswith(WEIGHT_SUFFIXES))
    problems = []
    for fold in wanted:
        matches = [p for p in candidates if _fold_pattern(fold).search(p.name)]
        if len(matches) == 1:
            chosen[fold] = matches[0]
        elif not matches:
            problems.append(f"fold {fold}: no file with 'fold{fold}' in its name")
        else:
            problems.append(f"fold {fold}: {len(matches)} candidates ({', '.join(p.name for p in matches)}); "
                            f"keep one or pass --fold{fold} FILE")
    if problems:
        found = ", ".join(p.name for p in candidates) or "no .caffemodel / .caffemodel.h5 files"
        raise CaffeFormatError(f"cannot pick the fold models in {models_dir}: " + "; ".join(problems)
                               + f". Found: {found}. " + where_to_get)
    return dict(sorted(chosen.items()))


def _already_converted(out: Path, sha: str, labels: dict) -> bool:
    if not out.is_file():
        return False
    from weights_convert.formats.safetensors_io import safetensors_metadata
    try:
        metadata = safetensors_metadata(out)
    except (CaffeFormatError, OSError):
        return False
    return (metadata.get("source_sha256") == sha and metadata.get("model") == "oslsm"
            and all(metadata.get(k) == str(v) for k, v in labels.items()))


def convert_fold_models(models_dir, explicit: dict[int, str | None], prototxt: str | os.PathLike,
                        out_dir: str | os.PathLike, folds=FOLDS) -> dict[int, Path]:
    """Convert each fold's model to out_dir/fold{F}.safetensors (+ report), skipping outputs that
    already come from the same source (sha256); returns fold -> converted file."""
    from reproduce.training.model_record import check_record_fold
    from weights_convert.convert import convert, warn_nonfinite
    from weights_convert.files.provenance import sha256_file

    models = find_fold_models(models_dir, explicit, folds)
    if not Path(prototxt).is_file():
        raise FileNotFoundError(f"{prototxt}: no such prototxt; `make prototxt` writes the project's copy")
    out_dir = Path(out_dir)
    converted = {}
    for fold, source in models.items():
        out = converted[fold] = out_dir / f"fold{fold}.safetensors"
        sha = sha256_file(source)
        record = check_record_fold(source, fold)  # a model this kit re-trained says how, and for which fold
        labels = {"fold": fold, **({"training": json.dumps(record, sort_keys=True)} if record else {})}
        if _already_converted(out, sha, labels):
            print(f"fold {fold}: {out} is up to date with {source.name} (sha256 {sha[:12]}), skipped")
            continue
        report = convert(prototxt, source, out, model="oslsm", labels=labels,
                         report=out_dir / f"fold{fold}.report.json", source_sha256=sha)
        warn_nonfinite(report)
        print(f"fold {fold}: {source} -> {out} ({report['output_bytes']:,} bytes, "
              f"{report['timings']['total_s']:.1f} s)")
    return converted

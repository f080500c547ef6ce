"""What a re-trained fold model is: a JSON record beside the published caffemodel
(`<model>.caffemodel.json`) naming its fold, iteration, episode seed, start model and solver, from
the training folder's train.json; conversion carries it into the converted file, evaluation into
the run's summary, and the tables into their notes."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from reproduce.errors import ReproduceError
from weights_convert.files.atomic import atomic_write_text
from weights_convert.files.provenance import sha256_file

KIND = "re-trained by oslsm-repro"


def record_path(model: Path) -> Path:
    return model.with_name(model.name + ".json")


def write_training_record(model: Path, fold: int, iteration: int, training_folder: Path) -> dict:
    """The record of a model published from `training_folder` (which `train` wrote)."""
    run = json.loads((training_folder / "train.json").read_text())
    record = {"kind": KIND, "fold": fold, "iteration": iteration, "seed": run["seed"],
              "start_weights": Path(run["start"]["weights"]).name if run["start"].get("weights") else None,
              "start_sha256": run["start"].get("sha256"), "solver_sha256": run["solver_sha256"],
              "net_sha256": run["net_sha256"], "data_sha256": run["data_sha256"], "sha256": sha256_file(model)}
    atomic_write_text(record_path(model), json.dumps(record, indent=1, sort_keys=True) + "\n")
    return record


def read_training_record(model: Path) -> dict | None:
    """The model's record when it has one that is its own (by sha256); None otherwise."""
    path = record_path(model)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"WARNING: {path}: unreadable ({exc}); the model's training is not recorded", file=sys.stderr)
        return None
    if not isinstance(record, dict) or record.get("sha256") != sha256_file(model):
        print(f"WARNING: {path} describes another file than {model.name} (sha256 differs); ignored", file=sys.stderr)
        return None
    return record


def check_record_fold(model: Path, fold: int) -> dict | None:
    """The model's own record, refused when it says the model was trained for another fold (a
    fold-0 model published or copied under a fold-1 name is not fold 1's model)."""
    record = read_training_record(Path(model))
    if record is not None and record.get("fold") != fold:
        raise ReproduceError(f"{model} is used as fold {fold}'s model, but its training record "
                             f"{record_path(Path(model))} says it was trained for fold {record.get('fold')}")
    return record


def describe(record: dict | None) -> str:
    """One line for a table's notes."""
    if not record:
        return "a caffemodel without a training record of this kit (the authors' or another's)"
    start = record.get("start_weights") or "a resumed state"
    return (f"{KIND}: fold {record['fold']}, iteration {record['iteration']:,}, episode seed {record['seed']}, "
            f"from {start} (sha256 {str(record.get('start_sha256'))[:12]})")

"""What an evaluation is asked to do, and every reason to refuse it, found before anything is
written (all of them reported together, not only the first)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from reproduce.errors import ReproduceError, collect, raise_problems
from reproduce.numeric_options import numeric_problems
from reproduce.evaluation.protocols import DEFAULT, Protocol, protocol_named
from reproduce.data.voc import VOCDataset, refuse_inside_dataset
from weights_convert.runtime.devices import DeviceError, checked_device
from reproduce.data.pascal5i import N_FOLDS


@dataclass(frozen=True)
class EvalConfig:
    voc: object                     # a VOC2012 folder, or a data set object with read_image/read_mask
    weights: Path
    fold: int
    shots: int
    n_episodes: int = 1000
    device: str = "cpu"
    out_dir: Path = Path("results/run")
    episodes_file: Path | None = None
    protocol: Protocol | str = DEFAULT  # a protocol object, or a registered name (its default options)
    cache: bool = True
    cache_dir: Path | None = None   # None: features are kept in memory for this run only
    cache_max_bytes: int = 10 << 30  # the on-disk feature cache stops growing here
    scan_cache_dir: Path | None = None  # where the mask scan is cached (default: cache_dir/items, or nowhere)
    save_masks: bool = False
    progress: bool = True
    prototxt: Path | None = None
    workers: int = 2
    memory_bytes: int = 4 << 30
    allow_nonfinite: bool = False   # evaluate weights holding NaN or infinity anyway

    def __post_init__(self):
        if isinstance(self.protocol, str):
            object.__setattr__(self, "protocol", protocol_named(self.protocol))

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)


def open_checked(config: EvalConfig):
    """The data set, once every argument, path and file the run depends on has been checked;
    raises one ReproduceError listing every problem found."""
    problems: list[str] = []
    if config.fold not in range(N_FOLDS):
        problems.append(f"fold must be 0..{N_FOLDS - 1}, got {config.fold}")
    if config.shots < 1:
        problems.append(f"shots must be >= 1, got {config.shots}")
    problems += config.protocol.problems([config.fold])
    problems += argument_problems(n_episodes=config.n_episodes, workers=config.workers, device=config.device,
                                  folders={"--out": config.out_dir, "--cache-dir": config.cache_dir})
    if Path(config.weights).is_dir():
        problems.append(f"weights {config.weights} is a folder; expected a weights file (.safetensors, .caffemodel "
                        "or .caffemodel.h5)")
    elif not Path(config.weights).is_file():
        problems.append(f"weights {config.weights}: no such file")
    else:
        collect(problems, check_weights_metadata, config.weights, config.fold, config.shots)
    if config.prototxt is not None:
        collect(problems, check_prototxt_shots, config.prototxt, config.shots)
    dataset = config.voc if hasattr(config.voc, "read_image") else collect(
        problems, lambda: VOCDataset(config.voc, masks=config.protocol.mask_dir(config.voc)))
    root = getattr(dataset, "root", None)
    if root is not None:
        collect(problems, refuse_inside_dataset, config.out_dir, root, "run folder")
        if config.cache_dir is not None:
            collect(problems, refuse_inside_dataset, config.cache_dir, root, "cache folder")
    raise_problems(problems)
    return dataset


CACHE_ENTRIES = ("features", "items")  # what a --cache-dir holds: features and mask scans


def argument_problems(*, n_episodes: int, workers: int, device: str,
                      folders: dict[str, str | os.PathLike | None]) -> list[str]:
    """What is wrong with the arguments every evaluating command takes; `folders`: option -> a
    folder it names (None: not given), which may not exist yet but must not be a file."""
    problems = [f"{flag} {path} is a file; expected a folder" for flag, path in folders.items()
                if path is not None and Path(path).exists() and not Path(path).is_dir()]
    cache = folders.get("--cache-dir")
    foreign = sorted(p.name for p in Path(cache).iterdir() if p.name not in CACHE_ENTRIES) \
        if cache is not None and Path(cache).is_dir() else []
    if foreign:
        problems.append(f"--cache-dir {cache} holds files the cache did not write ({', '.join(foreign[:5])}); "
                        f"it is left alone: give a new or empty folder, or one that holds only "
                        f"{' and '.join(CACHE_ENTRIES)}/")
    problems += numeric_problems(SimpleNamespace(episodes=n_episodes, workers=workers))
    collect(problems, _checked_device, device)
    return problems


def _checked_device(name: str) -> torch.device:
    try:
        return torch.device(checked_device(name))
    except DeviceError as exc:
        raise ReproduceError(str(exc)) from None


def converted_metadata(weights: str | os.PathLike) -> dict[str, str]:
    """What the converter recorded in a converted file's header; {} for a Caffe file (by content)."""
    from weights_convert.formats.safetensors_io import safetensors_metadata
    from weights_convert.formats.weights_io import sniff_format

    return safetensors_metadata(weights) if sniff_format(weights) == "safetensors" else {}


def check_weights_metadata(weights: str | os.PathLike, fold: int, shots: int) -> dict:
    """Fold and shots recorded by the converter must match the run."""
    path = os.fspath(weights)
    meta = converted_metadata(path)
    if "fold" in meta and str(meta["fold"]) != str(fold):
        raise ReproduceError(f"{path} was converted from fold {meta['fold']}'s model, but --fold is {fold}; "
                             f"evaluate each fold with its own model")
    trained = json.loads(meta["training"]).get("fold") if meta.get("training") else fold
    if str(trained) != str(fold):
        raise ReproduceError(f"{path} carries the training record of a fold-{trained} model, but --fold is {fold}; "
                             "evaluate each fold with its own model")
    declared = meta.get("shots", "any")
    if declared not in ("any", "") and str(declared) != str(shots):
        raise ReproduceError(f"{path} declares a {declared}-shot net, but --shots is {shots}")
    return meta


def check_prototxt_shots(prototxt: str | os.PathLike | None, shots: int) -> None:
    if prototxt is None:
        return
    from weights_convert.formats.prototxt import load_net
    from weights_convert.oslsm.spec import net_shots_and_query

    net_shots, _ = net_shots_and_query(load_net(prototxt), os.fspath(prototxt))
    if net_shots != shots:
        raise ReproduceError(f"{prototxt} is a {net_shots}-shot deploy net (first_img has {net_shots} images), "
                             f"but --shots is {shots}; use deploy_{shots}shot.prototxt")


def source_sha256(weights: str | os.PathLike) -> str | None:
    """The sha256 of the caffemodel a converted file came from (it names the weights, whatever the
    converted file is called); None for a file that is not our conversion."""
    return converted_metadata(weights).get("source_sha256") or None


def weights_training(weights: str | os.PathLike) -> dict | None:
    """The training record a converted fold model carries when this kit re-trained it (its fold,
    iteration, seed and start model; reproduce/training/model_record.py); None otherwise."""
    import json

    text = converted_metadata(weights).get("training")
    return json.loads(text) if text else None

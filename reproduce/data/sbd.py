"""SBD (Hariharan et al.'s Semantic Boundaries Dataset, benchmark_RELEASE/dataset) in the VOC
layout the original training data layer reads: palette PNGs from cls/*.mat (GTcls.Segmentation)
and inst/*.mat (GTinst.Segmentation), JPEGImages linked or copied from img/, and
ImageSets/Segmentation/train.txt. Which SBD lists to train on is not in the original code: the
default here is SBD train + val without any VOC 2012 val image (those are PASCAL-5i's test
images)."""
from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from reproduce.errors import ReproduceError
from reproduce.data.voc import voc_palette
from weights_convert.files.atomic import temporary_folder_beside
from weights_convert.runtime.progress import Progress

DEFAULT_LISTS = ("train", "val")


def sbd_root(path: str | Path) -> Path:
    """benchmark_RELEASE/dataset (or benchmark_RELEASE itself), checked."""
    root = Path(path)
    if (root / "dataset").is_dir() and not (root / "cls").is_dir():
        root = root / "dataset"
    for part in ("cls", "inst", "img"):
        if not (root / part).is_dir():
            raise ReproduceError(f"{path} is not an SBD dataset folder: {root / part} is missing (expected "
                                 "benchmark_RELEASE/dataset with cls/, inst/, img/, train.txt, val.txt)")
    return root


def read_list(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise ReproduceError(f"{path}: cannot read the image list ({exc.strerror})") from None


def select_names(root: Path, lists: Iterable[str], exclude: set[str]) -> list[str]:
    """Names of the given SBD lists in list order, first occurrence only, without `exclude`."""
    names, seen = [], set()
    for name in lists:
        for image in read_list(root / f"{name}.txt"):
            if image not in seen and image not in exclude:
                seen.add(image)
                names.append(image)
    if not names:
        raise ReproduceError(f"{root}: the lists {list(lists)} leave no image")
    return names


def load_segmentation(path: Path, struct: str) -> np.ndarray:
    from scipy.io import loadmat  # only this command needs scipy
    from scipy.io.matlab import MatReadError

    try:
        mat = loadmat(path, squeeze_me=True, struct_as_record=False)
        seg = np.asarray(getattr(mat[struct], "Segmentation"))
    except (OSError, ValueError, KeyError, AttributeError, TypeError, MatReadError) as exc:
        raise ReproduceError(f"{path}: not an SBD {struct} .mat with a Segmentation field ({exc})") from None
    if seg.ndim != 2 or seg.size == 0 or seg.min() < 0 or seg.max() > 255:
        raise ReproduceError(f"{path}: {struct}.Segmentation has shape {seg.shape} and values outside 0..255")
    return seg.astype(np.uint8)


def _save_png(array: np.ndarray, path: Path, palette: list[int]) -> None:
    image = Image.fromarray(array, mode="P")
    image.putpalette(palette)
    image.save(path)


def convert_sbd(sbd: str | Path, out: str | Path, lists=DEFAULT_LISTS, exclude: set[str] = frozenset(),
                copy_images: bool = False, workers: int = 2, progress: bool = True) -> int:
    """Write the VOC-layout folder `out` (which must not exist yet); returns the image count.
    Built in a temporary folder beside `out` and renamed at the end: no half-written result."""
    root = sbd_root(sbd)
    out = Path(out)
    if out.exists():
        raise ReproduceError(f"{out} exists; give a new folder (nothing is overwritten)")
    if root.resolve() in out.resolve().parents or out.resolve() == root.resolve():
        raise ReproduceError(f"{out} lies inside the SBD folder {root}; the data set is never written to")
    names = select_names(root, lists, exclude)
    missing = [n for n in names for p in (root / "cls" / f"{n}.mat", root / "inst" / f"{n}.mat",
                                          root / "img" / f"{n}.jpg") if not p.is_file()]
    if missing:
        raise ReproduceError(f"{root}: {len(missing)} listed file(s) missing, e.g. {missing[0]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = temporary_folder_beside(out)
    try:
        for sub in ("JPEGImages", "SegmentationClass", "SegmentationObject", "ImageSets/Segmentation"):
            (work / sub).mkdir(parents=True)
        palette = voc_palette()

        def one(name: str) -> None:
            cls = load_segmentation(root / "cls" / f"{name}.mat", "GTcls")
            inst = load_segmentation(root / "inst" / f"{name}.mat", "GTinst")
            if cls.shape != inst.shape:
                raise ReproduceError(f"{root}: {name}: class mask {cls.shape} and instance mask {inst.shape} differ")
            _save_png(cls, work / "SegmentationClass" / f"{name}.png", palette)
            _save_png(inst, work / "SegmentationObject" / f"{name}.png", palette)
            source, target = (root / "img" / f"{name}.jpg").resolve(), work / "JPEGImages" / f"{name}.jpg"
            shutil.copyfile(source, target) if copy_images else os.symlink(source, target)

        with ThreadPoolExecutor(max(1, workers)) as pool, Progress(len(names), 0, "sbd-to-voc", progress,
                                                                   unit="image") as bar:
            for _ in pool.map(one, names):
                bar.update()
        (work / "ImageSets" / "Segmentation" / "train.txt").write_text("".join(f"{n}\n" for n in names))
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return len(names)

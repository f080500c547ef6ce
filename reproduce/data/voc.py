"""PASCAL VOC 2012 segmentation data in its own layout, read only (protocol §1)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from reproduce.errors import ReproduceError
from reproduce.data.pascal5i import CLASSES_PER_FOLD, N_FOLDS

CLASS_NAMES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
VOID = 255

LAYOUT = ("ImageSets/Segmentation/val.txt", "JPEGImages/<name>.jpg",
          "SegmentationClass/<name>.png (palette PNG: 0 background, 1..20 classes, 255 void)")


def voc_palette() -> list[int]:
    """The VOC colour map (bit-interleaved class index), 256 RGB entries."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette += [r, g, b]
    return palette


def fold_classes(fold: int) -> list[int]:
    """Fold i tests classes 5i+1 .. 5i+5."""
    if fold not in range(N_FOLDS):
        raise ReproduceError(f"fold must be 0..{N_FOLDS - 1}, got {fold}")
    first = CLASSES_PER_FOLD * fold + 1
    return list(range(first, first + CLASSES_PER_FOLD))


def class_name(cls: int) -> str:
    return CLASS_NAMES[cls - 1]


# Where the folder that holds JPEGImages/ usually sits below what users point at.
_USUAL_NESTING = ("VOC2012", "VOCdevkit/VOC2012", "VOCtrainval_11-May-2012/VOCdevkit/VOC2012")


def _layout_error(root: Path, missing: Path) -> ReproduceError:
    nested = next((root / n for n in _USUAL_NESTING if (root / n / "JPEGImages").is_dir()), None)
    hint = f"; did you mean {nested}?" if nested is not None else ""
    return ReproduceError(f"{root} is not a VOC2012 folder: {missing} is missing "
                          f"(expected {', '.join(LAYOUT)}){hint}")


class VOCDataset:
    """The val split of a VOC2012 folder; never writes into it."""

    def __init__(self, root: str | Path, split: str = "val", masks: str | Path | None = None):
        """`masks`: another folder of class-index PNGs to read instead of SegmentationClass (HSNet's
        protocol reads SegmentationClassAug)."""
        self.root = Path(root)
        self.split = split
        self.split_file = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        self.image_dir = self.root / "JPEGImages"
        self.mask_dir = self.root / "SegmentationClass" if masks is None else Path(masks)
        for path in (self.root, self.image_dir, self.split_file):
            if not path.exists():
                raise _layout_error(self.root, path)
        if not self.mask_dir.is_dir():
            if masks is None:
                raise _layout_error(self.root, self.mask_dir)
            raise ReproduceError(f"mask folder {self.mask_dir}: no such folder (expected <image>.png class-index "
                                 "masks, 0 background, 1..20 classes, 255 ignored)")
        self.names = self._read_split()

    def _read_split(self) -> list[str]:
        try:
            text = self.split_file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ReproduceError(f"{self.split_file}: cannot read the split list ({exc})") from exc
        # The original dropped one trailing newline per line and skipped empty lines.
        names = [line.rstrip("\r") for line in text.split("\n")]
        names = [n for n in names if n]
        if not names:
            raise ReproduceError(f"{self.split_file}: no image names")
        seen = set()
        for lineno, name in enumerate(names, 1):
            if name in seen:
                raise ReproduceError(f"{self.split_file}: image name {name!r} listed twice")
            if "/" in name or "\\" in name or name.strip() != name:
                raise ReproduceError(f"{self.split_file}: bad image name {name!r}")
            seen.add(name)
        return names

    def __len__(self) -> int:
        return len(self.names)

    def image_path(self, name: str) -> Path:
        return self.image_dir / f"{name}.jpg"

    def mask_path(self, name: str) -> Path:
        return self.mask_dir / f"{name}.png"

    def read_image(self, name: str) -> np.ndarray:
        """uint8 HxWx3 RGB; a grey image is copied into the three channels (as util.read_img)."""
        path = self.image_path(name)
        arr = _open_array(path, "image")
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ReproduceError(f"{path}: expected an 8-bit RGB or grey JPEG, "
                                 f"got array {arr.shape} {arr.dtype}")
        return arr

    def read_mask(self, name: str) -> np.ndarray:
        """uint8 HxW class-index array from the palette PNG."""
        path = self.mask_path(name)
        with _open_image(path, "mask") as im:
            if im.mode not in ("P", "L"):
                raise ReproduceError(f"{path}: expected a palette (or 8-bit grey) PNG of class "
                                     f"indices, got PIL mode {im.mode}")
            arr = _decode(im, path)
        bad = np.setdiff1d(np.unique(arr), np.array(list(range(21)) + [VOID]))
        if bad.size:
            raise ReproduceError(f"{path}: class index {int(bad[0])} is outside 0..20 and 255 "
                                 f"(values found outside: {bad.tolist()})")
        return arr.astype(np.uint8, copy=False)

    def check_mask_size(self, name: str, mask_hw: tuple[int, ...]) -> None:
        """A mask has its image's size (the image's read from its header only)."""
        path = self.image_path(name)
        try:
            with Image.open(path) as im:
                width, height = im.size
        except OSError as exc:
            raise ReproduceError(f"{path}: cannot read the image header ({exc})") from None
        if (height, width) != tuple(mask_hw[:2]):
            raise ReproduceError(f"{self.mask_path(name)} is {mask_hw[0]}x{mask_hw[1]} but {path} is "
                                 f"{height}x{width}; a VOC mask has its image's size")


def _open_image(path: Path, what: str) -> Image.Image:
    if not path.is_file():
        raise ReproduceError(f"{path}: {what} file is missing")
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as exc:
        raise ReproduceError(f"{path}: unreadable {what} file ({exc})") from exc


def _decode(im: Image.Image, path: Path) -> np.ndarray:
    try:
        return np.array(im)
    except (OSError, ValueError, SyntaxError) as exc:
        raise ReproduceError(f"{path}: corrupt image data ({exc})") from exc


def _open_array(path: Path, what: str) -> np.ndarray:
    with _open_image(path, what) as im:
        if im.mode not in ("RGB", "L"):
            raise ReproduceError(f"{path}: expected an RGB or grey (L) {what}, got PIL mode {im.mode}")
        return _decode(im, path)


def refuse_inside_dataset(path: str | Path, dataset_root: str | Path, what: str = "output") -> None:
    """The data set folder is never written: refuse any path of ours inside it."""
    root, target = Path(dataset_root).resolve(), Path(path).resolve()
    if target == root or root in target.parents:
        raise ReproduceError(f"{what} {path} lies inside the data set folder {root}; the data set is never written to")

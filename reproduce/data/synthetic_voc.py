"""A small synthetic data set in the VOC2012 layout, for the demo and the tests.

Not photos: smooth random colour fields with textured ellipses and boxes. What matters is the
layout and the label conventions: palette PNG class masks (0 background, 1..20, 255 void bands
around objects), instance masks, some tiny objects that the small-object filter drops, a few
greyscale JPEGs, and a val.txt. Every class gets a large object in at least n_images // 20
images, so n_images >= 120 is enough for 5-shot episodes in every fold.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from reproduce.errors import ReproduceError
from reproduce.data.items import keeps_object
from reproduce.data.voc import VOID, voc_palette
from reproduce.data.pascal5i import FOLDS
from weights_convert.files.atomic import temporary_folder_beside

N_CLASSES = 20
VOID_BAND = 3       # pixels of void drawn around every object, as VOC annotators did
GREY_EVERY = 17     # every 17th image is saved as a greyscale JPEG
TINY_EVERY = 5      # every 5th image also gets a tiny object the filter drops


def _smooth_field(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Random colour field: a coarse grid of random colours upsampled bilinearly, HxWx3 float."""
    coarse = rng.uniform(0, 255, size=(cells, cells, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR), dtype=np.float64)


def _shape_mask(ellipse: bool, h: int, w: int, cy: float, cx: float,
                ry: float, rx: float, grow: float = 0.0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    if ellipse:
        return ((yy - cy) / (ry + grow)) ** 2 + ((xx - cx) / (rx + grow)) ** 2 <= 1.0
    return (np.abs(yy - cy) <= ry + grow) & (np.abs(xx - cx) <= rx + grow)


def _draw(rng, image, cls_mask, obj_mask, obj_id, cls, cy, cx, ry, rx):
    h, w = cls_mask.shape
    ellipse = rng.random() < 0.5
    shape = _shape_mask(ellipse, h, w, cy, cx, ry, rx)
    band = _shape_mask(ellipse, h, w, cy, cx, ry, rx, grow=VOID_BAND) & ~shape
    colour = np.array([(cls * 37) % 256, (cls * 91) % 256, (cls * 151) % 256], dtype=np.float64)
    texture = rng.normal(0, 18, size=(h, w, 1))
    image[shape] = np.clip(colour + texture[shape], 0, 255)
    cls_mask[band & (cls_mask == 0)] = VOID
    obj_mask[band & (obj_mask == 0)] = VOID
    cls_mask[shape] = cls
    obj_mask[shape] = obj_id
    return shape


def _big_object(rng, image, cls_mask, obj_mask, obj_id, cls, placed) -> bool:
    """Draw a large object; retry bigger until it and the classes already placed survive the filter.
    False when no try succeeded (nothing drawn)."""
    h, w = cls_mask.shape
    for attempt in range(10):
        scale = 0.22 + 0.05 * attempt
        ry = rng.uniform(scale, scale + 0.12) * h
        rx = rng.uniform(scale, scale + 0.12) * w
        cy = rng.uniform(ry * 0.6, h - ry * 0.6)
        cx = rng.uniform(rx * 0.6, w - rx * 0.6)
        img_t, cls_t, obj_t = image.copy(), cls_mask.copy(), obj_mask.copy()
        _draw(rng, img_t, cls_t, obj_t, obj_id, cls, cy, cx, ry, rx)
        if all(keeps_object((cls_t == c).astype(np.float32)) for c in placed + [cls]):
            image[:], cls_mask[:], obj_mask[:] = img_t, cls_t, obj_t
            return True
    return False


def _make_one(rng: np.random.Generator, index: int):
    h = int(rng.integers(160, 321))
    w = int(rng.integers(160, 321))
    image = _smooth_field(rng, h, w, int(rng.integers(3, 9)))
    image += rng.normal(0, 6, size=image.shape)
    cls_mask = np.zeros((h, w), dtype=np.uint8)
    obj_mask = np.zeros((h, w), dtype=np.uint8)
    classes = [index % N_CLASSES + 1]
    if rng.random() < 0.5:
        classes.append(int(rng.integers(1, N_CLASSES + 1)))
    if not _big_object(rng, image, cls_mask, obj_mask, 1, classes[0], []):
        raise ReproduceError(f"synthetic VOC: could not place a class {classes[0]} object that survives the filter")
    obj_id = 1
    if len(classes) == 2:
        # The optional second object may hide the first too much: then the image keeps one object.
        if _big_object(rng, image, cls_mask, obj_mask, 2, classes[1], classes[:1]):
            obj_id = 2
        else:
            classes.pop()
    if index % TINY_EVERY == TINY_EVERY - 1:
        # a few pixels of a class absent elsewhere in the image: dropped by the filter
        free = [c for c in range(1, N_CLASSES + 1) if c not in classes]
        cls = int(rng.choice(free))
        r = float(rng.uniform(1.0, 2.5))
        for _ in range(20):
            cy, cx = rng.uniform(5, h - 5), rng.uniform(5, w - 5)
            if cls_mask[int(cy) - 5:int(cy) + 6, int(cx) - 5:int(cx) + 6].any():
                continue
            obj_id += 1
            _draw(rng, image, cls_mask, obj_mask, obj_id, cls, cy, cx, r, r)
            break
    rgb = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return rgb, cls_mask, obj_mask


def make_synthetic_voc(root: str | Path, n_images: int = 160, seed: int = 0, train_images: int = 0) -> Path:
    """Write a synthetic VOC2012-layout folder at `root` (which must not exist or be empty): n_images
    listed in val.txt and, when asked, train_images more (other names) in train.txt, as VOC's
    training split beside its test split. The val images do not depend on train_images.

    Built in a temporary sibling folder and renamed into place, so a reader never sees half of it.
    Deterministic from `seed`."""
    if n_images < 1 or train_images < 0:
        raise ReproduceError(f"n_images must be >= 1 and train_images >= 0, got {n_images} and {train_images}")
    return _build_in_place(Path(root), lambda tmp: _write_all(tmp, n_images, seed, train_images))


def _build_in_place(root: Path, write) -> Path:
    """write(tmp) into a temporary sibling folder, then rename it to `root` (new or empty)."""
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ReproduceError(f"{root} exists and is not an empty folder; refusing to overwrite it")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_folder_beside(root)
    try:
        write(tmp)
        if root.exists():
            root.rmdir()
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _write_all(out: Path, n_images: int, seed: int, train_images: int) -> None:
    rng = np.random.default_rng(seed)
    for sub in ("ImageSets/Segmentation", "JPEGImages", "SegmentationClass", "SegmentationObject", "SegmentationClassAug"):
        (out / sub).mkdir(parents=True)
    palette = voc_palette()
    names = []
    for i in range(n_images + train_images):
        j, count = (i, n_images) if i < n_images else (i - n_images, train_images)
        name = f"{2007 + j * 5 // count}_{i:06d}"
        rgb, cls_mask, obj_mask = _make_one(rng, i)
        photo = Image.fromarray(rgb)
        if i % GREY_EVERY == GREY_EVERY - 1:
            photo = photo.convert("L")
        photo.save(out / "JPEGImages" / f"{name}.jpg", quality=90)
        for folder, arr in (("SegmentationClass", cls_mask), ("SegmentationObject", obj_mask)):
            png = Image.frombytes("P", (arr.shape[1], arr.shape[0]), arr.tobytes())
            png.putpalette(palette)
            png.save(out / folder / f"{name}.png")
        # As the SBD-augmented set HSNet reads: the same classes as grey (mode L) index PNGs.
        Image.fromarray(cls_mask).save(out / "SegmentationClassAug" / f"{name}.png")
        names.append(name)
    lists = out / "ImageSets" / "Segmentation"
    (lists / "val.txt").write_text("".join(n + "\n" for n in names[:n_images]))
    if train_images:
        (lists / "train.txt").write_text("".join(n + "\n" for n in names[n_images:]))


# ---------------------------------------------------------------------------- the reference's items
STRIPE = 96         # width of one object's column in a reference-set image
REFERENCE_HEIGHT = 128


def make_reference_voc(root: str | Path, textured: bool = False, seed: int = 0,
                       image_hw: tuple[int, int] | None = None) -> Path:
    """A VOC2012-layout val set whose items are exactly those the original kept on the real VOC
    2012 val set (reference_episodes): every (image, class) item one object large enough for the
    filter, side by side in its image; val.txt the 1,449 names in sorted order (images without
    items are plain background). Flat grey images, or random textures with `textured`; small
    images sized by their objects, or all `image_hw` (e.g. VOC's usual 375x500)."""
    from reproduce.data.reference_episodes import VOC2012_VAL_IMAGES, reference_items

    classes: dict[str, list[int]] = {}
    for fold in FOLDS:
        for name, cls in reference_items(fold):
            classes.setdefault(name, []).append(cls)
    fillers = [f"2099_{i:06d}" for i in range(VOC2012_VAL_IMAGES - len(classes))]
    names = sorted(classes) + fillers
    rng = np.random.default_rng(seed)
    return _build_in_place(Path(root), lambda tmp: _write_reference_set(tmp, names, classes, textured, rng, image_hw))


def _write_reference_set(out: Path, names: list[str], classes: dict[str, list[int]], textured: bool, rng,
                         image_hw: tuple[int, int] | None) -> None:
    for sub in ("ImageSets/Segmentation", "JPEGImages", "SegmentationClass"):
        (out / sub).mkdir(parents=True)
    palette = voc_palette()
    for name in names:
        present = sorted(classes.get(name, []))
        height, width = image_hw or (REFERENCE_HEIGHT, STRIPE * max(1, len(present)))
        stripe = width // max(1, len(present))
        mask = np.zeros((height, width), np.uint8)
        for k, cls in enumerate(present):
            mask[8:height - 8, k * stripe + 8:(k + 1) * stripe - 8] = cls
        if textured:
            rgb = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        else:
            rgb = np.full((height, width, 3), 128, np.uint8)
        Image.fromarray(rgb).save(out / "JPEGImages" / f"{name}.jpg", quality=90)
        png = Image.frombytes("P", (width, height), mask.tobytes())
        png.putpalette(palette)
        png.save(out / "SegmentationClass" / f"{name}.png")
    (out / "ImageSets" / "Segmentation" / "val.txt").write_text("".join(n + "\n" for n in names))

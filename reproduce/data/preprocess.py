"""Network inputs exactly as the original `__prepross` built them (protocol §3).

Dtypes follow the original: the image is float32 / 255, the mean is a float64 array, so the
mean-subtracted image (and everything after it) is float64 until the net's float32 blob.
"""
from __future__ import annotations

import numpy as np

from reproduce.data.episodes import Episode
from reproduce.errors import ReproduceError
from reproduce.data.resize2017 import resize_2017
from reproduce.data.voc import VOCDataset

MEAN_BGR = (0.40787055, 0.45752459, 0.4810938)
MEAN_RGB = np.array(MEAN_BGR[::-1], dtype=np.float64).reshape(1, 1, 3)
SUPPORT_SHAPE = (224, 224)
QUERY_SHAPE = (500, 500)


def binary_mask(mask: np.ndarray, cls: int) -> np.ndarray:
    """float32 1.0 where the index is `cls`, 0.0 elsewhere (void counts as background)."""
    return (mask == cls).astype(np.float32)


def _prep(image_rgb: np.ndarray, mask_bin: np.ndarray, shape: tuple[int, int]):
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ReproduceError(f"expected a uint8 HxWx3 RGB image, got {image_rgb.shape} {image_rgb.dtype}")
    if mask_bin.shape != image_rgb.shape[:2]:
        raise ReproduceError(f"mask shape {mask_bin.shape} differs from image shape {image_rgb.shape[:2]}")
    image = image_rgb.astype(np.float32) / np.float32(255.0)
    image = image - MEAN_RGB  # float64 from here on
    label = mask_bin.astype(np.float32)
    if tuple(shape) != image.shape[:2]:
        image = resize_2017(image, shape, order=1, preserve_range=False)
        label = resize_2017(label, shape, order=0, preserve_range=True)
    image = image[:, :, ::-1] * 255
    return (np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32),
            label.astype(np.float32)[None])


def prep_support(image_rgb_uint8: np.ndarray, mask_bin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One support pair -> image (3,224,224) BGR x255 mean-subtracted, label (1,224,224)."""
    return _prep(image_rgb_uint8, mask_bin, SUPPORT_SHAPE)


def prep_query(image_rgb_uint8: np.ndarray, mask_bin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The query pair -> image (1,3,500,500), label (1,1,500,500)."""
    img, label = _prep(image_rgb_uint8, mask_bin, QUERY_SHAPE)
    return img[None], label[None]


def prep_training_query(image_rgb_uint8: np.ndarray, mask_bin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The training query pair at its own size (the training data layer does not resize it)."""
    img, label = _prep(image_rgb_uint8, mask_bin, image_rgb_uint8.shape[:2])
    return img[None], label[None]


def episode_inputs(dataset: VOCDataset, episode: Episode) -> dict[str, np.ndarray]:
    """The four float32 net inputs of one episode."""
    def pair(name):
        return dataset.read_image(name), binary_mask(dataset.read_mask(name), episode.cls)

    supports = [prep_support(*pair(name)) for name in episode.supports]
    second_img, second_label = prep_query(*pair(episode.query))
    return {
        "first_img": np.stack([s[0] for s in supports]),
        "first_label": np.stack([s[1] for s in supports]),
        "second_img": second_img,
        "second_label": second_label,
    }

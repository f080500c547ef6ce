"""Caffe's rule for whether a stored blob fits a layer's blob (Blob::ShapeEquals)."""
from __future__ import annotations

from typing import Sequence


def shapes_match(target: Sequence[int], given: Sequence[int]) -> bool:
    """Equal shapes, or a 4-D (num, channels, height, width) blob equal to the target padded with
    leading 1s (old InnerProduct weights are stored as (1, 1, N, K)). Caffe allows the padded form
    only for blobs written with the legacy dimension fields; we allow it for any 4-D blob, which
    accepts a few files Caffe would refuse but never changes a value."""
    target, given = tuple(target), tuple(given)
    if target == given:
        return True
    if len(given) == 4 and len(target) < 4:
        pad = 4 - len(target)
        return given[:pad] == (1,) * pad and given[pad:] == target
    return False

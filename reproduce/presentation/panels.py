"""Episode panels like the paper's qualitative figure: each support with its mask, the query with
its ground truth, the query with the prediction (and optionally the score map), one row per
episode with its class and IoU."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from reproduce.presentation.plots import PREDICTION, SUPPORT, TRUTH, VOID_RGB, pyplot, save_png
from reproduce.data.voc import VOID

ALPHA = 0.35   # tint inside a mask; its outline is drawn in full colour


@dataclass
class EpisodePanel:
    title: str                       # e.g. "episode 12 - cat - IoU 0.53"
    supports: list[np.ndarray]       # HxWx3 uint8 each
    support_masks: list[np.ndarray]  # HxW bool each
    query: np.ndarray                # HxWx3 uint8
    truth: np.ndarray                # HxW uint8: 1 object, 0 background, VOID void
    score: np.ndarray                # 500x500 float in [0, 1] on the query grid


def outline(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """Pixels of `mask` within `width` pixels of its border."""
    inner = mask.copy()
    for _ in range(width):
        shrunk = inner.copy()
        shrunk[1:] &= inner[:-1]
        shrunk[:-1] &= inner[1:]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        inner = shrunk
    return mask & ~inner


def overlay(image: np.ndarray, mask: np.ndarray, colour, void: np.ndarray | None = None) -> np.ndarray:
    """The image with `mask` tinted and outlined in `colour`, and `void` pixels drawn in white."""
    out = image.astype(np.float32)
    colour = np.asarray(colour, np.float32)
    out[mask] = (1 - ALPHA) * out[mask] + ALPHA * colour
    out[outline(mask)] = colour
    if void is not None:
        out[void] = VOID_RGB
    return out.astype(np.uint8)


def to_image_size(score: np.ndarray, height: int, width: int) -> np.ndarray:
    """The 500x500 score map brought back to the image's size, for display only (bilinear)."""
    resized = Image.fromarray(score.astype(np.float32), mode="F").resize((width, height), Image.BILINEAR)
    return np.asarray(resized)


def draw_panels(panels: list[EpisodePanel], out_png: str | os.PathLike, show_score: bool = False) -> None:
    plt = pyplot()
    shots = max(len(p.supports) for p in panels)
    columns = shots + 2 + int(show_score)
    fig, axes = plt.subplots(len(panels), columns, figsize=(2.4 * columns, 2.8 * len(panels)), squeeze=False)
    for row, panel in zip(axes, panels):
        height, width = panel.truth.shape
        score = to_image_size(panel.score, height, width)
        cells = [(overlay(img, m, SUPPORT), f"support {i + 1}")
                 for i, (img, m) in enumerate(zip(panel.supports, panel.support_masks))]
        cells += [(None, "")] * (shots - len(panel.supports))
        cells.append((overlay(panel.query, panel.truth == 1, TRUTH, panel.truth == VOID), "query, ground truth"))
        cells.append((overlay(panel.query, score > 0.5, PREDICTION), "query, prediction"))
        if show_score:
            cells.append((score, "score (sigmoid)"))
        for ax, (picture, label) in zip(row, cells):
            ax.axis("off")
            if picture is None:
                continue
            if picture.ndim == 2:
                ax.imshow(picture, cmap="magma", vmin=0.0, vmax=1.0)
            else:
                ax.imshow(picture)
            ax.set_title(label, fontsize=8)
        row[0].text(0.0, 1.25, panel.title, transform=row[0].transAxes, fontsize=10, fontweight="bold")
    save_png(fig, out_png)

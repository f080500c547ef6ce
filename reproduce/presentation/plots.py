"""One look for every picture the kit writes (tables, loss curves, charts, episode panels):
matplotlib without a display, shared colours, and atomic PNG writes."""
from __future__ import annotations

import os

from weights_convert.files.atomic import atomic_path

PAPER = "#8c8c8c"      # published numbers
OURS = "#1f77b4"       # this reproduction
SECOND = "#2ca02c"     # a second series (learning rate, a model to compare with)
METHOD_COLOURS = ("#ff7f0e", "#9467bd", "#8c564b")  # re-run baselines of the paper
SUPPORT = (255, 200, 0)     # support mask overlay (RGB)
TRUTH = (0, 200, 0)         # query ground truth
PREDICTION = (230, 40, 40)  # predicted mask
VOID_RGB = (255, 255, 255)  # VOC's void band


def pyplot():
    """matplotlib.pyplot on the Agg backend, with the kit's font sizes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False,
                         "axes.spines.right": False, "legend.fontsize": 8, "savefig.dpi": 100})
    return plt


def save_png(fig, path: str | os.PathLike) -> None:
    """Write the figure as a PNG by temporary file and rename, then free it."""
    plt = pyplot()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)

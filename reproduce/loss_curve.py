"""A training run's loss and learning-rate curves from its losses.csv, as a PNG."""
from __future__ import annotations

import csv
from pathlib import Path

from weights_convert.atomic import atomic_path


def write_loss_curve(losses_csv: str | Path, out_png: str | Path, title: str = "") -> bool:
    """False (nothing written) when the CSV has no rows yet."""
    with open(losses_csv, newline="") as fh:
        rows = [r for r in csv.DictReader(fh)]
    if not rows:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    it = [int(r["iteration"]) for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True, height_ratios=(3, 1))
    top.plot(it, [float(r["loss"]) for r in rows], lw=0.6, alpha=0.4, label="loss (mean over iter_size)")
    top.plot(it, [float(r["smoothed_loss"]) for r in rows], lw=1.5, label="smoothed (average_loss)")
    top.set_ylabel("loss")
    top.legend(loc="upper right", fontsize=8)
    top.set_title(title, fontsize=10)
    bottom.plot(it, [float(r["lr"]) for r in rows], color="tab:green")
    bottom.set_ylabel("learning rate")
    bottom.set_xlabel("iteration")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return True

"""A training run's loss and learning-rate curves from its losses.csv, as a PNG."""
from __future__ import annotations

import csv
from pathlib import Path

from reproduce.presentation.plots import OURS, PAPER, SECOND, pyplot, save_png


def write_loss_curve(losses_csv: str | Path, out_png: str | Path, title: str = "") -> bool:
    """False (nothing written) when the CSV has no rows yet."""
    with open(losses_csv, newline="") as fh:
        rows = [r for r in csv.DictReader(fh)]
    if not rows:
        return False
    plt = pyplot()
    it = [int(r["iteration"]) for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True, height_ratios=(3, 1))
    top.plot(it, [float(r["loss"]) for r in rows], lw=0.6, color=PAPER, label="loss (mean over iter_size)")
    top.plot(it, [float(r["smoothed_loss"]) for r in rows], lw=1.5, color=OURS, label="smoothed (average_loss)")
    top.set_ylabel("loss")
    top.legend(loc="upper right")
    top.set_title(title)
    bottom.plot(it, [float(r["lr"]) for r in rows], color=SECOND)
    bottom.set_ylabel("learning rate")
    bottom.set_xlabel("iteration")
    save_png(fig, out_png)
    return True

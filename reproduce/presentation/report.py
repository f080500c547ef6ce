"""A static HTML report of finished runs: one page per run (mIoU and FB-IoU beside the paper, a
per-class IoU chart, the distribution of per-episode IoU, the best, median and worst episodes as
panels) and an index page. Plain HTML and PNGs: opens from disk, no server, no JavaScript."""
from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from reproduce.errors import ReproduceError
from reproduce.presentation.figure import episode_panels
from reproduce.presentation.finished_run import PICKS, FinishedRun, open_run
from reproduce.presentation.panels import draw_panels
from reproduce.presentation.plots import OURS, PAPER, pyplot, save_png
from reproduce.evaluation.protocols import protocol_of
from reproduce.presentation.tables import PAPER_OTHER_PROTOCOL, TABLES, load_paper
from weights_convert.files.atomic import atomic_write_text

STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
         "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}"
         "th:first-child,td:first-child{text-align:left}img{max-width:100%}.note{color:#a33}"
         "figure{margin:1em 0}figcaption{font-size:90%;color:#555}")


def paper_miou(run: FinishedRun) -> float | None:
    """The published mIoU (x100) for the run's fold and shot count, if the paper has one (of the
    paper's own protocol, whatever the run's)."""
    for table, (_, shots) in TABLES.items():
        if shots == int(run.summary["shots"]):
            return load_paper(table)["folds"][int(run.summary["fold"])]
    return None


def per_class_chart(run: FinishedRun, out_png: Path) -> None:
    plt = pyplot()
    classes = [str(c) for c in run.summary["test_classes"]]
    names = [run.summary["class_names"][c] for c in classes]
    values = [100.0 * run.summary["per_class"][c]["iou"] for c in classes]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bars = ax.bar(names, values, color=OURS)
    for bar, v in zip(bars, values):
        ax.annotate(f"{v:.1f}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
    ax.axhline(100.0 * run.summary["miou"], color=OURS, ls="--", lw=1, label="mIoU (ours)")
    paper = paper_miou(run)
    if paper is not None:
        ax.axhline(paper, color=PAPER, ls="--", lw=1, label="mIoU (paper)" if _comparable(run) else
                   "mIoU (paper, its own protocol)")
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, max(values + [paper or 0.0, 1.0]) * 1.2)
    ax.set_title(f"fold {run.summary['fold']}, {run.summary['shots']}-shot: IoU per test class")
    ax.legend(loc="upper right")
    save_png(fig, out_png)


def episode_iou_chart(run: FinishedRun, out_png: Path) -> None:
    plt = pyplot()
    values = 100.0 * np.array([run.iou(i) for i in range(len(run.rows))])
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(values, bins=np.linspace(0, 100, 21), color=OURS)
    ax.axvline(float(np.median(values)), color=PAPER, ls="--", lw=1, label=f"median {np.median(values):.1f}")
    ax.set_xlabel("per-episode IoU (%)")
    ax.set_ylabel("episodes")
    ax.set_title(f"{len(values)} episodes")
    ax.legend(loc="upper right")
    save_png(fig, out_png)


def _slugs(runs: Sequence[FinishedRun]) -> list[str]:
    """Page names: the run folder's name, with its parent's when two runs share a name."""
    names = [r.name for r in runs]
    slugs = [f"{r.path.parent.name}_{r.name}" if names.count(r.name) > 1 else r.name for r in runs]
    if len(set(slugs)) != len(slugs):
        raise ReproduceError("two runs would get the same report page: " + ", ".join(str(r.path) for r in runs))
    return slugs


def _fmt(v: float | None, signed: bool = False) -> str:
    return "-" if v is None else (f"{v:+.1f}" if signed else f"{v:.1f}")


def _scores_table(run: FinishedRun) -> str:
    s = run.summary
    paper = paper_miou(run)
    ours = 100.0 * s["miou"]
    rows = [("mIoU (%)", _fmt(ours), _fmt(paper), _fmt(_difference(run, ours, paper), True)),
            ("FB-IoU (%)", _fmt(100.0 * s["fb_iou"]), "-", "-")]
    body = "".join(f"<tr><td>{a}</td><td>{b}</td><td>{c}</td><td>{d}</td></tr>" for a, b, c, d in rows)
    paper_head = "paper" if _comparable(run) else html.escape(PAPER_OTHER_PROTOCOL)
    return f"<table><tr><th></th><th>ours</th><th>{paper_head}</th><th>ours - paper</th></tr>{body}</table>"


def _comparable(run: FinishedRun) -> bool:
    """Whether a run's numbers may be set against the paper's."""
    return protocol_of(run.summary).comparable_with_paper


def _difference(run: FinishedRun, ours: float, paper: float | None) -> float | None:
    return None if paper is None or not _comparable(run) else ours - paper


def _protocol_note(run: FinishedRun) -> str:
    note = protocol_of(run.summary).report_note()
    return f"<p class='note'>{note}</p>" if note else ""


def run_page(run: FinishedRun, slug: str, gallery: dict[str, int], note: str) -> str:
    s = run.summary
    figures = "".join(
        f"<figure><img src='{slug}/{pick}.png' alt='{pick} episode'><figcaption>{pick}: episode {i}, "
        f"{html.escape(s['class_names'][str(run.episodes[i].cls)])}, IoU {run.iou(i):.3f}</figcaption></figure>"
        for pick, i in gallery.items())
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{slug}</title><style>{STYLE}</style>"
            f"</head><body><p><a href='index.html'>all runs</a></p>"
            f"<h1>Fold {s['fold']}, {s['shots']}-shot ({html.escape(run.name)})</h1>"
            + (f"<p class='note'>{html.escape(note)}</p>" if note else "")
            + _protocol_note(run) + _scores_table(run)
            + f"<p>{s['n_episodes']} episodes, protocol <code>{html.escape(protocol_of(s).label)}</code>, weights sha256 "
              f"<code>{html.escape(str(s.get('weights_sha256', s.get('model_sha256'))))}</code>, episodes sha256 "
              f"<code>{html.escape(str(s.get('episodes_sha256')))}</code> (the original's list on VOC 2012: "
              f"{html.escape(str(s.get('reference', 'not recorded')))}), run folder "
              f"<code>{html.escape(str(run.path))}</code>.</p>"
            + f"<h2>Per class</h2><img src='{slug}/per_class.png' alt='IoU per class'>"
            + f"<h2>Per episode</h2><img src='{slug}/episode_iou.png' alt='per-episode IoU'>"
            + "<h2>Best, median and worst episodes</h2><p>Supports with their masks (yellow), the query "
              "with its ground truth (green, void white) and with the prediction (red).</p>"
            + figures + "</body></html>\n")


def index_page(runs: Sequence[FinishedRun], slugs: Sequence[str], title: str, note: str) -> str:
    rows = []
    for run, slug in zip(runs, slugs):
        s, paper = run.summary, paper_miou(run)
        ours = 100.0 * s["miou"]
        rows.append(f"<tr><td><a href='{slug}.html'>{html.escape(slug)}</a></td><td>{s['fold']}</td>"
                    f"<td>{s['shots']}</td><td>{html.escape(protocol_of(s).label)}</td><td>{s['n_episodes']}</td>"
                    f"<td>{_fmt(ours)}</td><td>{_fmt(paper)}</td>"
                    f"<td>{_fmt(_difference(run, ours, paper), True)}</td>"
                    f"<td>{_fmt(100.0 * s['fb_iou'])}</td></tr>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            + (f"<p class='note'>{html.escape(note)}</p>" if note else "")
            + "<table><tr><th>run</th><th>fold</th><th>shots</th><th>protocol</th><th>episodes</th>"
              "<th>mIoU</th><th>paper</th><th>ours - paper</th><th>FB-IoU</th></tr>"
            + "".join(rows) + "</table></body></html>\n")


def write_report(run_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *, title: str = "OSLSM runs",
                 note: str = "", voc=None, device: str = "cpu") -> Path:
    """Write out_dir/index.html and one page per run; returns the index's path. Gallery
    predictions come from a run's saved masks or are recomputed with its model."""
    runs = [open_run(d) for d in run_dirs]
    if not runs:
        raise ReproduceError("report: no runs given")
    out = Path(out_dir)
    slugs = _slugs(runs)
    for run, slug in zip(runs, slugs):
        folder = out / slug
        per_class_chart(run, folder / "per_class.png")
        episode_iou_chart(run, folder / "episode_iou.png")
        gallery = {pick: run.pick(pick) for pick in PICKS}
        indices = list(dict.fromkeys(gallery.values()))
        panels = dict(zip(indices, episode_panels(run, indices, voc=voc, device=device)))
        for pick, i in gallery.items():
            draw_panels([panels[i]], folder / f"{pick}.png")
        atomic_write_text(out / f"{slug}.html", run_page(run, slug, gallery, note))
    index = out / "index.html"
    atomic_write_text(index, index_page(runs, slugs, title, note))
    return index

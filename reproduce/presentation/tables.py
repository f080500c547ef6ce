"""The paper's Table 1 (1-shot) and Table 2 (5-shot) beside our runs: Markdown, CSV and a bar chart.

Published numbers come from results/paper/table{1_1shot,2_5shot}.json; ours from the runs'
summary.json (one run per fold).
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path
from typing import Sequence

from reproduce.errors import ReproduceError
from reproduce.evaluation.protocols import protocol_of
from reproduce.training.model_record import describe as describe_model
from reproduce.presentation.claims import REIMPLEMENTED, baseline_notes, claims_markdown, measured_claims
from reproduce.presentation.plots import METHOD_COLOURS, OURS, PAPER, SECOND, pyplot, save_png
from weights_convert.files.atomic import atomic_write_text
from reproduce.data.pascal5i import FOLDS, N_FOLDS

TABLES = {1: ("table1_1shot", 1), 2: ("table2_5shot", 5)}
PAPER_OTHER_PROTOCOL = "OSLSM paper (its own protocol)"
PAPER_DIR = Path(__file__).resolve().parents[2] / "results" / "paper"


def table_stem(table: int) -> str:
    if table not in TABLES:
        raise ReproduceError(f"--table must be 1 (1-shot) or 2 (5-shot), got {table!r}")
    return TABLES[table][0]


def load_paper(table: int, paper_dir: str | os.PathLike = PAPER_DIR) -> dict:
    path = Path(paper_dir) / f"{table_stem(table)}.json"
    try:
        data = json.loads(path.read_text())
        numbers = data["OSLSM"]
        rerun = data.get("released_model_rerun")
        return {"folds": {f: float(numbers[f"fold{f}"]) for f in FOLDS}, "mean": float(numbers["mean"]),
                "fb_iou": data.get("fb_iou_reported_by_later_work"), "source": data.get("source", str(path)),
                "baselines": data.get("baselines", {}), "claims": data.get("claims"),
                "rerun": None if rerun is None else {"label": rerun["label"], "source": rerun["source"],
                                                     "folds": {int(k[4:]): float(v) for k, v in rerun["folds"].items()}}}
    except FileNotFoundError:
        raise ReproduceError(f"{path}: the published numbers are missing (part of the repository)") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ReproduceError(f"{path}: expected {{'OSLSM': {{'fold0'..'fold3', 'mean'}}}} ({exc!r})") from None


def load_run(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir) / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReproduceError(f"{path}: no summary; is {run_dir} a finished `evaluate` run?") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReproduceError(f"{path}: unreadable summary ({exc})") from None
    if not isinstance(summary, dict):
        raise ReproduceError(f"{path}: the summary is not a JSON object")
    for key in ("fold", "shots", "miou", "fb_iou", "n_episodes", "protocol"):
        if key not in summary:
            raise ReproduceError(f"{path}: missing field {key!r}")
    _refuse_stale_summary(Path(run_dir), summary)
    summary["run_dir"] = str(run_dir)
    return summary


def _refuse_stale_summary(run_dir: Path, summary: dict) -> None:
    """A run extended to more episodes and stopped before it finished holds more rows than its
    summary counts: the summary is the shorter run's, not this folder's present state."""
    rows = run_dir / "all_results.csv"
    if not rows.exists():
        return
    count = rows.read_bytes().count(b"\n")
    if count != summary["n_episodes"]:
        raise ReproduceError(f"{run_dir}: summary.json counts {summary['n_episodes']} episodes but "
                             f"all_results.csv holds {count} (an extension that did not finish?); run the same "
                             "evaluate command again to finish it")


def _runs_by_fold(table: int, run_dirs: Sequence[str | os.PathLike]) -> dict[int, dict]:
    shots = TABLES[table][1]
    runs: dict[int, dict] = {}
    for rd in run_dirs:
        s = load_run(rd)
        if int(s["shots"]) != shots:
            raise ReproduceError(f"{rd}: a {s['shots']}-shot run; table {table} is {shots}-shot")
        fold = int(s["fold"])
        if fold in runs:
            raise ReproduceError(f"two runs for fold {fold}: {runs[fold]['run_dir']} and {rd}")
        runs[fold] = s
    if not runs:
        raise ReproduceError("no runs given")
    return runs


def build_table(table: int, run_dirs: Sequence[str | os.PathLike], paper_dir=PAPER_DIR,
                baseline: tuple[str, Sequence[str | os.PathLike]] | None = None,
                methods: Sequence[tuple[str, Sequence[str | os.PathLike]]] = ()) -> dict:
    """Rows per fold and the mean: paper, ours (x100), ours - paper, our FB-IoU (x100); with
    `baseline` (label, run folders) the mIoU of other runs to compare ours with (e.g. before
    training); with `methods` ((label, run folders) of re-run baselines, on OSLSM's episodes) a row
    each and the abstract's claims measured (claims.py)."""
    stem = table_stem(table)
    shots = TABLES[table][1]
    paper = load_paper(table, paper_dir)
    runs = _runs_by_fold(table, run_dirs)
    others = _runs_by_fold(table, baseline[1]) if baseline else {}
    compared = [(label, _same_episodes(label, runs, _runs_by_fold(table, dirs))) for label, dirs in methods]
    protocols = {protocol_of(s) for s in [*runs.values(), *others.values(),
                                           *(s for _, by_fold in compared for s in by_fold.values())]}
    if len(protocols) > 1:
        raise ReproduceError(f"runs mix scoring protocols ({', '.join(sorted(p.label for p in protocols))}); "
                             "a table needs one")
    protocol = protocols.pop()
    # The paper's numbers are of its own protocol: set beside another's, never subtracted from them.
    comparable = protocol.comparable_with_paper
    rows = []
    for f in FOLDS:
        s = runs.get(f)
        ours = None if s is None else 100.0 * float(s["miou"])
        rows.append({"fold": f"fold{f}", "paper_miou": paper["folds"][f], "ours_miou": ours,
                     "rerun_miou": paper["rerun"]["folds"].get(f) if paper["rerun"] else None,
                     "difference": None if ours is None or not comparable else ours - paper["folds"][f],
                     "ours_fb_iou": None if s is None else 100.0 * float(s["fb_iou"]),
                     "episodes": None if s is None else int(s["n_episodes"]),
                     "baseline_miou": 100.0 * float(others[f]["miou"]) if f in others else None,
                     "methods": {label: 100.0 * float(by_fold[f]["miou"]) if f in by_fold else None
                                 for label, by_fold in compared}})
    complete = len(runs) == len(FOLDS)
    mean_ours = sum(r["ours_miou"] for r in rows) / N_FOLDS if complete else None
    mean_fb = sum(r["ours_fb_iou"] for r in rows) / N_FOLDS if complete else None
    mean_baseline = sum(r["baseline_miou"] for r in rows) / N_FOLDS if len(others) == len(FOLDS) else None
    rows.append({"fold": "mean", "paper_miou": paper["mean"], "ours_miou": mean_ours, "rerun_miou": None,
                 "difference": None if mean_ours is None or not comparable else mean_ours - paper["mean"],
                 "ours_fb_iou": mean_fb, "episodes": None, "baseline_miou": mean_baseline,
                 "methods": {label: sum(r["methods"][label] for r in rows) / N_FOLDS if len(by_fold) == N_FOLDS
                             else None for label, by_fold in compared}})
    return {"table": table, "stem": stem + protocol.table_suffix, "shots": shots, "protocol": protocol,
            "paper_label": "paper" if comparable else PAPER_OTHER_PROTOCOL,
            "rows": rows,
            "baseline_label": baseline[0] if baseline else None,
            "methods": [label for label, _ in compared], "published": paper["baselines"],
            "claims": measured_claims(rows, runs, dict(compared), paper["claims"]) if compared else None,
            "paper_source": paper["source"], "paper_fb_iou": paper["fb_iou"], "rerun": paper["rerun"],
            "runs": {f: {"run_dir": runs[f]["run_dir"], "model_sha256": runs[f].get("model_sha256"),
                         "weights_sha256": runs[f].get("weights_sha256", runs[f].get("model_sha256")),
                         "episodes_sha256": runs[f].get("episodes_sha256"),
                         "training": runs[f].get("weights_training"),
                         "reference": runs[f].get("reference", "not recorded")} for f in sorted(runs)}}


def _same_episodes(label: str, runs: dict[int, dict], by_fold: dict[int, dict]) -> dict[int, dict]:
    """A baseline's runs, refused unless each fold's ran the very episodes OSLSM's run did."""
    for fold, summary in by_fold.items():
        ours = runs.get(fold)
        if ours is not None and summary.get("episodes_sha256") != ours.get("episodes_sha256"):
            raise ReproduceError(f"{summary['run_dir']}: {label} ran other episodes than OSLSM's fold-{fold} run "
                                 f"{ours['run_dir']}; a comparison needs identical episodes")
    return by_fold


def _fmt(v, signed: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.1f}" if signed else f"{v:.1f}"


def table_markdown(t: dict, note: str = "") -> str:
    heads = [r["fold"] for r in t["rows"]]
    protocol = t["protocol"]
    lines = [f"# {protocol.table_heading(t['table'], t['shots'])}", ""]
    if note:
        lines += [note, ""]
    if protocol.table_note():
        lines += [protocol.table_note(), ""]
    lines += ["| | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(heads)]
    ours = protocol.ours_label
    lines.append(f"| {t['paper_label']} | " + " | ".join(_fmt(r["paper_miou"]) for r in t["rows"]) + " |")
    if t["rerun"]:  # the original code on a released model, run by others: where the paper's model may stand
        rerun = t["rerun"]["label"] + ("" if protocol.comparable_with_paper else " (its own protocol)")
        lines.append(f"| {rerun} | " + " | ".join(_fmt(r["rerun_miou"]) for r in t["rows"]) + " |")
    lines.append(f"| {ours} | " + " | ".join(_fmt(r["ours_miou"]) for r in t["rows"]) + " |")
    if t["baseline_label"]:
        lines.append(f"| {t['baseline_label']} | " + " | ".join(_fmt(r["baseline_miou"]) for r in t["rows"]) + " |")
    for label in t["methods"]:
        lines.append(f"| {label} ({REIMPLEMENTED}) | " + " | ".join(_fmt(r["methods"][label]) for r in t["rows"]) + " |")
    for label in t["published"].get("published_only", {}) if t["methods"] else ():
        lines.append(f"| {label} (published only, not re-run) | " + " | ".join("-" for _ in t["rows"]) + " |")
    if protocol.comparable_with_paper:
        difference = "ours - paper" if protocol.papers_own else f"{ours} - paper (original)"
        lines.append(f"| {difference} | " + " | ".join(_fmt(r["difference"], True) for r in t["rows"]) + " |")
    lines.append(f"| {ours} FB-IoU | " + " | ".join(_fmt(r["ours_fb_iou"]) for r in t["rows"]) + " |")
    eps = sorted({r["episodes"] for r in t["rows"] if r["episodes"] is not None})
    lines += ["", f"- Paper: {t['paper_source']}."]
    if t["rerun"]:
        lines.append(f"- {t['rerun']['label'][0].upper()}{t['rerun']['label'][1:]}: {t['rerun']['source']}. "
                     "The authors' released models are incomplete (upstream issue lzzcd001/OSLSM #9: fold 2 is "
                     "missing), so most tables are of re-trained models.")
    lines += [
              f"- Ours: scoring protocol `{protocol.label}`, {', '.join(map(str, eps))} episodes per fold "
              f"(the paper: 1000); mIoU is the mean IoU of a fold's 5 test classes, x100.",
              f"- FB-IoU is not in the paper; later work quotes {t['paper_fb_iou']} for OSLSM {t['shots']}-shot."]
    if t["methods"]:
        lines += baseline_notes(t)
    missing = [r["fold"] for r in t["rows"][:N_FOLDS] if r["ours_miou"] is None]
    if missing:
        lines.append(f"- Missing runs: {', '.join(missing)} (no mean for ours).")
    for f, r in t["runs"].items():
        lines.append(f"- fold{f}: {r['run_dir']} (weights sha256 {str(r['weights_sha256'])[:12]}, "
                     f"episodes sha256 {str(r['episodes_sha256'])[:12]}; the original's episode list on "
                     f"VOC 2012: {r['reference']}); model: {describe_model(r['training'])}")
    if t["claims"]:
        lines += ["", *claims_markdown(t["claims"])]
    return "\n".join(lines) + "\n"


def table_csv(t: dict) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    columns = ["paper_miou", "rerun_miou", "ours_miou", "difference", "ours_fb_iou", "episodes"]
    columns += ["baseline_miou"] if t["baseline_label"] else []
    method_columns = {re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_") + "_miou": label for label in t["methods"]}
    columns += list(method_columns)
    own = {"paper_miou": "paper_own_protocol_miou", "rerun_miou": "rerun_own_protocol_miou"}
    if not t["protocol"].comparable_with_paper:  # the paper's protocol is another: named, no difference column
        columns = [own.get(k, k) for k in columns if k != "difference"]
    writer.writerow(["fold", *columns, "protocol"])
    for r in t["rows"]:
        r = {**r, **{name: r[k] for k, name in own.items()},
             **{column: r["methods"][label] for column, label in method_columns.items()}}
        writer.writerow([r["fold"]] + ["" if r[k] is None else (f"{r[k]:.4f}" if isinstance(r[k], float) else r[k])
                                       for k in columns] + [t["protocol"].label])
    return buf.getvalue()


def table_png(t: dict, path: str | os.PathLike, note: str = "") -> None:
    import textwrap

    import numpy as np

    plt = pyplot()
    labels = [r["fold"] + ("" if r["difference"] is None else f"\n{r['difference']:+.1f}") for r in t["rows"]]
    x = np.arange(len(labels))
    series = [(t["paper_label"], PAPER, [r["paper_miou"] for r in t["rows"]]),
              ("ours", OURS, [np.nan if r["ours_miou"] is None else r["ours_miou"] for r in t["rows"]])]
    if t["baseline_label"]:
        series.append((t["baseline_label"], SECOND,
                       [np.nan if r["baseline_miou"] is None else r["baseline_miou"] for r in t["rows"]]))
    for label, colour in zip(t["methods"], METHOD_COLOURS):
        series.append((label, colour, [np.nan if r["methods"][label] is None else r["methods"][label] for r in t["rows"]]))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for i, (label, colour, values) in enumerate(series):
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=label, color=colour)
        for bar, v in zip(bars, values):
            if v == v:  # not NaN
                ax.annotate(f"{v:.1f}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x)
    ax.set_xticklabels(labels)
    ax.set_ylabel("mIoU (%)")
    top = max([v for _, _, values in series for v in values if v == v] + [1.0])
    ax.set_ylim(0, top * 1.15)
    title = f"Table {t['table']}: OSLSM {t['shots']}-shot on PASCAL-5i" + (
        "" if t["protocol"].papers_own else f", protocol {t['protocol'].label}")
    ax.set_title("\n".join([title] + textwrap.wrap(note, 90)), fontsize=9)
    ax.set_xlabel("fold" + (" (ours - paper below)" if t["protocol"].comparable_with_paper else ""), fontsize=8)
    ax.legend()
    save_png(fig, path)


def write_table(table: int, run_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                note: str = "", paper_dir=PAPER_DIR,
                baseline: tuple[str, Sequence[str | os.PathLike]] | None = None,
                methods: Sequence[tuple[str, Sequence[str | os.PathLike]]] = ()) -> dict[str, Path]:
    """Write table{T}_{k}shot{protocol suffix}.md/.csv/.png under out_dir; returns their paths."""
    t = build_table(table, run_dirs, paper_dir, baseline, methods)
    out = Path(out_dir)
    paths = {ext: out / f"{t['stem']}.{ext}" for ext in ("md", "csv", "png")}
    atomic_write_text(paths["md"], table_markdown(t, note))
    atomic_write_text(paths["csv"], table_csv(t))
    table_png(t, paths["png"], note)
    return paths

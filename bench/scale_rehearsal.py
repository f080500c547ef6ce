"""VOC-scale rehearsal of Tables 1 and 2 on CPU (run on demand; about an hour for all folds).

    .venv/bin/python bench/scale_rehearsal.py [--folds 0 1 2 3] [--episodes 1000] [--work DIR] [--no-write]

Builds a VOC2012-layout val set whose items are exactly the ones the original kept on the real
VOC 2012 (1,449 textured 375x500 images), writes a random full-size (VGG-16 widths, 1.1 GB)
OSLSM caffemodel per fold, then runs what `make convert` and `make reproduce-tables` run
(`convert`, then `table-run --table 1 2`), each as its own process. Records wall time per
stage, query and support forward counts against the distinct counts of the episodes, peak RSS,
bytes written beside the outputs, and whether the episode lists are the original's.
`--folds 0 --episodes 20` is a quick variant.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")  # before numpy: see reproduce/__init__.py

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eval_bench import machine, write_section  # noqa: E402

VOC_HW = (375, 500)
SECTION = "## VOC-scale rehearsal"


def timed_process(command: list[str], log: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in GiB) of one command, its output in `log`."""
    peak_file = log.with_suffix(".maxrss")
    start = time.perf_counter()
    with open(log, "w") as out:
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(peak_file), *command], check=True, stdout=out,
                       stderr=subprocess.STDOUT, cwd=ROOT)
    return time.perf_counter() - start, int(peak_file.read_text().split()[-1]) / (1 << 20)


def build_inputs(work: Path, folds: list[int]) -> dict[str, float]:
    """The reference-item VOC set and one random full-size caffemodel per fold (kept between runs)."""
    from reproduce.data.synthetic_voc import make_reference_voc
    from weights_convert.oslsm import OSLSMWidths
    from weights_convert.oslsm.random_init import random_oslsm_params, write_oslsm_caffemodel

    seconds = {}
    voc = work / "VOC2012"
    if not (voc / "ImageSets" / "Segmentation" / "val.txt").is_file():
        shutil.rmtree(voc, ignore_errors=True)
        t = time.perf_counter()
        make_reference_voc(voc, textured=True, image_hw=VOC_HW)
        seconds["build VOC-scale set"] = time.perf_counter() - t
    missing = [f for f in folds if not (work / "caffemodels" / f"oslsm_full_fold{f}.caffemodel").is_file()]
    t = time.perf_counter()
    for fold in missing:
        write_oslsm_caffemodel(work / "caffemodels" / f"oslsm_full_fold{fold}.caffemodel",
                               random_oslsm_params(OSLSMWidths.FULL, seed=fold, hashing=True))
    if missing:
        seconds[f"write {len(missing)} full-size caffemodel(s)"] = time.perf_counter() - t
    return seconds  # stages whose outputs an earlier run left are not rebuilt, and not listed


def distinct_counts(run: Path) -> tuple[int, int]:
    """Distinct query images and (support image, class) pairs of a run's episode list."""
    episodes = json.loads((run / "episodes.json").read_text())["episodes"]
    return len({e["query"] for e in episodes}), len({(s, e["cls"]) for e in episodes for s in e["supports"]})


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--episodes", type=int, default=1000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--work", default=str(ROOT / "bench" / "out" / "scale"))
    ap.add_argument("--no-write", action="store_true", help="print only, leave bench/RESULTS.md alone")
    args = ap.parse_args(argv)
    work = Path(args.work)
    seconds = build_inputs(work, args.folds)
    results = work / "results"
    shutil.rmtree(results, ignore_errors=True)  # the stages below are what is measured
    python = [sys.executable]
    prototxt = ROOT / "prototxt" / "deploy_1shot.prototxt"
    convert_s, convert_peak = 0.0, 0.0
    for fold in args.folds:  # `make convert`, fold by fold (convert-folds wants all four)
        wall, peak = timed_process([*python, "-m", "weights_convert", "convert", "--model", "oslsm", "--label",
                                    f"fold={fold}", "--prototxt", str(prototxt), "--caffemodel",
                                    str(work / "caffemodels" / f"oslsm_full_fold{fold}.caffemodel"),
                                    "--out", str(results / "models" / f"fold{fold}.safetensors")],
                                   work / f"convert_fold{fold}.log")
        convert_s, convert_peak = convert_s + wall, max(convert_peak, peak)
    seconds["convert"] = convert_s
    tables_s, tables_peak = timed_process(
        [*python, "-m", "reproduce", "--quiet", "table-run", "--table", "1", "2", "--voc", str(work / "VOC2012"),
         "--models", str(results / "models"), "--episodes", str(args.episodes), "--device", args.device,
         "--out", str(results), "--folds", *map(str, args.folds)], work / "tables.log")
    seconds["reproduce-tables"] = tables_s
    rows = []
    for fold in args.folds:
        runs = {t: results / "runs" / f"table{t}_fold{fold}" for t in (1, 2)}
        timings = json.loads((runs[2] / "timings.json").read_text())
        queries, supports = distinct_counts(runs[2])
        references = [json.loads((runs[t] / "summary.json").read_text())["reference"] for t in (1, 2)]
        rows.append({"fold": fold, "query_forwards": timings["forwards"]["query"], "distinct_queries": queries,
                     "support_forwards": timings["forwards"]["support"], "distinct_supports": supports,
                     "references": references})
    written = {"runs": folder_bytes(results / "runs"), "cache": folder_bytes(results / "cache"),
               "models": folder_bytes(results / "models")}
    report = describe(args, seconds, convert_peak, tables_peak, rows, written)
    print(report)
    if not args.no_write:
        write_section(ROOT / "bench" / "RESULTS.md", report, SECTION)
    return 0 if all(r["query_forwards"] == r["distinct_queries"] and r["support_forwards"] == r["distinct_supports"]
                    for r in rows) else 1


def describe(args, seconds: dict, convert_peak: float, tables_peak: float, rows: list[dict], written: dict) -> str:
    lines = [SECTION, "",
             f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC by `bench/scale_rehearsal.py` on: "
             f"{machine()} ({platform.platform()}), device `{args.device}`.", "",
             f"A VOC2012-layout val set with exactly the original's items (1,449 textured {VOC_HW[0]}x{VOC_HW[1]} "
             f"images), random full-size OSLSM caffemodels (1.1 GB each), folds {args.folds}, {args.episodes} "
             "episodes per fold and shot count; `convert` then `table-run --table 1 2` (what `make convert` and "
             "`make reproduce-tables` run), each its own process.", "",
             "| stage | wall (s) | peak RSS (GiB) |", "|---|---:|---:|"]
    peaks = {"convert": f"{convert_peak:.2f}", "reproduce-tables": f"{tables_peak:.2f}"}
    lines += [f"| {stage} | {s:.1f} | {peaks.get(stage, '-')} |" for stage, s in seconds.items()]
    lines += ["", "| fold | query forwards (distinct queries) | support forwards (distinct pairs) | "
              "episode lists vs the original's (1-shot, 5-shot) |", "|---|---:|---:|---|"]
    lines += [f"| {r['fold']} | {r['query_forwards']} ({r['distinct_queries']}) | {r['support_forwards']} "
              f"({r['distinct_supports']}) | {', '.join(r['references'])} |" for r in rows]
    lines += ["", f"Written beside the converted models ({written['models'] / 1e9:.2f} GB): run folders "
              f"{written['runs'] / 1e3:.0f} kB, cache {written['cache'] / 1e3:.0f} kB (the mask scan; no "
              "feature cache on disk by default).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

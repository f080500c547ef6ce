"""The abstract's two claims measured on a table's own episodes: OSLSM's relative mIoU gain over
the best re-run baseline, and each method's time per episode on the machine that ran them (from
the runs' timings.json: one session's wall time of the episode loop, features included, divided
by the episodes it scored; a method's image features are computed once per image for all the
episodes of a pass, OSLSM's and the baselines' alike)."""
from __future__ import annotations

import json
from pathlib import Path

REIMPLEMENTED = "re-implemented from the paper's description"


def seconds_per_episode(run_dir: str | Path) -> tuple[float, str, int] | None:
    """(seconds, where, features read from an earlier run's disk cache) of a run's last session,
    or None when it recorded none."""
    path = Path(run_dir) / "timings.json"
    if not path.is_file():
        return None
    timings = json.loads(path.read_text())
    seconds = timings.get("seconds_per_episode")
    if seconds is None and timings.get("episodes_per_s"):
        seconds = 1.0 / timings["episodes_per_s"]
    if seconds is None:
        return None
    cache = timings.get("cache_stats", {})
    return (float(seconds), f"{timings.get('device')}, {timings.get('machine')}, {timings.get('threads')} threads",
            int(cache.get("query_disk_hits", 0)) + int(cache.get("support_disk_hits", 0)))


def _mean_time(by_fold: dict[int, dict]) -> tuple[float, str, int] | None:
    found = [seconds_per_episode(s["run_dir"]) for s in by_fold.values()]
    if not found or any(f is None for f in found):
        return None
    return sum(f[0] for f in found) / len(found), found[0][1], sum(f[2] for f in found)


def measured_claims(rows: list[dict], runs: dict[int, dict], compared: dict[str, dict[int, dict]],
                    paper: dict | None) -> dict:
    """Relative gain over the best baseline (over the folds every method ran, mean of fold mIoUs)
    and seconds per episode of each method."""
    folds = [r for r in rows[:-1] if r["ours_miou"] is not None and all(v is not None for v in r["methods"].values())]
    gain = None
    if folds:
        ours = sum(r["ours_miou"] for r in folds) / len(folds)
        means = {label: sum(r["methods"][label] for r in folds) / len(folds) for label in compared}
        best = max(means, key=means.get)
        gain = {"ours": ours, "best": best, "best_miou": means[best], "folds": [r["fold"] for r in folds],
                "percent": 100.0 * (ours - means[best]) / means[best] if means[best] > 0 else None}
    times = {"OSLSM": _mean_time(runs), **{label: _mean_time(by_fold) for label, by_fold in compared.items()}}
    return {"gain": gain, "times": times, "paper": paper}


def claims_markdown(claims: dict) -> list[str]:
    paper = claims["paper"] or {}
    lines = ["## The abstract's claims, measured on these episodes", ""]
    gain = claims["gain"]
    if gain is None or gain["percent"] is None:
        lines.append("- Relative mIoU gain over the best re-run baseline: not measurable (no fold that every "
                     "method ran, or a baseline at 0).")
    else:
        lines.append(f"- OSLSM's relative mIoU gain over the best re-run baseline ({gain['best']}, "
                     f"{gain['best_miou']:.1f}) on {', '.join(gain['folds'])}: {gain['percent']:+.1f}% "
                     f"(OSLSM {gain['ours']:.1f}); the paper: {paper.get('relative_improvement_percent', '?')}% "
                     "for one-shot.")
    oslsm = claims["times"].get("OSLSM")
    timed = [f"{label} {t[0]:.3f} s" + (f" ({t[0] / oslsm[0]:.1f}x OSLSM's)" if oslsm and label != "OSLSM" else "")
             for label, t in claims["times"].items() if t is not None]
    where = next((t[1] for t in claims["times"].values() if t is not None), None)
    lines.append(f"- Seconds per episode, measured here ({where}): {'; '.join(timed)}; the paper: OSLSM at least "
                 f"{paper.get('speedup', '?')}x faster." if timed else
                 "- Seconds per episode: not recorded by these runs.")
    if oslsm and oslsm[2]:
        lines.append(f"  OSLSM's runs read {oslsm[2]} image features from an earlier run's disk cache (--cache-dir): "
                     "its time leaves their computation out, so the ratios flatter it.")
    if paper.get("source"):
        lines.append(f"- Claims: {paper['source']}.")
    return lines


def baseline_notes(t: dict) -> list[str]:
    published = t["published"].get("published", {})
    lines = [f"- Baselines ({', '.join(t['methods'])}): {REIMPLEMENTED} (section 6; patch labels and 1-NN as the first "
             "author describes them on upstream issue lzzcd001/OSLSM #11), on the base net that `train-base` trains, "
             "each on OSLSM's very episodes (checked by their sha256) and scored by the same protocol."]
    if not any(published.get(label) is not None for label in t["methods"]):
        lines.append("- The paper's own baseline values are not sourced here (results/paper/README.md), so no "
                     "published baseline row stands beside the re-run ones.")
    for label, why in t["published"].get("published_only", {}).items():
        lines.append(f"- {label}: {why}.")
    return lines

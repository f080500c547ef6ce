"""The one check of numeric options: finite, in range, and within what the run can use (an
episode list and a scoring grid must fit in this machine's memory). Each check returns the
problem in words (None when the value is fine); commands report them with their other argument
problems (exit 2) before anything is written."""
from __future__ import annotations

import math
import os

# Held per episode while a list is built and scored (ids, classes, rows): measured ~0.4 KiB, kept generous.
EPISODE_BYTES = 2048
# Per pixel of an hsnet scoring grid: the resized float32 score, the mask, the comparisons (x2 margin).
GRID_PIXEL_BYTES = 64


def available_memory() -> int:
    """Bytes this machine can still give (MemAvailable; the physical size where unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def count_problem(value: int, low: int = 1) -> str | None:
    return None if value >= low else f"must be >= {low}, got {value}"


def _fits_problem(value: int, need: int, what: str, usual: str) -> str | None:
    """A count >= 1 whose `need` bytes fit in half of the memory this machine has available."""
    if count_problem(value):
        return count_problem(value)
    if need > available_memory() // 2:
        return (f"{value} needs about {_gib(need)} {what}; this machine has {_gib(available_memory())} "
                f"available ({usual})")
    return None


def episodes_problem(value: int) -> str | None:
    return _fits_problem(value, value * EPISODE_BYTES, "to hold the episode list", "the paper uses 1000")


def grid_problem(value: int) -> str | None:
    return _fits_problem(value, value * value * GRID_PIXEL_BYTES, f"for its {value}x{value} scoring grid",
                         "HSNet scores at 400")


def size_gb_problem(value: float) -> str | None:
    if not math.isfinite(value) or value < 0:
        return f"must be a finite size in GB >= 0, got {value}"
    return None


def rate_problem(value: float) -> str | None:
    if not math.isfinite(value) or value <= 0:
        return f"must be a finite rate > 0, got {value}"
    return None


# Each numeric option of the reproduce commands (argparse dest -> its check): a command that takes
# one reports its problems with its other argument problems (numeric_problems), before any write.
CHECKS = {"episodes": episodes_problem, "workers": count_problem, "iters": count_problem,
          "snapshot_every": count_problem, "ranks_per_fold": count_problem, "images": count_problem,
          "train_images": count_problem, "train_iters": count_problem, "hsnet_size": grid_problem,
          "cache_max_gb": size_gb_problem, "base_lr": rate_problem}


def numeric_problems(args, dests: tuple[str, ...] | None = None) -> list[str]:
    """Every numeric option given in `args` (those named in `dests`, default all) that its check
    refuses, as '--flag why'."""
    problems = []
    for dest, check in CHECKS.items():
        if dests is not None and dest not in dests:
            continue
        value = getattr(args, dest, None)
        found = None if value is None else check(value)
        if found:
            problems.append(f"--{dest.replace('_', '-')} {found}")
    return problems

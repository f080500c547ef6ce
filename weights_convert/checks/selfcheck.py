"""The self-check: every golden case on one device, then its timings, as one record
(selfcheck.json) and a printed table. A user sends us the record when a case fails."""
from __future__ import annotations

import datetime as dt
import json
import platform
import time
from pathlib import Path

import torch

from weights_convert.checks import golden as golden_checks
from weights_convert.files.atomic import atomic_write_text


def environment(device: torch.device) -> dict:
    """What decides the numbers: torch, its CUDA and cuDNN, the device and its driver."""
    from weights_convert.files.provenance import hardware

    env = {"torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
           "device": str(device), "hardware": hardware(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update({"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                    "gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                    "driver": _driver_version()})
    return env


def _driver_version() -> str | None:
    try:
        import subprocess

        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)
        return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def run_selfcheck(device_name: str, golden: str | None = None, timings: bool = True) -> dict:
    from weights_convert.runtime.numerics import faithful_mode

    device = torch.device(device_name)
    cases_dir, train_dir = golden_checks.golden_folders(golden)
    started = time.perf_counter()
    with faithful_mode():
        checks = (golden_checks.layer_cases(cases_dir, device_name) + golden_checks.oslsm_module_cases(cases_dir, device_name)
                  + golden_checks.training_pass(train_dir, device_name) + golden_checks.solver_cases(train_dir, device_name)
                  + [golden_checks.solverstate_round_trip(train_dir)])
    record = {"format": "oslsm-repro-selfcheck/1", "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "environment": environment(device), "passed": all(c.passed for c in checks),
              "cases": [{"group": c.group, "name": c.name, "worst_over_tolerance": c.ratio, "passed": c.passed,
                         "note": c.note} for c in checks],
              "cases_seconds": round(time.perf_counter() - started, 1)}
    if timings:
        record["timings"] = device_timings(device)
    return record


def device_timings(device: torch.device) -> dict:
    from weights_convert.checks import device_timing
    from weights_convert.runtime.numerics import faithful_mode

    with faithful_mode():
        conv = device_timing.conv_throughput(device)
        query = device_timing.query_forward(device)
        train = device_timing.train_pass(device)
    return {"conv_float32": conv, "query_forward": query, "train_pass": train}


def table_lines(record: dict) -> list[str]:
    env = record["environment"]
    lines = [f"self-check on {env['device']} ({env['hardware']}), torch {env['torch']}"
             + (f", CUDA {env['cuda']}, cuDNN {env['cudnn']}, driver {env['driver']}" if "cuda" in env else ""),
             f"{'group':<16} {'case':<62} {'worst/tol':>10}  result"]
    for case in record["cases"]:
        ratio = case["worst_over_tolerance"]
        lines.append(f"{case['group']:<16} {case['name'][:62]:<62} {ratio:>10.3g}  "
                     f"{'pass' if case['passed'] else 'FAIL ' + case['note']}")
    failed = sum(not c["passed"] for c in record["cases"])
    lines.append(f"{len(record['cases']) - failed} passed, {failed} failed ({record['cases_seconds']} s)")
    timings = record.get("timings")
    if timings:
        conv = timings["conv_float32"]
        lines.append(f"float32 convolution: {conv['flops_per_s'] / 1e9:.0f} GFLOP/s; full-size query forward "
                     f"{timings['query_forward']['seconds']:.3f} s; full-size training pass "
                     f"{timings['train_pass']['seconds']:.3f} s")
    return lines


def write_record(record: dict, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "selfcheck.json"
    atomic_write_text(path, json.dumps(record, indent=1, default=str) + "\n")
    return path

"""Every fold's training at once: one `reproduce train` process per fold (a torchrun job of R
ranks with --ranks-per-fold R), folds queued on the device slots given, each fold's folder exactly
what `train` writes (resumable, locked). One progress line per fold; a stop request stops them
all (each snapshots its last finished iteration) and the same command resumes them all. Each
finished fold's newest snapshot is copied to models/oslsm_fold{F}_iter_{N}.caffemodel, where
`convert-folds` and `make reproduce-tables MODELS=...` find it."""
from __future__ import annotations

import ctypes
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from reproduce.errors import ReproduceError
from weights_convert.files.atomic import atomic_path

POLL_S = 2.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclasses.dataclass
class FoldJob:
    fold: int
    folder: Path             # the fold's training folder
    argv: list[str]          # the command's arguments besides --fold, --device and --out
    command: str = "train"   # or "train-base" (its trainer's folder is folder/run)
    process: subprocess.Popen | None = None
    started: float = 0.0
    seen: tuple[float, int] | None = None  # (time, iteration) when this session first saw progress

    @property
    def trainer_folder(self) -> Path:
        """Where its losses.csv and snapshots are."""
        return self.folder / "run" if self.command == "train-base" else self.folder


def device_slots(devices: Sequence[str], ranks_per_fold: int) -> list[list[str]]:
    """The devices in groups of `ranks_per_fold`: each group runs one fold at a time."""
    if ranks_per_fold < 1 or len(devices) % ranks_per_fold:
        raise ReproduceError(f"{len(devices)} device(s) do not split into groups of --ranks-per-fold "
                             f"{ranks_per_fold}")
    return [list(devices[i:i + ranks_per_fold]) for i in range(0, len(devices), ranks_per_fold)]


def fold_command(job: FoldJob, slot: list[str]) -> tuple[list[str], dict]:
    """The command and environment of one fold on one slot: a plain process on one device, a
    torchrun job with a rank per device (on CUDA the slot's GPUs are made the visible ones)."""
    env = dict(os.environ)
    tail = ["-m", "reproduce", job.command, "--fold", str(job.fold), "--out", str(job.folder), "--no-progress",
            *job.argv]
    if len(slot) == 1:
        return [sys.executable, *tail, "--device", slot[0]], env
    if slot[0].startswith("cuda"):
        env["CUDA_VISIBLE_DEVICES"] = ",".join(s.partition(":")[2] or "0" for s in slot)
    return ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(len(slot)),
             *tail, "--device", "cuda" if slot[0].startswith("cuda") else "cpu"], env)


def run_all(jobs: list[FoldJob], slots: list[list[str]], logs: Path, target: int | None) -> dict[int, int]:
    """Run the jobs, at most one per slot at a time; fold -> exit status. Ctrl-C or SIGTERM stops
    every running fold (they snapshot) and is raised again once they have."""
    logs.mkdir(parents=True, exist_ok=True)
    queue, running, done = list(jobs), {}, {}
    try:
        while queue or running:
            for index, slot in enumerate(slots):
                if index not in running and queue:
                    running[index] = _start(queue.pop(0), slot, logs)
            time.sleep(POLL_S)
            for index, job in list(running.items()):
                if job.process.poll() is not None:
                    done[job.fold] = job.process.returncode
                    del running[index]
            print_progress([*running.values()], target)
    except KeyboardInterrupt:
        for job in running.values():
            _stop(job.process)
        for job in running.values():
            job.process.wait()
        raise
    return done


def _start(job: FoldJob, slot: list[str], logs: Path) -> FoldJob:
    command, env = fold_command(job, slot)
    log = open(logs / f"fold{job.fold}.log", "ab")
    # A session of its own: a Ctrl-C at the terminal reaches this process, which stops the folds in order;
    # and should this process be killed outright, each fold is sent SIGTERM (it snapshots and exits).
    job.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                   preexec_fn=terminated_with_parent(os.getpid()))
    log.close()
    job.started = time.time()
    print(f"fold {job.fold}: started on {', '.join(slot)} (log {logs / f'fold{job.fold}.log'})", file=sys.stderr,
          flush=True)
    return job


def terminated_with_parent(parent: int):
    """A preexec_fn for Linux: the child gets SIGTERM when `parent` dies (PR_SET_PDEATHSIG), so a
    SIGKILLed train-all leaves no fold training on behind it. Elsewhere: None (nothing to set)."""
    if not sys.platform.startswith("linux"):
        return None

    def tie() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before the tie was made
            os.kill(os.getpid(), signal.SIGTERM)
    return tie


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the fold's process group (torchrun and its ranks): each snapshots and exits."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def last_iteration(folder: Path) -> tuple[int, float] | None:
    """(iteration, smoothed loss) of the newest row of a fold's losses.csv."""
    path = folder / "losses.csv"
    try:
        lines = path.read_text().strip().splitlines()
    except OSError:
        return None
    if len(lines) < 2:
        return None
    fields = lines[-1].split(",")
    try:
        return int(fields[0]) + 1, float(fields[1])
    except (ValueError, IndexError):
        return None


def print_progress(jobs: Sequence[FoldJob], target: int | None) -> None:
    for job in jobs:
        now, last = time.time(), last_iteration(job.trainer_folder)
        if last is None:
            continue
        iteration, loss = last
        if job.seen is None:
            job.seen = (now, iteration)
        elapsed, gained = now - job.seen[0], iteration - job.seen[1]
        rate = gained / elapsed * 60 if elapsed > 0 and gained > 0 else None
        eta = f", ETA {(target - iteration) / rate:.0f} min" if rate and target else ""
        print(f"fold {job.fold}: {iteration}/{target or '?'} it, smoothed loss {loss:.6g}"
              + (f", {rate:.2f} it/min{eta}" if rate else ""), file=sys.stderr, flush=True)


def newest_snapshot(folder: Path) -> tuple[int, Path] | None:
    found = [(int(m.group(1)), p) for p in folder.glob("snapshot_iter_*.caffemodel")
             if (m := re.fullmatch(r"snapshot_iter_(\d+)\.caffemodel", p.name))
             and p.with_suffix(".trainstate.json").exists()]
    return max(found) if found else None


def publish_model(fold: int, folder: Path, models: Path, prefix: str = "oslsm") -> Path:
    """Copy the fold's newest complete snapshot to models/{prefix}_fold{F}_iter_{N}.caffemodel, with
    its training record beside it (model_record.py), replacing older ones."""
    from reproduce.training.model_record import record_path, write_training_record

    newest = newest_snapshot(folder)
    if newest is None:
        raise ReproduceError(f"fold {fold}: {folder} holds no complete snapshot")
    iteration, source = newest
    target = models / f"{prefix}_fold{fold}_iter_{iteration}.caffemodel"
    models.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    write_training_record(target, fold, iteration, folder)
    for old in models.glob(f"{prefix}_fold{fold}_iter_*.caffemodel"):
        if old != target:
            old.unlink()
            record_path(old).unlink(missing_ok=True)
    return target

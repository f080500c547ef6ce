"""One process at a time in an output folder: an advisory lock (flock) on a file inside it that
holds the owner's pid, so that a second run is refused in words instead of interleaving its
writes with the first's. The kernel drops the lock when its process dies, even by SIGKILL; the
next holder removes the temporary files such a process was writing."""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from weights_convert.files.atomic import is_temporary, remove_stale_temporaries


def foreign_entries(folder: Path, lock_name: str, owns: Callable[[Path], bool]) -> list[str]:
    """What a non-empty folder holds when it is not one of ours (`owns` says, by its marker
    file); [] for a missing, empty or own folder. Our lock and temporaries do not count."""
    if not folder.is_dir():
        return []
    entries = sorted(p.name for p in folder.iterdir() if p.name != lock_name and not is_temporary(p.name))
    return entries if entries and not owns(folder) else []


@contextmanager
def folder_lock(folder: str | os.PathLike, lock_name: str, what: str,
                error: type[Exception], owns: Callable[[Path], bool], clean: bool = True) -> Iterator[None]:
    """Hold `folder/lock_name` while inside; `error` (naming the other pid) when another process
    holds it. `what` says what the other process is doing, e.g. "training". A folder that holds
    files and is not ours (`owns`) is refused before anything, the lock included, is put in it.
    `clean`: remove what a killed predecessor was writing (not in a folder that other commands
    also write below, where a temporary may be another writer's)."""
    folder = Path(folder)
    foreign = foreign_entries(folder, lock_name, owns)
    if foreign:
        raise error(f"{folder} holds files this tool did not write ({', '.join(foreign[:5])}"
                    f"{', ...' if len(foreign) > 5 else ''}); they are left alone: choose a new or empty folder")
    with open(folder / lock_name, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            other = fh.read().strip() or "unknown"
            raise error(f"{folder}: another {what} process (pid {other}) is writing to this folder; "
                        "wait for it to finish, or choose another output folder") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        if clean:
            remove_stale_temporaries(folder)  # what a killed predecessor was writing
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()

"""Stop requests, from a user (Ctrl-C: SIGINT) or a scheduler (`timeout`, SLURM and Kubernetes
send SIGTERM), handled alike: what is finished is kept and the same command resumes. The exit
status says which it was: 130 after SIGINT, 143 after SIGTERM (128 + the signal's number)."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

_received: list[int] = []


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would raise KeyboardInterrupt, so that every stop path serves both."""


def note(signum: int) -> None:
    """Record a stop signal that a handler of its own caught (training checks a flag between passes)."""
    _received.append(signum)


def exit_status() -> int:
    return 128 + (signal.SIGTERM if signal.SIGTERM in _received else signal.SIGINT)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within: SIGTERM raises Terminated (a KeyboardInterrupt). Only the main thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        note(signum)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

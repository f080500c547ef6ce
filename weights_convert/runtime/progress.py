"""Progress for long loops: a tqdm bar on a terminal; in a pipe or a log file a plain line at
every tenth of the work, so that logs are not flooded with carriage-return redraws."""
from __future__ import annotations

import sys
import time
from typing import IO


class Progress:
    def __init__(self, total: int, initial: int = 0, desc: str = "", enabled: bool = True,
                 stream: IO[str] | None = None, unit: str = "ep"):
        self.total, self.count, self.initial, self.desc, self.unit = total, initial, initial, desc, unit
        self.stream = stream or sys.stderr
        self._bar = None
        self._note = ""
        self._next_line = self._next_tenth(initial)
        self._start = time.perf_counter()
        self.enabled = enabled and total > initial
        if self.enabled and self.stream.isatty():
            from tqdm import tqdm
            self._bar = tqdm(total=total, initial=initial, unit=unit, dynamic_ncols=True, desc=desc, file=self.stream)

    def _next_tenth(self, count: int) -> int:
        return min(self.total, (count * 10 // max(self.total, 1) + 1) * max(self.total, 1) // 10 or 1)

    def update(self, n: int = 1) -> None:
        self.count += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
        elif self.count >= self._next_line:
            rate = (self.count - self.initial) / max(time.perf_counter() - self._start, 1e-9)
            note = f", {self._note}" if self._note else ""
            print(f"{self.desc}: {self.count}/{self.total} {self.unit} ({rate:.2f} {self.unit}/s this session{note})",
                  file=self.stream, flush=True)
            self._next_line = self._next_tenth(self.count)

    def note(self, text: str) -> None:
        """A short status shown beside the count (e.g. the loss)."""
        self._note = text
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

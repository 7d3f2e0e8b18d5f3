"""Progress display for long work: a rich bar on stderr, only when stderr is a terminal."""

from __future__ import annotations

import sys
from typing import Any


class LazyProgress:
    """A rich progress bar that appears only once a scan has run for more than a second."""

    def __init__(self) -> None:
        import time

        self._clock = time.monotonic
        self._start: float | None = None
        self._bar: Any = None
        self._task: Any = None

    def __call__(self, done: int, total: int) -> None:
        now = self._clock()
        if self._start is None:
            self._start = now
        if self._bar is None:
            if now - self._start < 1.0 or done >= total:
                return
            from rich.console import Console
            from rich.progress import Progress

            self._bar = Progress(transient=True, console=Console(stderr=True))
            self._bar.start()
            self._task = self._bar.add_task("scanning memory", total=total)
        self._bar.update(self._task, completed=done, total=total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def progress_for(enabled: bool) -> LazyProgress | None:
    """A :class:`LazyProgress` when ``enabled`` and stderr is a terminal, else ``None``."""
    return LazyProgress() if enabled and sys.stderr.isatty() else None

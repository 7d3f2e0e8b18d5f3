"""Progress display for long work: a rich bar on stderr, only when stderr is a terminal."""

from __future__ import annotations

import sys
from typing import Any


class LazyProgress:
    """A rich progress bar that appears only once the work has run for more than a second.

    Call it as ``progress(done, total)``; work in stages calls :meth:`stage` with the stage's
    label (the bar then shows the label, a count, the rate and the time left of each stage).
    """

    def __init__(self, label: str = "scanning memory", unit: str = "") -> None:
        import time

        self._clock = time.monotonic
        self._start: float | None = None
        self._bar: Any = None
        self._task: Any = None
        self.label = label
        self.unit = unit

    def __call__(self, done: int, total: int) -> None:
        now = self._clock()
        if self._start is None:
            self._start = now
        if self._bar is None:
            if now - self._start < 1.0 or done >= total:
                return
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            columns = [TextColumn("{task.description}"), BarColumn(), TaskProgressColumn()]
            if self.unit:
                columns += [MofNCompleteColumn(), TextColumn(self.unit)]
            columns += [TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
            self._bar = Progress(*columns, transient=True, console=Console(stderr=True))
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=total)
        self._bar.update(self._task, completed=done, total=total, description=self.label)

    def stage(self, label: str, done: int, total: int) -> None:
        """Progress of stage ``label`` (a new label restarts the bar's count and clock)."""
        if label != self.label:
            self.label = label
            if self._bar is not None:
                self._bar.reset(self._task, total=total, description=label)
        self(done, total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def progress_for(enabled: bool, label: str = "scanning memory", unit: str = "") -> LazyProgress | None:
    """A :class:`LazyProgress` when ``enabled`` and stderr is a terminal, else ``None``."""
    return LazyProgress(label, unit) if enabled and sys.stderr.isatty() else None

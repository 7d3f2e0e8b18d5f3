"""The progress bar of long commands: shown only after a second and only on a terminal; stages
relabel it (``vmci convert``: looking for the VMCOREINFO, reading struct page, copying pages)."""

from __future__ import annotations

from vmci.cli.progress import LazyProgress, progress_for


def test_stages_relabel_the_bar() -> None:
    now = [0.0]
    bar = LazyProgress("looking for the VMCOREINFO", "pages")
    bar._clock = lambda: now[0]
    bar.stage("looking for the VMCOREINFO", 0, 100)
    now[0] = 0.5
    bar.stage("looking for the VMCOREINFO", 10, 100)
    assert bar._bar is None  # under a second: nothing drawn
    now[0] = 2.0
    bar.stage("reading struct page", 10, 100)
    assert bar._bar is not None
    bar.stage("copying pages", 5, 50)
    task = bar._bar.tasks[0]
    assert (task.description, task.total, task.completed) == ("copying pages", 50, 5)
    bar.close()


def test_no_bar_without_a_terminal() -> None:
    assert progress_for(True) is None  # pytest captures stderr: not a terminal
    assert progress_for(False) is None

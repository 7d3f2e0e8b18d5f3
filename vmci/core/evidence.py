"""The evidence model: what a reader, strategy or check did, step by step.

A :class:`Step` records one thing that was checked or done (action, physical address, detail,
verdict); an :class:`Evidence` trail orders them.  Firmware readers, kernel searches, discovery
strategies and checks all report with it, so it lives at the bottom of the package.

``action`` and ``detail`` are prose for people and may be reworded; a step that code decides on
also carries a stable ``code`` (``"<area>.<what>"``, e.g. ``"acpi.table-found"``).  The code is
not part of the JSON of schema 1 (:meth:`Step.to_dict` leaves it out).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

Verdict = Literal["ok", "warn", "fail", "info"]
VERDICTS: tuple[Verdict, ...] = ("info", "ok", "warn", "fail")  # in rising severity


@dataclass(frozen=True, slots=True)
class Step:
    """One thing a strategy checked or did."""

    action: str
    """What was checked or done, in words (for people; may be reworded)."""
    paddr: int | None
    """The guest-physical address the step is about, if any."""
    detail: str
    """The outcome, in words."""
    verdict: Verdict = "info"
    """ok, warn, fail or info."""
    code: str = ""
    """A stable identifier for steps that code decides on (empty for the others)."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON of schema 1 (without :attr:`code`)."""
        return {"action": self.action, "paddr": self.paddr, "detail": self.detail, "verdict": self.verdict}

    def __str__(self) -> str:
        where = "" if self.paddr is None else f" @{self.paddr:#x}"
        return f"[{self.verdict}] {self.action}{where}: {self.detail}"


@dataclass
class Evidence:
    """An ordered trail of steps."""

    steps: list[Step] = field(default_factory=list)

    def add(self, action: str, detail: str, verdict: Verdict = "info", paddr: int | None = None, *,
            code: str = "") -> Step:
        if verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {verdict!r}")
        step = Step(action, paddr, detail, verdict, code)
        self.steps.append(step)
        return step

    def ok(self, action: str, detail: str, paddr: int | None = None, *, code: str = "") -> Step:
        return self.add(action, detail, "ok", paddr, code=code)

    def warn(self, action: str, detail: str, paddr: int | None = None, *, code: str = "") -> Step:
        return self.add(action, detail, "warn", paddr, code=code)

    def fail(self, action: str, detail: str, paddr: int | None = None, *, code: str = "") -> Step:
        return self.add(action, detail, "fail", paddr, code=code)

    def info(self, action: str, detail: str, paddr: int | None = None, *, code: str = "") -> Step:
        return self.add(action, detail, "info", paddr, code=code)

    def has(self, code: str) -> bool:
        """Whether a step with this code was recorded."""
        return any(s.code == code for s in self.steps)

    def last_failure(self) -> Step | None:
        """The last failed step, if any."""
        return next((s for s in reversed(self.steps) if s.verdict == "fail"), None)

    @property
    def failed(self) -> bool:
        return any(s.verdict == "fail" for s in self.steps)

    @property
    def worst(self) -> Verdict:
        """The most severe verdict recorded ("info" for an empty trail)."""
        return max((s.verdict for s in self.steps), key=VERDICTS.index, default="info")

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def to_dict(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.steps]

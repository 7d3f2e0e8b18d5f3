"""The evidence model every discovery strategy reports with.

A strategy records what it did as :class:`Step` s (action, physical address, detail, verdict)
in an :class:`Evidence` trail, proposes :class:`Candidate` texts, and returns one
:class:`Finding`: all candidates, the rejected hits, the chosen one and why.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from ..vmcoreinfo import VmcoreInfo

Verdict = Literal["ok", "warn", "fail", "info"]
VERDICTS: tuple[Verdict, ...] = ("info", "ok", "warn", "fail")  # in rising severity

#: Where a candidate text came from.
SOURCES = ("elf-note", "kdump-header", "address-blob", "acpi", "fw-cfg-record", "memory-scan")


@dataclass(frozen=True, slots=True)
class Step:
    """One thing a strategy checked or did."""

    action: str
    paddr: int | None
    detail: str
    verdict: Verdict = "info"

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "paddr": self.paddr, "detail": self.detail, "verdict": self.verdict}

    def __str__(self) -> str:
        where = "" if self.paddr is None else f" @{self.paddr:#x}"
        return f"[{self.verdict}] {self.action}{where}: {self.detail}"


@dataclass
class Evidence:
    """An ordered trail of steps."""

    steps: list[Step] = field(default_factory=list)

    def add(self, action: str, detail: str, verdict: Verdict = "info", paddr: int | None = None) -> Step:
        if verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {verdict!r}")
        step = Step(action, paddr, detail, verdict)
        self.steps.append(step)
        return step

    def ok(self, action: str, detail: str, paddr: int | None = None) -> Step:
        return self.add(action, detail, "ok", paddr)

    def warn(self, action: str, detail: str, paddr: int | None = None) -> Step:
        return self.add(action, detail, "warn", paddr)

    def fail(self, action: str, detail: str, paddr: int | None = None) -> Step:
        return self.add(action, detail, "fail", paddr)

    def info(self, action: str, detail: str, paddr: int | None = None) -> Step:
        return self.add(action, detail, "info", paddr)

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


@dataclass
class Candidate:
    """A VMCOREINFO text one strategy found (or a hit it rejected: ``text`` None or failed).

    ``paddr`` is the physical address of the note header when the text came from guest memory
    as a note; ``data_paddr`` that of the kernel's separate raw-text page when one was seen.
    """

    source: str
    paddr: int | None
    note_size: int | None
    text: VmcoreInfo | None
    evidence: Evidence = field(default_factory=Evidence)
    data_paddr: int | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"unknown candidate source {self.source!r}")

    @property
    def valid(self) -> bool:
        return self.text is not None and not self.evidence.failed

    def to_dict(self, with_text: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "source": self.source,
            "paddr": self.paddr,
            "note_size": self.note_size,
            "data_paddr": self.data_paddr,
            "valid": self.valid,
            "facts": self.facts,
            "evidence": self.evidence.to_dict(),
        }
        if with_text:
            d["vmcoreinfo"] = None if self.text is None else self.text.to_dict()
        return d


@dataclass
class Finding:
    """What one strategy concluded: every valid candidate, the rejected hits, the choice."""

    source: str
    candidates: list[Candidate] = field(default_factory=list)
    rejected: list[Candidate] = field(default_factory=list)
    chosen: Candidate | None = None
    evidence: Evidence = field(default_factory=Evidence)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return self.chosen is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "found": self.found,
            "chosen": None if self.chosen is None else self.candidates.index(self.chosen),
            "candidates": [c.to_dict() for c in self.candidates],
            "rejected": [c.to_dict(with_text=False) for c in self.rejected],
            "evidence": self.evidence.to_dict(),
            "facts": self.facts,
        }

"""What a discovery strategy reports: :class:`Candidate` texts and one :class:`Finding`.

A strategy records what it did in an :class:`~vmci.core.evidence.Evidence` trail, proposes
candidate texts, and returns one finding: all candidates, the rejected hits, the chosen one and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vmci.core.evidence import Evidence
from vmci.kernel.vmcoreinfo import VmcoreInfo


@dataclass
class Candidate:
    """A VMCOREINFO text one strategy found (or a hit it rejected: ``text`` None or failed).

    ``source`` is the name of the strategy that found it (:data:`vmci.discover.NAMES`).
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

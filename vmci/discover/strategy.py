"""What every discovery strategy is: the :class:`Strategy` protocol and the caller's :class:`Inputs`.

A strategy looks for the VMCOREINFO text in one place (the dump's notes, the kdump sub-header, a
QEMU device's saved state, ACPI, raw memory) and returns one
:class:`~vmci.discover.finding.Finding` with the evidence behind its answer.  The registry that
orders them is :data:`vmci.discover.STRATEGIES`; :func:`vmci.discover.run.find_vmcoreinfo` runs it.

This module holds only the shared types, so that strategy modules and the registry import it
without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from vmci.core.dump import Dump
from vmci.core.record import Record
from vmci.discover.finding import Finding
from vmci.layouts.fw_cfg import RFC_OFFSET_V1

if TYPE_CHECKING:
    from vmci.core.saved_state import VmcoreinfoRecord

#: ``progress(bytes_done, bytes_total)``, called as a long search advances.
Progress = Callable[[int, int], None]

#: The memory scan modes a caller may ask for (``vmci analyze --scan``).
SCAN_MODES = ("auto", "aligned", "all")


class Inputs(Record):
    """What the caller gives discovery besides the dump."""

    addr_blob: bytes | None = None
    """The RFC device's saved ``etc/vmcoreinfo-addr`` (8 bytes, little-endian)."""
    fw_cfg_record: bytes | VmcoreinfoRecord | None = None
    """The upstream device's ``etc/vmcoreinfo`` fw_cfg record (16 bytes), or the device state a
    migration stream saved."""
    rfc_offset: int = RFC_OFFSET_V1
    """Where the RFC page's content starts: 40 (seed 001) or 36 (later revision)."""
    strategies: tuple[str, ...] | None = None
    """Run exactly these strategies (None: every strategy that applies, by the default rules)."""
    progress: Progress | None = None
    """Called as the memory scan advances."""
    scan: str = "auto"
    """The memory scan's mode: ``"auto"`` (a last resort that stops once its note cannot be
    outranked), ``"aligned"`` (page-aligned notes only) or ``"all"`` (exhaustive: it runs even when
    another strategy found a text and lists every copy in every byte)."""

    @property
    def explicit(self) -> bool:
        """Whether the caller named the strategies to run."""
        return self.strategies is not None


class Strategy(Protocol):
    """One place to look for the VMCOREINFO text.

    ``rank`` orders the registry: strategies run in rising rank, and when several find a text,
    the lowest rank's is used.  By default a strategy runs when :meth:`applies` says so;
    a ``last_resort`` one only when no strategy before it found a text.  A caller naming the
    strategies runs exactly those; one that ``needs`` an input the caller did not give is then
    a usage error.
    """

    @property
    def name(self) -> str:
        """Stable name: the ``source`` of its candidates in results and JSON, and ``--strategy`` NAME."""
        ...

    @property
    def rank(self) -> int:
        """Position in the run and precedence order (lower first)."""
        ...

    @property
    def why(self) -> str:
        """Why a text from here is trusted: the start of the choice's reason."""
        ...

    @property
    def needs(self) -> str | None:
        """The caller's input it cannot run without, in words (None: it needs nothing)."""
        ...

    @property
    def device(self) -> bool:
        """It follows a QEMU device's state: once the device is seen present, failing is a fault."""
        ...

    @property
    def searches(self) -> bool:
        """It searches guest memory (rather than reading what a producer recorded)."""
        ...

    @property
    def last_resort(self) -> bool:
        """By default it runs only when no strategy before it found a text."""
        ...

    def applies(self, dump: Dump, inputs: Inputs) -> bool:
        """Whether it has something to look at in this dump with these inputs."""
        ...

    def run(self, dump: Dump, inputs: Inputs, earlier: Sequence[Finding] = ()) -> Finding:
        """Look; ``earlier`` holds the findings of the strategies that ran before it."""
        ...

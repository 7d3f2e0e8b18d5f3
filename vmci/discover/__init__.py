"""Discovery strategies: each looks for the VMCOREINFO text in one place and returns a
:class:`~vmci.discover.finding.Finding` with the evidence trail behind its answer.

:data:`STRATEGIES` is the registry, in rank order (the order they run in and the precedence of
their texts); :func:`vmci.discover.run.find_vmcoreinfo` runs it.  A strategy implements
:class:`~vmci.discover.strategy.Strategy`; a new one is a module here plus one line below.
"""

from __future__ import annotations

from vmci.discover.acpi import AcpiStrategy
from vmci.discover.address_blob import AddressBlobStrategy
from vmci.discover.elf_note import ElfNoteStrategy
from vmci.discover.fw_cfg_record import FwCfgRecordStrategy
from vmci.discover.kdump_header import KdumpHeaderStrategy
from vmci.discover.memory_scan import MemoryScanStrategy
from vmci.discover.strategy import Inputs, Progress, Strategy
from vmci.errors import UsageError

#: Every strategy, in rank order.
STRATEGIES: tuple[Strategy, ...] = tuple(sorted(
    (ElfNoteStrategy(), KdumpHeaderStrategy(), AddressBlobStrategy(), FwCfgRecordStrategy(),
     AcpiStrategy(), MemoryScanStrategy()),
    key=lambda s: s.rank))
#: Their names, in rank order: the ``source`` values of candidates.
NAMES: tuple[str, ...] = tuple(s.name for s in STRATEGIES)
#: The strategies that read what a producer recorded, without searching memory.
RECORDED: tuple[str, ...] = tuple(s.name for s in STRATEGIES if not s.searches)

_BY_NAME = {s.name: s for s in STRATEGIES}


def strategy(name: str) -> Strategy:
    """The registered strategy called ``name``; a :class:`~vmci.errors.UsageError` names the choices."""
    found = _BY_NAME.get(name)
    if found is None:
        raise UsageError(f"unknown strategy {name!r}; choose from {', '.join(NAMES)}")
    return found


__all__ = ["NAMES", "RECORDED", "STRATEGIES", "Inputs", "Progress", "Strategy", "strategy"]

"""What the ACPI reader returns (:class:`Rsdp`, :class:`Table`), its bounds and evidence codes."""

from __future__ import annotations

from dataclasses import dataclass

from vmci.core.evidence import Evidence, Verdict
from vmci.core.memory import PhysicalMemory
from vmci.errors import MemoryReadError, VmciError
from vmci.layouts.acpi import (
    SDT_HEADER_SIZE,
)

FSEG_START = 0xE0000
FSEG_END = 0x100000
BDA_EBDA_SEGMENT = 0x40E  # the BIOS Data Area word holding the EBDA's real-mode segment
EBDA_SEARCH = 1024  # the RSDP may be in the EBDA's first KiB (ACPI 6.5, 5.2.5.1)
EBDA_LOW, EBDA_HIGH = 0x80000, 0xA0000
MAX_RAM_HITS = 4096  # signature hits checked per buffer of a RAM search (bounds hostile memory)
MAX_EFI_ENTRIES = 1024  # configuration-table entries read from one EFI system table
MAX_TABLE_LENGTH = 16 << 20  # far above any real table; bounds reads of garbage lengths
MAX_ROOT_ENTRIES = 4096

OK: Verdict = "ok"
FAIL: Verdict = "fail"
INFO: Verdict = "info"


#: Step codes: the table looked for by signature and OEM table id was found (maybe with a bad
#: checksum) or is missing.
TABLE_FOUND = "acpi.table-found"
TABLE_MISSING = "acpi.table-missing"


def add_step(ev: Evidence, paddr: int | None, action: str, verdict: Verdict, detail: str = "", *,
          code: str = "") -> None:
    ev.add(action, detail, verdict, paddr, code=code)


@dataclass(frozen=True)
class Rsdp:
    address: int
    revision: int
    oem_id: str
    rsdt_address: int
    xsdt_address: int | None  # None for revision < 2
    checksum_ok: bool
    extended_checksum_ok: bool | None  # None for revision < 2

    @property
    def valid(self) -> bool:
        return self.checksum_ok and self.extended_checksum_ok is not False


@dataclass(frozen=True)
class Table:
    address: int
    signature: str
    length: int
    revision: int
    oem_id: str
    oem_table_id: str
    checksum_ok: bool
    data: bytes

    @property
    def aml(self) -> bytes:
        return self.data[SDT_HEADER_SIZE:]


def read_or_none(mem: PhysicalMemory, addr: int, n: int) -> bytes | None:
    try:
        return mem.read(addr, n)
    except (MemoryReadError, VmciError):
        return None



"""Reading ACPI tables out of a dump's physical memory.

The walk QEMU's own vmgenid test does, generalised: find the RSDP (:func:`find_rsdp`: the EBDA and
the F-segment first, like a BIOS places it, then RAM, where a UEFI firmware such as OVMF puts it
and names it in the EFI configuration table), follow the XSDT or RSDT,
fetch tables with checksum checks, pick an SSDT by OEM table id and read the ``Name(XXXX,
DWordConst)`` that firmware patched with a blob address.

Every walking function returns ``(result, evidence)``: an
:class:`~vmci.core.evidence.Evidence` trail saying what was checked where, with what
verdict.  Garbage memory gives ``None`` and evidence, never an exception.
"""

from __future__ import annotations

from vmci.firmware.acpi.aml import (
    INT_KINDS,
    decode_integer,
    decode_name_string,
    decode_pkg_length,
    find_named_dword,
    leading_name_dword,
    parse_leading_name,
)
from vmci.firmware.acpi.model import (
    BDA_EBDA_SEGMENT,
    EBDA_HIGH,
    EBDA_LOW,
    EBDA_SEARCH,
    FAIL,
    FSEG_END,
    FSEG_START,
    INFO,
    MAX_EFI_ENTRIES,
    MAX_RAM_HITS,
    MAX_ROOT_ENTRIES,
    MAX_TABLE_LENGTH,
    OK,
    TABLE_FOUND,
    TABLE_MISSING,
    Rsdp,
    Table,
)
from vmci.firmware.acpi.probe import (
    check_ovmf_probe,
    ovmf_probe,
    ovmf_probe_at,
)
from vmci.firmware.acpi.rsdp import (
    all_rsdps,
    check_rsdp,
    ebda_base,
    efi_system_table,
    find_rsdp,
    scan_signature,
)
from vmci.firmware.acpi.tables import (
    fetch_table,
    find_ssdt,
    list_tables,
    root_entries,
)

__all__ = [
    "BDA_EBDA_SEGMENT",
    "EBDA_HIGH",
    "EBDA_LOW",
    "EBDA_SEARCH",
    "FAIL",
    "FSEG_END",
    "FSEG_START",
    "INFO",
    "INT_KINDS",
    "MAX_EFI_ENTRIES",
    "MAX_RAM_HITS",
    "MAX_ROOT_ENTRIES",
    "MAX_TABLE_LENGTH",
    "OK",
    "TABLE_FOUND",
    "TABLE_MISSING",
    "Rsdp",
    "Table",
    "all_rsdps",
    "check_ovmf_probe",
    "check_rsdp",
    "decode_integer",
    "decode_name_string",
    "decode_pkg_length",
    "ebda_base",
    "efi_system_table",
    "fetch_table",
    "find_named_dword",
    "find_rsdp",
    "find_ssdt",
    "leading_name_dword",
    "list_tables",
    "ovmf_probe",
    "ovmf_probe_at",
    "parse_leading_name",
    "root_entries",
    "scan_signature",
]

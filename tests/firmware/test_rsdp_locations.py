"""``find_rsdp`` finds the RSDP wherever a firmware puts it (ACPI 6.5, 5.2.5): the EBDA's first KiB,
the F-segment, and for UEFI the address the EFI configuration table names (UEFI 2.10, 4.6), also
when the system table's pointers were made virtual by SetVirtualAddressMap().  The memory is laid
out here with struct, from the specifications, so the oracle is where the test put things."""

from __future__ import annotations

import struct
import time
import uuid
import zlib

from vmci.core.memory import Range, SparseMemory
from vmci.firmware import acpi
from vmci.producer.acpi_tables import build_rsdp

ACPI20 = uuid.UUID("8868e871-e4f1-11d3-bc22-0080c73c8881").bytes_le
ACPI10 = uuid.UUID("eb9d2d30-2d88-11d3-9a16-0090273fc14d").bytes_le
OTHER = uuid.UUID("49152e77-1ada-4764-b7a2-7afefed95e8b").bytes_le


def system_table(entries: int, config_table: int) -> bytes:
    """EFI_SYSTEM_TABLE (x64, 120 bytes) with a valid header CRC32."""
    body = bytearray(struct.pack("<8sIIII", b"IBI SYST", (2 << 16) | 70, 120, 0, 0))
    body += struct.pack("<QI4xQQQQQQQQQQ", 0x1000, 1, 0, 0, 0, 0, 0, 0, 0, 0, entries, config_table)
    struct.pack_into("<I", body, 16, zlib.crc32(bytes(body)))
    return bytes(body)


def entries(*items: tuple[bytes, int]) -> bytes:
    return b"".join(guid + struct.pack("<Q", ptr) for guid, ptr in items)


def test_rsdp_in_the_ebda() -> None:
    mem = SparseMemory([Range(0, 0x100000)])
    mem.write(0x40E, struct.pack("<H", 0x9FC0))  # EBDA at 0x9FC00
    mem.write(0x9FC00 + 0x20, build_rsdp(0x12340))
    rsdp, ev = acpi.find_rsdp(mem, scan_all=False)
    assert rsdp is not None and rsdp.address == 0x9FC20
    assert [s.action for s in ev if s.verdict == "ok"][-1] == "RSDP search in EBDA"


def test_uefi_rsdp_named_by_the_configuration_table_wins_over_a_stale_copy() -> None:
    mem = SparseMemory([Range(0, 0x2000000)])
    mem.write(0x300000, build_rsdp(0x5000))  # a stale copy, lower in memory
    published = 0x1F7E014  # 4-byte aligned only: no signature search would take it
    mem.write(published, build_rsdp(0x6000, revision=2, xsdt_address=0x7000))
    table = 0x1F5EC98
    mem.write(0x1F5E018, system_table(3, 0xFFFFFFFEFF5ECC98))  # virtual after SetVirtualAddressMap
    mem.write(table, entries((OTHER, 0x1234), (ACPI10, 0x1F7E000), (ACPI20, published)))
    mem.write(0x1F7E000, build_rsdp(0x6000))
    rsdp, ev = acpi.find_rsdp(mem)
    assert rsdp is not None and rsdp.address == published and rsdp.revision == 2
    ok = {s.action: s for s in ev if s.verdict == "ok"}
    assert ok["RSDP via the EFI configuration table"].paddr == table + 48
    assert ok["EFI system table"].paddr == 0x1F5E018
    assert any("virtual" in s.detail for s in ev if s.action == "EFI configuration table")


def test_a_physical_configuration_table_is_read_through_the_system_table() -> None:
    mem = SparseMemory([Range(0, 0x2000000)])
    mem.write(0x1000000, system_table(2, 0x1100000))
    mem.write(0x1100000, entries((ACPI10, 0x1200000), (ACPI20, 0x1200040)))
    mem.write(0x1200000, build_rsdp(0x6000))
    mem.write(0x1200040, build_rsdp(0x6000, revision=2, xsdt_address=0x7000))
    rsdp, _ = acpi.find_rsdp(mem)
    assert rsdp is not None and rsdp.address == 0x1200040


def test_a_system_table_with_a_bad_crc_or_a_wild_count_is_not_followed() -> None:
    mem = SparseMemory([Range(0, 0x2000000)])
    bad = bytearray(system_table(2, 0x1100000))
    bad[40] ^= 1
    mem.write(0x1000000, bytes(bad))
    mem.write(0x1100000, entries((ACPI20, 0x1200000)))
    mem.write(0x1800000, system_table(1 << 60, 0x1100000))  # claims 2^60 entries
    t = time.perf_counter()
    rsdp, ev = acpi.find_rsdp(mem)
    assert time.perf_counter() - t < 2
    assert rsdp is None and [s.paddr for s in ev if s.action == "EFI system table"] == [0x1800000]

"""Following the RSDT/XSDT: tables fetched with their checksums, an SSDT picked by OEM table id."""

from __future__ import annotations

from vmci.core.evidence import Evidence
from vmci.core.memory import PhysicalMemory
from vmci.firmware.acpi.model import (
    FAIL,
    MAX_ROOT_ENTRIES,
    MAX_TABLE_LENGTH,
    OK,
    TABLE_FOUND,
    TABLE_MISSING,
    Rsdp,
    Table,
    add_step,
    read_or_none,
)
from vmci.firmware.acpi.rsdp import find_rsdp
from vmci.layouts.acpi import (
    SDT_HEADER_SIZE,
    SdtHeader,
    checksum8,
    id_text,
)

# -- tables ----------------------------------------------------------------------------------

def fetch_table(
    mem: PhysicalMemory, addr: int, signature: str | None = None
) -> tuple[Table | None, Evidence]:
    """The table at ``addr``; ``None`` if unreadable, impossibly sized or of another signature.

    A bad checksum still returns the table, with ``checksum_ok`` false and a ``fail`` step.
    """
    ev = Evidence()
    raw = read_or_none(mem, addr, SDT_HEADER_SIZE)
    if raw is None:
        add_step(ev, addr, "table header readable", FAIL, "not in the dump")
        return None, ev
    hdr = SdtHeader.parse(raw)
    sig = hdr.signature.decode("latin-1")
    if signature is not None and hdr.signature != signature.encode("latin-1"):
        add_step(ev, addr, f"signature {signature}", FAIL, f"found {hdr.signature!r}")
        return None, ev
    if not SDT_HEADER_SIZE <= hdr.length <= MAX_TABLE_LENGTH:
        add_step(ev, addr, f"{sig!r} length", FAIL, f"{hdr.length} is outside 36..{MAX_TABLE_LENGTH}")
        return None, ev
    data = read_or_none(mem, addr, hdr.length)
    if data is None:
        add_step(ev, addr, f"{sig} readable", FAIL, f"{hdr.length} bytes not all in the dump")
        return None, ev
    ok = checksum8(data) == 0
    oem, table_id = id_text(hdr.oem_id), id_text(hdr.oem_table_id)
    table = Table(addr, sig, hdr.length, hdr.revision, oem, table_id, ok, data)
    detail = f"length {hdr.length}, OEM {oem!r}/{table_id!r}, sum {checksum8(data):#04x}"
    add_step(ev, addr, f"{sig} checksum", OK if ok else FAIL, detail)
    return table, ev


def root_entries(table: Table) -> tuple[list[int], Evidence]:
    """Entry addresses of an RSDT (4 bytes each) or XSDT (8 bytes each)."""
    size = 8 if table.signature == "XSDT" else 4
    body = table.aml
    count = min(len(body) // size, MAX_ROOT_ENTRIES)
    entries = [int.from_bytes(body[i * size : (i + 1) * size], "little") for i in range(count)]
    ev = Evidence()
    add_step(ev, table.address, f"{table.signature} entries", OK if entries else FAIL,
          f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} of {size} bytes"
          + (f", {len(body) % size} trailing byte(s)" if len(body) % size else ""))
    return entries, ev


def list_tables(mem: PhysicalMemory, rsdp: Rsdp) -> tuple[list[Table], Evidence]:
    """Tables listed by the XSDT (revision >= 2 and valid) or else the RSDT."""
    ev = Evidence()
    root: Table | None = None
    if rsdp.xsdt_address:
        root, sub = fetch_table(mem, rsdp.xsdt_address, "XSDT")
        ev.steps.extend(sub.steps)
        if root is not None and not root.checksum_ok:
            root = None
        if root is None:
            add_step(ev, rsdp.xsdt_address, "XSDT usable", FAIL, "falling back to the RSDT")
    if root is None:
        root, sub = fetch_table(mem, rsdp.rsdt_address, "RSDT")
        ev.steps.extend(sub.steps)
        if root is None:
            return [], ev
    entries, sub = root_entries(root)
    ev.steps.extend(sub.steps)
    tables: list[Table] = []
    for addr in dict.fromkeys(entries):
        table, sub = fetch_table(mem, addr)
        ev.steps.extend(sub.steps)
        if table is not None:
            tables.append(table)
    return tables, ev


def _norm_id(text: str) -> str:
    return text.rstrip("\0 ")


def find_ssdt(mem: PhysicalMemory, oem_table_id: str, rsdp: Rsdp | None = None,
              signature: str = "SSDT") -> tuple[Table | None, Evidence]:
    """The table with ``signature`` and OEM table id ``oem_table_id`` (NUL/space padding ignored).

    Prefers a match whose checksum is valid; a bad-checksum match is returned only if it is
    the only one (its ``fail`` step stays in the evidence).
    """
    ev = Evidence()
    if rsdp is None:
        rsdp, sub = find_rsdp(mem)
        ev.steps.extend(sub.steps)
        if rsdp is None:
            return None, ev
    tables, sub = list_tables(mem, rsdp)
    ev.steps.extend(sub.steps)
    want = _norm_id(oem_table_id)
    matches = [t for t in tables if t.signature == signature and _norm_id(t.oem_table_id) == want]
    if not matches:
        add_step(ev, None, f"{signature} with OEM table id {oem_table_id!r}", FAIL,
              f"not among {len(tables)} table(s): " + ", ".join(
              f"{t.signature}/{t.oem_table_id}" for t in tables), code=TABLE_MISSING)
        return None, ev
    best = next((t for t in matches if t.checksum_ok), matches[0])
    add_step(ev, best.address, f"{signature} with OEM table id {oem_table_id!r}",
          OK if best.checksum_ok else FAIL, "found" if best.checksum_ok else "found, bad checksum",
          code=TABLE_FOUND)
    return best, ev



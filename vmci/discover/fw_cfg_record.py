"""The upstream (QEMU >= 2.11) ``etc/vmcoreinfo`` record, given by the caller from saved state.

16 little-endian bytes ``{u16 host_format, u16 guest_format, u32 size, u64 paddr}``.  We check
what QEMU's ``dump_init`` checks before copying the guest note (format ELF, size bounds, the
note's own size within ``size``) and the rest of what makes the note usable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from vmci.core.dump import Dump
from vmci.core.memory import PhysicalMemory
from vmci.discover.finding import Candidate, Finding
from vmci.discover.guest_note import conclude, read_guest_note
from vmci.discover.strategy import Inputs

if TYPE_CHECKING:
    from vmci.core.saved_state import VmcoreinfoRecord
from vmci.layouts.fw_cfg import VMCOREINFO_FORMAT_ELF, VMCOREINFO_FORMAT_NONE, FwCfgVmcoreinfo

NAME = "fw-cfg-record"
RECORD_SIZE = FwCfgVmcoreinfo.sizeof()
_FORMATS = {VMCOREINFO_FORMAT_NONE: "NONE", VMCOREINFO_FORMAT_ELF: "ELF"}


class FwCfgRecordStrategy:
    """The upstream device's record, when the caller (or a migration stream's saved state) has it."""

    name = NAME
    rank = 40
    why = "the upstream fw_cfg record the guest registered"
    needs = "the saved record (--fw-cfg-record)"
    device = True
    searches = False
    last_resort = False

    def applies(self, dump: Dump, inputs: Inputs) -> bool:
        return inputs.fw_cfg_record is not None

    def run(self, dump: Dump, inputs: Inputs, earlier: Sequence[Finding] = ()) -> Finding:
        assert inputs.fw_cfg_record is not None
        return check_record(dump.memory, inputs.fw_cfg_record, byteorder=dump.byte_order)


def check_record(mem: PhysicalMemory, record: bytes | VmcoreinfoRecord, *,
                 byteorder: str = "little") -> Finding:
    """Follow a saved fw_cfg vmcoreinfo record (its 16 bytes, or the device state a migration
    stream holds) to the guest's VMCOREINFO note."""
    finding = Finding(NAME)
    finding.facts["present"] = True
    cand = Candidate(NAME, None, None, None)
    ev = cand.evidence
    if not isinstance(record, bytes | bytearray | memoryview):  # a migration stream's device state
        rec = record
    elif len(record) != RECORD_SIZE:
        ev.fail("record size", f"{len(record)} bytes; the record is {RECORD_SIZE} "
                               "(le16 host_format, le16 guest_format, le32 size, le64 paddr)")
        conclude(finding, cand)
        return finding
    else:
        from vmci.core.saved_state import VmcoreinfoRecord

        c = FwCfgVmcoreinfo.parse(bytes(record))
        rec = VmcoreinfoRecord(c.host_format, c.guest_format, c.size, c.paddr)
    finding.facts.update({k: getattr(rec, k) for k in ("host_format", "guest_format", "size", "paddr")})
    ev.info("record", f"host_format {rec.host_format}, guest_format {rec.guest_format}, "
                      f"size {rec.size}, paddr {rec.paddr:#x}", rec.paddr)
    if rec.host_format != VMCOREINFO_FORMAT_ELF:
        ev.info("host format", f"host_format {rec.host_format} (QEMU resets it to 1; the guest's write "
                               "may overwrite it, QEMU does not use it)")
    if rec.guest_format != VMCOREINFO_FORMAT_ELF:
        what = _FORMATS.get(rec.guest_format, "unknown")
        ev.fail("guest format", f"guest_format {rec.guest_format} ({what}): QEMU only copies ELF (1) notes")
        conclude(finding, cand)
        return finding
    ev.ok("guest format", "guest_format 1 (ELF)")
    cand.facts.update({"record_paddr": rec.paddr, "record_size": rec.size})
    cand.paddr = rec.paddr
    got = read_guest_note(mem, rec.paddr, rec.size, ev, byteorder=byteorder)
    if got is not None:
        cand.text, cand.note_size = got
    conclude(finding, cand)
    return finding

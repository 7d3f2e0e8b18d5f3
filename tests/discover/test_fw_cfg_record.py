"""The upstream 16-byte etc/vmcoreinfo record, written by the emulated Linux qemu_fw_cfg driver."""

from __future__ import annotations

import pytest
from conftest import SMALL_KERNEL as SMALL

from vmci.core.memory import Range, SparseMemory
from vmci.discover.fw_cfg_record import check_record
from vmci.layouts.fw_cfg import FwCfgVmcoreinfo
from vmci.producer.devices import LinuxFwCfgWriter, UpstreamVmcoreinfoDevice
from vmci.producer.fw_cfg import FwCfg
from vmci.producer.linux import PlacedVmcoreinfo, place_vmcoreinfo

MiB = 1 << 20


def guest() -> tuple[SparseMemory, UpstreamVmcoreinfoDevice, PlacedVmcoreinfo]:
    mem, fw, dev = SparseMemory([Range(0, 64 * MiB)]), FwCfg(), UpstreamVmcoreinfoDevice()
    dev.add_fw_cfg(fw)
    placed = place_vmcoreinfo(mem, SMALL, 0x2345000, 0x2347000)
    LinuxFwCfgWriter(fw, mem, 0x9000).write(placed.note_paddr, placed.note_size)
    assert dev.has_vmcoreinfo
    return mem, dev, placed


def record(**changes: int) -> bytes:
    _, dev, _ = guest()
    return FwCfgVmcoreinfo.build({**dev.record(), **changes})


def fail_actions(f: object) -> list[str]:
    return [s.action for c in f.rejected for s in c.evidence if s.verdict == "fail"]  # type: ignore[attr-defined]


def test_record_leads_to_the_note() -> None:
    mem, dev, placed = guest()
    f = check_record(mem, bytes(dev.state))
    assert f.found and f.chosen is not None and f.chosen.text is not None
    assert f.chosen.text.raw == placed.text and f.chosen.paddr == placed.note_paddr
    assert f.facts["guest_format"] == 1 and f.facts["size"] == placed.note_size == 4132
    assert f.chosen.facts["record_size"] == 4132 and f.chosen.note_size is not None
    assert f.chosen.note_size <= 4132


@pytest.mark.parametrize(("changes", "action", "words"), [
    ({"guest_format": 0}, "guest format", "NONE"),
    ({"guest_format": 2}, "guest format", "unknown"),
    ({"size": 8}, "size bounds", "smaller than a note header"),
    ({"size": (1 << 20) + 4}, "size bounds", "exceeds"),
    ({"size": 64}, "note descsz", "more than the registered size 64"),
    ({"paddr": 0x7000000}, "paddr in RAM", "outside"),
    ({"paddr": 0x2347000}, "note name", "want 11"),  # vmcoreinfo_data: the raw text, no note header
])
def test_record_faults(changes: dict[str, int], action: str, words: str) -> None:
    mem, _, _ = guest()
    f = check_record(mem, record(**changes))
    assert not f.found and fail_actions(f) == [action]
    assert words in next(s.detail for s in f.rejected[0].evidence if s.action == action)


def test_record_of_wrong_length() -> None:
    mem, dev, _ = guest()
    f = check_record(mem, bytes(dev.state)[:12])
    assert fail_actions(f) == ["record size"]

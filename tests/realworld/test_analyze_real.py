"""vmci analyze on real QEMU dumps (issue 4): the note QEMU wrote, the same text found in memory
without the device, and the VM Generation ID through ACPI under SeaBIOS and OVMF."""

from __future__ import annotations

import pytest

from vmci.analysis.analyze import analyze
from vmci.analysis.vmgenid import canonical, find_vmgenid
from vmci.discover.run import find_vmcoreinfo
from vmci.formats import open_dump

pytestmark = pytest.mark.realworld
FORMATS = ["elf", "elf_paging", "kdump_zlib"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_with_device_text_is_the_note_qemu_wrote(with_device, fmt):
    with open_dump(with_device[fmt]) as d:
        disc = find_vmcoreinfo(d)
        assert disc.chosen is not None and disc.chosen.source in ("elf-note", "kdump-header")
        assert disc.chosen.text.raw == with_device.note_desc
        qemu_note = next(n for n in d.notes if n.name == "VMCOREINFO")
        assert qemu_note.desc == disc.chosen.text.raw
        report = analyze(d).to_dict()
        assert report["vmcoreinfo"]["found"]
        assert report["vmcoreinfo"]["text"] == with_device.note_desc.decode()
        assert report["kaslr"]["phys_base"] == with_device.facts["phys_base"]
        assert not [c for c in report["checks"] if c["status"] == "FAIL"], report["checks"]


@pytest.mark.parametrize("fmt", ["elf", "kdump_zlib"])
def test_without_device_the_same_text_is_found_in_memory(without_device, fmt):
    with open_dump(without_device[fmt]) as d:
        assert not [n for n in d.notes if n.name == "VMCOREINFO"]
        disc = find_vmcoreinfo(d)
        assert disc.chosen is not None and disc.chosen.source == "memory-scan"
        assert disc.chosen.paddr == without_device.vmcoreinfo_paddr
        assert disc.chosen.text.raw == without_device.note_desc
        assert disc.chosen.text.osrelease == without_device.facts["release"]


@pytest.mark.parametrize("scenario_name", ["with_device", "ovmf"])
def test_vmgenid_guid_through_acpi_equals_qmp(request, scenario_name):
    guest = request.getfixturevalue(scenario_name)
    for fmt in ("elf", "kdump_zlib"):
        with open_dump(guest[fmt]) as d:
            found = find_vmgenid(d.memory)
            assert canonical(found.guid) == guest.facts["qmp_guid"], (fmt, found)
            assert found.source == "acpi"
            assert found.paddr % 4096 == 40


def test_vmgenid_from_the_saved_blob_in_the_migration_stream(with_device):
    with open_dump(with_device["migration"]) as d:
        blob = d.saved_state.devices.vmgenid_addr_blob
        found = find_vmgenid(d.memory, addr_blob=blob)
        assert canonical(found.guid) == with_device.facts["qmp_guid"]


@pytest.mark.parametrize("fmt", ["elf", "kdump_zlib"])
def test_analyze_json_carries_the_ovmf_vmgenid(ovmf, fmt):
    """Issue 13: ``analyze --json`` on a real OVMF guest with ``-device vmgenid`` reports QMP's GUID
    (its RSDP is not in the F-segment; OVMF names it in the EFI configuration table)."""
    import json
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "vmci.cli", "analyze", "--json", str(ovmf[fmt])],
                       capture_output=True, timeout=120)
    result = json.loads(p.stdout)
    assert result["vmgenid"] is not None and result["vmgenid"]["guid"] == ovmf.facts["qmp_guid"]
    with open_dump(ovmf[fmt]) as d:
        from vmci.firmware.acpi import find_rsdp

        rsdp, ev = find_rsdp(d.memory)
        assert rsdp is not None and rsdp.revision == 2  # the ACPI 2.0 entry's RSDP, with its XSDT
        assert "RSDP via the EFI configuration table" in [s.action for s in ev if s.verdict == "ok"]

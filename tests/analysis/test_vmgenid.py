"""VM Generation ID through ACPI (SSDT VMGENID, VGIA) or the saved blob, printed as QMP does."""

from __future__ import annotations

import uuid

import pytest

from vmci.analysis.vmgenid import canonical, find_vmgenid, guid_from_ram
from vmci.core.memory import Range, SparseMemory
from vmci.producer.devices import VmgenidDevice
from vmci.producer.firmware import boot

SEED_GUID = "00112233-4455-6677-8899-aabbccddeeff"  # seed 000


def test_canonical_form_of_the_live_example() -> None:
    raw = bytes.fromhex("af6e4e32" "d1d1" "f64b" "bf41" "b9bb6c91fb87")
    assert canonical(guid_from_ram(raw)) == "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87"


@pytest.mark.parametrize("flavor", ["seabios", "ovmf"])
def test_guid_through_acpi_equals_the_devices_answer(flavor: str) -> None:
    mem = SparseMemory([Range(0, 128 << 20)])
    dev = VmgenidDevice(SEED_GUID.upper())
    boot(mem, [dev], flavor=flavor, rsdp_revision=2 if flavor == "ovmf" else 0)
    found = find_vmgenid(mem)
    assert found.found and found.source == "acpi"
    assert canonical(found.guid) == dev.query()["guid"] == SEED_GUID  # type: ignore[arg-type]
    assert found.paddr == dev.address
    assert mem.read(dev.address, 16) == bytes.fromhex("33221100 5544 7766 8899 aabbccddeeff".replace(" ", ""))
    by_blob = find_vmgenid(mem, addr_blob=bytes(dev.addr_le))
    assert by_blob.guid == found.guid and by_blob.source == "address-blob"


def test_guid_change_is_seen() -> None:
    mem = SparseMemory([Range(0, 64 << 20)])
    dev = VmgenidDevice(SEED_GUID)
    boot(mem, [dev])
    new = uuid.UUID("324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87")
    dev.set_guid(new, mem)
    assert find_vmgenid(mem).guid == new


def test_bad_blob_and_missing_device() -> None:
    mem = SparseMemory([Range(0, 64 << 20)])
    dev = VmgenidDevice(SEED_GUID)
    boot(mem, [dev])
    bad = find_vmgenid(mem, addr_blob=(dev.address + 8).to_bytes(8, "little"))
    assert not bad.found and any(s.action == "blob alignment" and s.verdict == "fail" for s in bad.evidence)
    empty = SparseMemory([Range(0, 64 << 20)])
    boot(empty, [])
    none = find_vmgenid(empty)
    assert not none.found and none.evidence.steps[-1].action == "SSDT with OEM table id 'VMGENID'"

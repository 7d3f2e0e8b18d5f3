"""Saved VM state feeds discovery: a migration stream's device sections give the blob walk
(RFC device) and the fw_cfg record check (upstream device) their input, end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmci.discover.run import find_vmcoreinfo
from vmci.formats import open_dump
from vmci.formats.migration.writer import VmcoreinfoRecord, standard_devices, write_migration
from vmci.producer.scenario import Scenario, build


def stream(tmp_path: Path, device: str, **kw) -> tuple[Path, object]:
    g = build(Scenario(ram=64 << 20, device=device, firmware="seabios", seed=7, **kw))
    if device == "rfc":
        devices = standard_devices(vmcoreinfo_rfc_addr=g.vmcoreinfo_device.address)
    else:
        rec = g.vmcoreinfo_device.record()
        devices = standard_devices(vmcoreinfo_record=VmcoreinfoRecord(**rec))
    path = tmp_path / f"{device}.migration"
    with path.open("wb") as f:
        write_migration(f, g.mem, devices=devices)
    return path, g


@pytest.mark.parametrize("rfc_offset", [40, 36])
def test_rfc_blob_from_stream_walks_to_the_note(tmp_path, rfc_offset):
    path, g = stream(tmp_path, "rfc", rfc_offset=rfc_offset)
    with open_dump(path) as d:
        blob = d.saved_state.devices.vmcoreinfo_addr_blob
        assert int.from_bytes(blob, "little") == g.vmcoreinfo_device.address
        disc = find_vmcoreinfo(d, rfc_offset=rfc_offset)
        chosen = disc.chosen
        assert chosen is not None and chosen.source == "address-blob"
        assert chosen.text.raw == g.placed.text
        steps = " ".join(s.detail for s in chosen.evidence.steps)
        assert f"page {g.vmcoreinfo_device.address - rfc_offset:#x} + {rfc_offset}" in steps


def test_upstream_record_from_stream_is_checked(tmp_path):
    path, g = stream(tmp_path, "upstream")
    with open_dump(path) as d:
        record = d.saved_state.devices.vmcoreinfo_record
        assert record == VmcoreinfoRecord(**g.vmcoreinfo_device.record())  # what the guest wrote
        disc = find_vmcoreinfo(d)
        assert disc.chosen is not None and disc.chosen.source == "fw-cfg-record"
        assert disc.chosen.paddr == g.placed.note_paddr
        assert disc.chosen.text.raw == g.placed.text


def test_explicit_blob_overrides_saved_state(tmp_path):
    path, g = stream(tmp_path, "rfc")
    with open_dump(path) as d:
        wrong = (g.vmcoreinfo_device.address + 4096).to_bytes(8, "little")
        disc = find_vmcoreinfo(d, addr_blob=wrong, strategies=["address-blob"])
        assert disc.chosen is None

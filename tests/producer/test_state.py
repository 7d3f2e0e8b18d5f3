"""The Guest state the actors fill in, stage by stage."""

from __future__ import annotations

import random

import pytest

from vmci.errors import UsageError
from vmci.producer.build import build
from vmci.producer.config import Scenario
from vmci.producer.guest import build_memory, guest_layout
from vmci.producer.linux import PlacedVmcoreinfo
from vmci.producer.state import Guest


def test_placed_is_checked_before_the_kernel_ran() -> None:
    s = Scenario(ram="16M")
    layout = guest_layout(s.ram)
    g = Guest(s, random.Random(0), layout, build_memory(layout, seed=0), s.device, s.rfc_offset)
    assert g.placed_vmcoreinfo is None and g.kernel is None and g.firmware is None
    with pytest.raises(UsageError, match="not placed its VMCOREINFO yet"):
        _ = g.placed


def test_every_stage_filled_after_build() -> None:
    g = build(Scenario(seed=1, ram="32M", vmgenid=True))
    assert isinstance(g.placed, PlacedVmcoreinfo) and g.placed is g.placed_vmcoreinfo
    assert g.fw_cfg is not None and g.acpi is not None and g.firmware is not None
    assert g.kernel is not None and g.tables is not None and g.banner is not None and len(g.cpus) == 2
    assert g.driver_dest == g.vmcoreinfo_device.address
    assert set(g.ssdts) == {"VMCOREIN", "VMGENID"}


def test_after_boot_faults_edit_the_os_view_not_what_the_firmware_published() -> None:
    g = build(Scenario(seed=1, ram="32M", vmgenid=True, faults=["missing-ssdt"]))
    assert g.firmware is not None and g.firmware.acpi is not None and g.acpi_tables is not None
    published = [t.key for t in g.firmware.acpi.tables]
    assert published == ["FACP:BXPCFACP", "SSDT:VMCOREIN", "SSDT:VMGENID"]
    assert [t.key for t in g.acpi_tables.tables] == ["FACP:BXPCFACP", "SSDT:VMGENID"]
    assert g.ssdts["VMCOREIN"] == g.firmware.acpi.tables[1].address  # recorded before the fault

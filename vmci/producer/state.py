"""The guest's state while the actors run: what each of them did, which the dump writers and the
truth read afterwards.  :func:`vmci.producer.build.build` fills it stage by stage; the faults
(:mod:`vmci.producer.faults`) change it at their stage.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from vmci.core.dump import CpuState
from vmci.core.memory import Range, SparseMemory
from vmci.errors import UsageError
from vmci.producer.acpi_tables import AcpiBuild
from vmci.producer.allocator import PageAllocator
from vmci.producer.config import Scenario
from vmci.producer.devices import RfcVmcoreinfoDevice, UpstreamVmcoreinfoDevice, VmgenidDevice
from vmci.producer.firmware import FirmwareResult, PublishedAcpi
from vmci.producer.fw_cfg import FwCfg
from vmci.producer.guest import GuestLayout
from vmci.producer.kernel_layout import KernelLayout
from vmci.producer.linux import PlacedVmcoreinfo
from vmci.producer.mm import MemMapTruth
from vmci.producer.pagetables import KernelTables
from vmci.producer.pagetables_arm64 import Arm64KernelTables
from vmci.producer.printk import PrintkTruth

__all__ = ["Guest", "VmcoreinfoDevice"]

VmcoreinfoDevice = RfcVmcoreinfoDevice | UpstreamVmcoreinfoDevice


@dataclass
class Guest:
    """Every actor's result: the state a dump is written from, and the truth.

    Fields are filled in the order the actors run; those of a later stage are ``None`` (or empty)
    before it.  :attr:`placed` is the one every later stage needs, so it is a checked property.
    """

    scenario: Scenario
    rng: random.Random
    layout: GuestLayout
    mem: SparseMemory
    device_kind: str
    rfc_offset: int
    # QEMU
    vmcoreinfo_device: VmcoreinfoDevice | None = None
    vmgenid_device: VmgenidDevice | None = None
    fw_cfg: FwCfg | None = None
    acpi: AcpiBuild | None = None
    # firmware; acpi_tables starts as what it published, after-boot faults edit it
    firmware: FirmwareResult | None = None
    acpi_tables: PublishedAcpi | None = None
    # guest Linux
    kernel: KernelLayout | None = None
    image: dict[str, int] = field(default_factory=dict)
    tables: KernelTables | None = None  # x86_64
    arm_tables: Arm64KernelTables | None = None  # aarch64
    placed_vmcoreinfo: PlacedVmcoreinfo | None = None
    stale: PlacedVmcoreinfo | None = None
    crashkernel: Range | None = None
    cpus: list[CpuState] = field(default_factory=list)
    banner: tuple[int, int, bytes] | None = None  # (vaddr, paddr, text)
    # guest driver
    driver: dict[str, int] = field(default_factory=dict)
    driver_dest: int | None = None
    ssdts: dict[str, int] = field(default_factory=dict)  # OEM table id -> address, before after-boot faults
    mem_map: MemMapTruth | None = None  # the kernel's struct page arrays (Scenario.mem_map)
    faults: list[dict[str, str]] = field(default_factory=list)
    printk: PrintkTruth | None = None  # what the guest kernel logged (scenario ``log``)
    # the guest kernel's page allocator after boot (free RAM for what runs later, e.g. its log)
    alloc: PageAllocator | None = None

    @property
    def placed(self) -> PlacedVmcoreinfo:
        """The running kernel's ``vmcoreinfo_note``/``vmcoreinfo_data`` (set by the guest-Linux stage)."""
        if self.placed_vmcoreinfo is None:
            raise UsageError("the guest kernel has not placed its VMCOREINFO yet")
        return self.placed_vmcoreinfo

"""``vmci triage`` over the real-QEMU tier's dumps: release, KASLR values and VM generation ID equal
what the guest and QEMU said (uname, /proc/kallsyms, /proc/iomem, QMP query-vm-generation-id)."""

from __future__ import annotations

import pytest

from vmci.fleet.runners import RunConfig, run
from vmci.testing.qemu import RealGuest

pytestmark = pytest.mark.realworld

#: __START_KERNEL_map + CONFIG_PHYSICAL_START: where x86_64 links _text
#: (arch/x86/include/asm/page_64_types.h, arch/x86/Kconfig).
TEXT_LINK = 0xFFFFFFFF81000000
DUMPS = ["elf", "elf_paging", "kdump_zlib", "migration"]


def check(guest: RealGuest, vmgenid: bool) -> None:
    paths = [str(guest[k]) for k in DUMPS]
    recs = {r.path: r for r in run(paths, None, RunConfig(jobs=2))}
    assert sorted(recs) == sorted(paths)
    for p, rec in recs.items():
        assert not rec.failed, (p, rec.error)
        assert rec.release == guest.facts["release"], p
        assert rec.kerneloffset == guest.guest.kallsyms["_text"] - TEXT_LINK, p
        assert rec.phys_base == guest.guest.phys_base, p
        assert rec.arch == "x86_64" and rec.missing_bytes == 0 and rec.truncated is False, p
        assert rec.vmgenid == (guest.facts["qmp_guid"] if vmgenid else None), p


def test_with_device(with_device: RealGuest) -> None:
    check(with_device, vmgenid=True)


def test_without_device(without_device: RealGuest) -> None:
    check(without_device, vmgenid=False)

"""KernelMemory on real Debian guests under QEMU: the release ``init_uts_ns`` holds equals the guest's
``uname -r``, and ``_text`` (from the guest's /proc/kallsyms) translates to the "Kernel code" start of
its /proc/iomem, with the root from the VMCOREINFO and from a vCPU's CR3 alone."""

from __future__ import annotations

import pytest

from vmci.discover.run import find_vmcoreinfo
from vmci.formats import open_dump
from vmci.kernel.vmcoreinfo import VmcoreInfo
from vmci.kernel.vmem import KernelMemory
from vmci.testing.qemu import RealGuest

pytestmark = pytest.mark.realworld


def release_at(kmem: KernelMemory, text: VmcoreInfo) -> str:
    """``init_uts_ns.name.release`` at the addresses the kernel's own text gives."""
    name = text.symbol("init_uts_ns") + (text.offset("uts_namespace", "name") or 0)  # type: ignore[operator]
    return kmem.read_cstring(name + 130, 65).decode()


@pytest.mark.parametrize("which", ["elf", "elf_paging", "kdump_zlib", "migration"])
def test_root_from_the_vmcoreinfo(with_device: RealGuest, which: str) -> None:
    facts = with_device.guest
    with open_dump(with_device[which]) as d:
        chosen = find_vmcoreinfo(d).chosen
        assert chosen is not None and chosen.text is not None
        kmem = KernelMemory.from_dump(d, chosen.text)
        assert kmem.setup.how == "the VMCOREINFO's kernel page-table root" and not kmem.setup.warnings
        assert release_at(kmem, chosen.text) == with_device.facts["release"]
        assert kmem.translate(facts.kallsyms["_text"]) == facts.iomem("Kernel code")[0][0]
        assert kmem.phys_base == facts.phys_base


@pytest.mark.parametrize("which", ["elf", "kdump_zlib", "migration"])
def test_root_from_cr3_without_a_vmcoreinfo(without_device: RealGuest, which: str) -> None:
    facts = without_device.guest
    own = VmcoreInfo.parse(without_device.note_desc)  # the kernel's words, read from RAM by pmemsave
    with open_dump(without_device[which]) as d:
        assert not d.notes_named("VMCOREINFO")
        kmem = KernelMemory.from_dump(d)
        assert kmem.setup.how.startswith("the kernel page tables of vCPU ")
        assert (kmem.kerneloffset, kmem.phys_base) == (own.kerneloffset, facts.phys_base)
        assert kmem.translate(facts.kallsyms["_text"]) == facts.iomem("Kernel code")[0][0]
        assert release_at(kmem, own) == without_device.facts["release"]

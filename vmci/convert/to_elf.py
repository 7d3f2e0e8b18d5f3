"""Any dump to an ELF core: QEMU's classic layout with every note (``elf``), or a kexec-style
``/proc/vmcore`` (``kexec-elf``) that makedumpfile and vmcore-dmesg take as a capture kernel's.

``elf``: program headers right after the file header (no section headers, the right
``e_ehsize``), one PT_LOAD per stretch of physical memory with ``p_vaddr == p_paddr`` as QEMU
writes since 4.0 (``dump/dump.c``), ``e_machine`` of the kernel's architecture (QEMU writes
``EM_386`` when its first vCPU is not in long mode), notes ``CORE``/``QEMU`` per vCPU, the
VMCOREINFO and the ``VMCI`` conversion record.

``kexec-elf``: what a kdump kernel exports: the notes ``CORE`` per vCPU and the VMCOREINFO (plus
the ``VMCI`` record, which readers skip), a PT_LOAD for the kernel image at its virtual address
(kexec-tools adds it; vmcore-dmesg resolves symbols through it), then RAM at its direct-map
addresses (makedumpfile derives ``PAGE_OFFSET`` from them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, BinaryIO

from vmci.convert.filters import Exclusion
from vmci.convert.source import Prepared
from vmci.errors import VmciError
from vmci.formats.elf.writer import write_elf

Progress = Callable[[int, int], None]


def kernel_image_load(prep: Prepared) -> tuple[int, int, int] | None:
    """``(vaddr, paddr, size)`` of the kernel image's linear mapping, from the kernel's page tables:
    the run of leaves in the image window that map ``va -> va - image_start + phys_base`` and hold
    ``_stext`` (or ``_text`` + ``KERNELOFFSET``)."""
    kmem, arch, pb = prep.kmem, prep.arch, prep.phys_base
    kc = arch.kernel
    if kmem is None or kc is None or pb is None:
        return None
    text = kmem.symbol("_stext")
    if text is None and kmem.kerneloffset is not None:
        text = kc.text_link + kmem.kerneloffset
    if text is None:
        return None
    runs: list[list[int]] = []
    try:
        for leaf in kmem.walk(kc.image_start, kc.image_end):
            if arch.kernel_phys(leaf.va, pb) != leaf.pa:
                continue
            if runs and runs[-1][0] + runs[-1][2] == leaf.va:
                runs[-1][2] += leaf.size
            else:
                runs.append([leaf.va, leaf.pa, leaf.size])
    except VmciError:
        return None
    for va, pa, size in runs:
        if va <= text < va + size:
            return va, pa, size
    return None


def direct_map_base(prep: Prepared) -> int:
    """Where the direct map starts (randomized by KASLR): found in the kernel's page tables, else
    the architecture's default."""
    kmem = prep.kmem
    if kmem is not None:
        try:
            found = prep.arch.direct_map(prep.dump.memory, kmem.tables)
        except VmciError:
            found = None
        if found is not None:
            return found
    return prep.arch.page_offset or 0


def write_elf_file(prep: Prepared, out: BinaryIO, notes_blob: bytes, *, kexec: bool, exclusion: Exclusion,
                   progress: Progress | None = None) -> dict[str, Any]:
    """Write one ELF core of ``prep``'s memory, the excluded pages left out."""
    arch = prep.arch
    machine = arch.elf_machines[0] if arch.elf_machines else 0
    common: dict[str, Any] = dict(machine=machine, bits=8 * arch.pointer_size,
                                  little=prep.byteorder == "little", exclude=exclusion.bitmap,
                                  progress=progress, align=prep.pages.page_size)
    if not kexec:
        facts = write_elf(out, prep.pages, notes_blob, style="qemu", section_headers_first=False,
                          **common)
    else:
        image = kernel_image_load(prep)
        facts = write_elf(out, prep.pages, notes_blob, style="kexec", direct_map=direct_map_base(prep),
                          extra_loads=[image] if image else [], **common)
        facts["kernel_image_load"] = image
    facts["dumpable_pages"] = facts["memory_bytes"] // prep.pages.page_size
    return facts


__all__ = ["direct_map_base", "kernel_image_load", "write_elf_file"]

"""Helpers the real-QEMU tests share (not fixtures: plain functions)."""

from __future__ import annotations

from pathlib import Path

from vmci.core.dump import Dump
from vmci.kernel.vmcoreinfo import VmcoreInfo


def kexec_rewrite(dump: Dump, info: VmcoreInfo, out: Path) -> Path:
    """``dump``'s memory as a kexec-style ``/proc/vmcore`` (what makedumpfile and vmcore-dmesg
    accept): every RAM range at its physical address, the kernel-text PT_LOAD kexec-tools adds
    (``_text`` and ``KERNELOFFSET``/``phys_base`` from ``info``), the CPU notes and the VMCOREINFO."""
    from vmci.arch.x86_64.consts import START_KERNEL_MAP
    from vmci.formats.elf import write_elf
    from vmci.formats.notes import encode_notes
    from vmci.kernel.vmcoreinfo import build_note

    pb = info.phys_base
    assert pb is not None and info.kerneloffset is not None
    text_va = 0xFFFFFFFF81000000 + info.kerneloffset
    cores = [(n.name, n.type, n.desc) for n in dump.notes if n.name == "CORE"]
    with out.open("wb") as f:
        write_elf(f, dump.memory, encode_notes(cores) + build_note(info), style="kexec",
                  extra_loads=[(text_va, text_va - START_KERNEL_MAP + pb.value, 0x3000000)])
    return out

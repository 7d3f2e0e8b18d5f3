"""Write ELF core dumps as QEMU ``dump-guest-memory`` (the <= 7.1 and >= 7.2 layouts, paging
mode) and kexec's ``/proc/vmcore`` do; more than 65534 program headers use PN_XNUM."""

from __future__ import annotations

import bisect
from typing import Any, BinaryIO

from vmci.core.memory import PhysicalMemory, is_zero
from vmci.layouts.elf import EM_X86_64, ET_CORE, PN_XNUM, PT_LOAD, PT_NOTE, SHT_NULL, SHT_STRTAB, elf_layout


def write_elf(
    out: BinaryIO,
    memory: PhysicalMemory,
    notes_blob: bytes = b"",
    *,
    machine: int = EM_X86_64,
    bits: int = 64,
    little: bool = True,
    style: str = "qemu",
    section_headers_first: bool = True,
    ehsize_quirk: bool = False,
    mappings: list[tuple[int, int, int]] | None = None,
    direct_map: int = 0xFFFF888000000000,
    extra_loads: list[tuple[int, int, int]] = (),  # type: ignore[assignment]
    sparse: bool = True,
) -> dict[str, Any]:
    """Write ``memory`` and the notes as an ELF core to ``out`` (a seekable binary file).

    ``style="qemu"``: PT_NOTE then one PT_LOAD per physical range, ``p_vaddr == p_paddr``
    (QEMU >= 4.0), ``p_align = 0``; with ``section_headers_first`` the 7.2+ layout (section
    headers, then program headers, ``.shstrtab`` at the end), else the <= 7.1 layout.
    ``mappings`` (``(vaddr, paddr, size)``) makes a paging-mode dump: one PT_LOAD per mapping,
    pointing into the physical blocks, ``p_offset = -1`` where nothing backs it.
    ``style="kexec"``: ``/proc/vmcore``-like, ``p_vaddr`` in the direct map at ``direct_map``;
    ``extra_loads`` adds ``(vaddr, paddr, size)`` PT_LOADs (the kernel-text segment kexec
    adds) that share the file bytes of the physical range they fall in.
    More than 65534 program headers use PN_XNUM.  Unreadable memory is written as zeros;
    with ``sparse`` all-zero blocks become file holes.
    """
    layout = elf_layout(bits, little)
    ehdr_size, ph_size, sh_size = layout.ehdr.sizeof(), layout.phdr.sizeof(), layout.shdr.sizeof()
    blocks = list(memory.ranges)
    if mappings is not None:
        loads = list(mappings)
    elif style == "kexec":
        loads = [*extra_loads, *((direct_map + r.start, r.start, r.size) for r in blocks)]
    else:
        loads = [(r.start, r.start, r.size) for r in blocks]
    phnum = 1 + len(loads)
    xnum = phnum >= PN_XNUM
    qemu72 = style == "qemu" and section_headers_first
    shnum = 2 if qemu72 else (1 if xnum else 0)
    if qemu72:
        shoff = ehdr_size
        phoff = shoff + shnum * sh_size
        note_off = phoff + phnum * ph_size
    else:
        phoff = ehdr_size
        shoff = phoff + phnum * ph_size if shnum else 0
        note_off = phoff + phnum * ph_size + shnum * sh_size
    mem_off = note_off + len(notes_blob)
    block_off: list[int] = []
    pos = mem_off
    for r in blocks:
        block_off.append(pos)
        pos += r.size
    strtab_off = pos
    starts = [r.start for r in blocks]

    def locate(paddr: int, size: int) -> tuple[int, int]:
        i = bisect.bisect_right(starts, paddr) - 1
        if i < 0 or paddr >= blocks[i].end:
            return -1, 0
        return block_off[i] + paddr - blocks[i].start, min(size, blocks[i].end - paddr)

    all_ones = (1 << bits) - 1
    phdrs = bytearray(
        layout.phdr.build(
            dict(
                p_type=PT_NOTE,
                p_flags=0,
                p_offset=note_off,
                p_vaddr=0,
                p_paddr=0,
                p_filesz=len(notes_blob),
                p_memsz=len(notes_blob),
                p_align=0,
            )
        )
    )
    for vaddr, paddr, size in loads:
        off, filesz = locate(paddr, size)
        phdrs += layout.phdr.build(
            dict(
                p_type=PT_LOAD,
                p_flags=0,
                p_offset=off & all_ones,
                p_vaddr=vaddr,
                p_paddr=paddr,
                p_filesz=filesz,
                p_memsz=size,
                p_align=0,
            )
        )
    shdrs = b""
    if shnum:
        null = layout.shdr.build(
            dict(
                sh_name=0,
                sh_type=SHT_NULL,
                sh_flags=0,
                sh_addr=0,
                sh_offset=0,
                sh_size=0,
                sh_link=0,
                sh_info=phnum if xnum else 0,
                sh_addralign=0,
                sh_entsize=0,
            )
        )
        shdrs = null
        if qemu72:
            shdrs += layout.shdr.build(
                dict(
                    sh_name=1,
                    sh_type=SHT_STRTAB,
                    sh_flags=0,
                    sh_addr=0,
                    sh_offset=strtab_off,
                    sh_size=11,
                    sh_link=0,
                    sh_info=0,
                    sh_addralign=0,
                    sh_entsize=0,
                )
            )
    ehdr = layout.ehdr.build(
        dict(
            e_ident=dict(
                ei_class=2 if bits == 64 else 1,
                ei_data=1 if little else 2,
                ei_version=1,
                ei_osabi=0,
                ei_abiversion=0,
            ),
            e_type=ET_CORE,
            e_machine=machine,
            e_version=1,
            e_entry=0,
            e_phoff=phoff,
            e_shoff=shoff,
            e_flags=0,
            e_ehsize=8 if ehsize_quirk else ehdr_size,
            e_phentsize=ph_size,
            e_phnum=PN_XNUM if xnum else phnum,
            e_shentsize=sh_size if shnum else 0,
            e_shnum=shnum,
            e_shstrndx=shnum - 1 if qemu72 else 0,
        )
    )
    out.seek(0)
    out.write(ehdr)
    out.seek(phoff)
    out.write(phdrs)
    if shnum:
        out.seek(shoff)
        out.write(shdrs)
    out.seek(note_off)
    out.write(notes_blob)
    chunk = 1 << 20
    for r, off in zip(blocks, block_off, strict=True):
        for a in range(r.start, r.end, chunk):
            n = min(chunk, r.end - a)
            data = memory.read(a, n, zero_fill=True)
            if sparse and is_zero(data):
                continue
            out.seek(off + a - r.start)
            out.write(data)
    out.seek(strtab_off)
    if qemu72:
        out.write(b"\0.shstrtab\0")
    out.truncate(strtab_off + (11 if qemu72 else 0))
    return {"phnum": phnum, "note_offset": note_off, "memory_offset": mem_off, "pn_xnum": xnum}

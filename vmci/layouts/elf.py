"""ELF32/ELF64 core-file layouts: file header, program and section headers.

The note header lives in :mod:`vmci.layouts.note`.  Readers use pyelftools for the file
header and sections, and these declarations (through :func:`vmci.layouts.struct_format`)
for bulk program-header tables; writers build everything from these declarations.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import construct as cs

ELFMAG = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
EV_CURRENT = 1
ET_CORE = 4
EM_386, EM_X86_64, EM_AARCH64, EM_ARM = 3, 62, 183, 40
PT_NULL, PT_LOAD, PT_NOTE = 0, 1, 4
SHT_NULL, SHT_STRTAB = 0, 3
PN_XNUM = 0xFFFF
NT_PRSTATUS = 1

MACHINES = {EM_386: "i386", EM_X86_64: "x86_64", EM_AARCH64: "aarch64", EM_ARM: "arm"}


@dataclass(frozen=True)
class ElfLayout:
    """The declarations for one ELF class and byte order."""

    bits: int
    little: bool
    ehdr: cs.Construct
    phdr: cs.Construct
    shdr: cs.Construct


@cache
def elf_layout(bits: int, little: bool = True) -> ElfLayout:
    """Return the header declarations for ``bits`` (32 or 64) and the byte order."""
    if bits not in (32, 64):
        raise ValueError("ELF class must be 32 or 64")
    u16 = cs.Int16ul if little else cs.Int16ub
    u32 = cs.Int32ul if little else cs.Int32ub
    u64 = cs.Int64ul if little else cs.Int64ub
    word = u64 if bits == 64 else u32
    ident = cs.Struct(
        "magic" / cs.Const(ELFMAG),
        "ei_class" / cs.Int8ul,
        "ei_data" / cs.Int8ul,
        "ei_version" / cs.Int8ul,
        "ei_osabi" / cs.Int8ul,
        "ei_abiversion" / cs.Int8ul,
        cs.Padding(7),
    )
    ehdr = cs.Struct(
        "e_ident" / ident,
        "e_type" / u16,
        "e_machine" / u16,
        "e_version" / u32,
        "e_entry" / word,
        "e_phoff" / word,
        "e_shoff" / word,
        "e_flags" / u32,
        "e_ehsize" / u16,
        "e_phentsize" / u16,
        "e_phnum" / u16,
        "e_shentsize" / u16,
        "e_shnum" / u16,
        "e_shstrndx" / u16,
    )
    if bits == 64:
        phdr = cs.Struct(
            "p_type" / u32,
            "p_flags" / u32,
            "p_offset" / u64,
            "p_vaddr" / u64,
            "p_paddr" / u64,
            "p_filesz" / u64,
            "p_memsz" / u64,
            "p_align" / u64,
        )
    else:
        phdr = cs.Struct(
            "p_type" / u32,
            "p_offset" / u32,
            "p_vaddr" / u32,
            "p_paddr" / u32,
            "p_filesz" / u32,
            "p_memsz" / u32,
            "p_flags" / u32,
            "p_align" / u32,
        )
    shdr = cs.Struct(
        "sh_name" / u32,
        "sh_type" / u32,
        "sh_flags" / word,
        "sh_addr" / word,
        "sh_offset" / word,
        "sh_size" / word,
        "sh_link" / u32,
        "sh_info" / u32,
        "sh_addralign" / word,
        "sh_entsize" / word,
    )
    return ElfLayout(bits, little, ehdr, phdr, shdr)

"""Link-time symbols of a kernel build: System.map, vmlinux (stripped or not) or a bzImage.

``load_symbols`` gives :class:`KernelSymbols`; a System.map line is ``address type name``; a vmlinux
gives its symbol table, its GNU build ID (``.notes``) and the ``linux_banner`` bytes in ``.rodata``;
a bzImage (x86 boot protocol, ``Documentation/arch/x86/boot.rst``: ``HdrS`` at 0x202,
``payload_offset``/``payload_length``) carries a compressed vmlinux whose ``.text`` start is
``_text``.
"""

from __future__ import annotations

import struct  # pyelftools raises struct.error on cut ELF files
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from vmci.arch import Arch, by_elf_machine
from vmci.errors import FormatError, UsageError
from vmci.layouts.bzimage import BZIMAGE_HEADER_SIZE, BZIMAGE_MAGIC, bzimage_header

BANNER = b"Linux version "


def parse_system_map(text: str) -> dict[str, int]:
    """``name -> address`` from a System.map (``addr type name`` lines; the first of a name wins)."""
    out: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 3:
            raise FormatError(f"System.map line {n} has {len(parts)} fields, expected 3", field=f"line {n}")
        try:
            addr = int(parts[0], 16)
        except ValueError:
            raise FormatError(f"System.map line {n}: bad address {parts[0][:20]!r}",
                              field=f"line {n}") from None
        out.setdefault(parts[2], addr)
    return out


def _in_image(arch: Arch | None, vaddr: int) -> bool:
    """Is ``vaddr`` a kernel-image address (the architecture's window; else the upper half)?"""
    if arch is not None and arch.kernel is not None:
        return arch.kernel.in_image(vaddr)
    return vaddr >= 1 << 63


@dataclass
class KernelSymbols:
    """Link-time addresses of a kernel build (and its build ID when the file has one)."""

    source: str
    symbols: dict[str, int] = field(default_factory=dict)
    build_id: str | None = None
    banner: bytes | None = None  # the linux_banner bytes from a vmlinux, for an exact comparison

    @property
    def text(self) -> int | None:
        return self.symbols.get("_text", self.symbols.get("_stext"))


def _elf_symbols(data: bytes | BinaryIO, source: str) -> KernelSymbols:
    import io

    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    from elftools.elf.enums import ENUM_E_MACHINE
    from elftools.elf.sections import NoteSection, SymbolTableSection

    out = KernelSymbols(source)
    try:
        elf = ELFFile(io.BytesIO(data) if isinstance(data, bytes) else data)
        for sec in elf.iter_sections():
            if isinstance(sec, SymbolTableSection):
                for sym in sec.iter_symbols():
                    if sym.name and sym["st_value"]:
                        out.symbols.setdefault(sym.name, sym["st_value"])
            elif isinstance(sec, NoteSection):
                for note in sec.iter_notes():
                    if note["n_type"] == "NT_GNU_BUILD_ID":
                        out.build_id = note["n_desc"]
        arch = by_elf_machine(ENUM_E_MACHINE.get(elf["e_machine"], -1))
        loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD" and _in_image(arch, s["p_vaddr"])]
        text = elf.get_section_by_name(".text")
        if "_text" not in out.symbols and (text is not None or loads):
            # a stripped vmlinux (as inside a bzImage): _text is where .text starts
            out.symbols["_text"] = text["sh_addr"] if text is not None else min(s["p_vaddr"] for s in loads)
        rodata = elf.get_section_by_name(".rodata")
        if rodata is not None:
            body = rodata.data()
            at = body.find(BANNER)
            if at >= 0:
                end = body.find(b"\0", at)
                out.banner = bytes(body[at:end if end > 0 else at + 256])
                out.symbols.setdefault("linux_banner", rodata["sh_addr"] + at)
    except (ELFError, ValueError, struct.error, KeyError) as e:
        raise FormatError(f"{source}: not a usable vmlinux ELF: {e}", field="vmlinux") from None
    return out


def _bzimage_payload(data: bytes, source: str) -> bytes:
    """The vmlinux ELF inside a bzImage (``payload_offset``/``payload_length`` of the setup header)."""
    from vmci.core.codecs import CodecError, decompress, sniff

    if len(data) < BZIMAGE_HEADER_SIZE or data[0x202:0x206] != BZIMAGE_MAGIC:
        raise FormatError(f"{source}: not a bzImage (no HdrS)", field="header", offset=0x202)
    hdr = bzimage_header.parse(data[:BZIMAGE_HEADER_SIZE])
    off, length = hdr.payload_offset, hdr.payload_length
    start = (hdr.setup_sects or 4) * 512 + 512 + off
    payload = data[start:start + length]
    if len(payload) != length or length == 0:
        raise FormatError(f"{source}: payload of {length} bytes does not fit the file",
                          field="payload_length", offset=0x24C)
    kind = sniff(payload)
    if kind is None:
        raise UsageError(f"{source}: unsupported bzImage compression {payload[:4].hex()} "
                         "(xz, gzip, bzip2, zstd)")
    try:
        return decompress(kind, payload)
    except CodecError as e:
        raise FormatError(f"{source}: cannot decompress the payload: {e}", field="payload") from None


def load_symbols(path: str | Path) -> KernelSymbols:
    """Symbols from a System.map, a vmlinux (ELF, stripped or not) or a bzImage (``vmlinuz``)."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            head = f.read(4)
            if head == b"\x7fELF":  # a vmlinux with debug info is hundreds of MiB: stream it
                return _elf_symbols(f, str(p))
        data = p.read_bytes()  # a bzImage or a System.map: a few MiB
    except OSError as e:
        raise UsageError(f"cannot read {p}: {e.strerror}") from None
    if data[0x202:0x206] == b"HdrS":
        return _elf_symbols(_bzimage_payload(data, str(p)), f"{p} (vmlinux inside)")
    syms = KernelSymbols(str(p), parse_system_map(data.decode("ascii", "replace")))
    if not syms.text:
        raise FormatError(f"{p}: the System.map has neither _text nor _stext (a stub? Debian ships the "
                          "real one in linux-image-*-dbg; pass the vmlinuz instead)", field="_text")
    return syms


__all__ = ["BANNER", "KernelSymbols", "load_symbols", "parse_system_map"]

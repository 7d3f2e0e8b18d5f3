"""Typed container headers: what a dump's own header says, as plain dataclasses the readers fill.

Upper layers read these fields, never string keys: ``isinstance(dump.header, KdumpHeader)`` says
the dump is kdump-compressed (raw, flattened or a split set), and ``dump.header.phys_base`` is
the sub-header's value.  :meth:`ContainerHeader.to_dict` gives the facts ``vmci info`` prints,
in a stable order (the JSON keys of ``info --json``).

Field names follow the on-disk names of the formats' own declarations (makedumpfile's
``diskdump_mod.h`` for kdump, the System V ABI for ELF), as :mod:`vmci.layouts` spells them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

UTS_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")


#: The note name of :class:`ConversionRecord` (type 0), after the VMCOREINFO note in what
#: ``vmci convert`` writes.
CONVERSION_NOTE_NAME = "VMCI"


@dataclass(frozen=True)
class ConversionRecord:
    """What ``vmci convert`` did to a dump, carried by the converted file itself (a ``VMCI`` ELF
    note of ``KEY=value`` lines, like the VMCOREINFO's): where it came from, where the VMCOREINFO
    came from, the dump level, what was repaired (one line each) and how many pages were left out."""

    tool: str
    source_format: str
    source: str
    target: str
    dump_level: int
    vmcoreinfo_source: str
    """The discovery strategy that found the text, ``synthesized``, or ``none``."""
    arch: str = ""
    phys_base: int | None = None
    repairs: tuple[str, ...] = ()
    excluded: tuple[tuple[str, int], ...] = ()
    """Pages left out, by class (``cache``, ``user``, ``free``, ...)."""

    def to_text(self) -> bytes:
        lines = ["VMCI_CONVERT=1", f"TOOL={self.tool}", f"SOURCE_FORMAT={self.source_format}",
                 f"SOURCE={self.source}", f"TARGET={self.target}", f"DUMP_LEVEL={self.dump_level}",
                 f"VMCOREINFO_SOURCE={self.vmcoreinfo_source}", f"ARCH={self.arch}"]
        if self.phys_base is not None:
            lines.append(f"PHYS_BASE={self.phys_base}")
        lines += [f"EXCLUDED({name})={n}" for name, n in self.excluded]
        lines += [f"REPAIR={r}" for r in self.repairs]
        return ("\n".join(line.replace("\n", " ") for line in lines) + "\n").encode()

    @classmethod
    def parse(cls, raw: bytes) -> ConversionRecord | None:
        """The record in a ``VMCI`` note's descriptor, or None when it is not one."""
        text = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
        values: dict[str, str] = {}
        repairs: list[str] = []
        excluded: list[tuple[str, int]] = []
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if not sep:
                continue
            if key == "REPAIR":
                repairs.append(value)
            elif key.startswith("EXCLUDED(") and key.endswith(")") and value.isdigit():
                excluded.append((key[9:-1], int(value)))
            else:
                values.setdefault(key, value)
        if values.get("VMCI_CONVERT") != "1":
            return None

        def number(key: str) -> int | None:
            try:
                return int(values[key])
            except (KeyError, ValueError):
                return None

        return cls(tool=values.get("TOOL", ""), source_format=values.get("SOURCE_FORMAT", ""),
                   source=values.get("SOURCE", ""), target=values.get("TARGET", ""),
                   dump_level=number("DUMP_LEVEL") or 0,
                   vmcoreinfo_source=values.get("VMCOREINFO_SOURCE", ""),
                   arch=values.get("ARCH", ""), phys_base=number("PHYS_BASE"), repairs=tuple(repairs),
                   excluded=tuple(excluded))

    def to_dict(self) -> dict[str, Any]:
        return {"tool": self.tool, "source_format": self.source_format, "source": self.source,
                "target": self.target, "dump_level": self.dump_level,
                "vmcoreinfo_source": self.vmcoreinfo_source, "arch": self.arch, "phys_base": self.phys_base,
                "excluded": dict(self.excluded), "repairs": list(self.repairs)}


class ContainerHeader:
    """The base of every container header; a container without one has this (no facts)."""

    def to_dict(self) -> dict[str, Any]:
        """The facts ``vmci info`` shows, keyed as in its JSON output."""
        return {}


@dataclass(frozen=True)
class Utsname:
    """``struct new_utsname`` as a dump header stores it (QEMU fills only ``machine``)."""

    sysname: str = ""
    nodename: str = ""
    release: str = ""
    version: str = ""
    machine: str = ""
    domainname: str = ""

    def to_dict(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in UTS_FIELDS}


@dataclass(frozen=True)
class FlattenedInfo:
    """makedumpfile's flattened wrapper around a kdump or ELF file (read in place)."""

    records: int


@dataclass
class RawHeader(ContainerHeader):
    """A raw memory image has no header: only where its first byte lies."""

    base: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base}


@dataclass
class ElfHeader(ContainerHeader):
    """An ELF core's file header, and what its program headers and notes showed."""

    elf_class: int = 64
    """32 or 64 (``EI_CLASS``)."""
    byte_order: str = "little"
    """``EI_DATA``: ``little`` or ``big`` (also ``Dump.byte_order``; not among the facts)."""
    e_machine: str | int = "EM_X86_64"
    """pyelftools' name of ``e_machine`` (``EM_X86_64``), or the number when it has none."""
    e_phnum: int = 0
    """``e_phnum`` as stored (``PN_XNUM`` when the count lives in section 0's ``sh_info``)."""
    program_headers: int = 0
    """Program headers read (the real count, cut to what the file holds)."""
    pt_load: int = 0
    quirks: list[str] = field(default_factory=list)
    """Producer quirks seen (QEMU's ``e_ehsize`` 8, ``EM_386`` in ELF64, ``p_offset`` -1, ...)."""
    producer_guess: str = ""
    """``qemu`` when a ``QEMU`` note is present, else ``kexec/makedumpfile``."""
    flattened: FlattenedInfo | None = None
    converted: ConversionRecord | None = None
    """What ``vmci convert`` did, when it wrote this file (its ``VMCI`` note)."""

    @property
    def pn_xnum(self) -> bool:
        """The PN_XNUM escape was used (``e_phnum == 0xffff``)."""
        return self.e_phnum == 0xFFFF

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "elf_class": self.elf_class,
            "e_machine": self.e_machine,
            "e_phnum": self.e_phnum,
            "program_headers": self.program_headers,
            "pn_xnum": self.pn_xnum,
            "pt_load": self.pt_load,
            "quirks": self.quirks,
            "producer_guess": self.producer_guess,
        }
        if self.flattened is not None:
            out["flattened_records"] = self.flattened.records
        if self.converted is not None:
            out["converted"] = self.converted.to_dict()
        return out


#: The sub-header fields :class:`KdumpHeader` carries, in the order ``vmci info`` shows them.
KDUMP_SUB_FACTS = (
    "phys_base",
    "dump_level",
    "split",
    "start_pfn",
    "end_pfn",
    "offset_vmcoreinfo",
    "size_vmcoreinfo",
    "offset_note",
    "size_note",
    "offset_eraseinfo",
    "size_eraseinfo",
)


@dataclass
class KdumpHeader(ContainerHeader):
    """``disk_dump_header`` + ``kdump_sub_header`` of a kdump-compressed file (makedumpfile's
    ``diskdump_mod.h``), as read, or as :func:`vmci.formats.kdump.write_kdump` should write it.

    Sub-header fields read are None where the header version lacks them (``phys_base`` and
    ``dump_level`` from v1, ``split``/``start_pfn``/``end_pfn`` v2, ``*_vmcoreinfo`` v3,
    ``*_note`` v4, ``*_eraseinfo`` v5).  Writing, fields the writer derives (``block_size``,
    ``sub_hdr_size``, ``bitmap_blocks``, offsets, ``status``) are ignored; ``max_mapnr`` 0
    means "from the memory".
    """

    header_version: int = 6
    abi: str = "lp64"
    """``lp64``, ``i386`` (32-bit, packed) or ``arm32`` (32-bit, ``off_t`` aligned to 8)."""
    byte_order: str = "little"
    signature: str = "KDUMP   "
    utsname: Utsname = field(default_factory=Utsname)
    tv_sec: int = 0
    tv_usec: int = 0
    status: int = 0
    """``DUMP_DH_*`` bits (compression method, incomplete, excluded vmemmap)."""
    status_flags: tuple[str, ...] = ()
    """The names of the ``status`` bits set, lowest first (``zlib``, ``incomplete``, ...)."""
    block_size: int = 4096
    sub_hdr_size: int = 0
    bitmap_blocks: int = 0
    max_mapnr: int = 0
    """PFN count the bitmaps cover (``max_mapnr_64`` from v6)."""
    nr_cpus: int = 1
    current_cpu: int = 0
    phys_base: int | None = 0
    """As stored: an unsigned ``long`` (see :attr:`phys_base_signed`); a writer also takes a
    negative value."""
    dump_level: int | None = 1
    split: int | None = None
    start_pfn: int | None = None
    """First PFN this file holds (a split file's share; 64-bit fields from v6)."""
    end_pfn: int | None = None
    offset_vmcoreinfo: int | None = None
    size_vmcoreinfo: int | None = None
    offset_note: int | None = None
    size_note: int | None = None
    offset_eraseinfo: int | None = None
    size_eraseinfo: int | None = None
    vmcoreinfo_text: bytes | None = None
    """The bytes at ``offset_vmcoreinfo`` (None when absent or outside the file)."""
    compression: str = "zlib"
    """``zlib``, ``lzo``, ``snappy``, ``zstd`` or ``none``."""
    flattened: FlattenedInfo | None = None
    split_files: tuple[str, ...] | None = None
    """The files of a split set opened as one dump."""
    converted: ConversionRecord | None = None
    """What ``vmci convert`` did, when it wrote this file (the ``VMCI`` note)."""

    @property
    def ulong_bits(self) -> int:
        return 64 if self.abi == "lp64" else 32

    @property
    def phys_base_signed(self) -> int | None:
        """``phys_base`` read as a signed ``long`` (a kernel loaded below its link address)."""
        pb = self.phys_base
        if pb is None:
            return None
        bits = self.ulong_bits
        return pb - (1 << bits) if pb >> (bits - 1) else pb

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "signature": self.signature,
            "header_version": self.header_version,
            "abi": self.abi,
            "byte_order": self.byte_order,
            "utsname": self.utsname.to_dict(),
            "timestamp": {"tv_sec": self.tv_sec, "tv_usec": self.tv_usec},
            "status": self.status,
            "status_flags": list(self.status_flags),
            "block_size": self.block_size,
            "sub_hdr_size": self.sub_hdr_size,
            "bitmap_blocks": self.bitmap_blocks,
            "max_mapnr": self.max_mapnr,
            "nr_cpus": self.nr_cpus,
            "current_cpu": self.current_cpu,
        }
        for name in KDUMP_SUB_FACTS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
                if name == "phys_base":
                    out["phys_base_signed"] = self.phys_base_signed
        if self.vmcoreinfo_text is not None:
            out["vmcoreinfo_text"] = self.vmcoreinfo_text
        out["compression"] = self.compression
        if self.flattened is not None:
            out["flattened_records"] = self.flattened.records
        if self.split_files is not None:
            out["split_files"] = list(self.split_files)
        if self.converted is not None:
            out["converted"] = self.converted.to_dict()
        return out


# The header of a saved VM (QEMU migration stream, libvirt save image) is
# :class:`vmci.core.saved_state.SavedState`.

"""kdump-compressed ("KDUMP   " / "DISKDUMP") layouts: disk_dump_header, kdump_sub_header,
page_desc.

Three ABIs exist (makedumpfile's ``diskdump_mod.h`` compiled on each): LP64; i386 ("32pack",
packed 32-bit ``timeval`` and ``unsigned long``); ARM32/MIPS32 ("32pad", ``off_t`` aligned to 8).
Every field is in the byte order of the machine that made the dump.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import cache

import construct as cs

from vmci.core.headers import UTS_FIELDS as UTS_FIELDS
from vmci.layouts.magic import DISKDUMP_SIGNATURE as DISKDUMP_SIGNATURE
from vmci.layouts.magic import KDUMP_SIGNATURE as KDUMP_SIGNATURE


class KdumpStatus(enum.IntFlag):
    """``disk_dump_header.status`` bits (``DUMP_DH_*`` in makedumpfile's ``diskdump_mod.h``),
    lowest first: the order ``vmci info`` lists them in."""

    COMPRESSED_ZLIB = 0x1
    COMPRESSED_LZO = 0x2
    COMPRESSED_SNAPPY = 0x4
    COMPRESSED_INCOMPLETE = 0x8
    EXCLUDED_VMEMMAP = 0x10
    COMPRESSED_ZSTD = 0x20

    @property
    def label(self) -> str:
        """``zlib``, ``incomplete``, ``excluded-vmemmap``: the codec's or the condition's name."""
        return (self.name or "").removeprefix("COMPRESSED_").lower().replace("_", "-")


#: The compression bits, by codec name (:mod:`vmci.core.codecs` names).
COMPRESSION_FLAGS = {
    "zlib": KdumpStatus.COMPRESSED_ZLIB,
    "lzo": KdumpStatus.COMPRESSED_LZO,
    "snappy": KdumpStatus.COMPRESSED_SNAPPY,
    "zstd": KdumpStatus.COMPRESSED_ZSTD,
}
CODEC_BITS = sum(COMPRESSION_FLAGS.values())


def status_labels(status: int) -> tuple[str, ...]:
    """The names of the bits set in ``status``, lowest first (unknown bits are left out)."""
    return tuple(flag.label for flag in KdumpStatus if status & flag)


#: The header version that introduced each ``kdump_sub_header`` field (makedumpfile's
#: ``diskdump_mod.h``: v1 phys_base/dump_level, v2 split, v3 vmcoreinfo, v4 notes, v5 eraseinfo,
#: v6 64-bit PFNs).  Readers ignore a field below its version; writers write zero there.
SUB_HEADER_SINCE = {
    "phys_base": 1,
    "dump_level": 1,
    "split": 2,
    "start_pfn": 2,
    "end_pfn": 2,
    "offset_vmcoreinfo": 3,
    "size_vmcoreinfo": 3,
    "offset_note": 4,
    "size_note": 4,
    "offset_eraseinfo": 5,
    "size_eraseinfo": 5,
    "start_pfn_64": 6,
    "end_pfn_64": 6,
    "max_mapnr_64": 6,
}


def sub_header_has(field: str, version: int) -> bool:
    """Whether a header of ``version`` has the sub-header ``field``."""
    return version >= SUB_HEADER_SINCE[field]


ABIS = ("lp64", "i386", "arm32")  # arm32 = 32-bit with 8-byte aligned off_t (ARM, MIPS)
UTS_LEN = 65


@dataclass(frozen=True)
class KdumpLayout:
    abi: str
    little: bool
    header: cs.Construct
    sub_header: cs.Construct
    page_desc: cs.Construct


@cache
def kdump_layout(abi: str = "lp64", little: bool = True) -> KdumpLayout:
    """Declarations for one ABI (``lp64``, ``i386``, ``arm32``) and byte order."""
    if abi not in ABIS:
        raise ValueError(f"unknown kdump ABI {abi!r}")
    s32 = cs.Int32sl if little else cs.Int32sb
    u32 = cs.Int32ul if little else cs.Int32ub
    s64 = cs.Int64sl if little else cs.Int64sb
    u64 = cs.Int64ul if little else cs.Int64ub
    lp64 = abi == "lp64"
    ulong = u64 if lp64 else u32
    slong = s64 if lp64 else s32
    uts = cs.Struct(*(name / cs.PaddedString(UTS_LEN, "ascii") for name in UTS_FIELDS))
    header = cs.Struct(
        "signature" / cs.Bytes(8),
        "header_version" / s32,
        "utsname" / uts,
        cs.Padding(6 if lp64 else 2),  # align the timeval
        "tv_sec" / slong,
        "tv_usec" / slong,
        "status" / u32,
        "block_size" / s32,
        "sub_hdr_size" / s32,
        "bitmap_blocks" / u32,
        "max_mapnr" / u32,
        "total_ram_blocks" / u32,
        "device_blocks" / u32,
        "written_blocks" / u32,
        "current_cpu" / u32,
        "nr_cpus" / s32,
    )
    off_pad = [cs.Padding(4)] if abi == "arm32" else []
    sub_header = cs.Struct(
        "phys_base" / ulong,
        "dump_level" / s32,
        "split" / s32,
        "start_pfn" / ulong,
        "end_pfn" / ulong,
        *off_pad,
        "offset_vmcoreinfo" / s64,
        "size_vmcoreinfo" / ulong,
        *off_pad,
        "offset_note" / s64,
        "size_note" / ulong,
        *off_pad,
        "offset_eraseinfo" / s64,
        "size_eraseinfo" / ulong,
        *off_pad,
        "start_pfn_64" / u64,
        "end_pfn_64" / u64,
        "max_mapnr_64" / u64,
    )
    page_desc = cs.Struct(
        "offset" / s64,
        "size" / u32,
        "flags" / u32,
        "page_flags" / u64,
    )
    return KdumpLayout(abi, little, header, sub_header, page_desc)


def machine_abi(machine: str) -> str | None:
    """The ABI implied by ``utsname.machine``, or None when it does not say."""
    m = machine.strip().lower()
    if m in (
        "x86_64",
        "aarch64",
        "arm64",
        "ppc64",
        "ppc64le",
        "s390x",
        "riscv64",
        "loongarch64",
        "mips64",
        "sparc64",
        "ia64",
        "alpha",
    ):
        return "lp64"
    if m in ("i386", "i486", "i586", "i686", "x86", "ppc", "s390", "riscv32"):
        return "i386"
    if m.startswith("arm") or m.startswith("mips"):
        return "arm32"
    return None

"""kdump-compressed ("KDUMP   " / "DISKDUMP") layouts: disk_dump_header, kdump_sub_header,
page_desc.

Three ABIs exist (makedumpfile's ``diskdump_mod.h`` compiled on each): LP64; i386 ("32pack",
packed 32-bit ``timeval`` and ``unsigned long``); ARM32/MIPS32 ("32pad", ``off_t`` aligned to 8).
Every field is in the byte order of the machine that made the dump.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import construct as cs

from vmci.layouts.magic import DISKDUMP_SIGNATURE as DISKDUMP_SIGNATURE
from vmci.layouts.magic import KDUMP_SIGNATURE as KDUMP_SIGNATURE

DUMP_DH_COMPRESSED_ZLIB = 0x1
DUMP_DH_COMPRESSED_LZO = 0x2
DUMP_DH_COMPRESSED_SNAPPY = 0x4
DUMP_DH_COMPRESSED_INCOMPLETE = 0x8
DUMP_DH_EXCLUDED_VMEMMAP = 0x10
DUMP_DH_COMPRESSED_ZSTD = 0x20

COMPRESSION_FLAGS = {
    "zlib": DUMP_DH_COMPRESSED_ZLIB,
    "lzo": DUMP_DH_COMPRESSED_LZO,
    "snappy": DUMP_DH_COMPRESSED_SNAPPY,
    "zstd": DUMP_DH_COMPRESSED_ZSTD,
}

ABIS = ("lp64", "i386", "arm32")  # arm32 = 32-bit with 8-byte aligned off_t (ARM, MIPS)
UTS_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")
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

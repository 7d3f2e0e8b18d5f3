"""The headers of a kdump-compressed file: ABI and byte-order sniffing, sanity checks, and the
typed :class:`~vmci.core.headers.KdumpHeader`.

makedumpfile's ``diskdump_mod.h`` is compiled per machine: the file does not say its ABI
(LP64, i386's packed 32-bit, ARM/MIPS's 32-bit with 8-byte ``off_t``) or its byte order, so the
reader tries each layout and keeps the one whose values make a readable file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import construct as cs

from vmci.core.headers import KdumpHeader, Utsname
from vmci.core.memory import ceil_div
from vmci.errors import FormatError, TruncatedError
from vmci.formats.source import Source
from vmci.layouts.kdump import (
    COMPRESSION_FLAGS,
    UTS_FIELDS,
    KdumpLayout,
    KdumpStatus,
    kdump_layout,
    machine_abi,
    status_labels,
    sub_header_has,
)
from vmci.layouts.magic import is_kdump

#: offset of ``utsname.machine`` in ``disk_dump_header`` (signature, version, four 65-byte fields)
MACHINE_OFFSET = 12 + 4 * 65


@dataclass
class KdumpInfo:
    """One kdump file's headers, checked against the file, and where its parts lie."""

    layout: KdumpLayout
    header: KdumpHeader
    start_pfn: int
    """First PFN this file holds data for (0 unless it is one file of a split set)."""
    end_pfn: int
    bitmap_offset: int
    bitmap_len: int
    two_bitmaps: bool
    """The bitmap area holds the 1st (RAM) and 2nd (dumped) bitmaps; else one serves as both."""
    desc_offset: int
    warnings: list[str] = field(default_factory=list)

    @property
    def block_size(self) -> int:
        return self.header.block_size

    @property
    def max_mapnr(self) -> int:
        return self.header.max_mapnr


def _parse(decl: cs.Construct, data: bytes, what: str, offset: int) -> dict[str, Any]:
    try:
        return dict(decl.parse(data))
    except (cs.ConstructError, UnicodeDecodeError) as e:
        raise FormatError(f"cannot parse {what}: {e}", field=what, offset=offset) from None


def _sane(h: dict[str, Any], file_size: int) -> bool:
    """Would this header parse make a readable dump?  Used to pick the ABI and byte order:
    a header read with the wrong layout fails one of these (checked against real 32- and
    64-bit headers; libkdumpfile's looser test misreads some 64-bit dumps as i386)."""
    bs = h["block_size"]
    if not (0 <= h["header_version"] <= 64 and 512 <= bs <= (1 << 20) and bs & (bs - 1) == 0):
        return False
    if h["bitmap_blocks"] <= 0 or h["bitmap_blocks"] * bs * 8 < h["max_mapnr"]:
        return False
    if h["header_version"] >= 1 and h["sub_hdr_size"] < 1:
        return False
    return h["sub_hdr_size"] >= 0 and (1 + h["sub_hdr_size"] + h["bitmap_blocks"]) * bs <= file_size


def _pick_32bit_sub(src: Source, layout: KdumpLayout, bs: int) -> KdumpLayout:
    """i386 packs off_t after 32-bit longs; ARM/MIPS align it to 8. The notes follow the
    sub-header in every known writer, so the layout whose offset_note says so wins."""
    for abi in ("i386", "arm32"):
        cand = kdump_layout(abi, layout.little)
        size = cand.sub_header.sizeof()
        if bs + size > src.size:
            continue
        sub = _parse(cand.sub_header, src.read(bs, size), "kdump_sub_header", bs)
        if sub["offset_note"] == bs + size or bs <= sub["offset_vmcoreinfo"] < bs * 2:
            return cand
    return layout


def _choose_layout(src: Source, raw: bytes) -> tuple[KdumpLayout, dict[str, Any], bool]:
    """The layout (ABI, byte order) whose parse of ``raw`` is sane; and whether
    ``utsname.machine`` named the ABI."""
    machine = raw[MACHINE_OFFSET : MACHINE_OFFSET + 65].split(b"\0")[0].decode("ascii", "replace")
    hinted = machine_abi(machine)
    abis = [hinted] if hinted else ["lp64", "i386"]
    for little in (True, False):
        for abi in abis:
            layout = kdump_layout(abi, little)
            size = layout.header.sizeof()
            if size > len(raw):
                continue
            h = _parse(layout.header, raw[:size], "disk_dump_header", 0)
            if _sane(h, src.size):
                return layout, h, hinted is not None
    raise FormatError(
        "kdump header has impossible values (block_size, header_version or bitmap size)",
        field="disk_dump_header",
        offset=0,
    )


def compression_of(status: int) -> str:
    """The codec a header's ``status`` names (the first, should several bits be set), or ``none``."""
    codecs = sorted(name for name, bit in COMPRESSION_FLAGS.items() if status & bit)
    return codecs[0] if codecs else "none"


def read_info(src: Source) -> KdumpInfo:
    """Parse and check the headers of a kdump-compressed file."""
    head_len = kdump_layout("lp64").header.sizeof()
    if src.size < kdump_layout("i386").header.sizeof():
        raise TruncatedError("kdump header is cut short", field="disk_dump_header", offset=0)
    raw = src.read(0, min(head_len, src.size))
    if not is_kdump(raw):
        raise FormatError("not a kdump-compressed file", field="signature", offset=0)
    layout, h, hinted = _choose_layout(src, raw)
    bs, version = h["block_size"], h["header_version"]
    warnings: list[str] = []

    sub = None
    if version >= 1:
        if not hinted and layout.abi != "lp64":
            layout = _pick_32bit_sub(src, layout, bs)
        sub_size = layout.sub_header.sizeof()
        if bs + sub_size > src.size:
            raise TruncatedError("kdump sub-header is cut short", field="kdump_sub_header", offset=bs)
        sub = _parse(layout.sub_header, src.read(bs, sub_size), "kdump_sub_header", bs)

    max_mapnr = h["max_mapnr"]
    start_pfn, end_pfn = 0, max_mapnr
    if sub is not None and sub_header_has("max_mapnr_64", version):
        max_mapnr = sub["max_mapnr_64"]
    if sub is not None and sub_header_has("split", version) and sub["split"]:
        wide = "_64" if sub_header_has("start_pfn_64", version) else ""
        start_pfn, end_pfn = sub[f"start_pfn{wide}"], sub[f"end_pfn{wide}"]
    bitmap_off = (1 + h["sub_hdr_size"]) * bs
    bitmap_len = h["bitmap_blocks"] * bs
    if max_mapnr > bitmap_len * 8:
        raise FormatError(
            f"max_mapnr {max_mapnr:#x} needs more bits than the bitmap has", field="max_mapnr", offset=440
        )
    if bitmap_off + bitmap_len > src.size:
        raise TruncatedError(
            "kdump bitmaps extend past the end of the file", field="bitmap", offset=bitmap_off
        )
    if not end_pfn or end_pfn > max_mapnr:
        end_pfn = max_mapnr
    if start_pfn > end_pfn:
        raise FormatError("split start_pfn is above end_pfn", field="start_pfn_64", offset=bs)
    one_len = ceil_div(ceil_div(max_mapnr, 8), bs) * bs
    two = bool(h["bitmap_blocks"] >= 2 * (one_len // bs) and one_len)
    desc_offset = (1 + h["sub_hdr_size"] + h["bitmap_blocks"]) * bs
    if h["status"] & KdumpStatus.COMPRESSED_INCOMPLETE:
        warnings.append("the dump tool marked this dump incomplete (DUMP_DH_COMPRESSED_INCOMPLETE)")
    header = _typed(layout, h, sub, max_mapnr, start_pfn, end_pfn)
    return KdumpInfo(layout, header, start_pfn, end_pfn, bitmap_off, bitmap_len, two, desc_offset, warnings)


def _typed(
    layout: KdumpLayout,
    h: dict[str, Any],
    sub: dict[str, Any] | None,
    max_mapnr: int,
    start_pfn: int,
    end_pfn: int,
) -> KdumpHeader:
    """The typed header; sub-header fields the version lacks are None."""
    version = h["header_version"]

    def gated(name: str, value: Any = None) -> Any:
        if sub is None or not sub_header_has(name, version):
            return None
        return sub[name] if value is None else value

    return KdumpHeader(
        header_version=version,
        abi=layout.abi,
        byte_order="little" if layout.little else "big",
        signature=h["signature"].decode("ascii", "replace"),
        utsname=Utsname(**{k: h["utsname"][k] for k in UTS_FIELDS}),
        tv_sec=h["tv_sec"],
        tv_usec=h["tv_usec"],
        status=h["status"],
        status_flags=status_labels(h["status"]),
        block_size=h["block_size"],
        sub_hdr_size=h["sub_hdr_size"],
        bitmap_blocks=h["bitmap_blocks"],
        max_mapnr=max_mapnr,
        nr_cpus=h["nr_cpus"],
        current_cpu=h["current_cpu"],
        phys_base=gated("phys_base"),
        dump_level=gated("dump_level"),
        split=gated("split"),
        start_pfn=gated("start_pfn", start_pfn),
        end_pfn=gated("end_pfn", end_pfn),
        offset_vmcoreinfo=gated("offset_vmcoreinfo"),
        size_vmcoreinfo=gated("size_vmcoreinfo"),
        offset_note=gated("offset_note"),
        size_note=gated("size_note"),
        offset_eraseinfo=gated("offset_eraseinfo"),
        size_eraseinfo=gated("size_eraseinfo"),
        compression=compression_of(h["status"]),
    )

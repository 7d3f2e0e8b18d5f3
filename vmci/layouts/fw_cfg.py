"""QEMU fw_cfg structures: the file directory and DMA descriptor (big-endian), the upstream
``etc/vmcoreinfo`` record (little-endian), and the pages the RFC vmcoreinfo and vmgenid devices
have the firmware allocate (little-endian content after an OVMF probe suppressor).
"""

from __future__ import annotations

import uuid
from typing import Any

import construct as cs

from vmci.errors import UsageError

FW_CFG_FILE_DIR = 0x19
FW_CFG_FILE_FIRST = 0x20
FW_CFG_MAX_FILE_PATH = 56  # includes the terminating NUL
FW_CFG_DMA_SIGNATURE = 0x51454D5520434647  # "QEMU CFG"

DMA_CTL_ERROR = 0x01
DMA_CTL_READ = 0x02
DMA_CTL_SKIP = 0x04
DMA_CTL_SELECT = 0x08
DMA_CTL_WRITE = 0x10

VMCOREINFO_FORMAT_NONE = 0
VMCOREINFO_FORMAT_ELF = 1

PAGE_BLOB_SIZE = 4096  # etc/vmcoreinfo (RFC) and etc/vmgenid_guid occupy one page
RFC_OFFSET_V1 = 40  # 36-byte SDT-header probe suppressor + 4 bytes for 8-byte alignment
RFC_OFFSET_V2 = 36  # later RFC revision: exactly sizeof(ACPI SDT header)
VMGENID_GUID_OFFSET = 40


class CName(cs.Adapter):
    """A NUL-terminated name in a fixed ``size``-byte field (fw_cfg and linker file names).

    Parsing stops at the first NUL like the C consumers do; building refuses names that leave
    no room for the NUL.
    """

    def __init__(self, size: int) -> None:
        super().__init__(cs.Bytes(size))
        self.size = size

    def _decode(self, obj: bytes, context: Any, path: Any) -> str:
        return obj.split(b"\0", 1)[0].decode("latin-1")

    def _encode(self, obj: str, context: Any, path: Any) -> bytes:
        raw = obj.encode("latin-1")
        if len(raw) >= self.size or b"\0" in raw:
            raise UsageError(f"file name {obj!r} does not fit a {self.size}-byte NUL-terminated field")
        return raw.ljust(self.size, b"\0")


# One entry of the file directory at selector 0x19 (64 bytes).
FwCfgFile = cs.Struct(
    "size" / cs.Int32ub,
    "select" / cs.Int16ub,
    "reserved" / cs.Int16ub,
    "name" / CName(FW_CFG_MAX_FILE_PATH),
)
FwCfgDirectory = cs.Struct(
    "count" / cs.Int32ub,
    "files" / cs.Array(cs.this.count, FwCfgFile),
)

# The DMA access descriptor the guest places in RAM; its address goes to ports 0x514/0x518.
FwCfgDmaAccess = cs.Struct(
    "control" / cs.Int32ub,
    "length" / cs.Int32ub,
    "address" / cs.Int64ub,
)

# Upstream (QEMU >= 2.11) read/write fw_cfg file "etc/vmcoreinfo" (16 bytes).
FwCfgVmcoreinfo = cs.Struct(
    "host_format" / cs.Int16ul,
    "guest_format" / cs.Int16ul,
    "size" / cs.Int32ul,
    "paddr" / cs.Int64ul,
)

# RFC vmcoreinfo version-0 content, at page + RFC_OFFSET_V1 (or _V2).  Packed: paddr is not
# 8-byte aligned in the 40-byte revision.
VmcoreinfoRfcContent = cs.Struct(
    "version" / cs.Int32ul,
    "paddr" / cs.Int64ul,
    "size" / cs.Int32ul,
)


def vmcoreinfo_rfc_page(offset: int = RFC_OFFSET_V1) -> cs.Construct:
    """The whole 4 KiB RFC ``etc/vmcoreinfo`` page: suppressor, content, zero tail."""
    tail = PAGE_BLOB_SIZE - offset - VmcoreinfoRfcContent.sizeof()
    return cs.Struct(
        "suppressor" / cs.Bytes(offset),
        "content" / VmcoreinfoRfcContent,
        "tail" / cs.Bytes(tail),
    )


# A GUID in the little-endian (Microsoft/SMBIOS) byte order: first three fields byte-swapped.
GuidLE = cs.ExprAdapter(
    cs.Bytes(16),
    decoder=lambda obj, ctx: uuid.UUID(bytes_le=bytes(obj)),
    encoder=lambda obj, ctx: obj.bytes_le,
)

# etc/vmgenid_guid: suppressor (36) + alignment padding (4), GUID at +40, zero to page end.
VmgenidPage = cs.Struct(
    "suppressor" / cs.Bytes(36),
    "padding" / cs.Bytes(4),
    "guid" / GuidLE,
    "tail" / cs.Bytes(PAGE_BLOB_SIZE - VMGENID_GUID_OFFSET - 16),
)

assert FwCfgFile.sizeof() == 64 and FwCfgDmaAccess.sizeof() == 16
assert FwCfgVmcoreinfo.sizeof() == 16 and VmcoreinfoRfcContent.sizeof() == 16
assert VmgenidPage.sizeof() == PAGE_BLOB_SIZE

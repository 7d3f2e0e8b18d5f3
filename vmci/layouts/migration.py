"""QEMU migration streams (``QEVM`` v3, as ``migrate "exec:cat > f"``, ``savevm`` and ``virsh save``
write them) and the libvirt save-image header in front of them.

Stream integers are big-endian; the device payloads that QEMU keeps as byte arrays (the RFC
vmcoreinfo address blob, vmgenid's address blob) are little-endian inside those arrays.
"""

from __future__ import annotations

from functools import cache

import construct as cs

QEMU_VM_FILE_MAGIC = b"QEVM"
QEMU_VM_FILE_VERSION = 3

# section types (u8)
QEMU_VM_EOF = 0x00
QEMU_VM_SECTION_START = 0x01
QEMU_VM_SECTION_PART = 0x02
QEMU_VM_SECTION_END = 0x03
QEMU_VM_SECTION_FULL = 0x04
QEMU_VM_SUBSECTION = 0x05
QEMU_VM_VMDESCRIPTION = 0x06
QEMU_VM_CONFIGURATION = 0x07
QEMU_VM_COMMAND = 0x08
QEMU_VM_SECTION_FOOTER = 0x7E

# QEMU_VM_COMMAND codes that matter to a reader of a file
MIG_CMD_POSTCOPY_ADVISE = 3
MIG_CMD_POSTCOPY_LISTEN = 4
MIG_CMD_POSTCOPY_RUN = 5
MIG_CMD_POSTCOPY_RAM_DISCARD = 6
MIG_CMD_POSTCOPY_RESUME = 7
MIG_CMD_PACKAGED = 8
MIG_CMD_SWITCHOVER_START = 0x0B
POSTCOPY_COMMANDS = {  # the commands of a postcopy stream, by code (the names QEMU gives them)
    MIG_CMD_POSTCOPY_ADVISE: "POSTCOPY_ADVISE",
    MIG_CMD_POSTCOPY_LISTEN: "POSTCOPY_LISTEN",
    MIG_CMD_POSTCOPY_RUN: "POSTCOPY_RUN",
    MIG_CMD_POSTCOPY_RAM_DISCARD: "POSTCOPY_RAM_DISCARD",
    MIG_CMD_POSTCOPY_RESUME: "POSTCOPY_RESUME",
    MIG_CMD_PACKAGED: "PACKAGED",
}

# RAM record flags: the low bits of ``be64 addr|flags`` (below the target page size)
RAM_SAVE_FLAG_FULL = 0x01
RAM_SAVE_FLAG_ZERO = 0x02
RAM_SAVE_FLAG_MEM_SIZE = 0x04
RAM_SAVE_FLAG_PAGE = 0x08
RAM_SAVE_FLAG_EOS = 0x10
RAM_SAVE_FLAG_CONTINUE = 0x20
RAM_SAVE_FLAG_XBZRLE = 0x40
RAM_SAVE_FLAG_HOOK = 0x80
RAM_SAVE_FLAG_COMPRESS_PAGE = 0x100
RAM_SAVE_FLAG_MULTIFD_FLUSH = 0x200
RAM_FLAG_NAMES = {
    RAM_SAVE_FLAG_FULL: "FULL (obsolete)",
    RAM_SAVE_FLAG_XBZRLE: "XBZRLE",
    RAM_SAVE_FLAG_HOOK: "HOOK (RDMA)",
    RAM_SAVE_FLAG_COMPRESS_PAGE: "COMPRESS_PAGE (multi-thread compression)",
    RAM_SAVE_FLAG_MULTIFD_FLUSH: "MULTIFD_FLUSH (multifd: pages travel on other channels)",
}
RAM_SECTION_VERSION = 4

Idstr = cs.PascalString(cs.Int8ub, "latin-1")  # u8 length + bytes, no NUL

FileHeader = cs.Struct(
    "magic" / cs.Bytes(4),
    "version" / cs.Int32ub,
)

# What follows the idstr of a START/FULL section header (readers walk the variable-length idstr)
SectionHeaderTail = cs.Struct(
    "instance_id" / cs.Int32ub,
    "version_id" / cs.Int32ub,
)

# QEMU_VM_SECTION_START / QEMU_VM_SECTION_FULL
SectionHeaderFull = cs.Struct(
    "type" / cs.Int8ub,
    "section_id" / cs.Int32ub,
    "idstr" / Idstr,
    *SectionHeaderTail.subcons,
)

# QEMU_VM_SECTION_PART / QEMU_VM_SECTION_END
SectionHeaderPart = cs.Struct(
    "type" / cs.Int8ub,
    "section_id" / cs.Int32ub,
)

SectionFooter = cs.Struct(
    "type" / cs.Int8ub,  # QEMU_VM_SECTION_FOOTER
    "section_id" / cs.Int32ub,
)

SubsectionHeader = cs.Struct(
    "type" / cs.Int8ub,  # QEMU_VM_SUBSECTION
    "name" / Idstr,
    "version_id" / cs.Int32ub,
)

# QEMU_VM_CONFIGURATION: the machine type (be32 length, no NUL); subsections may follow
Configuration = cs.Struct(
    "type" / cs.Int8ub,
    "name" / cs.PascalString(cs.Int32ub, "latin-1"),
)

Command = cs.Struct(
    "type" / cs.Int8ub,  # QEMU_VM_COMMAND
    "cmd" / cs.Int16ub,
    "length" / cs.Int16ub,
)

# The VM description trailer after QEMU_VM_EOF: type, length, then ``length`` bytes of JSON
VmdescHeader = cs.Struct(
    "type" / cs.Int8ub,  # QEMU_VM_VMDESCRIPTION
    "length" / cs.Int32ub,
)

# One RAM record header: guest offset in the RAMBlock | flags
RamRecord = cs.Struct("addr_flags" / cs.Int64ub)

# After a MEM_SIZE record, one entry per RAMBlock (until the lengths sum to the total)
RamBlockEntry = cs.Struct(
    "idstr" / Idstr,
    "used_length" / cs.Int64ub,
)

# Capability name in the configuration/capabilities subsection
CapabilityName = Idstr

# -- device section payloads ----------------------------------------------------------------

# Upstream QEMU (>= 2.11) ``vmcoreinfo`` device, vmstate version 1: 17 bytes big-endian.
VmcoreinfoSection = cs.Struct(
    "has_vmcoreinfo" / cs.Flag,
    "host_format" / cs.Int16ub,
    "guest_format" / cs.Int16ub,
    "size" / cs.Int32ub,
    "paddr" / cs.Int64ub,
)

# The RFC ``vmcoreinfo`` ACPI device: the 8-byte address blob (page + 40), little-endian.
VmcoreinfoRfcSection = cs.Struct("vmcoreinfo_addr_le" / cs.Int64ul)

# ``vmgenid``: the 8-byte address blob (GUID address = page + 40), little-endian.
VmgenidSection = cs.Struct("vmgenid_addr_le" / cs.Int64ul)

# -- libvirt save image ---------------------------------------------------------------------

LIBVIRT_MAGIC = b"LibvirtQemudSave"
LIBVIRT_MAGIC_PARTIAL = b"LibvirtQemudPart"  # written while the save is in progress
LIBVIRT_VERSION = 2
LIBVIRT_FORMATS = {0: "raw", 1: "gzip", 2: "bzip2", 3: "xz", 4: "lzop", 5: "zstd", 6: "sparse"}


@cache
def libvirt_header(little: bool = True) -> cs.Construct:
    """``virQEMUSaveHeader`` (92 bytes, in the byte order of the host that saved)."""
    u32 = cs.Int32ul if little else cs.Int32ub
    return cs.Struct(
        "magic" / cs.Bytes(16),
        "version" / u32,
        "data_len" / u32,
        "was_running" / u32,
        "format" / u32,
        "cookie_offset" / u32,
        "unused" / cs.Array(14, u32),
    )


LIBVIRT_HEADER_SIZE = 92

assert libvirt_header(True).sizeof() == LIBVIRT_HEADER_SIZE
assert VmcoreinfoSection.sizeof() == 17 and VmgenidSection.sizeof() == 8

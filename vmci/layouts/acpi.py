"""ACPI structures the vmci reader and producer share: RSDP, SDT header, RSDT/XSDT, FACS, FADT.

All fields are little-endian.  Signatures and OEM strings stay raw ``bytes`` so a parse is
lossless (``"BOCHS "`` keeps its space, ``"VMGENID\\0"`` its NUL); :func:`pad_id` makes them.
"""

from __future__ import annotations

import construct as cs

RSDP_SIGNATURE = b"RSD PTR "
RSDP_V1_SIZE = 20
RSDP_V2_SIZE = 36
SDT_HEADER_SIZE = 36
FACS_SIZE = 64
FADT_V1_SIZE = 116  # ACPI 1.0 FADT, what QEMU's i440fx/q35 build as "FACP" revision 1
FADT_X_END = 148  # end of X_FIRMWARE_CTRL/X_DSDT (ACPI 2.0+)
FADT_V3_SIZE = 244

# ACPI 1.0 RSDP (20 bytes); ``checksum`` makes these 20 bytes sum to 0.
RsdpV1 = cs.Struct(
    "signature" / cs.Bytes(8),
    "checksum" / cs.Int8ul,
    "oem_id" / cs.Bytes(6),
    "revision" / cs.Int8ul,
    "rsdt_address" / cs.Int32ul,
)

# ACPI 2.0+ RSDP (36 bytes); ``extended_checksum`` makes all ``length`` bytes sum to 0.
RsdpV2 = cs.Struct(
    *RsdpV1.subcons,
    "length" / cs.Int32ul,
    "xsdt_address" / cs.Int64ul,
    "extended_checksum" / cs.Int8ul,
    "reserved" / cs.Bytes(3),
)

# Common header of every system description table except FACS (36 bytes).
SdtHeader = cs.Struct(
    "signature" / cs.Bytes(4),
    "length" / cs.Int32ul,
    "revision" / cs.Int8ul,
    "checksum" / cs.Int8ul,
    "oem_id" / cs.Bytes(6),
    "oem_table_id" / cs.Bytes(8),
    "oem_revision" / cs.Int32ul,
    "creator_id" / cs.Bytes(4),
    "creator_revision" / cs.Int32ul,
)
SDT_OEM_TABLE_ID_OFFSET = 16
SDT_CHECKSUM_OFFSET = 9


def entry_array(entry_size: int) -> cs.Construct:
    """RSDT (4-byte) or XSDT (8-byte) entries following the header, sized by ``header.length``."""
    item = cs.Int32ul if entry_size == 4 else cs.Int64ul
    return cs.Array(lambda ctx: max(ctx.header.length - SDT_HEADER_SIZE, 0) // entry_size, item)


Rsdt = cs.Struct("header" / SdtHeader, "entries" / entry_array(4))
Xsdt = cs.Struct("header" / SdtHeader, "entries" / entry_array(8))

# Firmware ACPI Control Structure (64 bytes, no checksum, no SDT header).
Facs = cs.Struct(
    "signature" / cs.Bytes(4),
    "length" / cs.Int32ul,
    "hardware_signature" / cs.Int32ul,
    "firmware_waking_vector" / cs.Int32ul,
    "global_lock" / cs.Int32ul,
    "flags" / cs.Int32ul,
    "x_firmware_waking_vector" / cs.Int64ul,
    "version" / cs.Int8ul,
    "reserved" / cs.Bytes(3),
    "ospm_flags" / cs.Int32ul,
    "reserved2" / cs.Bytes(24),
)

# The FADT ("FACP") up to the end of the ACPI 1.0 part: the two pointers vmci needs are named,
# the power-management block descriptions in between are kept as raw bytes.
FadtV1 = cs.Struct(
    "header" / SdtHeader,
    "firmware_ctrl" / cs.Int32ul,  # @36: FACS
    "dsdt" / cs.Int32ul,  # @40
    "int_model" / cs.Int8ul,
    "preferred_pm_profile" / cs.Int8ul,
    "sci_int" / cs.Int16ul,
    "smi_cmd" / cs.Int32ul,
    "acpi_enable" / cs.Int8ul,
    "acpi_disable" / cs.Int8ul,
    "pm_blocks" / cs.Bytes(57),  # S4BIOS_REQ .. IAPC_BOOT_ARCH/reserved, offsets 54..110
    "reserved" / cs.Int8ul,
    "flags" / cs.Int32ul,  # @112
)

# ACPI 2.0+ continuation of the FADT, from offset 116 to 148.
FadtX = cs.Struct(
    "reset_reg" / cs.Bytes(12),
    "reset_value" / cs.Int8ul,
    "arm_boot_arch" / cs.Int16ul,
    "minor_version" / cs.Int8ul,
    "x_firmware_ctrl" / cs.Int64ul,  # @132
    "x_dsdt" / cs.Int64ul,  # @140
)
FADT_FIRMWARE_CTRL_OFFSET = 36
FADT_DSDT_OFFSET = 40
FADT_X_FIRMWARE_CTRL_OFFSET = 132
FADT_X_DSDT_OFFSET = 140


def pad_id(text: str | bytes, size: int, fill: bytes = b"\0") -> bytes:
    """An OEM/signature field: ``text`` padded with ``fill`` to exactly ``size`` bytes."""
    raw = text.encode("ascii") if isinstance(text, str) else bytes(text)
    if len(raw) > size:
        raise ValueError(f"{raw!r} is longer than {size} bytes")
    return raw + fill * (size - len(raw))


def id_text(raw: bytes) -> str:
    """Printable form of an id field: trailing NULs dropped, other bytes kept (latin-1)."""
    return raw.rstrip(b"\0").decode("latin-1")


def checksum8(data: bytes | bytearray | memoryview) -> int:
    """8-bit sum of ``data``; a valid ACPI checksum range sums to 0."""
    return sum(data) & 0xFF


assert RsdpV1.sizeof() == RSDP_V1_SIZE and RsdpV2.sizeof() == RSDP_V2_SIZE
assert SdtHeader.sizeof() == SDT_HEADER_SIZE and Facs.sizeof() == FACS_SIZE
assert FadtV1.sizeof() == FADT_V1_SIZE and FadtV1.sizeof() + FadtX.sizeof() == FADT_X_END

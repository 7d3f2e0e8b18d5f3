"""UEFI structures an OS finds ACPI through: the EFI system table and its configuration table
(UEFI specification 2.10, section 4.3 "EFI System Table" and 4.6 "EFI Configuration Table &
Properties Table"; ACPI 6.5, section 5.2.5.2 "Finding the RSDP on UEFI Enabled Systems").

64-bit layouts (x86_64, aarch64): every pointer and ``UINTN`` is 8 bytes, little-endian.  After
the OS calls ``SetVirtualAddressMap()`` the table's pointers hold virtual addresses; the ACPI
entries of the configuration table keep the RSDP's physical address (ACPI memory is not
runtime memory, so it is not remapped).
"""

from __future__ import annotations

import uuid

import construct as cs

#: ``EFI_SYSTEM_TABLE_SIGNATURE`` (0x5453595320494249, "IBI SYST" in memory).
EFI_SYSTEM_TABLE_SIGNATURE = b"IBI SYST"
#: ``EFI_ACPI_20_TABLE_GUID``: the entry whose VendorTable is an ACPI 2.0+ RSDP.
ACPI_20_TABLE_GUID = uuid.UUID("8868e871-e4f1-11d3-bc22-0080c73c8881")
#: ``ACPI_TABLE_GUID``: the entry whose VendorTable is an ACPI 1.0 RSDP.
ACPI_10_TABLE_GUID = uuid.UUID("eb9d2d30-2d88-11d3-9a16-0090273fc14d")

EfiTableHeader = cs.Struct(
    "signature" / cs.Bytes(8),
    "revision" / cs.Int32ul,
    "header_size" / cs.Int32ul,
    "crc32" / cs.Int32ul,  # of header_size bytes with this field zero
    "reserved" / cs.Int32ul,
)
EFI_HEADER_CRC_OFFSET = 16

EfiSystemTable64 = cs.Struct(
    "hdr" / EfiTableHeader,
    "firmware_vendor" / cs.Int64ul,
    "firmware_revision" / cs.Int32ul,
    cs.Padding(4),
    "console_in_handle" / cs.Int64ul,
    "con_in" / cs.Int64ul,
    "console_out_handle" / cs.Int64ul,
    "con_out" / cs.Int64ul,
    "standard_error_handle" / cs.Int64ul,
    "std_err" / cs.Int64ul,
    "runtime_services" / cs.Int64ul,
    "boot_services" / cs.Int64ul,
    "number_of_table_entries" / cs.Int64ul,
    "configuration_table" / cs.Int64ul,
)
EFI_SYSTEM_TABLE64_SIZE = 120

EfiConfigurationTable64 = cs.Struct(
    "vendor_guid" / cs.Bytes(16),  # EFI_GUID: the first three fields little-endian (uuid bytes_le)
    "vendor_table" / cs.Int64ul,
)
EFI_CONFIGURATION_TABLE64_SIZE = 24

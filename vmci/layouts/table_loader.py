"""The BIOS linker/loader script (fw_cfg ``etc/table-loader``): 128-byte little-endian commands.

QEMU writes the script, SeaBIOS/OVMF execute it.  One declaration, :data:`LoaderEntry`, parses
and builds every command; unknown commands parse with their 124 body bytes kept raw.
"""

from __future__ import annotations

from typing import Any

import construct as cs

from vmci.errors import FormatError
from vmci.layouts.fw_cfg import FW_CFG_MAX_FILE_PATH, CName

ENTRY_SIZE = 128
BODY_SIZE = ENTRY_SIZE - 4

CMD_ALLOCATE = 1
CMD_ADD_POINTER = 2
CMD_ADD_CHECKSUM = 3
CMD_WRITE_POINTER = 4
COMMAND_NAMES = {
    CMD_ALLOCATE: "ALLOCATE",
    CMD_ADD_POINTER: "ADD_POINTER",
    CMD_ADD_CHECKSUM: "ADD_CHECKSUM",
    CMD_WRITE_POINTER: "WRITE_POINTER",
}

ZONE_HIGH = 1
ZONE_FSEG = 2

FileName = CName(FW_CFG_MAX_FILE_PATH)

Allocate = cs.Struct(
    "file" / FileName,  # @4
    "align" / cs.Int32ul,  # @60
    "zone" / cs.Int8ul,  # @64
)
AddPointer = cs.Struct(
    "dest_file" / FileName,  # @4: the blob holding the pointer
    "src_file" / FileName,  # @60: the blob pointed to
    "offset" / cs.Int32ul,  # @116: pointer offset in dest_file
    "size" / cs.Int8ul,  # @120: 1, 2, 4 or 8
)
AddChecksum = cs.Struct(
    "file" / FileName,  # @4
    "offset" / cs.Int32ul,  # @60: checksum byte
    "start" / cs.Int32ul,  # @64
    "length" / cs.Int32ul,  # @68
)
WritePointer = cs.Struct(
    "dest_file" / FileName,  # @4: QEMU-side fw_cfg file that receives the address
    "src_file" / FileName,  # @60: allocated blob
    "dst_offset" / cs.Int32ul,  # @116
    "src_offset" / cs.Int32ul,  # @120: added to the blob's address
    "size" / cs.Int8ul,  # @124
)

LoaderEntry = cs.Struct(
    "command" / cs.Int32ul,
    "body" / cs.Padded(
        BODY_SIZE,
        cs.Switch(
            cs.this.command,
            {
                CMD_ALLOCATE: Allocate,
                CMD_ADD_POINTER: AddPointer,
                CMD_ADD_CHECKSUM: AddChecksum,
                CMD_WRITE_POINTER: WritePointer,
            },
            default=cs.Bytes(BODY_SIZE),
        ),
    ),
)
assert LoaderEntry.sizeof() == ENTRY_SIZE


def build_entry(command: int, **fields: Any) -> bytes:
    """One 128-byte command; ``fields`` are those of the command's body declaration."""
    body: Any = fields if command in COMMAND_NAMES else fields.get("raw", bytes(BODY_SIZE))
    return LoaderEntry.build({"command": command, "body": body})


def parse_script(blob: bytes | bytearray | memoryview) -> list[Any]:
    """All commands of a table-loader script (containers with ``command`` and ``body``)."""
    data = bytes(blob)
    if len(data) % ENTRY_SIZE:
        raise FormatError(f"table-loader size {len(data)} is not a multiple of {ENTRY_SIZE}",
                          field="etc/table-loader", offset=len(data) - len(data) % ENTRY_SIZE)
    out = []
    for off in range(0, len(data), ENTRY_SIZE):
        try:
            out.append(LoaderEntry.parse(data[off : off + ENTRY_SIZE]))
        except cs.ConstructError as err:  # cannot happen for 128 bytes, kept as a guard
            raise FormatError(f"bad loader command: {err}", field="command", offset=off) from None
    return out

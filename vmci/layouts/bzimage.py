"""The x86 boot protocol's setup header of a bzImage (``vmlinuz``), as far as finding the
compressed vmlinux inside it: ``setup_sects`` at 0x1F1, ``HdrS`` at 0x202, and
``payload_offset``/``payload_length`` at 0x248 (boot protocol 2.08+)."""

from __future__ import annotations

import construct as cs

BZIMAGE_MAGIC = b"HdrS"

bzimage_header = cs.Struct(
    cs.Padding(0x1F1),
    "setup_sects" / cs.Int8ul,  # 0 means 4
    cs.Padding(0x202 - 0x1F2),
    "magic" / cs.Bytes(4),
    cs.Padding(0x248 - 0x206),
    "payload_offset" / cs.Int32ul,  # from the end of the setup sectors
    "payload_length" / cs.Int32ul,
)
BZIMAGE_HEADER_SIZE = bzimage_header.sizeof()

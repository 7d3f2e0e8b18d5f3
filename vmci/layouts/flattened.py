"""makedumpfile's flattened format: a 4096-byte header block, then records of
``{be64 offset, be64 size}`` each followed by ``size`` bytes for ``offset`` of the
rearranged file, ended by ``{-1, -1}``.  QEMU's ``kdump-*`` formats always write it."""

from __future__ import annotations

import construct as cs

from vmci.layouts.magic import MDF_SIGNATURE

MDF_HEADER_SIZE = 4096
TYPE_FLAT_HEADER = 1
VERSION_FLAT_HEADER = 1
END_FLAG = -1

flat_header = cs.Struct(
    "signature" / cs.Bytes(16),  # "makedumpfile" NUL-padded
    "type" / cs.Int64sb,
    "version" / cs.Int64sb,
)

flat_record = cs.Struct(
    "offset" / cs.Int64sb,
    "size" / cs.Int64sb,
)


def build_flat_header() -> bytes:
    """The whole 4096-byte header block."""
    head = flat_header.build(
        {
            "signature": MDF_SIGNATURE.ljust(16, b"\0"),
            "type": TYPE_FLAT_HEADER,
            "version": VERSION_FLAT_HEADER,
        }
    )
    return head.ljust(MDF_HEADER_SIZE, b"\0")

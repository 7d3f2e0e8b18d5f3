"""A small AML encoder: the subset QEMU uses for the vmgenid and vmcoreinfo SSDTs.

Every function returns the encoded ``bytes`` of one term, so terms nest by argument:
``scope("\\\\_SB", device("VMCI", name("_HID", string("QEMUVMCI"))))``.
Name references inside expressions are written with :func:`name_ref`.
"""

from __future__ import annotations

import string as _string

from vmci.layouts.acpi import SDT_CHECKSUM_OFFSET, SdtHeader, checksum8, pad_id

ZERO_OP = 0x00
ONE_OP = 0x01
NAME_OP = 0x08
BYTE_PREFIX = 0x0A
WORD_PREFIX = 0x0B
DWORD_PREFIX = 0x0C
STRING_PREFIX = 0x0D
QWORD_PREFIX = 0x0E
SCOPE_OP = 0x10
PACKAGE_OP = 0x12
METHOD_OP = 0x14
DUAL_NAME_PREFIX = 0x2E
MULTI_NAME_PREFIX = 0x2F
EXT_OP_PREFIX = 0x5B
DEVICE_OP = 0x82  # after EXT_OP_PREFIX
ROOT_CHAR = 0x5C
PARENT_PREFIX = 0x5E
LOCAL0_OP = 0x60
ARG0_OP = 0x68
STORE_OP = 0x70
ADD_OP = 0x72
NOTIFY_OP = 0x86
INDEX_OP = 0x88
LEQUAL_OP = 0x93
IF_OP = 0xA0
ELSE_OP = 0xA1
RETURN_OP = 0xA4
ONES_OP = 0xFF
NULL_NAME = b"\x00"

PKG_LENGTH_MAX = (1 << 28) - 1
_LEAD = set(_string.ascii_uppercase + "_")
_NAME = _LEAD | set(_string.digits)


# -- package length and names ---------------------------------------------------------------

def pkg_length(body_len: int) -> bytes:
    """PkgLength for ``body_len`` following bytes; the encoded value counts itself too."""
    if body_len < 0:
        raise ValueError("negative package length")
    for nbytes, limit in ((1, 0x3F), (2, 0xFFF), (3, 0xFFFFF), (4, PKG_LENGTH_MAX)):
        total = body_len + nbytes
        if total <= limit:
            break
    else:
        raise ValueError(f"package of {body_len} bytes exceeds the AML PkgLength limit")
    if nbytes == 1:
        return bytes([total])
    lead = ((nbytes - 1) << 6) | (total & 0x0F)
    return bytes([lead]) + (total >> 4).to_bytes(nbytes - 1, "little")


def _package(body: bytes) -> bytes:
    return pkg_length(len(body)) + body


def name_seg(seg: str) -> bytes:
    """A 4-character NameSeg, padded with ``_`` as ASL does (``SB`` -> ``SB__``)."""
    if not 1 <= len(seg) <= 4 or seg[0] not in _LEAD or any(c not in _NAME for c in seg):
        raise ValueError(f"invalid AML name segment {seg!r}")
    return seg.ljust(4, "_").encode("ascii")


def name_string(path: str) -> bytes:
    """A NameString: optional ``\\`` or ``^`` prefixes, then ``.``-separated segments."""
    prefix = b""
    rest = path
    if rest.startswith("\\"):
        prefix, rest = bytes([ROOT_CHAR]), rest[1:]
    else:
        while rest.startswith("^"):
            prefix, rest = prefix + bytes([PARENT_PREFIX]), rest[1:]
    segs = [name_seg(s) for s in rest.split(".")] if rest else []
    if not segs:
        return prefix + NULL_NAME
    if len(segs) == 1:
        return prefix + segs[0]
    if len(segs) == 2:
        return prefix + bytes([DUAL_NAME_PREFIX]) + b"".join(segs)
    if len(segs) > 255:
        raise ValueError("too many name segments")
    return prefix + bytes([MULTI_NAME_PREFIX, len(segs)]) + b"".join(segs)


def name_ref(path: str) -> bytes:
    """A reference to a named object inside an expression."""
    return name_string(path)


# -- data objects ----------------------------------------------------------------------------

def zero() -> bytes:
    return bytes([ZERO_OP])


def one() -> bytes:
    return bytes([ONE_OP])


def ones() -> bytes:
    return bytes([ONES_OP])


def _prefixed(prefix: int, value: int, size: int) -> bytes:
    if not 0 <= value < 1 << (8 * size):
        raise ValueError(f"{value:#x} does not fit {size} bytes")
    return bytes([prefix]) + value.to_bytes(size, "little")


def byte_const(value: int) -> bytes:
    return _prefixed(BYTE_PREFIX, value, 1)


def word_const(value: int) -> bytes:
    return _prefixed(WORD_PREFIX, value, 2)


def dword_const(value: int) -> bytes:
    """Always 5 bytes, even for small values: the firmware patches the dword in place."""
    return _prefixed(DWORD_PREFIX, value, 4)


def qword_const(value: int) -> bytes:
    return _prefixed(QWORD_PREFIX, value, 8)


def integer(value: int) -> bytes:
    """The shortest encoding, as QEMU's ``aml_int``: Zero, One, then Byte/Word/DWord/QWord."""
    if value == 0:
        return zero()
    if value == 1:
        return one()
    for size, make in ((1, byte_const), (2, word_const), (4, dword_const), (8, qword_const)):
        if 0 <= value < 1 << (8 * size):
            return make(value)
    raise ValueError(f"{value:#x} is not a 64-bit unsigned integer")


def decode_integer(buf: bytes, off: int = 0) -> tuple[int, int]:
    """The inverse of :func:`integer` at ``buf[off:]``, as the guest's AML interpreter reads a
    ComputationalData integer: ``(value, offset after it)``; a :class:`ValueError` otherwise."""
    if off >= len(buf):
        raise ValueError(f"no AML integer at {off}: end of the byte code")
    op = buf[off]
    if op in (ZERO_OP, ONE_OP):
        return op, off + 1
    if op == ONES_OP:
        return (1 << 64) - 1, off + 1
    size = {BYTE_PREFIX: 1, WORD_PREFIX: 2, DWORD_PREFIX: 4, QWORD_PREFIX: 8}.get(op)
    if size is None or off + 1 + size > len(buf):
        raise ValueError(f"no AML integer at {off}: opcode {op:#04x}")
    return int.from_bytes(buf[off + 1 : off + 1 + size], "little"), off + 1 + size


def string(text: str) -> bytes:
    raw = text.encode("ascii")
    if b"\0" in raw:
        raise ValueError("AML strings cannot contain NUL")
    return bytes([STRING_PREFIX]) + raw + b"\0"


def local(n: int) -> bytes:
    if not 0 <= n <= 7:
        raise ValueError("Local0..Local7 only")
    return bytes([LOCAL0_OP + n])


def arg(n: int) -> bytes:
    if not 0 <= n <= 6:
        raise ValueError("Arg0..Arg6 only")
    return bytes([ARG0_OP + n])


# -- named objects and blocks ---------------------------------------------------------------

def name(path: str, value: bytes) -> bytes:
    return bytes([NAME_OP]) + name_string(path) + value


def name_dword(path: str, value: int = 0) -> bytes:
    """``Name(path, DWordConst)``, the patchable form of QEMU's ``build_append_named_dword``."""
    return name(path, dword_const(value))


def name_dword_value_offset(path: str) -> int:
    """Offset of the dword inside :func:`name_dword` output."""
    return 1 + len(name_string(path)) + 1


def scope(path: str, *terms: bytes) -> bytes:
    return bytes([SCOPE_OP]) + _package(name_string(path) + b"".join(terms))


def device(path: str, *terms: bytes) -> bytes:
    return bytes([EXT_OP_PREFIX, DEVICE_OP]) + _package(name_string(path) + b"".join(terms))


def method(path: str, arg_count: int, *terms: bytes, serialized: bool = False, sync_level: int = 0) -> bytes:
    """``Method(path, arg_count, NotSerialized|Serialized, sync_level) { terms }``."""
    if not 0 <= arg_count <= 7 or not 0 <= sync_level <= 15:
        raise ValueError("arg_count 0..7 and sync_level 0..15")
    flags = arg_count | (0x08 if serialized else 0) | (sync_level << 4)
    return bytes([METHOD_OP]) + _package(name_string(path) + bytes([flags]) + b"".join(terms))


def if_(predicate: bytes, *terms: bytes) -> bytes:
    return bytes([IF_OP]) + _package(predicate + b"".join(terms))


def else_(*terms: bytes) -> bytes:
    return bytes([ELSE_OP]) + _package(b"".join(terms))


def package(num_elements: int, *elements: bytes) -> bytes:
    """``Package(num_elements) { elements }``; fewer elements than ``num_elements`` is legal."""
    if not 0 <= num_elements <= 255 or len(elements) > num_elements:
        raise ValueError("package element count")
    return bytes([PACKAGE_OP]) + _package(bytes([num_elements]) + b"".join(elements))


# -- operators ---------------------------------------------------------------------------------

def store(source: bytes, target: bytes) -> bytes:
    return bytes([STORE_OP]) + source + target


def add(a: bytes, b: bytes, target: bytes = NULL_NAME) -> bytes:
    return bytes([ADD_OP]) + a + b + target


def lequal(a: bytes, b: bytes) -> bytes:
    return bytes([LEQUAL_OP]) + a + b


def index(obj: bytes, idx: bytes, target: bytes = NULL_NAME) -> bytes:
    return bytes([INDEX_OP]) + obj + idx + target


def return_(value: bytes) -> bytes:
    return bytes([RETURN_OP]) + value


def notify(obj: bytes, value: bytes) -> bytes:
    return bytes([NOTIFY_OP]) + obj + value


# -- tables ------------------------------------------------------------------------------------

def sdt(
    signature: str,
    body: bytes,
    *,
    revision: int = 1,
    oem_id: str = "BOCHS ",
    oem_table_id: str = "",
    oem_revision: int = 1,
    creator_id: str = "BXPC",
    creator_revision: int = 1,
) -> bytes:
    """A system description table: 36-byte header + ``body``, checksum set so the table sums to 0."""
    header = SdtHeader.build(
        {
            "signature": pad_id(signature, 4),
            "length": 36 + len(body),
            "revision": revision,
            "checksum": 0,
            "oem_id": pad_id(oem_id, 6),
            "oem_table_id": pad_id(oem_table_id, 8),
            "oem_revision": oem_revision,
            "creator_id": pad_id(creator_id, 4),
            "creator_revision": creator_revision,
        }
    )
    table = bytearray(header + body)
    table[SDT_CHECKSUM_OFFSET] = (-checksum8(table)) & 0xFF
    return bytes(table)


def definition_block(signature: str, *terms: bytes, **header: object) -> bytes:
    """``DefinitionBlock("", signature, ...) { terms }`` as a complete, checksummed table."""
    return sdt(signature, b"".join(terms), **header)  # type: ignore[arg-type]

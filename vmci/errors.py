"""The one exception hierarchy of vmci, and the CLI exit code each class maps to.

Exit codes (also in README.md):

====  ==========================================================================
0     success
1     the command ran but its answer is negative (e.g. ``analyze`` found no
      vmcoreinfo, or a check FAILed)
2     usage error (bad option or argument)
3     the input is not a dump vmci understands, or it is corrupt (bad magic,
      impossible size or offset, truncated header)
4     a requested address or object is not in the dump (hole, excluded page)
5     an I/O error from the operating system (cannot open, permission denied)
====  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")


class VmciError(Exception):
    """Base of every error vmci raises on purpose. ``str(err)`` is one line for the user."""

    exit_code = 1


class UsageError(VmciError):
    """An argument given by the caller cannot be used."""

    exit_code = 2


class FormatError(VmciError):
    """The file is not of a format vmci reads, or a field in it is impossible.

    ``field`` and ``offset`` name what was wrong and where (file offset), when known.
    """

    exit_code = 3

    def __init__(self, message: str, *, field: str | None = None, offset: int | None = None) -> None:
        self.field = field
        self.offset = offset
        where = []
        if field is not None:
            where.append(field)
        if offset is not None:
            where.append(f"at offset {offset:#x}")
        super().__init__(f"{message} ({' '.join(where)})" if where else message)


class TruncatedError(FormatError):
    """The file ends before a structure it announces."""


class UnsupportedError(FormatError):
    """The file is recognised but uses a feature vmci does not implement (named in the message)."""


class MemoryReadError(VmciError):
    """A physical address range is not readable from the dump."""

    exit_code = 4

    def __init__(self, message: str, *, paddr: int) -> None:
        self.paddr = paddr
        super().__init__(message)


class HoleError(MemoryReadError):
    """The address is outside every memory range of the dump."""


class ExcludedPageError(MemoryReadError):
    """The page is RAM but the dump tool left it out (kdump dump level, truncated dump)."""


class VirtualReadError(MemoryReadError):
    """A kernel virtual address has no valid mapping, or a page table on the way is unreadable.

    ``vaddr`` is the virtual address asked for, ``paddr`` the table entry (or page) that failed.
    """

    def __init__(self, message: str, *, vaddr: int, paddr: int = 0) -> None:
        self.vaddr = vaddr
        super().__init__(message, paddr=paddr)


class NotFoundError(VmciError):
    """What was asked for (vmcoreinfo, an ACPI table, a GUID) is not in the dump."""

    exit_code = 1


def or_none(fn: Callable[[], _T]) -> _T | None:
    """``fn()``, or None when it raises a :class:`VmciError` (a value that is malformed or absent)."""
    try:
        return fn()
    except VmciError:
        return None

"""The kernel log's typed records and the reader's contract: what a log reader needs from
kernel memory (:class:`KernelReader`), what it returns (:class:`PrintkRecord`,
:class:`PrintkLog`, :class:`PrintkWarning`) and how a layout plugs in (:class:`LogVariant`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from vmci.layouts.printk import LOG_CONT

#: Largest rings read: ``LOG_BUF_LEN_MAX`` is 2 GiB (``1 << 31``), and the kernel gives one
#: descriptor per 32 bytes.  Walks are capped further by ``max_descriptors``.
MAX_SIZE_BITS = 31
MAX_COUNT_BITS = MAX_SIZE_BITS - 5
#: The plain buffer is read whole: beyond 256 MiB (old kernels defaulted to at most 2 MiB) its
#: ``log_buf_len`` is taken as damaged.
MAX_PLAIN_BITS = 28
DEFAULT_MAX_DESCRIPTORS = 1 << 22
#: Nanoseconds per second (timestamps are ``ts_nsec``).
NSEC = 1_000_000_000


class KernelReader(Protocol):
    """What the log readers need from a kernel's memory (``vmci.kernel.vmem.KernelMemory``
    provides it): virtual reads and the VMCOREINFO's typed values."""

    @property
    def pointer_size(self) -> int: ...

    @property
    def byteorder(self) -> str: ...

    def read(self, vaddr: int, size: int) -> bytes:
        """``size`` bytes at kernel virtual ``vaddr``; :class:`~vmci.errors.MemoryReadError`
        when any of it is not mapped or not in the dump."""
        ...

    def symbol(self, name: str) -> int | None: ...

    def offset(self, struct: str, member: str) -> int | None: ...

    def size(self, struct: str) -> int | None: ...

    def number(self, name: str) -> int | None: ...

    def length(self, name: str) -> int | None: ...


class PrintkRecord(NamedTuple):
    """Kernel log record."""

    seq: int | None
    """Sequence number (lockless ring only; the older layouts do not store it)."""
    ts_nsec: int | None
    """Timestamp in nanoseconds since boot (None for a plain-buffer line without one)."""
    text: bytes
    """Message text, without the trailing newline."""
    level: int | None = None
    """Log level 0-7, where the layout allows (not exported by the VMCOREINFO: inferred)."""
    facility: int | None = None
    """Syslog facility, where the layout allows (inferred, as ``level``)."""
    flags: int | None = None
    """Record flags (``LOG_NEWLINE`` 2, ``LOG_CONT`` 8), where the layout allows."""
    caller_tid: int | None = None
    """PID of the task that printed the record, when the caller id says a task."""
    caller_cpu: int | None = None
    """CPU that printed the record in interrupt context, when the caller id says a CPU."""
    subsystem: str | None = None
    """``dev_info`` (or dictionary ``SUBSYSTEM=``) of a device message; None when absent."""
    device: str | None = None
    """``dev_info`` (or dictionary ``DEVICE=``) of a device message; None when absent."""
    dataless: bool = False
    """The descriptor holds no data block (an empty line); makedumpfile prints nothing for it."""
    raw: bytes | None = None
    """Plain buffer only: the line's bytes exactly as the buffer holds them."""

    @property
    def caller(self) -> str | None:
        """``T<pid>`` or ``C<cpu>``, as the kernel's ``CONFIG_PRINTK_CALLER`` prefix shows it."""
        if self.caller_tid is not None:
            return f"T{self.caller_tid}"
        if self.caller_cpu is not None:
            return f"C{self.caller_cpu}"
        return None

    @property
    def continuation(self) -> bool | None:
        """The record continues the previous line (``LOG_CONT``), where flags are known."""
        return None if self.flags is None else bool(self.flags & LOG_CONT)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``text`` is UTF-8 with undecodable bytes as ``\\xNN``; then
        ``text_hex`` holds the exact bytes."""
        out: dict[str, Any] = {
            "seq": self.seq, "ts_nsec": self.ts_nsec,
            "text": self.text.decode("utf-8", "backslashreplace"),
            "level": self.level, "facility": self.facility, "flags": self.flags,
            "continuation": self.continuation, "caller": self.caller,
            "subsystem": self.subsystem, "device": self.device, "dataless": self.dataless,
        }
        try:
            self.text.decode("utf-8")
        except UnicodeDecodeError:
            out["text_hex"] = self.text.hex()
        return out


@dataclass(frozen=True)
class PrintkWarning:
    """Records passed over for one reason: a stable ``code``, how many, the first case."""

    code: str
    count: int
    message: str

    def __str__(self) -> str:
        times = f" ({self.count} times)" if self.count > 1 else ""
        return f"{self.code}: {self.message}{times}"


@dataclass(frozen=True)
class PrintkLog:
    """What :func:`get_printk_records` read."""

    variant: str
    """Which layout: ``lockless``, ``structured`` or ``plain`` (:data:`VARIANTS`)."""
    records: tuple[PrintkRecord, ...]
    """The records, oldest first."""
    warnings: tuple[PrintkWarning, ...] = ()
    """Why records were skipped or the walk stopped, counted by code."""
    reusable: int = 0
    """Lockless: descriptors between tail and head already recycled (their text overwritten
    by newer records); normal, skipped silently by the kernel and by makedumpfile too."""
    since_clear: bool = False
    """Only the records since the last ``dmesg -C`` (``clear_seq``/``clear_idx``/``logged_chars``)."""
    clear_seq: int | None = None
    """Lockless: the ``clear_seq`` value read (when ``since_clear``)."""
    ring: int | None = None
    """Address of the ring read: the ``printk_ringbuffer`` (lockless) or the ``log_buf`` data."""
    static_ring: bool = False
    """Lockless: the ring read is ``printk_rb_static`` (the boot ring)."""
    failed: int | None = None
    """Lockless: the ring's ``fail`` counter, messages the kernel could not store at all (no
    descriptor was free: a writer stuck in the middle of a record blocks the ring)."""

    @property
    def complete(self) -> bool:
        """No record was lost to damage, a half-written record or an unreadable page."""
        return not self.warnings


class Warnings:
    """Collects the warnings of one read: the first message and a count per code."""

    def __init__(self) -> None:
        self._first: dict[str, str] = {}
        self._count: dict[str, int] = {}

    def __call__(self, code: str, message: str) -> None:
        if code not in self._first:
            self._first[code] = message
        self._count[code] = self._count.get(code, 0) + 1

    def freeze(self) -> tuple[PrintkWarning, ...]:
        return tuple(PrintkWarning(c, self._count[c], m) for c, m in self._first.items())


@dataclass(frozen=True)
class ReadOptions:
    """The options of :func:`get_printk_records`, as a variant's ``read`` receives them."""

    since_clear: bool = False
    ring: str = "active"
    max_descriptors: int = DEFAULT_MAX_DESCRIPTORS


@dataclass(frozen=True)
class LogVariant:
    """One log layout: ``applies`` probes the VMCOREINFO keys, ``read`` walks memory."""

    name: str
    description: str
    applies: Callable[[KernelReader], bool]
    read: Callable[[KernelReader, ReadOptions], PrintkLog]

"""What every architecture provides (:class:`Arch`) and the records its methods return.

Nothing here knows an instruction set: the x86_64 answers live in :mod:`vmci.arch.x86_64`, and
:mod:`vmci.arch` keeps the registry.  Members an architecture does not implement raise
:class:`~vmci.errors.UnsupportedError` (or return ``None`` where the protocol says so), so callers
ask the capability flags (:attr:`Arch.translates`, :attr:`Arch.finds_kaslr`) instead of names.
"""

from __future__ import annotations

import collections.abc as cabc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple, Protocol

from vmci.core.dump import CpuState, Note
from vmci.core.memory import PhysicalMemory
from vmci.errors import UnsupportedError, UsageError


@dataclass(frozen=True)
class PageTables:
    """A set of page tables: where a walk starts and how to read its entries.

    ``root`` is the physical address of the top-level table, ``va_bits`` the width of a virtual
    address the tables translate (48 or 57 on x86_64), ``page_shift`` the base page (12: 4 KiB),
    ``mask`` bits to clear from every entry before it is used as an address (the x86 SME/SEV
    encryption bit), ``byteorder`` the order of the entries (big on a big-endian arm64 guest).
    ``arch`` names the :class:`Arch` whose walker reads them.
    """

    arch: str
    root: int
    va_bits: int
    page_shift: int = 12
    mask: int = 0
    byteorder: str = "little"

    @property
    def page_size(self) -> int:
        return 1 << self.page_shift


@dataclass(frozen=True)
class KernelConstants:
    """Where an architecture's Linux kernel image lives (the constants of its memory layout).

    ``image_start``/``image_end``: the virtual window the image is mapped in (x86_64:
    ``__START_KERNEL_map`` and ``KERNEL_IMAGE_SIZE`` above it); ``text_link``: the link address of
    ``_text`` without KASLR; ``physical_start``: where ``_text`` is linked to run physically
    (``CONFIG_PHYSICAL_START``); ``physical_align``: KASLR moves the image in multiples of it.
    """

    image_start: int
    image_end: int
    text_link: int
    physical_start: int
    physical_align: int

    def in_image(self, va: int) -> bool:
        return self.image_start <= va < self.image_end


class Mapping(NamedTuple):
    """One leaf mapping: ``size`` bytes at virtual ``va`` map to physical ``pa``."""

    va: int
    pa: int
    size: int


def read_mapped(lookup: Callable[[int], Mapping], memory: PhysicalMemory, va: int, n: int, *,
                zero_fill: bool = False) -> bytes:
    """``n`` bytes at virtual ``va``, one leaf mapping at a time (a 2 MiB or 1 GiB page is one
    physical read); ``lookup(va)`` gives the leaf holding ``va`` or raises
    :class:`~vmci.errors.VirtualReadError`.  ``zero_fill`` reads missing *physical* pages as zeros."""
    if n < 0:
        raise UsageError(f"invalid read of {n} bytes")
    parts: list[bytes] = []
    pos, left = va, n
    while left > 0:
        leaf = lookup(pos)
        take = min(left, leaf.va + leaf.size - pos)
        if take <= 0 or pos < leaf.va:
            raise UnsupportedError(f"the leaf mapping {leaf} returned for {pos:#x} does not hold it")
        parts.append(memory.read(leaf.pa + (pos - leaf.va), take, zero_fill=zero_fill))
        pos, left = pos + take, left - take
    return b"".join(parts)


class KernelKeys(Protocol):
    """The VMCOREINFO lookups an architecture needs (:class:`vmci.kernel.vmcoreinfo.VmcoreInfo`
    has them; ``arch`` sits below ``kernel`` and takes the text by its shape)."""

    def symbol(self, name: str) -> int | None: ...

    def number(self, name: str) -> int | None: ...

    @property
    def pagesize(self) -> int | None: ...


@dataclass
class CpuKaslr:
    """What one vCPU's page tables say about the kernel image.

    ``cr3`` is the vCPU's page-table base register as saved (CR3 on x86, ``TTBR1_EL1`` on arm64
    when the container saved it), ``root`` the kernel top-level table derived from it (or found in
    memory); the ``idt_*`` fields describe the first exception vector (x86: IDT gate 0, the
    divide-error handler), which must point into the kernel text; ``pc``/``pc_in_text`` the
    kernel-mode program counter and whether the tables map it inside the kernel text (arm64, whose
    dumps save no exception-vector register).  ``skipped`` says why a vCPU could not be used.
    """

    cpu: int
    cr3: int | None
    root: int | None = None
    la57: bool = False
    text_va: int | None = None
    text_pa: int | None = None
    text_end: int | None = None
    kerneloffset: int | None = None
    phys_base: int | None = None
    idt_base: int | None = None
    idt_pa: int | None = None
    idt_handler: int | None = None
    idt_handler_in_text: bool | None = None
    idt_handler_matches_phys_base: bool | None = None
    pc: int | None = None
    pc_in_text: bool | None = None
    skipped: str | None = None


@dataclass
class PageTableKaslr:
    """The kernel's virtual KASLR offset and ``phys_base`` from the vCPUs' page tables, with the
    evidence for them.

    ``tables`` are the page tables the answer was read through (the best vCPU's kernel root);
    ``text_va``/``text_pa``/``text_end`` the kernel image's first mapping and the end of its linear
    run; ``agree`` whether every usable vCPU gave the same answer; ``text_link`` the link address of
    ``_text`` the offset is relative to and ``text_link_source`` where it came from.
    """

    kerneloffset: int
    phys_base: int
    method: str
    text_va: int
    text_pa: int
    text_end: int
    tables: PageTables
    agree: bool
    text_link: int
    text_link_source: str
    cpus: list[CpuKaslr] = field(default_factory=list)
    banner_ok: bool | None = None
    idt_handler_matches_symbol: bool | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def root(self) -> int:
        """Physical address of the top-level table the answer was read through."""
        return self.tables.root

    @property
    def la57(self) -> bool:
        """57-bit virtual addresses (x86 5-level paging, CR4.LA57)."""
        return self.tables.va_bits == 57

    def symbol(self, link_addr: int) -> int:
        """Runtime address of a symbol whose System.map (link) address is ``link_addr``."""
        return link_addr + self.kerneloffset

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "root": self.root, "la57": self.la57}


class Arch:
    """One instruction set as vmci needs it: the protocol every :mod:`vmci.arch` entry implements.

    Class attributes describe the architecture; methods read what the dump holds.  The defaults
    say "not supported" (``None`` or :class:`~vmci.errors.UnsupportedError`), so an architecture can
    be registered before it translates addresses.
    """

    #: the name dumps use (``Dump.arch``), also the registry key
    name: str = ""
    #: ``uname -m`` / kdump ``utsname.machine`` spellings that mean this architecture
    machines: tuple[str, ...] = ()
    #: ELF ``e_machine`` values (``EM_*``)
    elf_machines: tuple[int, ...] = ()
    #: bytes of the ``CORE``/``NT_PRSTATUS`` descriptor (tells a dump's architecture when its header
    #: does not: QEMU's arm64 kdump files say ``Unknown``); None: no such note parser
    prstatus_size: int | None = None
    #: bytes of a kernel pointer / ``unsigned long``
    pointer_size: int = 8
    #: byte orders the architecture runs in (the dump says which one it is)
    byteorders: tuple[str, ...] = ("little",)
    #: the base page size a kernel uses when nothing says otherwise
    page_size: int = 4096
    #: every base page size the architecture's kernels can be built with
    page_sizes: tuple[int, ...] = (4096,)
    #: VMCOREINFO keys the architecture's kernels write (for lint and checks)
    vmcoreinfo_keys: tuple[str, ...] = ()
    #: VMCOREINFO keys only this architecture writes: a text with one of them is this architecture's
    vmcoreinfo_markers: tuple[str, ...] = ()
    #: the ``NUMBER(...)`` key holding what the architecture's dump tools call ``phys_base`` (the value
    #: QEMU writes into a kdump header): x86_64 ``phys_base``, aarch64 ``PHYS_OFFSET``; None: none
    phys_base_key: str | None = None
    #: the VMCOREINFO keys readers need to place a KASLR'd kernel (the ``kaslr-keys`` check)
    kaslr_keys: tuple[str, ...] = ()
    #: the kernel image's layout constants (None: not described yet)
    kernel: KernelConstants | None = None
    #: member name of ``drgn.Architecture`` (None: drgn has no platform for it)
    drgn_arch: str | None = None
    #: how evidence names (possessive) the kernel page tables the vCPUs run on (x86: "CR3's")
    tables_in_use: str = "the live tables'"
    #: implements :meth:`lookup`, :meth:`walk`, :meth:`kernel_page_tables` and :meth:`kernel_root`
    translates: bool = False
    #: implements :meth:`kaslr_from_page_tables`
    finds_kaslr: bool = False
    #: the bytes of a top-level table every address space shares with ``swapper_pg_dir`` (x86_64:
    #: entries 256..511, the kernel half); None when address spaces share no table
    kernel_entries: slice | None = None
    #: SPARSEMEM geometry when the VMCOREINFO lacks ``NUMBER(SECTION_SIZE_BITS)`` (before 5.13) or
    #: ``NUMBER(MAX_PHYSMEM_BITS)`` (before 5.9): ``SECTION_SIZE_BITS`` and ``MAX_PHYSMEM_BITS``
    #: for 4- and 5-level paging (None: unknown)
    section_size_bits: int | None = None
    max_physmem_bits: tuple[int, int] | None = None
    #: where the direct map starts when nothing randomized it (x86_64: ``__PAGE_OFFSET_BASE_L4``)
    page_offset: int | None = None

    def __repr__(self) -> str:
        return f"<Arch {self.name}>"

    def _unsupported(self, what: str) -> UnsupportedError:
        return UnsupportedError(f"{what} is not implemented for {self.name}")

    # -- CPU state -----------------------------------------------------------------------------

    def cpus_from_notes(self, notes: Sequence[Note], *, byteorder: str = "little") -> list[CpuState]:
        """Per-vCPU state from a dump's notes (``CORE``/``NT_PRSTATUS``, QEMU's own notes).

        Raises :class:`~vmci.errors.FormatError` on a malformed CPU note."""
        raise self._unsupported("reading CPU notes")

    def kernel_root(self, cpu: CpuState, *, mask: int = 0) -> PageTables | None:
        """The kernel's page tables as a vCPU's registers give them (x86: CR3), or None when the
        vCPU has translation off or its registers were not saved."""
        return None

    # -- translation ---------------------------------------------------------------------------

    def kernel_page_tables(self, keys: KernelKeys, *, phys_base: int | None = None) -> PageTables | None:
        """The kernel's own page tables from the VMCOREINFO (x86_64: ``SYMBOL(init_top_pgt)`` with
        ``NUMBER(phys_base)``), or None when the keys are missing.  ``phys_base`` overrides the
        text's value (kernels that export only the legacy ``SYMBOL(phys_base)``)."""
        return None

    def image_offset(self, keys: KernelKeys) -> int | None:
        """``VA - PA`` of kernel-image addresses by the VMCOREINFO (x86_64: ``__START_KERNEL_map -
        NUMBER(phys_base)``, aarch64: ``NUMBER(kimage_voffset)``), modulo 2**64; None when the keys
        are missing."""
        return None

    def lookup(self, memory: PhysicalMemory, tables: PageTables, va: int) -> Mapping:
        """The whole leaf mapping that holds ``va``; raises :class:`~vmci.errors.VirtualReadError`
        when ``va`` is not mapped or a table on the way is unreadable."""
        raise self._unsupported("virtual address translation")

    def translate(self, memory: PhysicalMemory, tables: PageTables, va: int) -> int:
        """Physical address of ``va``; raises :class:`~vmci.errors.VirtualReadError`."""
        leaf = self.lookup(memory, tables, va)
        return leaf.pa + (va - leaf.va)

    def read(self, memory: PhysicalMemory, tables: PageTables, va: int, n: int, *,
             zero_fill: bool = False) -> bytes:
        """``n`` bytes at virtual ``va`` (:func:`read_mapped` over :meth:`lookup`)."""
        return read_mapped(lambda v: self.lookup(memory, tables, v), memory, va, n, zero_fill=zero_fill)

    def walk(self, memory: PhysicalMemory, tables: PageTables, start: int = 0,
             end: int = 1 << 64) -> Iterator[Mapping]:
        """Leaf mappings overlapping ``[start, end)`` in ascending VA order, clipped to it."""
        raise self._unsupported("page-table walks")

    # -- the kernel image ----------------------------------------------------------------------

    def kernel_phys(self, va: int, phys_base: int) -> int | None:
        """Physical address of a kernel-image virtual address (None: not an image address)."""
        return None

    def kernel_virt(self, pa: int, phys_base: int) -> int:
        """The kernel-image virtual address of a physical address (inverse of :meth:`kernel_phys`)."""
        raise self._unsupported("kernel image addresses")

    def kaslr_from_page_tables(self, memory: PhysicalMemory, cpus: Sequence[CpuState], *, mask: int = 0,
                               system_map: cabc.Mapping[str, int] | None = None) -> PageTableKaslr:
        """``KERNELOFFSET`` and ``phys_base`` from the vCPUs' page tables; raises
        :class:`~vmci.errors.NotFoundError` when no vCPU helps."""
        raise self._unsupported("page-table KASLR discovery")

    def synthesized_keys(self, kaslr: PageTableKaslr) -> list[tuple[str, str, str]]:
        """The architecture's own lines of a VMCOREINFO synthesized from ``kaslr``, as the kernel
        prints them: ``(key, value, where it came from)`` (x86_64: ``NUMBER(phys_base)``,
        ``NUMBER(pgtable_l5_enabled)``)."""
        return []

    def direct_map(self, memory: PhysicalMemory, tables: PageTables) -> int | None:
        """Where the kernel's direct map of physical memory starts (``PAGE_OFFSET``, randomized by
        KASLR on some architectures), read from the page tables; None when not found."""
        return None

    def cpu_notes(self, cpus: Sequence[CpuState], *, qemu: bool = True,
                  byteorder: str = "little") -> list[tuple[str, int, bytes]]:
        """``(name, type, desc)`` notes that carry the vCPUs' registers: one ``CORE``/``NT_PRSTATUS``
        per vCPU, then (``qemu``) the emulator's own per-vCPU notes, as a dump tool writes them."""
        raise self._unsupported("writing CPU notes")

    # -- drgn ----------------------------------------------------------------------------------

    def drgn_flags(self, byteorder: str) -> tuple[str, ...]:
        """Member names of ``drgn.PlatformFlags`` for a dump in ``byteorder``."""
        flags = ("IS_64_BIT",) if self.pointer_size == 8 else ()
        return flags + (("IS_LITTLE_ENDIAN",) if byteorder == "little" else ())


__all__ = ["Arch", "CpuKaslr", "KernelConstants", "KernelKeys", "Mapping", "PageTableKaslr", "PageTables",
           "read_mapped"]

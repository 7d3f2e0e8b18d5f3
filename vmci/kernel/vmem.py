"""Kernel virtual memory: physical memory + the architecture's page tables + KASLR + VMCOREINFO keys.

:class:`KernelMemory` reads kernel-image, direct-map and vmalloc addresses the way makedumpfile and
drgn do without debuginfo: every address goes through the kernel's own page tables (no
direct-map shortcut, so a randomized ``page_offset_base`` needs no guess), rooted where the
VMCOREINFO says (x86_64: ``SYMBOL(init_top_pgt) - __START_KERNEL_map + NUMBER(phys_base)``, 5-level
when ``NUMBER(pgtable_l5_enabled)``, entries masked with ``NUMBER(sme_mask)``), or, when the text
lacks those keys, at the kernel tables a vCPU's registers point at (x86_64: CR3, PTI user half
removed).  Symbols are the text's ``SYMBOL(x)`` values (runtime addresses: KASLR already applied),
else a System.map/vmlinux address plus ``KERNELOFFSET``.  Struct layout comes from the text's
``OFFSET``/``SIZE``/``NUMBER``/``LENGTH`` keys.

Example (the kernel release, as makedumpfile finds ``system_utsname``)::

    kmem = KernelMemory.from_dump(dump, vmcoreinfo)
    name = kmem.symbol("init_uts_ns") + kmem.offset("uts_namespace", "name")
    release = kmem.read_cstring(name + 2 * 65, 65)

Reads are bounded: one physical read per leaf mapping (4 KiB, 2 MiB, 1 GiB), at most
:attr:`KernelMemory.max_read` bytes per call, and an unmapped address raises
:class:`~vmci.errors.VirtualReadError` naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Literal, TypeVar

from vmci.arch import (
    Arch,
    Mapping,
    PageTableKaslr,
    PageTables,
    for_vmcoreinfo,
    get,
    lookup,
    read_mapped,
    supporting,
)
from vmci.core.dump import Dump
from vmci.core.memory import PhysicalMemory
from vmci.errors import NotFoundError, UnsupportedError, UsageError, VmciError
from vmci.kernel.symbols import KernelSymbols
from vmci.kernel.vmcoreinfo import VmcoreInfo


@dataclass(frozen=True)
class KernelSetup:
    """How a :class:`KernelMemory` was set up: ``tables`` and where their root came from
    (``how``), the KASLR values used and their sources, and anything doubtful (``warnings``)."""

    tables: PageTables
    how: str
    kerneloffset: int | None = None
    phys_base: int | None = None
    sources: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


class KernelMemory:
    """Reads a kernel's virtual address space from a dump.

    Build it with :meth:`from_dump` (the usual way) or from known ``tables``.  The public reading
    surface: :meth:`read`, :meth:`read_u8`/:meth:`read_u16`/:meth:`read_u32`/:meth:`read_u64`,
    :meth:`read_pointer`, :meth:`read_cstring`, :meth:`translate`, :meth:`is_mapped`, :meth:`walk`;
    the VMCOREINFO lookups :meth:`symbol`, :meth:`offset`, :meth:`size`, :meth:`number`,
    :meth:`length`; and :attr:`pointer_size`, :attr:`byteorder`, :attr:`page_size`.
    """

    #: the largest single :meth:`read` (a corrupt length must not allocate gigabytes)
    max_read = 256 << 20
    #: leaf mappings remembered (a dump does not change; the cache is dropped when full)
    max_cached_leaves = 4096

    def __init__(
        self,
        memory: PhysicalMemory,
        tables: PageTables,
        *,
        vmcoreinfo: VmcoreInfo | None = None,
        symbols: KernelSymbols | None = None,
        kerneloffset: int | None = None,
        phys_base: int | None = None,
        byteorder: str = "little",
        how: str = "given",
    ) -> None:
        self.memory = memory
        self.tables = tables
        self.arch: Arch = get(tables.arch)
        if not self.arch.translates:
            raise UnsupportedError(f"virtual address translation is not implemented for {self.arch.name}")
        self.vmcoreinfo = vmcoreinfo
        self.symbols = symbols
        self.kerneloffset = kerneloffset
        self.phys_base = phys_base
        self.byteorder: Literal["little", "big"] = "big" if byteorder == "big" else "little"
        self.setup = KernelSetup(tables, how, kerneloffset, phys_base)
        self._leaves: dict[tuple[int, int], Mapping] = {}  # (size, va) -> leaf
        self._sizes: list[int] = []

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_dump(cls, dump: Dump, vmcoreinfo: VmcoreInfo | None = None, *,
                  symbols: KernelSymbols | None = None) -> KernelMemory:
        """The kernel of ``dump`` as ``vmcoreinfo`` (the text vmci found, or None) describes it.

        The architecture is the dump's (a raw image's is recognised by the text's keys).  The
        page-table root comes from the text's keys (:meth:`vmci.arch.Arch.kernel_page_tables`);
        when they are missing, or give only the legacy ``SYMBOL(phys_base)`` (kernels before 4.10),
        the vCPUs' page tables supply the root, ``phys_base`` and ``KERNELOFFSET``
        (:meth:`vmci.arch.Arch.kaslr_from_page_tables`).  Raises
        :class:`~vmci.errors.UnsupportedError` for an architecture vmci cannot translate and
        :class:`~vmci.errors.NotFoundError` when neither source gives a root.
        """
        arch = lookup(dump.arch)
        if arch is None and dump.arch == "unknown" and vmcoreinfo is not None:
            arch = for_vmcoreinfo(vmcoreinfo)  # a raw image: keys only one architecture writes
        if arch is None or not arch.translates:
            raise UnsupportedError(f"kernel virtual addresses of {dump.arch} dumps are not supported "
                                   f"(supported: {', '.join(supporting('translates'))})")
        vi = vmcoreinfo
        sources: dict[str, str] = {}
        warnings: list[str] = []
        koff = _quiet(lambda: vi.kerneloffset) if vi is not None else None
        pb_key = _quiet(lambda: vi.phys_base) if vi is not None else None
        pbase = pb_key.value if pb_key is not None and not pb_key.legacy_symbol else None
        mask = (_quiet(lambda: vi.number("sme_mask")) if vi is not None else None) or 0
        if koff is not None:
            sources["kerneloffset"] = "VMCOREINFO KERNELOFFSET"
        if pbase is not None:
            sources["phys_base"] = f"VMCOREINFO NUMBER({vi.phys_base_key if vi is not None else 'phys_base'})"
        tables = _quiet(lambda: arch.kernel_page_tables(vi)) if vi is not None else None
        how = "the VMCOREINFO's kernel page-table root" if tables is not None else ""
        if tables is None or koff is None or pbase is None:
            why = "the dump has no vCPU state"
            found = None
            if dump.cpus and arch.finds_kaslr:
                try:
                    found = arch.kaslr_from_page_tables(dump.memory, dump.cpus, mask=mask)
                except VmciError as e:
                    why = str(e)
            if found is not None:
                if pbase is None:
                    pbase, sources["phys_base"] = found.phys_base, "the vCPUs' page tables"
                if koff is None:
                    koff, sources["kerneloffset"] = found.kerneloffset, "the vCPUs' page tables"
                if tables is None and vi is not None:
                    tables = _quiet(lambda: arch.kernel_page_tables(vi, phys_base=pbase))
                    how = "the VMCOREINFO's root placed with the page tables' phys_base" if tables else ""
                if tables is None:
                    tables, how = found.tables, f"the kernel page tables of vCPU {_best_cpu(found)}"
            elif tables is None:
                raise NotFoundError("no kernel page tables: the VMCOREINFO gives no root"
                                    + ("" if vi is not None else " (none given)") + f", and {why}")
            else:
                warnings.append(f"KASLR values from the page tables unavailable: {why}")
        if tables.byteorder != dump.byte_order and dump.byte_order in arch.byteorders:
            tables = replace(tables, byteorder=dump.byte_order)  # a big-endian guest's entries
        if not dump.memory.readable(tables.root, tables.page_size):
            warnings.append(f"the top-level page table at {tables.root:#x} is not in the dump")
        kmem = cls(dump.memory, tables, vmcoreinfo=vi, symbols=symbols, kerneloffset=koff, phys_base=pbase,
                   byteorder=dump.byte_order, how=how)
        kmem.setup = KernelSetup(tables, how, koff, pbase, sources, tuple(warnings))
        return kmem

    # -- properties -----------------------------------------------------------------------------

    @property
    def pointer_size(self) -> int:
        """Bytes of a kernel pointer (``unsigned long``)."""
        return self.arch.pointer_size

    @property
    def page_size(self) -> int:
        """The MMU's base page (the VMCOREINFO's ``PAGESIZE`` is the kernel's)."""
        return self.tables.page_size

    # -- reading ------------------------------------------------------------------------------

    def leaf(self, vaddr: int) -> Mapping:
        """The leaf mapping (a 4 KiB, 2 MiB or 1 GiB page on x86_64) that holds ``vaddr``; raises
        :class:`~vmci.errors.VirtualReadError`.  Leaves are remembered, so nearby reads walk once."""
        for size in self._sizes:
            hit = self._leaves.get((size, vaddr & ~(size - 1)))
            if hit is not None:
                return hit
        found = self.arch.lookup(self.memory, self.tables, vaddr)
        if len(self._leaves) >= self.max_cached_leaves:
            self._leaves.clear()
        self._leaves[found.size, found.va] = found
        if found.size not in self._sizes:
            self._sizes.append(found.size)
        return found

    def translate(self, vaddr: int) -> int:
        """Physical address of ``vaddr``; raises :class:`~vmci.errors.VirtualReadError`."""
        hit = self.leaf(vaddr)
        return hit.pa + (vaddr - hit.va)

    def is_mapped(self, vaddr: int) -> bool:
        try:
            self.translate(vaddr)
        except VmciError:
            return False
        return True

    def walk(self, start: int = 0, end: int = 1 << 64) -> Iterator[Mapping]:
        """Leaf mappings overlapping ``[start, end)``, ascending (unreadable tables skipped)."""
        return self.arch.walk(self.memory, self.tables, start, end)

    def read(self, vaddr: int, n: int, *, zero_fill: bool = False) -> bytes:
        """``n`` bytes at ``vaddr``.  An unmapped address raises :class:`~vmci.errors.VirtualReadError`
        (with ``.vaddr``); ``zero_fill`` reads pages the dump left out (kdump dump levels) as zeros."""
        if not 0 <= n <= self.max_read:
            raise UsageError(f"refusing to read {n} bytes at {vaddr:#x} (limit {self.max_read})")
        bits = 8 * self.pointer_size
        if not 0 <= vaddr < 1 << bits or vaddr + n > 1 << bits:
            raise UsageError(f"{n} bytes at {vaddr:#x} do not fit a {bits}-bit address space")
        return read_mapped(self.leaf, self.memory, vaddr, n, zero_fill=zero_fill)

    def release(self, vaddr: int, n: int) -> None:
        """Hint that the bytes at ``[vaddr, vaddr + n)`` will not be read again soon (their physical
        pages leave the process: :meth:`vmci.core.memory.PhysicalMemory.release`)."""
        pos, end = vaddr, vaddr + n
        while pos < end:
            try:
                leaf = self.leaf(pos)
            except VmciError:
                return
            take = min(end, leaf.va + leaf.size) - pos
            self.memory.release(leaf.pa + (pos - leaf.va), take)
            pos += take

    def read_int(self, vaddr: int, size: int, *, signed: bool = False) -> int:
        return int.from_bytes(self.read(vaddr, size), self.byteorder, signed=signed)

    def read_u8(self, vaddr: int) -> int:
        return self.read_int(vaddr, 1)

    def read_u16(self, vaddr: int) -> int:
        return self.read_int(vaddr, 2)

    def read_u32(self, vaddr: int) -> int:
        return self.read_int(vaddr, 4)

    def read_u64(self, vaddr: int) -> int:
        return self.read_int(vaddr, 8)

    def read_pointer(self, vaddr: int) -> int:
        """An ``unsigned long`` / pointer of :attr:`pointer_size` bytes."""
        return self.read_int(vaddr, self.pointer_size)

    def read_cstring(self, vaddr: int, limit: int = 4096) -> bytes:
        """The bytes at ``vaddr`` up to (not including) the first NUL, at most ``limit`` of them;
        read page by page, so a string ending before an unmapped page is fine."""
        out = bytearray()
        pos = vaddr
        while len(out) < limit:
            take = min(limit - len(out), self.page_size - pos % self.page_size)
            chunk = self.read(pos, take)
            nul = chunk.find(b"\0")
            if nul >= 0:
                out += chunk[:nul]
                break
            out += chunk
            pos += take
        return bytes(out)

    # -- the VMCOREINFO -----------------------------------------------------------------------

    def symbol(self, name: str) -> int | None:
        """Runtime address of kernel symbol ``name``: the VMCOREINFO's ``SYMBOL(name)`` (already
        KASLR-shifted), else the System.map/vmlinux link address plus ``KERNELOFFSET``, else None."""
        if self.vmcoreinfo is not None:
            addr = self.vmcoreinfo.symbol(name)
            if addr is not None:
                return addr
        if self.symbols is not None and name in self.symbols.symbols and self.kerneloffset is not None:
            return self.symbols.symbols[name] + self.kerneloffset
        return None

    def offset(self, struct: str, member: str) -> int | None:
        """``OFFSET(struct.member)`` of the VMCOREINFO (None when absent)."""
        return self.vmcoreinfo.offset(struct, member) if self.vmcoreinfo is not None else None

    def size(self, struct: str) -> int | None:
        """``SIZE(struct)``."""
        return self.vmcoreinfo.size(struct) if self.vmcoreinfo is not None else None

    def number(self, name: str) -> int | None:
        """``NUMBER(name)`` (signed)."""
        return self.vmcoreinfo.number(name) if self.vmcoreinfo is not None else None

    def length(self, name: str) -> int | None:
        """``LENGTH(name)``."""
        return self.vmcoreinfo.length(name) if self.vmcoreinfo is not None else None

    def __repr__(self) -> str:
        return (f"KernelMemory({self.arch.name}, root {self.tables.root:#x}, {self.tables.va_bits}-bit, "
                f"from {self.setup.how})")


def _best_cpu(found: PageTableKaslr) -> str:
    used = [c.cpu for c in found.cpus if c.kerneloffset is not None and c.root == found.root]
    return str(used[0]) if used else "?"


T = TypeVar("T")


def _quiet(fn: Callable[[], T]) -> T | None:
    """``fn()``, or None when the text's value is malformed (a lint warning reports it)."""
    try:
        return fn()
    except VmciError:
        return None


__all__ = ["KernelMemory", "KernelSetup"]

"""What a converted dump is made of, gathered once from the source: the VMCOREINFO vmci chose (or
synthesized), the true architecture and ``phys_base``, the kernel's ``utsname``, the vCPUs'
notes, and a line for everything that differs from what the source container said.

Readers look for these facts in different places: crash and drgn in the VMCOREINFO note,
libkdumpfile in a kdump header's ``utsname`` (it sets the architecture only when ``sysname`` is
``Linux`` and ``release``, ``version`` and ``machine`` are filled: ``uts_looks_sane`` in its
``util.c``), makedumpfile in the kdump sub-header's ``phys_base`` (refiltering mode) or
``NUMBER(phys_base)`` (``get_phys_base_x86_64`` in ``arch/x86_64.c``).  :func:`prepare` fills them
all from the kernel's own words.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from vmci.arch import Arch, for_vmcoreinfo, lookup
from vmci.core.dump import Dump
from vmci.core.headers import CONVERSION_NOTE_NAME, ElfHeader, KdumpHeader, Utsname
from vmci.core.memory import Buffer, Extent, PhysicalMemory, Range, Run
from vmci.core.numbers import signed_hex
from vmci.errors import VmciError
from vmci.kernel.vmcoreinfo import VMCOREINFO_NOTE_NAME, VmcoreInfo

if TYPE_CHECKING:
    from vmci.kernel.vmem import KernelMemory

Progress = Callable[[int, int], None]
_UTS_LEN = 65
#: the page sizes a converted dump may take from the kernel (x86's 4 KiB to hexagon's 256 KiB)
MIN_PAGE, MAX_PAGE = 1 << 12, 1 << 18
_NOTE_VMCOREINFO = VMCOREINFO_NOTE_NAME.decode()


@dataclass
class Prepared:
    """A source dump and everything the writers need beyond its pages."""

    dump: Dump
    arch: Arch
    vmcoreinfo: VmcoreInfo | None
    vmcoreinfo_source: str
    """The discovery strategy that found the text, ``given``, ``synthesized`` or ``none``."""
    kmem: KernelMemory | None
    phys_base: int | None
    utsname: Utsname
    cpu_notes: list[tuple[str, int, bytes]]
    """``CORE`` (``NT_PRSTATUS``) notes, then the emulator's per-vCPU notes."""
    other_notes: list[tuple[str, int, bytes]]
    """Notes of the source that are neither CPU state nor VMCOREINFO, kept as they were."""
    repairs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    memory: PhysicalMemory | None = None
    """The source's memory in the guest's pages (:func:`guest_pages`); set by :func:`prepare`."""

    @property
    def byteorder(self) -> str:
        return self.dump.byte_order

    @property
    def pages(self) -> PhysicalMemory:
        """The memory the writers copy, page by page of the guest kernel's size."""
        return self.memory if self.memory is not None else self.dump.memory


class GuestPages(PhysicalMemory):
    """``memory`` counted in pages of ``page_size`` bytes: the same bytes, the guest kernel's PFNs.

    A converted dump is in the kernel's pages, as makedumpfile writes it (``block_size`` = the
    kernel's ``PAGESIZE``): libkdumpfile and drgn take the VMCOREINFO's ``PAGESIZE`` as the unit of
    a kdump file's bitmaps and descriptors whatever ``block_size`` says, and ``struct page`` is
    one per kernel page.  QEMU's arm64 kdump files count 64 KiB blocks (``dump/dump.c``, the
    target's maximum page size) and its ELF files 4 KiB pages, whatever the guest's granule.
    """

    def __init__(self, memory: PhysicalMemory, page_size: int) -> None:
        self.memory = memory
        self.page_size = page_size

    @property
    def ranges(self) -> Sequence[Range]:
        return self.memory.ranges

    def extent(self, paddr: int, limit: int) -> Extent:
        return self.memory.extent(paddr, limit)

    def runs(self, start: int = 0, end: int | None = None) -> Iterator[Run]:
        return self.memory.runs(start, end)

    def chunks(self, start: int = 0, end: int | None = None,
               max_size: int = 1 << 20) -> Iterator[tuple[int, Buffer]]:
        return self.memory.chunks(start, end, max_size)

    def data_chunks(self, start: int = 0, end: int | None = None,
                    max_size: int = 1 << 20) -> Iterator[tuple[int, Buffer]]:
        return self.memory.data_chunks(start, end, max_size)

    def page_runs(self) -> Iterator[tuple[int, int]]:
        """The source's runs of whole pages, recounted: a guest page is kept when every byte of
        it is in one of them (from the source's own map, no page decompressed)."""
        src, ps = self.memory.page_size, self.page_size
        lo = hi = -1
        for a, b in self.memory.page_runs():
            na, nb = -(-a * src // ps), b * src // ps
            if nb <= na:
                continue
            if na <= hi:
                hi = max(hi, nb)
                continue
            if hi > lo:
                yield lo, hi
            lo, hi = na, nb
        if hi > lo:
            yield lo, hi

    def release(self, paddr: int, n: int) -> None:
        self.memory.release(paddr, n)


def guest_pages(dump: Dump, page_size: int | None) -> PhysicalMemory:
    """``dump.memory`` in pages of ``page_size`` (the kernel's), itself when they agree or the size
    is no granule a kernel uses (4 KiB to 256 KiB, a power of two)."""
    mem = dump.memory
    if not page_size or page_size == mem.page_size or page_size & (page_size - 1) \
            or not MIN_PAGE <= page_size <= MAX_PAGE:
        return mem
    return GuestPages(mem, page_size)


def choose_vmcoreinfo(dump: Dump, *, given: bytes | None = None,
                      progress: Progress | None = None) -> tuple[VmcoreInfo | None, str, list[str]]:
    """(text, where it came from, notes on the way): the caller's text, else the one discovery
    chooses (every strategy, :func:`vmci.discover.run.find_vmcoreinfo`), else one synthesized
    from the page tables (marked ``VMCI_SYNTHESIZED=1``), else none."""
    notes: list[str] = []
    if given is not None:
        return VmcoreInfo.parse(given), "given", notes
    from vmci.discover.run import find_vmcoreinfo

    disc = find_vmcoreinfo(dump, progress=progress)
    if disc.chosen is not None and disc.chosen.text is not None:
        return disc.chosen.text, disc.chosen.source, notes
    from vmci.kernel.synthesize import synthesize

    try:
        synth = synthesize(dump)
    except VmciError as e:
        notes.append(f"no VMCOREINFO: none in the dump ({disc.reason}) and none could be synthesized ({e})")
        return None, "none", notes
    return synth.vmcoreinfo, "synthesized", notes


def prepare(dump: Dump, *, vmcoreinfo: bytes | None = None, progress: Progress | None = None) -> Prepared:
    """Gather the facts a converted dump carries (see the module docstring)."""
    text, source, warnings = choose_vmcoreinfo(dump, given=vmcoreinfo, progress=progress)
    repairs: list[str] = []
    arch = _arch(dump, text, repairs)
    kmem = None
    if text is not None:
        from vmci.kernel.vmem import KernelMemory

        try:
            same = arch.name == dump.arch
            kmem = KernelMemory.from_dump(dump if same else replace(dump, arch=arch.name), text)
        except VmciError as e:
            warnings.append(f"kernel virtual addresses unreadable ({e}): no page filtering, utsname from "
                            "the VMCOREINFO")
    phys_base = kmem.phys_base if kmem is not None else None
    if text is not None:
        _vmcoreinfo_repairs(dump, source, repairs)
    _phys_base_repair(dump, phys_base, repairs)
    uts = _utsname(kmem, text, arch, warnings)
    if isinstance(dump.header, KdumpHeader) and not _uts_complete(dump.header.utsname):
        had = _uts_fields(dump.header.utsname) or "nothing"
        repairs.append(f"utsname: the source header had only {had}; written the kernel's "
                       f"({uts.sysname} {uts.release} {uts.machine})")
    cpu_notes = _cpu_notes(dump, arch, repairs, warnings)
    taken = {"CORE", "QEMU", _NOTE_VMCOREINFO, CONVERSION_NOTE_NAME}
    other = [(n.name, n.type, n.desc) for n in dump.notes if n.name not in taken]
    if dump.saved_state is not None:
        repairs.append(f"memory and vCPU state read from a saved VM ({dump.description}): no dump tool "
                       "but vmci reads that format")
    page_size = kmem.page_size if kmem is not None else (text.pagesize if text is not None else None)
    return Prepared(dump, arch, text, source, kmem, phys_base, uts, cpu_notes, other, repairs,
                    warnings + list(dump.warnings), guest_pages(dump, page_size))


def _arch(dump: Dump, text: VmcoreInfo | None, repairs: list[str]) -> Arch:
    """The dump's architecture; the VMCOREINFO's keys win where the container is wrong (QEMU's
    ``EM_386`` in an ELF64 file when the first vCPU was not in long mode)."""
    from vmci.errors import UnsupportedError

    said = lookup(dump.arch)
    by_text = for_vmcoreinfo(text) if text is not None else None
    if by_text is not None and (said is None or said.name != by_text.name):
        what = dump.header.e_machine if isinstance(dump.header, ElfHeader) else dump.arch
        repairs.append(f"architecture: the container says {what}, the VMCOREINFO's keys are "
                       f"{by_text.name}'s; written {by_text.name}")
        return by_text
    if said is None:
        raise UnsupportedError(f"cannot convert a dump of unknown architecture {dump.arch!r}")
    return said


def _vmcoreinfo_repairs(dump: Dump, source: str, repairs: list[str]) -> None:
    where = {"elf-note": "the dump's own note", "kdump-header": "the kdump header",
             "address-blob": "the RFC device's address blob", "fw-cfg-record": "the saved fw_cfg record",
             "acpi": "the RFC device page (ACPI)", "memory-scan": "a scan of guest memory",
             "given": "the caller", "synthesized": "the page tables (synthesized, marked VMCI_SYNTHESIZED=1)"}
    if source not in ("elf-note", "kdump-header"):
        repairs.append(f"VMCOREINFO: the dump carried none where readers look; the text from "
                       f"{where.get(source, source)} written as the ELF note and in the kdump header")


def _phys_base_repair(dump: Dump, phys_base: int | None, repairs: list[str]) -> None:
    h = dump.header
    if not isinstance(h, KdumpHeader) or h.phys_base is None or phys_base is None:
        return
    stored = h.phys_base_signed
    mask = (1 << h.ulong_bits) - 1
    if (phys_base - h.phys_base) & mask == 0:
        # the same word: arm64's PHYS_OFFSET (memstart_addr, an s64) is negative when KASLR moves the
        # linear map, and the kernel prints it unsigned (NUMBER(PHYS_OFFSET)=0x%llx)
        return
    why = ""
    try:
        if int(str(phys_base), 16) & mask == h.phys_base:
            why = (f" (QEMU read the kernel's decimal NUMBER(phys_base)={phys_base} as hexadecimal, "
                   "dump/dump.c vmcoreinfo_phys_base)")
    except ValueError:
        pass
    if not why and stored == 0:
        why = " (QEMU's default when it saw no VMCOREINFO note)"
    repairs.append(f"phys_base: the source kdump header said {signed_hex(stored, none='none')}{why}; written "
                   f"{signed_hex(phys_base, none='none')}, the kernel's value")


def _uts_complete(u: Utsname) -> bool:
    return u.sysname == "Linux" and bool(u.release and u.version and u.machine)


def _uts_fields(u: Utsname) -> str:
    return ", ".join(f"{k}={v}" for k, v in u.to_dict().items() if v)


def _utsname(kmem: KernelMemory | None, text: VmcoreInfo | None, arch: Arch, warnings: list[str]) -> Utsname:
    """``init_uts_ns.name`` read as makedumpfile's ``check_release`` reads it (``SYMBOL(init_uts_ns)``
    + ``OFFSET(uts_namespace.name)``, else + ``sizeof(int)`` for kernels that predate the key), or a
    synthesized text's ``VMCI(new_utsname)``; checked against ``OSRELEASE``."""
    release = text.osrelease if text is not None else None
    machine = arch.machines[0] if arch.machines else arch.name
    fallback = Utsname(sysname="Linux", release=release or "", version="(unknown)", machine=machine)
    if kmem is None or text is None:
        return fallback
    base = text.symbol("init_uts_ns")
    if base is not None:
        off = text.offset("uts_namespace", "name")
        base += 4 if off is None else off
    else:
        v = text.get("VMCI(new_utsname)")
        base = int(v, 16) if v else None
    if base is None:
        return fallback
    try:
        raw = kmem.read(base, 6 * _UTS_LEN)
    except VmciError as e:
        warnings.append(f"init_uts_ns unreadable ({e}): utsname from the VMCOREINFO")
        return fallback
    parts = [raw[i * _UTS_LEN:(i + 1) * _UTS_LEN].split(b"\0", 1)[0].decode("utf-8", "replace")
             for i in range(6)]
    uts = Utsname(*parts)
    if uts.sysname != "Linux" or (release and uts.release != release):
        warnings.append(f"init_uts_ns holds {uts.sysname!r} {uts.release!r}, not Linux {release!r}: "
                        "utsname from the VMCOREINFO")
        return fallback
    return uts if uts.machine else replace(uts, machine=machine)


def _cpu_notes(dump: Dump, arch: Arch, repairs: list[str],
               warnings: list[str]) -> list[tuple[str, int, bytes]]:
    """The source's ``CORE``/``QEMU`` notes when they fit the architecture, else notes built from
    the vCPU state (a saved VM has no notes; QEMU's ``EM_386`` dumps carry i386 ``NT_PRSTATUS``)."""
    from vmci.core.dump import CpuState
    from vmci.errors import UnsupportedError

    kept = [(n.name, n.type, n.desc) for n in dump.notes if n.name in ("CORE", "QEMU")]
    try:
        size = len(arch.cpu_notes([CpuState(index=0)], qemu=False, byteorder=dump.byte_order)[0][2])
    except UnsupportedError:
        return kept
    core = [n for n in dump.notes if n.name == "CORE"]
    if (core and all(len(n.desc) == size for n in core)) or not dump.cpus:
        return kept
    try:
        notes = arch.cpu_notes(dump.cpus, qemu=True, byteorder=dump.byte_order)
    except VmciError as e:
        warnings.append(f"vCPU registers not written: {e}")
        return kept
    what = ("the saved vCPU state" if not core
            else f"the vCPU state (the source's NT_PRSTATUS is not {arch.name}'s)")
    repairs.append(f"vCPU registers: {len(dump.cpus)} NT_PRSTATUS and QEMU CPU-state notes built "
                   f"from {what}")
    return notes


__all__ = ["GuestPages", "Prepared", "choose_vmcoreinfo", "guest_pages", "prepare"]

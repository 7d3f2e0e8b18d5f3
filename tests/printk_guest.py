"""Test support for the kernel log: a small synthetic guest kernel that logs, and a
:class:`~vmci.kernel.printk.KernelReader` over (physical memory, VMCOREINFO text, page tables).

The reader side here is deliberately independent of the producer: it parses the VMCOREINFO
*text* the guest wrote and translates through the guest's own page tables (a real 4-level walk
from ``SYMBOL(init_top_pgt)``), exactly as a dump reader would.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vmci.arch.x86_64.consts import DEFAULT_TEXT, START_KERNEL_MAP
from vmci.arch.x86_64.paging import page_tables
from vmci.core.memory import PAGE_SIZE, PhysicalMemory, Range, RestrictedMemory, SparseMemory, subtract
from vmci.errors import MemoryReadError, UsageError
from vmci.kernel.vmcoreinfo import VmcoreInfo
from vmci.kernel.vmem import KernelMemory
from vmci.producer import printk as pw
from vmci.producer.linux import KernelLayout, KernelProfile, PlacedVmcoreinfo, place_vmcoreinfo, profile
from vmci.producer.pagetables import KernelTables, build_kernel_page_tables
from vmci.producer.qemu_dump import kexec_notes, write_kexec_vmcore

RAM = 64 << 20
IMAGE = 0x2000000  # the "full" image: real link addresses
TEXT_PA = 0x1000000


class VmcoreinfoKernel:
    """KernelReader: virtual reads through ``translate``, values from the VMCOREINFO text."""

    def __init__(self, mem: PhysicalMemory, info: VmcoreInfo, translate: Callable[[int], int], *,
                 pointer_size: int = 8, byteorder: str = "little") -> None:
        self.mem, self.info, self.translate = mem, info, translate
        self.pointer_size, self.byteorder = pointer_size, byteorder
        self.reads = 0

    def read(self, vaddr: int, size: int) -> bytes:
        self.reads += 1
        out = []
        va, end = vaddr, vaddr + size
        while va < end:
            n = min(end, (va // PAGE_SIZE + 1) * PAGE_SIZE) - va
            out.append(self.mem.read(self.translate(va), n))
            va += n
        return b"".join(out)

    def symbol(self, name: str) -> int | None:
        return self.info.symbol(name)

    def offset(self, struct: str, member: str) -> int | None:
        return self.info.offset(struct, member)

    def size(self, struct: str) -> int | None:
        return self.info.size(struct)

    def number(self, name: str) -> int | None:
        return self.info.number(name)

    def length(self, name: str) -> int | None:
        return self.info.length(name)


class Allocator:
    """First-fit page allocator over free guest RAM (the guest's page allocator, simplified)."""

    def __init__(self, free: Sequence[Range]) -> None:
        self.free = list(free)

    def __call__(self, size: int, align: int = PAGE_SIZE, *, what: str = "") -> int:
        for i, r in enumerate(self.free):
            start = -(-r.start // align) * align
            if start + size <= r.end:
                self.free[i:i + 1] = subtract([r], [Range(start, size)])
                return start
        raise UsageError(f"no room for the {what} ({size:#x} bytes)")


@dataclass
class Guest:
    """A booted synthetic guest kernel with its log written."""

    mem: SparseMemory
    layout: KernelLayout
    tables: KernelTables
    placed: PlacedVmcoreinfo
    truth: pw.PrintkTruth
    records: list[pw.LogRecord]
    extra_holes: list[Range] = field(default_factory=list)

    @property
    def info(self) -> VmcoreInfo:
        return VmcoreInfo.parse(self.placed.text)

    def memory(self) -> PhysicalMemory:
        """Guest RAM as the dump holds it (a truncated dump leaves the truth's holes out)."""
        holes = self.truth.holes + self.extra_holes
        return RestrictedMemory(self.mem, subtract(self.mem.ranges, holes)) if holes else self.mem

    def kernel(self, mem: PhysicalMemory | None = None) -> VmcoreinfoKernel:
        """Read like a dump tool: root = SYMBOL(init_top_pgt) - __START_KERNEL_map + phys_base."""
        info = self.info
        mem = mem or self.memory()
        root_sym = info.symbol("init_top_pgt") or info.symbol("init_level4_pgt")
        pb = info.phys_base
        assert root_sym is not None and pb is not None
        # before 4.10 only the variable's address is published: take phys_base as makedumpfile
        # does, from the kernel-text PT_LOAD (which the producer's tables describe)
        phys_base = self.tables.phys_base if pb.legacy_symbol else pb.value
        kvm = KernelMemory(mem, page_tables(root_sym - START_KERNEL_MAP + phys_base))
        return VmcoreinfoKernel(mem, info, kvm.translate)

    def write_kexec_elf(self, path: Path) -> Path:
        """/proc/vmcore as a kdump kernel would export it: what makedumpfile and vmcore-dmesg read."""
        first = self.mem.read(self.placed.note_paddr, 24 + -(-len(self.placed.text) // 4) * 4)
        notes = kexec_notes([self.tables.cpu_state(0)], first)
        self.tables.flush()
        keep = subtract(self.mem.ranges, [Range(0, PAGE_SIZE), *self.truth.holes, *self.extra_holes])
        with path.open("wb") as f:
            write_kexec_vmcore(f, RestrictedMemory(self.mem, keep), notes, direct_map=self.tables.page_offset,
                               kernel_load=(self.tables.text_va, self.tables.text_pa, IMAGE))
        return path


def old_profile(name: str) -> KernelProfile:
    """Profiles older than vmci.producer.linux knows: for the structured ``log`` and plain eras."""
    versions = {"3.2": (3, 2), "3.10": (3, 10), "5.4": (5, 4), "5.15": (5, 15), "6.8": (6, 8),
                "6.18": (6, 18)}
    return KernelProfile(name, versions[name], "printk test profile", f"{name}.0-vmci")


def _profile(name: str) -> KernelProfile:
    try:
        return profile(name)
    except UsageError:
        return old_profile(name)


def write_mem_section(mem: SparseMemory, layout: KernelLayout, alloc: Allocator, ram_end: int) -> None:
    """A minimal SPARSEMEM_EXTREME ``mem_section`` (makedumpfile validates it even for
    ``--dump-dmesg``): root 0 points at a page of ``struct mem_section`` whose
    ``section_mem_map`` is the encoded vmemmap (``vmemmap - first_pfn * SIZE(page)`` = vmemmap)
    with SECTION_MARKED_PRESENT | SECTION_HAS_MEM_MAP."""
    sections = -(-ram_end // (1 << layout.value("NUMBER(SECTION_SIZE_BITS)")))
    page = alloc(PAGE_SIZE, what="mem_section[0]")
    size = layout.value("SIZE(mem_section)")
    off = layout.value("OFFSET(mem_section.section_mem_map)")
    for i in range(sections):
        mem.write(page + i * size + off, (layout.vmemmap | 3).to_bytes(8, "little"))
    # the root array: allocated since 4.15 (SYMBOL(mem_section) is its address), a .bss array before
    root = layout.mem_section_paddr
    if not layout.profile.since(4, 15):
        root = layout.kernel_paddr(layout.runtime("mem_section"))
    mem.write(root, (layout.direct_map + page).to_bytes(8, "little"))


def boot(profile_name: str, records: Sequence[pw.LogRecord] | None = None, *, faults: Sequence[str] = (),
         seed: int = 1, values: dict[str, int] | None = None, kaslr: bool = True,
         **log_options: object) -> Guest:
    """A guest kernel of ``profile_name`` in 64 MiB of RAM that logged ``records`` (default: a
    boot log), with page tables, the VMCOREINFO buffers, ``init_uts_ns`` and ``mem_section``."""
    prof = _profile(profile_name)
    kaslr_offset = 0x2A000000 if kaslr else 0
    mem = SparseMemory([Range(0, RAM)])
    alloc = Allocator(subtract([Range(0x100000, RAM - 0x100000)], [Range(TEXT_PA, IMAGE)]))
    pool = Range(alloc(0x100000, what="page-table pool"), 0x100000)
    ms = alloc(4 * PAGE_SIZE, what="mem_section root")
    layout = KernelLayout(profile=prof, seed=seed, kaslr_offset=kaslr_offset, phys_base=-kaslr_offset,
                          mem_section_paddr=ms, values=values or {})
    tables = build_kernel_page_tables(mem, pool, kaslr_offset=kaslr_offset, phys_base=-kaslr_offset,
                                      image_size=IMAGE, text_size=0x1000000,
                                      pgd_offset=layout.link("swapper_pg_dir") - DEFAULT_TEXT)
    note = alloc(2 * PAGE_SIZE, what="vmcoreinfo_note")
    data = alloc(PAGE_SIZE, what="vmcoreinfo_data")
    placed = place_vmcoreinfo(mem, layout, note, data)
    write_mem_section(mem, layout, alloc, RAM)
    recs = list(records) if records is not None else pw.boot_log(120, seed=seed, osrelease=layout.osrelease)
    truth = pw.write_printk_log(mem, layout, recs, alloc=alloc, faults=faults, **log_options)  # type: ignore[arg-type]
    tables.flush()
    return Guest(mem, layout, tables, placed, truth, recs)


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pkg = {"makedumpfile": "makedumpfile", "vmcore-dmesg": "kexec-tools"}[tool]
        pytest.skip(f"{tool} is not installed (Debian package {pkg})")
    return path


def makedumpfile_dmesg(elf: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([need("makedumpfile"), "--dump-dmesg", str(elf), str(out)], capture_output=True,
                          text=True, timeout=120)


def random_records(n: int, seed: int) -> list[pw.LogRecord]:
    rng = random.Random(seed)
    return pw.boot_log(n, seed=rng.randrange(1 << 30))


def read_or_fail(kernel: VmcoreinfoKernel, va: int, n: int) -> bytes | None:
    try:
        return kernel.read(va, n)
    except MemoryReadError:
        return None


# -- flat guests: other word sizes and byte orders -------------------------------------------------

#: ``printk_ringbuffer`` and friends on i386 (4-byte longs and pointers; u64 aligned to 4).
I386_LOCKLESS = {
    "SIZE(printk_ringbuffer)": 40, "OFFSET(printk_ringbuffer.desc_ring)": 0,
    "OFFSET(printk_ringbuffer.text_data_ring)": 20, "OFFSET(printk_ringbuffer.fail)": 36,
    "SIZE(prb_desc_ring)": 20, "OFFSET(prb_desc_ring.count_bits)": 0, "OFFSET(prb_desc_ring.descs)": 4,
    "OFFSET(prb_desc_ring.infos)": 8, "OFFSET(prb_desc_ring.head_id)": 12,
    "OFFSET(prb_desc_ring.tail_id)": 16, "SIZE(prb_desc)": 12, "OFFSET(prb_desc.state_var)": 0,
    "OFFSET(prb_desc.text_blk_lpos)": 4, "SIZE(prb_data_blk_lpos)": 8,
    "OFFSET(prb_data_blk_lpos.begin)": 0, "OFFSET(prb_data_blk_lpos.next)": 4, "SIZE(printk_info)": 88,
    "OFFSET(printk_info.seq)": 0, "OFFSET(printk_info.ts_nsec)": 8, "OFFSET(printk_info.text_len)": 16,
    "OFFSET(printk_info.caller_id)": 20, "OFFSET(printk_info.dev_info)": 24, "SIZE(dev_printk_info)": 64,
    "OFFSET(dev_printk_info.subsystem)": 0, "LENGTH(printk_info_subsystem)": 16,
    "OFFSET(dev_printk_info.device)": 16, "LENGTH(printk_info_device)": 48, "SIZE(prb_data_ring)": 16,
    "OFFSET(prb_data_ring.size_bits)": 0, "OFFSET(prb_data_ring.data)": 4,
    "OFFSET(prb_data_ring.head_lpos)": 8, "OFFSET(prb_data_ring.tail_lpos)": 12, "SIZE(atomic_long_t)": 4,
    "OFFSET(atomic_long_t.counter)": 0, "SIZE(latched_seq)": 20, "OFFSET(latched_seq.val)": 4,
}
#: A 64-bit build of the 6.1 era with ``last_finalized_id`` (consistent sizes).
LP64_LOCKLESS = {
    **I386_LOCKLESS,
    "SIZE(printk_ringbuffer)": 88, "OFFSET(printk_ringbuffer.text_data_ring)": 48,
    "OFFSET(printk_ringbuffer.fail)": 80, "SIZE(prb_desc_ring)": 48, "OFFSET(prb_desc_ring.descs)": 8,
    "OFFSET(prb_desc_ring.infos)": 16, "OFFSET(prb_desc_ring.head_id)": 24,
    "OFFSET(prb_desc_ring.tail_id)": 32, "SIZE(prb_desc)": 24, "OFFSET(prb_desc.text_blk_lpos)": 8,
    "SIZE(prb_data_blk_lpos)": 16, "OFFSET(prb_data_blk_lpos.next)": 8, "SIZE(prb_data_ring)": 32,
    "OFFSET(prb_data_ring.data)": 8, "OFFSET(prb_data_ring.head_lpos)": 16,
    "OFFSET(prb_data_ring.tail_lpos)": 24, "SIZE(atomic_long_t)": 8, "SIZE(latched_seq)": 24,
    "OFFSET(latched_seq.val)": 8,
}
STRUCTURED = {"SIZE(printk_log)": 16, "OFFSET(printk_log.ts_nsec)": 0, "OFFSET(printk_log.len)": 8,
              "OFFSET(printk_log.text_len)": 10, "OFFSET(printk_log.dict_len)": 12}
FLAT_RAM = 32 << 20
_FLAT_SYMBOLS = {"prb": 0x1A8E3C8, "printk_rb_static": 0x1A8E3E0, "clear_seq": 0x1A8E4A0,
                 "log_buf": 0x1A8E4C8, "log_buf_len": 0x1A8E4D0, "log_first_idx": 0x1A8E4D8,
                 "clear_idx": 0x1A8E4DC, "log_next_idx": 0x1A8E4E0, "log_end": 0x1A8E4E4,
                 "logged_chars": 0x1A8E4E8}


@dataclass
class FlatGuest:
    """A guest whose kernel addresses are all ``page_offset + physical`` (i386 lowmem style)."""

    mem: SparseMemory
    target: pw.PrintkTarget
    text: bytes
    truth: pw.PrintkTruth
    page_offset: int

    def kernel(self) -> VmcoreinfoKernel:
        def translate(va: int) -> int:
            pa = va - self.page_offset
            if not 0 <= pa < FLAT_RAM:
                raise MemoryReadError(f"{va:#x} is not mapped", paddr=pa)
            return pa

        mem = RestrictedMemory(self.mem, subtract(self.mem.ranges, self.truth.holes)) if self.truth.holes \
            else self.mem
        return VmcoreinfoKernel(mem, VmcoreInfo.parse(self.text), translate,
                                pointer_size=self.target.pointer_size, byteorder=self.target.byteorder)

    def write_elf(self, path: Path, machine: int) -> Path:
        """A kexec-style ELF of the matching class and byte order (vmcore-dmesg reads it)."""
        from vmci.formats.elf import write_elf
        from vmci.formats.notes import encode_notes

        notes = encode_notes([("VMCOREINFO", 0, self.text)], self.target.byteorder)
        with path.open("wb") as f:
            write_elf(f, self.mem, notes, machine=machine, bits=8 * self.target.pointer_size,
                      little=self.target.byteorder == "little", style="kexec", direct_map=self.page_offset)
        return path


def flat_guest(variant: str, records: Sequence[pw.LogRecord], *, pointer_size: int = 4,
               byteorder: str = "little", version: tuple[int, int] = (5, 15), faults: Sequence[str] = (),
               **log_options: object) -> FlatGuest:
    """A log in the layout of a 32-bit (or big-endian) kernel, all symbols in a linear map."""
    page_offset = 0xC0000000 if pointer_size == 4 else 0xC000000000000000
    if variant == "lockless":
        values = dict(I386_LOCKLESS if pointer_size == 4 else LP64_LOCKLESS)
        if version < (5, 13):
            values = {k: v for k, v in values.items() if "latched_seq" not in k}
        names = ("prb", "printk_rb_static", "clear_seq")
    elif variant == "structured":
        values = dict(STRUCTURED)
        names = ("log_buf", "log_buf_len", "log_first_idx", "clear_idx", "log_next_idx")
    else:
        values, names = {}, ("log_buf", "log_end", "log_buf_len", "logged_chars")
    target = pw.PrintkTarget(variant, version, values, {n: page_offset + _FLAT_SYMBOLS[n] for n in names},
                             lambda va: va - page_offset, page_offset, pointer_size, byteorder)
    mem = SparseMemory([Range(0, FLAT_RAM)])
    alloc = Allocator([Range(0x100000, 0x1700000)])
    truth = pw.write_printk_log(mem, target, records, alloc=alloc, faults=faults, **log_options)  # type: ignore[arg-type]
    text = (b"OSRELEASE=%d.%d.0-vmci\nPAGESIZE=4096\n" % version) + "".join(truth.vmcoreinfo_lines).encode()
    return FlatGuest(mem, target, text, truth, page_offset)

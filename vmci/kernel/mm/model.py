"""Where ``struct page`` lives: the memory model and its ``mem_map`` arrays (SPARSEMEM with or
without EXTREME and VMEMMAP, FLATMEM), as makedumpfile finds them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vmci.errors import NotFoundError, VmciError

if TYPE_CHECKING:

    from vmci.kernel.vmem import KernelMemory



#: ``SECTION_MARKED_PRESENT`` and the low bits of ``section_mem_map`` that are flags
#: (``SECTION_MAP_LAST_BIT`` is ``1 << 5`` since 5.12; makedumpfile masks five bits for every kernel).
SECTION_MARKED_PRESENT = 1
SECTION_MAP_FLAG_BITS = 5


@dataclass(frozen=True)
class MemMap:
    """The ``struct page`` array of PFNs ``[pfn_start, pfn_end)``, at virtual ``mem_map``."""

    section: int
    pfn_start: int
    pfn_end: int
    mem_map: int


@dataclass
class MemoryModel:
    """How the kernel keeps ``struct page``: the model and the arrays found."""

    model: str
    """``sparsemem-extreme``, ``sparsemem`` or ``flatmem``."""
    maps: list[MemMap]
    how: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def max_pfn(self) -> int:
        """The end of the last array (makedumpfile cuts ``max_mapnr`` there)."""
        return max((m.pfn_end for m in self.maps), default=0)


def _is_kvaddr(addr: int, pointer_size: int) -> bool:
    # kernel addresses are in the upper half on every architecture vmci translates
    return addr >> (8 * pointer_size - 1) == 1


def memory_model(kmem: KernelMemory, max_mapnr: int) -> MemoryModel:
    """The ``struct page`` arrays covering PFNs below ``max_mapnr``; raises
    :class:`~vmci.errors.NotFoundError` when the VMCOREINFO gives no memory model or the
    ``mem_section`` it names does not validate (makedumpfile ``get_mem_map``)."""
    size = kmem.size("page")
    if size is None:
        raise NotFoundError("the VMCOREINFO has no SIZE(page)")
    ms = kmem.symbol("mem_section")
    if ms is not None and kmem.size("mem_section") is not None \
            and kmem.offset("mem_section", "section_mem_map") is not None:
        return _sparsemem(kmem, ms, size, max_mapnr)
    mm = kmem.symbol("mem_map")
    if mm is not None:
        base = kmem.read_pointer(mm)
        return MemoryModel("flatmem", [MemMap(0, 0, max_mapnr, base)], "SYMBOL(mem_map) points at the array")
    raise NotFoundError("the VMCOREINFO names no memory model (no SYMBOL(mem_section) with its SIZE and "
                        "OFFSET, no SYMBOL(mem_map))")


def _sparsemem(kmem: KernelMemory, sym: int, page_size_of_struct: int, max_mapnr: int) -> MemoryModel:
    arch = kmem.arch
    ps = kmem.pointer_size
    sec_size = kmem.size("mem_section") or 0
    sec_off = kmem.offset("mem_section", "section_mem_map") or 0
    page_shift = (kmem.page_size - 1).bit_length()
    section_bits = kmem.number("SECTION_SIZE_BITS") or arch.section_size_bits
    physmem_bits = kmem.number("MAX_PHYSMEM_BITS")
    if physmem_bits is None and arch.max_physmem_bits is not None:
        physmem_bits = arch.max_physmem_bits[1 if kmem.tables.va_bits == 57 else 0]
    if not section_bits or not physmem_bits or sec_size <= 0:
        raise NotFoundError("SPARSEMEM geometry unknown (no NUMBER(SECTION_SIZE_BITS)/"
                            f"NUMBER(MAX_PHYSMEM_BITS) and no default for {arch.name})")
    pfn_shift = section_bits - page_shift
    per_section = 1 << pfn_shift
    nr_sections = 1 << (physmem_bits - section_bits)
    per_root_extreme = kmem.page_size // sec_size
    length = kmem.length("mem_section")
    extreme = length is None or length == -(-nr_sections // per_root_extreme)
    num = -(-max_mapnr // per_section)
    per_root = per_root_extreme if extreme else 1
    roots = -(-num // per_root)
    if roots * (ps if extreme else sec_size) > kmem.max_read:
        raise NotFoundError(f"{num} memory sections: the mem_section array would be too large")

    def decode(root_array: int) -> list[MemMap] | None:
        """``validate_mem_section``: None when a present section's mem_map is not a kernel address."""
        try:
            raw = kmem.read(root_array, roots * (ps if extreme else sec_size))
        except VmciError:
            return None
        out: list[MemMap] = []
        any_present = False
        for nr in range(num):
            if extreme:
                root = int.from_bytes(raw[(nr // per_root) * ps:(nr // per_root + 1) * ps], kmem.byteorder)
                if root == 0:
                    continue
                addr = root + (nr % per_root) * sec_size
            else:
                addr = root_array + nr * sec_size
            if not _is_kvaddr(addr, ps):
                continue
            try:
                word = kmem.read_pointer(addr + sec_off)
            except VmciError:
                continue
            if not word & SECTION_MARKED_PRESENT:
                continue
            coded = word & ~((1 << SECTION_MAP_FLAG_BITS) - 1)
            mem_map = (coded + (nr << pfn_shift) * page_size_of_struct) & ((1 << (8 * ps)) - 1)
            if not _is_kvaddr(mem_map, ps):
                return None
            any_present = True
            lo = nr * per_section
            out.append(MemMap(nr, lo, min(lo + per_section, max_mapnr), mem_map))
        return out if any_present else None

    model = "sparsemem-extreme" if extreme else "sparsemem"
    maps = decode(sym)
    how = "SYMBOL(mem_section) is the root array"
    if maps is None and extreme:
        # 4.15+ allocates the root array; a text that gives the pointer's address needs one more read
        try:
            maps = decode(kmem.read_pointer(sym))
            how = "SYMBOL(mem_section) points at the root array"
        except VmciError:
            maps = None
    if maps is None:
        raise NotFoundError(f"mem_section at {sym:#x} does not validate: no present section with a kernel "
                            "mem_map address")
    return MemoryModel(model, maps, how)

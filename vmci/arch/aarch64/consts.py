"""arm64 facts, each written once: the VMSAv8-64 translation format and Linux's memory layout.

Translation (Arm ARM D8, "The AArch64 Virtual Memory System Architecture"): a granule of 4, 16 or
64 KiB (``TCR_EL1.TG1``) gives tables of ``granule / 8`` eight-byte descriptors, each level
resolving ``page_shift - 3`` bits; the kernel half (``TTBR1_EL1``) covers the top
``2 ** (64 - T1SZ)`` bytes.  Descriptor bits [1:0]: ``0b11`` a table (or, at the last level, a
page), ``0b01`` a block (a level-1 or level-2 leaf), anything else invalid.  The output address is
bits [47:page_shift]; with 64 KiB pages and 52-bit physical addresses (FEAT_LPA) bits [15:12] hold
PA[51:48], with 4/16 KiB pages and FEAT_LPA2 bits [9:8] hold PA[51:50] (drgn ``arch_aarch64.c``).
Table descriptors carry the hierarchical attributes in bits [63:59] (Linux sets PXNTable and
UXNTable on kernel tables).

Linux's layout (``arch/arm64/include/asm/memory.h``, 6.1; the "flipped" layout since 5.4):
``PAGE_OFFSET = -(1 << VA_BITS)`` starts the linear map, which ends at
``PAGE_END = -(1 << (VA_BITS_MIN - 1))``; the modules region (128 MiB) follows and the kernel image
is linked at ``KIMAGE_VADDR = MODULES_END``.  Linear addresses translate as
``PA = (VA & ~PAGE_OFFSET) + PHYS_OFFSET`` and image addresses as ``PA = VA - kimage_voffset``.
KASLR (``arch/arm64/kernel/pi/kaslr_early.c``, ``head.S``) moves the image by a multiple of 2 MiB
in ``[2 ** (VA_BITS_MIN - 3), 2 ** (VA_BITS_MIN - 3) + 2 ** (VA_BITS_MIN - 2))``, keeping
``VA(_text) = PA(_text) (mod 2 MiB)``, so ``kimage_voffset`` is a multiple of 2 MiB.  Since 5.11
(commit e2a073dde921 "arm64: omit [_text, _stext) from permanent kernel mapping") the first 64 KiB
of the image, which hold the Image header, are not mapped: the lowest image mapping is ``_stext``.
"""

from __future__ import annotations

# -- granules and descriptors (Arm ARM D8) ---------------------------------------------------------
PAGE_SHIFTS = (12, 14, 16)  # 4, 16 and 64 KiB granules
PAGE_SIZES = tuple(1 << s for s in PAGE_SHIFTS)
#: ``TCR_EL1.TG1`` (bits [31:30]) -> page shift
TG1_SHIFTS = {0b01: 14, 0b10: 12, 0b11: 16}
TCR_T1SZ_SHIFT = 16
TCR_T1SZ_MASK = 0x3F
TCR_TG1_SHIFT = 30
SCTLR_M = 1 << 0  # SCTLR_EL1.M: stage-1 translation on
SCTLR_EE = 1 << 25  # SCTLR_EL1.EE: EL1 data accesses (and translation-table walks) big-endian
SCTLR_E0E = 1 << 24  # SCTLR_EL1.E0E: EL0 data accesses big-endian
DESC_VALID = 0b01
DESC_TABLE = 0b11  # a table, or a page at the last level
DESC_TYPE_MASK = 0b11
OA_MASK_48 = 0x0000_FFFF_FFFF_F000  # output address bits [47:12] before the granule's low bits go
#: TTBR1_EL1: ASID in bits [63:48], CnP in bit 0; the base address is what remains
TTBR_BADDR_MASK = 0x0000_FFFF_FFFF_FFFE
#: VA sizes a kernel can be built with (``CONFIG_ARM64_VA_BITS``) and what each granule allows
VA_BITS_CHOICES = {12: (39, 48, 52), 14: (36, 47, 48, 52), 16: (42, 48, 52)}
MIN_KIMG_ALIGN = 0x200000  # arch/arm64/include/asm/boot.h: KASLR and kimage_voffset granularity
SEGMENT_ALIGN = 0x10000  # _stext - _text since 5.8 (TEXT_OFFSET 0)
MODULES_VSIZE = 128 << 20  # 6.1; KIMAGE_VADDR = MODULES_END = PAGE_END + MODULES_VSIZE
#: "ARM\x64" at offset 0x38 of the Image header (Documentation/arm64/booting.rst), little-endian
IMAGE_MAGIC = b"ARM\x64"
IMAGE_MAGIC_OFFSET = 0x38
#: where QEMU's ``virt`` machine loads an ``-kernel`` Image of a kernel >= 5.8 (hw/arm/boot.c
#: ``load_aarch64_image``: RAM base + 2 MiB when ``text_offset`` is 0)
VIRT_IMAGE_LOAD = 0x40200000

# -- PSTATE (NT_PRSTATUS pstate, QEMU's ``cpsr``) --------------------------------------------------
PSTATE_EL_SHIFT = 2
PSTATE_EL_MASK = 0b11
PSTATE_NRW = 1 << 4  # set: AArch32 state


def va_bits_min(va_bits: int) -> int:
    """``VA_BITS_MIN``: 48 for 52-bit kernels (which must boot on 48-bit hardware), else ``va_bits``."""
    return 48 if va_bits > 48 else va_bits


def page_offset(va_bits: int) -> int:
    """``PAGE_OFFSET``: the start of the linear map (``-(1 << va_bits)`` as a 64-bit address)."""
    return (1 << 64) - (1 << va_bits)


def page_end(va_bits: int) -> int:
    """``PAGE_END``: the end of the linear map, ``-(1 << (VA_BITS_MIN - 1))``."""
    return (1 << 64) - (1 << (va_bits_min(va_bits) - 1))


def kimage_vaddr(va_bits: int) -> int:
    """``KIMAGE_VADDR`` (= ``MODULES_END``): the link address of ``_text`` (6.1 layout)."""
    return page_end(va_bits) + MODULES_VSIZE


def kaslr_window(va_bits: int) -> tuple[int, int]:
    """``[lowest, highest)`` of ``_text`` under KASLR: ``KIMAGE_VADDR`` plus
    ``BIT(VA_BITS_MIN - 3)`` .. ``+ BIT(VA_BITS_MIN - 2)`` (``kaslr_early_init``)."""
    low = kimage_vaddr(va_bits) + (1 << (va_bits_min(va_bits) - 3))
    return low, low + (1 << (va_bits_min(va_bits) - 2))


STRUCT_PAGE_MAX_SHIFT = 6  # sizeof(struct page) <= 64


def vmemmap_start(va_bits: int, page_shift: int) -> int:
    """``VMEMMAP_START = -(1 << (VA_BITS - VMEMMAP_SHIFT))`` (6.1)."""
    return (1 << 64) - (1 << (va_bits - (page_shift - STRUCT_PAGE_MAX_SHIFT)))


def vmemmap(va_bits: int, page_shift: int, phys_offset: int, struct_page_size: int) -> int:
    """The kernel's ``vmemmap``, the ``struct page`` of PFN 0: ``(struct page *)VMEMMAP_START -
    (memstart_addr >> PAGE_SHIFT)`` (``arch/arm64/include/asm/memory.h``, 6.1); ``memstart_addr``
    (``PHYS_OFFSET``) is an ``s64``, negative when KASLR moves the linear map."""
    memstart = phys_offset - (1 << 64) if phys_offset >> 63 else phys_offset
    base = vmemmap_start(va_bits, page_shift) - (memstart >> page_shift) * struct_page_size
    return base & ((1 << 64) - 1)


def vmemmap_end(va_bits: int, page_shift: int) -> int:
    """``VMEMMAP_START + VMEMMAP_SIZE``, the size covering the linear map's ``struct page``s."""
    size = (page_end(va_bits) - page_offset(va_bits)) >> (page_shift - STRUCT_PAGE_MAX_SHIFT)
    return vmemmap_start(va_bits, page_shift) + size


def vmalloc_end(va_bits: int, page_shift: int) -> int:
    """``VMALLOC_END = VMEMMAP_START - SZ_256M`` (6.1; ``VMALLOC_START`` is ``MODULES_END``)."""
    return vmemmap_start(va_bits, page_shift) - (256 << 20)


#: the 48-bit layout Debian (and most distributions) build: 4 KiB pages, CONFIG_ARM64_VA_BITS=48
DEFAULT_VA_BITS = 48
KIMAGE_VADDR = kimage_vaddr(DEFAULT_VA_BITS)  # 0xffff800008000000
PAGE_OFFSET = page_offset(DEFAULT_VA_BITS)  # 0xffff000000000000

# -- the VMCOREINFO (arch/arm64/kernel/crash_core.c; vmcore_info.c since 6.9) ---------------------
VMCOREINFO_KEYS = ("NUMBER(VA_BITS)", "NUMBER(kimage_voffset)", "NUMBER(PHYS_OFFSET)", "NUMBER(TCR_EL1_T1SZ)",
                   "KERNELOFFSET", "NUMBER(KERNELPACMASK)")
#: written by arm64 kernels only
VMCOREINFO_MARKERS = ("NUMBER(kimage_voffset)", "NUMBER(PHYS_OFFSET)")
#: what crash, drgn and makedumpfile place an arm64 kernel with
KASLR_KEYS = ("KERNELOFFSET", "NUMBER(kimage_voffset)", "NUMBER(PHYS_OFFSET)", "NUMBER(VA_BITS)")
#: what arm64 calls phys_base (QEMU's ``vmcoreinfo_update_phys_base``, makedumpfile, crash)
PHYS_BASE_KEY = "PHYS_OFFSET"

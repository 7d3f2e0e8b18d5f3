"""x86_64 facts, each written once: paging bits (Intel SDM vol. 3 ch. 4) and Linux's memory layout.

Kernel layout (``arch/x86/include/asm/page_64_types.h``, ``pgtable_64_types.h``, Linux 6.1): the
kernel image is mapped at ``__START_KERNEL_map`` with ``phys(v) = v - __START_KERNEL_map +
phys_base``; the window is ``KERNEL_IMAGE_SIZE`` (1 GiB with KASLR); ``_text`` is linked at
``__START_KERNEL_map + CONFIG_PHYSICAL_START`` and KASLR moves it by multiples of
``CONFIG_PHYSICAL_ALIGN``.  The direct map starts at ``__PAGE_OFFSET_BASE_L4``/``_L5`` unless
``CONFIG_RANDOMIZE_MEMORY`` moves it (the VMCOREINFO does not say where; translation never needs it).
"""

from __future__ import annotations

# -- Linux's x86_64 memory layout ----------------------------------------------------------------
START_KERNEL_MAP = 0xFFFFFFFF80000000  # __START_KERNEL_map
KERNEL_IMAGE_SIZE = 1 << 30  # with CONFIG_RANDOMIZE_BASE (512 MiB without)
KTEXT_END = START_KERNEL_MAP + KERNEL_IMAGE_SIZE  # modules start here with KASLR
PHYSICAL_START = 0x1000000  # CONFIG_PHYSICAL_START: where _text is linked to run physically
PHYSICAL_ALIGN = 0x200000  # CONFIG_PHYSICAL_ALIGN: KASLR offsets are multiples of it
DEFAULT_TEXT = START_KERNEL_MAP + PHYSICAL_START  # link address of _text (0xffffffff81000000)
PAGE_OFFSET_L4 = 0xFFFF888000000000  # __PAGE_OFFSET_BASE_L4: the direct map, 4-level paging
PAGE_OFFSET_L5 = 0xFF11000000000000  # __PAGE_OFFSET_BASE_L5: the direct map, 5-level paging
#: where CONFIG_RANDOMIZE_MEMORY may put the direct map (Documentation/arch/x86/x86_64/mm.rst:
#: the guard hole ends at 0xffff880000000000, vmalloc starts 64 TiB below 0xffffc90000000000)
DIRECT_MAP_WINDOW_L4 = (0xFFFF880000000000, 0xFFFFC88000000000)
DIRECT_MAP_WINDOW_L5 = (0xFF10000000000000, 0xFFA0000000000000)
SECTION_SIZE_BITS = 27  # arch/x86/include/asm/sparsemem.h (x86_64)
MAX_PHYSMEM_BITS_L4 = 46
MAX_PHYSMEM_BITS_L5 = 52
CPU_ENTRY_AREA = 0xFFFFFE0000000000  # CPU_ENTRY_AREA_BASE (4-level); its first page is the RO IDT

# -- paging (Intel SDM vol. 3 ch. 4) -----------------------------------------------------------------
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PTRS_PER_TABLE = 512
PTE_PRESENT = 1 << 0
PTE_RW = 1 << 1
PTE_USER = 1 << 2
PTE_PS = 1 << 7  # a PDPT entry maps 1 GiB, a PD entry 2 MiB
PTE_GLOBAL = 1 << 8
PTE_NX = 1 << 63
ADDR_MASK = 0x000F_FFFF_FFFF_F000  # bits 12..51
CR0_PE = 1 << 0
CR0_PG = 1 << 31
CR4_PAE = 1 << 5
CR4_PGE = 1 << 7
CR4_LA57 = 1 << 12
PTI_USER_PGD = 1 << 12  # the PTI user PGD is the odd page of an 8 KiB-aligned pair
KERNEL_HALF = slice(PAGE_SIZE // 2, PAGE_SIZE)  # PGD entries 256..511, shared by every process

# -- the VMCOREINFO (arch/x86/kernel/vmcore_info_64.c, crash_core_64.c before 6.9) ---------------
VMCOREINFO_KEYS = ("NUMBER(phys_base)", "SYMBOL(init_top_pgt)", "NUMBER(pgtable_l5_enabled)",
                   "KERNELOFFSET", "NUMBER(KERNEL_IMAGE_SIZE)", "NUMBER(sme_mask)")
#: written by x86_64 kernels only
VMCOREINFO_MARKERS = ("NUMBER(phys_base)", "NUMBER(pgtable_l5_enabled)")
#: the kernel's top-level table, newest name first (init_level4_pgt before 4.13)
ROOT_SYMBOLS = ("init_top_pgt", "swapper_pg_dir", "init_level4_pgt")

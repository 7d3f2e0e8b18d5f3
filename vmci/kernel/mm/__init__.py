"""Linux memory management from the VMCOREINFO alone: where ``struct page`` lives and what each
page is, as makedumpfile decides it for its dump levels.

Three layers, drgn-helpers style:

* :class:`PageLayout`: ``struct page`` and the page flags as the text describes them
  (``SIZE(page)``, ``OFFSET(page.*)``, ``NUMBER(PG_*)``, the ``*_MAPCOUNT_VALUE`` numbers), with
  each rule gated by the presence of its key, as makedumpfile gates it, so one reader serves
  4.19 to 6.12 layouts (the compound order and destructor in the first tail page before 6.3,
  ``folio._folio_order`` in 6.3-6.5, ``PG_hugetlb`` and ``_flags_1`` from 6.6,
  ``PAGE_HUGETLB_MAPCOUNT_VALUE`` from 6.9, ``PAGE_SLAB_MAPCOUNT_VALUE`` instead of ``PG_slab``
  from 6.10, the ``PGTY_*`` page types of 6.12).
* :func:`mem_map_sections`: the ``struct page`` arrays (``mem_map``) per SPARSEMEM section
  (SPARSEMEM, SPARSEMEM_EXTREME with the root array or a pointer to it, SPARSEMEM_VMEMMAP, whose
  encoded ``section_mem_map`` is the same formula) or the one FLATMEM array: makedumpfile's
  ``get_mm_sparsemem``/``validate_mem_section``/``nr_to_section``/``section_mem_map_addr``/
  ``sparse_decode_mem_map`` in ``makedumpfile.c``.
* :func:`scan_pages`: every ``struct page`` read in chunks through the kernel's page tables and
  classified with numpy, whole arrays at a time, into a :class:`~vmci.formats.kdump.bitmap.PfnBitmap`
  of excluded PFNs (64 M PFNs cost 8 MiB).  The rules and their order are those of makedumpfile's
  ``__exclude_unnecessary_pages`` (with ``page_is_buddy_v3``, ``is_cache_page``, ``isAnon``,
  ``isSlab``, ``isHugetlb``, ``isOffline``, ``isHWPOISON``): compound tails are skipped, a free
  buddy block excludes ``1 << page.private`` pages, any other match ``1 << compound_order``
  (a whole THP or hugetlb folio), and pages inside a block already excluded are not looked at.

Zero pages (dump level 1) are decided by content while pages are copied, not here.
"""

from __future__ import annotations

from vmci.kernel.mm.classify import classify, reached_blocks
from vmci.kernel.mm.layout import MAX_LEVEL, PGMM_CACHED, DumpLevel, PageClass, PageLayout
from vmci.kernel.mm.model import MemMap, MemoryModel, memory_model
from vmci.kernel.mm.scan import PageScan, scan_pages

__all__ = ["MAX_LEVEL", "PGMM_CACHED", "DumpLevel", "MemMap", "MemoryModel", "PageClass", "PageLayout",
           "PageScan", "classify", "memory_model", "reached_blocks", "scan_pages"]

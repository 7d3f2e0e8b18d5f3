"""``struct page`` and the page flags as the VMCOREINFO describes them (:class:`PageLayout`), the
classes of pages makedumpfile excludes and its dump levels."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntFlag
from typing import TYPE_CHECKING

from vmci.errors import NotFoundError

if TYPE_CHECKING:

    from vmci.kernel.vmcoreinfo import VmcoreInfo



class DumpLevel(IntFlag):
    """makedumpfile's dump-level bits (``DL_EXCLUDE_*`` in ``makedumpfile.h``)."""

    ZERO = 1
    """Pages filled with zeros (decided by content)."""
    CACHE = 2
    """Page-cache pages without private data (``PG_private`` clear)."""
    CACHE_PRIVATE = 4
    """Every page-cache page, private data or not."""
    USER = 8
    """Anonymous (user process) pages and hugetlbfs pages."""
    FREE = 16
    """Free pages of the buddy allocator."""


MAX_LEVEL = 31

#: makedumpfile reads ``struct page`` in blocks of this many PFNs (``PGMM_CACHED``); a compound
#: head in a block's last slot is not recognised (its first tail page is in the next block).
PGMM_CACHED = 512

_RELEASE = re.compile(r"(\d+)\.(\d+)")


class PageClass(IntFlag):
    """Why a page is excluded: the dump-level classes, plus the two makedumpfile always drops."""

    CACHE = 2
    CACHE_PRIVATE = 4
    USER = 8
    FREE = 16
    HWPOISON = 32
    """``PG_hwpoison`` set: the memory failed; reading it may fault."""
    OFFLINE = 64
    """Logically offline (``PageOffline``: ballooned out, unplugged)."""


@dataclass(frozen=True)
class PageLayout:
    """``struct page`` and the page flags, from the VMCOREINFO.

    Offsets are bytes into one ``struct page``; ``order_at``/``dtor_at`` are offsets into the
    *first tail page* (the next ``struct page``) with their widths; ``None`` means the text lacks
    the key, which turns the rule that needs it off (as makedumpfile's ``NOT_FOUND_*`` does).
    """

    size: int
    flags_at: int
    mapping_at: int
    mapcount_at: int | None
    private_at: int | None
    compound_head_at: int | None
    order_at: int | None
    order_width: int
    dtor_at: int | None
    dtor_width: int
    pg_lru: int | None
    pg_private: int | None
    pg_swapcache: int | None
    pg_swapbacked: int | None
    pg_slab: int | None
    pg_hwpoison: int | None
    pg_head_mask: int | None
    pg_hugetlb: int | None
    buddy_mapcount: int | None
    offline_mapcount: int | None
    slab_mapcount: int | None
    hugetlb_mapcount: int | None
    unaccepted_mapcount: int | None
    hugetlb_dtor: int | None
    max_order: int | None
    """``LENGTH(zone.free_area)``: a buddy order at or above it is corrupt."""
    pointer_size: int = 8
    byteorder: str = "little"
    release: tuple[int, int] | None = None

    @classmethod
    def from_vmcoreinfo(cls, text: VmcoreInfo, *, pointer_size: int = 8,
                        byteorder: str = "little") -> PageLayout:
        """The layout the text describes; raises :class:`~vmci.errors.NotFoundError` when it lacks
        the keys every rule needs (``SIZE(page)``, ``OFFSET(page.flags)``, ``OFFSET(page.mapping)``,
        as makedumpfile's ``get_mem_type`` requires with ``OFFSET(page._refcount)``)."""
        size = text.size("page")
        flags_at = text.offset("page", "flags")
        mapping_at = text.offset("page", "mapping")
        missing = [k for k, v in (("SIZE(page)", size), ("OFFSET(page.flags)", flags_at),
                                  ("OFFSET(page.mapping)", mapping_at)) if v is None]
        if missing:
            raise NotFoundError(f"the VMCOREINFO does not describe struct page (no {', '.join(missing)})")
        assert size is not None and flags_at is not None and mapping_at is not None
        m = _RELEASE.match(text.osrelease or "")
        release = (int(m.group(1)), int(m.group(2))) if m else None
        old = release is not None and release < (4, 16)  # makedumpfile: u16 order and dtor before 4.16
        # init_compound_offset(): folio._folio_order (6.3+) is an offset into the folio, i.e. past
        # the head page; page.compound_order (4.4-6.2) is already the tail page's field
        def tail_field(folio_member: str, page_member: str, lru_link: str) -> int | None:
            at = text.offset("folio", folio_member)
            if at is not None:
                return at - size
            at = text.offset("page", page_member)
            if at is not None:
                return at
            if release is not None and release < (4, 4):  # kept in the first tail page's lru
                lru, link = text.offset("page", "lru"), text.offset("list_head", lru_link)
                return lru + link if lru is not None and link is not None else None
            return None

        order_at = tail_field("_folio_order", "compound_order", "prev")
        dtor_at = tail_field("_folio_dtor", "compound_dtor", "next")
        dtor_width = 1 if not old else (2 if release is not None and release >= (4, 4) else pointer_size)
        return cls(
            size=size, flags_at=flags_at, mapping_at=mapping_at,
            mapcount_at=text.offset("page", "_mapcount"), private_at=text.offset("page", "private"),
            compound_head_at=text.offset("page", "compound_head"),
            order_at=order_at or None, order_width=2 if old else 1,
            dtor_at=dtor_at or None, dtor_width=dtor_width,
            pg_lru=text.number("PG_lru"), pg_private=text.number("PG_private"),
            pg_swapcache=text.number("PG_swapcache"), pg_swapbacked=text.number("PG_swapbacked"),
            pg_slab=text.number("PG_slab"), pg_hwpoison=text.number("PG_hwpoison"),
            pg_head_mask=text.number("PG_head_mask"), pg_hugetlb=text.number("PG_hugetlb"),
            buddy_mapcount=text.number("PAGE_BUDDY_MAPCOUNT_VALUE"),
            offline_mapcount=text.number("PAGE_OFFLINE_MAPCOUNT_VALUE"),
            slab_mapcount=text.number("PAGE_SLAB_MAPCOUNT_VALUE"),
            hugetlb_mapcount=text.number("PAGE_HUGETLB_MAPCOUNT_VALUE"),
            unaccepted_mapcount=text.number("PAGE_UNACCEPTED_MAPCOUNT_VALUE"),
            hugetlb_dtor=text.number("HUGETLB_PAGE_DTOR"), max_order=text.length("zone.free_area"),
            pointer_size=pointer_size, byteorder=byteorder, release=release,
        )

    @property
    def finds_buddies(self) -> bool:
        """Free pages can be told from ``struct page`` (makedumpfile's ``setup_page_is_buddy``
        picks ``page_is_buddy_v3``); otherwise it walks the zones' free lists, which vmci does not."""
        return None not in (self.private_at, self.mapcount_at, self.buddy_mapcount)

    def scans(self, level: int) -> bool:
        """Whether makedumpfile reads ``struct page`` at ``level`` (``create_2nd_bitmap``): for the
        cache and user classes, for free pages it can identify, and whenever ``PG_hwpoison`` is
        known (hardware-poisoned and offline pages are dropped at every level)."""
        return bool(level & (DumpLevel.CACHE | DumpLevel.CACHE_PRIVATE | DumpLevel.USER)
                    or self.pg_hwpoison is not None or (level & DumpLevel.FREE and self.finds_buddies))

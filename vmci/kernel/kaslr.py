"""The KASLR answer for a dump: ``KERNELOFFSET`` and ``phys_base``, each with how it was obtained.

Two independent sources are compared: the VMCOREINFO text (``KERNELOFFSET``, ``NUMBER(phys_base)``)
and the vCPUs' page tables (the architecture's :meth:`vmci.arch.Arch.kaslr_from_page_tables`).  The
verdict says whether they agree.  The result is then checked by reading through it
(:class:`vmci.kernel.vmem.KernelMemory`): the kernel banner, the ``init_uts_ns`` release,
``swapper_pg_dir`` against the vCPU's table and, with a System.map or vmlinux, the exact symbol
addresses (``_text``/``_stext``, ``linux_banner``, the GNU build ID).  Nothing here names an
architecture; the image searches are in :mod:`vmci.kernel.image`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from vmci.arch import PageTableKaslr, lookup, supporting
from vmci.core.dump import Dump
from vmci.core.evidence import Evidence
from vmci.core.memory import PhysicalMemory
from vmci.core.numbers import signed_hex
from vmci.errors import VmciError
from vmci.kernel.image import (
    UTS_FIELD,
    UTS_RELEASE_OFFSET,
    banner_release,
    find_banner,
    find_build_id,
    find_swapper_pg_dir,
    find_utsname,
    kernel_half,
    uts_release,
    va_of,
)
from vmci.kernel.symbols import BANNER, KernelSymbols
from vmci.kernel.vmcoreinfo import VmcoreInfo, is_synthesized
from vmci.kernel.vmem import KernelMemory

#: ``kdump-capture`` is given above this layer (:mod:`vmci.analysis.kaslr`): the text is a crashed
#: kernel's and the page tables another kernel's, found in RAM too.
VERDICTS = ("agree", "conflict", "vmcoreinfo-only", "page-tables-only", "none", "kdump-capture")


@dataclass
class KaslrReport:
    """The comparison of the VMCOREINFO's KASLR values with the page tables', corroborated: the
    ``kaslr`` object of ``vmci kaslr`` / ``vmci analyze --json`` when a vCPU had paging on.

    ``verdict`` is one of :data:`VERDICTS`; ``result`` the page-table answer (None when there was
    none: ``page_tables_error`` says why); ``corroboration`` maps a check (``idt``, ``banner``,
    ``uts_release``, ``swapper_pg_dir``) to what it found, with ``ok``.
    """

    kerneloffset: int | None = None
    phys_base: int | None = None
    method: str | None = None
    verdict: str = "none"
    vmcoreinfo: dict[str, Any] | None = None
    page_tables_error: str | None = None
    symbols: dict[str, Any] | None = None
    corroboration: dict[str, Any] = field(default_factory=dict)
    evidence: Evidence = field(default_factory=Evidence)
    warnings: list[str] = field(default_factory=list)
    result: PageTableKaslr | None = field(default=None, repr=False)

    @property
    def page_tables(self) -> dict[str, Any] | None:
        """The page-table answer as the JSON shows it."""
        return None if self.result is None else page_tables_dict(self.result)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kerneloffset": self.kerneloffset, "phys_base": self.phys_base, "method": self.method,
            "verdict": self.verdict, "vmcoreinfo": self.vmcoreinfo, "page_tables": self.page_tables,
            "page_tables_error": self.page_tables_error, "symbols": self.symbols,
            "corroboration": self.corroboration, "evidence": self.evidence.to_dict(),
            "warnings": list(self.warnings),
        }


def page_tables_dict(r: PageTableKaslr) -> dict[str, Any]:
    """The ``page_tables`` object of the ``kaslr`` JSON (schema 1); for an architecture other than
    x86_64 also ``va_bits`` and ``page_size`` of the tables, and each vCPU's kernel ``pc``."""
    if r.tables.arch != "x86_64":
        out = _page_tables_dict(r)
        out.update(va_bits=r.tables.va_bits, page_size=r.tables.page_size)
        for c, d in zip(r.cpus, out["cpus"], strict=True):
            d.update(pc=c.pc, pc_in_text=c.pc_in_text)
        return out
    return _page_tables_dict(r)


def _page_tables_dict(r: PageTableKaslr) -> dict[str, Any]:
    return {
        "kerneloffset": r.kerneloffset, "phys_base": r.phys_base, "method": r.method, "text_va": r.text_va,
        "text_pa": r.text_pa, "text_end": r.text_end, "la57": r.la57, "root": r.root, "vcpus_agree": r.agree,
        "text_link": r.text_link, "text_link_source": r.text_link_source,
        "cpus": [{"cpu": c.cpu, "cr3": c.cr3, "root": c.root, "kerneloffset": c.kerneloffset,
                  "phys_base": c.phys_base, "idt_handler": c.idt_handler,
                  "idt_handler_in_text": c.idt_handler_in_text, "skipped": c.skipped} for c in r.cpus],
        "warnings": list(r.warnings),
    }


def kaslr_report(
    dump: Dump,
    *,
    vmcoreinfo: VmcoreInfo | None = None,
    vmcoreinfo_source: str | None = None,
    symbols: KernelSymbols | None = None,
    mask: int | None = None,
    deep: bool = False,
) -> KaslrReport:
    """Compare the VMCOREINFO's KASLR values (if a text is given) with the page tables' and corroborate.

    ``mask`` is the SME mask (default: ``NUMBER(sme_mask)`` of the text, else 0).  ``deep`` also
    searches the image for ``init_uts_ns`` and ``swapper_pg_dir`` when no address is known.
    """
    rep = KaslrReport()
    ev = rep.evidence
    vi = vmcoreinfo
    if mask is None:
        mask = (vi.number("sme_mask") if vi is not None else None) or 0
    v_off = v_pb = None
    pb = None
    if vi is not None:
        v_off = _safe(lambda: vi.kerneloffset)
        pb = _safe(lambda: vi.phys_base)
        if pb is not None and not pb.legacy_symbol:
            v_pb = pb.value
        rep.vmcoreinfo = {"source": vmcoreinfo_source, "kerneloffset": v_off, "phys_base": v_pb,
                          "phys_base_symbol": pb.value if pb is not None and pb.legacy_symbol else None,
                          "osrelease": vi.osrelease, "synthesized": is_synthesized(vi)}
        ev.info("vmcoreinfo", f"{vmcoreinfo_source or 'given'}: KERNELOFFSET "
                + ("absent" if v_off is None else f"{v_off:#x}")
                + ", phys_base " + ("absent" if v_pb is None else signed_hex(v_pb)))
    res: PageTableKaslr | None = None
    arch = lookup(dump.arch)
    if arch is None or not arch.finds_kaslr:
        able = ", ".join(supporting("finds_kaslr"))
        rep.page_tables_error = f"page-table KASLR discovery supports {able}, not {dump.arch}"
    elif not dump.cpus:
        rep.page_tables_error = "the dump has no vCPU state (no QEMU/PRSTATUS notes)"
    else:
        try:
            res = arch.kaslr_from_page_tables(dump.memory, dump.cpus, mask=mask,
                                              system_map=symbols.symbols if symbols else None)
        except VmciError as e:
            rep.page_tables_error = str(e)
    if rep.page_tables_error:
        ev.warn("page-tables", rep.page_tables_error)
    if res is not None:
        rep.result = res
        ev.ok("page-tables", f"_text mapped at {res.text_va:#x} -> {res.text_pa:#x} ({res.method}, "
              f"{sum(c.kerneloffset is not None for c in res.cpus)}/{len(res.cpus)} vCPUs"
              + (", agree)" if res.agree else ", DISAGREE)") + f": KERNELOFFSET {res.kerneloffset:#x}, "
              f"phys_base {signed_hex(res.phys_base)}", res.text_pa)
        rep.warnings += res.warnings
        if v_pb is None and vi is not None and pb is not None and pb.legacy_symbol:
            v_pb = _read_legacy_phys_base(KernelMemory(dump.memory, res.tables, byteorder=dump.byte_order),
                                          pb.value, ev)
            rep.vmcoreinfo = dict(rep.vmcoreinfo or {}, phys_base=v_pb)
    decide(rep, res, v_off, v_pb)
    if res is not None:
        _corroborate(rep, dump.memory, res, vi, symbols, deep)
    return rep


def _safe(fn: Any) -> Any:
    try:
        return fn()
    except VmciError:
        return None


def _read_legacy_phys_base(kmem: KernelMemory, addr: int, ev: Evidence) -> int | None:
    try:
        value = kmem.read_int(addr, kmem.pointer_size, signed=True)
    except VmciError as e:
        ev.warn("phys_base", f"SYMBOL(phys_base)={addr:#x} (kernel < 4.10) unreadable: {e}")
        return None
    ev.ok("phys_base", f"read the variable at SYMBOL(phys_base)={addr:#x}: {signed_hex(value)}")
    return value


def decide(rep: KaslrReport, res: PageTableKaslr | None, v_off: int | None, v_pb: int | None) -> None:
    """Set ``rep``'s answer, method and verdict from the text's values (``v_off``, ``v_pb``; None
    when absent) and the page tables' ``res``: the text wins where it speaks, loudly on conflict."""
    ev = rep.evidence
    have_v = v_off is not None or v_pb is not None
    if res is None:
        rep.kerneloffset, rep.phys_base = v_off, v_pb
        rep.method = "vmcoreinfo" if have_v else None
        rep.verdict = "vmcoreinfo-only" if have_v else "none"
        return
    if not have_v:
        rep.kerneloffset, rep.phys_base, rep.method = res.kerneloffset, res.phys_base, res.method
        rep.verdict = "page-tables-only"
        ev.info("verdict", f"no VMCOREINFO values: KASLR from the {res.method} alone")
        return
    diffs = [f"{name}: VMCOREINFO {signed_hex(v)} vs page tables {signed_hex(p)}"
             for name, v, p in (("KERNELOFFSET", v_off, res.kerneloffset), ("phys_base", v_pb, res.phys_base))
             if v is not None and v != p]
    rep.kerneloffset = v_off if v_off is not None else res.kerneloffset
    rep.phys_base = v_pb if v_pb is not None else res.phys_base
    rep.method = "vmcoreinfo" if v_off is not None and v_pb is not None else f"vmcoreinfo+{res.method}"
    if diffs:
        rep.verdict = "conflict"
        msg = "VMCOREINFO and page tables disagree: " + "; ".join(diffs)
        rep.warnings.append(msg)
        ev.fail("verdict", msg)
    else:
        rep.verdict = "agree"
        missing = [n for n, v in (("KERNELOFFSET", v_off), ("NUMBER(phys_base)", v_pb)) if v is None]
        ev.ok("verdict", "VMCOREINFO and page tables agree"
              + (f" (the text lacks {', '.join(missing)}; taken from the page tables)" if missing else ""))


def _corroborate(rep: KaslrReport, memory: PhysicalMemory, res: PageTableKaslr, vi: VmcoreInfo | None,
                 symbols: KernelSymbols | None, deep: bool) -> None:
    ev, co = rep.evidence, rep.corroboration
    koff = rep.kerneloffset if rep.kerneloffset is not None else res.kerneloffset
    kmem = KernelMemory(memory, res.tables)

    def read(va: int, n: int) -> bytes | None:
        try:
            return kmem.read(va, n)
        except VmciError:
            return None

    handlers = [c for c in res.cpus if c.idt_handler is not None]
    if handlers:
        inside = all(c.idt_handler_in_text for c in handlers)
        co["idt"] = {"ok": inside, "cpus": len(handlers)}
        (ev.ok if inside else ev.warn)("idt", f"IDT gate 0 handler of {len(handlers)} vCPU(s) "
                                       + ("inside" if inside else "OUTSIDE") + " the kernel text")
    # the banner: at linux_banner when known, else found in the image
    banner_at = symbols.symbols.get("linux_banner") if symbols else None
    line: bytes | None = None
    if banner_at is not None:
        raw = read(banner_at + koff, 256)
        line = raw.split(b"\0", 1)[0].split(b"\n", 1)[0] if raw else None
        ok = bool(line and line.startswith(BANNER))
        if symbols is not None and symbols.banner is not None and line is not None:
            ok = ok and symbols.banner.split(b"\n", 1)[0] == line
        co["banner"] = {"va": banner_at + koff, "how": "linux_banner", "ok": ok,
                        "release": banner_release(line or b"")}
        (ev.ok if ok else ev.fail)("banner", f"linux_banner at {banner_at + koff:#x} "
                                   + (f"reads {line[:60]!r}" if line else "is unreadable"))
    else:
        hit = find_banner(memory, res)
        if hit is not None:
            line = hit[1]
            co["banner"] = {"va": va_of(res, hit[0]), "pa": hit[0], "how": "found in the image", "ok": True,
                            "release": banner_release(line)}
            ev.ok("banner", f"found in the kernel image at {va_of(res, hit[0]):#x}: {line[:60]!r}", hit[0])
        else:
            co["banner"] = {"ok": False, "how": "searched the image", "release": None}
            ev.warn("banner", "no 'Linux version' banner in the kernel image")
    release = co["banner"].get("release")
    # init_uts_ns.name.release
    uts = None
    uts_sym = vi.symbol("init_uts_ns") if vi is not None else None
    if vi is not None and uts_sym is not None:
        uts = uts_sym + (vi.offset("uts_namespace", "name") or 0)
        if is_synthesized(vi):
            uts = None  # our own guess, not evidence
    elif symbols is not None and "init_uts_ns" in symbols.symbols:
        uts = symbols.symbols["init_uts_ns"] + koff
    if uts is not None:
        raw = read(uts, 6 * UTS_FIELD)
        rel = uts_release(raw) if raw else None
        want = (vi.osrelease if vi is not None else None) or release
        ok = rel is not None and (want is None or rel == want)
        co["uts_release"] = {"va": uts, "release": rel, "ok": ok}
        (ev.ok if ok else ev.fail)("init_uts_ns", f"release at {uts + UTS_RELEASE_OFFSET:#x} reads {rel!r}"
                                   + (f", expected {want!r}" if not ok and want else ""))
    elif deep and release:
        pa = find_utsname(memory, res, release)
        co["uts_release"] = {"va": None if pa is None else va_of(res, pa), "release": release if pa else None,
                             "ok": pa is not None, "how": "found in the image"}
        (ev.ok if pa is not None else ev.warn)(
            "init_uts_ns", f"a new_utsname with release {release!r} " + ("found" if pa else "not found")
            + " in the kernel image", pa)
    # swapper_pg_dir: its kernel half equals the one the vCPUs' tables hold (x86: CR3's)
    want_half = kernel_half(memory, res.tables)
    spd_va = vi.symbol("swapper_pg_dir") if vi is not None else None
    if spd_va is None and symbols is not None:
        link = symbols.symbols.get("swapper_pg_dir", symbols.symbols.get("init_top_pgt"))
        spd_va = None if link is None else link + koff
    if spd_va is not None and want_half is not None:
        pa = kmem.arch.kernel_phys(spd_va, rep.phys_base if rep.phys_base is not None else res.phys_base)
        if pa is None:  # an image not placed by phys_base (arm64: kimage_voffset, else the tables' run)
            off = kmem.arch.image_offset(vi) if vi is not None else None
            off = (res.text_va - res.text_pa) if off is None else off
            pa = (spd_va - off) & ((1 << 64) - 1)
        ok = pa is not None and kernel_half(memory, replace(res.tables, root=pa)) == want_half
        co["swapper_pg_dir"] = {"va": spd_va, "pa": pa, "ok": ok}
        shown = signed_hex(pa, none="?")
        (ev.ok if ok else ev.fail)("swapper_pg_dir", f"{spd_va:#x} -> {shown}: kernel half "
                                   + ("equals" if ok else "DIFFERS from") + f" {kmem.arch.tables_in_use}", pa)
    elif deep:
        pa = find_swapper_pg_dir(memory, res)
        co["swapper_pg_dir"] = {"va": None if pa is None else va_of(res, pa), "pa": pa, "ok": pa is not None,
                                "how": "found in the image"}
        (ev.ok if pa is not None else ev.warn)(
            "swapper_pg_dir", f"image page sharing {kmem.arch.tables_in_use} kernel half "
            + ("found" if pa else "not found"), pa)
    # symbols: exact addresses
    if symbols is not None:
        link = symbols.text
        sy: dict[str, Any] = {"source": symbols.source, "text_link": link}
        if link is not None:
            sy["_text"] = link + koff
            ok = link + koff == res.text_va
            sy["text_matches_page_tables"] = ok
            (ev.ok if ok else ev.fail)("symbols", f"{symbols.source}: _text {link:#x} + {koff:#x} = "
                                       f"{link + koff:#x}, page tables map _text at {res.text_va:#x}")
        for name in ("_stext", "init_uts_ns", "swapper_pg_dir", "linux_banner"):
            if name in symbols.symbols:
                sy[name] = symbols.symbols[name] + koff
        if symbols.build_id:
            mem_id = find_build_id(memory, res)
            sy["build_id"] = symbols.build_id
            sy["build_id_in_memory"] = mem_id
            ok = mem_id == symbols.build_id
            (ev.ok if ok else ev.warn)("build-id", f"vmlinux {symbols.build_id}, kernel image in memory "
                                       f"{mem_id or 'not found'}")
        rep.symbols = sy
    for name, c in co.items():
        if not c.get("ok"):
            rep.warnings.append(f"corroboration failed: {name}")


__all__ = ["VERDICTS", "KaslrReport", "decide", "kaslr_report", "page_tables_dict"]

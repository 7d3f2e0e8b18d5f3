"""The KASLR answer for a dump: ``KERNELOFFSET`` and ``phys_base``, each with how it was obtained.

Two independent sources are compared: the VMCOREINFO text (``KERNELOFFSET``, ``NUMBER(phys_base)``)
and the vCPUs' page tables (:func:`vmci.arch.x86_64.paging.kaslr_from_page_tables`).  The verdict says
whether they agree.  The result is then checked by reading through it: the kernel banner, the
``init_uts_ns`` release, ``swapper_pg_dir`` against CR3 and, with a System.map or vmlinux, the
exact symbol addresses (``_text``/``_stext``, ``linux_banner``, the GNU build ID).

Kernel facts used: the image's GNU build-ID note lives in ``.notes`` (kept in memory),
``struct new_utsname`` is six 65-byte fields (sysname ``Linux``, release at +130), and every
process PGD copies the kernel half (entries 256..511) of ``swapper_pg_dir``.
"""

from __future__ import annotations

import re
import struct  # pyelftools raises struct.error on cut ELF files
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from vmci.arch.x86_64.paging import (
    START_KERNEL_MAP,
    KaslrResult,
    kaslr_from_page_tables,
    kernel_root,
    parse_system_map,
    read_virtual,
)
from vmci.core.dump import Dump
from vmci.core.evidence import Evidence
from vmci.core.memory import PhysicalMemory
from vmci.errors import FormatError, UsageError, VmciError
from vmci.kernel.vmcoreinfo import VmcoreInfo
from vmci.layouts.bzimage import BZIMAGE_HEADER_SIZE, BZIMAGE_MAGIC, bzimage_header
from vmci.layouts.note import note_header

BANNER = b"Linux version "
UTS_FIELD = 65  # __NEW_UTS_LEN + 1
UTS_RELEASE_OFFSET = 2 * UTS_FIELD
# the kernel image's .notes: an Elf note "GNU", type NT_GNU_BUILD_ID (3), 20-byte descriptor
GNU_BUILD_ID = note_header("little").build({"namesz": 4, "descsz": 20, "type": 3}) + b"GNU\0"
_RELEASE = re.compile(rb"[\x21-\x7e]{1,64}")
MB2 = 0x200000


# -- symbols: System.map, vmlinux or a bzImage ---------------------------------------------------


@dataclass
class KernelSymbols:
    """Link-time addresses of a kernel build (and its build ID when the file has one)."""

    source: str
    symbols: dict[str, int] = field(default_factory=dict)
    build_id: str | None = None
    banner: bytes | None = None  # the linux_banner bytes from a vmlinux, for an exact comparison

    @property
    def text(self) -> int | None:
        return self.symbols.get("_text", self.symbols.get("_stext"))


def _elf_symbols(data: bytes | BinaryIO, source: str) -> KernelSymbols:
    import io

    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import NoteSection, SymbolTableSection

    out = KernelSymbols(source)
    try:
        elf = ELFFile(io.BytesIO(data) if isinstance(data, bytes) else data)
        for sec in elf.iter_sections():
            if isinstance(sec, SymbolTableSection):
                for sym in sec.iter_symbols():
                    if sym.name and sym["st_value"]:
                        out.symbols.setdefault(sym.name, sym["st_value"])
            elif isinstance(sec, NoteSection):
                for note in sec.iter_notes():
                    if note["n_type"] == "NT_GNU_BUILD_ID":
                        out.build_id = note["n_desc"]
        loads = [s for s in elf.iter_segments()
                 if s["p_type"] == "PT_LOAD" and s["p_vaddr"] >= START_KERNEL_MAP]
        text = elf.get_section_by_name(".text")
        if "_text" not in out.symbols and (text is not None or loads):
            # a stripped vmlinux (as inside a bzImage): _text is where .text starts
            out.symbols["_text"] = text["sh_addr"] if text is not None else min(s["p_vaddr"] for s in loads)
        rodata = elf.get_section_by_name(".rodata")
        if rodata is not None:
            body = rodata.data()
            at = body.find(BANNER)
            if at >= 0:
                end = body.find(b"\0", at)
                out.banner = bytes(body[at:end if end > 0 else at + 256])
                out.symbols.setdefault("linux_banner", rodata["sh_addr"] + at)
    except (ELFError, ValueError, struct.error, KeyError) as e:
        raise FormatError(f"{source}: not a usable vmlinux ELF: {e}", field="vmlinux") from None
    return out


def _bzimage_payload(data: bytes, source: str) -> bytes:
    """The vmlinux ELF inside a bzImage (``payload_offset``/``payload_length`` of the setup header)."""
    import bz2
    import gzip
    import lzma

    if len(data) < BZIMAGE_HEADER_SIZE or data[0x202:0x206] != BZIMAGE_MAGIC:
        raise FormatError(f"{source}: not a bzImage (no HdrS)", field="header", offset=0x202)
    hdr = bzimage_header.parse(data[:BZIMAGE_HEADER_SIZE])
    off, length = hdr.payload_offset, hdr.payload_length
    start = (hdr.setup_sects or 4) * 512 + 512 + off
    payload = data[start:start + length]
    if len(payload) != length or length == 0:
        raise FormatError(f"{source}: payload of {length} bytes does not fit the file",
                          field="payload_length", offset=0x24C)
    try:
        if payload[:6] == b"\xfd7zXZ\0":
            return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
        if payload[:2] == b"\x1f\x8b":
            return gzip.decompress(payload)
        if payload[:3] == b"BZh":
            return bz2.decompress(payload)
        if payload[:4] == b"\x28\xb5\x2f\xfd":
            import cramjam

            return bytes(cramjam.zstd.decompress(payload))
    except (lzma.LZMAError, OSError, ValueError, EOFError) as e:
        raise FormatError(f"{source}: cannot decompress the payload: {e}", field="payload") from None
    raise UsageError(f"{source}: unsupported bzImage compression {payload[:4].hex()} (xz, gzip, bzip2, zstd)")


def load_symbols(path: str | Path) -> KernelSymbols:
    """Symbols from a System.map, a vmlinux (ELF, stripped or not) or a bzImage (``vmlinuz``)."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            head = f.read(4)
            if head == b"\x7fELF":  # a vmlinux with debug info is hundreds of MiB: stream it
                return _elf_symbols(f, str(p))
        data = p.read_bytes()  # a bzImage or a System.map: a few MiB
    except OSError as e:
        raise UsageError(f"cannot read {p}: {e.strerror}") from None
    if data[0x202:0x206] == b"HdrS":
        return _elf_symbols(_bzimage_payload(data, str(p)), f"{p} (vmlinux inside)")
    syms = KernelSymbols(str(p), parse_system_map(data.decode("ascii", "replace")))
    if not syms.text:
        raise FormatError(f"{p}: the System.map has neither _text nor _stext (a stub? Debian ships the "
                          "real one in linux-image-*-dbg; pass the vmlinuz instead)", field="_text")
    return syms


# -- reading through a page-table result ----------------------------------------------------------


def image_span(res: KaslrResult) -> tuple[int, int]:
    """``(pa, size)`` of the kernel image's linear run as the page tables map it."""
    return res.text_pa, max(res.text_end - res.text_va, 0)


def va_of(res: KaslrResult, pa: int) -> int:
    """Kernel-image VA of a physical address inside the image run."""
    return pa - res.text_pa + res.text_va


def _find(memory: PhysicalMemory, start: int, size: int, needle: bytes, *, first_at_2m: bool = False,
          limit: int = 8) -> list[int]:
    """Physical addresses of ``needle`` in ``[start, start+size)``, in order (at most ``limit``)."""
    hits: list[int] = []
    end = start + size
    if first_at_2m:  # the banner opens .rodata, which starts on a 2 MiB boundary: look there first
        for base in range(start, end, MB2):
            if memory.readable(base, 4096):
                at = memory.read(base, 4096).find(needle)
                if at >= 0:
                    return [base + at]
    tail = b""
    for addr, buf in memory.chunks(start, end, 1 << 20):
        data = tail + bytes(buf)
        base = addr - len(tail)
        pos = data.find(needle)
        while pos >= 0:
            if base + pos not in hits:
                hits.append(base + pos)
                if len(hits) >= limit:
                    return hits
            pos = data.find(needle, pos + 1)
        tail = data[-(len(needle) - 1):] if len(needle) > 1 else b""
    return hits


def find_banner(memory: PhysicalMemory, res: KaslrResult) -> tuple[int, bytes] | None:
    """``(pa, line)`` of the first ``Linux version …`` string in the kernel image."""
    pa, size = image_span(res)
    for hit in _find(memory, pa, size, BANNER, first_at_2m=True, limit=4):
        raw = memory.read(hit, 512, zero_fill=True)
        line = raw.split(b"\0", 1)[0].split(b"\n", 1)[0]
        if banner_release(line):
            return hit, line
    return None


def banner_release(line: bytes) -> str | None:
    """The release token of a ``Linux version <release> (…`` line."""
    if not line.startswith(BANNER):
        return None
    m = _RELEASE.match(line, len(BANNER))
    return m.group().decode() if m else None


def uts_release(raw: bytes) -> str | None:
    """``release`` of a ``struct new_utsname`` whose ``sysname`` is Linux, else None."""
    if len(raw) < UTS_RELEASE_OFFSET + UTS_FIELD or raw[:6] != b"Linux\0":
        return None
    rel = raw[UTS_RELEASE_OFFSET:UTS_RELEASE_OFFSET + UTS_FIELD].split(b"\0", 1)[0]
    return rel.decode() if _RELEASE.fullmatch(rel) else None


def find_utsname(memory: PhysicalMemory, res: KaslrResult, release: str) -> int | None:
    """Physical address of a ``new_utsname`` with ``release`` inside the kernel image."""
    pa, size = image_span(res)
    want = b"Linux\0" + bytes(UTS_FIELD - 6)
    for hit in _find(memory, pa, size, want, limit=64):
        if uts_release(memory.read(hit, 6 * UTS_FIELD, zero_fill=True)) == release:
            return hit
    return None


def find_build_id(memory: PhysicalMemory, res: KaslrResult) -> str | None:
    """The kernel's GNU build ID, from its ``.notes`` in the image.

    The image also embeds ELF files with build IDs of their own (the vDSOs): a note on a page that
    starts with an ELF header, or just after one, is theirs and skipped.
    """
    pa, size = image_span(res)
    for hit in _find(memory, pa, size, GNU_BUILD_ID, limit=16):
        page = hit & ~0xFFF
        if any(memory.read(p, 4, zero_fill=True) == b"\x7fELF" for p in (page, page - 4096)):
            continue
        return memory.read(hit + len(GNU_BUILD_ID), 20, zero_fill=True).hex()
    return None


def kernel_half(memory: PhysicalMemory, root: int) -> bytes | None:
    """Entries 256..511 of a top-level table (what every PGD shares with ``swapper_pg_dir``)."""
    return memory.read(root + 2048, 2048) if memory.readable(root + 2048, 2048) else None


def find_swapper_pg_dir(memory: PhysicalMemory, res: KaslrResult) -> int | None:
    """Physical address of ``swapper_pg_dir``: the image page whose kernel half equals CR3's."""
    want = kernel_half(memory, res.root)
    if want is None:
        return None
    pa, size = image_span(res)
    if pa <= res.root < pa + size:
        return res.root
    top = want[-8:]  # the kernel-text entry: cheap first filter
    for addr, buf in memory.chunks(pa, pa + size, 1 << 20):
        mv = memoryview(buf)
        first = -addr % 4096
        for off in range(first, len(mv) - 4095, 4096):
            if mv[off + 4088:off + 4096] == top and mv[off + 2048:off + 4096] == want:
                return addr + off
    return None


# -- the report -------------------------------------------------------------------------------------


@dataclass
class KaslrReport:
    """The ``kaslr`` object of ``vmci kaslr`` / ``vmci analyze --json``."""

    kerneloffset: int | None = None
    phys_base: int | None = None
    method: str | None = None
    verdict: str = "none"  # agree, conflict, vmcoreinfo-only, page-tables-only, none
    vmcoreinfo: dict[str, Any] | None = None
    page_tables: dict[str, Any] | None = None
    page_tables_error: str | None = None
    symbols: dict[str, Any] | None = None
    corroboration: dict[str, Any] = field(default_factory=dict)
    evidence: Evidence = field(default_factory=Evidence)
    warnings: list[str] = field(default_factory=list)
    result: KaslrResult | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kerneloffset": self.kerneloffset, "phys_base": self.phys_base, "method": self.method,
            "verdict": self.verdict, "vmcoreinfo": self.vmcoreinfo, "page_tables": self.page_tables,
            "page_tables_error": self.page_tables_error, "symbols": self.symbols,
            "corroboration": self.corroboration,
            "evidence": [{"action": s.action, "paddr": s.paddr, "detail": s.detail, "verdict": s.verdict}
                         for s in self.evidence],
            "warnings": list(self.warnings),
        }


def _pt_dict(r: KaslrResult) -> dict[str, Any]:
    return {
        "kerneloffset": r.kerneloffset, "phys_base": r.phys_base, "method": r.method, "text_va": r.text_va,
        "text_pa": r.text_pa, "text_end": r.text_end, "la57": r.la57, "root": r.root, "vcpus_agree": r.agree,
        "text_link": r.text_link, "text_link_source": r.text_link_source,
        "cpus": [{"cpu": c.cpu, "cr3": c.cr3, "root": c.root, "kerneloffset": c.kerneloffset,
                  "phys_base": c.phys_base, "idt_handler": c.idt_handler,
                  "idt_handler_in_text": c.idt_handler_in_text, "skipped": c.skipped} for c in r.cpus],
        "warnings": list(r.warnings),
    }


def _signed(v: int) -> str:
    return f"{v:#x}" if v >= 0 else f"-{-v:#x}"


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
                          "osrelease": vi.osrelease, "synthesized": vi.get("VMCI_SYNTHESIZED") == "1"}
        ev.info("vmcoreinfo", f"{vmcoreinfo_source or 'given'}: KERNELOFFSET "
                + ("absent" if v_off is None else f"{v_off:#x}")
                + ", phys_base " + ("absent" if v_pb is None else _signed(v_pb)))
    res: KaslrResult | None = None
    if dump.arch != "x86_64":
        rep.page_tables_error = f"page-table KASLR discovery supports x86_64, not {dump.arch}"
    elif not dump.cpus:
        rep.page_tables_error = "the dump has no vCPU state (no QEMU/PRSTATUS notes)"
    else:
        try:
            res = kaslr_from_page_tables(dump.memory, dump.cpus, mask=mask,
                                         system_map=symbols.symbols if symbols else None)
        except VmciError as e:
            rep.page_tables_error = str(e)
    if rep.page_tables_error:
        ev.warn("page-tables", rep.page_tables_error)
    if res is not None:
        rep.result = res
        rep.page_tables = _pt_dict(res)
        ev.ok("page-tables", f"_text mapped at {res.text_va:#x} -> {res.text_pa:#x} ({res.method}, "
              f"{sum(c.kerneloffset is not None for c in res.cpus)}/{len(res.cpus)} vCPUs"
              + (", agree)" if res.agree else ", DISAGREE)") + f": KERNELOFFSET {res.kerneloffset:#x}, "
              f"phys_base {_signed(res.phys_base)}", res.text_pa)
        rep.warnings += res.warnings
        if v_pb is None and vi is not None and pb is not None and pb.legacy_symbol:
            v_pb = _read_legacy_phys_base(dump.memory, res, pb.value, ev)
            rep.vmcoreinfo = dict(rep.vmcoreinfo or {}, phys_base=v_pb)
    _verdict(rep, res, v_off, v_pb)
    if res is not None:
        _corroborate(rep, dump.memory, res, vi, symbols, deep)
    return rep


def vmcoreinfo_for_kaslr(dump: Dump, *, scan: bool = False,
                         addr_blob: bytes | None = None) -> tuple[VmcoreInfo | None, str | None]:
    """The VMCOREINFO to compare the page tables with, and its source: the dump's own note / kdump
    header, the address blob when given, and a migration stream's saved device state;
    ``scan=True`` runs every discovery strategy, memory scan included."""
    from vmci.discover.run import find_vmcoreinfo

    strategies = None
    if not scan:
        saved = dump.saved_state.devices if dump.saved_state else None  # a saved VM's device state
        strategies = ["elf-note"] + (["kdump-header"] if dump.format.startswith("kdump") else [])
        if addr_blob is not None or (saved is not None and saved.vmcoreinfo_addr_blob is not None):
            strategies.append("address-blob")
        if saved is not None and saved.vmcoreinfo_record is not None:
            strategies.append("fw-cfg-record")
    chosen = find_vmcoreinfo(dump, addr_blob=addr_blob, strategies=strategies).chosen
    return (chosen.text, chosen.source) if chosen else (None, None)


def kaslr_for_dump(dump: Dump, *, scan: bool = False, addr_blob: bytes | None = None,
                   symbols: KernelSymbols | None = None, deep: bool = False) -> KaslrReport:
    """:func:`kaslr_report` with the VMCOREINFO of :func:`vmcoreinfo_for_kaslr`."""
    text, source = vmcoreinfo_for_kaslr(dump, scan=scan, addr_blob=addr_blob)
    return kaslr_report(dump, vmcoreinfo=text, vmcoreinfo_source=source, symbols=symbols, deep=deep)


def kaslr_section(dump: Dump, *, vmcoreinfo: VmcoreInfo | None, source: str | None,
                  symbols: KernelSymbols | None = None, deep: bool = False) -> dict[str, Any]:
    """The ``kaslr`` object of ``analyze --json`` and ``vmci kaslr --json``.

    Dumps without a paging vCPU keep the short form ``{kerneloffset, phys_base, method}`` (there is
    no second source to compare); otherwise the whole :class:`KaslrReport`.
    """
    if any(c.paging for c in dump.cpus):
        return kaslr_report(dump, vmcoreinfo=vmcoreinfo, vmcoreinfo_source=source, symbols=symbols,
                            deep=deep).to_dict()
    short = KaslrReport()
    _verdict(short, None, _safe(lambda: vmcoreinfo.kerneloffset) if vmcoreinfo else None,
             _phys_base_value(vmcoreinfo))
    return {"kerneloffset": short.kerneloffset, "phys_base": short.phys_base, "method": short.method}


def _phys_base_value(vi: VmcoreInfo | None) -> int | None:
    pb = _safe(lambda: vi.phys_base) if vi is not None else None
    return None if pb is None or pb.legacy_symbol else pb.value


def _safe(fn: Any) -> Any:
    try:
        return fn()
    except VmciError:
        return None


def _read_legacy_phys_base(memory: PhysicalMemory, res: KaslrResult, addr: int, ev: Evidence) -> int | None:
    try:
        value = int.from_bytes(read_virtual(memory, res.root, addr, 8, res.la57), "little", signed=True)
    except VmciError as e:
        ev.warn("phys_base", f"SYMBOL(phys_base)={addr:#x} (kernel < 4.10) unreadable: {e}")
        return None
    ev.ok("phys_base", f"read the variable at SYMBOL(phys_base)={addr:#x}: {_signed(value)}")
    return value


def _verdict(rep: KaslrReport, res: KaslrResult | None, v_off: int | None, v_pb: int | None) -> None:
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
    diffs = [f"{name}: VMCOREINFO {_signed(v)} vs page tables {_signed(p)}"
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


def _corroborate(rep: KaslrReport, memory: PhysicalMemory, res: KaslrResult, vi: VmcoreInfo | None,
                 symbols: KernelSymbols | None, deep: bool) -> None:
    ev, co = rep.evidence, rep.corroboration
    koff = rep.kerneloffset if rep.kerneloffset is not None else res.kerneloffset

    def read(va: int, n: int) -> bytes | None:
        try:
            return read_virtual(memory, res.root, va, n, res.la57)
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
        if vi.get("VMCI_SYNTHESIZED") == "1":
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
    # swapper_pg_dir: its kernel half equals the one CR3 points at
    want_half = kernel_half(memory, res.root)
    spd_va = vi.symbol("swapper_pg_dir") if vi is not None else None
    if spd_va is None and symbols is not None:
        link = symbols.symbols.get("swapper_pg_dir", symbols.symbols.get("init_top_pgt"))
        spd_va = None if link is None else link + koff
    if spd_va is not None and want_half is not None:
        pa = spd_va - START_KERNEL_MAP + (rep.phys_base if rep.phys_base is not None else res.phys_base)
        ok = kernel_half(memory, kernel_root(pa, pti=False)) == want_half
        co["swapper_pg_dir"] = {"va": spd_va, "pa": pa, "ok": ok}
        (ev.ok if ok else ev.fail)("swapper_pg_dir", f"{spd_va:#x} -> {pa:#x}: kernel half "
                                   + ("equals" if ok else "DIFFERS from") + " CR3's", pa)
    elif deep:
        pa = find_swapper_pg_dir(memory, res)
        co["swapper_pg_dir"] = {"va": None if pa is None else va_of(res, pa), "pa": pa, "ok": pa is not None,
                                "how": "found in the image"}
        (ev.ok if pa is not None else ev.warn)(
            "swapper_pg_dir", "image page sharing CR3's kernel half " + ("found" if pa else "not found"), pa)
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


__all__ = ["KaslrReport", "KernelSymbols", "find_banner", "find_build_id", "find_swapper_pg_dir",
           "find_utsname", "kaslr_for_dump", "kaslr_report", "kaslr_section", "load_symbols"]

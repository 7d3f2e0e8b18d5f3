"""A synthesized VMCOREINFO for dumps where only the page tables survive.

The text carries what drgn needs (``OSRELEASE``, ``PAGESIZE``, ``SYMBOL(swapper_pg_dir)``) plus
what makes kernel addresses right (``KERNELOFFSET`` and the architecture's own keys,
:meth:`vmci.arch.Arch.synthesized_keys`: x86_64 ``NUMBER(phys_base)``,
``NUMBER(pgtable_l5_enabled)``).  It is marked on its second line with ``VMCI_SYNTHESIZED=1``:
VMCOREINFO has no comment syntax, every reader skips keys it does not know (drgn 0.3.0 verified),
and ``OSRELEASE`` stays first because memory scanners key on it.  Values that only vmci knows
use the ``VMCI(...)`` key form.

Where each value comes from: the release from the kernel banner in the image (or
``linux_banner`` of a System.map/vmlinux), ``swapper_pg_dir`` from the image page that shares
CR3's kernel half, ``BUILD-ID`` from the image's ``.notes`` (or the vmlinux when its ID is in
memory), the rest from the page-table walk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vmci.arch import get
from vmci.core.dump import Dump
from vmci.errors import NotFoundError
from vmci.kernel.image import banner_release, find_build_id, find_swapper_pg_dir, find_utsname, va_of
from vmci.kernel.kaslr import KaslrReport, kaslr_report
from vmci.kernel.symbols import KernelSymbols
from vmci.kernel.vmcoreinfo import SYNTHESIZED_KEY, VmcoreInfo, is_synthesized

MARK_KEY = SYNTHESIZED_KEY
MARK = f"{MARK_KEY}=1"


@dataclass
class Synthesized:
    """The text and, for each key, where its value came from."""

    text: bytes
    sources: dict[str, str] = field(default_factory=dict)
    report: KaslrReport | None = field(default=None, repr=False)

    @property
    def vmcoreinfo(self) -> VmcoreInfo:
        return VmcoreInfo.parse(self.text)

    def to_dict(self) -> dict[str, Any]:
        return {"synthesized": True, "text": self.text.decode(), "sources": dict(self.sources)}


def synthesize(dump: Dump, *, report: KaslrReport | None = None,
               symbols: KernelSymbols | None = None) -> Synthesized:
    """Build a VMCOREINFO from the page tables and the kernel image in ``dump``.

    Raises :class:`NotFoundError` when the page tables give no kernel text mapping or no
    banner (release) can be found.
    """
    rep = report if report is not None else kaslr_report(dump, symbols=symbols)
    res = rep.result
    if res is None:
        why = rep.page_tables_error or "no page-table result"
        raise NotFoundError(f"cannot synthesize a VMCOREINFO: {why}")
    mem = dump.memory
    arch = get(res.tables.arch)
    koff, pbase = res.kerneloffset, res.phys_base
    src: dict[str, str] = {}
    banner = rep.corroboration.get("banner") or {}
    release = banner.get("release")
    if not release:
        raise NotFoundError("cannot synthesize a VMCOREINFO: no 'Linux version' banner in the kernel image")
    src["OSRELEASE"] = f"kernel banner at {banner.get('va', 0):#x} ({banner.get('how')})"
    lines = [f"OSRELEASE={release}", MARK]
    build_id = None
    if symbols is not None and symbols.build_id and rep.symbols and rep.symbols.get("build_id_in_memory") \
            == symbols.build_id:
        build_id, src["BUILD-ID"] = symbols.build_id, f"{symbols.source}, also found in memory"
    else:
        build_id = find_build_id(mem, res)
        if build_id:
            src["BUILD-ID"] = "GNU build-ID note in the kernel image (.notes)"
    if build_id:
        lines.append(f"BUILD-ID={build_id}")
    lines.append(f"PAGESIZE={res.tables.page_size}")
    src["PAGESIZE"] = f"the granule of the {arch.name} page tables"
    spd = None
    if symbols is not None:
        link = symbols.symbols.get("swapper_pg_dir", symbols.symbols.get("init_top_pgt"))
        if link is not None:
            spd, src["SYMBOL(swapper_pg_dir)"] = link + koff, f"{symbols.source} + KERNELOFFSET"
    if spd is None:
        pa = find_swapper_pg_dir(mem, res)
        if pa is not None:
            spd = va_of(res, pa)
            src["SYMBOL(swapper_pg_dir)"] = f"image page at {pa:#x} whose kernel half equals CR3's"
        else:
            # any PGD shares the kernel half; drgn only turns this value into a physical address
            spd = arch.kernel_virt(res.root, pbase)
            src["SYMBOL(swapper_pg_dir)"] = f"CR3's PGD {res.root:#x} (swapper_pg_dir itself not found)"
    lines.append(f"SYMBOL(swapper_pg_dir)={spd:x}")
    if symbols is not None and "init_uts_ns" in symbols.symbols:
        lines.append(f"SYMBOL(init_uts_ns)={symbols.symbols['init_uts_ns'] + koff:x}")
        src["SYMBOL(init_uts_ns)"] = f"{symbols.source} + KERNELOFFSET"
    else:
        uts = find_utsname(mem, res, release)
        if uts is not None:
            lines.append(f"VMCI(new_utsname)={va_of(res, uts):x}")
            src["VMCI(new_utsname)"] = f"struct new_utsname with release {release!r} found at {uts:#x}"
    used = sum(c.kerneloffset is not None for c in res.cpus)
    lines.append(f"KERNELOFFSET={koff:x}")
    src["KERNELOFFSET"] = f"page tables of {used} vCPU(s), _text at {res.text_va:#x}"
    for key, value, how in arch.synthesized_keys(res):
        lines.append(f"{key}={value}")
        src[key] = how
    lines.append(f"VMCI(kaslr_method)={res.method}")
    text = ("\n".join(lines) + "\n").encode()
    return Synthesized(text, src, rep)


def release_via(text: VmcoreInfo, read: Any) -> str | None:
    """The running release read through a text's addresses: ``init_uts_ns`` (+ name offset) + 130,
    or the ``VMCI(new_utsname)`` of a synthesized text.  ``read(va, n) -> bytes``."""
    base = text.symbol("init_uts_ns")
    if base is not None:
        base += text.offset("uts_namespace", "name") or 0
    else:
        v = text.get("VMCI(new_utsname)")
        base = int(v, 16) if v else None
    if base is None:
        return None
    raw = read(base + 130, 65)
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


__all__ = ["MARK", "Synthesized", "banner_release", "is_synthesized", "release_via", "synthesize"]

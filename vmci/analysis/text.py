"""The VMCOREINFO text to hand a reader (``vmci vmcoreinfo``, drgn): as found, else synthesized.

The policy lives here, once: discovery's chosen text; when there is none, a text synthesized from
the page tables and the kernel image (marked ``VMCI_SYNTHESIZED=1``) if the caller allows it,
else :class:`~vmci.errors.NotFoundError` (exit status 1) with discovery's reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmci.analysis.result import VmcoreinfoText
from vmci.core.dump import Dump
from vmci.discover.run import find_vmcoreinfo
from vmci.errors import NotFoundError

if TYPE_CHECKING:
    from vmci.kernel.kaslr import KernelSymbols


def vmcoreinfo_text(
    dump: Dump,
    *,
    addr_blob: bytes | None = None,
    fw_cfg_record: bytes | None = None,
    synthesize: bool = False,
    symbols: KernelSymbols | None = None,
) -> VmcoreinfoText:
    """The text every discovery strategy agrees on, else (``synthesize``) a synthesized one."""
    disc = find_vmcoreinfo(dump, addr_blob=addr_blob, fw_cfg_record=fw_cfg_record)
    c = disc.chosen
    if c is not None and c.text is not None:
        return VmcoreinfoText(c.text.raw, c.source, c.paddr, disc.reason)
    if not synthesize:
        raise NotFoundError(f"no VMCOREINFO in {dump.path}: {disc.reason}")
    from vmci.kernel.synthesize import synthesize as make

    s = make(dump, symbols=symbols)
    return VmcoreinfoText(s.text, "synthesized", None,
                          f"{disc.reason}; synthesized from the page tables and the kernel image",
                          sources=dict(s.sources))

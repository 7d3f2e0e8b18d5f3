"""Hand drgn a working kernel program for dumps it cannot open alone (drgn is an optional extra).

drgn 0.3.0 refuses QEMU ELF dumps without a VMCOREINFO note ("unrecognized QEMU memory dump"),
cannot name the architecture of QEMU's kdump files (libkdumpfile: "Key has no value") and has
no memory scan.  :func:`program_from_dump` finds the text with vmci (or synthesizes one from the
page tables), creates ``drgn.Program(platform, vmcoreinfo=text)`` and then:

- ELF, kdump and flattened kdump files: ``set_core_dump(path)``.  The wheel's libkdumpfile
  (0.5.6) reads the flattened format directly once the platform is given (verified on QEMU
  ``dump-guest-memory -z`` output), so no rearranged copy is made; drgn's "reassemble it with
  makedumpfile -R" warning is filtered out.
- anything else vmci reads (raw images, split kdump sets, an ELF whose only segment starts at
  physical 0, which drgn would not register physically, a kdump file whose blocks are not the
  guest's pages, as QEMU writes them for arm64): vmci serves the memory through
  ``add_memory_segment(..., physical=True)`` and ``set_linux_kernel_custom``.  The dump stays open
  for the program's lifetime; per-CPU registers (PRSTATUS) are not available that way.

Where the text came from is kept in ``prog.cache["vmci"]`` for the plugin's ``%vmci`` commands.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmci.core.dump import Dump
from vmci.errors import UnsupportedError, UsageError, VmciError
from vmci.machine.qemu_devices import MAX_GUEST_NOTE_SIZE

if TYPE_CHECKING:
    import drgn

    from vmci.kernel.symbols import KernelSymbols

CACHE_KEY = "vmci"
_NATIVE = ("elf", "kdump", "kdump-flattened")



def _drgn() -> Any:
    try:
        import drgn
    except ImportError:
        raise UnsupportedError("drgn is not installed (pip install 'vmci[drgn]')") from None
    return drgn


def platform_for(dump: Dump, text: bytes | None = None) -> drgn.Platform:
    """The drgn platform of a dump (libkdumpfile needs it for QEMU kdump headers), from the
    dump's architecture (:mod:`vmci.arch`).  A raw image names no architecture: it is inferred from
    VMCOREINFO keys in ``text`` that only one architecture writes."""
    from vmci.arch import for_vmcoreinfo, lookup
    from vmci.kernel.vmcoreinfo import VmcoreInfo

    d = _drgn()
    arch = lookup(dump.arch)
    if arch is None and dump.arch == "unknown" and text is not None:
        arch = for_vmcoreinfo(VmcoreInfo.parse(text))
    if arch is None or arch.drgn_arch is None:
        raise UnsupportedError(f"no drgn platform for architecture {dump.arch!r}")
    flags = d.PlatformFlags(0)
    for name in arch.drgn_flags(dump.byte_order):
        flags |= getattr(d.PlatformFlags, name)
    return d.Platform(getattr(d.Architecture, arch.drgn_arch), flags)


def vmcoreinfo_for_dump(
    dump: Dump,
    *,
    addr_blob: bytes | None = None,
    fw_cfg_record: bytes | None = None,
    synthesize: bool = True,
    symbols: KernelSymbols | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """``(text, provenance)``: the text every discovery strategy agrees on, else a synthesized one
    (:func:`vmci.analysis.text.vmcoreinfo_text`).

    ``provenance`` holds ``source`` (a strategy name or ``"synthesized"``), ``paddr``, ``reason``
    and ``synthesized``.
    """
    from vmci.analysis.text import vmcoreinfo_text

    got = vmcoreinfo_text(dump, addr_blob=addr_blob, fw_cfg_record=fw_cfg_record, synthesize=synthesize,
                          symbols=symbols)
    return got.raw, got.provenance()


class _DropFlattenedWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "makedumpfile flattened format" not in record.getMessage()


@contextmanager
def _quiet_flattened() -> Iterator[None]:
    log = logging.getLogger("drgn")
    f = _DropFlattenedWarning()
    log.addFilter(f)
    try:
        yield
    finally:
        log.removeFilter(f)


def _reader(dump: Dump) -> Callable[[int, int, int, bool], bytes]:
    mem = dump.memory

    def read(address: int, count: int, offset: int, physical: bool) -> bytes:
        return mem.read(address, count, zero_fill=True)

    read.dump = dump  # type: ignore[attr-defined]  # keeps the dump open as long as drgn holds this
    return read


def _blocks_are_not_pages(dump: Dump, text: bytes) -> bool:
    """A kdump file whose blocks are not the guest's pages: QEMU writes 64 KiB blocks for every
    arm64 guest (target/arm/arch_dump.c), and libkdumpfile 0.5.6 (drgn 0.3.0's wheel) then fails
    its page-table reads ("Out-of-bounds PFN", seen on 4 KiB-page guests); vmci serves the memory."""
    from vmci.core.headers import KdumpHeader
    from vmci.kernel.vmcoreinfo import VmcoreInfo

    if not isinstance(dump.header, KdumpHeader):
        return False
    try:
        page = VmcoreInfo.parse(text).pagesize
    except VmciError:
        return False
    return page is not None and page != dump.header.block_size


def program_from_dump(
    path: str | os.PathLike[str],
    *,
    vmcoreinfo: bytes | str | os.PathLike[str] | None = None,
    addr_blob: bytes | None = None,
    fw_cfg_record: bytes | None = None,
    synthesize: bool = True,
    symbols: KernelSymbols | None = None,
    format: str = "auto",
    raw_base: int = 0,
    debug_info: Iterable[str | os.PathLike[str]] = (),
    default_debug_info: bool = False,
    custom: bool | None = None,
) -> drgn.Program:
    """A ``drgn.Program`` for the Linux kernel in ``path``.

    ``vmcoreinfo``: the text (bytes/str) or a file holding it; default: what vmci finds, else a
    synthesized text (``synthesize=False`` raises :class:`NotFoundError` instead).
    ``debug_info`` paths and ``default_debug_info`` are passed to ``load_debug_info``; a missing
    debug-info error only logs a warning.  ``custom`` forces (or forbids) the
    ``set_linux_kernel_custom`` route.
    """
    from vmci.formats import open_dump

    d = _drgn()
    path = Path(path)
    dump = open_dump(path, format=format, raw_base=raw_base)
    keep_open = False
    try:
        if isinstance(vmcoreinfo, os.PathLike):
            try:
                if Path(vmcoreinfo).stat().st_size > MAX_GUEST_NOTE_SIZE:  # QEMU's limit for guest notes
                    raise UsageError(f"{vmcoreinfo} is over {MAX_GUEST_NOTE_SIZE} bytes: no VMCOREINFO text")
                text = Path(vmcoreinfo).read_bytes()
            except OSError as e:
                raise UsageError(f"cannot read {vmcoreinfo}: {e.strerror}") from None
            prov: dict[str, Any] = {"source": f"file {vmcoreinfo}", "synthesized": None}
        elif vmcoreinfo is not None:
            text = vmcoreinfo.encode() if isinstance(vmcoreinfo, str) else bytes(vmcoreinfo)
            prov = {"source": "given", "synthesized": None}
        else:
            text, prov = vmcoreinfo_for_dump(
                dump, addr_blob=addr_blob, fw_cfg_record=fw_cfg_record, synthesize=synthesize, symbols=symbols
            )
        if vmcoreinfo is not None:  # the user's text must describe the kernel in this dump
            from vmci.analysis.given import check_given_vmcoreinfo

            check = check_given_vmcoreinfo(dump, text)
            bad = [st for st in check if st.verdict == "fail"]
            if bad:
                raise UsageError(f"the VMCOREINFO given ({prov['source']}) is not this dump's: "
                                 + "; ".join(f"{st.action}: {st.detail}" for st in bad))
        if prov["synthesized"] is None:
            from vmci.kernel.vmcoreinfo import is_synthesized

            prov["synthesized"] = is_synthesized(text)
        platform = platform_for(dump, text)
        if custom is None:
            lone_zero = dump.format == "elf" and all(r.start == 0 for r in dump.memory.ranges)
            custom = dump.format not in _NATIVE or lone_zero or _blocks_are_not_pages(dump, text)
        prog = d.Program(platform, vmcoreinfo=text)
        try:
            if custom:
                read = _reader(dump)
                for r in dump.memory.ranges:
                    prog.add_memory_segment(r.start, r.size, read, physical=True)
                prog.set_linux_kernel_custom(text, False)
                keep_open = True
            else:
                with _quiet_flattened():
                    prog.set_core_dump(str(path))
        except (ValueError, d.FaultError) as e:
            raise UnsupportedError(f"drgn cannot load {path}: {e}") from None
        prov.update({"dump": str(path), "format": dump.format, "route": "custom" if custom else "core-dump"})
        prog.cache[CACHE_KEY] = prov
        paths = [str(p) for p in debug_info]
        if paths or default_debug_info:
            try:
                prog.load_debug_info(paths, default=default_debug_info)
            except d.MissingDebugInfoError as e:
                logging.getLogger("drgn").warning("%s", e)
        return prog
    finally:
        if not keep_open:
            dump.close()


def run_interactive(
    path: str | os.PathLike[str], *, exec_code: str | None = None, quiet: bool = False, **options: Any
) -> None:
    """Open drgn's REPL (``drgn.cli.run_interactive``) on :func:`program_from_dump`; with
    ``exec_code``, run that code with drgn's default globals instead (like ``drgn -e``)."""
    d = _drgn()
    import drgn.cli

    prog = program_from_dump(path, **options)
    prov = prog.cache.get(CACHE_KEY, {})
    line = (
        f"vmci: VMCOREINFO from {prov.get('source')}"
        + (" (SYNTHESIZED from page tables)" if prov.get("synthesized") else "")
        + f", loaded via {prov.get('route')}"
    )
    if exec_code is not None:
        d.set_default_prog(prog)
        env = drgn.cli.default_globals(prog)
        exec(compile(exec_code, "<vmci drgn -e>", "exec"), env)
        return
    drgn.cli.run_interactive(prog, banner_func=lambda banner: f"{banner}\n{line}" if not quiet else banner)


class DrgnKernelReader:
    """The kernel a drgn ``Program`` reads, as :mod:`vmci.kernel.printk` wants it: virtual reads
    through drgn (its own page-table walk, so a live ``/proc/kcore`` works too) and the layout
    keys of the VMCOREINFO drgn loaded (``SYMBOL()`` values are already runtime addresses)."""

    def __init__(self, prog: Any, vmcoreinfo: Any) -> None:
        import drgn

        self._prog = prog
        self._info = vmcoreinfo
        flags = prog.platform.flags
        self.pointer_size = 8 if flags & drgn.PlatformFlags.IS_64_BIT else 4
        self.byteorder = "little" if flags & drgn.PlatformFlags.IS_LITTLE_ENDIAN else "big"

    def read(self, vaddr: int, size: int) -> bytes:
        import drgn

        try:
            return bytes(self._prog.read(vaddr, size))
        except drgn.FaultError as e:
            from vmci.errors import VirtualReadError

            raise VirtualReadError(f"drgn cannot read {size} bytes at {vaddr:#x}: {e}", vaddr=vaddr) from None

    def symbol(self, name: str) -> int | None:
        return self._info.symbol(name)

    def offset(self, struct: str, member: str) -> int | None:
        return self._info.offset(struct, member)

    def size(self, struct: str) -> int | None:
        return self._info.size(struct)

    def number(self, name: str) -> int | None:
        return self._info.number(name)

    def length(self, name: str) -> int | None:
        return self._info.length(name)


__all__ = ["CACHE_KEY", "DrgnKernelReader", "platform_for", "program_from_dump", "run_interactive",
           "vmcoreinfo_for_dump"]

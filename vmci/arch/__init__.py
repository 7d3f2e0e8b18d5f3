"""Per-ISA knowledge behind one protocol: :class:`Arch` and the registry of architectures.

Everything above this package asks the registry, never a name: ``arch.get(dump.arch)`` (or
:func:`lookup`, :func:`by_elf_machine`, :func:`for_vmcoreinfo`) gives the :class:`Arch` whose
members answer page sizes, CPU state from notes, the kernel's page-table root, translation,
KASLR from page tables, the VMCOREINFO keys to expect and the drgn platform.  Built-in entries:
``x86_64`` (:mod:`vmci.arch.x86_64`), ``i386`` (:mod:`vmci.arch.i386`: CPU notes only),
``aarch64`` (:mod:`vmci.arch.aarch64`) and ``arm`` (:mod:`vmci.arch.arm`: 32-bit Arm, CPU notes only).

To add an architecture (nothing outside ``vmci/arch/`` needs an edit):

* **Always.**  Create ``vmci/arch/<name>/__init__.py`` with a subclass of :class:`Arch` and an
  instance ``ARCH``; add its module path to :data:`BUILTIN`.  Fill the class attributes:
  ``name`` (what ``Dump.arch`` says), ``machines`` (kdump ``utsname.machine`` spellings),
  ``elf_machines`` (``EM_*``; :mod:`vmci.layouts.elf` names the ELF ``e_machine``),
  ``pointer_size``, ``byteorders``, ``page_size``/``page_sizes``, ``vmcoreinfo_keys`` and
  ``vmcoreinfo_markers`` (keys only this architecture's kernels write: a raw image with such a
  text gets this architecture), ``phys_base_key`` (the ``NUMBER()`` the architecture's kdump
  headers call ``phys_base``), ``kaslr_keys`` (what readers place a KASLR'd kernel with: the
  ``kaslr-keys`` check), ``prstatus_size`` (names the architecture of a kdump file whose header
  does not), and the constants of the kernel's memory layout in a
  ``consts.py`` (one place; producers and tests import them from there), summed up in ``kernel``
  (:class:`KernelConstants`: the image window, ``_text``'s link address, the physical start and
  alignment).
* **To read CPU state** (``vmci info``, KASLR, the migration and ELF writers): declare the
  ``elf_prstatus`` layout in :mod:`vmci.layouts.prstatus` and implement :meth:`Arch.cpus_from_notes`
  in ``<name>/cpu.py``; every container calls it through :func:`vmci.formats.notes.cpus_from`.
  Registers go into :class:`vmci.core.dump.CpuState` ``regs`` under the kernel's
  ``user_regs_struct`` names.
* **To translate kernel virtual addresses** (:class:`vmci.kernel.vmem.KernelMemory`, the kernel
  log, page filtering): set ``translates = True`` and implement, in ``<name>/paging.py``,
  :meth:`Arch.lookup` (the leaf mapping holding an address; raise
  :class:`~vmci.errors.VirtualReadError`), :meth:`Arch.walk` (leaf mappings of a range, bounded by
  the tables the dump holds), :meth:`Arch.kernel_page_tables` (the root from VMCOREINFO keys, e.g.
  ``SYMBOL(swapper_pg_dir)`` and the key that places the image physically),
  :meth:`Arch.image_offset` (that key as ``VA - PA`` of the image), and, when the dump
  saves the registers, :meth:`Arch.kernel_root` (the root from one vCPU).  Describe the format in
  :class:`PageTables` (``va_bits``, ``page_shift``, ``mask``).
* **To find KASLR without a VMCOREINFO** (``vmci kaslr``, ``vmci vmcoreinfo --synthesize``): set
  ``finds_kaslr = True`` and implement :meth:`Arch.kaslr_from_page_tables` in ``<name>/kaslr.py``
  (return :class:`PageTableKaslr`), :meth:`Arch.kernel_phys`/:meth:`Arch.kernel_virt` (kernel-image
  addresses) and :meth:`Arch.kernel_entries` (what every address space shares with
  ``swapper_pg_dir``); the verdict, the corroboration and the synthesized text are arch-neutral
  (:mod:`vmci.kernel.kaslr`, :mod:`vmci.kernel.synthesize`).
* **drgn** (``vmci drgn``): ``drgn_arch`` (a ``drgn.Architecture`` member name) and, if the
  default (``IS_64_BIT`` from ``pointer_size``, ``IS_LITTLE_ENDIAN`` from the dump) is not right,
  :meth:`Arch.drgn_flags`.
* **Tests** in ``tests/arch/<name>/``, on producer-generated guests and real dumps.
"""

from __future__ import annotations

import importlib
from collections.abc import Container

from vmci.arch.base import (
    Arch,
    CpuKaslr,
    KernelConstants,
    KernelKeys,
    Mapping,
    PageTableKaslr,
    PageTables,
    read_mapped,
)
from vmci.errors import UnsupportedError, UsageError

#: Modules that define the built-in architectures (each exports ``ARCH``), imported on first lookup.
BUILTIN = ("vmci.arch.x86_64", "vmci.arch.i386", "vmci.arch.aarch64", "vmci.arch.arm")

_REGISTRY: dict[str, Arch] = {}
_loaded = False


def register(arch: Arch) -> Arch:
    """Add ``arch`` to the registry (a later entry of the same name replaces the earlier one)."""
    if not arch.name:
        raise UsageError(f"{arch!r} has no name")
    _REGISTRY[arch.name] = arch
    return arch


def unregister(name: str) -> Arch | None:
    """Remove and return the architecture called ``name`` (a built-in one comes back only with
    :func:`register`)."""
    _load()
    return _REGISTRY.pop(name, None)


def _load() -> dict[str, Arch]:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN:
            arch = importlib.import_module(module).ARCH
            _REGISTRY.setdefault(arch.name, arch)
    return _REGISTRY


def all_arches() -> list[Arch]:
    """Every registered architecture, in registration order."""
    return list(_load().values())


def lookup(name: str | None) -> Arch | None:
    """The architecture called ``name`` or spelled so by ``uname -m`` (``i686`` is ``i386``)."""
    if not name:
        return None
    reg = _load()
    if name in reg:
        return reg[name]
    return next((a for a in reg.values() if name in a.machines), None)


def get(name: str | None) -> Arch:
    """Like :func:`lookup`, but an unknown name raises :class:`~vmci.errors.UnsupportedError`."""
    arch = lookup(name)
    if arch is None:
        known = ", ".join(_load())
        raise UnsupportedError(f"architecture {name!r} is not supported (known: {known})")
    return arch


def canonical_name(machine: str) -> str:
    """The registry name of a ``uname -m`` spelling (``i686`` -> ``i386``); unknown names unchanged."""
    arch = lookup(machine)
    return arch.name if arch is not None else machine


def by_elf_machine(e_machine: int) -> Arch | None:
    """The architecture of an ELF ``e_machine`` value."""
    return next((a for a in _load().values() if e_machine in a.elf_machines), None)


def default_arch(pointer_size: int) -> Arch:
    """The architecture assumed when a container names none but knows its word size (a kdump
    header of QEMU before it wrote ``utsname.machine``): the first registered one of that size."""
    for a in _load().values():
        if a.pointer_size == pointer_size:
            return a
    raise UnsupportedError(f"no architecture with {pointer_size}-byte pointers")


def for_vmcoreinfo(keys: Container[str]) -> Arch | None:
    """The architecture whose kernels alone write one of the keys present (``VmcoreInfo`` supports
    ``in``), else None."""
    return next((a for a in _load().values() if any(k in keys for k in a.vmcoreinfo_markers)), None)


def by_prstatus_size(size: int) -> Arch | None:
    """The architecture whose ``NT_PRSTATUS`` descriptor has ``size`` bytes."""
    return next((a for a in _load().values() if a.prstatus_size == size), None)


def guess(*, prstatus_sizes: Container[int] | None = None, vmcoreinfo_keys: Container[str] | None = None,
          pointer_size: int | None = None) -> Arch | None:
    """The architecture of a dump whose header names none (or a name vmci does not know): by its
    ``NT_PRSTATUS`` sizes, then by the VMCOREINFO keys only one architecture writes, then the
    default for its word size; None when nothing tells."""
    if prstatus_sizes is not None:
        for a in _load().values():
            if a.prstatus_size is not None and a.prstatus_size in prstatus_sizes:
                return a
    if vmcoreinfo_keys is not None:
        found = for_vmcoreinfo(vmcoreinfo_keys)
        if found is not None:
            return found
    return default_arch(pointer_size) if pointer_size else None


def supporting(capability: str) -> list[str]:
    """Names of the architectures with a capability flag set (``"translates"``, ``"finds_kaslr"``)."""
    return [a.name for a in _load().values() if getattr(a, capability)]


__all__ = [
    "BUILTIN",
    "Arch",
    "CpuKaslr",
    "KernelConstants",
    "KernelKeys",
    "Mapping",
    "PageTableKaslr",
    "PageTables",
    "all_arches",
    "by_elf_machine",
    "by_prstatus_size",
    "canonical_name",
    "default_arch",
    "for_vmcoreinfo",
    "get",
    "guess",
    "lookup",
    "read_mapped",
    "register",
    "supporting",
    "unregister",
]

"""vmci: find, check and use the Linux VMCOREINFO in virtual-machine memory dumps.

The public API, without internal paths (each name loads its module on first use, so
``import vmci`` stays cheap)::

    import vmci
    with vmci.open_dump("guest.kdump") as dump:
        result = vmci.analyze(dump)

The package is layered (README "Architecture"): ``core`` (memory seam, dump, evidence) at the
bottom, then ``layouts``, ``arch``, ``machine``, ``formats``, ``firmware``, ``kernel``,
``discover``, ``analysis``, and on top ``convert``, ``fleet``, ``producer``, ``integrations``,
``testing`` and ``cli``.
Dependencies point down; ``tests/test_imports.py`` enforces it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Any

__version__ = "0.1.0"

#: Public name -> module that defines it (loaded on first attribute access, PEP 562).
_FACADE = {
    "open_dump": "vmci.formats",
    "find_vmcoreinfo": "vmci.discover.run",
    "analyze": "vmci.analysis.analyze",
    "kaslr_for_dump": "vmci.analysis.kaslr",
    "program_from_dump": "vmci.integrations.drgn",
    "triage": "vmci.fleet.triage",
    "TriageRecord": "vmci.fleet.record",
    "VmcoreInfo": "vmci.kernel.vmcoreinfo",
    "PhysicalMemory": "vmci.core.memory",
    "Dump": "vmci.core.dump",
    "VmciError": "vmci.errors",
}

#: Module paths the first-wave README documented -> where they live now.  ``import vmci.analyze``
#: keeps working: the old name is an alias of the new module, not a copy.
_ALIASES = {
    "vmci.analyze": "vmci.analysis.analyze",
    "vmci.drgn": "vmci.integrations.drgn",
}

__all__ = ["__version__", *_FACADE]


def __getattr__(name: str) -> Any:
    module = _FACADE.get(name)
    if module is None:
        if f"{__name__}.{name}" in _ALIASES:
            return importlib.import_module(_ALIASES[f"{__name__}.{name}"])
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


class _AliasLoader:  # the loader protocol (PEP 451); importlib.abc costs start-up time
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self.spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self.spec  # the import system stamped the alias's spec on it


class _AliasFinder:  # the meta path finder protocol
    """Resolves the documented old module paths of :data:`_ALIASES` to their new modules."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in _ALIASES:
            return None
        loader: Any = _AliasLoader(_ALIASES[fullname])  # PEP 451's create_module/exec_module
        return importlib.util.spec_from_loader(fullname, loader)


class _Package(ModuleType):
    """``vmci`` itself: the import system binds ``vmci.analyze`` to the aliased module after
    ``import vmci.analyze``; the facade function of the same name is kept instead."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, ModuleType) and _ALIASES.get(f"{__name__}.{name}") == value.__name__:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
    sys.meta_path.append(_AliasFinder())

"""Test support for vmci and for other projects that need real or synthetic VM memory dumps.

Real dumps: :mod:`vmci.testing.qemu` boots a Debian kernel under ``qemu-system-x86_64`` (or its arm64
kernel under ``qemu-system-aarch64 -machine virt``) and takes ELF, paging ELF, kdump and
migration-stream dumps of it from one stopped moment.

Synthetic dumps: this module is a pytest plugin (entry point ``pytest11 = vmci.testing``, active
whenever vmci is installed) with two fixtures:

``vmci_scenario``
    a factory: ``vmci_scenario(**keys)`` returns a :class:`vmci.producer.scenario.Scenario`
    (32 MiB of RAM unless ``ram`` is given; keys as documented there).
``vmci_dump``
    a factory: ``vmci_dump(fmt="elf", compression="zlib", **keys)`` builds the scenario, writes the
    dump into the test's ``tmp_path`` and returns ``(path, truth)``; ``truth`` is a
    :class:`vmci.producer.scenario.Truth` (``truth["vmcoreinfo"]["note_paddr"]``,
    ``truth.addr_blob``, ``truth.expected("acpi")``, ...).  A ``scenario=`` keyword takes a
    ready :class:`Scenario` instead of keys.  ``arch="aarch64"`` gives an arm64 guest on QEMU's
    ``virt`` (``page_size``, ``va_bits``, ``byteorder``, ``pti`` for KPTI; formats ``elf``,
    ``kdump``, ``kdump-flat``, ``migration``...), e.g. ``vmci_dump("kdump", arch="aarch64",
    page_size=65536, va_bits=52)``.

Example::

    def test_my_reader(vmci_dump):
        path, truth = vmci_dump("kdump-flat", seed=3, device="upstream")
        assert my_reader(path).vmcoreinfo_paddr == truth["vmcoreinfo"]["note_paddr"]

Nothing heavy is imported until a fixture is used.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

DEFAULT_RAM = "32M"


@pytest.fixture
def vmci_scenario() -> Callable[..., Any]:
    """Factory of :class:`vmci.producer.scenario.Scenario` objects (default 32 MiB guest)."""

    def make(**keys: Any) -> Any:
        from vmci.producer.scenario import Scenario

        keys.setdefault("ram", DEFAULT_RAM)
        return Scenario(**keys)

    return make


@pytest.fixture
def vmci_dump(tmp_path: Path, vmci_scenario: Callable[..., Any]) -> Callable[..., tuple[Path, Any]]:
    """Factory: ``vmci_dump(fmt="elf", compression="zlib", name=None, scenario=None, **keys)``
    writes a synthetic dump into ``tmp_path`` and returns ``(path, truth)``."""
    count = [0]

    def make(fmt: str = "elf", compression: str = "zlib", *, name: str | None = None,
             scenario: Any = None, **keys: Any) -> tuple[Path, Any]:
        from vmci.producer.scenario import generate

        if scenario is not None and keys:
            raise TypeError("pass either scenario= or scenario keys, not both")
        sc = scenario if scenario is not None else vmci_scenario(**keys)
        count[0] += 1
        path = tmp_path / (name or f"vmci-{count[0]}.{fmt}")
        truth = generate(sc, path, fmt, compression=compression)
        return path, truth

    return make

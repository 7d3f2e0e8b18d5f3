"""What a virtual machine looks like, independent of the container that saved it.

:mod:`.x86_pc` is QEMU's x86 ``pc`` (i440fx) and ``q35`` RAM layout; :mod:`.qemu_devices` the
state QEMU's vmcoreinfo and vmgenid devices keep outside guest RAM.  :data:`MACHINES` maps a
machine family to the architecture of its guests: a reader that knows the family (a migration
stream names its machine type) knows the architecture without asking the guest.
"""

from __future__ import annotations

#: machine family -> guest architecture (``Dump.arch``)
MACHINES: dict[str, str] = {"pc": "x86_64", "q35": "x86_64"}


def arch_of(family: str | None) -> str:
    """The guest architecture of machine ``family``; ``"unknown"`` for none or another family."""
    return MACHINES.get(family or "", "unknown")
